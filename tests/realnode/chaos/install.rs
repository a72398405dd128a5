//! Step 1: the images, a control plane with three real nodes and their
//! watchdogs, the default install (`kubectl apply -f rbac/ -f daemonset/`)
//! and its checks, and Prometheus scraping the agents.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use kube_fencer_testkit::realnode::{
    NS, RealCluster, harness, last_line, need_node_packages, now_ms, secs,
};

use super::{NODES, Run, TAG, WATCHDOG_TIMEOUT, capable_line};

/// The image archives and names step 1 checks the nodes against.
struct Images {
    /// The directory of archives the nodes import (`--images`).
    dir: PathBuf,
    /// The DaemonSet's image, as it is in the repository.
    ds_image: String,
    /// The name the archive gives it (docker.io/library/…).
    full_image: String,
}

/// Step 1: a cluster of three real nodes with watchdogs, the default
/// install, every agent checked, Prometheus scraping them.
pub(super) fn step_1_install(t_start: i64) -> Run {
    let net = RealCluster::net();
    let dir = RealCluster::make_dir(TAG).expect("a directory");
    let images = images(&dir);
    let c = RealCluster::up(TAG, dir.clone(), 0).unwrap_or_else(|e| pre(&dir, format!("{e:#}")));
    c.step("1: images, control plane, three real nodes with watchdogs");
    c.build_fakewdog()
        .unwrap_or_else(|e| c.fail(format!("{e:#}")));
    let mut run = Run {
        c,
        prometheus: None,
        prom_port: 19090 + net,
        t_start,
        leader: String::new(),
        victim: String::new(),
        db_uid: String::new(),
        pvc: String::new(),
        pods_before: Vec::new(),
        db_node: String::new(),
        fig: Default::default(),
    };
    add_nodes(&mut run, &images);
    apply_default_install(&mut run);
    check_agents(&run, &images);
    check_peer_ports(&run);
    let c = &run.c;
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
    let ds_image = &images.ds_image;
    c.pass(format!("every agent: image {ds_image}, peer key read in-cluster, permitFence watchdog with the kubelet's boot ID and <IP>:9747, device armed under the permit (at most {WATCHDOG_TIMEOUT} s) and fed, its permit object records the arming in this boot, /metrics says kube_fencer_self_fence_capable 1; Secret kube-fencer-peer-key exists"));
    start_prometheus(&mut run);
    check_scrapes(&run);
    run
}

/// A failed check before the cluster is up: say so, remove the directory,
/// panic.
fn pre(dir: &Path, msg: String) -> ! {
    kube_fencer_testkit::realnode::log(
        TAG,
        format!("FAIL in step '1: images, control plane, three real nodes with watchdogs': {msg}"),
    );
    let _ = fs::remove_dir_all(dir);
    panic!("{msg}")
}

/// After the preflight checks, the images: the kube-fencer archive must
/// name the DaemonSet's image.
fn images(dir: &Path) -> Images {
    let fail = |msg: String| -> ! { pre(dir, msg) };
    preflight(dir);
    let kf_archive = last_line(
        &harness("image.sh", &["build"]).unwrap_or_else(|e| fail(format!("image.sh build: {e:#}"))),
    );
    let pause_archive = last_line(
        &harness("image.sh", &["pause"]).unwrap_or_else(|e| fail(format!("image.sh pause: {e:#}"))),
    );
    if !std::path::Path::new(&kf_archive).is_file()
        || !std::path::Path::new(&pause_archive).is_file()
    {
        fail(format!(
            "image.sh gave no archives ({kf_archive}, {pause_archive})"
        ));
    }
    let images = dir.join("images");
    fs::create_dir_all(&images).unwrap();
    std::os::unix::fs::symlink(&kf_archive, images.join("kube-fencer.tar")).unwrap();
    std::os::unix::fs::symlink(&pause_archive, images.join("pause.tar")).unwrap();
    let (ds_image, full_image) = image_names(dir, &kf_archive);
    Images {
        dir: images,
        ds_image,
        full_image,
    }
}

/// Root, /dev/fuse, the nodes' packages, the control plane's binaries.
fn preflight(dir: &Path) {
    let fail = |msg: String| -> ! { pre(dir, msg) };
    // The owner of /proc/self is the process's user.
    let uid = fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m));
    if uid.ok() != Some(0) {
        fail("needs root".into());
    }
    if !std::path::Path::new("/dev/fuse").exists() {
        fail("needs /dev/fuse".into());
    }
    // Real nodes run containerd, runc and the CNI plugins from Debian's
    // packages.
    need_node_packages().unwrap_or_else(|e| fail(format!("{e:#}")));
    harness("build.sh", &[]).unwrap_or_else(|e| fail(format!("harness/build.sh: {e:#}")));
}

/// The DaemonSet's image as it is in the repository (kube-fencer:0.1.0),
/// and the name the archive `kf_archive` must give it.
fn image_names(dir: &Path, kf_archive: &str) -> (String, String) {
    let fail = |msg: String| -> ! { pre(dir, msg) };
    // The DaemonSet's image, as it is in the repository, and the archive's
    // names.
    let repo = kube_fencer_testkit::repo_root();
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
        fail(format!(
            "daemonset/10-daemonset.yaml has image '{ds_image}', not kube-fencer:0.1.0"
        ));
    }
    let index = Command::new("tar")
        .args(["-xOf", kf_archive, "index.json"])
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
        fail(format!(
            "the archive {kf_archive} does not name {full_image}"
        ));
    }
    kube_fencer_testkit::realnode::log(
        TAG,
        format!("ok: the image archive names {full_image}, the DaemonSet's {ds_image} unchanged"),
    );
    (ds_image, full_image)
}

/// rn-1 to rn-3, each with a watchdog device of its own, Ready; the image
/// imported.
fn add_nodes(run: &mut Run, images: &Images) {
    let img = images.dir.display().to_string();
    for (i, n) in NODES.into_iter().enumerate() {
        let c = &run.c;
        c.wd_start(n).unwrap_or_else(|e| c.fail(format!("{e:#}")));
        let t = now_ms();
        let wd = c.wd_device(n).display().to_string();
        c.realnode("add", &[n, "--images", &img, "--watchdog", &wd])
            .unwrap_or_else(|e| c.fail(format!("realnode.sh add {n} failed: {e:#}")));
        run.fig.node_ready[i] = now_ms() - t;
    }
    let c = &run.c;
    let t_ready = &run.fig.node_ready;
    c.pass(format!(
        "three real nodes Ready (rn-1 {} s, rn-2 {} s, rn-3 {} s from add)",
        secs(t_ready[0]),
        secs(t_ready[1]),
        secs(t_ready[2])
    ));
    let full_image = &images.full_image;
    let out = c
        .node_exec("rn-1", &["ctr", "-n", "k8s.io", "images", "ls", "-q"])
        .unwrap_or_default();
    if !out.lines().any(|l| l == full_image) {
        c.fail(format!("rn-1's containerd has no {full_image}: {out}"));
    }
}

/// `kubectl apply -f rbac/ -f daemonset/`: an agent pod Ready on every
/// node, a leader.
fn apply_default_install(run: &mut Run) {
    let c = &run.c;
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
        || run.all_agents_ready(),
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
    run.fig.daemonset_ready = t_ds;
    run.leader = leader;
}

/// Every agent: the image, a containerd container, the peer key read
/// in-cluster, permitFence watchdog with the kubelet's boot ID and its
/// address, its device armed under the permit and fed, the arming on its
/// permit object, /metrics; the peer key Secret.
fn check_agents(run: &Run, images: &Images) {
    let c = &run.c;
    for n in NODES {
        let pod = c.agent_pod(n);
        let p = c
            .kubectl_json(&["-n", NS, "get", "pod", &pod])
            .unwrap_or_default();
        let st = &p["status"]["containerStatuses"][0];
        let image = st["image"].as_str().unwrap_or("");
        if image != images.full_image {
            c.fail(format!("{pod} runs image '{image}'"));
        }
        let cid = st["containerID"].as_str().unwrap_or("");
        if !cid.starts_with("containerd://") {
            c.fail(format!(
                "{pod}'s container ID is '{cid}', not a containerd one"
            ));
        }
        check_advert(c, n);
        // Armed at the first ping, once the node holds its permit.
        c.wait_until(30, &format!("{n}'s watchdog armed and fed"), || {
            c.wd_armed_fed(n, WATCHDOG_TIMEOUT)
        });
        c.wait_until(10, &format!("{n}'s arming on its permit object"), || {
            !c.permit_annotation(n, "kube-fencer.io/armed").is_null()
        });
        check_agent_log(c, n);
        // A ping sets at most the agent's timeout, and at most half of
        // what is left of the permit.
        let timeout: i64 = c.wd_field(n, "timeout_seconds").parse().unwrap_or(0);
        if !(1..=WATCHDOG_TIMEOUT).contains(&timeout) {
            c.fail(format!(
                "{n}'s watchdog timeout is {timeout} s, not 1 to the agent's {WATCHDOG_TIMEOUT} s"
            ));
        }
        let armed = c.permit_annotation(n, "kube-fencer.io/armed");
        if armed["boot"] != c.boot_id(n).as_str() {
            c.fail(format!(
                "{n}'s permit object records the arming {armed}, not in boot {}",
                c.boot_id(n)
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
}

/// The agent on `n` read the peer key, built its client, armed its
/// watchdog under the permit.
fn check_agent_log(c: &RealCluster, n: &str) {
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
    if !lg.contains("watchdog is armed under the permit") {
        c.fail(format!(
            "{n}'s agent log does not say 'watchdog is armed under the permit'"
        ));
    }
}

/// `n` advertises permitFence watchdog (and selfFence none: a leader
/// that predates the permit leaves it to external fencing), its kubelet's
/// boot ID and its `<IP>:9747`.
fn check_advert(c: &RealCluster, n: &str) {
    let a = c.advert(n);
    if a.is_null() {
        c.fail(format!("{n} has no kube-fencer.io/agent annotation"));
    }
    if a["permitFence"] != "watchdog" || a["selfFence"] != "none" {
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
}

/// Every agent's peer port answers from every other node (an unsigned
/// question is refused with 401, and counted as such by the receiver);
/// the peer key Secret exists.
fn check_peer_ports(run: &Run) {
    let c = &run.c;
    for m in NODES {
        let peer_ip = c.node_ip(m);
        for n in NODES {
            if n == m {
                continue;
            }
            let code = unsigned_question(c, n, &peer_ip);
            if code != "401" {
                c.fail(format!(
                    "{m}'s peer port 9747 answered {code} to an unsigned question from {n} (want 401)"
                ));
            }
        }
        if run.refused_in(m) < 2.0 {
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
}

/// The HTTP status of an unsigned POST to the peer endpoint at `peer_ip`
/// from node `from`, or the error.
fn unsigned_question(c: &RealCluster, from: &str, peer_ip: &str) -> String {
    let url = format!("http://{peer_ip}:9747/peer/v1/ask");
    c.node_exec(
        from,
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
    .unwrap_or_else(|e| format!("{e:#}"))
}

/// Prometheus (harness/monitoring.sh build) with the usual annotation-driven
/// pod job and what prometheus-operator makes of the ServiceMonitor.
fn start_prometheus(run: &mut Run) {
    let c = &run.c;
    let dir = &c.dir;
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
    fs::write(dir.join("prometheus.yaml"), prometheus_config(&kubeconfig)).unwrap();
    let prom_log = fs::File::create(dir.join("prometheus.log")).unwrap();
    let child = Command::new(&prom_bin)
        .arg(format!("--config.file={}/prometheus.yaml", dir.display()))
        .arg(format!("--storage.tsdb.path={}/prom-data", dir.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{}", run.prom_port))
        .stdin(Stdio::null())
        .stdout(prom_log.try_clone().unwrap())
        .stderr(prom_log)
        .spawn()
        .unwrap_or_else(|e| c.fail(format!("cannot start prometheus: {e}")));
    fs::write(dir.join("prometheus.pid"), child.id().to_string()).unwrap();
    run.prometheus = Some(child);
}

/// Prometheus's configuration: the agents through the API, with
/// `kubeconfig`.
fn prometheus_config(kubeconfig: &str) -> String {
    // The usual annotation-driven pod job: keep pods with prometheus.io/scrape
    // "true", take the path and port from prometheus.io/path and /port.
    format!(
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
    )
}

/// Prometheus scrapes every agent both ways, each self-fence capable, one
/// leader.
fn check_scrapes(run: &Run) {
    let c = &run.c;
    let scraped_all = |job: &str| {
        let nodes: Vec<String> = run
            .prom_query(&format!("up{{job=\"{job}\"}} == 1"))
            .iter()
            .map(|l| l.split(' ').next().unwrap_or("").to_string())
            .collect();
        nodes == ["rn-1", "rn-2", "rn-3"]
    };
    let plog = format!("{}/prometheus.log", c.dir.display());
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
    let capable = run.prom_query("kube_fencer_self_fence_capable{job=\"kubernetes-pods\"}");
    if capable != ["rn-1 1", "rn-2 1", "rn-3 1"] {
        c.fail(format!(
            "kube_fencer_self_fence_capable as scraped: {capable:?}"
        ));
    }
    let leaders = run.prom_query("sum(kube_fencer_leader{job=\"kubernetes-pods\"})");
    if leaders.len() != 1 || leaders[0].split(' ').nth(1) != Some("1") {
        c.fail(format!(
            "scraped kube_fencer_leader does not sum to 1: {:?}",
            run.prom_query("kube_fencer_leader")
        ));
    }
    c.pass("Prometheus scrapes all three agents on port 9746 both ways: by the DaemonSet's prometheus.io pod annotations and by the ServiceMonitor's Service endpoints (up 1), kube_fencer_self_fence_capable 1 each, one kube_fencer_leader");
}
