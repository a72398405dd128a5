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
//! The cuts are one implementation for these namespaces and for real nodes
//! (harness/realnode.sh: kubelet, containerd and kube-proxy in a network
//! namespace per node, [`NodeNs::RealNode`]): [`cut_node`] and [`heal_node`]
//! act on the node's `eth0`, the link taken down or the rules put in a chain
//! of their own (`KF-CUT`) jumped to first from INPUT, FORWARD (a real node's
//! pods are behind it) and OUTPUT, ahead of kube-proxy's; a heal removes
//! exactly those rules and puts back the routes a link-down cut took away.
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
    /// Every packet in and out is rejected, TCP with a reset and anything
    /// else with an ICMP port unreachable, and those answers themselves get
    /// out: a connection from a peer to the node (or through it, to its
    /// pods) is refused at once, not left to time out.
    Reject,
}

impl Cut {
    pub fn name(self) -> &'static str {
        match self {
            Cut::LinkDown => "link down",
            Cut::Blackhole => "blackhole (iptables DROP)",
            Cut::TcpReset => "TCP reset (iptables REJECT --reject-with tcp-reset)",
            Cut::Reject => "reject (iptables REJECT: TCP reset, ICMP port unreachable)",
        }
    }
}

/// The node's link to everything else, in its namespace.
const UPLINK: &str = "eth0";
/// The chain every cut's rules are in; the jumps to it are tagged
/// [`CUT_TAG`], so a heal removes exactly what the cut added (a real node's
/// kube-proxy has rules of its own in the same chains).
const CUT_CHAIN: &str = "KF-CUT";
const CUT_TAG: &str = "kube-fencer-cut";

/// The network namespace of a node, and how to run a command in it.
#[derive(Clone, Debug)]
pub enum NodeNs {
    /// A namespace of [`NetLab`] (`ip netns exec NS`), in which a simulated
    /// node's agent runs.
    Netns(String),
    /// A real node's (harness/realnode.sh): while its init runs, its network
    /// and mount namespaces (`nsenter -t PID -m -n`), so that iptables takes
    /// the same lock file (`/run/xtables.lock` of the node's own `/run`) as
    /// its kube-proxy; when it is off, its network namespace only.
    RealNode {
        netns: String,
        init_pid_file: std::path::PathBuf,
    },
}

impl NodeNs {
    /// The command prefix that runs a program in the namespace.
    fn prefix(&self) -> Vec<String> {
        match self {
            NodeNs::Netns(ns) => ["ip", "netns", "exec", ns].map(String::from).to_vec(),
            NodeNs::RealNode {
                netns,
                init_pid_file,
            } => {
                let pid = std::fs::read_to_string(init_pid_file)
                    .ok()
                    .map(|p| p.trim().to_string())
                    .filter(|p| {
                        !p.is_empty() && std::path::Path::new(&format!("/proc/{p}")).exists()
                    });
                match pid {
                    Some(pid) => ["nsenter", "-t", &pid, "-m", "-n", "--"]
                        .map(String::from)
                        .to_vec(),
                    None => vec![
                        "nsenter".to_string(),
                        format!("--net=/run/netns/{netns}"),
                        "--".to_string(),
                    ],
                }
            }
        }
    }

    /// Run `cmd` in the namespace; stdout, or an error naming the command.
    pub fn run(&self, cmd: &[&str]) -> Result<String> {
        let prefix = self.prefix();
        let mut args: Vec<&str> = prefix.iter().map(String::as_str).collect();
        args.extend_from_slice(cmd);
        sh(&args)
    }

    fn iptables(&self, rule: &[&str]) -> Result<()> {
        let mut args = vec!["iptables-legacy", "-w"];
        args.extend_from_slice(rule);
        self.run(&args).map(|_| ())
    }

    /// The chain [`CUT_CHAIN`], jumped to first from INPUT, FORWARD and
    /// OUTPUT (FORWARD: a real node's pods are behind it), holding `rules`.
    fn cut_chain(&self, rules: &[&[&str]]) -> Result<()> {
        self.iptables(&["-N", CUT_CHAIN])?;
        for rule in rules {
            let mut r = vec!["-A", CUT_CHAIN];
            r.extend_from_slice(rule);
            self.iptables(&r)?;
        }
        for chain in ["INPUT", "FORWARD", "OUTPUT"] {
            self.iptables(&[
                "-I",
                chain,
                "1",
                "-m",
                "comment",
                "--comment",
                CUT_TAG,
                "-j",
                CUT_CHAIN,
            ])?;
        }
        Ok(())
    }

    /// Remove the jumps tagged [`CUT_TAG`] and the chain [`CUT_CHAIN`].
    fn remove_cut_rules(&self) -> Result<()> {
        let rules = self.run(&["iptables-legacy", "-w", "-S"])?;
        for rule in rules.lines().filter(|l| l.contains(CUT_TAG)) {
            let Some(rest) = rule.strip_prefix("-A ") else {
                continue;
            };
            let mut args = vec!["-D"];
            args.extend(rest.split_whitespace().map(|w| w.trim_matches('"')));
            self.iptables(&args)?;
        }
        if rules.lines().any(|l| l == format!("-N {CUT_CHAIN}")) {
            self.iptables(&["-F", CUT_CHAIN])?;
            self.iptables(&["-X", CUT_CHAIN])?;
        }
        Ok(())
    }
}

/// A cut in place: how, and the routes a link-down cut took away.
#[derive(Debug)]
pub struct CutState {
    pub how: Cut,
    routes: Vec<String>,
}

/// Cut the node of namespace `ns` off on its link `eth0` (its processes
/// keep running). `reset_dst`: for [`Cut::TcpReset`], the subnet whose open
/// connections are reset at once.
pub fn cut_node(ns: &NodeNs, how: Cut, reset_dst: &str) -> Result<CutState> {
    let mut routes = vec![];
    match how {
        Cut::LinkDown => {
            // The kernel forgets the link's routes when it goes down; the
            // heal puts back what it does not make itself.
            routes = ns
                .run(&["ip", "route", "show"])?
                .lines()
                .filter(|r| !r.contains("proto kernel"))
                .map(|r| r.replace(" linkdown", "").trim().to_string())
                .filter(|r| !r.is_empty())
                .collect();
            ns.run(&["ip", "link", "set", UPLINK, "down"])?;
        }
        Cut::Blackhole => {
            ns.cut_chain(&[&["-i", UPLINK, "-j", "DROP"], &["-o", UPLINK, "-j", "DROP"]])?;
        }
        Cut::TcpReset => {
            let reset = ["-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"];
            let mut rule_in = vec!["-i", UPLINK];
            rule_in.extend_from_slice(&reset);
            let mut rule_out = vec!["-o", UPLINK];
            rule_out.extend_from_slice(&reset);
            ns.cut_chain(&[&rule_in, &rule_out])?;
            ns.run(&["ss", "-K", "-t", "dst", reset_dst])?;
        }
        Cut::Reject => {
            ns.cut_chain(&[
                // The resets and ICMP errors REJECT sends go out through
                // OUTPUT too.
                &[
                    "-o",
                    UPLINK,
                    "-p",
                    "tcp",
                    "--tcp-flags",
                    "RST",
                    "RST",
                    "-j",
                    "RETURN",
                ],
                &[
                    "-o",
                    UPLINK,
                    "-p",
                    "icmp",
                    "--icmp-type",
                    "destination-unreachable",
                    "-j",
                    "RETURN",
                ],
                &[
                    "-i",
                    UPLINK,
                    "-p",
                    "tcp",
                    "-j",
                    "REJECT",
                    "--reject-with",
                    "tcp-reset",
                ],
                &[
                    "-o",
                    UPLINK,
                    "-p",
                    "tcp",
                    "-j",
                    "REJECT",
                    "--reject-with",
                    "tcp-reset",
                ],
                &["-i", UPLINK, "-j", "REJECT"],
                &["-o", UPLINK, "-j", "REJECT"],
            ])?;
        }
    }
    Ok(CutState { how, routes })
}

/// Cut the node of namespace `ns` off from the API server only (TCP to
/// `api_ip:port`, with resets); its peers stay reachable.
pub fn cut_node_from_api(ns: &NodeNs, api_ip: &str, port: u16) -> Result<CutState> {
    let port = port.to_string();
    ns.cut_chain(&[&[
        "-d",
        api_ip,
        "-p",
        "tcp",
        "--dport",
        &port,
        "-j",
        "REJECT",
        "--reject-with",
        "tcp-reset",
    ]])?;
    Ok(CutState {
        how: Cut::TcpReset,
        routes: vec![],
    })
}

/// Drop every TCP packet to or from `port` (the peer port) in `ns`: its
/// peers' renewals and questions neither reach it nor leave it; the API
/// server stays reachable.
pub fn cut_node_from_peers(ns: &NodeNs, port: u16) -> Result<CutState> {
    let port = port.to_string();
    ns.cut_chain(&[
        &["-p", "tcp", "--dport", &port, "-j", "DROP"],
        &["-p", "tcp", "--sport", &port, "-j", "DROP"],
    ])?;
    Ok(CutState {
        how: Cut::Blackhole,
        routes: vec![],
    })
}

/// Undo [`cut_node`], [`cut_node_from_api`] or [`cut_node_from_peers`].
pub fn heal_node(ns: &NodeNs, cut: CutState) -> Result<()> {
    match cut.how {
        Cut::LinkDown => {
            ns.run(&["ip", "link", "set", UPLINK, "up"])?;
            for route in &cut.routes {
                let mut args = vec!["ip", "route", "replace"];
                args.extend(route.split_whitespace());
                ns.run(&args)?;
            }
        }
        Cut::Blackhole | Cut::TcpReset | Cut::Reject => ns.remove_cut_rules()?,
    }
    Ok(())
}

struct NodeNet {
    ns: String,
    ip: String,
    cut: Option<CutState>,
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
        // Scenarios run concurrently: a subnet is chosen and taken (the
        // host veth's address) under one lock, so two labs never pick the
        // same one.
        static SUBNET: Mutex<()> = Mutex::new(());
        let choosing = SUBNET.lock().unwrap_or_else(|e| e.into_inner());
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
        drop(choosing);
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

    /// The namespaces' subnet (`10.231.K.0/24`).
    pub fn subnet(&self) -> String {
        let net = self.host_ip.rsplit_once('.').map_or("", |(n, _)| n);
        format!("{net}.0/24")
    }

    /// Cut `node` off from the API server and every peer.
    pub fn cut(&self, node: &str, how: Cut) -> Result<()> {
        let ns = NodeNs::Netns(self.ns_of(node)?);
        let state = cut_node(&ns, how, &self.subnet())?;
        if let Some(n) = self.nodes.lock().unwrap().get_mut(node) {
            n.cut = Some(state);
        }
        say(format!("{node} cut off: {}", how.name()));
        Ok(())
    }

    /// Cut `node` off from the API server only (`port` on the host side),
    /// with TCP resets; its peers stay reachable. Undone by [`NetLab::heal`].
    pub fn cut_api(&self, node: &str, port: u16) -> Result<()> {
        let ns = NodeNs::Netns(self.ns_of(node)?);
        let state = cut_node_from_api(&ns, &self.host_ip, port)?;
        if let Some(n) = self.nodes.lock().unwrap().get_mut(node) {
            n.cut = Some(state);
        }
        say(format!("{node} cut off from the API server (TCP reset)"));
        Ok(())
    }

    /// Cut `node` off from its peers only (TCP `port`, both ways, dropped);
    /// the API server stays reachable. Undone by [`NetLab::heal`].
    pub fn cut_peers(&self, node: &str, port: u16) -> Result<()> {
        let ns = NodeNs::Netns(self.ns_of(node)?);
        let state = cut_node_from_peers(&ns, port)?;
        if let Some(n) = self.nodes.lock().unwrap().get_mut(node) {
            n.cut = Some(state);
        }
        say(format!(
            "{node} cut off from its peers (TCP {port} dropped)"
        ));
        Ok(())
    }

    /// Undo [`NetLab::cut`].
    pub fn heal(&self, node: &str) -> Result<()> {
        let ns = NodeNs::Netns(self.ns_of(node)?);
        let cut = self
            .nodes
            .lock()
            .unwrap()
            .get_mut(node)
            .and_then(|n| n.cut.take());
        if let Some(cut) = cut {
            heal_node(&ns, cut)?;
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
