#!/usr/bin/env bash
# The project's test command.
#
#   ./test.sh [all]      every tier below, in this order (what CI runs)
#   ./test.sh lint       cargo fmt --check, clippy -D warnings, shellcheck of
#                        the shell scripts, cargo deny (licenses, bans, sources)
#   ./test.sh unit       unit, property and start-up tests, the protocol
#                        simulation and model check, the alerts and dashboard
#                        (promtool), the watchdog device (FUSE; root)
#   ./test.sh e2e        the local control plane (built on first use), the
#                        demo smoke test, the container images, the Helm
#                        chart, the end-to-end scenarios
#   ./test.sh realnode   the default install on real nodes (root)
#   ./test.sh --unit     lint and unit (the option before the tiers)
#   ./test.sh --demo     the demo smoke test only
#
# Several tiers may be named: ./test.sh lint unit. Every step prints
# "==> step NAME" when it starts and "==> step NAME ... done in N s" when it
# ends; the output ends with a table of every step's time, also when a step
# fails (which one, after how long).
set -euo pipefail
cd "$(dirname "$0")"

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

tiers=()
for arg in "$@"; do
  case "$arg" in
    all) tiers+=(lint unit e2e realnode) ;;
    lint | unit | e2e | realnode) tiers+=("$arg") ;;
    --unit) tiers+=(lint unit) ;;
    --demo) tiers+=(demo) ;;
    *) usage ;;
  esac
done
((${#tiers[@]})) || tiers=(lint unit e2e realnode)

# ---------------------------------------------------------------- steps --

STEP_NAMES=()
STEP_TIMES=()
STEP_RESULTS=()
CURRENT=""
CURRENT_START=0
RUN_START=$SECONDS

# step NAME COMMAND...: run one step, timed. A failing step ends the run
# (set -e), and the summary at exit names it.
step() {
  CURRENT="$1"
  shift
  CURRENT_START=$SECONDS
  printf '\n==> step %s\n' "$CURRENT"
  "$@"
  local took=$((SECONDS - CURRENT_START))
  STEP_NAMES+=("$CURRENT")
  STEP_TIMES+=("$took")
  STEP_RESULTS+=(ok)
  printf '==> step %s ... done in %d s\n' "$CURRENT" "$took"
  CURRENT=""
}

summary() {
  local rc=$? i failed=0
  if [[ -n "$CURRENT" ]]; then
    STEP_NAMES+=("$CURRENT")
    STEP_TIMES+=($((SECONDS - CURRENT_START)))
    STEP_RESULTS+=("FAILED (exit $rc)")
    printf '==> step %s ... FAILED (exit %d) after %d s\n' "$CURRENT" "$rc" $((SECONDS - CURRENT_START))
    failed=1
  fi
  ((${#STEP_NAMES[@]})) || exit "$rc"
  printf '\n==> summary: %s (%d s)\n' "${tiers[*]}" $((SECONDS - RUN_START))
  for i in "${!STEP_NAMES[@]}"; do
    printf '    %-16s %6d s  %s\n' "${STEP_NAMES[i]}" "${STEP_TIMES[i]}" "${STEP_RESULTS[i]}"
  done
  printf 'steps: %d passed, %d failed\n' $((${#STEP_NAMES[@]} - failed)) "$failed"
  exit "$rc"
}
trap summary EXIT

# ----------------------------------------------------------------- lint --

# The shell scripts of the harness, CI's entry point and this one.
shell_scripts() {
  printf '%s\n' test.sh .ci/run harness/*.sh
}

shellcheck_scripts() {
  # shellcheck source=harness/apt-need.sh
  source harness/apt-need.sh
  apt_need shellcheck:shellcheck
  local -a files
  mapfile -t files < <(shell_scripts)
  shellcheck --version | sed -n 's/^version: /    shellcheck /p'
  # -x follows the files they source (paths relative to the repository root).
  shellcheck -x "${files[@]}"
  echo "    ${#files[@]} scripts clean"
}

# The advisories check is left out: it needs the RustSec database, cloned
# from a git host the CI machines cannot reach.
cargo_deny() {
  command -v cargo-deny >/dev/null || {
    echo "cargo-deny not found: cargo install --locked cargo-deny (.ci/run installs the version it pins)" >&2
    return 1
  }
  cargo deny --version
  cargo deny --workspace check --hide-inclusion-graph licenses bans sources
}

tier_lint() {
  step fmt cargo fmt --all -- --check
  step clippy cargo clippy --workspace --all-targets --all-features -- -D warnings
  step shellcheck shellcheck_scripts
  step cargo-deny cargo_deny
}

# ----------------------------------------------------------------- unit --

# The decision core (crates/decide: stages, scenarios, simulator, property
# tests), then the shell's unit tests and the real binary's start-up errors.
unit_tests() {
  cargo test -p kube-fencer-decide -p kube-fencer-protocol-check
  cargo test -p kube-fencer --lib --bins --test startup
}

tier_unit() {
  step unit-tests unit_tests
  # The whole protocol (crates/protocol-check): 10,000 random fault
  # schedules (every fault kind, the leader-side ones included) and the
  # bounded model check. Optimized, but with the debug build's assertions
  # and overflow checks: a quarter of the debug build's run time, and the
  # crate and its few dependencies build in under a minute. The long run:
  #   cargo run --release -p kube-fencer-protocol-check -- --schedules 1000000 --leader-side --verbose
  step protocol-sim cargo run --quiet --release \
    --config profile.release.debug-assertions=true --config profile.release.overflow-checks=true \
    -p kube-fencer-protocol-check -- --schedules 10000 --check --depth 4 --leader-side
  # The configuration sweep: every schedule on settings drawn from its seed
  # over the range the flags accept (boundaries included), with the staged
  # cuts (a node cut from the API, then from everything 10-35 s later). A
  # few hundred here (about 10 s of one core); the long run:
  #   cargo run --release -p kube-fencer-protocol-check -- --schedules 20000 --sweep --leader-side --threads 2 --verbose
  step protocol-sweep cargo run --quiet --release \
    --config profile.release.debug-assertions=true --config profile.release.overflow-checks=true \
    -p kube-fencer-protocol-check -- --schedules 400 --sweep --leader-side
  # The permit protocol (docs/permits.md), every mode briefly: random
  # schedules over the whole configuration space (S1), outages of one path
  # over the accepted configurations (S2), power-offs (how long a fencing
  # takes). The long runs: permit-check --schedules 1000000 [--outages].
  step permit-sim cargo run --quiet --release \
    --config profile.release.debug-assertions=true --config profile.release.overflow-checks=true \
    -p kube-fencer-protocol-check --bin permit-check -- --suite
  # The alerts and the dashboard of daemonset/monitoring/: derived files up
  # to date, promtool check/test rules (a case per alert), every metric they
  # name registered, promtool check metrics on the real exposition (promtool
  # and the Prometheus server of the end-to-end alert scenario are built by
  # harness/monitoring.sh; no cluster needed).
  step monitoring ./harness/monitoring.sh test
  # The agent's watchdog code (crates/watchdog, a dependency of the
  # test) against a Linux watchdog device emulated with FUSE: feeding while
  # permitted, the magic close, firing once the permit lapses, the reset
  # expedited by a self-fence decision, no ping from a restarted agent.
  step fakewdog ./harness/fakewdog.sh test
}

# ------------------------------------------------------------------ e2e --

# The README's main job, end to end: a node powered off, its replica
# recovered, the node rebooted and unfenced. Quiet when it passes (its
# figures only); on failure its output, which names the directory with every
# log.
demo_smoke_test() {
  local log rc=0
  log="$(mktemp -t kube-fencer-demo-smoke.XXXXXX)"
  if [[ -n "${AGENT_BIN:-}" ]]; then
    KUBE_FENCER_AGENT_BIN="$AGENT_BIN" ./harness/demo.sh --fast --debug >"$log" 2>&1 || rc=$?
  else
    ./harness/demo.sh --fast --debug >"$log" 2>&1 || rc=$?
  fi
  if ((rc != 0)); then
    sed 's/\x1b\[[0-9;]*m//g' "$log" | tail -n 80
    echo "demo smoke test FAILED (exit $rc); its output: $log" >&2
    return 1
  fi
  grep -E "time to (recovery|unfence):" "$log" | sed 's/^ */    /'
  rm -f "$log"
}

tier_e2e() {
  # etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok.
  step control-plane ./harness/build.sh
  # The end-to-end scenarios and the agent binary they run, compiled once:
  # the demo runs that binary too, rather than a build of its own (which,
  # with other features, would compile the crate again).
  step e2e-build cargo test --features e2e --test e2e --no-run
  AGENT_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/kube-fencer"
  # ./harness/demo.sh --fast, debug build.
  step demo demo_smoke_test
  # The Dockerfile's image, built without Docker (musl binary + umoci),
  # checked against the Dockerfile, imported into a throwaway containerd and
  # run with runc; and the pause image real nodes need.
  step images ./harness/image-test.sh
  # The Helm chart: the plain manifests are what it renders, every values
  # combination of charts/kube-fencer/ci/ lints and is accepted by the API
  # server (dry run); then a helm install, upgrade and uninstall.
  step helm ./harness/helm.sh test
  # Two scenarios at a time: each has a control plane and agents of its
  # own (ports picked free, network labs on subnets of their own), and most
  # of a scenario is waiting for its timings. KUBE_FENCER_E2E_THREADS=1
  # runs them one by one.
  # Without backtraces: a failure's message is then the last thing its
  # test prints, where a truncated CI log still shows it.
  step e2e-scenarios env RUST_BACKTRACE=0 cargo test --features e2e --test e2e -- \
    --test-threads="${KUBE_FENCER_E2E_THREADS:-2}"
}

# ------------------------------------------------------------- realnode --

# The default install on real nodes (harness/realnode.sh: kubelet,
# containerd, runc, CNI and kube-proxy in a network and mount namespace per
# node, a FUSE watchdog per node that powers it off when it fires):
# `kubectl apply -f rbac/ -f daemonset/` unchanged, a node powered off and
# recovered, rebooted and unfenced, a node cut off that fences itself through
# its watchdog before its replica is force-deleted (about four minutes).
tier_realnode() {
  # (Backtraces as the environment says: this step builds the image again
  # from inside the tests, and a rehearsal with RUST_BACKTRACE=0 here
  # rebuilt the whole musl dependency tree, 400 s, where the environment
  # of the images step had left it built.)
  step realnode cargo test --features realnode --test realnode -- --test-threads=1 --nocapture
}

tier_demo() {
  step demo demo_smoke_test
}

for tier in "${tiers[@]}"; do
  "tier_$tier"
done
