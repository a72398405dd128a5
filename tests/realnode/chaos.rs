//! Chaos test of the default install on real nodes: `kubectl apply -f rbac/
//! -f daemonset/` unchanged, on a control plane with three real nodes
//! (rn-1..rn-3, harness/realnode.sh), each with a watchdog device of its own
//! (harness/fakewdog.sh build: when it fires it powers its node off), then
//!   1. every agent pod Running and Ready, one leader, every node advertising
//!      selfFence "watchdog" with its kubelet's boot ID and a peer address,
//!      the peer key Secret, every device armed and fed, /metrics answering
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
//!   5. cut the replica's new node off (its link down): its agent decides to
//!      fence itself, its watchdog fires within the watchdog timeout of that
//!      decision and powers it off, and the leader deletes the replica only
//!      after that; heal, boot, unfenced again;
//!   6. cut the replica's node off (packets dropped) and freeze its agent
//!      (SIGSTOP) 2 s later: its watchdog, no longer fed, fires within its
//!      timeout of the freeze and powers the node off before the replica is
//!      force-deleted; heal, boot, unfenced again;
//!   7. delete the default DaemonSet (every agent withdraws and disarms its
//!      watchdog; no node goes down), apply daemonset/unprivileged/ under Pod
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
//! Why one long file: the steps build on each other (the node fenced in
//! step 3 is the one booted in step 4, the replica moved there is cut off
//! in step 5, ...), and the test reads as the story the module doc tells.
//! Splitting the steps into functions of their own, with the state they
//! hand on in one struct, is the next cleanup.

use std::collections::BTreeMap;
use std::fs;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube_fencer_testkit::Cut;
use kube_fencer_testkit::realnode::{
    NS, RealCluster, harness, last_line, need_node_packages, now_ms, pod_ready, rfc3339_ms, secs,
};

const TAG: &str = "realnode-chaos";
const NODES: [&str; 3] = ["rn-1", "rn-2", "rn-3"];
// Agent defaults (daemonset/10-daemonset.yaml): safe time 48 s after the
// last heartbeat, --healthy-after 30s, --watchdog-timeout 10s.
const TTR_BOUND: u64 = 120;
const UNFENCE_BOUND: u64 = 120;
const WATCHDOG_TIMEOUT: i64 = 10;
const WATCHDOG_SLACK: i64 = 3;

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

/// The test's cluster, Prometheus and timings.
struct Chaos {
    c: RealCluster,
    prometheus: Option<Child>,
    prom_port: u32,
}

impl Drop for Chaos {
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

impl Chaos {
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
}

#[test]
fn default_install_on_real_nodes_power_off_cut_and_frozen_agent() {
    let t_start = now_ms();
    let demo = std::env::var_os("KUBE_FENCER_REALNODE_DEMO").is_some_and(|v| v == "1");
    let net = RealCluster::net();
    let repo = kube_fencer_testkit::repo_root();

    // ---------------------------------------------------------- 1. cluster --
    let dir = RealCluster::make_dir(TAG).expect("a directory");
    let pre = |msg: String| -> ! {
        kube_fencer_testkit::realnode::log(
            TAG,
            format!(
                "FAIL in step '1: images, control plane, three real nodes with watchdogs': {msg}"
            ),
        );
        let _ = fs::remove_dir_all(&dir);
        panic!("{msg}")
    };
    // The owner of /proc/self is the process's user.
    let uid = fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m));
    if uid.ok() != Some(0) {
        pre("needs root".into());
    }
    if !std::path::Path::new("/dev/fuse").exists() {
        pre("needs /dev/fuse".into());
    }
    // Real nodes run containerd, runc and the CNI plugins from Debian's
    // packages.
    need_node_packages().unwrap_or_else(|e| pre(format!("{e:#}")));
    harness("build.sh", &[]).unwrap_or_else(|e| pre(format!("harness/build.sh: {e:#}")));
    let kf_archive = last_line(
        &harness("image.sh", &["build"]).unwrap_or_else(|e| pre(format!("image.sh build: {e:#}"))),
    );
    let pause_archive = last_line(
        &harness("image.sh", &["pause"]).unwrap_or_else(|e| pre(format!("image.sh pause: {e:#}"))),
    );
    if !std::path::Path::new(&kf_archive).is_file()
        || !std::path::Path::new(&pause_archive).is_file()
    {
        pre(format!(
            "image.sh gave no archives ({kf_archive}, {pause_archive})"
        ));
    }
    let images = dir.join("images");
    fs::create_dir_all(&images).unwrap();
    std::os::unix::fs::symlink(&kf_archive, images.join("kube-fencer.tar")).unwrap();
    std::os::unix::fs::symlink(&pause_archive, images.join("pause.tar")).unwrap();
    // The DaemonSet's image, as it is in the repository, and the archive's
    // names.
    let ds_yaml = fs::read_to_string(repo.join("daemonset/10-daemonset.yaml")).unwrap();
    let ds_image = ds_yaml
        .lines()
        .find_map(|l| {
            l.trim_start()
                .strip_prefix("image:")
                .map(|i| i.trim().to_string())
        })
        .unwrap_or_default();
    if ds_image != "kube-fencer:0.1.0" {
        pre(format!(
            "daemonset/10-daemonset.yaml has image '{ds_image}', not kube-fencer:0.1.0"
        ));
    }
    let index = Command::new("tar")
        .args(["-xOf", &kf_archive, "index.json"])
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    let index: serde_json::Value = serde_json::from_slice(&index).unwrap_or_default();
    let full_image = format!("docker.io/library/{ds_image}");
    let named = index["manifests"].as_array().is_some_and(|ms| {
        ms.iter()
            .any(|m| m["annotations"]["io.containerd.image.name"] == full_image.as_str())
    });
    if !named {
        pre(format!(
            "the archive {kf_archive} does not name {full_image}"
        ));
    }
    kube_fencer_testkit::realnode::log(
        TAG,
        format!("ok: the image archive names {full_image}, the DaemonSet's {ds_image} unchanged"),
    );

    let c = RealCluster::up(TAG, dir.clone(), 0).unwrap_or_else(|e| pre(format!("{e:#}")));
    c.step("1: images, control plane, three real nodes with watchdogs");
    c.build_fakewdog()
        .unwrap_or_else(|e| c.fail(format!("{e:#}")));
    let mut x = Chaos {
        c,
        prometheus: None,
        prom_port: 19090 + net,
    };
    let img = images.display().to_string();
    let mut t_ready = BTreeMap::new();
    for n in NODES {
        let c = &x.c;
        c.wd_start(n).unwrap_or_else(|e| c.fail(format!("{e:#}")));
        let t = now_ms();
        let wd = c.wd_device(n).display().to_string();
        c.realnode("add", &[n, "--images", &img, "--watchdog", &wd])
            .unwrap_or_else(|e| c.fail(format!("realnode.sh add {n} failed: {e:#}")));
        t_ready.insert(n, now_ms() - t);
    }
    let c = &x.c;
    c.pass(format!(
        "three real nodes Ready (rn-1 {} s, rn-2 {} s, rn-3 {} s from add)",
        secs(t_ready["rn-1"]),
        secs(t_ready["rn-2"]),
        secs(t_ready["rn-3"])
    ));
    let out = c
        .node_exec("rn-1", &["ctr", "-n", "k8s.io", "images", "ls", "-q"])
        .unwrap_or_default();
    if !out.lines().any(|l| l == full_image) {
        c.fail(format!("rn-1's containerd has no {full_image}: {out}"));
    }

    // -------------------------------------------------- 2. default install --
    c.step("2: kubectl apply -f rbac/ -f daemonset/");
    let t = now_ms();
    c.kubectl(&["apply", "-f", "rbac/", "-f", "daemonset/"])
        .unwrap_or_else(|e| {
            c.fail(format!(
                "kubectl apply -f rbac/ -f daemonset/ failed: {e:#}"
            ))
        });
    c.wait_until(
        180,
        "an agent pod Running and Ready on every real node",
        || x.all_agents_ready(),
    );
    let t_ds = now_ms() - t;
    c.pass(format!(
        "DaemonSet pods Running and Ready on all three nodes {} s after apply",
        secs(t_ds)
    ));
    c.wait_until(
        30,
        "a leader elected (Lease kube-fencer/kube-fencer-leader)",
        || c.leader_node().is_some(),
    );
    let leader = c.leader_node().unwrap_or_default();
    c.pass(format!("leader elected: the agent on {leader}"));

    for n in NODES {
        let pod = c.agent_pod(n);
        let p = c
            .kubectl_json(&["-n", NS, "get", "pod", &pod])
            .unwrap_or_default();
        let st = &p["status"]["containerStatuses"][0];
        let image = st["image"].as_str().unwrap_or("");
        if image != full_image {
            c.fail(format!("{pod} runs image '{image}'"));
        }
        let cid = st["containerID"].as_str().unwrap_or("");
        if !cid.starts_with("containerd://") {
            c.fail(format!(
                "{pod}'s container ID is '{cid}', not a containerd one"
            ));
        }
        // The peer key is read through the API before the peer endpoint
        // serves: the agent's in-cluster config (ServiceAccount token,
        // kubernetes Service).
        let lg = c.agent_log(n);
        if !lg.contains("serving the peer endpoint") {
            c.fail(format!(
                "{n}'s agent log shows no peer endpoint (peer key not read through the API)"
            ));
        }
        if lg.contains("cannot build a Kubernetes client") {
            c.fail(format!("{n}'s agent could not build its in-cluster client"));
        }
        if !lg.contains("watchdog armed") {
            c.fail(format!("{n}'s agent log does not say 'watchdog armed'"));
        }
        let a = c.advert(n);
        if a.is_null() {
            c.fail(format!("{n} has no kube-fencer.io/agent annotation"));
        }
        if a["selfFence"] != "watchdog" {
            c.fail(format!("{n} advertises {a}"));
        }
        let boot = c.boot_id(n);
        if a["bootId"] != boot.as_str() {
            c.fail(format!(
                "{n} advertises boot ID {}, the kubelet reports {boot}",
                a["bootId"]
            ));
        }
        let ip = c.node_ip(n);
        if a["peerAddress"] != format!("{ip}:9747").as_str() {
            c.fail(format!(
                "{n} advertises peer address {}, its IP is {ip}",
                a["peerAddress"]
            ));
        }
        c.wait_until(15, &format!("{n}'s watchdog armed and fed"), || {
            c.wd_armed_fed(n, WATCHDOG_TIMEOUT)
        });
        let timeout = c.wd_field(n, "timeout_seconds");
        if timeout != WATCHDOG_TIMEOUT.to_string() {
            c.fail(format!(
                "{n}'s watchdog timeout is {timeout} s, not the agent's {WATCHDOG_TIMEOUT} s"
            ));
        }
        let m = c.node_metrics(n).unwrap_or_else(|e| {
            c.fail(format!("GET /metrics of {pod} on port 9746 failed: {e:#}"))
        });
        if !m.lines().any(|l| l == "kube_fencer_self_fence_capable 1") {
            c.fail(format!("{pod}: {}", capable_line(&m)));
        }
    }
    if !NODES
        .iter()
        .any(|n| c.agent_log(n).contains("created the peer key Secret"))
    {
        c.fail("no agent says it created the peer key Secret");
    }
    // Every agent's peer port answers from every other node (an unsigned
    // question is refused with 401, and counted as such by the receiver).
    for m in NODES {
        let peer_ip = c.node_ip(m);
        for n in NODES {
            if n == m {
                continue;
            }
            let url = format!("http://{peer_ip}:9747/peer/v1/ask");
            let code = c
                .node_exec(
                    n,
                    &[
                        "curl",
                        "-s",
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{http_code}",
                        "--max-time",
                        "5",
                        "-X",
                        "POST",
                        &url,
                    ],
                )
                .unwrap_or_else(|e| format!("{e:#}"));
            if code != "401" {
                c.fail(format!(
                    "{m}'s peer port 9747 answered {code} to an unsigned question from {n} (want 401)"
                ));
            }
        }
        if x.refused_in(m) < 2.0 {
            let mm = c.node_metrics(m).unwrap_or_default();
            let lines: Vec<&str> = mm
                .lines()
                .filter(|l| l.contains("peer_requests_total"))
                .collect();
            c.fail(format!(
                "{m}'s agent did not count the two unsigned questions: {}",
                lines.join(" ")
            ));
        }
    }
    if c.kubectl(&["-n", NS, "get", "secret", "kube-fencer-peer-key"])
        .is_err()
    {
        c.fail("no Secret kube-fencer/kube-fencer-peer-key");
    }
    c.say("the DaemonSet's pods:");
    eprint!(
        "{}",
        c.kubectl(&[
            "-n",
            NS,
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/name=kube-fencer",
            "-o",
            "custom-columns=POD:.metadata.name,NODE:.spec.nodeName,IP:.status.podIP,READY:.status.containerStatuses[0].ready,CONTAINER:.status.containerStatuses[0].containerID",
        ])
        .unwrap_or_default()
    );
    c.pass("every agent's peer port 9747 answers from both other nodes (401 to an unsigned question, counted by the receiver)");
    c.pass(format!("every agent: image {ds_image}, peer key read in-cluster, selfFence watchdog with the kubelet's boot ID and <IP>:9747, device armed ({WATCHDOG_TIMEOUT} s) and fed, /metrics says kube_fencer_self_fence_capable 1; Secret kube-fencer-peer-key exists"));

    // ------------------------------------------------ 2b. Prometheus scrape --
    c.step("2b: Prometheus finds the agents through the API and scrapes them by their annotations");
    let prom_dir = last_line(
        &harness("monitoring.sh", &["build"])
            .unwrap_or_else(|e| c.fail(format!("harness/monitoring.sh build: {e:#}"))),
    );
    let prom_bin = std::path::Path::new(&prom_dir).join("prometheus");
    if !prom_bin.is_file() {
        c.fail(format!(
            "harness/monitoring.sh build gave no prometheus ({prom_dir})"
        ));
    }
    let kubeconfig = c.kubeconfig().display().to_string();
    // The usual annotation-driven pod job: keep pods with prometheus.io/scrape
    // "true", take the path and port from prometheus.io/path and /port.
    let config = format!(
        r#"global: {{scrape_interval: 2s, scrape_timeout: 1s}}
scrape_configs:
  - job_name: kubernetes-pods
    kubernetes_sd_configs:
      - role: pod
        kubeconfig_file: {kubeconfig}
    relabel_configs:
      - {{source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape], action: keep, regex: "true"}}
      - {{source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_path], target_label: __metrics_path__, regex: (.+)}}
      - source_labels: [__address__, __meta_kubernetes_pod_annotation_prometheus_io_port]
        regex: '([^:]+)(?::\d+)?;(\d+)'
        replacement: '$1:$2'
        target_label: __address__
      - {{source_labels: [__meta_kubernetes_pod_node_name], target_label: node}}
  # What prometheus-operator makes of daemonset/monitoring/servicemonitor.yaml:
  # the endpoints of Services labelled app.kubernetes.io/name=kube-fencer in
  # kube-fencer, port "metrics", path /metrics.
  - job_name: serviceMonitor/kube-fencer/kube-fencer/0
    metrics_path: /metrics
    kubernetes_sd_configs:
      - role: endpointslice
        kubeconfig_file: {kubeconfig}
        namespaces: {{names: [kube-fencer]}}
    relabel_configs:
      - {{source_labels: [__meta_kubernetes_service_label_app_kubernetes_io_name], action: keep, regex: kube-fencer}}
      - {{source_labels: [__meta_kubernetes_endpointslice_port_name], action: keep, regex: metrics}}
      - {{source_labels: [__meta_kubernetes_pod_node_name], target_label: node}}
"#
    );
    fs::write(dir.join("prometheus.yaml"), config).unwrap();
    let prom_log = fs::File::create(dir.join("prometheus.log")).unwrap();
    let child = Command::new(&prom_bin)
        .arg(format!("--config.file={}/prometheus.yaml", dir.display()))
        .arg(format!("--storage.tsdb.path={}/prom-data", dir.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{}", x.prom_port))
        .stdin(Stdio::null())
        .stdout(prom_log.try_clone().unwrap())
        .stderr(prom_log)
        .spawn()
        .unwrap_or_else(|e| c.fail(format!("cannot start prometheus: {e}")));
    fs::write(dir.join("prometheus.pid"), child.id().to_string()).unwrap();
    x.prometheus = Some(child);
    let x = x;
    let c = &x.c;
    let scraped_all = |job: &str| {
        let nodes: Vec<String> = x
            .prom_query(&format!("up{{job=\"{job}\"}} == 1"))
            .iter()
            .map(|l| l.split(' ').next().unwrap_or("").to_string())
            .collect();
        nodes == ["rn-1", "rn-2", "rn-3"]
    };
    let plog = format!("{}/prometheus.log", dir.display());
    c.wait_until(
        60,
        &format!(
            "Prometheus scraping an agent on every node through the pod annotations (log: {plog})"
        ),
        || scraped_all("kubernetes-pods"),
    );
    c.wait_until(
        30,
        &format!("Prometheus scraping an agent on every node as the ServiceMonitor describes (log: {plog})"),
        || scraped_all("serviceMonitor/kube-fencer/kube-fencer/0"),
    );
    let capable = x.prom_query("kube_fencer_self_fence_capable{job=\"kubernetes-pods\"}");
    if capable != ["rn-1 1", "rn-2 1", "rn-3 1"] {
        c.fail(format!(
            "kube_fencer_self_fence_capable as scraped: {capable:?}"
        ));
    }
    let leaders = x.prom_query("sum(kube_fencer_leader{job=\"kubernetes-pods\"})");
    if leaders.len() != 1 || leaders[0].split(' ').nth(1) != Some("1") {
        c.fail(format!(
            "scraped kube_fencer_leader does not sum to 1: {:?}",
            x.prom_query("kube_fencer_leader")
        ));
    }
    c.pass("Prometheus scrapes all three agents on port 9746 both ways: by the DaemonSet's prometheus.io pod annotations and by the ServiceMonitor's Service endpoints (up 1), kube_fencer_self_fence_capable 1 each, one kube_fencer_leader");

    // -------------------------------------------------------- 3. workload --
    c.step("3: a StatefulSet off the leader's node");
    harness(
        "cluster.sh",
        &[
            "pv-create",
            &dir.display().to_string(),
            "pv-data",
            "1Gi",
            "default/data-db-0",
        ],
    )
    .unwrap_or_else(|e| c.fail(format!("pv-create failed: {e:#}")));
    let workload = fs::read_to_string(repo.join("harness/realnode/chaos-workload.yaml"))
        .unwrap()
        .replace("@LEADER@", &leader);
    c.apply(&workload)
        .unwrap_or_else(|e| c.fail(format!("cannot create the workload: {e:#}")));
    let db_running = || db_pod(c).is_some_and(|d| d.phase == "Running" && d.ready && !d.deleting);
    c.wait_until(90, "db-0 Running", db_running);
    c.wait_until(90, "three bystander pods Running", || {
        c.kubectl_json(&["get", "pods", "-l", "app=bystander"])
            .is_ok_and(|v| {
                v["items"].as_array().map(|ps| {
                    ps.iter()
                        .filter(|p| p["status"]["phase"] == "Running")
                        .count()
                }) == Some(3)
            })
    });
    let db = db_pod(c).unwrap_or_default();
    let (db_uid, victim) = (db.uid.clone(), db.node.clone());
    if victim == leader {
        c.fail(format!("db-0 is on the leader's node {leader}"));
    }
    let pvc = pvc_uid(c);
    let vol = c
        .kubectl_json(&["get", "pvc", "data-db-0"])
        .map(|p| p["spec"]["volumeName"].as_str().unwrap_or("").to_string())
        .unwrap_or_default();
    if vol != "pv-data" {
        c.fail("data-db-0 is not bound to pv-data");
    }
    let uids_before = c.pod_uids().unwrap_or_else(|e| c.fail(format!("{e:#}")));
    c.pass(format!("db-0 (uid {db_uid}) Running on {victim} (leader on {leader}), claim data-db-0 (uid {pvc}) bound to pv-data; {} pods recorded", uids_before.len()));

    // -------------------------------------------------------- 4. poweroff --
    c.step(format!("4: power {victim} off"));
    let t_off = now_ms();
    c.realnode("poweroff", &[&victim])
        .unwrap_or_else(|e| c.fail(format!("realnode.sh poweroff {victim} failed: {e:#}")));
    c.say(format!("{victim} powered off"));
    let (mut t_fencing, mut t_fenced, mut t_taint, mut t_db_gone) = (None, None, None, None);
    let deadline = Instant::now() + Duration::from_secs(TTR_BOUND);
    let t_recovered = loop {
        if Instant::now() >= deadline {
            c.fail(format!(
                "db-0 not Running on another node within {TTR_BOUND}s of the power-off"
            ));
        }
        let p = c.phase(&victim);
        if t_fencing.is_none() && p == "fencing" {
            t_fencing = Some(now_ms());
            c.say(format!("{victim} recorded Fencing"));
        }
        if t_fenced.is_none() && p == "fenced" {
            t_fenced = Some(now_ms());
            c.say(format!("{victim} recorded Fenced"));
        }
        if t_taint.is_none() && c.out_of_service(&victim) {
            t_taint = Some(now_ms());
        }
        let db = db_pod(c);
        if t_db_gone.is_none() && db.as_ref().is_none_or(|d| d.uid != db_uid) {
            t_db_gone = Some(now_ms());
        }
        if let Some(d) = &db
            && d.uid != db_uid
            && d.phase == "Running"
            && d.ready
        {
            break now_ms();
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let db2 = db_pod(c).unwrap_or_default();
    if db2.node == victim {
        c.fail(format!("db-0 is Running on {victim} again"));
    }
    let t_fencing = t_fencing.unwrap_or_else(|| c.fail(format!("{victim} was never seen Fencing")));
    let t_fenced = t_fenced.unwrap_or_else(|| {
        if c.phase(&victim) == "fenced" {
            now_ms()
        } else {
            c.fail(format!("{victim} is not Fenced"))
        }
    });
    if t_fencing > t_fenced {
        c.fail("Fenced seen before Fencing");
    }
    if !c.out_of_service(&victim) {
        c.fail(format!("{victim} has no out-of-service taint"));
    }
    if !c.cordoned(&victim) {
        c.fail(format!("{victim} is not cordoned"));
    }
    let claim = c.kubectl_json(&["get", "pod", "db-0"]).ok().and_then(|p| {
        p["spec"]["volumes"].as_array().and_then(|vs| {
            vs.iter().find(|v| v["name"] == "data").and_then(|v| {
                v["persistentVolumeClaim"]["claimName"]
                    .as_str()
                    .map(str::to_string)
            })
        })
    });
    if claim.as_deref() != Some("data-db-0") {
        c.fail("db-0 does not use claim data-db-0");
    }
    if pvc_uid(c) != pvc {
        c.fail("claim data-db-0 has a new UID");
    }
    let uids_after = c.pod_uids().unwrap_or_else(|e| c.fail(format!("{e:#}")));
    if let Some(p) = replaced(&uids_before, &uids_after, |n| n != victim) {
        c.fail(format!("{p} (healthy) was deleted or replaced"));
    }
    let ttr = t_recovered - t_off;
    c.pass(format!("db-0 Running on {} (uid {}) with claim data-db-0 (uid {pvc}) {} s after the power-off (bound {TTR_BOUND} s); Fencing at +{} s, Fenced at +{} s, out-of-service taint seen at +{} s, old db-0 gone at +{} s; every pod of the other nodes kept its UID",
        db2.node, db2.uid, secs(ttr), secs(t_fencing - t_off), secs(t_fenced - t_off),
        secs(t_taint.unwrap_or(t_recovered) - t_off), secs(t_db_gone.unwrap_or(t_recovered) - t_off)));

    // ------------------------------------------------------------ 5. boot --
    c.step(format!("5: boot {victim}"));
    let boot_old = c.boot_id(&victim);
    // A reboot resets the watchdog: a fresh device (the old one fired after
    // the agent died without a magic close, or will).
    c.wd_stop(&victim);
    c.wd_start(&victim)
        .unwrap_or_else(|e| c.fail(format!("{e:#}")));
    let t_boot = now_ms();
    c.realnode("boot", &[&victim])
        .unwrap_or_else(|e| c.fail(format!("realnode.sh boot {victim} failed: {e:#}")));
    let t_boot_ready = now_ms() - t_boot;
    let boot_new = c.boot_id(&victim);
    if boot_new.is_empty() || boot_new == boot_old {
        c.fail(format!("boot ID did not change ({boot_old} -> {boot_new})"));
    }
    c.wait_until(
        UNFENCE_BOUND,
        &format!("{victim} unfenced after its reboot"),
        || c.unfenced(&victim),
    );
    let t_unfence = now_ms() - t_boot;
    c.wait_until(60, &format!("{victim}'s agent pod Ready again"), || {
        c.agent_ready(&victim)
    });
    c.wait_until(30, &format!("{victim} advertises its new boot ID"), || {
        c.advert(&victim)["bootId"] == boot_new.as_str()
    });
    c.wait_until(
        15,
        &format!("{victim}'s new watchdog armed and fed"),
        || c.wd_armed_fed(&victim, WATCHDOG_TIMEOUT),
    );
    if t_unfence < 30_000 {
        c.fail(format!(
            "{victim} unfenced {} s after boot, before --healthy-after (30 s)",
            secs(t_unfence)
        ));
    }
    c.pass(format!("{victim} booted (Ready in {} s, boot ID {boot_old} -> {boot_new}), unfenced {} s after boot (record, taint, cordon gone), its agent Ready, its new device armed and fed", secs(t_boot_ready), secs(t_unfence)));

    if demo {
        c.step("teardown");
        c.say(format!("demo done: {victim} powered off, db-0 Running on {} with the same claim {} s later; {victim} rebooted and unfenced {} s after its boot", db2.node, secs(ttr), secs(t_unfence)));
        return;
    }

    // ------------------------------------------------------- 6. watchdog --
    let cut = db2.node.clone();
    c.step(format!("6: cut {cut} off; its watchdog must power it off"));
    if c.leader_node().as_deref() == Some(cut.as_str()) {
        c.fail(format!("db-0 is on the leader's node {cut}"));
    }
    let db_uid3 = db_pod(c).unwrap_or_default().uid;
    let uids_before = c.pod_uids().unwrap_or_else(|e| c.fail(format!("{e:#}")));
    let log_lines_before = c.agent_log(&cut).lines().count();
    let t_cut = now_ms();
    c.cut(&cut, Cut::LinkDown)
        .unwrap_or_else(|e| c.fail(format!("cut {cut} down failed: {e:#}")));
    c.say(format!("{cut} cut off (eth0 down)"));
    let (mut t_decision, mut t_fired, mut t_last_present) = (None::<i64>, None::<i64>, None::<i64>);
    let deadline = Instant::now() + Duration::from_secs(TTR_BOUND);
    let t_recovered2 = loop {
        if Instant::now() >= deadline {
            c.fail(format!(
                "db-0 not Running on another node within {TTR_BOUND}s of the cut"
            ));
        }
        if t_decision.is_none()
            && let Some(line) = c
                .agent_log(&cut)
                .lines()
                .skip(log_lines_before)
                .find(|l| l.contains("SELF-FENCING this node"))
        {
            let t = line
                .split(' ')
                .next()
                .and_then(rfc3339_ms)
                .unwrap_or_else(|| c.fail(format!("no time in the log line {line}")));
            t_decision = Some(t);
            let reason = line
                .find("\"reason\":\"")
                .map(|i| {
                    let r = &line[i..];
                    let end = r[10..].find('"').map_or(r.len(), |e| e + 11);
                    r[..end].to_string()
                })
                .unwrap_or_default();
            c.say(format!(
                "{cut}'s agent decided to fence itself at +{} s: {reason}",
                secs(t - t_cut)
            ));
        }
        if t_fired.is_none() && c.wd_field(&cut, "state") == "fired" {
            let f: i64 = c.wd_field(&cut, "fired_unix_ms").parse().unwrap_or(0);
            t_fired = Some(f);
            c.say(format!("{cut}'s watchdog fired at +{} s", secs(f - t_cut)));
        }
        let db = db_pod(c);
        if db.as_ref().is_some_and(|d| d.uid == db_uid3) {
            t_last_present = Some(now_ms());
        }
        if let Some(d) = &db
            && !d.uid.is_empty()
            && d.uid != db_uid3
            && d.phase == "Running"
            && d.ready
        {
            break now_ms();
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let t_decision = t_decision
        .unwrap_or_else(|| c.fail(format!("no 'SELF-FENCING this node' in {cut}'s agent log")));
    let t_fired = t_fired.unwrap_or_else(|| c.fail(format!("{cut}'s watchdog never fired")));
    if t_fired < t_decision {
        c.fail(format!(
            "{cut}'s watchdog fired {} s before the agent's decision",
            secs(t_decision - t_fired)
        ));
    }
    if t_fired > t_decision + (WATCHDOG_TIMEOUT + WATCHDOG_SLACK) * 1000 {
        c.fail(format!("{cut}'s watchdog fired {} s after the decision (more than {WATCHDOG_TIMEOUT}+{WATCHDOG_SLACK} s)", secs(t_fired - t_decision)));
    }
    if !dir.join("wd").join(format!("{cut}.fired-at")).exists() {
        c.fail("the watchdog's on-expire command did not run");
    }
    if c.power_state(&cut) != "off" {
        c.fail(format!("{cut} is not off after its watchdog fired"));
    }
    let t_last_present =
        t_last_present.unwrap_or_else(|| c.fail("the old db-0 was never seen after the cut"));
    if t_last_present <= t_fired {
        c.fail(format!(
            "the old db-0 was gone before {cut}'s watchdog fired (last seen +{} s, fired +{} s)",
            secs(t_last_present - t_cut),
            secs(t_fired - t_cut)
        ));
    }
    let db4 = db_pod(c).unwrap_or_default();
    if db4.node == cut {
        c.fail(format!("db-0 back on {cut}"));
    }
    if pvc_uid(c) != pvc {
        c.fail("claim data-db-0 has a new UID");
    }
    let uids_after = c.pod_uids().unwrap_or_else(|e| c.fail(format!("{e:#}")));
    if let Some(p) = replaced(&uids_before, &uids_after, |n| n != cut) {
        c.fail(format!("{p} (healthy) was deleted or replaced"));
    }
    if c.phase(&cut) != "fenced" {
        c.fail(format!("{cut} is not Fenced"));
    }
    let ttr2 = t_recovered2 - t_cut;
    c.pass(format!("cut {cut}: self-fence decision at +{} s, watchdog fired {} s later (bound {WATCHDOG_TIMEOUT}+{WATCHDOG_SLACK} s) and powered it off; old db-0 still there at +{} s (after the fire), db-0 Running on {} (uid {}, same claim) {} s after the cut; other pods kept their UIDs",
        secs(t_decision - t_cut), secs(t_fired - t_decision), secs(t_last_present - t_cut), db4.node, db4.uid, secs(ttr2)));

    c.step(format!("6: heal and boot {cut}"));
    let t_unfence2 = x.heal_and_boot(&cut);

    // --------------------------------------------------- 7. frozen agent --
    let frozen = db4.node.clone();
    c.step(format!(
        "7: cut {frozen} off and freeze its agent; its watchdog must power it off"
    ));
    if c.leader_node().as_deref() == Some(frozen.as_str()) {
        c.fail(format!("db-0 is on the leader's node {frozen}"));
    }
    c.wait_until(30, &format!("{frozen}'s watchdog armed and fed"), || {
        c.wd_armed_fed(&frozen, WATCHDOG_TIMEOUT)
    });
    let db_uid5 = db_pod(c).unwrap_or_default().uid;
    let apid = c
        .node_pid(&frozen, &["-x", "kube-fencer"])
        .unwrap_or_else(|| c.fail(format!("no kube-fencer process in {frozen}'s cgroup")));
    let t_cut3 = now_ms();
    c.cut(&frozen, Cut::Blackhole)
        .unwrap_or_else(|e| c.fail(format!("cut {frozen} drop failed: {e:#}")));
    std::thread::sleep(Duration::from_secs(2));
    let stopped = Command::new("kill")
        .args(["-STOP", &apid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    if !stopped {
        c.fail(format!("cannot SIGSTOP {frozen}'s agent (pid {apid})"));
    }
    let t_freeze = now_ms();
    c.say(format!(
        "{frozen} cut off (packets dropped), its agent (pid {apid}) frozen 2 s later"
    ));
    let (mut t_fired3, mut t_last3) = (None::<i64>, None::<i64>);
    let deadline = Instant::now() + Duration::from_secs(TTR_BOUND);
    let t_recovered3 = loop {
        if Instant::now() >= deadline {
            c.fail(format!(
                "db-0 not Running on another node within {TTR_BOUND}s of the cut"
            ));
        }
        if t_fired3.is_none() && c.wd_field(&frozen, "state") == "fired" {
            let f: i64 = c.wd_field(&frozen, "fired_unix_ms").parse().unwrap_or(0);
            t_fired3 = Some(f);
            c.say(format!(
                "{frozen}'s watchdog fired {} s after the freeze",
                secs(f - t_freeze)
            ));
        }
        let db = db_pod(c);
        if db.as_ref().is_some_and(|d| d.uid == db_uid5) {
            t_last3 = Some(now_ms());
        }
        if let Some(d) = &db
            && !d.uid.is_empty()
            && d.uid != db_uid5
            && d.phase == "Running"
            && d.ready
        {
            break now_ms();
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let t_fired3 = t_fired3.unwrap_or_else(|| {
        c.fail(format!(
            "{frozen}'s watchdog never fired although its agent was frozen"
        ))
    });
    if t_fired3 < t_freeze - 1000 {
        c.fail(format!(
            "{frozen}'s watchdog fired before its agent was frozen"
        ));
    }
    if t_fired3 > t_freeze + (WATCHDOG_TIMEOUT + WATCHDOG_SLACK) * 1000 {
        c.fail(format!("{frozen}'s watchdog fired {} s after the freeze (more than {WATCHDOG_TIMEOUT}+{WATCHDOG_SLACK} s)", secs(t_fired3 - t_freeze)));
    }
    if c.power_state(&frozen) != "off" {
        c.fail(format!("{frozen} is not off after its watchdog fired"));
    }
    let t_last3 = t_last3.unwrap_or_else(|| c.fail("the old db-0 was never seen after the cut"));
    if t_last3 <= t_fired3 {
        c.fail(format!(
            "the old db-0 was gone before {frozen}'s watchdog fired"
        ));
    }
    let ttr3 = t_recovered3 - t_cut3;
    c.pass(format!("froze {frozen}'s agent on a cut-off node: its watchdog fired {} s after the freeze (bound {WATCHDOG_TIMEOUT}+{WATCHDOG_SLACK} s) and powered it off; old db-0 still there at +{} s, db-0 Running elsewhere {} s after the cut",
        secs(t_fired3 - t_freeze), secs(t_last3 - t_cut3), secs(ttr3)));

    c.step(format!("7: heal and boot {frozen}"));
    let t_unfence3 = x.heal_and_boot(&frozen);

    // ------------------------------------------ 8. the unprivileged variant --
    c.step("8: uninstall the default DaemonSet; every agent withdraws and disarms its watchdog");
    let ds = repo
        .join("daemonset/10-daemonset.yaml")
        .display()
        .to_string();
    let deleted = Command::new("timeout")
        .arg("90")
        .arg(c.bin_dir.join("kubectl"))
        .arg("--kubeconfig")
        .arg(c.kubeconfig())
        .args(["delete", "-f", &ds, "--wait=true", "--timeout=80s"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !deleted {
        c.fail("kubectl delete -f daemonset/10-daemonset.yaml failed");
    }
    c.wait_until(60, "every agent pod gone", || {
        c.kubectl(&[
            "-n",
            NS,
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/name=kube-fencer",
            "-o",
            "name",
        ])
        .is_ok_and(|o| o.trim().is_empty())
    });
    for n in NODES {
        if !x.self_fence_is(n, "none") {
            c.fail(format!(
                "{n} still advertises {} after its agent stopped",
                c.advert(n)
            ));
        }
        let st = c.wd_field(n, "state");
        if st != "stopped" {
            c.fail(format!(
                "{n}'s watchdog is {st} after its agent's graceful stop (the magic close stops it)"
            ));
        }
        if c.ready_status(n) != "True" {
            c.fail(format!("{n} is not Ready"));
        }
    }
    c.pass("default DaemonSet deleted: every agent withdrew (selfFence none) and disarmed its watchdog (stopped, not fired); every node still up");

    c.step("8: kubectl apply -f daemonset/unprivileged/ under Pod Security 'restricted'");
    let t = now_ms();
    c.kubectl(&[
        "label",
        "--overwrite",
        "namespace",
        NS,
        "pod-security.kubernetes.io/enforce=restricted",
    ])
    .unwrap_or_else(|e| c.fail(format!("cannot label namespace {NS}: {e:#}")));
    c.kubectl(&["apply", "-f", "daemonset/unprivileged/"])
        .unwrap_or_else(|e| {
            c.fail(format!(
                "kubectl apply -f daemonset/unprivileged/ failed: {e:#}"
            ))
        });
    c.wait_until(180, "an unprivileged agent pod Running and Ready on every real node (Pod Security 'restricted' admitted them)", || x.all_agents_ready());
    let t_unpriv = now_ms() - t;
    c.wait_until(
        30,
        "a leader elected (Lease kube-fencer/kube-fencer-leader)",
        || c.leader_node().is_some(),
    );
    let leader = c.leader_node().unwrap_or_default();
    for n in NODES {
        c.wait_until(30, &format!("{n} advertises selfFence none"), || {
            x.self_fence_is(n, "none")
        });
        let m = c.node_metrics(n).unwrap_or_else(|e| {
            c.fail(format!(
                "GET /metrics of the unprivileged agent on {n} failed: {e:#}"
            ))
        });
        if !m.lines().any(|l| l == "kube_fencer_self_fence_capable 0") {
            c.fail(format!("{n}: {}", capable_line(&m)));
        }
    }
    c.pass(format!("unprivileged agents Running and Ready on all three nodes {} s after apply, admitted under 'restricted'; leader on {leader}; every node advertises selfFence none, /metrics says kube_fencer_self_fence_capable 0", secs(t_unpriv)));

    let mut victim5 = db_pod(c).unwrap_or_default().node;
    if victim5 == leader {
        victim5 = NODES.iter().find(|n| **n != leader).unwrap().to_string();
    }
    c.step(format!(
        "8: power {victim5} off with no way to fence it: nothing may be deleted"
    ));
    let uids_before = c.pod_uids().unwrap_or_else(|e| c.fail(format!("{e:#}")));
    let t_off5 = now_ms();
    c.realnode("poweroff", &[&victim5])
        .unwrap_or_else(|e| c.fail(format!("realnode.sh poweroff {victim5} failed: {e:#}")));
    c.wait_until(60, &format!("{victim5} recorded Fencing"), || {
        c.phase(&victim5) == "fencing"
    });
    let t_fencing5 = now_ms() - t_off5;
    let want = format!("kube_fencer_external_fencing_required{{node=\"{victim5}\"}} 1");
    c.wait_until(
        30,
        &format!("the leader reports kube_fencer_external_fencing_required for {victim5}"),
        || {
            c.node_metrics(&leader)
                .is_ok_and(|m| m.lines().any(|l| l == want))
        },
    );
    // Past --fence-timeout and what the safe time would have been (48 s
    // after the last heartbeat, at most 10 s before the power-off), with
    // margin.
    while now_ms() - t_off5 < 75_000 {
        let p = c.phase(&victim5);
        if p != "fencing" {
            c.fail(format!("{victim5} is '{p}' without a way to fence it"));
        }
        if c.out_of_service(&victim5) {
            c.fail(format!(
                "{victim5} tainted out-of-service without a way to fence it"
            ));
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let uids_after = c.pod_uids().unwrap_or_else(|e| c.fail(format!("{e:#}")));
    if let Some(p) = replaced(&uids_before, &uids_after, |n| n == victim5) {
        c.fail(format!("{p} of the unfenceable {victim5} was deleted"));
    }
    if !c.cordoned(&victim5) {
        c.fail(format!("{victim5} is not cordoned"));
    }
    let started = c
        .kubectl_json(&[
            "get",
            "events",
            "-A",
            "--field-selector",
            "reason=FencingStarted",
        ])
        .is_ok_and(|v| {
            v["items"].as_array().is_some_and(|es| {
                es.iter()
                    .any(|e| e["involvedObject"]["name"] == victim5.as_str())
            })
        });
    if !started {
        c.fail(format!("no FencingStarted Event for {victim5}"));
    }
    c.pass(format!("{victim5} powered off: recorded Fencing at +{} s and cordoned, the leader reports kube_fencer_external_fencing_required; 75 s later it is still only Fencing, untainted, and every pod bound to it kept its UID", secs(t_fencing5)));

    c.step(format!("8: boot {victim5}"));
    let t_unfence5 = x.heal_and_boot(&victim5);

    // -------------------------------------------------------- teardown --
    c.step("teardown");
    let t_total = now_ms() - t_start;
    c.say(format!(
        "timings: node Ready rn-1 {} s, rn-2 {} s, rn-3 {} s; DaemonSet Ready {} s; \
         power-off TTR {} s (Fencing +{} s, Fenced +{} s); unfence {} s after boot; \
         cut: decision +{} s, watchdog +{} s after it, TTR {} s, unfence {} s; \
         frozen agent: watchdog +{} s after the freeze, TTR {} s; \
         unprivileged: Ready {} s after apply, unfenceable node kept its pods, unfence {} s after boot; total {} s",
        secs(t_ready["rn-1"]), secs(t_ready["rn-2"]), secs(t_ready["rn-3"]), secs(t_ds),
        secs(ttr), secs(t_fencing - t_off), secs(t_fenced - t_off), secs(t_unfence),
        secs(t_decision - t_cut), secs(t_fired - t_decision), secs(ttr2), secs(t_unfence2),
        secs(t_fired3 - t_freeze), secs(ttr3),
        secs(t_unpriv), secs(t_unfence5), secs(t_total)
    ));
    if let Some(file) = std::env::var_os("KUBE_FENCER_REALNODE_RESULT") {
        // The figures of this run, in seconds, for bench/ (the realnode
        // section).
        let s = secs;
        let json = format!(
            r#"{{"node_ready": [{}, {}, {}],
 "daemonset_ready": {},
 "poweroff": {{"ttr": {}, "fencing": {}, "fenced": {},
              "old_pod_gone": {}, "unfence_after_boot": {}}},
 "cut": {{"decision": {}, "watchdog_after_decision": {},
         "ttr": {}, "unfence_after_boot": {}}},
 "frozen": {{"watchdog_after_freeze": {}, "ttr": {},
            "unfence_after_boot": {}}},
 "unprivileged": {{"daemonset_ready": {}, "fencing": {},
                  "unfence_after_boot": {}}},
 "total": {}}}
"#,
            s(t_ready["rn-1"]),
            s(t_ready["rn-2"]),
            s(t_ready["rn-3"]),
            s(t_ds),
            s(ttr),
            s(t_fencing - t_off),
            s(t_fenced - t_off),
            s(t_db_gone.unwrap_or(t_recovered) - t_off),
            s(t_unfence),
            s(t_decision - t_cut),
            s(t_fired - t_decision),
            s(ttr2),
            s(t_unfence2),
            s(t_fired3 - t_freeze),
            s(ttr3),
            s(t_unfence3),
            s(t_unpriv),
            s(t_fencing5),
            s(t_unfence5),
            s(t_total)
        );
        if serde_json::from_str::<serde_json::Value>(&json).is_err() {
            c.fail(format!("wrote an invalid {}", file.to_string_lossy()));
        }
        fs::write(&file, json)
            .unwrap_or_else(|e| c.fail(format!("cannot write {}: {e}", file.to_string_lossy())));
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
    c.say(format!("PASS in {} s", secs(now_ms() - t_start)));
}

/// The self_fence_capable line of a /metrics text, for a failure message.
fn capable_line(metrics: &str) -> String {
    metrics
        .lines()
        .find(|l| l.contains("self_fence_capable"))
        .unwrap_or("no kube_fencer_self_fence_capable")
        .to_string()
}
