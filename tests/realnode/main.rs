//! Tests on real nodes: kubelet, containerd, runc, the CNI plugins and
//! kube-proxy in a network and mount namespace per node
//! (harness/realnode.sh), beside a local control plane (harness/cluster.sh).
//! The scripts provision; the assertions are here, on the support code the
//! end-to-end tests use (crates/testkit), network cuts included.
//!
//! - `startup`: two real nodes start, run pods that reach each other, the
//!   kubernetes Service and the API server; cut off, powered off and booted
//!   (about 70 s warm);
//! - `chaos`: the default install (`kubectl apply -f rbac/ -f daemonset/`)
//!   on three real nodes with a watchdog device each: a node powered off,
//!   one cut off, one cut off with its agent frozen, then the unprivileged
//!   variant (about 7 minutes warm).
//!
//! Run with (root, /dev/fuse):
//! `cargo test --features realnode --test realnode -- --test-threads=1 --nocapture`
//! The first run builds the control plane and the kubelet (harness/build.sh),
//! the image (harness/image.sh), the watchdog emulator (harness/fakewdog.sh)
//! and Prometheus (harness/monitoring.sh) into ~/.cache/kube-fencer.
//!
//! Environment: KUBE_FENCER_REALNODE_NET picks the nodes' bridge (default 0;
//! runs at the same time need different ones); KUBE_FENCER_REALNODE_KEEP=1
//! keeps the cluster running; KUBE_FENCER_REALNODE_DEMO=1 stops the chaos
//! test after the power-off and reboot (the demo's story);
//! KUBE_FENCER_REALNODE_RESULT=FILE writes the chaos test's figures as JSON.
#![cfg(feature = "realnode")]

mod chaos;
mod startup;
