//! Recover: for a node observed as Fenced whose Lease is still stale,
//! force-delete its StatefulSet pods (and, if asked, pods with ReadWriteOnce
//! claims) so they restart elsewhere, and delete the VolumeAttachments that
//! keep their volumes bound to the dead node.

use std::collections::BTreeSet;

use super::{Action, AttachmentRef, Phase, PodObs, PodRef};
use super::{NodeView, Plan};

const STATEFULSET_API_VERSION: &str = "apps/v1";
const STATEFULSET_KIND: &str = "StatefulSet";

/// The owning StatefulSet's name, when the pod's controller is one.
pub fn statefulset_of(pod: &PodObs) -> Option<&str> {
    pod.controller
        .as_ref()
        .filter(|c| c.api_version == STATEFULSET_API_VERSION && c.kind == STATEFULSET_KIND)
        .map(|c| c.name.as_str())
}

pub(crate) fn plan(view: &NodeView<'_>, plan: &mut Plan<'_>) {
    if !view.scope.is_managed()
        || !view.stale
        || view.obs.facts.record.phase() != Some(Phase::Fenced)
    {
        return;
    }
    let name = view.name;
    if let Some((recorded, current)) = view.obs.facts.record_of_other_boot() {
        // Fenced in boot `recorded`, but the node has booted again since
        // (perhaps before its pods were deleted, so its kubelet may be
        // running them): `fence` restarts its fencing for this boot first.
        plan.warn(
            name,
            format!(
                "node {name} was marked fenced in boot {recorded} but has booted again since (boot {current}) and may be running its pods: nothing is deleted until this boot is fenced"
            ),
        );
        return;
    }
    let Some(pods) = plan.obs.pods.get(name) else {
        return;
    };
    let Some(hb) = view.obs.heartbeat else {
        return;
    };
    let anything = pods.iter().any(|p| {
        p.node == name
            && (statefulset_of(p).is_some()
                || (plan.settings.delete_pods_with_rwo_volumes
                    && p.claims.iter().any(|c| c.read_write_once)))
    });
    if anything && !plan.lease_confirmed(name, hb, "force-deleting the node's pods") {
        return;
    }
    let rwo_allowed = plan.settings.delete_pods_with_rwo_volumes;
    let mut seen = BTreeSet::new();
    let mut volumes = BTreeSet::new();
    for pod in pods {
        // Defence in depth: only ever a pod bound to this very node.
        if pod.node != name || !seen.insert(pod.uid.as_str()) {
            continue;
        }
        let statefulset = statefulset_of(pod);
        let rwo = rwo_allowed && pod.claims.iter().any(|c| c.read_write_once);
        let why = match (statefulset, rwo) {
            (Some(sts), _) => format!(
                "node {name} is fenced: force-deleting pod {}/{} of StatefulSet {sts} so it restarts on a healthy node",
                pod.namespace, pod.name
            ),
            (None, true) => format!(
                "node {name} is fenced: force-deleting pod {}/{}, which mounts a ReadWriteOnce volume (--delete-pods-with-rwo-volumes), so it restarts on a healthy node",
                pod.namespace, pod.name
            ),
            (None, false) => continue,
        };
        plan.actions.push(Action::DeletePod {
            node: name.to_string(),
            pod: PodRef {
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
                uid: pod.uid.clone(),
                resource_version: pod.resource_version.clone(),
                statefulset: statefulset.map(String::from),
            },
            why,
        });
        for claim in &pod.claims {
            if let Some(volume) = &claim.volume {
                volumes.insert((
                    volume.as_str(),
                    pod.namespace.as_str(),
                    claim.claim.as_str(),
                ));
            }
        }
    }
    let mut done = BTreeSet::new();
    for (volume, namespace, claim) in &volumes {
        for va in &plan.obs.volume_attachments {
            if va.node == name
                && va.volume.as_deref() == Some(*volume)
                && done.insert(va.name.as_str())
            {
                plan.actions.push(Action::DeleteVolumeAttachment {
                    node: name.to_string(),
                    attachment: AttachmentRef {
                        name: va.name.clone(),
                        uid: va.uid.clone(),
                        resource_version: va.resource_version.clone(),
                    },
                    volume: volume.to_string(),
                    why: format!(
                        "node {name} is fenced: detaching volume {volume} (claim {namespace}/{claim}) so it can attach to a healthy node"
                    ),
                });
            }
        }
    }
}
