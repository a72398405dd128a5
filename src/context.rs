//! What every node runs besides the self-check: the watches on its own
//! Node and its kubelet's Lease (which feed the self-check), the leader
//! election, and the leader's loop while this node leads. [`Context`] holds
//! the handles these tasks share; `main` builds it and runs it.

use kube::Client;
use tokio::sync::watch;

use crate::config::Config;
use crate::decide::RecordState;
use crate::k8s::ApiContact;
use crate::observability::events::lease_ref;
use crate::observability::{EventSink, Health, Metrics};

/// The handles every task shares, and the senders of the own-Node and
/// own-Lease watches: own-Node and own-Lease watches and the election always,
/// the leader's loop while elected.
pub struct Context {
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
    pub peer_key: Option<crate::peers::auth::PeerKey>,
}

impl Context {
    /// Run until `shutdown` turns true; then stop acting and release the leader Lease.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let Context {
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
        let own_lease = tokio::spawn(crate::k8s::own_node::watch_own_lease(
            client.clone(),
            config.node_name().to_string(),
            kubelet_lease,
            contact.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
        let own_node = tokio::spawn(crate::k8s::own_node::watch_own_node(
            client.clone(),
            config.node_name().to_string(),
            own_record,
            health.clone(),
            contact.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
        let announce = lease_ref(&config.namespace, &config.leader_lease_name);
        let election = crate::k8s::election::Election::new(
            client.clone(),
            &config.namespace,
            &config.leader_lease_name,
            config.election.clone(),
            metrics.clone(),
            health.clone(),
            contact.clone(),
        );
        let leader_template = crate::leader::Leader {
            client: client.clone(),
            settings: config.settings.clone(),
            dry_run: config.dry_run,
            metrics: metrics.clone(),
            events,
            health: health.clone(),
            contact,
            leadership: crate::k8s::election::Leadership::default(),
            announce,
            fence_command: config.fence_command.clone(),
            fence_command_timeout: config.fence_command_timeout,
            peer_key,
            published: election.published(),
            namespace: config.namespace.clone(),
        };
        let leader_task: crate::k8s::election::LeaderTask = Box::new(move |leadership| {
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
