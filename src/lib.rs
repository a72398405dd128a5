//! kube-fencer: confirms a Kubernetes node is down, fences it, and recovers
//! its StatefulSet pods on healthy nodes. One module per role
//! (docs/architecture.md):
//!
//! - [`decide`]: the pure decision core (no I/O, no clock), the crate
//!   `kube-fencer-decide` in `crates/decide/`.
//! - [`agent`]: what every node runs about itself: the self-check, its
//!   self-fence means, its state across restarts.
//! - [`leader`]: the pipeline the elected leader runs: watch, decide, write.
//! - [`peers`]: the signed node-to-node questions and their key.
//! - [`k8s`]: the Kubernetes adapters both roles use: start-up, election,
//!   own-Node watches, API contact, object conversions.
//! - [`context`]: the tasks every node runs besides the self-check.
//! - [`observability`]: metrics, Events, health endpoints and logs.
//! - [`config`]: command line and validation; [`status`]: the status command.

pub mod agent;
pub mod config;
pub mod context;
pub use kube_fencer_decide as decide;
pub mod k8s;
pub mod leader;
pub mod observability;
pub mod peers;
pub mod status;
