//! The holder: every node's agent renewing its own permit and deciding how
//! its watchdog is fed.
//!
//! A grant counts from when its renewal was *sent* (never from when the
//! answer came), on this node's monotonic clock, for `credit`. The permit
//! holds while, for one of the [`GrantorSet`]s the leader lists for the
//! node (the current one, and older ones until they are retired), the
//! node's own vote and the grants of enough of its peers to make a majority
//! are all valid — or while a conditional renewal through the API server
//! (which the leader's revocation makes fail) sent within `api_credit`
//! succeeded. Every renewal names the set it is for, so that a retired set
//! stops granting; a new set takes over without a gap.
//!
//! Feeding ([`Holder::feed`]): a ping at check time `c` sets the device's
//! timeout to `T = min(watchdog, (end − c)/2)` in whole seconds, and no
//! ping is made when that is under a second. Whatever freezes the process
//! between the check and the ping, and whatever exit ping follows, the node
//! is reset by `end + watchdog` (`docs/permits.md`, the feeding lemma):
//! the ping comes before the previous timeout ran out, so before
//! `c + watchdog`, and the exit ping before the ping's own timeout ran out,
//! so the last reset moment is before `c + watchdog + 2T ≤ end + watchdog`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{Answer, GrantorSet, Renewal};

/// The timeout an expedited device runs with: the shortest a device takes.
pub const EXPEDITED: Duration = Duration::from_secs(1);

/// How soon a failed renewal through the API server is tried again (a
/// throttled request is answered at once; the next may pass).
pub const API_RETRY: Duration = Duration::from_millis(250);

/// The holder's timings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HolderSettings {
    /// `h`: how often a renewal goes to every grantor.
    pub renew_interval: Duration,
    /// `L`: how long a peer's grant counts, from its renewal's sending.
    pub credit: Duration,
    /// How long a successful renewal through the API server counts, from
    /// its sending.
    pub api_credit: Duration,
    /// The watchdog timeout the device runs with while the permit is long
    /// (read back from the device), and that every renewal carries.
    pub watchdog_timeout: Duration,
}

impl HolderSettings {
    /// The permit time left, under which the holder renews through the API
    /// server: a renewal round that went unanswered by a majority for a
    /// whole interval.
    pub fn api_fallback_below(&self) -> Duration {
        self.credit
            .saturating_sub(self.renew_interval.saturating_mul(2))
    }
}

/// What the holder asks the shell to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Send this renewal to each of `to` (the current grantors).
    Renew { to: Vec<String>, renewal: Renewal },
    /// Renew through the API server: read the node's permit object with a
    /// consistent read, and update it with a resourceVersion precondition
    /// unless it carries a revocation, writing into it how long the node
    /// counts the renewal and its watchdog timeout (the leader reads
    /// them there); report with [`Holder::api_answered`] and this round.
    RenewThroughApi {
        round: u64,
        credit: Duration,
        watchdog_timeout: Duration,
    },
}

/// What the watchdog's feeding thread does now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feed {
    /// Ping the device with this timeout (`WDIOC_SETTIMEOUT`, which pings;
    /// opening it first if it is not open yet).
    Ping { timeout: Duration },
    /// Set the device's timeout to [`EXPEDITED`]: the device runs (this or
    /// an earlier process opened it) and there is no permit to feed it, so
    /// any ping of this process (its exit) must buy the node little.
    Expedite,
    /// Nothing: not armed (the device stays closed), or already expedited.
    Idle,
}

/// What the shell knows of the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    /// Not opened in this boot (no process of this agent armed it).
    Closed,
    /// Running with this timeout.
    Running { timeout: Duration },
}

/// How a renewal through the API server ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiOutcome {
    Renewed,
    /// The permit object carries the leader's revocation.
    Revoked,
    /// Not renewed (unreachable, throttled, a conflict): no credit.
    Failed,
}

/// Why the node holds no permit, for metrics, Events and `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lack {
    /// The leader assigned no grantor set yet (or an empty one).
    NoGrantors,
    /// The leader revoked this node (a grantor or the API server said so).
    Revoked,
    /// Too few grants, and no renewal through the API server.
    TooFewGrants { granted: usize, needed: usize },
}

/// The permit as the holder sees it now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    /// When the permit ends; `None`: no permit.
    pub end: Option<Instant>,
    /// Whether the API server's renewal is what holds it (degraded mode).
    pub through_api: bool,
    /// Valid peer grants, and how many a permit needs.
    pub granted: usize,
    pub needed: usize,
    pub lack: Option<Lack>,
}

/// Saved across the agent's restarts within a boot (its state directory,
/// with instants on a clock that keeps counting across them): the credits
/// a restarted agent keeps feeding on while it renews them, and the timings
/// their renewals carried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Saved {
    pub sets: Vec<GrantorSet>,
    /// (set version, grantor) → the send time of its latest grant.
    pub credits: Vec<((u64, String), Instant)>,
    pub api_credit: Option<Instant>,
    pub credit: Duration,
    pub api_credit_duration: Duration,
    pub watchdog_timeout: Duration,
}

/// The holder.
#[derive(Clone, Debug)]
pub struct Holder {
    node: String,
    boot: String,
    settings: HolderSettings,
    /// The sets the leader lists, oldest first (never empty once known).
    sets: Vec<GrantorSet>,
    /// (set version, grantor) → send time of the latest renewal for that
    /// set it granted.
    credits: BTreeMap<(u64, String), Instant>,
    /// Send time of the latest renewal through the API that succeeded.
    api_credit: Option<Instant>,
    /// Round → send time and the set version it named (`None`: through the
    /// API), while its grants may still count.
    rounds: BTreeMap<u64, (Instant, Option<u64>)>,
    next_round: u64,
    next_renewal: Option<Instant>,
    /// When the first renewal round of this process went out.
    first_round: Option<Instant>,
    api_in_flight: bool,
    /// After a failed renewal through the API: not again before.
    api_retry: Option<Instant>,
    revoked: bool,
    /// Whether this process pinged the device (or inherited a permit).
    armed: bool,
}

impl Holder {
    pub fn new(node: &str, boot: &str, settings: HolderSettings) -> Self {
        Holder {
            node: node.to_string(),
            boot: boot.to_string(),
            settings,
            sets: Vec::new(),
            credits: BTreeMap::new(),
            api_credit: None,
            rounds: BTreeMap::new(),
            next_round: 1,
            next_renewal: None,
            first_round: None,
            api_in_flight: false,
            api_retry: None,
            revoked: false,
            armed: false,
        }
    }

    /// Take over what an earlier process of this agent saved in this boot.
    /// Its credits count only if this process counts them no longer and
    /// feeds with no longer a timeout than their renewals said (what the
    /// grantors and the API server told the leader): after a change of
    /// those flags the permit is renewed from scratch.
    pub fn restore(&mut self, saved: Saved) {
        self.set_grantors(saved.sets);
        let s = self.settings;
        let timeout_ok = s.watchdog_timeout <= saved.watchdog_timeout;
        if timeout_ok && s.credit <= saved.credit {
            self.credits = saved.credits.into_iter().collect();
            self.drop_strangers();
        }
        if timeout_ok && s.api_credit <= saved.api_credit_duration {
            self.api_credit = saved.api_credit;
        }
    }

    /// What to save (after every change of the credits).
    pub fn saved(&self) -> Saved {
        Saved {
            sets: self.sets.clone(),
            credits: self.credits.iter().map(|(k, t)| (k.clone(), *t)).collect(),
            api_credit: self.api_credit,
            credit: self.settings.credit,
            api_credit_duration: self.settings.api_credit,
            watchdog_timeout: self.settings.watchdog_timeout,
        }
    }

    pub fn settings(&self) -> &HolderSettings {
        &self.settings
    }

    /// The newest grantor set (an empty one while none is known).
    pub fn set(&self) -> GrantorSet {
        self.sets.last().cloned().unwrap_or_default()
    }

    pub fn sets(&self) -> &[GrantorSet] {
        &self.sets
    }

    fn newest_version(&self) -> Option<u64> {
        self.sets.last().map(|s| s.version)
    }

    /// The grantor sets the leader lists for this node (from its permit
    /// object: the current one and those not yet retired). A list older
    /// than the one held is ignored; grants under sets no longer listed, or
    /// of peers not in their set, stop counting.
    pub fn set_grantors(&mut self, mut sets: Vec<GrantorSet>) {
        sets.retain(GrantorSet::usable);
        sets.sort_by_key(|s| s.version);
        sets.dedup_by_key(|s| s.version);
        let newest = sets.last().map(|s| s.version);
        if newest.is_none() || newest < self.newest_version() || sets == self.sets {
            return;
        }
        self.sets = sets;
        self.drop_strangers();
        self.next_renewal = None;
    }

    fn drop_strangers(&mut self) {
        let sets = &self.sets;
        self.credits.retain(|(v, g), _| {
            sets.iter()
                .any(|s| s.version == *v && s.peers.iter().any(|p| p == g))
        });
    }

    fn usable(&self) -> bool {
        !self.sets.is_empty()
    }

    /// When [`Holder::tick`] wants to run next.
    pub fn next_wake(&self) -> Option<Instant> {
        match (self.next_renewal, self.api_retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Start a renewal round when one is due, and renew through the API
    /// server when the peers' grants are running out.
    pub fn tick(&mut self, now: Instant) -> Vec<Command> {
        let mut out = Vec::new();
        let keep = self.settings.credit.max(self.settings.api_credit);
        self.rounds
            .retain(|_, (sent, _)| now.saturating_duration_since(*sent) < keep);
        if self.usable() && self.next_renewal.is_none_or(|at| now >= at) {
            self.next_renewal = Some(now + self.settings.renew_interval);
            self.first_round.get_or_insert(now);
            for set in self.sets.clone() {
                let round = self.next_round;
                self.next_round += 1;
                self.rounds.insert(round, (now, Some(set.version)));
                out.push(Command::Renew {
                    to: set.peers.clone(),
                    renewal: Renewal {
                        node: self.node.clone(),
                        boot: self.boot.clone(),
                        round,
                        set_version: set.version,
                        credit: self.settings.credit,
                        watchdog_timeout: self.settings.watchdog_timeout,
                    },
                });
            }
        }
        let short = |end: Option<Instant>, below: Duration| {
            end.is_none_or(|e| e.saturating_duration_since(now) < below)
        };
        let peers_short = short(self.peer_end(), self.settings.api_fallback_below());
        let api_short = short(self.api_end(), self.settings.api_credit / 2);
        // A fresh start waits until its first round had the time to be
        // answered (no write at every start); a permit running out (one
        // kept across a restart) does not wait.
        let answered = self.end().is_some()
            || self
                .first_round
                .is_some_and(|t| now.saturating_duration_since(t) >= self.settings.renew_interval);
        let retry_due = self.api_retry.is_none_or(|at| now >= at);
        if answered && retry_due && peers_short && api_short && !self.api_in_flight {
            let round = self.next_round;
            self.next_round += 1;
            self.rounds.insert(round, (now, None));
            self.api_in_flight = true;
            out.push(Command::RenewThroughApi {
                round,
                credit: self.settings.api_credit,
                watchdog_timeout: self.settings.watchdog_timeout,
            });
        }
        out
    }

    /// A grantor's answer to round `round`.
    pub fn answered(&mut self, grantor: &str, round: u64, answer: Answer) {
        let Some(&(sent, Some(version))) = self.rounds.get(&round) else {
            return; // too old to count, never sent, or not to a grantor
        };
        let member = self
            .sets
            .iter()
            .any(|s| s.version == version && s.peers.iter().any(|p| p == grantor));
        match answer {
            Answer::Granted if member => {
                let c = self
                    .credits
                    .entry((version, grantor.to_string()))
                    .or_insert(sent);
                *c = (*c).max(sent);
                self.revoked = false;
            }
            Answer::Revoked => self.revoked = true,
            Answer::Granted | Answer::Retired | Answer::Quarantined => {}
        }
    }

    /// How the renewal through the API server of round `round` ended
    /// (known at `now`).
    pub fn api_answered(&mut self, now: Instant, round: u64, outcome: ApiOutcome) {
        self.api_in_flight = false;
        // A revoked node's agent asks again only once a renewal interval:
        // nothing will change soon, and it must not hammer the API server.
        self.api_retry = match outcome {
            ApiOutcome::Renewed => None,
            ApiOutcome::Failed => Some(now + API_RETRY),
            ApiOutcome::Revoked => Some(now + self.settings.renew_interval),
        };
        let Some(&(sent, None)) = self.rounds.get(&round) else {
            return;
        };
        match outcome {
            ApiOutcome::Renewed => {
                self.api_credit = Some(self.api_credit.map_or(sent, |c| c.max(sent)));
                self.revoked = false;
            }
            ApiOutcome::Revoked => self.revoked = true,
            ApiOutcome::Failed => {}
        }
    }

    /// The send times of the grants counted for `set`, latest first.
    fn grants(&self, set: &GrantorSet) -> Vec<Instant> {
        let mut sent: Vec<Instant> = self
            .credits
            .iter()
            .filter(|((v, _), _)| *v == set.version)
            .map(|(_, t)| *t)
            .collect();
        sent.sort_unstable_by(|a, b| b.cmp(a));
        sent
    }

    /// When the peers' grants stop making a majority with the node's own
    /// vote in any listed set: for each, the `needed`-th latest grant's
    /// sending plus `credit`; the latest of those.
    fn peer_end(&self) -> Option<Instant> {
        self.sets
            .iter()
            .filter_map(|set| {
                self.grants(set)
                    .get(set.peer_grants_needed() - 1)
                    .map(|t| *t + self.settings.credit)
            })
            .max()
    }

    fn api_end(&self) -> Option<Instant> {
        self.api_credit.map(|t| t + self.settings.api_credit)
    }

    /// When the permit ends (`None`: never held, or no grantors).
    pub fn end(&self) -> Option<Instant> {
        if !self.usable() {
            return None;
        }
        self.peer_end().max(self.api_end())
    }

    /// The permit now; grants counted in the newest set.
    pub fn status(&self, now: Instant) -> Status {
        let newest = self.set();
        let granted = self
            .grants(&newest)
            .iter()
            .filter(|t| now < **t + self.settings.credit)
            .count();
        let needed = newest.peer_grants_needed();
        let end = self.end().filter(|e| now < *e);
        let through_api = end.is_some() && self.peer_end().is_none_or(|p| now >= p);
        let lack = match end {
            Some(_) => None,
            None if !self.usable() => Some(Lack::NoGrantors),
            None if self.revoked => Some(Lack::Revoked),
            None => Some(Lack::TooFewGrants { granted, needed }),
        };
        Status {
            end,
            through_api,
            granted,
            needed,
            lack,
        }
    }

    /// What the feeding thread does at `now`, the device being `device`.
    /// Call it right before the ping, and again right after it: a ping
    /// delayed past its check is then followed by an expedite at once.
    pub fn feed(&mut self, now: Instant, device: Device) -> Feed {
        let feed = feed_for(self.end(), now, self.settings.watchdog_timeout, device);
        if matches!(feed, Feed::Ping { .. }) {
            self.armed = true;
        }
        feed
    }

    /// Whether this process has fed the device.
    pub fn armed(&self) -> bool {
        self.armed
    }
}

/// What the feeding thread does at `now` for a permit ending at `end`
/// (`None`: none) with the watchdog timeout `watchdog` and the device
/// `device`: ping with `T = min(watchdog, (end − now)/2)` in whole seconds
/// while that is at least [`EXPEDITED`]; after it, expedite a device that
/// runs with a longer timeout; else nothing. [`Holder::feed`] for a holder;
/// the agent's feeding thread, which holds only the permit's end, calls it
/// directly.
pub fn feed_for(end: Option<Instant>, now: Instant, watchdog: Duration, device: Device) -> Feed {
    let timeout = end
        .map(|end| end.saturating_duration_since(now) / 2)
        .map(|half| whole_seconds(half.min(watchdog)))
        .unwrap_or(Duration::ZERO);
    if timeout >= EXPEDITED {
        return Feed::Ping { timeout };
    }
    match device {
        Device::Running { timeout } if timeout > EXPEDITED => Feed::Expedite,
        Device::Running { .. } | Device::Closed => Feed::Idle,
    }
}

/// Whole seconds, rounded down (the devices take whole seconds; shorter is
/// safe, longer is not).
fn whole_seconds(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

#[cfg(test)]
mod tests;
