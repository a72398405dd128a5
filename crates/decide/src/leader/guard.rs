//! Scope and storm guard: which nodes kube-fencer may act on at all, and
//! whether so many of them look dead at once that the likelier explanation
//! is a network or control-plane failure, in which case nobody is fenced.

use std::collections::BTreeMap;

use super::{
    CONTROL_PLANE_LABELS, EXCLUDE_LABEL, MaxUnhealthy, NodeObs, RecordState, Selector, Settings,
    StormGuard,
};

/// Whether a node belongs to the **fencing population**: the nodes the storm
/// guard counts, and the nodes every agent must count as its peers when it
/// asks "is it me, or is it the control plane?" (self-fence rule 4/5).
///
/// Both sides must count the same nodes: if agents counted more (say 8
/// unmanaged nodes cut off together with 3 managed ones), a group the leader
/// sees as a small minority of its population (3 of 10, under the guard's
/// threshold, so it fences them) would see itself as a majority of the
/// agents' peers, conclude "control-plane outage" (rule 4) and not fence
/// itself. With one population and `--max-unhealthy` capped strictly below
/// half of it ([`storm_guard`]), any group the leader fences is a minority of
/// every agent's peers.
///
/// It depends only on the node's labels and on two settings that the
/// DaemonSet passes identically to every agent (`--node-selector`,
/// `--manage-control-plane`), so every agent computes the same set from the
/// Nodes it lists. Not in it: nodes labelled `kube-fencer.io/exclude=true`,
/// nodes the selector does not match, control-plane nodes unless managed.
/// In it, whatever their state: the leader's own node, nodes without a Lease,
/// nodes with a malformed record, and nodes whose agent never advertised
/// (an agent counts them as peers that do not answer).
pub fn in_population(
    labels: &BTreeMap<String, String>,
    node_selector: &Selector,
    manage_control_plane: bool,
) -> bool {
    labels.get(EXCLUDE_LABEL).map(String::as_str) != Some("true")
        && node_selector.matches(labels)
        && (manage_control_plane || !CONTROL_PLANE_LABELS.iter().any(|l| labels.contains_key(*l)))
}

/// [`in_population`] with the leader's settings.
pub fn in_settings_population(labels: &BTreeMap<String, String>, settings: &Settings) -> bool {
    in_population(
        labels,
        &settings.node_selector,
        settings.manage_control_plane,
    )
}

/// Whether kube-fencer manages a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    Managed,
    /// The node this agent runs on: it counts for the storm guard like any
    /// managed node (it is part of the cluster's health), but its own agent
    /// never fences it; only unfencing (undoing our own changes) applies.
    OwnNode,
    /// Hands off; the sentence says why.
    Excluded(String),
    /// No Lease: nothing to judge the node by.
    Unmonitored,
}

impl Scope {
    pub fn is_managed(&self) -> bool {
        *self == Scope::Managed
    }
}

/// Decide the scope of one node. Exclusions win over a missing Lease, and
/// both over being the agent's own node.
pub fn scope(node: &NodeObs, settings: &Settings) -> Scope {
    let facts = &node.facts;
    if let RecordState::Malformed(why) = &facts.record {
        return Scope::Excluded(format!(
            "its {} annotation is malformed ({why}); kube-fencer leaves the node alone until the annotation is fixed or removed",
            super::STATE_ANNOTATION
        ));
    }
    if facts.labels.get(EXCLUDE_LABEL).map(String::as_str) == Some("true") {
        return Scope::Excluded(format!("it is labelled {EXCLUDE_LABEL}=true"));
    }
    if !settings.node_selector.matches(&facts.labels) {
        return Scope::Excluded(format!(
            "it does not match --node-selector \"{}\"",
            settings.node_selector
        ));
    }
    if !settings.manage_control_plane
        && let Some(label) = CONTROL_PLANE_LABELS
            .iter()
            .find(|l| facts.labels.contains_key(**l))
    {
        return Scope::Excluded(format!(
            "it is a control-plane node (label {label}) and --manage-control-plane is off"
        ));
    }
    if node.heartbeat.is_none() {
        return Scope::Unmonitored;
    }
    if facts.name == settings.self_node {
        return Scope::OwnNode;
    }
    Scope::Managed
}

/// The largest number of unhealthy nodes the guard can ever allow in a
/// population of `managed`: strictly fewer than half of them.
pub fn half_cap(managed: usize) -> usize {
    managed.saturating_sub(1) / 2
}

/// The storm guard over the `managed` nodes of the population
/// ([`in_population`]) of which `unhealthy` have stale Leases.
///
/// Whatever `--max-unhealthy` says, at most [`half_cap`] nodes are allowed:
/// a percentage of 50 % or more is rejected at start-up, and a count is
/// checked here, against the population as it is at each decision.
pub fn storm_guard(managed: usize, unhealthy: usize, max: MaxUnhealthy) -> StormGuard {
    let allowed = configured_allowance(managed, max).min(half_cap(managed));
    StormGuard {
        active: unhealthy > allowed,
        unhealthy,
        managed,
        allowed,
    }
}

/// What `--max-unhealthy` alone allows, before the cap at half.
fn configured_allowance(managed: usize, max: MaxUnhealthy) -> usize {
    match max {
        MaxUnhealthy::Percent(p) => (managed as u64 * u64::from(p) / 100) as usize,
        MaxUnhealthy::Count(n) => n as usize,
    }
}

/// The threshold as the operator wrote it.
pub fn describe(max: MaxUnhealthy) -> String {
    match max {
        MaxUnhealthy::Percent(p) => format!("--max-unhealthy {p}%"),
        MaxUnhealthy::Count(n) => format!("--max-unhealthy {n}"),
    }
}

/// Why a fencing step is held back.
pub fn held_message(node: &str, step: &str, guard: &StormGuard, max: MaxUnhealthy) -> String {
    let by = if configured_allowance(guard.managed, max) > guard.allowed {
        format!(
            "{} capped below half of the {} nodes",
            describe(max),
            guard.managed
        )
    } else {
        describe(max)
    };
    format!(
        "storm guard active: {} of {} managed nodes have stale Leases, more than the {} allowed by {by}; not {step} node {node} (so many failures at once look like a network or control-plane problem)",
        guard.unhealthy, guard.managed, guard.allowed,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_threshold_rounds_down() {
        let g = storm_guard(10, 3, MaxUnhealthy::Percent(33));
        assert_eq!((g.allowed, g.active), (3, false));
        let g = storm_guard(10, 4, MaxUnhealthy::Percent(33));
        assert_eq!((g.allowed, g.active), (3, true));
        let g = storm_guard(3, 1, MaxUnhealthy::Percent(50));
        assert_eq!((g.allowed, g.active), (1, false));
        let g = storm_guard(3, 2, MaxUnhealthy::Percent(50));
        assert!(g.active);
        let g = storm_guard(1, 1, MaxUnhealthy::Percent(99));
        assert_eq!((g.allowed, g.active), (0, true));
        // Capped below half: 100 % of 4 allows 1, not 4.
        let g = storm_guard(4, 2, MaxUnhealthy::Percent(100));
        assert_eq!((g.allowed, g.active), (1, true));
    }

    #[test]
    fn a_count_at_or_above_half_of_the_population_is_capped_at_decision_time() {
        // `--max-unhealthy 3` with 4 nodes: two cut off together are half the
        // population; their agents may each hear a majority of their peers'
        // answers only if the leader may fence a half or more. Held.
        let g = storm_guard(4, 2, MaxUnhealthy::Count(3));
        assert_eq!((g.allowed, g.active), (1, true));
        let g = storm_guard(7, 3, MaxUnhealthy::Count(5));
        assert_eq!((g.allowed, g.active), (3, false));
        assert!(storm_guard(7, 4, MaxUnhealthy::Count(5)).active);
        let m = held_message("n1", "starting to fence", &g, MaxUnhealthy::Count(5));
        assert!(m.contains("capped below half of the 7 nodes"), "{m}");
        // Strictly fewer than half, for every population size.
        for n in 0..50 {
            let g = storm_guard(n, 0, MaxUnhealthy::Count(u32::MAX));
            assert!(g.allowed * 2 < n.max(1), "{n}: {}", g.allowed);
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_population_is_the_labels_and_the_two_shared_settings() {
        let all = Selector::everything();
        let workers = Selector::parse("pool=db").unwrap();
        assert!(in_population(&labels(&[]), &all, false));
        assert!(!in_population(
            &labels(&[(EXCLUDE_LABEL, "true")]),
            &all,
            true
        ));
        assert!(in_population(
            &labels(&[(EXCLUDE_LABEL, "false")]),
            &all,
            false
        ));
        for cp in CONTROL_PLANE_LABELS {
            assert!(!in_population(&labels(&[(cp, "")]), &all, false));
            assert!(in_population(&labels(&[(cp, "")]), &all, true));
        }
        assert!(in_population(&labels(&[("pool", "db")]), &workers, false));
        assert!(!in_population(&labels(&[("pool", "web")]), &workers, false));
    }

    #[test]
    fn a_rack_of_unmanaged_and_managed_nodes_cut_off_together_is_judged_on_one_population() {
        // 8 unmanaged (selector) + 3 managed nodes cut off together, 7 more
        // managed nodes healthy. The guard and every agent count the same 10.
        let selector = Selector::parse("pool=db").unwrap();
        let mut nodes = Vec::new();
        for i in 0..8 {
            nodes.push((format!("rack-web-{i}"), labels(&[("pool", "web")]), true));
        }
        for i in 0..3 {
            nodes.push((format!("rack-db-{i}"), labels(&[("pool", "db")]), true));
        }
        for i in 0..7 {
            nodes.push((format!("db-{i}"), labels(&[("pool", "db")]), false));
        }
        let population: Vec<_> = nodes
            .iter()
            .filter(|(_, l, _)| in_population(l, &selector, false))
            .collect();
        let cut = population.iter().filter(|(_, _, cut)| *cut).count();
        assert_eq!((population.len(), cut), (10, 3));
        let g = storm_guard(population.len(), cut, MaxUnhealthy::Percent(40));
        assert!(!g.active, "the leader fences the 3");
        // An agent in the rack, counting the same population, asks 9 peers
        // and hears only the 2 others of the rack: no majority, so it does not
        // take the cut for a control-plane outage (rule 5, not rule 4).
        let peers = population.len() - 1;
        let answered = cut - 1;
        assert!(answered * 2 <= peers);
    }

    #[test]
    fn count_threshold() {
        let g = storm_guard(100, 2, MaxUnhealthy::Count(2));
        assert_eq!((g.allowed, g.active), (2, false));
        assert!(storm_guard(100, 3, MaxUnhealthy::Count(2)).active);
        assert!(storm_guard(5, 1, MaxUnhealthy::Count(0)).active);
        assert!(!storm_guard(0, 0, MaxUnhealthy::Count(0)).active);
    }

    #[test]
    fn held_message_has_the_numbers() {
        let g = storm_guard(10, 6, MaxUnhealthy::Percent(40));
        let m = held_message("n1", "starting to fence", &g, MaxUnhealthy::Percent(40));
        assert!(
            m.contains("6 of 10") && m.contains("the 4 allowed") && m.contains("40%"),
            "{m}"
        );
        assert!(m.contains("n1"));
    }
}
