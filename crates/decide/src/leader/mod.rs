//! The leader's pipeline, one file per stage: [`detect`] (heartbeats →
//! suspect) → [`guard`] (scope + storm guard) → [`fence`] (record, cordon,
//! wait, taint) → [`recover`] (pods and VolumeAttachments to delete) →
//! [`unfence`] (healthy again → undo our changes); [`patch`] renders an
//! intent against the node's current facts into an exact write, and
//! [`dry_run`] keeps an in-memory overlay so a dry run progresses like a
//! real one.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::*;

pub mod detect;
pub mod dry_run;
pub mod fence;
pub mod guard;
pub mod patch;
pub mod recover;
pub mod unfence;

/// One node as the stages see it.
pub(crate) struct NodeView<'a> {
    name: &'a str,
    obs: &'a NodeObs,
    scope: guard::Scope,
    /// Lease stale, or the node suspect through its permit (false when
    /// there is no Lease).
    stale: bool,
    /// Suspect through its permit since then ([`detect::permit_suspect`]),
    /// whether or not its Lease went stale since.
    permit_since: Option<Instant>,
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
        .map(|(name, node)| {
            let lease_stale = detect::stale(node, now.mono, settings).unwrap_or(false);
            let permit_since = detect::permit_suspect(
                node,
                obs.permit_over.get(name).copied(),
                now.mono,
                settings,
            );
            NodeView {
                name,
                obs: node,
                scope: guard::scope(node, settings),
                stale: lease_stale || permit_since.is_some(),
                permit_since,
            }
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
