//! Chaos: a node running a StatefulSet replica loses power (its kwok process
//! and its agent are SIGKILLed). kube-fencer must fence the node (cordon +
//! out-of-service taint + state annotation), force-delete that StatefulSet pod
//! so the replica comes back elsewhere with the SAME PVC, leave every other
//! pod alone, and unfence the node once it is back and healthy.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::support::*;

const NS: &str = "chaos";
const STS: &str = "db";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_stop_node() {
    let cluster = Cluster::start(3, ClusterOpts::default())
        .await
        .expect("cluster start");
    cluster.install_kube_fencer().expect("install manifests");
    let mut agent_args: Vec<&str> = FAST_AGENT_ARGS.to_vec();
    agent_args.extend(["--strategy", "out-of-service"]);
    cluster
        .spawn_agents(&agent_args)
        .await
        .expect("spawn agents");

    cluster
        .deploy_statefulset(NS, STS, 3)
        .expect("deploy StatefulSet");
    let placement = cluster
        .wait_statefulset_ready(NS, STS, 3, Duration::from_secs(90))
        .await;
    say(format!("placement: {placement:?}"));

    let victim_pod = format!("{STS}-1");
    let victim = placement[&victim_pod].clone();
    let healthy: Vec<String> = cluster
        .node_names()
        .await
        .unwrap()
        .into_iter()
        .filter(|n| *n != victim)
        .collect();

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

    let old_pod = cluster.pod(NS, &victim_pod).await.unwrap().unwrap();
    let old_uid = pod_uid(&old_pod);
    let claim = format!("data-{victim_pod}");
    let (pvc_name, pvc_uid) = cluster.pvc(NS, &claim).await.unwrap().expect("PVC exists");
    // UIDs of everything on healthy nodes, which must survive untouched.
    let mut healthy_pods: BTreeMap<String, String> = BTreeMap::new();
    for n in &healthy {
        for p in cluster.pods_on_node(n).await.unwrap() {
            healthy_pods.insert(
                format!(
                    "{}/{}",
                    p.metadata.namespace.clone().unwrap_or_default(),
                    p.metadata.name.clone().unwrap_or_default()
                ),
                pod_uid(&p),
            );
        }
    }
    say(format!(
        "powering off {victim} (runs {victim_pod} uid {old_uid}, PVC {pvc_name} uid {pvc_uid}); {} pods on healthy nodes",
        healthy_pods.len()
    ));

    // Power loss: the node's agent dies with it.
    let t0 = Instant::now();
    cluster.stop_agent(&victim);
    cluster.stop_node(&victim).expect("stop node");

    // The replica comes back on another node, Running, with the same PVC.
    let new_pod = cluster
        .wait_until(
            &format!("{NS}/{victim_pod} recreated and Running on a healthy node"),
            Duration::from_secs(150),
            async || {
                let Some(p) = cluster.pod(NS, &victim_pod).await? else {
                    return Ok(None);
                };
                let moved = pod_uid(&p) != old_uid
                    && pod_node_name(&p).is_some_and(|n| n != victim)
                    && p.metadata.deletion_timestamp.is_none()
                    && pod_running_ready(&p);
                Ok(moved.then_some(p))
            },
        )
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
    assert_eq!(
        pod_claims(&new_pod),
        vec![claim.clone()],
        "replacement uses the same claim"
    );
    let (new_pvc_name, new_pvc_uid) = cluster
        .pvc(NS, &claim)
        .await
        .unwrap()
        .expect("PVC still exists");
    assert_eq!(new_pvc_name, pvc_name);
    assert_eq!(
        new_pvc_uid, pvc_uid,
        "PVC {claim} must be the same object (same UID)"
    );

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

    // Nothing else changed: every pod on a healthy node kept its UID (the
    // other replicas, the Deployment pod, the bare pod, the DaemonSet pods).
    let now = cluster.pod_uids().await.unwrap();
    for (name, uid) in &healthy_pods {
        assert_eq!(
            now.get(name),
            Some(uid),
            "pod {name} on a healthy node was deleted or replaced"
        );
    }
    for i in [0u32, 2] {
        let name = format!("{STS}-{i}");
        if placement[&name] != victim {
            let p = cluster
                .pod(NS, &name)
                .await
                .unwrap()
                .expect("replica exists");
            assert_eq!(
                pod_node_name(&p).as_deref(),
                Some(placement[&name].as_str())
            );
        }
    }

    // The node comes back: once its Lease renews and it is Ready for
    // --healthy-after, kube-fencer removes the taint, the cordon and the
    // annotation.
    cluster.start_node(&victim).expect("start node");
    cluster
        .spawn_agent(&victim, &agent_args)
        .expect("restart agent");
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

    // Still exactly one pod for the identity, on the healthy node.
    let p = cluster.pod(NS, &victim_pod).await.unwrap().unwrap();
    assert_eq!(pod_uid(&p), pod_uid(&new_pod));
    for n in cluster.node_names().await.unwrap() {
        assert!(cluster.agent_running(&n).unwrap(), "agent for {n} exited");
    }
}
