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

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};

use crate::support::*;

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

// --------------------------------------------------------------- tests --

/// Taints and a cordon put on the node by someone else survive fencing and
/// unfencing: kube-fencer adds and removes only its own out-of-service taint
/// and never undoes a cordon it did not make.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_taints_survive_fencing_and_unfencing() {
    const NS: &str = "taints";
    let args = FAST_AGENT_ARGS.to_vec();
    let s = setup(NS, &args).await;
    let cluster = &s.cluster;
    let (_, victim) = s.victim_off_leader();

    cluster
        .kubectl([
            "taint",
            "node",
            &victim,
            "example.com/maintenance=yes:NoSchedule",
            "example.com/degraded=true:PreferNoSchedule",
        ])
        .expect("kubectl taint");
    // A human cordoned the node before it failed.
    cluster
        .kubectl(["cordon", &victim])
        .expect("kubectl cordon");
    let foreign = taints_with_prefix(&cluster.node(&victim).await.unwrap(), "example.com/");
    assert_eq!(foreign.len(), 2, "{foreign:?}");
    say(format!(
        "{victim}: cordoned by hand, foreign taints {foreign:?}"
    ));

    cluster.power_off(&victim);
    let fenced = wait_fenced(
        cluster,
        &victim,
        &format!("{victim} fenced (phase fenced, out-of-service taint)"),
    )
    .await;
    assert_eq!(
        taints_with_prefix(&fenced, "example.com/"),
        foreign,
        "foreign taints changed by fencing"
    );
    assert_eq!(
        taints_with_prefix(&fenced, OUT_OF_SERVICE_TAINT),
        vec![(
            OUT_OF_SERVICE_TAINT.to_string(),
            "nodeshutdown".to_string(),
            "NoExecute".to_string()
        )]
    );
    assert!(node_unschedulable(&fenced));
    let rec = record(&fenced).expect("record");
    assert_eq!(
        rec["cordoned"],
        serde_json::Value::Bool(false),
        "the node was already cordoned, so kube-fencer must not claim the cordon: {rec}"
    );

    // Reboot: the node comes back and its agent starts with a new boot ID.
    cluster.power_on(&victim, &args);
    let t1 = Instant::now();
    let back = cluster
        .wait_until(
            &format!("{victim} unfenced after its reboot"),
            Duration::from_secs(120),
            async || {
                let n = cluster.node(&victim).await?;
                let clean = !node_has_taint(&n, OUT_OF_SERVICE_TAINT)
                    && node_annotation(&n, STATE_ANNOTATION).is_none()
                    && node_phase(&n).is_none()
                    && node_ready_status(&n) == "True";
                Ok(clean.then_some(n))
            },
        )
        .await;
    say(format!(
        "{victim} unfenced {:.1}s after it came back",
        t1.elapsed().as_secs_f64()
    ));
    assert_eq!(
        taints_with_prefix(&back, "example.com/"),
        foreign,
        "foreign taints changed by unfencing"
    );
    assert!(
        node_unschedulable(&back),
        "the human's cordon was removed by unfencing"
    );
    cluster
        .hold_for(
            &format!("{victim} keeps the human's cordon and taints after unfencing"),
            Duration::from_secs(15),
            async || {
                let n = cluster.node(&victim).await?;
                Ok(if !node_unschedulable(&n) {
                    Err("uncordoned".to_string())
                } else if taints_with_prefix(&n, "example.com/") != foreign {
                    Err(format!(
                        "taints now {:?}",
                        taints_with_prefix(&n, "example.com/")
                    ))
                } else if node_has_taint(&n, OUT_OF_SERVICE_TAINT) {
                    Err("tainted out-of-service again".to_string())
                } else {
                    Ok(())
                })
            },
        )
        .await;
}

/// With `--dry-run` the leader walks through the whole fencing — it reports
/// that it would mark the node fenced and force-delete its replica — but
/// writes nothing: no record, label, cordon or taint on the Node, and the
/// replica is not deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_writes_nothing() {
    const NS: &str = "dryrun";
    let mut args = FAST_AGENT_ARGS.to_vec();
    args.push("--dry-run");
    let s = setup(NS, &args).await;
    let cluster = &s.cluster;
    let (victim_pod, victim) = s.victim_off_leader();
    let uid = pod_uid(&cluster.pod(NS, &victim_pod).await.unwrap().unwrap());
    let before = fencer_metadata(&cluster.node(&victim).await.unwrap());
    say(format!("{victim} kube-fencer metadata before: {before:?}"));

    cluster.power_off(&victim);
    let invariant = async || -> Result<std::result::Result<(), String>> {
        let n = cluster.node(&victim).await?;
        if let Err(e) = untouched(&n, &before) {
            return Ok(Err(e));
        }
        same_pod(cluster, NS, &victim_pod, &uid).await
    };
    // Past the safe time (18 s) and the fence timeout (10 s) after the
    // last heartbeat, with room to spare.
    cluster
        .hold_for(
            &format!("dry run: {victim} and {victim_pod} untouched"),
            Duration::from_secs(45),
            invariant,
        )
        .await;
    // The leader did decide to fence: it says what it would have done.
    let fenced_ev = cluster
        .wait_until(
            &format!("a DryRunNodeFenced Event for {victim}"),
            Duration::from_secs(60),
            async || {
                let evs = events_with_reason(cluster, "DryRunNodeFenced").await?;
                Ok(evs
                    .into_iter()
                    .find(|e| regarding_name(e) == Some(victim.as_str())))
            },
        )
        .await;
    say(format!("event: {:?}", fenced_ev.note));
    let del = events_with_reason(cluster, "DryRunPodForceDeleted")
        .await
        .unwrap();
    assert!(
        del.iter().any(|e| e
            .note
            .as_deref()
            .is_some_and(|n| n.contains(&format!("{NS}/{victim_pod}")))),
        "a DryRunPodForceDeleted Event names {NS}/{victim_pod}: {:?}",
        del.iter().map(|e| e.note.clone()).collect::<Vec<_>>()
    );
    let leader_node = node_of_identity(&cluster.leader_identity().await.unwrap().unwrap());
    let text = cluster.agent_metrics(&leader_node).expect("leader metrics");
    let fence_dry = metric(
        &text,
        "kube_fencer_fencing_operations_total",
        &[("operation", "fence"), ("result", "dry_run")],
    );
    assert!(
        fence_dry.is_some_and(|v| v >= 1.0),
        "fencing_operations_total{{operation=fence,result=dry_run}} = {fence_dry:?}"
    );
    for result in ["success", "error"] {
        let v = metric(
            &text,
            "kube_fencer_fencing_operations_total",
            &[("result", result)],
        )
        .unwrap_or(0.0);
        assert_eq!(v, 0.0, "a dry run made node writes (result={result})");
    }
    // And it still writes nothing, well past the fence timeout.
    cluster
        .hold_for(
            &format!("dry run: {victim} and {victim_pod} still untouched"),
            Duration::from_secs(20),
            async || {
                let n = cluster.node(&victim).await?;
                if let Err(e) = untouched(&n, &before) {
                    return Ok(Err(e));
                }
                same_pod(cluster, NS, &victim_pod, &uid).await
            },
        )
        .await;
}

/// Two of three nodes die at once: more than 40 % of the nodes look dead,
/// so the storm guard fences neither — no record, cordon or taint, and
/// their replicas stay — and the leader says so (gauge and Event).
///
/// The leader observes both heartbeats stop at the same instant: every
/// agent is stopped, both nodes are powered off, then the surviving node's
/// agent starts again and leads (after a list, every heartbeat timer starts
/// at the same moment). With a leader running throughout, the two Leases'
/// last renewals can lie up to one renewal interval apart and the first node
/// may rightly begin fencing before the second one looks dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_guard_holds_two_of_three() {
    const NS: &str = "storm";
    let args = FAST_AGENT_ARGS.to_vec();
    let (s, survivor, dead, replicas) = storm_setup(NS, &args).await;
    let cluster = &s.cluster;
    assert_eq!(dead.len(), 2);
    let mut before = BTreeMap::new();
    for n in &dead {
        before.insert(n.clone(), fencer_metadata(&cluster.node(n).await.unwrap()));
    }

    for n in cluster.node_names().await.unwrap() {
        cluster.stop_agent(&n);
    }
    for n in &dead {
        cluster.stop_node(n).expect("stop node");
    }
    say(format!("{dead:?} powered off"));
    cluster
        .spawn_agent(&survivor, &args)
        .expect("restart the survivor's agent");
    // The Lease still names the survivor's old process: ask the new one.
    cluster
        .wait_until(
            &format!("the new agent of {survivor} to lead with synced caches"),
            Duration::from_secs(60),
            async || {
                let text = cluster.agent_metrics(&survivor)?;
                Ok((metric(&text, "kube_fencer_leader", &[]) == Some(1.0)
                    && metric(&text, "kube_fencer_cache_synced", &[]) == Some(1.0))
                .then_some(()))
            },
        )
        .await;

    cluster
        .hold_for(
            &format!("storm guard: {dead:?} not fenced, replicas kept"),
            Duration::from_secs(50),
            async || {
                for n in &dead {
                    let node = cluster.node(n).await?;
                    if let Err(e) = untouched(&node, &before[n]) {
                        return Ok(Err(e));
                    }
                }
                for (name, uid) in &replicas {
                    if let Err(e) = same_pod(cluster, NS, name, uid).await? {
                        return Ok(Err(e));
                    }
                }
                Ok(Ok(()))
            },
        )
        .await;

    let text = cluster.agent_metrics(&survivor).expect("leader metrics");
    assert_eq!(
        metric(&text, "kube_fencer_storm_guard_active", &[]),
        Some(1.0),
        "storm guard gauge"
    );
    assert_eq!(
        metric(&text, "kube_fencer_unhealthy_nodes", &[]),
        Some(2.0),
        "both dead nodes counted"
    );
    let evs = events_with_reason(cluster, "StormGuardActive")
        .await
        .unwrap();
    assert!(!evs.is_empty(), "a StormGuardActive Event");
    say(format!("StormGuardActive: {:?}", evs[0].note));
}

/// The same failure with the leader running throughout: the two Leases'
/// last renewals may lie up to one renewal interval apart, so the first
/// node may begin fencing (record and cordon) before the second looks dead.
/// From then on the guard holds: neither node is marked fenced or tainted,
/// no replica is deleted, and at most one node carries a record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_guard_holds_two_of_three_with_a_running_leader() {
    const NS: &str = "stormlive";
    let args = FAST_AGENT_ARGS.to_vec();
    let (s, leader, dead, replicas) = storm_setup(NS, &args).await;
    let cluster = &s.cluster;
    for n in &dead {
        cluster.stop_agent(n);
    }
    for n in &dead {
        cluster.stop_node(n).expect("stop node");
    }
    say(format!("{dead:?} powered off; {leader} keeps leading"));

    cluster
        .hold_for(
            &format!("storm guard: {dead:?} not marked fenced, replicas kept"),
            Duration::from_secs(50),
            async || {
                let mut recorded = Vec::new();
                for n in &dead {
                    let node = cluster.node(n).await?;
                    if node_has_taint(&node, OUT_OF_SERVICE_TAINT) {
                        return Ok(Err(format!("{n} was tainted out-of-service")));
                    }
                    match node_phase(&node).as_deref() {
                        None => {}
                        Some("fencing") => recorded.push(n.clone()),
                        Some(p) => return Ok(Err(format!("{n} is in phase {p}"))),
                    }
                }
                if recorded.len() > 1 {
                    return Ok(Err(format!("both nodes began fencing: {recorded:?}")));
                }
                for (name, uid) in &replicas {
                    if let Err(e) = same_pod(cluster, NS, name, uid).await? {
                        return Ok(Err(e));
                    }
                }
                Ok(Ok(()))
            },
        )
        .await;
    assert_eq!(
        cluster.leader_identity().await.unwrap().as_deref(),
        Some(format!("kube-fencer-{leader}").as_str()),
        "the leader did not change"
    );
    let text = cluster.agent_metrics(&leader).expect("leader metrics");
    assert_eq!(
        metric(&text, "kube_fencer_storm_guard_active", &[]),
        Some(1.0),
        "storm guard gauge"
    );
    assert_eq!(metric(&text, "kube_fencer_unhealthy_nodes", &[]), Some(2.0));
    for n in &dead {
        let node = cluster.node(n).await.unwrap();
        say(format!("{n}: phase {:?}", node_phase(&node)));
    }
    // `kube-fencer status` shows the guard holding, and the nodes it holds
    // as suspect (the one that may have begun fencing first as fencing).
    let v: serde_json::Value =
        serde_json::from_str(&cluster.status(&["-o", "json"]).unwrap()).unwrap();
    say(format!("status storm guard: {}", v["stormGuard"]));
    assert_eq!(v["stormGuard"]["active"], true, "{v}");
    assert_eq!(v["stormGuard"]["unhealthy"], 2, "{v}");
    let phases: Vec<String> = dead
        .iter()
        .map(|n| cluster.status_of(n).unwrap().0)
        .collect();
    assert!(phases.iter().any(|p| p == "suspect"), "{phases:?}");
    assert!(
        phases.iter().all(|p| p == "suspect" || p == "fencing"),
        "{phases:?}"
    );
}

/// The leader records a node as Fencing and dies (SIGKILL, the leader Lease
/// is not released) before the node is fenced. Another agent takes over the
/// Lease and finishes the fencing from the record on the Node: the same
/// fencing (its start time kept), the node tainted out-of-service, the
/// replica recreated elsewhere with the same claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_leader_resumes_half_done_fencing() {
    const NS: &str = "resume";
    // A long fence timeout leaves time to kill the leader mid-fencing.
    let args = fast_agent_args(&[("--fence-timeout", "30s")]);
    let s = setup(NS, &args).await;
    let cluster = &s.cluster;
    let (victim_pod, victim) = s.victim_off_leader();
    let old_leader = s.leader_node();
    let old_identity = format!("kube-fencer-{old_leader}");
    let old = cluster.replica(NS, &victim_pod).await;

    cluster.power_off(&victim);
    let begun = cluster
        .wait_until(
            &format!("{victim} recorded Fencing"),
            Duration::from_secs(60),
            async || {
                let n = cluster.node(&victim).await?;
                Ok((node_phase(&n).as_deref() == Some("fencing")).then_some(n))
            },
        )
        .await;
    cluster.stop_agent(&old_leader);
    let rec = record(&begun).expect("record");
    say(format!("leader killed; record was {rec}"));
    assert_eq!(rec["phase"], "Fencing");
    assert_eq!(rec["by"], old_identity.as_str());
    // The premise: the old leader died before the node was fenced.
    let n = cluster.node(&victim).await.unwrap();
    assert_eq!(
        node_phase(&n).as_deref(),
        Some("fencing"),
        "fenced too early"
    );
    assert!(!node_has_taint(&n, OUT_OF_SERVICE_TAINT));
    assert_eq!(
        pod_uid(&cluster.pod(NS, &victim_pod).await.unwrap().unwrap()),
        old.uid
    );

    let new_identity = cluster
        .wait_until(
            "another agent to take over the leader Lease",
            Duration::from_secs(60),
            async || {
                Ok(cluster
                    .leader_identity()
                    .await?
                    .filter(|h| *h != old_identity))
            },
        )
        .await;
    let new_leader = node_of_identity(&new_identity);
    say(format!("new leader {new_identity}"));
    assert!(new_leader != victim && new_leader != old_leader);

    let fenced = wait_fenced(
        cluster,
        &victim,
        &format!("{victim} fenced by the new leader"),
    )
    .await;
    let rec2 = record(&fenced).expect("record");
    say(format!("record now {rec2}"));
    assert_eq!(rec2["phase"], "Fenced");
    assert_eq!(rec2["by"], new_identity.as_str());
    assert_eq!(
        rec2["fencingSince"], rec["fencingSince"],
        "the new leader continued the recorded fencing instead of starting over"
    );
    assert!(node_unschedulable(&fenced));

    let new_pod = cluster
        .wait_replica_moved(NS, &victim_pod, &old.uid, &victim, Duration::from_secs(180))
        .await;
    cluster.assert_same_claim(NS, &new_pod, &old).await;
    let started = events_with_reason(cluster, "FencingStarted")
        .await
        .unwrap()
        .into_iter()
        .filter(|e| regarding_name(e) == Some(victim.as_str()))
        .count();
    assert!(started <= 1, "fencing was begun {started} times, not once");
}

/// `--strategy delete-pods`: the fenced node gets no out-of-service taint,
/// its StatefulSet replica is force-deleted and comes back elsewhere with
/// the same PVC, and its other pods (a Deployment's) are left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_pods_strategy_leaves_other_pods() {
    const NS: &str = "deletepods";
    let args = fast_agent_args(&[("--strategy", "delete-pods")]);
    let s = setup(NS, &args).await;
    let cluster = &s.cluster;
    let (victim_pod, victim) = s.victim_off_leader();
    cluster
        .deploy_pinned_deployment(NS, "pinned", &victim)
        .expect("deploy pinned Deployment");
    let dep_pod = wait_pod_running_on(cluster, "pinned-", &victim).await;
    let dep_key = pod_key(&dep_pod);
    let dep_uid = pod_uid(&dep_pod);
    let old = cluster.replica(NS, &victim_pod).await;

    cluster.power_off(&victim);
    let new_pod = cluster
        .wait_replica_moved(NS, &victim_pod, &old.uid, &victim, Duration::from_secs(180))
        .await;
    cluster.assert_same_claim(NS, &new_pod, &old).await;

    let n = cluster.node(&victim).await.unwrap();
    assert_eq!(node_phase(&n).as_deref(), Some("fenced"));
    assert!(
        !node_has_taint(&n, OUT_OF_SERVICE_TAINT),
        "delete-pods must not taint"
    );
    assert_eq!(record(&n).expect("record")["tainted"], false);
    cluster
        .hold_for(
            &format!("{dep_key} on the fenced node is left alone"),
            Duration::from_secs(20),
            async || {
                let n = cluster.node(&victim).await?;
                if node_has_taint(&n, OUT_OF_SERVICE_TAINT) {
                    return Ok(Err(format!("{victim} tainted out-of-service")));
                }
                let uids = cluster.pod_uids().await?;
                Ok(if uids.get(&dep_key) == Some(&dep_uid) {
                    Ok(())
                } else {
                    Err(format!("{dep_key} ({dep_uid}) is gone"))
                })
            },
        )
        .await;
    let dep_name = dep_key.split('/').nth(1).unwrap().to_string();
    let deleted = events_with_reason(cluster, "PodForceDeleted")
        .await
        .unwrap();
    let notes: Vec<String> = deleted.iter().filter_map(|e| e.note.clone()).collect();
    assert!(
        notes
            .iter()
            .any(|n| n.contains(&format!("{NS}/{victim_pod}"))),
        "PodForceDeleted for the replica: {notes:?}"
    );
    assert!(
        !notes.iter().any(|n| n.contains(&dep_name)),
        "kube-fencer force-deleted the Deployment pod: {notes:?}"
    );
}

/// Default strategy: after fencing, every non-DaemonSet pod bound to the
/// dead node — a StatefulSet replica, a Deployment pod, a bare pod — is
/// gone (kube-fencer deletes the replica; Kubernetes' taint eviction and pod
/// GC remove the rest because of the out-of-service taint), and every pod on
/// the healthy nodes keeps its UID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_service_strategy_clears_the_node() {
    const NS: &str = "clear";
    let args = FAST_AGENT_ARGS.to_vec();
    let s = setup(NS, &args).await;
    let cluster = &s.cluster;
    let (_, victim) = s.victim_off_leader();
    let healthy = cluster.nodes_except(&victim).await.unwrap();

    cluster
        .deploy_pinned_deployment(NS, "pinned", &victim)
        .expect("deploy pinned Deployment");
    cluster
        .create_pod_on(NS, "loner", &victim)
        .expect("bare pod on the victim");
    cluster
        .deploy_deployment(NS, "bystander", 1, &[victim.as_str()])
        .expect("bystander Deployment");
    cluster
        .create_pod_on(NS, "neighbour", &healthy[0])
        .expect("bare pod on a healthy node");
    wait_pod_running_on(cluster, "pinned-", &victim).await;
    wait_pod_running_on(cluster, "loner", &victim).await;
    wait_pod_running_on(cluster, "neighbour", &healthy[0]).await;
    cluster
        .wait_until(
            "the bystander pod Running",
            Duration::from_secs(90),
            async || {
                for n in &healthy {
                    for p in cluster.pods_on_node(n).await? {
                        if p.metadata
                            .name
                            .as_deref()
                            .is_some_and(|n| n.starts_with("bystander-"))
                            && pod_running_ready(&p)
                        {
                            return Ok(Some(()));
                        }
                    }
                }
                Ok(None)
            },
        )
        .await;

    let mut on_victim: BTreeMap<String, String> = BTreeMap::new();
    for p in cluster.pods_on_node(&victim).await.unwrap() {
        if !is_daemonset_pod(&p) {
            on_victim.insert(pod_key(&p), pod_uid(&p));
        }
    }
    let on_healthy = cluster.pod_uids_on(&healthy).await.unwrap();
    say(format!(
        "on {victim}: {on_victim:?}; {} pods on healthy nodes",
        on_healthy.len()
    ));
    assert!(on_victim.len() >= 3, "replica, Deployment pod, bare pod");

    cluster.power_off(&victim);
    let t0 = Instant::now();
    cluster
        .wait_until(
            &format!("{victim} fenced"),
            Duration::from_secs(120),
            async || {
                let n = cluster.node(&victim).await?;
                Ok(node_has_taint(&n, OUT_OF_SERVICE_TAINT).then_some(()))
            },
        )
        .await;
    let remaining = cluster
        .wait_until(
            &format!("every non-DaemonSet pod bound to {victim} gone"),
            Duration::from_secs(180),
            async || {
                let uids: std::collections::BTreeSet<String> =
                    cluster.pod_uids().await?.into_values().collect();
                let bound: Vec<String> = cluster
                    .pods_on_node(&victim)
                    .await?
                    .iter()
                    .filter(|p| !is_daemonset_pod(p))
                    .map(pod_key)
                    .collect();
                let old_left = on_victim.values().any(|u| uids.contains(u));
                Ok((bound.is_empty() && !old_left).then_some(bound))
            },
        )
        .await;
    assert!(remaining.is_empty());
    say(format!(
        "{victim} cleared {:.1}s after power-off",
        t0.elapsed().as_secs_f64()
    ));
    cluster.assert_healthy_pods_kept(&on_healthy).await;
}
