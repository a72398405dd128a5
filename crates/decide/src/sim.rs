//! A small deterministic world for scenario tests: nodes whose kubelets
//! renew their Leases (or not), pods, VolumeAttachments, an injected clock,
//! and an agent that observes the world, decides every second and executes
//! the actions the way the API server would (or, in a dry run, only records
//! them in an [`Overlay`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::testutil::{now_after, settings};
use super::*;
use crate::leader::dry_run::Overlay;
use crate::leader::patch;

/// One node of the simulated cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct SimNode {
    pub facts: NodeFacts,
    /// Whether the node has a Lease in `kube-node-lease`.
    pub has_lease: bool,
    /// Whether its kubelet renews the Lease.
    pub alive: bool,
    pub renew_every: Duration,
    /// Offset of the next renewal while alive.
    pub next_renewal: Duration,
    /// The Lease's resourceVersion in the API server (bumped per renewal).
    pub lease_rv: u64,
}

/// A pod as the shell lists it: `listed_under` is the node whose pod list it
/// appears in (normally `pod.node`; a different value simulates a shell bug).
#[derive(Clone, Debug, PartialEq)]
pub struct SimPod {
    pub listed_under: String,
    pub pod: PodObs,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct World {
    pub nodes: BTreeMap<String, SimNode>,
    pub pods: Vec<SimPod>,
    pub vas: Vec<VolumeAttachmentObs>,
}

/// The leader's in-memory state (lost when leadership changes).
#[derive(Clone, Debug, Default)]
pub struct LeaderMemory {
    pub synced: bool,
    pub heartbeats: BTreeMap<String, Heartbeat>,
    /// The Lease resourceVersion the agent's watch last delivered.
    pub lease_rvs: BTreeMap<String, u64>,
    /// Consistent Lease reads that found the Lease unchanged.
    pub lease_confirmed: BTreeMap<String, Instant>,
    /// Leases whose watch events never arrive (a stalled watch, a stale
    /// watch cache) while the API server has the truth.
    pub lease_events_lost: std::collections::BTreeSet<String>,
    pub ready_since: BTreeMap<String, Instant>,
    pub boot_since: BTreeMap<String, (String, Instant)>,
    pub dry_run: Option<Overlay>,
}

/// An action with the offset at which it was decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logged {
    pub at: Duration,
    pub action: Action,
}

pub struct Sim {
    pub world: World,
    pub memory: LeaderMemory,
    pub settings: Settings,
    /// Offset of the present from the clock's origin.
    pub t: Duration,
    pub log: Vec<Logged>,
    pub last: Option<Decision>,
    pub last_obs: Option<Observations>,
    /// Results of fence commands the agent ran (the shell's view).
    pub fence_commands: BTreeMap<String, FenceCommandState>,
    /// Whether a fence command run succeeds.
    pub fence_command_ok: bool,
    /// Consistent Lease reads: (offset in seconds, node).
    pub lease_reads: Vec<(u64, String)>,
    /// The shell's revocations through the permit.
    pub permits: BTreeMap<String, PermitFence>,
    /// From when each node's permit is over, by the shell's reading of its
    /// grantors' reports.
    pub permit_over: BTreeMap<String, Instant>,
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

impl Sim {
    pub fn new() -> Self {
        Sim::with(settings())
    }

    pub fn with(settings: Settings) -> Self {
        Sim {
            world: World::default(),
            memory: LeaderMemory::default(),
            settings,
            t: Duration::ZERO,
            log: Vec::new(),
            last: None,
            last_obs: None,
            fence_commands: BTreeMap::new(),
            fence_command_ok: true,
            lease_reads: Vec::new(),
            permits: BTreeMap::new(),
            permit_over: BTreeMap::new(),
        }
    }

    pub fn now(&self) -> Now {
        now_after(self.t)
    }

    /// Add a healthy node whose kubelet renews every 10 s.
    pub fn node(&mut self, name: &str) -> &mut SimNode {
        self.world.nodes.insert(
            name.to_string(),
            SimNode {
                facts: testutil::facts(name),
                has_lease: true,
                alive: true,
                renew_every: secs(10),
                next_renewal: self.t,
                lease_rv: 1,
            },
        );
        self.world.nodes.get_mut(name).expect("just inserted")
    }

    pub fn nodes(&mut self, names: &[&str]) {
        for n in names {
            self.node(n);
        }
    }

    pub fn get(&self, name: &str) -> &SimNode {
        &self.world.nodes[name]
    }

    pub fn get_mut(&mut self, name: &str) -> &mut SimNode {
        self.world.nodes.get_mut(name).expect("no such node")
    }

    pub fn label(&mut self, node: &str, key: &str, value: &str) {
        self.get_mut(node)
            .facts
            .labels
            .insert(key.to_string(), value.to_string());
    }

    // World changes are delivered to the agent at once (as watch events);
    // the next decision is at the next tick.

    /// The kubelet stops (power loss, partition).
    pub fn kill(&mut self, name: &str) {
        let n = self.get_mut(name);
        n.alive = false;
        n.facts.ready = Readiness::Unknown;
        self.observe();
    }

    /// The node comes back after a power loss: it rebooted (new boot ID),
    /// renews at once, Ready follows.
    pub fn revive(&mut self, name: &str) {
        let n = self.get_mut(name);
        if let AdvertState::Valid(a) = &mut n.facts.agent {
            a.boot_id = format!("{}+", a.boot_id);
        }
        if let Some(b) = &mut n.facts.kubelet_boot_id {
            b.push('+');
        }
        self.reconnect(name);
    }

    /// The node comes back without having rebooted (a healed partition):
    /// same boot ID, renews at once, Ready follows.
    pub fn reconnect(&mut self, name: &str) {
        let t = self.t;
        let n = self.get_mut(name);
        n.alive = true;
        n.next_renewal = t;
        n.facts.ready = Readiness::True;
        self.observe();
    }

    pub fn set_ready(&mut self, name: &str, ready: Readiness) {
        self.get_mut(name).facts.ready = ready;
        self.observe();
    }

    /// A pod owned by `controller` (`(apiVersion, kind, name)`).
    pub fn pod(
        &mut self,
        node: &str,
        ns_name: &str,
        controller: Option<(&str, &str, &str)>,
        claims: Vec<ClaimObs>,
    ) -> String {
        let (namespace, name) = ns_name.split_once('/').unwrap_or(("default", ns_name));
        let uid = format!("uid-{namespace}-{name}-{}", self.world.pods.len());
        self.world.pods.push(SimPod {
            listed_under: node.to_string(),
            pod: PodObs {
                namespace: namespace.into(),
                name: name.into(),
                uid: uid.clone(),
                resource_version: Some("1".into()),
                node: node.into(),
                controller: controller.map(|(a, k, n)| OwnerRef {
                    api_version: a.into(),
                    kind: k.into(),
                    name: n.into(),
                }),
                claims,
            },
        });
        uid
    }

    pub fn sts_pod(&mut self, node: &str, ns_name: &str, sts: &str) -> String {
        self.pod(node, ns_name, Some(("apps/v1", "StatefulSet", sts)), vec![])
    }

    pub fn va(&mut self, name: &str, node: &str, volume: &str) {
        self.world.vas.push(VolumeAttachmentObs {
            name: name.into(),
            uid: format!("uid-{name}"),
            resource_version: Some("1".into()),
            node: node.into(),
            volume: Some(volume.into()),
        });
    }

    pub fn pod_exists(&self, uid: &str) -> bool {
        self.world.pods.iter().any(|p| p.pod.uid == uid)
    }

    pub fn dry_run(&mut self) {
        self.memory.dry_run = Some(Overlay::default());
    }

    /// The agent's caches complete their initial list now (also after a
    /// leader change): every heartbeat timer starts now.
    pub fn sync(&mut self) {
        let now = self.now().mono;
        self.memory.synced = true;
        self.memory.heartbeats.clear();
        self.memory.ready_since.clear();
        self.memory.boot_since.clear();
        self.memory.lease_rvs.clear();
        self.memory.lease_confirmed.clear();
        for (name, n) in &self.world.nodes {
            if n.has_lease {
                self.memory
                    .heartbeats
                    .insert(name.clone(), Heartbeat::first_seen(now));
                self.memory.lease_rvs.insert(name.clone(), n.lease_rv);
            }
            if n.facts.ready == Readiness::True {
                self.memory.ready_since.insert(name.clone(), now);
            }
        }
        // Renewals due at this very moment are part of the initial list.
        self.observe();
    }

    /// A new leader with empty memory takes over now and syncs.
    pub fn new_leader(&mut self, identity: &str) {
        let dry = self.memory.dry_run.is_some();
        self.memory = LeaderMemory::default();
        if dry {
            self.memory.dry_run = Some(Overlay::default());
        }
        self.settings.identity = identity.to_string();
        self.fence_commands.clear();
        self.sync();
    }

    /// Deliver the watch events of the present moment to the agent.
    fn observe(&mut self) {
        let now = self.now().mono;
        let ua = self.settings.unreachable_after;
        let t = self.t;
        for (name, n) in self.world.nodes.iter_mut() {
            if n.has_lease && n.alive && n.next_renewal <= t {
                n.lease_rv += 1;
                n.next_renewal = t + n.renew_every;
                let hb = match self.memory.heartbeats.get(name) {
                    Some(hb) => hb.renewed(now, ua),
                    None => Heartbeat::first_seen(now),
                };
                if self.memory.synced && !self.memory.lease_events_lost.contains(name) {
                    self.memory.heartbeats.insert(name.clone(), hb);
                    self.memory.lease_rvs.insert(name.clone(), n.lease_rv);
                }
            }
            if self.memory.synced {
                boot_seen_since(&mut self.memory.boot_since, &n.facts, now);
                if n.facts.ready == Readiness::True {
                    self.memory.ready_since.entry(name.clone()).or_insert(now);
                } else {
                    self.memory.ready_since.remove(name);
                }
            }
        }
    }

    /// The observations the shell hands to the core (a dry run's overlay applied).
    pub fn observations(&self) -> Observations {
        let mut obs = Observations {
            synced: self.memory.synced,
            lease_confirmed: self.memory.lease_confirmed.clone(),
            permits: self.permits.clone(),
            permit_over: self.permit_over.clone(),
            fence_commands: self
                .fence_commands
                .iter()
                .filter(|(n, _)| {
                    self.world
                        .nodes
                        .get(*n)
                        .is_some_and(|n| n.facts.record.phase().is_some())
                })
                .map(|(n, s)| (n.clone(), s.clone()))
                .collect(),
            ..Default::default()
        };
        for (name, n) in &self.world.nodes {
            obs.nodes.insert(
                name.clone(),
                NodeObs {
                    facts: n.facts.clone(),
                    heartbeat: if n.has_lease {
                        self.memory.heartbeats.get(name).copied()
                    } else {
                        None
                    },
                    ready_since: self.memory.ready_since.get(name).copied(),
                    boot_since: self.memory.boot_since.get(name).map(|(_, at)| *at),
                },
            );
        }
        // A dry run must pick the nodes from what it pretends (a record it
        // only "wrote" says Fenced), so the overlay applies before choosing.
        if let Some(overlay) = &self.memory.dry_run {
            overlay.apply(&mut obs);
        }
        let needing = nodes_needing_pods(&obs, &self.settings);
        for name in &needing {
            let pods = self
                .world
                .pods
                .iter()
                .filter(|p| p.listed_under == *name)
                .map(|p| p.pod.clone())
                .collect();
            obs.pods.insert(name.clone(), pods);
        }
        if !needing.is_empty() {
            obs.volume_attachments = self.world.vas.clone();
        }
        if let Some(overlay) = &self.memory.dry_run {
            overlay.apply(&mut obs);
        }
        obs
    }

    /// Observe, decide and execute at the present moment. Consistent
    /// Lease reads are answered at once and the decision is taken again
    /// (as the shell does, within its debounce), so they do not show in the
    /// log (see [`Sim::lease_reads`]).
    pub fn decide_now(&mut self) -> Decision {
        self.observe();
        let mut obs = self.observations();
        let now = self.now();
        let mut d = decide(&obs, now, &self.settings);
        for _ in 0..3 {
            let confirms: Vec<String> = d
                .actions
                .iter()
                .filter_map(|a| match a {
                    Action::ConfirmLease { node, .. } => Some(node.clone()),
                    _ => None,
                })
                .collect();
            if confirms.is_empty() {
                break;
            }
            for node in confirms {
                self.read_lease(&node);
            }
            obs = self.observations();
            d = decide(&obs, now, &self.settings);
        }
        for a in &d.actions {
            if matches!(a, Action::ConfirmLease { .. }) {
                continue;
            }
            self.log.push(Logged {
                at: self.t,
                action: a.clone(),
            });
        }
        match &mut self.memory.dry_run {
            Some(overlay) => overlay.record(&d.actions, &obs, now, &self.settings),
            None => self.execute(&d.actions),
        }
        self.last = Some(d.clone());
        self.last_obs = Some(obs);
        d
    }

    /// A consistent read of a node's Lease: the API server's truth against
    /// what the watch delivered.
    fn read_lease(&mut self, node: &str) {
        let now = self.now().mono;
        self.lease_reads.push((self.t.as_secs(), node.to_string()));
        let Some(n) = self.world.nodes.get(node).filter(|n| n.has_lease) else {
            return;
        };
        if self.memory.lease_rvs.get(node) == Some(&n.lease_rv) {
            self.memory.lease_confirmed.insert(node.to_string(), now);
        } else {
            let ua = self.settings.unreachable_after;
            let hb = match self.memory.heartbeats.get(node) {
                Some(hb) => hb.renewed(now, ua),
                None => Heartbeat::first_seen(now),
            };
            self.memory.heartbeats.insert(node.to_string(), hb);
            self.memory.lease_rvs.insert(node.to_string(), n.lease_rv);
            self.memory.lease_confirmed.remove(node);
        }
    }

    /// What the API server does with the actions.
    fn execute(&mut self, actions: &[Action]) {
        let now = self.now();
        for a in actions {
            match a {
                Action::UpdateNode { node, intent, .. } => {
                    let Some(n) = self.world.nodes.get_mut(node) else {
                        continue;
                    };
                    if let Ok(p) = patch::render(intent, &n.facts, now, &self.settings) {
                        assert_eq!(p.resource_version, n.facts.resource_version);
                        n.facts = patch::apply(&n.facts, &p);
                    }
                }
                Action::DeletePod { pod, .. } => {
                    self.world.pods.retain(|p| p.pod.uid != pod.uid);
                }
                Action::DeleteVolumeAttachment { attachment, .. } => {
                    self.world.vas.retain(|v| v.uid != attachment.uid);
                }
                Action::ConfirmLease { node, .. } => self.read_lease(node),
                Action::RunFenceCommand { node, attempt, .. } => {
                    let state = if self.fence_command_ok {
                        FenceCommandState::Succeeded { attempt: *attempt }
                    } else {
                        FenceCommandState::Failed {
                            attempt: *attempt,
                            at: now.mono,
                            error: "exit status 1".into(),
                        }
                    };
                    self.fence_commands.insert(node.clone(), state);
                }
            }
        }
    }

    /// Advance one second and decide.
    pub fn tick(&mut self) -> Decision {
        self.t += secs(1);
        self.decide_now()
    }

    /// Tick until offset `until` (inclusive), deciding every second.
    pub fn run_until(&mut self, until: u64) {
        while self.t < secs(until) {
            self.tick();
        }
    }

    /// Actions decided at offset `at`.
    pub fn actions_at(&self, at: u64) -> Vec<&Action> {
        self.log
            .iter()
            .filter(|l| l.at == secs(at))
            .map(|l| &l.action)
            .collect()
    }

    /// Offsets (in seconds) at which `node` got an UpdateNode with `intent`.
    pub fn updates(&self, node: &str, intent: NodeIntent) -> Vec<u64> {
        self.log
            .iter()
            .filter(|l| {
                matches!(&l.action, Action::UpdateNode { node: n, intent: i, .. } if n == node && *i == intent)
            })
            .map(|l| l.at.as_secs())
            .collect()
    }

    pub fn deleted_pods(&self) -> Vec<(u64, String)> {
        self.log
            .iter()
            .filter_map(|l| match &l.action {
                Action::DeletePod { pod, .. } => Some((l.at.as_secs(), pod.uid.clone())),
                _ => None,
            })
            .collect()
    }

    pub fn deleted_vas(&self) -> Vec<String> {
        self.log
            .iter()
            .filter_map(|l| match &l.action {
                Action::DeleteVolumeAttachment { attachment, .. } => Some(attachment.name.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn status(&self, node: &str) -> NodeStatus {
        self.last.as_ref().expect("no decision yet").report.nodes[node].clone()
    }

    pub fn warnings(&self) -> Vec<Warning> {
        self.last
            .as_ref()
            .expect("no decision yet")
            .report
            .warnings
            .clone()
    }

    /// The last decision's next wakeup, as an offset in seconds from the origin.
    pub fn wakeup(&self) -> Option<f64> {
        let r = &self.last.as_ref().expect("no decision yet").report;
        r.next_wakeup
            .map(|w| w.duration_since(testutil::base()).as_secs_f64())
    }

    pub fn record(&self, node: &str) -> &RecordState {
        &self.get(node).facts.record
    }
}
