//! Recovery: which pods each strategy removes, and which it leaves.

use super::*;

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
