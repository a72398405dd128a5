//! The permit object: one Lease per node in the agents' namespace,
//! `kube-fencer-permit-<node>`, through which the leader tells a node's
//! agent who its grantors are (and, as the wiring goes on, where the
//! arming, the renewals through the API server and the revocation live).
//!
//! An agent watches its own object only (one object, whatever the size of
//! the cluster) and learns its grantors' addresses from it, so that no
//! agent needs to list Nodes for the permit. The leader plans every object
//! from the fencing population it already watches: [`plan`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::GrantorSet;
use super::assign::{Member, assign};

/// Name prefix of the permit objects.
pub const NAME_PREFIX: &str = "kube-fencer-permit-";
/// Label on every permit object (the leader lists them by it).
pub const LABEL: &str = "kube-fencer.io/permit";
/// Label naming the node a permit object is for.
pub const NODE_LABEL: &str = "kube-fencer.io/node";
/// Annotation holding the node's grantor sets.
pub const GRANTORS_ANNOTATION: &str = "kube-fencer.io/grantors";
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
/// grantors' current addresses. A node whose set and addresses are
/// unchanged keeps its object as it is (the result equals `current` for
/// it), so the leader writes only what changed.
pub fn plan(
    candidates: &[Candidate],
    grantors_per_set: usize,
    current: &BTreeMap<String, Vec<ListedSet>>,
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
    assign(&members, grantors_per_set, &held)
        .into_iter()
        .map(|(node, set)| {
            let listed = ListedSet {
                version: set.version,
                grantors: set
                    .peers
                    .iter()
                    .map(|p| Grantor {
                        node: p.clone(),
                        address: addresses.get(p.as_str()).copied().unwrap_or("").to_string(),
                    })
                    .collect(),
            };
            (node, vec![listed])
        })
        .collect()
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
    fn every_candidate_gets_a_set_of_others_with_their_addresses() {
        let c = numbered(7);
        let plan = plan(&c, 4, &BTreeMap::new());
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
        let first = plan(&c, 4, &BTreeMap::new());
        assert_eq!(plan(&c, 4, &first), first);
        // A grantor's new address changes the listing, not the set.
        let mut moved = c.clone();
        moved[1].address = "10.0.1.1:9747".into();
        let second = plan(&moved, 4, &first);
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
        let first = plan(&c, 4, &BTreeMap::new());
        let fewer: Vec<Candidate> = c.iter().filter(|x| x.node != "n3").cloned().collect();
        let second = plan(&fewer, 4, &first);
        assert!(!second.contains_key("n3"));
        for (node, sets) in &second {
            let before = &first[node][0];
            if before.grantors.iter().any(|g| g.node == "n3") {
                assert_eq!(sets[0].version, before.version + 1, "{node}");
                assert!(sets[0].grantors.iter().all(|g| g.node != "n3"), "{node}");
            } else {
                assert_eq!(&sets[0], before, "{node}");
            }
        }
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
        let sets = plan(&numbered(3), 4, &BTreeMap::new())["n0"].clone();
        let text = render(&sets);
        assert_eq!(parse(&text), Some(sets));
        assert_eq!(
            text,
            r#"[{"version":1,"grantors":[{"node":"n1","address":"10.0.0.1:9747"},{"node":"n2","address":"10.0.0.2:9747"}]}]"#
        );
        assert_eq!(parse("not json"), None);
        assert_eq!(name("node-1"), "kube-fencer-permit-node-1");
    }
}
