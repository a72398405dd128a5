//! Turns a rendered [`NodePatch`] into the JSON merge patch sent to the API.

use std::time::SystemTime;

use k8s_openapi::api::core::v1::Taint as K8sTaint;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Map, Value, json};

use crate::decide::leader::patch::NodePatch;
use crate::decide::{self, Phase, Taint};

/// The phase label value for a record phase.
pub fn phase_label(phase: Phase) -> &'static str {
    match phase {
        Phase::Fencing => "fencing",
        Phase::Fenced => "fenced",
    }
}

/// Build the JSON merge patch for `patch`.
///
/// - `metadata.resourceVersion` carries the precondition (the API server
///   answers 409 Conflict if the node changed since).
/// - `spec.taints` is written whole (it is an atomic list). `timeAdded` is kept
///   from `current` for taints that stay, and set to `now` for new `NoExecute`
///   taints (as `kubectl taint` does).
pub fn merge_patch(patch: &NodePatch, current: &[K8sTaint], now: SystemTime) -> Value {
    let mut metadata = Map::new();
    if let Some(rv) = &patch.resource_version {
        metadata.insert("resourceVersion".into(), json!(rv));
    }
    let mut annotations = Map::new();
    if let Some(record) = &patch.record {
        let (annotation, label) = match record {
            Some(r) => (
                json!(decide::record::render(r)),
                json!(phase_label(r.phase)),
            ),
            None => (Value::Null, Value::Null),
        };
        annotations.insert(decide::STATE_ANNOTATION.into(), annotation);
        metadata.insert("labels".into(), json!({ decide::PHASE_LABEL: label }));
    }
    if patch.clear_unfence_request {
        annotations.insert(decide::UNFENCE_ANNOTATION.into(), Value::Null);
    }
    if !annotations.is_empty() {
        metadata.insert("annotations".into(), Value::Object(annotations));
    }
    let mut spec = Map::new();
    if let Some(unschedulable) = patch.unschedulable {
        spec.insert(
            "unschedulable".into(),
            if unschedulable {
                json!(true)
            } else {
                Value::Null
            },
        );
    }
    if let Some(taints) = &patch.taints {
        if taints.is_empty() {
            spec.insert("taints".into(), Value::Null);
        } else {
            let list: Vec<Value> = taints.iter().map(|t| taint_json(t, current, now)).collect();
            spec.insert("taints".into(), Value::Array(list));
        }
    }
    let mut root = Map::new();
    root.insert("metadata".into(), Value::Object(metadata));
    if !spec.is_empty() {
        root.insert("spec".into(), Value::Object(spec));
    }
    Value::Object(root)
}

fn same(t: &Taint, k: &K8sTaint) -> bool {
    t.key == k.key
        && t.effect == k.effect
        && t.value.as_deref().unwrap_or("") == k.value.as_deref().unwrap_or("")
}

fn taint_json(t: &Taint, current: &[K8sTaint], now: SystemTime) -> Value {
    let mut out = K8sTaint {
        key: t.key.clone(),
        value: t.value.clone(),
        effect: t.effect.clone(),
        time_added: None,
    };
    if let Some(existing) = current.iter().find(|k| same(t, k)) {
        out.time_added = existing.time_added.clone();
    } else if t.effect == "NoExecute" {
        out.time_added = k8s_openapi::jiff::Timestamp::try_from(now).ok().map(Time);
    }
    serde_json::to_value(out).expect("taint serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::FenceRecord;
    use std::time::Duration;

    fn t(key: &str, value: Option<&str>, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: value.map(Into::into),
            effect: effect.into(),
        }
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn cordon_and_record() {
        let record = FenceRecord {
            phase: Phase::Fencing,
            fencing_since: at(1_700_000_000),
            fenced_at: None,
            cordoned: true,
            tainted: false,
            by: "kube-fencer-a".into(),
            boot_id: None,
            held_since: None,
        };
        let p = NodePatch {
            resource_version: Some("12".into()),
            unschedulable: Some(true),
            taints: None,
            record: Some(Some(record.clone())),
            clear_unfence_request: false,
        };
        let v = merge_patch(&p, &[], at(0));
        assert_eq!(
            v,
            json!({
                "metadata": {
                    "resourceVersion": "12",
                    "annotations": {"kube-fencer.io/state": decide::record::render(&record)},
                    "labels": {"kube-fencer.io/phase": "fencing"},
                },
                "spec": {"unschedulable": true},
            })
        );
    }

    #[test]
    fn taints_keep_time_added_and_stamp_new_no_execute() {
        let existing: Vec<K8sTaint> = serde_json::from_value(json!([
            {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "timeAdded": "2025-01-01T00:00:00Z"},
            {"key": "dedicated", "value": "db", "effect": "NoSchedule"},
        ]))
        .unwrap();
        let p = NodePatch {
            resource_version: Some("5".into()),
            unschedulable: None,
            taints: Some(vec![
                t("node.kubernetes.io/unreachable", None, "NoExecute"),
                t("dedicated", Some("db"), "NoSchedule"),
                Taint::out_of_service(),
            ]),
            record: None,
            clear_unfence_request: false,
        };
        let v = merge_patch(&p, &existing, at(1_700_000_000));
        assert_eq!(
            v,
            json!({
                "metadata": {"resourceVersion": "5"},
                "spec": {"taints": [
                    {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "timeAdded": "2025-01-01T00:00:00Z"},
                    {"key": "dedicated", "value": "db", "effect": "NoSchedule"},
                    {"key": "node.kubernetes.io/out-of-service", "value": "nodeshutdown", "effect": "NoExecute", "timeAdded": "2023-11-14T22:13:20Z"},
                ]},
            })
        );
    }

    #[test]
    fn unfence_removes_everything() {
        let p = NodePatch {
            resource_version: Some("9".into()),
            unschedulable: Some(false),
            taints: Some(vec![]),
            record: Some(None),
            clear_unfence_request: false,
        };
        assert_eq!(
            merge_patch(&p, &[], at(0)),
            json!({
                "metadata": {
                    "resourceVersion": "9",
                    "annotations": {"kube-fencer.io/state": null},
                    "labels": {"kube-fencer.io/phase": null},
                },
                "spec": {"unschedulable": null, "taints": null},
            })
        );
    }

    #[test]
    fn fenced_label() {
        assert_eq!(phase_label(Phase::Fenced), "fenced");
        assert_eq!(phase_label(Phase::Fencing), "fencing");
    }
}
