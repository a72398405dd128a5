//! The agent's guard over its own node (every agent, leader or not): the
//! I/O shell of the self-check core ([`crate::decide::agent::self_check`]).
//!
//! The core decides everything — when to probe `/readyz`, whom to ask,
//! the verdict, when the watchdog may be fed, when to advertise and to
//! refresh the peers — on an injected clock. This loop only
//!
//! - sleeps until the core's `next_wake()` or until an input arrives: a
//!   genuine API contact ([`ApiContact::subscribe`](crate::k8s::ApiContact::subscribe)), the own Node's
//!   record (a `tokio::sync::watch` fed by the own-Node watch,
//!   [`crate::k8s::own_node`]), or the result of a command;
//! - carries out each command in a task of its own (probe, ask each peer,
//!   advertise, refresh the peers, the self-fence action), which sends its
//!   result back on a channel, so no API call ever blocks the loop;
//! - feeds the watchdog's dead man's switch (`PermitFeeding`), reports the
//!   verdict (log, `kube_fencer_self_fence_state`,
//!   `kube_fencer_api_check_failures`, `kube_fencer_peers`), and persists
//!   what a restarted agent resumes from ([`crate::agent::state_dir`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use tokio::sync::{mpsc, watch};

use crate::agent::self_fence::{Method, SYSRQ_TRIGGER, SelfFenceMeans};
use crate::config::AgentConfig;
use crate::decide::agent::self_check::{self, CheckSettings, Command, Input, PeerReply, SelfCheck};
use crate::decide::agent::self_fence::Verdict;
use crate::decide::{self, AgentAdvert, RecordState};
use crate::k8s::ApiContact;
use crate::observability::Metrics;
use crate::peers::auth::PeerKey;
use crate::peers::{self, Question};
pub use kube_fencer_watchdog::Watchdog;

/// Nodes per page of the peer discovery list (a metadata-only list: labels
/// and annotations are all it needs; bounds the agent's memory).
pub const PEER_PAGE: u32 = 100;

/// How a member of the fencing population without a usable peer address
/// appears in the peer list: it is asked like any peer and never answers.
pub const NO_ADDRESS_PEER: &str = "no-address/";

/// Which Nodes are this agent's peers: the leader's fencing population
/// ([`decide::leader::guard::in_population`]), from the same `--node-selector` and
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
    let ip = node.map(crate::k8s::facts::addresses)?.into_iter().next()?;
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
    if !decide::leader::guard::in_population(
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
fn needs_saving(saved: Option<&self_check::Previous>, now: &self_check::Previous) -> bool {
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
    saved: Option<self_check::Previous>,
    /// The last write failed (said once).
    failed: bool,
}

impl Persisted {
    /// What the predecessor of this boot left.
    fn load(&self, boot: Option<&str>) -> Option<self_check::Previous> {
        let previous = self
            .enabled
            .then(|| crate::agent::state_dir::load(&self.file, boot))
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
        match crate::agent::state_dir::save(&self.file, &previous) {
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
    /// ([`crate::k8s::own_node::watch_own_node`]).
    pub own_record: watch::Receiver<RecordState>,
    /// The own kubelet's Lease renewTime, from the own-Lease watch
    /// ([`crate::k8s::own_node::watch_own_lease`]).
    pub kubelet_lease: watch::Receiver<Option<std::time::SystemTime>>,
    /// The clock of genuine API contact (shared with the watches, the
    /// election and the peer endpoint).
    pub contact: ApiContact,
    /// What start-up found this node can fence itself with.
    pub means: SelfFenceMeans,
    /// Which Nodes are peers.
    pub population: Population,
    /// Where the peers found are published (the permit's holder renews
    /// with them).
    pub peer_list: Arc<watch::Sender<Vec<String>>>,
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
            permit_fence: self.means.permit_fence(),
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
                        if let Some(p) = &found {
                            g.peer_list.send_if_modified(|old| {
                                let changed = old != p;
                                if changed {
                                    old.clone_from(p);
                                }
                                changed
                            });
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
            file: crate::agent::state_dir::path(&self.cfg.state_dir, &self.node),
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
pub(crate) mod tests;
