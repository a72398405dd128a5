# shellcheck shell=bash
# Sourced by demo.sh and kind-chaos.sh: the workload both stop a node under.

# statefulset_manifest NAMESPACE NAME STORAGE_CLASS SIZE
# Prints a headless Service and a 3-replica StatefulSet (one replica per node
# where possible) with a volumeClaimTemplate "data". An empty STORAGE_CLASS
# uses the cluster's default class.
statefulset_manifest() {
  local ns="$1" name="$2" class="$3" size="$4" class_line=""
  [[ -n "$class" ]] && class_line="      storageClassName: $class"
  cat <<YAML
apiVersion: v1
kind: Service
metadata: {name: $name, namespace: $ns}
spec:
  clusterIP: None
  selector: {app: $name}
  ports: [{name: db, port: 5432}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: $name, namespace: $ns}
spec:
  serviceName: $name
  replicas: 3
  podManagementPolicy: Parallel
  selector: {matchLabels: {app: $name}}
  template:
    metadata: {labels: {app: $name}}
    spec:
      affinity:
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 100
            podAffinityTerm:
              topologyKey: kubernetes.io/hostname
              labelSelector: {matchLabels: {app: $name}}
      containers:
      - name: db
        image: registry.k8s.io/pause:3.10
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
$class_line
      resources: {requests: {storage: $size}}
YAML
}
