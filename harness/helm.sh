#!/usr/bin/env bash
# The Helm chart (charts/kube-fencer) is the source of the plain manifests in
# rbac/ and daemonset/: `render` regenerates them from `helm template`,
# `check` fails with a diff when they drift, `test` lints and renders every
# documented values combination and dry-runs it against a real API server.
#
# Usage: harness/helm.sh build | render | check | test [--keep]
#   build    build helm (HELM_VERSION in versions.env) from the Go module
#            proxy into ${KUBE_FENCER_CACHE:-$HOME/.cache/kube-fencer}/helm-VERSION/;
#            prints the binary's path last
#   render   rewrite the plain manifests (see harness/helm/layout) from the chart
#   check    exit 1, with a diff, if the plain manifests are not what render writes
#   test     check, helm lint of charts/kube-fencer/ci/*.yaml, and each rendering
#            applied with kubectl apply --dry-run=server to a local API server
#            (harness/cluster.sh, stopped at the end; --keep keeps its directory)
set -euo pipefail

HARNESS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$HARNESS_DIR/.." && pwd)"
CHART_DIR="$REPO_DIR/charts/kube-fencer"
# shellcheck source=harness/versions.env
source "$HARNESS_DIR/versions.env"
LOG_TAG=helm
# shellcheck source=harness/lib.sh
source "$HARNESS_DIR/lib.sh"

usage() {
  print_usage
  exit 2
}

# ------------------------------------------------------------------- build --

# helm is built from its own module (its go.mod and go.sum, verified against
# the checksum database on download) as its Makefile does, stamped with the
# version. One build at a time per cache; a waiting run finds it built.
# Sets HELM to the binary's path.
build_helm() {
  local dest="$CACHE/helm-$HELM_VERSION"
  HELM="$dest/helm"
  if [[ -x "$dest/helm" ]]; then
    return 0
  fi
  cache_lock helm-build
  if [[ -x "$dest/helm" ]]; then
    cache_unlock
    return 0
  fi
  export GOTOOLCHAIN=local CGO_ENABLED=0
  local major="${HELM_VERSION#v}"
  major="${major%%.*}"
  local module="helm.sh/helm/v$major" start=$SECONDS tmp moddir
  temp_dir tmp "$CACHE/.tmp-helm-$HELM_VERSION.XXXXXX"
  log "helm $HELM_VERSION: downloading $module@$HELM_VERSION ..."
  moddir="$(go mod download -json "$module@$HELM_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -n "$moddir" && -d "$moddir" ]] || die "go mod download $module@$HELM_VERSION gave no directory"
  log "helm $HELM_VERSION: building $module/cmd/helm ..."
  (
    cd "$moddir"
    go build -mod=readonly -trimpath \
      -ldflags "-w -s -X $module/internal/version.version=$HELM_VERSION -X $module/internal/version.metadata= -X $module/internal/version.gitTreeState=clean" \
      -o "$tmp/helm" ./cmd/helm
  )
  "$tmp/helm" version --short >/dev/null || die "the helm just built does not run"
  printf '%s\n' "$HELM_VERSION" >"$tmp/VERSION"
  cache_publish "$tmp" "$dest"
  cache_unlock
  log "helm $HELM_VERSION: built in $((SECONDS - start))s -> $dest"
}

# ------------------------------------------------------------------ render --

RELEASE=kube-fencer
NAMESPACE=kube-fencer
LAYOUT="$HARNESS_DIR/helm/layout"
HEADERS="$HARNESS_DIR/helm/headers"

# The --set flags of a VALUES name of the layout.
values_args() {
  case "$1" in
    plain) printf '%s\n' --set namespace.create=true ;;
    fenceCommand) printf '%s\n' --set namespace.create=true --set fencing.mode=fenceCommand ;;
    *) die "layout: unknown VALUES $1" ;;
  esac
}

# split_stream DIR < `helm template` output: every document of template T
# appended to DIR/T (documents separated by ---, "# Source:" lines dropped,
# trailing blank lines trimmed); DIR/.order lists the templates seen.
split_stream() {
  awk -v dir="$1" '
    function flush() {
      if (src == "") return
      while (n > 0 && doc[n] ~ /^[[:space:]]*$/) n--
      while (first <= n && doc[first] ~ /^[[:space:]]*$/) first++
      if (first > n) { src = ""; return }
      out = dir "/" src
      if (!(src in seen)) { seen[src] = 1; print src > (dir "/.order") }
      else print "---" >> out
      for (i = first; i <= n; i++) print doc[i] >> out
      close(out)
      src = ""
    }
    /^---[[:space:]]*$/ { flush(); pending = 1; next }
    pending && /^# Source: / {
      src = $3; sub(/^[^\/]*\/templates\//, "", src); gsub(/\//, "__", src)
      n = 0; first = 1; pending = 0; next
    }
    { pending = 0; if (src == "") { if ($0 !~ /^[[:space:]]*$/) { print "unexpected line outside a document: " $0 > "/dev/stderr"; bad = 1 } ; next } ; doc[++n] = $0 }
    END { flush(); exit bad }
  '
}

# render_to OUT: every file of the layout, rendered, under OUT.
render_to() {
  local out="$1" work file values tpl set
  build_helm
  temp_dir work
  local -a sets=()
  while read -r file values _; do
    [[ -z "$file" || "$file" == \#* ]] && continue
    [[ " ${sets[*]} " == *" $values "* ]] || sets+=("$values")
  done <"$LAYOUT"
  for set in "${sets[@]}"; do
    mkdir -p "$work/$set"
    local -a args=()
    mapfile -t args < <(values_args "$set")
    "$HELM" template "$RELEASE" "$CHART_DIR" --namespace "$NAMESPACE" "${args[@]}" >"$work/$set.yaml" \
      || die "helm template ($set values) failed"
    split_stream "$work/$set" <"$work/$set.yaml" || die "cannot split the $set rendering"
  done
  local -A placed=()
  while read -r file values tpls; do
    [[ -z "$file" || "$file" == \#* ]] && continue
    mkdir -p "$(dirname "$out/$file")"
    {
      [[ -f "$HEADERS/$file" ]] && cat "$HEADERS/$file"
      local sep=""
      for tpl in $tpls; do
        [[ -f "$work/$values/$tpl" ]] || die "layout: $file: template $tpl renders nothing with the $values values"
        printf '%s' "$sep"
        cat "$work/$values/$tpl"
        sep=$'---\n'
        placed["$values/$tpl"]=1
      done
    } >"$out/$file"
  done <"$LAYOUT"
  while read -r tpl; do
    [[ -n "${placed["plain/$tpl"]:-}" ]] || die "template ${tpl//__//} renders with the plain values but has no file in harness/helm/layout"
  done <"$work/plain/.order"
}

# The plain manifests named by the layout.
layout_files() {
  local file _
  while read -r file _; do
    [[ -z "$file" || "$file" == \#* ]] && continue
    printf '%s\n' "$file"
  done <"$LAYOUT"
}

render() {
  render_to "$REPO_DIR"
  log "rendered $(layout_files | wc -l) plain manifests from $CHART_DIR"
}

# Exit 1 with a diff when a plain manifest is not what render writes.
check() {
  local out file drift=0
  temp_dir out
  render_to "$out"
  while read -r file; do
    if ! diff -u --label "$file (committed)" --label "$file (rendered from charts/kube-fencer)" \
      "$REPO_DIR/$file" "$out/$file" >&2; then
      drift=1
    fi
  done < <(layout_files)
  if ((drift)); then
    log "error: the plain manifests drifted from the chart; run harness/helm.sh render (and edit the chart, not the plain files)"
    return 1
  fi
  log "the $(layout_files | wc -l) plain manifests are what the chart renders"
}

# -------------------------------------------------------------------- test --

CI_DIR="$CHART_DIR/ci"

# expect NAME JSON ASSERTION...: each ASSERTION is "what|jq expression" and
# must be true of the objects (.items) the API server returned.
expect() {
  local name="$1" json="$2" a
  shift 2
  for a in "$@"; do
    if [[ "$(jq -r "[.items[]] as \$o | (${a#*|})" "$json")" != true ]]; then
      die "$name: expected ${a%%|*} ($(jq -c "[.items[]] as \$o | (${a#*|})" "$json" 2>&1 | head -c 300))"
    fi
  done
  log "$name: $# expectations hold"
}

# The DaemonSet's container, as a jq prefix ($o is jq's variable, not the
# shell's).
# shellcheck disable=SC2016
DS='($o[] | select(.kind == "DaemonSet") | .spec.template.spec)'
AGENT="($DS.containers[0])"

# Assertions per values file of ci/, on the server's dry-run objects of
# the release in namespace $ns.
assertions() {
  local name="$1" ns="$2"
  local common=(
    "every namespaced object in $ns or kube-node-lease|[\$o[] | select(.metadata.namespace != null) | .metadata.namespace | select(. != \"$ns\" and . != \"kube-node-lease\")] == []"
    "every binding's subject in $ns|[\$o[] | select(.kind | endswith(\"Binding\")) | .subjects[].namespace | select(. != \"$ns\")] == []"
    "no Helm-only label|[\$o[] | .metadata.labels // {} | keys[] | select(startswith(\"helm.sh/\") or . == \"app.kubernetes.io/instance\")] == []"
  )
  case "$name" in
    default)
      expect "$name" "$out" "${common[@]}" \
        "the default args exactly|$AGENT.args == [\"--log-format=json\",\"--unreachable-after=20s\",\"--fence-timeout=40s\",\"--healthy-after=30s\",\"--max-unhealthy=40%\",\"--strategy=out-of-service\",\"--fencing-protocol=permit\",\"--self-fence=auto\",\"--watchdog-device=/host/dev/watchdog\",\"--watchdog-timeout=5s\",\"--api-check-interval=5s\",\"--api-check-timeout=2s\",\"--api-failure-threshold=3\",\"--peer-silence-timeout=10s\",\"--peer-listen=0.0.0.0:9747\",\"--peer-key-secret=kube-fencer-peer-key\",\"--state-dir=/run/kube-fencer\",\"--safe-time-margin=5s\",\"--node-heartbeat-interval=10s\"]" \
        "a privileged root agent|$AGENT.securityContext.privileged == true and $AGENT.securityContext.runAsUser == 0" \
        "hostPort 9747|[$AGENT.ports[] | select(.hostPort == 9747)] | length == 1" \
        "the host's /dev and /run/kube-fencer|[$DS.volumes[].hostPath.path] == [\"/dev\", \"/run/kube-fencer\"]" \
        "image kube-fencer:<appVersion>|$AGENT.image == \"kube-fencer:$(sed -n 's/^appVersion: "\(.*\)"$/\1/p' "$CHART_DIR/Chart.yaml")\"" \
        "no Namespace (namespace.create is off)|[\$o[] | select(.kind == \"Namespace\")] == []" \
        "no ServiceMonitor|[\$o[] | select(.kind == \"ServiceMonitor\")] == []"
      ;;
    fencecommand)
      expect "$name" "$out" "${common[@]}" \
        "uid 65532, non-root|$DS.securityContext.runAsUser == 65532 and $DS.securityContext.runAsNonRoot == true" \
        "no privilege, every capability dropped|($AGENT.securityContext.privileged // false) == false and $AGENT.securityContext.capabilities.drop == [\"ALL\"]" \
        "no host port, no host path|([$AGENT.ports[] | select(.hostPort)] == []) and ([$DS.volumes[] | select(.hostPath)] == [])" \
        "no --self-fence, no peer flags|[$AGENT.args[] | select(test(\"^--(self-fence|watchdog|peer|state-dir|api-)\"))] == []" \
        "the fence command, its args single-quoted|[$AGENT.args[] | select(startswith(\"--fence-command=\"))] == [\"--fence-command=/fence/ipmi-off.sh '--interface' 'lanplus' 'it'\\\\''s quoted'\"]" \
        "its timeout and backoff|($AGENT.args | index(\"--fence-command-timeout=1m\")) != null and ($AGENT.args | index(\"--fence-command-backoff=10s\")) != null" \
        "its Secret in the environment|[$AGENT.env[] | select(.name == \"IPMI_PASSWORD\") | .valueFrom.secretKeyRef.name] == [\"ipmi\"]" \
        "its ConfigMap at /fence|[$DS.volumes[].configMap.name] == [\"kube-fencer-fence\"] and [$AGENT.volumeMounts[].mountPath] == [\"/fence\"]" \
        "terminationGracePeriodSeconds 10|$DS.terminationGracePeriodSeconds == 10"
      ;;
    timings)
      expect "$name" "$out" "${common[@]}" \
        "the timings given|[\"--unreachable-after=30s\",\"--fence-timeout=1m\",\"--node-heartbeat-interval=15s\",\"--burst-spread=0s\",\"--leader-lease-duration=15s\",\"--watchdog-timeout=20s\",\"--api-check-interval=6s\",\"--api-check-timeout=3s\",\"--api-failure-threshold=4\",\"--peer-silence-timeout=15s\",\"--max-unhealthy=1\",\"--strategy=delete-pods\",\"--fencing-protocol=safe-time\",\"--self-fence=sysrq-reboot\",\"--log-level=debug\"] - $AGENT.args == []" \
        "no flag for a null timing|[$AGENT.args[] | select(test(\"^--(healthy-after|safe-time-margin)\"))] == []" \
        "extraArgs last|$AGENT.args[-2:] == [\"--manage-control-plane\", \"--dry-run\"]" \
        "the nodeSelector|$DS.nodeSelector == {\"kubernetes.io/os\": \"linux\", \"node-role.kubernetes.io/worker\": \"\"}" \
        "the tolerations|$DS.tolerations == [{\"key\": \"node.kubernetes.io/unreachable\", \"operator\": \"Exists\"}]" \
        "the resources|$AGENT.resources == {\"requests\": {\"cpu\": \"20m\", \"memory\": \"48Mi\"}, \"limits\": {\"cpu\": \"200m\", \"memory\": \"256Mi\"}}" \
        "no priorityClassName|$DS.priorityClassName == null" \
        "terminationGracePeriodSeconds 20|$DS.terminationGracePeriodSeconds == 20" \
        "the image|$AGENT.image == \"registry.example.com/kube-fencer:0.1.0-rc1\" and $AGENT.imagePullPolicy == \"Always\"" \
        "commonLabels on every object and the pods|([\$o[] | .metadata.labels.team] | unique) == [\"storage\"] and ([\$o[] | select(.kind == \"DaemonSet\") | .spec.template.metadata.labels.team] == [\"storage\"])" \
        "the pod annotation|[\$o[] | select(.kind == \"DaemonSet\") | .spec.template.metadata.annotations[\"example.com/owner\"]] == [\"storage\"]"
      ;;
    servicemonitor)
      expect "$name" "$out" "${common[@]}" \
        "the Namespace, privileged|[\$o[] | select(.kind == \"Namespace\") | [.metadata.name, .metadata.labels[\"pod-security.kubernetes.io/enforce\"]]] == [[\"$ns\", \"privileged\"]]" \
        "a ServiceMonitor of the metrics Service in $ns|[\$o[] | select(.kind == \"ServiceMonitor\") | [.metadata.labels.release, .spec.namespaceSelector.matchNames, .spec.endpoints[0].port, .spec.endpoints[0].interval]] == [[\"prometheus\", [\"$ns\"], \"metrics\", \"15s\"]]"
      ;;
    monitoring)
      expect "$name" "$out" "${common[@]}" \
        "a PrometheusRule with rules|[\$o[] | select(.kind == \"PrometheusRule\") | .spec.groups[].rules | length] | add > 0" \
        "a dashboard ConfigMap of JSON|[\$o[] | select(.kind == \"ConfigMap\") | .data[\"kube-fencer.json\"] | fromjson | type] == [\"object\"]"
      ;;
    *) die "no assertions for ci/$name-values.yaml; add them to harness/helm.sh" ;;
  esac
}

# A rendering that must fail, with a message matching PATTERN.
expect_failure() {
  local what="$1" pattern="$2" msg
  shift 2
  if msg="$("$HELM" "$@" 2>&1)"; then
    die "$what: helm $* succeeded"
  fi
  grep -qE -- "$pattern" <<<"$msg" || die "$what: helm $* failed, but not with /$pattern/: $msg"
}

test_chart() {
  local keep=0 start=$SECONDS
  case "${1:-}" in
    "") ;;
    --keep) keep=1 ;;
    *) usage ;;
  esac
  build_helm
  log "$("$HELM" version --short)"
  check

  # Every values combination lints (strict: warnings fail too) and renders.
  local -a combos=()
  local f name
  for f in "$CI_DIR"/*-values.yaml; do
    name="$(basename "$f" -values.yaml)"
    combos+=("$name")
    "$HELM" lint --strict "$CHART_DIR" --namespace kube-fencer -f "$f" >/dev/null \
      || { "$HELM" lint --strict "$CHART_DIR" --namespace kube-fencer -f "$f" >&2 || true; die "helm lint -f ci/$name-values.yaml"; }
  done
  # The monitoring files come later: until they are in the chart, enabling
  # them must fail, and say why.
  local monitoring_sets=(--set monitoring.serviceMonitor.enabled=true --set monitoring.prometheusRule.enabled=true --set monitoring.dashboard.enabled=true)
  if [[ -f "$CHART_DIR/files/prometheusrule.yaml" && -f "$CHART_DIR/files/grafana-dashboard.json" ]]; then
    "$HELM" lint --strict "$CHART_DIR" "${monitoring_sets[@]}" >/dev/null || die "helm lint with the monitoring files"
    combos+=(monitoring)
  else
    expect_failure "prometheusRule without its file" "files/prometheusrule.yaml .*not there yet" \
      template x "$CHART_DIR" --set monitoring.prometheusRule.enabled=true
    expect_failure "dashboard without its file" "files/grafana-dashboard.json .*not there yet" \
      template x "$CHART_DIR" --set monitoring.dashboard.enabled=true
  fi
  log "helm lint --strict with ci/: ${combos[*]}"
  # What must not render.
  expect_failure "an unknown mode" "fencing.mode" template x "$CHART_DIR" --set fencing.mode=selffence
  expect_failure "a duration that is none" "timings.fenceTimeout|fenceTimeout" template x "$CHART_DIR" --set timings.fenceTimeout=forty
  expect_failure "a misspelt timing" "additional properties|additionalProperties|unreachableAfterr" \
    template x "$CHART_DIR" --set timings.unreachableAfterr=30s
  expect_failure "sysrq-reboot under the permit" "sysrq-reboot needs fencing.selfFence.protocol safe-time" \
    template x "$CHART_DIR" --set fencing.selfFence.action=sysrq-reboot
  expect_failure "an unknown protocol" "protocol" template x "$CHART_DIR" --set fencing.selfFence.protocol=lease
  log "helm refuses a bad mode, a bad duration, an unknown timing, an unknown protocol and sysrq-reboot under the permit"

  # A real API server for the server-side dry runs.
  local dir
  dir="$(mktemp -d "${TMPDIR:-/tmp}/kube-fencer-helm-test.XXXXXX")"
  if ((keep)); then
    at_exit "log 'kept $dir'"
  else
    at_exit "rm -rf '$dir'"
  fi
  at_exit "'$HARNESS_DIR/cluster.sh' down '$dir/cluster' >/dev/null 2>&1"
  "$HARNESS_DIR/cluster.sh" up "$dir/cluster" --nodes 1 >"$dir/cluster-up.log" 2>&1 \
    || { tail -n 40 "$dir/cluster-up.log" >&2; die "cluster.sh up"; }
  # shellcheck source=/dev/null
  source "$dir/cluster/env"
  kubectl apply -f "$HARNESS_DIR/helm/crds.yaml" >/dev/null
  kubectl wait --for condition=Established --timeout 30s \
    crd/servicemonitors.monitoring.coreos.com crd/prometheusrules.monitoring.coreos.com >/dev/null

  # The plain manifests apply as the README says, both variants.
  kubectl apply -f "$REPO_DIR/rbac/" -f "$REPO_DIR/daemonset/" >"$dir/plain.log" 2>&1 \
    || { cat "$dir/plain.log" >&2; die "kubectl apply -f rbac/ -f daemonset/"; }
  kubectl apply -f "$REPO_DIR/rbac/" -f "$REPO_DIR/daemonset/unprivileged/" -f "$REPO_DIR/daemonset/20-metrics-service.yaml" >"$dir/plain.log" 2>&1 \
    || { cat "$dir/plain.log" >&2; die "kubectl apply -f rbac/ -f daemonset/unprivileged/ -f daemonset/20-metrics-service.yaml"; }
  log "kubectl apply of rbac/ and daemonset/, then of daemonset/unprivileged/: ok"

  # Each combination in a namespace of its own (the chart must follow
  # --namespace everywhere), dry-run by the API server, strict field
  # validation, then the objects it returned checked.
  local ns out
  for name in "${combos[@]}"; do
    ns="kf-$name"
    kubectl create namespace "$ns" >/dev/null
    out="$dir/$name.json"
    local -a vals=(-f "$CI_DIR/$name-values.yaml")
    [[ "$name" == monitoring ]] && vals=("${monitoring_sets[@]}")
    "$HELM" template kube-fencer "$CHART_DIR" --namespace "$ns" "${vals[@]}" >"$dir/$name.yaml" \
      || die "helm template ($name)"
    kubectl apply --dry-run=server --validate=strict -o json -f "$dir/$name.yaml" >"$out" 2>"$dir/$name.err" \
      || { cat "$dir/$name.err" >&2; die "kubectl apply --dry-run=server of the $name rendering"; }
    jq -e '.kind == "List" and (.items | length) > 0' "$out" >/dev/null || die "$name: no objects back from the dry run"
    assertions "$name" "$ns"
  done

  # A real install, upgrade to the other mode, and uninstall, under a
  # release name of its own (objects kf-helm-kube-fencer*, beside the plain
  # install's) into a namespace Helm creates.
  local rel=kf-helm relns=kf-helm-release
  "$HELM" install "$rel" "$CHART_DIR" --namespace "$relns" --create-namespace --wait --timeout 90s >"$dir/install.log" 2>&1 \
    || { cat "$dir/install.log" >&2; kubectl -n "$relns" get all >&2 || true; die "helm install"; }
  grep -q 'fencing.mode=selfFence' "$dir/install.log" || die "helm install printed no NOTES"
  [[ "$(kubectl -n "$relns" get daemonset "$rel-kube-fencer" -o jsonpath='{.metadata.labels.app\.kubernetes\.io/managed-by} {.spec.template.spec.containers[0].securityContext.privileged}')" == "Helm true" ]] \
    || die "helm install: no privileged DaemonSet $rel-kube-fencer managed by Helm in $relns"
  "$HELM" upgrade "$rel" "$CHART_DIR" --namespace "$relns" --set fencing.mode=fenceCommand --wait --timeout 90s >"$dir/upgrade.log" 2>&1 \
    || { cat "$dir/upgrade.log" >&2; die "helm upgrade --set fencing.mode=fenceCommand"; }
  [[ "$(kubectl -n "$relns" get daemonset "$rel-kube-fencer" -o jsonpath='{.spec.template.spec.securityContext.runAsUser}')" == 65532 ]] \
    || die "helm upgrade: the DaemonSet is not the unprivileged one"
  "$HELM" uninstall "$rel" --namespace "$relns" --wait >"$dir/uninstall.log" 2>&1 || { cat "$dir/uninstall.log" >&2; die "helm uninstall"; }
  [[ -z "$(kubectl get clusterrole,clusterrolebinding -o name | grep "$rel-kube-fencer" || true)" ]] \
    || die "helm uninstall left cluster-scoped objects"
  log "helm install (selfFence), upgrade (fenceCommand), uninstall: ok"

  log "helm chart tests passed in $((SECONDS - start))s"
}

cmd="${1:-}"
[[ $# -gt 0 ]] && shift
case "$cmd" in
  build) build_helm && printf '%s\n' "$HELM" ;;
  render) render ;;
  check) check ;;
  test) test_chart "$@" ;;
  *) usage ;;
esac
