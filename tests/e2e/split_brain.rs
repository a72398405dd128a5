//! Split-brain safety, end to end: a stale heartbeat alone never lets
//! kube-fencer delete a pod. A node is marked fenced only when its agent can
//! fence itself (and its safe time passed) or an external fence command
//! powered it off; a node that reconnects without rebooting stays fenced; an
//! API outage for everyone fences nobody. (Partitions: `partition.rs`.)

use std::time::{Duration, Instant};

use kube_fencer_testkit::*;

const NS: &str = "splitbrain";

/// A 3-node cluster with kube-fencer installed and a 3-replica StatefulSet;
/// returns the cluster, the victim (the node of `db-1`) and the old pod UID.
async fn setup(agent_args: &[&str]) -> (Cluster, String, String) {
    let s = Scenario::new(NS)
        .agents(agent_args)
        .leader_within(Duration::from_secs(60))
        .start()
        .await;
    let victim = s.node_of(&format!("{STS}-1"));
    let cluster = s.cluster;
    let uid = pod_uid(&cluster.pod(NS, "db-1").await.unwrap().unwrap());
    cluster.wait_advertised(&victim).await;
    (cluster, victim, uid)
}

/// Why `db-1` is no longer the pod `uid`, or Ok.
async fn db1_kept(cluster: &Cluster, uid: &str) -> anyhow::Result<Result<(), String>> {
    let p = cluster.pod(NS, "db-1").await?;
    Ok(match p {
        Some(p) if pod_uid(&p) == uid => Ok(()),
        _ => Err("db-1 was deleted".into()),
    })
}

/// Wait until `pod` is no longer the pod `uid`; returns when that was seen
/// (unix seconds).
async fn wait_pod_deleted(cluster: &Cluster, pod: &str, uid: &str) -> f64 {
    cluster
        .wait_until(
            &format!("{pod} force-deleted by the leader"),
            Duration::from_secs(90),
            async || {
                let p = cluster.pod(NS, pod).await?;
                Ok(match p {
                    Some(p) if pod_uid(&p) == uid => None,
                    _ => Some(unix_now_f64()),
                })
            },
        )
        .await
}

async fn wait_phase(cluster: &Cluster, node: &str, want: &str, within: Duration) {
    cluster
        .wait_until(&format!("{node} in phase {want}"), within, async || {
            let n = cluster.node(node).await?;
            Ok((node_phase(&n).as_deref() == Some(want)).then_some(()))
        })
        .await;
}

fn all_agent_logs(cluster: &Cluster) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(cluster.dir.join("logs"))
        .unwrap()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with("agent-") {
            out.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
    }
    out
}

fn events_json(cluster: &Cluster) -> String {
    cluster
        .kubectl(["get", "events", "-A", "-o", "json"])
        .unwrap_or_default()
}

/// (a) An agent that cannot fence itself, and no fence command: the node is
/// recorded and cordoned, but never marked fenced; its pod stays; the leader
/// says why (log, Event, metric).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_brain_no_self_fence_never_deletes() {
    let args = fast_agent_args(&[("--self-fence", "none")]);
    let (cluster, victim, uid) = setup(&args).await;
    cluster.power_off(&victim);
    wait_phase(&cluster, &victim, "fencing", Duration::from_secs(30)).await;
    cluster
        .hold_for(
            &format!("{victim} stays Fencing and db-1 stays"),
            Duration::from_secs(30),
            async || {
                let n = cluster.node(&victim).await?;
                if node_phase(&n).as_deref() != Some("fencing") {
                    return Ok(Err(format!("phase is {:?}", node_phase(&n))));
                }
                if node_has_taint(&n, OUT_OF_SERVICE_TAINT) {
                    return Ok(Err("tainted".into()));
                }
                db1_kept(&cluster, &uid).await
            },
        )
        .await;
    let logs = all_agent_logs(&cluster);
    assert!(
        logs.contains("will NOT be marked fenced") && logs.contains("--self-fence=none"),
        "the leader must say why"
    );
    assert!(
        events_json(&cluster).contains("will NOT be marked fenced"),
        "a KubeFencerWarning Event must say why"
    );
    let leader_metrics = metrics_of_any_agent(&cluster, "kube_fencer_external_fencing_required{")
        .await
        .expect("metric");
    assert!(leader_metrics.contains(&format!("node=\"{victim}\"}} 1")));
}

/// Any agent's /metrics containing `needle` (the leader's).
async fn metrics_of_any_agent(cluster: &Cluster, needle: &str) -> Option<String> {
    for n in cluster.node_names().await.ok()? {
        let Some(addr) = cluster.agent_listen(&n) else {
            continue;
        };
        let out = std::process::Command::new("curl")
            .args(["-s", &format!("http://{addr}/metrics")])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if text.contains(needle) {
            return Some(text);
        }
    }
    None
}

/// (b) External fencing: while the fence command fails, nothing is deleted
/// (retries with backoff, Events); once it succeeds the node is marked
/// fenced at once, long before its (deliberately long) safe time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_brain_fence_command() {
    let dir_marker = std::env::temp_dir().join(format!("kf-fence-{}", fresh_boot_id()));
    std::fs::create_dir_all(&dir_marker).unwrap();
    let fail = dir_marker.join("fail");
    let runs = dir_marker.join("runs");
    std::fs::write(&fail, "").unwrap();
    let cmd = format!(
        "echo \"$(date +%s.%N) $NODE_NAME $NODE_ADDRESS\" >> {runs}; test ! -e {fail}",
        runs = runs.display(),
        fail = fail.display()
    );
    // A safe time of minutes: only the fence command can be quick.
    let args = fast_agent_args(&[
        ("--watchdog-timeout", "300s"),
        ("--fence-command", &cmd),
        ("--fence-command-backoff", "1s"),
        ("--fence-command-timeout", "5s"),
    ]);
    let (cluster, victim, uid) = setup(&args).await;
    let t0 = Instant::now();
    cluster.power_off(&victim);
    wait_phase(&cluster, &victim, "fencing", Duration::from_secs(30)).await;
    cluster
        .hold_for(
            "nothing deleted while the fence command fails",
            Duration::from_secs(20),
            async || db1_kept(&cluster, &uid).await,
        )
        .await;
    let attempts = std::fs::read_to_string(&runs).unwrap_or_default();
    let n = attempts
        .lines()
        .filter(|l| l.contains(&format!(" {victim} ")))
        .count();
    assert!(n >= 3, "retried with backoff: {attempts}");
    assert!(
        attempts.contains(" 127.0.0.1"),
        "NODE_ADDRESS is set: {attempts}"
    );
    assert!(events_json(&cluster).contains("FenceCommandFailed"));
    // The power fence starts working.
    std::fs::remove_file(&fail).unwrap();
    let t_ok = Instant::now();
    cluster
        .wait_until(
            "db-1 recreated on a healthy node",
            Duration::from_secs(60),
            async || {
                let Some(p) = cluster.pod(NS, "db-1").await? else {
                    return Ok(None);
                };
                Ok((pod_uid(&p) != uid
                    && pod_node_name(&p).is_some_and(|n| n != victim)
                    && pod_running_ready(&p))
                .then_some(()))
            },
        )
        .await;
    say(format!(
        "recovered {:.1}s after the fence command started succeeding, {:.1}s after power-off",
        t_ok.elapsed().as_secs_f64(),
        t0.elapsed().as_secs_f64()
    ));
    assert!(
        t0.elapsed() < Duration::from_secs(150),
        "did not wait for the 5-minute safe time"
    );
    let n = cluster.node(&victim).await.unwrap();
    assert_eq!(node_phase(&n).as_deref(), Some("fenced"));
    assert!(events_json(&cluster).contains("FenceCommandSucceeded"));
    let _ = std::fs::remove_dir_all(&dir_marker);
}

/// (c) Reboot check: a fenced node that comes back with the same boot ID
/// stays fenced (and its agent, seeing its own Fenced record, fences
/// itself again); with a new boot ID it is unfenced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_brain_reboot_check() {
    let (cluster, victim, uid) = setup(FAST_AGENT_ARGS).await;
    let boot_file = cluster.dir.join("fixed-boot-id");
    std::fs::write(&boot_file, "boot-A\n").unwrap();
    let marker = cluster.self_fence_marker(&victim);
    let exec = format!(
        "exec:echo \"$(date +%s.%N) $KUBE_FENCER_SELF_FENCE_REASON\" >> {}",
        marker.display()
    );
    let boot_arg = boot_file.display().to_string();
    let args = fast_agent_args(&[("--boot-id-file", &boot_arg), ("--self-fence", &exec)]);
    // Restart the victim's agent with the fixed boot ID, then power off.
    cluster.stop_agent(&victim);
    cluster.spawn_agent(&victim, &args).unwrap();
    cluster
        .wait_until("boot-A advertised", Duration::from_secs(30), async || {
            let n = cluster.node(&victim).await?;
            Ok(node_annotation(&n, "kube-fencer.io/agent").filter(|a| a.contains("boot-A")))
        })
        .await;
    cluster.power_off(&victim);
    wait_phase(&cluster, &victim, "fenced", Duration::from_secs(60)).await;
    cluster
        .wait_until("db-1 replaced", Duration::from_secs(60), async || {
            let p = cluster.pod(NS, "db-1").await?;
            Ok(p.filter(|p| pod_uid(p) != uid).map(|_| ()))
        })
        .await;
    let state = node_annotation(&cluster.node(&victim).await.unwrap(), STATE_ANNOTATION).unwrap();
    assert!(state.contains("\"bootId\":\"boot-A\""), "{state}");

    // Back without a reboot: same boot ID.
    cluster.power_on(&victim, &args);
    cluster
        .hold_for(
            &format!("{victim} stays fenced after reconnecting with the same boot ID"),
            Duration::from_secs(20),
            async || {
                let n = cluster.node(&victim).await?;
                Ok(if node_phase(&n).as_deref() == Some("fenced") {
                    Ok(())
                } else {
                    Err(format!("phase {:?}", node_phase(&n)))
                })
            },
        )
        .await;
    assert!(
        all_agent_logs(&cluster).contains("same boot ID boot-A"),
        "the leader says why"
    );
    let marks = std::fs::read_to_string(&marker).unwrap_or_default();
    assert!(
        marks.contains("own Node carries a kube-fencer record"),
        "the reconnected agent fenced itself on seeing its record: {marks:?}"
    );

    // A real reboot: new boot ID.
    cluster.stop_agent(&victim);
    std::fs::write(&boot_file, "boot-B\n").unwrap();
    cluster.spawn_agent(&victim, &args).unwrap();
    cluster
        .wait_until(
            &format!("{victim} unfenced after a reboot"),
            Duration::from_secs(60),
            async || {
                let n = cluster.node(&victim).await?;
                Ok((node_annotation(&n, STATE_ANNOTATION).is_none()
                    && !node_unschedulable(&n)
                    && !node_has_taint(&n, OUT_OF_SERVICE_TAINT))
                .then_some(()))
            },
        )
        .await;
}

/// (d) The API server is down for everybody (paused) for longer than the
/// failure threshold: the agents see a control-plane outage through their
/// peers; nobody fences itself and no node is fenced after it returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_brain_api_outage_fences_nobody() {
    // After the outage the simulated kubelets (kwok, whose requests hung
    // while the API server was stopped and which then backs off) took up to
    // ~25s to renew their Leases again; a node whose heartbeat stays away
    // that long after the API returns is legitimately suspect. This scenario
    // is about the agents' verdicts, so the leader gets a --unreachable-after
    // (40s) that outlasts kwok's back-off, and the hold below outlasts it.
    let overrides = [("--unreachable-after", "40s"), ("--fence-timeout", "45s")];
    for (flag, _) in overrides {
        assert!(
            FAST_AGENT_ARGS.contains(&flag),
            "flag in FAST_AGENT_ARGS: {flag}"
        );
    }
    let args = fast_agent_args(&overrides);
    let (cluster, _victim, _uid) = setup(&args).await;
    let nodes = cluster.node_names().await.unwrap();
    for n in &nodes {
        cluster.wait_advertised(n).await;
    }
    // Every agent must know its peers before the outage.
    cluster.wait_peers_known(&nodes).await;
    let before = cluster.pod_uids().await.unwrap();
    cluster.pause_apiserver(true).unwrap();
    tokio::time::sleep(Duration::from_secs(15)).await;
    cluster.pause_apiserver(false).unwrap();
    cluster
        .hold_for(
            "no node fenced, no pod replaced after the outage",
            Duration::from_secs(45),
            async || {
                for n in cluster.node_names().await? {
                    let node = cluster.node(&n).await?;
                    if node_annotation(&node, STATE_ANNOTATION).is_some() {
                        return Ok(Err(format!("{n} has a fencing record")));
                    }
                }
                Ok(Ok(()))
            },
        )
        .await;
    for n in cluster.node_names().await.unwrap() {
        assert!(
            cluster.self_fence_times(&n).is_empty(),
            "{n} fenced itself during an API outage"
        );
        assert!(cluster.agent_running(&n).unwrap(), "agent for {n} exited");
    }
    let after = cluster.pod_uids().await.unwrap();
    for (name, uid) in &before {
        assert_eq!(after.get(name), Some(uid), "{name} was replaced");
    }
    assert!(
        all_agent_logs(&cluster).contains("control-plane outage"),
        "the agents recognised the outage"
    );
}

/// (e) The kubelet dies, the agent lives: the Lease goes stale while the
/// node's agent still reaches the API server. The leader asks that agent,
/// says so (Event `AgentConnectedLeaseStale`), and does not race it: the
/// agent fences itself on seeing the Fencing record, and only then is the
/// node marked fenced and its pod replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_brain_kubelet_dead_agent_alive() {
    // The victim must not be the leader: its agent stays alive, and a leader
    // never fences its own node.
    let s = Scenario::new(NS)
        .agents(FAST_AGENT_ARGS)
        .leader_within(Duration::from_secs(60))
        .start()
        .await;
    let (pod, victim) = s.victim_off_leader();
    let cluster = s.cluster;
    let uid = pod_uid(&cluster.pod(NS, &pod).await.unwrap().unwrap());
    cluster.wait_advertised(&victim).await;
    cluster.stop_node(&victim).expect("stop the kubelet only");
    say(format!(
        "{victim}: kubelet (kwok) stopped, agent still running"
    ));
    wait_phase(&cluster, &victim, "fencing", Duration::from_secs(30)).await;
    cluster
        .wait_until(
            "an AgentConnectedLeaseStale Event",
            Duration::from_secs(30),
            async || {
                Ok(events_json(&cluster)
                    .contains("AgentConnectedLeaseStale")
                    .then_some(()))
            },
        )
        .await;
    let t_deleted = wait_pod_deleted(&cluster, &pod, &uid).await;
    let fenced = cluster.self_fence_times(&victim);
    let first = *fenced.first().expect("the victim's agent fenced itself");
    assert!(
        first < t_deleted,
        "self-fence ({first}) must come before the force-deletion ({t_deleted})"
    );
    let marks = std::fs::read_to_string(cluster.self_fence_marker(&victim)).unwrap();
    assert!(
        marks.contains("own Node carries a kube-fencer record"),
        "fenced on its own record (rule 1): {marks}"
    );
    assert!(
        all_agent_logs(&cluster).contains("yet its kube-fencer agent answers"),
        "the leader logs the contradiction"
    );
}
