#!/usr/bin/env bash
# Build kube-fencer's container image, and the pod sandbox ("pause") image the
# harness's real nodes need, without Docker or a registry.
#
# The images are what the Dockerfiles describe: `build` reproduces the build
# stage of ./Dockerfile on this machine (a static musl binary), then assembles
# the final stage with umoci. USER, EXPOSE, ENTRYPOINT (and CMD) and the COPY
# destination are read from the Dockerfile's last stage, never written here.
# The output is an OCI image-layout tar whose index names every image
# (org.opencontainers.image.ref.name: the tag, io.containerd.image.name: the
# full reference, as `docker save` writes them), so
# `ctr -n k8s.io images import FILE` imports it under those names.
#
# Usage:
#   harness/image.sh build [--out DIR]   kube-fencer:<Cargo version> and kube-fencer:dev-<digest>
#   harness/image.sh pause [--out DIR]   registry.k8s.io/pause:3.10 from harness/pause/pause.c
#   harness/image.sh check ARCHIVE [DOCKERFILE]
#       check that an archive is what its Dockerfile's final stage says (the
#       Dockerfile defaults to the one of the image the archive names)
#
# build and pause print progress on stderr and the archive's path as the last
# line on stdout; with --out DIR the archive is also copied to DIR. Archives
# are cached in ${KUBE_FENCER_CACHE:-$HOME/.cache/kube-fencer}/image-<name>-<tag>-<binary sha256>-<key>/,
# keyed by the binary's sha256 and the image config, so a warm run only builds
# (a no-op for cargo when nothing changed) and hashes the binary.
#
# Environment:
#   KUBE_FENCER_MUSL_TARGET_DIR  cargo target dir of the musl build (default
#                                $KUBE_FENCER_CACHE/cargo-target-musl-<rustc version>;
#                                a CARGO_TARGET_DIR set for host builds is not used)
#   SOURCE_DATE_EPOCH            image creation time (default 0), part of the key
#
# Requires: cargo + rustup, musl-tools, umoci, jq, GNU tar, file, readelf;
# missing Debian packages are installed with apt when run as root.
set -euo pipefail

HARNESS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$HARNESS_DIR/.." && pwd)"
LOG_TAG=image
# shellcheck source=harness/lib.sh
source "$HARNESS_DIR/lib.sh"
MUSL_TARGET=x86_64-unknown-linux-musl
PAUSE_IMAGE=registry.k8s.io/pause
PAUSE_TAG=3.10
# Bump when the way archives are assembled changes, so cached ones are rebuilt.
FORMAT=1

usage() {
  print_usage
  exit 2
}

# need TOOL:PACKAGE... installs the Debian packages of the tools not found.
# shellcheck source=harness/apt-need.sh
source "$HARNESS_DIR/apt-need.sh"
need() { apt_need "$@" || die "cannot install the tools image.sh needs"; }

# ---- Dockerfile final stage ------------------------------------------------

# parse_final_stage DOCKERFILE sets DF_BASE, DF_COPY_SRC, DF_COPY_DEST,
# DF_USER, DF_PORTS (array, e.g. 9746/tcp), DF_ENTRYPOINT and DF_CMD (JSON
# arrays, "null" if absent) from the instructions after the last FROM.
parse_final_stage() {
  local file="$1" line inst args joined="" in_stage=0
  [[ -f "$file" ]] || die "Dockerfile $file not found"
  DF_BASE="" DF_COPY_SRC="" DF_COPY_DEST="" DF_USER="" DF_PORTS=() DF_ENTRYPOINT=null DF_CMD=null
  local -a stage=()
  while IFS= read -r line || [[ -n "$line" ]]; do
    line="${line%$'\r'}"
    [[ "$line" =~ ^[[:space:]]*# && -z "$joined" ]] && continue
    if [[ "$line" == *\\ ]]; then
      joined+="${line%\\} "
      continue
    fi
    line="$joined$line"
    joined=""
    [[ "$line" =~ ^[[:space:]]*$ ]] && continue
    if [[ "$line" =~ ^[[:space:]]*[Ff][Rr][Oo][Mm][[:space:]] ]]; then
      stage=()
      in_stage=1
    fi
    ((in_stage)) && stage+=("$line")
  done <"$file"
  ((${#stage[@]})) || die "$file has no FROM"
  for line in "${stage[@]}"; do
    read -r inst args <<<"$line"
    case "${inst^^}" in
      FROM) read -r DF_BASE _ <<<"$args" ;;
      COPY | ADD)
        [[ -z "$DF_COPY_DEST" ]] || die "$file: the final stage copies more than one file; this script makes one layer of one file"
        local -a words
        read -r -a words <<<"$args"
        while [[ "${words[0]:-}" == --* ]]; do
          # The file's owner and mode are fixed here (root, 0755): refuse
          # flags that would say otherwise.
          [[ "${words[0]}" == --from=* || "${words[0]}" == --link ]] ||
            die "$file: $inst ${words[0]} is not supported (only --from and --link)"
          words=("${words[@]:1}")
        done
        ((${#words[@]} == 2)) || die "$file: expected '${inst} [--from=...] SRC DEST', got: $line"
        DF_COPY_SRC="${words[0]}"
        DF_COPY_DEST="${words[1]}"
        ;;
      USER) DF_USER="$args" ;;
      EXPOSE)
        local p
        for p in $args; do
          [[ "$p" == */* ]] || p="$p/tcp"
          DF_PORTS+=("$p")
        done
        ;;
      ENTRYPOINT | CMD)
        local json
        json="$(jq -ce 'if type == "array" and all(type == "string") then . else error("not an exec-form array") end' <<<"$args" 2>/dev/null)" ||
          die "$file: $inst must be in exec form (a JSON array of strings), got: $args"
        if [[ "${inst^^}" == ENTRYPOINT ]]; then DF_ENTRYPOINT="$json"; else DF_CMD="$json"; fi
        ;;
      ARG | LABEL | WORKDIR | ENV | VOLUME | STOPSIGNAL | HEALTHCHECK | SHELL | ONBUILD | RUN)
        die "$file: the final stage uses $inst, which this script does not carry into the image"
        ;;
      *) die "$file: unknown instruction in final stage: $line" ;;
    esac
  done
  [[ "$DF_BASE" == scratch ]] || die "$file: the final stage must be FROM scratch (got $DF_BASE)"
  [[ "$DF_COPY_DEST" == /* && "$DF_COPY_DEST" != */ ]] || die "$file: COPY destination must be an absolute file path (got '$DF_COPY_DEST')"
  [[ "$DF_ENTRYPOINT" != null ]] || die "$file: the final stage has no ENTRYPOINT"
}

# The image config the Dockerfile describes, as one canonical JSON line.
df_config_json() {
  local ports
  ports="$(printf '%s\n' "${DF_PORTS[@]}" | jq -Rsc 'split("\n") | map(select(length > 0))')"
  jq -cn --arg user "$DF_USER" --argjson ports "$ports" --argjson ep "$DF_ENTRYPOINT" \
    --argjson cmd "$DF_CMD" --arg dest "$DF_COPY_DEST" \
    '{user: $user, ports: $ports, entrypoint: $ep, cmd: $cmd, file: $dest}'
}

# Full reference the way containerd (and kubelet) name it: kube-fencer:0.1.0
# -> docker.io/library/kube-fencer:0.1.0.
normalize_ref() {
  local ref="$1" first="${1%%/*}"
  if [[ "$ref" != */* ]]; then
    printf 'docker.io/library/%s' "$ref"
  elif [[ "$first" == *.* || "$first" == *:* || "$first" == localhost ]]; then
    printf '%s' "$ref"
  else
    printf 'docker.io/%s' "$ref"
  fi
}

# ---- assembling ----------------------------------------------------------------

# assemble NAME TAG BINARY DOCKERFILE sets ARCHIVE to the cached archive of the
# image NAME:TAG (plus NAME:dev-<manifest digest>) made of BINARY and the
# DOCKERFILE's final stage, building it if it is not cached yet.
assemble() {
  local name="$1" tag="$2" bin="$3" dockerfile="$4"
  need umoci:umoci jq:jq
  [[ -x "$bin" ]] || die "binary $bin not found"
  parse_final_stage "$dockerfile"
  local cfg bin_sha epoch="${SOURCE_DATE_EPOCH:-0}" key
  cfg="$(df_config_json)"
  bin_sha="$(sha256sum "$bin" | cut -d' ' -f1)"
  key="$(printf '%s\n' "$FORMAT" "$name:$tag" "$bin_sha" "$cfg" "$epoch" | content_key 12)"
  local base="${name##*/}"
  local dest="$CACHE/image-$base-$tag-${bin_sha:0:12}-$key"
  ARCHIVE="$dest/$base-$tag.oci.tar"
  if [[ -f "$ARCHIVE" ]]; then
    log "$name:$tag: cached ($(tr '\n' ' ' <"$dest/refs")) $ARCHIVE"
    return 0
  fi
  # One assembly at a time per cache; a waiting run may find its archive made.
  cache_lock image
  if [[ -f "$ARCHIVE" ]]; then
    log "$name:$tag: made meanwhile by another run: $ARCHIVE"
    cache_unlock
    return 0
  fi
  log "$name:$tag: assembling from $bin (sha256 ${bin_sha:0:12}) and $dockerfile"
  local tmp
  temp_dir tmp "$CACHE/.tmp-image-$base.XXXXXX"

  local created
  created="$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)"
  # The layer: exactly one file, owned by root, mode 0755, fixed mtime. Made
  # with GNU tar because `umoci insert` of umoci 0.4.7 (Debian bookworm) writes
  # layers without the tar end-of-archive blocks (umoci issue #436).
  local rel="${DF_COPY_DEST#/}"
  mkdir -p "$tmp/rootfs/$(dirname "$rel")"
  cp "$bin" "$tmp/rootfs/$rel"
  chmod 0755 "$tmp/rootfs/$rel"
  touch -h -d "@$epoch" "$tmp/rootfs/$rel"
  tar --create --file "$tmp/layer.tar" --directory "$tmp/rootfs" --format=gnu \
    --owner=0 --group=0 --numeric-owner --mtime="@$epoch" "$rel"

  local oci="$tmp/oci" img="$tmp/oci:$tag"
  umoci init --layout "$oci"
  umoci new --image "$img"
  umoci raw add-layer --image "$img" --history.created "$created" \
    --history.created_by "COPY $DF_COPY_SRC $DF_COPY_DEST" "$tmp/layer.tar"
  local -a cargs=(--created "$created" --history.created "$created" --os linux --architecture amd64)
  local created_by="" e p
  if [[ -n "$DF_USER" ]]; then
    cargs+=(--config.user "$DF_USER")
    created_by+="USER $DF_USER; "
  fi
  for p in "${DF_PORTS[@]}"; do cargs+=(--config.exposedports "$p"); done
  ((${#DF_PORTS[@]})) && created_by+="EXPOSE ${DF_PORTS[*]}; "
  while IFS= read -r e; do cargs+=(--config.entrypoint "$e"); done < <(jq -r '.[]' <<<"$DF_ENTRYPOINT")
  created_by+="ENTRYPOINT $DF_ENTRYPOINT"
  if [[ "$DF_CMD" != null ]]; then
    while IFS= read -r e; do cargs+=(--config.cmd "$e"); done < <(jq -r '.[]' <<<"$DF_CMD")
    created_by+="; CMD $DF_CMD"
  fi
  umoci config --image "$img" "${cargs[@]}" --history.created_by "$created_by"
  umoci gc --layout "$oci"

  local digest dev
  digest="$(jq -r --arg t "$tag" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t) | .digest' "$oci/index.json")"
  [[ "$digest" == sha256:* ]] || die "umoci wrote no manifest for tag $tag"
  dev="dev-${digest:7:12}"
  umoci tag --image "$img" "$dev"
  local full
  full="$(normalize_ref "$name")"
  # containerd names an imported image by io.containerd.image.name, else it
  # prefixes the bare tag in org.opencontainers.image.ref.name with "import-<date>".
  jq --arg repo "$full" \
    '.manifests |= map(.annotations["io.containerd.image.name"] = $repo + ":" + .annotations["org.opencontainers.image.ref.name"]
                       | .platform = {architecture: "amd64", os: "linux"})' \
    "$oci/index.json" >"$tmp/index.json"
  mv "$tmp/index.json" "$oci/index.json"
  tar --create --file "$tmp/$base-$tag.oci.tar" --directory "$oci" --format=gnu --sort=name \
    --owner=0 --group=0 --numeric-owner --mtime="@$epoch" oci-layout index.json blobs
  printf '%s\n' "$full:$tag" "$full:$dev" >"$tmp/refs"
  rm -rf "$tmp/rootfs" "$tmp/layer.tar" "$oci"
  cache_publish "$tmp" "$dest"
  cache_unlock
  log "$name:$tag: $full:$tag, $full:$dev -> $ARCHIVE ($(stat -c %s "$ARCHIVE") bytes)"
}

# out DIR copies ARCHIVE (and its refs) into DIR when --out was given.
publish() {
  local out="$1"
  if [[ -n "$out" ]]; then
    mkdir -p "$out"
    cp "$ARCHIVE" "$out/"
    cp "$(dirname "$ARCHIVE")/refs" "$out/$(basename "$ARCHIVE" .oci.tar).refs"
    ARCHIVE="$out/$(basename "$ARCHIVE")"
  fi
  printf '%s\n' "$ARCHIVE"
}

cargo_version() {
  sed -n '/^\[package\]/,/^\[/{s/^version[[:space:]]*=[[:space:]]*"\(.*\)"/\1/p}' "$REPO_DIR/Cargo.toml" | head -n1
}

cmd_build() {
  local out="$1"
  need musl-gcc:musl-tools
  command -v cargo >/dev/null || die "cargo not found"
  command -v rustup >/dev/null ||
    die "rustup not found (the musl target is added with rustup, as the Dockerfile does)"
  if ! rustup target list --installed | grep -qx "$MUSL_TARGET"; then
    log "rustup target add $MUSL_TARGET"
    rustup target add "$MUSL_TARGET" >&2
  fi
  local rv target_dir
  rv="$(rustc --version | tr -c 'A-Za-z0-9.\n' '-')"
  target_dir="${KUBE_FENCER_MUSL_TARGET_DIR:-$CACHE/cargo-target-musl-$rv}"
  log "cargo build --release --locked --target $MUSL_TARGET -p kube-fencer (target dir $target_dir)"
  local start=$SECONDS
  (cd "$REPO_DIR" && CARGO_TARGET_DIR="$target_dir" cargo build --release --locked --target "$MUSL_TARGET" -p kube-fencer >&2) ||
    die "cargo build for $MUSL_TARGET failed"
  log "cargo: $((SECONDS - start))s"
  local version
  version="$(cargo_version)"
  [[ -n "$version" ]] || die "no [package] version in $REPO_DIR/Cargo.toml"
  assemble kube-fencer "$version" "$target_dir/$MUSL_TARGET/release/kube-fencer" "$REPO_DIR/Dockerfile"
  publish "$out"
}

cmd_pause() {
  local out="$1"
  need musl-gcc:musl-tools
  # The same flags as harness/pause/Dockerfile's build stage (plus warnings);
  # the binary is cached by source, flags and compiler.
  local -a flags=(-static -Os -s -Wall -Wextra -Werror -DPAUSE_VERSION="\"$PAUSE_TAG\"")
  local src="$HARNESS_DIR/pause/pause.c" key
  key="$( (cat "$src"; printf '%s\n' "${flags[@]}"; musl-gcc --version) | content_key 12)"
  local bindir="$CACHE/pause-bin-$PAUSE_TAG-$key"
  if [[ ! -x "$bindir/pause" ]]; then
    mkdir -p "$CACHE"
    local tmp
    temp_dir tmp "$CACHE/.tmp-pause-bin.XXXXXX"
    musl-gcc "${flags[@]}" -o "$tmp/pause" "$src" || die "compiling $src failed"
    cache_publish "$tmp" "$bindir"
    log "pause: compiled $bindir/pause ($(stat -c %s "$bindir/pause") bytes)"
  fi
  assemble "$PAUSE_IMAGE" "$PAUSE_TAG" "$bindir/pause" "$HARNESS_DIR/pause/Dockerfile"
  publish "$out"
}

# ---- check -------------------------------------------------------------------

cmd_check() {
  local archive="$1" dockerfile="${2:-}"
  need jq:jq file:file readelf:binutils
  [[ -f "$archive" ]] || die "archive $archive not found"
  local tmp
  temp_dir tmp
  local fails=0
  ok() { printf 'ok: %s\n' "$*"; }
  bad() {
    printf 'FAIL: %s\n' "$*"
    fails=$((fails + 1))
  }
  # same GOT WANT OK-MESSAGE FAIL-MESSAGE
  same() { if [[ "$1" == "$2" ]]; then ok "$3"; else bad "$4"; fi; }

  tar -xf "$archive" -C "$tmp" || die "$archive is not a tar archive"
  [[ -f "$tmp/oci-layout" && -f "$tmp/index.json" ]] || die "$archive is not an OCI image layout (no oci-layout/index.json)"
  jq -e '.imageLayoutVersion == "1.0.0"' "$tmp/oci-layout" >/dev/null || bad "oci-layout version is not 1.0.0"

  # Every blob's name is its sha256.
  local blob nblobs=0
  for blob in "$tmp"/blobs/sha256/*; do
    nblobs=$((nblobs + 1))
    [[ "$(sha256sum "$blob" | cut -d' ' -f1)" == "$(basename "$blob")" ]] || bad "blob $(basename "$blob") does not match its digest"
  done
  ok "$nblobs blobs match their digests"

  local digests
  digests="$(jq -r '[.manifests[].digest] | unique | .[]' "$tmp/index.json")"
  [[ "$(wc -l <<<"$digests")" == 1 && -n "$digests" ]] || die "index.json should name exactly one manifest, names: $digests"
  local manifest="$tmp/blobs/sha256/${digests#sha256:}"
  local names
  names="$(jq -r '.manifests[].annotations["io.containerd.image.name"] // "MISSING"' "$tmp/index.json")"
  jq -e 'all(.manifests[]; (.annotations["org.opencontainers.image.ref.name"] // "") as $t
           | $t != "" and (.annotations["io.containerd.image.name"] // "" | endswith(":" + $t)))' \
    "$tmp/index.json" >/dev/null || bad "index entries need a ref.name tag and a matching io.containerd.image.name"
  local repo="" n
  while IFS= read -r n; do
    [[ -z "$repo" || "$repo" == "${n%:*}" ]] || bad "index names two repositories: $repo and ${n%:*}"
    repo="${n%:*}"
  done <<<"$names"
  grep -qx "$repo:dev-${digests:7:12}" <<<"$names" || bad "no content tag $repo:dev-${digests:7:12} (names: $(tr '\n' ' ' <<<"$names"))"
  if [[ -z "$dockerfile" ]]; then
    case "$repo" in
      docker.io/library/kube-fencer)
        dockerfile="$REPO_DIR/Dockerfile"
        grep -qx "$repo:$(cargo_version)" <<<"$names" || bad "no tag $(cargo_version) (Cargo.toml's version)"
        ;;
      "$PAUSE_IMAGE")
        dockerfile="$HARNESS_DIR/pause/Dockerfile"
        grep -qx "$repo:$PAUSE_TAG" <<<"$names" || bad "no tag $PAUSE_TAG"
        ;;
      *) die "which Dockerfile describes $repo? pass it as the second argument" ;;
    esac
  fi
  ok "names: $(tr '\n' ' ' <<<"$names")"

  parse_final_stage "$dockerfile"
  local config
  config="$tmp/blobs/sha256/$(jq -r '.config.digest | ltrimstr("sha256:")' "$manifest")"
  [[ -f "$config" ]] || die "config blob missing"
  local got want
  got="$(jq -r '.config.User // ""' "$config")"
  same "$got" "$DF_USER" "user $got" "user is '$got', $dockerfile says '$DF_USER'"
  got="$(jq -c '.config.Entrypoint // null' "$config")"
  same "$got" "$DF_ENTRYPOINT" "entrypoint $got" "entrypoint is $got, $dockerfile says $DF_ENTRYPOINT"
  got="$(jq -c '.config.Cmd // null' "$config")"
  same "$got" "$DF_CMD" "cmd $got" "cmd is $got, $dockerfile says $DF_CMD"
  got="$(jq -r '.config.ExposedPorts // {} | keys | join(" ")' "$config")"
  want="$(printf '%s\n' "${DF_PORTS[@]}" | sed '/^$/d' | sort | paste -sd' ')"
  same "$got" "$want" "exposed ports '$got'" "exposed ports are '$got', $dockerfile says '$want'"
  got="$(jq -r '.os + "/" + .architecture' "$config")"
  same "$got" linux/amd64 "platform $got" "platform is $got"
  got="$(jq -c '.config | del(.User, .Entrypoint, .Cmd, .ExposedPorts) | with_entries(select(.value != null))' "$config")"
  [[ "$got" == "{}" ]] || bad "config has settings the Dockerfile does not: $got"

  # One layer holding exactly the copied file.
  local nlayers layer diff_id
  nlayers="$(jq '.layers | length' "$manifest")"
  [[ "$nlayers" == 1 ]] || die "the image has $nlayers layers, expected 1"
  layer="$tmp/blobs/sha256/$(jq -r '.layers[0].digest | ltrimstr("sha256:")' "$manifest")"
  diff_id="$(jq -r '.rootfs.diff_ids | if length == 1 then .[0] else "wrong count" end' "$config")"
  same "sha256:$(zcat "$layer" | sha256sum | cut -d' ' -f1)" "$diff_id" "one layer, diff_id matches" \
    "the layer's uncompressed digest is not the config's diff_id $diff_id"
  local listing rel="${DF_COPY_DEST#/}"
  listing="$(tar --numeric-owner -tvzf "$layer")" || bad "the layer is not a valid tar.gz"
  if [[ "$(wc -l <<<"$listing")" == 1 && "$(awk '{print $1, $2, $6}' <<<"$listing")" == "-rwxr-xr-x 0/0 $rel" ]]; then
    ok "layer holds exactly $DF_COPY_DEST (-rwxr-xr-x 0/0)"
  else
    bad "layer should hold only $DF_COPY_DEST, mode 0755, owned by 0/0; it holds: $listing"
  fi

  mkdir "$tmp/rootfs"
  tar -xzf "$layer" -C "$tmp/rootfs"
  local bin="$tmp/rootfs/$rel" desc
  desc="$(file -b "$bin")"
  if [[ "$desc" == *"statically linked"* || "$desc" == *"static-pie linked"* ]] && ! readelf -lW "$bin" | grep -q INTERP; then
    ok "static: $desc"
  else
    bad "$DF_COPY_DEST is not a static executable: $desc"
  fi
  local -a probes
  case "$(basename "$rel")" in
    pause) probes=("-v") ;;
    *) probes=("--version" "--help") ;;
  esac
  local arg out
  for arg in "${probes[@]}"; do
    if out="$(timeout 10 "$bin" "$arg" 2>&1)"; then
      ok "$DF_COPY_DEST $arg exits 0: $(head -n1 <<<"$out")"
    else
      bad "$DF_COPY_DEST $arg failed (exit $?): $(tail -n3 <<<"$out")"
    fi
  done

  if ((fails)); then
    printf '%s: %d check(s) failed\n' "$archive" "$fails"
    exit 1
  fi
  printf '%s: matches %s\n' "$archive" "$dockerfile"
}

# ---- main --------------------------------------------------------------------

[[ $# -ge 1 ]] || usage
cmd="$1"
shift
case "$cmd" in
  build | pause)
    out=""
    while [[ $# -gt 0 ]]; do
      case "$1" in
        --out)
          [[ $# -ge 2 ]] || usage
          out="$2"
          shift 2
          ;;
        *) usage ;;
      esac
    done
    "cmd_$cmd" "$out"
    ;;
  check)
    [[ $# -ge 1 && $# -le 2 ]] || usage
    cmd_check "$@"
    ;;
  -h | --help | help) usage ;;
  *) usage ;;
esac
