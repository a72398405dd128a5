//! The leader's work: watch Nodes and node Leases into the [`Index`], decide
//! (on any change, debounced; on the core's `next_wakeup`; at least every
//! second), and execute — or, in dry run, simulate — the actions.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, ObjectReference};
use kube::Client;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;

use super::election::Leadership;
use super::executor::{Deleted, Executor, NodeWrite};
use super::facts::trim_node;
use super::fence_command::{self, FenceCommands};
use super::index::{Index, LeaseRead};
use super::peer_auth::PeerKey;
use super::peers;
use super::pods::PodCache;
use crate::decide::dryrun::Overlay;
use crate::decide::patch::Skip;
use crate::decide::{
    self, Action, Decision, NodeIntent, NodeStatus, Now, Report, Settings, Warning,
};
use crate::ops::events::{Edge, WarningDedupe, node_ref, statefulset_ref};
use crate::ops::{EventSink, Health, Metrics};
use crate::status::summary::LeaderSummary;

/// Namespace of the kubelets' node Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// Changes are batched for this long before deciding.
pub const DEBOUNCE: Duration = Duration::from_millis(100);
/// A decision is made at least this often.
pub const MAX_INTERVAL: Duration = Duration::from_secs(1);
/// A pod or VolumeAttachment deleted successfully is not deleted again for
/// this long (it may linger with a finalizer).
pub const REDELETE_AFTER: Duration = Duration::from_secs(30);

/// Everything the leader's loop needs; built by the agent when it becomes leader.
#[derive(Clone)]
pub struct Leader {
    pub client: Client,
    pub settings: Settings,
    pub dry_run: bool,
    pub metrics: Metrics,
    pub events: EventSink,
    pub health: Health,
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
    /// Something was written (or simulated): decide again promptly.
    wrote: bool,
    next_wakeup: Option<Instant>,
}

struct LoopState {
    index: Index,
    overlay: Overlay,
    pods: PodCache,
    warnings: WarningDedupe,
    storm: Edge,
    /// Fenced nodes whose recovery time was already observed.
    recovered: HashSet<String>,
    /// UIDs of pods / names of VolumeAttachments deleted recently.
    recently_deleted: HashMap<String, Instant>,
    was_synced: bool,
    /// External fence command runs of this leader.
    fence_commands: FenceCommands,
    /// Safe times already logged (node → total), to log each once.
    safe_times_logged: HashMap<String, Duration>,
}

impl Leader {
    pub async fn run(self) {
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
        let mut st = LoopState {
            index: Index::new(self.settings.unreachable_after),
            overlay: Overlay::default(),
            pods: PodCache::default(),
            warnings: WarningDedupe::default(),
            storm: Edge::default(),
            recovered: HashSet::new(),
            recently_deleted: HashMap::new(),
            was_synced: false,
            fence_commands: FenceCommands::default(),
            safe_times_logged: HashMap::new(),
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
                        if crate::ops::health::is_api_contact(&ev) {
                            self.health.api_ok();
                        }
                        if st.index.on_node_event(ev, Instant::now()) {
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
                        if crate::ops::health::is_api_contact(&ev) {
                            self.health.api_ok();
                        }
                        if std::mem::take(&mut lease_watch_failed) {
                            tracing::warn!("node Lease watch works again: every node's heartbeat timer restarts (renewals during the gap were not seen)");
                            st.index.lease_watch_resumed(Instant::now());
                        }
                        if st.index.on_lease_event(ev, Instant::now()) {
                            dirty_since.get_or_insert_with(Instant::now);
                        }
                    }
                    Some(Err(e)) => {
                        lease_watch_failed = true;
                        // Blind until it works again: decide nothing.
                        st.index.lease_watch_failed();
                        self.metrics.watch_error("leases");
                        tracing::warn!(error = %e, "node Lease watch failed; retrying");
                    }
                    None => return,
                },
                _ = tokio::time::sleep_until(due.into()) => {
                    let started = Instant::now();
                    let outcome = self.pass(&mut st).await;
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

    async fn pass(&self, st: &mut LoopState) -> PassOutcome {
        let synced = st.index.synced();
        self.health.set_caches_synced(synced);
        self.metrics.cache_synced.set(i64::from(synced));
        if synced != st.was_synced {
            st.was_synced = synced;
            if synced {
                tracing::info!(nodes = st.index.node_count(), "caches synced");
            } else {
                tracing::info!("caches resyncing: deciding nothing until complete");
            }
        }
        if !synced {
            return PassOutcome::default();
        }
        let now = Now {
            mono: Instant::now(),
            wall: SystemTime::now(),
        };
        st.recently_deleted
            .retain(|_, at| now.mono.saturating_duration_since(*at) < REDELETE_AFTER);
        {
            // Forget fence command results of nodes no longer being fenced
            // (a later fencing starts from scratch), then show the rest to the core.
            let obs = st.index.observations_mut();
            let mut cmds = st.fence_commands.lock().unwrap_or_else(|p| p.into_inner());
            cmds.retain(|node, state| {
                matches!(state, decide::FenceCommandState::Running { .. })
                    || obs
                        .nodes
                        .get(node)
                        .is_some_and(|n| n.facts.record.phase().is_some())
            });
            obs.fence_commands = cmds.clone();
        }
        if self.dry_run {
            self.dry_pass(st, now).await
        } else {
            self.real_pass(st, now).await
        }
    }

    async fn real_pass(&self, st: &mut LoopState, now: Now) -> PassOutcome {
        let s = &self.settings;
        let needing = decide::nodes_needing_pods(st.index.observations(), s);
        let (pods, attachments) = st
            .pods
            .fetch(&self.client, &needing, &self.metrics, now.mono)
            .await;
        {
            let obs = st.index.observations_mut();
            obs.pods = pods;
            obs.volume_attachments = attachments;
        }
        let decision = decide::decide(st.index.observations(), now, s);
        st.index.clear_pods();
        let mut extra_warnings = Vec::new();
        let wrote = self.execute(st, &decision, now, &mut extra_warnings).await;
        self.report(st, &decision.report, &extra_warnings);
        PassOutcome {
            wrote,
            next_wakeup: decision.report.next_wakeup,
        }
    }

    async fn dry_pass(&self, st: &mut LoopState, now: Now) -> PassOutcome {
        let s = &self.settings;
        let needing = {
            let mut o = st.index.observations().clone();
            st.overlay.apply(&mut o);
            decide::nodes_needing_pods(&o, s)
        };
        let (pods, attachments) = st
            .pods
            .fetch(&self.client, &needing, &self.metrics, now.mono)
            .await;
        let mut obs = st.index.observations().clone();
        obs.pods = pods;
        obs.volume_attachments = attachments;
        st.overlay.apply(&mut obs);
        let decision = decide::decide(&obs, now, s);
        let mut simulated = false;
        for action in &decision.actions {
            if let Action::ConfirmLease { node, .. } = action {
                // A read: done for real in a dry run too, so it progresses.
                let executor = Executor::new(
                    self.client.clone(),
                    self.settings.clone(),
                    self.metrics.clone(),
                    self.leadership.clone(),
                );
                simulated |= self.confirm_lease(st, &executor, node).await.is_ok();
                continue;
            }
            simulated |= self.simulate(&obs, action, now);
            if let Action::RunFenceCommand { node, attempt, .. } = action {
                // A dry run never learns the result: "run" it once only.
                st.fence_commands
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(
                        node.clone(),
                        decide::FenceCommandState::Running { attempt: *attempt },
                    );
            }
        }
        st.overlay.record(&decision.actions, &obs, now, s);
        self.report(st, &decision.report, &[]);
        PassOutcome {
            wrote: simulated,
            next_wakeup: decision.report.next_wakeup,
        }
    }

    /// Log, count and Event what an action would do. Returns whether it would write.
    fn simulate(&self, obs: &decide::Observations, action: &Action, now: Now) -> bool {
        match action {
            Action::UpdateNode { node, intent, why } => {
                let op = intent.operation();
                let Some(n) = obs.nodes.get(node) else {
                    return false;
                };
                if let Err(skip) = decide::patch::render(intent, &n.facts, now, &self.settings) {
                    self.metrics
                        .fencing_operations
                        .with_label_values(&[op, "skipped"])
                        .inc();
                    tracing::info!(node = %node, operation = op, skip = ?skip, dry_run = true, "node update not needed");
                    return false;
                }
                let reason = intent.reason(&n.facts.record);
                self.metrics
                    .fencing_operations
                    .with_label_values(&[op, "dry_run"])
                    .inc();
                tracing::warn!(node = %node, operation = op, reason, why = %why, dry_run = true, "dry run: would update node");
                self.events.normal(
                    node_ref(node, None),
                    &format!("DryRun{reason}"),
                    &format!("DryRun{}", intent.action()),
                    &format!("would {}: {why}", intent.description()),
                );
                true
            }
            Action::DeletePod { node, pod, why } => {
                self.metrics
                    .pods_force_deleted
                    .with_label_values(&["dry_run"])
                    .inc();
                tracing::warn!(node = %node, namespace = %pod.namespace, pod = %pod.name, uid = %pod.uid, why = %why, dry_run = true, "dry run: would force-delete pod");
                let note = format!(
                    "would force-delete pod {}/{}: {why}",
                    pod.namespace, pod.name
                );
                self.events.normal(
                    node_ref(node, None),
                    "DryRunPodForceDeleted",
                    "DryRunForceDelete",
                    &note,
                );
                if let Some(sts) = &pod.statefulset {
                    self.events.normal(
                        statefulset_ref(&pod.namespace, sts),
                        "DryRunPodForceDeleted",
                        "DryRunForceDelete",
                        &note,
                    );
                }
                true
            }
            Action::DeleteVolumeAttachment {
                node,
                name,
                volume,
                why,
            } => {
                self.metrics
                    .volume_attachments_deleted
                    .with_label_values(&["dry_run"])
                    .inc();
                tracing::warn!(node = %node, volume_attachment = %name, volume = %volume, why = %why, dry_run = true, "dry run: would delete VolumeAttachment");
                self.events.normal(
                    node_ref(node, None),
                    "DryRunVolumeAttachmentDeleted",
                    "DryRunDelete",
                    &format!("would delete VolumeAttachment {name} (volume {volume}): {why}"),
                );
                true
            }
            Action::ConfirmLease { .. } => false,
            Action::RunFenceCommand {
                node, attempt, why, ..
            } => {
                tracing::warn!(node = %node, attempt, why = %why, dry_run = true, "dry run: would run --fence-command");
                self.events.normal(
                    node_ref(node, None),
                    "DryRunFenceCommand",
                    "DryRunFenceCommand",
                    &format!("would run --fence-command: {why}"),
                );
                false
            }
        }
    }

    /// Execute actions in order. Returns whether anything was written.
    async fn execute(
        &self,
        st: &mut LoopState,
        decision: &Decision,
        now: Now,
        errors: &mut Vec<Warning>,
    ) -> bool {
        let executor = Executor::new(
            self.client.clone(),
            self.settings.clone(),
            self.metrics.clone(),
            self.leadership.clone(),
        );
        let mut wrote = false;
        for action in &decision.actions {
            if !self.leadership.is_valid(Instant::now()) {
                tracing::warn!("leadership not confirmed: not executing further actions");
                break;
            }
            match action {
                Action::UpdateNode { node, intent, why } => {
                    let op = intent.operation();
                    let Some(n) = st.index.observations().nodes.get(node) else {
                        continue;
                    };
                    let facts = n.facts.clone();
                    let extra = st.index.extra(node).cloned().unwrap_or_default();
                    let reason = intent.reason(&facts.record);
                    match executor
                        .update_node(intent, &facts, &extra.taints, now)
                        .await
                    {
                        Ok(NodeWrite::Written(mut written)) => {
                            self.metrics
                                .fencing_operations
                                .with_label_values(&[op, "success"])
                                .inc();
                            tracing::warn!(node = %node, operation = op, reason, why = %why, "node updated");
                            self.events.warning_or_normal(
                                intent.is_warning(),
                                node_ref(node, extra.uid.as_deref()),
                                reason,
                                intent.action(),
                                why,
                            );
                            if *intent == NodeIntent::BeginFencing {
                                self.check_contradiction(node, &facts, extra.uid.as_deref());
                            }
                            // Marked fenced = its pods are released: the
                            // out-of-service taint lets Kubernetes' PodGC
                            // delete them at once (often before this leader's
                            // own force-delete, which then finds them gone),
                            // and the leader force-deletes its StatefulSet
                            // pods in the same or the next pass.
                            if *intent == NodeIntent::MarkFenced
                                && st.recovered.insert(node.clone())
                                && let Some(hb) = st.index.heartbeat(node)
                            {
                                self.metrics.recovery_seconds.observe(
                                    Instant::now()
                                        .saturating_duration_since(hb.last_renewal)
                                        .as_secs_f64(),
                                );
                            }
                            trim_node(&mut written);
                            st.index.upsert_node(&written, Instant::now());
                            st.pods.invalidate_node(node);
                            wrote = true;
                        }
                        Ok(NodeWrite::Skipped(skip)) => {
                            self.metrics
                                .fencing_operations
                                .with_label_values(&[op, "skipped"])
                                .inc();
                            match skip {
                                Skip::AlreadyDone => {
                                    tracing::debug!(node = %node, operation = op, "node already as intended")
                                }
                                Skip::NoLongerApplies(r) => {
                                    tracing::info!(node = %node, operation = op, reason = %r, "node update no longer applies")
                                }
                            }
                        }
                        Err(e) => {
                            self.metrics
                                .fencing_operations
                                .with_label_values(&[op, "error"])
                                .inc();
                            tracing::warn!(node = %node, operation = op, error = %e, "node update failed");
                            errors.push(Warning {
                                node: Some(node.clone()),
                                message: format!("{reason} failed: {e}"),
                            });
                        }
                    }
                }
                Action::DeletePod { node, pod, why } => {
                    if st.recently_deleted.contains_key(&pod.uid) {
                        continue;
                    }
                    match executor.delete_pod(pod).await {
                        Ok(result) => {
                            self.metrics
                                .pods_force_deleted
                                .with_label_values(&[result.as_label()])
                                .inc();
                            if result != Deleted::PreconditionFailed {
                                // A pod changed since it was listed (409 on
                                // the resourceVersion) is re-listed next pass.
                                st.recently_deleted.insert(pod.uid.clone(), Instant::now());
                            }
                            st.pods.invalidate_node(node);
                            wrote = true;
                            if result == Deleted::Deleted {
                                tracing::warn!(node = %node, namespace = %pod.namespace, pod = %pod.name, uid = %pod.uid, why = %why, "pod force-deleted");
                                let note = format!(
                                    "force-deleted pod {}/{}: {why}",
                                    pod.namespace, pod.name
                                );
                                self.events.normal(
                                    node_ref(
                                        node,
                                        st.index.extra(node).and_then(|e| e.uid.as_deref()),
                                    ),
                                    "PodForceDeleted",
                                    "ForceDelete",
                                    &note,
                                );
                                if let Some(sts) = &pod.statefulset {
                                    self.events.normal(
                                        statefulset_ref(&pod.namespace, sts),
                                        "PodForceDeleted",
                                        "ForceDelete",
                                        &note,
                                    );
                                }
                            } else {
                                tracing::info!(node = %node, namespace = %pod.namespace, pod = %pod.name, uid = %pod.uid, result = result.as_label(), "pod already gone or replaced; left alone");
                            }
                        }
                        Err(e) => {
                            self.metrics
                                .pods_force_deleted
                                .with_label_values(&["error"])
                                .inc();
                            tracing::warn!(node = %node, namespace = %pod.namespace, pod = %pod.name, error = %e, "pod force-delete failed");
                            errors.push(Warning {
                                node: Some(node.clone()),
                                message: format!(
                                    "force-deleting pod {}/{} failed: {e}",
                                    pod.namespace, pod.name
                                ),
                            });
                        }
                    }
                }
                Action::DeleteVolumeAttachment {
                    node,
                    name,
                    volume,
                    why,
                } => {
                    let key = format!("va/{name}");
                    if st.recently_deleted.contains_key(&key) {
                        continue;
                    }
                    match executor.delete_volume_attachment(name).await {
                        Ok(result) => {
                            self.metrics
                                .volume_attachments_deleted
                                .with_label_values(&[result.as_label()])
                                .inc();
                            st.recently_deleted.insert(key, Instant::now());
                            st.pods.invalidate_attachments();
                            wrote = true;
                            if result == Deleted::Deleted {
                                tracing::warn!(node = %node, volume_attachment = %name, volume = %volume, why = %why, "VolumeAttachment deleted");
                                self.events.normal(
                                    node_ref(
                                        node,
                                        st.index.extra(node).and_then(|e| e.uid.as_deref()),
                                    ),
                                    "VolumeAttachmentDeleted",
                                    "Delete",
                                    &format!(
                                        "deleted VolumeAttachment {name} (volume {volume}): {why}"
                                    ),
                                );
                            }
                        }
                        Err(e) => {
                            self.metrics
                                .volume_attachments_deleted
                                .with_label_values(&["error"])
                                .inc();
                            tracing::warn!(node = %node, volume_attachment = %name, error = %e, "VolumeAttachment delete failed");
                            errors.push(Warning {
                                node: Some(node.clone()),
                                message: format!("deleting VolumeAttachment {name} failed: {e}"),
                            });
                        }
                    }
                }
                Action::ConfirmLease { node, why } => {
                    tracing::debug!(node = %node, why = %why, "confirming the node's Lease");
                    match self.confirm_lease(st, &executor, node).await {
                        Ok(_) => wrote = true,
                        Err(e) => errors.push(Warning {
                            node: Some(node.clone()),
                            message: format!(
                                "re-reading node {node}'s Lease before an irreversible step failed: {e}; nothing irreversible is done until it succeeds"
                            ),
                        }),
                    }
                }
                Action::RunFenceCommand {
                    node,
                    addresses,
                    attempt,
                    why,
                } => {
                    let Some(command) = self.fence_command.clone() else {
                        continue;
                    };
                    st.fence_commands
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(
                            node.clone(),
                            decide::FenceCommandState::Running { attempt: *attempt },
                        );
                    tracing::warn!(node = %node, attempt, addresses = ?addresses, why = %why, "running --fence-command");
                    let state = st.fence_commands.clone();
                    let metrics = self.metrics.clone();
                    let events = self.events.clone();
                    let timeout = self.fence_command_timeout;
                    let (node, addresses, attempt) = (node.clone(), addresses.clone(), *attempt);
                    let uid = st.index.extra(&node).and_then(|e| e.uid.clone());
                    tokio::spawn(async move {
                        let outcome =
                            fence_command::run(&command, &node, &addresses, timeout).await;
                        metrics
                            .fence_commands
                            .with_label_values(&[outcome.as_label()])
                            .inc();
                        match &outcome {
                            fence_command::Outcome::Success => {
                                tracing::warn!(node = %node, attempt, "--fence-command exited 0: the node is powered off");
                                events.normal(
                                    node_ref(&node, uid.as_deref()),
                                    "FenceCommandSucceeded",
                                    "FenceCommand",
                                    &format!("--fence-command exited 0 (attempt {attempt}): the node is powered off"),
                                );
                            }
                            other => {
                                tracing::error!(node = %node, attempt, outcome = ?other, "--fence-command FAILED: the node is not known to be off; nothing is deleted, retrying with backoff");
                                events.warning(
                                    node_ref(&node, uid.as_deref()),
                                    "FenceCommandFailed",
                                    "FenceCommand",
                                    &format!("--fence-command failed (attempt {attempt}): {other:?}; nothing is deleted, retrying with backoff"),
                                );
                            }
                        }
                        fence_command::finish(&state, &node, attempt, &outcome);
                    });
                }
            }
        }
        wrote
    }

    /// A consistent read of the node's Lease, fed to the index: unchanged
    /// confirms the stale heartbeat, renewed is a renewal observed now.
    async fn confirm_lease(
        &self,
        st: &mut LoopState,
        executor: &Executor,
        node: &str,
    ) -> Result<LeaseRead, super::executor::ExecError> {
        let rv = executor.read_lease(node).await?;
        let read = st.index.lease_read(node, rv.as_deref(), Instant::now());
        match read {
            LeaseRead::Renewed => tracing::warn!(
                node = %node,
                "the node's Lease was renewed although the watch had not shown it (stale or stalled watch): treated as a fresh renewal, nothing irreversible done"
            ),
            LeaseRead::Gone => tracing::warn!(node = %node, "the node's Lease is gone"),
            LeaseRead::Unchanged => {}
        }
        Ok(read)
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

    /// Gauges, storm-guard edge and deduplicated warnings.
    fn report(&self, st: &mut LoopState, report: &Report, extra: &[Warning]) {
        self.metrics.observe_report(report);
        let now = Now {
            mono: Instant::now(),
            wall: std::time::SystemTime::now(),
        };
        self.published
            .send_replace(Some(LeaderSummary::from_report(report, now)));
        st.safe_times_logged
            .retain(|n, _| report.safe_times.contains_key(n));
        for (node, safe) in &report.safe_times {
            if st.safe_times_logged.insert(node.clone(), safe.total()) != Some(safe.total()) {
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
        }
        let guard = &report.storm_guard;
        let storm_change = st.storm.changed(guard.active);
        if storm_change == Some(true) {
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
        } else if storm_change == Some(false) {
            tracing::info!(
                unhealthy = guard.unhealthy,
                managed = guard.managed,
                "storm guard released"
            );
        }
        st.recovered
            .retain(|n| matches!(report.nodes.get(n), Some(NodeStatus::Fenced)));
        let mut all: Vec<Warning> = report.warnings.clone();
        all.extend_from_slice(extra);
        for w in st.warnings.fresh(&all) {
            self.metrics.warnings.inc();
            let regarding = match &w.node {
                Some(n) => node_ref(n, st.index.extra(n).and_then(|e| e.uid.as_deref())),
                None => self.announce.clone(),
            };
            tracing::warn!(node = ?w.node, "{}", w.message);
            self.events
                .warning(regarding, "KubeFencerWarning", "Report", &w.message);
        }
    }
}
