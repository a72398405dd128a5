//! kube-fencer: confirms a Kubernetes node is down, fences it, and recovers
//! its StatefulSet pods on healthy nodes.
//!
//! - [`decide`]: the pure decision core (no I/O, no clock), the crate `kube-fencer-decide` in `crates/decide/`.
//! - [`cluster`]: the Kubernetes I/O shell around it.
//! - [`ops`]: metrics, Events, health endpoints and logs.
//! - [`config`]: command line and validation.

pub mod cluster;
pub mod config;
pub use kube_fencer_decide as decide;
pub mod ops;
pub mod status;
