//! Workloads: namespaces, the StatefulSet every scenario uses (from
//! harness/statefulset.yaml), Deployments and bare pods, and reading them back.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams};

use super::*;

impl Cluster {
    pub fn ensure_namespace(&self, ns: &str) -> Result<()> {
        self.apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"
        ))?;
        Ok(())
    }

    /// Create `replicas` static PVs pre-bound to `data-NAME-i` and a
    /// StatefulSet `NAME` with a `data` volumeClaimTemplate and its headless
    /// Service. Replicas prefer (not require) distinct nodes.
    pub fn deploy_statefulset(&self, ns: &str, name: &str, replicas: u32) -> Result<()> {
        self.ensure_namespace(ns)?;
        for i in 0..replicas {
            let pv = format!("{ns}-{name}-{i}");
            let claim = format!("{ns}/data-{name}-{i}");
            let mut cmd = self.script();
            cmd.arg("pv-create")
                .arg(&self.dir)
                .args([pv.as_str(), "1Gi", claim.as_str()]);
            tokio::task::block_in_place(|| run(&mut cmd))?;
        }
        self.apply(&statefulset_manifest(ns, name, replicas))?;
        Ok(())
    }

    /// A Deployment whose pods avoid the nodes in `avoid_nodes`.
    pub fn deploy_deployment(
        &self,
        ns: &str,
        name: &str,
        replicas: u32,
        avoid_nodes: &[&str],
    ) -> Result<()> {
        self.ensure_namespace(ns)?;
        let avoid = avoid_nodes
            .iter()
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let affinity = if avoid_nodes.is_empty() {
            String::new()
        } else {
            format!(
                "      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
            - matchExpressions:
              - key: kubernetes.io/hostname
                operator: NotIn
                values: [{avoid}]
"
            )
        };
        self.apply_deployment(ns, name, replicas, &affinity)
    }

    /// A one-replica Deployment whose pods must run on `node` (nodeSelector
    /// on the hostname label; the scheduler binds them, so a replacement of
    /// a removed pod stays Pending instead of being bound to a dead node).
    pub fn deploy_pinned_deployment(&self, ns: &str, name: &str, node: &str) -> Result<()> {
        self.ensure_namespace(ns)?;
        self.apply_deployment(
            ns,
            name,
            1,
            &format!("      nodeSelector:\n        kubernetes.io/hostname: \"{node}\"\n"),
        )
    }

    /// A Deployment of pause containers; `placement` is spliced into the
    /// pod spec before `containers:` (indented, newline-terminated).
    fn apply_deployment(&self, ns: &str, name: &str, replicas: u32, placement: &str) -> Result<()> {
        self.apply(&format!(
            "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {ns}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
{placement}      containers:
      - name: main
        image: registry.k8s.io/pause:3.10
"
        ))?;
        Ok(())
    }

    /// A bare pod bound straight to `node` (no controller, no scheduler).
    pub fn create_pod_on(&self, ns: &str, name: &str, node: &str) -> Result<()> {
        self.ensure_namespace(ns)?;
        self.apply(&format!(
            "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {ns}
  labels: {{app: {name}}}
spec:
  nodeName: {node}
  containers:
  - name: main
    image: registry.k8s.io/pause:3.10
"
        ))?;
        Ok(())
    }

    pub async fn pod(&self, ns: &str, name: &str) -> Result<Option<Pod>> {
        Ok(Api::<Pod>::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await?)
    }

    /// The node a pod is bound to (None if the pod does not exist or is unscheduled).
    pub async fn pod_node(&self, ns: &str, name: &str) -> Result<Option<String>> {
        Ok(self
            .pod(ns, name)
            .await?
            .and_then(|p| p.spec.and_then(|s| s.node_name)))
    }

    /// All pods (every namespace) bound to `node`.
    pub async fn pods_on_node(&self, node: &str) -> Result<Vec<Pod>> {
        let lp = ListParams::default().fields(&format!("spec.nodeName={node}"));
        Ok(Api::<Pod>::all(self.client.clone()).list(&lp).await?.items)
    }

    /// (namespace/name, uid) of every pod in the cluster.
    pub async fn pod_uids(&self) -> Result<BTreeMap<String, String>> {
        let pods = Api::<Pod>::all(self.client.clone())
            .list(&ListParams::default())
            .await?;
        Ok(pods
            .items
            .into_iter()
            .map(|p| {
                (
                    format!(
                        "{}/{}",
                        p.metadata.namespace.unwrap_or_default(),
                        p.metadata.name.unwrap_or_default()
                    ),
                    p.metadata.uid.unwrap_or_default(),
                )
            })
            .collect())
    }

    /// (name, uid) of a PVC.
    pub async fn pvc(&self, ns: &str, name: &str) -> Result<Option<(String, String)>> {
        Ok(
            Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), ns)
                .get_opt(name)
                .await?
                .map(|p| {
                    (
                        p.metadata.name.unwrap_or_default(),
                        p.metadata.uid.unwrap_or_default(),
                    )
                }),
        )
    }

    /// Wait until the StatefulSet's pods `NAME-0..` exist, are Running and
    /// Ready, and their PVCs are Bound; returns pod name -> node.
    pub async fn wait_statefulset_ready(
        &self,
        ns: &str,
        name: &str,
        replicas: u32,
        deadline: Duration,
    ) -> BTreeMap<String, String> {
        self.wait_until(
            &format!("StatefulSet {ns}/{name} to have {replicas} Running pods with Bound PVCs"),
            deadline,
            async || {
                let mut placement = BTreeMap::new();
                for i in 0..replicas {
                    let pod_name = format!("{name}-{i}");
                    let Some(pod) = self.pod(ns, &pod_name).await? else {
                        return Ok(None);
                    };
                    if !pod_running_ready(&pod) || pod.metadata.deletion_timestamp.is_some() {
                        return Ok(None);
                    }
                    let pvc = Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), ns)
                        .get_opt(&format!("data-{pod_name}"))
                        .await?;
                    let bound = pvc
                        .and_then(|p| p.status)
                        .and_then(|s| s.phase)
                        .is_some_and(|p| p == "Bound");
                    if !bound {
                        return Ok(None);
                    }
                    let node = pod.spec.and_then(|s| s.node_name).unwrap_or_default();
                    placement.insert(pod_name, node);
                }
                Ok(Some(placement))
            },
        )
        .await
    }
}

/// Headless Service + StatefulSet with a `data` volumeClaimTemplate.
pub fn statefulset_manifest(ns: &str, name: &str, replicas: u32) -> String {
    include_str!("../../../harness/statefulset.yaml")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("${NAMESPACE}", ns)
        .replace("${NAME}", name)
        .replace("${REPLICAS}", &replicas.to_string())
        .replace("${SIZE}", "1Gi")
        .replace("${STORAGE_CLASS}", "static")
}
