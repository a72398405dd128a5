#!/usr/bin/env bash
# Chaos test for a real kind cluster (needs Docker and kind; not run by CI).
#
#   ./harness/kind-chaos.sh [--cluster NAME] [--timeout SECONDS] [--keep-workload]
#
# Prerequisites: a kind cluster with at least 3 worker nodes, e.g.
#   kind create cluster --name fencer --config - <<EOF
#   kind: Cluster
#   apiVersion: kind.x-k8s.io/v1alpha4
#   nodes: [{role: control-plane}, {role: worker}, {role: worker}, {role: worker}]
#   EOF
# plus kubectl, python3 and cargo on the host.
#
# kube-fencer never deletes a pod on suspicion alone: a node is marked fenced
# only when its own agent can fence itself (watchdog/sysrq, privileged
# DaemonSet) or when --fence-command powered it off. A kind node is a Docker
# container on this host, so a watchdog or sysrq reset inside it would reset
# the HOST; this script uses external fencing instead, the way an IPMI or
# cloud power-off command would be used:
#
#   - rbac/ is installed (ServiceAccount, least-privilege RBAC); the in-cluster
#     DaemonSet is not, because its pods cannot run `docker`;
#   - one agent per kind worker runs on this host (authenticated with the
#     ServiceAccount's token) with --fence-command 'docker stop "$NODE_NAME"';
#   - a 3-replica StatefulSet with PVCs is deployed;
#   - the worker running replica 1 gets `docker stop` and its agent is killed
#     (power loss); the timeline (harness/timeline.py) runs until the replica
#     is back, or reports that it is not;
#   - the worker gets `docker start`, its agent comes back with a new boot ID,
#     and the script waits for kube-fencer to unfence the node.
#
# Storage: kind's default local-path volumes live on one node, so a replica
# whose PVC is on the stopped node cannot start elsewhere (it stays Pending
# until the node returns) — the script reports that. Use a cluster with
# network storage (NFS, a CSI driver) to see a cross-node recovery.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=harness/workload.sh
source "$REPO/harness/workload.sh"
CLUSTER=kind
TIMEOUT=600
KEEP=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cluster) CLUSTER="$2"; shift 2 ;;
    --timeout) TIMEOUT="$2"; shift 2 ;;
    --keep-workload) KEEP=1; shift ;;
    -h | --help) sed -n '2,38p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

for tool in docker kind kubectl python3 cargo; do
  command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 1; }
done
kind get clusters | grep -qx "$CLUSTER" || { echo "no kind cluster named $CLUSTER" >&2; exit 1; }
KC=(kubectl --context "kind-$CLUSTER")
NS=kube-fencer-chaos
STS=db

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "Building the agent"
(cd "$REPO" && cargo build --release --bin kube-fencer 2>&1 | tail -n 2)
AGENT_BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/kube-fencer"
[[ -x "$AGENT_BIN" ]] || { echo "cargo build did not produce $AGENT_BIN" >&2; exit 1; }

WORK="$(mktemp -d -t kube-fencer-kind.XXXXXX)"
STOPPED=""
declare -A AGENT_OF=()
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
  local rc=$?
  set +e
  local pid
  for pid in "${AGENT_OF[@]}"; do
    kill "$pid" 2>/dev/null
  done
  if [[ -n "$STOPPED" ]]; then
    echo "restarting $STOPPED"
    docker start "$STOPPED" >/dev/null
  fi
  if ((KEEP == 0)); then
    "${KC[@]}" delete namespace "$NS" --wait=false >/dev/null 2>&1
  fi
  echo "agent logs: $WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "Installing kube-fencer's RBAC into kind-$CLUSTER"
"${KC[@]}" apply -f "$REPO/rbac/"

step "Starting one agent per worker on this host, with docker stop as the fence command"
TOKEN="$("${KC[@]}" create token kube-fencer -n kube-fencer --duration=2h)"
SERVER="$("${KC[@]}" config view --minify --raw -o jsonpath='{.clusters[0].cluster.server}')"
CA_DATA="$("${KC[@]}" config view --minify --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')"
cat >"$WORK/agent.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kind
  cluster:
    server: $SERVER
    certificate-authority-data: $CA_DATA
users:
- name: kube-fencer
  user:
    token: $TOKEN
contexts:
- name: agent
  context: {cluster: kind, user: kube-fencer, namespace: kube-fencer}
current-context: agent
EOF
# $NODE_NAME in the fence command is expanded by the agent's sh -c, not here.
# shellcheck disable=SC2016
AGENT_ARGS=(
  --namespace kube-fencer
  --unreachable-after 20s --fence-timeout 40s --healthy-after 30s
  --max-unhealthy 40% --strategy out-of-service
  --self-fence none --peer-listen ""
  --fence-command 'docker stop "$NODE_NAME"'
)
port=$((20000 + RANDOM % 20000))
start_agent() { # start_agent NODE
  port=$((port + 1))
  echo "boot-$1-$RANDOM$RANDOM" >"$WORK/boot-id-$1"
  KUBECONFIG="$WORK/agent.kubeconfig" RUST_LOG="${RUST_LOG:-info}" \
    setsid "$AGENT_BIN" --node-name "$1" --listen "127.0.0.1:$port" \
    --boot-id-file "$WORK/boot-id-$1" "${AGENT_ARGS[@]}" \
    </dev/null >>"$WORK/agent-$1.log" 2>&1 &
  AGENT_OF[$1]=$!
  disown "$!"
  echo "    agent for $1: pid $!, log $WORK/agent-$1.log"
}
WORKERS="$("${KC[@]}" get nodes -l '!node-role.kubernetes.io/control-plane' -o jsonpath='{.items[*].metadata.name}')"
for node in $WORKERS; do
  start_agent "$node"
done

step "Deploying StatefulSet $NS/$STS"
"${KC[@]}" create namespace "$NS" --dry-run=client -o yaml | "${KC[@]}" apply -f -
statefulset_manifest "$NS" "$STS" "" 100Mi | "${KC[@]}" apply -f -
"${KC[@]}" -n "$NS" rollout status "statefulset/$STS" --timeout=300s
"${KC[@]}" -n "$NS" get pods -o wide

POD="$STS-1"
VICTIM="$("${KC[@]}" -n "$NS" get pod "$POD" -o jsonpath='{.spec.nodeName}')"
OLD_UID="$("${KC[@]}" -n "$NS" get pod "$POD" -o jsonpath='{.metadata.uid}')"
docker inspect "$VICTIM" >/dev/null 2>&1 || { echo "no container named $VICTIM" >&2; exit 1; }
if [[ "$VICTIM" == *control-plane* ]]; then
  echo "$POD landed on the control-plane node; stopping it would stop the API server" >&2
  exit 1
fi

step "docker stop $VICTIM (runs $POD); its agent dies with it"
T0="$(date +%s.%N)"
kill -KILL "${AGENT_OF[$VICTIM]}" 2>/dev/null || true
unset "AGENT_OF[$VICTIM]"
docker stop "$VICTIM" >/dev/null
STOPPED="$VICTIM"
rc=0
"$REPO/harness/timeline.py" --node "$VICTIM" --pod "$NS/$POD" --old-uid "$OLD_UID" \
  --since "$T0" --unreachable-after 20 --timeout "$TIMEOUT" \
  --kubectl "kubectl --context kind-$CLUSTER" || rc=$?
"${KC[@]}" -n "$NS" get pods -o wide
"${KC[@]}" get nodes
if ((rc != 0)); then
  echo "replica $POD did not recover within ${TIMEOUT}s (local-path volume on $VICTIM? see the note in --help)" >&2
fi

step "docker start $VICTIM; its agent comes back with a new boot ID"
T1="$(date +%s.%N)"
docker start "$VICTIM" >/dev/null
STOPPED=""
start_agent "$VICTIM"
"$REPO/harness/timeline.py" --node "$VICTIM" --pod "$NS/$POD" --old-uid "$OLD_UID" \
  --since "$T0" --restarted-at "$T1" --until unfenced --timeout "$TIMEOUT" \
  --kubectl "kubectl --context kind-$CLUSTER" || rc=$?
exit "$rc"
