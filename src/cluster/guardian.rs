//! The agent's guard over its own node (every agent, leader or not):
//!
//! - **API checks**: any contact with the API server proves the path works
//!   — a watch event (the leader's Lease renewals reach every follower every
//!   third of `--leader-lease-duration`; the own Node), or a successful
//!   request. Only when there was no contact for `--api-check-interval` does
//!   the agent probe `/readyz` (bounded by `--api-check-timeout`), and again
//!   every interval while probes fail. So a follower sends nothing at steady
//!   state, and the `k`-th failed probe comes at most `i + (k-1)·p + t` after
//!   the last contact — the schedule [`crate::decide::safetime`] relies on.
//! - **Peers**, from the first failed probe on: after each probe, ask the
//!   next batch of at most [`PEER_BATCH`] peers (rotating through all of
//!   them) whether they reach the API and what the cluster records for this
//!   node ([`super::peers`]).
//! - **Verdict** from the pure decision table ([`crate::decide::selffence`]),
//!   and the **self-fence action** when it says so (watchdog, sysrq, exec).
//! - **Advertisement** of all of the above on the own Node
//!   (`kube-fencer.io/agent`), so the leader can compute the safe time.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use tokio::sync::watch;

use super::own_node::SelfFence as OwnRecordHook;
use super::peer_auth::PeerKey;
use super::peers::{self, Question};
pub use super::watchdog::Watchdog;
use crate::config::{AgentConfig, SelfFence};
use crate::decide::selffence::{self, PeerAnswer, SelfFenceInput, SelfFenceSettings, Verdict};
use crate::decide::{self, AgentAdvert, RecordState};
use crate::ops::{Health, Metrics};

/// Peers asked at once, after each failed probe. The majority rules count
/// the distinct peers asked within `--peer-silence-timeout`, so in a large
/// cluster they are a sample of 32 or more: a group of nodes cut off together
/// that makes up a fraction f of the cluster answers for a majority of that
/// sample with a probability that falls fast with f (about 1e-10 for f = 10%,
/// 1e-5 for f = 20% with one batch); larger groups trip the storm guard.
pub const PEER_BATCH: usize = 32;
/// Peer list refreshed from the API this often at steady state (a paged
/// metadata-only list: N agents cost N/300 lists per second, at most
/// [`PEER_PAGE`] Nodes per page).
pub const PEER_REFRESH: Duration = Duration::from_secs(300);
/// First refresh interval after start: the other agents of a DaemonSet
/// rollout advertise themselves over the next minutes, so the interval
/// starts short and doubles up to [`PEER_REFRESH`]. (An agent that knew
/// only the peers present at its own start would take a later outage for
/// isolation: rule 5.)
pub const PEER_REFRESH_FIRST: Duration = Duration::from_secs(5);

/// The refresh interval after `previous` (None: the first refresh).
pub fn next_peer_refresh(previous: Option<Duration>) -> Duration {
    previous.map_or(PEER_REFRESH_FIRST, |d| (d * 2).min(PEER_REFRESH))
}
/// How long the watchdog may be fed after a completed check that did not
/// decide to self-fence: one check interval plus the longest check (probe and
/// peer wait). A loop that stops completing checks (hung) stops the feeds
/// after at most this, which is within the agent's own isolated schedule
/// (`i + (j-1)·p + t + a` in [`crate::decide::safetime`]), so a hung agent
/// is dead no later than one that decides on time.
pub fn feed_permit(cfg: &AgentConfig) -> Duration {
    cfg.api_check_interval
        + cfg.api_check_timeout
        + decide::safetime::peer_answer_timeout(cfg.api_check_timeout)
}
/// Nodes per page of the peer discovery list (bounds the agent's memory).
pub const PEER_PAGE: u32 = 100;
/// The advertisement is re-written at least this often (if it was removed).
pub const READVERTISE: Duration = Duration::from_secs(300);

/// What the own-Node watch tells the guardian.
#[derive(Default)]
pub struct Shared {
    /// The fencing record on the own Node, as last seen through the watch.
    own_record: Mutex<Option<RecordState>>,
}

impl Shared {
    fn own_record(&self) -> RecordState {
        self.own_record
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or(RecordState::Absent)
    }
}

/// The own-Node watch's hook: remember the record.
pub struct Hook(pub Arc<Shared>);

impl OwnRecordHook for Hook {
    fn own_record_changed(&self, node: &str, record: &RecordState) {
        super::own_node::LogOnly.own_record_changed(node, record);
        *self.0.own_record.lock().unwrap_or_else(|p| p.into_inner()) = Some(record.clone());
    }
}

/// Read the boot ID (trimmed); `None` when unreadable or empty.
pub fn read_boot_id(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Whether the node rebooted: the boot ID read now differs from the one
/// known. A boot ID that cannot be read (now or before) is no reboot.
pub fn rebooted(known: Option<&str>, read: Option<&str>) -> bool {
    matches!((known, read), (Some(a), Some(b)) if a != b)
}

/// The phase of a fencing record that concerns this boot: a record of
/// another boot does not; with this node's boot ID unknown, any record
/// does (the safe reading: a node being fenced must stop).
pub fn record_applies(
    phase: Option<decide::Phase>,
    record_boot_id: Option<&str>,
    my_boot_id: Option<&str>,
) -> Option<decide::Phase> {
    match my_boot_id {
        Some(mine) => selffence::own_record_applies(phase, record_boot_id, mine),
        None => phase,
    }
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

pub struct Guardian {
    pub client: Client,
    pub node: String,
    pub cfg: AgentConfig,
    pub key: Option<PeerKey>,
    pub metrics: Metrics,
    pub shared: Arc<Shared>,
    /// Records every API contact (watch events, requests) of this agent.
    pub health: Health,
    pub watchdog: Option<Arc<Watchdog>>,
}

struct LoopState {
    boot_id: Option<String>,
    failures: u32,
    /// End of the first failed probe of the current run of failures.
    unreachable_since: Option<Instant>,
    /// peer address → (when, answer)
    answers: BTreeMap<String, (Instant, PeerAnswer)>,
    /// peer address → when it was last asked
    asked: BTreeMap<String, Instant>,
    /// Known peers, in this agent's own order (see [`peer_order`]).
    peers: Vec<String>,
    /// Next peer to ask.
    cursor: usize,
    /// When the peers are to be refreshed next, and the interval that led there.
    peers_due: Option<(Instant, Duration)>,
    advertised: Option<(Option<String>, Instant)>,
    last_verdict: Option<Verdict>,
    fenced: bool,
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

/// The next batch of at most [`PEER_BATCH`] peers from `cursor`, wrapping.
pub fn next_batch(peers: &[String], cursor: &mut usize) -> Vec<String> {
    let n = peers.len().min(PEER_BATCH);
    if peers.is_empty() {
        return Vec::new();
    }
    let start = *cursor % peers.len();
    *cursor = (start + n) % peers.len();
    peers.iter().cycle().skip(start).take(n).cloned().collect()
}

impl Guardian {
    fn advert(&self, boot_id: Option<&str>, peer_address: Option<String>) -> AgentAdvert {
        AgentAdvert {
            self_fence: self.cfg.self_fence.action(),
            watchdog_timeout: self.cfg.watchdog_timeout,
            api_check_interval: self.cfg.api_check_interval,
            api_check_timeout: self.cfg.api_check_timeout,
            api_failure_threshold: self.cfg.api_failure_threshold,
            peer_silence_timeout: self.cfg.peer_silence_timeout,
            boot_id: boot_id.unwrap_or_default().to_string(),
            peer_address,
        }
    }

    /// Write the advertisement on the own Node.
    async fn advertise(
        &self,
        advert_of: impl Fn(Option<String>) -> AgentAdvert,
    ) -> Result<(), String> {
        let api: Api<Node> = Api::all(self.client.clone());
        let node = tokio::time::timeout(self.cfg.api_check_timeout * 2, api.get(&self.node))
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?;
        self.health.api_ok();
        let advert = advert_of(peer_address(&self.cfg, Some(&node)));
        self.write_advert(&advert).await
    }

    /// Patch `advert` onto the own Node's annotation.
    async fn write_advert(&self, advert: &AgentAdvert) -> Result<(), String> {
        let api: Api<Node> = Api::all(self.client.clone());
        let value = decide::agent::render(advert);
        let patch =
            serde_json::json!({"metadata": {"annotations": {decide::AGENT_ANNOTATION: value}}});
        tokio::time::timeout(
            self.cfg.api_check_timeout * 2,
            api.patch(&self.node, &PatchParams::default(), &Patch::Merge(&patch)),
        )
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
        self.health.api_ok();
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
    pub async fn withdraw(&self) -> Result<(), String> {
        if matches!(self.cfg.self_fence, SelfFence::None) {
            return Ok(());
        }
        let boot = read_boot_id(&self.cfg.boot_id_file);
        let mut advert = self.advert(boot.as_deref(), None);
        advert.self_fence = decide::SelfFenceAction::None;
        match self.write_advert(&advert).await {
            Ok(()) => {
                if let Some(w) = &self.watchdog {
                    w.disarm();
                    tracing::info!("self-fence advertisement withdrawn; watchdog disarmed");
                }
                Ok(())
            }
            Err(e) => {
                if self.watchdog.is_some() {
                    tracing::error!(error = %e, watchdog_timeout = ?self.cfg.watchdog_timeout, "could not withdraw the self-fence advertisement: the watchdog stays armed and resets this node once its feeds stop");
                } else {
                    tracing::warn!(error = %e, "could not withdraw the self-fence advertisement");
                }
                Err(e)
            }
        }
    }

    async fn probe_readyz(&self) -> bool {
        let req = match axum::http::Request::get("/readyz").body(Vec::new()) {
            Ok(r) => r,
            Err(_) => return false,
        };
        let ok = matches!(
            tokio::time::timeout(self.cfg.api_check_timeout, self.client.request_text(req)).await,
            Ok(Ok(_))
        );
        if ok {
            self.health.api_ok();
        }
        ok
    }

    async fn refresh_peers(&self, st: &mut LoopState) {
        if !self.cfg.static_peers.is_empty() {
            st.peers = self.cfg.static_peers.clone();
            self.metrics
                .peers
                .set(i64::try_from(st.peers.len()).unwrap_or(i64::MAX));
            st.peers_due = Some((Instant::now() + PEER_REFRESH, PEER_REFRESH));
            return;
        }
        let api: Api<Node> = Api::all(self.client.clone());
        let mut peers: Vec<String> = Vec::new();
        let mut params = ListParams::default().limit(PEER_PAGE);
        loop {
            let listed =
                tokio::time::timeout(self.cfg.api_check_timeout * 2, api.list_metadata(&params))
                    .await;
            let Ok(Ok(page)) = listed else {
                tracing::debug!("peer discovery failed; keeping the cached peers");
                return;
            };
            // Keep only the addresses: a page of Nodes is dropped at once.
            peers.extend(
                page.items
                    .iter()
                    .filter(|n| n.metadata.name.as_deref() != Some(self.node.as_str()))
                    .filter_map(|n| {
                        n.metadata
                            .annotations
                            .as_ref()?
                            .get(decide::AGENT_ANNOTATION)
                    })
                    .filter_map(|v| decide::agent::parse(v).valid()?.peer_address.clone()),
            );
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        self.health.api_ok();
        peers.sort();
        peers.dedup();
        peer_order(&self.node, &mut peers);
        if peers != st.peers {
            tracing::info!(count = peers.len(), "peers discovered");
        }
        if peers.is_empty() && self.cfg.self_fence != SelfFence::None {
            tracing::warn!(
                "no peers known yet: if the API server became unreachable now, this agent could not tell an outage from isolation and would fence its node"
            );
        }
        self.metrics
            .peers
            .set(i64::try_from(peers.len()).unwrap_or(i64::MAX));
        st.peers = peers;
        let every = next_peer_refresh(st.peers_due.map(|(_, d)| d));
        st.peers_due = Some((Instant::now() + every, every));
    }

    /// Ask the next batch of peers (concurrently, each for at most the
    /// peer answer timeout).
    async fn ask_peers(&self, st: &mut LoopState) {
        let Some(key) = &self.key else {
            return;
        };
        let q = Question {
            from: self.node.clone(),
            node: self.node.clone(),
        };
        let timeout = decide::safetime::peer_answer_timeout(self.cfg.api_check_timeout);
        let batch = next_batch(&st.peers, &mut st.cursor);
        let asked_at = Instant::now();
        let asks = batch.iter().map(|addr| {
            let (key, q) = (key.clone(), q.clone());
            async move { (addr.clone(), peers::ask_peer(addr, &key, &q, timeout).await) }
        });
        for (addr, result) in futures::future::join_all(asks).await {
            st.asked.insert(addr.clone(), asked_at);
            match result {
                Ok(a) => {
                    self.metrics
                        .peer_requests
                        .with_label_values(&["out", "ok"])
                        .inc();
                    let my_phase =
                        record_applies(a.phase, a.boot_id.as_deref(), st.boot_id.as_deref());
                    st.answers.insert(
                        addr,
                        (
                            Instant::now(),
                            PeerAnswer {
                                api_reachable: a.api_reachable,
                                my_phase,
                            },
                        ),
                    );
                }
                Err(e) => {
                    self.metrics
                        .peer_requests
                        .with_label_values(&["out", "error"])
                        .inc();
                    tracing::debug!(peer = %addr, error = %e, "peer did not answer");
                }
            }
        }
    }

    /// Carry out the self-fence action. Returns whether it was carried out.
    async fn fence_self(&self, why: &str) -> bool {
        if self.cfg.self_fence == SelfFence::None {
            tracing::error!(node = %self.node, reason = %why, "this node should fence itself, but --self-fence=none: not fencing (the leader does not mark it fenced on time alone either)");
            return true;
        }
        tracing::error!(node = %self.node, reason = %why, action = self.cfg.self_fence.action().as_str(), "SELF-FENCING this node");
        match &self.cfg.self_fence {
            SelfFence::None => true,
            SelfFence::Watchdog => {
                if let Some(w) = &self.watchdog {
                    w.stop_feeding();
                }
                true
            }
            SelfFence::SysrqReboot => match std::fs::write("/proc/sysrq-trigger", b"b") {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(error = %e, "writing b to /proc/sysrq-trigger failed; retrying");
                    false
                }
            },
            SelfFence::Exec(cmd) => {
                let run = tokio::process::Command::new("sh")
                    .arg("-c")
                    .arg(cmd)
                    .env("NODE_NAME", &self.node)
                    .env("KUBE_FENCER_SELF_FENCE_REASON", why)
                    .kill_on_drop(true)
                    .status();
                match tokio::time::timeout(self.cfg.watchdog_timeout, run).await {
                    Ok(Ok(s)) if s.success() => true,
                    other => {
                        tracing::error!(outcome = ?other, "the self-fence command failed; retrying");
                        false
                    }
                }
            }
        }
    }

    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut st = LoopState {
            boot_id: read_boot_id(&self.cfg.boot_id_file),
            failures: 0,
            unreachable_since: None,
            answers: BTreeMap::new(),
            asked: BTreeMap::new(),
            peers: Vec::new(),
            cursor: 0,
            peers_due: None,
            advertised: None,
            last_verdict: None,
            fenced: false,
        };
        if st.boot_id.is_none() {
            tracing::warn!(file = %self.cfg.boot_id_file, "cannot read the boot ID: a fenced node will need kube-fencer.io/unfence=true to be unfenced, and the last API contact is not resumed after a restart");
        }
        // An agent restarted within this boot resumes from its last genuine
        // API contact, not from scratch (its node may be cut off since).
        let state_file = super::agent_state::path(&self.cfg.state_dir, &self.node);
        let mut saved = super::agent_state::load(&state_file, st.boot_id.as_deref());
        if let Some(at) = saved {
            tracing::info!(file = %state_file.display(), seconds_ago = at.elapsed().as_secs_f64(), "resuming from the last API contact before this agent's restart");
            self.health.api_ok_at(at);
        }
        let settings = SelfFenceSettings {
            api_failure_threshold: self.cfg.api_failure_threshold,
            peer_silence_timeout: self.cfg.peer_silence_timeout,
        };
        let interval = self.cfg.api_check_interval;
        // The first check at once: the watchdog (armed when it was opened)
        // is fed only once a check found nothing wrong.
        let mut next = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tokio::time::sleep_until(next.into()) => {}
            }
            let started = Instant::now();
            self.check(&mut st, &settings).await;
            self.persist_contact(&state_file, st.boot_id.as_deref(), &mut saved);
            next = if st.failures == 0 {
                // The next probe is due one interval after the last contact
                // (at the latest one interval from now).
                let contact = self.health.last_api_ok().unwrap_or(started);
                (contact + interval).clamp(Instant::now(), Instant::now() + interval)
            } else {
                started + interval
            };
        }
        let _ = self.withdraw().await;
    }

    /// Keep the last genuine API contact in the state file when it moved.
    fn persist_contact(
        &self,
        file: &std::path::Path,
        boot_id: Option<&str>,
        saved: &mut Option<Instant>,
    ) {
        if self.cfg.self_fence == SelfFence::None {
            return; // nothing to resume: this agent never fences its node
        }
        let (Some(boot), Some(last)) = (boot_id, self.health.last_api_ok()) else {
            return;
        };
        if saved.is_some_and(|s| s >= last) {
            return;
        }
        match super::agent_state::save(file, boot, last) {
            Ok(()) => *saved = Some(last),
            Err(e) => {
                // Once per failing streak is enough: `saved` is left behind
                // `last`, and the file names the failure to the operator.
                static WARNED: std::sync::atomic::AtomicBool =
                    std::sync::atomic::AtomicBool::new(false);
                if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!(file = %file.display(), error = %e, "cannot persist the last API contact (--state-dir): a restart of this agent would start its checks from scratch");
                }
            }
        }
    }

    async fn check(&self, st: &mut LoopState, settings: &SelfFenceSettings) {
        let now = Instant::now();
        // A new boot ID means the node rebooted (with a real reboot this
        // process would be new; tests replace the --boot-id-file instead).
        let boot = read_boot_id(&self.cfg.boot_id_file);
        if rebooted(st.boot_id.as_deref(), boot.as_deref()) {
            tracing::warn!(old = ?st.boot_id, new = ?boot, "boot ID changed: the node rebooted");
            st.boot_id = boot;
            st.fenced = false;
            st.advertised = None;
            st.answers.clear();
            st.failures = 0;
            st.unreachable_since = None;
        } else if st.boot_id.is_none() {
            st.boot_id = boot;
        }
        // Contact within the last interval: no probe needed.
        let fresh = self
            .health
            .last_api_ok()
            .is_some_and(|t| now.saturating_duration_since(t) < self.cfg.api_check_interval);
        let ok = fresh || self.probe_readyz().await;
        if ok {
            st.failures = 0;
            st.unreachable_since = None;
            st.answers.clear();
            st.asked.clear();
        } else {
            st.failures = st.failures.saturating_add(1);
            st.unreachable_since.get_or_insert_with(Instant::now);
            tracing::warn!(
                failures = st.failures,
                threshold = settings.api_failure_threshold,
                "API check failed"
            );
        }
        self.metrics.api_check_failures.set(i64::from(st.failures));

        if st.failures > 0 {
            self.ask_peers(st).await;
        }
        // The verdict is taken after the peers answered.
        let now = Instant::now();
        let silence = self.cfg.peer_silence_timeout;
        st.answers
            .retain(|_, (at, _)| now.saturating_duration_since(*at) < silence);
        st.asked
            .retain(|_, at| now.saturating_duration_since(*at) < silence);
        let answers: Vec<PeerAnswer> = st.answers.values().map(|(_, a)| *a).collect();
        let own = if ok {
            match self.shared.own_record() {
                RecordState::Valid(r) => {
                    record_applies(Some(r.phase), r.boot_id.as_deref(), st.boot_id.as_deref())
                }
                _ => None,
            }
        } else {
            None
        };
        let input = SelfFenceInput {
            api_failures: st.failures,
            own_phase_seen_connected: own,
            known_peers: st.asked.len(),
            answers: &answers,
            unreachable_for: st
                .unreachable_since
                .map(|t| now.saturating_duration_since(t))
                .unwrap_or_default(),
        };
        let verdict = selffence::decide(&input, settings);
        let label = match &verdict {
            Verdict::Healthy => "healthy",
            Verdict::Consulting { .. } => "consulting",
            Verdict::ControlPlaneOutage { .. } => "outage",
            Verdict::SelfFence(_) => "self_fencing",
        };
        self.metrics.set_self_fence_state(label);
        let changed = st
            .last_verdict
            .as_ref()
            .is_none_or(|v| std::mem::discriminant(v) != std::mem::discriminant(&verdict));
        if changed {
            tracing::warn!(verdict = label, "self-fence check: {}", verdict.describe());
        }
        st.last_verdict = Some(verdict.clone());
        if verdict.self_fence() {
            if !st.fenced {
                st.fenced = self.fence_self(&verdict.describe()).await;
            }
        } else if let Some(w) = &self.watchdog {
            // A completed check: the dead man's switch is renewed.
            w.permit_until(Instant::now() + feed_permit(&self.cfg));
        }
        // Writes to the API last, so that a slow API server never delays
        // the verdict or the watchdog's permit.
        if ok && !st.fenced {
            let stale = st
                .advertised
                .as_ref()
                .is_none_or(|(b, at)| *b != st.boot_id || now.duration_since(*at) >= READVERTISE);
            if stale {
                let boot = st.boot_id.clone();
                match self
                    .advertise(|addr| self.advert(boot.as_deref(), addr))
                    .await
                {
                    Ok(()) => st.advertised = Some((boot, now)),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not advertise this agent on its Node")
                    }
                }
            }
            if st.peers_due.is_none_or(|(due, _)| now >= due) {
                self.refresh_peers(st).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeStatus};

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn cfg(extra: &[&str]) -> AgentConfig {
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

    #[test]
    fn an_unreadable_boot_id_is_no_reboot() {
        assert!(rebooted(Some("a"), Some("b")));
        assert!(!rebooted(Some("a"), Some("a")));
        // Before: "" was read, and "" != "a" reset the checks as a reboot.
        assert!(!rebooted(Some("a"), None));
        assert!(!rebooted(None, Some("a")));
        assert!(!rebooted(None, None));
    }

    #[test]
    fn a_record_applies_unless_it_is_of_another_boot() {
        use decide::Phase::Fencing;
        assert_eq!(
            record_applies(Some(Fencing), Some("a"), Some("a")),
            Some(Fencing)
        );
        assert_eq!(record_applies(Some(Fencing), Some("old"), Some("a")), None);
        assert_eq!(
            record_applies(Some(Fencing), None, Some("a")),
            Some(Fencing)
        );
        // This node's boot unknown: the record may well be of this boot.
        assert_eq!(
            record_applies(Some(Fencing), Some("a"), None),
            Some(Fencing)
        );
        assert_eq!(record_applies(None, Some("a"), None), None);
    }

    fn addrs(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:9747")).collect()
    }

    #[test]
    fn peer_refresh_starts_short_and_backs_off() {
        let mut d = None;
        let mut seen = Vec::new();
        for _ in 0..10 {
            let next = next_peer_refresh(d);
            seen.push(next.as_secs());
            d = Some(next);
        }
        assert_eq!(seen, [5, 10, 20, 40, 80, 160, 300, 300, 300, 300]);
    }

    #[test]
    fn batches_rotate_through_every_peer() {
        let peers = addrs(70);
        let mut cursor = 0;
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..3 {
            let b = next_batch(&peers, &mut cursor);
            assert_eq!(b.len(), PEER_BATCH);
            seen.extend(b);
        }
        // 3 batches of 32 cover all 70 peers (wrapping around).
        assert_eq!(seen.len(), 70);
        // A small cluster is asked in full every time.
        let few = addrs(3);
        let mut c = 0;
        assert_eq!(next_batch(&few, &mut c), few);
        assert_eq!(next_batch(&few, &mut c), few);
        assert!(next_batch(&[], &mut c).is_empty());
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

    fn guardian(client: Client, watchdog: Option<Arc<Watchdog>>) -> Guardian {
        Guardian {
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
            shared: Arc::new(Shared::default()),
            health: Health::new(Duration::from_secs(30)),
            watchdog,
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
    async fn sigterm_keeps_the_watchdog_armed_when_the_withdrawal_fails() {
        // A partitioned agent being stopped: its Node still says "capable",
        // so the watchdog is its only guarantee and must not be disarmed.
        let (w, path) = fed_watchdog("withdraw-fails");
        let g = guardian(
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
        let g = guardian(Client::new(service, "default"), Some(w.clone()));
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
        let advert = decide::agent::parse(&value);
        let advert = advert.valid().expect("a valid advertisement");
        assert!(!advert.capable(), "{value}");
        assert_eq!(
            advert.peer_address, None,
            "a withdrawn agent is no peer any more: {value}"
        );
    }

    #[test]
    fn the_hook_remembers_the_own_record() {
        let shared = Arc::new(Shared::default());
        assert_eq!(shared.own_record(), RecordState::Absent);
        let hook = Hook(shared.clone());
        let rec = RecordState::Malformed("x".into());
        hook.own_record_changed("n1", &rec);
        assert_eq!(shared.own_record(), rec);
    }
}
