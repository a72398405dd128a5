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
    let Some(lease) = lease else {
        return Step::Acquire;
    };
    match lease.holder.as_deref() {
        None | Some("") => Step::Acquire,
        Some(holder) if holder == settings.identity => match last_successful_renew {
            Some(last) if now.saturating_duration_since(last) >= settings.renew_deadline => {
                Step::StepDown
            }
            _ => Step::Renew,
        },
        Some(_) => {
            if last_successful_renew.is_some() {
                // Someone else took the Lease while we thought we led.
                Step::StepDown
            } else if now.saturating_duration_since(lease.changed_at) >= lease.duration {
                Step::Acquire
            } else {
                Step::Follow {
                    until: lease.changed_at + lease.duration,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ElectionSettings {
        ElectionSettings {
            identity: "me".into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    fn lease(holder: Option<&str>, changed_at: Instant) -> LeaseObs {
        LeaseObs {
            holder: holder.map(String::from),
            resource_version: Some("7".into()),
            changed_at,
            duration: Duration::from_secs(15),
        }
    }

    #[test]
    fn acquires_a_missing_or_free_lease() {
        let t = Instant::now();
        let s = settings();
        assert_eq!(step(None, None, t, &s), Step::Acquire);
        assert_eq!(step(Some(&lease(None, t)), None, t, &s), Step::Acquire);
        assert_eq!(step(Some(&lease(Some(""), t)), None, t, &s), Step::Acquire);
    }

    #[test]
    fn renews_own_lease_until_the_renew_deadline() {
        let t = Instant::now();
        let s = settings();
        let l = lease(Some("me"), t);
        assert_eq!(step(Some(&l), None, t, &s), Step::Renew);
        assert_eq!(
            step(Some(&l), Some(t), t + Duration::from_secs(9), &s),
            Step::Renew
        );
        assert_eq!(
            step(Some(&l), Some(t), t + Duration::from_millis(9_999), &s),
            Step::Renew
        );
        assert_eq!(
            step(Some(&l), Some(t), t + Duration::from_secs(10), &s),
            Step::StepDown
        );
    }

    #[test]
    fn steps_down_when_another_holds_the_lease_we_led() {
        let t = Instant::now();
        let l = lease(Some("other"), t);
        assert_eq!(step(Some(&l), Some(t), t, &settings()), Step::StepDown);
    }

    #[test]
    fn follows_a_live_lease_and_takes_over_an_expired_one() {
        let t = Instant::now();
        let s = settings();
        let l = lease(Some("other"), t);
        let until = t + Duration::from_secs(15);
        assert_eq!(step(Some(&l), None, t, &s), Step::Follow { until });
        assert_eq!(
            step(Some(&l), None, t + Duration::from_millis(14_999), &s),
            Step::Follow { until }
        );
        assert_eq!(step(Some(&l), None, until, &s), Step::Acquire);
    }
}
