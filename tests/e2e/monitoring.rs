//! The Helm chart installed for real, fencing a node end to end, watched by
//! a real Prometheus that evaluates the shipped rules.
//!
//! `helm install` with the ServiceMonitor and the PrometheusRule on; the
//! agents run with the installed DaemonSet's arguments as the chart's
//! ServiceAccount and share the peer key through the chart's Secret (the
//! first agent creates it). Prometheus scrapes them as the ServiceMonitor
//! says and loads the PrometheusRule's groups. Then:
//! 1. a self-fencing node loses power: fenced, its replica recovered with
//!    the same PVC, and Prometheus has the recovery in
//!    `kube_fencer_recovery_seconds`; the "dead node nobody can fence" alert
//!    stays silent (that node could fence itself);
//! 2. the node comes back and is unfenced;
//! 3. a node whose agent has no self-fence action loses power: kube-fencer
//!    cordons it and waits for a human, and `KubeFencerExternalFencingRequired`
//!    fires for that node (after the rule's `for: 2m`);
//! 4. `kube-fencer status` in the phases the other scenarios do not reach:
//!    a node nobody can fence, an excluded node, no leader.

use std::time::{Duration, Instant};

use kube_fencer_testkit::*;

const NS: &str = "monitoring";
/// The node whose agent cannot fence it (`--self-fence=none`).
const UNFENCEABLE: &str = "node-3";
const ALERT: &str = "KubeFencerExternalFencingRequired";

/// The chart's values: the end-to-end timings (as FAST_AGENT_ARGS and
/// SELF_FENCE_TIMINGS), the monitoring objects on, scraped every 5 s.
const VALUES: &[&str] = &[
    "timings.unreachableAfter=6s",
    "timings.nodeHeartbeatInterval=3s",
    "timings.fenceTimeout=10s",
    "timings.healthyAfter=5s",
    "timings.leaderLeaseDuration=8s",
    "timings.apiCheckInterval=1s",
    "timings.apiCheckTimeout=500ms",
    "timings.apiFailureThreshold=3",
    "timings.peerSilenceTimeout=3s",
    "timings.watchdogTimeout=5s",
    "timings.safeTimeMargin=2s",
    "logFormat=text",
    "monitoring.serviceMonitor.enabled=true",
    "monitoring.serviceMonitor.interval=5s",
    "monitoring.prometheusRule.enabled=true",
];

/// The alerts named `ALERT`, as (node, state).
fn external_fencing_alerts(p: &Prometheus) -> anyhow::Result<Vec<(String, String)>> {
    Ok(p.alerts()?
        .iter()
        .filter(|a| a["labels"]["alertname"] == ALERT)
        .map(|a| {
            (
                a["labels"]["node"].as_str().unwrap_or("").to_string(),
                a["state"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_fences_a_node_and_prometheus_alerts() {
    let s = Scenario::new(NS)
        .helm(VALUES)
        .node_args(UNFENCEABLE, &["--self-fence=none"])
        .leader_within(Duration::from_secs(60))
        .advertised()
        .start()
        .await;
    let cluster = &s.cluster;
    let leader = s.leader_node();
    let nodes = cluster.node_names().await.unwrap();

    // The chart's Secret holds the peer key, created by the first agent.
    let key = cluster
        .kubectl([
            "get",
            "secret",
            "kube-fencer-peer-key",
            "-n",
            FENCER_NAMESPACE,
            "-o",
            "jsonpath={.data}",
        ])
        .expect("the chart's peer-key Secret");
    assert!(!key.trim().is_empty(), "peer-key Secret without data");
    // An agent run as a ServiceAccount the chart's RBAC does not cover
    // stops at once with one line that names the identity and the fix (the
    // real API server's 403, not a stub's).
    cluster
        .kubectl(["create", "serviceaccount", "nobody", "-n", FENCER_NAMESPACE])
        .unwrap();
    let nobody = cluster.service_account_kubeconfig("nobody").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kube-fencer"))
        .args(["--node-name", "node-1", "--self-fence=none"])
        .args(["--listen", &format!("127.0.0.1:{}", free_port().unwrap())])
        .env("KUBECONFIG", &nobody)
        .env("POD_NAMESPACE", FENCER_NAMESPACE)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    say(format!(
        "as ServiceAccount nobody: {}: {}",
        out.status,
        stderr.trim()
    ));
    assert!(!out.status.success(), "started without RBAC: {stderr}");
    assert!(
        stderr.contains("refuses this identity (system:serviceaccount:kube-fencer:nobody)")
            && stderr.contains("apply rbac/"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("refuses").count(),
        1,
        "said more than once: {stderr}"
    );

    // (The unfenceable node's agent is a peer too: it still answers.)
    cluster.wait_peers_known(&nodes).await;

    let targets: Vec<(String, String)> = nodes
        .iter()
        .map(|n| (n.clone(), cluster.agent_listen(n).unwrap()))
        .collect();
    let prom = Prometheus::start(cluster, &targets).expect("start prometheus");
    prom.wait_ready(cluster, Duration::from_secs(60)).await;
    cluster
        .wait_until(
            "prometheus: every agent scraped, one leader",
            Duration::from_secs(60),
            async || {
                let health = prom.target_health()?;
                let up = health.len() == nodes.len() && health.iter().all(|(_, h)| h == "up");
                let leaders = prom.scalar("sum(kube_fencer_leader)")?;
                Ok((up && leaders == Some(1.0)).then_some(()))
            },
        )
        .await;

    // 1. A node that fences itself loses power.
    let (victim_pod, victim) = ["db-0", "db-1", "db-2"]
        .iter()
        .map(|p| (p.to_string(), s.node_of(p)))
        .find(|(_, n)| *n != leader && n != UNFENCEABLE)
        .expect("a replica off the leader's node and off the unfenceable node");
    let old = cluster.replica(NS, &victim_pod).await;
    say(format!(
        "powering off {victim} (self-fencing; runs {victim_pod}); leader {leader}"
    ));
    let t0 = Instant::now();
    cluster.power_off(&victim);
    let new_pod = cluster
        .wait_replica_moved(NS, &victim_pod, &old.uid, &victim, Duration::from_secs(150))
        .await;
    say(format!(
        "RECOVERED: {victim_pod} on {} {:.1}s after {victim} lost power",
        pod_node_name(&new_pod).unwrap(),
        t0.elapsed().as_secs_f64()
    ));
    cluster.assert_same_claim(NS, &new_pod, &old).await;

    // Prometheus recorded the recovery in the histogram the dashboard draws.
    let count = cluster
        .wait_until(
            "prometheus: the recovery in kube_fencer_recovery_seconds",
            Duration::from_secs(30),
            async || {
                let c = prom.scalar("sum(kube_fencer_recovery_seconds_count)")?;
                Ok(c.filter(|c| *c >= 1.0))
            },
        )
        .await;
    let p50 = prom
        .scalar("histogram_quantile(0.5, sum by (le) (kube_fencer_recovery_seconds_bucket))")
        .unwrap();
    say(format!(
        "prometheus: {count} recovery, median bucket estimate {p50:?} s"
    ));
    assert!(p50.is_some_and(|v| v > 0.0), "no recovery time: {p50:?}");
    // A node that fenced itself needs nobody: the alert stayed silent.
    let alerts = external_fencing_alerts(&prom).unwrap();
    assert!(
        alerts.is_empty(),
        "{ALERT} for a node that fenced itself: {alerts:?}"
    );

    // 2. It comes back and is unfenced (the unfenceable node's power-off
    // must not meet a fenced node in the storm guard's count).
    let agent_args = cluster.chart_agent_args().unwrap();
    let agent_args: Vec<&str> = agent_args.iter().map(String::as_str).collect();
    cluster.power_on(&victim, &agent_args);
    cluster
        .wait_until(
            &format!("{victim} unfenced"),
            Duration::from_secs(90),
            async || Ok((cluster.status_of(&victim)?.0 == "healthy").then_some(())),
        )
        .await;
    // Its agent listens on a new port: Prometheus follows it, as it follows
    // a new pod. (Should the unfenceable node's agent lead, this agent may
    // be the one that reports the next node after it.)
    let targets: Vec<(String, String)> = nodes
        .iter()
        .map(|n| (n.clone(), cluster.agent_listen(n).unwrap()))
        .collect();
    prom.set_targets(&targets).expect("prometheus targets");

    // 3. The node nobody can fence loses power.
    say(format!(
        "powering off {UNFENCEABLE} (its agent has no self-fence action)"
    ));
    let t1 = Instant::now();
    cluster.power_off(UNFENCEABLE);
    cluster
        .wait_until(
            &format!("prometheus: kube_fencer_external_fencing_required for {UNFENCEABLE}"),
            Duration::from_secs(60),
            async || {
                let v = prom.scalar(&format!(
                    "max(kube_fencer_external_fencing_required{{node=\"{UNFENCEABLE}\"}})"
                ))?;
                Ok((v == Some(1.0)).then_some(()))
            },
        )
        .await;
    say(format!(
        "external fencing required for {UNFENCEABLE} {:.1}s after it lost power",
        t1.elapsed().as_secs_f64()
    ));
    // Pending first, firing once the rule's `for` has passed.
    let mut pending_seen = false;
    cluster
        .wait_until(
            &format!("prometheus: {ALERT} firing for {UNFENCEABLE}"),
            Duration::from_secs(200),
            async || {
                let alerts = external_fencing_alerts(&prom)?;
                if alerts
                    .iter()
                    .any(|(n, st)| n == UNFENCEABLE && st == "pending")
                {
                    pending_seen = true;
                }
                assert!(
                    alerts.iter().all(|(n, _)| n == UNFENCEABLE),
                    "{ALERT} for another node: {alerts:?}"
                );
                Ok(alerts
                    .iter()
                    .any(|(n, st)| n == UNFENCEABLE && st == "firing")
                    .then_some(()))
            },
        )
        .await;
    say(format!(
        "{ALERT} firing for {UNFENCEABLE} {:.1}s after it lost power",
        t1.elapsed().as_secs_f64()
    ));
    assert!(pending_seen, "{ALERT} fired without being pending first");

    // Never on time alone: nobody fenced it, so its replica stays put.
    let node = cluster.node(UNFENCEABLE).await.unwrap();
    assert!(node_unschedulable(&node), "{UNFENCEABLE} must be cordoned");
    assert!(
        !node_has_taint(&node, OUT_OF_SERVICE_TAINT),
        "{UNFENCEABLE} was taken out of service though nobody fenced it"
    );
    let stuck = ["db-0", "db-1", "db-2"]
        .into_iter()
        .find(|p| s.node_of(p) == UNFENCEABLE)
        .unwrap();
    assert_eq!(
        cluster.pod_node(NS, stuck).await.unwrap().as_deref(),
        Some(UNFENCEABLE),
        "{stuck} left {UNFENCEABLE} though nobody fenced it"
    );

    // `kube-fencer status` says why it waits: fencing, and nobody can.
    let (phase, row) = cluster.status_of(UNFENCEABLE).unwrap();
    say(format!("status of {UNFENCEABLE}: {row}"));
    assert_eq!(phase, "fencing", "{row}");
    assert!(
        row["note"]
            .as_str()
            .is_some_and(|n| n.contains("cannot be fenced automatically")),
        "{row}"
    );
    // An excluded node shows as excluded, with the reason.
    let excluded = "node-1";
    cluster
        .kubectl(["label", "node", excluded, "kube-fencer.io/exclude=true"])
        .unwrap();
    let row = cluster
        .wait_until(
            &format!("status: {excluded} excluded"),
            Duration::from_secs(30),
            async || {
                let (phase, row) = cluster.status_of(excluded)?;
                Ok((phase == "excluded").then_some(row))
            },
        )
        .await;
    assert!(row["note"].as_str().is_some_and(|n| !n.is_empty()), "{row}");
    // With no agent left, status says there is no leader and falls back to
    // the nodes' records.
    for n in &nodes {
        cluster.stop_agent(n);
    }
    let v = cluster
        .wait_until("status: no leader", Duration::from_secs(30), async || {
            let v: serde_json::Value = serde_json::from_str(&cluster.status(&["-o", "json"])?)?;
            Ok((v["leader"]["current"] == false).then_some(v))
        })
        .await;
    say(format!("status without a leader: {}", v["leader"]));
    assert!(v["leader"]["problem"].as_str().is_some(), "{v}");
    assert_eq!(cluster.status_of(UNFENCEABLE).unwrap().0, "fencing");
}
