//! The agent's writes against a real API server: what it changes on a Node
//! and which pods it (or Kubernetes, because of it) removes — and what it
//! must leave alone: other parties' taints and cordons, everything in a dry
//! run, everything while the storm guard holds, non-StatefulSet pods with
//! the delete-pods strategy. Also that a new leader resumes a fencing that
//! the previous leader recorded but did not finish.
//!
//! Every agent is spawned like in the chaos test: `FAST_AGENT_ARGS` plus the
//! support library's self-fencing defaults (an `exec:` action, a peer key
//! and a fresh boot ID per spawn), so a powered-off node whose agent
//! advertised itself is *known* fenced once its safe time has passed, and a
//! respawned agent is a rebooted node.
//!
//! One file per stage: `fence`, `dry_run`, `storm_guard`, `recover`; the
//! set-up and helpers they share are here.

mod dry_run;
mod fence;
mod recover;
mod storm_guard;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};

use kube_fencer_testkit::*;

const PREFIX: &str = "kube-fencer.io/";

// ------------------------------------------------------------- helpers --

/// A running 3-node cluster with agents, a 3-replica StatefulSet in `ns`
/// (Ready within 120 s), an elected leader and every agent advertised.
async fn setup(ns: &str, agent_args: &[&str]) -> Fixture {
    Scenario::new(ns)
        .agents(agent_args)
        .ready_within(Duration::from_secs(120))
        .leader_within(Duration::from_secs(60))
        .advertised()
        .start()
        .await
}

/// The parsed `kube-fencer.io/state` record.
fn record(node: &Node) -> Option<serde_json::Value> {
    node_annotation(node, STATE_ANNOTATION).and_then(|s| serde_json::from_str(&s).ok())
}

/// (key, value, effect) of every taint whose key starts with `prefix`.
fn taints_with_prefix(node: &Node, prefix: &str) -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|ts| {
            ts.iter()
                .filter(|t| t.key.starts_with(prefix))
                .map(|t| {
                    (
                        t.key.clone(),
                        t.value.clone().unwrap_or_default(),
                        t.effect.clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Every `kube-fencer.io/` annotation and label of a node.
fn fencer_metadata(node: &Node) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (kind, map) in [
        ("annotation", node.metadata.annotations.as_ref()),
        ("label", node.metadata.labels.as_ref()),
    ] {
        for (k, v) in map.into_iter().flatten() {
            if k.starts_with(PREFIX) {
                out.insert(format!("{kind} {k}"), v.clone());
            }
        }
    }
    out
}

/// Why `node` is not untouched by kube-fencer (compared with `before`, its
/// kube-fencer metadata before the failure), or Ok.
fn untouched(node: &Node, before: &BTreeMap<String, String>) -> std::result::Result<(), String> {
    let name = node.metadata.name.clone().unwrap_or_default();
    if let Some(s) = node_annotation(node, STATE_ANNOTATION) {
        return Err(format!("{name} has a fencing record: {s}"));
    }
    if let Some(p) = node_phase(node) {
        return Err(format!("{name} has the phase label {p}"));
    }
    if node_unschedulable(node) {
        return Err(format!("{name} was cordoned"));
    }
    if node_has_taint(node, OUT_OF_SERVICE_TAINT) {
        return Err(format!("{name} was tainted out-of-service"));
    }
    let now = fencer_metadata(node);
    if now != *before {
        return Err(format!(
            "{name}'s kube-fencer metadata changed: {before:?} -> {now:?}"
        ));
    }
    Ok(())
}

/// Why the pod `ns/name` is not the same live object `uid`, or Ok.
async fn same_pod(
    cluster: &Cluster,
    ns: &str,
    name: &str,
    uid: &str,
) -> Result<std::result::Result<(), String>> {
    Ok(match cluster.pod(ns, name).await? {
        None => Err(format!("{ns}/{name} was deleted")),
        Some(p) if pod_uid(&p) != uid => Err(format!(
            "{ns}/{name} was replaced (uid {uid} -> {})",
            pod_uid(&p)
        )),
        Some(p) if p.metadata.deletion_timestamp.is_some() => {
            Err(format!("{ns}/{name} is being deleted"))
        }
        Some(_) => Ok(()),
    })
}

/// events.k8s.io Events (every namespace) with this reason.
async fn events_with_reason(cluster: &Cluster, reason: &str) -> Result<Vec<Event>> {
    let list = Api::<Event>::all(cluster.client.clone())
        .list(&ListParams::default())
        .await?;
    Ok(list
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect())
}

fn regarding_name(e: &Event) -> Option<&str> {
    e.regarding.as_ref().and_then(|r| r.name.as_deref())
}

/// The value of the series `name{labels…}` in a Prometheus text exposition.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(series, _)| {
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|(_, v)| v.trim().parse().ok())
}

fn is_daemonset_pod(p: &Pod) -> bool {
    p.metadata
        .owner_references
        .as_ref()
        .is_some_and(|os| os.iter().any(|o| o.kind == "DaemonSet"))
}

/// Wait until exactly one pod whose name starts with `prefix` runs on `node`; returns it.
async fn wait_pod_running_on(cluster: &Cluster, prefix: &str, node: &str) -> Pod {
    cluster
        .wait_until(
            &format!("a {prefix}* pod Running on {node}"),
            Duration::from_secs(90),
            async || {
                let pods = cluster.pods_on_node(node).await?;
                Ok(pods.into_iter().find(|p| {
                    p.metadata
                        .name
                        .as_deref()
                        .is_some_and(|n| n.starts_with(prefix))
                        && pod_running_ready(p)
                }))
            },
        )
        .await
}

/// The storm-guard scenarios: [`setup`], then the leader's node, the
/// other nodes (to be powered off) and every replica's (name, uid).
async fn storm_setup(
    ns: &str,
    agent_args: &[&str],
) -> (Fixture, String, Vec<String>, Vec<(String, String)>) {
    let s = setup(ns, agent_args).await;
    let leader = s.leader_node();
    let others = s.cluster.nodes_except(&leader).await.unwrap();
    let replicas = s.replica_uids().await;
    (s, leader, others, replicas)
}

/// Wait (up to 120 s) until `node` is in phase fenced and carries the
/// out-of-service taint; returns it.
async fn wait_fenced(cluster: &Cluster, node: &str, what: &str) -> Node {
    cluster
        .wait_until(what, Duration::from_secs(120), async || {
            let n = cluster.node(node).await?;
            Ok((node_phase(&n).as_deref() == Some("fenced")
                && node_has_taint(&n, OUT_OF_SERVICE_TAINT))
            .then_some(n))
        })
        .await
}
