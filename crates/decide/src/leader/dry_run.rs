//! Dry run: the shell writes nothing, but overlays what it *would* have
//! written on its observations, so a dry run walks through the same phases
//! and reports the same decisions as a real run.

use std::collections::{BTreeMap, BTreeSet};

use super::{Action, NodeFacts, NodeIntent, Now, Observations, Settings, patch};

#[derive(Clone, Debug, Default)]
pub struct Overlay {
    /// Simulated node facts that replace the observed ones.
    pub nodes: BTreeMap<String, NodeFacts>,
    /// UIDs of pods that would have been deleted.
    pub deleted_pods: BTreeSet<String>,
    /// Names of VolumeAttachments that would have been deleted.
    pub deleted_attachments: BTreeSet<String>,
}

impl Overlay {
    /// Replace observed facts with simulated ones and hide what would be gone.
    ///
    /// Apply it before [`super::nodes_needing_pods`] (a node the dry run
    /// only pretends to have fenced needs its pods listed too), and again
    /// after adding the listed pods and VolumeAttachments (to hide the
    /// deleted ones). Applying it twice is harmless.
    pub fn apply(&self, obs: &mut Observations) {
        for (name, simulated) in &self.nodes {
            if let Some(node) = obs.nodes.get_mut(name) {
                node.facts.unschedulable = simulated.unschedulable;
                node.facts.taints = simulated.taints.clone();
                node.facts.record = simulated.record.clone();
            }
        }
        for pods in obs.pods.values_mut() {
            pods.retain(|p| !self.deleted_pods.contains(&p.uid));
        }
        obs.volume_attachments
            .retain(|va| !self.deleted_attachments.contains(&va.name));
    }

    /// Remember the effect of actions that were not executed.
    pub fn record(
        &mut self,
        actions: &[Action],
        obs: &Observations,
        now: Now,
        settings: &Settings,
    ) {
        for action in actions {
            match action {
                Action::UpdateNode { node, intent, .. } => {
                    let Some(current) = self
                        .nodes
                        .get(node)
                        .or_else(|| obs.nodes.get(node).map(|n| &n.facts))
                    else {
                        continue;
                    };
                    let Ok(p) = patch::render(intent, current, now, settings) else {
                        continue;
                    };
                    let after = patch::apply(current, &p);
                    if *intent == NodeIntent::Unfence {
                        // Back to the observed state: let observations show through again.
                        self.nodes.remove(node);
                    } else {
                        self.nodes.insert(node.clone(), after);
                    }
                }
                Action::DeletePod { pod, .. } => {
                    self.deleted_pods.insert(pod.uid.clone());
                }
                Action::DeleteVolumeAttachment { attachment, .. } => {
                    self.deleted_attachments.insert(attachment.name.clone());
                }
                // No simulated effect: a dry run never learns whether the node is off.
                Action::RunFenceCommand { .. } | Action::ConfirmLease { .. } => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use crate::{NodeObs, PodObs, RecordState, Taint, VolumeAttachmentObs};

    fn update(node: &str, intent: NodeIntent) -> Action {
        Action::UpdateNode {
            node: node.into(),
            intent,
            why: String::new(),
        }
    }

    fn observed() -> Observations {
        let mut obs = Observations {
            synced: true,
            ..Default::default()
        };
        let mut f = facts("n1");
        f.labels.insert("zone".into(), "a".into());
        f.taints = vec![Taint {
            key: "team".into(),
            value: None,
            effect: "NoSchedule".into(),
        }];
        obs.nodes.insert(
            "n1".into(),
            NodeObs {
                facts: f,
                heartbeat: None,
                ready_since: None,
                boot_since: None,
            },
        );
        obs.pods.insert(
            "n1".into(),
            ["u1", "u2"]
                .iter()
                .map(|uid| PodObs {
                    namespace: "ns".into(),
                    name: uid.to_string(),
                    uid: uid.to_string(),
                    resource_version: Some("1".into()),
                    node: "n1".into(),
                    controller: None,
                    claims: vec![],
                })
                .collect(),
        );
        obs.volume_attachments = ["va1", "va2"]
            .iter()
            .map(|n| VolumeAttachmentObs {
                name: n.to_string(),
                uid: format!("uid-{n}"),
                resource_version: Some("1".into()),
                node: "n1".into(),
                volume: None,
            })
            .collect();
        obs
    }

    #[test]
    fn overlays_what_would_have_been_written() {
        let s = settings();
        let obs = observed();
        let mut overlay = Overlay::default();
        overlay.record(
            &[update("n1", NodeIntent::BeginFencing)],
            &obs,
            now_at(20),
            &s,
        );
        overlay.record(
            &[update("n1", NodeIntent::MarkFenced)],
            &obs,
            now_at(60),
            &s,
        );
        overlay.record(
            &[
                Action::DeletePod {
                    node: "n1".into(),
                    pod: crate::PodRef {
                        namespace: "ns".into(),
                        name: "u1".into(),
                        uid: "u1".into(),
                        resource_version: Some("1".into()),
                        statefulset: None,
                    },
                    why: String::new(),
                },
                Action::DeleteVolumeAttachment {
                    node: "n1".into(),
                    attachment: crate::AttachmentRef {
                        name: "va2".into(),
                        uid: "uid-va2".into(),
                        resource_version: Some("1".into()),
                    },
                    volume: "pv".into(),
                    why: String::new(),
                },
            ],
            &obs,
            now_at(61),
            &s,
        );
        let mut seen = obs.clone();
        overlay.apply(&mut seen);
        let f = &seen.nodes["n1"].facts;
        assert!(f.unschedulable);
        assert_eq!(f.taints.len(), 2);
        assert_eq!(f.taints[1], Taint::out_of_service());
        assert!(
            matches!(&f.record, RecordState::Valid(r) if r.phase == crate::Phase::Fenced && r.tainted && r.cordoned)
        );
        assert_eq!(
            f.labels.get("zone").map(String::as_str),
            Some("a"),
            "observed labels kept"
        );
        assert_eq!(f.resource_version, obs.nodes["n1"].facts.resource_version);
        let uids: Vec<&str> = seen.pods["n1"].iter().map(|p| p.uid.as_str()).collect();
        assert_eq!(uids, ["u2"]);
        let vas: Vec<&str> = seen
            .volume_attachments
            .iter()
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(vas, ["va1"]);
        // Applying twice changes nothing more.
        let mut twice = seen.clone();
        overlay.apply(&mut twice);
        assert_eq!(twice, seen);

        overlay.record(&[update("n1", NodeIntent::Unfence)], &obs, now_at(200), &s);
        assert!(overlay.nodes.is_empty());
        let mut after = obs.clone();
        overlay.apply(&mut after);
        assert_eq!(after.nodes, obs.nodes);
    }

    #[test]
    fn skipped_intents_and_unknown_nodes_change_nothing() {
        let s = settings();
        let obs = observed();
        let mut overlay = Overlay::default();
        overlay.record(&[update("n1", NodeIntent::MarkFenced)], &obs, now_at(0), &s);
        overlay.record(
            &[update("gone", NodeIntent::BeginFencing)],
            &obs,
            now_at(0),
            &s,
        );
        assert!(overlay.nodes.is_empty());
    }
}
