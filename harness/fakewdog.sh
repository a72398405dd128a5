#!/usr/bin/env bash
# Build, test or run kube-fencer-fakewdog, the Linux watchdog device emulated
# in user space (FUSE) of crates/fakewdog/, a workspace member (see
# harness/README.md).
#
# Usage:
#   harness/fakewdog.sh build          # release build; the last line on stdout is the binary's path
#   harness/fakewdog.sh test [ARGS]    # cargo test -p kube-fencer-fakewdog (needs root and /dev/fuse);
#                                      # ARGS go to cargo test, e.g. -- --nocapture
#   harness/fakewdog.sh run ARGS...    # build, then exec the binary with ARGS
#                                      # (--mount DIR --on-expire CMD [--timeout 60s] ...)
#
# build puts the binary in
#   ${KUBE_FENCER_CACHE:-$HOME/.cache/kube-fencer}/fakewdog-<key>/kube-fencer-fakewdog
# where <key> hashes Cargo.lock and crates/{fakewdog,watchdog}/{Cargo.toml,src/**}
# (the device takes its ioctl numbers from the watchdog crate): a warm run
# only finds it, any change to the sources builds a new one. cargo builds into
# ${CARGO_TARGET_DIR:-target}; the binary is copied into a
# temporary directory in the cache that is renamed into place, so an
# interrupted build leaves nothing half-written.
set -euo pipefail

HARNESS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HARNESS_DIR/.." && pwd)"
BIN=kube-fencer-fakewdog
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
LOG_TAG=fakewdog
# shellcheck source=harness/lib.sh
source "$HARNESS_DIR/lib.sh"

command -v cargo >/dev/null || die "cargo not found (needs a Rust toolchain >= 1.85)"

build() {
  local key dest
  key="$(files_key "$REPO" Cargo.lock crates/fakewdog/Cargo.toml crates/fakewdog/src crates/watchdog/Cargo.toml crates/watchdog/src)"
  dest="$CACHE/fakewdog-$key"
  if [[ -x "$dest/$BIN" ]]; then
    log "cached: $dest/$BIN"
    printf '%s\n' "$dest/$BIN"
    return 0
  fi
  # One build at a time per cache; a waiting run then finds the binary.
  cache_lock fakewdog
  if [[ ! -x "$dest/$BIN" ]]; then
    local tmp start=$SECONDS
    temp_dir tmp "$CACHE/.tmp-fakewdog-$key.XXXXXX"
    log "building $BIN (key $key) in $CARGO_TARGET_DIR ..."
    if ! cargo build --release --locked --manifest-path "$REPO/Cargo.toml" -p kube-fencer-fakewdog >"$tmp/build.log" 2>&1; then
      tail -n 40 "$tmp/build.log" >&2
      die "cargo build of $BIN failed (log tail above)"
    fi
    [[ -x "$CARGO_TARGET_DIR/release/$BIN" ]] || die "cargo build did not produce $CARGO_TARGET_DIR/release/$BIN"
    cp "$CARGO_TARGET_DIR/release/$BIN" "$tmp/$BIN"
    printf '%s\n' "$key" >"$tmp/KEY"
    rm -f "$tmp/build.log"
    cache_publish "$tmp" "$dest"
    log "built in $((SECONDS - start))s -> $dest/$BIN"
  fi
  printf '%s\n' "$dest/$BIN"
}

run_tests() {
  [[ "$(id -u)" -eq 0 ]] || die "the tests mount FUSE file systems with mount(2): run them as root"
  [[ -c /dev/fuse ]] || die "/dev/fuse is missing (try: modprobe fuse)"
  local c
  for c in sh date; do
    command -v "$c" >/dev/null || die "the tests need $c"
  done
  log "cargo test -p kube-fencer-fakewdog -p kube-fencer-watchdog (target $CARGO_TARGET_DIR)"
  cargo test --locked --manifest-path "$REPO/Cargo.toml" -p kube-fencer-fakewdog -p kube-fencer-watchdog "$@"
}

case "${1:-}" in
  build) build ;;
  test) shift; run_tests "$@" ;;
  run)
    shift
    bin="$(build | tail -n1)"
    exec "$bin" "$@"
    ;;
  -h | --help) print_usage ;;
  *) print_usage; exit 2 ;;
esac
