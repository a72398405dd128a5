#!/usr/bin/env bash
# The alerts and the Grafana dashboard of daemonset/monitoring/, and their
# checks with promtool (built from the pinned Prometheus module).
#
# Usage:
#   harness/monitoring.sh build    # build prometheus and promtool (cached); the last line on
#                                  # stdout is the directory holding both
#   harness/monitoring.sh render   # regenerate the derived files from their sources
#   harness/monitoring.sh check    # derived files up to date, dashboard JSON valid, every
#                                  # runbook_url anchored in README.md, every file of
#                                  # daemonset/monitoring/ a Kubernetes object (no promtool)
#   harness/monitoring.sh test     # check, then promtool check rules, promtool test rules
#                                  # (harness/monitoring/rules-test.yaml), the metric-name test
#                                  # and promtool check metrics on the agent's real exposition
#
# Sources and what render derives from them:
#   daemonset/monitoring/rules/kube-fencer.rules.yaml  (Prometheus rule groups, promtool's input)
#     -> daemonset/monitoring/prometheusrule.yaml      (the same groups in a PrometheusRule)
#   daemonset/monitoring/grafana/dashboard.json        (the Grafana dashboard)
#     -> daemonset/monitoring/dashboard-configmap.yaml (the ConfigMap Grafana's sidecar loads)
#
# promtool and the Prometheus server (the end-to-end alert scenario,
# tests/e2e/monitoring.rs) are built with the installed Go (GOTOOLCHAIN=local,
# CGO_ENABLED=0) from harness/monitoring/prometheus (a module requiring
# github.com/prometheus/prometheus at PROMETHEUS_VERSION of versions.env) into
#   ${KUBE_FENCER_CACHE:-$HOME/.cache/kube-fencer}/prometheus-<version>/{promtool,prometheus}
# through a temporary directory renamed into place, one build at a time.
set -euo pipefail

HARNESS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HARNESS_DIR/.." && pwd)"
# shellcheck source=harness/versions.env
source "$HARNESS_DIR/versions.env"
LOG_TAG=monitoring
# shellcheck source=harness/lib.sh
source "$HARNESS_DIR/lib.sh"

MON="$ROOT/daemonset/monitoring"
RULES_SRC="$MON/rules/kube-fencer.rules.yaml"
RULES_CR="$MON/prometheusrule.yaml"
DASHBOARD_SRC="$MON/grafana/dashboard.json"
# The Helm chart's copies (charts/kube-fencer/files/README.md).
CHART_FILES="$ROOT/charts/kube-fencer/files"
DASHBOARD_CM="$MON/dashboard-configmap.yaml"
RULES_TEST="$HARNESS_DIR/monitoring/rules-test.yaml"

# v0.316.0 -> 3.16.0 (Prometheus 3.x publishes its Go module as v0.3xx.y).
prometheus_release() {
  local v="${1#v0.}" minor patch
  minor="${v%%.*}"
  patch="${v#*.}"
  printf '%d.%d.%s' "$((minor / 100))" "$((minor % 100))" "$patch"
}

build() {
  local dest="$CACHE/prometheus-$PROMETHEUS_VERSION-k8s-sd" moddir="$HARNESS_DIR/monitoring/prometheus"
  if [[ -x "$dest/promtool" && -x "$dest/prometheus" ]]; then
    log "prometheus and promtool $PROMETHEUS_VERSION: cached in $dest"
    printf '%s\n' "$dest"
    return 0
  fi
  command -v go >/dev/null || die "go not found (prometheus and promtool are built from the Prometheus Go module)"
  grep -qxF "require github.com/prometheus/prometheus $PROMETHEUS_VERSION" "$moddir/go.mod" ||
    die "$moddir/go.mod does not require github.com/prometheus/prometheus $PROMETHEUS_VERSION (versions.env); update it with: cd $moddir && go get github.com/prometheus/prometheus@$PROMETHEUS_VERSION && go mod tidy"
  # One build at a time per cache; a waiting run then finds the binaries.
  cache_lock prometheus
  if [[ ! -x "$dest/promtool" || ! -x "$dest/prometheus" ]]; then
    local tmp start=$SECONDS release
    release="$(prometheus_release "$PROMETHEUS_VERSION")"
    temp_dir tmp "$CACHE/.tmp-prometheus-$PROMETHEUS_VERSION.XXXXXX"
    log "prometheus and promtool $PROMETHEUS_VERSION ($release): building (module $moddir) ..."
    # One go build for both: they share almost every package. The server is
    # built without the builtinassets tag (no web UI; its HTTP API is all
    # the end-to-end scenario uses), and with the Kubernetes service
    # discovery only (the real-node test's; the cloud SDKs of the others
    # were most of a cold build).
    (
      cd "$moddir"
      GOTOOLCHAIN=local CGO_ENABLED=0 go build -trimpath -tags remove_all_sd,enable_kubernetes_sd \
        -ldflags "-s -w -X github.com/prometheus/common/version.Version=$release" \
        -o "$tmp/" github.com/prometheus/prometheus/cmd/promtool github.com/prometheus/prometheus/cmd/prometheus
    )
    [[ -x "$tmp/promtool" && -x "$tmp/prometheus" ]] || die "go build did not produce promtool and prometheus"
    printf '%s\n' "$PROMETHEUS_VERSION" >"$tmp/VERSION"
    cache_publish "$tmp" "$dest"
    log "prometheus and promtool $PROMETHEUS_VERSION: built in $((SECONDS - start))s -> $dest"
  fi
  printf '%s\n' "$dest"
}

# The source's header comment is its own; the rest is copied verbatim.
body_of() { sed '1,/^[^#]/{/^#/d}' "$1"; }
indent() { sed "s/^./$1&/"; }

render_prometheusrule() {
  cat <<'EOF'
# Generated from rules/kube-fencer.rules.yaml by harness/monitoring.sh render:
# edit that file, then render (./test.sh fails while the two differ).
# For prometheus-operator users (kubectl apply -f daemonset/monitoring/);
# without the operator, load rules/kube-fencer.rules.yaml as a rule file.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: kube-fencer
  namespace: kube-fencer
  labels:
    app.kubernetes.io/name: kube-fencer
spec:
EOF
  body_of "$RULES_SRC" | indent '  '
}

render_dashboard_configmap() {
  cat <<'EOF'
# Generated from grafana/dashboard.json by harness/monitoring.sh render: edit
# that file, then render (./test.sh fails while the two differ). Grafana's
# dashboard sidecar loads ConfigMaps labelled grafana_dashboard: "1" (from
# every namespace with searchNamespace: ALL, else apply it to Grafana's).
apiVersion: v1
kind: ConfigMap
metadata:
  name: kube-fencer-dashboard
  namespace: kube-fencer
  labels:
    app.kubernetes.io/name: kube-fencer
    grafana_dashboard: "1"
data:
  kube-fencer.json: |
EOF
  indent '    ' <"$DASHBOARD_SRC"
}

render() {
  render_prometheusrule >"$RULES_CR.tmp" && mv "$RULES_CR.tmp" "$RULES_CR"
  render_dashboard_configmap >"$DASHBOARD_CM.tmp" && mv "$DASHBOARD_CM.tmp" "$DASHBOARD_CM"
  render_prometheusrule >"$CHART_FILES/prometheusrule.yaml"
  cp "$DASHBOARD_SRC" "$CHART_FILES/grafana-dashboard.json"
  log "rendered ${RULES_CR#"$ROOT"/}, ${DASHBOARD_CM#"$ROOT"/} and the chart's copies in ${CHART_FILES#"$ROOT"/}"
}

check() {
  local failed=0 f
  # Derived files match their sources.
  if ! diff -u --label "${RULES_CR#"$ROOT"/} (committed)" --label "rendered from ${RULES_SRC#"$ROOT"/}" \
    "$RULES_CR" <(render_prometheusrule); then
    log "FAIL: ${RULES_CR#"$ROOT"/} differs from its source; run harness/monitoring.sh render"
    failed=1
  fi
  if ! diff -u --label "${DASHBOARD_CM#"$ROOT"/} (committed)" --label "rendered from ${DASHBOARD_SRC#"$ROOT"/}" \
    "$DASHBOARD_CM" <(render_dashboard_configmap); then
    log "FAIL: ${DASHBOARD_CM#"$ROOT"/} differs from its source; run harness/monitoring.sh render"
    failed=1
  fi
  if ! cmp -s "$CHART_FILES/prometheusrule.yaml" <(render_prometheusrule) ||
    ! cmp -s "$CHART_FILES/grafana-dashboard.json" "$DASHBOARD_SRC"; then
    log "FAIL: the chart's copies in ${CHART_FILES#"$ROOT"/} differ from their sources; run harness/monitoring.sh render"
    failed=1
  fi
  # The dashboard is valid JSON and templates its data source.
  if ! python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if any(v.get("name")=="datasource" and v.get("type")=="datasource" for v in d["templating"]["list"]) else 1)' "$DASHBOARD_SRC"; then
    log "FAIL: ${DASHBOARD_SRC#"$ROOT"/} is not valid JSON or has no datasource variable"
    failed=1
  fi
  # Every runbook_url points at a heading of README.md.
  local url anchor anchors
  anchors="$(grep -E '^#{2,4} ' "$ROOT/README.md" |
    sed -E 's/^#+ +//; s/[A-Z]/\L&/g; s/[^a-z0-9 _-]//g; s/ /-/g')"
  while read -r url; do
    anchor="${url##*#}"
    if ! grep -qxF -- "$anchor" <<<"$anchors"; then
      log "FAIL: runbook_url $url: README.md has no heading with anchor #$anchor"
      failed=1
    fi
  done < <(sed -n 's/^ *runbook_url: *//p' "$RULES_SRC" | tr -d "\"'")
  local alerts urls
  alerts="$(grep -c '^ *- alert:' "$RULES_SRC")"
  urls="$(grep -c '^ *runbook_url:' "$RULES_SRC")"
  if ((alerts == 0 || alerts != urls)); then
    log "FAIL: $alerts alerts but $urls runbook_url annotations in ${RULES_SRC#"$ROOT"/}"
    failed=1
  fi
  # `kubectl apply -f daemonset/monitoring/` reads every .yaml/.yml/.json
  # file directly in it: each must be a Kubernetes object.
  for f in "$MON"/*.yaml "$MON"/*.yml "$MON"/*.json; do
    [[ -e "$f" ]] || continue
    if ! grep -q '^apiVersion: ' "$f" || ! grep -q '^kind: ' "$f"; then
      log "FAIL: ${f#"$ROOT"/} is not a Kubernetes object, yet kubectl apply -f daemonset/monitoring/ reads it"
      failed=1
    fi
  done
  ((failed == 0)) || die "monitoring files check failed"
  log "check passed: derived files up to date, $alerts alerts with runbook anchors in README.md"
}

run_tests() {
  local promtool out start=$SECONDS
  check
  promtool="$(build | tail -n1)/promtool"
  "$promtool" check rules "$RULES_SRC"
  "$promtool" test rules "$RULES_TEST"
  # The metric names, labels and phases used by the dashboard, the rules and
  # the rule tests are those the agent registers (src/observability/metrics.rs); and
  # the agent's real exposition, as a leader and a follower render it during
  # a fencing, passes promtool's lint.
  temp_dir out "${TMPDIR:-/tmp}/kube-fencer-metrics.XXXXXX"
  (
    cd "$ROOT"
    KUBE_FENCER_METRICS_OUT="$out" cargo test --quiet --lib observability::metrics::tests::
  )
  local f lint rc=0
  for f in "$out"/*.prom; do
    [[ -e "$f" ]] || die "the metrics test wrote no exposition into $out"
    if ! lint="$("$promtool" check metrics <"$f" 2>&1)"; then
      printf '%s\n' "$lint" >&2
      log "FAIL: promtool check metrics on the ${f##*/} exposition"
      rc=1
    else
      log "promtool check metrics: ${f##*/} ($(grep -c '^# TYPE' "$f") families) clean"
    fi
  done
  ((rc == 0)) || die "promtool check metrics found problems"
  log "monitoring tests passed in $((SECONDS - start))s"
}

case "${1:-}" in
  build) build ;;
  render) render ;;
  check) check ;;
  test) run_tests ;;
  -h | --help) print_usage ;;
  *) print_usage; exit 2 ;;
esac
