//! The state annotation (`kube-fencer.io/state`) kept on a Node while
//! kube-fencer fences it. It is the only durable state: a new leader resumes
//! from it, and unfencing undoes exactly what it says kube-fencer did.

use std::time::SystemTime;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Recorded and cordoned; waiting until the node is known fenced.
    Fencing,
    /// Known fenced: tainted (out-of-service strategy) and being recovered.
    Fenced,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FenceRecord {
    pub phase: Phase,
    /// When fencing began (wall clock of the leader that began it).
    pub fencing_since: SystemTime,
    /// When the node was marked fenced.
    pub fenced_at: Option<SystemTime>,
    /// Whether kube-fencer cordoned the node (false: it was already cordoned).
    pub cordoned: bool,
    /// Whether kube-fencer added the out-of-service taint.
    pub tainted: bool,
    /// Identity of the agent that last wrote the record.
    pub by: String,
}

/// The annotation as found on a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordState {
    Absent,
    Valid(FenceRecord),
    /// Present but unparseable: the node is left alone and an operator warned.
    Malformed(String),
}

/// Parse the annotation value. Never panics.
pub fn parse(value: &str) -> RecordState {
    let _ = value;
    unimplemented!("record parse")
}

/// Render a record as the annotation value (stable JSON, RFC 3339 UTC times).
pub fn render(record: &FenceRecord) -> String {
    let _ = record;
    unimplemented!("record render")
}
