//! Leader election decisions over a `coordination.k8s.io` Lease.
//!
//! Like node heartbeats, the leader's Lease is judged by when *we observed* it
//! change, never by comparing its renewTime with our clock.

use std::time::{Duration, Instant};

/// The leader Lease as last observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseObs {
    /// `None` when the Lease does not exist yet.
    pub holder: Option<String>,
    pub resource_version: Option<String>,
    /// When we observed the Lease's last change (resourceVersion change).
    pub changed_at: Instant,
    pub duration: Duration,
}

/// What the election loop should do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Create or take over the Lease (with the observed resourceVersion as precondition).
    Acquire,
    /// We hold it: renew.
    Renew,
    /// Someone else holds a live Lease: check again at the given time at the latest.
    Follow { until: Instant },
    /// We were leader but could not renew within the renew deadline: stop acting now.
    StepDown,
}

#[derive(Clone, Debug)]
pub struct ElectionSettings {
    pub identity: String,
    pub lease_duration: Duration,
    /// A leader that has not renewed successfully for this long steps down
    /// (must be < lease_duration so it stops before anyone else may take over).
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

pub fn step(
    lease: Option<&LeaseObs>,
    last_successful_renew: Option<Instant>,
    now: Instant,
    settings: &ElectionSettings,
) -> Step {
    let _ = (lease, last_successful_renew, now, settings);
    unimplemented!("leader step")
}
