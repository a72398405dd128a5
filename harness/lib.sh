# shellcheck shell=bash
# Sourced by the harness scripts: what they all did the same way.
#
#   log MESSAGE...        "[TAG HH:MM:SS] MESSAGE" on stderr; TAG is LOG_TAG,
#                         else the script's name without .sh
#   die MESSAGE...        log "error: MESSAGE", exit 1
#   print_usage           the script's header comment (line 2 up to the line
#                         `set -euo pipefail`) on stderr
#   at_exit COMMAND       run COMMAND (a shell string) when the script exits,
#                         last registered first
#   temp_dir VAR [TEMPLATE]
#                         a new directory (mktemp -d TEMPLATE) in VAR, removed
#                         at exit
#   content_key LENGTH    the first LENGTH hex digits of the sha256 of stdin
#   files_key DIR PATH... the sha256 of the files under DIR/PATH... (names and
#                         contents, in a fixed order), 16 hex digits
#   cache_lock NAME       hold $CACHE/.NAME.lock until the script exits or
#                         cache_unlock; says so when another run holds it and
#                         waits for it
#   cache_publish TMP DEST
#                         rename the finished directory TMP to DEST (replacing
#                         DEST), so a reader never sees half a build
#
# CACHE is ${KUBE_FENCER_CACHE:-$HOME/.cache/kube-fencer}, where every build
# of the harness keeps what it made, keyed by what it depends on.

CACHE="${KUBE_FENCER_CACHE:-$HOME/.cache/kube-fencer}"

log() { printf '[%s %s] %s\n' "${LOG_TAG:-$(basename "$0" .sh)}" "$(date +%H:%M:%S)" "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

print_usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; }

# The list belongs to one process: a subshell (e.g. $(...)) that registers
# something starts a list and an EXIT trap of its own, and never runs the
# commands of its parent.
_AT_EXIT=()
_AT_EXIT_PID=""
_run_at_exit() {
  local i
  for ((i = ${#_AT_EXIT[@]} - 1; i >= 0; i--)); do eval "${_AT_EXIT[i]}" || true; done
}
at_exit() {
  if [[ "$_AT_EXIT_PID" != "$BASHPID" ]]; then
    _AT_EXIT=()
    _AT_EXIT_PID="$BASHPID"
    trap _run_at_exit EXIT
  fi
  _AT_EXIT+=("$1")
}

temp_dir() {
  local d
  d="$(mktemp -d "${2:-${TMPDIR:-/tmp}/kube-fencer.XXXXXX}")"
  at_exit "rm -rf '$d'"
  printf -v "$1" '%s' "$d"
}

content_key() { sha256sum | cut -c1-"$1"; }

files_key() {
  (
    cd "$1" || exit 1
    shift
    find "$@" -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
  ) | content_key 16
}

_CACHE_LOCK_FD=""
cache_lock() {
  mkdir -p "$CACHE"
  exec {_CACHE_LOCK_FD}>"$CACHE/.$1.lock"
  if ! flock -n "$_CACHE_LOCK_FD"; then
    log "another run holds $CACHE/.$1.lock (building the same thing); waiting for it"
    flock "$_CACHE_LOCK_FD"
  fi
}
cache_unlock() {
  if [[ -n "$_CACHE_LOCK_FD" ]]; then
    exec {_CACHE_LOCK_FD}>&-
    _CACHE_LOCK_FD=""
  fi
}

cache_publish() {
  chmod 755 "$1"
  rm -rf "$2"
  mv -T "$1" "$2"
}
