//! Kubernetes I/O shell.
//!
//! - [`election`]: leader election on a Lease (every agent).
//! - [`own_node`]: the watch on the agent's own Node, whose record it sends to the self-check (every agent).
//! - [`reconcile`]: the leader's loop: watchers → [`index`] → decide → [`executor`].
//! - [`facts`] and [`merge_patch`]: pure conversions between Kubernetes objects and the core's types.
//! - [`pods`]: pods and VolumeAttachments of fenced nodes, listed on demand.

use kube::Client;
use tokio::sync::watch;

use crate::config::Config;
use crate::decide::RecordState;
use crate::ops::events::lease_ref;
use crate::ops::{ApiContact, EventSink, Health, Metrics};

pub mod agent_state;
pub mod election;
pub mod executor;
pub mod facts;
pub mod fence_command;
pub mod index;
pub mod leader_state;
pub mod merge_patch;
pub mod own_node;
pub mod peer_auth;
pub mod peer_key;
pub mod peers;
pub mod pods;
pub mod reconcile;
pub mod self_check;
pub mod self_fence_means;
pub mod startup;
pub mod telemetry;
pub mod watchdog;
pub mod writer;

/// Whether an API error is a `Status` with this HTTP code.
pub fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// One agent: election and own-Node watch always, the leader's loop while elected.
pub struct Agent {
    pub client: Client,
    pub config: Config,
    pub metrics: Metrics,
    pub health: Health,
    /// The API contact clock every watch and request sets.
    pub contact: ApiContact,
    pub events: EventSink,
    /// Where the own-Node watch sends the node's record (the self-check
    /// holds the other end).
    pub own_record: watch::Sender<RecordState>,
    /// Where the own-Lease watch sends the kubelet's last renewTime.
    pub kubelet_lease: watch::Sender<Option<std::time::SystemTime>>,
    pub peer_key: Option<peer_auth::PeerKey>,
}

impl Agent {
    /// Run until `shutdown` turns true; then stop acting and release the leader Lease.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let Agent {
            client,
            config,
            metrics,
            health,
            contact,
            events,
            own_record,
            kubelet_lease,
            peer_key,
        } = self;
        let own_lease = tokio::spawn(own_node::watch_own_lease(
            client.clone(),
            config.node_name().to_string(),
            kubelet_lease,
            contact.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
        let own_node = tokio::spawn(own_node::watch_own_node(
            client.clone(),
            config.node_name().to_string(),
            own_record,
            health.clone(),
            contact.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
        let announce = lease_ref(&config.namespace, &config.leader_lease_name);
        let election = election::Election::new(
            client.clone(),
            &config.namespace,
            &config.leader_lease_name,
            config.election.clone(),
            metrics.clone(),
            health.clone(),
            contact.clone(),
        );
        let leader_template = reconcile::Leader {
            client: client.clone(),
            settings: config.settings.clone(),
            dry_run: config.dry_run,
            metrics: metrics.clone(),
            events,
            health: health.clone(),
            contact,
            leadership: election::Leadership::default(),
            announce,
            fence_command: config.fence_command.clone(),
            fence_command_timeout: config.fence_command_timeout,
            peer_key,
            published: election.published(),
        };
        let leader_task: election::LeaderTask = Box::new(move |leadership| {
            let mut leader = leader_template.clone();
            leader.leadership = leadership;
            tokio::spawn(leader.run())
        });
        election.run(leader_task, shutdown).await;
        own_node.abort();
        own_lease.abort();
        let _ = own_node.await;
        let _ = own_lease.await;
    }
}
