//! The permit protocol's timings, and the configurations it accepts.
//!
//! Safety (S1) holds for every value: the simulator draws from ranges wider
//! than these and finds no violation. What the ranges guard is S2 — that an
//! outage of the control plane alone, or of the peer network alone, resets
//! no node — and the caps the leader assumes for an answer that cannot name
//! its timings. The simulator's `--outages` sweep draws only accepted
//! configurations, and finds no reset among them.

use std::time::Duration;

use super::Drift;
use super::holder::HolderSettings;
use super::revoke::RevokeSettings;

/// The longest credit a grant can carry: the leader assumes it for an
/// answer that cannot name one.
pub const CREDIT_CAP: Duration = Duration::from_secs(60);
/// The longest credit a renewal through the API can carry.
pub const API_CREDIT_CAP: Duration = Duration::from_secs(120);
/// The longest watchdog timeout an agent feeds with.
pub const WATCHDOG_CAP: Duration = Duration::from_secs(30);

/// Every timing of the protocol, agent and leader side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timings {
    pub renew_interval: Duration,
    pub credit: Duration,
    pub api_credit: Duration,
    pub watchdog_timeout: Duration,
    pub margin: Duration,
    pub ack_window: Duration,
    pub drift: Drift,
    /// Peers in a node's grantor set (fewer where the cluster is smaller).
    pub grantors: usize,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            renew_interval: Duration::from_secs(1),
            credit: Duration::from_secs(10),
            api_credit: Duration::from_secs(30),
            watchdog_timeout: Duration::from_secs(5),
            margin: Duration::from_secs(1),
            ack_window: Duration::from_secs(5),
            drift: Drift::DEFAULT,
            grantors: 4,
        }
    }
}

/// A timing the protocol does not accept: which, its value, and what is
/// valid (the shell names the flag).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what} is {value}; {valid}")]
pub struct TimingError {
    pub what: &'static str,
    pub value: String,
    pub valid: String,
}

fn secs(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

impl Timings {
    /// Whether these timings are accepted, and if not the first reason.
    pub fn check(&self) -> Result<(), TimingError> {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        let range = |what: &'static str, v: Duration, lo: Duration, hi: Duration| {
            if v < lo || v > hi {
                Err(TimingError {
                    what,
                    value: secs(v),
                    valid: format!("valid: {} to {}", secs(lo), secs(hi)),
                })
            } else {
                Ok(())
            }
        };
        range("the renewal interval", self.renew_interval, ms(100), s(2))?;
        // The kubelet restarts a crashed agent within a couple of seconds:
        // a shorter timeout resets the node first.
        range(
            "the watchdog timeout",
            self.watchdog_timeout,
            s(3),
            WATCHDOG_CAP,
        )?;
        if self.watchdog_timeout.subsec_nanos() != 0 {
            return Err(TimingError {
                what: "the watchdog timeout",
                value: secs(self.watchdog_timeout),
                valid: "valid: whole seconds (devices take whole seconds)".into(),
            });
        }
        // A round unanswered for an interval, then the API path has 4 s
        // before the feeding timeout falls under a second.
        let least_credit = self.renew_interval * 2 + s(6);
        range("the credit", self.credit, least_credit, CREDIT_CAP).map_err(|e| TimingError {
            valid: format!(
                "{}; at least twice the renewal interval plus 6s, so that a peer outage leaves the API path 4s",
                e.valid
            ),
            ..e
        })?;
        let least_api = (self.credit * 2).max(s(20));
        range("the API credit", self.api_credit, least_api, API_CREDIT_CAP).map_err(|e| {
            TimingError {
                valid: format!("{}; at least twice the credit and 20s", e.valid),
                ..e
            }
        })?;
        range("the margin", self.margin, Duration::ZERO, s(10))?;
        range("the answer window", self.ack_window, ms(100), s(10))?;
        if !(2..=6).contains(&self.grantors) {
            return Err(TimingError {
                what: "the number of grantors",
                value: self.grantors.to_string(),
                valid: "valid: 2 to 6 (a smaller cluster uses all its other nodes)".into(),
            });
        }
        Ok(())
    }

    pub fn holder(&self) -> HolderSettings {
        HolderSettings {
            renew_interval: self.renew_interval,
            credit: self.credit,
            api_credit: self.api_credit,
            watchdog_timeout: self.watchdog_timeout,
        }
    }

    pub fn revoke(&self) -> RevokeSettings {
        RevokeSettings {
            ack_window: self.ack_window,
            credit_cap: CREDIT_CAP.max(API_CREDIT_CAP),
            watchdog_cap: WATCHDOG_CAP,
            margin: self.margin,
            drift: self.drift,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_accepted() {
        assert_eq!(Timings::default().check(), Ok(()));
    }

    #[test]
    fn each_rule_names_what_and_what_is_valid() {
        let t = Timings::default();
        let cases = [
            (
                Timings {
                    renew_interval: Duration::from_secs(3),
                    ..t
                },
                "the renewal interval is 3s; valid: 100ms to 2s",
            ),
            (
                Timings {
                    watchdog_timeout: Duration::from_millis(3500),
                    ..t
                },
                "the watchdog timeout is 3s 500ms; valid: whole seconds",
            ),
            (
                Timings {
                    credit: Duration::from_secs(7),
                    ..t
                },
                "the credit is 7s; valid: 8s to 1m; at least twice",
            ),
            (
                Timings {
                    api_credit: Duration::from_secs(19),
                    ..t
                },
                "the API credit is 19s; valid: 20s to 2m",
            ),
            (
                Timings { grantors: 1, ..t },
                "the number of grantors is 1; valid: 2 to 6",
            ),
        ];
        for (timings, message) in cases {
            let e = timings.check().expect_err(message).to_string();
            assert!(e.starts_with(message), "{e}");
        }
    }

    #[test]
    fn the_api_credit_must_be_twice_the_credit_and_says_so() {
        let t = Timings {
            credit: Duration::from_secs(20),
            api_credit: Duration::from_secs(30),
            ..Timings::default()
        };
        let e = t.check().unwrap_err().to_string();
        assert_eq!(
            e,
            "the API credit is 30s; valid: 40s to 2m; at least twice the credit and 20s"
        );
        let t = Timings {
            api_credit: Duration::from_secs(40),
            ..t
        };
        assert_eq!(t.check(), Ok(()));
    }

    #[test]
    fn the_leader_caps_cover_every_accepted_agent() {
        let r = Timings::default().revoke();
        assert!(r.credit_cap >= API_CREDIT_CAP && r.credit_cap >= CREDIT_CAP);
        assert_eq!(r.watchdog_cap, WATCHDOG_CAP);
        let longest = Timings {
            credit: CREDIT_CAP,
            api_credit: API_CREDIT_CAP,
            watchdog_timeout: WATCHDOG_CAP,
            ..Timings::default()
        };
        assert_eq!(longest.check(), Ok(()));
    }
}
