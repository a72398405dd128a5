//! The safe time of a node: the moment after which the node's own agent has
//! certainly fenced itself, if it is self-fence capable, computed from what
//! the agent advertised ([`super::advert`]) and the leader's settings.
//!
//! ```text
//! safe    = last observed heartbeat
//!         + max(isolated, reported, hung)     (the agent's verdict, at the latest)
//!         + watchdog timeout + margin
//! contact  = max(heartbeat interval, (fencing recorded - last heartbeat) + RECORD_DELIVERY)
//! isolated = min(contact + i + (j-1)·p + t + a,
//!               max(contact + i, x + p) + t + a)   (the second only with x)
//! reported = (fencing recorded - last heartbeat) + p + t + a
//! hung     = contact + i + longest connected check + permit grace
//! i = api-check-interval, k = api-failure-threshold, t = api-check-timeout,
//! a = t + PEER_ANSWER_SLACK (how long the agent waits for a peer),
//! p = max(i, t + a)       (spacing of checks once they fail),
//! j = max(k, 1 + ceil((peer-silence-timeout - a) / p))
//! x = kubeletStaleAfter (the agent's --unreachable-after), when advertised
//! ```
//!
//! Why each term — the agent's side is `kube_fencer::cluster::self_check`:
//!
//! - **contact**: the agent's last API contact. When the whole node is cut
//!   off, it is at most one kubelet Lease renewal after the last renewal the
//!   leader saw (`--node-heartbeat-interval`). But the kubelet may die first
//!   while the agent stays in contact, and the agent be cut off just before
//!   the Fencing record reaches it: then its last contact is as late as the
//!   record ([`RECORD_DELIVERY`] after it was written). Its verdict follows
//!   from that contact on the schedule below (the simulator in
//!   [`super::protocol`] checks this bound).
//! - The agent probes `/readyz` one interval `i` after its last contact with
//!   the API (contact: any watch event or successful request), then every `p`
//!   while probes fail. From the first failure on it asks a batch of peers
//!   after each probe (each waits at most `a`).
//! - **isolated** (rule 5): its `j`-th failed probe is the first that is both
//!   the `k`-th (`--api-failure-threshold`) and ends `--peer-silence-timeout`
//!   after the first failure with no majority of peers heard. Or sooner, by
//!   rule 5b: the first check that starts when the agent's own kubelet Lease
//!   has gone unrenewed for `x` ends the verdict with a single failed probe
//!   and one round of asking. Checks start every `p` at most from `i` after
//!   the contact, so the first one to start later than `x` after the
//!   heartbeat starts by `max(contact + i, x + p)`. This holds because the
//!   renewal the agent last saw is no later than the one the leader last
//!   saw: the agent saw it through the API (a committed renewal, its
//!   renewTime by the node's clock no later than its commit), and the leader
//!   reads the Lease with a quorum GET (it found no renewal since) before it
//!   marks the node fenced. (When the kubelet renewed after all, the leader
//!   sees it and the safe time moves on with its heartbeat.)
//! - **reported** (rule 3): if the node still reaches its peers, it learns
//!   from them that the cluster records it as Fencing at the first failed
//!   check after the leader wrote that record (at least `--unreachable-after`
//!   after the heartbeat, later if the storm guard held it).
//! - **hung**: the agent feeds the watchdog only until its next check has
//!   had time to end (a dead man's switch, [`crate::agent::self_check`]); a loop that
//!   hung while connected stops feeding by then, and its feeding thread
//!   expedites the reset [`PERMIT_GRACE`](crate::agent::watchdog_timing::PERMIT_GRACE)
//!   later — unless the process exits within that grace, whose exit ping
//!   then restarts the full timeout (hence the grace in the term).
//! - Then the self-fence action takes at most the **watchdog timeout**, and
//!   the **margin** (`--safe-time-margin`) absorbs watch and reconcile
//!   latency and clock-rate differences.

use std::fmt;
use std::time::{Duration, Instant};

use super::advert::AgentAdvert;

/// How much longer than its own API timeout an agent waits for a peer's answer
/// (a peer answers from its last API contact, or after one GET bounded by
/// its `--api-check-timeout`).
pub const PEER_ANSWER_SLACK: Duration = Duration::from_secs(1);

/// How long an agent waits for one peer's answer.
pub fn peer_answer_timeout(api_check_timeout: Duration) -> Duration {
    api_check_timeout.saturating_add(PEER_ANSWER_SLACK)
}

/// How recent a peer's last API contact must be for it to answer a
/// question from the API (older: "I cannot reach the API" at once). A
/// connected agent probes one `--api-check-interval` after its last
/// contact, and the probe takes up to `--api-check-timeout`: its contact
/// is never older than both while it is connected. (The interval alone
/// made a connected peer answer "unreachable" while its next probe was in
/// flight, and a cut-off node take that for a control-plane outage.)
pub fn peer_fresh_within(api_check_interval: Duration, api_check_timeout: Duration) -> Duration {
    api_check_interval.saturating_add(api_check_timeout)
}

/// How long after the leader writes the Fencing record a connected agent's
/// own-Node watch delivers it (at the latest; slower watches are what the
/// margin is for).
pub const RECORD_DELIVERY: Duration = Duration::from_secs(1);

/// Bound of writing the advertisement (a GET and a PATCH, each bounded by
/// twice the API check timeout).
pub fn advertise_timeout(api_check_timeout: Duration) -> Duration {
    api_check_timeout.saturating_mul(4)
}

/// Bound of one peer refresh (each page bounded by twice the API check timeout).
pub fn refresh_timeout(api_check_timeout: Duration) -> Duration {
    api_check_timeout.saturating_mul(2)
}

/// The longest one check takes: the probe, then asking the peers (the
/// advertisement and the peer refresh run beside the check, never on its
/// path, so a write that hangs does not delay the next probe).
pub fn longest_check(api_check_timeout: Duration) -> Duration {
    api_check_timeout.saturating_add(peer_answer_timeout(api_check_timeout))
}

/// Spacing of the agent's checks once they fail: a check (probe + asking
/// peers) may take longer than the interval.
pub fn failing_check_period(api_check_interval: Duration, api_check_timeout: Duration) -> Duration {
    api_check_interval.max(api_check_timeout.saturating_add(peer_answer_timeout(api_check_timeout)))
}

/// The leader's side of the safe time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderTerms {
    /// `--unreachable-after`: the earliest a Fencing record can be written.
    pub unreachable_after: Duration,
    /// `--node-heartbeat-interval`: the kubelet's Lease renewal interval.
    pub heartbeat_interval: Duration,
    /// `--safe-time-margin`.
    pub margin: Duration,
}

/// The safe time with its terms, for logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SafeTime {
    /// Last observed heartbeat + [`SafeTime::total`].
    pub at: Instant,
    /// The kubelet renewal interval: the cut may come that much later.
    pub heartbeat: Duration,
    /// `i + (k-1)·p + t`: from the agent's last API contact to its `k`-th failed probe.
    pub detect: Duration,
    /// From there until the agent's verdict (peer silence, or a peer
    /// passing on the Fencing record).
    pub consult: Duration,
    pub watchdog: Duration,
    pub margin: Duration,
}

impl SafeTime {
    /// Everything after the last observed heartbeat.
    pub fn total(&self) -> Duration {
        self.heartbeat
            .saturating_add(self.detect)
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
            "{} after the last heartbeat = heartbeat interval {} + detect {} + peer consultation {} + watchdog {} + margin {}",
            h(self.total()),
            h(self.heartbeat),
            h(self.detect),
            h(self.consult),
            h(self.watchdog),
            h(self.margin)
        )
    }
}

fn ceil_div(a: Duration, b: Duration) -> u32 {
    if b.is_zero() {
        return u32::MAX;
    }
    let (a, b) = (a.as_nanos(), b.as_nanos());
    u32::try_from(a.div_ceil(b)).unwrap_or(u32::MAX)
}

/// Compute the safe time of a node whose last heartbeat was observed at
/// `last_heartbeat` and whose Fencing record was written at
/// `fencing_recorded` (clamped to at least `last_heartbeat + unreachable_after`).
/// Saturates instead of overflowing on absurd advertisements.
pub fn safe_time(
    advert: &AgentAdvert,
    last_heartbeat: Instant,
    fencing_recorded: Instant,
    leader: &LeaderTerms,
) -> SafeTime {
    let (i, k, t) = (
        advert.api_check_interval,
        advert.api_failure_threshold.max(1),
        advert.api_check_timeout,
    );
    let a = peer_answer_timeout(t);
    let p = failing_check_period(i, t);
    let probe = |n: u32| {
        // End of the n-th failed check (probe + asking peers), from the last contact.
        i.saturating_add(p.saturating_mul(n - 1))
            .saturating_add(t)
            .saturating_add(a)
    };
    let j = k.max(ceil_div(advert.peer_silence_timeout.saturating_sub(a), p).saturating_add(1));
    let recorded = fencing_recorded
        .saturating_duration_since(last_heartbeat)
        .max(leader.unreachable_after);
    // The agent's last contact: the node cut off with its kubelet, or the
    // kubelet dead first and the agent cut off just before the record.
    let contact = leader
        .heartbeat_interval
        .max(recorded.saturating_add(RECORD_DELIVERY));
    let isolated = contact.saturating_add(probe(j));
    // Rule 5b: the first check started after x ends by then.
    let isolated = match advert.kubelet_stale_after {
        Some(x) => isolated.min(
            contact
                .saturating_add(i)
                .max(x.saturating_add(p))
                .saturating_add(t)
                .saturating_add(a),
        ),
        None => isolated,
    };
    let reported = recorded
        .saturating_add(p)
        .saturating_add(t)
        .saturating_add(a);
    let hung = contact
        .saturating_add(i)
        .saturating_add(longest_check(t))
        .saturating_add(crate::agent::watchdog_timing::PERMIT_GRACE);
    let verdict = isolated.max(reported).max(hung);
    // The k-th failed probe (rule 5b may conclude before it).
    let detect = i
        .saturating_add(p.saturating_mul(k - 1))
        .saturating_add(t)
        .min(verdict.saturating_sub(leader.heartbeat_interval));
    let mut st = SafeTime {
        at: last_heartbeat,
        heartbeat: leader.heartbeat_interval,
        detect,
        consult: verdict
            .saturating_sub(leader.heartbeat_interval)
            .saturating_sub(detect),
        watchdog: advert.watchdog_timeout,
        margin: leader.margin,
    };
    // Instant + huge Duration may overflow: clamp to ~100 years.
    let total = st.total().min(Duration::from_secs(100 * 365 * 86_400));
    st.at = last_heartbeat.checked_add(total).unwrap_or(last_heartbeat);
    st
}

#[cfg(test)]
mod schedule_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::advert::SelfFenceAction;

    fn advert() -> AgentAdvert {
        AgentAdvert {
            self_fence: SelfFenceAction::Watchdog,
            watchdog_timeout: S(10),
            api_check_interval: S(5),
            api_check_timeout: S(2),
            api_failure_threshold: 3,
            peer_silence_timeout: S(10),
            boot_id: "b".into(),
            peer_address: None,
            self_fence_unavailable: None,
            kubelet_stale_after: None,
            permit_fence: None,
        }
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn leader(unreachable: u64, margin: u64) -> LeaderTerms {
        LeaderTerms {
            unreachable_after: S(unreachable),
            heartbeat_interval: S(10),
            margin: S(margin),
        }
    }

    /// Safe time with the Fencing record written right at unreachable-after.
    fn at_once(a: &AgentAdvert, t: Instant, l: &LeaderTerms) -> SafeTime {
        safe_time(a, t, t, l)
    }

    #[test]
    fn defaults_add_up() {
        let t = Instant::now();
        let st = at_once(&advert(), t, &leader(20, 5));
        // a = 2+1 = 3, p = max(5, 2+3) = 5, j = max(3, 1+ceil(7/5)) = 3
        // contact = max(10, 20 + 1) = 21 (the kubelet died first, the agent
        // was cut off just before the record reached it)
        // isolated = 21 + 5 + 2·5 + 2 + 3 = 41; reported = 20 + 5 + 2 + 3 = 30
        // hung = 21 + 5 + (2 + 3) = 31
        // detect = 5 + 10 + 2 = 17; consult = 41 - 10 - 17 = 14
        assert_eq!(st.heartbeat, S(10));
        assert_eq!(st.detect, S(17));
        assert_eq!(st.consult, S(14));
        assert_eq!(st.total(), S(56));
        assert_eq!(st.at, t + S(56));
        let text = st.to_string();
        assert!(
            text.contains("56s after")
                && text.contains("heartbeat interval 10s")
                && text.contains("detect 17s")
                && text.contains("peer consultation 14s")
                && text.contains("watchdog 10s")
                && text.contains("margin 5s"),
            "{text}"
        );
    }

    #[test]
    fn a_stale_kubelet_shortens_the_verdict_of_an_isolated_agent() {
        // The defaults, from an agent that advertises kubeletStaleAfter 20s:
        // isolated = min(41, max(21 + 5, 20 + 5) + 2 + 3) = 31; reported 30;
        // hung = 21 + 5 + 5 + 2 = 33 is the latest now.
        let t = Instant::now();
        let mut a = advert();
        a.kubelet_stale_after = Some(S(20));
        let st = at_once(&a, t, &leader(20, 5));
        assert_eq!(st.total(), S(48));
        assert_eq!(st.heartbeat + st.detect + st.consult, S(33));
        assert_eq!(st.detect, S(17));
        // Without the field (an older agent): the whole threshold, 56 s.
        assert_eq!(at_once(&advert(), t, &leader(20, 5)).total(), S(56));
        // A threshold past the contact counts from the heartbeat: x = 40
        // gives max(26, 45) + 5 = 50, later than rule 5's 41, which stays.
        a.kubelet_stale_after = Some(S(40));
        assert_eq!(at_once(&a, t, &leader(20, 5)).total(), S(56));
        // x = 30: max(26, 35) + 5 = 40 < 41.
        a.kubelet_stale_after = Some(S(30));
        assert_eq!(at_once(&a, t, &leader(20, 5)).total(), S(55));
        // A Fencing record the storm guard held back: the contact moves on,
        // rule 5b stays one check after it (101 + 5 + 5 = 111, not 121);
        // the hung loop's 101 + 5 + 5 + 2 = 113 is the latest.
        a.kubelet_stale_after = Some(S(20));
        let late = at_once(&a, t, &leader(100, 0));
        assert_eq!(late.heartbeat + late.detect + late.consult, S(113));
        // A long failure threshold: the verdict may come before the k-th
        // probe, and the terms still add up.
        a.api_failure_threshold = 10;
        let st = at_once(&a, t, &leader(20, 5));
        assert_eq!(st.total(), S(48));
        assert_eq!(st.heartbeat + st.detect + st.consult, S(33));
    }

    #[test]
    fn every_term_counts() {
        let t = Instant::now();
        let l = leader(10, 5);
        // With unreachable-after 10: contact 11, isolated 11 + 20, + 10 + 5.
        let base = at_once(&advert(), t, &l).total();
        assert_eq!(base, S(46));
        let with = |f: &dyn Fn(&mut AgentAdvert)| {
            let mut a = advert();
            f(&mut a);
            at_once(&a, t, &l).total()
        };
        // i: 5 + 2·p(6) instead of 5 + 2·5
        assert_eq!(with(&|a| a.api_check_interval = S(6)), base + S(3));
        assert_eq!(with(&|a| a.api_failure_threshold = 4), base + S(5));
        // t: probe +1, a +1, p = max(5, 3+4 = 7) → 5 + 2·7 + 3 + 4 = 26 vs 20
        assert_eq!(with(&|a| a.api_check_timeout = S(3)), base + S(6));
        // silence 16: j = 1 + ceil(13/5) = 4
        assert_eq!(with(&|a| a.peer_silence_timeout = S(16)), base + S(5));
        assert_eq!(with(&|a| a.watchdog_timeout = S(11)), base + S(1));
        let mut l2 = l;
        l2.margin = S(6);
        assert_eq!(at_once(&advert(), t, &l2).total(), base + S(1));
        // The heartbeat interval counts once it exceeds the record's delivery.
        l2 = l;
        l2.heartbeat_interval = S(12);
        assert_eq!(at_once(&advert(), t, &l2).total(), base + S(1));
        l2.unreachable_after = S(11);
        assert_eq!(at_once(&advert(), t, &l2).total(), base + S(1));
        l2.unreachable_after = S(12);
        assert_eq!(at_once(&advert(), t, &l2).total(), base + S(2));
    }

    #[test]
    fn silence_shorter_than_detection_costs_nothing() {
        let t = Instant::now();
        let l = leader(10, 5);
        let mut a = advert();
        a.peer_silence_timeout = S(1);
        assert_eq!(
            at_once(&a, t, &l).total(),
            at_once(&advert(), t, &l).total()
        );
    }

    #[test]
    fn a_late_fencing_record_lengthens_the_consultation() {
        // Peers only learn "you are being fenced" once the leader recorded it
        // (unreachable-after, or later when the storm guard held it), and the
        // agent hears it after its next probe.
        let t = Instant::now();
        let st = at_once(&advert(), t, &leader(100, 0));
        // An agent in contact until the record: 100 + 1 + 20 = 121
        // (reported: 100 + 5 + 2 + 3 = 110).
        assert_eq!(st.heartbeat + st.detect + st.consult, S(121));
        assert_eq!(st.total(), S(131));
        let later = safe_time(&advert(), t, t + S(300), &leader(100, 0));
        assert_eq!(later.heartbeat + later.detect + later.consult, S(321));
        // A record dated before the heartbeat + unreachable-after counts from there.
        let early = safe_time(&advert(), t + S(50), t, &leader(100, 0));
        assert_eq!(early.total(), S(131));
    }

    #[test]
    fn slow_checks_space_the_probes() {
        // t + a = 4 + 5 = 9 > i = 5: failing checks come every 9s.
        let t = Instant::now();
        let mut a = advert();
        a.api_check_timeout = S(4);
        let st = at_once(&a, t, &leader(0, 0));
        // j = max(3, 1 + ceil(5/9)) = 3; isolated = 10 + 5 + 18 + 4 + 5 = 42
        assert_eq!(st.detect, S(5 + 18 + 4));
        assert_eq!(st.heartbeat + st.detect + st.consult, S(42));
    }

    #[test]
    fn absurd_values_do_not_panic() {
        let t = Instant::now();
        let mut a = advert();
        a.api_check_interval = Duration::MAX;
        a.api_failure_threshold = u32::MAX;
        a.watchdog_timeout = Duration::MAX;
        a.api_check_timeout = Duration::ZERO;
        let l = LeaderTerms {
            unreachable_after: Duration::MAX,
            heartbeat_interval: Duration::MAX,
            margin: Duration::MAX,
        };
        let st = safe_time(&a, t, t, &l);
        assert!(st.at >= t);
        let _ = st.to_string();
        a.api_failure_threshold = 0;
        let _ = safe_time(&a, t, t, &leader(1, 1));
    }
}
