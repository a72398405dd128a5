//! What every node's agent does about its own node, leader or not: the
//! [`self_check`] task (the shell of the core's self-check: probes the API,
//! asks peers, writes the advertisement, feeds the watchdog or fences the
//! node), the [`self_fence`] means settled at start (watchdog, sysrq or
//! none), and the [`state_dir`] file that carries its checks across its own
//! restarts within one boot.

pub mod permit;
pub mod self_check;
pub mod self_fence;
pub mod state_dir;
