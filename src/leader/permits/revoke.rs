//! The leader's revocations and lifts through the permit objects and the
//! grantors (`docs/permits.md`, "The leader's revocation"): the API path
//! is closed on the node's permit object, the grantors stop granting and
//! answer, the deadline is computed and reported, and handed to the core
//! ([`Revocations::fences`]), which marks a node that fences through the
//! permit fenced by it; for a node of the safe-time protocol the safe time
//! still decides and the revocation runs beside it. The decisions are [`crate::decide::permit`]'s: [`object::close`],
//! [`object::lift`], [`object::api_path`], and
//! [`crate::decide::permit::revoke::Revocation`] for the stops and the
//! deadline; this module carries them.
//!
//! - A node is revoked while it has a valid fencing record the storm guard
//!   does not hold. The leader first closes the API path (the object's
//!   revocation, with the next fencing number, written with a precondition
//!   on the version read; a new leader finds it written and goes on under
//!   the same number), then sends the stop to the grantors of every set
//!   the object lists, each at most every [`ASK_EVERY`], until the
//!   deadline is known.
//! - A node whose object is revoked and whose record is gone (unfenced, or
//!   the fencing was abandoned) is lifted: the object first, then every
//!   listed grantor, until each acknowledged the lift in this leader's
//!   term (a new leader lifts every fenced-before node's grantors once
//!   more: a lift changes nothing at a grantor that has it already).
//! - A dry run, or a leader without the peer key, does none of it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use tokio::sync::mpsc;

use super::{Observed, PermitObjects};
use crate::decide::contract::record::RecordState;
use crate::decide::permit::object::{self, ListedSet, REVOCATION_ANNOTATION, Revocation as Mark};
use crate::decide::permit::revoke::{Deadline, Pending, Revocation, RevokeSettings};
use crate::decide::permit::{GrantorSet, Stop, StopAck};
use crate::decide::{Observations, PermitFence};
use crate::k8s::permit_object::{Edit, update};
use crate::observability::metrics::Metrics;
use crate::peers::auth::PeerKey;
use crate::peers::permit::send_stop;

/// A grantor without an answer is asked again this often.
pub const ASK_EVERY: Duration = Duration::from_secs(1);
/// How long a stop waits for its acknowledgement.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// A failed write of a permit object is tried again after this.
const RETRY: Duration = Duration::from_secs(2);

/// One revocation under way.
struct Revoking {
    /// The node's last heartbeat when it began (for the report).
    last_heartbeat: Option<Instant>,
    began: Instant,
    /// Once the API path is closed: the revocation, and where its grantors
    /// listen.
    closed: Option<(Revocation, BTreeMap<String, String>)>,
    next_close: Instant,
    asked: BTreeMap<String, Instant>,
    /// What was last reported (the deadline, or why there is none yet).
    told: Option<Result<Deadline, Pending>>,
    /// Whether the object, in the version the revocation was written on or
    /// a later one, says the node's agent armed its watchdog in the boot
    /// being fenced (lemma 7: only then does the permit prove a reset).
    armed: bool,
}

/// One node's lift at its grantors in this leader's term.
#[derive(Default)]
struct Lifting {
    fencing: u64,
    acked: BTreeSet<String>,
    asked: BTreeMap<String, Instant>,
}

/// One node's retirement of its older grantor sets in this leader's term.
#[derive(Default)]
struct Retiring {
    below: u64,
    acked: BTreeSet<String>,
    asked: BTreeMap<String, Instant>,
    next_write: Option<Instant>,
}

/// A grantor's answer to a stop.
struct Answer {
    node: String,
    grantor: String,
    stop: Stop,
    received: Instant,
    result: Result<StopAck, String>,
}

pub struct Revocations {
    key: Option<PeerKey>,
    settings: RevokeSettings,
    dry_run: bool,
    metrics: Metrics,
    active: BTreeMap<String, Revoking>,
    lifting: BTreeMap<String, Lifting>,
    retiring: BTreeMap<String, Retiring>,
    /// When the object of a revoked node whose record is gone may be
    /// written again.
    lift_retry: BTreeMap<String, Instant>,
    tx: mpsc::UnboundedSender<Answer>,
    rx: mpsc::UnboundedReceiver<Answer>,
}

/// Of `grantors` (name, address), those not asked within `every` before
/// `now`, marked asked now: a stop goes to each at most that often.
fn due(
    asked: &mut BTreeMap<String, Instant>,
    grantors: impl IntoIterator<Item = (String, String)>,
    now: Instant,
    every: Duration,
) -> Vec<(String, String)> {
    let due: Vec<(String, String)> = grantors
        .into_iter()
        .filter(|(g, _)| asked.get(g).is_none_or(|t| now >= *t + every))
        .collect();
    for (g, _) in &due {
        asked.insert(g.clone(), now);
    }
    due
}

/// The grantors' addresses in `sets`, by node.
fn addresses(sets: &[ListedSet]) -> BTreeMap<String, String> {
    sets.iter()
        .flat_map(|s| &s.grantors)
        .filter(|g| !g.address.is_empty())
        .map(|g| (g.node.clone(), g.address.clone()))
        .collect()
}

impl Revocations {
    pub fn new(
        key: Option<PeerKey>,
        settings: RevokeSettings,
        dry_run: bool,
        metrics: Metrics,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Revocations {
            key,
            settings,
            dry_run,
            metrics,
            active: BTreeMap::new(),
            lifting: BTreeMap::new(),
            retiring: BTreeMap::new(),
            lift_retry: BTreeMap::new(),
            tx,
            rx,
        }
    }

    /// One step at `now`: take in the grantors' answers, begin and end
    /// revocations by the records in `obs`, close, ask, report, lift.
    pub async fn step(&mut self, objects: &PermitObjects, obs: &Observations, now: Instant) {
        if self.dry_run || self.key.is_none() {
            return;
        }
        let Some(seen) = objects.seen() else {
            return;
        };
        self.take_answers();
        let wanted: BTreeSet<&String> = obs
            .nodes
            .iter()
            .filter(|(_, n)| {
                n.facts
                    .record
                    .valid()
                    .is_some_and(|r| r.held_since.is_none())
            })
            .map(|(name, _)| name)
            .filter(|name| seen.contains_key(*name))
            .collect();
        self.active.retain(|n, _| wanted.contains(n));
        for node in &wanted {
            if !self.active.contains_key(*node) {
                tracing::info!(node = %node, "permit revocation begins");
                self.active.insert(
                    (*node).clone(),
                    Revoking {
                        last_heartbeat: obs.nodes[*node].heartbeat.map(|h| h.last_renewal),
                        began: now,
                        closed: None,
                        next_close: now,
                        asked: BTreeMap::new(),
                        told: None,
                        armed: false,
                    },
                );
            }
        }
        let nodes: Vec<String> = self.active.keys().cloned().collect();
        for node in nodes {
            let boot = obs.nodes[&node]
                .facts
                .record
                .valid()
                .and_then(|r| r.boot_id.clone());
            self.revoke(objects.api(), &node, boot.as_deref(), &seen[&node], now)
                .await;
        }
        for (node, o) in &seen {
            let absent = obs
                .nodes
                .get(node)
                .is_none_or(|n| matches!(n.facts.record, RecordState::Absent));
            match o.state.revocation {
                Ok(r)
                    if r.revoked
                        && absent
                        && !self.active.contains_key(node)
                        && self.lift_retry.get(node).is_none_or(|t| now >= *t) =>
                {
                    self.lift_object(objects.api(), node, now).await;
                }
                Ok(r) if !r.revoked && r.fencing > 0 => {
                    self.lift_grantors(node, r.fencing, &o.state.sets, now)
                }
                _ => {}
            }
            if matches!(o.state.revocation, Ok(r) if !r.revoked) {
                self.retire(objects.api(), node, &o.state.sets, now).await;
            } else {
                // Revoked: the revocation blocks every listed set.
                self.retiring.remove(node);
            }
        }
        self.retiring.retain(|n, _| seen.contains_key(n));
    }

    /// Retire the older sets `sets` lists for `node`: the stop to their
    /// grantors each [`RETRY`] until enough acknowledged
    /// ([`object::retired`]), then the newest set alone on the object.
    async fn retire(&mut self, api: &Api<Lease>, node: &str, sets: &[ListedSet], now: Instant) {
        let Some((stop, to)) = object::retirement(node, sets) else {
            self.retiring.remove(node);
            return;
        };
        let Stop::Retire { below_version, .. } = stop else {
            return;
        };
        let r = self.retiring.entry(node.to_string()).or_default();
        if r.below != below_version {
            *r = Retiring {
                below: below_version,
                ..Default::default()
            };
        }
        if let Some(listing) = object::retired(sets, &r.acked) {
            if r.next_write.is_some_and(|t| now < t) {
                return;
            }
            match write_listing(api, node, sets, &listing).await {
                Ok(()) => {
                    tracing::info!(node = %node, below = below_version, "permit: older grantor sets retired and delisted");
                    self.retiring.remove(node);
                }
                Err(e) => {
                    tracing::warn!(node = %node, error = %e, "cannot delist the retired grantor sets; trying again");
                    r.next_write = Some(now + RETRY);
                }
            }
            return;
        }
        let unacked = to
            .into_iter()
            .filter(|g| !r.acked.contains(&g.node) && !g.address.is_empty())
            .map(|g| (g.node, g.address));
        for (grantor, address) in due(&mut r.asked, unacked, now, RETRY) {
            self.send(node, &grantor, address, stop.clone());
        }
    }

    /// Where each revocation stands, for the decision: the nodes whose
    /// agent fences through the permit.
    pub fn fences(&self, obs: &Observations) -> BTreeMap<String, PermitFence> {
        self.active
            .iter()
            .filter(|(node, _)| {
                obs.nodes
                    .get(*node)
                    .and_then(|n| n.facts.agent.valid())
                    .is_some_and(|a| a.permit_fence.is_some())
            })
            .map(|(node, r)| {
                let fence = match (&r.closed, &r.told) {
                    (None, _) => PermitFence::Pending("the API path is not closed yet".into()),
                    (Some(_), _) if !r.armed => PermitFence::NotArmed,
                    (Some(_), Some(Ok(d))) => PermitFence::Deadline(d.at),
                    (Some(_), Some(Err(p))) => PermitFence::Pending(format!("{p:?}")),
                    (Some(_), None) => PermitFence::Pending("no answer yet".into()),
                };
                (node.clone(), fence)
            })
            .collect()
    }

    fn take_answers(&mut self) {
        while let Ok(a) = self.rx.try_recv() {
            let kind = match a.stop {
                Stop::Lift { .. } => "lift",
                Stop::Retire { .. } => "retire",
                Stop::Revoke { .. } => "revoke",
            };
            let label = if a.result.is_ok() { "ok" } else { "error" };
            self.metrics
                .permit_stops
                .with_label_values(&[kind, label])
                .inc();
            let ack = match a.result {
                Ok(ack) => ack,
                Err(e) => {
                    tracing::debug!(node = %a.node, grantor = %a.grantor, error = %e, "no acknowledgement of a permit {kind}");
                    continue;
                }
            };
            match &a.stop {
                Stop::Retire { below_version, .. } => {
                    if let Some(r) = self
                        .retiring
                        .get_mut(&a.node)
                        .filter(|r| r.below == *below_version)
                    {
                        r.acked.insert(a.grantor);
                    }
                }
                Stop::Lift { fencing, .. } => {
                    if let Some(l) = self
                        .lifting
                        .get_mut(&a.node)
                        .filter(|l| l.fencing == *fencing)
                    {
                        l.acked.insert(a.grantor);
                    }
                }
                Stop::Revoke { .. } => {
                    if let Some((rev, _)) =
                        self.active.get_mut(&a.node).and_then(|r| r.closed.as_mut())
                    {
                        rev.acknowledged(&a.grantor, a.received, &a.stop, ack);
                    }
                }
            }
        }
    }

    async fn revoke(
        &mut self,
        api: &Api<Lease>,
        node: &str,
        boot: Option<&str>,
        observed: &Observed,
        now: Instant,
    ) {
        let r = self.active.get_mut(node).expect("active");
        if r.closed.is_some() && observed.state.armed_in(boot) {
            // Armed after the closing read (a later version): the device
            // ran from before that write, so the revocation bounds it too.
            r.armed = true;
        }
        if r.closed.is_none() && now >= r.next_close {
            match close(api, node, observed).await {
                Ok((rev, addresses, state)) => {
                    r.armed = state.armed_in(boot);
                    r.closed = Some((rev, addresses));
                }
                Err(e) => {
                    tracing::warn!(node = %node, error = %e, "cannot close the node's API path on its permit object; trying again");
                    r.next_close = now + RETRY;
                }
            }
        }
        let Some((rev, addresses)) = r.closed.as_mut() else {
            return;
        };
        let stop = rev.stop();
        let unanswered = rev
            .to_ask(now, &self.settings)
            .into_iter()
            .filter_map(|g| Some((g.clone(), addresses.get(&g)?.clone())));
        let to_send = due(&mut r.asked, unanswered, now, ASK_EVERY);
        let deadline = rev.deadline(now, &self.settings);
        if r.told.as_ref() != Some(&deadline) {
            match &deadline {
                Ok(d) => {
                    let after = |t: Instant| d.at.saturating_duration_since(t).as_secs_f64();
                    let since_heartbeat = r.last_heartbeat.map(after);
                    if let Some(s) = since_heartbeat {
                        self.metrics.permit_revocation_seconds.observe(s);
                    }
                    tracing::info!(
                        node = %node,
                        deadline_after_heartbeat_seconds = since_heartbeat,
                        deadline_after_begin_seconds = after(r.began),
                        permit_end_in_seconds = d.permit_end.saturating_duration_since(now).as_secs_f64(),
                        watchdog_seconds = d.watchdog_timeout.as_secs_f64(),
                        "permit revocation complete: the node is certainly reset by its deadline (which marks it fenced if it fences through the permit; beside a safe time, it is only reported)"
                    );
                }
                Err(p) => tracing::info!(node = %node, pending = ?p, "permit revocation waits"),
            }
            r.told = Some(deadline);
        }
        for (grantor, address) in to_send {
            self.send(node, &grantor, address, stop.clone());
        }
    }

    /// Write the lift on the object of `node` (revoked, its record gone).
    async fn lift_object(&mut self, api: &Api<Lease>, node: &str, now: Instant) {
        match write_mark(api, node, object::lift).await {
            Ok(Some(mark)) => {
                tracing::info!(node = %node, fencing = mark.fencing, "permit revocation lifted on the permit object");
                self.lift_retry.remove(node);
            }
            Ok(None) => {
                self.lift_retry.remove(node);
            }
            Err(e) => {
                tracing::warn!(node = %node, error = %e, "cannot lift the revocation on the permit object; trying again");
                self.lift_retry.insert(node.to_string(), now + RETRY);
            }
        }
    }

    /// Send the lift of fencing `fencing` to every grantor of `sets` that
    /// has not acknowledged it in this term.
    fn lift_grantors(&mut self, node: &str, fencing: u64, sets: &[ListedSet], now: Instant) {
        let l = self.lifting.entry(node.to_string()).or_default();
        if l.fencing != fencing {
            *l = Lifting {
                fencing,
                ..Default::default()
            };
        }
        let stop = Stop::Lift {
            node: node.to_string(),
            fencing,
        };
        let unacked = addresses(sets)
            .into_iter()
            .filter(|(g, _)| !l.acked.contains(g));
        for (grantor, address) in due(&mut l.asked, unacked, now, RETRY) {
            self.send(node, &grantor, address, stop.clone());
        }
    }

    fn send(&self, node: &str, grantor: &str, address: String, stop: Stop) {
        let Some(key) = self.key.clone() else {
            return;
        };
        let (tx, node, grantor) = (self.tx.clone(), node.to_string(), grantor.to_string());
        tokio::spawn(async move {
            let result = send_stop(&address, &key, &stop, STOP_TIMEOUT)
                .await
                .map_err(|e| e.to_string());
            let _ = tx.send(Answer {
                node,
                grantor,
                stop,
                received: Instant::now(),
                result,
            });
        });
    }
}

/// Close the API path of `node`: read its object, write the revocation
/// [`object::close`] asks for (with a precondition on the version read),
/// and start the revocation under its fencing number with the sets the
/// object lists.
async fn close(
    api: &Api<Lease>,
    node: &str,
    observed: &Observed,
) -> Result<(Revocation, BTreeMap<String, String>, object::PermitState), String> {
    let (mark, write, state) = update(api, node, |state| {
        let (mark, write) = object::close(state).map_err(|_| {
            format!("the {REVOCATION_ANNOTATION} annotation is unreadable: the next fencing number is unknown")
        })?;
        let edit = write.then(|| Edit::Set(REVOCATION_ANNOTATION, object::render_value(&mark)));
        Ok((edit, (mark, write, state.clone())))
    })
    .await?;
    // The renewal the object carries was written before this read
    // returned; when the watch delivered the same one earlier, it counts
    // from then.
    let first_seen = if super::same_renewal(&observed.state.renewal, &state.renewal) {
        observed.renewal_seen
    } else {
        Instant::now()
    };
    let api_path = object::api_path(state.renewal, first_seen);
    let sets: Vec<GrantorSet> = state.sets.iter().map(ListedSet::set).collect();
    tracing::info!(node = %node, fencing = mark.fencing, written = write, api = ?api_path, sets = ?sets, "permit: the node's API path is closed");
    let mut rev = Revocation::numbered(node, mark.fencing, sets.clone());
    rev.api_closed(api_path, sets);
    let addresses = addresses(&state.sets);
    Ok((rev, addresses, state))
}

/// Write on the object of `node` the revocation `change` makes of what it
/// says (with a precondition on the version read); the mark written, or
/// `None` when there was nothing to change.
async fn write_mark(
    api: &Api<Lease>,
    node: &str,
    change: fn(&object::PermitState) -> Option<Mark>,
) -> Result<Option<Mark>, String> {
    update(api, node, |state| {
        let mark = change(state);
        let edit = mark.map(|m| Edit::Set(REVOCATION_ANNOTATION, object::render_value(&m)));
        Ok((edit, mark))
    })
    .await
}

/// Replace the listing `sets` of `node`'s object by `listing` (read again
/// first: written only while the object is not revoked and still lists
/// exactly `sets`, with a precondition on the version read).
async fn write_listing(
    api: &Api<Lease>,
    node: &str,
    sets: &[ListedSet],
    listing: &[ListedSet],
) -> Result<(), String> {
    update(api, node, |state| {
        if !matches!(state.revocation, Ok(r) if !r.revoked) || state.sets != sets {
            return Err("the object changed since the retirement began".into());
        }
        let edit = Edit::Set(object::GRANTORS_ANNOTATION, object::render(listing));
        Ok((Some(edit), ()))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grantor_is_asked_at_most_once_an_interval() {
        let t0 = Instant::now();
        let mut asked = BTreeMap::new();
        let g = |n: &str| (n.to_string(), format!("{n}:9747"));
        let names = |v: Vec<(String, String)>| v.into_iter().map(|(n, _)| n).collect::<Vec<_>>();
        assert_eq!(
            names(due(&mut asked, [g("a"), g("b")], t0, RETRY)),
            ["a", "b"]
        );
        let soon = t0 + RETRY - Duration::from_millis(1);
        assert!(due(&mut asked, [g("a"), g("b")], soon, RETRY).is_empty());
        assert_eq!(names(due(&mut asked, [g("a"), g("c")], soon, RETRY)), ["c"]);
        assert_eq!(
            names(due(&mut asked, [g("a"), g("c")], t0 + RETRY, RETRY)),
            ["a"]
        );
    }
}
