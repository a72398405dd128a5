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
                Action::DeleteVolumeAttachment { name, .. } => {
                    self.deleted_attachments.insert(name.clone());
                }
            }
        }
    }
}
