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
//! Why one long file: every method works on the one [`RealCluster`]
//! (its directory, nodes, watchdog devices and teardown), and a reader
//! looking for what a step of the chaos test does finds it here.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

use crate::netns::{Cut, CutState, NodeNs, cut_node, heal_node};
use crate::{read_env_file, repo_root};

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

// ------------------------------------------------------------- teardown --

/// Directories of clusters that are up, for the signal handler.
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// On SIGTERM or SIGINT, tear down every live cluster and exit (143): a
/// test killed by its caller must not leave nodes, namespaces and FUSE
/// mounts behind. (tokio's signal handling: no unsafe code here.)
fn install_signal_teardown() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            rt.block_on(async move {
                use tokio::signal::unix::{SignalKind, signal};
                let (term, int) = (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::interrupt()),
                );
                let (mut term, mut int) = match (term, int) {
                    (Ok(t), Ok(i)) => (t, i),
                    (Err(e), _) | (_, Err(e)) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            });
            let dirs: Vec<PathBuf> = LIVE.lock().map(|l| l.clone()).unwrap_or_default();
            for dir in dirs {
                eprintln!("signalled: tearing down {}", dir.display());
                teardown(&dir);
            }
            std::process::exit(143);
        });
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: no teardown on SIGTERM/SIGINT: {e}"),
            Err(_) => eprintln!("warning: no teardown on SIGTERM/SIGINT"),
        }
    });
}

/// Whether process `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
    })
}

/// Send `signal` (`-TERM`, `-KILL`) to `pid` with kill(1).
fn signal_pid(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Stop a process whose pid is in `pid_file`: SIGTERM, up to 10 s, SIGKILL.
fn stop_pid_file(pid_file: &Path) {
    let Some(pid) = fs::read_to_string(pid_file)
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
    else {
        return;
    };
    if alive(pid) {
        signal_pid(pid, "-TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && alive(pid) {
            std::thread::sleep(Duration::from_millis(100));
        }
        if alive(pid) {
            eprintln!(
                "pid {pid} ({}) did not exit on SIGTERM; killing it",
                pid_file.display()
            );
            signal_pid(pid, "-KILL");
        }
    }
    let _ = fs::remove_file(pid_file);
}

/// Everything of the cluster in `dir`: Prometheus, the real nodes, the
/// watchdog devices (their mounts too), the control plane.
fn teardown(dir: &Path) {
    stop_pid_file(&dir.join("prometheus.pid"));
    let d = dir.to_string_lossy();
    if let Err(e) = run(
        Command::new(repo_root().join("harness/realnode.sh")).args(["down", &d]),
        false,
    ) {
        eprintln!("realnode.sh down failed: {e:#}");
    }
    for pid_file in glob(&dir.join("wd"), "", ".pid") {
        stop_pid_file(&pid_file);
        let mount = pid_file.with_extension("");
        let mounted = fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .contains(&format!(" {} ", mount.display()));
        if mounted {
            let _ = Command::new("umount").arg("-l").arg(&mount).status();
        }
    }
    if let Err(e) = run(
        Command::new(repo_root().join("harness/cluster.sh")).args(["down", &d]),
        false,
    ) {
        eprintln!("cluster.sh down failed: {e:#}");
    }
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
        let mut child = Command::new(self.bin_dir.join("kubectl"))
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .ok_or_else(|| anyhow!("no stdin"))?
            .write_all(manifest.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "kubectl apply failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
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

    // -------------------------------------------------------- watchdogs --

    /// The emulated watchdog device's binary (`harness/fakewdog.sh build`).
    pub fn build_fakewdog(&self) -> Result<PathBuf> {
        let path = PathBuf::from(last_line(&harness("fakewdog.sh", &["build"])?));
        if !path.is_file() {
            bail!(
                "harness/fakewdog.sh build gave no binary ({})",
                path.display()
            );
        }
        *self.fakewdog.lock().unwrap() = Some(path.clone());
        Ok(path)
    }

    /// The node's watchdog device file (DIR/wd/NODE/watchdog).
    pub fn wd_device(&self, node: &str) -> PathBuf {
        self.dir.join("wd").join(node).join("watchdog")
    }

    /// A fresh watchdog device for `node` (a reboot resets a fired
    /// watchdog): its expiry records the time in DIR/wd/NODE.fired-at and
    /// powers the node off.
    pub fn wd_start(&self, node: &str) -> Result<()> {
        let bin = self
            .fakewdog
            .lock()
            .unwrap()
            .clone()
            .ok_or_else(|| anyhow!("build_fakewdog first"))?;
        let wd = self.dir.join("wd");
        fs::create_dir_all(&wd)?;
        let _ = fs::remove_file(wd.join(format!("{node}.state")));
        let _ = fs::remove_file(wd.join(format!("{node}.fired-at")));
        let d = self.dir.display();
        let rn = self.repo.join("harness/realnode.sh");
        let on_expire = format!(
            "date +%s%3N >'{d}/wd/{node}.fired-at'; '{}' poweroff '{d}' '{node}' >>'{d}/wd/{node}.expire.log' 2>&1",
            rn.display()
        );
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(wd.join(format!("{node}.log")))?;
        let child = Command::new("setsid")
            .arg(&bin)
            .arg("--mount")
            .arg(wd.join(node))
            .args(["--timeout", "60s", "--state-file"])
            .arg(wd.join(format!("{node}.state")))
            .arg("--on-expire")
            .arg(on_expire)
            .env("KUBE_FENCER_REALNODE_NET", self.net.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        fs::write(wd.join(format!("{node}.pid")), child.id().to_string())?;
        self.watchdogs
            .lock()
            .unwrap()
            .insert(node.to_string(), child);
        for _ in 0..100 {
            if self.wd_device(node).exists() {
                return Ok(());
            }
            if let Some(c) = self.watchdogs.lock().unwrap().get_mut(node)
                && c.try_wait()?.is_some()
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let tail = fs::read_to_string(wd.join(format!("{node}.log"))).unwrap_or_default();
        eprintln!("{tail}");
        bail!(
            "fakewdog for {node} did not mount {}",
            wd.join(node).display()
        )
    }

    /// Stop the node's watchdog emulator (SIGTERM: it unmounts and exits
    /// within about 2 s) and unmount what it left.
    pub fn wd_stop(&self, node: &str) {
        let wd = self.dir.join("wd");
        stop_pid_file(&wd.join(format!("{node}.pid")));
        if let Some(mut c) = self.watchdogs.lock().unwrap().remove(node) {
            let _ = c.wait();
        }
        let mount = wd.join(node);
        let mounted = fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .contains(&format!(" {} ", mount.display()));
        if mounted {
            let _ = Command::new("umount").arg("-l").arg(&mount).status();
        }
    }

    /// A field of the node's watchdog state file (`state`, `feeds`, …).
    pub fn wd_field(&self, node: &str, key: &str) -> String {
        fs::read_to_string(self.dir.join("wd").join(format!("{node}.state")))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
            .unwrap_or_default()
    }

    /// The device is armed and was fed more than once, last within
    /// `timeout_s`.
    pub fn wd_armed_fed(&self, node: &str, timeout_s: i64) -> bool {
        let feeds: i64 = self.wd_field(node, "feeds").parse().unwrap_or(0);
        let last: Option<i64> = self.wd_field(node, "last_feed_unix_ms").parse().ok();
        self.wd_field(node, "state") == "armed"
            && feeds > 1
            && last.is_some_and(|l| now_ms() - l < timeout_s * 1000)
    }

    // ---------------------------------------------------------- queries --

    /// The kube-fencer agent's container log on the node's disk (readable
    /// while the node is off).
    pub fn agent_log(&self, node: &str) -> String {
        let mut s = String::new();
        for pod_dir in glob(
            &self.dir.join("nodes").join(node).join("pod-logs"),
            "kube-fencer_",
            "",
        ) {
            for f in glob(&pod_dir.join("agent"), "", ".log") {
                s.push_str(&fs::read_to_string(f).unwrap_or_default());
            }
        }
        s
    }

    /// A container's log on the node's disk.
    pub fn container_log(&self, node: &str, namespace: &str, pod: &str, container: &str) -> String {
        let mut s = String::new();
        for pod_dir in glob(
            &self.dir.join("nodes").join(node).join("pod-logs"),
            &format!("{namespace}_{pod}_"),
            "",
        ) {
            for f in glob(&pod_dir.join(container), "", ".log") {
                s.push_str(&fs::read_to_string(f).unwrap_or_default());
            }
        }
        s
    }

    pub fn node_json(&self, node: &str) -> Result<Value> {
        self.kubectl_json(&["get", "node", node])
    }

    /// `status.nodeInfo.bootID` of the node.
    pub fn boot_id(&self, node: &str) -> String {
        self.node_json(node)
            .map(|n| {
                n["status"]["nodeInfo"]["bootID"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .unwrap_or_default()
    }

    /// The node's InternalIP.
    pub fn node_ip(&self, node: &str) -> String {
        self.node_json(node)
            .ok()
            .and_then(|n| {
                n["status"]["addresses"].as_array().and_then(|a| {
                    a.iter()
                        .find(|x| x["type"] == "InternalIP")
                        .and_then(|x| x["address"].as_str().map(str::to_string))
                })
            })
            .unwrap_or_default()
    }

    /// The node's Ready condition status (`True`, `False`, `Unknown`).
    pub fn ready_status(&self, node: &str) -> String {
        self.node_json(node)
            .ok()
            .and_then(|n| {
                n["status"]["conditions"].as_array().and_then(|cs| {
                    cs.iter()
                        .find(|c| c["type"] == "Ready")
                        .and_then(|c| c["status"].as_str().map(str::to_string))
                })
            })
            .unwrap_or_default()
    }

    /// The node's `kube-fencer.io/agent` advertisement, parsed (Null if none).
    pub fn advert(&self, node: &str) -> Value {
        self.node_json(node)
            .ok()
            .and_then(|n| {
                n["metadata"]["annotations"]["kube-fencer.io/agent"]
                    .as_str()
                    .map(str::to_string)
            })
            .and_then(|a| serde_json::from_str(&a).ok())
            .unwrap_or(Value::Null)
    }

    /// The node's `kube-fencer.io/phase` label.
    pub fn phase(&self, node: &str) -> String {
        self.node_json(node)
            .map(|n| {
                n["metadata"]["labels"]["kube-fencer.io/phase"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .unwrap_or_default()
    }

    /// Whether the node has the out-of-service taint.
    pub fn out_of_service(&self, node: &str) -> bool {
        self.node_json(node)
            .is_ok_and(|n| has_taint(&n, "node.kubernetes.io/out-of-service"))
    }

    /// Whether the node is cordoned.
    pub fn cordoned(&self, node: &str) -> bool {
        self.node_json(node)
            .is_ok_and(|n| n["spec"]["unschedulable"] == true)
    }

    /// Record, phase label, out-of-service taint and cordon all gone.
    pub fn unfenced(&self, node: &str) -> bool {
        let Ok(n) = self.node_json(node) else {
            return false;
        };
        n["metadata"]["annotations"]["kube-fencer.io/state"].is_null()
            && n["metadata"]["labels"]["kube-fencer.io/phase"].is_null()
            && n["spec"]["unschedulable"] != true
            && !has_taint(&n, "node.kubernetes.io/out-of-service")
    }

    /// The agent pods (`app.kubernetes.io/name=kube-fencer`) bound to `node`.
    pub fn agent_pods(&self, node: &str) -> Result<Vec<Value>> {
        let sel = format!("spec.nodeName={node}");
        let v = self.kubectl_json(&[
            "-n",
            NS,
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/name=kube-fencer",
            "--field-selector",
            &sel,
        ])?;
        Ok(v["items"].as_array().cloned().unwrap_or_default())
    }

    /// The name of the agent pod bound to `node`.
    pub fn agent_pod(&self, node: &str) -> String {
        self.agent_pods(node)
            .ok()
            .and_then(|p| {
                p.first()
                    .and_then(|p| p["metadata"]["name"].as_str().map(str::to_string))
            })
            .unwrap_or_default()
    }

    /// Exactly one agent pod on `node` Running and Ready, not deleting.
    pub fn agent_ready(&self, node: &str) -> bool {
        self.agent_pods(node).is_ok_and(|pods| {
            pods.iter()
                .filter(|p| {
                    p["metadata"]["deletionTimestamp"].is_null()
                        && p["status"]["phase"] == "Running"
                        && pod_ready(p)
                })
                .count()
                == 1
        })
    }

    /// The node of the pod holding the kube-fencer-leader Lease.
    pub fn leader_node(&self) -> Option<String> {
        let lease = self
            .kubectl_json(&["-n", NS, "get", "lease", "kube-fencer-leader"])
            .ok()?;
        let holder = lease["spec"]["holderIdentity"]
            .as_str()
            .filter(|h| !h.is_empty())?
            .to_string();
        let pod = self.kubectl_json(&["-n", NS, "get", "pod", &holder]).ok()?;
        pod["spec"]["nodeName"].as_str().map(str::to_string)
    }

    /// "namespace/name uid node" of every pod, deleting ones included.
    pub fn pod_uids(&self) -> Result<Vec<(String, String, String)>> {
        let v = self.kubectl_json(&["get", "pods", "-A"])?;
        let mut out: Vec<(String, String, String)> = v["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|p| {
                        let m = &p["metadata"];
                        (
                            format!(
                                "{}/{}",
                                m["namespace"].as_str().unwrap_or(""),
                                m["name"].as_str().unwrap_or("")
                            ),
                            m["uid"].as_str().unwrap_or("").to_string(),
                            p["spec"]["nodeName"].as_str().unwrap_or("-").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        Ok(out)
    }

    /// `/metrics` of the agent on `node`, fetched from the node's network.
    pub fn node_metrics(&self, node: &str) -> Result<String> {
        let pod = self.agent_pod(node);
        let ip = self.kubectl_json(&["-n", NS, "get", "pod", &pod])?["status"]["podIP"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if ip.is_empty() {
            bail!("the agent pod {pod} on {node} has no IP");
        }
        self.node_exec(
            node,
            &[
                "curl",
                "-s",
                "--max-time",
                "5",
                &format!("http://{ip}:9746/metrics"),
            ],
        )
    }

    /// The host pid of a process in the node's cgroup whose command line
    /// matches `pattern` (`pgrep -f`).
    pub fn node_pid(&self, node: &str, pgrep_args: &[&str]) -> Option<u32> {
        let pids = run(Command::new("pgrep").args(pgrep_args), false).unwrap_or_default();
        let cg = format!("/kfnode-{}-{node}", self.cid());
        pids.split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
            .find(|p| {
                fs::read_to_string(format!("/proc/{p}/cgroup")).is_ok_and(|c| {
                    c.lines()
                        .any(|l| l.ends_with(&cg) || l.contains(&format!("{cg}/")))
                })
            })
    }

    // ------------------------------------------------------- diagnostics --

    /// What a failed check prints: nodes, pods, leases, agent pods, the
    /// ends of the nodes' logs and watchdogs, events.
    pub fn diagnose(&self) {
        if !self.kubeconfig().exists() {
            return;
        }
        let indent = |s: String| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
        let kc = |args: &[&str]| self.kubectl(args).unwrap_or_else(|e| format!("{e:#}"));
        self.say("---- nodes");
        eprint!(
            "{}",
            indent(kc(&[
                "get",
                "nodes",
                "-o",
                "wide",
                "-L",
                "kube-fencer.io/phase"
            ]))
        );
        if let Ok(v) = self.kubectl_json(&["get", "nodes"]) {
            for n in v["items"].as_array().into_iter().flatten() {
                let taints: Vec<&str> = n["spec"]["taints"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t["key"].as_str())
                    .collect();
                eprintln!(
                    "    {}: unschedulable={} taints={} state={}",
                    n["metadata"]["name"].as_str().unwrap_or(""),
                    n["spec"]["unschedulable"].as_bool().unwrap_or(false),
                    taints.join(","),
                    n["metadata"]["annotations"]["kube-fencer.io/state"]
                        .as_str()
                        .unwrap_or("-")
                );
            }
        }
        self.say("---- pods");
        eprint!("{}", indent(kc(&["get", "pods", "-A", "-o", "wide"])));
        self.say("---- leases");
        eprint!("{}", indent(kc(&["-n", NS, "get", "lease", "-o", "wide"])));
        self.say("---- agent pods");
        let describe = kc(&["-n", NS, "describe", "pods"]);
        let lines: Vec<&str> = describe.lines().collect();
        eprint!(
            "{}",
            indent(lines[lines.len().saturating_sub(80)..].join("\n"))
        );
        let tail = |s: &str, n: usize, width: usize| {
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(n)..]
                .iter()
                .map(|l| format!("    {}\n", l.chars().take(width).collect::<String>()))
                .collect::<String>()
        };
        for node in glob(&self.dir.join("nodes"), "", "") {
            let name = node
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if !node.join("realnode").exists() {
                continue;
            }
            let agent = self.agent_log(&name);
            if !agent.is_empty() {
                self.say(format!("---- last lines of {name}'s agent log"));
                eprint!("{}", tail(&agent, 25, 400));
            }
            for c in ["kubelet", "containerd", "init"] {
                if let Ok(s) = fs::read_to_string(node.join(format!("{c}.log"))) {
                    self.say(format!("---- last lines of {name}'s {c}.log"));
                    eprint!("{}", tail(&s, 12, 300));
                }
            }
            if let Ok(s) = fs::read_to_string(self.dir.join("wd").join(format!("{name}.log"))) {
                let state = fs::read_to_string(self.dir.join("wd").join(format!("{name}.state")))
                    .unwrap_or_default();
                self.say(format!(
                    "---- {name}'s watchdog (state: {})",
                    state.replace('\n', " ")
                ));
                eprint!("{}", tail(&s, 8, 300));
            }
        }
        self.say("---- events");
        eprint!(
            "{}",
            tail(
                &kc(&["get", "events", "-A", "--sort-by=.lastTimestamp"]),
                30,
                400
            )
        );
    }

    // ---------------------------------------------------------- teardown --

    /// Tear down and check that nothing is left: no process started from
    /// the directory, no netns, veth, bridge, mount or cgroup of this
    /// cluster. Returns the time it took (ms) and what was left.
    pub fn down_and_check(&self) -> (i64, Vec<String>) {
        let cid = self.cid();
        let t = now_ms();
        self.down.store(true, Ordering::SeqCst);
        self.teardown_now();
        let took = now_ms() - t;
        let mut problems = vec![];
        let d = format!("{}/", self.dir.display());
        let procs = run(Command::new("pgrep").args(["-af", "--", &d]), false).unwrap_or_default();
        if !procs.trim().is_empty() {
            problems.push(format!("processes: {}", procs.trim().replace('\n', " ")));
        }
        let netns = run(Command::new("ip").args(["netns", "list"]), false).unwrap_or_default();
        let left: Vec<&str> = netns
            .lines()
            .filter(|l| l.contains(&format!("kfn-{cid}-")))
            .collect();
        if !left.is_empty() {
            problems.push(format!("netns: {}", left.join(" ")));
        }
        let links = run(Command::new("ip").args(["-o", "link"]), false).unwrap_or_default();
        let bridge = format!("kfnbr{}", self.net);
        let left: Vec<&str> = links
            .lines()
            .filter(|l| {
                l.contains(&format!("kfv{cid}"))
                    || l.contains(&format!("{bridge}:"))
                    || l.contains(&format!("{bridge}@"))
            })
            .collect();
        if !left.is_empty() {
            problems.push(format!("links: {}", left.join(" ")));
        }
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let left: Vec<&str> = mounts
            .lines()
            .filter(|l| l.contains(&self.dir.display().to_string()))
            .collect();
        if !left.is_empty() {
            problems.push(format!("mounts: {}", left.join(" ")));
        }
        let mut cgroups = vec![];
        for h in glob(Path::new("/sys/fs/cgroup"), "", "") {
            cgroups.extend(glob(&h, &format!("kfnode-{cid}-"), ""));
        }
        if !cgroups.is_empty() {
            problems.push(format!("cgroups: {cgroups:?}"));
        }
        (took, problems)
    }

    fn teardown_now(&self) {
        // Through the pid files (also what the signal handler uses); then
        // the emulators, stopped by now, are reaped.
        teardown(&self.dir);
        for (_, mut c) in std::mem::take(&mut *self.watchdogs.lock().unwrap()) {
            let _ = c.kill();
            let _ = c.wait();
        }
        LIVE.lock().unwrap().retain(|d| d != &self.dir);
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
