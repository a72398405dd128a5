//! Control run: the same failure as the chaos test, with NO kube-fencer.
//!
//! A StatefulSet replica on a node that lost power is never recreated by
//! Kubernetes on its own (the StatefulSet guarantees at most one pod per
//! identity, and nobody can confirm the old one stopped). If this test ever
//! sees the replica come back elsewhere, the chaos test would not be measuring
//! kube-fencer, so it fails.

use std::time::Duration;

use kube_fencer_testkit::*;

const NS: &str = "control";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_run() {
    let s = Scenario::new(NS).start().await;
    let cluster = &s.cluster;

    let victim_pod = format!("{STS}-1");
    let victim = s.node_of(&victim_pod);
    let Replica {
        uid: old_uid,
        pvc_name,
        pvc_uid,
        ..
    } = cluster.replica(NS, &victim_pod).await;
    say(format!(
        "stopping {victim} (runs {victim_pod} uid {old_uid}, PVC {pvc_name} uid {pvc_uid})"
    ));
    cluster.stop_node(&victim).expect("stop node");

    // The node lifecycle controller notices the Lease stopped renewing.
    cluster
        .wait_until(
            &format!("node {victim} to be NotReady/Unknown"),
            Duration::from_secs(60),
            async || {
                let node = cluster.node(&victim).await?;
                Ok((node_ready_status(&node) != "True").then_some(()))
            },
        )
        .await;

    // Generous window: NotReady plus several grace periods, pod GC cycles
    // (20 s) and StatefulSet resyncs. The replica must stay where it was.
    cluster
        .hold_for(
            &format!("{NS}/{victim_pod} stays stuck on dead node {victim}"),
            Duration::from_secs(60),
            async || {
                let Some(pod) = cluster.pod(NS, &victim_pod).await? else {
                    return Ok(Err(format!("{victim_pod} was deleted")));
                };
                if pod_uid(&pod) != old_uid {
                    return Ok(Err(format!(
                        "{victim_pod} was recreated (uid {} on {:?})",
                        pod_uid(&pod),
                        pod_node_name(&pod)
                    )));
                }
                if pod_node_name(&pod).as_deref() != Some(victim.as_str()) {
                    return Ok(Err(format!(
                        "{victim_pod} moved to {:?}",
                        pod_node_name(&pod)
                    )));
                }
                Ok(Ok(()))
            },
        )
        .await;

    let pod = cluster.pod(NS, &victim_pod).await.unwrap().unwrap();
    say(format!(
        "control run as expected: {victim_pod} still bound to {victim}, phase {:?}, deletionTimestamp {:?}; no recovery without kube-fencer",
        pod.status.as_ref().and_then(|s| s.phase.clone()),
        pod.metadata.deletion_timestamp
    ));
    // The other replicas were untouched.
    s.assert_replicas_stayed(&[0, 2], None).await;
}
