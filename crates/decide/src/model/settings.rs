//! The decision settings: a validated subset of the command line.

use std::time::Duration;

use crate::contract::safe_time::LeaderTerms;
use crate::selector::Selector;

/// What kube-fencer does once a node is known fenced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Add `node.kubernetes.io/out-of-service=nodeshutdown:NoExecute` (Kubernetes
    /// then evicts every pod and detaches volumes) and force-delete the
    /// StatefulSet pods at once.
    OutOfService,
    /// No taint; only force-delete the selected pods.
    DeletePods,
}

/// Storm-guard threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaxUnhealthy {
    /// At most this percentage (0–100) of the managed nodes may be suspect.
    Percent(u32),
    /// At most this many managed nodes may be suspect.
    Count(u32),
}

/// The decision settings (a validated subset of the command line).
#[derive(Clone, Debug)]
pub struct Settings {
    /// The node this agent runs on. The leader never fences its own node.
    pub self_node: String,
    /// Identity written into records (the agent's pod name).
    pub identity: String,
    pub unreachable_after: Duration,
    pub fence_timeout: Duration,
    pub healthy_after: Duration,
    pub max_unhealthy: MaxUnhealthy,
    pub node_selector: Selector,
    pub manage_control_plane: bool,
    pub strategy: Strategy,
    pub delete_pods_with_rwo_volumes: bool,
    /// Added to every node's [`SafeTime`] (`--safe-time-margin`).
    pub safe_time_margin: Duration,
    /// The kubelet's node Lease renewal interval (`--node-heartbeat-interval`),
    /// a term of every [`SafeTime`].
    pub node_heartbeat_interval: Duration,
    /// `--burst-spread`: see [`Settings::settle_window`].
    pub burst_spread: Duration,
    /// Whether an external `--fence-command` is configured.
    pub fence_command: bool,
    /// First retry delay of a failed fence command; doubles per attempt
    /// (`--fence-command-backoff`), capped at [`FENCE_COMMAND_MAX_BACKOFF`].
    pub fence_command_backoff: Duration,
}

impl Settings {
    /// How long a node must have been suspect before an irreversible step
    /// (running the fence command, marking it Fenced): one Lease renewal
    /// interval (nodes that fail together stop renewing up to that far
    /// apart, depending on their renewal phase) plus the accepted spread of
    /// their failures. By then every node of a burst is suspect and counted
    /// by the storm guard.
    pub fn settle_window(&self) -> Duration {
        self.node_heartbeat_interval
            .saturating_add(self.burst_spread)
    }

    /// The leader's terms of a node's [`SafeTime`].
    pub fn leader_terms(&self) -> LeaderTerms {
        LeaderTerms {
            unreachable_after: self.unreachable_after,
            heartbeat_interval: self.node_heartbeat_interval,
            margin: self.safe_time_margin,
        }
    }
}

/// Longest delay between two attempts of a failing fence command.
pub const FENCE_COMMAND_MAX_BACKOFF: Duration = Duration::from_secs(300);
