//! The leader's view, published for `kube-fencer status`: a small JSON
//! document in the leader Lease's `kube-fencer.io/leader-status` annotation,
//! written with the Lease renewals the leader makes anyway (no extra
//! request). It holds only what the Node objects do not already say: which
//! nodes the leader judges unhealthy or excluded and why, their safe times
//! with the terms, the storm guard and whether the leader's caches are
//! synced.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::decide::{NodeStatus, Now, Report, SafeTime};

/// Annotation on the leader Lease holding a [`LeaderSummary`].
pub const LEADER_STATUS_ANNOTATION: &str = "kube-fencer.io/leader-status";

/// At most this many nodes are listed (a storm of 5,000 dead nodes must not
/// make the Lease large); the rest are counted in `truncated`.
pub const MAX_NODES: usize = 200;

/// At most this many warnings are listed.
pub const MAX_WARNINGS: usize = 20;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaderSummary {
    /// When the leader made the decision this summarises (RFC 3339).
    pub updated: String,
    /// Whether the leader's Node and Lease caches are synced (unsynced: it
    /// decides nothing).
    pub synced: bool,
    pub storm_guard: GuardSummary,
    /// Nodes that are not simply healthy, by name.
    pub nodes: BTreeMap<String, NodeSummary>,
    /// Nodes left out of `nodes` (beyond [`MAX_NODES`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub truncated: usize,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GuardSummary {
    pub active: bool,
    pub unhealthy: usize,
    pub managed: usize,
    pub allowed: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSummary {
    /// `suspect`, `fencing`, `fenced`, `excluded` or `unmonitored`.
    pub phase: String,
    /// Why it is excluded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excluded_because: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safe_time: Option<SafeTimeSummary>,
    /// Stale, and neither its agent nor a fence command can fence it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub external_fencing_required: bool,
}

/// A safe time on the wall clock, with its terms in seconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SafeTimeSummary {
    /// When the node's pods may be deleted (RFC 3339).
    pub at: String,
    pub heartbeat_seconds: f64,
    pub detect_seconds: f64,
    pub consult_seconds: f64,
    pub watchdog_seconds: f64,
    pub margin_seconds: f64,
}

impl SafeTimeSummary {
    pub fn total_seconds(&self) -> f64 {
        self.heartbeat_seconds
            + self.detect_seconds
            + self.consult_seconds
            + self.watchdog_seconds
            + self.margin_seconds
    }
}

pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s).ok()
}

fn wall(now: Now, at: std::time::Instant) -> SystemTime {
    if at >= now.mono {
        now.wall + (at - now.mono)
    } else {
        now.wall
            .checked_sub(now.mono - at)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

fn safe_time(now: Now, s: &SafeTime) -> SafeTimeSummary {
    // Milliseconds are precision enough for an operator.
    let secs = |d: &Duration| d.as_millis() as f64 / 1000.0;
    SafeTimeSummary {
        at: rfc3339(wall(now, s.at)),
        heartbeat_seconds: secs(&s.heartbeat),
        detect_seconds: secs(&s.detect),
        consult_seconds: secs(&s.consult),
        watchdog_seconds: secs(&s.watchdog),
        margin_seconds: secs(&s.margin),
    }
}

impl LeaderSummary {
    /// The summary of one decision's report, made at `now`.
    pub fn from_report(report: &Report, now: Now) -> LeaderSummary {
        let mut nodes = BTreeMap::new();
        let mut truncated = 0;
        // Fencing and fenced nodes first, so a cap never hides them.
        let rank = |s: &NodeStatus| match s {
            NodeStatus::Fencing | NodeStatus::Fenced => 0,
            NodeStatus::Suspect => 1,
            _ => 2,
        };
        let mut listed: Vec<(&String, &NodeStatus)> = report
            .nodes
            .iter()
            .filter(|(_, s)| **s != NodeStatus::Healthy)
            .collect();
        listed.sort_by_key(|(n, s)| (rank(s), n.as_str()));
        for (name, status) in listed {
            if nodes.len() == MAX_NODES {
                truncated += 1;
                continue;
            }
            nodes.insert(
                name.clone(),
                NodeSummary {
                    phase: status.as_label().to_string(),
                    excluded_because: match status {
                        NodeStatus::Excluded(why) => Some(why.clone()),
                        _ => None,
                    },
                    safe_time: report.safe_times.get(name).map(|s| safe_time(now, s)),
                    external_fencing_required: report.external_fencing_required.contains(name),
                },
            );
        }
        let g = &report.storm_guard;
        LeaderSummary {
            updated: rfc3339(now.wall),
            synced: report.synced,
            storm_guard: GuardSummary {
                active: g.active,
                unhealthy: g.unhealthy,
                managed: g.managed,
                allowed: g.allowed,
            },
            nodes,
            truncated,
            warnings: report
                .warnings
                .iter()
                .take(MAX_WARNINGS)
                .map(|w| match &w.node {
                    Some(n) => format!("{n}: {}", w.message),
                    None => w.message.clone(),
                })
                .collect(),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::{StormGuard, Warning};
    use std::time::Instant;

    fn report() -> Report {
        Report {
            synced: true,
            nodes: BTreeMap::new(),
            storm_guard: StormGuard {
                active: false,
                unhealthy: 1,
                managed: 3,
                allowed: 1,
            },
            warnings: vec![Warning {
                node: Some("n2".into()),
                message: "cannot be fenced".into(),
            }],
            next_wakeup: None,
            safe_times: BTreeMap::new(),
            external_fencing_required: vec![],
        }
    }

    #[test]
    fn lists_unhealthy_nodes_with_their_safe_time_on_the_wall_clock() {
        let mono = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let now = Now { mono, wall };
        let mut r = report();
        r.nodes.insert("n0".into(), NodeStatus::Healthy);
        r.nodes.insert("n1".into(), NodeStatus::Fencing);
        r.nodes.insert("n2".into(), NodeStatus::Suspect);
        r.nodes
            .insert("cp".into(), NodeStatus::Excluded("control plane".into()));
        r.external_fencing_required.push("n2".into());
        r.safe_times.insert(
            "n1".into(),
            SafeTime {
                at: mono + Duration::from_secs(20),
                heartbeat: Duration::from_secs(10),
                detect: Duration::from_secs(17),
                consult: Duration::from_secs(9),
                watchdog: Duration::from_secs(10),
                margin: Duration::from_secs(5),
            },
        );
        let s = LeaderSummary::from_report(&r, now);
        assert_eq!(
            s.nodes.keys().collect::<Vec<_>>(),
            vec!["cp", "n1", "n2"],
            "healthy nodes are not listed"
        );
        let n1 = &s.nodes["n1"];
        assert_eq!(n1.phase, "fencing");
        let st = n1.safe_time.as_ref().unwrap();
        assert_eq!(st.at, "2027-01-15T08:00:20Z");
        assert_eq!(st.total_seconds(), 51.0);
        assert!(s.nodes["n2"].external_fencing_required);
        assert_eq!(
            s.nodes["cp"].excluded_because.as_deref(),
            Some("control plane")
        );
        assert_eq!(s.warnings, vec!["n2: cannot be fenced"]);
        let back: LeaderSummary = serde_json::from_str(&s.to_json()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn a_storm_is_capped_and_never_hides_a_fencing_node() {
        let now = Now {
            mono: Instant::now(),
            wall: SystemTime::now(),
        };
        let mut r = report();
        for i in 0..(MAX_NODES + 50) {
            r.nodes.insert(format!("a{i:04}"), NodeStatus::Suspect);
        }
        r.nodes.insert("z-fencing".into(), NodeStatus::Fencing);
        let s = LeaderSummary::from_report(&r, now);
        assert_eq!(s.nodes.len(), MAX_NODES);
        assert_eq!(s.truncated, 51);
        assert!(s.nodes.contains_key("z-fencing"));
        assert!(s.to_json().len() < 64 * 1024, "{}", s.to_json().len());
    }
}
