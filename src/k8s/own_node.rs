//! Every agent watches its own Node (field selector on its name). If a
//! kube-fencer record appears on it, the cluster believes this node is being
//! fenced: the watch logs it loudly and hands the record to the self-check's
//! self-check on a `tokio::sync::watch` channel; the self-check fences the
//! node itself if the record concerns this boot.
//!
//! It also watches its own kubelet's Lease (`kube-node-lease/<node>`, one
//! object, one event per renewal): the self-check takes a cut-off node
//! for isolated sooner once that Lease has gone unrenewed for
//! `--unreachable-after` (rule 5b of [`crate::decide::agent::self_fence`]).

use futures::StreamExt;
use std::time::SystemTime;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;

use crate::decide::RecordState;
use crate::k8s::ApiContact;
use crate::k8s::facts::{node_facts, trim_node};
use crate::observability::{Health, Metrics};

/// Log a change of the own Node's record (a warning while one is there).
fn log_record_change(node: &str, record: &RecordState) {
    match record {
        RecordState::Absent => {
            tracing::info!(node, "own node no longer carries a kube-fencer record")
        }
        RecordState::Valid(r) => tracing::warn!(
            node,
            phase = ?r.phase,
            by = %r.by,
            boot_id = ?r.boot_id,
            "OWN NODE IS BEING FENCED by kube-fencer: the cluster considers this node down \
             (with --self-fence it fences itself now, unless the record predates its last reboot)"
        ),
        RecordState::Malformed(e) => tracing::warn!(
            node,
            error = %e,
            "own node carries a malformed kube-fencer record"
        ),
    }
}

/// Watch the own Node until `shutdown`, sending each change of its record
/// (including back to `Absent`) on `record`.
pub async fn watch_own_node(
    client: Client,
    node: String,
    record: watch::Sender<RecordState>,
    health: Health,
    contact: ApiContact,
    metrics: Metrics,
    mut shutdown: watch::Receiver<bool>,
) {
    let api: Api<Node> = Api::all(client);
    let mut stream = watcher::watcher(
        api,
        watcher::Config::default().fields(&format!("metadata.name={node}")),
    )
    .default_backoff()
    .modify(trim_node)
    .boxed();
    let mut last = RecordState::Absent;
    let mut buffered: Option<Node> = None;
    loop {
        let item = tokio::select! {
            _ = shutdown.changed() => return,
            item = stream.next() => item,
        };
        let observed = match item {
            None => return,
            Some(Err(e)) => {
                metrics.watch_error("own_node");
                tracing::warn!(error = %e, "own Node watch failed; retrying");
                continue;
            }
            Some(Ok(event)) => {
                if crate::k8s::api_contact::is_api_contact(&event) {
                    contact.seen();
                }
                match event {
                    Event::Init => {
                        health.set_own_node_synced(false);
                        buffered = None;
                        continue;
                    }
                    Event::InitApply(n) => {
                        buffered = Some(n);
                        continue;
                    }
                    Event::InitDone => {
                        health.set_own_node_synced(true);
                        match buffered.take() {
                            Some(n) => node_facts(&n).record,
                            None => {
                                tracing::warn!(node = %node, "own Node not found");
                                RecordState::Absent
                            }
                        }
                    }
                    Event::Apply(n) => node_facts(&n).record,
                    Event::Delete(_) => RecordState::Absent,
                }
            }
        };
        if observed != last {
            log_record_change(&node, &observed);
            record.send_replace(observed.clone());
            last = observed;
        }
    }
}

/// Watch the own kubelet's Lease until `shutdown`, sending its `renewTime`
/// (`None` while the Lease or its renewTime is missing) on `renewed`.
pub async fn watch_own_lease(
    client: Client,
    node: String,
    renewed: watch::Sender<Option<SystemTime>>,
    contact: ApiContact,
    metrics: Metrics,
    mut shutdown: watch::Receiver<bool>,
) {
    let api: Api<Lease> = Api::namespaced(client, crate::k8s::NODE_LEASE_NAMESPACE);
    let mut stream = watcher::watcher(
        api,
        watcher::Config::default().fields(&format!("metadata.name={node}")),
    )
    .default_backoff()
    .boxed();
    let renew_time = |l: &Lease| {
        l.spec
            .as_ref()
            .and_then(|s| s.renew_time.as_ref())
            .map(|t| SystemTime::from(t.0))
    };
    loop {
        let item = tokio::select! {
            _ = shutdown.changed() => return,
            item = stream.next() => item,
        };
        match item {
            None => return,
            Some(Err(e)) => {
                metrics.watch_error("own_lease");
                tracing::warn!(error = %e, "own kubelet Lease watch failed; retrying");
            }
            Some(Ok(event)) => {
                if crate::k8s::api_contact::is_api_contact(&event) {
                    contact.seen();
                }
                match event {
                    Event::InitApply(l) | Event::Apply(l) => {
                        renewed.send_replace(renew_time(&l));
                    }
                    Event::Delete(_) => {
                        renewed.send_replace(None);
                    }
                    Event::Init | Event::InitDone => {}
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;

    /// A client of an API server that refuses every connection (a network
    /// that fails fast: interface down, TCP reset, ICMP unreachable).
    pub(crate) fn refusing_client() -> Client {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}").parse().unwrap();
        Client::try_from(kube::Config::new(url)).unwrap()
    }

    #[tokio::test]
    async fn a_watch_that_cannot_reach_the_api_is_no_contact() {
        let contact = ApiContact::default();
        let (stop, task) = spawn_own_node_watch(refusing_client(), &contact);
        // The watcher restarts (Event::Init) about every second.
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        let _ = stop.send(true);
        let _ = task.await;
        assert_eq!(
            contact.last(),
            None,
            "a watch (re)start is not a response from the API server"
        );
    }

    /// The own-Node watch of node n1 on `client`, and how to stop it.
    fn spawn_own_node_watch(
        client: Client,
        contact: &ApiContact,
    ) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(watch_own_node(
            client,
            "n1".into(),
            watch::channel(RecordState::Absent).0,
            Health::new(Duration::from_secs(30), contact.clone()),
            contact.clone(),
            Metrics::new(),
            rx,
        ));
        (stop, task)
    }

    type Handle = tower_test::mock::Handle<
        http::Request<kube::client::Body>,
        http::Response<kube::client::Body>,
    >;

    /// A client of a mocked API server, and the server's handle.
    fn mocked_api() -> (Client, Handle) {
        let (service, handle) = tower_test::mock::pair();
        (Client::new(service, "default"), handle)
    }

    /// Wait for the first request and answer it with `body`; its URI.
    async fn answer_first(handle: &mut Handle, body: serde_json::Value) -> String {
        let (req, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
            .await
            .expect("a list")
            .expect("a request");
        send.send_response(
            http::Response::builder()
                .body(kube::client::Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap(),
        );
        req.uri().to_string()
    }

    #[tokio::test]
    async fn a_listed_own_node_is_contact() {
        let (client, mut handle) = mocked_api();
        let contact = ApiContact::default();
        let (stop, task) = spawn_own_node_watch(client, &contact);
        tokio::task::yield_now().await;
        assert_eq!(contact.last(), None, "not before the answer");
        let list = serde_json::json!({
            "apiVersion": "v1", "kind": "NodeList",
            "metadata": {"resourceVersion": "7"},
            "items": [{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "resourceVersion": "7"}}],
        });
        let uri = answer_first(&mut handle, list).await;
        assert!(uri.contains("nodes"), "{uri}");
        // The watch request that follows the list.
        let _watch = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
            .await
            .expect("a watch");
        assert!(contact.last().is_some(), "the list answered");
        let _ = stop.send(true);
        let _ = task.await;
    }

    #[tokio::test]
    async fn the_own_lease_watch_hands_on_the_kubelets_renew_time() {
        let (client, mut handle) = mocked_api();
        let contact = ApiContact::default();
        let (renewed_tx, mut renewed) = watch::channel(None);
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(watch_own_lease(
            client,
            "n1".into(),
            renewed_tx,
            contact.clone(),
            Metrics::new(),
            rx,
        ));
        let list = serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "LeaseList",
            "metadata": {"resourceVersion": "7"},
            "items": [{"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "n1", "namespace": "kube-node-lease", "resourceVersion": "7"},
                "spec": {"holderIdentity": "n1", "renewTime": "2026-12-03T07:00:00.250000Z"}}],
        });
        let uri = answer_first(&mut handle, list).await;
        assert!(
            uri.contains("/namespaces/kube-node-lease/leases")
                && uri.contains("metadata.name%3Dn1"),
            "{uri}"
        );
        tokio::time::timeout(Duration::from_secs(5), renewed.changed())
            .await
            .expect("the renewTime handed on")
            .unwrap();
        let expect = std::time::UNIX_EPOCH + Duration::from_millis(1_796_281_200_250);
        assert_eq!(*renewed.borrow(), Some(expect));
        assert!(contact.last().is_some(), "the list answered");
        let _ = stop.send(true);
        let _ = task.await;
    }
}
