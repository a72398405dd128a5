# shellcheck shell=bash
# Sourced by the harness scripts and .ci/run:
#   apt_need TOOL:PACKAGE...
# installs the Debian packages of the tools that are not found (a TOOL with a
# slash is a path that must exist), or fails when that needs root.
apt_need() {
  local entry tool missing=()
  for entry in "$@"; do
    tool="${entry%%:*}"
    if [[ "$tool" == */* ]]; then
      [[ -e "$tool" ]] && continue
    else
      command -v "$tool" >/dev/null 2>&1 && continue
    fi
    missing+=("${entry#*:}")
  done
  ((${#missing[@]})) || return 0
  if [[ $EUID -ne 0 ]]; then
    printf 'missing %s: install them, or run as root to let apt do it\n' "${missing[*]}" >&2
    return 1
  fi
  printf '[apt %s] installing %s\n' "$(date +%H:%M:%S)" "${missing[*]}" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}
