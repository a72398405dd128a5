#!/usr/bin/env bash
# kube-fencer demo on a real local control plane (no Docker needed).
#
#   ./harness/demo.sh [--fast] [--debug] [--keep] [--max-unhealthy VALUE] [--no-advert] [--kill-leader]
#   ./harness/demo.sh --real-nodes [--keep]
#
# 1. builds what is missing (control-plane binaries via harness/build.sh, the
#    agent via cargo build --release),
# 2. starts etcd + kube-apiserver + kube-controller-manager + kube-scheduler on
#    loopback with 3 kwok-simulated nodes, each with a boot ID that its
#    "kubelet" reports (status.nodeInfo.bootID) and its agent reads,
# 3. installs kube-fencer from rbac/ and daemonset/, and runs one agent per
#    node as a host process authenticated with the kube-fencer ServiceAccount
#    token (the simulated nodes cannot run containers),
# 4. deploys a 3-replica StatefulSet with one PVC per replica,
# 5. powers off the node of a replica (replica 1 unless the leader runs
#    there; kills its kwok process and its agent) and prints the timeline,
#    relative to the power loss, until the replica runs elsewhere with the
#    same PVC,
# 6. powers the node back on with a new boot ID (a reboot) and shows
#    kube-fencer unfence it,
# 7. tears everything down (also on Ctrl-C or failure).
# Exits 0 only when the replica recovered and the node was unfenced.
#
# Timings: by default the kubelet defaults (40 s node lease, 40 s
# node-monitor-grace-period) and the agent's documented defaults; --fast uses
# the short test timings (10 s lease) for a run of about a minute.
# --debug builds and runs the agent's debug build (quicker to build; ./test.sh).
# KUBE_FENCER_AGENT_BIN=PATH runs that agent binary instead of building one.
# --keep leaves the cluster directory (logs, kubeconfig) in place.
# --max-unhealthy is passed to the agents (default 40%, as in the DaemonSet).
# --no-advert powers the node off as if its agent had never advertised (stops
#    the agent and removes its advertisement first): the kubelet's boot ID
#    alone must prove the reboot.
# --kill-leader powers off the leader's node instead: a new leader takes over
#    first, so the recovery takes longer.
# --real-nodes runs the same story on three real nodes (a kubelet, containerd
#    and runc each, in network namespaces of their own) with the default
#    manifests applied unchanged, the agents in containers of the image the
#    Dockerfile describes and a watchdog device per node that powers it off
#    (the real-node chaos test, tests/realnode/chaos/, stopped after the
#    reboot with KUBE_FENCER_REALNODE_DEMO=1; root and /dev/fuse, about 2 min
#    warm).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HARNESS="$REPO/harness"
# shellcheck source=harness/workload.sh
source "$HARNESS/workload.sh"
FAST=0
KEEP=0
MAX_UNHEALTHY=40%
PROFILE=release
NO_ADVERT=0
KILL_LEADER=0
REAL_NODES=0
OTHER=()
while [[ $# -gt 0 ]]; do
  [[ "$1" == --real-nodes || "$1" == --keep ]] || OTHER+=("$1")
  case "$1" in
    --real-nodes) REAL_NODES=1; shift ;;
    --fast) FAST=1; shift ;;
    --debug) PROFILE=debug; shift ;;
    --keep) KEEP=1; shift ;;
    --max-unhealthy) MAX_UNHEALTHY="$2"; shift 2 ;;
    --no-advert) NO_ADVERT=1; shift ;;
    --kill-leader) KILL_LEADER=1; shift ;;
    -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
if ((REAL_NODES)); then
  if ((${#OTHER[@]})); then
    echo "demo.sh: --real-nodes takes only --keep (not ${OTHER[*]}): real nodes run the default manifests and timings" >&2
    exit 2
  fi
  export KUBE_FENCER_REALNODE_DEMO=1
  ((KEEP)) && export KUBE_FENCER_REALNODE_KEEP=1
  cd "$REPO"
  exec cargo test --features realnode --test realnode -- --exact --nocapture \
    chaos::default_install_on_real_nodes_power_off_cut_and_frozen_agent
fi

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

for tool in python3 openssl curl pgrep setsid; do
  command -v "$tool" >/dev/null || { echo "demo.sh needs $tool (see harness/README.md)" >&2; exit 1; }
done

DEMO_START=$SECONDS
step "Building (only what is missing)"
BIN_DIR="$("$HARNESS/build.sh" | tail -n1)"
export KUBE_FENCER_BIN_DIR="$BIN_DIR"
if [[ -n "${KUBE_FENCER_AGENT_BIN:-}" ]]; then
  # An agent binary built already (./test.sh passes the one its end-to-end
  # build made, instead of a second build of the crate with other features).
  AGENT_BIN="$KUBE_FENCER_AGENT_BIN"
  [[ -x "$AGENT_BIN" ]] || { echo "KUBE_FENCER_AGENT_BIN=$AGENT_BIN is not an executable" >&2; exit 1; }
  info "agent: $AGENT_BIN (KUBE_FENCER_AGENT_BIN)"
else
  if [[ "$PROFILE" == release ]]; then
    (cd "$REPO" && cargo build --release --bin kube-fencer 2>&1 | tail -n 3)
  else
    (cd "$REPO" && cargo build --bin kube-fencer 2>&1 | tail -n 3)
  fi
  AGENT_BIN="${CARGO_TARGET_DIR:-$REPO/target}/$PROFILE/kube-fencer"
  [[ -x "$AGENT_BIN" ]] || { echo "cargo build did not produce $AGENT_BIN" >&2; exit 1; }
fi

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
  --node-monitor-grace-period "$GRACE" --boot-ids 2>&1 | sed 's/^/    /'
kc get nodes -o custom-columns='NAME:.metadata.name,READY:.status.conditions[?(@.type=="Ready")].status,BOOT ID (kubelet):.status.nodeInfo.bootID' | sed 's/^/    /'

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
# free_port: sets PORT to a TCP port on 127.0.0.1 that nothing listens on,
# below the kernel's ephemeral range (where the e2e tests' ports come from),
# and not handed out before.
USED_PORTS=" "
free_port() {
  local tries
  for ((tries = 0; tries < 1000; tries++)); do
    PORT=$((20000 + RANDOM % 12000))
    [[ "$USED_PORTS" == *" $PORT "* ]] && continue
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && continue
    USED_PORTS+="$PORT "
    return 0
  done
  echo "no free port found" >&2
  return 1
}
# start_agent NODE: one agent as the node's DaemonSet pod would run it. The
# boot ID file is the node's /proc/sys/kernel/random/boot_id (cluster.sh
# --boot-ids keeps it equal to the kubelet's status.nodeInfo.bootID); the
# state directory is the node's /run/kube-fencer.
declare -A AGENT_OF
start_agent() {
  local node="$1"
  free_port
  KUBECONFIG="$DIR/agent.kubeconfig" RUST_LOG="${RUST_LOG:-info}" \
    setsid "$AGENT_BIN" --node-name "$node" --namespace kube-fencer \
    --listen "127.0.0.1:$PORT" "${AGENT_ARGS[@]}" \
    --boot-id-file "$DIR/nodes/$node/boot_id" --state-dir "$DIR/state/$node" \
    </dev/null >>"$DIR/logs/agent-$node.log" 2>&1 &
  AGENT_PIDS+=("$!")
  AGENT_OF[$node]=$!
  disown "$!"
  info "agent for $node (boot $(cat "$DIR/nodes/$node/boot_id")): pid $! listening on 127.0.0.1:$PORT, log $DIR/logs/agent-$node.log"
}
for node in $(kc get nodes -o jsonpath='{.items[*].metadata.name}'); do
  start_agent "$node"
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

# Wait until the agents have elected a leader that has seen a healthy cluster.
for ((w = 0; w < 60; w++)); do
  kc -n kube-fencer get lease kube-fencer-leader >/dev/null 2>&1 && break
  sleep 0.5
done
kc -n kube-fencer get lease kube-fencer-leader -o custom-columns='LEADER LEASE:.metadata.name,HOLDER:.spec.holderIdentity' | sed 's/^/    /'
# The leader's identity is kube-fencer-NODE (no --pod-name here).
LEADER_NODE="$(kc -n kube-fencer get lease kube-fencer-leader -o jsonpath='{.spec.holderIdentity}' 2>/dev/null || true)"
LEADER_NODE="${LEADER_NODE#kube-fencer-}"

# The victim: replica 1's node, unless the leader runs there (then another
# replica's; with --kill-leader, a replica on the leader's node).
POD="$STS-1"
for r in 1 0 2; do
  where="$(kc -n "$NS" get pod "$STS-$r" -o jsonpath='{.spec.nodeName}')"
  if { ((KILL_LEADER)) && [[ "$where" == "$LEADER_NODE" ]]; } ||
    { ((!KILL_LEADER)) && [[ "$where" != "$LEADER_NODE" ]]; }; then
    POD="$STS-$r"
    break
  fi
done
VICTIM="$(kc -n "$NS" get pod "$POD" -o jsonpath='{.spec.nodeName}')"
OLD_UID="$(kc -n "$NS" get pod "$POD" -o jsonpath='{.metadata.uid}')"

# adverts_current: every node carries its agent's advertisement
# (kube-fencer.io/agent, written after the agent's first self-check) with
# the boot ID its kubelet reports.
adverts_current() {
  local boot advert ok=0
  while read -r _ boot advert; do
    [[ -n "$boot" && "$advert" == *"\"bootId\":\"$boot\""* ]] || ok=1
  done < <(kc get nodes -o jsonpath='{range .items[*]}{.metadata.name} {.status.nodeInfo.bootID} {.metadata.annotations.kube-fencer\.io/agent}{"\n"}{end}')
  return "$ok"
}
for ((w = 0; w < 60; w++)); do
  adverts_current && break
  sleep 0.5
done
adverts_current || info "(not every agent has advertised yet; the kubelet's boot ID is recorded regardless)"
kc get nodes -o custom-columns='NODE:.metadata.name,KUBELET BOOT ID:.status.nodeInfo.bootID,AGENT ADVERTISEMENT:.metadata.annotations.kube-fencer\.io/agent' |
  cut -c1-160 | sed 's/^/    /'

if ((NO_ADVERT)); then
  # The race a fresh node can lose: it dies before its agent advertised, so
  # only the kubelet's boot ID can prove the reboot later.
  step "Making $VICTIM look as if its agent never advertised (--no-advert)"
  kill -KILL "${AGENT_OF[$VICTIM]}" 2>/dev/null || true
  kc annotate node "$VICTIM" kube-fencer.io/agent- | sed 's/^/    /'
  sleep 1
fi

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

step "Powering $VICTIM back on (it reboots: new boot ID)"
T1="$(date +%s.%N)"
"$HARNESS/cluster.sh" node-start "$DIR" "$VICTIM" 2>/dev/null
info "kubelet boot ID now $(kc get node "$VICTIM" -o jsonpath='{.status.nodeInfo.bootID}')"
start_agent "$VICTIM"
"$HARNESS/timeline.py" --node "$VICTIM" --pod "$NS/$POD" --old-uid "$OLD_UID" \
  --since "$T0" --restarted-at "$T1" --until unfenced --timeout 300 \
  --kubectl "$BIN_DIR/kubectl --kubeconfig $DIR/kubeconfig"

step "kube-fencer agent log lines about $VICTIM"
sed 's/\x1b\[[0-9;]*m//g' "$DIR"/logs/agent-*.log 2>/dev/null |
  grep -iE "fenc|unreach|suspect|delet|taint|cordon|storm" | grep -v "effective configuration" |
  grep -F "$VICTIM" | sort | tail -n 25 | sed 's/^/    /' || info "(none matched)"

step "Demo finished in $((SECONDS - DEMO_START))s"
