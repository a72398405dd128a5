//! What the tests read of a real-node cluster: logs on the nodes' disks,
//! Nodes, agent pods, the leader, pods, an agent's /metrics, processes.

use std::fs;
use std::process::Command;

use anyhow::{Result, bail};
use serde_json::Value;

use super::{NS, RealCluster, glob, has_taint, pod_ready, run};

impl RealCluster {
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

    /// The annotation `key` of the node's permit object (the Lease
    /// `kube-fencer-permit-<node>`) as JSON, or null.
    pub fn permit_annotation(&self, node: &str, key: &str) -> Value {
        self.kubectl_json(&[
            "-n",
            super::NS,
            "get",
            "lease",
            &format!("kube-fencer-permit-{node}"),
        ])
        .ok()
        .and_then(|l| {
            l["metadata"]["annotations"][key]
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
}
