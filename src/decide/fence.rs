//! Fence: a managed node whose Lease stays stale is recorded as Fencing and
//! cordoned; once its Lease has been stale for `fence_timeout` (by then the
//! node must have fenced itself) it is marked Fenced and, with the
//! out-of-service strategy, tainted.

use super::guard::held_message;
use super::{Action, NodeIntent, Phase, RecordState};
use super::{NodeView, Plan, fmt_age};

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
        // A fresh Lease is never suspect, whatever Ready says; it may become stale later.
        plan.wake(hb.last_renewal + s.unreachable_after);
        return;
    }
    match &view.obs.facts.record {
        RecordState::Absent => {
            if plan.guard.active {
                plan.warn(
                    name,
                    held_message(name, "starting to fence", &plan.guard, s.max_unhealthy),
                );
            } else {
                plan.actions.push(Action::UpdateNode {
                    node: name.to_string(),
                    intent: NodeIntent::BeginFencing,
                    why: format!(
                        "Lease not renewed for {} (--unreachable-after {})",
                        fmt_age(age),
                        humantime::format_duration(s.unreachable_after)
                    ),
                });
            }
        }
        RecordState::Valid(r) if r.phase == Phase::Fencing => {
            if age < s.fence_timeout {
                plan.wake(hb.last_renewal + s.fence_timeout);
            } else if plan.guard.active {
                plan.warn(
                    name,
                    held_message(name, "marking as fenced", &plan.guard, s.max_unhealthy),
                );
            } else {
                plan.actions.push(Action::UpdateNode {
                    node: name.to_string(),
                    intent: NodeIntent::MarkFenced,
                    why: format!(
                        "Lease not renewed for {} (--fence-timeout {}): the node must have fenced itself by now",
                        fmt_age(age),
                        humantime::format_duration(s.fence_timeout)
                    ),
                });
            }
        }
        // Fenced: recovery's business. Malformed: never managed.
        _ => {}
    }
}
