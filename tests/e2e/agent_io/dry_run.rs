//! Dry run: the same Events and metrics as a real run, and no write.

use super::*;

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
