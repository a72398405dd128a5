//! The leader's own bookkeeping between passes, owned by its loop and told
//! the time by it: what it deleted recently, which recoveries it timed,
//! which safe times it logged, the storm guard's edge, the warnings already
//! reported and the fence command runs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::decide::{FenceCommandState, NodeStatus, Observations, Report, Warning};
use crate::leader::fence_command::Outcome;
use crate::observability::events::{Edge, WarningDedupe};

/// A pod or VolumeAttachment deleted successfully is not deleted again for
/// this long (it may linger with a finalizer).
pub const REDELETE_AFTER: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub struct LeaderMemory {
    /// Keys ([`pod_key`], [`attachment_key`]) of recent deletions, and when.
    recently_deleted: HashMap<String, Instant>,
    /// Fenced nodes whose recovery time was already observed.
    recovered: HashSet<String>,
    /// Safe times already logged (node → total), to log each once.
    safe_times_logged: HashMap<String, Duration>,
    storm: Edge,
    warnings: WarningDedupe,
    /// This leader's fence command runs, shown to the core.
    fence_commands: BTreeMap<String, FenceCommandState>,
}

pub fn pod_key(uid: &str) -> String {
    uid.to_string()
}

pub fn attachment_key(uid: &str) -> String {
    format!("va/{uid}")
}

impl LeaderMemory {
    /// Before a decision: forget old deletions, and fence command results
    /// of nodes no longer being fenced (a later fencing starts from scratch).
    pub fn begin_pass(&mut self, obs: &Observations, now: Instant) {
        self.recently_deleted
            .retain(|_, at| now.saturating_duration_since(*at) < REDELETE_AFTER);
        self.fence_commands.retain(|node, state| {
            matches!(state, FenceCommandState::Running { .. })
                || obs
                    .nodes
                    .get(node)
                    .is_some_and(|n| n.facts.record.phase().is_some())
        });
    }

    pub fn fence_commands(&self) -> &BTreeMap<String, FenceCommandState> {
        &self.fence_commands
    }

    pub fn deleted_recently(&self, key: &str) -> bool {
        self.recently_deleted.contains_key(key)
    }

    pub fn deleted(&mut self, key: String, now: Instant) {
        self.recently_deleted.insert(key, now);
    }

    /// Whether this is the first time `node` is seen marked fenced (its
    /// recovery is timed once).
    pub fn first_fenced(&mut self, node: &str) -> bool {
        self.recovered.insert(node.to_string())
    }

    pub fn fence_started(&mut self, node: &str, attempt: u32) {
        self.fence_commands
            .insert(node.to_string(), FenceCommandState::Running { attempt });
    }

    /// A run finished at `now`.
    pub fn fence_finished(&mut self, node: &str, attempt: u32, outcome: &Outcome, now: Instant) {
        let state = match outcome {
            Outcome::Success => FenceCommandState::Succeeded { attempt },
            Outcome::Failure(e) => FenceCommandState::Failed {
                attempt,
                at: now,
                error: e.clone(),
            },
            Outcome::Timeout => FenceCommandState::Failed {
                attempt,
                at: now,
                error: "timed out (--fence-command-timeout)".into(),
            },
        };
        self.fence_commands.insert(node.to_string(), state);
    }

    /// After a decision: the safe times not logged yet with this value, the
    /// storm guard's change, and the warnings not reported yet.
    pub fn after_report<'a>(&mut self, report: &Report, warnings: &'a [Warning]) -> Reported<'a> {
        self.safe_times_logged
            .retain(|n, _| report.safe_times.contains_key(n));
        let mut new_safe_times = Vec::new();
        for (node, safe) in &report.safe_times {
            if self.safe_times_logged.insert(node.clone(), safe.total()) != Some(safe.total()) {
                new_safe_times.push(node.clone());
            }
        }
        self.recovered
            .retain(|n| matches!(report.nodes.get(n), Some(NodeStatus::Fenced)));
        Reported {
            new_safe_times,
            storm_change: self.storm.changed(report.storm_guard.active),
            fresh_warnings: self.warnings.fresh(warnings),
        }
    }
}

/// What of a report is news.
pub struct Reported<'a> {
    pub new_safe_times: Vec<String>,
    /// `Some(true)`: the storm guard became active; `Some(false)`: released.
    pub storm_change: Option<bool>,
    pub fresh_warnings: Vec<&'a Warning>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::testutil::mono;

    #[test]
    fn a_deletion_is_remembered_for_a_while() {
        let mut st = LeaderMemory::default();
        let obs = Observations::default();
        st.deleted(pod_key("u1"), mono(0));
        st.begin_pass(&obs, mono(29));
        assert!(st.deleted_recently("u1"));
        assert!(!st.deleted_recently(&attachment_key("u1")));
        st.begin_pass(&obs, mono(30));
        assert!(!st.deleted_recently("u1"));
    }

    #[test]
    fn a_finished_run_is_recorded_at_the_time_given() {
        let mut st = LeaderMemory::default();
        st.fence_started("n1", 2);
        assert_eq!(
            st.fence_commands().get("n1"),
            Some(&FenceCommandState::Running { attempt: 2 })
        );
        st.fence_finished("n1", 2, &Outcome::Timeout, mono(7));
        assert!(matches!(
            st.fence_commands().get("n1"),
            Some(FenceCommandState::Failed { attempt: 2, at, .. }) if *at == mono(7)
        ));
        st.fence_finished("n1", 3, &Outcome::Success, mono(9));
        assert_eq!(
            st.fence_commands().get("n1"),
            Some(&FenceCommandState::Succeeded { attempt: 3 })
        );
    }

    #[test]
    fn results_of_nodes_no_longer_fencing_are_forgotten_but_runs_are_kept() {
        let mut st = LeaderMemory::default();
        st.fence_finished("done", 1, &Outcome::Success, mono(1));
        st.fence_started("running", 1);
        st.begin_pass(&Observations::default(), mono(2));
        assert!(!st.fence_commands().contains_key("done"));
        assert!(st.fence_commands().contains_key("running"));
    }

    #[test]
    fn a_recovery_is_timed_once_per_fencing() {
        let mut st = LeaderMemory::default();
        assert!(st.first_fenced("n1"));
        assert!(!st.first_fenced("n1"));
        // No longer fenced in the report: the next fencing is timed again.
        let nothing = crate::decide::decide(
            &Observations::default(),
            crate::decide::testutil::now_at(1),
            &crate::decide::testutil::settings(),
        );
        st.after_report(&nothing.report, &[]);
        assert!(st.first_fenced("n1"));
    }
}
