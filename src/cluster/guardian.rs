//! The agent's guard over its own node (every agent, leader or not):
//!
//! - **API checks** every `--api-check-interval`: a watch on the node's own
//!   Lease in `kube-node-lease` delivers the kubelet's renewals for free, and
//!   any event (or a change on the own Node) since the last check proves the
//!   API path works; only when they stop does it probe `/readyz`
//!   (bounded by `--api-check-timeout`).
//! - **Peers**, once `--api-failure-threshold` checks failed in a row: ask
//!   them in bounded batches whether they reach the API and what the cluster
//!   records for this node ([`super::peers`]).
//! - **Verdict** from the pure decision table ([`crate::decide::selffence`]),
//!   and the **self-fence action** when it says so (watchdog, sysrq, exec).
//! - **Advertisement** of all of the above on the own Node
//!   (`kube-fencer.io/agent`), so the leader can compute the safe time.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use tokio::sync::watch;

use super::own_node::SelfFence as OwnRecordHook;
pub use super::watchdog::Watchdog;
use super::peer_auth::PeerKey;
use super::peers::{self, Question};
use super::reconcile::NODE_LEASE_NAMESPACE;
use crate::config::{AgentConfig, SelfFence};
use crate::decide::selffence::{self, PeerAnswer, SelfFenceInput, SelfFenceSettings, Verdict};
use crate::decide::{self, AgentAdvert, RecordState};
use crate::ops::Metrics;

/// Peers asked at once.
pub const PEER_BATCH: usize = 10;
/// Peer list refreshed from the API this often (a metadata-only list served
/// from the API server's watch cache: N agents cost N/300 lists per second).
pub const PEER_REFRESH: Duration = Duration::from_secs(300);
/// The advertisement is re-written at least this often (if it was removed).
pub const READVERTISE: Duration = Duration::from_secs(300);

/// What the own-Node watch and the own-Lease watch tell the guardian.
#[derive(Default)]
pub struct Shared {
    /// Last event from the API (own Lease or own Node).
    last_event: Mutex<Option<Instant>>,
    /// The fencing record on the own Node, as last seen through the watch.
    own_record: Mutex<Option<RecordState>>,
}

impl Shared {
    pub fn api_event(&self) {
        *self.last_event.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    fn last_event(&self) -> Option<Instant> {
        *self.last_event.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn own_record(&self) -> RecordState {
        self.own_record
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or(RecordState::Absent)
    }
}

/// The own-Node watch's hook: remember the record (and that the API spoke).
pub struct Hook(pub Arc<Shared>);

impl OwnRecordHook for Hook {
    fn own_record_changed(&self, node: &str, record: &RecordState) {
        super::own_node::LogOnly.own_record_changed(node, record);
        self.0.api_event();
        *self.0.own_record.lock().unwrap_or_else(|p| p.into_inner()) = Some(record.clone());
    }
}

/// Read the boot ID (trimmed); empty when unreadable.
pub fn read_boot_id(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
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
    pub watchdog: Option<Arc<Watchdog>>,
}

struct LoopState {
    boot_id: String,
    failures: u32,
    unreachable_since: Option<Instant>,
    /// peer address → (when, answer)
    answers: BTreeMap<String, (Instant, PeerAnswer)>,
    peers: Vec<String>,
    peers_at: Option<Instant>,
    advertised: Option<(String, Instant)>,
    last_verdict: Option<Verdict>,
    fenced: bool,
    last_check: Instant,
}

impl Guardian {
    fn advert(&self, boot_id: &str, peer_address: Option<String>) -> AgentAdvert {
        AgentAdvert {
            self_fence: self.cfg.self_fence.action(),
            watchdog_timeout: self.cfg.watchdog_timeout,
            api_check_interval: self.cfg.api_check_interval,
            api_check_timeout: self.cfg.api_check_timeout,
            api_failure_threshold: self.cfg.api_failure_threshold,
            peer_silence_timeout: self.cfg.peer_silence_timeout,
            boot_id: boot_id.to_string(),
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
        let advert = advert_of(peer_address(&self.cfg, Some(&node)));
        let value = decide::agent::render(&advert);
        let patch =
            serde_json::json!({"metadata": {"annotations": {decide::AGENT_ANNOTATION: value}}});
        tokio::time::timeout(
            self.cfg.api_check_timeout * 2,
            api.patch(&self.node, &PatchParams::default(), &Patch::Merge(&patch)),
        )
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
        tracing::info!(node = %self.node, advertisement = %value, "advertised this agent on its Node");
        Ok(())
    }

    /// Withdraw the self-fence promise (graceful shutdown), best effort.
    pub async fn withdraw(&self) {
        if matches!(self.cfg.self_fence, SelfFence::None) {
            return;
        }
        let boot = read_boot_id(&self.cfg.boot_id_file);
        let r = self
            .advertise(|addr| {
                let mut a = self.advert(&boot, addr);
                a.self_fence = decide::SelfFenceAction::None;
                a
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "could not withdraw the self-fence advertisement");
        }
        if let Some(w) = &self.watchdog {
            w.disarm();
        }
    }

    async fn probe_readyz(&self) -> bool {
        let req = match axum::http::Request::get("/readyz").body(Vec::new()) {
            Ok(r) => r,
            Err(_) => return false,
        };
        matches!(
            tokio::time::timeout(self.cfg.api_check_timeout, self.client.request_text(req)).await,
            Ok(Ok(_))
        )
    }

    async fn refresh_peers(&self, st: &mut LoopState) {
        if !self.cfg.static_peers.is_empty() {
            st.peers = self.cfg.static_peers.clone();
            st.peers_at = Some(Instant::now());
            return;
        }
        let api: Api<Node> = Api::all(self.client.clone());
        let listed = tokio::time::timeout(
            self.cfg.api_check_timeout * 2,
            api.list_metadata(&ListParams::default().match_any()),
        )
        .await;
        let Ok(Ok(list)) = listed else {
            tracing::debug!("peer discovery failed; keeping the cached peers");
            return;
        };
        let mut peers: Vec<String> = list
            .items
            .iter()
            .filter(|n| n.metadata.name.as_deref() != Some(self.node.as_str()))
            .filter_map(|n| {
                n.metadata
                    .annotations
                    .as_ref()?
                    .get(decide::AGENT_ANNOTATION)
            })
            .filter_map(|v| decide::agent::parse(v).valid()?.peer_address.clone())
            .collect();
        peers.sort();
        peers.dedup();
        if peers != st.peers {
            tracing::info!(peers = ?peers, "peers discovered");
        }
        st.peers = peers;
        st.peers_at = Some(Instant::now());
    }

    async fn ask_peers(&self, st: &mut LoopState) {
        let Some(key) = &self.key else {
            return;
        };
        let q = Question {
            from: self.node.clone(),
            node: self.node.clone(),
        };
        for batch in st.peers.clone().chunks(PEER_BATCH) {
            let asks = batch.iter().map(|addr| {
                let (key, q) = (key.clone(), q.clone());
                // The peer spends up to one API check timeout on its own
                // GET: wait longer than that for its answer.
                let timeout = self.cfg.api_check_timeout * 2 + Duration::from_millis(500);
                async move { (addr.clone(), peers::ask_peer(addr, &key, &q, timeout).await) }
            });
            for (addr, result) in futures::future::join_all(asks).await {
                match result {
                    Ok(a) => {
                        self.metrics
                            .peer_requests
                            .with_label_values(&["out", "ok"])
                            .inc();
                        let my_phase = selffence::own_record_applies(
                            a.phase,
                            a.boot_id.as_deref(),
                            &st.boot_id,
                        );
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
        let lease_watch = {
            let api: Api<Lease> = Api::namespaced(self.client.clone(), NODE_LEASE_NAMESPACE);
            let shared = self.shared.clone();
            let node = self.node.clone();
            tokio::spawn(async move {
                let mut stream = watcher::watcher(
                    api,
                    watcher::Config::default().fields(&format!("metadata.name={node}")),
                )
                .default_backoff()
                .boxed();
                while let Some(item) = stream.next().await {
                    if item.is_ok() {
                        shared.api_event();
                    }
                }
            })
        };
        let now = Instant::now();
        let mut st = LoopState {
            boot_id: read_boot_id(&self.cfg.boot_id_file),
            failures: 0,
            unreachable_since: None,
            answers: BTreeMap::new(),
            peers: Vec::new(),
            peers_at: None,
            advertised: None,
            last_verdict: None,
            fenced: false,
            last_check: now,
        };
        if st.boot_id.is_empty() {
            tracing::warn!(file = %self.cfg.boot_id_file, "cannot read the boot ID: a fenced node will need kube-fencer.io/unfence=true to be unfenced");
        }
        let settings = SelfFenceSettings {
            api_failure_threshold: self.cfg.api_failure_threshold,
            peer_silence_timeout: self.cfg.peer_silence_timeout,
        };
        let mut tick = tokio::time::interval(self.cfg.api_check_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => {}
            }
            self.check(&mut st, &settings).await;
        }
        lease_watch.abort();
        self.withdraw().await;
    }

    async fn check(&self, st: &mut LoopState, settings: &SelfFenceSettings) {
        let now = Instant::now();
        // A new boot ID means the node rebooted (with a real reboot this
        // process would be new; tests replace the --boot-id-file instead).
        let boot = read_boot_id(&self.cfg.boot_id_file);
        if boot != st.boot_id {
            tracing::warn!(old = %st.boot_id, new = %boot, "boot ID changed: the node rebooted");
            st.boot_id = boot;
            st.fenced = false;
            st.advertised = None;
            st.answers.clear();
            st.failures = 0;
            st.unreachable_since = None;
        }
        let evented = self.shared.last_event().is_some_and(|t| t >= st.last_check);
        st.last_check = now;
        let ok = evented || self.probe_readyz().await;
        if ok {
            st.failures = 0;
            st.unreachable_since = None;
            st.answers.clear();
        } else {
            st.failures = st.failures.saturating_add(1);
            tracing::warn!(
                failures = st.failures,
                threshold = settings.api_failure_threshold,
                "API check failed"
            );
        }
        self.metrics.api_check_failures.set(i64::from(st.failures));

        if ok && !st.fenced {
            let stale = st
                .advertised
                .as_ref()
                .is_none_or(|(b, at)| *b != st.boot_id || now.duration_since(*at) >= READVERTISE);
            if stale {
                let boot = st.boot_id.clone();
                match self.advertise(|addr| self.advert(&boot, addr)).await {
                    Ok(()) => st.advertised = Some((boot, now)),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not advertise this agent on its Node")
                    }
                }
            }
            if st
                .peers_at
                .is_none_or(|t| now.duration_since(t) >= PEER_REFRESH)
            {
                self.refresh_peers(st).await;
            }
        }
        if st.failures >= settings.api_failure_threshold {
            let since = *st.unreachable_since.get_or_insert(now);
            let _ = since;
            self.ask_peers(st).await;
        }
        let silence = self.cfg.peer_silence_timeout;
        st.answers
            .retain(|_, (at, _)| now.saturating_duration_since(*at) < silence);
        let answers: Vec<PeerAnswer> = st.answers.values().map(|(_, a)| *a).collect();
        let own = if ok {
            match self.shared.own_record() {
                RecordState::Valid(r) => {
                    selffence::own_record_applies(Some(r.phase), r.boot_id.as_deref(), &st.boot_id)
                }
                _ => None,
            }
        } else {
            None
        };
        let input = SelfFenceInput {
            api_failures: st.failures,
            own_phase_seen_connected: own,
            known_peers: st.peers.len(),
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
        if verdict.self_fence() && !st.fenced {
            st.fenced = self.fence_self(&verdict.describe()).await;
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
    fn boot_id_is_trimmed_and_empty_when_unreadable() {
        let dir = std::env::temp_dir().join(format!("kf-boot-{}", std::process::id()));
        std::fs::write(&dir, "  6f1c-boot\n").unwrap();
        assert_eq!(read_boot_id(dir.to_str().unwrap()), "6f1c-boot");
        let _ = std::fs::remove_file(&dir);
        assert_eq!(read_boot_id("/nonexistent/boot_id"), "");
    }

    #[test]
    fn the_hook_remembers_the_own_record() {
        let shared = Arc::new(Shared::default());
        assert_eq!(shared.own_record(), RecordState::Absent);
        assert!(shared.last_event().is_none());
        let hook = Hook(shared.clone());
        let rec = RecordState::Malformed("x".into());
        hook.own_record_changed("n1", &rec);
        assert_eq!(shared.own_record(), rec);
        assert!(shared.last_event().is_some());
    }
}
