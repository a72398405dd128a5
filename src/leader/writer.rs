//! Everything the leader changes in the cluster goes through one
//! [`ClusterWriter`]: the API ([`KubeWriter`]) or, with `--dry-run`, a writer
//! that sends nothing and remembers what it would have written
//! ([`DryRunWriter`]), so that the next decision sees it as written. The
//! leader's loop does not know which one it drives.

use std::borrow::Cow;
use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::core::v1::Taint;
use tokio::sync::mpsc;

use crate::decide::leader::dry_run::Overlay;
use crate::decide::{
    self, Action, AttachmentRef, NodeFacts, NodeIntent, Now, Observations, PodRef, Settings,
};
use crate::leader::executor::{Deleted, ExecError, Executor, NodeWrite};
use crate::leader::fence_command;

/// How a fence command run was handed over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FenceStart {
    /// Running; its [`FenceResult`] comes back on the leader's channel.
    Started,
    /// Dry run: not run, and no result will come (it is "run" once only).
    DryRun,
    /// No `--fence-command` is configured: nothing to run.
    NoCommand,
}

/// A finished fence command run, sent back to the leader's loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FenceResult {
    pub node: String,
    pub attempt: u32,
    pub outcome: fence_command::Outcome,
}

/// One run of `--fence-command` to start.
#[derive(Clone, Debug)]
pub struct FenceRun {
    pub node: String,
    pub addresses: Vec<String>,
    pub attempt: u32,
}

/// The leader's writes (and its one consistent read, which a dry run makes
/// too, so that it progresses like a real run).
pub trait ClusterWriter {
    /// The observations the core decides on: as watched, or (dry run) with
    /// what this writer would have written laid over them.
    fn view<'a>(&self, obs: &'a Observations) -> Cow<'a, Observations>;

    /// Remember a decision (dry run: its writes, as if they were done).
    fn decided(&mut self, actions: &[Action], view: &Observations, now: Now, settings: &Settings);

    /// Bring a node to `intent`, rendered against `facts`.
    fn update_node(
        &self,
        intent: &NodeIntent,
        facts: &NodeFacts,
        taints: &[Taint],
        now: Now,
    ) -> impl Future<Output = Result<NodeWrite, ExecError>> + Send;

    /// Force-delete exactly this pod.
    fn delete_pod(&self, pod: &PodRef) -> impl Future<Output = Result<Deleted, ExecError>> + Send;

    /// Delete exactly this VolumeAttachment.
    fn delete_volume_attachment(
        &self,
        attachment: &AttachmentRef,
    ) -> impl Future<Output = Result<Deleted, ExecError>> + Send;

    /// A consistent read of a node's Lease: its resourceVersion.
    fn read_lease(
        &self,
        node: &str,
    ) -> impl Future<Output = Result<Option<String>, ExecError>> + Send;

    /// Start `--fence-command` for a node; the result comes back later.
    fn run_fence_command(&self, run: FenceRun) -> FenceStart;
}

/// `--fence-command` as configured, and where its results go.
#[derive(Clone)]
pub struct FenceCommand {
    pub command: Option<String>,
    pub timeout: Duration,
    pub results: mpsc::UnboundedSender<FenceResult>,
}

/// Writes to the API through the [`Executor`]; runs the fence command.
pub struct KubeWriter {
    pub executor: Executor,
    pub fence: FenceCommand,
}

impl ClusterWriter for KubeWriter {
    fn view<'a>(&self, obs: &'a Observations) -> Cow<'a, Observations> {
        Cow::Borrowed(obs)
    }

    fn decided(&mut self, _: &[Action], _: &Observations, _: Now, _: &Settings) {}

    async fn update_node(
        &self,
        intent: &NodeIntent,
        facts: &NodeFacts,
        taints: &[Taint],
        now: Now,
    ) -> Result<NodeWrite, ExecError> {
        self.executor.update_node(intent, facts, taints, now).await
    }

    async fn delete_pod(&self, pod: &PodRef) -> Result<Deleted, ExecError> {
        self.executor.delete_pod(pod).await
    }

    async fn delete_volume_attachment(
        &self,
        attachment: &AttachmentRef,
    ) -> Result<Deleted, ExecError> {
        self.executor.delete_volume_attachment(attachment).await
    }

    async fn read_lease(&self, node: &str) -> Result<Option<String>, ExecError> {
        self.executor.read_lease(node).await
    }

    fn run_fence_command(&self, run: FenceRun) -> FenceStart {
        let Some(command) = self.fence.command.clone() else {
            return FenceStart::NoCommand;
        };
        let (timeout, results) = (self.fence.timeout, self.fence.results.clone());
        tokio::spawn(async move {
            let outcome = fence_command::run(&command, &run.node, &run.addresses, timeout).await;
            // The leader is gone when nobody receives: its successor starts over.
            let _ = results.send(FenceResult {
                node: run.node,
                attempt: run.attempt,
                outcome,
            });
        });
        FenceStart::Started
    }
}

/// `--dry-run`: sends no write, renders each node update to tell whether it
/// would write, and keeps what it would have written in an [`Overlay`].
/// Lease reads go to the API, as in a real run.
pub struct DryRunWriter {
    pub reader: Executor,
    pub settings: Settings,
    pub overlay: Overlay,
}

impl ClusterWriter for DryRunWriter {
    fn view<'a>(&self, obs: &'a Observations) -> Cow<'a, Observations> {
        let mut view = obs.clone();
        self.overlay.apply(&mut view);
        Cow::Owned(view)
    }

    fn decided(&mut self, actions: &[Action], view: &Observations, now: Now, settings: &Settings) {
        self.overlay.record(actions, view, now, settings);
    }

    async fn update_node(
        &self,
        intent: &NodeIntent,
        facts: &NodeFacts,
        _: &[Taint],
        now: Now,
    ) -> Result<NodeWrite, ExecError> {
        Ok(
            match decide::leader::patch::render(intent, facts, now, &self.settings) {
                Ok(_) => NodeWrite::DryRun,
                Err(skip) => NodeWrite::Skipped(skip),
            },
        )
    }

    async fn delete_pod(&self, _: &PodRef) -> Result<Deleted, ExecError> {
        Ok(Deleted::DryRun)
    }

    async fn delete_volume_attachment(&self, _: &AttachmentRef) -> Result<Deleted, ExecError> {
        Ok(Deleted::DryRun)
    }

    async fn read_lease(&self, node: &str) -> Result<Option<String>, ExecError> {
        self.reader.read_lease(node).await
    }

    fn run_fence_command(&self, _: FenceRun) -> FenceStart {
        FenceStart::DryRun
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant, SystemTime};

    use http::{Request, Response};
    use kube::Client;
    use kube::client::Body;

    use super::*;
    use crate::decide::testutil;
    use crate::k8s::election::Leadership;
    use crate::observability::Metrics;

    fn dry_writer() -> (
        DryRunWriter,
        tower_test::mock::Handle<Request<Body>, Response<Body>>,
    ) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let leadership = Leadership::default();
        leadership.grant_until(Instant::now() + Duration::from_secs(60));
        let settings = testutil::settings();
        let reader = Executor::new(client, settings.clone(), Metrics::new(), leadership);
        (
            DryRunWriter {
                reader,
                settings,
                overlay: Overlay::default(),
            },
            handle,
        )
    }

    fn now() -> Now {
        Now {
            mono: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    #[tokio::test]
    async fn a_dry_run_sends_no_write_and_runs_no_command() {
        let (writer, mut handle) = dry_writer();
        let pod = PodRef {
            namespace: "default".into(),
            name: "web-1".into(),
            uid: "u1".into(),
            resource_version: None,
            statefulset: Some("web".into()),
        };
        assert_eq!(writer.delete_pod(&pod).await.unwrap(), Deleted::DryRun);
        assert_eq!(
            writer
                .delete_volume_attachment(&AttachmentRef {
                    name: "va-1".into(),
                    uid: "uid-va-1".into(),
                    resource_version: None,
                })
                .await
                .unwrap(),
            Deleted::DryRun
        );
        let run = FenceRun {
            node: "n1".into(),
            addresses: vec![],
            attempt: 1,
        };
        assert_eq!(writer.run_fence_command(run), FenceStart::DryRun);
        let facts = testutil::facts("n1");
        let wrote = writer
            .update_node(&NodeIntent::BeginFencing, &facts, &[], now())
            .await
            .unwrap();
        assert!(matches!(wrote, NodeWrite::DryRun), "{wrote:?}");
        // Nothing reached the API.
        let pending = tokio::time::timeout(Duration::from_millis(50), handle.next_request()).await;
        assert!(pending.is_err(), "a request was sent");
    }

    #[tokio::test]
    async fn a_dry_run_update_that_would_change_nothing_is_a_skip() {
        let (writer, _handle) = dry_writer();
        // Nothing of kube-fencer's on the node: nothing to unfence.
        let facts = testutil::facts("n1");
        let wrote = writer
            .update_node(&NodeIntent::Unfence, &facts, &[], now())
            .await
            .unwrap();
        assert!(matches!(wrote, NodeWrite::Skipped(_)), "{wrote:?}");
    }
}
