//! Executes the core's actions against the API: exact node writes with a
//! resourceVersion precondition (re-rendered against fresh facts on
//! conflict), and force-deletions that never hit a replacement.

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};

use super::facts::node_facts;
use super::is_status;
use super::patch::merge_patch;
use crate::decide::patch::{self, Skip};
use crate::decide::{NodeFacts, NodeIntent, Now, PodRef, Settings};
use crate::ops::Metrics;

/// How many times a node write is re-rendered and retried after a conflict.
pub const MAX_CONFLICT_RETRIES: usize = 5;

#[derive(Debug)]
pub enum NodeWrite {
    /// Patched; the API's answer.
    Written(Box<Node>),
    /// Nothing to write (rendered against the latest facts known).
    Skipped(Skip),
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("node {0} not found")]
    NodeGone(String),
    #[error("node {node} kept changing: gave up after {attempts} conflicting writes")]
    TooManyConflicts { node: String, attempts: usize },
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
    /// 409 on the UID precondition: a replacement reused the name; left alone.
    PreconditionFailed,
}

impl Deleted {
    pub fn as_label(self) -> &'static str {
        match self {
            Deleted::Deleted => "success",
            Deleted::NotFound => "not_found",
            Deleted::PreconditionFailed => "precondition_failed",
        }
    }
}

#[derive(Clone)]
pub struct Executor {
    client: Client,
    settings: Settings,
    metrics: Metrics,
}

impl Executor {
    pub fn new(client: Client, settings: Settings, metrics: Metrics) -> Self {
        Executor {
            client,
            settings,
            metrics,
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
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&body))
                .await
            {
                Ok(node) => return Ok(NodeWrite::Written(Box::new(node))),
                Err(e) if is_status(&e, 409) => {
                    tracing::debug!(node = %name, attempt, "node changed since it was read; re-reading");
                    match api.get_opt(&name).await {
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

    /// Force-delete a pod: grace period 0, UID precondition.
    pub async fn delete_pod(&self, pod: &PodRef) -> Result<Deleted, ExecError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
        let params = DeleteParams::default()
            .grace_period(0)
            .preconditions(Preconditions {
                uid: Some(pod.uid.clone()),
                resource_version: None,
            });
        match api.delete(&pod.name, &params).await {
            Ok(_) => Ok(Deleted::Deleted),
            Err(e) if is_status(&e, 404) => Ok(Deleted::NotFound),
            Err(e) if is_status(&e, 409) => Ok(Deleted::PreconditionFailed),
            Err(e) => Err(self.api_error("delete", "pods", e)),
        }
    }

    pub async fn delete_volume_attachment(&self, name: &str) -> Result<Deleted, ExecError> {
        let api: Api<VolumeAttachment> = Api::all(self.client.clone());
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(Deleted::Deleted),
            Err(e) if is_status(&e, 404) => Ok(Deleted::NotFound),
            Err(e) => Err(self.api_error("delete", "volumeattachments", e)),
        }
    }
}
