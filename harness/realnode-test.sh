#!/usr/bin/env bash
# Smoke test of real nodes (harness/realnode.sh): a control plane with one
# KWOK node and two real nodes, rn-a and rn-b, and then
#   - a pod on rn-a is Running with a pod IP, serving on hostPort 9747;
#   - a pod on rn-b reaches <rn-a's IP>:9747 (portmap), the pod's IP, and
#     a ClusterIP Service in front of it; it connects to the kubernetes
#     Service 10.96.0.1:443 (kube-proxy), and from its network
#     namespace `curl -k https://10.96.0.1/readyz` answers ok;
#   - containers see their node's boot ID; `kubectl logs` works;
#   - cut drop, cut reject / heal: the peer stops and starts answering;
#   - poweroff rn-a: the Lease stops renewing, no process of rn-a is left;
#   - boot rn-a: a new status.nodeInfo.bootID, the pod runs again;
#   - teardown leaves no process, netns, veth, bridge, mount or cgroup.
#
#   harness/realnode-test.sh [--keep]
#
# Images: archives in KUBE_FENCER_IMAGES (e.g. from harness/image.sh) are
# imported as well; a pause image (registry.k8s.io/pause:3.10) and the probe
# image (kube-fencer.test/probe:1) are built here from
# harness/realnode/probe.c unless KUBE_FENCER_IMAGES has a pause archive.
# KUBE_FENCER_REALNODE_NET picks the bridge (default 0). Needs root.
set -euo pipefail

HARNESS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KEEP=0
[[ "${1:-}" == --keep ]] && KEEP=1
NET="${KUBE_FENCER_REALNODE_NET:-0}"
GATEWAY="10.232.$NET.1"
DIR="$(mktemp -d -t kfn-realnode-test.XXXXXX)"

log() { printf '[realnode-test %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
fail() {
  log "FAIL: $*"
  exit 1
}
pass() { log "ok: $*"; }

cleanup() {
  local rc=$?
  if ((KEEP)); then
    log "kept the cluster in $DIR (remove it with harness/cluster.sh down $DIR)"
    return
  fi
  "$HARNESS_DIR/cluster.sh" down "$DIR" >/dev/null 2>&1 || log "cluster.sh down failed"
  ((rc == 0)) || log "logs are in $DIR (nodes/*/ and logs/)"
}
trap cleanup EXIT

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

now_ms() { date +%s%3N; }

# ------------------------------------------------------------------ images --

IMAGES="$DIR/images"
mkdir -p "$IMAGES"
pause_tag=(--tag registry.k8s.io/pause:3.10)
if [[ -n "${KUBE_FENCER_IMAGES:-}" ]]; then
  for f in "$KUBE_FENCER_IMAGES"/*.tar; do
    [[ -e "$f" ]] || continue
    ln -s "$(cd "$(dirname "$f")" && pwd)/$(basename "$f")" "$IMAGES/"
    [[ "$f" == *pause* ]] && pause_tag=()
  done
fi
gcc -static -Os -Wall -o "$DIR/kfn-probe" "$HARNESS_DIR/realnode/probe.c" || fail "cannot build the probe (gcc -static)"
python3 "$HARNESS_DIR/realnode/mkimage.py" "$IMAGES/kfn-probe.tar" "${pause_tag[@]}" \
  --tag kube-fencer.test/probe:1 --file /pause="$DIR/kfn-probe" --file /kfn-probe="$DIR/kfn-probe" \
  --entrypoint /pause

# ----------------------------------------------------------------- cluster --

"$HARNESS_DIR/cluster.sh" up "$DIR" --nodes 1 --api-bind 0.0.0.0 --advertise-address "$GATEWAY" >/dev/null
# shellcheck source=/dev/null
source "$DIR/env"
RN="$HARNESS_DIR/realnode.sh"

t=$(now_ms)
"$RN" add "$DIR" rn-a --images "$IMAGES"
T_ADD_A=$(($(now_ms) - t))
t=$(now_ms)
"$RN" add "$DIR" rn-b --images "$IMAGES"
T_ADD_B=$(($(now_ms) - t))
CID="$(sed -n 's/^CID=//p' "$DIR/realnode.env")" # names this cluster's netns, links, cgroups
pass "two real nodes Ready (rn-a ${T_ADD_A} ms, rn-b ${T_ADD_B} ms from add)"
kubectl get nodes -o wide

IP_A="$(kubectl get node rn-a -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')"
[[ "$IP_A" == "10.232.$NET.11" ]] || fail "rn-a has InternalIP '$IP_A'"
[[ "$(kubectl get node rn-a -o jsonpath='{.metadata.labels.kube-fencer\.test/real-node}')" == true ]] ||
  fail "rn-a lacks the kube-fencer.test/real-node label"

kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: server
  labels:
    app: server
spec:
  nodeName: rn-a
  terminationGracePeriodSeconds: 1
  containers:
  - name: serve
    image: kube-fencer.test/probe:1
    imagePullPolicy: Never
    command: ["/kfn-probe", "serve", "9747"]
    ports:
    - containerPort: 9747
      hostPort: 9747
---
apiVersion: v1
kind: Service
metadata:
  name: server
spec:
  selector:
    app: server
  ports:
  - port: 80
    targetPort: 9747
EOF

pod_running() { [[ "$(kubectl get pod "$1" -o jsonpath='{.status.phase}')" == Running ]]; }
t=$(now_ms)
wait_until 90 "pod server Running on rn-a" pod_running server
POD_IP="$(kubectl get pod server -o jsonpath='{.status.podIP}')"
[[ "$POD_IP" == 10.244.1.* ]] || fail "pod server has IP '$POD_IP', not in rn-a's 10.244.1.0/24"
SVC_IP="$(kubectl get service server -o jsonpath='{.spec.clusterIP}')"

kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: client
spec:
  nodeName: rn-b
  terminationGracePeriodSeconds: 1
  containers:
  - name: get
    image: kube-fencer.test/probe:1
    imagePullPolicy: Never
    command: ["/kfn-probe", "get", "$IP_A", "9747"]
  - name: pod
    image: kube-fencer.test/probe:1
    imagePullPolicy: Never
    command: ["/kfn-probe", "get", "$POD_IP", "9747"]
  - name: service
    image: kube-fencer.test/probe:1
    imagePullPolicy: Never
    command: ["/kfn-probe", "get", "$SVC_IP", "80"]
  - name: svc
    image: kube-fencer.test/probe:1
    imagePullPolicy: Never
    command: ["/kfn-probe", "connect", "10.96.0.1", "443"]
EOF
wait_until 90 "pod client Running on rn-b" pod_running client
T_PODS=$(($(now_ms) - t))
pass "pods Running in ${T_PODS} ms; server has pod IP $POD_IP, client $(kubectl get pod client -o jsonpath='{.status.podIP}')"

# Container logs, read where the node's /var/log/pods is.
container_log() { # container_log NODE POD CONTAINER
  cat "$DIR"/nodes/"$1"/pod-logs/default_"$2"_*/"$3"/*.log 2>/dev/null
}
log_has() { container_log "$1" "$2" "$3" | grep -q -- "$4"; }
wait_until 30 "a pod on rn-b reaches hostPort $IP_A:9747" log_has rn-b client get "reply hello from server"
pass "a pod on rn-b reaches $IP_A:9747 (hostPort of a pod on rn-a)"
wait_until 30 "a pod on rn-b reaches the pod IP $POD_IP:9747 on rn-a" log_has rn-b client pod "reply hello from server"
pass "a pod on rn-b reaches the pod on rn-a at its pod IP $POD_IP:9747"
wait_until 30 "a pod on rn-b reaches the Service $SVC_IP:80" log_has rn-b client service "reply hello from server"
pass "a pod on rn-b reaches the pod on rn-a through its Service $SVC_IP:80 (kube-proxy)"
wait_until 30 "a pod on rn-b connects to 10.96.0.1:443" log_has rn-b client svc "10.96.0.1:443 connected"
pass "a pod on rn-b connects to the kubernetes Service 10.96.0.1:443"

# node_pid NODE PATTERN: a process of NODE (by its cgroup: other clusters may
# run the same pods) whose command line matches PATTERN.
node_pid() {
  local p
  for p in $(pgrep -f -- "$2"); do
    grep -q "/kfnode-$CID-$1/" "/proc/$p/cgroup" 2>/dev/null && { echo "$p"; return 0; }
  done
  return 1
}
pid="$(node_pid rn-b 'kfn-probe connect 10.96.0.1 443' || true)"
[[ -n "$pid" ]] || fail "no process of the svc container"
out="$(nsenter -n -t "$pid" curl -sk --max-time 5 https://10.96.0.1/readyz || true)"
[[ "$out" == ok ]] || fail "curl -k https://10.96.0.1/readyz from the pod's netns said '$out'"
pass "curl -k https://10.96.0.1/readyz from the pod's network namespace: $out"
# The container has no cat: read the file through its root, in its mount ns.
in_pod="$(cat "/proc/$pid/root/proc/sys/kernel/random/boot_id")"
[[ "$in_pod" == "$(cat "$DIR/nodes/rn-b/boot_id")" ]] ||
  fail "the container sees boot ID $in_pod, the node has $(cat "$DIR/nodes/rn-b/boot_id")"
[[ "$in_pod" == "$(kubectl get node rn-b -o jsonpath='{.status.nodeInfo.bootID}')" ]] ||
  fail "the container's boot ID differs from rn-b's nodeInfo.bootID"
pass "the container sees its node's boot ID ($in_pod), as the Node reports it"
kubectl logs client -c get --tail 1 | grep -q "reply hello from server" || fail "kubectl logs does not work"
pass "kubectl logs works (API server -> kubelet)"

# ------------------------------------------------------------------- cut --

errors_since() { container_log rn-b client get | awk -v s="$since" '$4 > s + 1 && /error/' | grep -q -- "${1:-error}"; }
replies_since() { container_log rn-b client get | awk -v s="$since" '$4 > s + 1 && /reply hello/' | grep -q .; }
# drop: connections time out; reject: they are refused (TCP reset).
for mode in drop reject; do
  "$RN" cut "$DIR" rn-a "$mode"
  since=$(date +%s)
  expect=error
  [[ "$mode" == reject ]] && expect="Connection refused"
  wait_until 20 "rn-a unreachable while cut ($mode: $expect)" errors_since "$expect"
  pass "cut $mode: rn-a's hostPort no longer answers ($expect)"
  "$RN" heal "$DIR" rn-a
  since=$(date +%s)
  wait_until 20 "rn-a reachable again after heal" replies_since
  pass "heal: rn-a answers again"
done

# -------------------------------------------------------------- power off --

BOOT_OLD="$(kubectl get node rn-a -o jsonpath='{.status.nodeInfo.bootID}')"
t=$(now_ms)
"$RN" poweroff "$DIR" rn-a
T_OFF=$(($(now_ms) - t))
left="$(pgrep -f -- "$DIR/nodes/rn-a/" || true)"
[[ -z "$left" ]] || fail "processes of rn-a left after poweroff: $left"
for m in /sys/fs/cgroup/*/; do
  compgen -G "$m/kfnode-$CID-rn-a" >/dev/null && fail "a cgroup of rn-a is left in $m"
done
renew1="$(kubectl -n kube-node-lease get lease rn-a -o jsonpath='{.spec.renewTime}')"
sleep 25 # the kubelet renews every 10 s (a quarter of the 40 s lease)
renew2="$(kubectl -n kube-node-lease get lease rn-a -o jsonpath='{.spec.renewTime}')"
[[ "$renew1" == "$renew2" ]] || fail "rn-a's Lease was renewed after poweroff ($renew1 -> $renew2)"
pass "poweroff in ${T_OFF} ms: no process or cgroup left, Lease not renewed for 25 s ($renew1)"

t=$(now_ms)
"$RN" boot "$DIR" rn-a
T_BOOT=$(($(now_ms) - t))
BOOT_NEW="$(kubectl get node rn-a -o jsonpath='{.status.nodeInfo.bootID}')"
[[ -n "$BOOT_NEW" && "$BOOT_NEW" != "$BOOT_OLD" ]] || fail "bootID did not change ($BOOT_OLD -> $BOOT_NEW)"
[[ -z "$(ls -A "$DIR/nodes/rn-a/run/kube-fencer")" ]] || fail "/run/kube-fencer of rn-a is not empty after boot"
pass "boot: Ready in ${T_BOOT} ms with a new bootID ($BOOT_OLD -> $BOOT_NEW)"
since=$(date +%s)
t=$(now_ms)
wait_until 90 "the pod on rn-a answers again after the reboot" replies_since
T_POD_BACK=$(($(now_ms) - t))
pass "the server pod runs again after the reboot (answers ${T_POD_BACK} ms after Ready)"

# --------------------------------------------------------------- teardown --

if ((KEEP)); then
  log "timings: add rn-a ${T_ADD_A} ms, add rn-b ${T_ADD_B} ms, pods ${T_PODS} ms, poweroff ${T_OFF} ms, boot ${T_BOOT} ms"
  exit 0
fi
trap - EXIT
t=$(now_ms)
"$HARNESS_DIR/cluster.sh" down "$DIR" >/dev/null
T_DOWN=$(($(now_ms) - t))
problems=()
[[ -z "$(pgrep -f -- "$DIR/" || true)" ]] || problems+=("processes: $(pgrep -f -- "$DIR/" | tr '\n' ' ')")
ip netns list | grep -q "kfn-$CID-" && problems+=("netns: $(ip netns list | grep "kfn-$CID-")")
ip -o link | grep -qE "kfv$CID|kfnbr${NET}[:@]" && problems+=("links: $(ip -o link | grep -E "kfv$CID|kfnbr${NET}[:@]")")
grep -q -- "$DIR" /proc/self/mountinfo && problems+=("mounts: $(grep -- "$DIR" /proc/self/mountinfo)")
compgen -G "/sys/fs/cgroup/*/kfnode-$CID-*" >/dev/null && problems+=("cgroups: $(compgen -G "/sys/fs/cgroup/*/kfnode-$CID-*")")
((${#problems[@]} == 0)) || fail "teardown left: ${problems[*]}"
pass "teardown in ${T_DOWN} ms left no process, netns, veth, bridge, mount or cgroup"
log "timings: add rn-a ${T_ADD_A} ms, add rn-b ${T_ADD_B} ms, pods Running ${T_PODS} ms, poweroff ${T_OFF} ms, boot ${T_BOOT} ms, pod back ${T_POD_BACK} ms, down ${T_DOWN} ms"
rm -rf "$DIR"
log "PASS"
