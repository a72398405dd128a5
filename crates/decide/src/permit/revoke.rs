//! The leader's side of fencing a node through its permit: close the API
//! path, stop enough grantors of every set the node may draw credit from,
//! and compute from their answers when the node is certainly reset.
//!
//! Everything is a duration on the leader's own monotonic clock: when each
//! answer was received, and what it says (how long before it the grantor
//! last granted, on the grantor's clock). No wall clock, no kubelet or API
//! timing, no watch delay enters.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::holder::EXPEDITED;
use super::{Drift, GrantorSet, Stop, StopAck};

/// The leader's timings for a revocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RevokeSettings {
    /// Answers received longer ago than this are asked again before they
    /// count: a grantor that restarts without its memory is quarantined for
    /// this window plus the horizon ([`super::grantor::quarantine`]).
    pub ack_window: Duration,
    /// What an answer that cannot name them is taken to be: the longest
    /// credit and watchdog timeout an agent's flags accept.
    pub credit_cap: Duration,
    pub watchdog_cap: Duration,
    /// Added to every deadline: reconcile latency.
    pub margin: Duration,
    pub drift: Drift,
}

impl RevokeSettings {
    /// The longest a deadline can lie after the last answer it counts: the
    /// horizon a grantor's quarantine must outlast.
    pub fn horizon(&self) -> Duration {
        self.drift
            .stretch(self.credit_cap)
            .saturating_add(self.tail(self.watchdog_cap, self.credit_cap))
    }

    /// From the permit's end to the certain reset: the watchdog timeout and
    /// the two expedited seconds of an exit after it, as the node's device
    /// may run them, the drift of the feeding lemma's `(end − check)/2`,
    /// and the margin.
    fn tail(&self, watchdog: Duration, credit: Duration) -> Duration {
        let d = self.drift;
        d.stretch(watchdog.saturating_add(EXPEDITED * 2))
            .saturating_add(d.stretch(d.excess(credit)))
            .saturating_add(self.margin)
    }
}

/// The node's renewals through the API server, as the leader closed them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiPath {
    /// Not closed yet: the revocation cannot complete.
    Open,
    /// Closed (the revocation was written on the node's permit object with a
    /// precondition on the version the leader had observed), and no
    /// renewal through the API was ever observed.
    ClosedUnused,
    /// Closed; the version the precondition named carries a renewal the
    /// leader first observed at `first_seen`, which counts for `credit` and
    /// feeds with at most `watchdog_timeout`.
    ClosedAfter {
        first_seen: Instant,
        credit: Duration,
        watchdog_timeout: Duration,
    },
}

#[derive(Clone, Copy, Debug)]
struct Answered {
    received: Instant,
    ack: StopAck,
}

/// Why a revocation has no deadline yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pending {
    /// The API path is still open.
    ApiOpen,
    /// No grantor set: the node never held a permit to revoke.
    NoGrantorSet,
    /// Too few fresh answers from set `version`: `have` of `need`.
    Answers {
        version: u64,
        have: usize,
        need: usize,
    },
}

/// One revocation in progress.
#[derive(Clone, Debug)]
pub struct Revocation {
    node: String,
    /// The node's fencing number this revocation names.
    fencing: u64,
    sets: Vec<GrantorSet>,
    answers: BTreeMap<String, Answered>,
    api: ApiPath,
    /// Fixed once complete: later answers would only move it later (their
    /// receipt is later), and the grantors that answered hold their stop
    /// (saved, or quarantined after a restart without it) past it.
    fixed: Option<Deadline>,
}

/// The deadline and where its terms came from (for logs and Events).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline {
    /// When the node is certainly reset, on the leader's clock.
    pub at: Instant,
    /// The latest the permit can end.
    pub permit_end: Instant,
    /// The watchdog timeout counted after it.
    pub watchdog_timeout: Duration,
}

impl Revocation {
    /// Revoke `node`, which may draw credit from every set in `sets` (its
    /// current one, and any older one whose retirement is not complete), as
    /// last observed: stops go out at once, and [`Revocation::api_closed`]
    /// names the sets for good.
    pub fn new(node: &str, sets: Vec<GrantorSet>) -> Self {
        Self::numbered(node, 1, sets)
    }

    /// [`Revocation::new`] for the node's fencing number `fencing` (it
    /// grows with every fencing of the node; see [`Stop`]).
    pub fn numbered(node: &str, fencing: u64, sets: Vec<GrantorSet>) -> Self {
        Revocation {
            node: node.to_string(),
            fencing,
            sets,
            answers: BTreeMap::new(),
            api: ApiPath::Open,
            fixed: None,
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Grantors to send the stop to at `now`: those of every set without an
    /// answer received within the ack window (none once complete).
    pub fn to_ask(&self, now: Instant, s: &RevokeSettings) -> Vec<String> {
        if self.fixed.is_some() {
            return Vec::new();
        }
        let mut out: Vec<String> = self
            .sets
            .iter()
            .flat_map(|set| set.peers.iter())
            .filter(|g| !self.fresh(g, now, s))
            .filter(|g| **g != self.node)
            .cloned()
            .collect();
        out.sort();
        out.dedup();
        out
    }

    fn fresh(&self, grantor: &str, now: Instant, s: &RevokeSettings) -> bool {
        self.answers
            .get(grantor)
            .is_some_and(|a| now.saturating_duration_since(a.received) <= s.ack_window)
    }

    /// The stop this revocation sends.
    pub fn stop(&self) -> Stop {
        Stop::Revoke {
            node: self.node.clone(),
            fencing: self.fencing,
        }
    }

    /// A grantor's answer to [`Revocation::stop`], received at `received`.
    pub fn answered(&mut self, grantor: &str, received: Instant, ack: StopAck) {
        self.answers
            .insert(grantor.to_string(), Answered { received, ack });
    }

    /// A grantor's acknowledgement of `acked`, received at `received`:
    /// counted only when `acked` is this revocation's own stop. The
    /// acknowledgement of a lift, a retirement or another fencing's
    /// revocation says nothing about this one (an acknowledgement of the
    /// previous fencing's lift, arriving after this fencing began, was once
    /// counted as a stop: the long run's seed 306202). Whether it counted.
    pub fn acknowledged(
        &mut self,
        grantor: &str,
        received: Instant,
        acked: &Stop,
        ack: StopAck,
    ) -> bool {
        let own = *acked == self.stop();
        if own {
            self.answered(grantor, received, ack);
        }
        own
    }

    /// The API path is closed: the revocation was written on the node's
    /// permit object with a precondition on the version observed, which
    /// named these grantor sets. No set can be added after it (the leader
    /// assigns none to a node it fences), so these are the sets to block.
    pub fn api_closed(&mut self, api: ApiPath, sets: Vec<GrantorSet>) {
        self.api = api;
        self.sets = sets;
    }

    /// When the node is certainly reset, once the API path is closed and
    /// every set has enough answers received within the ack window that
    /// each majority it could use contains an answered grantor. Fixed from
    /// the first time it is known.
    pub fn deadline(&mut self, now: Instant, s: &RevokeSettings) -> Result<Deadline, Pending> {
        if let Some(d) = self.fixed {
            return Ok(d);
        }
        let d = self.compute(now, s)?;
        self.fixed = Some(d);
        Ok(d)
    }

    fn compute(&self, now: Instant, s: &RevokeSettings) -> Result<Deadline, Pending> {
        let d = s.drift;
        if self.sets.is_empty() {
            return Err(Pending::NoGrantorSet);
        }
        let mut end: Option<Instant> = None;
        let mut watchdog = Duration::ZERO;
        let mut credit = Duration::ZERO;
        for set in &self.sets {
            let answered: Vec<&Answered> = set
                .peers
                .iter()
                .filter(|g| self.fresh(g, now, s))
                .filter_map(|g| self.answers.get(g))
                .collect();
            // Unanswered peers may go on granting: the node needs this many
            // grants from the answered ones.
            let unanswered = set.peers.len() - answered.len();
            let q = set.peer_grants_needed().saturating_sub(unanswered);
            if q == 0 {
                return Err(Pending::Answers {
                    version: set.version,
                    have: answered.len(),
                    need: set.stops_needed(),
                });
            }
            let credit_of = |a: &Answered| a.ack.credit.unwrap_or(s.credit_cap);
            let mut ends: Vec<Instant> = answered
                .iter()
                .map(|a| {
                    a.received
                        + d.stretch(credit_of(a))
                            .saturating_sub(a.ack.since_last_grant)
                })
                .collect();
            let mut timeouts: Vec<Duration> = answered
                .iter()
                .map(|a| a.ack.watchdog_timeout.unwrap_or(s.watchdog_cap))
                .collect();
            ends.sort_unstable_by(|a, b| b.cmp(a));
            timeouts.sort_unstable_by(|a, b| b.cmp(a));
            end = end.max(Some(ends[q - 1]));
            watchdog = watchdog.max(timeouts[q - 1]);
            credit = credit.max(
                answered
                    .iter()
                    .map(|a| credit_of(a))
                    .max()
                    .unwrap_or_default(),
            );
        }
        match self.api {
            ApiPath::Open => return Err(Pending::ApiOpen),
            ApiPath::ClosedUnused => {}
            ApiPath::ClosedAfter {
                first_seen,
                credit: api_credit,
                watchdog_timeout,
            } => {
                end = end.max(Some(first_seen + d.stretch(api_credit)));
                watchdog = watchdog.max(watchdog_timeout);
                credit = credit.max(api_credit);
            }
        }
        let permit_end = end.unwrap_or(now);
        Ok(Deadline {
            at: permit_end + s.tail(watchdog, credit),
            permit_end,
            watchdog_timeout: watchdog,
        })
    }
}

#[cfg(test)]
mod tests;
