//! The pure decision core: (observed cluster state, time, settings) → actions.
//!
//! Nothing in this crate performs I/O, reads a clock or knows about the
//! Kubernetes client: it does not depend on `kube` or `k8s-openapi`, so the
//! compiler keeps it pure. The I/O shell (`kube_fencer::cluster`) turns watch events into
//! [`Observations`], calls [`decide`], and executes the returned [`Action`]s.
//!
//! The pipeline is one file per stage:
//! [`detect`] (heartbeats → suspect) → [`guard`] (scope + storm guard) →
//! [`fence`] (record, cordon, wait, taint) → [`recover`] (pods and
//! VolumeAttachments to delete) → [`unfence`] (healthy again → undo our changes).
//!
//! Supporting pieces: [`record`] (the state annotation kube-fencer keeps on
//! each Node, so a new leader resumes a half-done fencing), [`patch`] (renders
//! an intent against the node's current facts into an exact write),
//! [`dryrun`] (an in-memory overlay so a dry run progresses like a real one),
//! [`leader`] (leader-election decisions), [`selector`] (label selectors).

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

pub mod advert;
pub mod detect;
pub mod dryrun;
pub mod fence;
pub mod guard;
pub mod leader;
pub mod patch;
pub mod protocol;
pub mod record;
pub mod recover;
pub mod safetime;
pub mod selector;
pub mod selfcheck;
pub mod selffence;
pub mod unfence;
pub mod watchdog_timing;

#[cfg(test)]
mod props;
#[cfg(test)]
mod scenarios;
#[cfg(test)]
mod sim;
/// Fixtures for tests of this crate and of the shell (feature `testutil`).
#[cfg(any(test, feature = "testutil"))]
#[doc(hidden)]
pub mod testutil;

pub use advert::{AdvertState, AgentAdvert, SelfFenceAction};
pub use record::{FenceRecord, Phase, RecordState};
pub use safetime::{LeaderTerms, SafeTime};
pub use selector::Selector;

/// Label that excludes a node from fencing when set to `"true"`.
pub const EXCLUDE_LABEL: &str = "kube-fencer.io/exclude";
/// Annotation holding the JSON [`FenceRecord`] of a node kube-fencer is fencing.
pub const STATE_ANNOTATION: &str = "kube-fencer.io/state";
/// Annotation holding the JSON [`AgentAdvert`] the node's own agent writes.
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

/// The present moment, injected: a monotonic instant for every duration the
/// core measures, and wall time only for what it writes for humans.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    pub mono: Instant,
    pub wall: SystemTime,
}

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

/// The node's Ready condition as last observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    True,
    False,
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taint {
    pub key: String,
    pub value: Option<String>,
    pub effect: String,
}

impl Taint {
    /// The taint kube-fencer adds with the out-of-service strategy.
    pub fn out_of_service() -> Self {
        Taint {
            key: OUT_OF_SERVICE_TAINT_KEY.into(),
            value: Some(OUT_OF_SERVICE_TAINT_VALUE.into()),
            effect: OUT_OF_SERVICE_TAINT_EFFECT.into(),
        }
    }
}

/// What the API says about a node right now (no timing).
#[derive(Clone, Debug, PartialEq)]
pub struct NodeFacts {
    pub name: String,
    pub resource_version: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub unschedulable: bool,
    pub taints: Vec<Taint>,
    pub ready: Readiness,
    pub record: RecordState,
    /// What the node's own agent advertised (`kube-fencer.io/agent`).
    pub agent: AdvertState,
    /// `kube-fencer.io/unfence=true` is set (operator override).
    pub unfence_requested: bool,
    /// `status.addresses` (InternalIP first), for the fence command.
    pub addresses: Vec<String>,
    /// `status.nodeInfo.bootID` as the kubelet reports it (`None` when
    /// empty or absent). It changes on every reboot, whether or not
    /// kube-fencer's agent ever ran on the node.
    pub kubelet_boot_id: Option<String>,
}

impl NodeFacts {
    /// The agent's advertisement, if it is self-fence capable *and* fresh:
    /// made during the node's current boot, as far as the kubelet tells
    /// (an advertisement left over from before a reboot after which the
    /// agent never came up promises nothing). Otherwise why not.
    pub fn capable_advert(&self) -> Result<&AgentAdvert, String> {
        match self.agent.valid() {
            Some(a) if a.capable() => match (self.kubelet_boot_id.as_deref(), self.agent.boot_id())
            {
                (Some(kubelet), advertised) if advertised != Some(kubelet) => Err(format!(
                    "its agent's advertisement is not from the node's current boot (the kubelet reports boot ID {kubelet}, the advertisement {}): the agent has not run since the node rebooted",
                    advertised.unwrap_or("none")
                )),
                _ => Ok(a),
            },
            _ => Err(self.agent.not_capable_because()),
        }
    }

    /// The node's current boot ID, to stamp a record with: the kubelet's,
    /// else the agent's.
    pub fn boot_id(&self) -> Option<&str> {
        self.kubelet_boot_id.as_deref().or(self.agent.boot_id())
    }

    /// A record stamped with another boot than the node's current one:
    /// `(recorded, current)`. The node rebooted since its fencing began, and
    /// its agent of this boot ignores the record (rule 1 is for the boot it
    /// names), so neither the record's safe time nor its "fenced" says
    /// anything about what the node runs now.
    pub fn record_of_other_boot(&self) -> Option<(&str, &str)> {
        let recorded = self.record.valid()?.boot_id.as_deref()?;
        let current = self.current_boot().ok()?;
        (recorded != current).then_some((recorded, current))
    }

    /// The node's current boot ID as evidence of a reboot: the kubelet's
    /// (`status.nodeInfo.bootID`, read from the running kernel) whenever it
    /// reports one — an agent's advertisement may be left over from before
    /// the reboot, or claim a reboot the kernel did not have — else the
    /// agent's.
    pub fn current_boot(&self) -> Result<&str, String> {
        match (self.kubelet_boot_id.as_deref(), self.agent.boot_id()) {
            (Some(k), _) => Ok(k),
            (None, Some(a)) => Ok(a),
            (None, None) => Err(
                "neither the kubelet (status.nodeInfo.bootID) nor an agent reports a boot ID, so kube-fencer cannot tell whether it rebooted".to_string(),
            ),
        }
    }
}

/// Heartbeat history as observed by this agent, in its own monotonic time.
/// Staleness is always measured from when *we saw* the Lease change, never by
/// comparing the Lease's timestamps with our clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// When we last observed the node's Lease being renewed (or, after a cache
    /// (re)sync, when the sync completed).
    pub last_renewal: Instant,
    /// Start of the current unbroken run of renewals: no gap between two
    /// observed renewals was `unreachable_after` or longer since then.
    pub streak_since: Instant,
}

/// A node with its facts and our observation times.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeObs {
    pub facts: NodeFacts,
    /// `None` when the node has no Lease in `kube-node-lease`.
    pub heartbeat: Option<Heartbeat>,
    /// When we first observed Ready=True in the current run of Ready=True
    /// (or the sync time); `None` while Ready is not True.
    pub ready_since: Option<Instant>,
    /// When we first observed the node's current boot
    /// ([`NodeFacts::current_boot`]) in this run of our caches (or the sync
    /// time); `None` while no boot ID is known.
    pub boot_since: Option<Instant>,
}

/// [`NodeObs::boot_since`] for observers that keep it per node name: the
/// instant stays while the node's current boot stays the same and restarts
/// at `now` when it changes.
pub fn boot_seen_since(
    seen: &mut BTreeMap<String, (String, Instant)>,
    facts: &NodeFacts,
    now: Instant,
) -> Option<Instant> {
    let Ok(boot) = facts.current_boot() else {
        seen.remove(&facts.name);
        return None;
    };
    match seen.get(&facts.name) {
        Some((b, since)) if b == boot => Some(*since),
        _ => {
            seen.insert(facts.name.clone(), (boot.to_string(), now));
            Some(now)
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerRef {
    pub api_version: String,
    pub kind: String,
    pub name: String,
}

/// A PersistentVolumeClaim a pod mounts, resolved by the shell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimObs {
    pub claim: String,
    /// The bound PersistentVolume, if known.
    pub volume: Option<String>,
    /// ReadWriteOnce or ReadWriteOncePod.
    pub read_write_once: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodObs {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// `metadata.resourceVersion` as listed (the delete's precondition).
    pub resource_version: Option<String>,
    /// `spec.nodeName`.
    pub node: String,
    /// The owner reference with `controller: true`, if any.
    pub controller: Option<OwnerRef>,
    pub claims: Vec<ClaimObs>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeAttachmentObs {
    pub name: String,
    pub node: String,
    /// `spec.source.persistentVolumeName`.
    pub volume: Option<String>,
}

/// Everything the core looks at in one decision.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observations {
    /// True once every watch cache completed its initial list. While false the
    /// core decides nothing: an empty cache looks like "every node is dead".
    pub synced: bool,
    pub nodes: BTreeMap<String, NodeObs>,
    /// Pods per node, present only for the nodes [`nodes_needing_pods`] names.
    pub pods: BTreeMap<String, Vec<PodObs>>,
    /// VolumeAttachments, present when any node needs pods.
    pub volume_attachments: Vec<VolumeAttachmentObs>,
    /// External fence commands run by this leader, per node (see
    /// [`Action::RunFenceCommand`]). The shell forgets a node's entry when
    /// its record goes away.
    pub fence_commands: BTreeMap<String, FenceCommandState>,
    /// Consistent reads of node Leases (a GET, not the watch cache), per
    /// node: when one last found the Lease exactly as the watch showed it
    /// (not renewed since). A read that found it renewed is fed back as a
    /// renewal instead. See [`Action::ConfirmLease`].
    pub lease_confirmed: BTreeMap<String, Instant>,
}

/// How recent a consistent Lease read must be for an irreversible step.
pub const LEASE_CONFIRM_VALIDITY: Duration = Duration::from_secs(2);

/// The state of the external fence command for one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FenceCommandState {
    Running {
        attempt: u32,
    },
    /// Exited 0: the node is powered off.
    Succeeded {
        attempt: u32,
    },
    /// Exited non-zero, timed out or could not start.
    Failed {
        attempt: u32,
        at: Instant,
        error: String,
    },
}

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
    DeleteVolumeAttachment {
        node: String,
        name: String,
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

/// One node as the stages see it.
pub(crate) struct NodeView<'a> {
    name: &'a str,
    obs: &'a NodeObs,
    scope: guard::Scope,
    /// Lease stale (false when there is no Lease).
    stale: bool,
}

/// What the stages produce while deciding.
pub(crate) struct Plan<'a> {
    obs: &'a Observations,
    settings: &'a Settings,
    now: Now,
    guard: StormGuard,
    actions: Vec<Action>,
    warnings: Vec<Warning>,
    next_wakeup: Option<Instant>,
    safe_times: BTreeMap<String, SafeTime>,
    external_fencing_required: Vec<String>,
}

impl Plan<'_> {
    fn warn(&mut self, node: &str, message: String) {
        self.warnings.push(Warning {
            node: Some(node.to_string()),
            message,
        });
    }

    /// Whether the node's stale Lease was confirmed by a consistent read
    /// taken after the last renewal we saw and at most
    /// [`LEASE_CONFIRM_VALIDITY`] ago; if not, ask for one (once per
    /// decision). Every irreversible step is gated by it: a watch that failed
    /// or stalled silently must not pass for a node that stopped renewing.
    fn lease_confirmed(&mut self, node: &str, hb: Heartbeat, step: &str) -> bool {
        let now = self.now.mono;
        if self.obs.lease_confirmed.get(node).is_some_and(|at| {
            *at >= hb.last_renewal && now.saturating_duration_since(*at) <= LEASE_CONFIRM_VALIDITY
        }) {
            return true;
        }
        let asked = self
            .actions
            .iter()
            .any(|a| matches!(a, Action::ConfirmLease { node: n, .. } if n == node));
        if !asked {
            self.actions.push(Action::ConfirmLease {
                node: node.to_string(),
                why: format!(
                    "before {step}: re-reading the node's Lease from the API server (not the watch cache) to confirm it was not renewed"
                ),
            });
        }
        false
    }

    /// A moment at which a decision may change with no new observation.
    fn wake(&mut self, at: Instant) {
        if at > self.now.mono && self.next_wakeup.is_none_or(|w| at < w) {
            self.next_wakeup = Some(at);
        }
    }
}

/// A measured duration for humans: whole seconds.
fn fmt_age(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_secs(d.as_secs()))
}

/// The one entry point of the core.
pub fn decide(obs: &Observations, now: Now, settings: &Settings) -> Decision {
    let mut report = Report {
        synced: obs.synced,
        nodes: BTreeMap::new(),
        storm_guard: guard::storm_guard(0, 0, settings.max_unhealthy),
        warnings: Vec::new(),
        next_wakeup: None,
        safe_times: BTreeMap::new(),
        external_fencing_required: Vec::new(),
    };
    if !obs.synced {
        // A cold cache looks like "every node is dead": decide nothing.
        return Decision {
            actions: Vec::new(),
            report,
        };
    }

    let views: Vec<NodeView<'_>> = obs
        .nodes
        .iter()
        .map(|(name, node)| NodeView {
            name,
            obs: node,
            scope: guard::scope(node, settings),
            stale: detect::stale(node, now.mono, settings).unwrap_or(false),
        })
        .collect();
    // The agent's own node counts: it is one of the cluster's nodes, and
    // leaving it out would make the threshold stricter than the operator set
    // (40% of 3 nodes allows one failure; 40% of the other 2 would allow none).
    // One population with the agents' peers (see `guard::in_population`):
    // nodes with a malformed record count too, and a node without a Lease
    // counts as unhealthy (nothing shows it alive).
    let in_population =
        |v: &&NodeView<'_>| guard::in_settings_population(&v.obs.facts.labels, settings);
    let managed = views.iter().filter(in_population).count();
    let unhealthy = views
        .iter()
        .filter(in_population)
        .filter(|v| v.stale || v.obs.heartbeat.is_none())
        .count();
    let mut plan = Plan {
        obs,
        settings,
        now,
        guard: guard::storm_guard(managed, unhealthy, settings.max_unhealthy),
        actions: Vec::new(),
        warnings: Vec::new(),
        next_wakeup: None,
        safe_times: BTreeMap::new(),
        external_fencing_required: Vec::new(),
    };

    for view in &views {
        let name = view.name;
        if let RecordState::Malformed(why) = &view.obs.facts.record {
            plan.warn(
                name,
                format!(
                    "node {name} has a malformed {STATE_ANNOTATION} annotation ({why}); kube-fencer leaves the node alone until it is fixed or removed"
                ),
            );
        }
        if name == settings.self_node
            && let Some(hb) = view.obs.heartbeat
            && view.stale
        {
            plan.warn(
                name,
                format!(
                    "the leader's own node {name} has a stale Lease (not renewed for {}): its kubelet looks dead; kube-fencer never fences the node it runs on",
                    fmt_age(hb.age(now.mono))
                ),
            );
        }
        if view.scope == guard::Scope::Unmonitored {
            plan.warn(
                name,
                format!(
                    "node {name} has no Lease in kube-node-lease: kube-fencer cannot tell whether it is alive and will not fence it"
                ),
            );
        }

        fence::plan(view, &mut plan);
        recover::plan(view, &mut plan);
        unfence::plan(view, &mut plan);

        let status = match &view.scope {
            guard::Scope::Excluded(why) => NodeStatus::Excluded(why.clone()),
            guard::Scope::Unmonitored => NodeStatus::Unmonitored,
            guard::Scope::Managed | guard::Scope::OwnNode => match view.obs.facts.record.phase() {
                Some(Phase::Fenced) => NodeStatus::Fenced,
                Some(Phase::Fencing) => NodeStatus::Fencing,
                None if view.stale => NodeStatus::Suspect,
                None => NodeStatus::Healthy,
            },
        };
        report.nodes.insert(name.to_string(), status);
    }

    report.storm_guard = plan.guard.clone();
    report.warnings = plan.warnings;
    report.next_wakeup = plan.next_wakeup;
    report.safe_times = plan.safe_times;
    report.external_fencing_required = plan.external_fencing_required;
    Decision {
        actions: plan.actions,
        report,
    }
}

/// Nodes whose pods (and VolumeAttachments) the shell must list before the
/// next [`decide`]: managed nodes whose record says Fenced.
///
/// Without a clock this cannot tell whether the Lease is still stale, so it
/// names every managed Fenced node; [`decide`] only recovers those whose
/// Lease is stale at the moment of deciding.
pub fn nodes_needing_pods(obs: &Observations, settings: &Settings) -> Vec<String> {
    if !obs.synced {
        return Vec::new();
    }
    obs.nodes
        .iter()
        .filter(|(_, node)| {
            node.facts.record.phase() == Some(Phase::Fenced)
                && guard::scope(node, settings).is_managed()
        })
        .map(|(name, _)| name.clone())
        .collect()
}

#[cfg(test)]
mod intent_tests {
    use std::time::SystemTime;

    use super::*;

    const ALL: [NodeIntent; 5] = [
        NodeIntent::BeginFencing,
        NodeIntent::MarkFenced,
        NodeIntent::Unfence,
        NodeIntent::HoldFencing,
        NodeIntent::RestartFencing,
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
