#!/usr/bin/env bash
# kube-fencer benchmark: time to recovery, API load, scale, leader failover,
# on the local control plane of harness/. Writes docs/benchmarks/README.md
# (and the raw numbers in docs/benchmarks/raw/).
#
#   ./bench/run.sh [--runs N] [--runs-default N] [--only SECTIONS] [--scale-sizes 10,100,1000]
#                  [--control-window S] [--api-window S] [--scale-window S] [--keep]
#   ./bench/run.sh --report-only      # re-render the README from docs/benchmarks/raw/
#
# SECTIONS (comma-separated, default all but the last): control, ttr-tight,
# failover (one cluster with the test timings), api, ttr-default (one cluster
# with the kubelet and agent defaults), scale (a third cluster, 10 to 1000
# nodes), scale-static-peers. --runs (default 10) is the number of
# time-to-recovery runs per profile; --profiles-tight / --profiles-default
# pick the profiles (bench/bench.py PROFILES). See bench/README.md.
# Not part of ./test.sh or CI: a full run takes about 1.5 hours on 2 cores.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
KEEP=0
ARGS=()
for a in "$@"; do
  case "$a" in
    -h | --help) sed -n '2,/^set /{/^#/p}' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --keep) KEEP=1 ;;
    *) ARGS+=("$a") ;;
  esac
done
export BENCH_COMMAND="./bench/run.sh${*:+ $*}"

# matplotlib (bench/requirements.txt, for the chart) in a virtualenv of its
# own, cached by the file's content: the benchmark needs nothing installed
# system-wide beyond python3.
CACHE="${KUBE_FENCER_CACHE:-$HOME/.cache/kube-fencer}"
VENV="$CACHE/bench-venv-$(sha256sum bench/requirements.txt | cut -c1-12)"
if [[ ! -x "$VENV/bin/python" ]]; then
  rm -rf "$VENV.tmp"
  python3 -m venv "$VENV.tmp"
  "$VENV.tmp/bin/pip" install --quiet --disable-pip-version-check -r bench/requirements.txt
  mv -T "$VENV.tmp" "$VENV"
fi
PYTHON="$VENV/bin/python"

BIN_DIR="$(./harness/build.sh | tail -n1)"
export KUBE_FENCER_BIN_DIR="$BIN_DIR"
cargo build --release --bin kube-fencer 2>&1 | tail -n 2
AGENT_BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/kube-fencer"
[[ -x "$AGENT_BIN" ]] || { echo "cargo build did not produce $AGENT_BIN" >&2; exit 1; }

WORK="$(mktemp -d -t kube-fencer-bench.XXXXXX)"
CHILD=""
cleanup() {
  local rc=$?
  set +e
  if [[ -n "$CHILD" ]] && kill -0 "$CHILD" 2>/dev/null; then
    kill -TERM "$CHILD" 2>/dev/null # the driver tears down its clusters and agents
    for ((i = 0; i < 600; i++)); do
      kill -0 "$CHILD" 2>/dev/null || break
      sleep 0.2
    done
    kill -KILL "$CHILD" 2>/dev/null
  fi
  # Belt and braces: every cluster the driver started lives under $WORK.
  for d in "$WORK"/cluster-*; do
    [[ -f "$d/cluster.env" ]] && ./harness/cluster.sh down "$d" >/dev/null 2>&1
  done
  if ((KEEP)) || ((rc != 0)); then
    echo "logs kept in $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$PYTHON" bench/bench.py --agent-bin "$AGENT_BIN" --bin-dir "$BIN_DIR" --workdir "$WORK" ${ARGS[@]+"${ARGS[@]}"} &
CHILD=$!
wait "$CHILD"
