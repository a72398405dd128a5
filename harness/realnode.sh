#!/usr/bin/env bash
# Real Kubernetes nodes (kubelet + containerd + runc + CNI + kube-proxy) on
# this one machine, beside the KWOK nodes of a cluster made by cluster.sh.
#
#   realnode.sh add DIR NAME [--images DIR_OF_ARCHIVES] [--watchdog FILE]
#   realnode.sh poweroff DIR NAME      # a power loss: freeze, SIGKILL, all at once
#   realnode.sh boot DIR NAME          # power back on: new boot ID, fresh /run
#   realnode.sh exec DIR NAME CMD...   # run CMD on the node (its netns + mount ns)
#   realnode.sh rm DIR NAME
#   realnode.sh down DIR               # remove every real node of DIR, and the bridge
#   realnode.sh status DIR
#
# The cluster must have been started so that the API server is reachable from
# the nodes' network, e.g.
#   cluster.sh up DIR --nodes 0 --api-bind 0.0.0.0 --advertise-address 10.232.0.1
# (--advertise-address also puts the address in the serving certificate and
# makes it the endpoint of the kubernetes Service, 10.96.0.1:443).
#
# Each node has: a network namespace with a veth (eth0, 10.232.N.(10+i)) on
# the host bridge kfnbrN (10.232.N.1/24, N = KUBE_FENCER_REALNODE_NET,
# default 0: use distinct values for clusters that run at the same time); a
# private mount namespace in which per-node directories under DIR/nodes/NAME/
# are bind-mounted over /run, /var/lib/kubelet, /etc/cni/net.d, /var/lib/cni,
# /var/log/pods, /var/log/containers, FILE of --watchdog (e.g. a file of a
# harness/fakewdog mount made before) over /dev/watchdog, and
# DIR/nodes/NAME/boot_id over
# /proc/sys/kernel/random/boot_id; one cgroup kfnode-CID-NAME in every v1
# hierarchy holding every process of the node (containers too, through the
# kubelet's cgroupRoot). Pods get 10.244.i.0/24 (the Node's spec.podCIDR).
# Images cannot be pulled: archives in --images DIR (or KUBE_FENCER_IMAGES) are
# imported with `ctr -n k8s.io images import` at every boot.
# Logs: DIR/nodes/NAME/{containerd,kubelet,kube-proxy,init}.log.
# Network cuts are the tests' (crates/testkit/src/netns.rs, the one
# implementation): on the node's eth0 in its netns, from outside the node.
set -euo pipefail

HARNESS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SELF="$HARNESS_DIR/realnode.sh"
READY_TIMEOUT="${KUBE_FENCER_REALNODE_READY_TIMEOUT:-90}"
CNI_BIN_DIR="${KUBE_FENCER_CNI_BIN_DIR:-/usr/lib/cni}"
POD_SUPERNET="10.244.0.0/16"
SANDBOX_IMAGE="registry.k8s.io/pause:3.10"
NODE_LABEL="kube-fencer.test/real-node=true"

LOG_TAG=realnode
# shellcheck source=harness/lib.sh
source "$HARNESS_DIR/lib.sh"

usage() {
  sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# ------------------------------------------------------------------- state --

load_cluster() {
  DIR="$(cd "$1" 2>/dev/null && pwd)" || die "no cluster directory $1"
  [[ -f "$DIR/cluster.env" ]] || die "$DIR is not a cluster directory (no cluster.env)"
  # shellcheck source=/dev/null
  source "$DIR/cluster.env"
  NODE_LEASE_SECONDS="${NODE_LEASE_SECONDS:-40}"
  if [[ -f "$DIR/realnode.env" ]]; then
    # shellcheck source=/dev/null
    source "$DIR/realnode.env"
  else
    NET="${KUBE_FENCER_REALNODE_NET:-0}"
    if ! [[ "$NET" =~ ^[0-9]+$ ]] || ((NET >= 20)); then die "KUBE_FENCER_REALNODE_NET must be 0..19"; fi
    CID="$(head -c2 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  fi
  BRIDGE="kfnbr$NET"
  PREFIX="10.232.$NET"
  GATEWAY="$PREFIX.1"
}

save_realnode_env() {
  [[ -f "$DIR/realnode.env" ]] && return 0
  printf 'NET=%s\nCID=%s\n' "$NET" "$CID" >"$DIR/realnode.env.tmp"
  mv -f "$DIR/realnode.env.tmp" "$DIR/realnode.env"
}

kc() { "$BIN_DIR/kubectl" --kubeconfig "$DIR/kubeconfig" "$@"; }

# Per-node names, from NAME (and its index, once allocated).
node_vars() {
  NAME="$1"
  ND="$DIR/nodes/$NAME"
  NS="kfn-$CID-$NAME"
  CG="kfnode-$CID-$NAME"
  if [[ -f "$ND/real-index" ]]; then
    IDX="$(cat "$ND/real-index")"
    NODE_IP="$PREFIX.$((10 + IDX))"
    POD_CIDR="10.244.$IDX.0/24"
    VETH="kfv$CID$IDX"
  fi
}

is_real_node() { [[ -f "$DIR/nodes/$1/realnode" ]]; }

real_nodes() {
  local f
  for f in "$DIR"/nodes/*/realnode; do
    [[ -e "$f" ]] || continue
    basename "$(dirname "$f")"
  done
}

# ----------------------------------------------------------------- cgroups --

# Every cgroup hierarchy mounted under /sys/fs/cgroup (v1 ones, and the
# unified one of a hybrid set-up).
cg_mounts() {
  findmnt -rn -o TARGET,FSTYPE | awk '($2 == "cgroup" || $2 == "cgroup2") && $1 ~ "^/sys/fs/cgroup" {print $1}'
}

cg_check() {
  [[ -d /sys/fs/cgroup/freezer ]] || die "no cgroup v1 freezer hierarchy at /sys/fs/cgroup/freezer (real nodes need cgroup v1)"
}

cg_create() {
  local m
  for m in $(cg_mounts); do
    mkdir -p "$m/$CG"
    if [[ -f "$m/$CG/cpuset.cpus" ]]; then
      [[ -n "$(cat "$m/$CG/cpuset.cpus")" ]] || cat "$m/cpuset.cpus" >"$m/$CG/cpuset.cpus"
      [[ -n "$(cat "$m/$CG/cpuset.mems")" ]] || cat "$m/cpuset.mems" >"$m/$CG/cpuset.mems"
    fi
  done
}

# Pids of every task in the node's cgroup subtree, in any hierarchy.
cg_pids() {
  local m
  for m in $(cg_mounts); do
    [[ -d "$m/$CG" ]] || continue
    find "$m/$CG" -name cgroup.procs -exec cat {} + 2>/dev/null
  done | sort -un
}

cg_remove() {
  local m i
  for m in $(cg_mounts); do
    [[ -d "$m/$CG" ]] || continue
    for ((i = 0; i < 50; i++)); do
      find "$m/$CG" -depth -type d -exec rmdir {} + 2>/dev/null || true
      [[ -d "$m/$CG" ]] || break
      sleep 0.1
    done
    [[ -d "$m/$CG" ]] && log "WARNING: could not remove cgroup $m/$CG"
  done
  return 0
}

node_running() { [[ -n "$(cg_pids)" ]]; }

# ---------------------------------------------------------------- network --

bridge_up() {
  if [[ -d "/sys/class/net/$BRIDGE" ]]; then
    local owner
    owner="$(cat "/sys/class/net/$BRIDGE/ifalias" 2>/dev/null || true)"
    [[ "$owner" == "kube-fencer:$DIR" ]] ||
      die "bridge $BRIDGE belongs to another cluster ($owner); set KUBE_FENCER_REALNODE_NET to another number"
    return 0
  fi
  ip link add "$BRIDGE" type bridge
  ip link set "$BRIDGE" alias "kube-fencer:$DIR"
  ip addr add "$GATEWAY/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  log "bridge $BRIDGE $GATEWAY/24 up"
}

bridge_down() {
  [[ -d "/sys/class/net/$BRIDGE" ]] || return 0
  [[ "$(cat "/sys/class/net/$BRIDGE/ifalias" 2>/dev/null)" == "kube-fencer:$DIR" ]] || return 0
  ip link del "$BRIDGE"
  log "bridge $BRIDGE removed"
}

netns_exec() { ip netns exec "$NS" "$@"; }

# Run CMD in the node's namespaces: its mount namespace too while it runs
# (so that iptables shares kube-proxy's lock), its netns only otherwise.
node_exec() {
  local pid
  pid="$(cat "$ND/init.pid" 2>/dev/null || true)"
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    nsenter -t "$pid" -m -n -- "$@"
  else
    nsenter --net="/run/netns/$NS" -- "$@"
  fi
}

netns_create() {
  ip netns add "$NS"
  ip link add "$VETH" type veth peer name "${VETH}n"
  ip link set "${VETH}n" netns "$NS"
  ip link set "$VETH" master "$BRIDGE" up
  netns_exec ip link set "${VETH}n" name eth0
  netns_exec ip link set lo up
  netns_exec ip addr add "$NODE_IP/24" dev eth0
  netns_exec ip link set eth0 up
  netns_exec sysctl -qw net.ipv4.ip_forward=1
  netns_exec sysctl -qw net.ipv4.conf.all.route_localnet=1
  netns_exec sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || true
  netns_routes
}

# The default route via the host, and a route to every other real node's
# pod CIDR via that node; idempotent.
netns_routes() {
  netns_exec ip route replace default via "$GATEWAY" dev eth0
  local other oidx
  for other in $(real_nodes); do
    [[ "$other" == "$NAME" ]] && continue
    [[ -f "$DIR/nodes/$other/real-index" ]] || continue
    oidx="$(cat "$DIR/nodes/$other/real-index")"
    netns_exec ip route replace "10.244.$oidx.0/24" via "$PREFIX.$((10 + oidx))" dev eth0
  done
}

# Tell the other nodes and the host (a monitoring system scrapes pod IPs)
# how to reach this node's pods, or forget it.
peer_routes() { # peer_routes add|del
  local other ns
  if [[ "$1" == add ]]; then
    ip route replace "$POD_CIDR" via "$NODE_IP" dev "$BRIDGE" 2>/dev/null || true
  else
    ip route del "$POD_CIDR" 2>/dev/null || true
  fi
  for other in $(real_nodes); do
    [[ "$other" == "$NAME" ]] && continue
    ns="kfn-$CID-$other"
    [[ -e "/run/netns/$ns" ]] || continue
    if [[ "$1" == add ]]; then
      ip netns exec "$ns" ip route replace "$POD_CIDR" via "$NODE_IP" dev eth0 2>/dev/null || true
    else
      ip netns exec "$ns" ip route del "$POD_CIDR" 2>/dev/null || true
    fi
  done
}

# A reboot loses the firewall and conntrack state and the pod bridge.
netns_reset() {
  local t
  for t in raw mangle nat filter; do
    netns_exec iptables-legacy -t "$t" -F
    netns_exec iptables-legacy -t "$t" -X
    netns_exec ip6tables-legacy -t "$t" -F 2>/dev/null || true
    netns_exec ip6tables-legacy -t "$t" -X 2>/dev/null || true
  done
  netns_exec conntrack -F >/dev/null 2>&1 || true
  netns_exec ip link del cni0 2>/dev/null || true
  # Pods reach what is outside the pod network (node IPs, the API server)
  # from the node's address; pod-to-pod traffic keeps its source.
  netns_exec iptables-legacy -t nat -A POSTROUTING -s "$POD_CIDR" ! -d "$POD_SUPERNET" -o eth0 -j MASQUERADE
}

# -------------------------------------------------------------------- pki --

gen_client_cert() { # gen_client_cert OUTBASE CN ORG
  local out="$1" cn="$2" org="$3" pki="$DIR/pki" subj
  subj="/CN=$cn"
  [[ -n "$org" ]] && subj="/O=$org$subj"
  openssl genrsa -out "$out.key" 2048 2>/dev/null
  openssl req -new -key "$out.key" -subj "$subj" -out "$out.csr" 2>/dev/null
  printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=clientAuth" >"$out.ext"
  openssl x509 -req -in "$out.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 30 -sha256 -extfile "$out.ext" -out "$out.crt" 2>/dev/null
  rm -f "$out.csr" "$out.ext"
  chmod 600 "$out.key"
}

write_kubeconfig() { # write_kubeconfig FILE CERTBASE USER
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kube-fencer-test
  cluster:
    server: https://$GATEWAY:$API_PORT
    certificate-authority: $DIR/pki/ca.crt
users:
- name: $3
  user:
    client-certificate: $2.crt
    client-key: $2.key
contexts:
- name: $3@kube-fencer-test
  context:
    cluster: kube-fencer-test
    user: $3
current-context: $3@kube-fencer-test
EOF
}

check_api_reachable() {
  openssl x509 -in "$DIR/pki/apiserver.crt" -noout -text | grep -q "IP Address:$GATEWAY" ||
    die "the API server's certificate does not name $GATEWAY: start the cluster with --api-bind 0.0.0.0 --advertise-address $GATEWAY"
}

# ----------------------------------------------------------------- configs --

snapshotter() {
  if grep -qw overlay /proc/filesystems; then echo overlayfs; else echo native; fi
}

write_configs() {
  local pki="$ND/pki"
  mkdir -p "$pki" "$ND/bin" "$ND/run" "$ND/kubelet" "$ND/cni-conf" "$ND/var-lib-cni" \
    "$ND/pod-logs" "$ND/container-logs" "$ND/containerd"
  gen_client_cert "$pki/kubelet" "system:node:$NAME" system:nodes
  [[ -f "$DIR/pki/kube-proxy.crt" ]] || gen_client_cert "$DIR/pki/kube-proxy" system:kube-proxy ""
  write_kubeconfig "$ND/kubelet.kubeconfig" "$pki/kubelet" "system:node:$NAME"
  write_kubeconfig "$ND/kube-proxy.kubeconfig" "$DIR/pki/kube-proxy" system:kube-proxy

  # kube-proxy and the CNI plugins call "iptables": the legacy one here.
  local b
  for b in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
    ln -sfn "/usr/sbin/${b/iptables/iptables-legacy}" "$ND/bin/$b"
  done

  # Every container sees the node's boot ID: the default runtime spec with a
  # hook that binds it over the container's /proc/sys/kernel/random/boot_id
  # (runc refuses a bind mount into /proc in the spec's mounts).
  ctr oci spec | jq --arg hook "$HARNESS_DIR/realnode/boot-id-hook.sh" --arg src "$ND/boot_id" \
    '.hooks.createContainer = [{"path": $hook, "args": ["boot-id-hook.sh", $src], "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "timeout": 10}]' \
    >"$ND/base-runtime-spec.json"

  cat >"$ND/containerd.toml" <<EOF
version = 2
root = "$ND/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "/run/containerd/containerd.sock"

[ttrpc]
  address = "/run/containerd/containerd.sock.ttrpc"

[debug]
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = "$ND/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$SANDBOX_IMAGE"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  # Without CAP_SYS_RESOURCE (as here) no task may lower its oom_score_adj:
  # keep the kubelet's negative scores (sandboxes, node-critical pods) at
  # containerd's own.
  restrict_oom_score_adj = true
  max_container_log_line_size = 16384
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "$(snapshotter)"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      base_runtime_spec = "$ND/base-runtime-spec.json"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN_DIR"
    conf_dir = "/etc/cni/net.d"
    max_conf_num = 1
EOF

  cat >"$ND/cni-conf/10-kfn.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "kfn",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "/run/cni/networks",
        "ranges": [[{"subnet": "$POD_CIDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF

  cat >"$ND/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: false
  x509:
    clientCAFile: $DIR/pki/ca.crt
authorization:
  mode: AlwaysAllow
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
cgroupDriver: cgroupfs
cgroupRoot: /$CG
cgroupsPerQOS: true
failCgroupV1: false
failSwapOn: false
podCIDR: $POD_CIDR
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
nodeLeaseDurationSeconds: $NODE_LEASE_SECONDS
nodeStatusUpdateFrequency: 10s
nodeStatusReportFrequency: 1m
maxPods: 110
serializeImagePulls: false
# Imported images cannot be pulled again: never collect them, and do not
# evict on a disk that other tests fill.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  imagefs.available: 1%
  nodefs.inodesFree: 1%
staticPodPath: ""
shutdownGracePeriod: 0s
EOF

  cat >"$ND/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $ND/kube-proxy.kubeconfig
mode: iptables
hostnameOverride: $NAME
bindAddress: $NODE_IP
clusterCIDR: $POD_SUPERNET
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# nf_conntrack_max is not per network namespace: leave it alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
iptables:
  syncPeriod: 30s
  minSyncPeriod: 1s
EOF
}

# -------------------------------------------------------- the node's init --

write_pid() { # write_pid COMPONENT PID: whole, so that a reader never sees it empty
  printf '%s\n' "$2" >"$ND/$1.pid.tmp"
  mv -f "$ND/$1.pid.tmp" "$ND/$1.pid"
}

# realnode.sh _init DIR NAME: runs as the node's first process, inside its
# cgroups, network namespace and a new mount namespace (see node_start).
node_init() {
  # Mounts made here (kubelet volumes) propagate within the node only.
  mount --make-rshared /
  bind_dir() { mkdir -p "$2"; mount --bind "$1" "$2"; }
  bind_dir "$ND/run" /run
  mkdir -p /run/kube-fencer /run/containerd /run/netns /run/cni
  bind_dir "$ND/kubelet" /var/lib/kubelet
  bind_dir "$ND/cni-conf" /etc/cni/net.d
  bind_dir "$ND/var-lib-cni" /var/lib/cni
  bind_dir "$ND/pod-logs" /var/log/pods
  bind_dir "$ND/container-logs" /var/log/containers
  mount --bind "$ND/boot_id" /proc/sys/kernel/random/boot_id
  if [[ -f "$ND/watchdog-file" ]]; then
    if [[ ! -e /dev/watchdog ]]; then
      # A mount point without touching the host's /dev: the node gets a /dev
      # of its own holding the host's device nodes.
      mkdir -p "$ND/.hostdev"
      mount --rbind /dev "$ND/.hostdev"
      # Private first: / is shared here, and a peer of /dev would get the
      # tmpfs too, and its lazy unmount would take the tmpfs away again.
      mount --make-rprivate "$ND/.hostdev"
      mount -t tmpfs -o mode=755 kfn-dev /dev
      [[ "$(findmnt -n -o FSTYPE --mountpoint /dev | tail -n1)" == tmpfs ]] ||
        die "node $NAME: no private /dev (the host's devtmpfs must not get a watchdog file)"
      local e n
      for e in "$ND"/.hostdev/* "$ND"/.hostdev/.[!.]*; do
        [[ -e "$e" || -L "$e" ]] || continue
        n="/dev/${e##*/}"
        if [[ -L "$e" ]]; then cp -a "$e" "$n"
        elif [[ -d "$e" ]]; then mkdir -p "$n"; mount --rbind "$e" "$n"
        else touch "$n"; mount --bind "$e" "$n"
        fi
      done
      umount -l "$ND/.hostdev"
      touch /dev/watchdog
    fi
    mount --bind "$(cat "$ND/watchdog-file")" /dev/watchdog
  fi
  export PATH="$ND/bin:$BIN_DIR:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

  write_pid init "$$"
  log "node $NAME: boot $(cat /proc/sys/kernel/random/boot_id), starting containerd"
  containerd --config "$ND/containerd.toml" >>"$ND/containerd.log" 2>&1 &
  write_pid containerd "$!"
  local i
  for ((i = 0; i < 300; i++)); do
    [[ -S /run/containerd/containerd.sock ]] && ctr -a /run/containerd/containerd.sock version >/dev/null 2>&1 && break
    kill -0 "$(cat "$ND/containerd.pid")" 2>/dev/null || { log "containerd exited"; exit 1; }
    sleep 0.1
  done
  local images="" f
  [[ -f "$ND/images-dir" ]] && images="$(cat "$ND/images-dir")"
  if [[ -n "$images" ]]; then
    for f in "$images"/*.tar; do
      [[ -e "$f" ]] || continue
      ctr -a /run/containerd/containerd.sock -n k8s.io images import --snapshotter "$(snapshotter)" "$f" >>"$ND/init.log" 2>&1 ||
        log "WARNING: could not import $f"
    done
  fi
  log "node $NAME: starting kube-proxy and kubelet"
  kube-proxy --config "$ND/kube-proxy.yaml" --v 1 >>"$ND/kube-proxy.log" 2>&1 &
  write_pid kube-proxy "$!"
  kubelet --config "$ND/kubelet.yaml" \
    --kubeconfig "$ND/kubelet.kubeconfig" \
    --root-dir /var/lib/kubelet \
    --cert-dir /var/lib/kubelet/pki \
    --hostname-override "$NAME" \
    --node-ip "$NODE_IP" \
    --node-labels "$NODE_LABEL" \
    --v 1 >>"$ND/kubelet.log" 2>&1 &
  write_pid kubelet "$!"
  # Stay, as the node's first process, until the power goes.
  while :; do
    sleep 3600 &
    wait $! || true
  done
}

# ------------------------------------------------------------ start/stop --

# Print what failed, with the logs' tails, and power the node off again so
# that a failed start leaves nothing running (the node stays, for `rm`).
show_component_failure() { # show_component_failure WHY
  log "FAILED: node $NAME: $1"
  local c
  for c in init containerd kube-proxy kubelet; do
    if [[ -f "$ND/$c.pid" ]] && ! kill -0 "$(cat "$ND/$c.pid")" 2>/dev/null; then
      log "component $c is not running"
    fi
  done
  for c in init containerd kube-proxy kubelet; do
    [[ -f "$ND/$c.log" ]] || continue
    log "last lines of $ND/$c.log:"
    tail -n 25 "$ND/$c.log" | sed 's/^/    /' >&2
  done
  node_poweroff >/dev/null 2>&1 || true
}

node_ready() {
  local st
  st="$(kc get node "$NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" || return 1
  [[ "$st" == "True" ]]
}

lease_renewed_since() { # EPOCH
  local t
  t="$(kc -n kube-node-lease get lease "$NAME" -o jsonpath='{.spec.renewTime}' 2>/dev/null)" || return 1
  [[ -n "$t" ]] || return 1
  (($(date -d "$t" +%s) >= $1))
}

boot_id_reported() {
  local b
  b="$(kc get node "$NAME" -o jsonpath='{.status.nodeInfo.bootID}' 2>/dev/null)" || return 1
  [[ "$b" == "$(cat "$ND/boot_id")" ]]
}

components_alive() {
  local c
  for c in init containerd kube-proxy kubelet; do
    [[ -f "$ND/$c.pid" ]] || continue
    kill -0 "$(cat "$ND/$c.pid")" 2>/dev/null || return 1
  done
}

node_start() {
  node_running && { log "node $NAME is already running"; return 0; }
  local t0=$SECONDS since
  since="$(date +%s)"
  # A new boot: a new boot ID, an empty /run, no firewall or conntrack state.
  printf '%s\n' "$(cat /proc/sys/kernel/random/uuid)" >"$ND/boot_id.tmp"
  mv -f "$ND/boot_id.tmp" "$ND/boot_id"
  rm -rf "$ND/run"
  mkdir -p "$ND/run"
  rm -f "$ND"/{init,containerd,kube-proxy,kubelet}.pid
  netns_reset
  cg_create
  local procs="" m
  for m in $(cg_mounts); do procs+=" $m/$CG/cgroup.procs"; done
  # The launcher joins the node's cgroups, then becomes the node's init in
  # its netns and a new mount namespace; everything it starts inherits both.
  # $1 and $$ are the launcher's own (bash -c), not this shell's.
  # shellcheck disable=SC2016
  setsid bash -c 'for f in $1; do echo $$ >"$f"; done; shift; exec "$@"' kfn-launch "$procs" \
    nsenter --net="/run/netns/$NS" -- unshare --mount --propagation slave -- \
    "$SELF" _init "$DIR" "$NAME" </dev/null >>"$ND/init.log" 2>&1 &
  disown || true
  local deadline=$((SECONDS + READY_TIMEOUT))
  while ! [[ -f "$ND/kubelet.pid" ]]; do
    if ((SECONDS >= deadline)) || { [[ -f "$ND/init.pid" ]] && ! components_alive; } ||
      { ((SECONDS - t0 > 5)) && ! node_running; }; then
      show_component_failure "did not start"
      return 1
    fi
    sleep 0.2
  done
  while ! { lease_renewed_since "$since" && boot_id_reported && node_ready; }; do
    if ((SECONDS >= deadline)); then
      show_component_failure "not Ready with boot ID $(cat "$ND/boot_id") after ${READY_TIMEOUT}s"
      return 1
    fi
    if ! components_alive; then
      show_component_failure "a component exited"
      return 1
    fi
    sleep 0.5
  done
  rm -f "$ND/stopped-at"
  log "node $NAME Ready in $((SECONDS - t0))s (boot ID $(cat "$ND/boot_id"))"
}

# A power loss: every task of the node is frozen, then killed while frozen,
# so none of them runs another instruction; then they all go at once.
node_poweroff() {
  if ! node_running; then
    log "node $NAME is already off"
    cg_remove
    return 0
  fi
  local fz="/sys/fs/cgroup/freezer/$CG" i
  local -a pids
  echo FROZEN >"$fz/freezer.state"
  for ((i = 0; i < 100; i++)); do
    [[ "$(cat "$fz/freezer.state")" == FROZEN ]] && break
    sleep 0.05
  done
  mapfile -t pids < <(cg_pids)
  ((${#pids[@]} == 0)) || kill -KILL "${pids[@]}" 2>/dev/null || true
  echo THAWED >"$fz/freezer.state"
  for ((i = 0; i < 200; i++)); do
    node_running || break
    sleep 0.05
  done
  if node_running; then
    log "error: node $NAME: tasks still alive after SIGKILL: $(cg_pids | tr '\n' ' ')"
    return 1
  fi
  cg_remove
  # Its pids may be reused now.
  rm -f "$ND"/*.pid
  date +%s >"$ND/stopped-at"
  log "node $NAME powered off (killed ${#pids[@]} tasks)"
}

# ----------------------------------------------------------------- add/rm --

node_add() {
  local images="${KUBE_FENCER_IMAGES:-}" watchdog=""
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --images) images="$2"; shift 2 ;;
      --watchdog) watchdog="$2"; shift 2 ;;
      *) die "unknown option $1" ;;
    esac
  done
  [[ "$NAME" =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] || die "invalid node name $NAME"
  [[ -e "$ND" ]] && die "node $NAME already exists in $DIR"
  cg_check
  check_api_reachable
  local i used
  used=" $(for n in $(real_nodes); do cat "$DIR/nodes/$n/real-index"; done | tr '\n' ' ') "
  for ((i = 1; i < 240; i++)); do
    [[ "$used" == *" $i "* ]] || break
  done
  mkdir -p "$ND"
  printf '%s\n' "$i" >"$ND/real-index"
  touch "$ND/realnode"
  # cluster.sh numbers nodes by counting DIR/nodes/*: keep its "index" too.
  find "$DIR/nodes" -mindepth 1 -maxdepth 1 -type d | wc -l >"$ND/index"
  if [[ -n "$images" ]]; then
    images="$(cd "$images" && pwd)" || die "no image directory $images"
    printf '%s\n' "$images" >"$ND/images-dir"
  fi
  if [[ -n "$watchdog" ]]; then
    [[ -e "$watchdog" ]] || die "no watchdog file $watchdog"
    printf '%s\n' "$(cd "$(dirname "$watchdog")" && pwd)/$(basename "$watchdog")" >"$ND/watchdog-file"
  fi
  save_realnode_env
  node_vars "$NAME"
  bridge_up
  [[ -e "/run/netns/$NS" ]] && die "network namespace $NS exists already"
  write_configs
  netns_create
  peer_routes add
  # The Node's pod CIDR, set before the kubelet registers (it is immutable).
  kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $NAME
  labels:
    kubernetes.io/hostname: "$NAME"
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    kube-fencer.test/real-node: "true"
spec:
  podCIDR: $POD_CIDR
  podCIDRs: [$POD_CIDR]
EOF
  log "node $NAME: $NODE_IP, pods $POD_CIDR, netns $NS, cgroup /$CG"
  node_start
}

node_rm() {
  node_poweroff || true
  cg_remove
  peer_routes del
  ip netns del "$NS" 2>/dev/null || true
  ip link del "$VETH" 2>/dev/null || true
  kc delete node "$NAME" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  # Keep the logs, drop the rest (images, kubelet state).
  mkdir -p "$DIR/logs"
  local c
  for c in init containerd kube-proxy kubelet; do
    [[ -f "$ND/$c.log" ]] && mv -f "$ND/$c.log" "$DIR/logs/realnode-$NAME-$c.log"
  done
  rm -rf "$ND"
  log "node $NAME removed"
}

do_down() {
  local n
  for n in $(real_nodes); do
    node_vars "$n"
    node_poweroff || true
  done
  for n in $(real_nodes); do
    node_vars "$n"
    node_rm
  done
  bridge_down
  rm -f "$DIR/realnode.env"
}

do_status() {
  local n state
  for n in $(real_nodes); do
    node_vars "$n"
    state=off
    node_running && state=running
    printf '%s\t%s\t%s\t%s\tboot %s\n' "$n" "$state" "$NODE_IP" "$POD_CIDR" "$(cat "$ND/boot_id" 2>/dev/null)"
  done
}

# -------------------------------------------------------------------- main --

cmd="${1:-}"
[[ -n "$cmd" ]] || usage
shift
[[ $# -ge 1 ]] || usage
[[ "$(id -u)" == 0 ]] || die "real nodes need root"
load_cluster "$1"
shift
case "$cmd" in
  add)
    [[ $# -ge 1 ]] || usage
    node_vars "$1"
    shift
    node_add "$@"
    ;;
  _init)
    node_vars "$1"
    node_init
    ;;
  poweroff | boot | rm | exec)
    [[ $# -ge 1 ]] || usage
    is_real_node "$1" || die "no real node $1 in $DIR"
    node_vars "$1"
    shift
    case "$cmd" in
      poweroff) node_poweroff ;;
      boot) node_start ;;
      rm) node_rm ;;
      exec)
        [[ $# -ge 1 ]] || usage
        node_exec "$@"
        ;;
    esac
    ;;
  down) do_down ;;
  status) do_status ;;
  *) usage ;;
esac
