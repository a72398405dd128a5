//! Chaos test of the default install on real nodes: `kubectl apply -f rbac/
//! -f daemonset/` unchanged, on a control plane with three real nodes
//! (rn-1..rn-3, harness/realnode.sh), each with a watchdog device of its own
//! (harness/fakewdog.sh build: when it fires it powers its node off), then
//!   1. every agent pod Running and Ready, one leader, every node advertising
//!      permitFence "watchdog" with its kubelet's boot ID and a peer address,
//!      the peer key Secret, every device armed under the permit and fed
//!      (the arming on the node's permit object), /metrics answering
//!      with kube_fencer_self_fence_capable 1; a Prometheus server (built by
//!      harness/monitoring.sh) discovers the agent pods through the API and
//!      scrapes them by their prometheus.io annotations and as the
//!      ServiceMonitor describes;
//!   2. a StatefulSet (pause, one replica, a PVC bound to a hostPath PV any
//!      node mounts) on a node that is not the leader's, and a 3-replica
//!      Deployment of bystanders;
//!   3. power that node off: the replica Running again elsewhere with the
//!      same PVC (name and UID), only pods of that node deleted, the node
//!      recorded Fencing then Fenced and tainted out-of-service;
//!   4. boot it (new boot ID): unfenced (record, taint, cordon gone) and its
//!      agent pod Ready again;
//!   5. cut the replica's new node off (its link down): its permit lapses
//!      and its agent stops feeding, its watchdog fires within the watchdog
//!      timeout of that and powers it off, and the leader deletes the
//!      replica only after that (the revocation's deadline); heal, boot,
//!      unfenced again;
//!   6. cut the replica's node off (packets dropped) and freeze its agent
//!      (SIGSTOP) 2 s later: its watchdog, no longer fed, fires within its
//!      timeout of the freeze and powers the node off before the replica is
//!      force-deleted; heal, boot, unfenced again;
//!   7. delete the default DaemonSet (every agent withdraws its arming and
//!      disarms its watchdog; no node goes down), apply daemonset/unprivileged/ under Pod
//!      Security "restricted", power a node off: with nothing to fence it, it
//!      stays Fencing and cordoned, and none of its pods is deleted; boot it,
//!      unfenced.
//!
//! It prints the timings (node Ready, DaemonSet Ready, time to recovery,
//! time to unfence, the watchdog's delay) and passes only if every check
//! passed.
//!
//! KUBE_FENCER_REALNODE_DEMO=1 stops after the reboot (steps 1 to 4): the
//! story of the demo (`harness/demo.sh --real-nodes`) on real nodes.
//! KUBE_FENCER_REALNODE_RESULT=FILE writes the run's figures there as JSON
//! (bench/run.sh --only realnode). Needs root, /dev/fuse and what
//! harness/realnode.sh needs.
//!
//! The test is the sequence of those steps; each is a function of its own
//! (`install`, `poweroff`, `watchdog`, `unprivileged`), on the state they
//! share ([`Run`]: the cluster, the nodes and pods they act on, the
//! figures). The labels failed checks print (`c.step`) number the checks
//! more finely than the list above: "1" to "2b" are step 1 here, "3" is
//! step 2, and so on to "8", step 7.

mod figures;
mod install;
mod poweroff;
mod unprivileged;
mod watchdog;

use std::fs;
use std::process::{Child, Command};

use kube_fencer_testkit::realnode::{RealCluster, now_ms, pod_ready, secs};

use figures::Figures;

const TAG: &str = "realnode-chaos";
const NODES: [&str; 3] = ["rn-1", "rn-2", "rn-3"];
// Agent defaults (daemonset/10-daemonset.yaml): --fencing-protocol permit,
// --unreachable-after 20s, --healthy-after 30s, --watchdog-timeout 5s.
const TTR_BOUND: u64 = 120;
const UNFENCE_BOUND: u64 = 120;
const WATCHDOG_TIMEOUT: i64 = 5;
const WATCHDOG_SLACK: i64 = 3;

/// "namespace/name uid node" of every pod ([`RealCluster::pod_uids`]).
type PodUids = Vec<(String, String, String)>;

#[test]
fn default_install_on_real_nodes_power_off_cut_and_frozen_agent() {
    let t_start = now_ms();
    let demo = std::env::var_os("KUBE_FENCER_REALNODE_DEMO").is_some_and(|v| v == "1");
    let mut run = install::step_1_install(t_start);
    poweroff::step_2_workload(&mut run);
    poweroff::step_3_power_off(&mut run);
    poweroff::step_4_boot(&mut run);
    if demo {
        run.demo_done();
        return;
    }
    watchdog::step_5_cut_self_fence(&mut run);
    watchdog::step_6_cut_frozen_agent(&mut run);
    unprivileged::step_7_unprivileged(&mut run);
    run.teardown();
}

/// What the steps share: the cluster, Prometheus, the nodes and pods the
/// steps act on, and the figures of the run.
struct Run {
    c: RealCluster,
    prometheus: Option<Child>,
    prom_port: u32,
    /// When the test started (ms since the epoch).
    t_start: i64,
    /// The leader's node after the default install (step 1).
    leader: String,
    /// db-0's node when the workload was created: powered off in step 3.
    victim: String,
    /// db-0's UID when the workload was created.
    db_uid: String,
    /// The claim data-db-0's UID: the same throughout.
    pvc: String,
    /// Every pod when the workload was created.
    pods_before: PodUids,
    /// db-0's node now (after steps 3 and 5: the node steps 5 and 6 cut).
    db_node: String,
    fig: Figures,
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(p) = &mut self.prometheus
            && !self.c.keep()
        {
            let _ = p.kill();
            let _ = p.wait();
            let _ = fs::remove_file(self.c.dir.join("prometheus.pid"));
        }
    }
}

impl Run {
    fn all_agents_ready(&self) -> bool {
        NODES.iter().all(|n| self.c.agent_ready(n))
    }

    /// Peer questions the node's agent refused, from its /metrics.
    fn refused_in(&self, node: &str) -> f64 {
        self.c
            .node_metrics(node)
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                l.starts_with("kube_fencer_peer_requests_total{")
                    && l.contains("direction=\"in\"")
                    && !l.contains("result=\"ok\"")
            })
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
            .sum()
    }

    /// A Prometheus query's result vector as sorted "node value" lines.
    fn prom_query(&self, expr: &str) -> Vec<String> {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "5", "--get"])
            .arg(format!("http://127.0.0.1:{}/api/v1/query", self.prom_port))
            .arg("--data-urlencode")
            .arg(format!("query={expr}"))
            .output();
        let Ok(out) = out else { return vec![] };
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let mut lines: Vec<String> = v["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let node = match &r["metric"]["node"] {
                    serde_json::Value::String(s) => s.clone(),
                    _ => "null".to_string(),
                };
                format!("{node} {}", r["value"][1].as_str().unwrap_or(""))
            })
            .collect();
        lines.sort();
        lines
    }

    /// Heal NODE's network, power it on with a fresh device, wait until it
    /// is unfenced; ms from boot to unfenced.
    fn heal_and_boot(&self, node: &str) -> i64 {
        let c = &self.c;
        c.heal(node)
            .unwrap_or_else(|e| c.fail(format!("heal {node} failed: {e:#}")));
        c.wd_stop(node);
        c.wd_start(node)
            .unwrap_or_else(|e| c.fail(format!("{e:#}")));
        let t = now_ms();
        c.realnode("boot", &[node])
            .unwrap_or_else(|e| c.fail(format!("realnode.sh boot {node} failed: {e:#}")));
        c.wait_until(
            UNFENCE_BOUND,
            &format!("{node} unfenced after its reboot"),
            || c.unfenced(node),
        );
        let t_unfenced = now_ms() - t;
        c.wait_until(60, &format!("{node}'s agent pod Ready again"), || {
            c.agent_ready(node)
        });
        c.pass(format!(
            "{node} healed and booted: unfenced {} s after boot, its agent Ready",
            secs(t_unfenced)
        ));
        t_unfenced
    }

    fn self_fence_is(&self, node: &str, mode: &str) -> bool {
        self.c.advert(node)["selfFence"] == mode
    }

    /// Every pod as now, or fail.
    fn pod_uids(&self) -> PodUids {
        let c = &self.c;
        c.pod_uids().unwrap_or_else(|e| c.fail(format!("{e:#}")))
    }

    /// The end of the demo (KUBE_FENCER_REALNODE_DEMO=1): after step 4.
    fn demo_done(&self) {
        let c = &self.c;
        let (victim, f) = (&self.victim, &self.fig);
        c.step("teardown");
        c.say(format!("demo done: {victim} powered off, db-0 Running on {} with the same claim {} s later; {victim} rebooted and unfenced {} s after its boot", self.db_node, secs(f.poweroff_ttr), secs(f.poweroff_unfence)));
    }

    /// Print the figures, write them to KUBE_FENCER_REALNODE_RESULT, tear
    /// down and check that nothing is left.
    fn teardown(&self) {
        let c = &self.c;
        c.step("teardown");
        let t_total = now_ms() - self.t_start;
        c.say(self.fig.summary(t_total));
        if let Some(file) = std::env::var_os("KUBE_FENCER_REALNODE_RESULT") {
            let json = self.fig.json(t_total);
            if serde_json::from_str::<serde_json::Value>(&json).is_err() {
                c.fail(format!("wrote an invalid {}", file.to_string_lossy()));
            }
            fs::write(&file, json).unwrap_or_else(|e| {
                c.fail(format!("cannot write {}: {e}", file.to_string_lossy()))
            });
        }
        if c.keep() {
            return;
        }
        let (t_down, problems) = c.down_and_check();
        if !problems.is_empty() {
            c.fail(format!("teardown left: {}", problems.join("; ")));
        }
        c.pass(format!(
            "teardown in {} s left no process, fakewdog mount, netns, veth, bridge or cgroup",
            secs(t_down)
        ));
        c.remove_dir();
        c.say(format!("PASS in {} s", secs(now_ms() - self.t_start)));
    }
}

/// db-0 as "uid node phase ready deleting".
#[derive(Default, Debug, Clone)]
struct Db {
    uid: String,
    node: String,
    phase: String,
    ready: bool,
    deleting: bool,
}

fn db_pod(c: &RealCluster) -> Option<Db> {
    let p = c.kubectl_json(&["get", "pod", "db-0"]).ok()?;
    Some(Db {
        uid: p["metadata"]["uid"].as_str().unwrap_or("").to_string(),
        node: p["spec"]["nodeName"].as_str().unwrap_or("-").to_string(),
        phase: p["status"]["phase"].as_str().unwrap_or("").to_string(),
        ready: pod_ready(&p),
        deleting: !p["metadata"]["deletionTimestamp"].is_null(),
    })
}

fn pvc_uid(c: &RealCluster) -> String {
    c.kubectl_json(&["get", "pvc", "data-db-0"])
        .map(|p| p["metadata"]["uid"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

/// Pods of `before` not on `except` that are gone or replaced in `after`.
fn replaced(
    before: &[(String, String, String)],
    after: &[(String, String, String)],
    keep_if: impl Fn(&str) -> bool,
) -> Option<String> {
    before
        .iter()
        .filter(|(_, _, node)| keep_if(node))
        .find(|(name, uid, _)| !after.iter().any(|(n, u, _)| n == name && u == uid))
        .map(|(name, uid, node)| format!("pod {name} (uid {uid}) on node {node}"))
}

/// The self_fence_capable line of a /metrics text, for a failure message.
fn capable_line(metrics: &str) -> String {
    metrics
        .lines()
        .find(|l| l.contains("self_fence_capable"))
        .unwrap_or("no kube_fencer_self_fence_capable")
        .to_string()
}
