//! Authentication of peer messages: HMAC-SHA256 with a key shared by every
//! agent (a Secret mounted into the DaemonSet, `--peer-key-file`), and
//! freshness that does not rest on synchronised clocks.
//!
//! - **Answers** are fresh because they answer the asker's own nonce: the
//!   answer body echoes the question's nonce and is MACed, so it cannot be
//!   replayed to another question. The asker checks the MAC and the nonce,
//!   never the answer's timestamp ([`PeerKey::verify_answer`]).
//! - **Questions** carry `ts=<unix>,nonce=<hex>,mac=<hex>`, the MAC over
//!   `ts \n nonce \n body`. The receiver accepts one whose timestamp is within
//!   [`MAX_SKEW`] of its clock and whose nonce it has not seen (a replay). A
//!   question from a key holder whose clock is further off is not refused
//!   for good: it is answered with a **challenge**, a fresh single-use nonce
//!   of the receiver ([`Challenges`], valid for [`CHALLENGE_TTL`] on the
//!   receiver's monotonic clock), and the asker repeats the question signed
//!   over it, `challenge=<hex>,nonce=<hex>,mac=<hex>` with the MAC over
//!   `challenge=<hex> \n nonce \n body`. A challenge is redeemed once: a
//!   replayed challenged question is refused.
//!
//! The challenge is why a peer whose clock is off by more than [`MAX_SKEW`]
//! still answers: were it refused, it would count as silent, and silence
//! counts towards isolation (rule 5: self-fence).
//!
//! Everything here is pure (time is passed in) and unit-tested.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Largest accepted difference between a message's timestamp and our clock.
pub const MAX_SKEW: Duration = Duration::from_secs(30);
/// Shortest acceptable key.
pub const MIN_KEY_LEN: usize = 16;
/// Nonces remembered at most (older ones fall out of the skew window anyway).
pub const MAX_NONCES: usize = 100_000;
/// How long a challenge may be redeemed (receiver's monotonic clock).
pub const CHALLENGE_TTL: Duration = Duration::from_secs(30);
/// Challenges outstanding at most (the oldest is dropped first).
pub const MAX_CHALLENGES: usize = 10_000;

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
    #[error("unknown, expired or already used challenge")]
    Challenge,
}

impl AuthError {
    pub fn as_label(&self) -> &'static str {
        match self {
            AuthError::BadMac => "bad_mac",
            AuthError::Stale(_) => "stale",
            AuthError::Replay => "replay",
            AuthError::Malformed => "malformed",
            AuthError::Challenge => "challenge",
        }
    }
}

/// A peer key shorter than [`MIN_KEY_LEN`] (its length).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("the peer key must be at least {MIN_KEY_LEN} bytes (got {0})")]
pub struct KeyTooShort(pub usize);

impl PeerKey {
    /// A key from the bytes of the key file (surrounding whitespace trimmed).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyTooShort> {
        let text = String::from_utf8_lossy(bytes);
        let trimmed = text.trim();
        if trimmed.len() < MIN_KEY_LEN {
            return Err(KeyTooShort(trimmed.len()));
        }
        Ok(PeerKey(trimmed.as_bytes().to_vec()))
    }

    fn mac(&self, ts: u64, nonce: &str, body: &[u8]) -> HmacSha256 {
        self.mac_over(ts.to_string().as_bytes(), nonce, body)
    }

    fn mac_over(&self, first: &[u8], nonce: &str, body: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(first);
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

    /// The header of a question repeated over the receiver's `challenge`:
    /// `challenge=<hex>,nonce=<hex>,mac=<hex>`.
    pub fn sign_challenged(&self, challenge: &str, nonce: &str, body: &[u8]) -> String {
        let first = format!("challenge={challenge}");
        let tag = self
            .mac_over(first.as_bytes(), nonce, body)
            .finalize()
            .into_bytes();
        format!("challenge={challenge},nonce={nonce},mac={}", hex(&tag))
    }

    /// Check the MAC; returns the header's parts.
    fn verify_mac(&self, header: &str, body: &[u8]) -> Result<Header, AuthError> {
        let h = parse_header(header)?;
        let tag = unhex(&h.mac).ok_or(AuthError::Malformed)?;
        let mac = match &h.fresh {
            Fresh::Ts(ts) => self.mac(*ts, &h.nonce, body),
            Fresh::Challenge(c) => {
                self.mac_over(format!("challenge={c}").as_bytes(), &h.nonce, body)
            }
        };
        mac.verify_slice(&tag).map_err(|_| AuthError::BadMac)?;
        Ok(h)
    }

    /// Check the MAC and the timestamp of a timestamped message (not the
    /// nonce: see [`NonceCache`]). Returns the nonce.
    pub fn verify(&self, header: &str, body: &[u8], now: u64) -> Result<String, AuthError> {
        let h = self.verify_mac(header, body)?;
        let Fresh::Ts(ts) = h.fresh else {
            return Err(AuthError::Malformed);
        };
        let skew = now.abs_diff(ts);
        if skew > MAX_SKEW.as_secs() {
            return Err(AuthError::Stale(skew));
        }
        Ok(h.nonce)
    }

    /// Check an answer: its MAC only. Its freshness is the question's nonce,
    /// which the (MACed) answer body echoes and the asker compares; its
    /// timestamp is the answerer's clock and is not compared.
    pub fn verify_answer(&self, header: &str, body: &[u8]) -> Result<(), AuthError> {
        self.verify_mac(header, body).map(|_| ())
    }

    /// Check a question: MAC, then freshness — a timestamp within
    /// [`MAX_SKEW`] of `now` and a nonce not seen before, or a challenge of
    /// ours, redeemed now (once). Returns the question's nonce.
    /// `Err(Stale)` means "from a key holder, but its clock is off": answer
    /// with a challenge ([`Challenges::issue`]).
    pub fn verify_question(
        &self,
        header: &str,
        body: &[u8],
        now: u64,
        mono: Instant,
        nonces: &mut NonceCache,
        challenges: &mut Challenges,
    ) -> Result<String, AuthError> {
        let h = self.verify_mac(header, body)?;
        match &h.fresh {
            Fresh::Ts(ts) => {
                let skew = now.abs_diff(*ts);
                if skew > MAX_SKEW.as_secs() {
                    return Err(AuthError::Stale(skew));
                }
                nonces.check(&h.nonce, now)?;
            }
            Fresh::Challenge(c) => challenges.redeem(c, mono)?,
        }
        Ok(h.nonce)
    }
}

enum Fresh {
    Ts(u64),
    Challenge(String),
}

struct Header {
    fresh: Fresh,
    nonce: String,
    mac: String,
}

fn parse_header(h: &str) -> Result<Header, AuthError> {
    let (mut fresh, mut nonce, mut mac) = (None, None, None);
    let token = |v: &str| !v.is_empty() && v.len() <= 64;
    for part in h.split(',') {
        let (k, v) = part.trim().split_once('=').ok_or(AuthError::Malformed)?;
        match k {
            "ts" if fresh.is_none() => {
                fresh = Some(Fresh::Ts(
                    v.parse::<u64>().map_err(|_| AuthError::Malformed)?,
                ))
            }
            "challenge" if fresh.is_none() && token(v) => {
                fresh = Some(Fresh::Challenge(v.to_string()))
            }
            "nonce" if token(v) => nonce = Some(v.to_string()),
            "mac" => mac = Some(v.to_string()),
            _ => return Err(AuthError::Malformed),
        }
    }
    match (fresh, nonce, mac) {
        (Some(fresh), Some(nonce), Some(mac)) => Ok(Header { fresh, nonce, mac }),
        _ => Err(AuthError::Malformed),
    }
}

/// The challenges a receiver issued and that were not redeemed yet.
#[derive(Default)]
pub struct Challenges {
    issued: HashMap<String, Instant>,
    order: VecDeque<(Instant, String)>,
}

impl Challenges {
    fn expire(&mut self, now: Instant) {
        while let Some((t, _)) = self.order.front() {
            let fresh = now.saturating_duration_since(*t) < CHALLENGE_TTL;
            if fresh && self.order.len() < MAX_CHALLENGES {
                break;
            }
            let (_, c) = self.order.pop_front().expect("front exists");
            self.issued.remove(&c);
        }
    }

    /// A fresh challenge, redeemable once within [`CHALLENGE_TTL`].
    pub fn issue(&mut self, now: Instant) -> String {
        self.expire(now);
        let c = new_nonce();
        self.issued.insert(c.clone(), now);
        self.order.push_back((now, c.clone()));
        c
    }

    /// Redeem `challenge`: `Err(Challenge)` if unknown, expired or used.
    pub fn redeem(&mut self, challenge: &str, now: Instant) -> Result<(), AuthError> {
        self.expire(now);
        // (Its entry in `order` goes when it would have expired.)
        self.issued
            .remove(challenge)
            .map(|_| ())
            .ok_or(AuthError::Challenge)
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
    fn a_short_key_is_refused_with_its_trimmed_length() {
        assert_eq!(
            PeerKey::from_bytes(b"  short-key \n").err(),
            Some(KeyTooShort(9))
        );
        assert!(PeerKey::from_bytes(b"sixteen-bytes-ok").is_ok());
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
    fn a_question_is_fresh_by_its_timestamp_or_by_our_challenge() {
        let (k, t0) = (key(), Instant::now());
        let (mut nonces, mut challenges) = (NonceCache::default(), Challenges::default());
        let check =
            |h: &str,
             body: &[u8],
             now: u64,
             mono: Instant,
             n: &mut NonceCache,
             c: &mut Challenges| { k.verify_question(h, body, now, mono, n, c) };
        // Clocks in step: accepted once, then a replay.
        let h = k.sign(1000, "n1", b"q");
        assert_eq!(
            check(&h, b"q", 1010, t0, &mut nonces, &mut challenges),
            Ok("n1".into())
        );
        assert_eq!(
            check(&h, b"q", 1010, t0, &mut nonces, &mut challenges),
            Err(AuthError::Replay)
        );
        // The asker's clock is 2 minutes off: "stale", from a key holder.
        let h = k.sign(1120, "n2", b"q");
        assert_eq!(
            check(&h, b"q", 1000, t0, &mut nonces, &mut challenges),
            Err(AuthError::Stale(120))
        );
        // Repeated over our challenge: accepted once, whatever the clocks.
        let c = challenges.issue(t0);
        let h = k.sign_challenged(&c, "n2", b"q");
        assert_eq!(
            check(&h, b"q", 99_999, t0, &mut nonces, &mut challenges),
            Ok("n2".into())
        );
        assert_eq!(
            check(&h, b"q", 99_999, t0, &mut nonces, &mut challenges),
            Err(AuthError::Challenge)
        );
        // A challenge we never issued, or one that expired.
        let h = k.sign_challenged("made-up", "n3", b"q");
        assert_eq!(
            check(&h, b"q", 1000, t0, &mut nonces, &mut challenges),
            Err(AuthError::Challenge)
        );
        let c = challenges.issue(t0);
        let h = k.sign_challenged(&c, "n4", b"q");
        assert_eq!(
            check(
                &h,
                b"q",
                1000,
                t0 + CHALLENGE_TTL,
                &mut nonces,
                &mut challenges
            ),
            Err(AuthError::Challenge)
        );
        // Without the key, no challenge helps.
        let c = challenges.issue(t0);
        let other = PeerKey::from_bytes(b"another-key-of-16-bytes").unwrap();
        let h = other.sign_challenged(&c, "n5", b"q");
        assert_eq!(
            check(&h, b"q", 1000, t0, &mut nonces, &mut challenges),
            Err(AuthError::BadMac)
        );
        // The challenge is covered by the MAC.
        let c = challenges.issue(t0);
        let h = k.sign_challenged(&c, "n6", b"q").replace(&c, "ffff");
        assert_eq!(
            check(&h, b"q", 1000, t0, &mut nonces, &mut challenges),
            Err(AuthError::BadMac)
        );
    }

    #[test]
    fn answers_are_checked_by_their_mac_not_by_the_clock() {
        let h = key().sign(1000, "a1", b"answer");
        assert_eq!(key().verify_answer(&h, b"answer"), Ok(()));
        assert_eq!(key().verify_answer(&h, b"answeR"), Err(AuthError::BadMac));
        let other = PeerKey::from_bytes(b"another-key-of-16-bytes").unwrap();
        assert_eq!(other.verify_answer(&h, b"answer"), Err(AuthError::BadMac));
    }

    #[test]
    fn challenges_are_bounded() {
        let mut c = Challenges::default();
        let t0 = Instant::now();
        let first = c.issue(t0);
        for _ in 0..MAX_CHALLENGES {
            c.issue(t0);
        }
        assert_eq!(c.redeem(&first, t0), Err(AuthError::Challenge));
        assert!(c.issued.len() <= MAX_CHALLENGES);
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
