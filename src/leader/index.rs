//! The leader's in-memory view of Nodes and their heartbeats, fed by two
//! watchers (Nodes, and node Leases in `kube-node-lease`), kept directly in
//! the shape of the core's [`Observations`] so a decision needs no copy.
//!
//! Timers are in our own monotonic time: a heartbeat is "when we saw the
//! Lease's resourceVersion change", never the Lease's renewTime. After any
//! (re)list, every timer restarts at the moment the list completed.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Taint as K8sTaint};
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::Event;

use crate::decide::{
    FenceCommandState, Heartbeat, NodeObs, Observations, PodObs, Readiness, VolumeAttachmentObs,
};
use crate::k8s::facts::node_facts;

/// What one decision sees beyond the watched Nodes and Leases.
#[derive(Debug, Default)]
pub struct Attached {
    pub pods: BTreeMap<String, Vec<PodObs>>,
    pub volume_attachments: Vec<VolumeAttachmentObs>,
    pub fence_commands: BTreeMap<String, FenceCommandState>,
    pub permits: BTreeMap<String, crate::decide::PermitFence>,
    pub permit_over: BTreeMap<String, std::time::Instant>,
}

/// The Node as stored, beyond the core's facts: what a write needs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoredNode {
    pub uid: Option<String>,
    /// The taints as stored (with `timeAdded`), so rewriting the list keeps them.
    pub taints: Vec<K8sTaint>,
}

/// What a consistent read of a node's Lease found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseRead {
    /// As the watch showed it: not renewed.
    Unchanged,
    /// Renewed since the watch last showed it: recorded as a renewal now.
    Renewed,
    /// No such Lease (or none known for the node).
    Gone,
}

#[derive(Clone, Debug)]
struct LeaseEntry {
    resource_version: Option<String>,
    heartbeat: Heartbeat,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Index {
    unreachable_after: Duration,
    obs: Observations,
    stored: HashMap<String, StoredNode>,
    leases: HashMap<String, LeaseEntry>,
    nodes_synced: bool,
    leases_synced: bool,
    node_buffer: Option<Vec<Node>>,
    lease_buffer: Option<Vec<PartialObjectMeta<Lease>>>,
    /// The Lease watch failed after a sync: unsynced until it works again.
    lease_watch_blind: bool,
}

impl Index {
    pub fn new(unreachable_after: Duration) -> Self {
        Index {
            unreachable_after,
            obs: Observations::default(),
            stored: HashMap::new(),
            leases: HashMap::new(),
            nodes_synced: false,
            leases_synced: false,
            node_buffer: None,
            lease_buffer: None,
            lease_watch_blind: false,
        }
    }

    /// True once both watchers completed their current (re)list.
    pub fn synced(&self) -> bool {
        self.nodes_synced && self.leases_synced
    }

    /// The observations as of now (without pods; see [`Observations::pods`]).
    pub fn observations(&self) -> &Observations {
        &self.obs
    }

    /// `f` of the observations with this pass's pods, VolumeAttachments and
    /// fence command states attached; they are detached again before this
    /// returns, so none outlives the decision it was listed for.
    pub fn with_attached<R>(
        &mut self,
        attached: Attached,
        f: impl FnOnce(&Observations) -> R,
    ) -> R {
        self.obs.pods = attached.pods;
        self.obs.volume_attachments = attached.volume_attachments;
        self.obs.fence_commands = attached.fence_commands;
        self.obs.permits = attached.permits;
        self.obs.permit_over = attached.permit_over;
        let result = f(&self.obs);
        self.obs.pods = BTreeMap::new();
        self.obs.volume_attachments = Vec::new();
        self.obs.fence_commands = BTreeMap::new();
        self.obs.permits = BTreeMap::new();
        self.obs.permit_over = BTreeMap::new();
        result
    }

    pub fn stored(&self, node: &str) -> Option<&StoredNode> {
        self.stored.get(node)
    }

    pub fn node_count(&self) -> usize {
        self.obs.nodes.len()
    }

    /// Apply one Node watch event observed at `now`. Returns whether anything changed.
    pub fn on_node_event(&mut self, event: Event<Node>, now: Instant) -> bool {
        match event {
            Event::Init => {
                self.nodes_synced = false;
                self.obs.synced = false;
                self.node_buffer = Some(Vec::new());
                true
            }
            Event::InitApply(node) => {
                self.node_buffer.get_or_insert_with(Vec::new).push(node);
                false
            }
            Event::InitDone => {
                let listed = self.node_buffer.take().unwrap_or_default();
                self.obs.nodes.clear();
                self.stored.clear();
                for node in listed {
                    self.insert_node(&node, now, true);
                }
                self.nodes_synced = true;
                self.obs.synced = self.synced();
                true
            }
            Event::Apply(node) => self.upsert_node(&node, now),
            Event::Delete(node) => {
                let name = node.name_any();
                self.stored.remove(&name);
                self.obs.nodes.remove(&name).is_some()
            }
        }
    }

    /// Record a Node as written by us (the API's answer to a patch), so the
    /// next decision sees our own write without waiting for the watch.
    pub fn upsert_node(&mut self, node: &Node, now: Instant) -> bool {
        let name = node.name_any();
        let before = self.obs.nodes.get(&name).cloned();
        self.insert_node(node, now, false);
        before.as_ref() != self.obs.nodes.get(&name)
    }

    fn insert_node(&mut self, node: &Node, now: Instant, relist: bool) {
        let facts = node_facts(node);
        let name = facts.name.clone();
        let previous = if relist {
            None
        } else {
            self.obs.nodes.get(&name)
        };
        let previous_ready_since = previous.and_then(|n| n.ready_since);
        let boot_since = match (facts.current_boot(), previous) {
            (Err(_), _) => None,
            (Ok(boot), Some(p)) if p.facts.current_boot().ok() == Some(boot) => {
                p.boot_since.or(Some(now))
            }
            (Ok(_), _) => Some(now),
        };
        let ready_since = match facts.ready {
            Readiness::True => Some(previous_ready_since.unwrap_or(now)),
            _ => None,
        };
        let heartbeat = self.leases.get(&name).map(|l| l.heartbeat);
        self.stored.insert(
            name.clone(),
            StoredNode {
                uid: node.metadata.uid.clone(),
                taints: node
                    .spec
                    .as_ref()
                    .and_then(|s| s.taints.clone())
                    .unwrap_or_default(),
            },
        );
        self.obs.nodes.insert(
            name,
            NodeObs {
                facts,
                heartbeat,
                ready_since,
                boot_since,
            },
        );
    }

    /// Apply one node-Lease watch event observed at `now`. Returns whether anything changed.
    pub fn on_lease_event(&mut self, event: Event<PartialObjectMeta<Lease>>, now: Instant) -> bool {
        match event {
            Event::Init => {
                self.leases_synced = false;
                self.obs.synced = false;
                self.lease_buffer = Some(Vec::new());
                true
            }
            Event::InitApply(lease) => {
                self.lease_buffer.get_or_insert_with(Vec::new).push(lease);
                false
            }
            Event::InitDone => {
                let listed = self.lease_buffer.take().unwrap_or_default();
                self.leases.clear();
                for lease in listed {
                    self.leases.insert(
                        lease.name_any(),
                        LeaseEntry {
                            resource_version: lease.metadata.resource_version.clone(),
                            heartbeat: Heartbeat::first_seen(now),
                        },
                    );
                }
                let leases = &self.leases;
                for (name, node) in self.obs.nodes.iter_mut() {
                    node.heartbeat = leases.get(name).map(|l| l.heartbeat);
                }
                self.leases_synced = true;
                self.obs.synced = self.synced();
                true
            }
            Event::Apply(lease) => {
                let name = lease.name_any();
                let rv = lease.metadata.resource_version.clone();
                let heartbeat = match self.leases.get(&name) {
                    Some(entry) if entry.resource_version == rv => return false,
                    Some(entry) => entry.heartbeat.renewed(now, self.unreachable_after),
                    None => Heartbeat::first_seen(now),
                };
                self.leases.insert(
                    name.clone(),
                    LeaseEntry {
                        resource_version: rv,
                        heartbeat,
                    },
                );
                if let Some(node) = self.obs.nodes.get_mut(&name) {
                    node.heartbeat = Some(heartbeat);
                }
                true
            }
            Event::Delete(lease) => {
                let name = lease.name_any();
                let removed = self.leases.remove(&name).is_some();
                if let Some(node) = self.obs.nodes.get_mut(&name) {
                    node.heartbeat = None;
                }
                removed
            }
        }
    }

    /// The node-Lease watch works again after failing: while it failed we
    /// were blind, and a renewal we could not see is not a missed one. Every
    /// heartbeat restarts now, as after a relist (the watch may resume from
    /// its resourceVersion without one).
    pub fn lease_watch_resumed(&mut self, now: Instant) {
        for entry in self.leases.values_mut() {
            entry.heartbeat = Heartbeat::first_seen(now);
        }
        self.obs.lease_confirmed.clear();
        // Synced again if it was before the failure, unless a relist is
        // under way (its InitDone syncs).
        if std::mem::take(&mut self.lease_watch_blind) && self.lease_buffer.is_none() {
            self.leases_synced = true;
            self.obs.synced = self.synced();
        }
        let leases = &self.leases;
        for (name, node) in self.obs.nodes.iter_mut() {
            node.heartbeat = leases.get(name).map(|l| l.heartbeat);
        }
    }

    /// The node-Lease watch failed: until it works again we are blind, so
    /// nothing is decided (a renewal we cannot see is not a missed one).
    pub fn lease_watch_failed(&mut self) {
        self.lease_watch_blind |= self.leases_synced;
        self.leases_synced = false;
        self.obs.synced = false;
    }

    /// A consistent read (GET) of a node's Lease returned `resource_version`
    /// (`None`: the Lease is gone) at `now`. The same version as the watch
    /// showed confirms the Lease was not renewed; another one is a renewal
    /// the watch had not delivered (it is stale or stalled): observed now.
    pub fn lease_read(
        &mut self,
        node: &str,
        resource_version: Option<&str>,
        now: Instant,
    ) -> LeaseRead {
        let Some(rv) = resource_version else {
            self.leases.remove(node);
            self.obs.lease_confirmed.remove(node);
            if let Some(n) = self.obs.nodes.get_mut(node) {
                n.heartbeat = None;
            }
            return LeaseRead::Gone;
        };
        let Some(entry) = self.leases.get_mut(node) else {
            return LeaseRead::Gone;
        };
        if entry.resource_version.as_deref() == Some(rv) {
            self.obs.lease_confirmed.insert(node.to_string(), now);
            return LeaseRead::Unchanged;
        }
        entry.resource_version = Some(rv.to_string());
        entry.heartbeat = entry.heartbeat.renewed(now, self.unreachable_after);
        let heartbeat = entry.heartbeat;
        self.obs.lease_confirmed.remove(node);
        if let Some(n) = self.obs.nodes.get_mut(node) {
            n.heartbeat = Some(heartbeat);
        }
        LeaseRead::Renewed
    }

    /// Heartbeat of a node, if its Lease is known.
    pub fn heartbeat(&self, node: &str) -> Option<Heartbeat> {
        self.leases.get(node).map(|l| l.heartbeat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, rv: &str, ready: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name, "resourceVersion": rv, "uid": format!("uid-{name}")},
            "status": {"conditions": [{"type": "Ready", "status": ready}]},
        }))
        .unwrap()
    }

    fn lease(name: &str, rv: &str) -> PartialObjectMeta<Lease> {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "kube-node-lease", "resourceVersion": rv},
        }))
        .unwrap()
    }

    /// An index synced at `t` with node `a` (Ready) and its Lease (version 10).
    fn synced_with_a(t: Instant) -> Index {
        let mut index = Index::new(Duration::from_secs(20));
        sync(
            &mut index,
            vec![node("a", "1", "True")],
            vec![lease("a", "10")],
            t,
        );
        index
    }

    fn sync(
        index: &mut Index,
        nodes: Vec<Node>,
        leases: Vec<PartialObjectMeta<Lease>>,
        t: Instant,
    ) {
        index.on_node_event(Event::Init, t);
        for n in nodes {
            index.on_node_event(Event::InitApply(n), t);
        }
        index.on_node_event(Event::InitDone, t);
        index.on_lease_event(Event::Init, t);
        for l in leases {
            index.on_lease_event(Event::InitApply(l), t);
        }
        index.on_lease_event(Event::InitDone, t);
    }

    #[test]
    fn unsynced_until_both_lists_complete() {
        let t0 = Instant::now();
        let mut index = Index::new(Duration::from_secs(20));
        assert!(!index.synced());
        index.on_node_event(Event::Init, t0);
        index.on_node_event(Event::InitApply(node("a", "1", "True")), t0);
        assert!(
            index.observations().nodes.is_empty(),
            "buffered until InitDone"
        );
        index.on_node_event(Event::InitDone, t0);
        assert!(!index.synced());
        assert!(!index.observations().synced);
        index.on_lease_event(Event::Init, t0);
        index.on_lease_event(Event::InitDone, t0);
        assert!(index.synced());
        assert!(index.observations().synced);
        // A restart of either watcher makes the index cold again.
        index.on_lease_event(Event::Init, t0);
        assert!(!index.observations().synced);
    }

    #[test]
    fn a_failed_lease_watch_makes_the_index_blind_until_it_works_again() {
        let t0 = Instant::now();
        let mut index = synced_with_a(t0);
        assert!(index.synced());
        index.lease_watch_failed();
        assert!(!index.synced() && !index.observations().synced);
        let t1 = t0 + Duration::from_secs(30);
        index.lease_watch_resumed(t1);
        assert!(index.synced() && index.observations().synced);
        assert_eq!(index.heartbeat("a"), Some(Heartbeat::first_seen(t1)));
        // A failure before the first sync does not make a resumption "synced".
        let mut cold = Index::new(Duration::from_secs(20));
        cold.lease_watch_failed();
        cold.lease_watch_resumed(t1);
        assert!(!cold.synced());
    }

    #[test]
    fn a_consistent_lease_read_confirms_or_counts_as_a_renewal() {
        let t0 = Instant::now();
        let mut index = synced_with_a(t0);
        let t1 = t0 + Duration::from_secs(25);
        assert_eq!(index.lease_read("a", Some("10"), t1), LeaseRead::Unchanged);
        assert_eq!(index.observations().lease_confirmed["a"], t1);
        assert_eq!(index.heartbeat("a").unwrap().last_renewal, t0);
        // The watch stalled: the API server has a newer Lease.
        let t2 = t1 + Duration::from_secs(1);
        assert_eq!(index.lease_read("a", Some("12"), t2), LeaseRead::Renewed);
        assert_eq!(index.heartbeat("a").unwrap().last_renewal, t2);
        assert_eq!(
            index.observations().nodes["a"]
                .heartbeat
                .unwrap()
                .last_renewal,
            t2
        );
        assert!(!index.observations().lease_confirmed.contains_key("a"));
        // The late watch event of that renewal is not a second one.
        assert!(!index.on_lease_event(Event::Apply(lease("a", "12")), t2 + Duration::from_secs(1)));
        assert_eq!(index.lease_read("a", None, t2), LeaseRead::Gone);
        assert_eq!(index.observations().nodes["a"].heartbeat, None);
    }

    #[test]
    fn heartbeats_and_ready_since() {
        let t0 = Instant::now();
        let mut index = Index::new(Duration::from_secs(20));
        sync(
            &mut index,
            vec![node("a", "1", "True"), node("b", "1", "False")],
            vec![lease("a", "10")],
            t0,
        );
        let obs = index.observations();
        assert_eq!(obs.nodes["a"].heartbeat, Some(Heartbeat::first_seen(t0)));
        assert_eq!(obs.nodes["a"].ready_since, Some(t0));
        assert_eq!(obs.nodes["b"].heartbeat, None);
        assert_eq!(obs.nodes["b"].ready_since, None);
        assert_eq!(index.stored("a").unwrap().uid.as_deref(), Some("uid-a"));

        // Same resourceVersion again (e.g. a resync): not a renewal.
        let t1 = t0 + Duration::from_secs(5);
        assert!(!index.on_lease_event(Event::Apply(lease("a", "10")), t1));
        assert_eq!(index.heartbeat("a").unwrap().last_renewal, t0);

        // Lease for b appears.
        assert!(index.on_lease_event(Event::Apply(lease("b", "3")), t1));
        assert_eq!(
            index.observations().nodes["b"].heartbeat,
            Some(Heartbeat::first_seen(t1))
        );

        // b becomes Ready: ready_since starts then, and stays on later updates.
        assert!(index.on_node_event(Event::Apply(node("b", "2", "True")), t1));
        let t2 = t1 + Duration::from_secs(5);
        index.on_node_event(Event::Apply(node("b", "3", "True")), t2);
        assert_eq!(index.observations().nodes["b"].ready_since, Some(t1));
        // Not ready resets it.
        index.on_node_event(Event::Apply(node("b", "4", "Unknown")), t2);
        assert_eq!(index.observations().nodes["b"].ready_since, None);

        // Deletions.
        assert!(index.on_lease_event(Event::Delete(lease("b", "3")), t2));
        assert_eq!(index.observations().nodes["b"].heartbeat, None);
        assert!(index.on_node_event(Event::Delete(node("b", "4", "Unknown")), t2));
        assert!(!index.observations().nodes.contains_key("b"));
        assert!(index.stored("b").is_none());
    }

    #[test]
    fn renewal_updates_heartbeat() {
        let t0 = Instant::now();
        let mut index = synced_with_a(t0);
        let t1 = t0 + Duration::from_secs(10);
        assert!(index.on_lease_event(Event::Apply(lease("a", "11")), t1));
        let hb = index.observations().nodes["a"].heartbeat.unwrap();
        assert_eq!(
            hb,
            Heartbeat::first_seen(t0).renewed(t1, Duration::from_secs(20))
        );
    }

    #[test]
    fn relist_restarts_timers() {
        let t0 = Instant::now();
        let mut index = synced_with_a(t0);
        let t1 = t0 + Duration::from_secs(60);
        sync(
            &mut index,
            vec![node("a", "1", "True")],
            vec![lease("a", "10")],
            t1,
        );
        let a = &index.observations().nodes["a"];
        assert_eq!(a.heartbeat, Some(Heartbeat::first_seen(t1)));
        assert_eq!(a.ready_since, Some(t1));
    }

    #[test]
    fn a_resumed_lease_watch_restarts_timers() {
        let t0 = Instant::now();
        let mut index = synced_with_a(t0);
        let t1 = t0 + Duration::from_secs(60);
        index.lease_watch_resumed(t1);
        let a = &index.observations().nodes["a"];
        assert_eq!(a.heartbeat, Some(Heartbeat::first_seen(t1)));
        assert_eq!(index.heartbeat("a"), Some(Heartbeat::first_seen(t1)));
    }

    #[test]
    fn relist_drops_vanished_objects() {
        let t0 = Instant::now();
        let mut index = Index::new(Duration::from_secs(20));
        sync(
            &mut index,
            vec![node("a", "1", "True"), node("b", "1", "True")],
            vec![lease("a", "1"), lease("b", "1")],
            t0,
        );
        sync(
            &mut index,
            vec![node("a", "1", "True")],
            vec![lease("a", "1")],
            t0,
        );
        assert_eq!(index.node_count(), 1);
        assert!(index.heartbeat("b").is_none());
    }
}
