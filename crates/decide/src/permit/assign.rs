//! The leader's choice of every node's grantor set: `k` other members of
//! the fencing population, spread over failure domains, and stable — a set
//! changes only when one of its members left the population (or a set can
//! be spread over more domains than it is), so that a change, which costs a
//! retirement, stays rare.
//!
//! Spread matters for recovery, not for safety (any set is safe): a node
//! whose grantors share its zone keeps its permit when that zone is cut off
//! from the rest, and the leader, on the other side, cannot reach them to
//! revoke it. Grantors in other zones stop granting to a cut-off zone, whose
//! nodes then fence themselves (or renew through the API server, if they
//! still reach it), and the leader reaches enough of them to revoke.
//!
//! Candidates are ranked per node by a rendezvous hash (FNV-1a of both
//! names, stable across releases and platforms): adding a node changes no
//! set, and removing one changes only the sets it was in.

use std::collections::{BTreeMap, BTreeSet};

use super::GrantorSet;

/// A member of the fencing population and its failure domain (the zone
/// label, or another label the operator chose; `None`: unknown).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub domain: Option<String>,
}

fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// `node`'s candidates, best first: other domains before its own, fewer
/// already chosen from a domain before more, then by rendezvous rank.
fn choose(node: &Member, population: &[Member], k: usize) -> Vec<String> {
    let mut ranked: Vec<&Member> = population.iter().filter(|m| m.name != node.name).collect();
    ranked.sort_by_key(|m| (fnv1a(&[&node.name, &m.name]), m.name.clone()));
    let mut chosen: Vec<&Member> = Vec::new();
    while chosen.len() < k && chosen.len() < ranked.len() {
        let count = |d: &Option<String>| {
            chosen
                .iter()
                .filter(|c| &c.domain == d && d.is_some())
                .count()
        };
        let next = ranked
            .iter()
            .filter(|m| !chosen.iter().any(|c| c.name == m.name))
            .min_by_key(|m| {
                let own = m.domain.is_some() && m.domain == node.domain;
                (own, count(&m.domain))
            })
            .copied();
        match next {
            Some(m) => chosen.push(m),
            None => break,
        }
    }
    chosen.into_iter().map(|m| m.name.clone()).collect()
}

/// How many distinct domains other than the node's own `peers` cover.
fn spread(node: &Member, peers: &[String], domains: &BTreeMap<&str, Option<&str>>) -> usize {
    peers
        .iter()
        .filter_map(|p| domains.get(p.as_str()).copied().flatten())
        .filter(|d| Some(*d) != node.domain.as_deref())
        .collect::<BTreeSet<_>>()
        .len()
}

/// Every member's grantor set: the current one where it still holds (its
/// members all in the population, as many as there can be, and spread no
/// worse than a fresh choice), else a fresh one, one version newer.
pub fn assign(
    population: &[Member],
    k: usize,
    current: &BTreeMap<String, GrantorSet>,
) -> BTreeMap<String, GrantorSet> {
    let names: BTreeSet<&str> = population.iter().map(|m| m.name.as_str()).collect();
    let domains: BTreeMap<&str, Option<&str>> = population
        .iter()
        .map(|m| (m.name.as_str(), m.domain.as_deref()))
        .collect();
    let want = k.min(population.len().saturating_sub(1));
    population
        .iter()
        .map(|node| {
            let fresh = choose(node, population, want);
            let set = match current.get(&node.name) {
                Some(set)
                    if set.peers.len() == want
                        && set
                            .peers
                            .iter()
                            .all(|p| p != &node.name && names.contains(p.as_str()))
                        && spread(node, &set.peers, &domains) >= spread(node, &fresh, &domains) =>
                {
                    set.clone()
                }
                Some(set) => GrantorSet::new(set.version + 1, fresh),
                None => GrantorSet::new(1, fresh),
            };
            (node.name.clone(), set)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(zones: &[(&str, usize)]) -> Vec<Member> {
        zones
            .iter()
            .flat_map(|(zone, n)| {
                (0..*n).map(move |i| Member {
                    name: format!("{zone}-{i}"),
                    domain: Some(zone.to_string()),
                })
            })
            .collect()
    }

    fn zone(name: &str) -> &str {
        name.split('-').next().unwrap()
    }

    #[test]
    fn every_node_gets_k_other_members() {
        let pop = members(&[("a", 5), ("b", 5), ("c", 5)]);
        let sets = assign(&pop, 4, &BTreeMap::new());
        assert_eq!(sets.len(), 15);
        for (node, set) in &sets {
            assert_eq!(set.peers.len(), 4, "{node}");
            assert!(!set.peers.contains(node), "{node}");
            assert_eq!(set.version, 1);
        }
        // A cluster of three: everyone else.
        let small = members(&[("a", 3)]);
        for (node, set) in assign(&small, 4, &BTreeMap::new()) {
            assert_eq!(set.peers.len(), 2, "{node}");
        }
        // Alone: no peer (it never arms, and says so).
        let alone = members(&[("a", 1)]);
        assert!(!assign(&alone, 4, &BTreeMap::new())["a-0"].usable());
    }

    #[test]
    fn grantors_come_from_the_other_zones_evenly_before_the_nodes_own() {
        let pop = members(&[("a", 5), ("b", 5), ("c", 5)]);
        for (node, set) in assign(&pop, 4, &BTreeMap::new()) {
            let own = set.peers.iter().filter(|p| zone(p) == zone(&node)).count();
            assert_eq!(own, 0, "{node}: {:?}", set.peers);
            for z in ["a", "b", "c"].into_iter().filter(|z| *z != zone(&node)) {
                let n = set.peers.iter().filter(|p| zone(p) == z).count();
                assert_eq!(n, 2, "{node}: {:?}", set.peers);
            }
        }
        // One other zone of two nodes: both, then the node's own zone.
        let pop = members(&[("a", 5), ("b", 2)]);
        let set = &assign(&pop, 4, &BTreeMap::new())["a-0"];
        assert_eq!(set.peers.iter().filter(|p| zone(p) == "b").count(), 2);
    }

    #[test]
    fn adding_a_node_changes_no_set_and_removing_one_only_those_it_was_in() {
        let pop = members(&[("a", 4), ("b", 4), ("c", 4)]);
        let before = assign(&pop, 4, &BTreeMap::new());
        let mut grown = pop.clone();
        grown.push(Member {
            name: "c-9".into(),
            domain: Some("c".into()),
        });
        let after = assign(&grown, 4, &before);
        for (node, set) in &before {
            assert_eq!(&after[node], set, "{node}");
        }
        assert_eq!(after["c-9"].version, 1);

        let gone = "b-1";
        let shrunk: Vec<Member> = pop.iter().filter(|m| m.name != gone).cloned().collect();
        let after = assign(&shrunk, 4, &before);
        for (node, set) in &after {
            let old = &before[node];
            if old.peers.iter().any(|p| p == gone) {
                assert_eq!(set.version, old.version + 1, "{node}");
                assert!(!set.peers.iter().any(|p| p == gone), "{node}");
            } else {
                assert_eq!(set, old, "{node}");
            }
        }
    }

    #[test]
    fn a_set_is_replaced_when_a_new_zone_can_spread_it() {
        // Assigned while the cluster had one zone; a second zone joins:
        // every set moves to it (a whole zone cut off must not take a
        // node's majority), one version newer.
        let one = members(&[("a", 5)]);
        let before = assign(&one, 4, &BTreeMap::new());
        let two = members(&[("a", 5), ("b", 2)]);
        let after = assign(&two, 4, &before);
        for i in 0..5 {
            let node = format!("a-{i}");
            let set = &after[&node];
            assert_eq!(set.version, 2, "{node}");
            assert_eq!(
                set.peers.iter().filter(|p| zone(p) == "b").count(),
                2,
                "{node}: {:?}",
                set.peers
            );
        }
        // And kept once it is as spread as a fresh choice.
        assert_eq!(assign(&two, 4, &after), after);
    }

    #[test]
    fn the_ranking_is_the_same_on_every_platform_and_release() {
        // FNV-1a of the two names: a leader of another version or build
        // must choose the same sets (no std hasher).
        assert_eq!(fnv1a(&["a", "b"]), fnv1a(&["a", "b"]));
        assert_ne!(fnv1a(&["a", "b"]), fnv1a(&["b", "a"]));
        assert_eq!(fnv1a(&[]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(&[""]), 0xaf63_bd4c_8601_b7df);
    }

    #[test]
    fn nodes_without_a_domain_are_chosen_by_rank_alone() {
        let pop: Vec<Member> = (0..8)
            .map(|i| Member {
                name: format!("n{i}"),
                domain: None,
            })
            .collect();
        let sets = assign(&pop, 4, &BTreeMap::new());
        // Every node is someone's grantor, and nobody is everyone's.
        let mut load: BTreeMap<&str, usize> = BTreeMap::new();
        for set in sets.values() {
            for p in &set.peers {
                *load.entry(p.as_str()).or_default() += 1;
            }
        }
        assert_eq!(load.values().sum::<usize>(), 32);
        assert_eq!(load.len(), 8, "{load:?}");
        assert!(load.values().all(|n| (2..=6).contains(n)), "{load:?}");
    }

    proptest::proptest! {
        #[test]
        fn any_population_gets_sets_it_can_use_and_keeps_them(
            sizes in proptest::collection::vec(1usize..6, 1..5),
            k in 2usize..7,
            gone in 0usize..30,
        ) {
            let zones: Vec<(String, usize)> =
                sizes.iter().enumerate().map(|(i, n)| (format!("z{i}"), *n)).collect();
            let spec: Vec<(&str, usize)> = zones.iter().map(|(z, n)| (z.as_str(), *n)).collect();
            let pop = members(&spec);
            let sets = assign(&pop, k, &BTreeMap::new());
            let want = k.min(pop.len() - 1);
            for node in &pop {
                let set = &sets[&node.name];
                let peers: BTreeSet<&String> = set.peers.iter().collect();
                proptest::prop_assert_eq!(peers.len(), want);
                proptest::prop_assert!(!peers.contains(&node.name));
                proptest::prop_assert!(set.peers.iter().all(|p| pop.iter().any(|m| &m.name == p)));
                // The node's own zone only once the others are used up.
                let others = pop.iter().filter(|m| m.domain != node.domain).count();
                let own = set.peers.iter().filter(|p| zone(p) == zone(&node.name)).count();
                proptest::prop_assert_eq!(own, want.saturating_sub(others));
            }
            // One member leaves: only the sets it was in change.
            let gone = &pop[gone % pop.len()].name;
            let shrunk: Vec<Member> = pop.iter().filter(|m| &m.name != gone).cloned().collect();
            let after = assign(&shrunk, k, &sets);
            for (node, set) in &after {
                if !sets[node].peers.contains(gone) && set.peers.len() == sets[node].peers.len() {
                    proptest::prop_assert_eq!(set, &sets[node]);
                }
            }
        }
    }
}
