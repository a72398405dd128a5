#!/usr/bin/env bash
# A real Kubernetes control plane on loopback, with KWOK-simulated nodes.
#
#   cluster.sh up DIR [--nodes N] [--node-lease-seconds S] [--node-monitor-grace-period D] [--boot-ids]
#                     [--api-bind ADDR] [--api-san IP]... [--advertise-address IP]
#   cluster.sh down DIR
#   cluster.sh node-add DIR NAME [label=value ...]
#   cluster.sh node-stop DIR NAME       # SIGKILL the node's kwok: a power loss
#   cluster.sh node-start DIR NAME      # the node comes back
#   cluster.sh pv-create DIR NAME SIZE [NAMESPACE/CLAIM]
#   cluster.sh status DIR
#
# etcd, kube-apiserver, kube-controller-manager and kube-scheduler run as host
# processes on 127.0.0.1 with dynamically picked ports. Every node is one kwok
# process (--manage-single-node) that renews the node's Lease in
# kube-node-lease every lease/4 seconds and plays its pods; killing that
# process is indistinguishable, from the API's point of view, from the node
# losing power: the Lease stops renewing and the pods stay as they were.
# --api-bind (default 127.0.0.1) and --api-san let agents in network
# namespaces (crates/testkit/src/netns.rs) reach the API server at a host-side
# address that its serving certificate names. --advertise-address IP (also
# put in the certificate) makes IP:port the endpoint of the kubernetes
# Service (10.96.0.1:443) instead of none, for pods on real nodes
# (harness/realnode.sh), which `down` also removes.
#
# With --boot-ids every node also has a boot ID, as a kubelet reports it: it
# is in DIR/nodes/NAME/boot_id (a node's /proc/sys/kernel/random/boot_id, for
# an agent's --boot-id-file) and in the Node's status.nodeInfo.bootID, and
# node-start (a reboot) gives the node a new one in both places. Without it
# nodeInfo.bootID stays empty, as kwok leaves it.
#
# All state (certificates, etcd data, logs, pid files, kubeconfig) lives in
# DIR. DIR/env can be sourced for KUBECONFIG and PATH. Logs are kept after
# `down`. Binaries come from harness/build.sh (built if missing) unless
# KUBE_FENCER_BIN_DIR points at a directory that has them all.
set -euo pipefail

HARNESS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STARTUP_TIMEOUT="${KUBE_FENCER_STARTUP_TIMEOUT:-90}"
NODE_READY_TIMEOUT="${KUBE_FENCER_NODE_READY_TIMEOUT:-60}"
SERVICE_CIDR="10.96.0.0/16"
SERVICE_IP="10.96.0.1"
STORAGE_CLASS="static"

LOG_TAG=cluster
# shellcheck source=harness/lib.sh
source "$HARNESS_DIR/lib.sh"

usage() {
  sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# ---------------------------------------------------------------- binaries --

find_bin_dir() {
  local d="${KUBE_FENCER_BIN_DIR:-}"
  if [[ -n "$d" ]]; then
    local b
    for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok; do
      [[ -x "$d/$b" ]] || die "KUBE_FENCER_BIN_DIR=$d has no $b"
    done
    printf '%s\n' "$d"
    return
  fi
  "$HARNESS_DIR/build.sh" | tail -n1
}

# ------------------------------------------------------------------- state --

load_state() {
  DIR="$(cd "$1" 2>/dev/null && pwd)" || die "no cluster directory $1"
  [[ -f "$DIR/cluster.env" ]] || die "$DIR is not a cluster directory (no cluster.env)"
  BOOT_IDS=0 # absent from the cluster.env of clusters started without --boot-ids
  # shellcheck source=/dev/null
  source "$DIR/cluster.env"
  export KUBECONFIG="$DIR/kubeconfig"
  export PATH="$BIN_DIR:$PATH"
}

kc() { "$BIN_DIR/kubectl" --kubeconfig "$DIR/kubeconfig" "$@"; }

# free_ports N: N distinct TCP ports on 127.0.0.1 that nothing listens on,
# picked at random below the kernel's ephemeral range (so outgoing
# connections do not hold them).
free_ports() {
  local want="$1" ports=() p tries=0
  while ((${#ports[@]} < want)); do
    ((tries++ < 1000)) || die "no free ports found"
    p=$((20000 + RANDOM % 12000))
    [[ " ${ports[*]} " == *" $p "* ]] && continue
    # A successful connect means something listens there.
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      continue
    fi
    ports+=("$p")
  done
  printf '%s\n' "${ports[*]}"
}

# start_proc NAME CMD...: run CMD in its own session/process group, detached
# from our stdio, logging to DIR/logs/NAME.log; record its pid (= pgid).
start_proc() {
  local name="$1"
  shift
  mkdir -p "$DIR/logs" "$DIR/pids"
  {
    printf '### %s started %s\n### %s\n' "$name" "$(date -Is)" "$*"
  } >>"$DIR/logs/$name.log"
  setsid "$@" </dev/null >>"$DIR/logs/$name.log" 2>&1 &
  printf '%s\n' "$!" >"$DIR/pids/$name.pid"
}

# pid_running PID: the process exists and is not a zombie. A killed
# process whose parent is gone stays a zombie until PID 1 reaps it, which
# some container runtimes do only every second or so: counted as running,
# it made node-stop wait up to 10 s after a SIGKILL.
pid_running() {
  local state
  kill -0 "$1" 2>/dev/null || return 1
  state="$(sed -n 's/^State:[[:space:]]*\(.\).*/\1/p' "/proc/$1/status" 2>/dev/null)"
  [[ "$state" != Z ]]
}

proc_alive() {
  local pidfile="$DIR/pids/$1.pid"
  [[ -f "$pidfile" ]] && pid_running "$(cat "$pidfile")"
}

# stop_proc NAME [SIGNAL]: signal the process group; with TERM, escalate to
# KILL after 10 s.
stop_proc() {
  local name="$1" sig="${2:-TERM}" pidfile="$DIR/pids/$1.pid" pid i
  [[ -f "$pidfile" ]] || return 0
  pid="$(cat "$pidfile")"
  if pid_running "$pid"; then
    kill "-$sig" -- "-$pid" 2>/dev/null || kill "-$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
      pid_running "$pid" || break
      sleep 0.1
    done
    if pid_running "$pid"; then
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  # Reap it if it is our child; ignore otherwise.
  wait "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

show_failure() {
  local name="$1" why="$2"
  log "FAILED: $name: $why"
  if [[ -f "$DIR/logs/$name.log" ]]; then
    log "last lines of $DIR/logs/$name.log:"
    tail -n 40 "$DIR/logs/$name.log" | sed 's/^/    /' >&2
  fi
}

# wait_for NAME TIMEOUT CHECK...: poll CHECK until it succeeds; fail early if
# the process NAME died.
wait_for() {
  local name="$1" timeout="$2"
  shift 2
  local deadline=$((SECONDS + timeout))
  while ((SECONDS < deadline)); do
    if "$@" >/dev/null 2>&1; then
      return 0
    fi
    if [[ -f "$DIR/pids/$name.pid" ]] && ! proc_alive "$name"; then
      show_failure "$name" "process exited"
      return 1
    fi
    sleep 0.5
  done
  show_failure "$name" "not ready after ${timeout}s (check: $*)"
  return 1
}

https_ok() { # https_ok URL: GET with the admin client cert, expect "ok"
  local out
  out="$(curl -sS --max-time 3 --cacert "$DIR/pki/ca.crt" \
    --cert "$DIR/pki/admin.crt" --key "$DIR/pki/admin.key" "$1")" || return 1
  [[ "$out" == "ok" ]]
}

# --------------------------------------------------------------------- pki --

# The private keys come from a pool in the cache, made once (RSA 2048, one
# per NAME) and copied into each cluster's pki; every cluster still has a CA
# and certificates of its own. Making the eight keys is CPU-bound: 2 s of
# CPU, 11 s on a machine busy running tests, for each of the twenty-odd
# clusters of ./test.sh. They are throwaway keys of loopback test clusters.
KEY_POOL="$CACHE/cluster-keys-rsa2048"
pool_key() { # pool_key NAME DEST
  local key="$KEY_POOL/$1.key"
  if [[ ! -f "$key" ]]; then
    cache_lock cluster-keys
    if [[ ! -f "$key" ]]; then
      mkdir -p "$KEY_POOL"
      chmod 700 "$KEY_POOL"
      openssl genrsa -out "$key.tmp" 2048 2>/dev/null
      mv "$key.tmp" "$key"
    fi
    cache_unlock
  fi
  cp "$key" "$2"
}

gen_cert() { # gen_cert NAME CN ORG [SAN]
  local name="$1" cn="$2" org="$3" san="${4:-}" pki="$DIR/pki"
  local subj="/CN=$cn"
  [[ -n "$org" ]] && subj="/O=$org$subj"
  pool_key "$name" "$pki/$name.key"
  openssl req -new -key "$pki/$name.key" -subj "$subj" -out "$pki/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [[ -n "$san" ]]; then
      echo "extendedKeyUsage=serverAuth,clientAuth"
      echo "subjectAltName=$san"
    else
      echo "extendedKeyUsage=clientAuth"
    fi
  } >"$pki/$name.ext"
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
    -CAcreateserial -days 30 -sha256 -extfile "$pki/$name.ext" -out "$pki/$name.crt" 2>/dev/null
  rm -f "$pki/$name.csr" "$pki/$name.ext"
}

gen_pki() {
  local pki="$DIR/pki"
  mkdir -p "$pki"
  pool_key ca "$pki/ca.key"
  openssl req -x509 -new -key "$pki/ca.key" -subj "/CN=kube-fencer-test-ca" \
    -days 30 -sha256 -out "$pki/ca.crt" 2>/dev/null
  local extra="" ip
  for ip in ${API_SANS//,/ }; do extra+=",IP:$ip"; done
  gen_cert apiserver kube-apiserver "" \
    "IP:127.0.0.1,IP:$SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local$extra"
  gen_cert admin kubernetes-admin system:masters
  gen_cert controller-manager system:kube-controller-manager ""
  gen_cert scheduler system:kube-scheduler ""
  gen_cert loopback-serving localhost "" "IP:127.0.0.1,DNS:localhost"
  # The API server's client certificate towards kubelets (logs, exec).
  gen_cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
  pool_key sa "$pki/sa.key"
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  chmod 600 "$pki"/*.key
}

write_kubeconfig() { # write_kubeconfig FILE CERTNAME USER
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kube-fencer-test
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority: $DIR/pki/ca.crt
users:
- name: $3
  user:
    client-certificate: $DIR/pki/$2.crt
    client-key: $DIR/pki/$2.key
contexts:
- name: $3@kube-fencer-test
  context:
    cluster: kube-fencer-test
    user: $3
current-context: $3@kube-fencer-test
EOF
}

# ----------------------------------------------------------------- control --

start_etcd() {
  start_proc etcd "$BIN_DIR/etcd" \
    --name kube-fencer-test \
    --data-dir "$DIR/etcd-data" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "kube-fencer-test=http://127.0.0.1:$ETCD_PEER_PORT" \
    --listen-metrics-urls "" \
    --unsafe-no-fsync \
    --quota-backend-bytes 2147483648 \
    --log-level warn
}

etcd_healthy() {
  local out
  out="$(curl -sS --max-time 3 "http://127.0.0.1:$ETCD_PORT/health")" || return 1
  [[ "$out" == *'"health":"true"'* ]]
}

start_apiserver() {
  local pki="$DIR/pki" advertise=(--advertise-address 127.0.0.1 --endpoint-reconciler-type none)
  # A loopback address cannot be a Service endpoint: without a routable
  # advertise address the kubernetes Service has none.
  [[ -n "$ADVERTISE_ADDRESS" ]] &&
    advertise=(--advertise-address "$ADVERTISE_ADDRESS" --endpoint-reconciler-type lease)
  start_proc kube-apiserver "$BIN_DIR/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address "$API_BIND" \
    "${advertise[@]}" \
    --secure-port "$API_PORT" \
    --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types InternalIP \
    --authorization-mode Node,RBAC \
    --client-ca-file "$pki/ca.crt" \
    --tls-cert-file "$pki/apiserver.crt" \
    --tls-private-key-file "$pki/apiserver.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$pki/sa.pub" \
    --service-account-signing-key-file "$pki/sa.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --allow-privileged=true \
    --enable-priority-and-fairness=false \
    --requestheader-client-ca-file "$pki/ca.crt" \
    --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User \
    --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --profiling=false \
    --cert-dir "$DIR/pki/apiserver-generated" \
    --v 1
}

start_controller_manager() {
  local pki="$DIR/pki"
  start_proc kube-controller-manager "$BIN_DIR/kube-controller-manager" \
    --kubeconfig "$DIR/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$DIR/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$DIR/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 \
    --secure-port "$KCM_PORT" \
    --tls-cert-file "$pki/loopback-serving.crt" \
    --tls-private-key-file "$pki/loopback-serving.key" \
    --leader-elect=false \
    --controllers '*' \
    --root-ca-file "$pki/ca.crt" \
    --cluster-signing-cert-file "$pki/ca.crt" \
    --cluster-signing-key-file "$pki/ca.key" \
    --service-account-private-key-file "$pki/sa.key" \
    --use-service-account-credentials=true \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --node-monitor-grace-period "$NODE_MONITOR_GRACE_PERIOD" \
    --node-monitor-period 2s \
    --profiling=false \
    --v 1
}

start_scheduler() {
  local pki="$DIR/pki"
  start_proc kube-scheduler "$BIN_DIR/kube-scheduler" \
    --kubeconfig "$DIR/scheduler.kubeconfig" \
    --authentication-kubeconfig "$DIR/scheduler.kubeconfig" \
    --authorization-kubeconfig "$DIR/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 \
    --secure-port "$SCHED_PORT" \
    --tls-cert-file "$pki/loopback-serving.crt" \
    --tls-private-key-file "$pki/loopback-serving.key" \
    --leader-elect=false \
    --profiling=false \
    --v 1
}

default_sa_exists() { kc -n default get serviceaccount default; }

install_storage_class() {
  kc apply -f - >/dev/null <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: $STORAGE_CLASS
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: Immediate
reclaimPolicy: Retain
EOF
}

# ------------------------------------------------------------------- nodes --

node_ready() {
  local st
  st="$(kc get node "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" || return 1
  [[ "$st" == "True" ]]
}

# lease_renewed_since NODE EPOCH: the node's Lease was renewed after EPOCH.
lease_renewed_since() {
  local t
  t="$(kc -n kube-node-lease get lease "$1" -o jsonpath='{.spec.renewTime}')" || return 1
  [[ -n "$t" ]] || return 1
  (($(date -d "$t" +%s) >= $2))
}

start_kwok() { # start_kwok NAME
  local name="$1" idx
  idx="$(cat "$DIR/nodes/$name/index")"
  start_proc "kwok-$name" "$BIN_DIR/kwok" \
    --kubeconfig "$DIR/kubeconfig" \
    --manage-single-node "$name" \
    --node-lease-duration-seconds "$NODE_LEASE_SECONDS" \
    --node-ip "127.0.0.1" \
    --cidr "10.$((100 + idx / 256)).$((idx % 256)).1/24"
}

node_add() { # node_add NAME [label=value ...]
  local name="$1"
  shift
  [[ "$name" =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] || die "invalid node name $name"
  [[ -d "$DIR/nodes/$name" ]] && die "node $name already exists"
  mkdir -p "$DIR/nodes/$name"
  local idx
  idx="$(find "$DIR/nodes" -mindepth 1 -maxdepth 1 -type d | wc -l)"
  printf '%s\n' "$idx" >"$DIR/nodes/$name/index"
  local labels="" kv
  for kv in "$@"; do
    [[ "$kv" == *=* ]] || die "label must be key=value: $kv"
    labels+="    \"${kv%%=*}\": \"${kv#*=}\""$'\n'
  done
  local node_info=""
  if ((BOOT_IDS)); then
    new_boot_id "$name"
    # kwok's node-initialize stage keeps a bootID it finds on the Node.
    node_info="  nodeInfo:
    bootID: \"$(cat "$DIR/nodes/$name/boot_id")\""
  fi
  kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $name
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: "$name"
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
$labels
status:
  allocatable:
    cpu: "16"
    memory: 64Gi
    pods: "110"
  capacity:
    cpu: "16"
    memory: 64Gi
    pods: "110"
$node_info
EOF
  start_kwok "$name"
  wait_for "kwok-$name" "$NODE_READY_TIMEOUT" node_ready "$name" || return 1
  log "node $name Ready"
}

# new_boot_id NAME: a fresh boot ID for the node in DIR/nodes/NAME/boot_id
# (written whole, then renamed: an agent reading it never sees half of it).
new_boot_id() {
  local f="$DIR/nodes/$1/boot_id"
  printf '%s\n' "$(cat /proc/sys/kernel/random/uuid)" >"$f.tmp"
  mv -f "$f.tmp" "$f"
}

node_stop() {
  local name="$1"
  [[ -d "$DIR/nodes/$name" ]] || die "no node $name"
  proc_alive "kwok-$name" || { log "node $name is already stopped"; return 0; }
  stop_proc "kwok-$name" KILL
  printf '%s\n' "$(date +%s)" >"$DIR/nodes/$name/stopped-at"
  log "node $name stopped (kwok killed: lease renewals stop)"
}

node_start() {
  local name="$1" since
  [[ -d "$DIR/nodes/$name" ]] || die "no node $name"
  proc_alive "kwok-$name" && { log "node $name is already running"; return 0; }
  if ((BOOT_IDS)); then
    # It reboots: a new boot ID, on the Node before its "kubelet" (kwok)
    # runs again, as a real kubelet reports it in its first status update.
    new_boot_id "$name"
    kc patch node "$name" --subresource=status --type=merge \
      -p "{\"status\":{\"nodeInfo\":{\"bootID\":\"$(cat "$DIR/nodes/$name/boot_id")\"}}}" >/dev/null ||
      die "could not set the boot ID of node $name"
  fi
  since="$(date +%s)"
  start_kwok "$name"
  wait_for "kwok-$name" "$NODE_READY_TIMEOUT" lease_renewed_since "$name" "$since" || return 1
  wait_for "kwok-$name" "$NODE_READY_TIMEOUT" node_ready "$name" || return 1
  rm -f "$DIR/nodes/$name/stopped-at"
  log "node $name started (lease renewed, Ready)"
}

# ----------------------------------------------------------------- volumes --

pv_create() { # pv_create NAME SIZE [NAMESPACE/CLAIM]
  local name="$1" size="$2" claim="${3:-}" claimref=""
  mkdir -p "$DIR/volumes/$name"
  if [[ -n "$claim" ]]; then
    [[ "$claim" == */* ]] || die "claim must be NAMESPACE/NAME: $claim"
    claimref="  claimRef:
    namespace: ${claim%%/*}
    name: ${claim#*/}"
  fi
  kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolume
metadata:
  name: $name
  labels:
    kube-fencer.io/test-volume: "true"
spec:
  capacity:
    storage: $size
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: $STORAGE_CLASS
  hostPath:
    path: $DIR/volumes/$name
    type: DirectoryOrCreate
$claimref
EOF
  if [[ -n "$claim" ]]; then
    # The claim too, bound to this volume from the start: the StatefulSet
    # adopts it by name, and its pod never meets the scheduler as "pod has
    # unbound immediate PersistentVolumeClaims" — from which the scheduler
    # may take up to five minutes to retry it when the binding's event
    # races the scheduling attempt (seen once in a rehearsal: db-2 Pending
    # for 90 s with its volume reserved and free).
    kc create namespace "${claim%%/*}" >/dev/null 2>&1 || true
    kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: ${claim#*/}
  namespace: ${claim%%/*}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: $STORAGE_CLASS
  volumeName: $name
  resources:
    requests:
      storage: $size
EOF
  fi
  log "pv $name ($size${claim:+, reserved for $claim}) created"
}

# -------------------------------------------------------------------- down --

do_down() {
  local f name pid pids=() i
  # Real nodes (harness/realnode.sh) first: their kubelets, containers,
  # network namespaces, bridge and cgroups.
  if compgen -G "$DIR/nodes/*/realnode" >/dev/null; then
    "$HARNESS_DIR/realnode.sh" down "$DIR" || log "error: removing the real nodes failed"
  fi
  if [[ -d "$DIR/pids" ]]; then
    # Nodes first (a hard power-off), then the control plane, all at once:
    # nothing here needs a graceful shutdown.
    for f in "$DIR"/pids/kwok-*.pid; do
      [[ -e "$f" ]] || continue
      stop_proc "$(basename "$f" .pid)" KILL
    done
    for name in kube-scheduler kube-controller-manager kube-apiserver etcd; do
      f="$DIR/pids/$name.pid"
      [[ -f "$f" ]] || continue
      pid="$(cat "$f")"
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    done
    for ((i = 0; i < 50; i++)); do
      local alive=0
      for pid in "${pids[@]}"; do
        kill -0 "$pid" 2>/dev/null && alive=1
      done
      ((alive)) || break
      sleep 0.1
    done
    for pid in "${pids[@]}"; do
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    done
    rm -f "$DIR"/pids/*.pid
  fi
  # Anything still running from this directory is ours and an orphan.
  local -a left
  mapfile -t left < <(pgrep -f -- "$DIR/" || true)
  if ((${#left[@]})); then
    log "killing leftover processes: ${left[*]}"
    kill -KILL "${left[@]}" 2>/dev/null || true
    sleep 0.5
    mapfile -t left < <(pgrep -f -- "$DIR/" || true)
    ((${#left[@]} == 0)) || { log "error: processes still running: ${left[*]}"; return 1; }
  fi
  log "cluster in $DIR is down (logs kept in $DIR/logs)"
}

# ---------------------------------------------------------------------- up --

do_up() {
  local nodes=3
  NODE_LEASE_SECONDS=40
  NODE_MONITOR_GRACE_PERIOD=40s
  API_BIND=127.0.0.1
  API_SANS=""
  ADVERTISE_ADDRESS=""
  BOOT_IDS=0
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --api-bind) API_BIND="$2"; shift 2 ;;
      --api-san) API_SANS+="${API_SANS:+,}$2"; shift 2 ;;
      --advertise-address) ADVERTISE_ADDRESS="$2"; API_SANS+="${API_SANS:+,}$2"; shift 2 ;;
      --nodes) nodes="$2"; shift 2 ;;
      --boot-ids) BOOT_IDS=1; shift ;;
      --node-lease-seconds) NODE_LEASE_SECONDS="$2"; shift 2 ;;
      --node-monitor-grace-period) NODE_MONITOR_GRACE_PERIOD="$2"; shift 2 ;;
      *) die "unknown option $1" ;;
    esac
  done
  [[ "$nodes" =~ ^[0-9]+$ ]] || die "--nodes must be a number"
  [[ "$NODE_LEASE_SECONDS" =~ ^[0-9]+$ ]] || die "--node-lease-seconds must be a number"
  [[ -f "$DIR/cluster.env" ]] && die "$DIR already holds a cluster; run down first or use another directory"

  local start=$SECONDS
  BIN_DIR="$(find_bin_dir)"
  read -r ETCD_PORT ETCD_PEER_PORT API_PORT KCM_PORT SCHED_PORT <<<"$(free_ports 5)"
  cat >"$DIR/cluster.env" <<EOF
BIN_DIR=$BIN_DIR
ETCD_PORT=$ETCD_PORT
ETCD_PEER_PORT=$ETCD_PEER_PORT
API_PORT=$API_PORT
KCM_PORT=$KCM_PORT
SCHED_PORT=$SCHED_PORT
NODE_LEASE_SECONDS=$NODE_LEASE_SECONDS
NODE_MONITOR_GRACE_PERIOD=$NODE_MONITOR_GRACE_PERIOD
BOOT_IDS=$BOOT_IDS
API_BIND=$API_BIND
ADVERTISE_ADDRESS=$ADVERTISE_ADDRESS
EOF
  export PATH="$BIN_DIR:$PATH"
  export KUBECONFIG="$DIR/kubeconfig"

  # From here on, any failure tears everything down again.
  trap 'rc=$?; if ((rc != 0)); then log "start-up failed; tearing down"; do_down || true; fi' EXIT
  trap 'exit 130' INT TERM

  log "generating certificates in $DIR/pki"
  gen_pki
  write_kubeconfig "$DIR/kubeconfig" admin kubernetes-admin
  write_kubeconfig "$DIR/controller-manager.kubeconfig" controller-manager system:kube-controller-manager
  write_kubeconfig "$DIR/scheduler.kubeconfig" scheduler system:kube-scheduler
  cat >"$DIR/env" <<EOF
export KUBECONFIG=$DIR/kubeconfig
export PATH=$BIN_DIR:\$PATH
EOF

  local deadline=$((SECONDS + STARTUP_TIMEOUT)) left
  remaining() { left=$((deadline - SECONDS)); ((left > 0)) || left=1; }

  log "starting etcd on 127.0.0.1:$ETCD_PORT"
  start_etcd
  remaining
  wait_for etcd "$left" etcd_healthy

  log "starting kube-apiserver on https://127.0.0.1:$API_PORT"
  start_apiserver
  remaining
  wait_for kube-apiserver "$left" https_ok "https://127.0.0.1:$API_PORT/readyz"

  log "starting kube-controller-manager and kube-scheduler"
  start_controller_manager
  start_scheduler
  remaining
  wait_for kube-controller-manager "$left" https_ok "https://127.0.0.1:$KCM_PORT/healthz"
  remaining
  wait_for kube-scheduler "$left" https_ok "https://127.0.0.1:$SCHED_PORT/healthz"
  remaining
  wait_for kube-controller-manager "$left" default_sa_exists
  install_storage_class

  local i
  for ((i = 1; i <= nodes; i++)); do
    node_add "node-$i"
  done

  trap - EXIT INT TERM
  log "cluster up in $((SECONDS - start))s: $nodes node(s), lease ${NODE_LEASE_SECONDS}s, node-monitor-grace-period $NODE_MONITOR_GRACE_PERIOD"
  log "use it with: source $DIR/env"
  printf '%s\n' "$DIR"
}

do_status() {
  local name f
  for f in "$DIR"/pids/*.pid; do
    [[ -e "$f" ]] || continue
    name="$(basename "$f" .pid)"
    if proc_alive "$name"; then echo "$name: running (pid $(cat "$f"))"; else echo "$name: dead"; fi
  done
  kc get nodes -o wide 2>/dev/null || true
}

# -------------------------------------------------------------------- main --

cmd="${1:-}"
[[ -n "$cmd" ]] || usage
shift
case "$cmd" in
  up)
    if [[ $# -gt 0 && "$1" != --* ]]; then
      mkdir -p "$1"
      DIR="$(cd "$1" && pwd)"
      shift
    else
      DIR="$(mktemp -d -t kube-fencer-cluster.XXXXXX)"
    fi
    do_up "$@"
    ;;
  down)
    [[ $# -eq 1 ]] || usage
    DIR="$(cd "$1" 2>/dev/null && pwd)" || die "no cluster directory $1"
    do_down
    ;;
  node-add)
    [[ $# -ge 2 ]] || usage
    load_state "$1"
    shift
    node_add "$@"
    ;;
  node-stop)
    [[ $# -eq 2 ]] || usage
    load_state "$1"
    node_stop "$2"
    ;;
  node-start)
    [[ $# -eq 2 ]] || usage
    load_state "$1"
    node_start "$2"
    ;;
  pv-create)
    [[ $# -ge 3 && $# -le 4 ]] || usage
    load_state "$1"
    shift
    pv_create "$@"
    ;;
  status)
    [[ $# -eq 1 ]] || usage
    load_state "$1"
    do_status
    ;;
  *) usage ;;
esac
