//! I/O error paths against a mocked API server.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;
use serde_json::{Value, json};

use super::*;
use crate::decide::{MaxUnhealthy, Readiness, RecordState};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn mock() -> (Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), handle)
}

fn settings() -> Settings {
    Settings {
        identity: "kube-fencer-agent".into(),
        fence_timeout: Duration::from_secs(40),
        max_unhealthy: MaxUnhealthy::Percent(40),
        ..crate::decide::testutil::settings()
    }
}

/// Leadership confirmed for a minute.
fn leader() -> Leadership {
    let l = Leadership::default();
    l.grant_until(Instant::now() + Duration::from_secs(60));
    l
}

fn facts(rv: &str) -> NodeFacts {
    NodeFacts {
        name: "worker-1".into(),
        uid: Some("node-uid".into()),
        resource_version: Some(rv.into()),
        labels: BTreeMap::new(),
        unschedulable: false,
        taints: vec![],
        ready: Readiness::Unknown,
        record: RecordState::Absent,
        agent: crate::decide::AdvertState::Absent,
        unfence_requested: false,
        addresses: vec![],
        kubelet_boot_id: None,
    }
}

fn node_json(rv: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "worker-1", "resourceVersion": rv, "uid": "node-uid"},
        "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]},
    })
}

fn status(code: u16, reason: &str) -> Response<Body> {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": format!("mock {reason}"), "reason": reason, "code": code,
    });
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

fn ok(body: Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

async fn body_json(req: Request<Body>) -> Value {
    let bytes = req.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

fn now() -> Now {
    Now {
        mono: Instant::now(),
        wall: SystemTime::now(),
    }
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), f)
        .await
        .expect("mock API scenario timed out")
}

#[tokio::test]
async fn node_patch_conflict_rereads_rerenders_and_retries() {
    let (client, mut handle) = mock();
    let server = tokio::spawn(async move {
        // 1. Patch against rv 1: conflict.
        let (req, send) = handle.next_request().await.expect("patch");
        assert_eq!(req.method(), Method::PATCH);
        assert_eq!(req.uri().path(), "/api/v1/nodes/worker-1");
        assert_eq!(
            req.headers()["content-type"],
            "application/merge-patch+json"
        );
        let body = body_json(req).await;
        assert_eq!(body["metadata"]["resourceVersion"], "1");
        send.send_response(status(409, "Conflict"));
        // 2. Fresh read.
        let (req, send) = handle.next_request().await.expect("get");
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri().path(), "/api/v1/nodes/worker-1");
        send.send_response(ok(node_json("2")));
        // 3. Re-rendered against rv 2: accepted.
        let (req, send) = handle.next_request().await.expect("patch again");
        assert_eq!(req.method(), Method::PATCH);
        let body = body_json(req).await;
        assert_eq!(body["metadata"]["resourceVersion"], "2");
        assert!(
            body["metadata"]["annotations"][crate::decide::STATE_ANNOTATION].is_string(),
            "{body}"
        );
        assert_eq!(
            body["metadata"]["labels"][crate::decide::PHASE_LABEL],
            "fencing"
        );
        assert_eq!(body["spec"]["unschedulable"], true);
        send.send_response(ok(node_json("3")));
    });
    let metrics = Metrics::new();
    let exec = Executor::new(client, settings(), metrics.clone(), leader());
    let out = within(exec.update_node(&NodeIntent::BeginFencing, &facts("1"), &[], now()))
        .await
        .expect("write succeeds after the retry");
    match out {
        NodeWrite::Written(n) => {
            assert_eq!(n.metadata.resource_version.as_deref(), Some("3"))
        }
        other => panic!("expected a write, got {other:?}"),
    }
    within(server).await.unwrap();
    assert_eq!(
        metrics
            .api_errors
            .with_label_values(&["patch", "nodes"])
            .get(),
        0,
        "a conflict is not an API error"
    );
}

/// An unfence request on a node observed without a record is removed with
/// the observed resourceVersion as precondition: a record written since
/// (an operator may be unfencing that fencing) makes the write conflict,
/// and re-rendered against the fresh node it no longer applies.
#[tokio::test]
async fn clearing_an_unfence_request_leaves_a_node_fenced_meanwhile_alone() {
    let (client, mut handle) = mock();
    let server = tokio::spawn(async move {
        let (req, send) = handle.next_request().await.expect("patch");
        assert_eq!(req.method(), Method::PATCH);
        let body = body_json(req).await;
        assert_eq!(
            body,
            json!({"metadata": {
                "resourceVersion": "1",
                "annotations": {crate::decide::UNFENCE_ANNOTATION: null},
            }}),
            "only the annotation, on the node as observed"
        );
        send.send_response(status(409, "Conflict"));
        let (req, send) = handle.next_request().await.expect("get");
        assert_eq!(req.method(), Method::GET);
        let record = crate::decide::FenceRecord {
            phase: crate::decide::Phase::Fencing,
            fencing_since: SystemTime::UNIX_EPOCH,
            fenced_at: None,
            cordoned: true,
            tainted: false,
            by: "kube-fencer-other".into(),
            boot_id: None,
            held_since: None,
        };
        let mut fenced = node_json("2");
        fenced["metadata"]["annotations"] = json!({
            crate::decide::STATE_ANNOTATION: crate::decide::record::render(&record),
            crate::decide::UNFENCE_ANNOTATION: "true",
        });
        send.send_response(ok(fenced));
        handle
    });
    let exec = Executor::new(client, settings(), Metrics::new(), leader());
    let mut observed = facts("1");
    observed.unfence_requested = true;
    let out = within(exec.update_node(&NodeIntent::ClearUnfenceRequest, &observed, &[], now()))
        .await
        .unwrap();
    assert!(
        matches!(out, NodeWrite::Skipped(Skip::NoLongerApplies(_))),
        "{out:?}"
    );
    let mut handle = within(server).await.unwrap();
    assert!(
        futures::poll!(Box::pin(handle.next_request())).is_pending(),
        "no second write"
    );
}

#[tokio::test]
async fn node_patch_gives_up_after_bounded_conflicts() {
    let (client, mut handle) = mock();
    let server = tokio::spawn(async move {
        for i in 0..MAX_CONFLICT_RETRIES {
            let (req, send) = handle.next_request().await.expect("patch");
            assert_eq!(req.method(), Method::PATCH);
            send.send_response(status(409, "Conflict"));
            let (req, send) = handle.next_request().await.expect("get");
            assert_eq!(req.method(), Method::GET);
            send.send_response(ok(node_json(&format!("{}", i + 2))));
        }
    });
    let exec = Executor::new(client, settings(), Metrics::new(), leader());
    let err = within(exec.update_node(&NodeIntent::BeginFencing, &facts("1"), &[], now()))
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::TooManyConflicts { .. }), "{err}");
    within(server).await.unwrap();
}

fn pod_ref() -> PodRef {
    PodRef {
        namespace: "prod".into(),
        name: "db-0".into(),
        uid: "pod-uid-1".into(),
        resource_version: Some("41".into()),
        statefulset: Some("db".into()),
    }
}

#[tokio::test]
async fn pod_delete_sends_grace_zero_and_uid_precondition() {
    let (client, mut handle) = mock();
    let server = tokio::spawn(async move {
        let (req, send) = handle.next_request().await.expect("delete");
        assert_eq!(req.method(), Method::DELETE);
        assert_eq!(req.uri().path(), "/api/v1/namespaces/prod/pods/db-0");
        let body = body_json(req).await;
        assert_eq!(body["gracePeriodSeconds"], 0);
        assert_eq!(body["preconditions"]["uid"], "pod-uid-1");
        assert_eq!(
            body["preconditions"]["resourceVersion"], "41",
            "exactly the pod as listed"
        );
        send.send_response(ok(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "db-0", "namespace": "prod", "uid": "pod-uid-1"},
        })));
    });
    let exec = Executor::new(client, settings(), Metrics::new(), leader());
    assert_eq!(
        within(exec.delete_pod(&pod_ref())).await.unwrap(),
        Deleted::Deleted
    );
    within(server).await.unwrap();
}

#[tokio::test]
async fn a_write_whose_answer_comes_after_the_leadership_validity_is_abandoned() {
    let (client, mut handle) = mock();
    let server = tokio::spawn(async move {
        let (req, send) = handle.next_request().await.expect("patch");
        assert_eq!(req.method(), Method::PATCH);
        // The API server is slow: it answers after the leadership ran out.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        send.send_response(ok(node_json("2")));
    });
    let leadership = Leadership::default();
    leadership.grant_until(Instant::now() + Duration::from_millis(300));
    let exec = Executor::new(client, settings(), Metrics::new(), leadership);
    let started = Instant::now();
    let err = within(exec.update_node(&NodeIntent::BeginFencing, &facts("1"), &[], now()))
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::NotLeader { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "abandoned at the end of the validity, not when the answer came ({:?})",
        started.elapsed()
    );
    let _ = within(server).await;
}

#[tokio::test]
async fn nothing_is_sent_without_confirmed_leadership() {
    let (client, mut handle) = mock();
    let leadership = Leadership::default();
    leadership.grant_until(Instant::now() + Duration::from_secs(60));
    leadership.revoke();
    let exec = Executor::new(client, settings(), Metrics::new(), leadership);
    let err = within(exec.delete_pod(&pod_ref())).await.unwrap_err();
    assert!(matches!(err, ExecError::NotLeader { .. }), "{err}");
    let err = within(exec.delete_volume_attachment(&attachment_ref()))
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::NotLeader { .. }), "{err}");
    assert!(
        futures::poll!(Box::pin(handle.next_request())).is_pending(),
        "no request"
    );
}

#[tokio::test]
async fn a_conflict_retry_rechecks_leadership_first() {
    let (client, mut handle) = mock();
    let leadership = Leadership::default();
    leadership.grant_until(Instant::now() + Duration::from_secs(60));
    let deposed = leadership.clone();
    let server = tokio::spawn(async move {
        let (_, send) = handle.next_request().await.expect("patch");
        // Deposed while the first write was in flight.
        deposed.revoke();
        send.send_response(status(409, "Conflict"));
        handle
    });
    let exec = Executor::new(client, settings(), Metrics::new(), leadership);
    let err = within(exec.update_node(&NodeIntent::BeginFencing, &facts("1"), &[], now()))
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::NotLeader { .. }), "{err}");
    let mut handle = within(server).await.unwrap();
    assert!(
        futures::poll!(Box::pin(handle.next_request())).is_pending(),
        "no re-read and no retried write"
    );
}

#[tokio::test]
async fn the_lease_is_read_with_a_consistent_get() {
    let (client, mut handle) = mock();
    let server = tokio::spawn(async move {
        let (req, send) = handle.next_request().await.expect("get");
        assert_eq!(req.method(), Method::GET);
        assert_eq!(
            req.uri().path(),
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/worker-1"
        );
        // No resourceVersion parameter: served from etcd, not a cache.
        assert!(
            !req.uri()
                .query()
                .unwrap_or_default()
                .contains("resourceVersion"),
            "{}",
            req.uri()
        );
        send.send_response(ok(json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": {"name": "worker-1", "namespace": "kube-node-lease", "resourceVersion": "77"},
        })));
        let (_, send) = handle.next_request().await.expect("get");
        send.send_response(status(404, "NotFound"));
    });
    let exec = Executor::new(client, settings(), Metrics::new(), leader());
    assert_eq!(
        within(exec.read_lease("worker-1"))
            .await
            .unwrap()
            .as_deref(),
        Some("77")
    );
    assert_eq!(within(exec.read_lease("worker-1")).await.unwrap(), None);
    within(server).await.unwrap();
}

#[tokio::test]
async fn pod_delete_not_found_is_fine() {
    let (client, mut handle) = mock();
    let server = tokio::spawn(async move {
        let (_, send) = handle.next_request().await.expect("delete");
        send.send_response(status(404, "NotFound"));
    });
    let metrics = Metrics::new();
    let exec = Executor::new(client, settings(), metrics.clone(), leader());
    assert_eq!(
        within(exec.delete_pod(&pod_ref())).await.unwrap(),
        Deleted::NotFound
    );
    within(server).await.unwrap();
    assert_eq!(
        metrics
            .api_errors
            .with_label_values(&["delete", "pods"])
            .get(),
        0
    );
}

#[tokio::test]
async fn pod_delete_precondition_failure_is_not_retried() {
    let (client, mut handle) = mock();
    let server = tokio::spawn(async move {
        let (_, send) = handle.next_request().await.expect("delete");
        send.send_response(status(409, "Conflict"));
        // Exactly one request: the mock closes when the handle drops, so a
        // retry would fail the executor call below with a service error.
        handle
    });
    let exec = Executor::new(client, settings(), Metrics::new(), leader());
    assert_eq!(
        within(exec.delete_pod(&pod_ref())).await.unwrap(),
        Deleted::PreconditionFailed
    );
    let mut handle = within(server).await.unwrap();
    assert!(
        futures::poll!(Box::pin(handle.next_request())).is_pending(),
        "no second request"
    );
}

#[tokio::test]
async fn pod_delete_server_error_is_an_error() {
    let (client, mut handle) = mock();
    let server = tokio::spawn(async move {
        let (_, send) = handle.next_request().await.expect("delete");
        send.send_response(status(403, "Forbidden"));
    });
    let metrics = Metrics::new();
    let exec = Executor::new(client, settings(), metrics.clone(), leader());
    assert!(within(exec.delete_pod(&pod_ref())).await.is_err());
    within(server).await.unwrap();
    assert_eq!(
        metrics
            .api_errors
            .with_label_values(&["delete", "pods"])
            .get(),
        1
    );
}

fn attachment_ref() -> AttachmentRef {
    AttachmentRef {
        name: "csi-abc".into(),
        uid: "va-uid-1".into(),
        resource_version: Some("17".into()),
    }
}

#[tokio::test]
async fn volume_attachment_delete_sends_uid_and_resource_version_preconditions() {
    let (client, mut handle) = mock();
    let server = tokio::spawn(async move {
        let (req, send) = handle.next_request().await.expect("delete");
        assert_eq!(req.method(), Method::DELETE);
        assert_eq!(
            req.uri().path(),
            "/apis/storage.k8s.io/v1/volumeattachments/csi-abc"
        );
        let body = body_json(req).await;
        assert_eq!(body["preconditions"]["uid"], "va-uid-1");
        assert_eq!(
            body["preconditions"]["resourceVersion"], "17",
            "exactly the attachment as listed"
        );
        send.send_response(ok(json!({
            "apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttachment",
            "metadata": {"name": "csi-abc", "uid": "va-uid-1"},
            "spec": {"attacher": "csi.example.com", "nodeName": "worker-1",
                     "source": {"persistentVolumeName": "pv-1"}},
        })));
    });
    let exec = Executor::new(client, settings(), Metrics::new(), leader());
    assert_eq!(
        within(exec.delete_volume_attachment(&attachment_ref()))
            .await
            .unwrap(),
        Deleted::Deleted
    );
    within(server).await.unwrap();
}

#[tokio::test]
async fn volume_attachment_not_found_is_fine() {
    let (client, mut handle) = mock();
    let server = tokio::spawn(async move {
        let (req, send) = handle.next_request().await.expect("delete");
        assert_eq!(req.method(), Method::DELETE);
        assert_eq!(
            req.uri().path(),
            "/apis/storage.k8s.io/v1/volumeattachments/csi-abc"
        );
        send.send_response(status(404, "NotFound"));
    });
    let exec = Executor::new(client, settings(), Metrics::new(), leader());
    assert_eq!(
        within(exec.delete_volume_attachment(&attachment_ref()))
            .await
            .unwrap(),
        Deleted::NotFound
    );
    within(server).await.unwrap();
}

#[tokio::test]
async fn volume_attachment_precondition_failure_is_not_an_error() {
    let (client, mut handle) = mock();
    let server = tokio::spawn(async move {
        let (_, send) = handle.next_request().await.expect("delete");
        send.send_response(status(409, "Conflict"));
        handle
    });
    let metrics = Metrics::new();
    let exec = Executor::new(client, settings(), metrics.clone(), leader());
    assert_eq!(
        within(exec.delete_volume_attachment(&attachment_ref()))
            .await
            .unwrap(),
        Deleted::PreconditionFailed
    );
    let mut handle = within(server).await.unwrap();
    assert!(
        futures::poll!(Box::pin(handle.next_request())).is_pending(),
        "no second request"
    );
    assert_eq!(
        metrics
            .api_errors
            .with_label_values(&["delete", "volumeattachments"])
            .get(),
        0
    );
}
