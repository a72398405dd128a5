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
//!
//! Until the leader assigns grantor sets, each agent takes the first
//! `grantors` peers of its own peer order (a hash of its name and theirs,
//! [`crate::agent::self_check::peer_order`]) as its set.

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::agent::self_check::NO_ADDRESS_PEER;
use crate::decide::permit::holder::{Command, Holder, HolderSettings, Lack, Status};
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
    pub metrics: Metrics,
    pub events: EventSink,
}

impl PermitTask {
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut holder = Holder::new(&self.node, &self.boot, self.settings);
        let started = Instant::now();
        let mut version = 0;
        let mut current = GrantorSet::default();
        let (tx, mut rx) = mpsc::unbounded_channel::<(String, u64, Answer)>();
        let mut told = Told::Nothing;
        loop {
            let set = own_set(version + 1, &self.peers.borrow_and_update(), self.grantors);
            if set.peers != current.peers {
                version += 1;
                current = set.clone();
                holder.set_grantors(vec![set]);
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
                            tokio::spawn(async move {
                                let result = send_renewal(&grantor, &key, &renewal, timeout).await;
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
                    // Shadow mode writes nothing to the API server.
                    Command::RenewThroughApi { .. } => {}
                }
            }
            let status = holder.status(now);
            self.report(&status);
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
                }
                _ = tokio::time::sleep_until(wake.into()) => {}
                changed = self.peers.changed() => {
                    if changed.is_err() {
                        // The self-check ended: its peers stay as they were.
                        tokio::time::sleep_until(wake.into()).await;
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
    }

    fn report(&self, status: &Status) {
        self.metrics
            .permit_held
            .set(i64::from(status.end.is_some()));
        self.metrics
            .permit_grants
            .set(i64::try_from(status.granted).unwrap_or(i64::MAX));
        self.metrics
            .permit_grants_needed
            .set(i64::try_from(status.needed).unwrap_or(i64::MAX));
    }

    /// Say when the permit comes or goes.
    fn tell(&self, told: Told, status: &Status, set: &GrantorSet) -> Told {
        let now = if status.end.is_some() {
            Told::Held
        } else {
            Told::NotHeld
        };
        if now == told {
            return told;
        }
        let regarding = node_ref(&self.node, None);
        match (now, status.lack) {
            (Told::Held, _) => {
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
                            "this node holds a permit again: {} of {} peer grants",
                            status.granted, status.needed
                        ),
                    );
                }
            }
            (_, lack) => {
                let why = describe(lack, set);
                tracing::warn!(grantors = ?set.peers, "this node cannot hold a permit: {why}");
                self.events.warning(
                    regarding,
                    "PermitUnavailable",
                    "Renew",
                    &format!(
                        "this node cannot hold a permit from its peers: {why}; once self-fencing is gated on the permit, such a node never arms its watchdog and is never fenced automatically"
                    ),
                );
            }
        }
        now
    }
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
        let metrics = Metrics::new();
        let (events, mut events_rx) = EventSink::channel(16, metrics.clone());
        let (_peers_tx, peers_rx) = watch::channel(peers);
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(
            PermitTask {
                node: "me".into(),
                boot: "boot".into(),
                key: PeerKey::from_bytes(key.as_bytes()).unwrap(),
                settings: settings(),
                grantors: 4,
                peers: peers_rx,
                metrics: metrics.clone(),
                events,
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
