//! The permit protocol's peer messages (design: `docs/permits.md`): every
//! agent is a grantor, serving `POST /peer/v1/renew` (a holder asks for a
//! grant) and `POST /peer/v1/stop` (the leader revokes, retires or lifts)
//! on `--peer-listen`, authenticated like the questions of
//! [`crate::peers`]: signed requests, single-use nonces, answers that echo
//! the request's nonce and are MACed.
//!
//! The decisions are [`crate::decide::permit::grantor::Grantor`]'s; this
//! module only carries them and keeps the grantor's memory: a stop is saved
//! to the state directory *before* its acknowledgement is sent, and a stop
//! that cannot be saved is not acknowledged (`503`): the leader counts only
//! stops that survive the grantor's restarts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use crate::decide::permit::grantor::{Grantor, quarantine_left};
use crate::decide::permit::{Answer, Renewal, Stop, StopAck};
use crate::peers::auth::{PeerKey, unix_now};
use crate::peers::{AskError, Reply, Server, authenticate, exchange, signed_reply};

pub mod memory;
pub mod report;

pub const RENEW_PATH: &str = "/peer/v1/renew";
pub const STOP_PATH: &str = "/peer/v1/stop";

/// The grantor's answer to a renewal, with the renewal's nonce.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RenewReply {
    pub answer: Answer,
    pub nonce: String,
}

/// The grantor's acknowledgement of a stop, with the stop's nonce.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StopReply {
    pub ack: StopAck,
    pub nonce: String,
}

/// This agent's grantor and where its memory is kept.
pub struct Grants {
    grantor: Mutex<Grantor>,
    /// The memory file and this boot's ID; `None`: nothing survives a
    /// restart, so no stop is acknowledged.
    memory: Option<(PathBuf, String)>,
}

impl std::fmt::Debug for Grants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grants")
            .field("memory", &self.memory)
            .finish_non_exhaustive()
    }
}

impl Grants {
    /// The grantor of a process started now, with the memory an earlier
    /// process of this boot left in `file`. Without it, quarantined for
    /// `quarantine`, less the time since the boot (`uptime`) when the file
    /// does not exist: the state directory lives as long as the boot (a
    /// tmpfs such as `/run`), so no process of this boot acknowledged a
    /// stop. A file that exists but cannot be read counts as lost memory:
    /// the whole quarantine. The memory (possibly empty) is written at once,
    /// so that a later start of this boot finds it.
    pub fn start(
        file: Option<PathBuf>,
        boot_id: Option<&str>,
        quarantine: Duration,
    ) -> std::io::Result<Arc<Self>> {
        let now = Instant::now();
        let boottime = crate::agent::state_dir::boottime_now();
        let memory = match (&file, boot_id.filter(|b| !b.is_empty()), boottime) {
            (Some(file), Some(boot), Some(bt)) => Some((file.clone(), boot.to_string(), bt)),
            _ => None,
        };
        let grantor = match &memory {
            Some((file, boot, bt)) => match memory::load_at(file, boot, now, *bt) {
                memory::Loaded::Found(m) => Grantor::new(now, Some(m), quarantine),
                memory::Loaded::Absent => Grantor::new(now, None, quarantine_left(quarantine, *bt)),
                memory::Loaded::Unreadable => Grantor::new(now, None, quarantine),
            },
            None => Grantor::new(now, None, quarantine),
        };
        let grants = Grants {
            grantor: Mutex::new(grantor),
            memory: memory.map(|(file, boot, _)| (file, boot)),
        };
        grants.save(&grants.lock())?;
        Ok(Arc::new(grants))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Grantor> {
        self.grantor.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save(&self, grantor: &Grantor) -> std::io::Result<()> {
        let Some((file, boot)) = &self.memory else {
            return Err(std::io::Error::other("no state directory or boot ID"));
        };
        let boottime = crate::agent::state_dir::boottime_now()
            .ok_or_else(|| std::io::Error::other("no CLOCK_BOOTTIME"))?;
        memory::save_at(file, boot, &grantor.memory(), Instant::now(), boottime)
    }

    /// Answer a renewal received now.
    pub fn renew(&self, r: &Renewal) -> Answer {
        self.lock().renew(Instant::now(), r)
    }

    /// Apply a stop received now; its acknowledgement once the memory is
    /// saved (`None`: refused, a revocation of a fencing already lifted),
    /// or why it is not acknowledged.
    pub fn stop(&self, s: &Stop) -> std::io::Result<Option<StopAck>> {
        let mut g = self.lock();
        let ack = g.stop(Instant::now(), s);
        // Saved under the lock: a later stop's file never precedes this one.
        self.save(&g)?;
        Ok(ack)
    }

    /// The grantees it reports silent now ([`Grantor::silent`]).
    pub fn silent(
        &self,
        after: Duration,
        within: Duration,
    ) -> BTreeMap<String, crate::decide::permit::object::Silent> {
        self.lock().silent(Instant::now(), after, within)
    }

    /// Whether this grantor grants nothing yet (it lost its memory).
    pub fn quarantined(&self) -> bool {
        self.lock().quarantined(Instant::now())
    }
}

type Response = (StatusCode, HeaderMap, String);

fn bare(status: StatusCode) -> Response {
    (status, HeaderMap::new(), String::new())
}

/// An authenticated request of type `T` for this agent's grantor: the
/// request's nonce, the grantor and the request, or the response that
/// refuses it (`401`; `400` when malformed or when no grantor runs here).
fn accept<'a, T: for<'de> Deserialize<'de>>(
    s: &'a Server,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(String, &'a Grants, T), Box<Response>> {
    let nonce = authenticate(s, headers, body)?;
    let Ok(request) = serde_json::from_slice(body) else {
        s.metrics
            .peer_requests
            .with_label_values(&["in", "malformed"])
            .inc();
        return Err(Box::new(bare(StatusCode::BAD_REQUEST)));
    };
    let grants = s
        .grants
        .as_deref()
        .ok_or_else(|| Box::new(bare(StatusCode::BAD_REQUEST)))?;
    s.metrics
        .peer_requests
        .with_label_values(&["in", "ok"])
        .inc();
    Ok((nonce, grants, request))
}

pub(crate) async fn renew(State(s): State<Server>, headers: HeaderMap, body: Bytes) -> Response {
    let (nonce, grants, r) = match accept::<Renewal>(&s, &headers, &body) {
        Ok(accepted) => accepted,
        Err(refused) => return *refused,
    };
    let answer = grants.renew(&r);
    tracing::trace!(node = %r.node, round = r.round, set = r.set_version, ?answer, "answered a renewal");
    signed_reply(&s, &RenewReply { answer, nonce })
}

pub(crate) async fn stop(State(s): State<Server>, headers: HeaderMap, body: Bytes) -> Response {
    let (nonce, grants, stop) = match accept::<Stop>(&s, &headers, &body) {
        Ok(accepted) => accepted,
        Err(refused) => return *refused,
    };
    match grants.stop(&stop) {
        Ok(None) => {
            // A revocation of a fencing that was lifted already: the node
            // is granted; an acknowledgement would be a lie.
            tracing::info!(?stop, "refused a revocation of a fencing already lifted");
            bare(StatusCode::CONFLICT)
        }
        Ok(Some(ack)) => {
            tracing::info!(?stop, since_last_grant = ?ack.since_last_grant, "applied a stop");
            signed_reply(&s, &StopReply { ack, nonce })
        }
        Err(e) => {
            // Applied in memory (stricter, so safe) but not saved: not
            // acknowledged, so the leader does not count on it.
            tracing::error!(?stop, error = %e, "cannot save the grantor's memory: the stop is not acknowledged");
            bare(StatusCode::SERVICE_UNAVAILABLE)
        }
    }
}

/// Ask the grantor at `addr` for a grant.
pub async fn send_renewal(
    addr: &str,
    key: &PeerKey,
    renewal: &Renewal,
    timeout: Duration,
) -> Result<Answer, AskError> {
    send_renewal_with_clock(addr, key, renewal, timeout, unix_now).await
}

/// [`send_renewal`] with the sender's clock given (tests skew it).
pub async fn send_renewal_with_clock(
    addr: &str,
    key: &PeerKey,
    renewal: &Renewal,
    timeout: Duration,
    clock: fn() -> u64,
) -> Result<Answer, AskError> {
    let reply: RenewReply = exchange(addr, RENEW_PATH, key, renewal, timeout, clock).await?;
    Ok(reply.answer)
}

/// Send a stop to the grantor at `addr`; its acknowledgement.
pub async fn send_stop(
    addr: &str,
    key: &PeerKey,
    stop: &Stop,
    timeout: Duration,
) -> Result<StopAck, AskError> {
    let reply: StopReply = exchange(addr, STOP_PATH, key, stop, timeout, unix_now).await?;
    Ok(reply.ack)
}

impl Reply for RenewReply {
    fn nonce(&self) -> &str {
        &self.nonce
    }
}

impl Reply for StopReply {
    fn nonce(&self) -> &str {
        &self.nonce
    }
}

#[cfg(test)]
mod tests;
