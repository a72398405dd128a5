//! Detect: turn observed Lease renewals into heartbeat history, and classify
//! a node as healthy or suspect.

use std::time::{Duration, Instant};

use super::Heartbeat;

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
        let _ = (now, unreachable_after);
        unimplemented!("heartbeat renewed")
    }

    /// Time since the last observed renewal.
    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_renewal)
    }
}
