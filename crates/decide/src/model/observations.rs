//! What the core looks at: the cluster as the shell observed it, with the
//! moments (on the observer's monotonic clock) at which it saw each change.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::contract::advert::{AdvertState, AgentAdvert};
use crate::contract::record::RecordState;
use crate::contract::{
    OUT_OF_SERVICE_TAINT_EFFECT, OUT_OF_SERVICE_TAINT_KEY, OUT_OF_SERVICE_TAINT_VALUE,
};

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
    /// `metadata.uid` (what the node's permit object is owned by).
    pub uid: Option<String>,
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
    /// `metadata.uid` (the delete's precondition).
    pub uid: String,
    /// `metadata.resourceVersion` as listed (the delete's precondition).
    pub resource_version: Option<String>,
    /// `spec.nodeName`.
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
    /// The leader's revocations through the permit (`docs/permits.md`),
    /// per node being fenced whose agent runs the permit protocol.
    pub permits: BTreeMap<String, PermitFence>,
    /// Per node whose agent armed its watchdog under the permit in its
    /// current boot: from when no permit it could hold is left, by its
    /// grantors' silence reports and its renewals through the API server
    /// ([`crate::permit::silence::permit_over`]).
    pub permit_over: BTreeMap<String, Instant>,
}

/// Where the revocation of a node's permit stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PermitFence {
    /// Complete: the node is certainly reset by this moment.
    Deadline(Instant),
    /// Under way, not complete yet: why (the API path is open, too few
    /// grantors answered…).
    Pending(String),
    /// The node's permit object does not say that its agent armed its
    /// watchdog in the boot being fenced: the permit proves nothing.
    NotArmed,
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
