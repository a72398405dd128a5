//! Unfence: a node carrying a valid record (managed or excluded) that has
//! been healthy again for `healthy_after` — an unbroken run of Lease
//! renewals and Ready=True, both at least that long — gets back exactly
//! what kube-fencer took (cordon, taint) and loses the record. The
//! hysteresis keeps a flapping node from being unfenced early.
//!
//! An operator's `kube-fencer.io/unfence=true` on a node observed without a
//! record is removed: it unfences nothing, and left in place it would
//! unfence the node's next fencing as soon as its Lease is fresh, without a
//! reboot.

use super::{Action, NodeIntent, Phase, Readiness, RecordState, UNFENCE_ANNOTATION};
use super::{NodeView, Plan, fmt_age};

pub(crate) fn plan(view: &NodeView<'_>, plan: &mut Plan<'_>) {
    if view.obs.facts.record == RecordState::Absent {
        clear_stale_request(view, plan);
        return;
    }
    let Some(record) = view.obs.facts.record.valid() else {
        return;
    };
    let Some(hb) = view.obs.heartbeat else {
        return;
    };
    if view.stale {
        return;
    }
    if view.obs.facts.unfence_requested {
        // The operator's word, acted on as soon as the Lease is fresh,
        // without the --healthy-after hysteresis: a node whose agent fences
        // it on every boot (a record it takes for its own) is never healthy
        // that long, and removing the record is what stops the loop.
        plan.actions.push(Action::UpdateNode {
            node: view.name.to_string(),
            intent: NodeIntent::Unfence,
            why: format!(
                "an operator set {UNFENCE_ANNOTATION}=true and the Lease is fresh: undoing kube-fencer's changes from its {:?} record",
                record.phase
            ),
        });
        return;
    }
    let now = plan.now.mono;
    let healthy_after = plan.settings.healthy_after;
    let streak = hb.streak(now);
    let lease_ok = streak >= healthy_after;
    if !lease_ok {
        plan.wake(hb.streak_since + healthy_after);
    }
    let ready_for = match (view.obs.facts.ready, view.obs.ready_since) {
        (Readiness::True, Some(since)) => Some(now.saturating_duration_since(since)),
        _ => None,
    };
    let ready_ok = ready_for.is_some_and(|d| d >= healthy_after);
    if let (Some(d), false) = (ready_for, ready_ok) {
        plan.wake(now + (healthy_after - d));
    }
    if lease_ok && ready_ok {
        let facts = &view.obs.facts;
        // The kubelet's boot ID (status.nodeInfo.bootID) proves a reboot
        // even when no agent ever advertised; see `NodeFacts::current_boot`.
        let rebooted = match (record.boot_id.as_deref(), facts.current_boot()) {
            (Some(old), Ok(new)) => (old != new).then_some(()).ok_or_else(|| {
                format!("it reconnected with the same boot ID {old}: it did not reboot, so what ran on it may still be running")
            }),
            (None, _) => Err("no boot ID was recorded when it was fenced, so kube-fencer cannot tell whether it rebooted".to_string()),
            (Some(_), Err(why)) => Err(why),
        };
        // A node that was only Fencing never had its pods deleted: cancelling is safe.
        if record.phase == Phase::Fenced
            && let Err(why) = rebooted
        {
            let name = view.name;
            plan.warn(
                name,
                format!(
                    "node {name} is healthy again but stays fenced: {why}; it is unfenced once it reboots (new boot ID) or an operator sets {UNFENCE_ANNOTATION}=true"
                ),
            );
            return;
        }
        plan.actions.push(Action::UpdateNode {
            node: view.name.to_string(),
            intent: NodeIntent::Unfence,
            why: format!(
                "healthy again: Lease renewed without a gap for {} and Ready for {} (--healthy-after {}); undoing kube-fencer's changes from its {:?} record",
                fmt_age(streak),
                fmt_age(ready_for.unwrap_or_default()),
                humantime::format_duration(healthy_after),
                record.phase
            ),
        });
    }
}

/// The unfence annotation on a node observed without a record. Only then:
/// an operator unfencing a node sets it on a node that has a record, and
/// the write carries the resourceVersion observed here as a precondition,
/// so a record written meanwhile (not yet observed) makes the write fail
/// and, re-rendered against the fresh node, not apply. A fencing that
/// begins in this same decision removes the annotation itself.
fn clear_stale_request(view: &NodeView<'_>, plan: &mut Plan<'_>) {
    let name = view.name;
    if !view.obs.facts.unfence_requested
        || plan
            .actions
            .iter()
            .any(|a| matches!(a, Action::UpdateNode { node, .. } if node == name))
    {
        return;
    }
    plan.actions.push(Action::UpdateNode {
        node: name.to_string(),
        intent: NodeIntent::ClearUnfenceRequest,
        why: format!(
            "{UNFENCE_ANNOTATION}=true on node {name} is removed: the node is not fenced (it has no kube-fencer record), and the override left in place would unfence a later fencing of it without a reboot"
        ),
    });
}
