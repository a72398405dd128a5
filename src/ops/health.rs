//! `/healthz`, `/readyz` and `/metrics` on `--listen`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::metrics::Metrics;

/// Whether a watcher event proves a response from the API server.
///
/// `Event::Init` is not one: kube-runtime's watcher emits it when it
/// (re)starts, *before* it sends any request, and with a network that fails
/// fast (interface down, TCP reset, ICMP unreachable) it restarts about every
/// second. Every other event carries what the API server sent: a listed
/// object, the end of a successful list, or a watch event.
pub fn is_api_contact<K>(event: &kube::runtime::watcher::Event<K>) -> bool {
    !matches!(event, kube::runtime::watcher::Event::Init)
}

#[derive(Debug)]
struct HealthState {
    leader: bool,
    caches_synced: bool,
    own_node_synced: bool,
}

/// What readiness is judged by; updated by the agent, read by `/readyz`.
/// Also the agent's clock of genuine API contact (see [`Health::api_ok`]),
/// which the self-check subscribes to ([`Health::subscribe_api_contact`]).
#[derive(Clone, Debug)]
pub struct Health {
    state: Arc<Mutex<HealthState>>,
    /// The last response from the API server.
    contact: Arc<tokio::sync::watch::Sender<Option<Instant>>>,
    /// How recent the last successful API interaction must be.
    api_fresh_within: Duration,
}

impl Health {
    pub fn new(api_fresh_within: Duration) -> Self {
        Health {
            state: Arc::new(Mutex::new(HealthState {
                leader: false,
                caches_synced: false,
                own_node_synced: false,
            })),
            contact: Arc::new(tokio::sync::watch::Sender::new(None)),
            api_fresh_within,
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut HealthState) -> R) -> R {
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    pub fn set_leader(&self, leader: bool) {
        self.with(|s| {
            s.leader = leader;
            if !leader {
                s.caches_synced = false;
            }
        });
    }

    pub fn set_caches_synced(&self, synced: bool) {
        self.with(|s| s.caches_synced = synced);
    }

    pub fn set_own_node_synced(&self, synced: bool) {
        self.with(|s| s.own_node_synced = synced);
    }

    /// A response from the API server arrived just now (a successful request,
    /// or a watch event other than `Init`: see [`is_api_contact`]).
    pub fn api_ok(&self) {
        self.api_ok_at(Instant::now());
    }

    pub fn api_ok_at(&self, at: Instant) {
        // Never move backwards (a slow request may finish after a newer event).
        self.contact.send_if_modified(|last| {
            let newer = last.is_none_or(|t| t < at);
            if newer {
                *last = Some(at);
            }
            newer
        });
    }

    /// The last response from the API server (request or watch event).
    pub fn last_api_ok(&self) -> Option<Instant> {
        *self.contact.borrow()
    }

    /// Told of every new API contact (the value is its time).
    pub fn subscribe_api_contact(&self) -> tokio::sync::watch::Receiver<Option<Instant>> {
        self.contact.subscribe()
    }

    /// `Ok(description)` when ready, `Err(reason)` otherwise.
    pub fn readiness(&self, now: Instant) -> Result<String, String> {
        let last_api_ok = self.last_api_ok();
        self.with(|s| {
            let api = match last_api_ok {
                None => Err("no successful API interaction yet".to_string()),
                Some(t) if now.saturating_duration_since(t) > self.api_fresh_within => {
                    Err(format!(
                        "last successful API interaction {}s ago (limit {}s)",
                        now.saturating_duration_since(t).as_secs(),
                        self.api_fresh_within.as_secs()
                    ))
                }
                Some(_) => Ok(()),
            };
            if s.leader {
                if !s.caches_synced {
                    return Err("leader: Node and Lease caches not synced yet".into());
                }
                api.map_err(|e| format!("leader: {e}"))?;
                Ok("leader: caches synced, API reachable".into())
            } else {
                if !s.own_node_synced {
                    return Err("follower: watch on own Node not synced yet".into());
                }
                api.map_err(|e| format!("follower: {e}"))?;
                Ok("follower: own Node watched, API reachable".into())
            }
        })
    }
}

#[derive(Clone)]
struct AppState {
    health: Health,
    metrics: Metrics,
}

pub fn router(health: Health, metrics: Metrics) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .with_state(AppState { health, metrics })
}

async fn readyz(State(app): State<AppState>) -> impl IntoResponse {
    match app.health.readiness(Instant::now()) {
        Ok(why) => (StatusCode::OK, format!("ok: {why}\n")),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn metrics_handler(State(app): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.render(),
    )
}

/// Bind `addr` and serve until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    health: Health,
    metrics: Metrics,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /healthz, /readyz and /metrics");
    axum::serve(listener, router(health, metrics))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follower_readiness() {
        let h = Health::new(Duration::from_secs(30));
        let t0 = Instant::now();
        assert!(h.readiness(t0).unwrap_err().contains("own Node"));
        h.set_own_node_synced(true);
        assert!(h.readiness(t0).unwrap_err().contains("no successful API"));
        h.api_ok_at(t0);
        assert!(h.readiness(t0 + Duration::from_secs(10)).is_ok());
        let e = h.readiness(t0 + Duration::from_secs(31)).unwrap_err();
        assert!(e.contains("31s ago"), "{e}");
    }

    #[test]
    fn leader_readiness() {
        let h = Health::new(Duration::from_secs(30));
        let t0 = Instant::now();
        h.set_own_node_synced(true);
        h.api_ok_at(t0);
        h.set_leader(true);
        assert!(h.readiness(t0).unwrap_err().contains("caches not synced"));
        h.set_caches_synced(true);
        assert!(h.readiness(t0).unwrap().starts_with("leader"));
        h.set_leader(false);
        assert!(h.readiness(t0).unwrap().starts_with("follower"));
    }

    async fn call(app: Router, path: &str) -> (StatusCode, String) {
        use http_body_util::BodyExt;
        use tower::ServiceExt;
        let resp = app
            .oneshot(
                axum::http::Request::get(path)
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[test]
    fn api_contact_never_moves_backwards_and_is_announced() {
        let h = Health::new(Duration::from_secs(30));
        let mut rx = h.subscribe_api_contact();
        let t0 = Instant::now();
        h.api_ok_at(t0 + Duration::from_secs(2));
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), Some(t0 + Duration::from_secs(2)));
        h.api_ok_at(t0);
        assert!(!rx.has_changed().unwrap(), "an older contact is no news");
        assert_eq!(h.last_api_ok(), Some(t0 + Duration::from_secs(2)));
    }

    #[tokio::test]
    async fn endpoints() {
        let h = Health::new(Duration::from_secs(30));
        let app = router(h.clone(), Metrics::new());
        assert_eq!(call(app.clone(), "/healthz").await.0, StatusCode::OK);
        let (status, body) = call(app.clone(), "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.starts_with("not ready: follower"), "{body}");
        h.set_own_node_synced(true);
        h.api_ok();
        assert_eq!(call(app.clone(), "/readyz").await.0, StatusCode::OK);
        let (status, body) = call(app, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("kube_fencer_build_info"));
    }
}
