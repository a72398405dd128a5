//! What the leader says about each outcome of its actions: one call per
//! outcome emits its metric, its log line and its Event, for a real write and
//! a dry run alike (a dry run's Events are Normal, prefixed `DryRun`, and say
//! "would …").

use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;

use crate::decide::leader::patch::Skip;
use crate::decide::{NodeIntent, PodRef, RecordState, Warning};
use crate::leader::executor::{Deleted, ExecError, NodeWrite};
use crate::leader::fence_command::Outcome;
use crate::leader::index::LeaseRead;
use crate::leader::writer::FenceStart;
use crate::observability::events::{node_ref, statefulset_ref};
use crate::observability::{EventSink, Metrics};

/// The node an outcome is about: name and UID (for its Events).
#[derive(Clone, Copy, Debug)]
pub struct About<'a> {
    pub node: &'a str,
    pub uid: Option<&'a str>,
}

impl About<'_> {
    fn reference(&self) -> ObjectReference {
        node_ref(self.node, self.uid)
    }

    fn warning(&self, message: String) -> Option<Warning> {
        Some(Warning {
            node: Some(self.node.to_string()),
            message,
        })
    }
}

#[derive(Clone)]
pub struct Telemetry {
    pub metrics: Metrics,
    pub events: EventSink,
}

/// `DryRun` + name for a dry run's Event reason and action.
fn dry(name: &str) -> String {
    format!("DryRun{name}")
}

impl Telemetry {
    /// A node update. Returns the warning to report when it failed.
    pub fn node_update(
        &self,
        about: About<'_>,
        intent: &NodeIntent,
        before: &RecordState,
        why: &str,
        result: &Result<NodeWrite, ExecError>,
    ) -> Option<Warning> {
        let (node, op, reason) = (about.node, intent.operation(), intent.reason(before));
        let count = |result: &str| {
            self.metrics
                .fencing_operations
                .with_label_values(&[op, result])
                .inc()
        };
        match result {
            Ok(NodeWrite::Written(_)) => {
                count("success");
                tracing::warn!(node = %node, operation = op, reason, why = %why, "node updated");
                self.events.warning_or_normal(
                    intent.is_warning(),
                    about.reference(),
                    reason,
                    intent.action(),
                    why,
                );
                None
            }
            Ok(NodeWrite::DryRun) => {
                count("dry_run");
                tracing::warn!(node = %node, operation = op, reason, why = %why, dry_run = true, "dry run: would update node");
                self.events.normal(
                    about.reference(),
                    &dry(reason),
                    &dry(intent.action()),
                    &format!("would {}: {why}", intent.description()),
                );
                None
            }
            Ok(NodeWrite::Skipped(Skip::AlreadyDone)) => {
                count("skipped");
                tracing::debug!(node = %node, operation = op, "node already as intended");
                None
            }
            Ok(NodeWrite::Skipped(Skip::NoLongerApplies(r))) => {
                count("skipped");
                tracing::info!(node = %node, operation = op, reason = %r, "node update no longer applies");
                None
            }
            Err(e) => {
                count("error");
                tracing::warn!(node = %node, operation = op, error = %e, "node update failed");
                about.warning(format!("{reason} failed: {e}"))
            }
        }
    }

    /// A pod force-deletion. Returns the warning to report when it failed.
    pub fn pod_delete(
        &self,
        about: About<'_>,
        pod: &PodRef,
        why: &str,
        result: &Result<Deleted, ExecError>,
    ) -> Option<Warning> {
        let node = about.node;
        let (ns, name, uid) = (&pod.namespace, &pod.name, &pod.uid);
        let label = result.as_ref().map_or("error", |d| d.as_label());
        self.metrics
            .pods_force_deleted
            .with_label_values(&[label])
            .inc();
        let (reason, action, note) = match result {
            Ok(Deleted::Deleted) => {
                tracing::warn!(node = %node, namespace = %ns, pod = %name, uid = %uid, why = %why, "pod force-deleted");
                (
                    "PodForceDeleted".to_string(),
                    "ForceDelete".to_string(),
                    format!("force-deleted pod {ns}/{name}: {why}"),
                )
            }
            Ok(Deleted::DryRun) => {
                tracing::warn!(node = %node, namespace = %ns, pod = %name, uid = %uid, why = %why, dry_run = true, "dry run: would force-delete pod");
                (
                    dry("PodForceDeleted"),
                    dry("ForceDelete"),
                    format!("would force-delete pod {ns}/{name}: {why}"),
                )
            }
            Ok(other) => {
                tracing::info!(node = %node, namespace = %ns, pod = %name, uid = %uid, result = other.as_label(), "pod already gone or replaced; left alone");
                return None;
            }
            Err(e) => {
                tracing::warn!(node = %node, namespace = %ns, pod = %name, error = %e, "pod force-delete failed");
                return about.warning(format!("force-deleting pod {ns}/{name} failed: {e}"));
            }
        };
        self.events
            .normal(about.reference(), &reason, &action, &note);
        if let Some(sts) = &pod.statefulset {
            self.events
                .normal(statefulset_ref(ns, sts), &reason, &action, &note);
        }
        None
    }

    /// A VolumeAttachment deletion. Returns the warning to report when it failed.
    pub fn attachment_delete(
        &self,
        about: About<'_>,
        name: &str,
        volume: &str,
        why: &str,
        result: &Result<Deleted, ExecError>,
    ) -> Option<Warning> {
        let node = about.node;
        let label = result.as_ref().map_or("error", |d| d.as_label());
        self.metrics
            .volume_attachments_deleted
            .with_label_values(&[label])
            .inc();
        match result {
            Ok(Deleted::Deleted) => {
                tracing::warn!(node = %node, volume_attachment = %name, volume = %volume, why = %why, "VolumeAttachment deleted");
                self.events.normal(
                    about.reference(),
                    "VolumeAttachmentDeleted",
                    "Delete",
                    &format!("deleted VolumeAttachment {name} (volume {volume}): {why}"),
                );
            }
            Ok(Deleted::DryRun) => {
                tracing::warn!(node = %node, volume_attachment = %name, volume = %volume, why = %why, dry_run = true, "dry run: would delete VolumeAttachment");
                self.events.normal(
                    about.reference(),
                    &dry("VolumeAttachmentDeleted"),
                    &dry("Delete"),
                    &format!("would delete VolumeAttachment {name} (volume {volume}): {why}"),
                );
            }
            Ok(other) => {
                tracing::info!(node = %node, volume_attachment = %name, result = other.as_label(), "VolumeAttachment already gone, or replaced or changed since it was listed; left alone");
            }
            Err(e) => {
                tracing::warn!(node = %node, volume_attachment = %name, error = %e, "VolumeAttachment delete failed");
                return about.warning(format!("deleting VolumeAttachment {name} failed: {e}"));
            }
        }
        None
    }

    /// A consistent read of a node's Lease. Returns the warning to report when it failed.
    pub fn lease_read(&self, node: &str, result: &Result<LeaseRead, ExecError>) -> Option<Warning> {
        match result {
            Ok(LeaseRead::Renewed) => tracing::warn!(
                node = %node,
                "the node's Lease was renewed although the watch had not shown it (stale or stalled watch): treated as a fresh renewal, nothing irreversible done"
            ),
            Ok(LeaseRead::Gone) => tracing::warn!(node = %node, "the node's Lease is gone"),
            Ok(LeaseRead::Unchanged) => {}
            Err(e) => {
                return Some(Warning {
                    node: Some(node.to_string()),
                    message: format!(
                        "re-reading node {node}'s Lease before an irreversible step failed: {e}; nothing irreversible is done until it succeeds"
                    ),
                });
            }
        }
        None
    }

    /// A fence command run handed over (or not).
    pub fn fence_started(
        &self,
        about: About<'_>,
        attempt: u32,
        addresses: &[String],
        why: &str,
        start: FenceStart,
    ) {
        let node = about.node;
        match start {
            FenceStart::Started => {
                tracing::warn!(node = %node, attempt, addresses = ?addresses, why = %why, "running --fence-command")
            }
            FenceStart::DryRun => {
                tracing::warn!(node = %node, attempt, why = %why, dry_run = true, "dry run: would run --fence-command");
                self.events.normal(
                    about.reference(),
                    &dry("FenceCommand"),
                    &dry("FenceCommand"),
                    &format!("would run --fence-command: {why}"),
                );
            }
            FenceStart::NoCommand => {}
        }
    }

    /// A fence command run finished.
    pub fn fence_finished(&self, about: About<'_>, attempt: u32, outcome: &Outcome) {
        let node = about.node;
        self.metrics
            .fence_commands
            .with_label_values(&[outcome.as_label()])
            .inc();
        match outcome {
            Outcome::Success => {
                tracing::warn!(node = %node, attempt, "--fence-command exited 0: the node is powered off");
                self.events.normal(
                    about.reference(),
                    "FenceCommandSucceeded",
                    "FenceCommand",
                    &format!(
                        "--fence-command exited 0 (attempt {attempt}): the node is powered off"
                    ),
                );
            }
            other => {
                tracing::error!(node = %node, attempt, outcome = ?other, "--fence-command FAILED: the node is not known to be off; nothing is deleted, retrying with backoff");
                self.events.warning(
                    about.reference(),
                    "FenceCommandFailed",
                    "FenceCommand",
                    &format!(
                        "--fence-command failed (attempt {attempt}): {other:?}; nothing is deleted, retrying with backoff"
                    ),
                );
            }
        }
    }

    /// A fenced node's pods were released this long after its last heartbeat.
    pub fn recovered(&self, since_heartbeat: Duration) {
        self.metrics
            .recovery_seconds
            .observe(since_heartbeat.as_secs_f64());
    }
}
