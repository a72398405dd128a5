#!/usr/bin/env bash
# The project's test command.
#
#   ./test.sh           lint, unit and property tests, then the demo as a smoke
#                       test, the container images, the default install on
#                       real nodes, and the end-to-end tests against a real
#                       local control plane (built on first use)
#   ./test.sh --unit    lint, unit and property tests only
#   ./test.sh --demo    the demo smoke test only
set -euo pipefail
cd "$(dirname "$0")"

unit_only=false
demo_only=false
case "${1:-}" in
  --unit) unit_only=true ;;
  --demo) demo_only=true ;;
  "") ;;
  *) echo "usage: $0 [--unit | --demo]" >&2; exit 2 ;;
esac

step() { printf '\n==> %s\n' "$*"; }

# The README's main job, end to end: a node powered off, its replica
# recovered, the node rebooted and unfenced. Quiet when it passes (its
# figures only); on failure its output, which names the directory with every
# log.
demo_smoke_test() {
  step "demo smoke test (./harness/demo.sh --fast, debug build)"
  local log start=$SECONDS rc=0
  log="$(mktemp -t kube-fencer-demo-smoke.XXXXXX)"
  ./harness/demo.sh --fast --debug >"$log" 2>&1 || rc=$?
  if ((rc != 0)); then
    sed 's/\x1b\[[0-9;]*m//g' "$log" | tail -n 80
    echo "demo smoke test FAILED (exit $rc) after $((SECONDS - start))s; its output: $log" >&2
    return 1
  fi
  grep -E "time to (recovery|unfence):" "$log" | sed 's/^ */    /'
  echo "    demo passed in $((SECONDS - start))s"
  rm -f "$log"
}

if $demo_only; then
  demo_smoke_test
  exit 0
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --all-features -- -D warnings

# The decision core (crates/decide: stages, scenarios, simulator, property
# tests), then the shell's unit tests and the real binary's start-up errors.
step "unit and property tests, start-up errors of the real binary"
cargo test -p kube-fencer-decide
cargo test -p kube-fencer --lib --bins --test startup

# The whole protocol (crates/decide/src/protocol): 10,000 random fault schedules
# (every fault kind, the leader-side ones included) and the bounded model
# check, debug build (about two minutes). The long run:
#   cargo run --release --example protocol-check -- --schedules 1000000 --leader-side --verbose
step "protocol simulation and model check"
cargo run --quiet --example protocol-check -- --schedules 10000 --check --depth 4 --leader-side

# The alerts and the dashboard of daemonset/monitoring/: derived files up to
# date, promtool check/test rules (a case per alert), every metric they name
# registered, promtool check metrics on the real exposition (promtool and
# the Prometheus server of the end-to-end alert scenario are built once from
# the pinned Prometheus module; no cluster needed).
step "alerts and dashboard (harness/monitoring.sh test)"
./harness/monitoring.sh test

if $unit_only; then
  exit 0
fi

step "local control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok)"
./harness/build.sh

demo_smoke_test

# The Dockerfile's image, built without Docker (musl binary + umoci), checked
# against the Dockerfile, imported into a throwaway containerd and run with
# runc; and the pause image real nodes need.
step "container images (harness/image-test.sh)"
./harness/image-test.sh

# The Helm chart: the plain manifests are what it renders, every values
# combination of charts/kube-fencer/ci/ lints and is accepted by the API
# server (dry run); then a helm install, upgrade and uninstall.
step "helm chart (harness/helm.sh test)"
./harness/helm.sh test

# The agent's watchdog code (src/cluster/watchdog.rs, compiled into the
# test) against a Linux watchdog device emulated with FUSE: feeding while
# permitted, the magic close, firing once the permit lapses, the reset
# expedited by a self-fence decision, no ping from a restarted agent.
step "watchdog device (harness/fakewdog.sh test)"
./harness/fakewdog.sh test

# The default install on real nodes (harness/realnode.sh: kubelet,
# containerd, runc, CNI and kube-proxy in a network and mount namespace per
# node, a FUSE watchdog per node that powers it off when it fires):
# `kubectl apply -f rbac/ -f daemonset/` unchanged, a node powered off and
# recovered, rebooted and unfenced, a node cut off that fences itself through
# its watchdog before its replica is force-deleted (about four minutes).
step "real nodes: start-up, the default install, power-off and partition (tests/realnode)"
cargo test --features realnode --test realnode -- --test-threads=1 --nocapture

step "end-to-end tests against the local control plane"
cargo test --features e2e --test e2e -- --test-threads=1
