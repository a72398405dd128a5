//! Teardown: on drop, on SIGTERM or SIGINT (every live cluster), and the
//! check that nothing of a cluster is left.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{RealCluster, glob, now_ms, run};
use crate::repo_root;

/// Directories of clusters that are up, for the signal handler.
pub(super) static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// On SIGTERM or SIGINT, tear down every live cluster and exit (143): a
/// test killed by its caller must not leave nodes, namespaces and FUSE
/// mounts behind. (tokio's signal handling: no unsafe code here.)
pub(super) fn install_signal_teardown() {
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
pub(super) fn stop_pid_file(pid_file: &Path) {
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

impl RealCluster {
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

    pub(super) fn teardown_now(&self) {
        // Through the pid files (also what the signal handler uses); then
        // the emulators, stopped by now, are reaped.
        teardown(&self.dir);
        for (_, mut c) in std::mem::take(&mut *self.watchdogs.lock().unwrap()) {
            let _ = c.kill();
            let _ = c.wait();
        }
        LIVE.lock().unwrap().retain(|d| d != &self.dir);
    }
}
