#!/usr/bin/env bash
# Build the kube-fencer and pause image archives (harness/image.sh), check them
# against their Dockerfiles, and prove a real containerd takes them: import
# both into the k8s.io namespace of a throwaway containerd, list the refs, run
# kube-fencer --help with runc, and check that the images' processes run as
# their Dockerfiles' USER (kube-fencer 65532:65532, pause 65535:65535, PID 1
# of its PID namespace, reaps an orphan, exits 0 on SIGTERM).
#
# Usage: harness/image-test.sh [--keep]
#   --keep  keep the temporary directory (containerd's config, log, outputs);
#           processes, mounts and cgroups are removed all the same
# Needs root (containerd, runc, cgroups). Installs Debian's containerd and runc
# if missing. Exits non-zero on the first failed step, naming it; prints the
# end of containerd's log when containerd is involved.
set -euo pipefail

HARNESS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$HARNESS_DIR/.." && pwd)"
STARTUP_TIMEOUT=30 # seconds for containerd to answer, and for a task to start
STOP_TIMEOUT=10    # seconds for a task or containerd to exit once signalled

keep=0
case "${1:-}" in
  "") ;;
  --keep) keep=1 ;;
  *)
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
    ;;
esac

LOG_TAG=image-test
# shellcheck source=harness/lib.sh
source "$HARNESS_DIR/lib.sh"
tmp=""
fail() {
  if [[ -n "$tmp" && -f "$tmp/containerd.log" ]]; then
    log "containerd log (last 30 lines, $tmp/containerd.log):"
    tail -n 30 "$tmp/containerd.log" >&2
  fi
  die "$@"
}

[[ $EUID -eq 0 ]] || fail "needs root (containerd, runc and cgroups)"
# shellcheck source=harness/apt-need.sh
source "$HARNESS_DIR/apt-need.sh"
apt_need containerd:containerd ctr:containerd containerd-shim-runc-v2:containerd runc:runc jq:jq ||
  fail "cannot install containerd, runc and jq"

# ---- build and check the archives ------------------------------------------

start=$SECONDS
kf_archive="$("$HARNESS_DIR/image.sh" build | tail -n1)" || fail "image.sh build"
pause_archive="$("$HARNESS_DIR/image.sh" pause | tail -n1)" || fail "image.sh pause"
log "archives built in $((SECONDS - start))s: $kf_archive $pause_archive"
"$HARNESS_DIR/image.sh" check "$kf_archive" || fail "image.sh check $kf_archive"
"$HARNESS_DIR/image.sh" check "$pause_archive" || fail "image.sh check $pause_archive"
# The check must notice an image that is not what a Dockerfile says.
if "$HARNESS_DIR/image.sh" check "$kf_archive" "$HARNESS_DIR/pause/Dockerfile" >"${TMPDIR:-/tmp}/image-test-neg.$$" 2>&1; then
  cat "${TMPDIR:-/tmp}/image-test-neg.$$" >&2
  rm -f "${TMPDIR:-/tmp}/image-test-neg.$$"
  fail "image.sh check accepted the kube-fencer image against harness/pause/Dockerfile"
fi
grep -q "FAIL: user is '65532:65532'" "${TMPDIR:-/tmp}/image-test-neg.$$" ||
  fail "image.sh check did not name the wrong USER: $(cat "${TMPDIR:-/tmp}/image-test-neg.$$")"
rm -f "${TMPDIR:-/tmp}/image-test-neg.$$"
log "check rejects the kube-fencer image against the pause Dockerfile (user mismatch)"

kf_refs="$(jq -r '.manifests[].annotations["io.containerd.image.name"]' <(tar -xOf "$kf_archive" index.json))"
pause_refs="$(jq -r '.manifests[].annotations["io.containerd.image.name"]' <(tar -xOf "$pause_archive" index.json))"
# The DaemonSet must ask for an image the archive carries (kubelet normalizes
# kube-fencer:0.1.0 to docker.io/library/kube-fencer:0.1.0).
ds_image="$(sed -n 's/^[[:space:]]*image:[[:space:]]*\([^[:space:]]*\).*/\1/p' "$REPO_DIR/daemonset/10-daemonset.yaml" | head -n1)"
[[ -n "$ds_image" ]] || fail "no image: in daemonset/10-daemonset.yaml"
[[ "$ds_image" == */* ]] && ds_full="$ds_image" || ds_full="docker.io/library/$ds_image"
grep -qx "$ds_full" <<<"$kf_refs" || fail "daemonset/10-daemonset.yaml runs $ds_image, the archive names only: $(tr '\n' ' ' <<<"$kf_refs")"
kf_ref="$ds_full"
pause_ref="registry.k8s.io/pause:3.10"
grep -qx "$pause_ref" <<<"$pause_refs" || fail "the pause archive does not name $pause_ref"

# ---- a throwaway containerd -------------------------------------------------

tmp="$(mktemp -d "${TMPDIR:-/tmp}/kube-fencer-image-test.XXXXXX")"
sock="$tmp/containerd.sock"
cgparent="kube-fencer-image-test-$$"
containerd_pid=""
declare -A run_pids=()
CTR=(ctr --address "$sock" --namespace k8s.io)

# Every process this script started, every mount under $tmp and every cgroup
# under $cgparent goes, whatever happened; leftovers are an error.
teardown() {
  local rc=$? id pid left=0
  set +e
  if [[ -n "$containerd_pid" ]] && kill -0 "$containerd_pid" 2>/dev/null; then
    for id in $(timeout 20 "${CTR[@]}" tasks ls -q 2>/dev/null); do
      timeout 20 "${CTR[@]}" tasks kill -s SIGKILL "$id" >/dev/null 2>&1
    done
  fi
  for id in "${!run_pids[@]}"; do
    pid="${run_pids[$id]}"
    timeout "$STOP_TIMEOUT" tail --pid="$pid" -f /dev/null 2>/dev/null || kill -KILL "$pid" 2>/dev/null
  done
  if [[ -n "$containerd_pid" ]]; then
    for id in $(timeout 20 "${CTR[@]}" containers ls -q 2>/dev/null); do
      timeout 20 "${CTR[@]}" tasks delete -f "$id" >/dev/null 2>&1
      timeout 20 "${CTR[@]}" containers delete "$id" >/dev/null 2>&1
    done
    kill -TERM "$containerd_pid" 2>/dev/null
    if ! timeout "$STOP_TIMEOUT" tail --pid="$containerd_pid" -f /dev/null 2>/dev/null; then
      log "containerd did not stop in ${STOP_TIMEOUT}s; SIGKILL"
      kill -KILL "$containerd_pid" 2>/dev/null
    fi
    wait "$containerd_pid" 2>/dev/null
  fi
  # Shims outlive containerd by design; these are the ones of our socket.
  for pid in $(pgrep -f -- "-address $sock" 2>/dev/null); do
    log "killing leftover shim $pid"
    kill -KILL "$pid" 2>/dev/null
    left=1
  done
  local m
  while read -r m; do
    umount -l "$m" 2>/dev/null && log "unmounted leftover $m"
    left=1
  done < <(awk -v t="$tmp" 'index($5, t) == 1 {print $5}' /proc/self/mountinfo | sort -r)
  local d
  for d in /sys/fs/cgroup/*/"$cgparent"; do
    [[ -d "$d" ]] || continue
    find "$d" -mindepth 1 -depth -type d -exec rmdir {} + 2>/dev/null
    rmdir "$d" 2>/dev/null || {
      log "cgroup $d could not be removed"
      left=1
    }
  done
  if ((keep || rc)); then
    log "kept $tmp"
  else
    rm -rf "$tmp"
  fi
  if ((left)) && ((rc == 0)); then
    log "error: teardown found leftovers (see above)"
    rc=1
  fi
  exit "$rc"
}
trap teardown EXIT

cat >"$tmp/config.toml" <<EOF
version = 2
root = "$tmp/root"
state = "$tmp/state"
# Only the image store, the snapshotter and the runc runtime are tested here;
# CRI would want CNI and a stream port.
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$tmp/opt"
EOF
setsid containerd --config "$tmp/config.toml" >"$tmp/containerd.log" 2>&1 </dev/null &
containerd_pid=$!
deadline=$((SECONDS + STARTUP_TIMEOUT))
until timeout 5 "${CTR[@]}" version >/dev/null 2>&1; do
  kill -0 "$containerd_pid" 2>/dev/null || fail "containerd exited at start"
  ((SECONDS < deadline)) || fail "containerd did not answer on $sock within ${STARTUP_TIMEOUT}s"
  sleep 0.2
done
log "containerd $("${CTR[@]}" version | awk '/Server:/{s=1} s && /Version:/{print $2; exit}') up (pid $containerd_pid, root $tmp)"

# ---- import -----------------------------------------------------------------

for a in "$kf_archive" "$pause_archive"; do
  timeout 120 "${CTR[@]}" images import "$a" >"$tmp/import.out" 2>&1 || fail "ctr images import $a: $(cat "$tmp/import.out")"
  sed 's/^/  /' "$tmp/import.out" >&2
done
timeout 20 "${CTR[@]}" images ls >"$tmp/images.ls"
sed 's/^/  /' "$tmp/images.ls" >&2
for r in $kf_refs $pause_refs; do
  awk 'NR > 1 {print $1}' "$tmp/images.ls" | grep -qx "$r" || fail "ctr images ls does not list $r"
done
timeout 20 "${CTR[@]}" images check >"$tmp/images.check"
if awk 'NR > 1 && $2 != "application/vnd.oci.image.manifest.v1+json" {bad=1} NR > 1 && !/complete/ {bad=1} END {exit !bad}' "$tmp/images.check"; then
  fail "ctr images check: $(cat "$tmp/images.check")"
fi
log "imported and complete: $(tr '\n' ' ' <<<"$kf_refs $pause_refs")"

# ---- run ----------------------------------------------------------------------

# kube-fencer --help, in the image, by runc.
if ! timeout 60 "${CTR[@]}" run --rm --cgroup "/$cgparent/help" "$kf_ref" kf-help /kube-fencer --help >"$tmp/help.out" 2>&1 </dev/null; then
  fail "ctr run $kf_ref /kube-fencer --help: $(tail -n 5 "$tmp/help.out")"
fi
grep -q '^Usage: kube-fencer' "$tmp/help.out" || fail "kube-fencer --help printed no usage: $(head -n 5 "$tmp/help.out")"
log "ctr run $kf_ref /kube-fencer --help: exit 0, $(wc -l <"$tmp/help.out") lines, $(grep '^Usage:' "$tmp/help.out")"

# Without arguments the image runs its ENTRYPOINT: the agent, which without a
# node name stops at argument parsing (clap's usage error, status 2).
rc=0
timeout 60 "${CTR[@]}" run --rm --cgroup "/$cgparent/entry" "$kf_ref" kf-entry >"$tmp/entry.out" 2>&1 </dev/null || rc=$?
if ((rc != 2)) || ! grep -q "'--node-name' is required" "$tmp/entry.out"; then
  fail "ctr run $kf_ref (its ENTRYPOINT, no arguments) should exit 2 asking for --node-name; exit $rc: $(tail -n 5 "$tmp/entry.out")"
fi
log "ctr run $kf_ref with no arguments runs the ENTRYPOINT: exit 2, $(head -n1 "$tmp/entry.out")"

# start_task ID IMAGE [ARGS...] runs a container in the background (ctr run
# --rm in the foreground, whose exit status is the task's) and sets TASK_PID
# to the task's host PID once it runs.
start_task() {
  local id="$1"
  shift
  "${CTR[@]}" run --rm --cgroup "/$cgparent/$id" "$@" >"$tmp/$id.out" 2>&1 </dev/null &
  run_pids[$id]=$!
  local deadline=$((SECONDS + STARTUP_TIMEOUT))
  TASK_PID=""
  while [[ -z "$TASK_PID" || "$TASK_PID" == 0 ]]; do
    ((SECONDS < deadline)) || fail "task $id did not start within ${STARTUP_TIMEOUT}s: $(cat "$tmp/$id.out")"
    kill -0 "${run_pids[$id]}" 2>/dev/null || fail "ctr run $id exited: $(cat "$tmp/$id.out")"
    sleep 0.2
    TASK_PID="$(timeout 10 "${CTR[@]}" tasks ls 2>/dev/null | awk -v id="$id" '$1 == id && $3 == "RUNNING" {print $2}')"
  done
}

# expect_ids PID UID GID checks the real, effective, saved and fs ids.
expect_ids() {
  local pid="$1" uid="$2" gid="$3" u g
  u="$(awk '/^Uid:/{print $2, $3, $4, $5}' "/proc/$pid/status")"
  g="$(awk '/^Gid:/{print $2, $3, $4, $5}' "/proc/$pid/status")"
  [[ "$u" == "$uid $uid $uid $uid" && "$g" == "$gid $gid $gid $gid" ]] ||
    fail "pid $pid runs as uid ($u) gid ($g), expected $uid:$gid"
}

# stop_task ID checks that SIGTERM ends the task with status 0.
stop_task() {
  local id="$1" pid="${run_pids[$1]}" rc=0
  timeout 20 "${CTR[@]}" tasks kill -s SIGTERM "$id" || fail "ctr tasks kill $id"
  timeout "$STOP_TIMEOUT" tail --pid="$pid" -f /dev/null || fail "task $id did not exit within ${STOP_TIMEOUT}s of SIGTERM"
  wait "$pid" || rc=$?
  unset "run_pids[$id]"
  ((rc == 0)) || fail "task $id exited with status $rc after SIGTERM: $(cat "$tmp/$id.out")"
}

# The user the kube-fencer image runs as: the image holds nothing but the
# agent, so a static pause binary is mounted in to stand still meanwhile.
mkdir "$tmp/pause-bin"
pause_layer="$(tar -xOf "$pause_archive" index.json | jq -r '.manifests[0].digest')"
pause_layer="$(tar -xOf "$pause_archive" "blobs/sha256/${pause_layer#sha256:}" | jq -r '.layers[0].digest')"
tar -xOf "$pause_archive" "blobs/sha256/${pause_layer#sha256:}" | tar -xz -C "$tmp/pause-bin"
kf_user="$(sed -n 's/^USER[[:space:]]\{1,\}\([0-9]*\):\([0-9]*\)$/\1 \2/p' "$REPO_DIR/Dockerfile" | tail -n1)"
[[ -n "$kf_user" ]] || fail "no numeric USER uid:gid in Dockerfile"
start_task kf-user --mount "type=bind,src=$tmp/pause-bin/pause,dst=/pause,options=rbind:ro" "$kf_ref" kf-user /pause
read -r uid gid <<<"$kf_user"
expect_ids "$TASK_PID" "$uid" "$gid"
stop_task kf-user
log "$kf_ref runs as ${kf_user/ /:} (Dockerfile USER)"

# The pause image as a sandbox runs it: its own entrypoint, PID 1, SIGTERM ends it.
pause_user="$(sed -n 's/^USER[[:space:]]\{1,\}\([0-9]*\):\([0-9]*\)$/\1 \2/p' "$HARNESS_DIR/pause/Dockerfile" | tail -n1)"
# harness/pause/orphan.c leaves a child behind, which the pause process (PID 1
# of the namespace) inherits and must reap.
musl-gcc -static -Os -o "$tmp/orphan" "$HARNESS_DIR/pause/orphan.c" || fail "compiling harness/pause/orphan.c"
start_task pause --mount "type=bind,src=$tmp/orphan,dst=/orphan,options=rbind:ro" "$pause_ref" pause
read -r uid gid <<<"$pause_user"
expect_ids "$TASK_PID" "$uid" "$gid"
nspid="$(awk '/^NSpid:/{print $NF}' "/proc/$TASK_PID/status")"
[[ "$nspid" == 1 ]] || fail "pause is PID $nspid in its namespace, expected 1"
[[ "$(readlink "/proc/$TASK_PID/exe")" == /pause* ]] || fail "the pause task runs $(readlink "/proc/$TASK_PID/exe")"
timeout 20 "${CTR[@]}" tasks exec --exec-id orphan pause /orphan 2 >"$tmp/orphan.out" 2>&1 ||
  fail "ctr tasks exec pause /orphan: $(cat "$tmp/orphan.out")"
children() { ps -o pid=,stat= --ppid "$1" || true; }
deadline=$((SECONDS + 5))
until [[ -n "$(children "$TASK_PID")" ]]; do
  ((SECONDS < deadline)) || fail "the orphan (pid $(cat "$tmp/orphan.out") in the pod) was not reparented to pause"
  sleep 0.1
done
log "orphan $(children "$TASK_PID" | awk '{print $1}') reparented to pause (host pid $TASK_PID)"
deadline=$((SECONDS + 10))
while [[ -n "$(children "$TASK_PID")" ]]; do
  ((SECONDS < deadline)) || fail "pause left its child unreaped: $(children "$TASK_PID")"
  sleep 0.2
done
stop_task pause
grep -q 'SIGTERM, exiting' "$tmp/pause.out" || fail "pause said nothing on SIGTERM: $(cat "$tmp/pause.out")"
log "$pause_ref runs /pause as ${pause_user/ /:}, PID 1, reaps orphans, exits 0 on SIGTERM"

log "all image checks passed in $((SECONDS - start))s"
