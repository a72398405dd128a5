//! Renders a [`NodeIntent`] against a node's current facts into the exact
//! write to make. Called at execution time, and again on a conflict with
//! fresh facts, so kube-fencer never replays a write computed from stale state.

use super::{FenceRecord, NodeFacts, NodeIntent, Now, Settings, Taint};

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

pub fn render(
    intent: &NodeIntent,
    facts: &NodeFacts,
    now: Now,
    settings: &Settings,
) -> Result<NodePatch, Skip> {
    let _ = (intent, facts, now, settings);
    unimplemented!("patch render")
}

/// Apply a patch to facts, as the API server would (used by the dry-run overlay and tests).
pub fn apply(facts: &NodeFacts, patch: &NodePatch) -> NodeFacts {
    let _ = (facts, patch);
    unimplemented!("patch apply")
}
