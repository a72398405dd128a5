# shellcheck shell=bash
# Sourced by demo.sh and kind-chaos.sh: the workload both stop a node under.

# statefulset_manifest NAMESPACE NAME STORAGE_CLASS SIZE
# Prints harness/statefulset.yaml filled in: a headless Service and a
# 3-replica StatefulSet (one replica per node where possible) with a
# volumeClaimTemplate "data". An empty STORAGE_CLASS uses the cluster's
# default class.
statefulset_manifest() {
  local ns="$1" name="$2" class="$3" size="$4" template
  template="$(dirname "${BASH_SOURCE[0]}")/statefulset.yaml"
  # ${STORAGE_CLASS} is the template's placeholder, matched literally.
  # shellcheck disable=SC2016
  local -a class_expr=(-e '/storageClassName: ${STORAGE_CLASS}$/d')
  [[ -n "$class" ]] && class_expr=(-e "s|\${STORAGE_CLASS}|$class|")
  sed -e '/^#/d' "${class_expr[@]}" \
    -e "s|\${NAMESPACE}|$ns|g; s|\${NAME}|$name|g; s|\${REPLICAS}|3|g; s|\${SIZE}|$size|g" \
    "$template"
}
