//! The smallest timing values the agent accepts, and the relation between
//! two of them: what the safe time's proof (the simulator's configuration
//! sweep, `crates/protocol-check`) covers. The flags refuse anything else
//! at start (`src/config/`), naming the flag, the value and what is valid.
//!
//! - `--api-check-timeout` at least [`MIN_API_CHECK_TIMEOUT`]: below it a
//!   probe of a healthy API server fails, and an agent that has not yet
//!   seen its kubelet's Lease or its peers fences its node at start.
//! - `--api-check-interval` at least [`MIN_API_CHECK_INTERVAL`]: more often
//!   is load on the API server for nothing (and beyond what was swept).
//! - `--watchdog-timeout` at least [`MIN_WATCHDOG_TIMEOUT`]: watchdog
//!   devices count whole seconds.
//! - `--node-heartbeat-interval` at least [`MIN_NODE_HEARTBEAT_INTERVAL`]:
//!   a kubelet renews its Lease at most every quarter second (a quarter of
//!   its shortest `nodeLeaseDurationSeconds`); the safe time needs the flag
//!   to be no shorter than the kubelet's real interval.
//! - `--unreachable-after` at least [`UNREACHABLE_AFTER_HEARTBEATS`] times
//!   `--node-heartbeat-interval`: shorter, a healthy node between two
//!   renewals is taken for an unreachable one (and its agent's rule 5b is
//!   armed all the time), so a control-plane outage fences nodes.

use std::time::Duration;

pub const MIN_API_CHECK_TIMEOUT: Duration = Duration::from_millis(100);
pub const MIN_API_CHECK_INTERVAL: Duration = Duration::from_millis(500);
pub const MIN_WATCHDOG_TIMEOUT: Duration = Duration::from_secs(1);
pub const MIN_NODE_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(250);
pub const UNREACHABLE_AFTER_HEARTBEATS: u32 = 2;
