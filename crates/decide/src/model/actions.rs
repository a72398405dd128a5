//! What the core decides: actions for the shell to carry out, and the report
//! (node statuses, storm guard, warnings, safe times) it publishes.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::contract::record::{Phase, RecordState};
use crate::contract::safe_time::SafeTime;

/// A change to one node, rendered into an exact patch by [`patch::render`]
/// against the node's facts at the moment of writing (so a conflict retry
/// re-renders against fresh facts instead of replaying a stale write).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeIntent {
    /// Record phase Fencing and cordon (remembering whether the cordon is ours).
    BeginFencing,
    /// Record phase Fenced and, with the out-of-service strategy, add the taint
    /// (remembering whether the taint is ours).
    MarkFenced,
    /// Remove only what kube-fencer added (taint, cordon) and the record.
    Unfence,
    /// The storm guard holds a Fencing node: note it in the record
    /// (`heldSince`), so whoever leads when the guard releases restarts it.
    HoldFencing,
    /// The storm guard released a node it held: restart its fencing now
    /// (`fencingSince` = now, `heldSince` cleared), so its safe time counts
    /// from the release, not from the old record.
    RestartFencing,
    /// Remove an operator's `kube-fencer.io/unfence` annotation from a node
    /// that has no record: it unfences nothing now, and left in place it
    /// would unfence the node's next fencing without a reboot.
    ClearUnfenceRequest,
}

/// What the shell says about a node intent: its metric label, Event reason
/// and action, and a description (one place, for the write and its dry run).
impl NodeIntent {
    /// Label `operation` of `kube_fencer_fencing_operations_total`.
    pub fn operation(&self) -> &'static str {
        match self {
            NodeIntent::BeginFencing => "begin",
            NodeIntent::MarkFenced => "fence",
            NodeIntent::Unfence => "unfence",
            NodeIntent::HoldFencing => "hold",
            NodeIntent::RestartFencing => "restart",
            NodeIntent::ClearUnfenceRequest => "clear_unfence",
        }
    }

    /// The Event reason, given the record before the write.
    pub fn reason(&self, before: &RecordState) -> &'static str {
        match self {
            NodeIntent::BeginFencing => "FencingStarted",
            NodeIntent::MarkFenced => "NodeFenced",
            NodeIntent::Unfence => match before {
                RecordState::Valid(r) if r.phase == Phase::Fencing => "FencingCancelled",
                _ => "NodeUnfenced",
            },
            NodeIntent::HoldFencing => "FencingHeld",
            NodeIntent::RestartFencing => "FencingRestarted",
            NodeIntent::ClearUnfenceRequest => "UnfenceRequestCleared",
        }
    }

    /// The Event action.
    pub fn action(&self) -> &'static str {
        match self {
            NodeIntent::BeginFencing => "BeginFencing",
            NodeIntent::MarkFenced => "MarkFenced",
            NodeIntent::Unfence => "Unfence",
            NodeIntent::HoldFencing => "HoldFencing",
            NodeIntent::RestartFencing => "RestartFencing",
            NodeIntent::ClearUnfenceRequest => "ClearUnfenceRequest",
        }
    }

    /// What the write does, for a dry run's "would …".
    pub fn description(&self) -> &'static str {
        match self {
            NodeIntent::BeginFencing => "record fencing and cordon the node",
            NodeIntent::MarkFenced => "mark the node fenced",
            NodeIntent::Unfence => "remove kube-fencer's cordon, taint and record",
            NodeIntent::HoldFencing => "note in the record that the storm guard holds the node",
            NodeIntent::RestartFencing => {
                "restart the node's fencing now, for its current boot (storm guard released, or the node booted again)"
            }
            NodeIntent::ClearUnfenceRequest => {
                "remove the kube-fencer.io/unfence annotation from a node kube-fencer has not fenced"
            }
        }
    }

    /// Whether its Event is a Warning: the steps toward deleting pods.
    pub fn is_warning(&self) -> bool {
        matches!(
            self,
            NodeIntent::BeginFencing | NodeIntent::MarkFenced | NodeIntent::RestartFencing
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// Precondition of the delete: the pod exactly as it was listed.
    pub resource_version: Option<String>,
    /// Name of the owning StatefulSet, when there is one (for its Event).
    pub statefulset: Option<String>,
}

/// A VolumeAttachment exactly as it was listed: its delete carries the UID
/// and resourceVersion as preconditions, so an attachment replaced (same
/// name, new object) or changed since is left alone and judged again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachmentRef {
    pub name: String,
    pub uid: String,
    pub resource_version: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    UpdateNode {
        node: String,
        intent: NodeIntent,
        /// Human-readable reason, used in logs and Events.
        why: String,
    },
    /// Force-delete (grace period 0, UID precondition).
    DeletePod {
        node: String,
        pod: PodRef,
        why: String,
    },
    /// Delete (UID and resourceVersion preconditions).
    DeleteVolumeAttachment {
        node: String,
        attachment: AttachmentRef,
        volume: String,
        why: String,
    },
    /// Before an irreversible step for the node (running the fence command,
    /// marking it Fenced, deleting its pods or VolumeAttachments): read its
    /// Lease with a consistent GET and compare with what the watch showed.
    /// Unchanged: the shell records [`Observations::lease_confirmed`] and
    /// decides again; renewed: it is a renewal observed now (the watch was
    /// stale, and the node is alive).
    ConfirmLease { node: String, why: String },
    /// Run the external `--fence-command` for the node (attempt numbers
    /// start at 1). Its result comes back as a [`FenceCommandState`].
    RunFenceCommand {
        node: String,
        addresses: Vec<String>,
        attempt: u32,
        why: String,
    },
}

/// How the core classifies each node (also the `phase` label of the nodes gauge).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeStatus {
    Healthy,
    /// Lease stale for `unreachable_after` or more; not yet recorded.
    Suspect,
    Fencing,
    Fenced,
    /// Not managed: excluded label, selector, control plane, own node, or a
    /// malformed record. The string says which.
    Excluded(String),
    /// No Lease in `kube-node-lease`: nothing to judge it by.
    Unmonitored,
}

impl NodeStatus {
    /// Stable label value for metrics.
    pub fn as_label(&self) -> &'static str {
        match self {
            NodeStatus::Healthy => "healthy",
            NodeStatus::Suspect => "suspect",
            NodeStatus::Fencing => "fencing",
            NodeStatus::Fenced => "fenced",
            NodeStatus::Excluded(_) => "excluded",
            NodeStatus::Unmonitored => "unmonitored",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StormGuard {
    pub active: bool,
    /// Managed nodes whose Lease is stale (suspect, fencing or not yet fenced).
    pub unhealthy: usize,
    pub managed: usize,
    /// The largest number of unhealthy nodes still allowed.
    pub allowed: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub node: Option<String>,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub synced: bool,
    pub nodes: BTreeMap<String, NodeStatus>,
    pub storm_guard: StormGuard,
    /// Things an operator must hear about (malformed records, held fencings…).
    pub warnings: Vec<Warning>,
    /// The earliest moment a decision could change with no new observation
    /// (a timeout expiring); the shell wakes up then at the latest.
    pub next_wakeup: Option<Instant>,
    /// Safe time of every stale managed node whose agent is self-fence capable.
    pub safe_times: BTreeMap<String, SafeTime>,
    /// Stale managed nodes that will never be marked fenced on time alone:
    /// their agent cannot fence itself and no fence command succeeded.
    pub external_fencing_required: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub actions: Vec<Action>,
    pub report: Report,
}

#[cfg(test)]
mod intent_tests {
    use std::time::SystemTime;

    use super::*;
    use crate::contract::record::FenceRecord;

    const ALL: [NodeIntent; 6] = [
        NodeIntent::BeginFencing,
        NodeIntent::MarkFenced,
        NodeIntent::Unfence,
        NodeIntent::HoldFencing,
        NodeIntent::RestartFencing,
        NodeIntent::ClearUnfenceRequest,
    ];

    #[test]
    fn reasons_follow_the_record_before_the_write() {
        let rec = |phase| {
            RecordState::Valid(FenceRecord {
                phase,
                fencing_since: SystemTime::UNIX_EPOCH,
                fenced_at: None,
                cordoned: true,
                tainted: false,
                by: "x".into(),
                boot_id: None,
                held_since: None,
            })
        };
        assert_eq!(
            NodeIntent::BeginFencing.reason(&RecordState::Absent),
            "FencingStarted"
        );
        assert_eq!(
            NodeIntent::MarkFenced.reason(&rec(Phase::Fencing)),
            "NodeFenced"
        );
        assert_eq!(
            NodeIntent::Unfence.reason(&rec(Phase::Fencing)),
            "FencingCancelled"
        );
        assert_eq!(
            NodeIntent::Unfence.reason(&rec(Phase::Fenced)),
            "NodeUnfenced"
        );
        assert_eq!(NodeIntent::MarkFenced.operation(), "fence");
        assert_eq!(NodeIntent::Unfence.operation(), "unfence");
        assert_eq!(NodeIntent::BeginFencing.operation(), "begin");
    }

    #[test]
    fn each_intent_has_labels_of_its_own() {
        let ops: std::collections::BTreeSet<_> = ALL.iter().map(|i| i.operation()).collect();
        let actions: std::collections::BTreeSet<_> = ALL.iter().map(|i| i.action()).collect();
        assert_eq!((ops.len(), actions.len()), (ALL.len(), ALL.len()));
        // Only the steps toward a deletion warn; unfencing and holding do not.
        let warning: Vec<_> = ALL.iter().filter(|i| i.is_warning()).collect();
        assert_eq!(
            warning,
            [
                &NodeIntent::BeginFencing,
                &NodeIntent::MarkFenced,
                &NodeIntent::RestartFencing
            ]
        );
    }
}
