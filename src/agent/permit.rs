//! The permit's holder, in shadow mode (design: `docs/permits.md`).
//!
//! Every agent renews a permit with a few of its peers every renewal
//! interval, exactly as the permit protocol will, and reports whether it
//! could hold one — without feeding its watchdog from it yet (the watchdog
//! still follows the self-check of [`crate::agent::self_check`]). What this
//! buys now is the protocol's install-time check: a node whose peers cannot
//! grant it a permit (the peer port blocked between nodes, a wrong key, too
//! few peers) says so at once — log, Event, `kube_fencer_permit_held` —
//! instead of finding out during the API outage that needed its peers.
//! When its peers' grants run short, it renews through the API server on
//! its own permit object (the degraded mode; `kube_fencer_permit_through_api`),
//! which the leader's revocation closes.
//!
//! Until the leader assigns grantor sets, each agent takes the first
//! `grantors` peers of its own peer order (a hash of its name and theirs,
//! [`crate::agent::self_check::peer_order`]) as its set.

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::agent::self_check::NO_ADDRESS_PEER;
use crate::decide::permit::holder::{ApiOutcome, Command, Holder, HolderSettings, Lack, Status};
use crate::decide::permit::object::ListedSet;
use crate::decide::permit::{Answer, GrantorSet};
use crate::observability::Metrics;
use crate::observability::events::{EventSink, node_ref};
use crate::peers::auth::PeerKey;
use crate::peers::permit::send_renewal;

/// The grantor set an agent picks for itself from its ordered peer list:
/// the first `grantors` peers with an address.
pub fn own_set(version: u64, peers: &[String], grantors: usize) -> GrantorSet {
    let chosen = peers
        .iter()
        .filter(|p| !p.starts_with(NO_ADDRESS_PEER))
        .take(grantors)
        .cloned()
        .collect();
    GrantorSet::new(version, chosen)
}

/// What the operator was last told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Told {
    Nothing,
    Held,
    NotHeld,
}

/// The shadow holder's task.
pub struct PermitTask {
    pub node: String,
    pub boot: String,
    pub key: PeerKey,
    pub settings: HolderSettings,
    /// Peers in the set (fewer where fewer are known).
    pub grantors: usize,
    /// The self-check's peers (addresses), in its order.
    pub peers: watch::Receiver<Vec<String>>,
    /// The sets the leader lists on this node's permit object
    /// ([`watch_own_permit`]); `None` or empty: none yet.
    pub assigned: watch::Receiver<Option<Vec<ListedSet>>>,
    pub metrics: Metrics,
    pub events: EventSink,
    /// The agents' permit objects (this node renews through its own when
    /// its peers' grants run short); `None`: no renewal through the API.
    pub objects: Option<kube::Api<k8s_openapi::api::coordination::v1::Lease>>,
    /// `--fencing-protocol=permit`: the device the permit feeds, and the
    /// holder's file; `None`: shadow mode (nothing is fed).
    pub feeding: Option<Feeding>,
}

/// What the permit feeds, and where the holder keeps its credits.
pub struct Feeding {
    pub device: Box<dyn feed::Device>,
    pub state_file: std::path::PathBuf,
}

impl std::fmt::Debug for Feeding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feeding")
            .field("state_file", &self.state_file)
            .finish_non_exhaustive()
    }
}

pub mod feed;
pub mod saved;

/// Where the sets a holder renews with come from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Source {
    /// The leader's permit object: grantors by node name, with addresses.
    Assigned(Vec<ListedSet>),
    /// The agent's own choice from its peers (addresses stand for names).
    Own(Vec<String>),
}

impl Source {
    fn sets(&self, grantors: usize) -> Vec<GrantorSet> {
        match self {
            Source::Assigned(listed) => listed.iter().map(ListedSet::set).collect(),
            Source::Own(peers) => vec![own_set(1, peers, grantors)],
        }
    }

    /// The address of grantor `name`.
    fn address(&self, name: &str) -> Option<String> {
        match self {
            Source::Assigned(listed) => listed
                .iter()
                .rev()
                .flat_map(|s| &s.grantors)
                .find(|g| g.node == name && !g.address.is_empty())
                .map(|g| g.address.clone()),
            Source::Own(_) => Some(name.to_string()),
        }
    }

    fn same_kind(&self, other: &Source) -> bool {
        matches!(
            (self, other),
            (Source::Assigned(_), Source::Assigned(_)) | (Source::Own(_), Source::Own(_))
        )
    }
}

impl PermitTask {
    /// The sets to renew with now: the leader's (as last read, by the
    /// watch or by a read after a `Retired` answer), else the agent's own.
    /// Under the permit (`gating`), only the leader's sets: a set the
    /// leader never listed is one its revocation would not block; an empty
    /// listing (the object deleted, a watch restarting) keeps `previous`.
    fn source(&mut self, read: &Option<Vec<ListedSet>>, gating: bool, previous: &Source) -> Source {
        let watched = self.assigned.borrow_and_update().clone();
        match read.as_ref().or(watched.as_ref()) {
            Some(listed) if !listed.is_empty() => Source::Assigned(listed.clone()),
            _ if gating => previous.clone(),
            _ => Source::Own(self.peers.borrow_and_update().clone()),
        }
    }

    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut holder = Holder::new(&self.node, &self.boot, self.settings);
        let started = Instant::now();
        let gating = self.feeding.is_some();
        let mut source = if gating {
            Source::Assigned(Vec::new())
        } else {
            Source::Own(Vec::new())
        };
        // Under the permit: what an earlier process of this boot saved,
        // then the feeding thread, with the permit it restores.
        let mut feeding: Option<(feed::Feeder, std::path::PathBuf)> = None;
        let mut armed_saved = false;
        if let Some(f) = self.feeding.take() {
            let before = saved::load(&f.state_file, &self.boot);
            let running = before.as_ref().is_some_and(|(armed, _)| *armed);
            if let Some((_, s)) = before {
                holder.restore(s);
                tracing::info!(permit_end_in = ?holder.end().map(|e| e.saturating_duration_since(Instant::now())), armed = running, "permit credits restored from an earlier process of this boot");
            }
            armed_saved = running;
            match feed::Feeder::start(
                f.device,
                self.settings.watchdog_timeout,
                running,
                holder.end(),
            ) {
                Ok(feeder) => feeding = Some((feeder, f.state_file)),
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the permit's feeding thread: the watchdog is never armed")
                }
            }
        }
        let mut last_saved = holder.saved();
        let mut arming_written = false;
        let mut next_arming = Instant::now();
        let (arm_tx, mut arm_rx) = mpsc::unbounded_channel::<bool>();
        let mut current = GrantorSet::default();
        let (tx, mut rx) = mpsc::unbounded_channel::<(String, u64, Answer)>();
        let (api_tx, mut api_rx) = mpsc::unbounded_channel::<(u64, ApiOutcome)>();
        // A grantor answered `Retired`: the leader listed a newer set than
        // the watch delivered (it lags, or stalled). The object read then
        // counts until the watch delivers again.
        let (read_tx, mut read_rx) = mpsc::unbounded_channel::<Vec<ListedSet>>();
        let mut read: Option<Vec<ListedSet>> = None;
        let mut reading = false;
        let mut told = Told::Nothing;
        loop {
            let now_source = self.source(&read, gating, &source);
            if now_source != source {
                if !now_source.same_kind(&source) && !gating {
                    // Versions of the two sources do not compare: start over.
                    holder = Holder::new(&self.node, &self.boot, self.settings);
                    tracing::info!(
                        assigned = matches!(now_source, Source::Assigned(_)),
                        "permit grantors now come from {}",
                        if matches!(now_source, Source::Assigned(_)) {
                            "the leader's permit object"
                        } else {
                            "this agent's own peers"
                        }
                    );
                }
                let restarted = !now_source.same_kind(&source) && !gating;
                let mut sets = now_source.sets(self.grantors);
                if let Source::Own(_) = now_source {
                    // A changed own choice is one version newer; the same
                    // choice from a changed peer list changes nothing.
                    let v = holder.set().version + 1;
                    sets.iter_mut().for_each(|s| s.version = v);
                }
                let newest = sets.last().cloned().unwrap_or_default();
                if restarted
                    || matches!(now_source, Source::Assigned(_))
                    || newest.peers != current.peers
                {
                    current = newest;
                    holder.set_grantors(sets);
                }
                source = now_source;
            }
            let now = Instant::now();
            for command in holder.tick(now) {
                match command {
                    Command::Renew { to, renewal } => {
                        for grantor in to {
                            let (key, renewal, tx, metrics) = (
                                self.key.clone(),
                                renewal.clone(),
                                tx.clone(),
                                self.metrics.clone(),
                            );
                            let timeout = self.settings.renew_interval;
                            let address = source.address(&grantor);
                            tokio::spawn(async move {
                                let result = match address {
                                    Some(a) => send_renewal(&a, &key, &renewal, timeout).await,
                                    None => Err(crate::peers::AskError::NoAddress),
                                };
                                let label = if result.is_ok() { "ok" } else { "error" };
                                metrics
                                    .peer_requests
                                    .with_label_values(&["out", label])
                                    .inc();
                                match result {
                                    Ok(answer) => {
                                        let _ = tx.send((grantor, renewal.round, answer));
                                    }
                                    Err(e) => {
                                        tracing::debug!(grantor = %grantor, error = %e, "no answer to a permit renewal");
                                    }
                                }
                            });
                        }
                    }
                    Command::RenewThroughApi {
                        round,
                        credit,
                        watchdog_timeout,
                    } => {
                        let (objects, node, tx, metrics) = (
                            self.objects.clone(),
                            self.node.clone(),
                            api_tx.clone(),
                            self.metrics.clone(),
                        );
                        tokio::spawn(async move {
                            let outcome = match objects {
                                Some(api) => {
                                    renew_through_api(&api, &node, credit, watchdog_timeout).await
                                }
                                None => ApiOutcome::Failed,
                            };
                            let label = match outcome {
                                ApiOutcome::Renewed => "renewed",
                                ApiOutcome::Revoked => "revoked",
                                ApiOutcome::Failed => "failed",
                            };
                            metrics
                                .permit_api_renewals
                                .with_label_values(&[label])
                                .inc();
                            let _ = tx.send((round, outcome));
                        });
                    }
                }
            }
            let status = holder.status(now);
            self.report(&status);
            if let Some((feeder, file)) = &feeding {
                feeder.set_end(holder.end());
                let armed = armed_saved || feeder.armed();
                let saved_now = holder.saved();
                if saved_now != last_saved || armed != armed_saved {
                    if let Err(e) = saved::save(file, &self.boot, armed, &saved_now) {
                        tracing::warn!(error = %e, "cannot save the permit's credits: a restart of this agent would start without them");
                    }
                    last_saved = saved_now;
                    armed_saved = armed;
                }
                if armed && !arming_written && now >= next_arming {
                    next_arming = now + Duration::from_secs(5);
                    if let Some(api) = self.objects.clone() {
                        let (node, boot, tx) =
                            (self.node.clone(), self.boot.clone(), arm_tx.clone());
                        tokio::spawn(async move {
                            let _ = tx.send(write_arming(&api, &node, Some(&boot)).await.is_ok());
                        });
                    }
                }
            }
            // A fresh start holds nothing until its first grants are in:
            // judged after one credit.
            if now.saturating_duration_since(started) >= self.settings.credit {
                told = self.tell(told, &status, &current);
            }
            let wake = holder
                .next_wake()
                .unwrap_or(now + self.settings.renew_interval)
                .max(now + Duration::from_millis(10));
            tokio::select! {
                Some((grantor, round, answer)) = rx.recv() => {
                    holder.answered(&grantor, round, answer);
                    if answer == Answer::Retired
                        && !reading
                        && let Some(api) = self.objects.clone()
                    {
                        reading = true;
                        let (node, tx) = (self.node.clone(), read_tx.clone());
                        tokio::spawn(async move {
                            let sets = read_own_sets(&api, &node).await;
                            let _ = tx.send(sets.unwrap_or_default());
                        });
                    }
                }
                Some(ok) = arm_rx.recv() => {
                    if ok && !arming_written {
                        arming_written = true;
                        tracing::info!(boot = %self.boot, "this node's watchdog is armed under the permit (recorded on its permit object)");
                    }
                }
                Some(sets) = read_rx.recv() => {
                    reading = false;
                    if !sets.is_empty() {
                        tracing::info!(version = sets.last().map_or(0, |s| s.version), "a grantor retired this node's grantor set: read the current one");
                        read = Some(sets);
                    }
                }
                Some((round, outcome)) = api_rx.recv() => {
                    holder.api_answered(Instant::now(), round, outcome);
                }
                _ = tokio::time::sleep_until(wake.into()) => {}
                changed = self.peers.changed() => {
                    if changed.is_err() {
                        // The self-check ended: its peers stay as they were.
                        tokio::time::sleep_until(wake.into()).await;
                    }
                }
                changed = self.assigned.changed() => {
                    read = None;
                    if changed.is_err() {
                        // The watch ended: the sets stay as they were.
                        tokio::time::sleep_until(wake.into()).await;
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
        if let Some((feeder, _)) = feeding {
            self.disarm(&feeder).await;
        }
    }

    /// A graceful stop under the permit: withdraw the arming from the
    /// permit object (refused once the node is revoked: its fencing must go
    /// through), then close the device with the magic character. When the
    /// arming cannot be withdrawn the device stays armed: the node resets
    /// unless a new agent feeds it in time.
    async fn disarm(&self, feeder: &feed::Feeder) {
        if !feeder.armed() {
            let _ = feeder.disarm();
            return;
        }
        let withdrawn = match &self.objects {
            Some(api) => write_arming(api, &self.node, None).await,
            None => Err("no API client".into()),
        };
        match withdrawn {
            Ok(()) => match feeder.disarm() {
                Ok(()) => {
                    tracing::info!("arming withdrawn from the permit object; watchdog disarmed")
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot disarm the watchdog: the node resets unless a new agent feeds it")
                }
            },
            Err(e) => {
                tracing::error!(error = %e, "cannot withdraw the arming from the permit object: the watchdog stays armed, and the node resets unless a new agent feeds it in time")
            }
        }
    }

    fn report(&self, status: &Status) {
        self.metrics
            .permit_held
            .set(i64::from(status.end.is_some()));
        self.metrics
            .permit_through_api
            .set(i64::from(status.end.is_some() && status.through_api));
        self.metrics
            .permit_grants
            .set(i64::try_from(status.granted).unwrap_or(i64::MAX));
        self.metrics
            .permit_grants_needed
            .set(i64::try_from(status.needed).unwrap_or(i64::MAX));
    }

    /// Say when the permit from the peers comes or goes (a permit held
    /// only through the API server is the degraded mode: reported as
    /// unavailable from the peers).
    fn tell(&self, told: Told, status: &Status, set: &GrantorSet) -> Told {
        let now = if status.end.is_some() && !status.through_api {
            Told::Held
        } else {
            Told::NotHeld
        };
        if now == told {
            return told;
        }
        let regarding = node_ref(&self.node, None);
        if now == Told::Held {
            tracing::info!(
                granted = status.granted,
                needed = status.needed,
                grantors = ?set.peers,
                "this node holds a permit from its peers"
            );
            if told == Told::NotHeld {
                self.events.normal(
                    regarding,
                    "PermitHeld",
                    "Renew",
                    &format!(
                        "this node holds a permit from its peers again: {} of {} peer grants",
                        status.granted, status.needed
                    ),
                );
            }
            return now;
        }
        let lack = status.lack.unwrap_or(Lack::TooFewGrants {
            granted: status.granted,
            needed: status.needed,
        });
        let why = describe(Some(lack), set);
        let message = if status.end.is_some() {
            format!(
                "this node's peers do not grant it a permit: {why}; it holds one through the API server meanwhile (degraded: an API outage now would leave it without one)"
            )
        } else {
            format!(
                "this node cannot hold a permit from its peers: {why}; once self-fencing is gated on the permit, such a node never arms its watchdog and is never fenced automatically"
            )
        };
        tracing::warn!(grantors = ?set.peers, "{message}");
        self.events
            .warning(regarding, "PermitUnavailable", "Renew", &message);
        now
    }
}

/// Renew this node's permit through the API server: read its permit
/// object (a quorum read), and unless it says the node is revoked
/// ([`object::renew`]), write the renewal with a precondition on the
/// version read — the leader's revocation, written the same way, and this
/// renewal can never both take effect on one version. A timeout bounds
/// the request: a slow answer counts as none.
async fn renew_through_api(
    api: &kube::Api<k8s_openapi::api::coordination::v1::Lease>,
    node: &str,
    credit: Duration,
    watchdog_timeout: Duration,
) -> ApiOutcome {
    use crate::decide::permit::object::{self, RENEWAL_ANNOTATION};
    use crate::k8s::permit_object::{Edit, update};
    let attempt = update(api, node, |state| {
        Ok(match object::renew(state, credit, watchdog_timeout) {
            None => (None, ApiOutcome::Revoked),
            Some(renewal) => (
                Some(Edit::Set(
                    RENEWAL_ANNOTATION,
                    object::render_value(&renewal),
                )),
                ApiOutcome::Renewed,
            ),
        })
    });
    match tokio::time::timeout(API_RENEW_TIMEOUT, attempt).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "permit renewal through the API server failed");
            ApiOutcome::Failed
        }
        Err(_) => ApiOutcome::Failed,
    }
}

/// Record on this node's permit object that its agent armed its watchdog
/// in boot `boot`, or (`None`) withdraw that — refused once the object
/// says the node is revoked (a fencing must go through). A conditional
/// update of the version read, read and decided again on a conflict.
async fn write_arming(
    api: &kube::Api<k8s_openapi::api::coordination::v1::Lease>,
    node: &str,
    boot: Option<&str>,
) -> Result<(), String> {
    use crate::decide::permit::object::{self, ARMED_ANNOTATION, Armed};
    use crate::k8s::permit_object::{Edit, update_fresh};
    update_fresh(api, node, ARMING_ATTEMPTS, |state| {
        if state.armed.as_deref() == boot {
            return Ok((None, ()));
        }
        let edit = match boot {
            Some(boot) => Edit::Set(
                ARMED_ANNOTATION,
                object::render_value(&Armed {
                    boot: boot.to_string(),
                }),
            ),
            None if !matches!(state.revocation, Ok(r) if !r.revoked) => {
                return Err("the node is revoked: its fencing goes through".into());
            }
            None => Edit::Remove(ARMED_ANNOTATION),
        };
        Ok((Some(edit), ()))
    })
    .await
}

/// How many times the arming or its withdrawal is read, decided and
/// written when the permit object keeps changing in between: while a
/// DaemonSet is deleted every grantor writes its silence report, and a
/// withdrawal lost to one leaves the watchdog armed.
const ARMING_ATTEMPTS: usize = 5;

/// The sets this node's permit object lists now (a quorum read).
async fn read_own_sets(
    api: &kube::Api<k8s_openapi::api::coordination::v1::Lease>,
    node: &str,
) -> Option<Vec<ListedSet>> {
    use crate::decide::permit::object;
    let read = tokio::time::timeout(API_RENEW_TIMEOUT, api.get(&object::name(node))).await;
    match read {
        Ok(Ok(lease)) => Some(object::read(lease.metadata.annotations.as_ref()).sets),
        _ => None,
    }
}

/// How long a renewal through the API server may take.
const API_RENEW_TIMEOUT: Duration = Duration::from_secs(5);

/// Watch this node's permit object (`kube-fencer-permit-<node>` in
/// `namespace`: one object, whatever the cluster's size) and publish the
/// sets it lists; `None` while there is none. Watch errors are retried
/// with backoff, the last sets kept meanwhile.
pub fn watch_own_permit(
    client: kube::Client,
    namespace: &str,
    node: &str,
    metrics: Metrics,
) -> (
    watch::Receiver<Option<Vec<ListedSet>>>,
    tokio::task::JoinHandle<()>,
) {
    use futures::StreamExt;
    use k8s_openapi::api::coordination::v1::Lease;
    use kube::runtime::{WatchStreamExt, watcher};

    use crate::decide::permit::object::{self, GRANTORS_ANNOTATION};

    let (tx, rx) = watch::channel(None);
    let api: kube::Api<Lease> = kube::Api::namespaced(client, namespace);
    let config =
        watcher::Config::default().fields(&format!("metadata.name={}", object::name(node)));
    let task = tokio::spawn(async move {
        let mut events = watcher::watcher(api, config).default_backoff().boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Apply(lease) | watcher::Event::InitApply(lease)) => {
                    let sets = lease
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(GRANTORS_ANNOTATION))
                        .and_then(|t| object::parse(t));
                    tx.send_replace(sets);
                }
                Ok(watcher::Event::Delete(_)) => {
                    tx.send_replace(None);
                }
                Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
                Err(e) => {
                    metrics.watch_error("permit");
                    tracing::debug!(error = %e, "permit object watch failed; retrying");
                }
            }
        }
    });
    (rx, task)
}

/// Why no permit, for operators.
pub fn describe(lack: Option<Lack>, set: &GrantorSet) -> String {
    match lack {
        None => "it holds one".to_string(),
        Some(Lack::NoGrantors) => {
            "no peer with a peer address is known (a cluster of one node, or no agent advertised --peer-listen)".to_string()
        }
        Some(Lack::Revoked) => "its peers revoked it: the leader is fencing this node".to_string(),
        Some(Lack::TooFewGrants { granted, needed }) => format!(
            "{granted} of the {needed} peer grants it needs from {} (is the peer port open between nodes, and do all agents have the same peer key?)",
            set.peers.join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    const KEY: &str = "0123456789abcdef0123";

    fn settings() -> HolderSettings {
        HolderSettings {
            renew_interval: Duration::from_millis(100),
            credit: Duration::from_millis(600),
            api_credit: Duration::from_secs(2),
            watchdog_timeout: Duration::from_secs(5),
        }
    }

    /// A grantor with the key `KEY` on a local port; its address.
    async fn grantor(name: &str) -> String {
        let dir = std::env::temp_dir().join(format!("kf-holder-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let grants = crate::peers::permit::Grants::start(
            Some(crate::peers::permit::memory::path(&dir, name)),
            Some("boot"),
            Duration::ZERO,
        )
        .unwrap();
        crate::peers::serve_test_peer(
            KEY,
            "http://127.0.0.1:9",
            crate::k8s::ApiContact::default(),
            crate::peers::auth::unix_now,
            Some(grants),
        )
        .await
    }

    /// Run a holder with `key` against `peers` until `until` holds of its
    /// metrics, or 10 s; its metrics and the Events it sent.
    async fn holder_until(
        key: &str,
        peers: Vec<String>,
        until: impl Fn(&Metrics) -> bool,
    ) -> (Metrics, Vec<crate::observability::events::EventMsg>) {
        holder_with(key, peers, None, until).await
    }

    /// [`holder_until`] with the leader's sets `assigned`.
    async fn holder_with(
        key: &str,
        peers: Vec<String>,
        assigned: Option<Vec<ListedSet>>,
        until: impl Fn(&Metrics) -> bool,
    ) -> (Metrics, Vec<crate::observability::events::EventMsg>) {
        let metrics = Metrics::new();
        let (events, mut events_rx) = EventSink::channel(16, metrics.clone());
        let (_peers_tx, peers_rx) = watch::channel(peers);
        let (_assigned_tx, assigned_rx) = watch::channel(assigned);
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(
            PermitTask {
                node: "me".into(),
                boot: "boot".into(),
                key: PeerKey::from_bytes(key.as_bytes()).unwrap(),
                settings: settings(),
                grantors: 4,
                peers: peers_rx,
                assigned: assigned_rx,
                metrics: metrics.clone(),
                events,
                objects: None,
                feeding: None,
            }
            .run(stop_rx),
        );
        let start = Instant::now();
        while !until(&metrics) && start.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop_tx.send(true).unwrap();
        task.await.unwrap();
        let mut sent = Vec::new();
        while let Ok(e) = events_rx.try_recv() {
            sent.push(e);
        }
        (metrics, sent)
    }

    #[tokio::test]
    async fn a_node_whose_peers_grant_holds_a_permit() {
        let peers = vec![grantor("g1").await, grantor("g2").await];
        let (m, events) = holder_until(KEY, peers, |m| m.permit_held.get() == 1).await;
        assert_eq!(m.permit_held.get(), 1);
        // Three voters (two peers and the node): one peer grant needed.
        assert_eq!(m.permit_grants_needed.get(), 1);
        assert!(m.permit_grants.get() >= 1);
        assert!(events.is_empty(), "{events:?}");
    }

    #[tokio::test]
    async fn a_node_refused_by_its_peers_says_so_once() {
        let peers = vec![grantor("r1").await, grantor("r2").await];
        let (m, events) = holder_until("another-key-0123456", peers, |m| {
            // Past the first credit, and a few rounds more.
            m.peer_requests.with_label_values(&["out", "error"]).get() >= 20
        })
        .await;
        assert_eq!(m.permit_held.get(), 0);
        assert_eq!(m.permit_grants.get(), 0);
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].reason, "PermitUnavailable");
        assert!(events[0].warning);
        assert!(events[0].note.contains("0 of the 1"), "{}", events[0].note);
    }

    #[tokio::test]
    async fn the_leaders_sets_come_before_the_agents_own_choice() {
        use crate::decide::permit::object::Grantor;
        let (g1, g2) = (grantor("l1").await, grantor("l2").await);
        let listed = |a: &str, b: &str| {
            Some(vec![ListedSet {
                version: 4,
                grantors: vec![
                    Grantor {
                        node: "n1".into(),
                        address: a.into(),
                    },
                    Grantor {
                        node: "n2".into(),
                        address: b.into(),
                    },
                ],
            }])
        };
        // The own peers do not answer; the leader's grantors do.
        let dead = vec!["127.0.0.1:1".to_string(), "127.0.0.1:2".to_string()];
        let (m, _) = holder_with(KEY, dead.clone(), listed(&g1, &g2), |m| {
            m.permit_held.get() == 1
        })
        .await;
        assert_eq!(m.permit_held.get(), 1);
        // The leader's grantors do not answer (no address, a dead one);
        // the own peers would: the leader's word holds, no permit.
        let (m, _) = holder_with(
            KEY,
            vec![g1.clone(), g2.clone()],
            listed("", "127.0.0.1:1"),
            |m| m.peer_requests.with_label_values(&["out", "error"]).get() >= 20,
        )
        .await;
        assert_eq!(m.permit_held.get(), 0);
        // No object (or an empty one): the own choice.
        let (m, _) = holder_with(KEY, vec![g1, g2], Some(vec![]), |m| {
            m.permit_held.get() == 1
        })
        .await;
        assert_eq!(m.permit_held.get(), 1);
    }

    #[test]
    fn the_own_set_skips_peers_without_an_address_and_keeps_the_order() {
        let list = peers(&["c:1", "no-address/x", "a:1", "b:1", "d:1"]);
        let set = own_set(3, &list, 3);
        assert_eq!(set.version, 3);
        // GrantorSet keeps its members sorted.
        assert_eq!(set.peers, peers(&["a:1", "b:1", "c:1"]));
        assert_eq!(own_set(1, &peers(&["no-address/x"]), 3).peers.len(), 0);
    }

    #[test]
    fn the_reasons_name_what_to_check() {
        let set = GrantorSet::new(1, peers(&["a:9747", "b:9747"]));
        let why = describe(
            Some(Lack::TooFewGrants {
                granted: 0,
                needed: 2,
            }),
            &set,
        );
        assert!(why.contains("0 of the 2"), "{why}");
        assert!(why.contains("a:9747, b:9747"), "{why}");
        assert!(why.contains("peer key"), "{why}");
        assert!(describe(Some(Lack::NoGrantors), &set).contains("no peer"));
    }
}

/// The graceful stop's withdrawal against a mocked API server: the permit
/// object changes between the read and the write (every grantor writes
/// its silence report on the same object while a DaemonSet is deleted).
#[cfg(test)]
mod withdrawal_tests {
    use http::{Method, Request, Response, StatusCode};
    use http_body_util::BodyExt;
    use kube::client::Body;
    use serde_json::{Value, json};

    use crate::decide::permit::object::{self, ARMED_ANNOTATION, Armed, SILENT_ANNOTATION};

    type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

    fn lease(version: &str, annotations: Value) -> Response<Body> {
        let body = json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": object::name("me"), "namespace": "kube-fencer",
                         "resourceVersion": version, "annotations": annotations},
            "spec": {},
        });
        Response::builder()
            .status(StatusCode::OK)
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap()
    }

    fn conflict() -> Response<Body> {
        let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": "the object has been modified",
            "reason": "Conflict", "code": 409});
        Response::builder()
            .status(StatusCode::CONFLICT)
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap()
    }

    async fn body_json(req: Request<Body>) -> Value {
        let bytes = req.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn a_withdrawal_that_meets_a_concurrent_write_reads_again_and_goes_through() {
        let (service, mut handle): (_, Handle) = tower_test::mock::pair();
        let api = kube::Api::namespaced(kube::Client::new(service, "kube-fencer"), "kube-fencer");
        let armed = object::render_value(&Armed { boot: "b1".into() });
        let server = tokio::spawn(async move {
            let (req, send) = handle.next_request().await.expect("read");
            assert_eq!(req.method(), Method::GET);
            send.send_response(lease("1", json!({ARMED_ANNOTATION: armed})));
            let (req, send) = handle.next_request().await.expect("write");
            assert_eq!(req.method(), Method::PUT);
            send.send_response(conflict());
            // A grantor's silence report landed meanwhile.
            let (req, send) = handle.next_request().await.expect("read again");
            assert_eq!(req.method(), Method::GET);
            send.send_response(lease(
                "2",
                json!({ARMED_ANNOTATION: armed, SILENT_ANNOTATION: "{}"}),
            ));
            let (req, send) = handle.next_request().await.expect("write again");
            assert_eq!(req.method(), Method::PUT);
            let body = body_json(req).await;
            send.send_response(lease("3", json!({SILENT_ANNOTATION: "{}"})));
            body
        });
        let withdrawn = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            super::write_arming(&api, "me", None),
        )
        .await
        .expect("the withdrawal ends");
        drop(api);
        let body = server.await.expect("read again and written again");
        assert_eq!(withdrawn, Ok(()));
        assert_eq!(body["metadata"]["resourceVersion"], "2", "{body}");
        let written = &body["metadata"]["annotations"];
        assert!(written.get(ARMED_ANNOTATION).is_none(), "{body}");
        assert_eq!(
            written[SILENT_ANNOTATION], "{}",
            "the report is kept: {body}"
        );
    }
}
