#!/usr/bin/env bash
# Chaos test for a real kind cluster (needs Docker and kind; not run by CI).
#
#   ./harness/kind-chaos.sh [--cluster NAME] [--image IMAGE] [--timeout SECONDS] [--keep-workload]
#
# Prerequisites: a kind cluster with at least 3 worker nodes, e.g.
#   kind create cluster --name fencer --config - <<EOF
#   kind: Cluster
#   apiVersion: kind.x-k8s.io/v1alpha4
#   nodes: [{role: control-plane}, {role: worker}, {role: worker}, {role: worker}]
#   EOF
# and the kube-fencer image loaded into it (`kind load docker-image IMAGE
# --name NAME`) if the DaemonSet's image is not pullable; kubectl pointing at
# the cluster (kind sets the context kind-NAME).
#
# Steps: install rbac/ and daemonset/ (with --image, the DaemonSet's image is
# replaced), wait for the agents, deploy a 3-replica StatefulSet with PVCs on
# kind's default local-path StorageClass, `docker stop` the worker running
# replica 1, print the recovery timeline (harness/timeline.py), then
# `docker start` the node and wait for kube-fencer to unfence it.
#
# Note: kind's local-path volumes live on one node, so the replica's PVC is
# pinned to the stopped node and the replacement stays Pending there until the
# node returns; the script reports that honestly. For a cross-node recovery
# use storage that is not node-local (e.g. an NFS or CSI driver in the cluster).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER=kind
IMAGE=""
TIMEOUT=600
KEEP=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cluster) CLUSTER="$2"; shift 2 ;;
    --image) IMAGE="$2"; shift 2 ;;
    --timeout) TIMEOUT="$2"; shift 2 ;;
    --keep-workload) KEEP=1; shift ;;
    -h | --help) sed -n '2,26p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

for tool in docker kind kubectl python3; do
  command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 1; }
done
kind get clusters | grep -qx "$CLUSTER" || { echo "no kind cluster named $CLUSTER" >&2; exit 1; }
KC=(kubectl --context "kind-$CLUSTER")
NS=kube-fencer-chaos
STS=db

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

STOPPED=""
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
  local rc=$?
  set +e
  if [[ -n "$STOPPED" ]]; then
    echo "restarting $STOPPED"
    docker start "$STOPPED" >/dev/null
  fi
  if ((KEEP == 0)); then
    "${KC[@]}" delete namespace "$NS" --wait=false >/dev/null 2>&1
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "Installing kube-fencer into kind-$CLUSTER"
"${KC[@]}" apply -f "$REPO/rbac/" -f "$REPO/daemonset/"
if [[ -n "$IMAGE" ]]; then
  "${KC[@]}" -n kube-fencer set image daemonset/kube-fencer "*=$IMAGE"
fi
"${KC[@]}" -n kube-fencer rollout status daemonset/kube-fencer --timeout=180s

step "Deploying StatefulSet $NS/$STS"
"${KC[@]}" create namespace "$NS" --dry-run=client -o yaml | "${KC[@]}" apply -f -
"${KC[@]}" apply -f - <<EOF
apiVersion: v1
kind: Service
metadata: {name: $STS, namespace: $NS}
spec:
  clusterIP: None
  selector: {app: $STS}
  ports: [{name: web, port: 80}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: $STS, namespace: $NS}
spec:
  serviceName: $STS
  replicas: 3
  podManagementPolicy: Parallel
  selector: {matchLabels: {app: $STS}}
  template:
    metadata: {labels: {app: $STS}}
    spec:
      affinity:
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 100
            podAffinityTerm:
              topologyKey: kubernetes.io/hostname
              labelSelector: {matchLabels: {app: $STS}}
      containers:
      - name: web
        image: registry.k8s.io/pause:3.10
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 100Mi}}
EOF
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

step "docker stop $VICTIM (runs $POD)"
T0="$(date +%s.%N)"
docker stop "$VICTIM" >/dev/null
STOPPED="$VICTIM"
rc=0
"$REPO/harness/timeline.py" --node "$VICTIM" --pod "$NS/$POD" --old-uid "$OLD_UID" \
  --since "$T0" --unreachable-after 20 --timeout "$TIMEOUT" \
  --kubectl "kubectl --context kind-$CLUSTER" || rc=$?
"${KC[@]}" -n "$NS" get pods -o wide
"${KC[@]}" get nodes
if ((rc != 0)); then
  echo "replica $POD did not recover within ${TIMEOUT}s" >&2
fi

step "docker start $VICTIM"
T1="$(date +%s.%N)"
docker start "$VICTIM" >/dev/null
STOPPED=""
"$REPO/harness/timeline.py" --node "$VICTIM" --pod "$NS/$POD" --old-uid "$OLD_UID" \
  --since "$T0" --restarted-at "$T1" --until unfenced --timeout "$TIMEOUT" \
  --kubectl "kubectl --context kind-$CLUSTER" || rc=$?
exit "$rc"
