//! What the leader and the agents read and write on a Node: the fencing
//! [`record`] (the state annotation the leader keeps, so a new leader resumes
//! a half-done fencing), the agent's [`advert`] (what its node can do to
//! fence itself, and how fast), and the [`safe_time`] the leader derives from
//! both; and the names of the labels, annotations and taint they use.

pub mod advert;
pub mod limits;
pub mod record;
pub mod safe_time;

/// Label that excludes a node from fencing when set to `"true"`.
pub const EXCLUDE_LABEL: &str = "kube-fencer.io/exclude";
/// Annotation holding the JSON [`record::FenceRecord`] of a node kube-fencer is fencing.
pub const STATE_ANNOTATION: &str = "kube-fencer.io/state";
/// Annotation holding the JSON [`advert::AgentAdvert`] the node's own agent writes.
pub const AGENT_ANNOTATION: &str = "kube-fencer.io/agent";
/// Operator override: `kube-fencer.io/unfence=true` unfences a Fenced node
/// that did not reboot (no boot ID change). kube-fencer removes it when done.
pub const UNFENCE_ANNOTATION: &str = "kube-fencer.io/unfence";
/// Label mirroring the record's phase (`fencing` / `fenced`), for `kubectl get nodes -l`.
pub const PHASE_LABEL: &str = "kube-fencer.io/phase";
/// Kubernetes' non-graceful node shutdown taint.
pub const OUT_OF_SERVICE_TAINT_KEY: &str = "node.kubernetes.io/out-of-service";
pub const OUT_OF_SERVICE_TAINT_VALUE: &str = "nodeshutdown";
pub const OUT_OF_SERVICE_TAINT_EFFECT: &str = "NoExecute";
/// Labels that mark a control-plane node.
pub const CONTROL_PLANE_LABELS: [&str; 2] = [
    "node-role.kubernetes.io/control-plane",
    "node-role.kubernetes.io/master",
];
