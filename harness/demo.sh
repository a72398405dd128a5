#!/usr/bin/env bash
# kube-fencer demo on a real local control plane (no Docker needed).
#
#   ./harness/demo.sh [--fast] [--keep] [--max-unhealthy VALUE]
#
# 1. builds what is missing (control-plane binaries via harness/build.sh, the
#    agent via cargo build --release),
# 2. starts etcd + kube-apiserver + kube-controller-manager + kube-scheduler on
#    loopback with 3 kwok-simulated nodes,
# 3. installs kube-fencer from rbac/ and daemonset/, and runs one agent per
#    node as a host process authenticated with the kube-fencer ServiceAccount
#    token (the simulated nodes cannot run containers),
# 4. deploys a 3-replica StatefulSet with one PVC per replica,
# 5. powers off the node of replica 1 (kills its kwok process and its agent)
#    and prints the timeline, relative to the power loss, until the replica
#    runs elsewhere with the same PVC,
# 6. powers the node back on and shows kube-fencer unfence it,
# 7. tears everything down (also on Ctrl-C or failure).
#
# Timings: by default the kubelet defaults (40 s node lease, 40 s
# node-monitor-grace-period) and the agent's documented defaults; --fast uses
# the short test timings (10 s lease) for a run of about a minute.
# --keep leaves the cluster directory (logs, kubeconfig) in place.
# --max-unhealthy is passed to the agents (default 40%, as in the DaemonSet).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HARNESS="$REPO/harness"
# shellcheck source=harness/workload.sh
source "$HARNESS/workload.sh"
FAST=0
KEEP=0
MAX_UNHEALTHY=40%
while [[ $# -gt 0 ]]; do
  case "$1" in
    --fast) FAST=1; shift ;;
    --keep) KEEP=1; shift ;;
    --max-unhealthy) MAX_UNHEALTHY="$2"; shift 2 ;;
    -h | --help) sed -n '2,26p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

if ((FAST)); then
  LEASE=10
  GRACE=10s
  UNREACHABLE=6
  AGENT_ARGS=(--unreachable-after 6s --fence-timeout 10s --healthy-after 5s --max-unhealthy "$MAX_UNHEALTHY" --leader-lease-duration 8s --node-heartbeat-interval 3s)
else
  LEASE=40
  GRACE=40s
  UNREACHABLE=20
  AGENT_ARGS=(--unreachable-after 20s --fence-timeout 40s --healthy-after 30s --max-unhealthy "$MAX_UNHEALTHY" --leader-lease-duration 12s)
fi
AGENT_ARGS+=(--strategy out-of-service)
# All agents share one host here: no peer endpoint (the demo fences externally).
AGENT_ARGS+=(--peer-listen "")
# External fencing: a stale heartbeat alone never lets kube-fencer delete a
# pod; here the "power fence" of a simulated node is killing its kwok.
AGENT_ARGS+=(--fence-command "$HARNESS/cluster.sh node-stop \"\$KUBE_FENCER_DEMO_DIR\" \"\$NODE_NAME\"")
NS=demo
STS=db

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
info() { printf '    %s\n' "$*"; }

step "Building (only what is missing)"
BIN_DIR="$("$HARNESS/build.sh" | tail -n1)"
export KUBE_FENCER_BIN_DIR="$BIN_DIR"
(cd "$REPO" && cargo build --release --bin kube-fencer 2>&1 | tail -n 3)
AGENT_BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/kube-fencer"
[[ -x "$AGENT_BIN" ]] || { echo "cargo build did not produce $AGENT_BIN" >&2; exit 1; }

DIR="$(mktemp -d -t kube-fencer-demo.XXXXXX)"
export KUBE_FENCER_DEMO_DIR="$DIR"
AGENT_PIDS=()
cleanup() {
  local rc=$?
  set +e
  step "Cleaning up"
  local pid
  for pid in "${AGENT_PIDS[@]}"; do
    kill "$pid" 2>/dev/null
  done
  local i
  for ((i = 0; i < 50; i++)); do
    local alive=0
    for pid in "${AGENT_PIDS[@]}"; do
      kill -0 "$pid" 2>/dev/null && alive=1
    done
    ((alive)) || break
    sleep 0.1
  done
  for pid in "${AGENT_PIDS[@]}"; do
    kill -KILL "$pid" 2>/dev/null
  done
  "$HARNESS/cluster.sh" down "$DIR" >/dev/null 2>&1 || "$HARNESS/cluster.sh" down "$DIR"
  if ((KEEP)) || ((rc != 0)); then
    info "logs and kubeconfig kept in $DIR"
  else
    rm -rf "$DIR"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

kc() { "$BIN_DIR/kubectl" --kubeconfig "$DIR/kubeconfig" "$@"; }

step "Starting a local control plane with 3 nodes (lease ${LEASE}s, node-monitor-grace-period $GRACE)"
"$HARNESS/cluster.sh" up "$DIR" --nodes 3 --node-lease-seconds "$LEASE" \
  --node-monitor-grace-period "$GRACE" 2>&1 | sed 's/^/    /'
kc get nodes | sed 's/^/    /'

step "Installing kube-fencer (rbac/ and daemonset/)"
kc apply -f "$REPO/rbac/" -f "$REPO/daemonset/" | sed 's/^/    /'

step "Starting one agent per node (as the kube-fencer ServiceAccount)"
TOKEN="$(kc create token kube-fencer -n kube-fencer --duration=2h)"
API="$(kc config view --minify -o jsonpath='{.clusters[0].cluster.server}')"
cat >"$DIR/agent.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: $API
    certificate-authority: $DIR/pki/ca.crt
users:
- name: kube-fencer
  user:
    token: $TOKEN
contexts:
- name: agent
  context: {cluster: local, user: kube-fencer, namespace: kube-fencer}
current-context: agent
EOF
declare -A AGENT_OF
port_base=$((20000 + RANDOM % 20000))
i=0
for node in $(kc get nodes -o jsonpath='{.items[*].metadata.name}'); do
  port=$((port_base + i))
  i=$((i + 1))
  echo "boot-$node-$RANDOM$RANDOM" >"$DIR/boot-id-$node" # a simulated node's boot ID
  KUBECONFIG="$DIR/agent.kubeconfig" RUST_LOG="${RUST_LOG:-info}" \
    setsid "$AGENT_BIN" --node-name "$node" --namespace kube-fencer \
    --listen "127.0.0.1:$port" "${AGENT_ARGS[@]}" --boot-id-file "$DIR/boot-id-$node" \
    </dev/null >"$DIR/logs/agent-$node.log" 2>&1 &
  AGENT_PIDS+=("$!")
  AGENT_OF[$node]=$!
  disown "$!"
  info "agent for $node: pid $! listening on 127.0.0.1:$port, log $DIR/logs/agent-$node.log"
done

step "Deploying StatefulSet $NS/$STS (3 replicas, one PVC each)"
kc create namespace "$NS" >/dev/null
for r in 0 1 2; do
  "$HARNESS/cluster.sh" pv-create "$DIR" "$NS-$STS-$r" 1Gi "$NS/data-$STS-$r" 2>/dev/null
done
statefulset_manifest "$NS" "$STS" static 1Gi | kc apply -f - >/dev/null
kc -n "$NS" rollout status "statefulset/$STS" --timeout=120s | sed 's/^/    /'
kc -n "$NS" get pods -o wide | sed 's/^/    /'
kc -n "$NS" get pvc | sed 's/^/    /'

POD="$STS-1"
VICTIM="$(kc -n "$NS" get pod "$POD" -o jsonpath='{.spec.nodeName}')"
OLD_UID="$(kc -n "$NS" get pod "$POD" -o jsonpath='{.metadata.uid}')"

# Wait until the agents have elected a leader that has seen a healthy cluster.
for ((w = 0; w < 60; w++)); do
  kc -n kube-fencer get lease kube-fencer-leader >/dev/null 2>&1 && break
  sleep 0.5
done
kc -n kube-fencer get lease kube-fencer-leader -o custom-columns='LEADER LEASE:.metadata.name,HOLDER:.spec.holderIdentity' | sed 's/^/    /'
sleep 2

step "Powering off $VICTIM (runs $POD): its kwok process and its agent are killed"
T0="$(date +%s.%N)"
kill -KILL "${AGENT_OF[$VICTIM]}" 2>/dev/null || true
"$HARNESS/cluster.sh" node-stop "$DIR" "$VICTIM" 2>/dev/null
info "timeline (seconds after the power loss):"
"$HARNESS/timeline.py" --node "$VICTIM" --pod "$NS/$POD" --old-uid "$OLD_UID" \
  --since "$T0" --unreachable-after "$UNREACHABLE" --timeout 400 \
  --kubectl "$BIN_DIR/kubectl --kubeconfig $DIR/kubeconfig"

kc -n "$NS" get pods -o wide | sed 's/^/    /'
kc get nodes -o custom-columns='NAME:.metadata.name,READY:.status.conditions[?(@.type=="Ready")].status,UNSCHEDULABLE:.spec.unschedulable,TAINTS:.spec.taints[*].key' | sed 's/^/    /'

step "Powering $VICTIM back on"
T1="$(date +%s.%N)"
"$HARNESS/cluster.sh" node-start "$DIR" "$VICTIM" 2>/dev/null
port=$((port_base + 10))
echo "boot-$VICTIM-$RANDOM$RANDOM" >"$DIR/boot-id-$VICTIM" # it rebooted: new boot ID
KUBECONFIG="$DIR/agent.kubeconfig" RUST_LOG="${RUST_LOG:-info}" \
  setsid "$AGENT_BIN" --node-name "$VICTIM" --namespace kube-fencer \
  --listen "127.0.0.1:$port" "${AGENT_ARGS[@]}" --boot-id-file "$DIR/boot-id-$VICTIM" \
  </dev/null >>"$DIR/logs/agent-$VICTIM.log" 2>&1 &
AGENT_PIDS+=("$!")
disown "$!"
"$HARNESS/timeline.py" --node "$VICTIM" --pod "$NS/$POD" --old-uid "$OLD_UID" \
  --since "$T0" --restarted-at "$T1" --until unfenced --timeout 300 \
  --kubectl "$BIN_DIR/kubectl --kubeconfig $DIR/kubeconfig"

step "kube-fencer agent log lines about $VICTIM"
sed 's/\x1b\[[0-9;]*m//g' "$DIR"/logs/agent-*.log 2>/dev/null |
  grep -iE "fenc|unreach|suspect|delet|taint|cordon|storm" | grep -v "effective configuration" |
  grep -F "$VICTIM" | sort | tail -n 25 | sed 's/^/    /' || info "(none matched)"
