//! Renders a [`NodeIntent`] against a node's current facts into the exact
//! write to make. Called at execution time, and again on a conflict with
//! fresh facts, so kube-fencer never replays a write computed from stale state.

use super::{
    FenceRecord, NodeFacts, NodeIntent, Now, OUT_OF_SERVICE_TAINT_KEY, PHASE_LABEL, Phase,
    RecordState, Settings, Strategy, Taint,
};

/// A write to one Node, applied as a JSON merge patch that carries
/// `metadata.resourceVersion` as a precondition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePatch {
    /// Precondition: the resourceVersion the patch was rendered against.
    pub resource_version: Option<String>,
    /// New `spec.unschedulable`, if it changes.
    pub unschedulable: Option<bool>,
    /// The complete new taint list, if it changes (taints are an atomic list).
    pub taints: Option<Vec<Taint>>,
    /// `Some(Some(r))` sets the record (and the phase label), `Some(None)`
    /// removes both, `None` leaves them.
    pub record: Option<Option<FenceRecord>>,
    /// Remove the operator's `kube-fencer.io/unfence` annotation.
    pub clear_unfence_request: bool,
}

/// Why an intent renders to no write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skip {
    /// The node is already as the intent wants it.
    AlreadyDone,
    /// The intent no longer applies to the node's current state (e.g. the
    /// record changed under us); the next decision will see the new state.
    NoLongerApplies(String),
}

/// The node's taints without the out-of-service taint kube-fencer added
/// (`None`: nothing of ours to remove).
fn without_our_taint(record: &FenceRecord, facts: &NodeFacts) -> Option<Vec<Taint>> {
    let ours = Taint::out_of_service();
    (record.tainted && facts.taints.contains(&ours)).then(|| {
        facts
            .taints
            .iter()
            .filter(|t| **t != ours)
            .cloned()
            .collect()
    })
}

pub fn render(
    intent: &NodeIntent,
    facts: &NodeFacts,
    now: Now,
    settings: &Settings,
) -> Result<NodePatch, Skip> {
    let mut patch = NodePatch {
        resource_version: facts.resource_version.clone(),
        unschedulable: None,
        taints: None,
        record: None,
        clear_unfence_request: false,
    };
    match intent {
        NodeIntent::BeginFencing => {
            match &facts.record {
                RecordState::Absent => {}
                RecordState::Valid(_) => return Err(Skip::AlreadyDone),
                RecordState::Malformed(why) => {
                    return Err(Skip::NoLongerApplies(format!(
                        "the node's fencing record is malformed ({why})"
                    )));
                }
            }
            if !facts.unschedulable {
                patch.unschedulable = Some(true);
            }
            // An unfence request set while the node had no record is not
            // about this fencing, which starts fresh without it (it would
            // unfence the node without a reboot).
            patch.clear_unfence_request = facts.unfence_requested;
            patch.record = Some(Some(FenceRecord {
                phase: Phase::Fencing,
                fencing_since: now.wall,
                fenced_at: None,
                cordoned: !facts.unschedulable,
                tainted: false,
                by: settings.identity.clone(),
                boot_id: facts.boot_id().map(String::from),
                held_since: None,
            }));
        }
        NodeIntent::MarkFenced => {
            let record = match &facts.record {
                RecordState::Valid(r) if r.phase == Phase::Fencing => r,
                RecordState::Valid(_) => return Err(Skip::AlreadyDone),
                RecordState::Absent => {
                    return Err(Skip::NoLongerApplies(
                        "the node has no fencing record any more".into(),
                    ));
                }
                RecordState::Malformed(why) => {
                    return Err(Skip::NoLongerApplies(format!(
                        "the node's fencing record is malformed ({why})"
                    )));
                }
            };
            let tainted = match settings.strategy {
                Strategy::DeletePods => false,
                Strategy::OutOfService => {
                    if facts
                        .taints
                        .iter()
                        .any(|t| t.key == OUT_OF_SERVICE_TAINT_KEY)
                    {
                        // Someone else's out-of-service taint: leave it, and never claim it.
                        false
                    } else {
                        let mut taints = facts.taints.clone();
                        taints.push(Taint::out_of_service());
                        patch.taints = Some(taints);
                        true
                    }
                }
            };
            patch.record = Some(Some(FenceRecord {
                phase: Phase::Fenced,
                fencing_since: record.fencing_since,
                fenced_at: Some(now.wall),
                cordoned: record.cordoned,
                tainted,
                by: settings.identity.clone(),
                boot_id: record.boot_id.clone(),
                held_since: None,
            }));
        }
        NodeIntent::HoldFencing | NodeIntent::RestartFencing => {
            let hold = *intent == NodeIntent::HoldFencing;
            let record = match &facts.record {
                RecordState::Valid(r) if r.phase == Phase::Fencing => r,
                // Fenced in an earlier boot: back to Fencing for this one,
                // without our taint (the node is no longer known fenced).
                RecordState::Valid(r) if !hold && facts.record_of_other_boot().is_some() => r,
                RecordState::Valid(_) => {
                    return Err(Skip::NoLongerApplies(
                        "the node is no longer in phase Fencing".into(),
                    ));
                }
                RecordState::Absent => {
                    return Err(Skip::NoLongerApplies(
                        "the node has no fencing record any more".into(),
                    ));
                }
                RecordState::Malformed(why) => {
                    return Err(Skip::NoLongerApplies(format!(
                        "the node's fencing record is malformed ({why})"
                    )));
                }
            };
            // The boot a restarted fencing concerns: the current one.
            let current = facts.current_boot().ok().map(String::from);
            let other_boot =
                record.boot_id.is_some() && current.is_some() && record.boot_id != current;
            let done = if hold {
                record.held_since.is_some()
            } else {
                record.held_since.is_none() && !other_boot
            };
            if done {
                return Err(Skip::AlreadyDone);
            }
            let mut next = record.clone();
            next.by = settings.identity.clone();
            if hold {
                next.held_since = Some(now.wall);
            } else {
                next.held_since = None;
                next.fencing_since = now.wall;
                if current.is_some() {
                    next.boot_id = current;
                }
                if record.phase == Phase::Fenced {
                    next.phase = Phase::Fencing;
                    next.fenced_at = None;
                    patch.taints = without_our_taint(record, facts);
                    next.tainted = false;
                }
            }
            patch.record = Some(Some(next));
        }
        NodeIntent::Unfence => {
            let record = match &facts.record {
                RecordState::Valid(r) => r,
                RecordState::Absent => return Err(Skip::AlreadyDone),
                RecordState::Malformed(why) => {
                    return Err(Skip::NoLongerApplies(format!(
                        "the node's fencing record is malformed ({why})"
                    )));
                }
            };
            patch.taints = without_our_taint(record, facts);
            if record.cordoned && facts.unschedulable {
                patch.unschedulable = Some(false);
            }
            patch.record = Some(None);
            patch.clear_unfence_request = facts.unfence_requested;
        }
        NodeIntent::ClearUnfenceRequest => match &facts.record {
            RecordState::Absent if facts.unfence_requested => {
                patch.clear_unfence_request = true;
            }
            RecordState::Absent => return Err(Skip::AlreadyDone),
            // A record appeared since the node was observed: the annotation
            // may now be an operator unfencing it. Left alone.
            RecordState::Valid(_) | RecordState::Malformed(_) => {
                return Err(Skip::NoLongerApplies(
                    "the node has a fencing record now: the unfence annotation is the operator's request to unfence it".into(),
                ));
            }
        },
    }
    Ok(patch)
}

/// Apply a patch to facts, as the API server would (used by the dry-run overlay and tests).
pub fn apply(facts: &NodeFacts, patch: &NodePatch) -> NodeFacts {
    let mut out = facts.clone();
    if let Some(u) = patch.unschedulable {
        out.unschedulable = u;
    }
    if let Some(t) = &patch.taints {
        out.taints = t.clone();
    }
    if patch.clear_unfence_request {
        out.unfence_requested = false;
    }
    match &patch.record {
        None => {}
        Some(Some(r)) => {
            out.labels
                .insert(PHASE_LABEL.to_string(), r.phase.as_label().to_string());
            out.record = RecordState::Valid(r.clone());
        }
        Some(None) => {
            out.labels.remove(PHASE_LABEL);
            out.record = RecordState::Absent;
        }
    }
    // Every write bumps the resourceVersion.
    out.resource_version = Some(
        match facts.resource_version.as_deref().map(str::parse::<u64>) {
            Some(Ok(n)) => (n + 1).to_string(),
            Some(Err(_)) => format!(
                "{}+1",
                facts.resource_version.as_deref().unwrap_or_default()
            ),
            None => "1".to_string(),
        },
    );
    out
}

#[cfg(test)]
mod tests;
