//! Chaos: a node running a StatefulSet replica loses power (its kwok process
//! and its agent are SIGKILLed). kube-fencer must fence the node (cordon +
//! out-of-service taint + state annotation), force-delete that StatefulSet pod
//! so the replica comes back elsewhere with the SAME PVC, leave every other
//! pod alone, and unfence the node once it is back and healthy.

use std::time::{Duration, Instant};

use kube_fencer_testkit::*;

const NS: &str = "chaos";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_stop_node() {
    let agent_args = fast_agent_args(&[("--strategy", "out-of-service")]);
    let s = Scenario::new(NS).agents(&agent_args).start().await;
    let cluster = &s.cluster;

    let victim_pod = format!("{STS}-1");
    let victim = s.node_of(&victim_pod);
    let healthy = cluster.nodes_except(&victim).await.unwrap();

    // Bystanders on healthy nodes: a Deployment pod and a bare pod.
    cluster
        .deploy_deployment(NS, "bystander", 1, &[victim.as_str()])
        .expect("deploy Deployment");
    cluster
        .create_pod_on(NS, "loner", &healthy[0])
        .expect("create bare pod");
    cluster
        .wait_until("bystanders Running", Duration::from_secs(60), async || {
            let pods = cluster.pods_on_node(&healthy[0]).await?;
            let mut all = pods;
            all.extend(cluster.pods_on_node(&healthy[1]).await?);
            let loner = all
                .iter()
                .any(|p| p.metadata.name.as_deref() == Some("loner") && pod_running_ready(p));
            let deploy = all.iter().any(|p| {
                p.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| n.starts_with("bystander-"))
                    && pod_running_ready(p)
            });
            Ok((loner && deploy).then_some(()))
        })
        .await;

    // Every agent must be up, and one of them leading, before the failure.
    for n in cluster.node_names().await.unwrap() {
        assert!(
            cluster.agent_running(&n).unwrap(),
            "agent for {n} not running"
        );
    }
    let leader = cluster.wait_leader(Duration::from_secs(30)).await;
    say(format!("kube-fencer leader: {leader}"));
    // `kube-fencer status` sees the leader's view: every node healthy and
    // self-fence capable from its current boot.
    cluster
        .wait_until(
            "status: every node healthy",
            Duration::from_secs(30),
            async || {
                let v: serde_json::Value = serde_json::from_str(&cluster.status(&["-o", "json"])?)?;
                let nodes = v["nodes"].as_array().cloned().unwrap_or_default();
                let all = !nodes.is_empty()
                    && nodes
                        .iter()
                        .all(|n| n["phase"] == "healthy" && n["fencing"]["current"] == true);
                Ok(
                    (all && v["leader"]["current"] == true && v["leader"]["synced"] == true)
                        .then_some(()),
                )
            },
        )
        .await;

    let old = cluster.replica(NS, &victim_pod).await;
    // UIDs of everything on healthy nodes, which must survive untouched.
    let healthy_pods = cluster.pod_uids_on(&healthy).await.unwrap();
    say(format!(
        "powering off {victim} (runs {victim_pod} uid {}, PVC {} uid {}); {} pods on healthy nodes",
        old.uid,
        old.pvc_name,
        old.pvc_uid,
        healthy_pods.len()
    ));

    // Power loss: the node's agent dies with it.
    let t0 = Instant::now();
    cluster.power_off(&victim);

    // Status shows it being fenced, with the time left until its pods may
    // be deleted and the replica awaiting recovery.
    let fencing = cluster
        .wait_until(
            &format!("status: {victim} fencing"),
            Duration::from_secs(90),
            async || {
                let (phase, row) = cluster.status_of(&victim)?;
                Ok((phase == "fencing" && row["safeTime"].is_object()).then_some(row))
            },
        )
        .await;
    say(format!("status while fencing: {fencing}"));
    assert!(
        fencing["awaitingRecovery"].as_array().is_some_and(|p| p
            .iter()
            .any(|p| p.as_str() == Some(format!("{NS}/{victim_pod}").as_str()))),
        "{fencing}"
    );
    assert!(
        fencing["safeTime"]["terms"]["watchdogSeconds"]
            .as_f64()
            .is_some(),
        "{fencing}"
    );

    // The replica comes back on another node, Running, with the same PVC.
    let new_pod = cluster
        .wait_replica_moved(NS, &victim_pod, &old.uid, &victim, Duration::from_secs(150))
        .await;
    let recovery = t0.elapsed();
    let new_node = pod_node_name(&new_pod).unwrap();
    say(format!(
        "RECOVERED: {victim_pod} Running on {new_node} {:.1}s after {victim} lost power",
        recovery.as_secs_f64()
    ));
    assert!(
        healthy.contains(&new_node),
        "{new_node} is not a healthy node"
    );
    cluster.assert_same_claim(NS, &new_pod, &old).await;

    // The dead node is fenced: cordoned, out-of-service taint, state annotation.
    let node = cluster.node(&victim).await.unwrap();
    assert!(node_unschedulable(&node), "{victim} must be cordoned");
    assert!(
        node_has_taint(&node, OUT_OF_SERVICE_TAINT),
        "{victim} must carry the {OUT_OF_SERVICE_TAINT} taint"
    );
    let taint = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .and_then(|ts| ts.iter().find(|t| t.key == OUT_OF_SERVICE_TAINT).cloned())
        .unwrap();
    assert_eq!(taint.effect, "NoExecute");
    assert!(
        node_annotation(&node, STATE_ANNOTATION).is_some(),
        "{victim} must carry the {STATE_ANNOTATION} annotation"
    );
    say(format!(
        "{victim} fenced: state {:?}",
        node_annotation(&node, STATE_ANNOTATION)
    ));

    // The permit protocol ran beside the safe time (shadow mode): the
    // leader closed the victim's API path on its permit object under
    // fencing number 1, and its grantors' answers gave a deadline.
    let revocation = cluster
        .permit_annotation(&victim, "kube-fencer.io/revocation")
        .unwrap();
    assert_eq!(
        revocation,
        Some(serde_json::json!({"fencing": 1, "revoked": true})),
        "{victim}'s permit object"
    );
    let leader_metrics = cluster
        .wait_until(
            "the leader to report the revocation's deadline",
            Duration::from_secs(20),
            async || {
                for n in &healthy {
                    let m = cluster.agent_metrics(n)?;
                    if m.lines().any(|l| l == "kube_fencer_leader 1")
                        && m.lines()
                            .any(|l| l == "kube_fencer_permit_revocation_seconds_count 1")
                    {
                        return Ok(Some(m));
                    }
                }
                Ok(None)
            },
        )
        .await;
    let deadline = leader_metrics
        .lines()
        .find_map(|l| l.strip_prefix("kube_fencer_permit_revocation_seconds_sum "))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap();
    say(format!(
        "permit revocation (shadow): {victim} certainly reset {deadline:.1}s after its last heartbeat"
    ));
    assert!(
        leader_metrics
            .lines()
            .any(|l| l.starts_with("kube_fencer_permit_stops_total{kind=\"revoke\",result=\"ok\"}")),
        "{leader_metrics}"
    );

    // (The leader's summary reaches its Lease with the next renewal.)
    cluster
        .wait_until(
            &format!("status: {victim} fenced"),
            Duration::from_secs(20),
            async || Ok((cluster.status_of(&victim)?.0 == "fenced").then_some(())),
        )
        .await;
    let timeline = cluster.status(&[victim.as_str()]).unwrap();
    say(format!("kube-fencer status {victim}:\n{timeline}"));
    for reason in ["FencingStarted", "NodeFenced"] {
        assert!(
            timeline.contains(reason),
            "{reason} missing from:\n{timeline}"
        );
    }

    // Nothing else changed: every pod on a healthy node kept its UID (the
    // other replicas, the Deployment pod, the bare pod, the DaemonSet pods).
    cluster.assert_healthy_pods_kept(&healthy_pods).await;
    s.assert_replicas_stayed(&[0, 2], Some(&victim)).await;

    // The node comes back: once its Lease renews and it is Ready for
    // --healthy-after, kube-fencer removes the taint, the cordon and the
    // annotation.
    cluster.power_on(&victim, &agent_args);
    let t1 = Instant::now();
    cluster
        .wait_until(
            &format!("{victim} unfenced after it came back"),
            Duration::from_secs(90),
            async || {
                let node = cluster.node(&victim).await?;
                let clean = !node_has_taint(&node, OUT_OF_SERVICE_TAINT)
                    && !node_unschedulable(&node)
                    && node_annotation(&node, STATE_ANNOTATION).is_none()
                    && node_ready_status(&node) == "True";
                Ok(clean.then_some(()))
            },
        )
        .await;
    say(format!(
        "{victim} unfenced {:.1}s after it came back",
        t1.elapsed().as_secs_f64()
    ));
    cluster
        .wait_until(
            &format!("status: {victim} healthy again"),
            Duration::from_secs(30),
            async || Ok((cluster.status_of(&victim)?.0 == "healthy").then_some(())),
        )
        .await;

    // The revocation is lifted, on the object and at the grantors: the
    // node holds its permit from its peers again.
    cluster
        .wait_until(
            &format!("{victim}'s permit revocation lifted"),
            Duration::from_secs(30),
            async || {
                let r = cluster.permit_annotation(&victim, "kube-fencer.io/revocation")?;
                Ok((r == Some(serde_json::json!({"fencing": 1, "revoked": false}))).then_some(()))
            },
        )
        .await;
    cluster
        .wait_agents_export(
            std::slice::from_ref(&victim),
            "kube_fencer_permit_through_api 0",
            "hold its permit from its peers again",
            30,
        )
        .await;
    cluster
        .wait_permits_held(std::slice::from_ref(&victim))
        .await;

    // Still exactly one pod for the identity, on the healthy node.
    let p = cluster.pod(NS, &victim_pod).await.unwrap().unwrap();
    assert_eq!(pod_uid(&p), pod_uid(&new_pod));
    for n in cluster.node_names().await.unwrap() {
        assert!(cluster.agent_running(&n).unwrap(), "agent for {n} exited");
    }
}
