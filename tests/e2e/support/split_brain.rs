//! Split-brain support: the self-fencing flags every spawned agent gets by
//! default (an `exec:` action that "powers the node off" by killing its
//! kwok, writes a timestamped marker and "reboots" it with a new boot ID),
//! a fresh boot ID per spawn (a respawned agent is a rebooted node), and
//! cuttable TCP proxies to partition one agent from the API and its peers.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use tokio::net::{TcpListener, TcpStream};

use super::{Cluster, free_port, say};

/// Short self-fence timings. With FAST_AGENT_ARGS (heartbeat interval 3s,
/// unreachable-after 6s): peer wait a = 0.5s + 1s, check spacing p = 2s,
/// verdict at max(3 + 1 + 2×2 + 0.5 + 1.5, 6 + 2 + 0.5 + 1.5) = 10s, + exec
/// bound 5s + margin 2s = a safe time 17s after the last heartbeat
/// (`src/decide/safetime.rs`).
pub const SELF_FENCE_TIMINGS: &[(&str, &str)] = &[
    ("--api-check-interval", "1s"),
    ("--api-check-timeout", "500ms"),
    ("--api-failure-threshold", "3"),
    ("--peer-silence-timeout", "3s"),
    ("--watchdog-timeout", "5s"),
    ("--safe-time-margin", "2s"),
];

static PEER_PORTS: Mutex<BTreeMap<String, u16>> = Mutex::new(BTreeMap::new());
static BOOTS: AtomicU64 = AtomicU64::new(0);

fn has(args: &[&str], flag: &str) -> bool {
    args.iter()
        .any(|a| *a == flag || a.starts_with(&format!("{flag}=")))
}

/// A boot ID that no other spawn has used.
pub fn fresh_boot_id() -> String {
    let n = BOOTS.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("boot-{t:x}-{n}")
}

impl Cluster {
    /// Where the self-fence marker of `node` is written (one line per
    /// self-fence: `<unix seconds with fraction> <reason>`).
    pub fn self_fence_marker(&self, node: &str) -> PathBuf {
        self.dir.join(format!("self-fenced-{node}"))
    }

    /// Self-fence times (unix seconds) recorded for `node`.
    pub fn self_fence_times(&self, node: &str) -> Vec<f64> {
        fs::read_to_string(self.self_fence_marker(node))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect()
    }

    pub fn boot_id_file(&self, node: &str) -> PathBuf {
        self.dir.join(format!("boot-id-{node}"))
    }

    pub fn peer_key_file(&self) -> Result<PathBuf> {
        let path = self.dir.join("peer.key");
        if !path.exists() {
            fs::write(&path, format!("e2e-peer-key-{}\n", fresh_boot_id()))?;
        }
        Ok(path)
    }

    /// The `--peer-listen` port given to the agent of `node`.
    pub fn peer_port(&self, node: &str) -> Option<u16> {
        PEER_PORTS
            .lock()
            .unwrap()
            .get(&format!("{}/{node}", self.dir.display()))
            .copied()
    }

    /// The default self-fence command of `node`: kill its kwok ("power
    /// off"), write the marker, and give the node a new boot ID (the agent
    /// re-reads it, as a rebooted node's new agent would read its own).
    pub fn default_self_fence_command(&self, node: &str) -> String {
        format!(
            "exec:{script} node-stop {dir} {node} >/dev/null 2>&1; echo \"$(date +%s.%N) $KUBE_FENCER_SELF_FENCE_REASON\" >> {marker}; echo {boot} > {bootfile}",
            script = self.repo_root.join("harness/cluster.sh").display(),
            dir = self.dir.display(),
            marker = self.self_fence_marker(node).display(),
            boot = fresh_boot_id(),
            bootfile = self.boot_id_file(node).display(),
        )
    }

    /// The split-brain flags `spawn_agent` adds to every agent, each only
    /// when the caller did not pass it: a self-fence action, a peer
    /// endpoint and key, a fresh boot ID, short check timings.
    pub fn split_brain_args(&self, node: &str, extra: &[&str]) -> Result<Vec<String>> {
        let mut out: Vec<String> = Vec::new();
        let mut add = |flag: &str, value: String| {
            if !has(extra, flag) {
                out.push(flag.to_string());
                out.push(value);
            }
        };
        add("--self-fence", self.default_self_fence_command(node));
        add(
            "--peer-key-file",
            self.peer_key_file()?.display().to_string(),
        );
        if !has(extra, "--peer-listen") {
            let port = free_port()?;
            PEER_PORTS
                .lock()
                .unwrap()
                .insert(format!("{}/{node}", self.dir.display()), port);
            add("--peer-listen", format!("127.0.0.1:{port}"));
        }
        if !has(extra, "--boot-id-file") {
            fs::write(self.boot_id_file(node), format!("{}\n", fresh_boot_id()))?;
            add(
                "--boot-id-file",
                self.boot_id_file(node).display().to_string(),
            );
        }
        for (flag, value) in SELF_FENCE_TIMINGS {
            add(flag, value.to_string());
        }
        Ok(out)
    }

    /// A kubeconfig like the agents' whose server is `server` (a proxy).
    pub fn agent_kubeconfig_via(&self, name: &str, server: &str) -> Result<PathBuf> {
        let base = fs::read_to_string(self.agent_kubeconfig()?)?;
        let line = base
            .lines()
            .find(|l| l.trim_start().starts_with("server:"))
            .context("no server in the agent kubeconfig")?
            .to_string();
        let indent = &line[..line.len() - line.trim_start().len()];
        let path = self.dir.join(format!("agent-{name}.kubeconfig"));
        fs::write(
            &path,
            base.replace(&line, &format!("{indent}server: {server}")),
        )?;
        Ok(path)
    }

    /// The API server's `host:port`.
    pub fn api_address(&self) -> Result<String> {
        let kc = fs::read_to_string(self.agent_kubeconfig()?)?;
        let server = kc
            .lines()
            .find_map(|l| l.trim_start().strip_prefix("server:"))
            .context("no server")?
            .trim()
            .to_string();
        Ok(server
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_string())
    }

    /// Like `spawn_agent`, with the split-brain defaults, but with its own
    /// kubeconfig (e.g. through a [`CutProxy`]).
    pub fn spawn_agent_with_kubeconfig(
        &self,
        node: &str,
        extra_args: &[&str],
        kubeconfig: &Path,
    ) -> Result<()> {
        self.launch_agent(node, extra_args, kubeconfig, true)
    }

    /// Pause (SIGSTOP) or resume (SIGCONT) the kube-apiserver: an API
    /// outage for everybody, kubelets included.
    pub fn pause_apiserver(&self, pause: bool) -> Result<()> {
        let pid = fs::read_to_string(self.dir.join("pids/kube-apiserver.pid"))
            .context("kube-apiserver pid file")?
            .trim()
            .to_string();
        let sig = if pause { "-STOP" } else { "-CONT" };
        let st = Command::new("kill").args([sig, &pid]).status()?;
        anyhow::ensure!(st.success(), "kill {sig} {pid} failed");
        say(format!(
            "kube-apiserver (pid {pid}) {}",
            if pause { "PAUSED" } else { "resumed" }
        ));
        Ok(())
    }
}

/// A TCP proxy on 127.0.0.1 that can be cut: cutting closes every open
/// connection and refuses new ones (a network partition, as the agent
/// behind it sees it).
pub struct CutProxy {
    pub addr: String,
    cut: Arc<AtomicBool>,
    generation: Arc<AtomicU64>,
}

impl CutProxy {
    pub async fn start(target: &str) -> Result<CutProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let cut = Arc::new(AtomicBool::new(false));
        let generation = Arc::new(AtomicU64::new(0));
        let (c, g, target) = (cut.clone(), generation.clone(), target.to_string());
        tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    return;
                };
                if c.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let (c, g, target) = (c.clone(), g.clone(), target.clone());
                tokio::spawn(async move {
                    let born = g.load(Ordering::SeqCst);
                    let Ok(outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let (mut ri, mut wi) = inbound.into_split();
                    let (mut ro, mut wo) = outbound.into_split();
                    let pump = async {
                        tokio::select! {
                            _ = tokio::io::copy(&mut ri, &mut wo) => {}
                            _ = tokio::io::copy(&mut ro, &mut wi) => {}
                        }
                    };
                    let watch = async {
                        loop {
                            if c.load(Ordering::SeqCst) || g.load(Ordering::SeqCst) != born {
                                return;
                            }
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        }
                    };
                    tokio::select! {
                        _ = pump => {}
                        _ = watch => {}
                    }
                });
            }
        });
        Ok(CutProxy {
            addr,
            cut,
            generation,
        })
    }

    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// Unix time now, in seconds.
pub fn unix_now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}
