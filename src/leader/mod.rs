//! The leader's work, only while this agent leads: watch Nodes and node
//! Leases into the [`Index`], decide (on any change, debounced; on the core's
//! `next_wakeup`; at least every second), and execute the actions through a
//! [`ClusterWriter`]: the API, or with `--dry-run` a writer that only records
//! what it would do.
//!
//! - [`index`]: the in-memory view the watches feed, in the core's shape.
//! - [`pods`]: pods and VolumeAttachments of fenced nodes, listed on demand.
//! - [`writer`] and [`executor`]: every change goes through one writer; the
//!   executor sends exact, preconditioned writes ([`merge_patch`]).
//! - [`fence_command`]: runs `--fence-command`.
//! - [`telemetry`]: one metric, log line and Event per outcome.
//! - [`memory`]: the leader's own bookkeeping between passes.

use std::collections::BTreeMap;
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

use crate::decide::leader::dry_run::Overlay;
use crate::decide::{
    self, Action, AttachmentRef, NodeIntent, Now, PodRef, Report, Settings, Warning,
};
use crate::k8s::ApiContact;
use crate::k8s::NODE_LEASE_NAMESPACE;
use crate::k8s::election::Leadership;
use crate::k8s::facts::trim_node;
use crate::leader::executor::{Deleted, Executor, NodeWrite};
use crate::leader::index::{Attached, Index};
use crate::leader::memory::{LeaderMemory, attachment_key, pod_key};
use crate::leader::pods::PodCache;
use crate::leader::telemetry::{About, Telemetry};
use crate::leader::writer::{
    ClusterWriter, DryRunWriter, FenceCommand, FenceResult, FenceRun, FenceStart, KubeWriter,
};
use crate::observability::events::node_ref;
use crate::observability::{EventSink, Health, Metrics};
use crate::peers;
use crate::peers::auth::PeerKey;
use crate::status::summary::LeaderSummary;

pub mod executor;
pub mod fence_command;
pub mod index;
pub mod memory;
pub mod merge_patch;
pub mod permits;
pub mod pods;
pub mod telemetry;
pub mod writer;

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
    pub published: crate::k8s::election::Published,
    /// The agents' namespace, where the permit objects live.
    pub namespace: String,
}

/// How long the leader waits for a node's agent when it checks for a contradiction.
const CONTRADICTION_ASK_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Default)]
struct PassOutcome {
    /// Something was written (or, in a dry run, would have been): decide again promptly.
    wrote: bool,
    next_wakeup: Option<Instant>,
    /// Nodes whose stale Lease a consistent read just confirmed.
    confirmed: Vec<String>,
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
    /// Nodes whose stale Lease a consistent read confirmed.
    confirmed: Vec<String>,
}

/// The leader loop's state, with the writer it drives.
struct LoopState<W> {
    writer: W,
    telemetry: Telemetry,
    memory: LeaderMemory,
    index: Index,
    pods: PodCache,
    was_synced: bool,
    /// The revocations through the permit, as of the last step.
    permits: BTreeMap<String, crate::decide::PermitFence>,
    /// From when each armed node's permit is over, by its grantors'
    /// reports, as of the last step.
    permit_over: BTreeMap<String, Instant>,
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
            memory: LeaderMemory::default(),
            index: Index::new(self.settings.unreachable_after),
            pods: PodCache::default(),
            was_synced: false,
            permits: BTreeMap::new(),
            permit_over: BTreeMap::new(),
        };
        self.health.set_caches_synced(false);
        self.metrics.cache_synced.set(0);
        tracing::info!(
            dry_run = self.dry_run,
            "leader: watching Nodes and node Leases"
        );

        let timings = crate::decide::permit::timings::Timings::default();
        let mut permits = permits::PermitObjects::new(
            self.client.clone(),
            &self.namespace,
            timings.grantors,
            self.dry_run,
            self.metrics.clone(),
        );
        let mut revocations = permits::revoke::Revocations::new(
            self.peer_key.clone(),
            timings.revoke(),
            self.dry_run,
            self.metrics.clone(),
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
                        if crate::k8s::api_contact::is_api_contact(&ev) {
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
                        if crate::k8s::api_contact::is_api_contact(&ev) {
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
                    if ls.index.synced() {
                        // What the next pass begins a fencing on is read
                        // afresh, not taken from a watch that may stall:
                        // the Lease (just read) and the permit object.
                        permits.refresh(&outcome.confirmed).await;
                        permits
                            .sync(ls.index.observations(), &self.settings, last_pass)
                            .await;
                        revocations
                            .step(&permits, ls.index.observations(), Instant::now())
                            .await;
                        ls.permits = revocations.fences(ls.index.observations());
                        ls.permit_over = permits.over(
                            ls.index.observations(),
                            crate::decide::permit::timings::Timings::default().drift,
                        );
                    }
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
        ls.memory.begin_pass(ls.index.observations(), now.mono);
        let needing = decide::nodes_needing_pods(&ls.writer.view(ls.index.observations()), s);
        let (pods, volume_attachments) = ls
            .pods
            .fetch(&self.client, &needing, &self.metrics, now.mono)
            .await;
        let attached = Attached {
            pods,
            volume_attachments,
            fence_commands: ls.memory.fence_commands().clone(),
            permits: ls.permits.clone(),
            permit_over: ls.permit_over.clone(),
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
            confirmed: executed.confirmed,
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
        let news = ls.memory.after_report(report, &warnings);
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
                    attachment,
                    volume,
                    why,
                } => {
                    self.delete_attachment(&node, &attachment, &volume, &why, &mut done)
                        .await
                }
                Action::ConfirmLease { node, why } => {
                    tracing::debug!(node = %node, why = %why, "confirming the node's Lease");
                    let result = match self.writer.read_lease(&node).await {
                        Ok(rv) => Ok(self.index.lease_read(&node, rv.as_deref(), Instant::now())),
                        Err(e) => Err(e),
                    };
                    done.wrote |= result.is_ok();
                    if matches!(result, Ok(index::LeaseRead::Unchanged)) {
                        done.confirmed.push(node.clone());
                    }
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
                        self.memory.fence_started(&node, attempt);
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
                    && self.memory.first_fenced(node)
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
        if self.memory.deleted_recently(&key) {
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
                self.memory.deleted(key, Instant::now());
            }
            self.pods.invalidate_node(node);
            done.wrote = true;
        }
    }

    async fn delete_attachment(
        &mut self,
        node: &str,
        attachment: &AttachmentRef,
        volume: &str,
        why: &str,
        done: &mut Executed,
    ) {
        let key = attachment_key(&attachment.uid);
        if self.memory.deleted_recently(&key) {
            return;
        }
        let result = self.writer.delete_volume_attachment(attachment).await;
        done.warnings.extend(self.telemetry.attachment_delete(
            self.about(node),
            &attachment.name,
            volume,
            why,
            &result,
        ));
        if let Ok(deleted) = result {
            if deleted != Deleted::PreconditionFailed {
                // An attachment replaced or changed since it was listed (409
                // on the UID or resourceVersion) is re-listed next pass.
                self.memory.deleted(key, Instant::now());
            }
            self.pods.invalidate_attachments();
            done.wrote = true;
        }
    }

    /// A fence command run came back.
    fn fence_finished(&mut self, done: &FenceResult, now: Instant) {
        self.telemetry
            .fence_finished(self.about(&done.node), done.attempt, &done.outcome);
        self.memory
            .fence_finished(&done.node, done.attempt, &done.outcome, now);
    }
}

#[cfg(test)]
mod tests;
