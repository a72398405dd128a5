//! `kube-fencer status` (also `kubectl fencer status`): what kube-fencer
//! sees, for an on-call engineer, with the user's own kubeconfig.
//!
//! - [`summary`]: the leader's view, published on the leader Lease.
//! - this module: the pure part — what the Nodes, their Leases, the leader
//!   Lease, the Events and the pods say, put together at an injected `now`,
//!   and rendered as a table, a timeline or JSON.
//! - [`cli`]: reads those objects and prints.

pub mod cli;
pub mod summary;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::decide::permit::object::PermitState;
use crate::decide::{NodeFacts, RecordState};
use summary::{LeaderSummary, SafeTimeSummary, parse_rfc3339, rfc3339};

/// The leader Lease as read.
#[derive(Clone, Debug, Default)]
pub struct LeaderLease {
    pub holder: Option<String>,
    pub renewed: Option<SystemTime>,
    pub duration: Duration,
    /// The `kube-fencer.io/leader-status` annotation, parsed (or why not).
    pub summary: Option<Result<LeaderSummary, String>>,
}

/// One kube-fencer Event about a node.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeEvent {
    pub time: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub reason: String,
    pub message: String,
    #[serde(skip)]
    pub at: SystemTime,
}

/// Everything `status` reads, at `now`.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    pub now: Option<SystemTime>,
    pub nodes: Vec<NodeFacts>,
    /// Node → its kubelet Lease's renewTime.
    pub renewals: BTreeMap<String, SystemTime>,
    pub leader: LeaderLease,
    /// Node → kube-fencer's Events about it, oldest first.
    pub events: BTreeMap<String, Vec<NodeEvent>>,
    /// Node → its StatefulSet pods (`namespace/name`), read for nodes being
    /// fenced only.
    pub pods: BTreeMap<String, Vec<String>>,
    /// Node → its permit object (`kube-fencer-permit-NODE`), where it has
    /// one.
    pub permits: BTreeMap<String, PermitState>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub leader: LeaderView,
    pub storm_guard: Option<summary::GuardSummary>,
    pub nodes: Vec<NodeRow>,
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaderView {
    pub identity: Option<String>,
    /// Seconds since the leader last renewed its Lease.
    pub renewed_seconds_ago: Option<u64>,
    /// Renewed within its lease duration.
    pub current: bool,
    /// The leader's caches are synced (from its summary).
    pub synced: Option<bool>,
    /// Seconds since the leader's summary was written.
    pub summary_age_seconds: Option<u64>,
    /// Why the leader's view is missing or not to be trusted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRow {
    pub name: String,
    /// healthy, suspect, fencing, fenced, excluded, unmonitored — the
    /// leader's judgement; from the node's record when the leader's view is
    /// missing (then `unknown` for a node without one).
    pub phase: String,
    /// When the current fencing phase began (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since_seconds_ago: Option<u64>,
    /// Seconds since the kubelet last renewed the node's Lease.
    pub heartbeat_age_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub safe_time: Option<SafeTimeView>,
    pub fencing: Capability,
    /// Why the node is excluded, or cannot be fenced automatically.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// kube-fencer's latest Event about the node: the last decision and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_decision: Option<NodeEvent>,
    /// StatefulSet pods still bound to a node being fenced.
    pub awaiting_recovery: Vec<String>,
    /// Whether the node's agent holds a permit from its peers, as its
    /// latest permit Event said (`PermitUnavailable`, `PermitHeld`); `None`
    /// when it said nothing (it holds one, or runs without a peer key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permit: Option<PermitView>,
    /// What the node's permit object says; `None` without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permit_object: Option<PermitObjectView>,
}

/// A node's permit object, as `status` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PermitObjectView {
    /// Its agent armed its watchdog under the permit in the node's current
    /// boot (only then does a revocation prove anything about this boot).
    pub armed: bool,
    /// The leader revoked it: its grantors stopped granting it, and its
    /// renewals through the API server are refused.
    pub revoked: bool,
    /// Its fencing number (the last fencing's, or the one under way).
    pub fencing_number: u64,
    /// The grantors of each listed set, newest last (more than one while
    /// an older set retires).
    pub grantor_sets: Vec<Vec<String>>,
    /// Its renewals through the API server (the degraded mode), if any.
    pub api_renewals: u64,
    /// Its grantors that report it silent: they have not granted it for
    /// three renewal intervals.
    pub reported_silent_by: Vec<String>,
}

fn permit_object(
    node: &NodeFacts,
    permits: &BTreeMap<String, PermitState>,
) -> Option<PermitObjectView> {
    let p = permits.get(&node.name)?;
    let grantor_sets: Vec<Vec<String>> = p
        .sets
        .iter()
        .map(|s| s.grantors.iter().map(|g| g.node.clone()).collect())
        .collect();
    let reported_silent_by = grantor_sets
        .iter()
        .flatten()
        .filter(|g| {
            permits
                .get(*g)
                .is_some_and(|o| o.silent.contains_key(&node.name))
        })
        .cloned()
        .collect::<std::collections::BTreeSet<String>>()
        .into_iter()
        .collect();
    let revocation = p.revocation.unwrap_or_default();
    Some(PermitObjectView {
        armed: p.armed_in(node.boot_id()),
        revoked: revocation.revoked,
        fencing_number: revocation.fencing,
        grantor_sets,
        api_renewals: match &p.renewal {
            Ok(Some(r)) => r.count,
            _ => 0,
        },
        reported_silent_by,
    })
}

impl PermitObjectView {
    /// The table's PERMIT cell.
    fn cell(&self) -> String {
        let mut cell = if self.revoked {
            format!("REVOKED #{}", self.fencing_number)
        } else if self.armed {
            "armed".to_string()
        } else {
            "not armed".to_string()
        };
        if !self.reported_silent_by.is_empty() {
            cell.push_str(&format!(", {} silent", self.reported_silent_by.len()));
        }
        cell
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PermitView {
    pub held: bool,
    /// When the agent said so (RFC 3339).
    pub since: String,
    pub message: String,
}

/// The agent's reports about its permit are Events of these reasons; they
/// are not the leader's decisions.
const PERMIT_REASONS: [&str; 2] = ["PermitUnavailable", "PermitHeld"];

fn permit_view(events: &[NodeEvent]) -> Option<PermitView> {
    let e = events
        .iter()
        .rev()
        .find(|e| PERMIT_REASONS.contains(&e.reason.as_str()))?;
    Some(PermitView {
        held: e.reason == "PermitHeld",
        since: e.time.clone(),
        message: e.message.clone(),
    })
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SafeTimeView {
    pub at: String,
    /// Seconds until then (0 once passed).
    pub remaining_seconds: u64,
    pub terms: SafeTimeSummary,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Capability {
    /// watchdog, sysrq-reboot, exec, none — or `-` without an advertisement.
    pub self_fence: String,
    pub watchdog_timeout_seconds: Option<u64>,
    /// The advertisement is from the node's current boot (as the kubelet
    /// reports it) and promises self-fencing.
    pub current: bool,
    /// Why the node cannot be trusted to fence itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub because: Option<String>,
}

fn age(now: SystemTime, t: SystemTime) -> u64 {
    now.duration_since(t).unwrap_or_default().as_secs()
}

fn capability(f: &NodeFacts) -> Capability {
    let advert = f.agent.valid();
    let checked = f.capable_advert();
    Capability {
        self_fence: advert.map_or("-".to_string(), |a| a.self_fence.as_str().to_string()),
        watchdog_timeout_seconds: advert
            .filter(|a| a.capable())
            .map(|a| a.watchdog_timeout.as_secs()),
        current: checked.is_ok(),
        because: checked.err(),
    }
}

impl Status {
    pub fn build(i: &Inputs) -> Status {
        let now = i.now.unwrap_or_else(SystemTime::now);
        let l = &i.leader;
        let renewed_ago = l.renewed.map(|t| age(now, t));
        let current = l.holder.is_some() && renewed_ago.is_some_and(|a| a <= l.duration.as_secs());
        let (summary, mut problem) = match &l.summary {
            Some(Ok(s)) => (Some(s), None),
            Some(Err(e)) => (
                None,
                Some(format!("the leader's summary is unreadable: {e}")),
            ),
            None => (
                None,
                Some("no leader summary on the leader Lease".to_string()),
            ),
        };
        if l.holder.is_none() {
            problem = Some("no leader: the leader Lease has no holder".to_string());
        } else if !current {
            problem = Some(format!(
                "the leader Lease was last renewed {}s ago (duration {}s): no agent is leading",
                renewed_ago.unwrap_or_default(),
                l.duration.as_secs()
            ));
        }
        let summary_age = summary
            .and_then(|s| parse_rfc3339(&s.updated))
            .map(|t| age(now, t));
        // A summary from an earlier leader, or not refreshed, says nothing now.
        let summary = summary.filter(|_| current);
        let mut nodes: Vec<NodeRow> = i
            .nodes
            .iter()
            .map(|f| {
                let judged = summary.map(|s| s.nodes.get(&f.name));
                let record = f.record.valid();
                let phase = match (judged, record) {
                    (Some(Some(n)), _) => n.phase.clone(),
                    (Some(None), _) => "healthy".to_string(),
                    (None, Some(r)) => r.phase.as_label().to_string(),
                    (None, None) => "unknown".to_string(),
                };
                let since_at = record.map(|r| r.fenced_at.unwrap_or(r.fencing_since));
                let safe_time = judged.flatten().and_then(|n| n.safe_time.clone()).map(|terms| {
                    let at = parse_rfc3339(&terms.at).unwrap_or(now);
                    SafeTimeView {
                        at: terms.at.clone(),
                        remaining_seconds: at
                            .duration_since(now)
                            .map(|d| d.as_secs_f64().ceil() as u64)
                            .unwrap_or(0),
                        terms,
                    }
                });
                let fencing = capability(f);
                let events = i.events.get(&f.name).map_or(&[][..], Vec::as_slice);
                let permit = permit_view(events);
                let permit_object = permit_object(f, &i.permits);
                let note = match (judged.flatten(), &f.record) {
                    (Some(n), _) if n.excluded_because.is_some() => n.excluded_because.clone(),
                    (Some(n), _) if n.external_fencing_required => Some(format!(
                        "cannot be fenced automatically: {}; power it off and set kube-fencer.io/unfence or confirm with --fence-command",
                        fencing.because.clone().unwrap_or_default()
                    )),
                    (_, RecordState::Malformed(why)) => {
                        Some(format!("its kube-fencer.io/state record is unreadable: {why}"))
                    }
                    _ => permit
                        .as_ref()
                        .filter(|p| !p.held)
                        .map(|p| format!("its agent holds no permit from its peers (since {}): {}", p.since, p.message)),
                };
                NodeRow {
                    name: f.name.clone(),
                    phase,
                    since: since_at.map(rfc3339),
                    since_seconds_ago: since_at.map(|t| age(now, t)),
                    heartbeat_age_seconds: i.renewals.get(&f.name).map(|t| age(now, *t)),
                    safe_time,
                    fencing,
                    note,
                    last_decision: events
                        .iter()
                        .rev()
                        .find(|e| !PERMIT_REASONS.contains(&e.reason.as_str()))
                        .cloned(),
                    awaiting_recovery: i.pods.get(&f.name).cloned().unwrap_or_default(),
                    permit,
                    permit_object,
                }
            })
            .collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Status {
            leader: LeaderView {
                identity: l.holder.clone(),
                renewed_seconds_ago: renewed_ago,
                current,
                synced: summary.map(|s| s.synced),
                summary_age_seconds: summary_age,
                problem,
            },
            storm_guard: summary.map(|s| s.storm_guard.clone()),
            nodes,
            warnings: summary.map(|s| s.warnings.clone()).unwrap_or_default(),
        }
    }

    /// Nodes being fenced: the ones whose pods `status` looks up.
    pub fn fencing_nodes(nodes: &[NodeFacts]) -> Vec<String> {
        nodes
            .iter()
            .filter(|f| f.record.valid().is_some())
            .map(|f| f.name.clone())
            .collect()
    }

    /// The kubectl-style table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let l = &self.leader;
        let leader = match (&l.identity, l.current) {
            (Some(id), true) => format!(
                "{id} (renewed {}s ago{})",
                l.renewed_seconds_ago.unwrap_or_default(),
                match l.synced {
                    Some(true) => ", caches synced",
                    Some(false) => ", caches NOT synced: deciding nothing",
                    None => "",
                }
            ),
            _ => "none".to_string(),
        };
        out.push_str(&format!("LEADER       {leader}\n"));
        if let Some(p) = &l.problem {
            out.push_str(&format!("             {p}\n"));
        }
        if let Some(g) = &self.storm_guard {
            out.push_str(&format!(
                "STORM GUARD  {} ({} of {} managed nodes unhealthy, at most {} allowed)\n",
                if g.active {
                    "ACTIVE: no new fencing"
                } else {
                    "off"
                },
                g.unhealthy,
                g.managed,
                g.allowed
            ));
        }
        out.push('\n');
        let secs = |s: Option<u64>| s.map_or("-".to_string(), |s| format!("{s}s"));
        let rows: Vec<[String; 9]> = self
            .nodes
            .iter()
            .map(|n| {
                [
                    n.name.clone(),
                    capitalized(&n.phase),
                    secs(n.since_seconds_ago),
                    secs(n.heartbeat_age_seconds),
                    n.safe_time
                        .as_ref()
                        .map_or("-".into(), |s| format!("{}s", s.remaining_seconds)),
                    match (&n.fencing.watchdog_timeout_seconds, n.fencing.current) {
                        (Some(t), true) => format!("{} {t}s", n.fencing.self_fence),
                        (_, true) => n.fencing.self_fence.clone(),
                        _ => format!("{} (not capable)", n.fencing.self_fence),
                    },
                    n.permit_object
                        .as_ref()
                        .map_or("-".into(), PermitObjectView::cell),
                    n.awaiting_recovery.len().to_string(),
                    n.last_decision
                        .as_ref()
                        .map_or("-".into(), |e| e.reason.clone()),
                ]
            })
            .collect();
        let header = [
            "NODE",
            "PHASE",
            "SINCE",
            "HEARTBEAT",
            "SAFE IN",
            "FENCING",
            "PERMIT",
            "PODS",
            "LAST DECISION",
        ];
        let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r.iter()) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: Vec<&str>| {
            let mut s = String::new();
            for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
                if i + 1 == cells.len() {
                    s.push_str(c);
                } else {
                    s.push_str(&format!("{c:<w$}   "));
                }
            }
            s.trim_end().to_string() + "\n"
        };
        out.push_str(&line(header.to_vec()));
        for r in &rows {
            out.push_str(&line(r.iter().map(String::as_str).collect()));
        }
        let notes: Vec<&NodeRow> = self.nodes.iter().filter(|n| n.note.is_some()).collect();
        if !notes.is_empty() || !self.warnings.is_empty() {
            out.push('\n');
        }
        for n in notes {
            out.push_str(&format!(
                "{}: {}\n",
                n.name,
                n.note.as_deref().unwrap_or_default()
            ));
        }
        for w in &self.warnings {
            out.push_str(&format!("warning: {w}\n"));
        }
        out
    }

    /// `status NODE`: the node's state and its timeline.
    pub fn timeline(&self, node: &str, events: &[NodeEvent]) -> Option<String> {
        let n = self.nodes.iter().find(|n| n.name == node)?;
        let mut out = format!("Node:          {}\nPhase:         {}\n", n.name, n.phase);
        if let Some(s) = &n.since {
            out.push_str(&format!("Since:         {s}\n"));
        }
        out.push_str(&format!(
            "Heartbeat:     {}\n",
            n.heartbeat_age_seconds
                .map_or("no Lease".to_string(), |a| format!("{a}s ago"))
        ));
        out.push_str(&format!(
            "Fencing:       {}{}\n",
            n.fencing.self_fence,
            match (&n.fencing.because, n.fencing.watchdog_timeout_seconds) {
                (Some(b), _) => format!(" — not capable: {b}"),
                (None, Some(t)) =>
                    format!(", watchdog timeout {t}s, advertisement from the current boot"),
                (None, None) => String::new(),
            }
        ));
        if let Some(p) = &n.permit_object {
            let grantors = match p.grantor_sets.split_last() {
                None => "none yet".to_string(),
                Some((newest, [])) => newest.join(", "),
                Some((newest, older)) => format!(
                    "{} (retiring: {})",
                    newest.join(", "),
                    older
                        .iter()
                        .map(|s| s.join(", "))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            };
            out.push_str(&format!(
                "Permit:        {}; grantors {}; {} renewal(s) through the API server{}\n",
                if p.revoked {
                    format!("REVOKED (fencing {})", p.fencing_number)
                } else if p.armed {
                    "armed in the current boot".to_string()
                } else {
                    "not armed in the current boot".to_string()
                },
                grantors,
                p.api_renewals,
                if p.reported_silent_by.is_empty() {
                    String::new()
                } else {
                    format!("; reported silent by {}", p.reported_silent_by.join(", "))
                }
            ));
        }
        if let Some(s) = &n.safe_time {
            let t = &s.terms;
            out.push_str(&format!(
                "Safe time:     {} (in {}s) = heartbeat {}s + detect {}s + peer consultation {}s + watchdog {}s + margin {}s after the last heartbeat\n",
                s.at,
                s.remaining_seconds,
                t.heartbeat_seconds,
                t.detect_seconds,
                t.consult_seconds,
                t.watchdog_seconds,
                t.margin_seconds
            ));
        }
        if let Some(note) = &n.note {
            out.push_str(&format!("Note:          {note}\n"));
        }
        if !n.awaiting_recovery.is_empty() {
            out.push_str(&format!(
                "Awaiting recovery: {}\n",
                n.awaiting_recovery.join(", ")
            ));
        }
        out.push_str("\nTimeline:\n");
        if events.is_empty() {
            out.push_str("  (no kube-fencer Events about this node)\n");
        }
        for e in events {
            out.push_str(&format!(
                "  {}  {:<7}  {:<18}  {}\n",
                e.time, e.kind, e.reason, e.message
            ));
        }
        Some(out)
    }
}

/// `fencing` → `Fencing`, as kubectl prints phases.
fn capitalized(word: &str) -> String {
    let mut c = word.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
