//! Leader election over a `coordination.k8s.io/v1` Lease.
//!
//! Every agent watches the leader Lease (field selector on its name) and
//! judges it by when it *observed* it change; [`election::step`] says what to do.
//! Followers make no request at steady state; they try to acquire only when
//! `step` says so. The leader renews every `retry_period` (a third of the
//! lease duration) and, when it cannot renew within `renew_deadline`, stops
//! acting at once. On shutdown the leader stops acting and then releases the
//! Lease (clears `holderIdentity`) so a follower takes over immediately.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::decide::election::{self, ElectionSettings, LeaseObs, Step};
use crate::k8s::ApiContact;
use crate::k8s::is_status;
use crate::observability::{Health, Metrics};
use crate::status::summary::{LEADER_STATUS_ANNOTATION, LeaderSummary};

/// The leader's latest summary: written by its loop after every decision,
/// put on the leader Lease by the renewals (`kube-fencer status` reads it),
/// cleared when leadership ends.
pub type Published = Arc<watch::Sender<Option<LeaderSummary>>>;

/// Shared "may I still act as leader?" check. The election loop extends it
/// on every successful renewal; everything that writes checks it first, so a
/// leader that cannot renew stops writing at the deadline even if its
/// election loop is stuck.
#[derive(Clone, Debug, Default)]
pub struct Leadership {
    valid_until: Arc<Mutex<Option<Instant>>>,
}

impl Leadership {
    pub fn is_valid(&self, now: Instant) -> bool {
        self.valid_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| now < t)
    }

    /// Until when leadership is granted, if it is.
    pub fn valid_until(&self) -> Option<Instant> {
        *self.valid_until.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long leadership remains valid from `now`; `None` once it is not.
    pub fn remaining(&self, now: Instant) -> Option<std::time::Duration> {
        self.valid_until()
            .filter(|t| now < *t)
            .map(|t| t.duration_since(now))
    }

    fn set(&self, until: Option<Instant>) {
        *self.valid_until.lock().unwrap_or_else(|e| e.into_inner()) = until;
    }

    /// Grants leadership until `until` (tests and the election loop).
    pub fn grant_until(&self, until: Instant) {
        self.set(Some(until));
    }

    pub fn revoke(&self) {
        self.set(None);
    }
}

/// Starts the leader's work when this agent becomes leader.
pub type LeaderTask = Box<dyn FnMut(Leadership) -> JoinHandle<()> + Send>;

pub struct Election {
    api: Api<Lease>,
    name: String,
    settings: ElectionSettings,
    metrics: Metrics,
    health: Health,
    contact: ApiContact,
    leadership: Leadership,
    published: Published,
}

/// The observed leader Lease.
struct Observed {
    lease: Option<Lease>,
    obs: Option<LeaseObs>,
}

/// The election loop's state between wake-ups.
struct Campaign {
    observed: Observed,
    /// The watch completed its first list.
    synced: bool,
    init_buffer: Option<Lease>,
    /// When the last successful write (acquire or renew) started.
    last_renew: Option<Instant>,
    /// The leader's loop, while leading.
    leading: Option<JoinHandle<()>>,
    /// No write before this (backoff after a failed one).
    next_attempt: Instant,
}

impl Observed {
    fn update(&mut self, lease: Option<Lease>, now: Instant, default_duration: Duration) {
        let rv = lease
            .as_ref()
            .and_then(|l| l.metadata.resource_version.clone());
        let changed = match (&self.obs, &lease) {
            (Some(o), Some(_)) => o.resource_version != rv,
            (None, None) => false,
            _ => true,
        };
        self.obs = lease.as_ref().map(|l| {
            let spec = l.spec.as_ref();
            LeaseObs {
                holder: spec
                    .and_then(|s| s.holder_identity.clone())
                    .filter(|h| !h.is_empty()),
                resource_version: rv.clone(),
                changed_at: match &self.obs {
                    Some(o) if !changed => o.changed_at,
                    _ => now,
                },
                duration: spec
                    .and_then(|s| s.lease_duration_seconds)
                    .filter(|s| *s > 0)
                    .map(|s| Duration::from_secs(s as u64))
                    .unwrap_or(default_duration),
            }
        });
        self.lease = lease;
    }
}

impl Election {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        settings: ElectionSettings,
        metrics: Metrics,
        health: Health,
        contact: ApiContact,
    ) -> Self {
        Election {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            settings,
            metrics,
            health,
            contact,
            leadership: Leadership::default(),
            published: Arc::new(watch::channel(None).0),
        }
    }

    /// Where the leader's loop publishes its summary.
    pub fn published(&self) -> Published {
        self.published.clone()
    }

    /// The leader-status annotation a renewal writes: the summary, or none
    /// (a summary of an earlier leadership says nothing now).
    fn annotate(&self, meta: &mut ObjectMeta) {
        let summary = self.published.borrow().as_ref().map(LeaderSummary::to_json);
        let annotations = meta.annotations.get_or_insert_with(Default::default);
        match summary {
            Some(json) => {
                annotations.insert(LEADER_STATUS_ANNOTATION.to_string(), json);
            }
            None => {
                annotations.remove(LEADER_STATUS_ANNOTATION);
            }
        }
    }

    /// Run until `shutdown` turns true. Starts `leader_task` on becoming
    /// leader, aborts it on stepping down; on shutdown aborts it and releases
    /// the Lease.
    pub async fn run(self, mut leader_task: LeaderTask, mut shutdown: watch::Receiver<bool>) {
        let mut stream = watcher::watcher(
            self.api.clone(),
            watcher::Config::default().fields(&format!("metadata.name={}", self.name)),
        )
        .default_backoff()
        .boxed();
        let mut c = Campaign {
            observed: Observed {
                lease: None,
                obs: None,
            },
            synced: false,
            init_buffer: None,
            last_renew: None,
            leading: None,
            next_attempt: Instant::now(),
        };
        loop {
            if *shutdown.borrow() {
                break;
            }
            let wake = self.act(&mut c, &mut leader_task).await;
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = tokio::time::sleep_until(wake.into()) => {}
                item = stream.next() => match item {
                    Some(Ok(event)) => self.on_event(&mut c, event),
                    Some(Err(e)) => {
                        self.metrics.watch_error("leader_lease");
                        tracing::warn!(error = %e, "leader Lease watch failed; retrying");
                    }
                    None => break,
                },
            }
        }

        // Shutdown: stop acting first, then hand the Lease over.
        let was_leader = c.leading.is_some();
        self.stop_leading(&mut c.leading).await;
        if was_leader {
            self.release(&c.observed).await;
        }
    }

    /// Carry out the core's step now; returns when to act again at the latest.
    async fn act(&self, c: &mut Campaign, leader_task: &mut LeaderTask) -> Instant {
        let s = &self.settings;
        let now = Instant::now();
        let step = if c.synced {
            election::step(c.observed.obs.as_ref(), c.last_renew, now, s)
        } else {
            Step::Follow {
                until: now + s.retry_period,
            }
        };
        let mut wake = match step {
            Step::StepDown => {
                if c.leading.is_some() {
                    tracing::warn!(
                        deadline = ?s.renew_deadline,
                        "could not renew the leader Lease in time: stepping down"
                    );
                }
                self.stop_leading(&mut c.leading).await;
                c.last_renew = None;
                now + s.retry_period.min(Duration::from_secs(1))
            }
            Step::Follow { until } => {
                if c.leading.is_some() {
                    tracing::warn!(
                        holder = ?c.observed.obs.as_ref().and_then(|o| o.holder.clone()),
                        "the leader Lease is held by another agent: stepping down"
                    );
                    self.stop_leading(&mut c.leading).await;
                    c.last_renew = None;
                }
                until.max(now + Duration::from_millis(100))
            }
            Step::Acquire | Step::Renew if now < c.next_attempt => c.next_attempt,
            Step::Renew
                if c.leading.is_some()
                    && c.last_renew.is_some_and(|t| now < t + s.retry_period) =>
            {
                c.last_renew.expect("checked") + s.retry_period
            }
            Step::Acquire | Step::Renew => {
                self.write_lease(c, step == Step::Acquire, leader_task)
                    .await
            }
        };
        // A leader must also notice its own deadline while waiting.
        if c.leading.is_some()
            && let Some(t) = c.last_renew
        {
            wake = wake.min(t + s.renew_deadline);
        }
        wake
    }

    /// Acquire or renew the Lease; start leading when it is newly ours.
    /// Returns when to act again.
    async fn write_lease(
        &self,
        c: &mut Campaign,
        acquiring: bool,
        leader_task: &mut LeaderTask,
    ) -> Instant {
        let s = &self.settings;
        let started = Instant::now();
        match self.write(&c.observed, acquiring).await {
            Ok(lease) => {
                self.contact.seen();
                c.last_renew = Some(started);
                self.leadership.grant_until(started + s.renew_deadline);
                c.observed
                    .update(Some(lease), Instant::now(), s.lease_duration);
                if c.leading.is_none() {
                    tracing::info!(identity = %s.identity, lease = %self.name, "became leader");
                    self.metrics.leader.set(1);
                    self.metrics.leader_transitions.inc();
                    self.health.set_leader(true);
                    c.leading = Some(leader_task(self.leadership.clone()));
                }
                started + s.retry_period
            }
            Err(e) => {
                let verb = if c.observed.lease.is_some() {
                    "update"
                } else {
                    "create"
                };
                if is_status(&e, 409) {
                    tracing::debug!("leader Lease changed under us; waiting for the watch");
                } else {
                    self.metrics.api_error(verb, "leases");
                    tracing::warn!(error = %e, acquiring, "could not write the leader Lease");
                }
                // Retry soon while leading (the renew deadline is close), else at the retry period.
                let backoff = if c.leading.is_some() {
                    Duration::from_secs(1).min(s.retry_period)
                } else {
                    s.retry_period
                };
                c.next_attempt = Instant::now() + backoff;
                c.next_attempt
            }
        }
    }

    /// One event of the leader Lease watch.
    fn on_event(&self, c: &mut Campaign, event: Event<Lease>) {
        let lease_duration = self.settings.lease_duration;
        if crate::k8s::api_contact::is_api_contact(&event) {
            self.contact.seen();
        }
        let now = Instant::now();
        match event {
            Event::Init => c.init_buffer = None,
            Event::InitApply(l) => c.init_buffer = Some(l),
            Event::InitDone => {
                // Conservative: a (re)listed Lease counts as just changed.
                c.observed.obs = None;
                c.observed.update(c.init_buffer.take(), now, lease_duration);
                c.synced = true;
            }
            Event::Apply(l) => c.observed.update(Some(l), now, lease_duration),
            Event::Delete(_) => c.observed.update(None, now, lease_duration),
        }
        // A change may allow an immediate acquisition attempt.
        c.next_attempt = c.next_attempt.min(now);
    }

    async fn stop_leading(&self, leading: &mut Option<JoinHandle<()>>) {
        self.leadership.revoke();
        if let Some(handle) = leading.take() {
            handle.abort();
            let _ = handle.await;
            tracing::info!("stopped acting as leader");
        }
        self.published.send_replace(None);
        self.metrics.leader.set(0);
        self.metrics.clear_leader_gauges();
        self.health.set_leader(false);
    }

    /// Create, take over or renew the Lease, with the observed
    /// resourceVersion as precondition.
    async fn write(&self, observed: &Observed, acquiring: bool) -> Result<Lease, kube::Error> {
        let s = &self.settings;
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let timeout = s.retry_period.max(Duration::from_secs(1));
        let request = async {
            match &observed.lease {
                None => {
                    let lease = Lease {
                        metadata: ObjectMeta {
                            name: Some(self.name.clone()),
                            ..Default::default()
                        },
                        spec: Some(LeaseSpec {
                            holder_identity: Some(s.identity.clone()),
                            lease_duration_seconds: Some(s.lease_duration.as_secs() as i32),
                            acquire_time: Some(now.clone()),
                            renew_time: Some(now),
                            lease_transitions: Some(0),
                            ..Default::default()
                        }),
                    };
                    self.api.create(&PostParams::default(), &lease).await
                }
                Some(current) => {
                    let mut lease = current.clone();
                    lease.metadata.managed_fields = None;
                    let spec = lease.spec.get_or_insert_with(Default::default);
                    let holder_changes =
                        spec.holder_identity.as_deref() != Some(s.identity.as_str());
                    if acquiring || holder_changes {
                        spec.acquire_time = Some(now.clone());
                        if holder_changes {
                            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                        }
                    }
                    spec.holder_identity = Some(s.identity.clone());
                    spec.lease_duration_seconds = Some(s.lease_duration.as_secs() as i32);
                    spec.renew_time = Some(now);
                    self.annotate(&mut lease.metadata);
                    self.api
                        .replace(&self.name, &PostParams::default(), &lease)
                        .await
                }
            }
        };
        match tokio::time::timeout(timeout, request).await {
            Ok(r) => r,
            Err(_) => Err(kube::Error::Service(
                format!("leader Lease write timed out after {timeout:?}").into(),
            )),
        }
    }

    /// Clear holderIdentity so that a follower may take over at once.
    async fn release(&self, observed: &Observed) {
        let mut current = observed.lease.clone();
        for _ in 0..3 {
            let Some(mut lease) = current.take() else {
                return;
            };
            let spec = lease.spec.get_or_insert_with(Default::default);
            if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
                return;
            }
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            lease.metadata.managed_fields = None;
            let params = PostParams::default();
            let write = self.api.replace(&self.name, &params, &lease);
            match tokio::time::timeout(Duration::from_secs(5), write).await {
                Ok(Ok(_)) => {
                    tracing::info!(lease = %self.name, "released the leader Lease");
                    return;
                }
                Ok(Err(e)) if is_status(&e, 409) => {
                    current = self.api.get_opt(&self.name).await.ok().flatten();
                }
                Ok(Err(e)) => {
                    self.metrics.api_error("update", "leases");
                    tracing::warn!(error = %e, "could not release the leader Lease");
                    return;
                }
                Err(_) => {
                    tracing::warn!("releasing the leader Lease timed out");
                    return;
                }
            }
        }
        let _ = observed.lease.as_ref().map(|l| l.name_any());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_lease_watch_that_cannot_reach_the_api_is_no_contact() {
        let contact = ApiContact::default();
        let health = Health::new(Duration::from_secs(30), contact.clone());
        let settings = ElectionSettings {
            identity: "a".into(),
            lease_duration: Duration::from_secs(12),
            renew_deadline: Duration::from_secs(8),
            retry_period: Duration::from_secs(4),
        };
        let election = Election::new(
            crate::k8s::own_node::tests::refusing_client(),
            "kube-fencer",
            "kube-fencer-leader",
            settings,
            Metrics::new(),
            health,
            contact.clone(),
        );
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(election.run(Box::new(|_| tokio::spawn(async {})), rx));
        // The watcher restarts (Event::Init) about every second.
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        let _ = stop.send(true);
        let _ = task.await;
        assert_eq!(
            contact.last(),
            None,
            "a watch (re)start is not a response from the API server"
        );
    }

    #[test]
    fn leadership_expires() {
        let l = Leadership::default();
        let t0 = Instant::now();
        assert!(!l.is_valid(t0));
        l.grant_until(t0 + Duration::from_secs(10));
        assert!(l.is_valid(t0 + Duration::from_secs(9)));
        assert!(!l.is_valid(t0 + Duration::from_secs(10)));
        l.revoke();
        assert!(!l.is_valid(t0));
    }

    #[test]
    fn observed_tracks_changes_by_resource_version() {
        let lease = |rv: &str, holder: Option<&str>| Lease {
            metadata: ObjectMeta {
                name: Some("kube-fencer-leader".into()),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(Into::into),
                lease_duration_seconds: Some(15),
                ..Default::default()
            }),
        };
        let d = Duration::from_secs(30);
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(3);
        let mut o = Observed {
            lease: None,
            obs: None,
        };
        o.update(Some(lease("1", Some("a"))), t0, d);
        let obs = o.obs.clone().unwrap();
        assert_eq!(obs.holder.as_deref(), Some("a"));
        assert_eq!(obs.changed_at, t0);
        assert_eq!(obs.duration, Duration::from_secs(15));
        o.update(Some(lease("1", Some("a"))), t1, d);
        assert_eq!(o.obs.as_ref().unwrap().changed_at, t0, "same rv: no change");
        o.update(Some(lease("2", Some(""))), t1, d);
        let obs = o.obs.clone().unwrap();
        assert_eq!(obs.changed_at, t1);
        assert_eq!(obs.holder, None, "empty holder means free");
        o.update(None, t1, d);
        assert!(o.obs.is_none());
    }
}
