//! The safe time of a node: the moment after which the node's own agent has
//! certainly fenced itself, if it is self-fence capable, computed from what
//! the agent advertised ([`super::agent`]) and the leader's settings.
//!
//! ```text
//! safe = last observed heartbeat
//!      + max(detect + peer silence, unreachable-after) + round
//!      + watchdog timeout
//!      + margin
//! detect = api-check-interval × api-failure-threshold + api-check-timeout
//! round  = api-check-interval + 3 × api-check-timeout
//! ```
//!
//! Why each term: the node may have lost the API right after its last
//! observed heartbeat. Its agent needs `detect` to declare the API
//! unreachable, then at most `peer silence` to conclude it is isolated — or,
//! if its peers can reach the API, until the leader has recorded Fencing
//! (`unreachable-after`) and a peer passes that on. Either conclusion is
//! reached at the agent's next check `round` (a /readyz probe plus asking
//! peers, who spend up to one check timeout on their own API call). Then the
//! self-fence action takes at most `watchdog timeout`. The `margin`
//! (`--safe-time-margin`) absorbs the kubelet's Lease renewal interval (the
//! partition may start up to one renewal after the last observed one), watch
//! latency and clock-rate differences.

use std::fmt;
use std::time::{Duration, Instant};

use super::agent::AgentAdvert;

/// The safe time with its terms, for logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SafeTime {
    /// Last observed heartbeat + [`SafeTime::total`].
    pub at: Instant,
    /// `api-check-interval × api-failure-threshold + api-check-timeout`.
    pub detect: Duration,
    /// The time the agent may spend consulting peers after `detect`.
    pub consult: Duration,
    pub watchdog: Duration,
    pub margin: Duration,
}

impl SafeTime {
    /// Everything after the last observed heartbeat.
    pub fn total(&self) -> Duration {
        self.detect
            .saturating_add(self.consult)
            .saturating_add(self.watchdog)
            .saturating_add(self.margin)
    }
}

impl fmt::Display for SafeTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = |d: Duration| humantime::format_duration(d).to_string();
        write!(
            f,
            "{} after the last heartbeat = detect {} + peer consultation {} + watchdog {} + margin {}",
            h(self.total()),
            h(self.detect),
            h(self.consult),
            h(self.watchdog),
            h(self.margin)
        )
    }
}

/// Compute the safe time of a node whose last heartbeat was observed at
/// `last_heartbeat`. Saturates instead of overflowing on absurd advertisements.
pub fn safe_time(
    advert: &AgentAdvert,
    last_heartbeat: Instant,
    unreachable_after: Duration,
    margin: Duration,
) -> SafeTime {
    let detect = advert
        .api_check_interval
        .saturating_mul(advert.api_failure_threshold)
        .saturating_add(advert.api_check_timeout);
    // Time from the last heartbeat until the agent has either concluded it is
    // isolated, or heard from a peer that the leader recorded it as Fencing.
    let round = advert
        .api_check_interval
        .saturating_add(advert.api_check_timeout.saturating_mul(3));
    let via_silence = detect.saturating_add(advert.peer_silence_timeout);
    let consult = via_silence
        .max(unreachable_after)
        .saturating_add(round)
        .saturating_sub(detect);
    let mut st = SafeTime {
        at: last_heartbeat,
        detect,
        consult,
        watchdog: advert.watchdog_timeout,
        margin,
    };
    // Instant + huge Duration may overflow: clamp to ~100 years.
    let total = st.total().min(Duration::from_secs(100 * 365 * 86_400));
    st.at = last_heartbeat.checked_add(total).unwrap_or(last_heartbeat);
    st
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::agent::SelfFenceAction;

    fn advert() -> AgentAdvert {
        AgentAdvert {
            self_fence: SelfFenceAction::Watchdog,
            watchdog_timeout: Duration::from_secs(60),
            api_check_interval: Duration::from_secs(5),
            api_check_timeout: Duration::from_secs(5),
            api_failure_threshold: 3,
            peer_silence_timeout: Duration::from_secs(30),
            boot_id: "b".into(),
            peer_address: None,
        }
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn defaults_add_up() {
        let t = Instant::now();
        let st = safe_time(&advert(), t, S(20), S(30));
        // detect 5×3+5 = 20; round 5+3×5 = 20;
        // consult max(20+30, 20) + 20 - 20 = 50; +60 +30
        assert_eq!(st.detect, S(20));
        assert_eq!(st.consult, S(50));
        assert_eq!(st.total(), S(160));
        assert_eq!(st.at, t + S(160));
        let text = st.to_string();
        assert!(
            text.contains("2m 40s")
                && text.contains("detect 20s")
                && text.contains("peer consultation 50s")
                && text.contains("watchdog 1m")
                && text.contains("margin 30s"),
            "{text}"
        );
    }

    #[test]
    fn every_term_counts() {
        let t = Instant::now();
        let base = safe_time(&advert(), t, S(20), S(30)).total();
        let mut a = advert();
        a.api_check_interval = S(6);
        assert_eq!(safe_time(&a, t, S(20), S(30)).total(), base + S(4));
        let mut a = advert();
        a.api_failure_threshold = 4;
        assert_eq!(safe_time(&a, t, S(20), S(30)).total(), base + S(5));
        let mut a = advert();
        a.api_check_timeout = S(6);
        assert_eq!(safe_time(&a, t, S(20), S(30)).total(), base + S(4));
        let mut a = advert();
        a.peer_silence_timeout = S(31);
        assert_eq!(safe_time(&a, t, S(20), S(30)).total(), base + S(1));
        let mut a = advert();
        a.watchdog_timeout = S(61);
        assert_eq!(safe_time(&a, t, S(20), S(30)).total(), base + S(1));
        assert_eq!(safe_time(&advert(), t, S(20), S(31)).total(), base + S(1));
    }

    #[test]
    fn a_slow_leader_lengthens_the_consultation() {
        // Peers only learn "you are being fenced" once the leader recorded it
        // at unreachable-after, and the agent hears it one check later.
        let t = Instant::now();
        let mut a = advert();
        a.peer_silence_timeout = S(1);
        let st = safe_time(&a, t, S(100), S(0));
        // max(detect 20 + silence 1, 100) + round 20
        assert_eq!(st.detect + st.consult, S(120));
        assert_eq!(st.total(), S(180));
    }

    #[test]
    fn absurd_values_do_not_panic() {
        let t = Instant::now();
        let mut a = advert();
        a.api_check_interval = Duration::MAX;
        a.api_failure_threshold = u32::MAX;
        a.watchdog_timeout = Duration::MAX;
        let st = safe_time(&a, t, Duration::MAX, Duration::MAX);
        assert!(st.at >= t);
        let _ = st.to_string();
    }
}
