//! Scope and storm guard: which nodes kube-fencer may act on at all, and
//! whether so many of them look dead at once that the likelier explanation
//! is a network or control-plane failure, in which case nobody is fenced.

use super::{
    CONTROL_PLANE_LABELS, EXCLUDE_LABEL, MaxUnhealthy, NodeObs, RecordState, Settings, StormGuard,
};

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

    /// Whether the node counts in the storm guard's numbers.
    pub fn counts_for_guard(&self) -> bool {
        matches!(self, Scope::Managed | Scope::OwnNode)
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

/// The storm guard over `managed` nodes of which `unhealthy` have stale Leases.
pub fn storm_guard(managed: usize, unhealthy: usize, max: MaxUnhealthy) -> StormGuard {
    let allowed = match max {
        MaxUnhealthy::Percent(p) => (managed as u64 * u64::from(p) / 100) as usize,
        MaxUnhealthy::Count(n) => n as usize,
    };
    StormGuard {
        active: unhealthy > allowed,
        unhealthy,
        managed,
        allowed,
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
    format!(
        "storm guard active: {} of {} managed nodes have stale Leases, more than the {} allowed by {}; not {step} node {node} (so many failures at once look like a network or control-plane problem)",
        guard.unhealthy,
        guard.managed,
        guard.allowed,
        describe(max)
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
        let g = storm_guard(4, 4, MaxUnhealthy::Percent(100));
        assert!(!g.active);
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
        let g = storm_guard(10, 6, MaxUnhealthy::Percent(50));
        let m = held_message("n1", "starting to fence", &g, MaxUnhealthy::Percent(50));
        assert!(
            m.contains("6 of 10") && m.contains("the 5 allowed") && m.contains("50%"),
            "{m}"
        );
        assert!(m.contains("n1"));
    }
}
