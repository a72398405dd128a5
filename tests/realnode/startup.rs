//! Start-up test of real nodes (harness/realnode.sh): a control plane with
//! one KWOK node and two real nodes, rn-a and rn-b, and then
//!   - a pod on rn-a is Running with a pod IP, serving on hostPort 9747;
//!   - a pod on rn-b reaches <rn-a's IP>:9747 (portmap), the pod's IP, and a
//!     ClusterIP Service in front of it; it connects to the kubernetes
//!     Service 10.96.0.1:443 (kube-proxy), and from its network namespace
//!     `curl -k https://10.96.0.1/readyz` answers ok;
//!   - containers see their node's boot ID; `kubectl logs` works;
//!   - rn-a cut off (packets dropped, then rejected) and healed: the peer
//!     stops and starts answering;
//!   - poweroff rn-a: the Lease stops renewing, no process of rn-a is left;
//!   - boot rn-a: a new status.nodeInfo.bootID, the pod runs again;
//!   - teardown leaves no process, netns, veth, bridge, mount or cgroup.
//!
//! Images: archives in KUBE_FENCER_IMAGES (e.g. from harness/image.sh) are
//! imported as well; a pause image (registry.k8s.io/pause:3.10) and the probe
//! image (kube-fencer.test/probe:1) are built here from
//! harness/realnode/probe.c unless KUBE_FENCER_IMAGES has a pause archive.

use std::fs;
use std::path::Path;
use std::process::Command;

use kube_fencer_testkit::Cut;
use kube_fencer_testkit::realnode::{RealCluster, now_ms};

const TAG: &str = "realnode-test";

/// The probe's lines after `since` (unix seconds, with a second of slack)
/// in the container log of the client's `get` container on rn-b: its
/// fourth field (after the CRI time, stream and tag) is the probe's time.
fn probe_lines_since(c: &RealCluster, since: i64) -> Vec<String> {
    c.container_log("rn-b", "default", "client", "get")
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(3)
                .and_then(|t| t.parse::<i64>().ok())
                .is_some_and(|t| t > since + 1)
        })
        .map(str::to_string)
        .collect()
}

fn unix_s() -> i64 {
    now_ms() / 1000
}

#[test]
fn real_nodes_start_serve_survive_cuts_and_reboot() {
    let dir = RealCluster::make_dir(TAG).expect("a directory");
    let d = dir.display().to_string();
    let harness = kube_fencer_testkit::repo_root().join("harness");

    kube_fencer_testkit::realnode::need_node_packages().expect("the nodes' packages");
    kube_fencer_testkit::realnode::harness("build.sh", &[]).expect("harness/build.sh");

    // ---------------------------------------------------------- images --
    let images = dir.join("images");
    fs::create_dir_all(&images).unwrap();
    let mut pause_tag = vec!["--tag", "registry.k8s.io/pause:3.10"];
    if let Some(from) = std::env::var_os("KUBE_FENCER_IMAGES") {
        for f in kube_fencer_testkit::realnode::glob(Path::new(&from), "", ".tar") {
            let abs = fs::canonicalize(&f).unwrap();
            std::os::unix::fs::symlink(&abs, images.join(f.file_name().unwrap())).unwrap();
            if f.file_name().unwrap().to_string_lossy().contains("pause") {
                pause_tag.clear();
            }
        }
    }
    let probe = dir.join("kfn-probe");
    let ok = Command::new("gcc")
        .args(["-static", "-Os", "-Wall", "-o"])
        .arg(&probe)
        .arg(harness.join("realnode/probe.c"))
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "cannot build the probe (gcc -static)");
    let probe_s = probe.display().to_string();
    let mut mk = Command::new("python3");
    mk.arg(harness.join("realnode/mkimage.py"))
        .arg(images.join("kfn-probe.tar"))
        .args(&pause_tag)
        .args(["--tag", "kube-fencer.test/probe:1"])
        .args(["--file", &format!("/pause={probe_s}")])
        .args(["--file", &format!("/kfn-probe={probe_s}")])
        .args(["--entrypoint", "/pause"]);
    assert!(mk.status().is_ok_and(|s| s.success()), "mkimage.py failed");

    // --------------------------------------------------------- cluster --
    let c = RealCluster::up(TAG, dir.clone(), 1).expect("cluster.sh up");
    let net = c.net;
    let img = images.display().to_string();
    let t = now_ms();
    c.realnode("add", &["rn-a", "--images", &img])
        .unwrap_or_else(|e| c.fail(format!("realnode.sh add rn-a: {e:#}")));
    let t_add_a = now_ms() - t;
    let t = now_ms();
    c.realnode("add", &["rn-b", "--images", &img])
        .unwrap_or_else(|e| c.fail(format!("realnode.sh add rn-b: {e:#}")));
    let t_add_b = now_ms() - t;
    c.pass(format!(
        "two real nodes Ready (rn-a {t_add_a} ms, rn-b {t_add_b} ms from add)"
    ));
    eprint!(
        "{}",
        c.kubectl(&["get", "nodes", "-o", "wide"])
            .unwrap_or_default()
    );

    let ip_a = c.node_ip("rn-a");
    if ip_a != format!("10.232.{net}.11") {
        c.fail(format!("rn-a has InternalIP '{ip_a}'"));
    }
    let labels = c.node_json("rn-a").unwrap()["metadata"]["labels"].clone();
    if labels["kube-fencer.test/real-node"] != "true" {
        c.fail("rn-a lacks the kube-fencer.test/real-node label");
    }

    c.apply(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: server
  labels:
    app: server
spec:
  nodeName: rn-a
  terminationGracePeriodSeconds: 1
  containers:
  - name: serve
    image: kube-fencer.test/probe:1
    imagePullPolicy: Never
    command: ["/kfn-probe", "serve", "9747"]
    ports:
    - containerPort: 9747
      hostPort: 9747
---
apiVersion: v1
kind: Service
metadata:
  name: server
spec:
  selector:
    app: server
  ports:
  - port: 80
    targetPort: 9747
"#,
    )
    .unwrap_or_else(|e| c.fail(format!("{e:#}")));
    let pod_running = |name: &str| {
        c.kubectl_json(&["get", "pod", name])
            .is_ok_and(|p| p["status"]["phase"] == "Running")
    };
    let t = now_ms();
    c.wait_until(90, "pod server Running on rn-a", || pod_running("server"));
    let pod_ip = c.kubectl_json(&["get", "pod", "server"]).unwrap()["status"]["podIP"]
        .as_str()
        .unwrap_or("")
        .to_string();
    if !pod_ip.starts_with("10.244.1.") {
        c.fail(format!(
            "pod server has IP '{pod_ip}', not in rn-a's 10.244.1.0/24"
        ));
    }
    let svc_ip = c.kubectl_json(&["get", "service", "server"]).unwrap()["spec"]["clusterIP"]
        .as_str()
        .unwrap_or("")
        .to_string();
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: client
spec:
  nodeName: rn-b
  terminationGracePeriodSeconds: 1
  containers:
  - name: get
    image: kube-fencer.test/probe:1
    imagePullPolicy: Never
    command: ["/kfn-probe", "get", "{ip_a}", "9747"]
  - name: pod
    image: kube-fencer.test/probe:1
    imagePullPolicy: Never
    command: ["/kfn-probe", "get", "{pod_ip}", "9747"]
  - name: service
    image: kube-fencer.test/probe:1
    imagePullPolicy: Never
    command: ["/kfn-probe", "get", "{svc_ip}", "80"]
  - name: svc
    image: kube-fencer.test/probe:1
    imagePullPolicy: Never
    command: ["/kfn-probe", "connect", "10.96.0.1", "443"]
"#
    ))
    .unwrap_or_else(|e| c.fail(format!("{e:#}")));
    c.wait_until(90, "pod client Running on rn-b", || pod_running("client"));
    let t_pods = now_ms() - t;
    let client_ip = c.kubectl_json(&["get", "pod", "client"]).unwrap()["status"]["podIP"]
        .as_str()
        .unwrap_or("")
        .to_string();
    c.pass(format!(
        "pods Running in {t_pods} ms; server has pod IP {pod_ip}, client {client_ip}"
    ));

    let log_has = |container: &str, what: &str| {
        c.container_log("rn-b", "default", "client", container)
            .contains(what)
    };
    c.wait_until(
        30,
        &format!("a pod on rn-b reaches hostPort {ip_a}:9747"),
        || log_has("get", "reply hello from server"),
    );
    c.pass(format!(
        "a pod on rn-b reaches {ip_a}:9747 (hostPort of a pod on rn-a)"
    ));
    c.wait_until(
        30,
        &format!("a pod on rn-b reaches the pod IP {pod_ip}:9747 on rn-a"),
        || log_has("pod", "reply hello from server"),
    );
    c.pass(format!(
        "a pod on rn-b reaches the pod on rn-a at its pod IP {pod_ip}:9747"
    ));
    c.wait_until(
        30,
        &format!("a pod on rn-b reaches the Service {svc_ip}:80"),
        || log_has("service", "reply hello from server"),
    );
    c.pass(format!(
        "a pod on rn-b reaches the pod on rn-a through its Service {svc_ip}:80 (kube-proxy)"
    ));
    c.wait_until(30, "a pod on rn-b connects to 10.96.0.1:443", || {
        log_has("svc", "10.96.0.1:443 connected")
    });
    c.pass("a pod on rn-b connects to the kubernetes Service 10.96.0.1:443");

    // A process of rn-b (by its cgroup: other clusters may run the same
    // pods) of the svc container.
    let pid = c
        .node_pid("rn-b", &["-f", "--", "kfn-probe connect 10.96.0.1 443"])
        .unwrap_or_else(|| c.fail("no process of the svc container"));
    let out = Command::new("nsenter")
        .args(["-n", "-t", &pid.to_string()])
        .args(["curl", "-sk", "--max-time", "5", "https://10.96.0.1/readyz"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if out != "ok" {
        c.fail(format!(
            "curl -k https://10.96.0.1/readyz from the pod's netns said '{out}'"
        ));
    }
    c.pass(format!(
        "curl -k https://10.96.0.1/readyz from the pod's network namespace: {out}"
    ));
    // The container has no cat: read the file through its root, in its
    // mount namespace.
    let in_pod = fs::read_to_string(format!("/proc/{pid}/root/proc/sys/kernel/random/boot_id"))
        .unwrap_or_default()
        .trim()
        .to_string();
    let node_boot = fs::read_to_string(dir.join("nodes/rn-b/boot_id"))
        .unwrap_or_default()
        .trim()
        .to_string();
    if in_pod != node_boot {
        c.fail(format!(
            "the container sees boot ID {in_pod}, the node has {node_boot}"
        ));
    }
    if in_pod != c.boot_id("rn-b") {
        c.fail("the container's boot ID differs from rn-b's nodeInfo.bootID");
    }
    c.pass(format!(
        "the container sees its node's boot ID ({in_pod}), as the Node reports it"
    ));
    let logs = c
        .kubectl(&["logs", "client", "-c", "get", "--tail", "1"])
        .unwrap_or_default();
    if !logs.contains("reply hello from server") {
        c.fail("kubectl logs does not work");
    }
    c.pass("kubectl logs works (API server -> kubelet)");

    // ------------------------------------------------------------- cut --
    // drop: connections time out; reject: they are refused (TCP reset).
    for (how, mode, expect) in [
        (Cut::Blackhole, "drop", "error"),
        (Cut::Reject, "reject", "Connection refused"),
    ] {
        c.cut("rn-a", how)
            .unwrap_or_else(|e| c.fail(format!("cut rn-a {mode}: {e:#}")));
        let since = unix_s();
        c.wait_until(
            20,
            &format!("rn-a unreachable while cut ({mode}: {expect})"),
            || {
                probe_lines_since(&c, since)
                    .iter()
                    .any(|l| l.contains("error") && l.contains(expect))
            },
        );
        c.pass(format!(
            "cut {mode}: rn-a's hostPort no longer answers ({expect})"
        ));
        c.heal("rn-a")
            .unwrap_or_else(|e| c.fail(format!("heal rn-a: {e:#}")));
        let since = unix_s();
        c.wait_until(20, "rn-a reachable again after heal", || {
            probe_lines_since(&c, since)
                .iter()
                .any(|l| l.contains("reply hello"))
        });
        c.pass("heal: rn-a answers again");
    }

    // ------------------------------------------------------- power off --
    let boot_old = c.boot_id("rn-a");
    let t = now_ms();
    c.realnode("poweroff", &["rn-a"])
        .unwrap_or_else(|e| c.fail(format!("realnode.sh poweroff rn-a: {e:#}")));
    let t_off = now_ms() - t;
    let left = Command::new("pgrep")
        .args(["-f", "--", &format!("{d}/nodes/rn-a/")])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if !left.is_empty() {
        c.fail(format!("processes of rn-a left after poweroff: {left}"));
    }
    let cid = c.cid();
    for h in kube_fencer_testkit::realnode::glob(Path::new("/sys/fs/cgroup"), "", "") {
        if h.join(format!("kfnode-{cid}-rn-a")).exists() {
            c.fail(format!("a cgroup of rn-a is left in {}", h.display()));
        }
    }
    let renew = || {
        c.kubectl_json(&["-n", "kube-node-lease", "get", "lease", "rn-a"])
            .map(|l| l["spec"]["renewTime"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    let renew1 = renew();
    // The kubelet renews every 10 s (a quarter of the 40 s lease).
    std::thread::sleep(std::time::Duration::from_secs(25));
    let renew2 = renew();
    if renew1 != renew2 {
        c.fail(format!(
            "rn-a's Lease was renewed after poweroff ({renew1} -> {renew2})"
        ));
    }
    c.pass(format!(
        "poweroff in {t_off} ms: no process or cgroup left, Lease not renewed for 25 s ({renew1})"
    ));

    let t = now_ms();
    c.realnode("boot", &["rn-a"])
        .unwrap_or_else(|e| c.fail(format!("realnode.sh boot rn-a: {e:#}")));
    let t_boot = now_ms() - t;
    let boot_new = c.boot_id("rn-a");
    if boot_new.is_empty() || boot_new == boot_old {
        c.fail(format!("bootID did not change ({boot_old} -> {boot_new})"));
    }
    let run_kf = fs::read_dir(dir.join("nodes/rn-a/run/kube-fencer"))
        .map(|r| r.count())
        .unwrap_or(0);
    if run_kf != 0 {
        c.fail("/run/kube-fencer of rn-a is not empty after boot");
    }
    c.pass(format!(
        "boot: Ready in {t_boot} ms with a new bootID ({boot_old} -> {boot_new})"
    ));
    let since = unix_s();
    let t = now_ms();
    c.wait_until(90, "the pod on rn-a answers again after the reboot", || {
        probe_lines_since(&c, since)
            .iter()
            .any(|l| l.contains("reply hello"))
    });
    let t_pod_back = now_ms() - t;
    c.pass(format!(
        "the server pod runs again after the reboot (answers {t_pod_back} ms after Ready)"
    ));

    // -------------------------------------------------------- teardown --
    if c.keep() {
        c.say(format!("timings: add rn-a {t_add_a} ms, add rn-b {t_add_b} ms, pods {t_pods} ms, poweroff {t_off} ms, boot {t_boot} ms"));
        return;
    }
    c.step("teardown");
    let (t_down, problems) = c.down_and_check();
    if !problems.is_empty() {
        c.fail(format!("teardown left: {}", problems.join("; ")));
    }
    c.pass(format!(
        "teardown in {t_down} ms left no process, netns, veth, bridge, mount or cgroup"
    ));
    c.say(format!("timings: add rn-a {t_add_a} ms, add rn-b {t_add_b} ms, pods Running {t_pods} ms, poweroff {t_off} ms, boot {t_boot} ms, pod back {t_pod_back} ms, down {t_down} ms"));
    c.remove_dir();
    c.say("PASS");
}
