//! Clusters of real nodes: a control plane from `harness/cluster.sh` and
//! nodes from `harness/realnode.sh` (kubelet, containerd, runc, CNI and
//! kube-proxy in a network and mount namespace per node), FUSE watchdog
//! devices from `harness/fakewdog.sh build`, and network cuts from the
//! `netns` module (the one implementation). Provisioning stays in those scripts; this module runs
//! them, reads the cluster with kubectl and tears everything down when the
//! [`RealCluster`] is dropped (also while a failed test unwinds, and on
//! SIGTERM or SIGINT).
//!
//! Environment: `KUBE_FENCER_REALNODE_NET` picks the bridge (default 0),
//! `KUBE_FENCER_REALNODE_KEEP=1` keeps the cluster running after the test.
//!
//! Here: the cluster (up, kubectl, the scripts, cuts) and the helpers the
//! tests use; the rest of [`RealCluster`]'s methods by what they are about:
//! `watchdogs` (the emulated devices), `queries` (what the tests read),
//! `diagnostics` (what a failed check prints), `teardown` (on drop, on a
//! signal, and the check that nothing is left).

mod diagnostics;
mod queries;
mod teardown;
mod watchdogs;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

use crate::netns::{Cut, CutState, NodeNs, cut_node, heal_node};
use crate::{read_env_file, repo_root};
use teardown::{LIVE, install_signal_teardown};

/// Namespace of the shipped manifests.
pub const NS: &str = "kube-fencer";

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Milliseconds as seconds with three decimals (`12.345`).
pub fn secs(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let ms = ms.abs();
    format!("{sign}{}.{:03}", ms / 1000, ms % 1000)
}

/// A line on stderr: `[TAG HH:MM:SS] MSG`.
pub fn log(tag: &str, msg: impl AsRef<str>) {
    let s = (now_ms() / 1000) % 86_400;
    eprintln!(
        "[{tag} {:02}:{:02}:{:02}] {}",
        s / 3600,
        (s / 60) % 60,
        s % 60,
        msg.as_ref()
    );
}

/// An RFC 3339 time (`2026-01-02T03:04:05.123456789Z` or with a `+01:00`
/// offset: a CRI log line's first field) in milliseconds since the epoch.
pub fn rfc3339_ms(t: &str) -> Option<i64> {
    let (date, rest) = t.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (clock, offset_s) = if let Some(c) = rest.strip_suffix('Z') {
        (c, 0)
    } else {
        let i = rest.rfind(['+', '-'])?;
        let (c, off) = rest.split_at(i);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off[1..].split_once(':')?;
        (
            c,
            sign * (oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60),
        )
    };
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut p = hms.split(':').map(|x| x.parse::<i64>());
    let (hh, mm, ss) = (p.next()?.ok()?, p.next()?.ok()?, p.next()?.ok()?);
    let ms: i64 = format!("{frac:0<3}")[..3].parse().ok()?;
    // Days since 1970-01-01 of a proleptic Gregorian date.
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + hh * 3600 + mm * 60 + ss) - offset_s) * 1000 + ms)
}

/// Run a command; stdout, or an error with its output. stderr goes to the
/// test's output when `show_stderr`.
fn run(cmd: &mut Command, show_stderr: bool) -> Result<String> {
    cmd.stdin(Stdio::null());
    if show_stderr {
        cmd.stderr(Stdio::inherit());
    }
    let out = cmd.output().with_context(|| format!("spawning {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed with {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The last line of a command's stdout (the harness scripts print the path
/// they built last).
pub fn last_line(out: &str) -> String {
    out.lines().last().unwrap_or("").trim().to_string()
}

/// Run a harness script (`harness/NAME ARGS…`) with its progress on stderr.
pub fn harness(name: &str, args: &[&str]) -> Result<String> {
    run(
        Command::new(repo_root().join("harness").join(name)).args(args),
        true,
    )
}

/// What real nodes run, from Debian's packages (installed if missing):
/// containerd, runc, jq and the CNI plugins.
pub fn need_node_packages() -> Result<()> {
    let cni = std::env::var("KUBE_FENCER_CNI_BIN_DIR").unwrap_or_else(|_| "/usr/lib/cni".into());
    let need = format!(
        "source harness/apt-need.sh && apt_need containerd:containerd \
         containerd-shim-runc-v2:containerd runc:runc jq:jq {cni}/bridge:containernetworking-plugins"
    );
    let ok = Command::new("bash")
        .args(["-c", &need])
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        bail!("cannot install containerd, runc, jq and the CNI plugins");
    }
    Ok(())
}

/// Files in `dir` whose name starts with `prefix` and ends with `suffix`,
/// sorted.
pub fn glob(dir: &Path, prefix: &str, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    let n = p
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    n.starts_with(prefix) && n.ends_with(suffix)
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

// -------------------------------------------------------------- cluster --

/// A control plane with real nodes, torn down on drop.
pub struct RealCluster {
    /// The test's log tag (`realnode-chaos`, `realnode-test`).
    pub tag: &'static str,
    pub dir: PathBuf,
    pub repo: PathBuf,
    pub bin_dir: PathBuf,
    /// `KUBE_FENCER_REALNODE_NET`: the bridge kfnbrN, 10.232.N.0/24.
    pub net: u32,
    /// What failed checks say they were doing.
    step: Mutex<String>,
    cuts: Mutex<BTreeMap<String, CutState>>,
    watchdogs: Mutex<BTreeMap<String, Child>>,
    fakewdog: Mutex<Option<PathBuf>>,
    keep: bool,
    down: AtomicBool,
}

impl RealCluster {
    /// `KUBE_FENCER_REALNODE_NET` (default 0).
    pub fn net() -> u32 {
        std::env::var("KUBE_FENCER_REALNODE_NET")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// The nodes' gateway, the bridge's address: 10.232.N.1.
    pub fn gateway(&self) -> String {
        format!("10.232.{}.1", self.net)
    }

    /// A fresh directory `kfn-TAG.XXXXXX` in the temporary directory.
    pub fn make_dir(tag: &str) -> Result<PathBuf> {
        let base = std::env::temp_dir();
        for i in 0..100u32 {
            let n = SystemTime::now().duration_since(UNIX_EPOCH)?.subsec_nanos();
            let dir = base.join(format!(
                "kfn-{tag}.{:06x}",
                (n ^ std::process::id().rotate_left(i)) & 0xff_ffff
            ));
            if fs::create_dir(&dir).is_ok() {
                return Ok(dir);
            }
        }
        bail!("cannot create a directory in {}", base.display())
    }

    /// `cluster.sh up DIR --nodes KWOK --api-bind 0.0.0.0 --advertise-address
    /// 10.232.N.1` in `dir` (from [`RealCluster::make_dir`]).
    pub fn up(tag: &'static str, dir: PathBuf, kwok_nodes: usize) -> Result<RealCluster> {
        install_signal_teardown();
        let net = Self::net();
        let keep = std::env::var_os("KUBE_FENCER_REALNODE_KEEP").is_some_and(|v| v == "1");
        LIVE.lock().unwrap().push(dir.clone());
        let mut c = RealCluster {
            tag,
            repo: repo_root(),
            bin_dir: PathBuf::new(),
            net,
            step: Mutex::new("setup".into()),
            cuts: Mutex::new(BTreeMap::new()),
            watchdogs: Mutex::new(BTreeMap::new()),
            fakewdog: Mutex::new(None),
            keep,
            down: AtomicBool::new(false),
            dir,
        };
        // From here on, dropping `c` tears down what was started.
        let d = c.dir.to_string_lossy().into_owned();
        let gw = c.gateway();
        run(
            Command::new(c.repo.join("harness/cluster.sh")).args([
                "up",
                &d,
                "--nodes",
                &kwok_nodes.to_string(),
                "--api-bind",
                "0.0.0.0",
                "--advertise-address",
                &gw,
            ]),
            true,
        )
        .with_context(|| format!("cluster.sh up failed (logs in {d}/logs)"))?;
        let env = read_env_file(&c.dir.join("cluster.env"))?;
        let bin_dir = PathBuf::from(
            env.get("BIN_DIR")
                .ok_or_else(|| anyhow!("cluster.env has no BIN_DIR"))?,
        );
        c.bin_dir = bin_dir;
        Ok(c)
    }

    pub fn say(&self, msg: impl AsRef<str>) {
        log(self.tag, msg);
    }

    pub fn pass(&self, msg: impl AsRef<str>) {
        log(self.tag, format!("ok: {}", msg.as_ref()));
    }

    /// Name the step that failed checks are in.
    pub fn step(&self, step: impl Into<String>) {
        *self.step.lock().unwrap() = step.into();
    }

    /// A failed check: say so with the step, print the cluster's state and
    /// panic (the drop tears down and keeps the logs in the directory).
    pub fn fail(&self, msg: impl AsRef<str>) -> ! {
        let step = self.step.lock().unwrap().clone();
        self.say(format!("FAIL in step '{step}': {}", msg.as_ref()));
        self.diagnose();
        panic!("FAIL in step '{step}': {}", msg.as_ref());
    }

    /// Poll `check` every 0.5 s until it holds, or fail after `timeout_s`.
    pub fn wait_until(&self, timeout_s: u64, what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(timeout_s);
        while !check() {
            if Instant::now() >= deadline {
                self.fail(format!("{what} (not within {timeout_s}s)"));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// kubectl as cluster admin, bounded (10 s per request, 20 s in all);
    /// stdout.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new("timeout");
        cmd.arg("20")
            .arg(self.bin_dir.join("kubectl"))
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--request-timeout=10s")
            .args(args)
            .current_dir(&self.repo);
        run(&mut cmd, false)
    }

    /// kubectl … -o json, parsed.
    pub fn kubectl_json(&self, args: &[&str]) -> Result<Value> {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        Ok(serde_json::from_str(&self.kubectl(&a)?)?)
    }

    /// `kubectl apply -f -` of `manifest`.
    pub fn apply(&self, manifest: &str) -> Result<String> {
        crate::kubectl_apply(&self.bin_dir.join("kubectl"), &self.kubeconfig(), manifest)
    }

    /// `harness/realnode.sh CMD DIR ARGS…`, its progress on stderr.
    pub fn realnode(&self, cmd: &str, args: &[&str]) -> Result<String> {
        let d = self.dir.to_string_lossy();
        let mut a = vec![cmd, &d];
        a.extend_from_slice(args);
        run(
            Command::new(self.repo.join("harness/realnode.sh"))
                .args(&a)
                .env("KUBE_FENCER_REALNODE_NET", self.net.to_string()),
            true,
        )
    }

    /// `realnode.sh exec DIR NODE CMD…`: CMD in the node's namespaces.
    pub fn node_exec(&self, node: &str, cmd: &[&str]) -> Result<String> {
        let d = self.dir.to_string_lossy();
        let mut a = vec!["exec", &d, node];
        a.extend_from_slice(cmd);
        run(
            Command::new(self.repo.join("harness/realnode.sh")).args(&a),
            false,
        )
    }

    /// The cluster's real-node id (`CID` of DIR/realnode.env): it names the
    /// nodes' namespaces (kfn-CID-NAME), veths and cgroups (kfnode-CID-NAME).
    pub fn cid(&self) -> String {
        read_env_file(&self.dir.join("realnode.env"))
            .ok()
            .and_then(|e| e.get("CID").cloned())
            .unwrap_or_default()
    }

    /// Whether realnode.sh status says the node is running or off.
    pub fn power_state(&self, node: &str) -> String {
        self.realnode("status", &[])
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                let mut f = l.split_whitespace();
                (f.next() == Some(node)).then(|| f.next().unwrap_or("").to_string())
            })
            .unwrap_or_default()
    }

    // ------------------------------------------------------------- cuts --

    /// The network namespace of a real node.
    pub fn node_ns(&self, node: &str) -> NodeNs {
        NodeNs::RealNode {
            netns: format!("kfn-{}-{node}", self.cid()),
            init_pid_file: self.dir.join("nodes").join(node).join("init.pid"),
        }
    }

    /// Cut the node off its network (its processes keep running). A boot
    /// resets the node's firewall: heal it before booting it.
    pub fn cut(&self, node: &str, how: Cut) -> Result<()> {
        let mut cuts = self.cuts.lock().unwrap();
        if let Some(old) = cuts.remove(node) {
            heal_node(&self.node_ns(node), old)?;
        }
        let state = cut_node(
            &self.node_ns(node),
            how,
            &format!("10.232.{}.0/24", self.net),
        )?;
        cuts.insert(node.to_string(), state);
        self.say(format!("node {node} cut off ({})", how.name()));
        Ok(())
    }

    /// Undo [`RealCluster::cut`].
    pub fn heal(&self, node: &str) -> Result<()> {
        if let Some(cut) = self.cuts.lock().unwrap().remove(node) {
            heal_node(&self.node_ns(node), cut)?;
        }
        self.say(format!("node {node} healed"));
        Ok(())
    }

    /// Remove the directory (after a passed test).
    pub fn remove_dir(&self) {
        let _ = fs::remove_dir_all(&self.dir);
    }

    pub fn keep(&self) -> bool {
        self.keep
    }
}

impl Drop for RealCluster {
    fn drop(&mut self) {
        if self.down.load(Ordering::SeqCst) {
            return;
        }
        if self.keep {
            self.say(format!(
                "kept the cluster in {} (stop the fakewdog pids in {0}/wd/*.pid, then harness/cluster.sh down {0})",
                self.dir.display()
            ));
            LIVE.lock().unwrap().retain(|d| d != &self.dir);
            return;
        }
        self.teardown_now();
        if std::thread::panicking() {
            self.say(format!(
                "logs are in {} (nodes/*/, wd/ and logs/)",
                self.dir.display()
            ));
        } else {
            self.remove_dir();
        }
    }
}

/// Whether the Node has a taint with `key`.
pub fn has_taint(node: &Value, key: &str) -> bool {
    node["spec"]["taints"]
        .as_array()
        .is_some_and(|ts| ts.iter().any(|t| t["key"] == key))
}

/// Whether the pod's Ready condition is True.
pub fn pod_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cri_log_times() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:01.5Z"), Some(1500));
        assert_eq!(
            rfc3339_ms("2026-12-07T02:03:04.123456789Z"),
            Some(1_796_608_984_123)
        );
        assert_eq!(
            rfc3339_ms("2026-12-07T03:03:04.123+01:00"),
            Some(1_796_608_984_123)
        );
        assert_eq!(rfc3339_ms("2026-12-07T02:03:04Z"), Some(1_796_608_984_000));
        assert_eq!(rfc3339_ms("nonsense"), None);
        assert_eq!(secs(12_345), "12.345");
        assert_eq!(secs(-5), "-0.005");
    }
}
