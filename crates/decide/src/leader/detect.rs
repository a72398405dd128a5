//! Detect: turn observed Lease renewals into heartbeat history, and classify
//! a node as healthy or suspect.

use std::time::{Duration, Instant};

use super::{Heartbeat, NodeObs, Settings};

impl Heartbeat {
    /// The first observation of a Lease (or a cache (re)sync): timers start now.
    pub fn first_seen(now: Instant) -> Self {
        Heartbeat {
            last_renewal: now,
            streak_since: now,
        }
    }

    /// A renewal observed at `now`. A gap of `unreachable_after` or more since
    /// the previous renewal starts a new streak.
    pub fn renewed(self, now: Instant, unreachable_after: Duration) -> Self {
        let gap = now.saturating_duration_since(self.last_renewal);
        let streak_since = if gap >= unreachable_after {
            now
        } else {
            self.streak_since
        };
        Heartbeat {
            last_renewal: now,
            streak_since,
        }
    }

    /// Time since the last observed renewal.
    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_renewal)
    }

    /// Stale: not renewed for `unreachable_after` or longer.
    pub fn is_stale(&self, now: Instant, unreachable_after: Duration) -> bool {
        self.age(now) >= unreachable_after
    }

    /// How long the current unbroken streak of renewals has lasted.
    pub fn streak(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.streak_since)
    }
}

/// Whether a node's Lease is stale; `None` when it has no Lease.
pub fn stale(node: &NodeObs, now: Instant, settings: &Settings) -> Option<bool> {
    node.heartbeat
        .map(|hb| hb.is_stale(now, settings.unreachable_after))
}

/// When the node became suspect through its permit, if it is: its agent
/// fences through the permit, no permit it could hold is left since `over`
/// (the shell's [`crate::permit::silence::permit_over`], for a node armed
/// in its current boot), and its kubelet missed a Lease renewal (none for
/// `--node-heartbeat-interval` + `--burst-spread`): a node whose kubelet
/// still reaches the API server is left to its Lease, whatever its peers
/// say. Powered off, a node is suspect about one credit after its last
/// renewal rather than `--unreachable-after` after its Lease's.
pub fn permit_suspect(
    node: &NodeObs,
    over: Option<Instant>,
    now: Instant,
    settings: &Settings,
) -> Option<Instant> {
    node.facts.agent.valid()?.permit_fence?;
    let hb = node.heartbeat?;
    let since = over?.max(hb.last_renewal + settings.settle_window());
    (now >= since).then_some(since)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UA: Duration = Duration::from_secs(20);

    #[test]
    fn renewals_within_the_gap_keep_the_streak() {
        let t = Instant::now();
        let hb = Heartbeat::first_seen(t);
        let hb = hb.renewed(t + Duration::from_secs(10), UA);
        let hb = hb.renewed(t + Duration::from_millis(29_999), UA);
        assert_eq!(hb.streak_since, t);
        assert_eq!(hb.last_renewal, t + Duration::from_millis(29_999));
    }

    #[test]
    fn a_gap_of_unreachable_after_restarts_the_streak() {
        let t = Instant::now();
        let hb = Heartbeat::first_seen(t).renewed(t + UA, UA);
        assert_eq!(hb.streak_since, t + UA);
        assert_eq!(hb.last_renewal, t + UA);
    }

    #[test]
    fn stale_at_exactly_unreachable_after() {
        let t = Instant::now();
        let hb = Heartbeat::first_seen(t);
        assert!(!hb.is_stale(t + UA - Duration::from_nanos(1), UA));
        assert!(hb.is_stale(t + UA, UA));
        assert_eq!(hb.age(t), Duration::ZERO);
        assert_eq!(hb.streak(t + UA), UA);
    }
}
