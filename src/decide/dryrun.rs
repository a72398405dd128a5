//! Dry run: the shell writes nothing, but overlays what it *would* have
//! written on its observations, so a dry run walks through the same phases
//! and reports the same decisions as a real run.

use std::collections::{BTreeMap, BTreeSet};

use super::{Action, NodeFacts, Now, Observations, Settings};

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
    pub fn apply(&self, obs: &mut Observations) {
        let _ = obs;
        unimplemented!("dry-run apply")
    }

    /// Remember the effect of actions that were not executed.
    pub fn record(&mut self, actions: &[Action], obs: &Observations, now: Now, settings: &Settings) {
        let _ = (actions, obs, now, settings);
        unimplemented!("dry-run record")
    }
}
