//! Self-fencing support for the split-brain scenarios: the self-fencing flags every spawned agent gets by
//! default (an `exec:` action that "powers the node off" by killing its
//! kwok, writes a timestamped marker and "reboots" it with a new boot ID),
//! a fresh boot ID per spawn (a respawned agent is a rebooted node), and
//! the API server's address. Partitions are cut in network namespaces
//! (`netns.rs`).

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use super::args::has_flag;
use super::{Cluster, NETNS_PEER_PORT, free_port, say};

/// Short self-fence timings. With FAST_AGENT_ARGS (heartbeat interval 3s,
/// unreachable-after 6s): peer wait a = 0.5s + 1s, check spacing p = 2s,
/// last contact at most max(3, 6 + 1) = 7s after the heartbeat, verdict at
/// max(7 + 1 + 2×2 + 0.5 + 1.5, 6 + 2 + 0.5 + 1.5, 7 + 1 + 2) = 14s, + exec
/// bound 5s + margin 2s = a safe time 21s after the last heartbeat
/// (`crates/decide/src/safetime.rs`).
pub const SELF_FENCE_TIMINGS: &[(&str, &str)] = &[
    ("--api-check-interval", "1s"),
    ("--api-check-timeout", "500ms"),
    ("--api-failure-threshold", "3"),
    ("--peer-silence-timeout", "3s"),
    ("--watchdog-timeout", "5s"),
    ("--safe-time-margin", "2s"),
];

static BOOTS: AtomicU64 = AtomicU64::new(0);

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
    /// Wait until the agent of every one of `nodes` knows all the others as
    /// peers it can ask (`kube_fencer_peers`): an agent that knows none
    /// cannot tell an outage from isolation, and fences.
    pub async fn wait_peers_known(&self, nodes: &[String]) {
        let want = format!("kube_fencer_peers {}", nodes.len().saturating_sub(1));
        self.wait_agents_export(nodes, &want, "know its peers", 60)
            .await;
    }

    /// Wait until every agent of `nodes` holds a permit from its peers
    /// (`kube_fencer_permit_held 1`): renewals and grants cross the
    /// nodes' network, authenticated, both ways.
    pub async fn wait_permits_held(&self, nodes: &[String]) {
        self.wait_agents_export(nodes, "kube_fencer_permit_held 1", "hold a permit", 30)
            .await;
    }

    /// The permit objects the leader keeps: per node, the node names of
    /// its newest grantor set.
    pub fn permit_objects(&self) -> Result<std::collections::BTreeMap<String, Vec<String>>> {
        let text = self.kubectl([
            "-n",
            crate::FENCER_NAMESPACE,
            "get",
            "leases",
            "-l",
            "kube-fencer.io/permit=true",
            "-o",
            "json",
        ])?;
        let v: serde_json::Value = serde_json::from_str(&text)?;
        let mut out = std::collections::BTreeMap::new();
        for item in v["items"].as_array().into_iter().flatten() {
            let Some(node) = item["metadata"]["name"]
                .as_str()
                .and_then(|n| n.strip_prefix("kube-fencer-permit-"))
            else {
                continue;
            };
            let sets: serde_json::Value =
                item["metadata"]["annotations"]["kube-fencer.io/grantors"]
                    .as_str()
                    .and_then(|t| serde_json::from_str(t).ok())
                    .unwrap_or_default();
            let newest = sets
                .as_array()
                .and_then(|a| a.last())
                .cloned()
                .unwrap_or_default();
            let grantors = newest["grantors"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|g| g["node"].as_str().map(str::to_string))
                .collect();
            out.insert(node.to_string(), grantors);
        }
        Ok(out)
    }

    /// The annotation `key` of the permit object of `node`, parsed (they
    /// are JSON); `None` when the object or the annotation is missing.
    pub fn permit_annotation(&self, node: &str, key: &str) -> Result<Option<serde_json::Value>> {
        let text = self.kubectl([
            "-n",
            crate::FENCER_NAMESPACE,
            "get",
            "lease",
            &format!("kube-fencer-permit-{node}"),
            "--ignore-not-found",
            "-o",
            "json",
        ])?;
        if text.trim().is_empty() {
            return Ok(None);
        }
        let v: serde_json::Value = serde_json::from_str(&text)?;
        Ok(v["metadata"]["annotations"][key]
            .as_str()
            .and_then(|t| serde_json::from_str(t).ok()))
    }

    /// Wait until the leader keeps a permit object for every one of
    /// `nodes`, each naming all the others as grantors (three nodes: each
    /// set is the other two).
    pub async fn wait_permit_objects(&self, nodes: &[String]) {
        self.wait_until(
            "the leader to keep a permit object per node",
            std::time::Duration::from_secs(30),
            async || {
                let objects = self.permit_objects()?;
                Ok(nodes
                    .iter()
                    .all(|n| {
                        let mut want: Vec<&String> = nodes.iter().filter(|o| *o != n).collect();
                        want.sort();
                        objects
                            .get(n)
                            .is_some_and(|g| g.iter().collect::<Vec<_>>() == want)
                    })
                    .then_some(()))
            },
        )
        .await;
    }

    /// Wait up to `seconds` for each agent of `nodes` until its metrics
    /// have the line `line` (`what` it means, for the log).
    pub async fn wait_agents_export(&self, nodes: &[String], line: &str, what: &str, seconds: u64) {
        for n in nodes {
            self.wait_until(
                &format!("the agent of {n} to {what}"),
                std::time::Duration::from_secs(seconds),
                async || {
                    Ok(self
                        .agent_metrics(n)?
                        .lines()
                        .any(|l| l == line)
                        .then_some(()))
                },
            )
            .await;
        }
    }

    /// Where the self-fence marker of `node` is written (one line per
    /// self-fence: `<unix seconds with fraction> <reason>`, the time being
    /// when the self-fence action started, i.e. just after the decision).
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

    /// The default self-fence command of `node`: write the marker, kill
    /// its kwok ("power off"), and give the node a new boot ID (the agent
    /// re-reads it, as a rebooted node's new agent would read its own).
    /// The marker comes first: it records when the action started, and a
    /// slow node-stop (or the action's timeout cutting it short) must not
    /// leave a fencing unrecorded while the leader goes on to delete.
    pub fn default_self_fence_command(&self, node: &str) -> String {
        format!(
            "exec:echo \"$(date +%s.%N) $KUBE_FENCER_SELF_FENCE_REASON\" >> {marker}; {script} node-stop {dir} {node} >/dev/null 2>&1; echo {boot} > {bootfile}",
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
            if !has_flag(extra, flag) {
                out.push(flag.to_string());
                out.push(value);
            }
        };
        add("--self-fence", self.default_self_fence_command(node));
        // (The chart's agents read the key from its Secret instead.)
        if !has_flag(extra, "--peer-key-secret") {
            add(
                "--peer-key-file",
                self.peer_key_file()?.display().to_string(),
            );
        }
        if let Some(ip) = self.netns_ip(node) {
            add("--peer-listen", format!("{ip}:{NETNS_PEER_PORT}"));
        } else if !has_flag(extra, "--peer-listen") {
            let port = free_port()?;
            add("--peer-listen", format!("127.0.0.1:{port}"));
        }
        if !has_flag(extra, "--boot-id-file") {
            fs::write(self.boot_id_file(node), format!("{}\n", fresh_boot_id()))?;
            add(
                "--boot-id-file",
                self.boot_id_file(node).display().to_string(),
            );
        }
        // Each cluster keeps its agents' restart state in its own directory
        // (a respawn with the same boot ID is an agent restart on that node).
        add(
            "--state-dir",
            self.dir.join("agent-state").display().to_string(),
        );
        for (flag, value) in SELF_FENCE_TIMINGS {
            add(flag, value.to_string());
        }
        Ok(out)
    }

    /// A kubeconfig like the agents' whose server is `server`.
    pub fn agent_kubeconfig_via(&self, name: &str, server: &str) -> Result<PathBuf> {
        let base = fs::read_to_string(self.agent_kubeconfig()?)?;
        let line = base
            .lines()
            .find(|l| l.trim_start().starts_with("server:"))
            .context("no server in the agent kubeconfig")?
            .to_string();
        let indent = &line[..line.len() - line.trim_start().len()];
        let path = self.dir.join(format!("agent-{name}.kubeconfig"));
        // Agents start while the next one's kubeconfig is (re)written: a
        // rename makes each reader see the whole file, never a truncated one.
        let tmp = self
            .dir
            .join(format!("agent-{name}.kubeconfig.{}", fresh_boot_id()));
        fs::write(
            &tmp,
            base.replace(&line, &format!("{indent}server: {server}")),
        )?;
        fs::rename(&tmp, &path)?;
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

/// Unix time now, in seconds.
pub fn unix_now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}
