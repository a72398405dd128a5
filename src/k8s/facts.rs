//! Pure conversions from Kubernetes objects to the core's observations, and
//! the trimming applied to cached objects.

use k8s_openapi::api::core::v1::{Node, NodeCondition, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::ResourceExt;

use crate::decide::{
    self, ClaimObs, NodeFacts, OwnerRef, PodObs, Readiness, RecordState, Taint, VolumeAttachmentObs,
};

/// What the core needs to know about a Node, read from the object.
pub fn node_facts(node: &Node) -> NodeFacts {
    let spec = node.spec.as_ref();
    let annotations = node.metadata.annotations.as_ref();
    let record = match annotations.and_then(|a| a.get(decide::STATE_ANNOTATION)) {
        None => RecordState::Absent,
        Some(value) => decide::record::parse(value),
    };
    NodeFacts {
        name: node.name_any(),
        uid: node.metadata.uid.clone(),
        resource_version: node.metadata.resource_version.clone(),
        labels: node.metadata.labels.clone().unwrap_or_default(),
        unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
        taints: spec
            .and_then(|s| s.taints.as_ref())
            .map(|ts| {
                ts.iter()
                    .map(|t| Taint {
                        key: t.key.clone(),
                        value: t.value.clone().filter(|v| !v.is_empty()),
                        effect: t.effect.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        ready: readiness(node),
        record,
        agent: match annotations.and_then(|a| a.get(decide::AGENT_ANNOTATION)) {
            None => decide::AdvertState::Absent,
            Some(value) => decide::advert::parse(value),
        },
        unfence_requested: annotations
            .and_then(|a| a.get(decide::UNFENCE_ANNOTATION))
            .is_some_and(|v| v == "true"),
        addresses: addresses(node),
        kubelet_boot_id: node
            .status
            .as_ref()
            .and_then(|s| s.node_info.as_ref())
            .map(|i| i.boot_id.trim().to_string())
            .filter(|b| !b.is_empty()),
    }
}

/// The node's addresses, InternalIP first, then the others in order.
pub fn addresses(node: &Node) -> Vec<String> {
    let all = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .cloned()
        .unwrap_or_default();
    let mut out: Vec<String> = all
        .iter()
        .filter(|a| a.type_ == "InternalIP")
        .map(|a| a.address.clone())
        .collect();
    out.extend(
        all.iter()
            .filter(|a| a.type_ != "InternalIP")
            .map(|a| a.address.clone()),
    );
    out
}

/// The node's Ready condition; missing ⇒ Unknown.
pub fn readiness(node: &Node) -> Readiness {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
    match ready.map(|c| c.status.as_str()) {
        Some("True") => Readiness::True,
        Some("False") => Readiness::False,
        _ => Readiness::Unknown,
    }
}

/// Drop everything from a cached Node but labels, annotations,
/// resourceVersion, uid, `spec.taints`, `spec.unschedulable`, the Ready
/// condition (without its timestamps and message, which change often),
/// the addresses and `status.nodeInfo.bootID`.
pub fn trim_node(node: &mut Node) {
    let meta = &mut node.metadata;
    meta.managed_fields = None;
    meta.owner_references = None;
    meta.finalizers = None;
    if let Some(spec) = node.spec.as_mut() {
        spec.config_source = None;
        spec.external_id = None;
        spec.pod_cidr = None;
        spec.pod_cidrs = None;
        spec.provider_id = None;
    }
    if let Some(status) = node.status.take() {
        let ready: Option<NodeCondition> = status
            .conditions
            .and_then(|cs| cs.into_iter().find(|c| c.type_ == "Ready"))
            .map(|c| NodeCondition {
                type_: c.type_,
                status: c.status,
                reason: c.reason,
                ..Default::default()
            });
        node.status = Some(k8s_openapi::api::core::v1::NodeStatus {
            conditions: ready.map(|c| vec![c]),
            addresses: status.addresses,
            // Only the boot ID: it proves a reboot and dates the agent's advertisement.
            node_info: status
                .node_info
                .map(|i| k8s_openapi::api::core::v1::NodeSystemInfo {
                    boot_id: i.boot_id,
                    ..Default::default()
                }),
            ..Default::default()
        });
    }
}

/// Whether a claim's access modes make it ReadWriteOnce(Pod).
pub fn read_write_once(pvc: &PersistentVolumeClaim) -> bool {
    pvc.spec
        .as_ref()
        .and_then(|s| s.access_modes.as_ref())
        .is_some_and(|modes| {
            modes
                .iter()
                .any(|m| m == "ReadWriteOnce" || m == "ReadWriteOncePod")
        })
}

/// Names of the PersistentVolumeClaims a pod mounts.
pub fn pod_claim_names(pod: &Pod) -> Vec<String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .map(|vs| {
            vs.iter()
                .filter_map(|v| v.persistent_volume_claim.as_ref())
                .map(|c| c.claim_name.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// A pod as the core sees it; `claims` are resolved by the caller (in the
/// order of [`pod_claim_names`]).
pub fn pod_obs(pod: &Pod, claims: Vec<ClaimObs>) -> PodObs {
    let controller = pod
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| OwnerRef {
            api_version: o.api_version.clone(),
            kind: o.kind.clone(),
            name: o.name.clone(),
        });
    PodObs {
        namespace: pod.namespace().unwrap_or_default(),
        name: pod.name_any(),
        uid: pod.uid().unwrap_or_default(),
        resource_version: pod.resource_version(),
        node: pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default(),
        controller,
        claims,
    }
}

/// A claim as the core sees it; `pvc` is `None` when it could not be found.
pub fn claim_obs(name: &str, pvc: Option<&PersistentVolumeClaim>) -> ClaimObs {
    ClaimObs {
        claim: name.to_string(),
        volume: pvc
            .and_then(|p| p.spec.as_ref())
            .and_then(|s| s.volume_name.clone())
            .filter(|v| !v.is_empty()),
        // Unknown claims are treated as ReadWriteOnce: the cautious answer.
        read_write_once: pvc.is_none_or(read_write_once),
    }
}

pub fn volume_attachment_obs(va: &VolumeAttachment) -> VolumeAttachmentObs {
    VolumeAttachmentObs {
        name: va.name_any(),
        uid: va.metadata.uid.clone().unwrap_or_default(),
        resource_version: va.metadata.resource_version.clone(),
        node: va.spec.node_name.clone(),
        volume: va.spec.source.persistent_volume_name.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        NodeSpec, NodeStatus, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource,
        PodSpec, Volume,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
    use serde_json::json;

    fn node(value: serde_json::Value) -> Node {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn full_node() {
        let n = node(json!({
            "metadata": {
                "name": "worker-1",
                "resourceVersion": "42",
                "labels": {"pool": "a"},
                "managedFields": [{"manager": "kubelet"}],
            },
            "spec": {
                "unschedulable": true,
                "providerID": "aws:///eu/i-1",
                "taints": [
                    {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "timeAdded": "2025-01-01T00:00:00Z"},
                    {"key": "dedicated", "value": "db", "effect": "NoSchedule"},
                    {"key": "empty", "value": "", "effect": "NoSchedule"},
                ],
            },
            "status": {
                "conditions": [
                    {"type": "MemoryPressure", "status": "False"},
                    {"type": "Ready", "status": "False", "reason": "KubeletNotReady"},
                ],
                "images": [{"names": ["nginx"], "sizeBytes": 1}],
            },
        }));
        let f = node_facts(&n);
        assert_eq!(f.name, "worker-1");
        assert_eq!(f.resource_version.as_deref(), Some("42"));
        assert_eq!(f.labels.get("pool").map(String::as_str), Some("a"));
        assert!(f.unschedulable);
        assert_eq!(
            f.taints,
            vec![
                Taint {
                    key: "node.kubernetes.io/unreachable".into(),
                    value: None,
                    effect: "NoExecute".into()
                },
                Taint {
                    key: "dedicated".into(),
                    value: Some("db".into()),
                    effect: "NoSchedule".into()
                },
                Taint {
                    key: "empty".into(),
                    value: None,
                    effect: "NoSchedule".into()
                },
            ]
        );
        assert_eq!(f.ready, Readiness::False);
        assert_eq!(f.record, RecordState::Absent);
    }

    #[test]
    fn bare_node() {
        let n = node(json!({"metadata": {"name": "bare"}}));
        let f = node_facts(&n);
        assert_eq!(f.name, "bare");
        assert_eq!(f.resource_version, None);
        assert!(f.labels.is_empty());
        assert!(!f.unschedulable);
        assert!(f.taints.is_empty());
        assert_eq!(f.ready, Readiness::Unknown, "no Ready condition ⇒ Unknown");
        assert_eq!(f.record, RecordState::Absent);
    }

    #[test]
    fn ready_values() {
        for (status, want) in [
            ("True", Readiness::True),
            ("False", Readiness::False),
            ("Unknown", Readiness::Unknown),
            ("garbage", Readiness::Unknown),
        ] {
            let n = node(json!({
                "metadata": {"name": "n"},
                "status": {"conditions": [{"type": "Ready", "status": status}]},
            }));
            assert_eq!(readiness(&n), want, "{status}");
        }
    }

    #[test]
    fn malformed_record() {
        let n = node(json!({
            "metadata": {"name": "n", "annotations": {(decide::STATE_ANNOTATION): "{not json"}},
        }));
        assert!(matches!(node_facts(&n).record, RecordState::Malformed(_)));
    }

    #[test]
    fn valid_record_round_trips() {
        let rec = decide::FenceRecord {
            phase: decide::Phase::Fencing,
            fencing_since: std::time::SystemTime::UNIX_EPOCH
                + std::time::Duration::from_secs(1_700_000_000),
            fenced_at: None,
            cordoned: true,
            tainted: false,
            by: "kube-fencer-x".into(),
            boot_id: None,
            held_since: None,
        };
        let n = node(json!({
            "metadata": {"name": "n", "annotations": {(decide::STATE_ANNOTATION): decide::record::render(&rec)}},
        }));
        assert_eq!(node_facts(&n).record, RecordState::Valid(rec));
    }

    #[test]
    fn trim_keeps_what_matters() {
        let mut n = node(json!({
            "metadata": {
                "name": "n", "uid": "u1", "resourceVersion": "7",
                "labels": {"a": "b"}, "annotations": {"x": "y"},
                "managedFields": [{"manager": "kubelet"}],
            },
            "spec": {"unschedulable": true, "podCIDR": "10.0.0.0/24",
                     "taints": [{"key": "k", "effect": "NoSchedule"}]},
            "status": {
                "conditions": [
                    {"type": "DiskPressure", "status": "False"},
                    {"type": "Ready", "status": "True", "lastHeartbeatTime": "2025-01-01T00:00:00Z", "message": "ok"},
                ],
                "images": [{"names": ["nginx"], "sizeBytes": 1}],
                "capacity": {"cpu": "4"},
                "nodeInfo": {"bootID": "kubelet-boot-7", "machineID": "m", "kernelVersion": "6.1",
                             "osImage": "x", "containerRuntimeVersion": "c", "kubeletVersion": "v",
                             "kubeProxyVersion": "v", "operatingSystem": "linux",
                             "architecture": "amd64", "systemUUID": "s"},
            },
        }));
        let before = node_facts(&n);
        assert_eq!(before.kubelet_boot_id.as_deref(), Some("kubelet-boot-7"));
        trim_node(&mut n);
        assert_eq!(node_facts(&n), before);
        assert!(n.metadata.managed_fields.is_none());
        assert_eq!(n.metadata.uid.as_deref(), Some("u1"));
        let spec = n.spec.as_ref().unwrap();
        assert!(spec.pod_cidr.is_none());
        let status = n.status.as_ref().unwrap();
        assert!(status.images.is_none());
        assert!(status.capacity.is_none());
        let conds = status.conditions.as_ref().unwrap();
        assert_eq!(conds.len(), 1);
        assert_eq!(conds[0].type_, "Ready");
        assert!(conds[0].last_heartbeat_time.is_none());
        let info = status.node_info.as_ref().unwrap();
        assert_eq!(info.boot_id, "kubelet-boot-7");
        assert!(info.machine_id.is_empty() && info.kernel_version.is_empty());
        // An empty or missing bootID is no boot ID.
        let n = node(json!({"metadata": {"name": "n"}, "status": {"nodeInfo": {
            "bootID": " ", "machineID": "", "kernelVersion": "", "osImage": "",
            "containerRuntimeVersion": "", "kubeletVersion": "", "kubeProxyVersion": "",
            "operatingSystem": "", "architecture": "", "systemUUID": ""}}}));
        assert_eq!(node_facts(&n).kubelet_boot_id, None);
        let _ = (NodeSpec::default(), NodeStatus::default());
    }

    #[test]
    fn pods_and_claims() {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("db-0".into()),
                namespace: Some("prod".into()),
                uid: Some("uid-1".into()),
                owner_references: Some(vec![
                    OwnerReference {
                        api_version: "v1".into(),
                        kind: "Other".into(),
                        name: "x".into(),
                        uid: "o1".into(),
                        controller: None,
                        ..Default::default()
                    },
                    OwnerReference {
                        api_version: "apps/v1".into(),
                        kind: "StatefulSet".into(),
                        name: "db".into(),
                        uid: "o2".into(),
                        controller: Some(true),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("worker-1".into()),
                volumes: Some(vec![
                    Volume {
                        name: "data".into(),
                        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                            claim_name: "data-db-0".into(),
                            read_only: None,
                        }),
                        ..Default::default()
                    },
                    Volume {
                        name: "tmp".into(),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
            status: None,
        };
        assert_eq!(pod_claim_names(&pod), vec!["data-db-0".to_string()]);
        let pvc = PersistentVolumeClaim {
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOncePod".into()]),
                volume_name: Some("pv-1".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let claim = claim_obs("data-db-0", Some(&pvc));
        assert_eq!(claim.volume.as_deref(), Some("pv-1"));
        assert!(claim.read_write_once);
        let rwx = PersistentVolumeClaim {
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteMany".into()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let c2 = claim_obs("shared", Some(&rwx));
        assert!(!c2.read_write_once);
        assert_eq!(c2.volume, None);
        assert!(claim_obs("gone", None).read_write_once);

        let obs = pod_obs(&pod, vec![claim.clone()]);
        assert_eq!(obs.namespace, "prod");
        assert_eq!(obs.name, "db-0");
        assert_eq!(obs.uid, "uid-1");
        assert_eq!(obs.node, "worker-1");
        assert_eq!(
            obs.controller,
            Some(OwnerRef {
                api_version: "apps/v1".into(),
                kind: "StatefulSet".into(),
                name: "db".into()
            })
        );
        assert_eq!(obs.claims, vec![claim]);
    }

    #[test]
    fn volume_attachment() {
        let va: VolumeAttachment = serde_json::from_value(json!({
            "metadata": {"name": "csi-123", "uid": "va-uid-1", "resourceVersion": "7"},
            "spec": {"attacher": "ebs.csi.aws.com", "nodeName": "worker-1",
                     "source": {"persistentVolumeName": "pv-1"}},
        }))
        .unwrap();
        assert_eq!(
            volume_attachment_obs(&va),
            VolumeAttachmentObs {
                name: "csi-123".into(),
                uid: "va-uid-1".into(),
                resource_version: Some("7".into()),
                node: "worker-1".into(),
                volume: Some("pv-1".into())
            }
        );
    }
}
