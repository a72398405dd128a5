#!/usr/bin/env bash
# Build the control-plane binaries the kube-fencer test harness runs:
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl (Kubernetes),
# etcd and kwok, from the pinned Go modules in harness/{k8s,etcd,kwok}.
#
# Binaries go to ${KUBE_FENCER_CACHE:-$HOME/.cache/kube-fencer}/<component>-<version>/,
# so a warm run only checks that they exist, and bumping a version in
# harness/versions.env rebuilds just that component. Each component is built
# into a temporary directory and renamed into place, so an interrupted build
# leaves nothing half-written behind.
#
# Usage: harness/build.sh [--print-bin-dir]
#   Prints progress to stderr. The last line on stdout is the bin directory
#   (a directory of symlinks to every binary), e.g. for
#   PATH="$(harness/build.sh | tail -n1):$PATH".
set -euo pipefail

HARNESS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=harness/versions.env
source "$HARNESS_DIR/versions.env"
LOG_TAG=build
# shellcheck source=harness/lib.sh
source "$HARNESS_DIR/lib.sh"

# One build at a time per cache (parallel test runs all call this script);
# a waiting run then finds the binaries built.
cache_lock build

# Never fetch a Go toolchain; use the one installed here.
export GOTOOLCHAIN=local
export CGO_ENABLED=0

k8s_minor() { # v1.34.4 -> 34
  local v="${1#v}"
  v="${v#*.}"
  printf '%s' "${v%%.*}"
}

# build_component NAME VERSION MODULE_DIR BINARIES... -- PACKAGES...
# Extra ldflags come from the LDFLAGS variable.
build_component() {
  local name="$1" version="$2" moddir="$3"
  shift 3
  local bins=() pkgs=()
  while [[ $# -gt 0 && "$1" != "--" ]]; do bins+=("$1"); shift; done
  shift
  pkgs=("$@")

  local dest="$CACHE/$name-$version"
  local missing=0 b
  for b in "${bins[@]}"; do
    [[ -x "$dest/$b" ]] || missing=1
  done
  if [[ $missing -eq 0 ]]; then
    log "$name $version: cached in $dest"
    return 0
  fi

  local tmp
  # Removed at exit if this build is interrupted or fails.
  temp_dir tmp "$CACHE/.tmp-$name-$version.XXXXXX"
  log "$name $version: building ${bins[*]} (module $moddir) ..."
  local start=$SECONDS
  (
    cd "$moddir"
    go build -trimpath -ldflags "$LDFLAGS" -o "$tmp/" "${pkgs[@]}"
  )
  # Some commands are built from a package whose directory name differs from
  # the binary we want (e.g. etcd's main package is go.etcd.io/etcd/server/v3).
  if [[ -n "${RENAME_FROM:-}" && -x "$tmp/$RENAME_FROM" ]]; then
    mv "$tmp/$RENAME_FROM" "$tmp/${bins[0]}"
  fi
  for b in "${bins[@]}"; do
    [[ -x "$tmp/$b" ]] || die "$name $version: build did not produce $b"
  done
  printf '%s\n' "$version" > "$tmp/VERSION"
  cache_publish "$tmp" "$dest"
  log "$name $version: built in $((SECONDS - start))s -> $dest"
}

total_start=$SECONDS

minor="$(k8s_minor "$KUBERNETES_VERSION")"
LDFLAGS="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  LDFLAGS+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  LDFLAGS+=" -X $pkg.gitTreeState=clean"
done
RENAME_FROM="" build_component kubernetes "$KUBERNETES_VERSION" "$HARNESS_DIR/k8s" \
  kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy -- \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kubectl \
  k8s.io/kubernetes/cmd/kubelet \
  k8s.io/kubernetes/cmd/kube-proxy

LDFLAGS="-s -w"
RENAME_FROM="server" build_component etcd "$ETCD_VERSION" "$HARNESS_DIR/etcd" \
  etcd -- go.etcd.io/etcd/server/v3

LDFLAGS="-s -w"
RENAME_FROM="" build_component kwok "$KWOK_VERSION" "$HARNESS_DIR/kwok" \
  kwok -- sigs.k8s.io/kwok/cmd/kwok

# One directory of symlinks, keyed by all versions, to put on PATH.
bindir="$CACHE/bin-k8s-$KUBERNETES_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION"
mkdir -p "$bindir"
for b in kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy; do
  ln -sfn "$CACHE/kubernetes-$KUBERNETES_VERSION/$b" "$bindir/$b"
done
ln -sfn "$CACHE/etcd-$ETCD_VERSION/etcd" "$bindir/etcd"
ln -sfn "$CACHE/kwok-$KWOK_VERSION/kwok" "$bindir/kwok"

log "all components ready in $((SECONDS - total_start))s; bin dir: $bindir"
printf '%s\n' "$bindir"
