//! Fence: a managed node whose Lease stays stale is recorded as Fencing and
//! cordoned. It is marked Fenced (and, with the out-of-service strategy,
//! tainted) only once it is *known* fenced, which takes one of:
//!
//! - **external fencing**: the `--fence-command` exited 0 (the node is
//!   powered off) — at once, without waiting;
//! - **self-fencing**: the node's agent advertised a self-fence action, and
//!   both `--fence-timeout` and the node's [`SafeTime`](super::SafeTime)
//!   have passed since its last observed heartbeat;
//! - **self-fencing through the permit** (`docs/permits.md`): the node's
//!   agent advertised that it fences through the permit, its permit object
//!   says it armed its watchdog in the boot being fenced, and the leader's
//!   revocation is complete and its deadline passed; no safe time and no
//!   `--fence-timeout` are involved. Such a node is also suspect, before
//!   its Lease is stale, once no permit it could hold is left
//!   ([`super::detect::permit_suspect`]).
//!
//! A node with neither is never marked fenced: kube-fencer warns and waits.

use std::time::{Duration, Instant};

use super::guard::held_message;
use super::{
    Action, FENCE_COMMAND_MAX_BACKOFF, FenceCommandState, NodeIntent, PermitFence, Phase,
    RecordState, UNFENCE_ANNOTATION,
};
use super::{NodeView, Plan, fmt_age};
use crate::contract::safe_time::safe_time;

/// Delay before attempt `attempt + 1` after attempt `attempt` failed:
/// `base × 2^(attempt-1)`, capped.
pub fn fence_command_backoff(base: Duration, attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    base.saturating_mul(factor)
        .min(FENCE_COMMAND_MAX_BACKOFF.max(base))
}

pub(crate) fn plan(view: &NodeView<'_>, plan: &mut Plan<'_>) {
    if !view.scope.is_managed() {
        return;
    }
    let Some(hb) = view.obs.heartbeat else {
        return;
    };
    let s = plan.settings;
    let name = view.name;
    let age = hb.age(plan.now.mono);
    if !view.stale {
        // A fresh Lease is never suspect, whatever Ready says; it may become
        // stale later, or the node suspect through its permit.
        plan.wake(hb.last_renewal + s.unreachable_after);
        if let Some(over) = plan.obs.permit_over.get(name) {
            plan.wake((*over).max(hb.last_renewal + s.settle_window()));
        }
        return;
    }
    match &view.obs.facts.record {
        RecordState::Absent => {
            if plan.guard.active {
                plan.warn(
                    name,
                    held_message(name, "starting to fence", &plan.guard, s.max_unhealthy),
                );
            } else if revoked_once_begun(view)
                && !plan.lease_confirmed(name, hb, "beginning its revocation")
            {
                // Under the permit a fencing, once begun, is the node's
                // reset: its revocation runs with the record. A stalled
                // watch must not begin one, and the read that confirms the
                // Lease also brings the node's permit object up to date.
            } else {
                let mut why = match view.permit_since {
                    Some(since) => format!(
                        "no permit is left to it since {} ago (its grantors last granted it more than a credit ago, and no renewal through the API server holds), and its Lease not renewed for {}",
                        fmt_age(plan.now.mono.saturating_duration_since(since)),
                        fmt_age(age)
                    ),
                    None => format!(
                        "Lease not renewed for {} (--unreachable-after {})",
                        fmt_age(age),
                        humantime::format_duration(s.unreachable_after)
                    ),
                };
                if view.obs.facts.unfence_requested {
                    why.push_str(&format!(
                        "; the {UNFENCE_ANNOTATION}=true set before this fencing began is removed, so it cannot unfence the node without a reboot"
                    ));
                }
                plan.actions.push(Action::UpdateNode {
                    node: name.to_string(),
                    intent: NodeIntent::BeginFencing,
                    why,
                });
            }
        }
        RecordState::Valid(r) if r.phase == Phase::Fencing => {
            if plan.guard.active {
                plan.warn(
                    name,
                    held_message(name, "marking as fenced", &plan.guard, s.max_unhealthy),
                );
                if r.held_since.is_none() {
                    plan.actions.push(Action::UpdateNode {
                        node: name.to_string(),
                        intent: NodeIntent::HoldFencing,
                        why: format!(
                            "storm guard active ({} of {} unhealthy, {} allowed): its agent may take this for a control-plane outage and not fence itself, so its fencing restarts when the guard releases",
                            plan.guard.unhealthy, plan.guard.managed, plan.guard.allowed
                        ),
                    });
                }
                return;
            }
            if restart_for_current_boot(view, plan) {
                return;
            }
            if let Some(held) = r.held_since {
                // Whatever the node's agent concluded while the guard held
                // it, the clock of its safe time starts again now.
                let held_for = plan.now.wall.duration_since(held).unwrap_or_default();
                plan.actions.push(Action::UpdateNode {
                    node: name.to_string(),
                    intent: NodeIntent::RestartFencing,
                    why: format!(
                        "storm guard released after holding the node for {}: restarting its fencing now, so its safe time counts from the release",
                        fmt_age(held_for)
                    ),
                });
                return;
            }
            // Judge "at once" before anything irreversible (running the
            // fence command, marking Fenced): wait until the node has been
            // suspect for the settle window, so a burst whose Leases stop at
            // different phases is counted whole by the guard first. A node
            // suspect through its permit was so from within a renewal
            // interval of its last renewal (plus the report's delay), not
            // at a phase of its Lease: the burst spread is enough.
            let by_lease = hb.last_renewal + s.unreachable_after + s.settle_window();
            let settled = match view.permit_since {
                Some(since) => by_lease.min(since + s.burst_spread),
                None => by_lease,
            };
            if external(view, plan, settled) {
                return;
            }
            if permit_fenced(view, plan, settled) {
                return;
            }
            self_fenced(view, plan, age, settled);
        }
        // Fenced in an earlier boot: recovery holds back (see `recover`)
        // until this boot is fenced in turn.
        RecordState::Valid(r)
            if r.phase == Phase::Fenced && view.obs.facts.record_of_other_boot().is_some() =>
        {
            if plan.guard.active {
                plan.warn(
                    name,
                    held_message(
                        name,
                        "restarting the fencing of",
                        &plan.guard,
                        s.max_unhealthy,
                    ),
                );
            } else {
                restart_for_current_boot(view, plan);
            }
        }
        // Fenced (recovery's business), Malformed (never managed).
        _ => {}
    }
}

/// A record of an earlier boot on a stale node: the node rebooted since its
/// fencing began (or since it was marked fenced, perhaps before its pods were
/// deleted, so its kubelet may have started them again), and its agent of
/// this boot ignores the record, so no safe time of the record says anything
/// about this boot. Restart the fencing for the current boot once this boot
/// has had `--unreachable-after` to renew its Lease: a node just rebooting
/// reports its new boot ID a moment before its first renewal, and fencing it
/// then would make its agent fence a healthy node again. Returns whether
/// the record is of another boot (restarted now or waiting).
fn restart_for_current_boot(view: &NodeView<'_>, plan: &mut Plan<'_>) -> bool {
    let Some((recorded, current)) = view.obs.facts.record_of_other_boot() else {
        return false;
    };
    let s = plan.settings;
    let due = view.obs.boot_since.unwrap_or(plan.now.mono) + s.unreachable_after;
    if plan.now.mono < due {
        plan.wake(due);
        return true;
    }
    plan.actions.push(Action::UpdateNode {
        node: view.name.to_string(),
        intent: NodeIntent::RestartFencing,
        why: format!(
            "the node rebooted since its fencing began (boot {recorded}, now {current}) and its Lease went stale again: restarting its fencing for the current boot"
        ),
    });
    true
}

/// The external fence command. Returns true when the node was marked fenced.
fn external(view: &NodeView<'_>, plan: &mut Plan<'_>, settled: Instant) -> bool {
    let s = plan.settings;
    let name = view.name;
    let state = plan.obs.fence_commands.get(name);
    let settling = plan.now.mono < settled;
    if settling {
        plan.wake(settled);
    }
    let Some(hb) = view.obs.heartbeat else {
        return true;
    };
    if let Some(FenceCommandState::Succeeded { attempt }) = state {
        if settling || !plan.lease_confirmed(name, hb, "marking the node fenced") {
            return true;
        }
        plan.actions.push(Action::UpdateNode {
            node: name.to_string(),
            intent: NodeIntent::MarkFenced,
            why: format!("--fence-command exited 0 (attempt {attempt}): the node is powered off"),
        });
        return true;
    }
    if !s.fence_command {
        return false;
    }
    let run = |plan: &mut Plan<'_>, attempt: u32, why: String| {
        plan.actions.push(Action::RunFenceCommand {
            node: name.to_string(),
            addresses: view.obs.facts.addresses.clone(),
            attempt,
            why,
        });
    };
    match state {
        None if settling => {}
        None if !plan.lease_confirmed(name, hb, "running --fence-command") => {}
        None => run(
            plan,
            1,
            "the node is being fenced: powering it off with --fence-command".into(),
        ),
        Some(FenceCommandState::Running { .. } | FenceCommandState::Succeeded { .. }) => {}
        Some(FenceCommandState::Failed { attempt, at, error }) => {
            let retry_at = *at + fence_command_backoff(s.fence_command_backoff, *attempt);
            plan.warn(
                name,
                format!(
                    "--fence-command failed for node {name} (attempt {attempt}: {error}); the node is not known to be off, nothing is deleted; retrying with backoff"
                ),
            );
            if plan.now.mono >= retry_at
                && plan.lease_confirmed(name, hb, "running --fence-command")
            {
                run(
                    plan,
                    attempt + 1,
                    format!("retrying --fence-command after attempt {attempt} failed"),
                );
            } else {
                plan.wake(retry_at);
            }
        }
    }
    false
}

/// When the Fencing record was written, on our monotonic clock (its
/// wall-clock time, aged by our wall clock; never later than now).
fn fencing_recorded(view: &NodeView<'_>, plan: &Plan<'_>) -> std::time::Instant {
    let age = view
        .obs
        .facts
        .record
        .valid()
        .and_then(|r| plan.now.wall.duration_since(r.fencing_since).ok())
        .unwrap_or_default();
    plan.now.mono.checked_sub(age).unwrap_or(plan.now.mono)
}

/// Self-fencing through the permit, for a node whose agent advertised
/// it. Returns false for any other node (the safe time applies).
/// Whether the node's agent fences through the permit: a fencing record
/// revokes it, and a revoked node resets once its permit runs out.
fn revoked_once_begun(view: &NodeView<'_>) -> bool {
    view.obs
        .facts
        .agent
        .valid()
        .is_some_and(|a| a.permit_fence.is_some())
}

fn permit_fenced(view: &NodeView<'_>, plan: &mut Plan<'_>, settled: Instant) -> bool {
    let s = plan.settings;
    let name = view.name;
    let Some(how) = view.obs.facts.agent.valid().and_then(|a| a.permit_fence) else {
        return false;
    };
    let Some(hb) = view.obs.heartbeat else {
        return true;
    };
    match plan.obs.permits.get(name) {
        Some(PermitFence::Deadline(at)) => {
            // No --fence-timeout: the revocation's deadline proves the
            // node reset, whenever the fencing began.
            let deadline = (*at).max(settled);
            if plan.now.mono < deadline {
                plan.wake(deadline);
                return true;
            }
            if !plan.lease_confirmed(name, hb, "marking the node fenced") {
                return true;
            }
            plan.actions.push(Action::UpdateNode {
                node: name.to_string(),
                intent: NodeIntent::MarkFenced,
                why: format!(
                    "its permit is revoked (the grantors stopped, the API path is closed): its {} reset it by the revocation's deadline, {} ago",
                    how.as_str(),
                    fmt_age(plan.now.mono.saturating_duration_since(*at))
                ),
            });
        }
        Some(PermitFence::NotArmed) => {
            plan.external_fencing_required.push(name.to_string());
            if !s.fence_command {
                plan.warn(
                    name,
                    format!(
                        "node {name} will NOT be marked fenced on time alone: its permit object does not say its agent armed its watchdog in the boot being fenced, so revoking its permit proves nothing; power the node off, then delete its pods by hand"
                    ),
                );
            }
        }
        // Under way: the shell steps it at every pass.
        Some(PermitFence::Pending(_)) | None => {}
    }
    true
}

/// Self-fencing: the node's agent has fenced it by its safe time.
fn self_fenced(view: &NodeView<'_>, plan: &mut Plan<'_>, age: Duration, settled: Instant) {
    let s = plan.settings;
    let name = view.name;
    let Some(hb) = view.obs.heartbeat else {
        return;
    };
    let advert = match view.obs.facts.capable_advert() {
        Ok(a) => a,
        Err(because) => {
            plan.external_fencing_required.push(name.to_string());
            let failing = matches!(
                plan.obs.fence_commands.get(name),
                Some(FenceCommandState::Failed { .. })
            );
            if s.fence_command && !failing {
                // The fence command is on its way: nothing to warn about yet.
                return;
            }
            let how = if s.fence_command {
                "until --fence-command succeeds"
            } else {
                "and no --fence-command is configured: power the node off, then delete its pods by hand"
            };
            plan.warn(
                name,
                format!(
                    "node {name} will NOT be marked fenced on time alone: {because}; a stale heartbeat does not prove it stopped, so kube-fencer waits {how}"
                ),
            );
            return;
        }
    };
    let st = safe_time(
        advert,
        hb.last_renewal,
        fencing_recorded(view, plan),
        &s.leader_terms(),
    );
    plan.safe_times.insert(name.to_string(), st);
    let deadline = (hb.last_renewal + s.fence_timeout).max(st.at).max(settled);
    if plan.now.mono < deadline {
        plan.wake(deadline);
        return;
    }
    if !plan.lease_confirmed(name, hb, "marking the node fenced") {
        return;
    }
    plan.actions.push(Action::UpdateNode {
        node: name.to_string(),
        intent: NodeIntent::MarkFenced,
        why: format!(
            "Lease not renewed for {} (--fence-timeout {}, safe time {}): the node's agent has fenced it by now ({})",
            fmt_age(age),
            humantime::format_duration(s.fence_timeout),
            st,
            advert.self_fence.as_str()
        ),
    });
}
