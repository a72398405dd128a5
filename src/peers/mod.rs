//! Peers: every agent serves `POST /peer/v1/ask` on `--peer-listen` and asks
//! the others when it loses the API server. The question is "can you reach
//! the API, and what does the cluster record for node X?". A peer that had
//! no contact with the API within its check interval and timeout
//! ([`crate::decide::contract::safe_time::peer_fresh_within`]) answers
//! "unreachable" at once — during an outage every peer answers without delay, so the
//! asker never takes slow peers for silent ones. Otherwise it reads Node X
//! (bounded by its `--api-check-timeout`, so the asker, waiting
//! [`crate::decide::contract::safe_time::peer_answer_timeout`], gets its answer) and
//! returns the phase and boot ID of X's fencing record.
//!
//! Both directions are authenticated ([`crate::peers::auth`]); the answer
//! echoes the question's nonce, which is what makes it fresh. A question
//! whose timestamp is too far from the receiver's clock is answered `401`
//! with a challenge ([`CHALLENGE_HEADER`]), and the asker repeats it signed
//! over that challenge: clock offsets between nodes never silence a peer.
//! The client is a minimal HTTP/1.1 exchange over one TCP connection per
//! request (`Connection: close`), bounded by one timeout for the whole ask.

pub mod auth;
pub mod key;
pub mod permit;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::Api;
use serde::{Deserialize, Serialize};

use crate::decide::Phase;
use crate::k8s::ApiContact;
use crate::k8s::facts::node_facts;
use crate::observability::Metrics;
use crate::peers::auth::{AuthError, Challenges, NonceCache, PeerKey, new_nonce, unix_now};

pub const AUTH_HEADER: &str = "x-kube-fencer-auth";
/// On a `401` to a question from a key holder whose clock is off: the
/// receiver's challenge to sign the question over.
pub const CHALLENGE_HEADER: &str = "x-kube-fencer-challenge";
pub const PATH: &str = "/peer/v1/ask";
/// Largest answer read from a peer.
const MAX_ANSWER: usize = 16 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Question {
    /// The asking node (for logs).
    pub from: String,
    /// The node whose record is asked for.
    pub node: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Answer {
    pub api_reachable: bool,
    pub phase: Option<Phase>,
    pub boot_id: Option<String>,
    /// The question's nonce.
    pub nonce: String,
}

/// State of the peer endpoint.
#[derive(Clone)]
pub struct Server {
    pub client: Client,
    pub key: PeerKey,
    pub nonces: Arc<Mutex<NonceCache>>,
    /// Challenges issued to askers whose clock is off.
    pub challenges: Arc<Mutex<Challenges>>,
    pub api_timeout: Duration,
    /// The API counts as reachable when the last contact is this recent
    /// (the agent's `--api-check-interval`).
    pub fresh_within: Duration,
    /// The agent's API contact clock.
    pub contact: ApiContact,
    pub metrics: Metrics,
    /// Seconds since the Unix epoch ([`unix_now`]; tests skew it).
    pub clock: fn() -> u64,
    /// This agent's grantor ([`permit`]); `None`: renewals and stops are
    /// refused.
    pub grants: Option<Arc<permit::Grants>>,
}

pub fn router(server: Server) -> axum::Router {
    axum::Router::new()
        .route(PATH, post(ask))
        .route(permit::RENEW_PATH, post(permit::renew))
        .route(permit::STOP_PATH, post(permit::stop))
        .with_state(server)
}

async fn ask(
    State(s): State<Server>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap, String) {
    let nonce = match authenticate(&s, &headers, &body) {
        Ok(n) => n,
        Err(refused) => return *refused,
    };
    let out = HeaderMap::new();
    let Ok(q) = serde_json::from_slice::<Question>(&body) else {
        s.metrics
            .peer_requests
            .with_label_values(&["in", "malformed"])
            .inc();
        return (StatusCode::BAD_REQUEST, out, String::new());
    };
    let answer = match read_node(&s, &q.node).await {
        Some(node) => {
            let facts = node_facts(&node);
            let record = facts.record.valid();
            Answer {
                api_reachable: true,
                phase: record.map(|r| r.phase),
                boot_id: record.and_then(|r| r.boot_id.clone()),
                nonce,
            }
        }
        None => Answer {
            api_reachable: false,
            phase: None,
            boot_id: None,
            nonce,
        },
    };
    tracing::debug!(from = %q.from, node = %q.node, api_reachable = answer.api_reachable, phase = ?answer.phase, "answered a peer");
    s.metrics
        .peer_requests
        .with_label_values(&["in", "ok"])
        .inc();
    signed_reply(&s, &answer)
}

/// Check a request's authentication and freshness. The request's nonce,
/// or the refusal to send: `401`, with a challenge when the sender holds
/// the key but its clock is off.
pub(crate) fn authenticate(
    s: &Server,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<String, Box<(StatusCode, HeaderMap, String)>> {
    let mut out = HeaderMap::new();
    let now = (s.clock)();
    let header = headers
        .get(AUTH_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let verified = {
        let mut nonces = s.nonces.lock().unwrap_or_else(|p| p.into_inner());
        let mut challenges = s.challenges.lock().unwrap_or_else(|p| p.into_inner());
        s.key.verify_question(
            header,
            body,
            now,
            Instant::now(),
            &mut nonces,
            &mut challenges,
        )
    };
    match verified {
        Ok(n) => Ok(n),
        Err(AuthError::Stale(skew)) => {
            // A key holder whose clock is off: not refused, challenged.
            let challenge = s
                .challenges
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .issue(Instant::now());
            if let Ok(v) = challenge.parse() {
                out.insert(CHALLENGE_HEADER, v);
            }
            s.metrics
                .peer_requests
                .with_label_values(&["in", "challenged"])
                .inc();
            tracing::debug!(
                skew_seconds = skew,
                "a peer's clock is off: answering its request with a challenge"
            );
            Err(Box::new((StatusCode::UNAUTHORIZED, out, String::new())))
        }
        Err(e) => {
            s.metrics
                .peer_requests
                .with_label_values(&["in", e.as_label()])
                .inc();
            tracing::warn!(error = %e, "rejected a peer request");
            Err(Box::new((StatusCode::UNAUTHORIZED, out, String::new())))
        }
    }
}

/// `200` with `reply` as JSON, signed.
pub(crate) fn signed_reply<T: Serialize>(s: &Server, reply: &T) -> (StatusCode, HeaderMap, String) {
    let mut out = HeaderMap::new();
    let text = serde_json::to_string(reply).unwrap_or_default();
    let auth = s.key.sign((s.clock)(), &new_nonce(), text.as_bytes());
    if let Ok(v) = auth.parse() {
        out.insert(AUTH_HEADER, v);
    }
    (StatusCode::OK, out, text)
}

/// Node `name`, when this agent is in contact with the API: `None` at once
/// when its last contact is older than `fresh_within`, or when the GET fails
/// within `api_timeout`.
async fn read_node(s: &Server, name: &str) -> Option<Node> {
    let fresh = s
        .contact
        .last()
        .is_some_and(|t| t.elapsed() < s.fresh_within);
    if !fresh {
        return None;
    }
    let api: Api<Node> = Api::all(s.client.clone());
    let node = tokio::time::timeout(s.api_timeout, api.get(name))
        .await
        .ok()?
        .ok()?;
    s.contact.seen();
    Some(node)
}

/// Why asking a peer gave no answer to go by.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("timed out")]
    TimedOut,
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("{stage}: {source}")]
    Http {
        stage: &'static str,
        source: hyper::Error,
    },
    #[error("request: {0}")]
    Request(String),
    #[error("read: {0}")]
    Read(String),
    #[error("HTTP {0}")]
    Status(u16),
    #[error("answer is not authenticated")]
    Unauthenticated,
    #[error("answer rejected: {0}")]
    Rejected(AuthError),
    #[error("malformed answer: {0}")]
    Malformed(serde_json::Error),
    #[error("answer is for another question (nonce mismatch)")]
    NonceMismatch,
    #[error("no agent advertised a peer address on this node")]
    NoAddress,
    #[error("no peer key")]
    NoKey,
}

/// Ask the peer at `addr` (`host:port`) about `node`. Any failure (network,
/// timeout, status, authentication, nonce mismatch) is an `Err`.
pub async fn ask_peer(
    addr: &str,
    key: &PeerKey,
    question: &Question,
    timeout: Duration,
) -> Result<Answer, AskError> {
    ask_peer_with_clock(addr, key, question, timeout, unix_now).await
}

/// [`ask_peer`] with the asker's clock given (tests skew it).
pub async fn ask_peer_with_clock(
    addr: &str,
    key: &PeerKey,
    question: &Question,
    timeout: Duration,
    clock: fn() -> u64,
) -> Result<Answer, AskError> {
    exchange(addr, PATH, key, question, timeout, clock).await
}

/// A reply that echoes its request's nonce (what makes it fresh).
pub(crate) trait Reply: for<'de> Deserialize<'de> {
    fn nonce(&self) -> &str;
}

impl Reply for Answer {
    fn nonce(&self) -> &str {
        &self.nonce
    }
}

/// One signed request to `path` and its reply, within `timeout`; the
/// reply must be signed and echo the request's nonce.
pub(crate) async fn exchange<Q: Serialize, A: Reply>(
    addr: &str,
    path: &str,
    key: &PeerKey,
    request: &Q,
    timeout: Duration,
    clock: fn() -> u64,
) -> Result<A, AskError> {
    tokio::time::timeout(timeout, async {
        let (payload, nonce) = signed_exchange(addr, path, key, request, clock).await?;
        let reply: A = serde_json::from_slice(&payload).map_err(AskError::Malformed)?;
        if reply.nonce() != nonce {
            return Err(AskError::NonceMismatch);
        }
        Ok(reply)
    })
    .await
    .map_err(|_| AskError::TimedOut)?
}

/// POST `request` to `path` at `addr`, signed, repeated once signed over
/// the peer's challenge if our clocks disagree; the answer's body, its MAC
/// checked, and the nonce the answer must echo (the caller checks it: that
/// is what makes the answer fresh, whatever the peer's clock says).
async fn signed_exchange<T: Serialize>(
    addr: &str,
    path: &str,
    key: &PeerKey,
    request: &T,
    clock: fn() -> u64,
) -> Result<(Bytes, String), AskError> {
    let body = serde_json::to_string(request).map_err(|e| AskError::Request(e.to_string()))?;
    let mut nonce = new_nonce();
    let auth = key.sign(clock(), &nonce, body.as_bytes());
    let (mut status, mut headers, mut payload) = post_signed(addr, path, &auth, &body).await?;
    if let (StatusCode::UNAUTHORIZED, Some(challenge)) =
        (status, header(&headers, CHALLENGE_HEADER))
    {
        // Our clock and the peer's disagree: sign over its challenge.
        nonce = new_nonce();
        let auth = key.sign_challenged(&challenge, &nonce, body.as_bytes());
        (status, headers, payload) = post_signed(addr, path, &auth, &body).await?;
    }
    if status != StatusCode::OK {
        return Err(AskError::Status(status.as_u16()));
    }
    let auth = header(&headers, AUTH_HEADER).ok_or(AskError::Unauthenticated)?;
    key.verify_answer(&auth, &payload)
        .map_err(AskError::Rejected)?;
    Ok((payload, nonce))
}

/// A header's value, if it is there and readable.
fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name)?.to_str().ok().map(str::to_string)
}

/// One POST to `path` over a connection of its own (hyper's HTTP/1.1
/// client, driven in this future: a cancelled ask leaves no task behind);
/// status, headers and at most [`MAX_ANSWER`] bytes of body.
async fn post_signed(
    addr: &str,
    path: &str,
    auth: &str,
    body: &str,
) -> Result<(StatusCode, HeaderMap, Bytes), AskError> {
    use http_body_util::{BodyExt, Full, Limited};
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(AskError::Connect)?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|source| AskError::Http {
                stage: "handshake",
                source,
            })?;
    let request = axum::http::Request::post(path)
        .header(axum::http::header::HOST, addr)
        .header(axum::http::header::CONTENT_TYPE, "application/json")
        .header(AUTH_HEADER, auth)
        .body(Full::new(Bytes::from(body.to_owned())))
        .map_err(|e| AskError::Request(e.to_string()))?;
    let exchange = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|source| AskError::Http {
                stage: "request",
                source,
            })?;
        let (parts, payload) = response.into_parts();
        let payload = Limited::new(payload, MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| AskError::Read(e.to_string()))?
            .to_bytes();
        Ok::<_, AskError>((parts.status, parts.headers, payload))
    };
    let mut exchange = std::pin::pin!(exchange);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        biased;
        done = &mut exchange => done,
        closed = &mut conn => {
            // The connection ended first: what it delivered may still make
            // a whole answer.
            closed.map_err(|source| AskError::Http {
                stage: "connection",
                source,
            })?;
            exchange.await
        }
    }
}

/// A peer endpoint with key `key`, the API server at `api`, the clock
/// `clock` and the grantor `grants`, serving on a free local port; its
/// address.
#[cfg(test)]
pub(crate) async fn serve_test_peer(
    key: &str,
    api: &str,
    contact: ApiContact,
    clock: fn() -> u64,
    grants: Option<Arc<permit::Grants>>,
) -> String {
    let client = Client::try_from(kube::Config::new(api.parse().expect("url"))).expect("client");
    let server = Server {
        client,
        key: PeerKey::from_bytes(key.as_bytes()).unwrap(),
        nonces: Arc::new(Mutex::new(NonceCache::default())),
        challenges: Arc::new(Mutex::new(Challenges::default())),
        api_timeout: Duration::from_secs(3600),
        fresh_within: Duration::from_secs(5),
        contact,
        metrics: Metrics::new(),
        clock,
        grants,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, router(server)).await });
    addr
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn serve(key: &str) -> String {
        let contact = ApiContact::default();
        contact.seen();
        serve_with(key, "http://127.0.0.1:9", contact).await
    }

    async fn serve_with(key: &str, api: &str, contact: ApiContact) -> String {
        serve_at(key, api, contact, unix_now).await
    }

    async fn serve_at(key: &str, api: &str, contact: ApiContact, clock: fn() -> u64) -> String {
        serve_test_peer(key, api, contact, clock, None).await
    }

    fn q() -> Question {
        Question {
            from: "a".into(),
            node: "b".into(),
        }
    }

    const KEY: &str = "0123456789abcdef0123";
    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn a_peer_with_the_key_gets_an_authenticated_answer() {
        let addr = serve(KEY).await;
        let key = PeerKey::from_bytes(KEY.as_bytes()).unwrap();
        let a = ask_peer(&addr, &key, &q(), T).await.expect("answer");
        // This test's API server does not exist: the peer cannot reach it.
        assert!(!a.api_reachable);
        assert_eq!(a.phase, None);
    }

    /// An "API server" that accepts connections and never answers.
    async fn hanging_api() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                held.push(conn);
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn without_recent_api_contact_a_peer_answers_unreachable_at_once() {
        // The peer's API hangs (an outage): a peer that would wait for its
        // own GET answers after the asker gave up, and the asker would count
        // it as silent — and fence itself during a control-plane outage.
        let key = PeerKey::from_bytes(KEY.as_bytes()).unwrap();
        let api = hanging_api().await;
        let stale = ApiContact::default();
        let addr = serve_with(KEY, &api, stale).await;
        let a = ask_peer(&addr, &key, &q(), T)
            .await
            .expect("an answer in time");
        assert!(!a.api_reachable);
        // With a recent contact it does try the GET (bounded by its API
        // timeout, here an hour): the asker times out.
        let fresh = ApiContact::default();
        fresh.seen();
        let addr = serve_with(KEY, &api, fresh).await;
        let e = ask_peer(&addr, &key, &q(), Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(matches!(e, AskError::TimedOut), "{e}");
    }

    #[tokio::test]
    async fn a_wrong_key_is_refused_both_ways() {
        let addr = serve(KEY).await;
        let wrong = PeerKey::from_bytes(b"another-key-0123456").unwrap();
        let e = ask_peer(&addr, &wrong, &q(), T).await.unwrap_err();
        assert!(matches!(e, AskError::Status(401)), "{e}");
    }

    #[tokio::test]
    async fn a_replayed_request_is_refused() {
        let addr = serve(KEY).await;
        let key = PeerKey::from_bytes(KEY.as_bytes()).unwrap();
        let body = serde_json::to_string(&q()).unwrap();
        let auth = key.sign(unix_now(), "fixed-nonce", body.as_bytes());
        let mut statuses = Vec::new();
        for _ in 0..2 {
            statuses.push(post_signed(&addr, PATH, &auth, &body).await.unwrap().0);
        }
        assert_eq!(statuses, vec![StatusCode::OK, StatusCode::UNAUTHORIZED]);
        // An old message is refused even with a fresh nonce.
        let auth = key.sign(unix_now() - 60, "other-nonce", body.as_bytes());
        let status = post_signed(&addr, PATH, &auth, &body).await.unwrap().0;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    fn two_minutes_ahead() -> u64 {
        unix_now() + 120
    }

    fn two_minutes_behind() -> u64 {
        unix_now() - 120
    }

    #[tokio::test]
    async fn an_asker_whose_clock_is_two_minutes_ahead_gets_an_answer() {
        // Freshness rests on nonces, not on synchronised clocks: a peer
        // clock offset must not turn peers into silence (rule 5: fence).
        let addr = serve(KEY).await;
        let key = PeerKey::from_bytes(KEY.as_bytes()).unwrap();
        let a = ask_peer_with_clock(&addr, &key, &q(), T, two_minutes_ahead)
            .await
            .expect("an answer despite the clock offset");
        assert!(!a.api_reachable);
    }

    #[tokio::test]
    async fn a_peer_whose_clock_is_two_minutes_behind_answers() {
        let contact = ApiContact::default();
        contact.seen();
        let addr = serve_at(KEY, "http://127.0.0.1:9", contact, two_minutes_behind).await;
        let key = PeerKey::from_bytes(KEY.as_bytes()).unwrap();
        let a = ask_peer(&addr, &key, &q(), T)
            .await
            .expect("an answer despite the clock offset");
        assert!(!a.api_reachable);
    }

    #[tokio::test]
    async fn an_absent_peer_is_an_error() {
        let key = PeerKey::from_bytes(KEY.as_bytes()).unwrap();
        assert!(ask_peer("127.0.0.1:1", &key, &q(), T).await.is_err());
    }

    /// A listener that answers every connection with `response` (after
    /// reading the request), or holds it open without a word if `None`.
    async fn raw_peer(response: Option<Vec<u8>>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let response = response.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    match response {
                        Some(r) => {
                            let _ = s.write_all(&r).await;
                        }
                        None => tokio::time::sleep(Duration::from_secs(60)).await,
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_peer_that_never_answers_times_out() {
        let addr = raw_peer(None).await;
        let key = PeerKey::from_bytes(KEY.as_bytes()).unwrap();
        let e = ask_peer(&addr, &key, &q(), Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(matches!(e, AskError::TimedOut), "{e}");
    }

    #[tokio::test]
    async fn an_answer_larger_than_the_limit_is_refused() {
        let mut big = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
            MAX_ANSWER + 1
        )
        .into_bytes();
        big.extend(std::iter::repeat_n(b'x', MAX_ANSWER + 1));
        let addr = raw_peer(Some(big)).await;
        let key = PeerKey::from_bytes(KEY.as_bytes()).unwrap();
        let e = ask_peer(&addr, &key, &q(), T).await.unwrap_err();
        assert!(matches!(e, AskError::Read(_)), "{e}");
    }

    #[tokio::test]
    async fn an_unauthenticated_answer_is_refused() {
        let body = "{}";
        let ok = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let addr = raw_peer(Some(ok.into_bytes())).await;
        let key = PeerKey::from_bytes(KEY.as_bytes()).unwrap();
        let e = ask_peer(&addr, &key, &q(), T).await.unwrap_err();
        assert!(matches!(e, AskError::Unauthenticated), "{e}");
    }

    #[test]
    fn answers_serialize_stably() {
        let a = Answer {
            api_reachable: true,
            phase: Some(Phase::Fencing),
            boot_id: Some("b".into()),
            nonce: "n".into(),
        };
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"apiReachable":true,"phase":"Fencing","bootId":"b","nonce":"n"}"#
        );
    }
}
