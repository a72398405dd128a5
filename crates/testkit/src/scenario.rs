//! The set-up every scenario shares, as a builder: a local cluster, kube-fencer
//! installed and one agent per node (or not), a StatefulSet with static PVs
//! waited for until Running and Bound, and optionally an elected leader and
//! every agent advertised. Plus the steps and checks the scenarios repeat:
//! powering a node off, the identity of a replica and its PVC, the replica
//! coming back elsewhere with the same claim, the pods that must survive.
//!
//! ```ignore
//! let s = Scenario::new("chaos").agents(&args).start().await;
//! let s = Scenario::new("resume")
//!     .agents(&args)
//!     .ready_within(Duration::from_secs(120))
//!     .leader_within(Duration::from_secs(60))
//!     .advertised()
//!     .start()
//!     .await;
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use super::args::flag_name;
use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Node, Pod};

use super::{
    Cluster, ClusterOpts, FAST_AGENT_ARGS, pod_claims, pod_node_name, pod_running_ready, pod_uid,
    say,
};

/// Name of every scenario's StatefulSet (pods `db-0` .. `db-2`, claims
/// `data-db-0` ..).
pub const STS: &str = "db";
/// Nodes in every scenario's cluster (`node-1` ..).
pub const NODES: usize = 3;
/// Replicas of every scenario's StatefulSet.
pub const REPLICAS: u32 = 3;
/// The label the agent keeps a node's fencing phase in.
pub const PHASE_LABEL: &str = "kube-fencer.io/phase";

/// What of kube-fencer runs before the workload is deployed.
enum Fencer {
    /// Nothing (the control run).
    Absent,
    /// The manifests and one agent per node, all with these arguments.
    Agents(Vec<String>),
    /// `helm install` of the chart with these `--set` values, then one agent
    /// per node with the installed DaemonSet's arguments
    /// ([`Cluster::chart_agent_args`]).
    Helm(Vec<String>),
}

/// How a scenario's cluster is set up; [`Scenario::start`] runs it.
pub struct Scenario {
    ns: String,
    ready_within: Duration,
    fencer: Fencer,
    leader_within: Option<Duration>,
    advertised: bool,
    opts: ClusterOpts,
    /// Arguments added for one node's agent only.
    node_args: BTreeMap<String, Vec<String>>,
}

impl Scenario {
    /// 3 nodes with default timings, no kube-fencer, a 3-replica
    /// StatefulSet [`STS`] in namespace `ns`, Ready within 90 s.
    pub fn new(ns: &str) -> Scenario {
        Scenario {
            ns: ns.to_string(),
            ready_within: Duration::from_secs(90),
            fencer: Fencer::Absent,
            leader_within: None,
            advertised: false,
            opts: ClusterOpts::default(),
            node_args: BTreeMap::new(),
        }
    }

    /// Run every node's agent in a network namespace of its own, so the
    /// scenario can cut a node off for real ([`crate::NetLab::cut`]).
    pub fn netns(mut self) -> Scenario {
        self.opts.netns = true;
        self
    }

    /// How long the StatefulSet may take to be Running with Bound PVCs.
    pub fn ready_within(mut self, deadline: Duration) -> Scenario {
        self.ready_within = deadline;
        self
    }

    /// Install the kube-fencer manifests and start one agent per node with
    /// `args` (plus the split-brain defaults), before the workload.
    pub fn agents(mut self, args: &[&str]) -> Scenario {
        self.fencer = Fencer::Agents(args.iter().map(|a| a.to_string()).collect());
        self
    }

    /// Install kube-fencer with `helm install` and `sets` (`key=value`), and
    /// start one agent per node with the arguments of the DaemonSet the
    /// chart installed (plus the split-brain defaults for what is the pod's).
    pub fn helm(mut self, sets: &[&str]) -> Scenario {
        self.fencer = Fencer::Helm(sets.iter().map(|a| a.to_string()).collect());
        self
    }

    /// Add `args` to the agent of `node` only (its flags then win over the
    /// split-brain defaults).
    pub fn node_args(mut self, node: &str, args: &[&str]) -> Scenario {
        self.node_args.insert(
            node.to_string(),
            args.iter().map(|a| a.to_string()).collect(),
        );
        self
    }

    /// After the workload is ready, wait this long at most for a leader.
    pub fn leader_within(mut self, deadline: Duration) -> Scenario {
        self.leader_within = Some(deadline);
        self
    }

    /// Last, wait until the agent of every node has advertised itself (the
    /// leader marks a node fenced only if its agent advertised a self-fence
    /// action before it died).
    pub fn advertised(mut self) -> Scenario {
        self.advertised = true;
        self
    }

    async fn spawn_agents(&self, cluster: &Cluster, args: &[String]) {
        for n in cluster.node_names().await.expect("node names") {
            let all = match self.node_args.get(&n) {
                Some(extra) => with_overrides(args, extra),
                None => args.to_vec(),
            };
            let all: Vec<&str> = all.iter().map(String::as_str).collect();
            cluster.spawn_agent(&n, &all).expect("spawn agent");
        }
    }

    pub async fn start(self) -> Fixture {
        let cluster = Cluster::start(NODES, self.opts.clone())
            .await
            .expect("cluster start");
        match &self.fencer {
            Fencer::Absent => {}
            Fencer::Agents(args) => {
                cluster.install_kube_fencer().expect("install manifests");
                self.spawn_agents(&cluster, args).await;
            }
            Fencer::Helm(sets) => {
                let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
                cluster.helm_install(&sets).expect("helm install");
                let args = cluster
                    .chart_agent_args()
                    .expect("the installed DaemonSet's args");
                say(format!(
                    "agents' arguments from the installed DaemonSet: {args:?}"
                ));
                self.spawn_agents(&cluster, &args).await;
            }
        }
        cluster
            .deploy_statefulset(&self.ns, STS, REPLICAS)
            .expect("deploy StatefulSet");
        let placement = cluster
            .wait_statefulset_ready(&self.ns, STS, REPLICAS, self.ready_within)
            .await;
        say(format!("placement: {placement:?}"));
        let mut leader = None;
        if let Some(deadline) = self.leader_within {
            let holder = cluster.wait_leader(deadline).await;
            let node = node_of_identity(&holder);
            say(format!("leader: {holder} (node {node})"));
            leader = Some(node);
        }
        if self.advertised {
            for n in cluster.node_names().await.unwrap() {
                cluster.wait_advertised(&n).await;
            }
        }
        Fixture {
            cluster,
            ns: self.ns,
            placement,
            leader,
        }
    }
}

/// A started [`Scenario`]. Dropping it tears the cluster down.
pub struct Fixture {
    pub cluster: Cluster,
    pub ns: String,
    /// StatefulSet pod name -> node, once it was ready.
    pub placement: BTreeMap<String, String>,
    /// The leader's node, if the scenario waited for one.
    pub leader: Option<String>,
}

impl Fixture {
    /// The node of the leader the scenario waited for.
    pub fn leader_node(&self) -> String {
        self.leader
            .clone()
            .expect("the scenario waited for a leader (leader_within)")
    }

    /// The node the StatefulSet pod `pod` ran on once it was ready.
    pub fn node_of(&self, pod: &str) -> String {
        self.placement[pod].clone()
    }

    /// A replica (and its node) that does not run on the leader's node.
    pub fn victim_off_leader(&self) -> (String, String) {
        let leader_node = self.leader_node();
        for i in [1, 0, 2] {
            let pod = format!("{STS}-{i}");
            let node = &self.placement[&pod];
            if *node != leader_node {
                return (pod, node.clone());
            }
        }
        panic!(
            "every replica runs on the leader's node {leader_node}: {:?}",
            self.placement
        );
    }

    /// Each replica `db-I` (I in `replicas`) still runs on the node it ran
    /// on once it was ready, unless that node is `skip_node`.
    pub async fn assert_replicas_stayed(&self, replicas: &[u32], skip_node: Option<&str>) {
        for i in replicas {
            let name = format!("{STS}-{i}");
            if skip_node.is_some_and(|n| self.placement[&name] == n) {
                continue;
            }
            let p = self
                .cluster
                .pod(&self.ns, &name)
                .await
                .unwrap()
                .expect("replica exists");
            assert_eq!(
                pod_node_name(&p).as_deref(),
                Some(self.placement[&name].as_str())
            );
        }
    }

    /// (name, uid) of every StatefulSet replica, now.
    pub async fn replica_uids(&self) -> Vec<(String, String)> {
        let uids = self.cluster.pod_uids().await.unwrap();
        (0..REPLICAS)
            .map(|i| {
                let name = format!("{STS}-{i}");
                let uid = uids[&format!("{}/{name}", self.ns)].clone();
                (name, uid)
            })
            .collect()
    }
}

/// A StatefulSet pod's identity before a failure: its UID and its PVC.
pub struct Replica {
    pub uid: String,
    pub claim: String,
    pub pvc_name: String,
    pub pvc_uid: String,
}

impl Cluster {
    /// Power loss: the node's agent and its kwok die together.
    pub fn power_off(&self, node: &str) {
        self.stop_agent(node);
        self.stop_node(node).expect("stop node");
        say(format!("{node} powered off"));
    }

    /// The node comes back (returns once it is Ready) and its agent starts
    /// again with `args`.
    pub fn power_on(&self, node: &str, args: &[&str]) {
        self.start_node(node).expect("start node");
        self.spawn_agent(node, args).expect("restart agent");
    }

    /// Every node but `node`, sorted.
    pub async fn nodes_except(&self, node: &str) -> Result<Vec<String>> {
        Ok(self
            .node_names()
            .await?
            .into_iter()
            .filter(|n| n != node)
            .collect())
    }

    /// The UID of the pod `ns/pod` and the name and UID of its claim
    /// `data-POD`, which must both exist.
    pub async fn replica(&self, ns: &str, pod: &str) -> Replica {
        let uid = pod_uid(&self.pod(ns, pod).await.unwrap().unwrap());
        let claim = format!("data-{pod}");
        let (pvc_name, pvc_uid) = self.pvc(ns, &claim).await.unwrap().expect("PVC exists");
        Replica {
            uid,
            claim,
            pvc_name,
            pvc_uid,
        }
    }

    /// Wait until the replica `ns/name` (old UID `old_uid`) is Running and
    /// not being deleted on another node than `dead`; returns it.
    pub async fn wait_replica_moved(
        &self,
        ns: &str,
        name: &str,
        old_uid: &str,
        dead: &str,
        deadline: Duration,
    ) -> Pod {
        self.wait_until(
            &format!("{ns}/{name} recreated and Running on a node other than {dead}"),
            deadline,
            async || {
                let Some(p) = self.pod(ns, name).await? else {
                    return Ok(None);
                };
                let moved = pod_uid(&p) != old_uid
                    && pod_node_name(&p).is_some_and(|n| n != dead)
                    && p.metadata.deletion_timestamp.is_none()
                    && pod_running_ready(&p);
                Ok(moved.then_some(p))
            },
        )
        .await
    }

    /// The replacement `new_pod` of `old` uses the same claim, and that
    /// claim is still the same PVC object.
    pub async fn assert_same_claim(&self, ns: &str, new_pod: &Pod, old: &Replica) {
        assert_eq!(
            pod_claims(new_pod),
            vec![old.claim.clone()],
            "replacement uses the same claim"
        );
        let (new_pvc_name, new_pvc_uid) = self
            .pvc(ns, &old.claim)
            .await
            .unwrap()
            .expect("PVC still exists");
        assert_eq!(new_pvc_name, old.pvc_name);
        assert_eq!(
            new_pvc_uid, old.pvc_uid,
            "PVC {} must be the same object (same UID)",
            old.claim
        );
    }

    /// (namespace/name, uid) of every pod bound to one of `nodes`.
    pub async fn pod_uids_on(&self, nodes: &[String]) -> Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        for n in nodes {
            for p in self.pods_on_node(n).await? {
                out.insert(pod_key(&p), pod_uid(&p));
            }
        }
        Ok(out)
    }

    /// Every pod in `before` (taken on the healthy nodes) still exists with
    /// the same UID.
    pub async fn assert_healthy_pods_kept(&self, before: &BTreeMap<String, String>) {
        let now = self.pod_uids().await.unwrap();
        for (name, uid) in before {
            assert_eq!(
                now.get(name),
                Some(uid),
                "pod {name} on a healthy node was deleted or replaced"
            );
        }
    }

    /// The /metrics text of the agent of `node`.
    pub fn agent_metrics(&self, node: &str) -> Result<String> {
        let addr = self
            .agent_listen(node)
            .with_context(|| format!("no agent for {node}"))?;
        let out = tokio::task::block_in_place(|| {
            std::process::Command::new("curl")
                .args(["-sf", "--max-time", "5", &format!("http://{addr}/metrics")])
                .output()
        })?;
        anyhow::ensure!(out.status.success(), "curl {addr}/metrics: {}", out.status);
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// FAST_AGENT_ARGS with each `(flag, value)` set: replaced where the flag
/// is there, appended where it is not.
pub fn fast_agent_args<'a>(overrides: &[(&'a str, &'a str)]) -> Vec<&'a str> {
    let mut args: Vec<&'a str> = FAST_AGENT_ARGS.to_vec();
    for (flag, value) in overrides {
        match args.iter().position(|a| a == flag) {
            Some(i) => args[i + 1] = value,
            None => args.extend([*flag, *value]),
        }
    }
    args
}

/// `args` with every flag that `overrides` sets removed (`--flag=value`, or
/// `--flag value`), then `overrides` appended.
fn with_overrides(args: &[String], overrides: &[String]) -> Vec<String> {
    let set: Vec<&str> = overrides
        .iter()
        .filter(|o| o.starts_with("--"))
        .map(|o| flag_name(o))
        .collect();
    let mut out = Vec::new();
    let mut it = args.iter().peekable();
    while let Some(a) = it.next() {
        if a.starts_with("--") && set.contains(&flag_name(a)) {
            if !a.contains('=') && it.peek().is_some_and(|v| !v.starts_with("--")) {
                it.next();
            }
            continue;
        }
        out.push(a.clone());
    }
    out.extend(overrides.iter().cloned());
    out
}

/// `kube-fencer-node-2` -> `node-2` (agents run without `--pod-name`).
pub fn node_of_identity(holder: &str) -> String {
    holder
        .strip_prefix("kube-fencer-")
        .unwrap_or(holder)
        .to_string()
}

/// The node's fencing phase label (`fencing`, `fenced`), if any.
pub fn node_phase(node: &Node) -> Option<String> {
    node.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(PHASE_LABEL).cloned())
}

/// `namespace/name` of a pod.
pub fn pod_key(p: &Pod) -> String {
    format!(
        "{}/{}",
        p.metadata.namespace.clone().unwrap_or_default(),
        p.metadata.name.clone().unwrap_or_default()
    )
}
