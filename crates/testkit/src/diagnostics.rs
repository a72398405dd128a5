//! What a failed test prints: nodes, pods, Events and the tail of every log.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::*;

impl Cluster {
    /// Print nodes (taints, cordon, kube-fencer annotations, Ready), pods
    /// (node, phase, deletion timestamp), recent events and the tail of each
    /// agent's log.
    pub fn dump_state(&self) {
        let mut out = String::new();
        out.push_str("\n==================== cluster state ====================\n");
        let sections: [(&str, Vec<&str>); 4] = [
            (
                "nodes",
                vec![
                    "get",
                    "nodes",
                    "-o",
                    "custom-columns=NAME:.metadata.name,READY:.status.conditions[?(@.type==\"Ready\")].status,UNSCHEDULABLE:.spec.unschedulable,TAINTS:.spec.taints[*].key,STATE:.metadata.annotations.kube-fencer\\.io/state",
                ],
            ),
            (
                "node annotations",
                vec![
                    "get",
                    "nodes",
                    "-o",
                    "jsonpath={range .items[*]}{.metadata.name}{\"\\t\"}{.metadata.annotations}{\"\\n\"}{end}",
                ],
            ),
            (
                "pods",
                vec![
                    "get",
                    "pods",
                    "-A",
                    "-o",
                    "custom-columns=NAMESPACE:.metadata.namespace,NAME:.metadata.name,NODE:.spec.nodeName,PHASE:.status.phase,DELETION:.metadata.deletionTimestamp,UID:.metadata.uid",
                ],
            ),
            (
                "leases",
                vec![
                    "get",
                    "leases",
                    "-A",
                    "-o",
                    "custom-columns=NAMESPACE:.metadata.namespace,NAME:.metadata.name,HOLDER:.spec.holderIdentity,RENEWED:.spec.renewTime",
                ],
            ),
        ];
        for (title, args) in sections {
            out.push_str(&format!("--- {title}\n"));
            match self.kubectl(args) {
                Ok(s) => out.push_str(&s),
                Err(e) => out.push_str(&format!("(kubectl failed: {e:#})\n")),
            }
        }
        out.push_str("--- recent events\n");
        match self.kubectl([
            "get",
            "events",
            "-A",
            "--sort-by=.lastTimestamp",
            "-o",
            "custom-columns=LAST:.lastTimestamp,NS:.metadata.namespace,OBJECT:.involvedObject.name,REASON:.reason,SOURCE:.source.component,MESSAGE:.message",
        ]) {
            Ok(s) => {
                let lines: Vec<&str> = s.lines().collect();
                for l in &lines[lines.len().saturating_sub(40)..] {
                    out.push_str(l);
                    out.push('\n');
                }
            }
            Err(e) => out.push_str(&format!("(kubectl failed: {e:#})\n")),
        }
        let mut logs: Vec<PathBuf> = fs::read_dir(self.dir.join("logs"))
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        logs.sort();
        for path in logs {
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if !name.starts_with("agent-") {
                continue;
            }
            out.push_str(&format!("--- tail of {name}\n"));
            out.push_str(&tail(&path, 30));
        }
        out.push_str(&format!(
            "--- all logs: {}\n=======================================================\n",
            self.dir.join("logs").display()
        ));
        eprintln!("{out}");
    }
}

fn tail(path: &Path, n: usize) -> String {
    let Ok(f) = fs::File::open(path) else {
        return String::from("(unreadable)\n");
    };
    let lines: Vec<String> = BufReader::new(f).lines().map_while(|l| l.ok()).collect();
    let mut s = String::new();
    for l in &lines[lines.len().saturating_sub(n)..] {
        s.push_str(l);
        s.push('\n');
    }
    s
}
