//! The leader's work: watch Nodes and node Leases into the [`Index`], decide
//! (on any change, debounced; on the core's `next_wakeup`; at least every
//! second), and execute the actions through a [`ClusterWriter`]: the API, or
//! with `--dry-run` a writer that only records what it would do.

use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, ObjectReference};
use kube::Client;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use tokio::sync::mpsc;

use super::election::Leadership;
use super::executor::{Deleted, Executor, NodeWrite};
use super::facts::trim_node;
use super::index::{Attached, Index};
use super::leader_state::{LeaderState, attachment_key, pod_key};
use super::peer_auth::PeerKey;
use super::peers;
use super::pods::PodCache;
use super::telemetry::{About, Telemetry};
use super::writer::{
    ClusterWriter, DryRunWriter, FenceCommand, FenceResult, FenceRun, FenceStart, KubeWriter,
};
use crate::decide::dryrun::Overlay;
use crate::decide::{self, Action, NodeIntent, Now, PodRef, Report, Settings, Warning};
use crate::ops::events::node_ref;
use crate::ops::{ApiContact, EventSink, Health, Metrics};
use crate::status::summary::LeaderSummary;

/// Namespace of the kubelets' node Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// Changes are batched for this long before deciding.
pub const DEBOUNCE: Duration = Duration::from_millis(100);
/// A decision is made at least this often.
pub const MAX_INTERVAL: Duration = Duration::from_secs(1);

/// Everything the leader's loop needs; built by the agent when it becomes leader.
#[derive(Clone)]
pub struct Leader {
    pub client: Client,
    pub settings: Settings,
    pub dry_run: bool,
    pub metrics: Metrics,
    pub events: EventSink,
    pub health: Health,
    /// The agent's API contact clock (the watches' events set it).
    pub contact: ApiContact,
    pub leadership: Leadership,
    /// Object that cluster-wide Events (storm guard) are attached to.
    pub announce: ObjectReference,
    /// `--fence-command` and its timeout.
    pub fence_command: Option<String>,
    pub fence_command_timeout: Duration,
    /// The peer key: with it, the leader asks the agent of a node it begins
    /// to fence whether it is alive and connected (a contradiction).
    pub peer_key: Option<PeerKey>,
    /// The summary `kube-fencer status` reads from the leader Lease.
    pub published: super::election::Published,
}

/// How long the leader waits for a node's agent when it checks for a contradiction.
const CONTRADICTION_ASK_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Default)]
struct PassOutcome {
    /// Something was written (or, in a dry run, would have been): decide again promptly.
    wrote: bool,
    next_wakeup: Option<Instant>,
}

/// One action, with the node's facts as the decision saw them (what a node
/// update is rendered against).
struct Step {
    action: Action,
    facts: Option<decide::NodeFacts>,
}

/// What executing a decision's actions did.
#[derive(Default)]
struct Executed {
    wrote: bool,
    /// Failures to report with the decision's own warnings.
    warnings: Vec<Warning>,
    /// Nodes whose fencing began: their agents are asked whether they still
    /// reach the API server.
    began_fencing: Vec<(String, decide::NodeFacts, Option<String>)>,
}

/// The leader loop's state, with the writer it drives.
struct LoopState<W> {
    writer: W,
    telemetry: Telemetry,
    state: LeaderState,
    index: Index,
    pods: PodCache,
    was_synced: bool,
}

impl Leader {
    pub async fn run(self) {
        let executor = Executor::new(
            self.client.clone(),
            self.settings.clone(),
            self.metrics.clone(),
            self.leadership.clone(),
        );
        let (results, results_rx) = mpsc::unbounded_channel();
        if self.dry_run {
            let writer = DryRunWriter {
                reader: executor,
                settings: self.settings.clone(),
                overlay: Overlay::default(),
            };
            // Nothing runs, so nothing sends; the sender lives as long as the loop.
            let _results = results;
            self.run_with(writer, results_rx).await
        } else {
            let fence = FenceCommand {
                command: self.fence_command.clone(),
                timeout: self.fence_command_timeout,
                results,
            };
            self.run_with(KubeWriter { executor, fence }, results_rx)
                .await
        }
    }

    async fn run_with<W: ClusterWriter>(
        self,
        writer: W,
        mut fence_results: mpsc::UnboundedReceiver<FenceResult>,
    ) {
        let nodes_api: Api<Node> = Api::all(self.client.clone());
        let leases_api: Api<PartialObjectMeta<Lease>> =
            Api::namespaced(self.client.clone(), NODE_LEASE_NAMESPACE);
        let mut nodes = watcher::watcher(nodes_api, watcher::Config::default())
            .default_backoff()
            .modify(trim_node)
            .boxed();
        let mut leases = watcher::watcher(leases_api, watcher::Config::default())
            .default_backoff()
            .modify(|l: &mut PartialObjectMeta<Lease>| {
                l.metadata.managed_fields = None;
                l.metadata.annotations = None;
                l.metadata.labels = None;
            })
            .boxed();
        let mut ls = LoopState {
            writer,
            telemetry: Telemetry {
                metrics: self.metrics.clone(),
                events: self.events.clone(),
            },
            state: LeaderState::default(),
            index: Index::new(self.settings.unreachable_after),
            pods: PodCache::default(),
            was_synced: false,
        };
        self.health.set_caches_synced(false);
        self.metrics.cache_synced.set(0);
        tracing::info!(
            dry_run = self.dry_run,
            "leader: watching Nodes and node Leases"
        );

        let mut dirty_since: Option<Instant> = None;
        let mut lease_watch_failed = false;
        let mut last_pass = Instant::now();
        let mut next_wakeup: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let mut due = last_pass + MAX_INTERVAL;
            if let Some(t) = dirty_since {
                due = due.min(t + DEBOUNCE);
            }
            if let Some(t) = next_wakeup {
                due = due.min(t.max(now + Duration::from_millis(20)));
            }
            tokio::select! {
                item = nodes.next() => match item {
                    Some(Ok(ev)) => {
                        if crate::ops::api_contact::is_api_contact(&ev) {
                            self.contact.seen();
                        }
                        if ls.index.on_node_event(ev, Instant::now()) {
                            dirty_since.get_or_insert_with(Instant::now);
                        }
                    }
                    Some(Err(e)) => {
                        self.metrics.watch_error("nodes");
                        tracing::warn!(error = %e, "Node watch failed; retrying");
                    }
                    None => return,
                },
                item = leases.next() => match item {
                    Some(Ok(ev)) => {
                        if crate::ops::api_contact::is_api_contact(&ev) {
                            self.contact.seen();
                        }
                        if std::mem::take(&mut lease_watch_failed) {
                            tracing::warn!("node Lease watch works again: every node's heartbeat timer restarts (renewals during the gap were not seen)");
                            ls.index.lease_watch_resumed(Instant::now());
                        }
                        if ls.index.on_lease_event(ev, Instant::now()) {
                            dirty_since.get_or_insert_with(Instant::now);
                        }
                    }
                    Some(Err(e)) => {
                        lease_watch_failed = true;
                        // Blind until it works again: decide nothing.
                        ls.index.lease_watch_failed();
                        self.metrics.watch_error("leases");
                        tracing::warn!(error = %e, "node Lease watch failed; retrying");
                    }
                    None => return,
                },
                Some(done) = fence_results.recv() => {
                    ls.fence_finished(&done, Instant::now());
                    dirty_since.get_or_insert_with(Instant::now);
                }
                _ = tokio::time::sleep_until(due.into()) => {
                    let started = Instant::now();
                    let outcome = self.pass(&mut ls).await;
                    self.metrics
                        .reconcile_duration
                        .observe(started.elapsed().as_secs_f64());
                    last_pass = Instant::now();
                    dirty_since = outcome.wrote.then_some(last_pass);
                    next_wakeup = outcome.next_wakeup;
                }
            }
        }
    }

    /// Decide on the index (with the pods the decision needs), execute, report.
    async fn pass<W: ClusterWriter>(&self, ls: &mut LoopState<W>) -> PassOutcome {
        let synced = ls.index.synced();
        self.health.set_caches_synced(synced);
        self.metrics.cache_synced.set(i64::from(synced));
        if synced != ls.was_synced {
            ls.was_synced = synced;
            if synced {
                tracing::info!(nodes = ls.index.node_count(), "caches synced");
            } else {
                tracing::info!("caches resyncing: deciding nothing until complete");
            }
        }
        if !synced {
            return PassOutcome::default();
        }
        let s = &self.settings;
        let now = Now {
            mono: Instant::now(),
            wall: SystemTime::now(),
        };
        ls.state.begin_pass(ls.index.observations(), now.mono);
        let needing = decide::nodes_needing_pods(&ls.writer.view(ls.index.observations()), s);
        let (pods, volume_attachments) = ls
            .pods
            .fetch(&self.client, &needing, &self.metrics, now.mono)
            .await;
        let attached = Attached {
            pods,
            volume_attachments,
            fence_commands: ls.state.fence_commands().clone(),
        };
        let writer = &mut ls.writer;
        let (decision, steps) = ls.index.with_attached(attached, |obs| {
            let view = writer.view(obs);
            let decision = decide::decide(&view, now, s);
            writer.decided(&decision.actions, &view, now, s);
            let steps = plan(&decision.actions, &view);
            (decision, steps)
        });
        let executed = ls.execute(steps, now, &self.leadership).await;
        for (node, facts, uid) in &executed.began_fencing {
            self.check_contradiction(node, facts, uid.as_deref());
        }
        self.report(ls, &decision.report, executed.warnings);
        PassOutcome {
            wrote: executed.wrote,
            next_wakeup: decision.report.next_wakeup,
        }
    }

    /// A node whose Lease went stale may still run a connected agent (its
    /// kubelet died or hangs). Ask that agent, and if it answers that it
    /// reaches the API server, say so: the heartbeat and the agent contradict
    /// each other. The leader does not race the agent: the Fencing record it
    /// just wrote is what makes that agent fence itself (rule 1), and the
    /// node is marked fenced only after its safe time, as for any other.
    fn check_contradiction(&self, node: &str, facts: &decide::NodeFacts, uid: Option<&str>) {
        let (Some(key), Some(addr)) = (
            self.peer_key.clone(),
            facts.agent.valid().and_then(|a| a.peer_address.clone()),
        ) else {
            return;
        };
        let question = peers::Question {
            from: self.settings.self_node.clone(),
            node: node.to_string(),
        };
        let (events, metrics) = (self.events.clone(), self.metrics.clone());
        let (node, uid) = (node.to_string(), uid.map(str::to_string));
        tokio::spawn(async move {
            let answer = peers::ask_peer(&addr, &key, &question, CONTRADICTION_ASK_TIMEOUT).await;
            if let Ok(a) = answer
                && a.api_reachable
            {
                metrics.contradictions.inc();
                let message = format!(
                    "node {node}'s Lease is stale, yet its kube-fencer agent answers and reaches the API server (kubelet stopped or stuck?); its agent fences itself on the Fencing record, and the node is marked fenced only after its safe time"
                );
                tracing::warn!(node = %node, "{message}");
                events.warning(
                    node_ref(&node, uid.as_deref()),
                    "AgentConnectedLeaseStale",
                    "BeginFencing",
                    &message,
                );
            }
        });
    }

    /// Gauges, the published summary, new safe times, the storm guard's
    /// edge and the warnings not reported yet.
    fn report<W>(&self, ls: &mut LoopState<W>, report: &Report, failures: Vec<Warning>) {
        self.metrics.observe_report(report);
        let now = Now {
            mono: Instant::now(),
            wall: SystemTime::now(),
        };
        self.published
            .send_replace(Some(LeaderSummary::from_report(report, now)));
        let mut warnings = report.warnings.clone();
        warnings.extend(failures);
        let news = ls.state.after_report(report, &warnings);
        for node in &news.new_safe_times {
            let safe = &report.safe_times[node];
            tracing::info!(
                node = %node,
                safe_time_seconds = safe.total().as_secs_f64(),
                detect_seconds = safe.detect.as_secs_f64(),
                consult_seconds = safe.consult.as_secs_f64(),
                watchdog_seconds = safe.watchdog.as_secs_f64(),
                margin_seconds = safe.margin.as_secs_f64(),
                "safe time: {safe}"
            );
        }
        let guard = &report.storm_guard;
        if news.storm_change == Some(true) {
            self.metrics.storm_guard_activations.inc();
            let note = format!(
                "{} of {} managed nodes are unhealthy (at most {} allowed): no new fencing until fewer are",
                guard.unhealthy, guard.managed, guard.allowed
            );
            tracing::warn!(
                unhealthy = guard.unhealthy,
                managed = guard.managed,
                allowed = guard.allowed,
                "storm guard active: {note}"
            );
            self.events.warning(
                self.announce.clone(),
                "StormGuardActive",
                "HoldFencing",
                &note,
            );
        } else if news.storm_change == Some(false) {
            tracing::info!(
                unhealthy = guard.unhealthy,
                managed = guard.managed,
                "storm guard released"
            );
        }
        for w in news.fresh_warnings {
            self.metrics.warnings.inc();
            let regarding = match &w.node {
                Some(n) => node_ref(n, ls.index.stored(n).and_then(|e| e.uid.as_deref())),
                None => self.announce.clone(),
            };
            tracing::warn!(node = ?w.node, "{}", w.message);
            self.events
                .warning(regarding, "KubeFencerWarning", "Report", &w.message);
        }
    }
}

/// The decision's actions, each with the facts it is rendered against.
fn plan(actions: &[Action], view: &decide::Observations) -> Vec<Step> {
    actions
        .iter()
        .map(|action| Step {
            facts: match action {
                Action::UpdateNode { node, .. } => view.nodes.get(node).map(|n| n.facts.clone()),
                _ => None,
            },
            action: action.clone(),
        })
        .collect()
}

impl<W: ClusterWriter> LoopState<W> {
    fn about<'a>(&'a self, node: &'a str) -> About<'a> {
        About {
            node,
            uid: self.index.stored(node).and_then(|e| e.uid.as_deref()),
        }
    }

    /// Execute the steps in order, while leadership is confirmed.
    async fn execute(&mut self, steps: Vec<Step>, now: Now, leadership: &Leadership) -> Executed {
        let mut done = Executed::default();
        for Step { action, facts } in steps {
            if !leadership.is_valid(Instant::now()) {
                tracing::warn!("leadership not confirmed: not executing further actions");
                break;
            }
            match action {
                Action::UpdateNode { node, intent, why } => {
                    if let Some(facts) = facts {
                        self.update_node(&node, &intent, facts, &why, now, &mut done)
                            .await;
                    }
                }
                Action::DeletePod { node, pod, why } => {
                    self.delete_pod(&node, &pod, &why, &mut done).await
                }
                Action::DeleteVolumeAttachment {
                    node,
                    name,
                    volume,
                    why,
                } => {
                    self.delete_attachment(&node, &name, &volume, &why, &mut done)
                        .await
                }
                Action::ConfirmLease { node, why } => {
                    tracing::debug!(node = %node, why = %why, "confirming the node's Lease");
                    let result = match self.writer.read_lease(&node).await {
                        Ok(rv) => Ok(self.index.lease_read(&node, rv.as_deref(), Instant::now())),
                        Err(e) => Err(e),
                    };
                    done.wrote |= result.is_ok();
                    done.warnings
                        .extend(self.telemetry.lease_read(&node, &result));
                }
                Action::RunFenceCommand {
                    node,
                    addresses,
                    attempt,
                    why,
                } => {
                    let start = self.writer.run_fence_command(FenceRun {
                        node: node.clone(),
                        addresses: addresses.clone(),
                        attempt,
                    });
                    if start != FenceStart::NoCommand {
                        self.state.fence_started(&node, attempt);
                    }
                    self.telemetry.fence_started(
                        self.about(&node),
                        attempt,
                        &addresses,
                        &why,
                        start,
                    );
                }
            }
        }
        done
    }

    async fn update_node(
        &mut self,
        node: &str,
        intent: &NodeIntent,
        facts: decide::NodeFacts,
        why: &str,
        now: Now,
        done: &mut Executed,
    ) {
        let stored = self.index.stored(node).cloned().unwrap_or_default();
        let result = self
            .writer
            .update_node(intent, &facts, &stored.taints, now)
            .await;
        let about = About {
            node,
            uid: stored.uid.as_deref(),
        };
        done.warnings.extend(self.telemetry.node_update(
            about,
            intent,
            &facts.record,
            why,
            &result,
        ));
        match result {
            Ok(NodeWrite::Written(mut written)) => {
                if *intent == NodeIntent::BeginFencing {
                    done.began_fencing
                        .push((node.to_string(), facts, stored.uid.clone()));
                }
                // Marked fenced = its pods are released: the out-of-service
                // taint lets Kubernetes' PodGC delete them at once (often
                // before this leader's own force-delete, which then finds
                // them gone), and the leader force-deletes its StatefulSet
                // pods in the same or the next pass.
                if *intent == NodeIntent::MarkFenced
                    && self.state.first_fenced(node)
                    && let Some(hb) = self.index.heartbeat(node)
                {
                    self.telemetry
                        .recovered(Instant::now().saturating_duration_since(hb.last_renewal));
                }
                trim_node(&mut written);
                self.index.upsert_node(&written, Instant::now());
                self.pods.invalidate_node(node);
                done.wrote = true;
            }
            Ok(NodeWrite::DryRun) => done.wrote = true,
            Ok(NodeWrite::Skipped(_)) | Err(_) => {}
        }
    }

    async fn delete_pod(&mut self, node: &str, pod: &PodRef, why: &str, done: &mut Executed) {
        let key = pod_key(&pod.uid);
        if self.state.deleted_recently(&key) {
            return;
        }
        let result = self.writer.delete_pod(pod).await;
        done.warnings.extend(
            self.telemetry
                .pod_delete(self.about(node), pod, why, &result),
        );
        if let Ok(deleted) = result {
            if deleted != Deleted::PreconditionFailed {
                // A pod changed since it was listed (409 on the
                // resourceVersion) is re-listed next pass.
                self.state.deleted(key, Instant::now());
            }
            self.pods.invalidate_node(node);
            done.wrote = true;
        }
    }

    async fn delete_attachment(
        &mut self,
        node: &str,
        name: &str,
        volume: &str,
        why: &str,
        done: &mut Executed,
    ) {
        let key = attachment_key(name);
        if self.state.deleted_recently(&key) {
            return;
        }
        let result = self.writer.delete_volume_attachment(name).await;
        done.warnings.extend(self.telemetry.attachment_delete(
            self.about(node),
            name,
            volume,
            why,
            &result,
        ));
        if result.is_ok() {
            self.state.deleted(key, Instant::now());
            self.pods.invalidate_attachments();
            done.wrote = true;
        }
    }

    /// A fence command run came back.
    fn fence_finished(&mut self, done: &FenceResult, now: Instant) {
        self.telemetry
            .fence_finished(self.about(&done.node), done.attempt, &done.outcome);
        self.state
            .fence_finished(&done.node, done.attempt, &done.outcome, now);
    }
}

#[cfg(test)]
mod tests {
    //! `execute` against a fake writer (and the dry-run writer): what is
    //! sent, in which order, what is remembered and what is reported.

    use std::collections::VecDeque;
    use std::sync::Mutex;

    use kube::runtime::watcher::Event;
    use serde_json::json;

    use super::*;
    use crate::cluster::executor::ExecError;
    use crate::cluster::fence_command::Outcome;
    use crate::decide::testutil::{self, now_at};
    use crate::decide::{FenceCommandState, NodeFacts};
    use crate::ops::events::EventMsg;

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
        async fn delete_volume_attachment(&self, name: &str) -> Result<Deleted, ExecError> {
            self.call(format!("delete va {name}"));
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
            state: LeaderState::default(),
            index,
            pods: PodCache::default(),
            was_synced: true,
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
                name: name.into(),
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
        assert!(ls.state.fence_commands().is_empty());
    }

    #[tokio::test]
    async fn a_fence_command_runs_until_its_result_comes_back() {
        let (mut ls, mut rx) = loop_state(FakeWriter::default());
        ls.execute(vec![fence(1)], now_at(1), &leader()).await;
        assert_eq!(
            ls.state.fence_commands().get("n1"),
            Some(&FenceCommandState::Running { attempt: 1 })
        );
        let result = FenceResult {
            node: "n1".into(),
            attempt: 1,
            outcome: Outcome::Failure("exit 1".into()),
        };
        ls.fence_finished(&result, testutil::mono(5));
        assert!(matches!(
            ls.state.fence_commands().get("n1"),
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
        assert!(ls.state.fence_commands().is_empty());
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
}
