//! What a failed check prints about a real-node cluster.

use std::fs;

use super::{NS, RealCluster, glob};

/// Every line indented by four spaces.
fn indent(s: String) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect::<String>()
}

/// The last `n` lines of `s`, indented, each cut to `width` characters.
fn tail(s: &str, n: usize, width: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| format!("    {}\n", l.chars().take(width).collect::<String>()))
        .collect::<String>()
}

impl RealCluster {
    /// What a failed check prints: nodes, pods, leases, agent pods, the
    /// ends of the nodes' logs and watchdogs, events.
    pub fn diagnose(&self) {
        if !self.kubeconfig().exists() {
            return;
        }
        let kc = |args: &[&str]| self.kubectl(args).unwrap_or_else(|e| format!("{e:#}"));
        self.diagnose_nodes();
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
        for node in glob(&self.dir.join("nodes"), "", "") {
            let name = node
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if !node.join("realnode").exists() {
                continue;
            }
            self.diagnose_node_logs(&name);
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

    /// The nodes, with their cordon, taints and fencing record.
    fn diagnose_nodes(&self) {
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
    }

    /// The ends of a real node's agent, kubelet, containerd and init logs
    /// and of its watchdog's.
    fn diagnose_node_logs(&self, name: &str) {
        let node = self.dir.join("nodes").join(name);
        let agent = self.agent_log(name);
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
}
