#!/usr/bin/env bash
# The project's test command.
#
#   ./test.sh           lint, unit and property tests, then the end-to-end tests
#                       against a real local control plane (built on first use)
#   ./test.sh --unit    lint, unit and property tests only
set -euo pipefail
cd "$(dirname "$0")"

unit_only=false
case "${1:-}" in
  --unit) unit_only=true ;;
  "") ;;
  *) echo "usage: $0 [--unit]" >&2; exit 2 ;;
esac

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --all-targets --features e2e -- -D warnings

step "unit and property tests"
cargo test --lib --bins

# The whole protocol (src/decide/protocol): 10,000 random fault schedules
# and the bounded model check, debug build (about a minute). The long run:
#   cargo run --release --example protocol-check -- --schedules 1000000 --verbose
step "protocol simulation and model check"
cargo run --quiet --example protocol-check -- --schedules 10000 --check --depth 4

if $unit_only; then
  exit 0
fi

step "local control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok)"
./harness/build.sh

step "end-to-end tests against the local control plane"
cargo test --features e2e --test e2e -- --test-threads=1
