//! Real network partitions: one Linux network namespace per simulated node,
//! in which that node's agent runs (`ip netns exec`), so a partition is cut
//! by the kernel (a link taken down, packets dropped, TCP reset) and the agent
//! sees exactly what it would see on a real node: fast failures as well as
//! hanging connections.
//!
//! ```text
//!   host (kube-apiserver on 0.0.0.0, kwok, tests)
//!     kfe<pid>x<n>h  10.231.K.1/24
//!         |  veth
//!   hub namespace: bridge br0 (no address)
//!         |  veth (n1, n2, ...)
//!   node namespaces: eth0 10.231.K.(10+i)/24, lo
//! ```
//!
//! The bridge lives in a namespace of its own, so no host sysctl, bridge or
//! firewall rule is touched: the host only gets one veth with an address on
//! a private test subnet (10.231.K.0/24, K picked unused). Every node's agent
//! reaches the API server at 10.231.K.1 and its peers at 10.231.K.(10+j).
//! A node is cut off inside its own namespace (`iptables-legacy` there, or its
//! link); its kwok (the kubelet) runs on the host and is stopped by the test
//! at the same moment.
//!
//! Everything is removed when the [`NetLab`] is dropped, also while a failed
//! test unwinds; namespaces left by a test process that was killed are removed
//! by the next one. Needs root (CI runs as root).

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Result, bail};

use super::say;

/// Every name this module creates starts with this.
const PREFIX: &str = "kfe";
/// The agent's `--listen` port inside its namespace.
pub const NETNS_LISTEN_PORT: u16 = 9090;
/// The agent's `--peer-listen` port inside its namespace.
pub const NETNS_PEER_PORT: u16 = 9747;

/// How a node is cut off from the API server and its peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// The node's link goes down: every connect fails at once (no route),
    /// open connections fail on their next write.
    LinkDown,
    /// Every packet in and out is dropped (iptables DROP): connections hang.
    Blackhole,
    /// Every TCP packet in and out is answered with a reset (iptables
    /// REJECT --reject-with tcp-reset), and the connections open at the cut
    /// are reset too (`ss -K`), as a firewall or load balancer that starts
    /// rejecting resets the flows it sees: everything fails at once, and
    /// every watch has to start over.
    TcpReset,
}

impl Cut {
    pub fn name(self) -> &'static str {
        match self {
            Cut::LinkDown => "link down",
            Cut::Blackhole => "blackhole (iptables DROP)",
            Cut::TcpReset => "TCP reset (iptables REJECT --reject-with tcp-reset)",
        }
    }
}

struct NodeNet {
    ns: String,
    ip: String,
    cut: Option<Cut>,
}

/// The namespaces, veths and bridge of one cluster's simulated nodes.
pub struct NetLab {
    /// `kfe<pid>x<n>`: the prefix of every namespace and host interface.
    pub name: String,
    /// The host side's address (the API server is reached there).
    pub host_ip: String,
    hub: String,
    nodes: Mutex<BTreeMap<String, NodeNet>>,
}

/// Run a command; on failure the error names the command and its output.
pub fn sh(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run `{}`: {e}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Namespaces whose name starts with `prefix`.
pub fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    sh(&["ip", "netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// Host interfaces whose name starts with `prefix`.
pub fn host_links_with_prefix(prefix: &str) -> Vec<String> {
    sh(&["ip", "-o", "link", "show"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// Remove the namespaces of test processes that no longer run (a run that
/// was killed before its guards could).
fn sweep_stale() {
    for ns in namespaces_with_prefix(PREFIX) {
        let pid: String = ns[PREFIX.len()..]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        let alive = !pid.is_empty() && std::path::Path::new(&format!("/proc/{pid}")).exists();
        if !alive && sh(&["ip", "netns", "del", &ns]).is_ok() {
            say(format!("removed stale network namespace {ns}"));
        }
    }
}

/// A /24 in 10.231.0.0/16 that no host interface uses yet.
fn free_subnet(seed: u32) -> Result<u8> {
    let used = sh(&["ip", "-o", "-4", "addr", "show"])?;
    for k in 0..250u32 {
        let third = ((seed + k) % 250 + 1) as u8;
        if !used.contains(&format!(" 10.231.{third}.")) {
            return Ok(third);
        }
    }
    bail!("no free /24 in 10.231.0.0/16 on this host")
}

impl NetLab {
    /// Create the hub, the host veth and one namespace for each of `nodes`.
    pub fn new(nodes: &[String]) -> Result<NetLab> {
        static COUNT: AtomicU32 = AtomicU32::new(0);
        sweep_stale();
        let pid = std::process::id();
        let n = COUNT.fetch_add(1, Ordering::SeqCst);
        let name = format!("{PREFIX}{pid}x{n}");
        anyhow::ensure!(name.len() < 15, "interface name {name}h too long");
        let third = free_subnet(pid.wrapping_mul(7).wrapping_add(n))?;
        let lab = NetLab {
            hub: format!("{name}-hub"),
            host_ip: format!("10.231.{third}.1"),
            name: name.clone(),
            nodes: Mutex::new(BTreeMap::new()),
        };
        // From here on, dropping `lab` removes what was made.
        let hub = lab.hub.as_str();
        let host_if = format!("{name}h");
        sh(&["ip", "netns", "add", hub])?;
        sh(&["ip", "-n", hub, "link", "set", "lo", "up"])?;
        sh(&["ip", "-n", hub, "link", "add", "br0", "type", "bridge"])?;
        sh(&["ip", "-n", hub, "link", "set", "br0", "up"])?;
        sh(&[
            "ip", "link", "add", &host_if, "type", "veth", "peer", "name", "up0", "netns", hub,
        ])?;
        sh(&["ip", "-n", hub, "link", "set", "up0", "master", "br0"])?;
        sh(&["ip", "-n", hub, "link", "set", "up0", "up"])?;
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", lab.host_ip),
            "dev",
            &host_if,
        ])?;
        sh(&["ip", "link", "set", &host_if, "up"])?;
        for (i, node) in nodes.iter().enumerate() {
            let ns = format!("{name}-{node}");
            let ip = format!("10.231.{third}.{}", 11 + i);
            let port = format!("n{}", i + 1);
            sh(&["ip", "netns", "add", &ns])?;
            lab.nodes.lock().unwrap().insert(
                node.clone(),
                NodeNet {
                    ns: ns.clone(),
                    ip: ip.clone(),
                    cut: None,
                },
            );
            sh(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
            sh(&[
                "ip", "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &port,
                "netns", hub,
            ])?;
            sh(&["ip", "-n", hub, "link", "set", &port, "master", "br0"])?;
            sh(&["ip", "-n", hub, "link", "set", &port, "up"])?;
            sh(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                "eth0",
            ])?;
            sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
        }
        say(format!(
            "network namespaces {name}-*: host {}, {}",
            lab.host_ip,
            lab.nodes
                .lock()
                .unwrap()
                .iter()
                .map(|(n, v)| format!("{n} {}", v.ip))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        Ok(lab)
    }

    /// The namespace and address of `node`, if it has one.
    pub fn node(&self, node: &str) -> Option<(String, String)> {
        self.nodes
            .lock()
            .unwrap()
            .get(node)
            .map(|n| (n.ns.clone(), n.ip.clone()))
    }

    fn ns_of(&self, node: &str) -> Result<String> {
        match self.node(node) {
            Some((ns, _)) => Ok(ns),
            None => bail!("{node} has no network namespace"),
        }
    }

    fn iptables(ns: &str, rule: &[&str]) -> Result<()> {
        let mut args = vec!["ip", "netns", "exec", ns, "iptables-legacy", "-w"];
        args.extend_from_slice(rule);
        sh(&args).map(|_| ())
    }

    /// The namespaces' subnet (`10.231.K.0/24`).
    pub fn subnet(&self) -> String {
        let net = self.host_ip.rsplit_once('.').map_or("", |(n, _)| n);
        format!("{net}.0/24")
    }

    /// Cut `node` off from the API server and every peer.
    pub fn cut(&self, node: &str, how: Cut) -> Result<()> {
        let ns = self.ns_of(node)?;
        match how {
            Cut::LinkDown => {
                sh(&["ip", "-n", &ns, "link", "set", "eth0", "down"])?;
            }
            Cut::Blackhole => {
                Self::iptables(&ns, &["-I", "INPUT", "!", "-i", "lo", "-j", "DROP"])?;
                Self::iptables(&ns, &["-I", "OUTPUT", "!", "-o", "lo", "-j", "DROP"])?;
            }
            Cut::TcpReset => {
                for (chain, dir) in [("INPUT", "-i"), ("OUTPUT", "-o")] {
                    Self::iptables(
                        &ns,
                        &[
                            "-I",
                            chain,
                            "!",
                            dir,
                            "lo",
                            "-p",
                            "tcp",
                            "-j",
                            "REJECT",
                            "--reject-with",
                            "tcp-reset",
                        ],
                    )?;
                }
                sh(&[
                    "ip",
                    "netns",
                    "exec",
                    &ns,
                    "ss",
                    "-K",
                    "-t",
                    "dst",
                    &self.subnet(),
                ])?;
            }
        }
        if let Some(n) = self.nodes.lock().unwrap().get_mut(node) {
            n.cut = Some(how);
        }
        say(format!("{node} cut off: {}", how.name()));
        Ok(())
    }

    /// Cut `node` off from the API server only (`port` on the host side),
    /// with TCP resets; its peers stay reachable. Undone by [`NetLab::heal`].
    pub fn cut_api(&self, node: &str, port: u16) -> Result<()> {
        let ns = self.ns_of(node)?;
        let port = port.to_string();
        Self::iptables(
            &ns,
            &[
                "-I",
                "OUTPUT",
                "-d",
                &self.host_ip,
                "-p",
                "tcp",
                "--dport",
                &port,
                "-j",
                "REJECT",
                "--reject-with",
                "tcp-reset",
            ],
        )?;
        if let Some(n) = self.nodes.lock().unwrap().get_mut(node) {
            n.cut = Some(Cut::TcpReset);
        }
        say(format!("{node} cut off from the API server (TCP reset)"));
        Ok(())
    }

    /// Undo [`NetLab::cut`].
    pub fn heal(&self, node: &str) -> Result<()> {
        let ns = self.ns_of(node)?;
        let how = self
            .nodes
            .lock()
            .unwrap()
            .get_mut(node)
            .and_then(|n| n.cut.take());
        match how {
            None => {}
            Some(Cut::LinkDown) => {
                sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
            }
            Some(Cut::Blackhole | Cut::TcpReset) => {
                Self::iptables(&ns, &["-F", "INPUT"])?;
                Self::iptables(&ns, &["-F", "OUTPUT"])?;
            }
        }
        say(format!("{node} healed"));
        Ok(())
    }

    /// The iptables rules in the namespace of `node` (`iptables -S`).
    pub fn rules(&self, node: &str) -> Result<String> {
        let ns = self.ns_of(node)?;
        sh(&["ip", "netns", "exec", &ns, "iptables-legacy", "-w", "-S"])
    }

    /// A command that runs `program` inside the namespace of `node`.
    pub fn command(&self, node: &str, program: &std::path::Path) -> Result<Command> {
        let ns = self.ns_of(node)?;
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &ns]).arg(program);
        Ok(c)
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        // Node namespaces first (their rules and veths go with them), then
        // the hub (its bridge and the host veth go with it).
        let mut names: Vec<String> = self
            .nodes
            .lock()
            .map(|n| n.values().map(|v| v.ns.clone()).collect())
            .unwrap_or_default();
        names.push(self.hub.clone());
        for ns in names {
            if let Err(e) = sh(&["ip", "netns", "del", &ns])
                && namespaces_with_prefix(&ns).contains(&ns)
            {
                eprintln!("warning: {e:#}");
            }
        }
        // The kernel destroys a deleted namespace's interfaces asynchronously.
        let (mut left_ns, mut left_links) = (vec![], vec![]);
        for _ in 0..50 {
            left_ns = namespaces_with_prefix(&format!("{}-", self.name));
            left_links = host_links_with_prefix(&self.name);
            if left_ns.is_empty() && left_links.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        if left_ns.is_empty() && left_links.is_empty() {
            say(format!("network namespaces {}-* removed", self.name));
        } else {
            eprintln!("warning: left behind: namespaces {left_ns:?}, host links {left_links:?}");
        }
    }
}
