//! Fencing's writes on the Node: only kube-fencer's own taint, cordon and record, and a new leader resumes a fencing the previous one recorded.

use super::*;

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
