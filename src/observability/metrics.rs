//! Prometheus metrics, in a registry of their own (not the global one).
//!
//! | Metric | Type | Labels | Meaning |
//! | --- | --- | --- | --- |
//! | `kube_fencer_build_info` | gauge | `version` | Always 1; the running version. |
//! | `kube_fencer_leader` | gauge | | 1 while this agent is the elected leader, else 0. |
//! | `kube_fencer_leader_transitions_total` | counter | | Times this agent became leader. |
//! | `kube_fencer_cache_synced` | gauge | | 1 while the leader's Node and Lease caches are synced. |
//! | `kube_fencer_nodes` | gauge | `phase` | Nodes per status: `healthy`, `suspect`, `fencing`, `fenced`, `excluded`, `unmonitored` (leader only; 0 on followers). |
//! | `kube_fencer_fencing_operations_total` | counter | `operation` (`begin`, `fence`, `unfence`, `hold`, `restart`, `clear_unfence`), `result` (`success`, `error`, `skipped`, `dry_run`) | Node writes decided and their outcome. |
//! | `kube_fencer_pods_force_deleted_total` | counter | `result` (`success`, `not_found`, `precondition_failed`, `error`, `dry_run`) | Pod force-deletions. |
//! | `kube_fencer_volume_attachments_deleted_total` | counter | `result` (`success`, `not_found`, `precondition_failed`, `error`, `dry_run`) | VolumeAttachment deletions. |
//! | `kube_fencer_recovery_seconds` | histogram | | Per fenced node: time from the last observed heartbeat to its being marked fenced, when its pods are released (the out-of-service taint lets Kubernetes delete them at once; kube-fencer force-deletes its StatefulSet pods in that pass or the next). |
//! | `kube_fencer_storm_guard_active` | gauge | | 1 while the storm guard holds new fencings back. |
//! | `kube_fencer_storm_guard_activations_total` | counter | | Times the storm guard became active. |
//! | `kube_fencer_unhealthy_nodes` | gauge | | Managed nodes with a stale Lease, as counted by the storm guard. |
//! | `kube_fencer_warnings_total` | counter | | Distinct warnings reported to operators. |
//! | `kube_fencer_watch_errors_total` | counter | `resource` (`nodes`, `leases`, `leader_lease`, `own_node`, `permit`, `permit_objects`) | Watch stream errors (each is retried with backoff). |
//! | `kube_fencer_api_errors_total` | counter | `verb`, `resource` | Failed API requests. |
//! | `kube_fencer_reconcile_duration_seconds` | histogram | | Duration of one reconcile pass (decide and execute). |
//! | `kube_fencer_events_dropped_total` | counter | | Kubernetes Events not published (queue full or API error). |
//! | `kube_fencer_safe_time_seconds` | gauge | `node` | Per node being fenced whose agent can self-fence: seconds from its last heartbeat to its safe time. |
//! | `kube_fencer_external_fencing_required` | gauge | `node` | 1 per node being fenced that cannot fence itself and has no successful fence command: it is never marked fenced on time alone. |
//! | `kube_fencer_fence_commands_total` | counter | `result` (`success`, `failure`, `timeout`) | External fence command runs. |
//! | `kube_fencer_self_fence_state` | gauge | `state` | This agent's self-fence verdict (`healthy`, `consulting`, `outage`, `self_fencing`): 1 for the current one. |
//! | `kube_fencer_api_check_failures` | gauge | | This agent's consecutive failed API checks. |
//! | `kube_fencer_contradictions_total` | counter | | Nodes whose Lease went stale while their agent answered that it reaches the API server (kubelet stopped or stuck). |
//! | `kube_fencer_peers` | gauge | | Peers this agent knows (and would ask if it lost the API). 0 with a self-fence action: any API outage looks like isolation. |
//! | `kube_fencer_peer_requests_total` | counter | `direction` (`in`, `out`), `result` | Peer requests served and made (`ok`, `bad_mac`, `stale`, `replay`, `error`). |
//! | `kube_fencer_permit_held` | gauge | | 1 while this node could hold a permit from its peers (the permit protocol; it gates the watchdog under `--fencing-protocol permit`). |
//! | `kube_fencer_permit_grants` | gauge | | Peer grants of this node's permit in force now. |
//! | `kube_fencer_permit_grants_needed` | gauge | | Peer grants a permit needs (a majority of the grantor set with the node's own vote). |
//! | `kube_fencer_permit_through_api` | gauge | | 1 while this node's permit is held by a renewal through the API server (its peers do not grant: the degraded mode). |
//! | `kube_fencer_permit_api_renewals_total` | counter | `result` (`renewed`, `revoked`, `failed`) | This agent's renewals of its permit through the API server. |
//! | `kube_fencer_permit_silence_reports_total` | counter | `result` (`written`, `failed`) | This agent's writes, as a grantor, of the grantees it has not granted for a few seconds to its permit object. |
//! | `kube_fencer_permit_stops_total` | counter | `kind` (`revoke`, `retire`, `lift`), `result` (`ok`, `error`) | The leader's stops sent to grantors, by acknowledgement. |
//! | `kube_fencer_permit_revocation_seconds` | histogram | | Per node revoked: seconds from its last heartbeat to the deadline by which the revocation proves it reset (under the safe-time protocol, reported beside the safe time). |

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::decide::{NodeStatus, Report};

/// All phases of the nodes gauge, so that each is exported (0 when empty).
pub const PHASES: [&str; 6] = [
    "healthy",
    "suspect",
    "fencing",
    "fenced",
    "excluded",
    "unmonitored",
];

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub build_info: IntGaugeVec,
    pub leader: IntGauge,
    pub leader_transitions: IntCounter,
    pub cache_synced: IntGauge,
    pub nodes: IntGaugeVec,
    pub fencing_operations: IntCounterVec,
    pub pods_force_deleted: IntCounterVec,
    pub volume_attachments_deleted: IntCounterVec,
    pub recovery_seconds: Histogram,
    pub storm_guard_active: IntGauge,
    pub storm_guard_activations: IntCounter,
    pub unhealthy_nodes: IntGauge,
    pub warnings: IntCounter,
    pub watch_errors: IntCounterVec,
    pub api_errors: IntCounterVec,
    pub reconcile_duration: Histogram,
    pub events_dropped: IntCounter,
    pub safe_time_seconds: prometheus::GaugeVec,
    pub external_fencing_required: IntGaugeVec,
    pub fence_commands: IntCounterVec,
    pub self_fence_state: IntGaugeVec,
    pub self_fence_capable: IntGauge,
    pub api_check_failures: IntGauge,
    pub peers: IntGauge,
    pub contradictions: IntCounter,
    pub peer_requests: IntCounterVec,
    pub permit_held: IntGauge,
    pub permit_grants: IntGauge,
    pub permit_grants_needed: IntGauge,
    pub permit_through_api: IntGauge,
    pub permit_api_renewals: IntCounterVec,
    pub permit_stops: IntCounterVec,
    pub permit_revocation_seconds: Histogram,
    pub permit_silence_reports: IntCounterVec,
}

/// States of the self-fence gauge.
pub const SELF_FENCE_STATES: [&str; 4] = ["healthy", "consulting", "outage", "self_fencing"];

/// Results of the fence command counter, each exported from the start (0),
/// so that the first failure is an increase a rate or alert sees.
pub const FENCE_COMMAND_RESULTS: [&str; 3] = ["success", "failure", "timeout"];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        fn reg<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
            r.register(Box::new(c.clone()))
                .expect("metric names are unique");
            c
        }
        let build_info = reg(
            &registry,
            IntGaugeVec::new(
                Opts::new("kube_fencer_build_info", "Build information; always 1."),
                &["version"],
            )
            .unwrap(),
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let m = Metrics {
            build_info,
            leader: reg(
                &registry,
                IntGauge::new(
                    "kube_fencer_leader",
                    "1 while this agent is the elected leader.",
                )
                .unwrap(),
            ),
            leader_transitions: reg(
                &registry,
                IntCounter::new(
                    "kube_fencer_leader_transitions_total",
                    "Times this agent became leader.",
                )
                .unwrap(),
            ),
            cache_synced: reg(
                &registry,
                IntGauge::new(
                    "kube_fencer_cache_synced",
                    "1 while the leader's Node and Lease caches are synced.",
                )
                .unwrap(),
            ),
            nodes: reg(
                &registry,
                IntGaugeVec::new(
                    Opts::new("kube_fencer_nodes", "Nodes per kube-fencer status."),
                    &["phase"],
                )
                .unwrap(),
            ),
            fencing_operations: reg(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "kube_fencer_fencing_operations_total",
                        "Node writes (begin fencing, mark fenced, unfence) and their outcome.",
                    ),
                    &["operation", "result"],
                )
                .unwrap(),
            ),
            pods_force_deleted: reg(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "kube_fencer_pods_force_deleted_total",
                        "Pod force-deletions and their outcome.",
                    ),
                    &["result"],
                )
                .unwrap(),
            ),
            volume_attachments_deleted: reg(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "kube_fencer_volume_attachments_deleted_total",
                        "VolumeAttachment deletions and their outcome.",
                    ),
                    &["result"],
                )
                .unwrap(),
            ),
            recovery_seconds: reg(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "kube_fencer_recovery_seconds",
                        "Per fenced node: seconds from the last observed heartbeat to its being marked fenced (its pods released).",
                    )
                    .buckets(vec![
                        15.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 240.0, 300.0, 420.0, 600.0,
                    ]),
                )
                .unwrap(),
            ),
            storm_guard_active: reg(
                &registry,
                IntGauge::new(
                    "kube_fencer_storm_guard_active",
                    "1 while the storm guard holds new fencings back.",
                )
                .unwrap(),
            ),
            storm_guard_activations: reg(
                &registry,
                IntCounter::new(
                    "kube_fencer_storm_guard_activations_total",
                    "Times the storm guard became active.",
                )
                .unwrap(),
            ),
            unhealthy_nodes: reg(
                &registry,
                IntGauge::new(
                    "kube_fencer_unhealthy_nodes",
                    "Managed nodes with a stale Lease, as counted by the storm guard.",
                )
                .unwrap(),
            ),
            warnings: reg(
                &registry,
                IntCounter::new(
                    "kube_fencer_warnings_total",
                    "Distinct warnings reported to operators.",
                )
                .unwrap(),
            ),
            watch_errors: reg(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "kube_fencer_watch_errors_total",
                        "Watch stream errors (retried with backoff).",
                    ),
                    &["resource"],
                )
                .unwrap(),
            ),
            api_errors: reg(
                &registry,
                IntCounterVec::new(
                    Opts::new("kube_fencer_api_errors_total", "Failed API requests."),
                    &["verb", "resource"],
                )
                .unwrap(),
            ),
            reconcile_duration: reg(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "kube_fencer_reconcile_duration_seconds",
                        "Duration of one reconcile pass (decide and execute).",
                    )
                    .buckets(vec![
                        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    ]),
                )
                .unwrap(),
            ),
            events_dropped: reg(
                &registry,
                IntCounter::new(
                    "kube_fencer_events_dropped_total",
                    "Kubernetes Events not published (queue full or API error).",
                )
                .unwrap(),
            ),
            safe_time_seconds: reg(
                &registry,
                prometheus::GaugeVec::new(
                    Opts::new(
                        "kube_fencer_safe_time_seconds",
                        "Per node being fenced whose agent can self-fence: seconds from its last heartbeat to its safe time.",
                    ),
                    &["node"],
                )
                .unwrap(),
            ),
            external_fencing_required: reg(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "kube_fencer_external_fencing_required",
                        "1 per node being fenced that cannot fence itself and has no successful fence command.",
                    ),
                    &["node"],
                )
                .unwrap(),
            ),
            fence_commands: reg(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "kube_fencer_fence_commands_total",
                        "External fence command runs and their outcome.",
                    ),
                    &["result"],
                )
                .unwrap(),
            ),
            self_fence_state: reg(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "kube_fencer_self_fence_state",
                        "This agent's self-fence verdict: 1 for the current state.",
                    ),
                    &["state"],
                )
                .unwrap(),
            ),
            self_fence_capable: reg(
                &registry,
                IntGauge::new(
                    "kube_fencer_self_fence_capable",
                    "1 if this agent can fence its own node (a self-fence action is configured and, for the watchdog, the device opened); 0: the node is never fenced on time alone.",
                )
                .unwrap(),
            ),
            api_check_failures: reg(
                &registry,
                IntGauge::new(
                    "kube_fencer_api_check_failures",
                    "This agent's consecutive failed API checks.",
                )
                .unwrap(),
            ),
            contradictions: reg(
                &registry,
                IntCounter::new(
                    "kube_fencer_contradictions_total",
                    "Nodes begun to be fenced whose agent answered that it reaches the API server.",
                )
                .unwrap(),
            ),
            peers: reg(
                &registry,
                IntGauge::new(
                    "kube_fencer_peers",
                    "Peers with a peer address this agent would ask if it lost the API server (members of the fencing population without one count as silent).",
                )
                .unwrap(),
            ),
            peer_requests: reg(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "kube_fencer_peer_requests_total",
                        "Peer requests served (in) and made (out), by result.",
                    ),
                    &["direction", "result"],
                )
                .unwrap(),
            ),
            permit_held: reg(
                &registry,
                IntGauge::new(
                    "kube_fencer_permit_held",
                    "1 while this node could hold a permit from its peers.",
                )
                .unwrap(),
            ),
            permit_grants: reg(
                &registry,
                IntGauge::new(
                    "kube_fencer_permit_grants",
                    "Peer grants of this node's permit in force now.",
                )
                .unwrap(),
            ),
            permit_grants_needed: reg(
                &registry,
                IntGauge::new(
                    "kube_fencer_permit_grants_needed",
                    "Peer grants a permit needs: a majority of the grantor set, with the node's own vote.",
                )
                .unwrap(),
            ),
            permit_through_api: reg(
                &registry,
                IntGauge::new(
                    "kube_fencer_permit_through_api",
                    "1 while this node's permit is held by a renewal through the API server (its peers do not grant).",
                )
                .unwrap(),
            ),
            permit_api_renewals: reg(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "kube_fencer_permit_api_renewals_total",
                        "This agent's renewals of its permit through the API server, by result.",
                    ),
                    &["result"],
                )
                .unwrap(),
            ),
            permit_stops: reg(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "kube_fencer_permit_stops_total",
                        "Stops (revocations, retirements, lifts) the leader sent to grantors, by acknowledgement.",
                    ),
                    &["kind", "result"],
                )
                .unwrap(),
            ),
            permit_revocation_seconds: reg(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "kube_fencer_permit_revocation_seconds",
                        "Per node revoked: seconds from its last heartbeat to the deadline by which the revocation proves it reset.",
                    )
                    .buckets(vec![
                        5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 60.0, 90.0, 120.0, 180.0,
                    ]),
                )
                .unwrap(),
            ),
            permit_silence_reports: reg(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "kube_fencer_permit_silence_reports_total",
                        "This agent's writes, as a grantor, of the grantees it has not granted for a few seconds to its permit object, by result.",
                    ),
                    &["result"],
                )
                .unwrap(),
            ),
            registry,
        };
        for state in SELF_FENCE_STATES {
            m.self_fence_state
                .with_label_values(&[state])
                .set(i64::from(state == "healthy"));
        }
        for phase in PHASES {
            m.nodes.with_label_values(&[phase]).set(0);
        }
        for result in ["written", "failed"] {
            m.permit_silence_reports.with_label_values(&[result]);
        }
        for result in FENCE_COMMAND_RESULTS {
            m.fence_commands.with_label_values(&[result]);
        }
        m
    }

    /// Update the gauges derived from a decision's report.
    pub fn observe_report(&self, report: &Report) {
        let mut counts = [0i64; PHASES.len()];
        for status in report.nodes.values() {
            let label = NodeStatus::as_label(status);
            if let Some(i) = PHASES.iter().position(|p| *p == label) {
                counts[i] += 1;
            }
        }
        for (phase, count) in PHASES.iter().zip(counts) {
            self.nodes.with_label_values(&[phase]).set(count);
        }
        self.storm_guard_active
            .set(i64::from(report.storm_guard.active));
        self.unhealthy_nodes
            .set(report.storm_guard.unhealthy as i64);
        self.safe_time_seconds.reset();
        for (node, st) in &report.safe_times {
            self.safe_time_seconds
                .with_label_values(&[node])
                .set(st.total().as_secs_f64());
        }
        self.external_fencing_required.reset();
        for node in &report.external_fencing_required {
            self.external_fencing_required
                .with_label_values(&[node])
                .set(1);
        }
    }

    /// Set the self-fence state gauge.
    pub fn set_self_fence_state(&self, state: &str) {
        for s in SELF_FENCE_STATES {
            self.self_fence_state
                .with_label_values(&[s])
                .set(i64::from(s == state));
        }
    }

    /// Clear what only a leader reports (on stepping down).
    pub fn clear_leader_gauges(&self) {
        for phase in PHASES {
            self.nodes.with_label_values(&[phase]).set(0);
        }
        self.storm_guard_active.set(0);
        self.unhealthy_nodes.set(0);
        self.cache_synced.set(0);
        self.safe_time_seconds.reset();
        self.external_fencing_required.reset();
    }

    pub fn api_error(&self, verb: &str, resource: &str) {
        self.api_errors.with_label_values(&[verb, resource]).inc();
    }

    pub fn watch_error(&self, resource: &str) {
        self.watch_errors.with_label_values(&[resource]).inc();
    }

    /// The registry in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding never fails");
        String::from_utf8(buf).expect("text format is UTF-8")
    }
}

#[cfg(test)]
mod tests;
