//! The permit object: one Lease per node in the agents' namespace,
//! `kube-fencer-permit-<node>`, through which the leader tells a node's
//! agent who its grantors are ([`GRANTORS_ANNOTATION`]), the node's agent
//! renews through the API server when its peers cannot grant
//! ([`RENEWAL_ANNOTATION`]), and the leader closes that path when it
//! fences the node ([`REVOCATION_ANNOTATION`], with the node's fencing
//! number). Each annotation has one writer; every write is an update with
//! a precondition on the resourceVersion read, so a renewal and the
//! revocation that closes the path can never both take effect on the
//! same version: [`renew`], [`close`], [`lift`].
//!
//! An agent watches its own object only (one object, whatever the size of
//! the cluster) and learns its grantors' addresses from it, so that no
//! agent needs to list Nodes for the permit. The leader plans every object
//! from the fencing population it already watches: [`plan`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::assign::{Member, assign};
use super::revoke::ApiPath;
use super::timings::{API_CREDIT_CAP, WATCHDOG_CAP};
use super::{GrantorSet, Stop};

/// Name prefix of the permit objects.
pub const NAME_PREFIX: &str = "kube-fencer-permit-";
/// Label on every permit object (the leader lists them by it).
pub const LABEL: &str = "kube-fencer.io/permit";
/// Label naming the node a permit object is for.
pub const NODE_LABEL: &str = "kube-fencer.io/node";
/// Annotation holding the node's grantor sets.
pub const GRANTORS_ANNOTATION: &str = "kube-fencer.io/grantors";
/// Annotation the node's agent writes with each renewal through the API
/// server ([`ApiRenewal`]).
pub const RENEWAL_ANNOTATION: &str = "kube-fencer.io/api-renewal";
/// Annotation the leader writes: the node's fencing number and whether
/// the node is revoked ([`Revocation`]).
pub const REVOCATION_ANNOTATION: &str = "kube-fencer.io/revocation";
/// Annotation the node's agent writes once it armed its watchdog under
/// the permit in a boot ([`Armed`]); withdrawn before a graceful disarm.
pub const ARMED_ANNOTATION: &str = "kube-fencer.io/armed";
/// Annotation the node's agent writes as a grantor: the grantees that
/// fell silent, and how long ago each last renewed ([`Silent`]).
pub const SILENT_ANNOTATION: &str = "kube-fencer.io/silent";
/// The node label that names its failure domain.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// The permit object of `node`: a Lease name (a DNS subdomain: node names
/// are one already).
pub fn name(node: &str) -> String {
    format!("{NAME_PREFIX}{node}")
}

/// A grantor as the node's agent needs it: which node, and where its agent
/// listens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grantor {
    pub node: String,
    pub address: String,
}

/// One listed grantor set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedSet {
    pub version: u64,
    pub grantors: Vec<Grantor>,
}

impl ListedSet {
    /// The set as the holder counts it (grantors by node name).
    pub fn set(&self) -> GrantorSet {
        GrantorSet::new(
            self.version,
            self.grantors.iter().map(|g| g.node.clone()).collect(),
        )
    }
}

/// Render the sets for [`GRANTORS_ANNOTATION`].
pub fn render(sets: &[ListedSet]) -> String {
    serde_json::to_string(sets).unwrap_or_default()
}

/// Parse [`GRANTORS_ANNOTATION`]; `None` when it is not the format.
pub fn parse(text: &str) -> Option<Vec<ListedSet>> {
    serde_json::from_str(text).ok()
}

/// The node's renewals through the API server: how many so far (each one
/// a new count, so the leader tells them apart without comparing clocks),
/// and how long the node counts the latest and how long its watchdog
/// timeout may be meanwhile.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiRenewal {
    pub count: u64,
    #[serde(with = "super::humantime_serde_compat")]
    pub credit: Duration,
    #[serde(with = "super::humantime_serde_compat")]
    pub watchdog_timeout: Duration,
}

/// The node's fencing number (it grows with every fencing of the node, and
/// every revocation and lift at the grantors names it) and whether the
/// node is revoked now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Revocation {
    pub fencing: u64,
    pub revoked: bool,
}

/// The boot in which the node's agent armed its watchdog under the permit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Armed {
    pub boot: String,
}

/// A grantee this node's grantor has not heard from: how long ago it last
/// granted it, when the report was written, and the credit that grant
/// carried ([`crate::permit::grantor::Grantor::silent`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Silent {
    #[serde(with = "super::humantime_serde_compat")]
    pub quiet: Duration,
    #[serde(with = "super::humantime_serde_compat")]
    pub credit: Duration,
}

/// An annotation that is there but not in its format: whoever reads it
/// assumes the worst it could have said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unreadable;

/// What a permit object says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PermitState {
    pub sets: Vec<ListedSet>,
    /// `Ok(None)`: the node never renewed through the API server.
    pub renewal: Result<Option<ApiRenewal>, Unreadable>,
    pub revocation: Result<Revocation, Unreadable>,
    /// The boot in which the agent armed its watchdog under the permit
    /// (`None`: not armed, withdrawn, or unreadable).
    pub armed: Option<String>,
    /// As a grantor: the grantees it reports silent (empty when none, or
    /// unreadable: a report the leader cannot read only delays a fencing).
    pub silent: BTreeMap<String, Silent>,
}

impl Default for PermitState {
    fn default() -> Self {
        PermitState {
            sets: Vec::new(),
            renewal: Ok(None),
            revocation: Ok(Revocation::default()),
            armed: None,
            silent: BTreeMap::new(),
        }
    }
}

impl PermitState {
    /// Whether the object says the agent armed its watchdog in `boot`
    /// (the boot being fenced): only then does revoking the permit prove
    /// anything about that boot.
    pub fn armed_in(&self, boot: Option<&str>) -> bool {
        matches!((self.armed.as_deref(), boot), (Some(a), Some(b)) if !b.is_empty() && a == b)
    }
}

/// Read a permit object's annotations (an unreadable grantor listing is
/// no listing: the node renews with no set from it).
pub fn read(annotations: Option<&BTreeMap<String, String>>) -> PermitState {
    let get = |key: &str| annotations.and_then(|a| a.get(key));
    PermitState {
        sets: get(GRANTORS_ANNOTATION)
            .and_then(|t| parse(t))
            .unwrap_or_default(),
        renewal: match get(RENEWAL_ANNOTATION) {
            None => Ok(None),
            Some(t) => serde_json::from_str(t).map(Some).map_err(|_| Unreadable),
        },
        revocation: match get(REVOCATION_ANNOTATION) {
            None => Ok(Revocation::default()),
            Some(t) => serde_json::from_str(t).map_err(|_| Unreadable),
        },
        armed: get(ARMED_ANNOTATION)
            .and_then(|t| serde_json::from_str::<Armed>(t).ok())
            .map(|a| a.boot),
        silent: get(SILENT_ANNOTATION)
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default(),
    }
}

/// Render an [`ApiRenewal`] or a [`Revocation`] for its annotation.
pub fn render_value<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// The node's renewal through the API server, on the object as read: the
/// [`ApiRenewal`] to write (with a precondition on the version read), or
/// `None` when the object says the node is revoked — or cannot say that it
/// is not.
pub fn renew(
    state: &PermitState,
    credit: Duration,
    watchdog_timeout: Duration,
) -> Option<ApiRenewal> {
    match state.revocation {
        Ok(Revocation { revoked: false, .. }) => Some(ApiRenewal {
            count: match state.renewal {
                Ok(Some(r)) => r.count + 1,
                _ => 1,
            },
            credit,
            watchdog_timeout,
        }),
        _ => None,
    }
}

/// The leader's closing of the API path when it fences the node: the
/// revocation the object must carry, and whether it must be written (an
/// object already revoked names the fencing a previous leader began; the
/// fencing goes on under its number). `Err` when the object's revocation
/// is unreadable: the next fencing number is unknown.
pub fn close(state: &PermitState) -> Result<(Revocation, bool), Unreadable> {
    let now = state.revocation?;
    Ok(if now.revoked {
        (now, false)
    } else {
        (
            Revocation {
                fencing: now.fencing + 1,
                revoked: true,
            },
            true,
        )
    })
}

/// The leader's lift after the node was unfenced: the revocation to write
/// when the object is revoked (the fencing number stays: the next fencing
/// takes the next one).
pub fn lift(state: &PermitState) -> Option<Revocation> {
    match state.revocation {
        Ok(r) if r.revoked => Some(Revocation {
            fencing: r.fencing,
            revoked: false,
        }),
        _ => None,
    }
}

/// What the closed API path lets the node count on: nothing if it never
/// renewed through it; else the latest renewal the object carries, first
/// observed by this leader at `first_seen` (it was written before then, and
/// counts from before it was written); an unreadable renewal counts for the
/// longest credit and watchdog timeout any agent accepts.
pub fn api_path(renewal: Result<Option<ApiRenewal>, Unreadable>, first_seen: Instant) -> ApiPath {
    match renewal {
        Ok(None) => ApiPath::ClosedUnused,
        Ok(Some(r)) => ApiPath::ClosedAfter {
            first_seen,
            credit: r.credit.min(API_CREDIT_CAP),
            watchdog_timeout: r.watchdog_timeout.min(WATCHDOG_CAP),
        },
        Err(Unreadable) => ApiPath::ClosedAfter {
            first_seen,
            credit: API_CREDIT_CAP,
            watchdog_timeout: WATCHDOG_CAP,
        },
    }
}

/// A member of the fencing population whose agent can grant: it
/// advertised a peer address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub node: String,
    pub address: String,
    /// Its failure domain ([`ZONE_LABEL`]), if labelled.
    pub zone: Option<String>,
}

/// The members of the fencing population (by `settings`) whose agent
/// advertised a peer address, in name order.
pub fn candidates(obs: &crate::Observations, settings: &crate::Settings) -> Vec<Candidate> {
    obs.nodes
        .values()
        .map(|n| &n.facts)
        .filter(|f| crate::leader::guard::in_settings_population(&f.labels, settings))
        .filter_map(|f| {
            let address = f.agent.valid()?.peer_address.clone()?;
            Some(Candidate {
                node: f.name.clone(),
                address,
                zone: f.labels.get(ZONE_LABEL).cloned(),
            })
        })
        .collect()
}

/// The grantor sets every candidate should list, given what the objects
/// list now (`current`, per node): [`assign`]'s choice, with the
/// grantors' current addresses, appended to the sets listed until the
/// older ones are retired ([`retirement`]): a node cut from the API server
/// may still renew under an older set, and only a listed set is blocked by
/// a revocation. A node whose set and addresses are unchanged keeps its
/// object as it is (the result equals `current` for it), so the leader
/// writes only what changed. A node in `revoked` keeps the sets it lists,
/// whatever changed: the revocation blocked those, and a new set would be
/// one its grantors were never told to refuse. A node without an object
/// starts at `first_version` (the leader passes the wall clock's seconds:
/// a Node deleted and added again under its name must not start below
/// the versions its grantors retired before).
pub fn plan(
    candidates: &[Candidate],
    grantors_per_set: usize,
    current: &BTreeMap<String, Vec<ListedSet>>,
    revoked: &BTreeSet<String>,
    first_version: u64,
) -> BTreeMap<String, Vec<ListedSet>> {
    let members: Vec<Member> = candidates
        .iter()
        .map(|c| Member {
            name: c.node.clone(),
            domain: c.zone.clone(),
        })
        .collect();
    let addresses: BTreeMap<&str, &str> = candidates
        .iter()
        .map(|c| (c.node.as_str(), c.address.as_str()))
        .collect();
    let held: BTreeMap<String, GrantorSet> = current
        .iter()
        .filter_map(|(node, sets)| Some((node.clone(), sets.last()?.set())))
        .collect();
    let listed = |version: u64, peers: &[String]| ListedSet {
        version,
        grantors: peers
            .iter()
            .map(|p| Grantor {
                node: p.clone(),
                address: addresses.get(p.as_str()).copied().unwrap_or("").to_string(),
            })
            .collect(),
    };
    assign(&members, grantors_per_set, &held)
        .into_iter()
        .map(|(node, set)| {
            let now = current.get(&node).filter(|s| !s.is_empty());
            let sets = match now {
                Some(sets) if revoked.contains(&node) => sets.clone(),
                None => vec![listed(first_version.max(set.version), &set.peers)],
                Some(sets) => {
                    // Addresses move with the candidates, in every set.
                    let mut sets: Vec<ListedSet> = sets
                        .iter()
                        .map(|s| {
                            let peers: Vec<String> =
                                s.grantors.iter().map(|g| g.node.clone()).collect();
                            let mut fresh = listed(s.version, &peers);
                            for (g, old) in fresh.grantors.iter_mut().zip(&s.grantors) {
                                if g.address.is_empty() {
                                    g.address = old.address.clone();
                                }
                            }
                            fresh
                        })
                        .collect();
                    let newest = sets.last().map_or(0, |s| s.version);
                    if set.version > newest {
                        sets.push(listed(set.version, &set.peers));
                    }
                    sets
                }
            };
            (node, sets)
        })
        .collect()
}

/// The retirement a listing waits for: with older sets listed before the
/// newest, the stop that retires them ([`Stop::Retire`] below the newest
/// version) and the grantors to send it to (those of the older sets).
pub fn retirement(node: &str, sets: &[ListedSet]) -> Option<(Stop, Vec<Grantor>)> {
    let (newest, older) = sets.split_last()?;
    if older.is_empty() {
        return None;
    }
    let mut to: Vec<Grantor> = older.iter().flat_map(|s| s.grantors.clone()).collect();
    to.sort_by(|a, b| a.node.cmp(&b.node));
    to.dedup_by(|a, b| a.node == b.node);
    Some((
        Stop::Retire {
            node: node.to_string(),
            below_version: newest.version,
        },
        to,
    ))
}

/// The listing once the grantors in `acked` acknowledged the retirement
/// of `sets` ([`retirement`]): the newest set alone, when every older set
/// has enough of them that each of its majorities contains one (none can
/// grant under it again); `None` while one has too few.
pub fn retired(sets: &[ListedSet], acked: &BTreeSet<String>) -> Option<Vec<ListedSet>> {
    let (newest, older) = sets.split_last()?;
    older
        .iter()
        .all(|s| {
            let set = s.set();
            set.peers.iter().filter(|p| acked.contains(*p)).count() >= set.stops_needed()
        })
        .then(|| vec![newest.clone()])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbered(n: usize) -> Vec<Candidate> {
        (0..n)
            .map(|i| Candidate {
                node: format!("n{i}"),
                address: format!("10.0.0.{i}:9747"),
                zone: Some(format!("z{}", i % 3)),
            })
            .collect()
    }

    #[test]
    fn silence_reports_read_back_and_an_unreadable_one_reports_nothing() {
        let report = BTreeMap::from([(
            "n2".to_string(),
            Silent {
                quiet: Duration::from_millis(2500),
                credit: Duration::from_secs(10),
            },
        )]);
        let a = BTreeMap::from([(SILENT_ANNOTATION.to_string(), render_value(&report))]);
        assert_eq!(read(Some(&a)).silent, report);
        let bad = BTreeMap::from([(SILENT_ANNOTATION.to_string(), "{".to_string())]);
        assert!(read(Some(&bad)).silent.is_empty());
        assert!(read(None).silent.is_empty());
    }

    #[test]
    fn every_candidate_gets_a_set_of_others_with_their_addresses() {
        let c = numbered(7);
        let plan = plan(&c, 4, &BTreeMap::new(), &BTreeSet::new(), 1);
        assert_eq!(plan.len(), 7);
        for (node, sets) in &plan {
            assert_eq!(sets.len(), 1, "{node}");
            let set = &sets[0];
            assert_eq!(set.version, 1);
            assert_eq!(set.grantors.len(), 4, "{node}");
            for g in &set.grantors {
                assert_ne!(&g.node, node);
                let i: usize = g.node[1..].parse().unwrap();
                assert_eq!(g.address, format!("10.0.0.{i}:9747"));
            }
        }
    }

    #[test]
    fn an_unchanged_population_plans_the_objects_as_they_are() {
        let c = numbered(6);
        let first = plan(&c, 4, &BTreeMap::new(), &BTreeSet::new(), 1);
        assert_eq!(plan(&c, 4, &first, &BTreeSet::new(), 1), first);
        // A grantor's new address changes the listing, not the set.
        let mut moved = c.clone();
        moved[1].address = "10.0.1.1:9747".into();
        let second = plan(&moved, 4, &first, &BTreeSet::new(), 1);
        for (node, sets) in &second {
            assert_eq!(sets[0].version, first[node][0].version, "{node}");
            assert_eq!(sets[0].set(), first[node][0].set(), "{node}");
            if let Some(g) = sets[0].grantors.iter().find(|g| g.node == "n1") {
                assert_eq!(g.address, "10.0.1.1:9747");
            }
        }
        assert_ne!(second, first);
    }

    #[test]
    fn a_candidate_that_leaves_changes_only_the_sets_it_was_in() {
        let c = numbered(8);
        let first = plan(&c, 4, &BTreeMap::new(), &BTreeSet::new(), 1);
        let fewer: Vec<Candidate> = c.iter().filter(|x| x.node != "n3").cloned().collect();
        let second = plan(&fewer, 4, &first, &BTreeSet::new(), 1);
        assert!(!second.contains_key("n3"));
        let mut changed = 0;
        for (node, sets) in &second {
            let before = &first[node][0];
            if before.grantors.iter().any(|g| g.node == "n3") {
                changed += 1;
                // The old set stays listed (n3's address with it) until it
                // is retired; the new one comes after it.
                assert_eq!(sets.len(), 2, "{node}");
                assert_eq!(&sets[0], before, "{node}");
                assert_eq!(sets[1].version, before.version + 1, "{node}");
                assert!(sets[1].grantors.iter().all(|g| g.node != "n3"), "{node}");
            } else {
                assert_eq!(sets, &vec![before.clone()], "{node}");
            }
        }
        assert!(changed > 0);
        // Planned again, nothing more changes: no third set.
        assert_eq!(plan(&fewer, 4, &second, &BTreeSet::new(), 1), second);
    }

    #[test]
    fn a_new_object_starts_at_the_first_version_given() {
        let c = numbered(3);
        let plan = plan(&c, 4, &BTreeMap::new(), &BTreeSet::new(), 1_800_000_000);
        assert!(
            plan.values()
                .all(|sets| sets.len() == 1 && sets[0].version == 1_800_000_000)
        );
    }

    fn listed(version: u64, peers: &[&str]) -> ListedSet {
        crate::testutil::listed_set(version, peers)
    }

    #[test]
    fn a_retirement_stops_the_older_sets_grantors_below_the_newest_version() {
        assert_eq!(retirement("x", &[]), None);
        assert_eq!(retirement("x", &[listed(1, &["a", "b"])]), None);
        let sets = [
            listed(1, &["a", "b", "c"]),
            listed(2, &["b", "d"]),
            listed(3, &["d", "e"]),
        ];
        let (stop, to) = retirement("x", &sets).unwrap();
        assert_eq!(
            stop,
            Stop::Retire {
                node: "x".into(),
                below_version: 3
            }
        );
        let names: Vec<&str> = to.iter().map(|g| g.node.as_str()).collect();
        assert_eq!(names, ["a", "b", "c", "d"]);
        assert_eq!(to[0].address, "a:9747");
    }

    #[test]
    fn an_older_set_is_delisted_once_no_majority_of_it_can_grant() {
        let acked = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();
        // {x, a, b, c}: a majority is 3, so x needs 2 of a, b, c; two
        // stopped leave it one.
        let sets = [listed(1, &["a", "b", "c"]), listed(2, &["d", "e"])];
        assert_eq!(retired(&sets, &acked(&["a"])), None);
        assert_eq!(retired(&sets, &acked(&["a", "d", "e"])), None);
        assert_eq!(
            retired(&sets, &acked(&["a", "c"])),
            Some(vec![sets[1].clone()])
        );
        // {x, a, b}: x needs one of a, b: both must stop.
        let sets = [listed(1, &["a", "b"]), listed(2, &["c"])];
        assert_eq!(retired(&sets, &acked(&["a"])), None);
        assert_eq!(
            retired(&sets, &acked(&["a", "b"])),
            Some(vec![sets[1].clone()])
        );
        // Every older set counts.
        let sets = [
            listed(1, &["a", "b"]),
            listed(2, &["c", "d"]),
            listed(3, &["e"]),
        ];
        assert_eq!(retired(&sets, &acked(&["a", "b"])), None);
        assert_eq!(
            retired(&sets, &acked(&["a", "b", "c", "d"])),
            Some(vec![sets[2].clone()])
        );
        // A single set has nothing to retire.
        assert_eq!(
            retired(&sets[..1], &acked(&[])),
            Some(vec![sets[0].clone()])
        );
    }

    #[test]
    fn a_revoked_node_keeps_its_sets_when_its_grantors_change() {
        let c = numbered(8);
        let first = plan(&c, 4, &BTreeMap::new(), &BTreeSet::new(), 1);
        let (node, _) = first
            .iter()
            .find(|(_, sets)| sets[0].grantors.iter().any(|g| g.node == "n3"))
            .unwrap();
        let fewer: Vec<Candidate> = c.iter().filter(|x| x.node != "n3").cloned().collect();
        let revoked: BTreeSet<String> = [node.clone()].into();
        let second = plan(&fewer, 4, &first, &revoked, 1);
        assert_eq!(second[node], first[node]);
        // Not revoked, it would have moved on.
        let free = plan(&fewer, 4, &first, &BTreeSet::new(), 1);
        assert_ne!(free[node], first[node]);
    }

    #[test]
    fn candidates_are_the_population_with_a_peer_address() {
        use crate::testutil::{advert, facts, settings};
        let mut obs = crate::Observations {
            synced: true,
            ..Default::default()
        };
        let mut add = |name: &str, address: Option<&str>, labels: &[(&str, &str)]| {
            let mut f = facts(name);
            let mut a = advert();
            a.peer_address = address.map(str::to_string);
            f.agent = crate::AdvertState::Valid(a);
            f.labels = labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            obs.nodes.insert(
                name.to_string(),
                crate::NodeObs {
                    facts: f,
                    heartbeat: None,
                    ready_since: None,
                    boot_since: None,
                },
            );
        };
        add("a", Some("10.0.0.1:9747"), &[(ZONE_LABEL, "z1")]);
        add("b", Some("10.0.0.2:9747"), &[]);
        add("no-address", None, &[]);
        add(
            "excluded",
            Some("10.0.0.4:9747"),
            &[(crate::EXCLUDE_LABEL, "true")],
        );
        add(
            "control-plane",
            Some("10.0.0.5:9747"),
            &[("node-role.kubernetes.io/control-plane", "")],
        );
        let got = super::candidates(&obs, &settings());
        assert_eq!(
            got,
            vec![
                Candidate {
                    node: "a".into(),
                    address: "10.0.0.1:9747".into(),
                    zone: Some("z1".into()),
                },
                Candidate {
                    node: "b".into(),
                    address: "10.0.0.2:9747".into(),
                    zone: None,
                },
            ]
        );
    }

    #[test]
    fn the_annotation_round_trips_and_rejects_other_text() {
        let sets = plan(&numbered(3), 4, &BTreeMap::new(), &BTreeSet::new(), 1)["n0"].clone();
        let text = render(&sets);
        assert_eq!(parse(&text), Some(sets));
        assert_eq!(
            text,
            r#"[{"version":1,"grantors":[{"node":"n1","address":"10.0.0.1:9747"},{"node":"n2","address":"10.0.0.2:9747"}]}]"#
        );
        assert_eq!(parse("not json"), None);
        assert_eq!(name("node-1"), "kube-fencer-permit-node-1");
    }

    fn annotated(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The state after writing `key: value` on `state`'s annotations.
    fn written<T: Serialize>(
        a: &BTreeMap<String, String>,
        key: &str,
        value: &T,
    ) -> BTreeMap<String, String> {
        let mut a = a.clone();
        a.insert(key.to_string(), render_value(value));
        a
    }

    #[test]
    fn an_object_without_annotations_is_unrevoked_and_never_renewed() {
        let state = read(None);
        assert_eq!(state, PermitState::default());
        assert_eq!(state.renewal, Ok(None));
        assert_eq!(
            state.revocation,
            Ok(Revocation {
                fencing: 0,
                revoked: false
            })
        );
    }

    #[test]
    fn the_annotations_have_a_stable_format() {
        let a = annotated(&[
            (
                RENEWAL_ANNOTATION,
                r#"{"count":3,"credit":"30s","watchdogTimeout":"5s"}"#,
            ),
            (REVOCATION_ANNOTATION, r#"{"fencing":2,"revoked":true}"#),
        ]);
        let state = read(Some(&a));
        assert_eq!(
            state.renewal,
            Ok(Some(ApiRenewal {
                count: 3,
                credit: Duration::from_secs(30),
                watchdog_timeout: Duration::from_secs(5),
            }))
        );
        assert_eq!(
            state.revocation,
            Ok(Revocation {
                fencing: 2,
                revoked: true
            })
        );
        assert_eq!(
            render_value(&state.renewal.unwrap().unwrap()),
            r#"{"count":3,"credit":"30s","watchdogTimeout":"5s"}"#
        );
        let garbage = annotated(&[(RENEWAL_ANNOTATION, "x"), (REVOCATION_ANNOTATION, "{}")]);
        let state = read(Some(&garbage));
        assert_eq!(state.renewal, Err(Unreadable));
        assert_eq!(state.revocation, Err(Unreadable));
    }

    #[test]
    fn only_an_arming_in_the_boot_being_fenced_counts() {
        let a = annotated(&[(ARMED_ANNOTATION, r#"{"boot":"b-1"}"#)]);
        let state = read(Some(&a));
        assert_eq!(state.armed.as_deref(), Some("b-1"));
        assert!(state.armed_in(Some("b-1")));
        assert!(!state.armed_in(Some("b-2")));
        assert!(!state.armed_in(None));
        assert!(!read(None).armed_in(Some("b-1")));
        let garbage = annotated(&[(ARMED_ANNOTATION, "b-1")]);
        assert!(!read(Some(&garbage)).armed_in(Some("b-1")));
        let empty = annotated(&[(ARMED_ANNOTATION, r#"{"boot":""}"#)]);
        assert!(!read(Some(&empty)).armed_in(Some("")));
        assert_eq!(
            render_value(&Armed { boot: "b-1".into() }),
            r#"{"boot":"b-1"}"#
        );
    }

    #[test]
    fn a_renewal_counts_up_and_carries_the_nodes_timings() {
        let (l, w) = (Duration::from_secs(30), Duration::from_secs(5));
        let first = renew(&read(None), l, w).unwrap();
        assert_eq!(
            first,
            ApiRenewal {
                count: 1,
                credit: l,
                watchdog_timeout: w
            }
        );
        let a = written(&BTreeMap::new(), RENEWAL_ANNOTATION, &first);
        assert_eq!(renew(&read(Some(&a)), l, w).unwrap().count, 2);
        // An unreadable count starts again: any new count is a new renewal
        // to the leader.
        let garbage = annotated(&[(RENEWAL_ANNOTATION, "x")]);
        assert_eq!(renew(&read(Some(&garbage)), l, w).unwrap().count, 1);
    }

    #[test]
    fn no_renewal_through_a_closed_or_unreadable_path() {
        let (l, w) = (Duration::from_secs(30), Duration::from_secs(5));
        let (closing, write) = close(&read(None)).unwrap();
        assert!(write);
        let a = written(&BTreeMap::new(), REVOCATION_ANNOTATION, &closing);
        assert_eq!(renew(&read(Some(&a)), l, w), None);
        let garbage = annotated(&[(REVOCATION_ANNOTATION, "x")]);
        assert_eq!(renew(&read(Some(&garbage)), l, w), None);
        // Lifted: renewals go through again.
        let lifted = lift(&read(Some(&a))).unwrap();
        let a = written(&a, REVOCATION_ANNOTATION, &lifted);
        assert!(renew(&read(Some(&a)), l, w).is_some());
    }

    #[test]
    fn each_fencing_takes_the_next_number_and_a_new_leader_goes_on_with_it() {
        let mut a = BTreeMap::new();
        for n in 1..=3 {
            let (r, write) = close(&read(Some(&a))).unwrap();
            assert_eq!(
                r,
                Revocation {
                    fencing: n,
                    revoked: true
                }
            );
            assert!(write);
            a = written(&a, REVOCATION_ANNOTATION, &r);
            // A leader that takes over mid-fencing writes nothing and
            // names the same fencing.
            assert_eq!(close(&read(Some(&a))), Ok((r, false)));
            let lifted = lift(&read(Some(&a))).unwrap();
            assert_eq!(
                lifted,
                Revocation {
                    fencing: n,
                    revoked: false
                }
            );
            a = written(&a, REVOCATION_ANNOTATION, &lifted);
            assert_eq!(lift(&read(Some(&a))), None);
        }
        let garbage = annotated(&[(REVOCATION_ANNOTATION, "x")]);
        assert_eq!(close(&read(Some(&garbage))), Err(Unreadable));
        assert_eq!(lift(&read(Some(&garbage))), None);
    }

    #[test]
    fn the_closed_path_counts_the_latest_renewal_from_when_it_was_seen() {
        let t = Instant::now();
        assert_eq!(api_path(Ok(None), t), ApiPath::ClosedUnused);
        let r = ApiRenewal {
            count: 4,
            credit: Duration::from_secs(30),
            watchdog_timeout: Duration::from_secs(7),
        };
        assert_eq!(
            api_path(Ok(Some(r)), t),
            ApiPath::ClosedAfter {
                first_seen: t,
                credit: Duration::from_secs(30),
                watchdog_timeout: Duration::from_secs(7),
            }
        );
        // Beyond what any agent accepts, or unreadable: the caps.
        let huge = ApiRenewal {
            credit: Duration::from_secs(1 << 40),
            watchdog_timeout: Duration::from_secs(1 << 40),
            ..r
        };
        let capped = ApiPath::ClosedAfter {
            first_seen: t,
            credit: API_CREDIT_CAP,
            watchdog_timeout: WATCHDOG_CAP,
        };
        assert_eq!(api_path(Ok(Some(huge)), t), capped);
        assert_eq!(api_path(Err(Unreadable), t), capped);
    }
}
