//! The pure decision core: (observed cluster state, time, settings) → actions.
//!
//! Nothing in this crate performs I/O, reads a clock or knows about the
//! Kubernetes client: it does not depend on `kube` or `k8s-openapi`, so the
//! compiler keeps it pure. The I/O shell (the `kube-fencer` crate) turns
//! watch events into [`Observations`], calls [`decide`], and executes the
//! returned [`Action`]s.
//!
//! One room per role:
//! - [`model`]: what the core reads and returns: observations, settings, actions.
//! - [`leader`]: the leader's pipeline, one file per stage: detect → guard →
//!   fence → recover → unfence, with the patch renderer and the dry-run overlay.
//! - [`agent`]: what every node's agent decides about itself: the self-check,
//!   the self-fence verdict, the watchdog's timings.
//! - [`contract`]: what both sides read and write on a Node: the fencing
//!   record, the agent's advertisement, the safe time derived from both.
//! - [`permit`]: lease-gated self-fencing (being built): the holder's
//!   permit, the grantors, the leader's revocation and its deadline.
//! - [`election`]: leader-election decisions; [`selector`]: label selectors.

#![forbid(unsafe_code)]

use std::time::{Instant, SystemTime};

pub mod agent;
pub mod contract;
pub mod election;
pub mod leader;
pub mod model;
pub mod permit;
pub mod selector;

#[cfg(test)]
mod props;
#[cfg(test)]
mod scenarios;
#[cfg(test)]
mod sim;
/// Fixtures for tests of this crate and of the shell (feature `testutil`).
#[cfg(any(test, feature = "testutil"))]
#[doc(hidden)]
pub mod testutil;

pub use contract::advert::{AdvertState, AgentAdvert, SelfFenceAction};
pub use contract::record::{FenceRecord, Phase, RecordState};
pub use contract::safe_time::{LeaderTerms, SafeTime};
pub use contract::*;
pub use leader::{decide, nodes_needing_pods};
pub use model::*;
pub use selector::Selector;

/// The present moment, injected: a monotonic instant for every duration the
/// core measures, and wall time only for what it writes for humans.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    pub mono: Instant,
    pub wall: SystemTime,
}
