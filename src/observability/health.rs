//! `/healthz`, `/readyz` and `/metrics` on `--listen`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::observability::metrics::Metrics;

use crate::k8s::api_contact::ApiContact;

#[derive(Debug)]
struct HealthState {
    leader: bool,
    caches_synced: bool,
    own_node_synced: bool,
}

/// What readiness is judged by; updated by the agent, read by `/readyz`.
/// It reads the API contact clock ([`ApiContact`]), which others set.
#[derive(Clone, Debug)]
pub struct Health {
    state: Arc<Mutex<HealthState>>,
    contact: ApiContact,
    /// How recent the last successful API interaction must be.
    api_fresh_within: Duration,
}

impl Health {
    pub fn new(api_fresh_within: Duration, contact: ApiContact) -> Self {
        Health {
            state: Arc::new(Mutex::new(HealthState {
                leader: false,
                caches_synced: false,
                own_node_synced: false,
            })),
            contact,
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

    /// `Ok(description)` when ready, `Err(reason)` otherwise.
    pub fn readiness(&self, now: Instant) -> Result<String, String> {
        let last_api_ok = self.contact.last();
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
        let c = ApiContact::default();
        let h = Health::new(Duration::from_secs(30), c.clone());
        let t0 = Instant::now();
        assert!(h.readiness(t0).unwrap_err().contains("own Node"));
        h.set_own_node_synced(true);
        assert!(h.readiness(t0).unwrap_err().contains("no successful API"));
        c.seen_at(t0);
        assert!(h.readiness(t0 + Duration::from_secs(10)).is_ok());
        let e = h.readiness(t0 + Duration::from_secs(31)).unwrap_err();
        assert!(e.contains("31s ago"), "{e}");
    }

    #[test]
    fn leader_readiness() {
        let c = ApiContact::default();
        let h = Health::new(Duration::from_secs(30), c.clone());
        let t0 = Instant::now();
        h.set_own_node_synced(true);
        c.seen_at(t0);
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

    #[tokio::test]
    async fn endpoints() {
        let c = ApiContact::default();
        let h = Health::new(Duration::from_secs(30), c.clone());
        let app = router(h.clone(), Metrics::new());
        assert_eq!(call(app.clone(), "/healthz").await.0, StatusCode::OK);
        let (status, body) = call(app.clone(), "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.starts_with("not ready: follower"), "{body}");
        h.set_own_node_synced(true);
        c.seen();
        assert_eq!(call(app.clone(), "/readyz").await.0, StatusCode::OK);
        let (status, body) = call(app, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("kube_fencer_build_info"));
    }
}
