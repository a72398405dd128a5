//! `execute` against a fake writer (and the dry-run writer): what is
//! sent, in which order, what is remembered and what is reported.

use std::collections::VecDeque;
use std::sync::Mutex;

use kube::runtime::watcher::Event;
use serde_json::json;

use super::*;
use crate::decide::testutil::{self, now_at};
use crate::decide::{FenceCommandState, NodeFacts};
use crate::leader::executor::ExecError;
use crate::leader::fence_command::Outcome;
use crate::observability::events::EventMsg;

/// Records every call; answers from queues (a write succeeds by default).
#[derive(Default)]
struct FakeWriter {
    calls: Mutex<Vec<String>>,
    node_results: Mutex<VecDeque<Result<NodeWrite, ExecError>>>,
    delete_results: Mutex<VecDeque<Result<Deleted, ExecError>>>,
    fence: Option<FenceStart>,
}

impl FakeWriter {
    fn call(&self, what: String) {
        self.calls.lock().unwrap().push(what);
    }
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
    fn next_delete(&self) -> Result<Deleted, ExecError> {
        let next = self.delete_results.lock().unwrap().pop_front();
        next.unwrap_or(Ok(Deleted::Deleted))
    }
}

impl ClusterWriter for FakeWriter {
    fn view<'a>(
        &self,
        obs: &'a decide::Observations,
    ) -> std::borrow::Cow<'a, decide::Observations> {
        std::borrow::Cow::Borrowed(obs)
    }
    fn decided(&mut self, _: &[Action], _: &decide::Observations, _: Now, _: &Settings) {}
    async fn update_node(
        &self,
        intent: &NodeIntent,
        facts: &NodeFacts,
        _: &[k8s_openapi::api::core::v1::Taint],
        _: Now,
    ) -> Result<NodeWrite, ExecError> {
        self.call(format!("update {} {}", facts.name, intent.operation()));
        let next = self.node_results.lock().unwrap().pop_front();
        next.unwrap_or_else(|| Ok(NodeWrite::Written(Box::new(node(&facts.name, "2")))))
    }
    async fn delete_pod(&self, pod: &PodRef) -> Result<Deleted, ExecError> {
        self.call(format!("delete pod {}", pod.name));
        self.next_delete()
    }
    async fn delete_volume_attachment(
        &self,
        attachment: &AttachmentRef,
    ) -> Result<Deleted, ExecError> {
        self.call(format!("delete va {}", attachment.name));
        self.next_delete()
    }
    async fn read_lease(&self, node: &str) -> Result<Option<String>, ExecError> {
        self.call(format!("read lease {node}"));
        Ok(Some("10".into()))
    }
    fn run_fence_command(&self, run: FenceRun) -> FenceStart {
        self.call(format!("fence {} {}", run.node, run.attempt));
        self.fence.unwrap_or(FenceStart::Started)
    }
}

fn node(name: &str, rv: &str) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name, "resourceVersion": rv, "uid": format!("uid-{name}")},
    }))
    .unwrap()
}

fn lease(name: &str) -> PartialObjectMeta<Lease> {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": NODE_LEASE_NAMESPACE, "resourceVersion": "10"},
    }))
    .unwrap()
}

/// A loop state with node n1 (and its Lease) in the index, and where its Events go.
fn loop_state<W>(writer: W) -> (LoopState<W>, tokio::sync::mpsc::Receiver<EventMsg>) {
    let metrics = Metrics::new();
    let (events, rx) = EventSink::channel(64, metrics.clone());
    let mut index = Index::new(Duration::from_secs(20));
    let t = Instant::now();
    index.on_node_event(Event::Init, t);
    index.on_node_event(Event::InitApply(node("n1", "1")), t);
    index.on_node_event(Event::InitDone, t);
    index.on_lease_event(Event::Init, t);
    index.on_lease_event(Event::InitApply(lease("n1")), t);
    index.on_lease_event(Event::InitDone, t);
    let ls = LoopState {
        writer,
        telemetry: Telemetry { metrics, events },
        memory: LeaderMemory::default(),
        index,
        pods: PodCache::default(),
        was_synced: true,
        permits: Default::default(),
        permit_over: Default::default(),
    };
    (ls, rx)
}

fn leader() -> Leadership {
    let l = Leadership::default();
    l.grant_until(Instant::now() + Duration::from_secs(60));
    l
}

fn update(intent: NodeIntent) -> Step {
    Step {
        action: Action::UpdateNode {
            node: "n1".into(),
            intent,
            why: "test".into(),
        },
        facts: Some(testutil::facts("n1")),
    }
}

fn delete_pod(name: &str) -> Step {
    Step {
        action: Action::DeletePod {
            node: "n1".into(),
            pod: PodRef {
                namespace: "default".into(),
                name: name.into(),
                uid: format!("uid-{name}"),
                resource_version: None,
                statefulset: Some("web".into()),
            },
            why: "test".into(),
        },
        facts: None,
    }
}

fn delete_va(name: &str) -> Step {
    Step {
        action: Action::DeleteVolumeAttachment {
            node: "n1".into(),
            attachment: AttachmentRef {
                name: name.into(),
                uid: format!("uid-{name}"),
                resource_version: Some("3".into()),
            },
            volume: "pv-1".into(),
            why: "test".into(),
        },
        facts: None,
    }
}

fn fence(attempt: u32) -> Step {
    Step {
        action: Action::RunFenceCommand {
            node: "n1".into(),
            addresses: vec!["10.0.0.1".into()],
            attempt,
            why: "test".into(),
        },
        facts: None,
    }
}

fn reasons(rx: &mut tokio::sync::mpsc::Receiver<EventMsg>) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e.reason);
    }
    out
}

fn count(metrics: &Metrics, vec: &str, labels: &[&str]) -> u64 {
    let v = match vec {
        "fencing_operations" => &metrics.fencing_operations,
        "pods_force_deleted" => &metrics.pods_force_deleted,
        _ => &metrics.volume_attachments_deleted,
    };
    v.with_label_values(labels).get()
}

#[tokio::test]
async fn actions_go_through_the_writer_in_order_and_are_told() {
    let (mut ls, mut rx) = loop_state(FakeWriter::default());
    let steps = vec![
        update(NodeIntent::MarkFenced),
        delete_pod("web-1"),
        delete_va("va-1"),
    ];
    let done = ls.execute(steps, now_at(1), &leader()).await;
    assert_eq!(
        ls.writer.calls(),
        ["update n1 fence", "delete pod web-1", "delete va va-1"]
    );
    assert!(done.wrote && done.warnings.is_empty());
    assert_eq!(
        reasons(&mut rx),
        [
            "NodeFenced",
            "PodForceDeleted",
            "PodForceDeleted",
            "VolumeAttachmentDeleted"
        ]
    );
    let m = &ls.telemetry.metrics.clone();
    assert_eq!(count(m, "fencing_operations", &["fence", "success"]), 1);
    assert_eq!(count(m, "pods_force_deleted", &["success"]), 1);
    assert_eq!(count(m, "volume_attachments_deleted", &["success"]), 1);
    // The node as written is in the index; its recovery was timed once.
    assert_eq!(
        ls.index.observations().nodes["n1"]
            .facts
            .resource_version
            .as_deref(),
        Some("2")
    );
    assert_eq!(m.recovery_seconds.get_sample_count(), 1);
    ls.execute(vec![update(NodeIntent::MarkFenced)], now_at(2), &leader())
        .await;
    assert_eq!(m.recovery_seconds.get_sample_count(), 1);
}

#[tokio::test]
async fn a_deletion_is_not_sent_twice_but_a_changed_pod_is_tried_again() {
    let (mut ls, _rx) = loop_state(FakeWriter::default());
    ls.writer
        .delete_results
        .lock()
        .unwrap()
        .push_back(Ok(Deleted::PreconditionFailed));
    for t in 1..=3 {
        let steps = vec![delete_pod("web-1"), delete_va("va-1")];
        ls.execute(steps, now_at(t), &leader()).await;
    }
    assert_eq!(
        ls.writer.calls(),
        [
            "delete pod web-1", // 409: changed since it was listed
            "delete va va-1",
            "delete pod web-1", // deleted
        ]
    );
}

#[tokio::test]
async fn a_changed_volume_attachment_is_tried_again_and_is_no_error() {
    let (mut ls, mut rx) = loop_state(FakeWriter::default());
    ls.writer
        .delete_results
        .lock()
        .unwrap()
        .push_back(Ok(Deleted::PreconditionFailed));
    for t in 1..=3 {
        let done = ls
            .execute(vec![delete_va("va-1")], now_at(t), &leader())
            .await;
        assert!(done.warnings.is_empty(), "{:?}", done.warnings);
    }
    assert_eq!(
        ls.writer.calls(),
        [
            "delete va va-1", // 409: replaced or changed since it was listed
            "delete va va-1", // deleted
        ]
    );
    let m = &ls.telemetry.metrics;
    assert_eq!(
        count(m, "volume_attachments_deleted", &["precondition_failed"]),
        1
    );
    assert_eq!(count(m, "volume_attachments_deleted", &["success"]), 1);
    assert_eq!(reasons(&mut rx), ["VolumeAttachmentDeleted"]);
}

#[tokio::test]
async fn clearing_an_unfence_request_is_told() {
    let (mut ls, mut rx) = loop_state(FakeWriter::default());
    let done = ls
        .execute(
            vec![update(NodeIntent::ClearUnfenceRequest)],
            now_at(1),
            &leader(),
        )
        .await;
    assert!(done.wrote && done.warnings.is_empty());
    assert_eq!(ls.writer.calls(), ["update n1 clear_unfence"]);
    let events: Vec<EventMsg> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].reason, "UnfenceRequestCleared");
    assert!(!events[0].warning, "a Normal Event");
    assert!(
        events[0].note.contains("test"),
        "the decision's why: {:?}",
        events[0].note
    );
    let m = &ls.telemetry.metrics;
    assert_eq!(
        count(m, "fencing_operations", &["clear_unfence", "success"]),
        1
    );
}

#[tokio::test]
async fn a_failure_is_reported_and_the_next_action_still_runs() {
    let (mut ls, mut rx) = loop_state(FakeWriter::default());
    ls.writer
        .node_results
        .lock()
        .unwrap()
        .push_back(Err(ExecError::NodeGone("n1".into())));
    let steps = vec![update(NodeIntent::BeginFencing), delete_pod("web-1")];
    let done = ls.execute(steps, now_at(1), &leader()).await;
    assert_eq!(ls.writer.calls(), ["update n1 begin", "delete pod web-1"]);
    assert_eq!(done.warnings.len(), 1, "{:?}", done.warnings);
    assert!(
        done.warnings[0].message.contains("FencingStarted failed")
            && done.warnings[0].message.contains("not found"),
        "{:?}",
        done.warnings
    );
    assert!(
        done.began_fencing.is_empty(),
        "no contradiction check for a failed write"
    );
    let m = &ls.telemetry.metrics;
    assert_eq!(count(m, "fencing_operations", &["begin", "error"]), 1);
    assert_eq!(reasons(&mut rx), ["PodForceDeleted", "PodForceDeleted"]);
}

#[tokio::test]
async fn nothing_is_sent_without_confirmed_leadership() {
    let (mut ls, _rx) = loop_state(FakeWriter::default());
    let steps = vec![
        update(NodeIntent::MarkFenced),
        delete_pod("web-1"),
        fence(1),
    ];
    let done = ls.execute(steps, now_at(1), &Leadership::default()).await;
    assert!(ls.writer.calls().is_empty());
    assert!(!done.wrote);
    assert!(ls.memory.fence_commands().is_empty());
}

#[tokio::test]
async fn a_fence_command_runs_until_its_result_comes_back() {
    let (mut ls, mut rx) = loop_state(FakeWriter::default());
    ls.execute(vec![fence(1)], now_at(1), &leader()).await;
    assert_eq!(
        ls.memory.fence_commands().get("n1"),
        Some(&FenceCommandState::Running { attempt: 1 })
    );
    let result = FenceResult {
        node: "n1".into(),
        attempt: 1,
        outcome: Outcome::Failure("exit 1".into()),
    };
    ls.fence_finished(&result, testutil::mono(5));
    assert!(matches!(
        ls.memory.fence_commands().get("n1"),
        Some(FenceCommandState::Failed { attempt: 1, .. })
    ));
    let m = &ls.telemetry.metrics;
    assert_eq!(m.fence_commands.with_label_values(&["failure"]).get(), 1);
    assert_eq!(reasons(&mut rx), ["FenceCommandFailed"]);
}

#[tokio::test]
async fn without_a_fence_command_nothing_is_running() {
    let writer = FakeWriter {
        fence: Some(FenceStart::NoCommand),
        ..FakeWriter::default()
    };
    let (mut ls, _rx) = loop_state(writer);
    ls.execute(vec![fence(1)], now_at(1), &leader()).await;
    assert!(ls.memory.fence_commands().is_empty());
}

#[tokio::test]
async fn a_dry_run_sends_nothing_and_says_what_it_would_do() {
    let (service, mut handle) = tower_test::mock::pair::<
        http::Request<kube::client::Body>,
        http::Response<kube::client::Body>,
    >();
    let client = Client::new(service, "default");
    let settings = testutil::settings();
    let writer = DryRunWriter {
        reader: Executor::new(client, settings.clone(), Metrics::new(), leader()),
        settings,
        overlay: Overlay::default(),
    };
    let (mut ls, mut rx) = loop_state(writer);
    let steps = vec![
        update(NodeIntent::BeginFencing),
        delete_pod("web-1"),
        fence(1),
    ];
    let done = ls.execute(steps, now_at(1), &leader()).await;
    assert!(done.wrote && done.warnings.is_empty());
    assert!(
        done.began_fencing.is_empty(),
        "nobody to ask: nothing was written"
    );
    assert_eq!(
        reasons(&mut rx),
        [
            "DryRunFencingStarted",
            "DryRunPodForceDeleted",
            "DryRunPodForceDeleted",
            "DryRunFenceCommand"
        ]
    );
    let m = &ls.telemetry.metrics;
    assert_eq!(count(m, "fencing_operations", &["begin", "dry_run"]), 1);
    assert_eq!(count(m, "pods_force_deleted", &["dry_run"]), 1);
    // The index still shows the node as watched.
    assert_eq!(
        ls.index.observations().nodes["n1"]
            .facts
            .resource_version
            .as_deref(),
        Some("1")
    );
    let sent = tokio::time::timeout(Duration::from_millis(50), handle.next_request()).await;
    assert!(sent.is_err(), "a dry run sent a request");
}
