//! The storm guard: two of three nodes down, nothing irreversible.

use super::*;

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
