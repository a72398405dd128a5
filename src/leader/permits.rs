//! The permit objects (`docs/permits.md`): the leader keeps one Lease per
//! member of the fencing population in the agents' namespace, naming the
//! node's grantor set and the grantors' peer addresses
//! ([`crate::decide::permit::object`] plans them). It lists the objects
//! once when it starts leading, then writes only the ones whose plan
//! changed (a node came or went, an agent's peer address moved), at most
//! every [`SYNC_INTERVAL`]. A dry run writes nothing. Each object is owned
//! by its Node: the garbage collector deletes it with the Node. The object
//! of a node that leaves the population otherwise stays as it was (its
//! agent keeps renewing with its old set, which no other set depends on).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Client;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};

use crate::decide::permit::object::{self, GRANTORS_ANNOTATION, LABEL, ListedSet};
use crate::decide::{Observations, Settings};

/// How often the plan is compared with the objects.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(5);

/// The longest Lease name (a DNS subdomain).
const MAX_NAME: usize = 253;

pub struct PermitObjects {
    api: Api<Lease>,
    grantors: usize,
    dry_run: bool,
    /// What the objects list, per node, as last listed or written; `None`
    /// until listed (and again after a write failed).
    known: Option<BTreeMap<String, Vec<ListedSet>>>,
    last: Option<Instant>,
}

impl PermitObjects {
    pub fn new(client: Client, namespace: &str, grantors: usize, dry_run: bool) -> Self {
        PermitObjects {
            api: Api::namespaced(client, namespace),
            grantors,
            dry_run,
            known: None,
            last: None,
        }
    }

    /// Bring the objects in line with the plan for `obs`, if
    /// [`SYNC_INTERVAL`] passed since the last time.
    pub async fn sync(&mut self, obs: &Observations, settings: &Settings, now: Instant) {
        if self.dry_run || self.last.is_some_and(|t| now < t + SYNC_INTERVAL) {
            return;
        }
        self.last = Some(now);
        let known = match self.known.take() {
            Some(k) => k,
            None => match self.list().await {
                Ok(k) => k,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list the permit objects; trying again later");
                    return;
                }
            },
        };
        let plan = object::plan(&object::candidates(obs, settings), self.grantors, &known);
        let mut now_known = known.clone();
        let mut failed = false;
        for (node, sets) in &plan {
            if known.get(node) == Some(sets) {
                continue;
            }
            if object::name(node).len() > MAX_NAME {
                tracing::warn!(node = %node, "node name too long for a permit object's name; it gets none");
                continue;
            }
            let uid = obs.nodes.get(node).and_then(|n| n.facts.uid.as_deref());
            match self.write(node, uid, sets).await {
                Ok(()) => {
                    tracing::info!(node = %node, version = sets.last().map_or(0, |s| s.version), grantors = ?sets.last().map(|s| s.grantors.iter().map(|g| g.node.as_str()).collect::<Vec<_>>()), "permit object written");
                    now_known.insert(node.clone(), sets.clone());
                }
                Err(e) => {
                    tracing::warn!(node = %node, error = %e, "cannot write the permit object; trying again later");
                    failed = true;
                }
            }
        }
        // After a failure, read the objects again rather than trust a guess.
        self.known = (!failed).then_some(now_known);
    }

    /// Every permit object's sets, per node.
    async fn list(&self) -> kube::Result<BTreeMap<String, Vec<ListedSet>>> {
        let list = self
            .api
            .list(&ListParams::default().labels(&format!("{LABEL}=true")))
            .await?;
        Ok(list
            .items
            .iter()
            .filter_map(|l| {
                let node = l
                    .metadata
                    .name
                    .as_deref()?
                    .strip_prefix(object::NAME_PREFIX)?;
                let sets = l
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(GRANTORS_ANNOTATION))
                    .and_then(|t| object::parse(t))
                    .unwrap_or_default();
                Some((node.to_string(), sets))
            })
            .collect())
    }

    /// Create or update the object of `node` (Node UID `uid`) to list
    /// `sets` (an update carries the resourceVersion it read: a concurrent
    /// writer makes it fail, and the next sync reads again).
    async fn write(&self, node: &str, uid: Option<&str>, sets: &[ListedSet]) -> kube::Result<()> {
        let name = object::name(node);
        let wanted = lease_for(node, uid, sets);
        match self.api.get_opt(&name).await? {
            Some(mut lease) => {
                lease.metadata.annotations = wanted.metadata.annotations;
                if wanted.metadata.owner_references.is_some() {
                    lease.metadata.owner_references = wanted.metadata.owner_references;
                }
                lease.metadata.managed_fields = None;
                self.api
                    .replace(&name, &PostParams::default(), &lease)
                    .await?;
            }
            None => {
                self.api.create(&PostParams::default(), &wanted).await?;
            }
        }
        Ok(())
    }
}

/// The permit object of `node` listing `sets`, owned by the Node (UID
/// `uid`, when known) so that the garbage collector deletes it with the
/// Node. Not `blockOwnerDeletion`: that would need delete rights on Nodes.
pub fn lease_for(node: &str, uid: Option<&str>, sets: &[ListedSet]) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(object::name(node)),
            labels: Some(
                [
                    (LABEL.to_string(), "true".to_string()),
                    (
                        "app.kubernetes.io/name".to_string(),
                        "kube-fencer".to_string(),
                    ),
                ]
                .into(),
            ),
            annotations: Some([(GRANTORS_ANNOTATION.to_string(), object::render(sets))].into()),
            owner_references: uid.map(|uid| {
                vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    name: node.to_string(),
                    uid: uid.to_string(),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(node.to_string()),
            ..Default::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::permit::object::Grantor;

    #[test]
    fn the_object_is_owned_by_its_node_and_lists_the_sets() {
        let sets = vec![ListedSet {
            version: 2,
            grantors: vec![Grantor {
                node: "b".into(),
                address: "10.0.0.2:9747".into(),
            }],
        }];
        let lease = lease_for("a", Some("uid-a"), &sets);
        assert_eq!(lease.metadata.name.as_deref(), Some("kube-fencer-permit-a"));
        let owner = &lease.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("Node", "a", "uid-a")
        );
        assert_eq!(owner.block_owner_deletion, None);
        let annotations = lease.metadata.annotations.unwrap();
        assert_eq!(
            object::parse(&annotations[GRANTORS_ANNOTATION]),
            Some(sets.clone())
        );
        assert_eq!(lease.metadata.labels.unwrap()[LABEL], "true");
        // Without a UID: no owner (never a reference to the wrong Node).
        assert!(
            lease_for("a", None, &sets)
                .metadata
                .owner_references
                .is_none()
        );
    }
}
