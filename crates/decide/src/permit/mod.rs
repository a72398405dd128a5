//! Lease-gated self-fencing: the watchdog is fed only under a revocable
//! permit (design and proof: `docs/permits.md`). Being built: every agent
//! serves the grantor's side (`kube-fencer`'s `peers::permit`), but no
//! holder gates its watchdog on a permit yet; the agent still runs the
//! self-check of [`crate::agent`].
//!
//! Three roles, one file each, all pure (no clock, no I/O: the present is
//! an argument, the shell sends what they return):
//!
//! - [`holder`]: every node's agent. It renews its permit every
//!   `renew_interval` with its grantors (a few peers the leader assigned it,
//!   plus itself), or through the API server when too few of them answer,
//!   and holds the permit while a majority of its grantor set granted a
//!   renewal *sent* within `credit`. It says how long the watchdog may be
//!   fed for ([`holder::Holder::feed`]): never past the permit's end, and
//!   short enough that a ping delayed by a frozen process and the ping of
//!   the process's exit together cannot keep the node up longer than
//!   `permit end + watchdog timeout`.
//! - [`grantor`]: the peer side. Grants unless it stopped granting that
//!   node (a revocation of the leader, or the retirement of an old grantor
//!   set), answers a stop with how long ago it last granted, and grants
//!   nothing for a quarantine after a start without its memory.
//! - [`revoke`]: the leader's side of fencing a node. Stop enough grantors
//!   of every set the node may draw credit from that every majority it
//!   could use contains a stopped one, close the API path, and compute from
//!   the answers when the node is certainly stopped — durations on the
//!   leader's monotonic clock only.
//!
//! The one inequality the safety rests on (proof in `docs/permits.md`):
//! after every grantor of a blocking set answered a stop, the node is reset
//! by
//!
//! ```text
//!   max over the answers r of ( received_r + s·(s·credit − age_r)⁺ )
//!     + s·(s·watchdog + 2(s − 1)·credit) + margin,       s = (1 + ρ)/(1 − ρ)
//! ```
//!
//! measured on the leader's clock, where `age_r` is how long before its
//! answer grantor `r` last granted, and ρ bounds every clock's rate error.

pub mod assign;
pub mod clock;
pub mod grantor;
pub mod holder;
pub mod object;
pub mod revoke;
pub mod silence;
pub mod timings;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use clock::Drift;

/// The number of votes that make a majority of `members` voters.
pub fn majority(members: usize) -> usize {
    members / 2 + 1
}

/// The grantor set the leader assigned a node: `version` grows with every
/// change; the node itself is always a member too (its own vote, which no
/// one can revoke), so the set has `peers.len() + 1` voters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GrantorSet {
    pub version: u64,
    pub peers: Vec<String>,
}

impl GrantorSet {
    pub fn new(version: u64, mut peers: Vec<String>) -> Self {
        peers.sort();
        peers.dedup();
        GrantorSet { version, peers }
    }

    /// Voters: the peers and the node itself.
    pub fn voters(&self) -> usize {
        self.peers.len() + 1
    }

    /// Peer grants a permit needs (the node's own vote is always there).
    pub fn peer_grants_needed(&self) -> usize {
        majority(self.voters()) - 1
    }

    /// Peers that must have stopped granting before no majority of this
    /// set is left to the node: every majority then contains one.
    pub fn stops_needed(&self) -> usize {
        self.peers.len() + 1 - self.peer_grants_needed()
    }

    /// A set under which a permit can be held and revoked: at least one
    /// peer (a node alone can never be fenced through its grantors).
    pub fn usable(&self) -> bool {
        !self.peers.is_empty()
    }
}

/// A renewal: "node `node` (boot `boot`) asks for a grant for round
/// `round`, under grantor set `set_version`; it counts a grant for
/// `credit` and feeds its watchdog with a timeout of at most
/// `watchdog_timeout`". The grantor remembers the longest of both, so the
/// leader learns them from the grantors, whatever the node's flags were.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Renewal {
    pub node: String,
    pub boot: String,
    pub round: u64,
    pub set_version: u64,
    #[serde(with = "humantime_serde_compat")]
    pub credit: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub watchdog_timeout: Duration,
}

/// A grantor's answer to a [`Renewal`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Answer {
    Granted,
    /// The leader revoked this node: it is being fenced.
    Revoked,
    /// The grantor set named in the renewal was retired: read the current
    /// one (from the API server).
    Retired,
    /// The grantor started without its memory and grants nothing yet.
    Quarantined,
}

/// What the leader asks of a grantor: stop granting `node`, either for
/// good (a revocation; until [`Stop::Lift`]) or under the set versions
/// below `below_version` (retiring an old grantor set).
///
/// Revocations and lifts carry the node's *fencing number*: it grows with
/// every fencing of the node and is kept where every leader reads it (the
/// node's permit object) before the fencing's first stop is sent. A lift
/// undoes the revocations of its fencing and of earlier ones only, so a
/// lift overtaken on the network by the next fencing's revocation, or a
/// revocation arriving after its own fencing was lifted, changes nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Stop {
    Revoke {
        node: String,
        fencing: u64,
    },
    Retire {
        node: String,
        below_version: u64,
    },
    /// Undo the revocations up to fencing `fencing` (the node rebooted and
    /// was unfenced).
    Lift {
        node: String,
        fencing: u64,
    },
}

/// A grantor's answer to a [`Stop`]: how long before answering it last
/// granted that node (from its own start if it granted nothing since), and
/// the longest credit and watchdog timeout its grants carried (`None`: it
/// granted nothing since its start, so it cannot say).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StopAck {
    #[serde(with = "humantime_serde_compat")]
    pub since_last_grant: Duration,
    #[serde(with = "humantime_serde_compat::option")]
    pub credit: Option<Duration>,
    #[serde(with = "humantime_serde_compat::option")]
    pub watchdog_timeout: Option<Duration>,
}

/// Durations on the wire as humantime strings ("1s 500ms"), like the
/// advertisement's.
pub(crate) mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }

    pub mod option {
        use std::time::Duration;

        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_needs_a_majority_of_its_voters_and_blocks_with_the_rest_plus_one() {
        // (peers, peer grants needed, stops needed)
        for (peers, needed, stops) in [(1, 1, 1), (2, 1, 2), (3, 2, 2), (4, 2, 3), (6, 3, 4)] {
            let set = GrantorSet::new(1, (0..peers).map(|i| format!("n{i}")).collect());
            assert_eq!(set.peer_grants_needed(), needed, "{peers} peers");
            assert_eq!(set.stops_needed(), stops, "{peers} peers");
            // Any `needed` peers and `stops` stopped peers share one.
            assert!(needed + stops > peers, "{peers} peers");
        }
        assert!(!GrantorSet::new(1, vec![]).usable());
    }

    #[test]
    fn messages_round_trip_as_json() {
        let r = Renewal {
            node: "a".into(),
            boot: "b".into(),
            round: 7,
            set_version: 3,
            credit: Duration::from_secs(10),
            watchdog_timeout: Duration::from_millis(5500),
        };
        let j = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Renewal>(&j).unwrap(), r);
        let a = StopAck {
            since_last_grant: Duration::from_secs(12),
            credit: Some(Duration::from_secs(10)),
            watchdog_timeout: None,
        };
        let j = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<StopAck>(&j).unwrap(), a);
        let s = Stop::Retire {
            node: "a".into(),
            below_version: 4,
        };
        let j = serde_json::to_string(&s).unwrap();
        assert!(j.contains("\"kind\":\"retire\""), "{j}");
        assert_eq!(serde_json::from_str::<Stop>(&j).unwrap(), s);
    }
}
