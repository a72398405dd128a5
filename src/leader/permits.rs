//! The permit objects (`docs/permits.md`): the leader keeps one Lease per
//! member of the fencing population in the agents' namespace, naming the
//! node's grantor set and the grantors' peer addresses
//! ([`crate::decide::permit::object`] plans them). It watches the objects
//! (one label-selected watch: they change when the leader writes a set,
//! and when an agent renews through the API server, the degraded mode),
//! writes only the grantor listings whose plan changed, at most every
//! [`SYNC_INTERVAL`], and leaves the other annotations as they are. A dry
//! run writes nothing. Each object is owned by its Node: the garbage
//! collector deletes it with the Node. The object of a node that leaves the
//! population otherwise stays as it was (its agent keeps renewing with its
//! old set, which no other set depends on); a revoked node keeps its sets
//! until it is lifted. The revocations and lifts: [`revoke`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt, watcher};

use crate::decide::permit::Drift;
use crate::decide::permit::object::{
    self, ApiRenewal, GRANTORS_ANNOTATION, LABEL, ListedSet, PermitState, Unreadable,
};
use crate::decide::permit::revoke::ApiPath;
use crate::decide::permit::silence::{ApiSeen, Heard, permit_over};
use crate::decide::{Observations, Settings};
use crate::observability::metrics::Metrics;

pub mod revoke;

/// How long [`PermitObjects::refresh`] waits for one read.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(2);

/// How often the plan is compared with the objects.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(5);

/// The longest Lease name (a DNS subdomain).
const MAX_NAME: usize = 253;

/// A permit object as the leader's watch last delivered it.
#[derive(Clone, Debug)]
pub struct Observed {
    pub state: PermitState,
    /// The renewal through the API server it carries, and when this leader
    /// first saw that renewal (a renewal takes effect before any read
    /// returns it, so this is later than its writing).
    pub renewal_seen: Instant,
    /// When this leader first saw the arming the object records (a
    /// withdrawal and a new arming, a new boot's arming, are new).
    pub armed_seen: Instant,
    /// As a grantor, per grantee it reports silent: the latest its last
    /// grant can have been, from the first sighting of the report.
    pub heard: BTreeMap<String, Heard>,
    /// The object's resourceVersion, when it came from the API server.
    pub version: Option<String>,
}

/// What the watch delivered: every object, once the first listing is in.
#[derive(Debug, Default)]
pub struct Seen {
    pub synced: bool,
    pub objects: BTreeMap<String, Observed>,
    building: Option<BTreeMap<String, Observed>>,
}

impl Seen {
    /// Take in the object `lease` of `node` at `now` ([`Seen::apply`]),
    /// unless it is the version already taken in: a relisting watch or a
    /// read of an unchanged object is no new sighting of its reports.
    fn apply_lease(
        map: &mut BTreeMap<String, Observed>,
        old: Option<&Observed>,
        node: &str,
        lease: &Lease,
        now: Instant,
    ) {
        let version = lease.metadata.resource_version.clone();
        if let Some(o) = old
            && version.is_some()
            && o.version == version
        {
            map.insert(node.to_string(), o.clone());
            return;
        }
        let state = object::read(lease.metadata.annotations.as_ref());
        Self::apply(map, old, node, state, now);
        if let Some(o) = map.get_mut(node) {
            o.version = version;
        }
    }

    /// Take in one object at `now`: a renewal count that changed (or one
    /// not seen before) is first seen now.
    fn apply(
        map: &mut BTreeMap<String, Observed>,
        old: Option<&Observed>,
        node: &str,
        state: PermitState,
        now: Instant,
    ) {
        let renewal_seen = match old {
            Some(o) if same_renewal(&o.state.renewal, &state.renewal) => o.renewal_seen,
            _ => now,
        };
        let armed_seen = match old {
            Some(o) if o.state.armed == state.armed => o.armed_seen,
            _ => now,
        };
        // A report was written before it was seen: its sighting bounds the
        // last grant from above. Only the latest sighting counts: an
        // earlier one may belong to an earlier silence, the grantee having
        // renewed in between (a relisting watch skips versions).
        let heard = state
            .silent
            .iter()
            .map(|(grantee, s)| (grantee.clone(), Heard::from_report(now, s.quiet, s.credit)))
            .collect();
        map.insert(
            node.to_string(),
            Observed {
                state,
                renewal_seen,
                armed_seen,
                heard,
                version: None,
            },
        );
    }
}

/// [`PermitObjects::over`] on the objects `seen`, `boot` giving a node's
/// current boot.
fn over(
    seen: &BTreeMap<String, Observed>,
    boot: impl Fn(&str) -> Option<String>,
    drift: Drift,
) -> BTreeMap<String, Instant> {
    seen.iter()
        .filter(|(node, o)| o.state.armed_in(boot(node).as_deref()))
        .filter_map(|(node, o)| {
            let sets: Vec<_> = o.state.sets.iter().map(ListedSet::set).collect();
            let heard: BTreeMap<String, Heard> = sets
                .iter()
                .flat_map(|s| s.peers.iter())
                .filter_map(|g| Some((g.clone(), *seen.get(g)?.heard.get(node)?)))
                .collect();
            // What the renewal counts for, as the revocation reads it.
            let api = match object::api_path(o.state.renewal, o.renewal_seen) {
                ApiPath::ClosedAfter {
                    first_seen, credit, ..
                } => Some(ApiSeen { first_seen, credit }),
                ApiPath::Open | ApiPath::ClosedUnused => None,
            };
            Some((
                node.clone(),
                permit_over(&sets, &heard, api, o.armed_seen, drift)?,
            ))
        })
        .collect()
}

/// Whether two readings of an object carry the same renewal through the
/// API server (an unreadable one is never the same as anything: it counts
/// as new each time it is seen).
pub fn same_renewal(
    a: &Result<Option<ApiRenewal>, Unreadable>,
    b: &Result<Option<ApiRenewal>, Unreadable>,
) -> bool {
    match (a, b) {
        (Ok(Some(x)), Ok(Some(y))) => x.count == y.count,
        (Ok(None), Ok(None)) => true,
        _ => false,
    }
}

/// The node a permit object is for (from its name).
fn node_of(lease: &Lease) -> Option<&str> {
    lease
        .metadata
        .name
        .as_deref()?
        .strip_prefix(object::NAME_PREFIX)
}

/// Watch the permit objects into a shared [`Seen`]; the task ends when
/// the returned guard is dropped.
fn watch_objects(api: Api<Lease>, metrics: Metrics) -> (Arc<Mutex<Seen>>, AbortOnDrop) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let shared = seen.clone();
    let config = watcher::Config::default().labels(&format!("{LABEL}=true"));
    let task = tokio::spawn(async move {
        let mut events = watcher::watcher(api, config).default_backoff().boxed();
        while let Some(event) = events.next().await {
            let now = Instant::now();
            let mut seen = shared.lock().expect("permit objects");
            let seen = &mut *seen;
            match event {
                Ok(watcher::Event::Init) => seen.building = Some(BTreeMap::new()),
                Ok(watcher::Event::InitApply(lease)) => {
                    if let (Some(node), Some(building)) = (node_of(&lease), seen.building.as_mut())
                    {
                        Seen::apply_lease(building, seen.objects.get(node), node, &lease, now);
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    if let Some(b) = seen.building.take() {
                        seen.objects = b;
                    }
                    seen.synced = true;
                }
                Ok(watcher::Event::Apply(lease)) => {
                    if let Some(node) = node_of(&lease) {
                        let old = seen.objects.get(node).cloned();
                        Seen::apply_lease(&mut seen.objects, old.as_ref(), node, &lease, now);
                    }
                }
                Ok(watcher::Event::Delete(lease)) => {
                    if let Some(node) = node_of(&lease) {
                        seen.objects.remove(node);
                    }
                }
                Err(e) => {
                    metrics.watch_error("permit_objects");
                    tracing::warn!(error = %e, "permit object watch failed; retrying");
                }
            }
        }
    });
    (seen, AbortOnDrop(task))
}

/// Ends a task when dropped (the leader's run ends, and what it started
/// with it).
pub struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub struct PermitObjects {
    api: Api<Lease>,
    grantors: usize,
    dry_run: bool,
    seen: Arc<Mutex<Seen>>,
    _watch: AbortOnDrop,
    last: Option<Instant>,
}

impl PermitObjects {
    pub fn new(
        client: Client,
        namespace: &str,
        grantors: usize,
        dry_run: bool,
        metrics: Metrics,
    ) -> Self {
        let api: Api<Lease> = Api::namespaced(client, namespace);
        let (seen, watch) = watch_objects(api.clone(), metrics);
        PermitObjects {
            api,
            grantors,
            dry_run,
            seen,
            _watch: watch,
            last: None,
        }
    }

    /// The objects as last seen; `None` until the watch has listed them.
    pub fn seen(&self) -> Option<BTreeMap<String, Observed>> {
        let seen = self.seen.lock().expect("permit objects");
        seen.synced.then(|| seen.objects.clone())
    }

    pub fn api(&self) -> &Api<Lease> {
        &self.api
    }

    /// Read the permit objects of `nodes` and of their grantors (a quorum
    /// read each) into what the watch delivered, as if it had delivered
    /// them now: a renewal through the API server, an arming, or the
    /// withdrawal of a report that the watch had not shown yet counts from
    /// now (an unchanged object counts as before). The leader does this
    /// for a node whose stale Lease it just confirmed, before it may begin
    /// fencing it: under the permit that is its reset, and a stalled watch
    /// must not be what decides it. A failed read leaves the object as the
    /// watch showed it.
    pub async fn refresh(&self, nodes: &[String]) {
        let mut read: Vec<String> = Vec::new();
        for node in nodes {
            read.push(node.clone());
            let seen = self.seen.lock().expect("permit objects");
            if let Some(o) = seen.objects.get(node.as_str()) {
                read.extend(
                    o.state
                        .sets
                        .iter()
                        .flat_map(|s| s.grantors.iter().map(|g| g.node.clone())),
                );
            }
        }
        read.sort();
        read.dedup();
        for node in &read {
            let name = object::name(node);
            let read = tokio::time::timeout(REFRESH_TIMEOUT, self.api.get_opt(&name));
            let lease = match read.await {
                Ok(Ok(Some(lease))) => lease,
                Ok(Ok(None)) => continue,
                Ok(Err(e)) => {
                    tracing::debug!(node = %node, error = %e, "cannot read the node's permit object");
                    continue;
                }
                Err(_) => {
                    tracing::debug!(node = %node, "reading the node's permit object timed out");
                    continue;
                }
            };
            let now = Instant::now();
            let mut seen = self.seen.lock().expect("permit objects");
            if seen.synced {
                let old = seen.objects.get(node.as_str()).cloned();
                Seen::apply_lease(&mut seen.objects, old.as_ref(), node, &lease, now);
            }
        }
    }

    /// Per node whose object says its agent armed in the node's current
    /// boot: from when no permit it could hold is left, by its grantors'
    /// reports and its renewals through the API server
    /// ([`permit_over`]; the core decides what that makes it).
    pub fn over(&self, obs: &Observations, drift: Drift) -> BTreeMap<String, Instant> {
        let boot = |node: &str| obs.nodes.get(node)?.facts.boot_id().map(str::to_string);
        // Under the lock: no copy of every object at every pass.
        let seen = self.seen.lock().expect("permit objects");
        if !seen.synced {
            return BTreeMap::new();
        }
        over(&seen.objects, boot, drift)
    }

    /// Bring the grantor listings in line with the plan for `obs`, if
    /// [`SYNC_INTERVAL`] passed since the last time.
    pub async fn sync(&mut self, obs: &Observations, settings: &Settings, now: Instant) {
        if self.dry_run || self.last.is_some_and(|t| now < t + SYNC_INTERVAL) {
            return;
        }
        let Some(seen) = self.seen() else {
            return;
        };
        self.last = Some(now);
        let known: BTreeMap<String, Vec<ListedSet>> = seen
            .iter()
            .map(|(n, o)| (n.clone(), o.state.sets.clone()))
            .collect();
        // Revoked, or unreadable (it may be): keep its sets.
        let revoked: BTreeSet<String> = seen
            .iter()
            .filter(|(_, o)| !matches!(o.state.revocation, Ok(r) if !r.revoked))
            .map(|(n, _)| n.clone())
            .collect();
        // A new object starts at the wall clock's seconds: above any version
        // a Node of the same name had before (its grantors may remember
        // retiring those).
        let first_version = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs());
        let plan = object::plan(
            &object::candidates(obs, settings),
            self.grantors,
            &known,
            &revoked,
            first_version,
        );
        for (node, sets) in &plan {
            if known.get(node) == Some(sets) {
                continue;
            }
            if object::name(node).len() > MAX_NAME {
                tracing::warn!(node = %node, "node name too long for a permit object's name; it gets none");
                continue;
            }
            let uid = obs.nodes.get(node).and_then(|n| n.facts.uid.as_deref());
            match self
                .write(node, uid, known.get(node).map(Vec::as_slice), sets)
                .await
            {
                Ok(true) => {
                    tracing::info!(node = %node, version = sets.last().map_or(0, |s| s.version), grantors = ?sets.last().map(|s| s.grantors.iter().map(|g| g.node.as_str()).collect::<Vec<_>>()), "permit object written");
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(node = %node, error = %e, "cannot write the permit object; trying again later");
                }
            }
        }
    }

    /// Create the object of `node` (Node UID `uid`) listing `sets`, or set
    /// its listing (an update with the resourceVersion read: a concurrent
    /// writer makes it fail, and the next sync tries again with what the
    /// watch delivers). Whether it wrote: an object revoked since the
    /// watch said otherwise keeps its sets, and one whose listing is no
    /// longer `planned_from` (the watch lagged behind a write) is planned
    /// again at the next sync.
    async fn write(
        &self,
        node: &str,
        uid: Option<&str>,
        planned_from: Option<&[ListedSet]>,
        sets: &[ListedSet],
    ) -> kube::Result<bool> {
        let name = object::name(node);
        match self.api.get_opt(&name).await? {
            Some(mut lease) => {
                let state = object::read(lease.metadata.annotations.as_ref());
                if !matches!(state.revocation, Ok(r) if !r.revoked)
                    || planned_from.is_some_and(|p| p != state.sets)
                {
                    return Ok(false);
                }
                lease
                    .metadata
                    .annotations
                    .get_or_insert_with(Default::default)
                    .insert(GRANTORS_ANNOTATION.to_string(), object::render(sets));
                if lease.metadata.owner_references.is_none() {
                    lease.metadata.owner_references =
                        lease_for(node, uid, sets).metadata.owner_references;
                }
                lease.metadata.managed_fields = None;
                self.api
                    .replace(&name, &PostParams::default(), &lease)
                    .await?;
            }
            None => {
                self.api
                    .create(&PostParams::default(), &lease_for(node, uid, sets))
                    .await?;
            }
        }
        Ok(true)
    }
}

/// The permit object of `node` listing `sets`, owned by the Node (UID
/// `uid`, when known) so that the garbage collector deletes it with the
/// Node. Not `blockOwnerDeletion`: that would need delete rights on Nodes.
pub fn lease_for(node: &str, uid: Option<&str>, sets: &[ListedSet]) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(object::name(node)),
            labels: Some(
                [
                    (LABEL.to_string(), "true".to_string()),
                    (
                        "app.kubernetes.io/name".to_string(),
                        "kube-fencer".to_string(),
                    ),
                ]
                .into(),
            ),
            annotations: Some([(GRANTORS_ANNOTATION.to_string(), object::render(sets))].into()),
            owner_references: uid.map(|uid| {
                vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    name: node.to_string(),
                    uid: uid.to_string(),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(node.to_string()),
            ..Default::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::permit::object::{Grantor, Silent};

    #[test]
    fn a_node_is_over_once_its_grantors_report_it_and_only_if_armed_in_this_boot() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let listed = |peers: &[&str]| ListedSet {
            version: 1,
            grantors: peers
                .iter()
                .map(|p| Grantor {
                    node: p.to_string(),
                    address: String::new(),
                })
                .collect(),
        };
        let reporting = |grantee: &str, quiet: u32| PermitState {
            silent: BTreeMap::from([(
                grantee.to_string(),
                Silent {
                    quiet: quiet * s,
                    credit: 10 * s,
                },
            )]),
            ..Default::default()
        };
        let mut seen = BTreeMap::new();
        let x = PermitState {
            sets: vec![listed(&["a", "b"])],
            armed: Some("boot-x".into()),
            ..Default::default()
        };
        Seen::apply(&mut seen, None, "x", x.clone(), t0);
        Seen::apply(&mut seen, None, "a", reporting("x", 3), t0 + 4 * s);
        let boots = |node: &str| (node == "x").then(|| "boot-x".to_string());
        let exact = Drift::from_ppm(0).unwrap();
        assert!(over(&seen, boots, exact).is_empty(), "b may still grant");
        Seen::apply(&mut seen, None, "b", reporting("x", 4), t0 + 5 * s);
        // a last granted by 1, b by 1: over at 11.
        assert_eq!(
            over(&seen, boots, exact),
            BTreeMap::from([("x".to_string(), t0 + 11 * s)])
        );
        // Rebooted (another boot ID): nothing armed in this boot.
        let rebooted = |node: &str| (node == "x").then(|| "boot-y".to_string());
        assert!(over(&seen, rebooted, exact).is_empty());
        // A renewal through the API server first seen at 6 holds until 36.
        let renewed = PermitState {
            renewal: Ok(Some(ApiRenewal {
                count: 1,
                credit: 30 * s,
                watchdog_timeout: 5 * s,
            })),
            ..x
        };
        let old = seen.get("x").cloned();
        Seen::apply(&mut seen, old.as_ref(), "x", renewed, t0 + 6 * s);
        assert_eq!(
            over(&seen, boots, exact),
            BTreeMap::from([("x".to_string(), t0 + 36 * s)])
        );
    }

    #[test]
    fn reports_from_before_the_current_arming_count_for_nothing() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let at = |n: u32| t0 + n * s;
        let silent = PermitState {
            silent: BTreeMap::from([(
                "x".to_string(),
                Silent {
                    quiet: 3 * s,
                    credit: 10 * s,
                },
            )]),
            ..Default::default()
        };
        let armed = |boot: Option<&str>| PermitState {
            sets: vec![ListedSet {
                version: 1,
                grantors: vec![Grantor {
                    node: "a".into(),
                    address: String::new(),
                }],
            }],
            armed: boot.map(str::to_string),
            ..Default::default()
        };
        let boots = |node: &str| (node == "x").then(|| "boot-x".to_string());
        let exact = Drift::from_ppm(0).unwrap();
        let mut seen = BTreeMap::new();
        let mut see = |node: &str, state: PermitState, t: Instant| {
            let old = seen.get(node).cloned();
            Seen::apply(&mut seen, old.as_ref(), node, state, t);
            (over(&seen, boots, exact), seen[node].armed_seen)
        };
        see("x", armed(Some("boot-x")), at(0));
        // a last granted x by 2 (reported at 5): over at 12.
        let (o, _) = see("a", silent.clone(), at(5));
        assert_eq!(o, BTreeMap::from([("x".to_string(), at(12))]));
        // The same arming seen again with another change: still from 0.
        let (o, since) = see("x", armed(Some("boot-x")), at(6));
        assert_eq!(since, at(0));
        assert_eq!(o.len(), 1);
        // A rolling update: the arming withdrawn, then armed again by the
        // new agent, which held a permit to arm: a's report is older.
        let (o, _) = see("x", armed(None), at(7));
        assert!(o.is_empty(), "not armed");
        let (o, since) = see("x", armed(Some("boot-x")), at(9));
        assert_eq!(since, at(9));
        assert!(o.is_empty(), "a report from before the arming: {o:?}");
        // A new report (the new agent went silent too) counts again.
        let (o, _) = see("a", silent, at(14));
        assert_eq!(o, BTreeMap::from([("x".to_string(), at(21))]));
    }

    #[test]
    fn an_unchanged_object_read_again_is_no_new_sighting_of_its_reports() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let report = |version: &str, grantee: &str| {
            let mut lease = Lease::default();
            lease.metadata.resource_version = Some(version.to_string());
            lease.metadata.annotations = Some(BTreeMap::from([(
                object::SILENT_ANNOTATION.to_string(),
                object::render_value(&BTreeMap::from([(
                    grantee.to_string(),
                    Silent {
                        quiet: 3 * s,
                        credit: 10 * s,
                    },
                )])),
            )]));
            lease
        };
        let mut map = BTreeMap::new();
        let mut see = |lease: Lease, at: u32| {
            let old = map.get("a").cloned();
            Seen::apply_lease(&mut map, old.as_ref(), "a", &lease, t0 + at * s);
            map["a"].heard.get("x").map(|h| h.last)
        };
        assert_eq!(see(report("7", "x"), 5), Some(t0 + 2 * s));
        // A relisting watch, or the leader's own read before it fences:
        // the same version, the first sighting stands.
        assert_eq!(see(report("7", "x"), 20), Some(t0 + 2 * s));
        // Another version (another change on the object): seen anew.
        assert_eq!(see(report("8", "x"), 21), Some(t0 + 18 * s));
        // The report withdrawn: nothing heard any more.
        assert_eq!(see(report("9", "y"), 22), None);
    }

    #[test]
    fn a_renewal_is_first_seen_when_its_count_changes() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let with = |renewal: Result<Option<u64>, Unreadable>| PermitState {
            renewal: renewal.map(|c| {
                c.map(|count| ApiRenewal {
                    count,
                    ..Default::default()
                })
            }),
            ..Default::default()
        };
        let mut map = BTreeMap::new();
        let mut see = |state: PermitState, t: Instant| {
            let old = map.get("a").cloned();
            Seen::apply(&mut map, old.as_ref(), "a", state, t);
            map["a"].renewal_seen
        };
        assert_eq!(see(with(Ok(None)), at(0)), at(0));
        assert_eq!(see(with(Ok(None)), at(1)), at(0));
        assert_eq!(see(with(Ok(Some(1))), at(2)), at(2));
        // The same renewal seen again (another annotation changed): from
        // when it was first seen.
        assert_eq!(see(with(Ok(Some(1))), at(3)), at(2));
        assert_eq!(see(with(Ok(Some(2))), at(4)), at(4));
        // Unreadable: new every time.
        assert_eq!(see(with(Err(Unreadable)), at(5)), at(5));
        assert_eq!(see(with(Err(Unreadable)), at(6)), at(6));
        assert_eq!(see(with(Ok(Some(2))), at(7)), at(7));
    }

    #[test]
    fn the_object_is_owned_by_its_node_and_lists_the_sets() {
        let sets = vec![ListedSet {
            version: 2,
            grantors: vec![Grantor {
                node: "b".into(),
                address: "10.0.0.2:9747".into(),
            }],
        }];
        let lease = lease_for("a", Some("uid-a"), &sets);
        assert_eq!(lease.metadata.name.as_deref(), Some("kube-fencer-permit-a"));
        let owner = &lease.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("Node", "a", "uid-a")
        );
        assert_eq!(owner.block_owner_deletion, None);
        let annotations = lease.metadata.annotations.unwrap();
        assert_eq!(
            object::parse(&annotations[GRANTORS_ANNOTATION]),
            Some(sets.clone())
        );
        assert_eq!(lease.metadata.labels.unwrap()[LABEL], "true");
        // Without a UID: no owner (never a reference to the wrong Node).
        assert!(
            lease_for("a", None, &sets)
                .metadata
                .owner_references
                .is_none()
        );
    }
}
