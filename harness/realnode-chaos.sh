#!/usr/bin/env bash
# Chaos test of the default install on real nodes: `kubectl apply -f rbac/ -f
# daemonset/` unchanged, on a control plane with three real nodes (rn-1..rn-3,
# harness/realnode.sh), each with a watchdog device of its own
# (harness/fakewdog: when it fires it powers its node off), then
#   1. every agent pod Running and Ready, one leader, every node advertising
#      selfFence "watchdog" with its kubelet's boot ID and a peer address, the
#      peer key Secret, every device armed and fed, /metrics answering with
#      kube_fencer_self_fence_capable 1;
#   2. a StatefulSet (pause, one replica, a PVC bound to a hostPath PV any
#      node mounts) on a node that is not the leader's, and a 3-replica
#      Deployment of bystanders;
#   3. power that node off: the replica Running again elsewhere with the same
#      PVC (name and UID), only pods of that node deleted, the node recorded
#      Fencing then Fenced and tainted out-of-service;
#   4. boot it (new boot ID): unfenced (record, taint, cordon gone) and its
#      agent pod Ready again;
#   5. cut the replica's new node off (`realnode.sh cut down`): its agent
#      decides to fence itself, its watchdog fires within the watchdog
#      timeout of that decision and powers it off, and the leader deletes the
#      replica only after that; heal, boot, unfenced again;
#   6. cut the replica's node off (packets dropped) and freeze its agent
#      (SIGSTOP) 2 s later: its watchdog, no longer fed, fires within its
#      timeout of the freeze and powers the node off before the replica is
#      force-deleted; heal, boot, unfenced again;
#   7. delete the default DaemonSet (every agent withdraws and disarms its
#      watchdog; no node goes down), apply daemonset/unprivileged/ under Pod
#      Security "restricted", power a node off: with nothing to fence it,
#      it stays Fencing and cordoned, and none of its pods is deleted;
#      boot it, unfenced.
# After the default install, a Prometheus server (built by
# harness/monitoring.sh) discovers the agent pods through the API and
# scrapes them by their prometheus.io annotations.
# It prints the timings (node Ready, DaemonSet Ready, time to recovery, time
# to unfence, the watchdog's delay) and exits 0 only if every check passed.
#
#   harness/realnode-chaos.sh [--keep] [--demo]
#
# --keep keeps the cluster running (tear it down with harness/cluster.sh down
# DIR after stopping the fakewdog processes listed in DIR/wd/*.pid).
# --demo stops after the reboot (steps 1 to 4): the story of the demo
# (`harness/demo.sh --real-nodes`) on real nodes.
# KUBE_FENCER_REALNODE_RESULT=FILE writes the run's figures there as JSON
# (bench/run.sh --only realnode). KUBE_FENCER_REALNODE_NET picks the bridge
# (default 0). Needs root,
# /dev/fuse and what harness/realnode.sh needs.
set -euo pipefail

HARNESS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HARNESS_DIR/.." && pwd)"
KEEP=0
DEMO=0
for a in "$@"; do
  case "$a" in
    --keep) KEEP=1 ;;
    --demo) DEMO=1 ;;
    *) echo "realnode-chaos.sh: unknown option $a (valid: --keep, --demo)" >&2; exit 2 ;;
  esac
done
NET="${KUBE_FENCER_REALNODE_NET:-0}"
GATEWAY="10.232.$NET.1"
NODES=(rn-1 rn-2 rn-3)
NS=kube-fencer
# Agent defaults (daemonset/10-daemonset.yaml): safe time 48 s after the last
# heartbeat, --healthy-after 30s, --watchdog-timeout 10s.
TTR_BOUND=120
UNFENCE_BOUND=120
WATCHDOG_TIMEOUT=10
WATCHDOG_SLACK=3
DIR="$(mktemp -d -t kfn-realnode-chaos.XXXXXX)"
RN="$HARNESS_DIR/realnode.sh"
T_START=$(date +%s%3N)
STEP="setup"

log() { printf '[realnode-chaos %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
pass() { log "ok: $*"; }
now_ms() { date +%s%3N; }
secs() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); } # ms -> s.mmm

kc() { timeout 20 kubectl --request-timeout=10s "$@"; }

# ------------------------------------------------------------ diagnostics --

diagnose() {
  [[ -f "$DIR/kubeconfig" ]] || return 0
  log "---- nodes"
  kc get nodes -o wide -L kube-fencer.io/phase 2>&1 | sed 's/^/    /' >&2 || true
  kc get nodes -o json 2>/dev/null | jq -r '.items[] | "    \(.metadata.name): unschedulable=\(.spec.unschedulable // false) taints=\([.spec.taints[]?.key] | join(",")) state=\(.metadata.annotations["kube-fencer.io/state"] // "-")"' >&2 || true
  log "---- pods"
  kc get pods -A -o wide 2>&1 | sed 's/^/    /' >&2 || true
  log "---- leases"
  kc -n "$NS" get lease -o wide 2>&1 | sed 's/^/    /' >&2 || true
  log "---- agent pods"
  kc -n "$NS" describe pods 2>&1 | tail -n 80 | sed 's/^/    /' >&2 || true
  local n f c
  for n in "${NODES[@]}"; do
    for f in "$DIR/nodes/$n"/pod-logs/kube-fencer_*/agent/*.log; do
      [[ -f "$f" ]] || continue
      log "---- last lines of $n's agent log $f"
      tail -n 25 "$f" | cut -c1-400 | sed 's/^/    /' >&2
    done
    for c in kubelet containerd init; do
      [[ -f "$DIR/nodes/$n/$c.log" ]] || continue
      log "---- last lines of $n's $c.log"
      tail -n 12 "$DIR/nodes/$n/$c.log" | cut -c1-300 | sed 's/^/    /' >&2
    done
    if [[ -f "$DIR/wd/$n.log" ]]; then
      log "---- $n's watchdog (state: $(tr '\n' ' ' <"$DIR/wd/$n.state" 2>/dev/null))"
      tail -n 8 "$DIR/wd/$n.log" | sed 's/^/    /' >&2
    fi
  done
  log "---- events"
  kc get events -A --sort-by=.lastTimestamp 2>&1 | tail -n 30 | sed 's/^/    /' >&2 || true
}

fail() {
  log "FAIL in step '$STEP': $*"
  diagnose
  exit 1
}

# --------------------------------------------------------------- watchdogs --

FAKEWDOG=""
wd_start() { # wd_start NODE: a fresh device (a reboot resets a fired watchdog)
  local n="$1" i
  mkdir -p "$DIR/wd"
  rm -f "$DIR/wd/$n.state" "$DIR/wd/$n.fired-at"
  setsid "$FAKEWDOG" --mount "$DIR/wd/$n" --timeout 60s --state-file "$DIR/wd/$n.state" \
    --on-expire "date +%s%3N >'$DIR/wd/$n.fired-at'; '$RN' poweroff '$DIR' '$n' >>'$DIR/wd/$n.expire.log' 2>&1" \
    </dev/null >>"$DIR/wd/$n.log" 2>&1 &
  echo $! >"$DIR/wd/$n.pid"
  for ((i = 0; i < 100; i++)); do
    [[ -e "$DIR/wd/$n/watchdog" ]] && return 0
    kill -0 "$(cat "$DIR/wd/$n.pid")" 2>/dev/null || break
    sleep 0.1
  done
  tail -n 20 "$DIR/wd/$n.log" >&2 || true
  fail "fakewdog for $n did not mount $DIR/wd/$n"
}

wd_stop() { # wd_stop NODE: SIGTERM, wait (it exits within ~2 s), unmount leftovers
  local n="$1" pid i
  [[ -f "$DIR/wd/$n.pid" ]] || return 0
  pid="$(cat "$DIR/wd/$n.pid")"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "fakewdog of $n (pid $pid) did not exit on SIGTERM; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  if grep -q " $DIR/wd/$n " /proc/self/mountinfo; then umount -l "$DIR/wd/$n" 2>/dev/null || true; fi
  rm -f "$DIR/wd/$n.pid"
}

wd_field() { sed -n "s/^$2=//p" "$DIR/wd/$1.state" 2>/dev/null; } # wd_field NODE KEY

cleanup() {
  local rc=$?
  if ((KEEP)); then
    log "kept the cluster in $DIR (stop the fakewdog pids in $DIR/wd/*.pid, then harness/cluster.sh down $DIR)"
    return
  fi
  [[ -f "$DIR/prometheus.pid" ]] && kill "$(cat "$DIR/prometheus.pid")" 2>/dev/null
  "$RN" down "$DIR" >/dev/null 2>&1 || log "realnode.sh down failed"
  local n
  for n in "${NODES[@]}"; do wd_stop "$n"; done
  "$HARNESS_DIR/cluster.sh" down "$DIR" >/dev/null 2>&1 || log "cluster.sh down failed"
  ((rc == 0)) || log "logs are in $DIR (nodes/*/, wd/ and logs/)"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# wait_until TIMEOUT WHAT CMD...: poll CMD every 0.5 s.
wait_until() {
  local timeout="$1" what="$2" deadline
  shift 2
  deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || fail "$what (not within ${timeout}s)"
    sleep 0.5
  done
}

# ---------------------------------------------------------------- queries --

node_json() { kc get node "$1" -o json; }
advert() { kc get node "$1" -o jsonpath='{.metadata.annotations.kube-fencer\.io/agent}'; }
boot_id() { kc get node "$1" -o jsonpath='{.status.nodeInfo.bootID}'; }
node_ip() { kc get node "$1" -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}'; }
agent_pod() { # agent_pod NODE: name of the DaemonSet pod bound to NODE
  kc -n "$NS" get pods -l app.kubernetes.io/name=kube-fencer --field-selector "spec.nodeName=$1" \
    -o jsonpath='{.items[0].metadata.name}'
}
agent_ready() { # agent_ready NODE
  local j
  j="$(kc -n "$NS" get pods -l app.kubernetes.io/name=kube-fencer --field-selector "spec.nodeName=$1" -o json)" || return 1
  [[ "$(jq -r '[.items[] | select(.metadata.deletionTimestamp == null and .status.phase == "Running"
        and any(.status.conditions[]?; .type == "Ready" and .status == "True"))] | length' <<<"$j")" == 1 ]]
}
all_agents_ready() {
  local n
  for n in "${NODES[@]}"; do agent_ready "$n" || return 1; done
}
leader_node() { # the node of the pod holding the kube-fencer-leader Lease
  local holder
  holder="$(kc -n "$NS" get lease kube-fencer-leader -o jsonpath='{.spec.holderIdentity}' 2>/dev/null)" || return 1
  [[ -n "$holder" ]] || return 1
  kc -n "$NS" get pod "$holder" -o jsonpath='{.spec.nodeName}'
}
# The agent's container logs on the node's disk (readable while it is off).
agent_log() { cat "$DIR/nodes/$1"/pod-logs/kube-fencer_*/agent/*.log 2>/dev/null; }
# pod_uids: "namespace/name uid node" for every pod, deleting ones included.
pod_uids() { kc get pods -A -o json | jq -r '.items[] | "\(.metadata.namespace)/\(.metadata.name) \(.metadata.uid) \(.spec.nodeName // "-")"' | sort; }
phase() { kc get node "$1" -o jsonpath='{.metadata.labels.kube-fencer\.io/phase}'; }
db_pod() { # "uid node phase ready deleting" of db-0, or nothing
  kc get pod db-0 -o json 2>/dev/null | jq -r '"\(.metadata.uid) \(.spec.nodeName // "-") \(.status.phase) \(any(.status.conditions[]?; .type == "Ready" and .status == "True")) \(.metadata.deletionTimestamp != null)"'
}
unfenced() { # record, phase label, out-of-service taint and cordon gone
  local j
  j="$(node_json "$1")" || return 1
  jq -e '(.metadata.annotations["kube-fencer.io/state"] == null)
     and (.metadata.labels["kube-fencer.io/phase"] == null)
     and ((.spec.unschedulable // false) == false)
     and ([.spec.taints[]? | select(.key == "node.kubernetes.io/out-of-service")] | length == 0)' <<<"$j" >/dev/null
}
node_metrics() { # node_metrics NODE: /metrics of NODE's agent, from the node's network
  local ip
  ip="$(kc -n "$NS" get pod "$(agent_pod "$1")" -o jsonpath='{.status.podIP}')" || return 1
  [[ -n "$ip" ]] || return 1
  "$RN" exec "$DIR" "$1" curl -s --max-time 5 "http://$ip:9746/metrics"
}
refused_in() { # refused_in NODE: peer questions NODE's agent refused, from its /metrics
  node_metrics "$1" | awk '/^kube_fencer_peer_requests_total\{/ && /direction="in"/ && !/result="ok"/ {s += $NF} END {print s + 0}'
}
wd_armed_fed() { # the device is armed and was fed within its timeout
  local st feeds last
  st="$(wd_field "$1" state)"
  feeds="$(wd_field "$1" feeds)"
  last="$(wd_field "$1" last_feed_unix_ms)"
  [[ "$st" == armed && "${feeds:-0}" -gt 1 && -n "$last" ]] || return 1
  (($(now_ms) - last < WATCHDOG_TIMEOUT * 1000))
}
agent_pid() { # the host PID of the kube-fencer process in NODE's cgroup
  local pid
  for pid in $(pgrep -x kube-fencer); do
    grep -q "kfnode-$CID-$1" "/proc/$pid/cgroup" 2>/dev/null && { echo "$pid"; return 0; }
  done
  return 1
}
heal_and_boot() { # heal NODE's network, power it on with a fresh device, wait until it is unfenced (T_UNFENCED: ms after boot)
  "$RN" heal "$DIR" "$1" || fail "realnode.sh heal $1 failed"
  wd_stop "$1"
  wd_start "$1"
  local t
  t=$(now_ms)
  "$RN" boot "$DIR" "$1" || fail "realnode.sh boot $1 failed"
  wait_until "$UNFENCE_BOUND" "$1 unfenced after its reboot" unfenced "$1"
  T_UNFENCED=$(($(now_ms) - t))
  wait_until 60 "$1's agent pod Ready again" agent_ready "$1"
  pass "$1 healed and booted: unfenced $(secs "$T_UNFENCED") s after boot, its agent Ready"
}
log_time_ms() { # log_time_ms LINE: the CRI log line's timestamp in epoch ms
  date -d "${1%% *}" +%s%3N
}

# ------------------------------------------------------------ 1. cluster --

STEP="1: images, control plane, three real nodes with watchdogs"
[[ "$(id -u)" == 0 ]] || fail "needs root"
[[ -e /dev/fuse ]] || fail "needs /dev/fuse"
# Real nodes run containerd, runc and the CNI plugins from Debian's packages.
source "$HARNESS_DIR/apt-need.sh"
apt_need containerd:containerd containerd-shim-runc-v2:containerd runc:runc jq:jq \
  "${KUBE_FENCER_CNI_BIN_DIR:-/usr/lib/cni}/bridge:containernetworking-plugins" ||
  fail "cannot install containerd, runc, jq and the CNI plugins"
BIN="$("$HARNESS_DIR/build.sh" | tail -n1)"
FAKEWDOG="$("$HARNESS_DIR/fakewdog.sh" build | tail -n1)"
[[ -x "$FAKEWDOG" ]] || fail "harness/fakewdog.sh build gave no binary ($FAKEWDOG)"
IMAGES="$DIR/images"
mkdir -p "$IMAGES"
KF_ARCHIVE="$("$HARNESS_DIR/image.sh" build | tail -n1)"
PAUSE_ARCHIVE="$("$HARNESS_DIR/image.sh" pause | tail -n1)"
[[ -f "$KF_ARCHIVE" && -f "$PAUSE_ARCHIVE" ]] || fail "image.sh gave no archives ($KF_ARCHIVE, $PAUSE_ARCHIVE)"
ln -s "$KF_ARCHIVE" "$IMAGES/kube-fencer.tar"
ln -s "$PAUSE_ARCHIVE" "$IMAGES/pause.tar"
# The DaemonSet's image, as it is in the repository, and the archive's names.
DS_IMAGE="$(sed -n 's/^ *image: *//p' "$REPO/daemonset/10-daemonset.yaml")"
[[ "$DS_IMAGE" == kube-fencer:0.1.0 ]] || fail "daemonset/10-daemonset.yaml has image '$DS_IMAGE', not kube-fencer:0.1.0"
tar -xOf "$KF_ARCHIVE" index.json | jq -e --arg r "docker.io/library/$DS_IMAGE" \
  'any(.manifests[]; .annotations["io.containerd.image.name"] == $r)' >/dev/null ||
  fail "the archive $KF_ARCHIVE does not name docker.io/library/$DS_IMAGE"
pass "the image archive names docker.io/library/$DS_IMAGE, the DaemonSet's $DS_IMAGE unchanged"

"$HARNESS_DIR/cluster.sh" up "$DIR" --nodes 0 --api-bind 0.0.0.0 --advertise-address "$GATEWAY" >/dev/null ||
  fail "cluster.sh up failed (logs in $DIR/logs)"
# shellcheck source=/dev/null
source "$DIR/env"
[[ "$(command -v kubectl)" == "$BIN/kubectl" ]] || export PATH="$BIN:$PATH"

declare -A T_READY
for n in "${NODES[@]}"; do
  wd_start "$n"
  t=$(now_ms)
  "$RN" add "$DIR" "$n" --images "$IMAGES" --watchdog "$DIR/wd/$n/watchdog" || fail "realnode.sh add $n failed"
  T_READY[$n]=$(($(now_ms) - t))
done
pass "three real nodes Ready (rn-1 $(secs "${T_READY[rn-1]}") s, rn-2 $(secs "${T_READY[rn-2]}") s, rn-3 $(secs "${T_READY[rn-3]}") s from add)"
out="$("$RN" exec "$DIR" rn-1 ctr -n k8s.io images ls -q)"
grep -qx "docker.io/library/$DS_IMAGE" <<<"$out" || fail "rn-1's containerd has no docker.io/library/$DS_IMAGE: $out"

# ------------------------------------------------------- 2. default install --

STEP="2: kubectl apply -f rbac/ -f daemonset/"
t=$(now_ms)
(cd "$REPO" && kc apply -f rbac/ -f daemonset/) >/dev/null || fail "kubectl apply -f rbac/ -f daemonset/ failed"
wait_until 180 "an agent pod Running and Ready on every real node" all_agents_ready
T_DS=$(($(now_ms) - t))
pass "DaemonSet pods Running and Ready on all three nodes $(secs "$T_DS") s after apply"
wait_until 30 "a leader elected (Lease $NS/kube-fencer-leader)" leader_node
LEADER="$(leader_node)"
pass "leader elected: the agent on $LEADER"

for n in "${NODES[@]}"; do
  pod="$(agent_pod "$n")"
  img="$(kc -n "$NS" get pod "$pod" -o jsonpath='{.status.containerStatuses[0].image}')"
  [[ "$img" == "docker.io/library/$DS_IMAGE" ]] || fail "$pod runs image '$img'"
  cid="$(kc -n "$NS" get pod "$pod" -o jsonpath='{.status.containerStatuses[0].containerID}')"
  [[ "$cid" == containerd://* ]] || fail "$pod's container ID is '$cid', not a containerd one"
  # The peer key is read through the API before the peer endpoint serves:
  # the agent's in-cluster config (ServiceAccount token, kubernetes Service).
  lg="$(agent_log "$n")"
  grep -q 'serving the peer endpoint' <<<"$lg" || fail "$n's agent log shows no peer endpoint (peer key not read through the API)"
  grep -q 'cannot build a Kubernetes client' <<<"$lg" && fail "$n's agent could not build its in-cluster client"
  grep -q 'watchdog armed' <<<"$lg" || fail "$n's agent log does not say 'watchdog armed'"
  a="$(advert "$n")"
  [[ -n "$a" ]] || fail "$n has no kube-fencer.io/agent annotation"
  [[ "$(jq -r .selfFence <<<"$a")" == watchdog ]] || fail "$n advertises $a"
  [[ "$(jq -r .bootId <<<"$a")" == "$(boot_id "$n")" ]] || fail "$n advertises boot ID $(jq -r .bootId <<<"$a"), the kubelet reports $(boot_id "$n")"
  [[ "$(jq -r .peerAddress <<<"$a")" == "$(node_ip "$n"):9747" ]] || fail "$n advertises peer address $(jq -r .peerAddress <<<"$a"), its IP is $(node_ip "$n")"
  wait_until 15 "$n's watchdog armed and fed" wd_armed_fed "$n"
  [[ "$(wd_field "$n" timeout_seconds)" == "$WATCHDOG_TIMEOUT" ]] || fail "$n's watchdog timeout is $(wd_field "$n" timeout_seconds) s, not the agent's $WATCHDOG_TIMEOUT s"
  m="$(node_metrics "$n")" || fail "GET /metrics of $pod on port 9746 failed"
  grep -qx 'kube_fencer_self_fence_capable 1' <<<"$m" || fail "$pod: $(grep self_fence_capable <<<"$m" || echo 'no kube_fencer_self_fence_capable')"
done
grep -q 'created the peer key Secret' <<<"$(for n in "${NODES[@]}"; do agent_log "$n"; done)" || fail "no agent says it created the peer key Secret"
# Every agent's peer port answers from every other node (an unsigned
# question is refused with 401, and counted as such by the receiver).
for m in "${NODES[@]}"; do
  peer_ip="$(node_ip "$m")"
  for n in "${NODES[@]}"; do
    [[ "$n" == "$m" ]] && continue
    code="$("$RN" exec "$DIR" "$n" curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X POST "http://$peer_ip:9747/peer/v1/ask")"
    [[ "$code" == 401 ]] || fail "$m's peer port 9747 answered $code to an unsigned question from $n (want 401)"
  done
  (($(refused_in "$m") >= 2)) ||
    fail "$m's agent did not count the two unsigned questions: $(node_metrics "$m" | grep peer_requests_total)"
done
kc -n "$NS" get secret kube-fencer-peer-key >/dev/null || fail "no Secret $NS/kube-fencer-peer-key"
log "the DaemonSet's pods:"
kc -n "$NS" get pods -l app.kubernetes.io/name=kube-fencer \
  -o custom-columns='POD:.metadata.name,NODE:.spec.nodeName,IP:.status.podIP,READY:.status.containerStatuses[0].ready,CONTAINER:.status.containerStatuses[0].containerID' >&2
pass "every agent's peer port 9747 answers from both other nodes (401 to an unsigned question, counted by the receiver)"
pass "every agent: image $DS_IMAGE, peer key read in-cluster, selfFence watchdog with the kubelet's boot ID and <IP>:9747, device armed ($WATCHDOG_TIMEOUT s) and fed, /metrics says kube_fencer_self_fence_capable 1; Secret kube-fencer-peer-key exists"

# --------------------------------------------------- 2b. Prometheus scrape --

STEP="2b: Prometheus finds the agents through the API and scrapes them by their annotations"
PROM_DIR="$("$HARNESS_DIR/monitoring.sh" build | tail -n1)"
[[ -x "$PROM_DIR/prometheus" ]] || fail "harness/monitoring.sh build gave no prometheus ($PROM_DIR)"
PROM_PORT=$((19090 + NET))
# The usual annotation-driven pod job: keep pods with prometheus.io/scrape
# "true", take the path and port from prometheus.io/path and /port.
cat >"$DIR/prometheus.yaml" <<YAML
global: {scrape_interval: 2s, scrape_timeout: 1s}
scrape_configs:
  - job_name: kubernetes-pods
    kubernetes_sd_configs:
      - role: pod
        kubeconfig_file: $KUBECONFIG
    relabel_configs:
      - {source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape], action: keep, regex: "true"}
      - {source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_path], target_label: __metrics_path__, regex: (.+)}
      - source_labels: [__address__, __meta_kubernetes_pod_annotation_prometheus_io_port]
        regex: '([^:]+)(?::\d+)?;(\d+)'
        replacement: '\$1:\$2'
        target_label: __address__
      - {source_labels: [__meta_kubernetes_pod_node_name], target_label: node}
  # What prometheus-operator makes of daemonset/monitoring/servicemonitor.yaml:
  # the endpoints of Services labelled app.kubernetes.io/name=kube-fencer in
  # kube-fencer, port "metrics", path /metrics.
  - job_name: serviceMonitor/kube-fencer/kube-fencer/0
    metrics_path: /metrics
    kubernetes_sd_configs:
      - role: endpointslice
        kubeconfig_file: $KUBECONFIG
        namespaces: {names: [kube-fencer]}
    relabel_configs:
      - {source_labels: [__meta_kubernetes_service_label_app_kubernetes_io_name], action: keep, regex: kube-fencer}
      - {source_labels: [__meta_kubernetes_endpointslice_port_name], action: keep, regex: metrics}
      - {source_labels: [__meta_kubernetes_pod_node_name], target_label: node}
YAML
"$PROM_DIR/prometheus" --config.file="$DIR/prometheus.yaml" --storage.tsdb.path="$DIR/prom-data" \
  --web.listen-address="127.0.0.1:$PROM_PORT" >"$DIR/prometheus.log" 2>&1 &
echo $! >"$DIR/prometheus.pid"
prom_query() { # prom_query EXPR: the result vector as "node value" lines
  curl -sS --max-time 5 --get "http://127.0.0.1:$PROM_PORT/api/v1/query" --data-urlencode "query=$1" |
    jq -r '.data.result[] | "\(.metric.node) \(.value[1])"' | sort
}
scraped_all() { # scraped_all JOB: every node's agent up in JOB
  [[ "$(prom_query "up{job=\"$1\"} == 1" | awk '{print $1}' | tr '\n' ' ')" == "rn-1 rn-2 rn-3 " ]]
}
wait_until 60 "Prometheus scraping an agent on every node through the pod annotations (log: $DIR/prometheus.log)" scraped_all kubernetes-pods
wait_until 30 "Prometheus scraping an agent on every node as the ServiceMonitor describes (log: $DIR/prometheus.log)" \
  scraped_all serviceMonitor/kube-fencer/kube-fencer/0
capable="$(prom_query 'kube_fencer_self_fence_capable{job="kubernetes-pods"}')"
[[ "$capable" == $'rn-1 1\nrn-2 1\nrn-3 1' ]] || fail "kube_fencer_self_fence_capable as scraped: $capable"
[[ "$(prom_query 'sum(kube_fencer_leader{job="kubernetes-pods"})' | awk '{print $2}')" == 1 ]] ||
  fail "scraped kube_fencer_leader does not sum to 1: $(prom_query 'kube_fencer_leader')"
pass "Prometheus scrapes all three agents on port 9746 both ways: by the DaemonSet's prometheus.io pod annotations and by the ServiceMonitor's Service endpoints (up 1), kube_fencer_self_fence_capable 1 each, one kube_fencer_leader"

# ------------------------------------------------------------ 3. workload --

STEP="3: a StatefulSet off the leader's node"
"$HARNESS_DIR/cluster.sh" pv-create "$DIR" pv-data 1Gi default/data-db-0 >/dev/null || fail "pv-create failed"
sed "s/@LEADER@/$LEADER/" "$HARNESS_DIR/realnode/chaos-workload.yaml" | kc apply -f - >/dev/null || fail "cannot create the workload"
db_running() { read -r uid node ph ready del <<<"$(db_pod)"; [[ "$ph" == Running && "$ready" == true && "$del" == false ]]; }
bystanders_running() {
  [[ "$(kc get pods -l app=bystander -o json | jq '[.items[] | select(.status.phase == "Running")] | length')" == 3 ]]
}
wait_until 90 "db-0 Running" db_running
wait_until 90 "three bystander pods Running" bystanders_running
read -r DB_UID VICTIM _ <<<"$(db_pod)"
[[ "$VICTIM" != "$LEADER" ]] || fail "db-0 is on the leader's node $LEADER"
PVC_UID="$(kc get pvc data-db-0 -o jsonpath='{.metadata.uid}')"
[[ "$(kc get pvc data-db-0 -o jsonpath='{.spec.volumeName}')" == pv-data ]] || fail "data-db-0 is not bound to pv-data"
pod_uids >"$DIR/uids-before-poweroff"
pass "db-0 (uid $DB_UID) Running on $VICTIM (leader on $LEADER), claim data-db-0 (uid $PVC_UID) bound to pv-data; $(wc -l <"$DIR/uids-before-poweroff") pods recorded"

# -------------------------------------------------------------- 4. poweroff --

STEP="4: power $VICTIM off"
T_OFF=$(now_ms)
"$RN" poweroff "$DIR" "$VICTIM" || fail "realnode.sh poweroff $VICTIM failed"
log "$VICTIM powered off"
T_FENCING="" T_FENCED="" T_TAINT="" T_DB_GONE="" T_RECOVERED=""
deadline=$((SECONDS + TTR_BOUND))
while :; do
  ((SECONDS < deadline)) || fail "db-0 not Running on another node within ${TTR_BOUND}s of the power-off"
  p="$(phase "$VICTIM" 2>/dev/null || true)"
  [[ -z "$T_FENCING" && "$p" == fencing ]] && { T_FENCING=$(now_ms); log "$VICTIM recorded Fencing"; }
  if [[ -z "$T_FENCED" && "$p" == fenced ]]; then
    T_FENCED=$(now_ms)
    log "$VICTIM recorded Fenced"
  fi
  if [[ -z "$T_TAINT" ]] && kc get node "$VICTIM" -o jsonpath='{.spec.taints[*].key}' 2>/dev/null | grep -qw node.kubernetes.io/out-of-service; then
    T_TAINT=$(now_ms)
  fi
  read -r uid node ph ready del <<<"$(db_pod || true)"
  [[ -z "$T_DB_GONE" && -n "${uid:-}" && "$uid" != "$DB_UID" ]] && T_DB_GONE=$(now_ms)
  [[ -z "$T_DB_GONE" && -z "${uid:-}" ]] && T_DB_GONE=$(now_ms)
  if [[ -n "${uid:-}" && "$uid" != "$DB_UID" && "$ph" == Running && "$ready" == true ]]; then
    T_RECOVERED=$(now_ms)
    break
  fi
  sleep 0.5
done
read -r DB_UID2 DB_NODE2 _ <<<"$(db_pod)"
[[ "$DB_NODE2" != "$VICTIM" ]] || fail "db-0 is Running on $VICTIM again"
[[ -n "$T_FENCING" ]] || fail "$VICTIM was never seen Fencing"
[[ -n "$T_FENCED" ]] || { [[ "$(phase "$VICTIM")" == fenced ]] && T_FENCED=$(now_ms); } || fail "$VICTIM is not Fenced"
((T_FENCING <= T_FENCED)) || fail "Fenced seen before Fencing"
kc get node "$VICTIM" -o jsonpath='{.spec.taints[*].key}' | grep -qw node.kubernetes.io/out-of-service ||
  fail "$VICTIM has no out-of-service taint"
[[ "$(kc get node "$VICTIM" -o jsonpath='{.spec.unschedulable}')" == true ]] || fail "$VICTIM is not cordoned"
[[ "$(kc get pod db-0 -o jsonpath='{.spec.volumes[?(@.name=="data")].persistentVolumeClaim.claimName}')" == data-db-0 ]] ||
  fail "db-0 does not use claim data-db-0"
[[ "$(kc get pvc data-db-0 -o jsonpath='{.metadata.uid}')" == "$PVC_UID" ]] || fail "claim data-db-0 has a new UID"
pod_uids >"$DIR/uids-after-poweroff"
while read -r name uid node; do
  [[ "$node" == "$VICTIM" ]] && continue
  grep -q "^$name $uid " "$DIR/uids-after-poweroff" || fail "pod $name (uid $uid) on healthy node $node was deleted or replaced"
done <"$DIR/uids-before-poweroff"
TTR=$((T_RECOVERED - T_OFF))
pass "db-0 Running on $DB_NODE2 (uid $DB_UID2) with claim data-db-0 (uid $PVC_UID) $(secs "$TTR") s after the power-off (bound ${TTR_BOUND} s); Fencing at +$(secs $((T_FENCING - T_OFF))) s, Fenced at +$(secs $((T_FENCED - T_OFF))) s, out-of-service taint seen at +$(secs $((${T_TAINT:-$T_RECOVERED} - T_OFF))) s, old db-0 gone at +$(secs $((${T_DB_GONE:-$T_RECOVERED} - T_OFF))) s; every pod of the other nodes kept its UID"

# ------------------------------------------------------------------ 5. boot --

STEP="5: boot $VICTIM"
BOOT_OLD="$(boot_id "$VICTIM")"
# A reboot resets the watchdog: a fresh device (the old one fired after the
# agent died without a magic close, or will).
wd_stop "$VICTIM"
wd_start "$VICTIM"
T_BOOT=$(now_ms)
"$RN" boot "$DIR" "$VICTIM" || fail "realnode.sh boot $VICTIM failed"
T_BOOT_READY=$(($(now_ms) - T_BOOT))
BOOT_NEW="$(boot_id "$VICTIM")"
[[ -n "$BOOT_NEW" && "$BOOT_NEW" != "$BOOT_OLD" ]] || fail "boot ID did not change ($BOOT_OLD -> $BOOT_NEW)"
wait_until "$UNFENCE_BOUND" "$VICTIM unfenced after its reboot" unfenced "$VICTIM"
T_UNFENCE=$(($(now_ms) - T_BOOT))
wait_until 60 "$VICTIM's agent pod Ready again" agent_ready "$VICTIM"
wait_until 30 "$VICTIM advertises its new boot ID" bash -c "[[ \"\$(kubectl get node $VICTIM -o jsonpath='{.metadata.annotations.kube-fencer\.io/agent}' | jq -r .bootId)\" == $BOOT_NEW ]]"
wait_until 15 "$VICTIM's new watchdog armed and fed" wd_armed_fed "$VICTIM"
((T_UNFENCE >= 30000)) || fail "$VICTIM unfenced $(secs "$T_UNFENCE") s after boot, before --healthy-after (30 s)"
pass "$VICTIM booted (Ready in $(secs "$T_BOOT_READY") s, boot ID $BOOT_OLD -> $BOOT_NEW), unfenced $(secs "$T_UNFENCE") s after boot (record, taint, cordon gone), its agent Ready, its new device armed and fed"

if ((DEMO)); then
  STEP="teardown"
  log "demo done: $VICTIM powered off, db-0 Running on $DB_NODE2 with the same claim $(secs "$TTR") s later; $VICTIM rebooted and unfenced $(secs "$T_UNFENCE") s after its boot"
  exit 0
fi

# -------------------------------------------------------------- 6. watchdog --

STEP="6: cut $DB_NODE2 off; its watchdog must power it off"
CUT="$DB_NODE2"
LEADER_NOW="$(leader_node)"
[[ "$LEADER_NOW" != "$CUT" ]] || fail "db-0 is on the leader's node $CUT"
read -r DB_UID3 _ <<<"$(db_pod)"
pod_uids >"$DIR/uids-before-cut"
log_lines_before="$(agent_log "$CUT" | wc -l)"
T_CUT=$(now_ms)
"$RN" cut "$DIR" "$CUT" down || fail "realnode.sh cut $CUT down failed"
log "$CUT cut off (eth0 down)"
T_DECISION="" T_FIRED="" T_LAST_PRESENT="" T_RECOVERED2=""
deadline=$((SECONDS + TTR_BOUND))
while :; do
  ((SECONDS < deadline)) || fail "db-0 not Running on another node within ${TTR_BOUND}s of the cut"
  if [[ -z "$T_DECISION" ]]; then
    line="$(agent_log "$CUT" | tail -n +"$((log_lines_before + 1))" | grep -m1 'SELF-FENCING this node' || true)"
    if [[ -n "$line" ]]; then
      T_DECISION="$(log_time_ms "$line")"
      log "$CUT's agent decided to fence itself at +$(secs $((T_DECISION - T_CUT))) s: $(grep -o '"reason":"[^"]*"' <<<"$line" || true)"
    fi
  fi
  if [[ -z "$T_FIRED" && "$(wd_field "$CUT" state)" == fired ]]; then
    T_FIRED="$(wd_field "$CUT" fired_unix_ms)"
    log "$CUT's watchdog fired at +$(secs $((T_FIRED - T_CUT))) s"
  fi
  read -r uid node ph ready del <<<"$(db_pod || true)"
  [[ "${uid:-}" == "$DB_UID3" ]] && T_LAST_PRESENT=$(now_ms)
  if [[ -n "${uid:-}" && "$uid" != "$DB_UID3" && "$ph" == Running && "$ready" == true ]]; then
    T_RECOVERED2=$(now_ms)
    break
  fi
  sleep 0.5
done
[[ -n "$T_DECISION" ]] || fail "no 'SELF-FENCING this node' in $CUT's agent log"
[[ -n "$T_FIRED" ]] || fail "$CUT's watchdog never fired"
((T_FIRED >= T_DECISION)) || fail "$CUT's watchdog fired $(secs $((T_DECISION - T_FIRED))) s before the agent's decision"
((T_FIRED <= T_DECISION + (WATCHDOG_TIMEOUT + WATCHDOG_SLACK) * 1000)) ||
  fail "$CUT's watchdog fired $(secs $((T_FIRED - T_DECISION))) s after the decision (more than ${WATCHDOG_TIMEOUT}+${WATCHDOG_SLACK} s)"
[[ -f "$DIR/wd/$CUT.fired-at" ]] || fail "the watchdog's on-expire command did not run"
[[ "$("$RN" status "$DIR" | awk -v n="$CUT" '$1 == n {print $2}')" == off ]] || fail "$CUT is not off after its watchdog fired"
[[ -n "$T_LAST_PRESENT" ]] || fail "the old db-0 was never seen after the cut"
((T_LAST_PRESENT > T_FIRED)) || fail "the old db-0 was gone before $CUT's watchdog fired (last seen +$(secs $((T_LAST_PRESENT - T_CUT))) s, fired +$(secs $((T_FIRED - T_CUT))) s)"
read -r DB_UID4 DB_NODE4 _ <<<"$(db_pod)"
[[ "$DB_NODE4" != "$CUT" ]] || fail "db-0 back on $CUT"
[[ "$(kc get pvc data-db-0 -o jsonpath='{.metadata.uid}')" == "$PVC_UID" ]] || fail "claim data-db-0 has a new UID"
pod_uids >"$DIR/uids-after-cut"
while read -r name uid node; do
  [[ "$node" == "$CUT" ]] && continue
  grep -q "^$name $uid " "$DIR/uids-after-cut" || fail "pod $name (uid $uid) on healthy node $node was deleted or replaced"
done <"$DIR/uids-before-cut"
[[ "$(phase "$CUT")" == fenced ]] || fail "$CUT is not Fenced"
TTR2=$((T_RECOVERED2 - T_CUT))
pass "cut $CUT: self-fence decision at +$(secs $((T_DECISION - T_CUT))) s, watchdog fired $(secs $((T_FIRED - T_DECISION))) s later (bound ${WATCHDOG_TIMEOUT}+${WATCHDOG_SLACK} s) and powered it off; old db-0 still there at +$(secs $((T_LAST_PRESENT - T_CUT))) s (after the fire), db-0 Running on $DB_NODE4 (uid $DB_UID4, same claim) $(secs "$TTR2") s after the cut; other pods kept their UIDs"

STEP="6: heal and boot $CUT"
heal_and_boot "$CUT"
T_UNFENCE2=$T_UNFENCED

# ------------------------------------------------------- 7. frozen agent --

STEP="7: cut $DB_NODE4 off and freeze its agent; its watchdog must power it off"
FROZEN="$DB_NODE4"
[[ "$(leader_node)" != "$FROZEN" ]] || fail "db-0 is on the leader's node $FROZEN"
wait_until 30 "$FROZEN's watchdog armed and fed" wd_armed_fed "$FROZEN"
read -r DB_UID5 _ <<<"$(db_pod)"
CID="$(sed -n 's/^CID=//p' "$DIR/realnode.env")"
APID="$(agent_pid "$FROZEN")" || fail "no kube-fencer process in $FROZEN's cgroup"
T_CUT3=$(now_ms)
"$RN" cut "$DIR" "$FROZEN" drop || fail "realnode.sh cut $FROZEN drop failed"
sleep 2
kill -STOP "$APID" || fail "cannot SIGSTOP $FROZEN's agent (pid $APID)"
T_FREEZE=$(now_ms)
log "$FROZEN cut off (packets dropped), its agent (pid $APID) frozen 2 s later"
T_FIRED3="" T_LAST3="" T_RECOVERED3=""
deadline=$((SECONDS + TTR_BOUND))
while :; do
  ((SECONDS < deadline)) || fail "db-0 not Running on another node within ${TTR_BOUND}s of the cut"
  if [[ -z "$T_FIRED3" && "$(wd_field "$FROZEN" state)" == fired ]]; then
    T_FIRED3="$(wd_field "$FROZEN" fired_unix_ms)"
    log "$FROZEN's watchdog fired $(secs $((T_FIRED3 - T_FREEZE))) s after the freeze"
  fi
  read -r uid node ph ready del <<<"$(db_pod || true)"
  [[ "${uid:-}" == "$DB_UID5" ]] && T_LAST3=$(now_ms)
  if [[ -n "${uid:-}" && "$uid" != "$DB_UID5" && "$ph" == Running && "$ready" == true ]]; then
    T_RECOVERED3=$(now_ms)
    break
  fi
  sleep 0.5
done
[[ -n "$T_FIRED3" ]] || fail "$FROZEN's watchdog never fired although its agent was frozen"
((T_FIRED3 >= T_FREEZE - 1000)) || fail "$FROZEN's watchdog fired before its agent was frozen"
((T_FIRED3 <= T_FREEZE + (WATCHDOG_TIMEOUT + WATCHDOG_SLACK) * 1000)) ||
  fail "$FROZEN's watchdog fired $(secs $((T_FIRED3 - T_FREEZE))) s after the freeze (more than ${WATCHDOG_TIMEOUT}+${WATCHDOG_SLACK} s)"
[[ "$("$RN" status "$DIR" | awk -v n="$FROZEN" '$1 == n {print $2}')" == off ]] || fail "$FROZEN is not off after its watchdog fired"
[[ -n "$T_LAST3" ]] || fail "the old db-0 was never seen after the cut"
((T_LAST3 > T_FIRED3)) || fail "the old db-0 was gone before $FROZEN's watchdog fired"
TTR3=$((T_RECOVERED3 - T_CUT3))
pass "froze $FROZEN's agent on a cut-off node: its watchdog fired $(secs $((T_FIRED3 - T_FREEZE))) s after the freeze (bound ${WATCHDOG_TIMEOUT}+${WATCHDOG_SLACK} s) and powered it off; old db-0 still there at +$(secs $((T_LAST3 - T_CUT3))) s, db-0 Running elsewhere $(secs "$TTR3") s after the cut"

STEP="7: heal and boot $FROZEN"
heal_and_boot "$FROZEN"
T_UNFENCE3=$T_UNFENCED

# ------------------------------------------ 8. the unprivileged variant --

STEP="8: uninstall the default DaemonSet; every agent withdraws and disarms its watchdog"
timeout 90 kubectl delete -f "$REPO/daemonset/10-daemonset.yaml" --wait=true --timeout=80s >/dev/null ||
  fail "kubectl delete -f daemonset/10-daemonset.yaml failed"
no_agents() { [[ -z "$(kc -n "$NS" get pods -l app.kubernetes.io/name=kube-fencer -o name)" ]]; }
wait_until 60 "every agent pod gone" no_agents
self_fence_is() { [[ "$(advert "$1" | jq -r .selfFence)" == "$2" ]]; }
for n in "${NODES[@]}"; do
  self_fence_is "$n" none || fail "$n still advertises $(advert "$n") after its agent stopped"
  [[ "$(wd_field "$n" state)" == stopped ]] ||
    fail "$n's watchdog is $(wd_field "$n" state) after its agent's graceful stop (the magic close stops it)"
  [[ "$(kc get node "$n" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]] || fail "$n is not Ready"
done
pass "default DaemonSet deleted: every agent withdrew (selfFence none) and disarmed its watchdog (stopped, not fired); every node still up"

STEP="8: kubectl apply -f daemonset/unprivileged/ under Pod Security 'restricted'"
t=$(now_ms)
kc label --overwrite namespace "$NS" pod-security.kubernetes.io/enforce=restricted >/dev/null ||
  fail "cannot label namespace $NS"
(cd "$REPO" && kc apply -f daemonset/unprivileged/) >/dev/null || fail "kubectl apply -f daemonset/unprivileged/ failed"
wait_until 180 "an unprivileged agent pod Running and Ready on every real node (Pod Security 'restricted' admitted them)" all_agents_ready
T_UNPRIV=$(($(now_ms) - t))
wait_until 30 "a leader elected (Lease $NS/kube-fencer-leader)" leader_node
LEADER="$(leader_node)"
for n in "${NODES[@]}"; do
  wait_until 30 "$n advertises selfFence none" self_fence_is "$n" none
  m="$(node_metrics "$n")" || fail "GET /metrics of the unprivileged agent on $n failed"
  grep -qx 'kube_fencer_self_fence_capable 0' <<<"$m" || fail "$n: $(grep self_fence_capable <<<"$m" || echo 'no kube_fencer_self_fence_capable')"
done
pass "unprivileged agents Running and Ready on all three nodes $(secs "$T_UNPRIV") s after apply, admitted under 'restricted'; leader on $LEADER; every node advertises selfFence none, /metrics says kube_fencer_self_fence_capable 0"

read -r _ VICTIM5 _ <<<"$(db_pod)"
if [[ "$VICTIM5" == "$LEADER" ]]; then
  for n in "${NODES[@]}"; do [[ "$n" != "$LEADER" ]] && { VICTIM5="$n"; break; }; done
fi
STEP="8: power $VICTIM5 off with no way to fence it: nothing may be deleted"
pod_uids >"$DIR/uids-before-unprivileged"
T_OFF5=$(now_ms)
"$RN" poweroff "$DIR" "$VICTIM5" || fail "realnode.sh poweroff $VICTIM5 failed"
wait_until 60 "$VICTIM5 recorded Fencing" bash -c "[[ \"\$(kubectl get node $VICTIM5 -o jsonpath='{.metadata.labels.kube-fencer\.io/phase}')\" == fencing ]]"
T_FENCING5=$(($(now_ms) - T_OFF5))
external_required() { node_metrics "$LEADER" | grep -qx "kube_fencer_external_fencing_required{node=\"$VICTIM5\"} 1"; }
wait_until 30 "the leader reports kube_fencer_external_fencing_required for $VICTIM5" external_required
# Past --fence-timeout and what the safe time would have been (48 s after
# the last heartbeat, at most 10 s before the power-off), with margin.
while (($(now_ms) - T_OFF5 < 75000)); do
  [[ "$(phase "$VICTIM5")" == fencing ]] || fail "$VICTIM5 is '$(phase "$VICTIM5")' without a way to fence it"
  kc get node "$VICTIM5" -o jsonpath='{.spec.taints[*].key}' | grep -qw node.kubernetes.io/out-of-service &&
    fail "$VICTIM5 tainted out-of-service without a way to fence it"
  sleep 2
done
pod_uids >"$DIR/uids-after-unprivileged"
while read -r name uid node; do
  [[ "$node" == "$VICTIM5" ]] || continue
  grep -q "^$name $uid " "$DIR/uids-after-unprivileged" || fail "pod $name (uid $uid) of the unfenceable $VICTIM5 was deleted"
done <"$DIR/uids-before-unprivileged"
[[ "$(kc get node "$VICTIM5" -o jsonpath='{.spec.unschedulable}')" == true ]] || fail "$VICTIM5 is not cordoned"
kc get events -A --field-selector reason=FencingStarted -o json |
  jq -e --arg n "$VICTIM5" '[.items[] | select(.involvedObject.name == $n)] | length > 0' >/dev/null ||
  fail "no FencingStarted Event for $VICTIM5"
pass "$VICTIM5 powered off: recorded Fencing at +$(secs "$T_FENCING5") s and cordoned, the leader reports kube_fencer_external_fencing_required; 75 s later it is still only Fencing, untainted, and every pod bound to it kept its UID"

STEP="8: boot $VICTIM5"
heal_and_boot "$VICTIM5"
T_UNFENCE5=$T_UNFENCED

# --------------------------------------------------------------- teardown --

STEP="teardown"
T_TOTAL=$(($(now_ms) - T_START))
log "timings: node Ready rn-1 $(secs "${T_READY[rn-1]}") s, rn-2 $(secs "${T_READY[rn-2]}") s, rn-3 $(secs "${T_READY[rn-3]}") s; DaemonSet Ready $(secs "$T_DS") s;" \
  "power-off TTR $(secs "$TTR") s (Fencing +$(secs $((T_FENCING - T_OFF))) s, Fenced +$(secs $((T_FENCED - T_OFF))) s); unfence $(secs "$T_UNFENCE") s after boot;" \
  "cut: decision +$(secs $((T_DECISION - T_CUT))) s, watchdog +$(secs $((T_FIRED - T_DECISION))) s after it, TTR $(secs "$TTR2") s, unfence $(secs "$T_UNFENCE2") s;" \
  "frozen agent: watchdog +$(secs $((T_FIRED3 - T_FREEZE))) s after the freeze, TTR $(secs "$TTR3") s;" \
  "unprivileged: Ready $(secs "$T_UNPRIV") s after apply, unfenceable node kept its pods, unfence $(secs "$T_UNFENCE5") s after boot; total $(secs "$T_TOTAL") s"
if [[ -n "${KUBE_FENCER_REALNODE_RESULT:-}" ]]; then
  # The figures of this run, in seconds, for bench/ (the realnode section).
  s() { secs "$1"; }
  cat >"$KUBE_FENCER_REALNODE_RESULT" <<JSON
{"node_ready": [$(s "${T_READY[rn-1]}"), $(s "${T_READY[rn-2]}"), $(s "${T_READY[rn-3]}")],
 "daemonset_ready": $(s "$T_DS"),
 "poweroff": {"ttr": $(s "$TTR"), "fencing": $(s $((T_FENCING - T_OFF))), "fenced": $(s $((T_FENCED - T_OFF))),
              "old_pod_gone": $(s $((${T_DB_GONE:-$T_RECOVERED} - T_OFF))), "unfence_after_boot": $(s "$T_UNFENCE")},
 "cut": {"decision": $(s $((T_DECISION - T_CUT))), "watchdog_after_decision": $(s $((T_FIRED - T_DECISION))),
         "ttr": $(s "$TTR2"), "unfence_after_boot": $(s "$T_UNFENCE2")},
 "frozen": {"watchdog_after_freeze": $(s $((T_FIRED3 - T_FREEZE))), "ttr": $(s "$TTR3"),
            "unfence_after_boot": $(s "$T_UNFENCE3")},
 "unprivileged": {"daemonset_ready": $(s "$T_UNPRIV"), "fencing": $(s "$T_FENCING5"),
                  "unfence_after_boot": $(s "$T_UNFENCE5")},
 "total": $(s "$T_TOTAL")}
JSON
  jq -e . "$KUBE_FENCER_REALNODE_RESULT" >/dev/null || fail "wrote an invalid $KUBE_FENCER_REALNODE_RESULT"
fi
if ((KEEP)); then exit 0; fi
trap - EXIT
t=$(now_ms)
"$RN" down "$DIR" >/dev/null 2>&1 || fail "realnode.sh down failed"
for n in "${NODES[@]}"; do wd_stop "$n"; done
"$HARNESS_DIR/cluster.sh" down "$DIR" >/dev/null || fail "cluster.sh down failed"
T_DOWN=$(($(now_ms) - t))
problems=()
[[ -z "$(pgrep -f -- "$DIR/" || true)" ]] || problems+=("processes: $(pgrep -af -- "$DIR/" | tr '\n' ' ')")
ip netns list | grep -q "kfn-$CID-" && problems+=("netns: $(ip netns list | grep "kfn-$CID-")")
ip -o link | grep -qE "kfv$CID|kfnbr${NET}[:@]" && problems+=("links: $(ip -o link | grep -E "kfv$CID|kfnbr${NET}[:@]")")
grep -q -- "$DIR" /proc/self/mountinfo && problems+=("mounts: $(grep -- "$DIR" /proc/self/mountinfo)")
compgen -G "/sys/fs/cgroup/*/kfnode-$CID-*" >/dev/null && problems+=("cgroups: $(compgen -G "/sys/fs/cgroup/*/kfnode-$CID-*")")
((${#problems[@]} == 0)) || { log "FAIL: teardown left: ${problems[*]}"; exit 1; }
pass "teardown in $(secs "$T_DOWN") s left no process, fakewdog mount, netns, veth, bridge or cgroup"
rm -rf "$DIR"
log "PASS in $(secs $(($(now_ms) - T_START))) s"
