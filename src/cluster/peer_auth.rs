//! Authentication of peer messages: HMAC-SHA256 over
//! `timestamp \n nonce \n body` with a key shared by every agent (a Secret
//! mounted into the DaemonSet, `--peer-key-file`).
//!
//! A message is rejected when its MAC is wrong (not from a key holder, or
//! altered), its timestamp is more than [`MAX_SKEW`] away from the
//! receiver's clock (an old captured message), or its nonce was already seen
//! within the window (a replay). Answers echo the question's nonce and are
//! MACed too, so an answer cannot be replayed to another question.
//!
//! Everything here is pure (time is passed in) and unit-tested.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Largest accepted difference between a message's timestamp and our clock.
pub const MAX_SKEW: Duration = Duration::from_secs(30);
/// Shortest acceptable key.
pub const MIN_KEY_LEN: usize = 16;
/// Nonces remembered at most (older ones fall out of the skew window anyway).
pub const MAX_NONCES: usize = 100_000;

/// The shared key.
#[derive(Clone)]
pub struct PeerKey(Vec<u8>);

impl std::fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerKey(..)")
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("bad MAC")]
    BadMac,
    #[error("timestamp {0}s away from our clock (at most 30s allowed)")]
    Stale(u64),
    #[error("replayed nonce")]
    Replay,
    #[error("malformed authentication header")]
    Malformed,
}

impl AuthError {
    pub fn as_label(&self) -> &'static str {
        match self {
            AuthError::BadMac => "bad_mac",
            AuthError::Stale(_) => "stale",
            AuthError::Replay => "replay",
            AuthError::Malformed => "malformed",
        }
    }
}

impl PeerKey {
    /// A key from the bytes of the key file (surrounding whitespace trimmed).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let text = String::from_utf8_lossy(bytes);
        let trimmed = text.trim();
        if trimmed.len() < MIN_KEY_LEN {
            return Err(format!(
                "the peer key must be at least {MIN_KEY_LEN} bytes (got {})",
                trimmed.len()
            ));
        }
        Ok(PeerKey(trimmed.as_bytes().to_vec()))
    }

    fn mac(&self, ts: u64, nonce: &str, body: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(ts.to_string().as_bytes());
        mac.update(b"\n");
        mac.update(nonce.as_bytes());
        mac.update(b"\n");
        mac.update(body);
        mac
    }

    /// The authentication header value for `body`: `ts=<unix>,nonce=<hex>,mac=<hex>`.
    pub fn sign(&self, ts: u64, nonce: &str, body: &[u8]) -> String {
        let tag = self.mac(ts, nonce, body).finalize().into_bytes();
        format!("ts={ts},nonce={nonce},mac={}", hex(&tag))
    }

    /// Check the MAC and the timestamp (not the nonce: see [`NonceCache`]).
    /// Returns the nonce.
    pub fn verify(&self, header: &str, body: &[u8], now: u64) -> Result<String, AuthError> {
        let Header { ts, nonce, mac } = parse_header(header)?;
        let tag = unhex(&mac).ok_or(AuthError::Malformed)?;
        self.mac(ts, &nonce, body)
            .verify_slice(&tag)
            .map_err(|_| AuthError::BadMac)?;
        let skew = now.abs_diff(ts);
        if skew > MAX_SKEW.as_secs() {
            return Err(AuthError::Stale(skew));
        }
        Ok(nonce)
    }
}

struct Header {
    ts: u64,
    nonce: String,
    mac: String,
}

fn parse_header(h: &str) -> Result<Header, AuthError> {
    let (mut ts, mut nonce, mut mac) = (None, None, None);
    for part in h.split(',') {
        let (k, v) = part.trim().split_once('=').ok_or(AuthError::Malformed)?;
        match k {
            "ts" => ts = Some(v.parse::<u64>().map_err(|_| AuthError::Malformed)?),
            "nonce" if !v.is_empty() && v.len() <= 64 => nonce = Some(v.to_string()),
            "mac" => mac = Some(v.to_string()),
            _ => return Err(AuthError::Malformed),
        }
    }
    match (ts, nonce, mac) {
        (Some(ts), Some(nonce), Some(mac)) => Ok(Header { ts, nonce, mac }),
        _ => Err(AuthError::Malformed),
    }
}

/// Nonces seen within the skew window, to reject replays.
#[derive(Default)]
pub struct NonceCache {
    seen: HashMap<String, u64>,
    order: VecDeque<(u64, String)>,
}

impl NonceCache {
    /// Record `nonce` seen at `now`; `Err(Replay)` if it was seen before.
    pub fn check(&mut self, nonce: &str, now: u64) -> Result<(), AuthError> {
        // Forget what is older than twice the window: such a message would be stale anyway.
        let horizon = now.saturating_sub(2 * MAX_SKEW.as_secs());
        while let Some((t, _)) = self.order.front() {
            if *t >= horizon && self.order.len() < MAX_NONCES {
                break;
            }
            let (_, n) = self.order.pop_front().expect("front exists");
            self.seen.remove(&n);
        }
        if self.seen.contains_key(nonce) {
            return Err(AuthError::Replay);
        }
        self.seen.insert(nonce.to_string(), now);
        self.order.push_back((now, nonce.to_string()));
        Ok(())
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// A fresh nonce: unique per process and call (time, pid, counter), hashed.
pub fn new_nonce() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let digest = Sha256::digest(format!("{t}/{}/{n}", std::process::id()).as_bytes());
    hex(&digest[..16])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 128 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> PeerKey {
        PeerKey::from_bytes(b"0123456789abcdef-shared\n").unwrap()
    }

    #[test]
    fn a_signed_message_verifies() {
        let h = key().sign(1000, "n1", b"{\"node\":\"a\"}");
        assert_eq!(key().verify(&h, b"{\"node\":\"a\"}", 1000), Ok("n1".into()));
        assert_eq!(key().verify(&h, b"{\"node\":\"a\"}", 1030), Ok("n1".into()));
        assert_eq!(key().verify(&h, b"{\"node\":\"a\"}", 970), Ok("n1".into()));
    }

    #[test]
    fn a_changed_body_or_another_key_is_a_bad_mac() {
        let h = key().sign(1000, "n1", b"body");
        assert_eq!(key().verify(&h, b"bodY", 1000), Err(AuthError::BadMac));
        let other = PeerKey::from_bytes(b"another-key-of-16-bytes").unwrap();
        assert_eq!(other.verify(&h, b"body", 1000), Err(AuthError::BadMac));
        // The timestamp and nonce are covered by the MAC.
        let forged = h.replace("ts=1000", "ts=1001");
        assert_eq!(key().verify(&forged, b"body", 1000), Err(AuthError::BadMac));
        let forged = h.replace("nonce=n1", "nonce=n2");
        assert_eq!(key().verify(&forged, b"body", 1000), Err(AuthError::BadMac));
    }

    #[test]
    fn old_and_future_timestamps_are_rejected() {
        let h = key().sign(1000, "n1", b"b");
        assert_eq!(key().verify(&h, b"b", 1031), Err(AuthError::Stale(31)));
        assert_eq!(key().verify(&h, b"b", 969), Err(AuthError::Stale(31)));
    }

    #[test]
    fn replayed_nonces_are_rejected() {
        let mut c = NonceCache::default();
        assert_eq!(c.check("a", 1000), Ok(()));
        assert_eq!(c.check("b", 1000), Ok(()));
        assert_eq!(c.check("a", 1010), Err(AuthError::Replay));
        assert_eq!(c.check("a", 1059), Err(AuthError::Replay));
        // Long after: forgotten, but such a message would fail the timestamp check.
        assert_eq!(c.check("a", 1061), Ok(()));
    }

    #[test]
    fn malformed_headers_are_rejected() {
        for h in [
            "",
            "ts=1",
            "ts=x,nonce=a,mac=00",
            "ts=1,nonce=a,mac=zz",
            "ts=1,nonce=a,mac=0",
            "ts=1,nonce=,mac=00",
            "ts=1,nonce=a,mac=00,extra=1",
        ] {
            let r = key().verify(h, b"", 1);
            assert!(
                matches!(r, Err(AuthError::Malformed | AuthError::BadMac)),
                "{h}: {r:?}"
            );
        }
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(PeerKey::from_bytes(b"short").is_err());
        assert!(PeerKey::from_bytes(b"   0123456789abcde  \n").is_err());
        assert!(PeerKey::from_bytes(b"0123456789abcdef").is_ok());
    }

    #[test]
    fn nonces_are_unique() {
        let a = new_nonce();
        let b = new_nonce();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
    }
}
