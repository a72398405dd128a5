//! The grantor: the peer side of every agent. It grants every renewal
//! unless it stopped granting that node, and answers a stop with how long
//! ago it last granted.
//!
//! A stop must hold until the stopped node is certainly reset, across the
//! grantor's own restarts: the shell saves [`Grantor::memory`] (in the
//! agent's state directory) *before* it sends a [`StopAck`], and a grantor
//! that starts without the memory of this boot (a reboot, a lost state
//! directory) grants nothing for a quarantine that outlasts any fencing a
//! forgotten stop could belong to ([`quarantine`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{Answer, Drift, Renewal, Stop, StopAck};

/// How long a grantor that lost its memory grants nothing: the longest a
/// fencing can still need a stop it acknowledged — the leader's window for
/// collecting the acknowledgements (`ack_window`) plus the longest the
/// node may then still run (`horizon`) — as its own clock may measure it.
pub fn quarantine(ack_window: Duration, horizon: Duration, drift: Drift) -> Duration {
    drift.stretch(ack_window.saturating_add(horizon))
}

/// The quarantine left to a grantor starting without memory `uptime` after
/// its node booted, when its state directory lives as long as the boot (a
/// tmpfs): then no process of this boot acknowledged a stop, and the
/// previous boot's last one is at least `uptime` old. (A state directory
/// lost within a boot must count as the full quarantine.)
pub fn quarantine_left(quarantine: Duration, uptime: Duration) -> Duration {
    quarantine.saturating_sub(uptime)
}

/// What the stops left in force for one node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stopped {
    /// The latest fencing number a revocation or a lift named (0: none).
    pub fencing: u64,
    /// Whether that was a revocation: no grant at all until a lift of this
    /// fencing or a later one. After a lift, a revocation of this fencing
    /// or an earlier one (late, duplicated or stale) is refused.
    pub revoked: bool,
    /// No grant under a set version below this one (0: none retired).
    pub below: u64,
}

impl Stopped {
    /// Revoked by fencing `fencing`.
    pub fn revoked(fencing: u64) -> Self {
        Stopped {
            fencing,
            revoked: true,
            below: 0,
        }
    }

    /// Set versions below `below` retired.
    pub fn below(below: u64) -> Self {
        Stopped {
            below,
            ..Stopped::default()
        }
    }
}

/// What survives the grantor's restarts within a boot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    pub stops: Vec<(String, Stopped)>,
    /// A quarantine still running (on a clock that keeps counting across
    /// restarts): a grantor that lost its stops stays quarantined through
    /// any restart that finds this memory.
    pub quarantined_until: Option<Instant>,
}

#[derive(Clone, Copy, Debug)]
struct Granted {
    at: Instant,
    credit: Duration,
    watchdog_timeout: Duration,
}

/// One agent's grantor.
#[derive(Clone, Debug)]
pub struct Grantor {
    started: Instant,
    quarantined_until: Option<Instant>,
    granted: BTreeMap<String, Granted>,
    stops: BTreeMap<String, Stopped>,
}

impl Grantor {
    /// A grantor started at `now`, with the memory an earlier process left
    /// in this boot (`None`: quarantined for `quarantine`).
    pub fn new(now: Instant, memory: Option<Memory>, quarantine: Duration) -> Self {
        let quarantined_until = match &memory {
            None => Some(now + quarantine),
            Some(m) => m.quarantined_until.filter(|until| now < *until),
        };
        Grantor {
            started: now,
            quarantined_until,
            granted: BTreeMap::new(),
            stops: memory.unwrap_or_default().stops.into_iter().collect(),
        }
    }

    pub fn memory(&self) -> Memory {
        Memory {
            stops: self.stops.iter().map(|(n, s)| (n.clone(), *s)).collect(),
            quarantined_until: self.quarantined_until,
        }
    }

    pub fn quarantined(&self, now: Instant) -> bool {
        self.quarantined_until.is_some_and(|until| now < until)
    }

    pub fn stopped(&self, node: &str) -> Option<Stopped> {
        self.stops.get(node).copied()
    }

    /// Answer a renewal received at `now`.
    pub fn renew(&mut self, now: Instant, r: &Renewal) -> Answer {
        if let Some(s) = self.stops.get(&r.node) {
            if s.revoked {
                return Answer::Revoked;
            }
            if r.set_version < s.below {
                return Answer::Retired;
            }
        }
        if self.quarantined(now) {
            return Answer::Quarantined;
        }
        let g = self.granted.entry(r.node.clone()).or_insert(Granted {
            at: now,
            credit: r.credit,
            watchdog_timeout: r.watchdog_timeout,
        });
        g.at = g.at.max(now);
        g.credit = g.credit.max(r.credit);
        g.watchdog_timeout = g.watchdog_timeout.max(r.watchdog_timeout);
        Answer::Granted
    }

    /// Grantees it granted and has not granted again for `after` or longer
    /// (but for less than `within`: one gone longer is no news any more),
    /// with how long ago it last granted each and the credit that grant
    /// carried: what it reports on its permit object
    /// ([`super::object::SILENT_ANNOTATION`]), from which the leader learns
    /// that a powered-off node's permit is over within a credit of its
    /// last renewal ([`super::silence`]). A node it stopped granting for a
    /// revocation is reported too: the leader's fencing of it goes on from
    /// these reports until its Lease is stale.
    pub fn silent(
        &self,
        now: Instant,
        after: Duration,
        within: Duration,
    ) -> BTreeMap<String, super::object::Silent> {
        self.granted
            .iter()
            .filter_map(|(node, g)| {
                let quiet = now.saturating_duration_since(g.at);
                (quiet >= after && quiet < within).then(|| {
                    (
                        node.clone(),
                        super::object::Silent {
                            quiet,
                            credit: g.credit,
                        },
                    )
                })
            })
            .collect()
    }

    /// Apply a stop received at `now`; save [`Grantor::memory`] before
    /// sending the answer. A lift answers too (its answer means nothing).
    /// `None`: not acknowledged — a revocation of a fencing that was lifted
    /// already (or of an earlier one): the node is granted, and a leader
    /// must not count this grantor as stopped.
    pub fn stop(&mut self, now: Instant, s: &Stop) -> Option<StopAck> {
        let (node, acknowledged) = match s {
            Stop::Revoke { node, fencing } => {
                let e = self.stops.entry(node.clone()).or_default();
                if *fencing > e.fencing {
                    e.fencing = *fencing;
                    e.revoked = true;
                }
                (node, e.revoked)
            }
            Stop::Retire {
                node,
                below_version,
            } => {
                let e = self.stops.entry(node.clone()).or_default();
                e.below = e.below.max(*below_version);
                (node, true)
            }
            Stop::Lift { node, fencing } => {
                let e = self.stops.entry(node.clone()).or_default();
                if *fencing >= e.fencing {
                    e.fencing = *fencing;
                    e.revoked = false;
                }
                (node, true)
            }
        };
        if !acknowledged {
            return None;
        }
        let granted = self.granted.get(node);
        Some(StopAck {
            since_last_grant: now.saturating_duration_since(granted.map_or(self.started, |g| g.at)),
            credit: granted.map(|g| g.credit),
            watchdog_timeout: granted.map(|g| g.watchdog_timeout),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revoke(fencing: u64) -> Stop {
        Stop::Revoke {
            node: "a".into(),
            fencing,
        }
    }

    fn lift(fencing: u64) -> Stop {
        Stop::Lift {
            node: "a".into(),
            fencing,
        }
    }

    fn retire(below_version: u64) -> Stop {
        Stop::Retire {
            node: "a".into(),
            below_version,
        }
    }

    fn renewal(node: &str, set_version: u64) -> Renewal {
        Renewal {
            node: node.into(),
            boot: "b".into(),
            round: 1,
            set_version,
            credit: Duration::from_secs(10),
            watchdog_timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn a_revoked_node_gets_no_grant_until_lifted() {
        let t0 = Instant::now();
        let mut g = Grantor::new(t0, Some(Memory::default()), Duration::from_secs(30));
        assert_eq!(g.renew(t0, &renewal("a", 1)), Answer::Granted);
        let ack = g
            .stop(t0 + Duration::from_secs(7), &revoke(1))
            .expect("acknowledged");
        assert_eq!(ack.since_last_grant, Duration::from_secs(7));
        assert_eq!(ack.watchdog_timeout, Some(Duration::from_secs(5)));
        assert_eq!(
            g.renew(t0 + Duration::from_secs(8), &renewal("a", 9)),
            Answer::Revoked
        );
        assert_eq!(g.stopped("a"), Some(Stopped::revoked(1)));
        assert_eq!(g.stopped("b"), None);
        assert_eq!(
            g.renew(t0 + Duration::from_secs(8), &renewal("b", 1)),
            Answer::Granted
        );
        g.stop(t0 + Duration::from_secs(9), &lift(1));
        assert_eq!(
            g.renew(t0 + Duration::from_secs(10), &renewal("a", 1)),
            Answer::Granted
        );
    }

    #[test]
    fn a_lift_overtaken_by_the_next_revocation_does_not_undo_it() {
        // The leader lifts fencing 1 and begins fencing 2 at once, and the
        // network delivers the revocation of fencing 2 first (concurrent
        // requests are not ordered): the late lift must not grant the node
        // again while the leader counts this grantor as stopped. (The long
        // run's seed 306202 found the leader-side twin of this race:
        // `revoke::tests::only_the_acknowledgement_of_its_own_stop_counts`.)
        let t0 = Instant::now();
        let mut g = Grantor::new(t0, Some(Memory::default()), Duration::ZERO);
        assert!(g.stop(t0, &revoke(1)).is_some());
        assert!(g.stop(t0, &revoke(2)).is_some());
        g.stop(t0, &lift(1));
        assert_eq!(g.renew(t0, &renewal("a", 1)), Answer::Revoked);
        // Lifting fencing 2 itself does.
        g.stop(t0, &lift(2));
        assert_eq!(g.renew(t0, &renewal("a", 1)), Answer::Granted);
    }

    #[test]
    fn a_revocation_of_a_lifted_fencing_is_refused_and_not_acknowledged() {
        // A duplicated or stale revocation arriving after its fencing was
        // lifted: the node stays granted (a healthy node is not reset),
        // and no leader may count this grantor as stopped.
        let t0 = Instant::now();
        let mut g = Grantor::new(t0, Some(Memory::default()), Duration::ZERO);
        g.stop(t0, &revoke(3));
        g.stop(t0, &lift(3));
        assert_eq!(g.stop(t0, &revoke(3)), None);
        assert_eq!(g.stop(t0, &revoke(2)), None);
        assert_eq!(g.renew(t0, &renewal("a", 1)), Answer::Granted);
        // The next fencing revokes.
        assert!(g.stop(t0, &revoke(4)).is_some());
        assert_eq!(g.renew(t0, &renewal("a", 1)), Answer::Revoked);
        // And a retirement keeps what the fencings left.
        g.stop(t0, &retire(2));
        assert_eq!(
            g.stopped("a"),
            Some(Stopped {
                fencing: 4,
                revoked: true,
                below: 2
            })
        );
    }

    #[test]
    fn a_retirement_does_not_forget_a_lift() {
        let t0 = Instant::now();
        let mut g = Grantor::new(t0, Some(Memory::default()), Duration::ZERO);
        g.stop(t0, &revoke(5));
        g.stop(t0, &lift(5));
        g.stop(t0, &retire(2));
        assert_eq!(g.stop(t0, &revoke(5)), None);
        assert_eq!(g.renew(t0, &renewal("a", 2)), Answer::Granted);
        // Memory keeps it across a restart too.
        let mut again = Grantor::new(t0, Some(g.memory()), Duration::ZERO);
        assert_eq!(again.stop(t0, &revoke(5)), None);
    }

    #[test]
    fn a_retired_set_gets_no_grant_and_a_newer_one_does() {
        let t0 = Instant::now();
        let mut g = Grantor::new(t0, Some(Memory::default()), Duration::from_secs(30));
        g.stop(t0, &retire(3));
        assert_eq!(g.renew(t0, &renewal("a", 2)), Answer::Retired);
        assert_eq!(g.renew(t0, &renewal("a", 3)), Answer::Granted);
        assert_eq!(g.stopped("a"), Some(Stopped::below(3)));
        // A later, lower retirement does not undo a higher one; a revocation
        // overrides it.
        g.stop(t0, &retire(1));
        assert_eq!(g.renew(t0, &renewal("a", 2)), Answer::Retired);
        g.stop(t0, &revoke(1));
        assert_eq!(g.renew(t0, &renewal("a", 3)), Answer::Revoked);
    }

    #[test]
    fn stops_survive_a_restart_with_the_memory_and_a_restart_without_it_quarantines() {
        let t0 = Instant::now();
        let q = Duration::from_secs(30);
        let mut g = Grantor::new(t0, Some(Memory::default()), q);
        g.renew(t0, &renewal("a", 1));
        g.stop(t0, &revoke(1));
        let t1 = t0 + Duration::from_secs(2);
        let mut again = Grantor::new(t1, Some(g.memory()), q);
        assert_eq!(again.renew(t1, &renewal("a", 1)), Answer::Revoked);
        assert_eq!(again.renew(t1, &renewal("b", 1)), Answer::Granted);

        let mut forgot = Grantor::new(t1, None, q);
        assert_eq!(forgot.renew(t1, &renewal("a", 1)), Answer::Quarantined);
        assert_eq!(
            forgot.renew(t1 + q - Duration::from_nanos(1), &renewal("b", 1)),
            Answer::Quarantined
        );
        assert_eq!(forgot.renew(t1 + q, &renewal("b", 1)), Answer::Granted);
        // What it granted before its start it cannot know: the age it
        // answers counts from its start, and it names no watchdog timeout.
        let ack = forgot.stop(t1 + q, &revoke(1)).expect("acknowledged");
        assert_eq!(ack.since_last_grant, q);
        assert_eq!(ack.watchdog_timeout, None);
    }

    #[test]
    fn the_answer_names_the_longest_watchdog_timeout_granted() {
        let t0 = Instant::now();
        let mut g = Grantor::new(t0, Some(Memory::default()), Duration::ZERO);
        let mut r = renewal("a", 1);
        r.watchdog_timeout = Duration::from_secs(9);
        g.renew(t0, &r);
        r.watchdog_timeout = Duration::from_secs(4);
        g.renew(t0 + Duration::from_secs(1), &r);
        let ack = g
            .stop(t0 + Duration::from_secs(1), &revoke(1))
            .expect("acknowledged");
        assert_eq!(ack.watchdog_timeout, Some(Duration::from_secs(9)));
        assert_eq!(ack.since_last_grant, Duration::ZERO);
    }

    #[test]
    fn a_quarantine_survives_a_restart_that_finds_the_memory() {
        // Found by 100,000 random schedules: a grantor lost its state (and
        // so its stops), was quarantined, saved its memory, was restarted
        // with that memory, and granted at once the node it had stopped
        // before, within the fencing's deadline.
        let t0 = Instant::now();
        let q = Duration::from_secs(100);
        let lost = Grantor::new(t0, None, q);
        let t1 = t0 + Duration::from_secs(13);
        let mut again = Grantor::new(t1, Some(lost.memory()), q);
        assert_eq!(again.renew(t1, &renewal("a", 1)), Answer::Quarantined);
        assert_eq!(
            again.renew(t0 + q, &renewal("a", 1)),
            Answer::Granted,
            "it ends when it would have"
        );
        let late = Grantor::new(t0 + q, Some(lost.memory()), q);
        assert!(!late.quarantined(t0 + q));
    }

    #[test]
    fn a_first_start_long_after_the_boot_is_not_quarantined() {
        let q = Duration::from_secs(100);
        assert_eq!(
            quarantine_left(q, Duration::from_secs(30)),
            Duration::from_secs(70)
        );
        assert_eq!(
            quarantine_left(q, Duration::from_secs(3600)),
            Duration::ZERO
        );
        let t0 = Instant::now();
        let mut g = Grantor::new(t0, None, quarantine_left(q, Duration::from_secs(3600)));
        assert_eq!(g.renew(t0, &renewal("a", 1)), Answer::Granted);
    }

    #[test]
    fn grantees_not_granted_for_a_while_are_reported_until_they_renew() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let within = 60 * s;
        let mut g = Grantor::new(t0, Some(Memory::default()), Duration::ZERO);
        g.renew(t0, &renewal("a", 1));
        g.renew(t0 + 2 * s, &renewal("b", 1));
        let names = |m: BTreeMap<String, super::super::object::Silent>| {
            m.into_iter().map(|(n, v)| (n, v.quiet)).collect::<Vec<_>>()
        };
        assert!(g.silent(t0 + 2 * s, 3 * s, within).is_empty());
        assert_eq!(
            names(g.silent(t0 + 3 * s, 3 * s, within)),
            vec![("a".to_string(), 3 * s)]
        );
        let report = g.silent(t0 + 4 * s, 3 * s, within);
        assert_eq!(report["a"].quiet, 4 * s, "still silent, longer");
        assert_eq!(report["a"].credit, renewal("a", 1).credit);
        g.renew(t0 + 5 * s, &renewal("a", 1));
        assert_eq!(
            names(g.silent(t0 + 5 * s, 3 * s, within)),
            vec![("b".to_string(), 3 * s)]
        );
        // Gone for `within` or longer: no news any more.
        assert_eq!(
            names(g.silent(t0 + 62 * s, 3 * s, within)),
            vec![("a".to_string(), 57 * s)],
            "b, silent for exactly `within`"
        );
        assert_eq!(
            names(g.silent(t0 + 63 * s, 3 * s, within)),
            vec![("a".to_string(), 58 * s)]
        );
        // A node being fenced is reported, and so is one whose old set was
        // retired.
        g.renew(t0 + 9 * s, &renewal("c", 1));
        g.renew(t0 + 9 * s, &renewal("d", 1));
        g.stop(
            t0 + 9 * s,
            &Stop::Revoke {
                node: "c".into(),
                fencing: 1,
            },
        );
        g.stop(
            t0 + 9 * s,
            &Stop::Retire {
                node: "d".into(),
                below_version: 1,
            },
        );
        assert_eq!(
            names(g.silent(t0 + 20 * s, 3 * s, within)),
            vec![
                ("a".to_string(), 15 * s),
                ("b".to_string(), 18 * s),
                ("c".to_string(), 11 * s),
                ("d".to_string(), 11 * s)
            ]
        );
    }

    #[test]
    fn quarantine_outlasts_the_window_and_the_horizon_on_a_slow_clock() {
        let q = quarantine(
            Duration::from_secs(5),
            Duration::from_secs(20),
            Drift::DEFAULT,
        );
        assert!(q > Duration::from_secs(25));
        assert!(q < Duration::from_millis(25_100));
    }
}
