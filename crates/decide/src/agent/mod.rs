//! What every node's agent decides about its own node: the [`self_check`]
//! (API contact, peers, the record on its Node → feed the watchdog, or fence
//! itself), the pure [`self_fence`] verdict it applies, and the
//! [`watchdog_timing`]s the device's shell shares with it.

use crate::*;

pub mod self_check;
pub mod self_fence;
pub mod watchdog_timing;
