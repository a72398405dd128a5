//! End-to-end tests of kube-fencer against a real local control plane
//! (harness/cluster.sh: etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler, one kwok process per simulated node), the Helm chart
//! installed with helm, and a Prometheus server (tests/e2e/monitoring.rs).
//!
//! Run with: `cargo test --features e2e --test e2e -- --test-threads=1`
//! The first run builds the control-plane binaries (harness/build.sh) into
//! ~/.cache/kube-fencer, which takes a while; later runs reuse them.
//!
//! Environment: KUBE_FENCER_E2E_KEEP=1 keeps each cluster's directory (logs,
//! kubeconfig) after the test; KUBE_FENCER_E2E_LOG sets the agents' RUST_LOG.
#![cfg(feature = "e2e")]

mod agent_io;
mod chaos_stop_node;
mod control_run;
mod monitoring;
mod partition;
mod split_brain;
