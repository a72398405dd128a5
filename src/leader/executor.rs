//! Executes the core's actions against the API: exact node writes with a
//! resourceVersion precondition (re-rendered against fresh facts on
//! conflict), and force-deletions that never hit a replacement.

use std::future::Future;
use std::time::Instant;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};

use crate::decide::leader::patch::{self, Skip};
use crate::decide::{AttachmentRef, NodeFacts, NodeIntent, Now, PodRef, Settings};
use crate::k8s::NODE_LEASE_NAMESPACE;
use crate::k8s::election::Leadership;
use crate::k8s::facts::node_facts;
use crate::k8s::is_status;
use crate::leader::merge_patch::merge_patch;
use crate::observability::Metrics;

/// How many times a node write is re-rendered and retried after a conflict.
pub const MAX_CONFLICT_RETRIES: usize = 5;

#[derive(Debug)]
pub enum NodeWrite {
    /// Patched; the API's answer.
    Written(Box<Node>),
    /// Nothing to write (rendered against the latest facts known).
    Skipped(Skip),
    /// Dry run: it would have been written; nothing was sent.
    DryRun,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("node {0} not found")]
    NodeGone(String),
    #[error("node {node} kept changing: gave up after {attempts} conflicting writes")]
    TooManyConflicts { node: String, attempts: usize },
    /// Leadership is not (or no longer) confirmed: the request was not
    /// sent, or was abandoned when leadership ran out while it was in flight.
    #[error(
        "{verb} {resource} not done: leadership is not confirmed (a deposed leader writes nothing)"
    )]
    NotLeader {
        verb: &'static str,
        resource: &'static str,
    },
    #[error("{verb} {resource} failed: {source}")]
    Api {
        verb: &'static str,
        resource: &'static str,
        #[source]
        source: kube::Error,
    },
}

/// Outcome of a delete that is fine either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deleted {
    Deleted,
    /// 404: already gone.
    NotFound,
    /// 409 on the UID or resourceVersion precondition: a replacement reused
    /// the name, or the object changed since it was listed; left alone (it
    /// is listed again and judged again).
    PreconditionFailed,
    /// Dry run: it would have been deleted; nothing was sent.
    DryRun,
}

impl Deleted {
    pub fn as_label(self) -> &'static str {
        match self {
            Deleted::Deleted => "success",
            Deleted::NotFound => "not_found",
            Deleted::PreconditionFailed => "precondition_failed",
            Deleted::DryRun => "dry_run",
        }
    }
}

#[derive(Clone)]
pub struct Executor {
    client: Client,
    settings: Settings,
    metrics: Metrics,
    leadership: Leadership,
}

impl Executor {
    pub fn new(
        client: Client,
        settings: Settings,
        metrics: Metrics,
        leadership: Leadership,
    ) -> Self {
        Executor {
            client,
            settings,
            metrics,
            leadership,
        }
    }

    /// One request, bounded by the remaining leadership validity: not sent
    /// when leadership is not confirmed, abandoned when it runs out first.
    async fn bounded<T>(
        &self,
        verb: &'static str,
        resource: &'static str,
        request: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<Result<T, kube::Error>, ExecError> {
        let Some(left) = self.leadership.remaining(Instant::now()) else {
            return Err(ExecError::NotLeader { verb, resource });
        };
        match tokio::time::timeout(left, request).await {
            Ok(result) => Ok(result),
            Err(_) => {
                tracing::warn!(
                    verb,
                    resource,
                    "leadership ran out while the request was in flight: abandoned"
                );
                Err(ExecError::NotLeader { verb, resource })
            }
        }
    }

    /// A consistent read (a GET, served from etcd, not a watch cache) of a
    /// node's Lease: its resourceVersion, `None` when it does not exist.
    pub async fn read_lease(&self, node: &str) -> Result<Option<String>, ExecError> {
        let api: Api<kube::core::PartialObjectMeta<Lease>> =
            Api::namespaced(self.client.clone(), NODE_LEASE_NAMESPACE);
        match self
            .bounded("get", "leases", api.get_metadata_opt(node))
            .await?
        {
            Ok(lease) => Ok(lease.map(|l| l.metadata.resource_version.unwrap_or_default())),
            Err(e) => Err(self.api_error("get", "leases", e)),
        }
    }

    fn api_error(
        &self,
        verb: &'static str,
        resource: &'static str,
        source: kube::Error,
    ) -> ExecError {
        self.metrics.api_error(verb, resource);
        ExecError::Api {
            verb,
            resource,
            source,
        }
    }

    /// Render `intent` against `facts` and patch the node; on 409 Conflict
    /// GET the node, re-render against the fresh facts and retry (bounded).
    pub async fn update_node(
        &self,
        intent: &NodeIntent,
        facts: &NodeFacts,
        taints: &[k8s_openapi::api::core::v1::Taint],
        now: Now,
    ) -> Result<NodeWrite, ExecError> {
        let api: Api<Node> = Api::all(self.client.clone());
        let name = facts.name.clone();
        let mut facts = facts.clone();
        let mut taints = taints.to_vec();
        for attempt in 1..=MAX_CONFLICT_RETRIES {
            let rendered = match patch::render(intent, &facts, now, &self.settings) {
                Ok(p) => p,
                Err(skip) => return Ok(NodeWrite::Skipped(skip)),
            };
            let body = merge_patch(&rendered, &taints, now.wall);
            let patch_params = PatchParams::default();
            let patch = Patch::Merge(&body);
            match self
                .bounded("patch", "nodes", api.patch(&name, &patch_params, &patch))
                .await?
            {
                Ok(node) => return Ok(NodeWrite::Written(Box::new(node))),
                Err(e) if is_status(&e, 409) => {
                    tracing::debug!(node = %name, attempt, "node changed since it was read; re-reading");
                    // `bounded` re-checks leadership before the re-read and
                    // before the retried write: a leader deposed meanwhile
                    // stops here.
                    match self.bounded("get", "nodes", api.get_opt(&name)).await? {
                        Ok(Some(fresh)) => {
                            facts = node_facts(&fresh);
                            taints = fresh
                                .spec
                                .as_ref()
                                .and_then(|s| s.taints.clone())
                                .unwrap_or_default();
                        }
                        Ok(None) => return Err(ExecError::NodeGone(name)),
                        Err(e) => return Err(self.api_error("get", "nodes", e)),
                    }
                }
                Err(e) if is_status(&e, 404) => return Err(ExecError::NodeGone(name)),
                Err(e) => return Err(self.api_error("patch", "nodes", e)),
            }
        }
        Err(ExecError::TooManyConflicts {
            node: name,
            attempts: MAX_CONFLICT_RETRIES,
        })
    }

    /// Force-delete a pod: grace period 0, UID and resourceVersion
    /// preconditions (exactly the pod as it was listed; a pod changed since
    /// is re-listed and judged again).
    pub async fn delete_pod(&self, pod: &PodRef) -> Result<Deleted, ExecError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
        let params = DeleteParams::default()
            .grace_period(0)
            .preconditions(exactly(&pod.uid, &pod.resource_version));
        self.delete(&api, "pods", &pod.name, &params).await
    }

    /// Delete a VolumeAttachment with UID and resourceVersion preconditions
    /// (exactly the attachment as it was listed; one replaced or changed
    /// since is re-listed and judged again).
    pub async fn delete_volume_attachment(
        &self,
        attachment: &AttachmentRef,
    ) -> Result<Deleted, ExecError> {
        let api: Api<VolumeAttachment> = Api::all(self.client.clone());
        let params = DeleteParams::default()
            .preconditions(exactly(&attachment.uid, &attachment.resource_version));
        self.delete(&api, "volumeattachments", &attachment.name, &params)
            .await
    }

    /// A preconditioned delete: 404 (already gone) and 409 (the
    /// precondition failed: replaced or changed since it was listed) are
    /// outcomes, not errors.
    async fn delete<K>(
        &self,
        api: &Api<K>,
        resource: &'static str,
        name: &str,
        params: &DeleteParams,
    ) -> Result<Deleted, ExecError>
    where
        K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        match self
            .bounded("delete", resource, api.delete(name, params))
            .await?
        {
            Ok(_) => Ok(Deleted::Deleted),
            Err(e) if is_status(&e, 404) => Ok(Deleted::NotFound),
            Err(e) if is_status(&e, 409) => Ok(Deleted::PreconditionFailed),
            Err(e) => Err(self.api_error("delete", resource, e)),
        }
    }
}

/// Preconditions of a delete: exactly the object as it was listed.
fn exactly(uid: &str, resource_version: &Option<String>) -> Preconditions {
    Preconditions {
        uid: Some(uid.to_string()),
        resource_version: resource_version.clone(),
    }
}

#[cfg(test)]
mod tests;
