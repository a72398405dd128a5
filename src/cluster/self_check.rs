//! The agent's guard over its own node (every agent, leader or not): the
//! I/O shell of the self-check core ([`crate::decide::selfcheck`]).
//!
//! The core decides everything — when to probe `/readyz`, whom to ask,
//! the verdict, when the watchdog may be fed, when to advertise and to
//! refresh the peers — on an injected clock. This loop only
//!
//! - sleeps until the core's `next_wake()` or until an input arrives: a
//!   genuine API contact ([`ApiContact::subscribe`](crate::ops::ApiContact::subscribe)), the own Node's
//!   record (a `tokio::sync::watch` fed by the own-Node watch,
//!   [`super::own_node`]), or the result of a command;
//! - carries out each command in a task of its own (probe, ask each peer,
//!   advertise, refresh the peers, the self-fence action), which sends its
//!   result back on a channel, so no API call ever blocks the loop;
//! - feeds the watchdog's dead man's switch (`PermitFeeding`), reports the
//!   verdict (log, `kube_fencer_self_fence_state`,
//!   `kube_fencer_api_check_failures`, `kube_fencer_peers`), and persists
//!   what a restarted agent resumes from ([`super::agent_state`]).

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use tokio::sync::{mpsc, watch};

use super::peer_auth::PeerKey;
use super::peers::{self, Question};
use super::self_fence_means::{Method, SYSRQ_TRIGGER, SelfFenceMeans};
pub use super::watchdog::Watchdog;
use crate::config::AgentConfig;
use crate::decide::selfcheck::{self, CheckSettings, Command, Input, PeerReply, SelfCheck};
use crate::decide::selffence::Verdict;
use crate::decide::{self, AgentAdvert, RecordState};
use crate::ops::{ApiContact, Metrics};

/// Nodes per page of the peer discovery list (a metadata-only list: labels
/// and annotations are all it needs; bounds the agent's memory).
pub const PEER_PAGE: u32 = 100;

/// How a member of the fencing population without a usable peer address
/// appears in the peer list: it is asked like any peer and never answers.
pub const NO_ADDRESS_PEER: &str = "no-address/";

/// Which Nodes are this agent's peers: the leader's fencing population
/// ([`decide::guard::in_population`]), from the same `--node-selector` and
/// `--manage-control-plane` the DaemonSet gives every agent.
#[derive(Clone, Debug)]
pub struct Population {
    pub node_selector: decide::Selector,
    pub manage_control_plane: bool,
}

/// Read the boot ID (trimmed); `None` when unreadable or empty.
pub fn read_boot_id(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The address peers reach this agent at: `--peer-advertise`, else
/// `--peer-listen` when it names a host, else the Node's first address
/// (InternalIP first) with the `--peer-listen` port.
pub fn peer_address(cfg: &AgentConfig, node: Option<&Node>) -> Option<String> {
    if let Some(a) = &cfg.peer_advertise {
        return Some(a.clone());
    }
    let listen = cfg.peer_listen?;
    if !listen.ip().is_unspecified() {
        return Some(listen.to_string());
    }
    let ip = node.map(super::facts::addresses)?.into_iter().next()?;
    Some(if ip.contains(':') {
        format!("[{ip}]:{}", listen.port())
    } else {
        format!("{ip}:{}", listen.port())
    })
}

/// How another Node counts in this agent's peer list: not at all when it
/// is outside the fencing population; else by its agent's advertised peer
/// address; else (no agent advertised, or a withdrawn advertisement) as a
/// peer that never answers ([`NO_ADDRESS_PEER`]).
///
/// Every member counts, answering or not, because the majority rules must
/// be taken over the population the leader's storm guard counts: a group cut
/// off together that the leader may fence (fewer than half of the
/// population) must hear from fewer than half of its peers, however many of
/// the others run no agent. The price: an agent-less member is silence, so
/// in a control-plane outage the agents need a majority of the population
/// to answer (run the agent on every node of the population).
pub fn population_peer(
    name: &str,
    labels: &std::collections::BTreeMap<String, String>,
    annotations: Option<&std::collections::BTreeMap<String, String>>,
    population: &Population,
) -> Option<String> {
    if !decide::guard::in_population(
        labels,
        &population.node_selector,
        population.manage_control_plane,
    ) {
        return None;
    }
    let address = annotations
        .and_then(|a| a.get(decide::AGENT_ANNOTATION))
        .and_then(|v| decide::advert::parse(v).valid()?.peer_address.clone());
    Some(address.unwrap_or_else(|| format!("{NO_ADDRESS_PEER}{name}")))
}

/// Order peers by a hash of (this node, peer): every agent walks the peers
/// in a different order, so the load of a wide failure spreads, and no
/// naming scheme (racks, zones) decides whom a node asks first.
pub fn peer_order(node: &str, peers: &mut [String]) {
    use std::hash::{Hash, Hasher};
    let key = |p: &String| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (node, p.as_str()).hash(&mut h);
        h.finish()
    };
    peers.sort_by_cached_key(|p| (key(p), p.clone()));
}

/// The boot ID file and the state file are touched at most this often: a
/// leader's loop wakes on every API contact (hundreds of watch events a
/// second in a large cluster).
const REREAD: Duration = Duration::from_secs(1);

/// Whether `now` must be written over what was `saved`: anything but the
/// last contact changed, or the contact moved on by [`REREAD`] (a persisted
/// contact that is a little old only makes a restarted agent probe sooner).
fn needs_saving(saved: Option<&selfcheck::Previous>, now: &selfcheck::Previous) -> bool {
    if now.boot_id.is_empty() {
        return false; // unknown boot: a successor could not tell it is ours
    }
    let Some(saved) = saved else {
        return true;
    };
    if saved.boot_id != now.boot_id
        || saved.self_fence_decided != now.self_fence_decided
        || saved.peers != now.peers
    {
        return true;
    }
    match (saved.last_contact, now.last_contact) {
        (None, Some(_)) => true,
        (Some(a), Some(b)) => b.saturating_duration_since(a) >= REREAD,
        _ => false,
    }
}

/// How long ago the own kubelet renewed its Lease, by this node's wall
/// clock (the kubelet's own): zero for a renewTime in the future.
fn lease_age(renewed: Option<std::time::SystemTime>) -> Option<Input> {
    let age = std::time::SystemTime::now()
        .duration_since(renewed?)
        .unwrap_or_default();
    Some(Input::KubeletLease { age })
}

/// The metric label of a verdict.
fn label(v: &Verdict) -> &'static str {
    match v {
        Verdict::Healthy => "healthy",
        Verdict::Consulting { .. } => "consulting",
        Verdict::ControlPlaneOutage { .. } => "outage",
        Verdict::SelfFence(_) => "self_fencing",
    }
}

/// The core's settings from the agent's flags and its means of fencing.
pub fn check_settings(cfg: &AgentConfig, means: &SelfFenceMeans) -> CheckSettings {
    CheckSettings {
        api_check_interval: cfg.api_check_interval,
        api_check_timeout: cfg.api_check_timeout,
        api_failure_threshold: cfg.api_failure_threshold,
        peer_silence_timeout: cfg.peer_silence_timeout,
        action: means.action(),
        watchdog_timeout: means.timeout,
        static_peers: !cfg.static_peers.is_empty(),
        kubelet_stale_after: Some(cfg.kubelet_stale_after),
    }
}

/// What the self-check loop last reported.
#[derive(Default)]
struct Reported {
    failures: u32,
    peers_known: Option<usize>,
}

/// The self-check's state file (`--state-dir`): what a restarted agent of
/// the same boot resumes from. Only kept when the agent may fence itself.
struct Persisted {
    enabled: bool,
    file: std::path::PathBuf,
    /// What was last written.
    saved: Option<selfcheck::Previous>,
    /// The last write failed (said once).
    failed: bool,
}

impl Persisted {
    /// What the predecessor of this boot left.
    fn load(&self, boot: Option<&str>) -> Option<selfcheck::Previous> {
        let previous = self
            .enabled
            .then(|| super::agent_state::load(&self.file, boot))
            .flatten();
        if let Some(p) = &previous {
            tracing::info!(
                file = %self.file.display(),
                last_api_contact_seconds_ago = ?p.last_contact.map(|t| t.elapsed().as_secs_f64()),
                self_fence_decided = p.self_fence_decided,
                "resuming the self-check of this agent's predecessor (same boot)"
            );
        }
        previous
    }

    /// Write the check's state when it changed in a way worth keeping.
    fn save(&mut self, check: &SelfCheck) {
        if !self.enabled {
            return;
        }
        let previous = check.previous();
        if !needs_saving(self.saved.as_ref(), &previous) {
            return;
        }
        match super::agent_state::save(&self.file, &previous) {
            Ok(()) => {
                self.saved = Some(previous);
                self.failed = false;
            }
            Err(e) if !self.failed => {
                self.failed = true;
                tracing::warn!(file = %self.file.display(), error = %e, "cannot persist the self-check (--state-dir): a restart of this agent would start its checks from scratch");
            }
            Err(_) => {}
        }
    }
}

/// Why the advertisement on the own Node could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum AdvertError {
    #[error("timed out")]
    TimedOut,
    #[error(transparent)]
    Api(#[from] kube::Error),
}

/// The self-check's shell: runs the core's [`SelfCheck`]; its I/O handles are cheap to clone into the command tasks.
#[derive(Clone)]
pub struct SelfCheckTask {
    pub client: Client,
    pub node: String,
    pub cfg: AgentConfig,
    pub key: Option<PeerKey>,
    pub metrics: Metrics,
    /// The record on the own Node, from the own-Node watch
    /// ([`super::own_node::watch_own_node`]).
    pub own_record: watch::Receiver<RecordState>,
    /// The own kubelet's Lease renewTime, from the own-Lease watch
    /// ([`super::own_node::watch_own_lease`]).
    pub kubelet_lease: watch::Receiver<Option<std::time::SystemTime>>,
    /// The clock of genuine API contact (shared with the watches, the
    /// election and the peer endpoint).
    pub contact: ApiContact,
    /// What start-up found this node can fence itself with.
    pub means: SelfFenceMeans,
    /// Which Nodes are peers.
    pub population: Population,
}

impl SelfCheckTask {
    fn advert(&self, boot_id: Option<&str>, peer_address: Option<String>) -> AgentAdvert {
        AgentAdvert {
            self_fence: self.means.action(),
            watchdog_timeout: self.means.timeout,
            api_check_interval: self.cfg.api_check_interval,
            api_check_timeout: self.cfg.api_check_timeout,
            api_failure_threshold: self.cfg.api_failure_threshold,
            peer_silence_timeout: self.cfg.peer_silence_timeout,
            boot_id: boot_id.unwrap_or_default().to_string(),
            peer_address,
            self_fence_unavailable: self.means.unavailable().map(String::from),
            kubelet_stale_after: Some(self.cfg.kubelet_stale_after),
        }
    }

    /// Write the advertisement of this boot on the own Node.
    async fn advertise(&self, boot_id: &str) -> Result<(), AdvertError> {
        let api: Api<Node> = Api::all(self.client.clone());
        let node = tokio::time::timeout(self.cfg.api_check_timeout * 2, api.get(&self.node))
            .await
            .map_err(|_| AdvertError::TimedOut)??;
        self.contact.seen();
        let boot = Some(boot_id).filter(|b| !b.is_empty());
        let advert = self.advert(boot, peer_address(&self.cfg, Some(&node)));
        self.write_advert(&advert).await
    }

    /// Patch `advert` onto the own Node's annotation.
    async fn write_advert(&self, advert: &AgentAdvert) -> Result<(), AdvertError> {
        let api: Api<Node> = Api::all(self.client.clone());
        let value = decide::advert::render(advert);
        let patch =
            serde_json::json!({"metadata": {"annotations": {decide::AGENT_ANNOTATION: value}}});
        tokio::time::timeout(
            self.cfg.api_check_timeout * 2,
            api.patch(&self.node, &PatchParams::default(), &Patch::Merge(&patch)),
        )
        .await
        .map_err(|_| AdvertError::TimedOut)??;
        self.contact.seen();
        tracing::info!(node = %self.node, advertisement = %value, "advertised this agent on its Node");
        Ok(())
    }

    /// Withdraw the self-fence promise (graceful shutdown): advertise
    /// `selfFence: none` without a peer address (a stopped agent is no peer:
    /// counting it would make a real outage look like isolation), and only
    /// once that is written disarm the watchdog. If it cannot be written (the
    /// node is cut off), the Node still says "capable" and the leader may
    /// delete this node's pods after its safe time: the watchdog stays armed,
    /// its permit lapses and it resets the node.
    pub async fn withdraw(&self) -> Result<(), AdvertError> {
        if !self.means.capable() {
            return Ok(());
        }
        let boot = read_boot_id(&self.cfg.boot_id_file);
        let mut advert = self.advert(boot.as_deref(), None);
        advert.self_fence = decide::SelfFenceAction::None;
        match self.write_advert(&advert).await {
            Ok(()) => {
                if let Some(w) = self.means.watchdog() {
                    w.disarm();
                    tracing::info!("self-fence advertisement withdrawn; watchdog disarmed");
                }
                Ok(())
            }
            Err(e) => {
                if self.means.watchdog().is_some() {
                    tracing::error!(error = %e, watchdog_timeout = ?self.means.timeout, "could not withdraw the self-fence advertisement: the watchdog stays armed and resets this node once its feeds stop");
                } else {
                    tracing::warn!(error = %e, "could not withdraw the self-fence advertisement");
                }
                Err(e)
            }
        }
    }

    async fn probe_readyz(&self, timeout: Duration) -> bool {
        let req = match axum::http::Request::get("/readyz").body(Vec::new()) {
            Ok(r) => r,
            Err(_) => return false,
        };
        let ok = matches!(
            tokio::time::timeout(timeout, self.client.request_text(req)).await,
            Ok(Ok(_))
        );
        if ok {
            self.contact.seen();
        }
        ok
    }

    /// The other members of the fencing population as peers (ordered for
    /// this agent, see [`population_peer`]), or `None` when the list failed
    /// (the cached peers are kept).
    async fn discover_peers(&self) -> Option<Vec<String>> {
        let api: Api<Node> = Api::all(self.client.clone());
        let mut peers: Vec<String> = Vec::new();
        let mut params = ListParams::default().limit(PEER_PAGE);
        loop {
            let listed =
                tokio::time::timeout(self.cfg.api_check_timeout * 2, api.list_metadata(&params))
                    .await;
            let Ok(Ok(page)) = listed else {
                tracing::debug!("peer discovery failed; keeping the cached peers");
                return None;
            };
            self.contact.seen();
            // Keep only the addresses: a page of Nodes is dropped at once.
            let empty = std::collections::BTreeMap::new();
            peers.extend(page.items.iter().filter_map(|n| {
                let name = n.metadata.name.as_deref()?;
                if name == self.node {
                    return None;
                }
                let labels = n.metadata.labels.as_ref().unwrap_or(&empty);
                population_peer(
                    name,
                    labels,
                    n.metadata.annotations.as_ref(),
                    &self.population,
                )
            }));
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        peers.sort();
        peers.dedup();
        peer_order(&self.node, &mut peers);
        Some(peers)
    }

    /// Carry out the self-fence action. Returns whether it was carried out.
    async fn fence_self(&self, why: &str) -> bool {
        if !self.means.capable() {
            tracing::error!(node = %self.node, reason = %why, "this node should fence itself, but --self-fence=none: not fencing (the leader does not mark it fenced on time alone either)");
            return true;
        }
        // Stop feeding before anything that may block (logging included).
        if let Some(w) = self.means.watchdog() {
            w.stop_feeding();
        }
        tracing::error!(node = %self.node, reason = %why, action = self.means.action().as_str(), "SELF-FENCING this node");
        match &self.means.method {
            Method::None { .. } | Method::Watchdog(_) => true,
            Method::SysrqReboot => match std::fs::write(SYSRQ_TRIGGER, b"b") {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(error = %e, "writing b to /proc/sysrq-trigger failed; retrying");
                    false
                }
            },
            Method::Exec(cmd) => {
                let run = tokio::process::Command::new("sh")
                    .arg("-c")
                    .arg(cmd)
                    .env("NODE_NAME", &self.node)
                    .env("KUBE_FENCER_SELF_FENCE_REASON", why)
                    .kill_on_drop(true)
                    .status();
                match tokio::time::timeout(self.means.timeout, run).await {
                    Ok(Ok(s)) if s.success() => true,
                    other => {
                        tracing::error!(outcome = ?other, "the self-fence command failed; retrying");
                        false
                    }
                }
            }
        }
    }

    /// Carry out the core's commands; results come back on `results`.
    fn execute(&self, commands: Vec<Command>, results: &mpsc::UnboundedSender<Input>) {
        for command in commands {
            match command {
                Command::Probe { timeout } => {
                    let (g, tx) = (self.clone(), results.clone());
                    tokio::spawn(async move {
                        let ok = g.probe_readyz(timeout).await;
                        let _ = tx.send(Input::ProbeDone { ok });
                    });
                }
                Command::AskPeers { peers, timeout } => self.ask_peers(peers, timeout, results),
                Command::Advertise { boot_id } => {
                    let (g, tx) = (self.clone(), results.clone());
                    tokio::spawn(async move {
                        let ok = match g.advertise(&boot_id).await {
                            Ok(()) => true,
                            Err(e) => {
                                tracing::warn!(error = %e, "could not advertise this agent on its Node");
                                false
                            }
                        };
                        let _ = tx.send(Input::Advertised { ok });
                    });
                }
                Command::RefreshPeers => {
                    let (g, tx) = (self.clone(), results.clone());
                    tokio::spawn(async move {
                        let found = if g.cfg.static_peers.is_empty() {
                            g.discover_peers().await
                        } else {
                            Some(g.cfg.static_peers.clone())
                        };
                        let answering = |p: &Vec<String>| {
                            p.iter().filter(|a| !a.starts_with(NO_ADDRESS_PEER)).count()
                        };
                        if found.as_ref().is_some_and(|p| answering(p) == 0) && g.means.capable() {
                            tracing::warn!(
                                "no peers known yet: if the API server became unreachable now, this agent could not tell an outage from isolation and would fence its node"
                            );
                        }
                        let _ = tx.send(match found {
                            Some(p) => Input::Peers(p),
                            None => Input::PeersRefreshFailed,
                        });
                    });
                }
                Command::PermitFeeding { until } => {
                    if let Some(w) = self.means.watchdog() {
                        w.permit_until(until);
                    }
                }
                Command::SelfFence { description } => {
                    let (g, tx) = (self.clone(), results.clone());
                    tokio::spawn(async move {
                        let ok = g.fence_self(&description).await;
                        let _ = tx.send(Input::SelfFenceDone { ok });
                    });
                }
                Command::VerdictChanged(v) => {
                    self.metrics.set_self_fence_state(label(&v));
                    tracing::warn!(verdict = label(&v), "self-fence check: {}", v.describe());
                }
            }
        }
    }

    /// Ask each peer concurrently, each in a task of its own.
    fn ask_peers(
        &self,
        batch: Vec<String>,
        timeout: Duration,
        results: &mpsc::UnboundedSender<Input>,
    ) {
        let key = self.key.clone();
        let q = Question {
            from: self.node.clone(),
            node: self.node.clone(),
        };
        for peer in batch {
            let (key, q, tx, metrics) = (
                key.clone(),
                q.clone(),
                results.clone(),
                self.metrics.clone(),
            );
            tokio::spawn(async move {
                let result = match &key {
                    _ if peer.starts_with(NO_ADDRESS_PEER) => Err(peers::AskError::NoAddress),
                    Some(key) => peers::ask_peer(&peer, key, &q, timeout).await,
                    None => Err(peers::AskError::NoKey),
                };
                let reply = match result {
                    Ok(a) => {
                        metrics
                            .peer_requests
                            .with_label_values(&["out", "ok"])
                            .inc();
                        Some(PeerReply {
                            api_reachable: a.api_reachable,
                            phase: a.phase,
                            boot_id: a.boot_id,
                        })
                    }
                    Err(e) => {
                        metrics
                            .peer_requests
                            .with_label_values(&["out", "error"])
                            .inc();
                        tracing::debug!(peer = %peer, error = %e, "peer did not answer");
                        None
                    }
                };
                let _ = tx.send(Input::PeerReply { peer, reply });
            });
        }
    }

    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut boot = read_boot_id(&self.cfg.boot_id_file);
        if boot.is_none() {
            tracing::warn!(file = %self.cfg.boot_id_file, "cannot read the boot ID: a fenced node will need kube-fencer.io/unfence=true to be unfenced, and a restarted agent does not resume its checks");
        }
        // An agent restarted within this boot resumes from what the one
        // before it persisted, not from scratch (its node may be cut off).
        let mut saved = Persisted {
            enabled: self.means.capable(),
            file: super::agent_state::path(&self.cfg.state_dir, &self.node),
            saved: None,
            failed: false,
        };
        let previous = saved.load(boot.as_deref());
        saved.saved = previous.clone();
        let mut check = SelfCheck::new(
            check_settings(&self.cfg, &self.means),
            Instant::now(),
            boot.clone(),
            previous,
        );
        self.metrics.set_self_fence_state("healthy");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut contact = self.contact.subscribe();
        let mut own_record = self.own_record.clone();
        let mut kubelet_lease = self.kubelet_lease.clone();
        let mut reported = Reported::default();
        let mut boot_read_at = Instant::now();
        // An API contact that predates the loop (or the last restart).
        let mut pending = vec![Input::OwnRecord(own_record.borrow_and_update().clone())];
        if contact.borrow_and_update().is_some() {
            pending.push(Input::ApiResponse);
        }
        pending.extend(lease_age(*kubelet_lease.borrow_and_update()));
        // `--peers` needs no API: known from the start, so that an agent
        // (re)started during a control-plane outage can hear from its peers
        // that it is one (else it knows none and takes it for isolation).
        if !self.cfg.static_peers.is_empty() {
            pending.push(Input::Peers(self.cfg.static_peers.clone()));
        }
        loop {
            let now = Instant::now();
            if now.saturating_duration_since(boot_read_at) >= REREAD {
                boot_read_at = now;
                let read = read_boot_id(&self.cfg.boot_id_file);
                if read.is_some() && read != boot {
                    boot = read.clone();
                    pending.push(Input::BootId(read));
                }
            }
            let mut commands = Vec::new();
            for input in pending.drain(..) {
                commands.extend(check.handle(now, input));
            }
            commands.extend(check.tick(now));
            self.execute(commands, &tx);
            self.report(&check, &mut reported);
            saved.save(&check);
            // Wait for the core's next deadline or for an input.
            let wake = check.next_wake().max(now + Duration::from_millis(10));
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tokio::time::sleep_until(wake.into()) => {}
                Some(input) = rx.recv() => {
                    // Whatever else finished meanwhile (a batch of replies).
                    pending.push(input);
                    while let Ok(more) = rx.try_recv() {
                        pending.push(more);
                    }
                }
                Ok(()) = contact.changed() => {
                    contact.borrow_and_update();
                    pending.push(Input::ApiResponse);
                }
                Ok(()) = own_record.changed() => {
                    pending.push(Input::OwnRecord(own_record.borrow_and_update().clone()));
                }
                Ok(()) = kubelet_lease.changed() => {
                    pending.extend(lease_age(*kubelet_lease.borrow_and_update()));
                }
            }
        }
        if self.withdraw().await.is_ok() && saved.enabled {
            // A graceful stop while connected: nothing for a successor to
            // resume (one that failed to withdraw leaves the file behind).
            let _ = std::fs::remove_file(&saved.file);
        }
    }

    /// Failed checks and known peers, logged when they change.
    fn report(&self, check: &SelfCheck, reported: &mut Reported) {
        let failures = check.failures();
        if failures > reported.failures {
            tracing::warn!(
                failures,
                threshold = self.cfg.api_failure_threshold,
                "API check failed"
            );
        }
        reported.failures = failures;
        self.metrics.api_check_failures.set(i64::from(failures));
        // Peers that can answer: members without a peer address count
        // for the majority but are no one to ask.
        let known = check
            .peers()
            .iter()
            .filter(|p| !p.starts_with(NO_ADDRESS_PEER))
            .count();
        if reported.peers_known != Some(known) {
            if reported.peers_known.is_some() || known > 0 {
                tracing::info!(
                    count = known,
                    population = check.peers().len(),
                    "peers known"
                );
            }
            reported.peers_known = Some(known);
            self.metrics
                .peers
                .set(i64::try_from(known).unwrap_or(i64::MAX));
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use clap::Parser;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeStatus};
    use std::sync::Arc;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    /// The agent's settings from these flags (validated; no environment).
    pub(crate) fn cfg(extra: &[&str]) -> AgentConfig {
        let mut argv = vec!["kube-fencer", "--node-name", "n1"];
        argv.extend_from_slice(extra);
        crate::config::Args::try_parse_from(argv)
            .unwrap()
            .into_config_with(&no_env)
            .unwrap()
            .agent
    }

    fn node(addrs: &[(&str, &str)]) -> Node {
        Node {
            status: Some(NodeStatus {
                addresses: Some(
                    addrs
                        .iter()
                        .map(|(t, a)| NodeAddress {
                            type_: t.to_string(),
                            address: a.to_string(),
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn peer_address_prefers_advertise_then_listen_then_internal_ip() {
        let n = node(&[("Hostname", "n1"), ("InternalIP", "10.0.0.7")]);
        assert_eq!(
            peer_address(&cfg(&["--peer-advertise", "1.2.3.4:1"]), Some(&n)).as_deref(),
            Some("1.2.3.4:1")
        );
        assert_eq!(
            peer_address(&cfg(&["--peer-listen", "127.0.0.1:9999"]), Some(&n)).as_deref(),
            Some("127.0.0.1:9999")
        );
        assert_eq!(
            peer_address(&cfg(&[]), Some(&n)).as_deref(),
            Some("10.0.0.7:9747")
        );
        let v6 = node(&[("InternalIP", "fd00::7")]);
        assert_eq!(
            peer_address(&cfg(&[]), Some(&v6)).as_deref(),
            Some("[fd00::7]:9747")
        );
        assert_eq!(peer_address(&cfg(&[]), None), None);
        assert_eq!(peer_address(&cfg(&["--peer-listen", ""]), Some(&n)), None);
    }

    #[test]
    fn boot_id_is_trimmed_and_none_when_unreadable() {
        let dir = std::env::temp_dir().join(format!("kf-boot-{}", std::process::id()));
        std::fs::write(&dir, "  6f1c-boot\n").unwrap();
        assert_eq!(
            read_boot_id(dir.to_str().unwrap()).as_deref(),
            Some("6f1c-boot")
        );
        let _ = std::fs::remove_file(&dir);
        assert_eq!(read_boot_id("/nonexistent/boot_id"), None);
        std::fs::write(&dir, "\n").unwrap();
        assert_eq!(read_boot_id(dir.to_str().unwrap()), None);
        let _ = std::fs::remove_file(&dir);
    }

    fn addrs(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:9747")).collect()
    }

    #[test]
    fn every_agent_orders_its_peers_differently() {
        let (mut a, mut b) = (addrs(50), addrs(50));
        peer_order("node-a", &mut a);
        peer_order("node-b", &mut b);
        assert_ne!(a, b);
        let mut a2 = addrs(50);
        a2.reverse();
        peer_order("node-a", &mut a2);
        assert_eq!(a, a2, "the order depends on the node, not the input order");
        a.sort();
        assert_eq!(
            a,
            addrs(50)
                .into_iter()
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
        );
    }

    /// A self-check with `--self-fence=watchdog` on `watchdog` if given (else
    /// one that cannot fence; tests that fence set `cfg` and `means`).
    fn self_check(client: Client, watchdog: Option<Arc<Watchdog>>) -> SelfCheckTask {
        let means = watchdog.map_or_else(SelfFenceMeans::none, SelfFenceMeans::with_watchdog);
        SelfCheckTask {
            client,
            node: "n1".into(),
            cfg: cfg(&[
                "--self-fence",
                "watchdog",
                "--peer-key-file",
                "/nonexistent/key",
                "--api-check-timeout",
                "1s",
            ]),
            key: None,
            metrics: Metrics::new(),
            own_record: watch::channel(RecordState::Absent).1,
            kubelet_lease: watch::channel(None).1,
            contact: ApiContact::default(),
            means,
            population: Population {
                node_selector: decide::Selector::everything(),
                manage_control_plane: false,
            },
        }
    }

    /// Checks fast enough for a test (isolation is found within a second),
    /// then `more`.
    fn fast_checks<'a>(more: &[&'a str]) -> Vec<&'a str> {
        let fast = [
            "--api-check-interval",
            "300ms",
            "--api-check-timeout",
            "100ms",
            "--api-failure-threshold",
            "2",
            "--peer-silence-timeout",
            "200ms",
        ];
        fast.iter().chain(more).copied().collect()
    }

    /// A self-check that fences with the command `exec` (`exec:…`), with
    /// these further flags.
    fn fencing_by(client: Client, exec: &str, flags: &[&str]) -> SelfCheckTask {
        let mut g = self_check(client, None);
        let mut args = vec!["--self-fence", exec, "--peer-key-file", "/nonexistent/key"];
        args.extend_from_slice(flags);
        g.cfg = cfg(&args);
        g.means = SelfFenceMeans::arm(&g.cfg).unwrap();
        g
    }

    /// The reason the self-fence command (`echo "$KUBE_FENCER_SELF_FENCE_REASON"
    /// > marker`) wrote, once its whole line is there (the shell creates the
    /// file before echo writes it), or what is there after `within`;
    /// `meanwhile` runs every 50 ms of the wait.
    async fn reason_written(
        marker: &std::path::Path,
        within: Duration,
        meanwhile: impl Fn(),
    ) -> String {
        let deadline = Instant::now() + within;
        loop {
            let text = std::fs::read_to_string(marker).unwrap_or_default();
            if text.ends_with('\n') || Instant::now() >= deadline {
                return text;
            }
            meanwhile();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A fed fake watchdog device (a regular file) and its path.
    fn fed_watchdog(name: &str) -> (Arc<Watchdog>, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!("kf-gwd-{name}-{}", std::process::id()));
        std::fs::write(&path, "").unwrap();
        let w = Watchdog::open_with(path.to_str().unwrap(), Duration::from_secs(1), |_, s| Ok(s))
            .unwrap();
        w.permit_until(Instant::now() + Duration::from_secs(60));
        (Arc::new(w), path)
    }

    #[tokio::test]
    async fn the_advertisement_and_the_core_get_the_devices_timeout_not_the_flags() {
        // fed_watchdog's device reports 1 s; --watchdog-timeout is left at its default.
        let (w, path) = fed_watchdog("advertised");
        let g = self_check(
            crate::cluster::own_node::tests::refusing_client(),
            Some(w.clone()),
        );
        w.stop_feeding();
        let _ = std::fs::remove_file(&path);
        assert_ne!(g.cfg.watchdog_timeout, Duration::from_secs(1));
        let advert = g.advert(Some("b1"), None);
        assert_eq!(advert.self_fence, decide::SelfFenceAction::Watchdog);
        assert_eq!(advert.watchdog_timeout, Duration::from_secs(1));
        let settings = check_settings(&g.cfg, &g.means);
        assert_eq!(settings.watchdog_timeout, Duration::from_secs(1));
    }

    #[tokio::test]
    async fn sigterm_keeps_the_watchdog_armed_when_the_withdrawal_fails() {
        // A partitioned agent being stopped: its Node still says "capable",
        // so the watchdog is its only guarantee and must not be disarmed.
        let (w, path) = fed_watchdog("withdraw-fails");
        let g = self_check(
            crate::cluster::own_node::tests::refusing_client(),
            Some(w.clone()),
        );
        let withdrawn = g.withdraw().await;
        let out = std::fs::read(&path).unwrap();
        w.stop_feeding();
        let _ = std::fs::remove_file(&path);
        assert!(withdrawn.is_err());
        assert!(
            !out.contains(&b'V'),
            "disarmed without a withdrawal: {out:?}"
        );
    }

    #[tokio::test]
    async fn sigterm_disarms_the_watchdog_once_the_withdrawal_is_written() {
        use http::{Request, Response};
        use http_body_util::BodyExt;
        use kube::client::Body;
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let (w, path) = fed_watchdog("withdraw-ok");
        let g = self_check(Client::new(service, "default"), Some(w.clone()));
        let api = tokio::spawn(async move {
            let mut patch = None;
            while let Some((req, send)) = handle.next_request().await {
                let is_patch = req.method() == http::Method::PATCH;
                if is_patch {
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    patch = Some(serde_json::from_slice::<serde_json::Value>(&body).unwrap());
                }
                let node = serde_json::json!({
                    "apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
                    "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.7"}]},
                });
                send.send_response(
                    Response::builder()
                        .body(Body::from(serde_json::to_vec(&node).unwrap()))
                        .unwrap(),
                );
                if is_patch {
                    break;
                }
            }
            patch
        });
        let withdrawn = g.withdraw().await;
        let patch = api.await.unwrap().expect("the withdrawal was written");
        let out = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(withdrawn.is_ok(), "{withdrawn:?}");
        assert_eq!(out.last(), Some(&b'V'), "disarmed after the withdrawal");
        let value = patch["metadata"]["annotations"][decide::AGENT_ANNOTATION]
            .as_str()
            .unwrap()
            .to_string();
        let advert = decide::advert::parse(&value);
        let advert = advert.valid().expect("a valid advertisement");
        assert!(!advert.capable(), "{value}");
        assert_eq!(
            advert.peer_address, None,
            "a withdrawn agent is no peer any more: {value}"
        );
    }

    /// An agent cut off by a fast-failing network (link down / TCP reset:
    /// every request fails at once, and the own Node watch restarts with
    /// Event::Init about every second), no peers known, its kubelet's
    /// Lease last renewed at `renewed` as far as it knows. Until it fences
    /// (10 s at most): the reason it gave, its metrics when it began to, what
    /// it persisted.
    async fn cut_off(
        tag: &str,
        renewed: Option<std::time::SystemTime>,
    ) -> (String, String, Option<selfcheck::Previous>) {
        let dir = std::env::temp_dir().join(format!("kf-guard-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let marker = dir.join("fenced");
        let exec = format!(
            "exec:echo \"$KUBE_FENCER_SELF_FENCE_REASON\" > {}",
            marker.display()
        );
        let state = dir.join("state");
        let mut g = fencing_by(
            crate::cluster::own_node::tests::refusing_client(),
            &exec,
            &fast_checks(&[
                "--unreachable-after",
                "20s",
                "--fence-timeout",
                "40s",
                "--state-dir",
                state.to_str().unwrap(),
            ]),
        );
        let (hook, own_record) = watch::channel(RecordState::Absent);
        g.own_record = own_record;
        let (_lease, kubelet_lease) = watch::channel(renewed);
        g.kubelet_lease = kubelet_lease;
        let (stop, rx) = watch::channel(false);
        let watch = tokio::spawn(crate::cluster::own_node::watch_own_node(
            g.client.clone(),
            "n1".into(),
            hook,
            crate::ops::Health::new(Duration::from_secs(30), g.contact.clone()),
            g.contact.clone(),
            Metrics::new(),
            rx.clone(),
        ));
        let metrics = g.metrics.clone();
        let run = tokio::spawn(g.run(rx));
        // The metrics as they were when the command started (the checks go on).
        let deadline = Instant::now() + Duration::from_secs(10);
        while !marker.exists() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let rendered = metrics.render();
        let reason = reason_written(&marker, Duration::from_secs(10), || ()).await;
        let _ = stop.send(true);
        let _ = run.await;
        let _ = watch.await;
        // The withdrawal failed (cut off): the successor resumes from here.
        let boot = read_boot_id("/proc/sys/kernel/random/boot_id");
        let kept = super::super::agent_state::load(
            &super::super::agent_state::path(&state, "n1"),
            boot.as_deref(),
        );
        let _ = std::fs::remove_dir_all(&dir);
        (reason, rendered, kept)
    }

    #[tokio::test]
    async fn an_agent_cut_off_by_a_fast_failing_network_fences_itself() {
        // No renewal of its kubelet's Lease seen: rule 5b, one failed check
        // and one silent round of peers.
        let (reason, rendered, kept) = cut_off("cut", None).await;
        assert!(
            reason.contains("this node is isolated") && reason.contains("no renewal"),
            "the isolated agent did not fence itself: {reason:?}"
        );
        let kept = kept.expect("the self-check persisted for a restarted agent");
        assert!(kept.self_fence_decided, "{kept:?}");
        assert_eq!(kept.last_contact, None, "no API contact ever: {kept:?}");
        assert!(
            rendered.contains("kube_fencer_api_check_failures 1"),
            "{rendered}"
        );
    }

    #[tokio::test]
    async fn a_cut_off_agent_whose_kubelet_renewed_just_now_waits_for_the_threshold() {
        // The own-Lease watch saw a renewal (dated a little in the future:
        // age 0): not stale for 20 s, so rules 2 and 5 decide, after the
        // second failed check and the silence timeout.
        let soon = std::time::SystemTime::now() + Duration::from_secs(1);
        let (reason, rendered, _) = cut_off("fresh", Some(soon)).await;
        assert!(
            reason.contains("this node is isolated") && reason.contains("peers answered for"),
            "{reason:?}"
        );
        assert!(
            rendered.contains("kube_fencer_api_check_failures 2")
                || rendered.contains("kube_fencer_api_check_failures 3"),
            "{rendered}"
        );
    }

    #[tokio::test]
    async fn a_connected_agent_whose_node_is_being_fenced_fences_itself() {
        // Rule 1: the own-Node watch delivers a Fencing record of this boot
        // while the API answers: the agent fences its node at its next check.
        use http::{Request, Response};
        use kube::client::Body;
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let api = tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let body = if req.uri().path() == "/api/v1/nodes" {
                    serde_json::json!({"apiVersion": "v1", "kind": "NodeList", "metadata": {}, "items": []})
                } else if req.uri().path() == "/readyz" {
                    serde_json::json!("ok")
                } else {
                    serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}})
                };
                send.send_response(
                    Response::builder()
                        .body(Body::from(serde_json::to_vec(&body).unwrap()))
                        .unwrap(),
                );
            }
        });
        let dir = std::env::temp_dir().join(format!("kf-guard-rule1-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let marker = dir.join("fenced");
        let exec = format!(
            "exec:echo \"$KUBE_FENCER_SELF_FENCE_REASON\" > {}",
            marker.display()
        );
        let mut g = fencing_by(
            Client::new(service, "default"),
            &exec,
            &[
                "--api-check-interval",
                "200ms",
                "--api-check-timeout",
                "500ms",
                "--state-dir",
                dir.join("state").to_str().unwrap(),
            ],
        );
        let (hook, own_record) = watch::channel(RecordState::Absent);
        g.own_record = own_record;
        let contact = g.contact.clone();
        let (stop, rx) = watch::channel(false);
        let run = tokio::spawn(g.run(rx));
        // Connected (watch events keep arriving), no record: no fencing.
        for _ in 0..10 {
            contact.seen();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!marker.exists(), "fenced without a record");
        hook.send_replace(RecordState::Valid(decide::FenceRecord {
            phase: decide::Phase::Fencing,
            fencing_since: std::time::SystemTime::now(),
            fenced_at: None,
            cordoned: true,
            tainted: false,
            by: "leader".into(),
            held_since: None,
            boot_id: read_boot_id("/proc/sys/kernel/random/boot_id"),
        }));
        let reason = reason_written(&marker, Duration::from_secs(5), || contact.seen()).await;
        let _ = stop.send(true);
        let _ = run.await;
        api.abort();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            reason.contains("the cluster is fencing this node"),
            "rule 1 did not fence the node: {reason:?}"
        );
    }

    #[test]
    fn the_state_is_saved_when_it_changes_but_not_on_every_contact() {
        let t0 = Instant::now();
        let p = |boot: &str, contact: Option<Duration>, decided: bool| selfcheck::Previous {
            boot_id: boot.into(),
            last_contact: contact.map(|d| t0 + d),
            self_fence_decided: decided,
            peers: Vec::new(),
        };
        let ms = Duration::from_millis;
        let saved = p("b", Some(ms(0)), false);
        assert!(needs_saving(None, &saved));
        assert!(!needs_saving(Some(&saved), &saved));
        assert!(!needs_saving(Some(&saved), &p("b", Some(ms(900)), false)));
        assert!(needs_saving(Some(&saved), &p("b", Some(ms(1_000)), false)));
        assert!(
            needs_saving(Some(&saved), &p("b", Some(ms(10)), true)),
            "decided"
        );
        assert!(
            needs_saving(Some(&saved), &p("b2", Some(ms(0)), false)),
            "rebooted"
        );
        assert!(
            needs_saving(Some(&p("b", None, false)), &saved),
            "first contact"
        );
        assert!(
            !needs_saving(None, &p("", Some(ms(0)), true)),
            "boot unknown"
        );
    }

    #[tokio::test]
    async fn in_a_control_plane_outage_the_agent_asks_its_peers_and_does_not_fence() {
        // Rule 4: the API is gone for everybody; both peers answer at once
        // that they cannot reach it either (over real sockets, with the key).
        const KEY: &str = "0123456789abcdef-outage";
        let key = PeerKey::from_bytes(KEY.as_bytes()).unwrap();
        let mut addrs = Vec::new();
        for _ in 0..2 {
            let server = peers::Server {
                client: crate::cluster::own_node::tests::refusing_client(),
                key: key.clone(),
                nonces: Default::default(),
                challenges: Default::default(),
                api_timeout: Duration::from_secs(1),
                fresh_within: Duration::from_secs(1),
                contact: ApiContact::default(),
                metrics: Metrics::new(),
                clock: super::super::peer_auth::unix_now,
            };
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.push(listener.local_addr().unwrap().to_string());
            tokio::spawn(async move { axum::serve(listener, peers::router(server)).await });
        }
        let dir = std::env::temp_dir().join(format!("kf-guard-outage-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let marker = dir.join("fenced");
        let exec = format!("exec:touch {}", marker.display());
        let peer_list = addrs.join(",");
        let mut g = fencing_by(
            crate::cluster::own_node::tests::refusing_client(),
            &exec,
            &fast_checks(&[
                "--peers",
                &peer_list,
                "--state-dir",
                dir.join("state").to_str().unwrap(),
            ]),
        );
        g.key = Some(key);
        let metrics = g.metrics.clone();
        let (stop, rx) = watch::channel(false);
        let run = tokio::spawn(g.run(rx));
        // Well past the isolation schedule (the test above fences in < 1s).
        let outage = |m: &Metrics| {
            m.render()
                .contains("kube_fencer_self_fence_state{state=\"outage\"} 1")
        };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && !marker.exists() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = stop.send(true);
        let _ = run.await;
        let fenced = marker.exists();
        let rendered = metrics.render();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(!fenced, "fenced during a control-plane outage");
        assert!(outage(&metrics), "{rendered}");
        assert!(
            rendered.contains("kube_fencer_peer_requests_total{direction=\"out\",result=\"ok\"}"),
            "{rendered}"
        );
        assert!(rendered.contains("kube_fencer_peers 2"), "{rendered}");
    }

    #[test]
    fn every_member_of_the_population_is_a_peer_answering_or_not() {
        let live = r#"{"selfFence":"watchdog","watchdogTimeout":"10s","apiCheckInterval":"5s","apiCheckTimeout":"2s","apiFailureThreshold":3,"peerSilenceTimeout":"10s","bootId":"b1","peerAddress":"10.0.0.7:9747"}"#;
        let pop = Population {
            node_selector: decide::Selector::parse("pool=db").unwrap(),
            manage_control_plane: false,
        };
        let labels = |pairs: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let ann = |v: &str| {
            Some(std::iter::once((decide::AGENT_ANNOTATION.to_string(), v.to_string())).collect())
        };
        let db = labels(&[("pool", "db")]);
        assert_eq!(
            population_peer("a", &db, ann(live).as_ref(), &pop).as_deref(),
            Some("10.0.0.7:9747")
        );
        // No agent, a withdrawn advertisement, an unreadable one: members
        // that never answer, so a group cut off together stays a minority.
        let withdrawn = live
            .replace(r#""selfFence":"watchdog""#, r#""selfFence":"none""#)
            .replace(r#","peerAddress":"10.0.0.7:9747""#, "");
        for a in [None, ann(&withdrawn), ann("{garbage")] {
            assert_eq!(
                population_peer("b", &db, a.as_ref(), &pop).as_deref(),
                Some("no-address/b")
            );
        }
        // Outside the population: not a peer, even with an agent.
        let web = labels(&[("pool", "web")]);
        assert_eq!(population_peer("c", &web, ann(live).as_ref(), &pop), None);
        let excluded = labels(&[("pool", "db"), (decide::EXCLUDE_LABEL, "true")]);
        assert_eq!(
            population_peer("d", &excluded, ann(live).as_ref(), &pop),
            None
        );
        let cp = labels(&[
            ("pool", "db"),
            ("node-role.kubernetes.io/control-plane", ""),
        ]);
        assert_eq!(population_peer("e", &cp, ann(live).as_ref(), &pop), None);
        let managed_cp = Population {
            manage_control_plane: true,
            ..pop.clone()
        };
        assert!(population_peer("e", &cp, ann(live).as_ref(), &managed_cp).is_some());
    }
}
