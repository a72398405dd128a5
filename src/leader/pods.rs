//! Pods and VolumeAttachments of fenced nodes, listed only when the core
//! needs them (never watched), with a short cache so a fenced node that
//! stays fenced is not listed on every pass.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::Client;
use kube::api::{Api, ListParams};

use crate::decide::{PodObs, VolumeAttachmentObs};
use crate::k8s::facts::{claim_obs, pod_claim_names, pod_obs, volume_attachment_obs};
use crate::observability::Metrics;

/// Listings older than this are refreshed.
pub const REFRESH: Duration = Duration::from_secs(10);
/// How many nodes are listed concurrently.
const CONCURRENCY: usize = 4;

#[derive(Default)]
pub struct PodCache {
    pods: HashMap<String, (Instant, Vec<PodObs>)>,
    attachments: Option<(Instant, Vec<VolumeAttachmentObs>)>,
}

impl PodCache {
    /// Forget a node's pods (after deleting one of them).
    pub fn invalidate_node(&mut self, node: &str) {
        self.pods.remove(node);
    }

    pub fn invalidate_attachments(&mut self) {
        self.attachments = None;
    }

    /// Pods of `nodes` and the VolumeAttachments on them, listing what is
    /// missing or stale. An error leaves the node out (the core then does
    /// nothing for it this pass).
    pub async fn fetch(
        &mut self,
        client: &Client,
        nodes: &[String],
        metrics: &Metrics,
        now: Instant,
    ) -> (BTreeMap<String, Vec<PodObs>>, Vec<VolumeAttachmentObs>) {
        self.pods.retain(|n, _| nodes.contains(n));
        if nodes.is_empty() {
            self.attachments = None;
            return (BTreeMap::new(), Vec::new());
        }
        let stale: Vec<String> = nodes
            .iter()
            .filter(|n| {
                self.pods
                    .get(*n)
                    .is_none_or(|(at, _)| now.saturating_duration_since(*at) >= REFRESH)
            })
            .cloned()
            .collect();
        let listed: Vec<(String, Result<Vec<PodObs>, kube::Error>)> =
            futures::stream::iter(stale.into_iter().map(|node| {
                let client = client.clone();
                async move {
                    let r = list_node_pods(&client, &node).await;
                    (node, r)
                }
            }))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for (node, result) in listed {
            match result {
                Ok(pods) => {
                    self.pods.insert(node, (now, pods));
                }
                Err(e) => {
                    metrics.api_error("list", "pods");
                    tracing::warn!(node = %node, error = %e, "could not list the node's pods");
                    self.pods.remove(&node);
                }
            }
        }
        let stale_attachments = self
            .attachments
            .as_ref()
            .is_none_or(|(at, _)| now.saturating_duration_since(*at) >= REFRESH);
        if stale_attachments {
            let api: Api<VolumeAttachment> = Api::all(client.clone());
            match api.list(&ListParams::default()).await {
                Ok(list) => {
                    self.attachments =
                        Some((now, list.items.iter().map(volume_attachment_obs).collect()));
                }
                Err(e) => {
                    metrics.api_error("list", "volumeattachments");
                    tracing::warn!(error = %e, "could not list VolumeAttachments");
                    self.attachments = None;
                }
            }
        }
        let pods = nodes
            .iter()
            .filter_map(|n| self.pods.get(n).map(|(_, p)| (n.clone(), p.clone())))
            .collect();
        let attachments = self
            .attachments
            .as_ref()
            .map(|(_, all)| {
                all.iter()
                    .filter(|va| nodes.contains(&va.node))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        (pods, attachments)
    }
}

/// The pods bound to `node`, with their claims resolved.
pub async fn list_node_pods(client: &Client, node: &str) -> Result<Vec<PodObs>, kube::Error> {
    let api: Api<Pod> = Api::all(client.clone());
    let list = api
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await?;
    let mut claims: HashMap<(String, String), Option<PersistentVolumeClaim>> = HashMap::new();
    let mut out = Vec::with_capacity(list.items.len());
    for pod in &list.items {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let mut resolved = Vec::new();
        for claim in pod_claim_names(pod) {
            let key = (namespace.clone(), claim.clone());
            if !claims.contains_key(&key) {
                let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &namespace);
                let pvc = pvcs.get_opt(&claim).await?;
                claims.insert(key.clone(), pvc);
            }
            resolved.push(claim_obs(&claim, claims[&key].as_ref()));
        }
        out.push(pod_obs(pod, resolved));
    }
    Ok(out)
}
