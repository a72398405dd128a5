//! Kubernetes Events (events.k8s.io) about what kube-fencer does, published
//! in the background so the reconcile loop never waits on them, plus the
//! dedupe of recurring warnings.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;

use crate::decide::Warning;
use crate::observability::metrics::Metrics;

/// Name of the reporting controller in every Event.
pub const REPORTER: &str = "kube-fencer";

/// One Event to publish.
#[derive(Clone, Debug, PartialEq)]
pub struct EventMsg {
    pub regarding: ObjectReference,
    /// CamelCase reason, e.g. `NodeFenced`.
    pub reason: String,
    /// What was done (also CamelCase), e.g. `Fence`.
    pub action: String,
    pub note: String,
    pub warning: bool,
}

/// Reference to a Node (Events about it land in the `default` namespace).
pub fn node_ref(name: &str, uid: Option<&str>) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(name.into()),
        uid: uid.map(Into::into),
        ..Default::default()
    }
}

pub fn statefulset_ref(namespace: &str, name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("apps/v1".into()),
        kind: Some("StatefulSet".into()),
        namespace: Some(namespace.into()),
        name: Some(name.into()),
        ..Default::default()
    }
}

pub fn lease_ref(namespace: &str, name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("coordination.k8s.io/v1".into()),
        kind: Some("Lease".into()),
        namespace: Some(namespace.into()),
        name: Some(name.into()),
        ..Default::default()
    }
}

/// Queue of Events to publish. Cheap to clone; never blocks.
#[derive(Clone)]
pub struct EventSink {
    tx: mpsc::Sender<EventMsg>,
    metrics: Metrics,
}

impl EventSink {
    /// A Warning Event when `warning`, else Normal.
    pub fn warning_or_normal(
        &self,
        warning: bool,
        regarding: ObjectReference,
        reason: &str,
        action: &str,
        note: &str,
    ) {
        if warning {
            self.warning(regarding, reason, action, note)
        } else {
            self.normal(regarding, reason, action, note)
        }
    }

    /// A sink and the receiving end (tests read from it; production hands it to [`publish_loop`]).
    pub fn channel(capacity: usize, metrics: Metrics) -> (Self, mpsc::Receiver<EventMsg>) {
        let (tx, rx) = mpsc::channel(capacity);
        (EventSink { tx, metrics }, rx)
    }

    pub fn emit(&self, msg: EventMsg) {
        if self.tx.try_send(msg).is_err() {
            self.metrics.events_dropped.inc();
        }
    }

    pub fn normal(&self, regarding: ObjectReference, reason: &str, action: &str, note: &str) {
        self.emit(EventMsg {
            regarding,
            reason: reason.into(),
            action: action.into(),
            note: note.into(),
            warning: false,
        });
    }

    pub fn warning(&self, regarding: ObjectReference, reason: &str, action: &str, note: &str) {
        self.emit(EventMsg {
            regarding,
            reason: reason.into(),
            action: action.into(),
            note: note.into(),
            warning: true,
        });
    }
}

/// Publish queued Events until the sink is dropped.
pub async fn publish_loop(
    client: Client,
    instance: String,
    mut rx: mpsc::Receiver<EventMsg>,
    metrics: Metrics,
) {
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: REPORTER.into(),
            instance: Some(instance),
        },
    );
    while let Some(msg) = rx.recv().await {
        // The API caps a note at 1 kB.
        let mut note = msg.note;
        if note.len() > 1000 {
            let mut cut = 1000;
            while !note.is_char_boundary(cut) {
                cut -= 1;
            }
            note.truncate(cut);
        }
        let event = Event {
            type_: if msg.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: msg.reason,
            note: Some(note),
            action: msg.action,
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, &msg.regarding).await {
            metrics.events_dropped.inc();
            metrics.api_error("create", "events");
            tracing::debug!(error = %e, reason = %event.reason, "could not publish Event");
        }
    }
}

/// Reports each distinct (node, message) warning once, for as long as the
/// core keeps reporting it; one that goes away and comes back is new again.
#[derive(Debug, Default)]
pub struct WarningDedupe {
    active: BTreeSet<(Option<String>, String)>,
}

impl WarningDedupe {
    /// The warnings not reported in the previous round (to log and Event now).
    pub fn fresh<'a>(&mut self, warnings: &'a [Warning]) -> Vec<&'a Warning> {
        let current: BTreeSet<(Option<String>, String)> = warnings
            .iter()
            .map(|w| (w.node.clone(), w.message.clone()))
            .collect();
        let mut seen = BTreeSet::new();
        let fresh = warnings
            .iter()
            .filter(|w| {
                let key = (w.node.clone(), w.message.clone());
                !self.active.contains(&key) && seen.insert(key)
            })
            .collect();
        self.active = current;
        fresh
    }
}

/// Rising-edge detector for the storm guard.
#[derive(Debug, Default)]
pub struct Edge {
    last: bool,
}

impl Edge {
    /// `Some(new value)` when the value changed, else `None`.
    pub fn changed(&mut self, now: bool) -> Option<bool> {
        let changed = (now != self.last).then_some(now);
        self.last = now;
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(node: Option<&str>, message: &str) -> Warning {
        Warning {
            node: node.map(Into::into),
            message: message.into(),
        }
    }

    #[test]
    fn dedupe_reports_each_warning_once() {
        let mut d = WarningDedupe::default();
        let round1 = vec![w(Some("a"), "malformed"), w(None, "storm")];
        assert_eq!(d.fresh(&round1).len(), 2);
        assert!(d.fresh(&round1).is_empty(), "same warnings: nothing new");
        // The message for a changes: report it.
        let round3 = vec![w(Some("a"), "held by storm guard"), w(None, "storm")];
        let fresh = d.fresh(&round3);
        assert_eq!(fresh, vec![&round3[0]]);
        // Gone, then back: reported again.
        assert!(d.fresh(&[]).is_empty());
        assert_eq!(d.fresh(&round3).len(), 2);
        // Duplicates within a round are reported once (a new term starts
        // with a new dedupe: the leader's loop state is made per term).
        let mut d = WarningDedupe::default();
        let dup = vec![w(Some("b"), "x"), w(Some("b"), "x")];
        assert_eq!(d.fresh(&dup).len(), 1);
    }

    #[test]
    fn edge_reports_each_change_once() {
        let mut e = Edge::default();
        assert_eq!(e.changed(false), None, "starts false");
        assert_eq!(e.changed(true), Some(true));
        assert_eq!(e.changed(true), None);
        assert_eq!(e.changed(false), Some(false));
        assert_eq!(e.changed(false), None);
        assert_eq!(e.changed(true), Some(true));
    }

    #[test]
    fn sink_counts_drops_when_full() {
        let metrics = Metrics::new();
        let (sink, mut rx) = EventSink::channel(1, metrics.clone());
        sink.normal(node_ref("a", None), "NodeFenced", "Fence", "why");
        sink.warning(node_ref("a", None), "NodeFenced", "Fence", "why");
        assert_eq!(metrics.events_dropped.get(), 1);
        let got = rx.try_recv().unwrap();
        assert_eq!(got.reason, "NodeFenced");
        assert!(!got.warning);
        assert_eq!(got.regarding.kind.as_deref(), Some("Node"));
    }
}
