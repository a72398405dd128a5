//! Real partitions: every agent runs in its node's network namespace
//! (`crates/testkit/src/netns.rs`), and one node is cut off from the API server and
//! from every peer by the kernel, three ways: its link goes down (connects
//! fail at once), its packets are dropped (connections hang), its TCP
//! packets are answered with resets (connections fail at once). Its kwok
//! (the kubelet) stops renewing at the same moment: it is partitioned too.
//!
//! In each, the cut-off agent must fence itself (the `exec:` marker records
//! when the action started) and its pod may be force-deleted only at least
//! the advertised watchdog timeout after that: the ordering is asserted on
//! timestamps, with the deletion bounded from below by the last poll that
//! still saw the pod.

use std::time::Duration;

use kube_fencer_testkit::*;

const NS: &str = "partition";

/// The agent's own default self-check timings (`--api-check-interval` 5 s,
/// `--api-check-timeout` 2 s, `--api-failure-threshold` 3,
/// `--peer-silence-timeout` 10 s): how quickly a cut-off agent reaches its
/// verdict, and whether anything it mistakes for API contact interrupts it,
/// is the point of the cut scenarios, so they are not shortened here. The
/// watchdog timeout and margin stay short (they only lengthen the wait).
const DEFAULT_CHECKS: &[(&str, &str)] = &[
    ("--api-check-interval", "5s"),
    ("--api-check-timeout", "2s"),
    ("--api-failure-threshold", "3"),
    ("--peer-silence-timeout", "10s"),
];

/// A 3-node cluster, every agent in its own network namespace with `args`,
/// a leader elected, every agent advertised and knowing its peers. Returns
/// the fixture, the victim's pod (not on the leader's node), its node and
/// its UID.
async fn setup(args: &[&str]) -> (Fixture, String, String, String) {
    let s = Scenario::new(NS)
        .netns()
        .agents(args)
        .leader_within(Duration::from_secs(60))
        .advertised()
        .start()
        .await;
    let (pod, victim) = s.victim_off_leader();
    let cluster = &s.cluster;
    let nodes = cluster.node_names().await.unwrap();
    cluster.wait_peers_known(&nodes).await;
    cluster.wait_permit_objects(&nodes).await;
    cluster.wait_permits_held(&nodes).await;
    let uid = pod_uid(&cluster.pod(NS, &pod).await.unwrap().unwrap());
    assert!(cluster.self_fence_times(&victim).is_empty());
    say(format!(
        "leader on {}; victim {victim} ({pod})",
        s.leader_node()
    ));
    (s, pod, victim, uid)
}

/// The watchdog timeout `node`'s agent advertises, in seconds.
async fn advertised_watchdog(cluster: &Cluster, node: &str) -> f64 {
    let n = cluster.node(node).await.unwrap();
    let ad = node_annotation(&n, "kube-fencer.io/agent").expect("advertised");
    let v: serde_json::Value = serde_json::from_str(&ad).unwrap();
    let s = v["watchdogTimeout"].as_str().expect("watchdogTimeout");
    parse_seconds(s).unwrap_or_else(|| panic!("watchdogTimeout {s:?}"))
}

/// `5s`, `500ms`, `1m`, `1m30s` -> seconds.
fn parse_seconds(s: &str) -> Option<f64> {
    let (mut total, mut num) = (0.0, String::new());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let unit = if c == 'm' && chars.peek() == Some(&'s') {
            chars.next();
            0.001
        } else {
            match c {
                'h' => 3600.0,
                'm' => 60.0,
                's' => 1.0,
                _ => return None,
            }
        };
        total += num.parse::<f64>().ok()? * unit;
        num.clear();
    }
    num.is_empty().then_some(total)
}

/// Cut `node` off `how` and stop its kubelet at the same moment; returns
/// when the cut was made (unix seconds).
fn cut_off(cluster: &Cluster, node: &str, how: Cut) -> f64 {
    // cluster.sh node-stop takes a second or two to start on a busy
    // machine: SIGKILL the kwok process group directly, right after the cut.
    let pid = std::fs::read_to_string(cluster.dir.join(format!("pids/kwok-{node}.pid")))
        .expect("kwok pid file")
        .trim()
        .to_string();
    let t = unix_now_f64();
    cluster.lab().cut(node, how).expect("cut the node off");
    sh(&["kill", "-KILL", "--", &format!("-{pid}")]).expect("SIGKILL the node's kwok");
    say(format!(
        "{node}: kubelet (kwok) killed {:.3}s after the cut",
        unix_now_f64() - t
    ));
    cluster.stop_node(node).expect("node-stop");
    t
}

/// Poll `pod` every 200 ms for up to `within`; once it is no longer the pod
/// `uid`, returns (the last time it was still seen, the first time it was
/// seen gone). None if it stayed.
async fn watch_deletion(
    cluster: &Cluster,
    pod: &str,
    uid: &str,
    within: Duration,
) -> Option<(f64, f64)> {
    let start = std::time::Instant::now();
    let mut last_seen = unix_now_f64();
    while start.elapsed() < within {
        let asked = unix_now_f64();
        let got = tokio::time::timeout(Duration::from_secs(5), cluster.pod(NS, pod)).await;
        match got {
            Ok(Ok(Some(p))) if pod_uid(&p) == uid => last_seen = asked,
            Ok(Ok(_)) => return Some((last_seen, unix_now_f64())),
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// The lines of `node`'s agent log that show its verdicts and actions.
fn verdict_lines(cluster: &Cluster, node: &str) -> String {
    cluster
        .agent_log(node)
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            l.starts_with("###")
                || l.contains("self-fence check")
                || l.contains("SELF-FENCING")
                || l.contains("self-fence command")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `times` as seconds after `t_cut` (`+8.4`).
fn after(times: &[f64], t_cut: f64) -> Vec<String> {
    times.iter().map(|t| format!("+{:.1}", t - t_cut)).collect()
}

/// Cut `victim` off `how` and wait up to 120 s for `pod` (`uid`) to be
/// deleted: when the cut was made, and when the pod was last seen and
/// first seen gone.
async fn cut_until_deleted(
    cluster: &Cluster,
    victim: &str,
    how: Cut,
    pod: &str,
    uid: &str,
) -> (f64, (f64, f64)) {
    let t_cut = cut_off(cluster, victim, how);
    let deleted = watch_deletion(cluster, pod, uid, Duration::from_secs(120))
        .await
        .unwrap_or_else(|| {
            cluster.dump_state();
            panic!("{pod} was not force-deleted within 120 s of the cut")
        });
    (t_cut, deleted)
}

/// The safety ordering: `node` fenced itself, and the pod's deletion (no
/// earlier than `deleted.0`) came at least `watchdog` seconds after that.
fn assert_fenced_first(
    cluster: &Cluster,
    node: &str,
    t_cut: f64,
    deleted: (f64, f64),
    watchdog: f64,
) {
    let fenced = cluster.self_fence_times(node);
    let timeline = format!(
        "self-fenced at {:?} s, pod deleted between +{:.1} s and +{:.1} s after the cut (advertised watchdog timeout {watchdog} s); {node}'s agent:\n{}",
        after(&fenced, t_cut),
        deleted.0 - t_cut,
        deleted.1 - t_cut,
        verdict_lines(cluster, node)
    );
    say(&timeline);
    let first = *fenced.first().unwrap_or_else(|| {
        panic!("UNSAFE: the pod was force-deleted while its node never fenced itself: {timeline}")
    });
    assert!(
        deleted.0 - first >= watchdog,
        "UNSAFE: the pod was force-deleted {:.2} s after the self-fence decision, less than the advertised watchdog timeout: {timeline}",
        deleted.0 - first
    );
    let marks = std::fs::read_to_string(cluster.self_fence_marker(node)).unwrap();
    assert!(marks.contains("isolated"), "{marks}");
}

/// Cut the victim off `how`; it must fence itself at least the watchdog
/// timeout before its pod is deleted.
async fn partition_scenario(how: Cut, args: &[&str]) {
    let (s, pod, victim, uid) = setup(args).await;
    let cluster = &s.cluster;
    let watchdog = advertised_watchdog(cluster, &victim).await;
    let (t_cut, deleted) = cut_until_deleted(cluster, &victim, how, &pod, &uid).await;
    assert_fenced_first(cluster, &victim, t_cut, deleted, watchdog);
    let rules = cluster.lab().rules(&victim).unwrap();
    say(format!(
        "rules in {victim}'s namespace:\n{}",
        rules.trim_end()
    ));
}

/// (a) Link down: every request fails at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_link_down_self_fences_first() {
    partition_scenario(Cut::LinkDown, &fast_agent_args(DEFAULT_CHECKS)).await;
}

/// (b) Blackhole: every packet is dropped, connections hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_blackhole_self_fences_first() {
    partition_scenario(Cut::Blackhole, &fast_agent_args(DEFAULT_CHECKS)).await;
}

/// (c) TCP reset: every connection is reset at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_tcp_reset_self_fences_first() {
    partition_scenario(Cut::TcpReset, &fast_agent_args(DEFAULT_CHECKS)).await;
}

/// The default `--unreachable-after` (20 s; `--fence-timeout` at its
/// smallest valid value, 20 s, to keep the run short), blackholed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_default_unreachable_after_self_fences_first() {
    let args: Vec<&str> = without(
        &fast_agent_args(&[("--fence-timeout", "20s")]),
        "--unreachable-after",
    );
    partition_scenario(Cut::Blackhole, &args).await;
}

/// No agent of `nodes` fenced itself (`during` what, for the message), and
/// every one still runs.
fn assert_nobody_fenced_itself(cluster: &Cluster, nodes: &[String], during: &str) {
    for n in nodes {
        assert!(
            cluster.self_fence_times(n).is_empty(),
            "{n} fenced itself {during}:\n{}",
            verdict_lines(cluster, n)
        );
        assert!(cluster.agent_running(n).unwrap(), "agent for {n} exited");
    }
}

/// `Err` naming a node that carries a fencing record, if one does.
async fn no_fencing_record(cluster: &Cluster) -> anyhow::Result<Result<(), String>> {
    for n in cluster.node_names().await? {
        let node = cluster.node(&n).await?;
        if node_annotation(&node, STATE_ANNOTATION).is_some() {
            return Ok(Err(format!("{n} has a fencing record")));
        }
    }
    Ok(Ok(()))
}

/// `args` without `flag` and its value.
fn without<'a>(args: &[&'a str], flag: &str) -> Vec<&'a str> {
    let mut out = vec![];
    let mut skip = false;
    for a in args {
        if skip {
            skip = false;
        } else if *a == flag {
            skip = true;
        } else {
            out.push(*a);
        }
    }
    out
}

/// Issue 9 item 3: the cut-off agent is restarted (killed and respawned
/// with the same boot ID: a crash, an OOM kill, a liveness restart) 2 s
/// after its link went down. Its node must still fence itself before its
/// pod is deleted, or the pod must stay: never a deletion while the node
/// still runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_link_down_agent_restarted_never_unsafe() {
    let (s, pod, victim, uid) = setup(FAST_AGENT_ARGS).await;
    let cluster = &s.cluster;
    let watchdog = advertised_watchdog(cluster, &victim).await;
    let boot_before = std::fs::read_to_string(cluster.boot_id_file(&victim)).unwrap();
    let t_cut = cut_off(cluster, &victim, Cut::LinkDown);
    let wait = (t_cut + 2.0 - unix_now_f64()).max(0.0);
    tokio::time::sleep(Duration::from_secs_f64(wait)).await;
    cluster.stop_agent(&victim);
    let boot_file = cluster.boot_id_file(&victim).display().to_string();
    let args = fast_agent_args(&[("--boot-id-file", &boot_file)]);
    cluster.spawn_agent(&victim, &args).unwrap();
    assert_eq!(
        std::fs::read_to_string(cluster.boot_id_file(&victim)).unwrap(),
        boot_before,
        "restarted with the same boot ID"
    );
    say(format!(
        "{victim}'s agent restarted {:.1}s after the cut",
        unix_now_f64() - t_cut
    ));
    match watch_deletion(cluster, &pod, &uid, Duration::from_secs(90)).await {
        Some(deleted) => assert_fenced_first(cluster, &victim, t_cut, deleted, watchdog),
        None => say(format!(
            "{pod} was kept for 90 s; {victim}'s agent:\n{}",
            verdict_lines(cluster, &victim)
        )),
    }
    let running = cluster.agent_running(&victim);
    say(format!("{victim}'s restarted agent running: {running:?}"));
}

/// The namespaces are real and cleaned up: each cut has its effect in the
/// victim's namespace only, a failing command names itself, and a test that
/// panics leaves no namespace, veth or rule behind. (No cluster needed.)
#[test]
fn netns_lab_cuts_and_cleans_up_after_a_failed_test() {
    let nodes = vec!["node-1".to_string(), "node-2".to_string()];
    let name = std::panic::catch_unwind(|| {
        let lab = NetLab::new(&nodes).expect("lab");
        let (ns1, ip1) = lab.node("node-1").unwrap();
        let (_, ip2) = lab.node("node-2").unwrap();
        // node-2 listens; node-1 and the host reach it.
        let listener = lab
            .command("node-2", std::path::Path::new("python3"))
            .unwrap()
            .args(["-m", "http.server", "--bind", &ip2, "18080"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        struct Kill(std::process::Child);
        impl Drop for Kill {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let _listener = Kill(listener);
        let url = format!("http://{ip2}:18080/");
        let curl = |from: &str| -> (bool, f64) {
            let t = std::time::Instant::now();
            let ok = sh(&[
                "ip",
                "netns",
                "exec",
                from,
                "curl",
                "-sf",
                "-o",
                "/dev/null",
                "--max-time",
                "3",
                &url,
            ])
            .is_ok();
            (ok, t.elapsed().as_secs_f64())
        };
        let mut up = false;
        for _ in 0..50 {
            if curl(&ns1).0 {
                up = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(up, "node-1 reaches node-2 ({ip1} -> {ip2})");
        assert!(
            sh(&["curl", "-sf", "-o", "/dev/null", "--max-time", "3", &url]).is_ok(),
            "the host reaches node-2"
        );
        for (how, fast) in [
            (Cut::LinkDown, true),
            (Cut::Blackhole, false),
            (Cut::TcpReset, true),
        ] {
            // An open connection, which a TCP reset cut must abort.
            let open = lab
                .command("node-1", std::path::Path::new("python3"))
                .unwrap()
                .args([
                    "-c",
                    &format!(
                        "import socket,sys; s=socket.create_connection(('{ip2}',18080)); sys.stdout.write('c\\n'); sys.stdout.flush(); s.settimeout(1.5)\ntry: s.recv(1); print('closed')\nexcept Exception as e: print(type(e).__name__)"
                    ),
                ])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut open = open;
            let mut out = std::io::BufReader::new(open.stdout.take().unwrap());
            let mut line = String::new();
            std::io::BufRead::read_line(&mut out, &mut line).unwrap();
            assert_eq!(line, "c\n", "{how:?}: connected");
            lab.cut("node-1", how).unwrap();
            let (ok, took) = curl(&ns1);
            line.clear();
            std::io::BufRead::read_line(&mut out, &mut line).unwrap();
            assert_eq!(
                line.trim() == "ConnectionAbortedError",
                how == Cut::TcpReset,
                "{how:?}: the open connection: {line}"
            );
            let _ = open.wait();
            assert!(!ok, "{how:?}: cut off");
            assert_eq!(took < 1.0, fast, "{how:?}: failed in {took:.2}s");
            lab.heal("node-1").unwrap();
            assert!(curl(&ns1).0, "{how:?}: healed");
        }
        lab.cut("node-1", Cut::TcpReset).unwrap();
        assert!(lab.rules("node-1").unwrap().contains("tcp-reset"));
        assert!(!lab.rules("node-2").unwrap().contains("REJECT"));
        let err = sh(&["ip", "netns", "del", &format!("{}-absent", lab.name)]).unwrap_err();
        assert!(
            format!("{err:#}").contains("`ip netns del"),
            "a failing command names itself: {err:#}"
        );
        // The panic message printed here is expected.
        std::panic::panic_any(format!("deliberate failure in lab {}", lab.name));
    })
    .expect_err("the closure panics")
    .downcast::<String>()
    .expect("panicked with the lab's name");
    let name = name.rsplit(' ').next().unwrap().to_string();
    // This lab's own names only (`NAME-...` namespaces, the `NAMEh` host
    // link): other scenarios' labs run meanwhile.
    let (namespaces, link) = (format!("{name}-"), format!("{name}h"));
    assert!(
        namespaces_with_prefix(&namespaces).is_empty(),
        "namespaces left: {:?}",
        namespaces_with_prefix(&namespaces)
    );
    assert!(
        !host_links_with_prefix(&link).contains(&link),
        "host link left: {link}"
    );
}

/// Send `signal` (`-STOP`, `-CONT`) to the kwok process group of `node`.
fn signal_kwok(cluster: &Cluster, node: &str, signal: &str) {
    let pid = std::fs::read_to_string(cluster.dir.join(format!("pids/kwok-{node}.pid")))
        .expect("kwok pid file")
        .trim()
        .to_string();
    sh(&["kill", signal, "--", &format!("-{pid}")]).expect("signal kwok");
}

/// A control-plane outage that fails fast: every agent's connections to the
/// API server are reset (its peers stay reachable) and every kubelet stops
/// renewing (paused) for 25 s (the default checks reach a verdict after
/// three failed 5 s checks). Every agent must see a control-plane outage
/// through its peers, nobody may fence itself, and no node may be
/// fenced after the API server is back. (The outage with hanging
/// connections, the API server paused, is `split_brain_api_outage_fences_nobody`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_api_outage_fast_failing_fences_nobody() {
    api_outage(false).await;
}

/// The same under `--fencing-protocol permit`: the peers go on granting
/// (nothing revokes: the leader cannot write the revocation that comes
/// first), so no watchdog runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_api_outage_permit_resets_nobody() {
    api_outage(true).await;
}

async fn api_outage(permit: bool) {
    // As in split_brain_api_outage_fences_nobody: a --unreachable-after that
    // outlasts the kubelets' first renewals after the outage.
    let mut overrides = vec![("--unreachable-after", "40s"), ("--fence-timeout", "45s")];
    overrides.extend_from_slice(DEFAULT_CHECKS);
    let mut args = fast_agent_args(&overrides);
    if permit {
        args.extend(["--fencing-protocol", "permit"]);
    }
    let (s, _pod, _victim, _uid) = setup(&args).await;
    let cluster = &s.cluster;
    let nodes = cluster.node_names().await.unwrap();
    let port: u16 = cluster
        .api_address()
        .unwrap()
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("API port");
    let before = cluster.pod_uids().await.unwrap();
    let t_cut = unix_now_f64();
    for n in &nodes {
        cluster.lab().cut_api(n, port).unwrap();
        signal_kwok(cluster, n, "-STOP");
    }
    tokio::time::sleep(Duration::from_secs(25)).await;
    for n in &nodes {
        cluster.lab().heal(n).unwrap();
        signal_kwok(cluster, n, "-CONT");
    }
    say(format!(
        "API server reachable again after {:.1}s",
        unix_now_f64() - t_cut
    ));
    cluster
        .hold_for(
            "no node fenced, no pod replaced after the outage",
            Duration::from_secs(45),
            async || no_fencing_record(cluster).await,
        )
        .await;
    assert_nobody_fenced_itself(cluster, &nodes, "during an API outage");
    if permit {
        // Held from the peers throughout: never through the API server,
        // which was gone.
        cluster
            .wait_agents_export(
                &nodes,
                "kube_fencer_permit_through_api 0",
                "hold its permit from its peers",
                10,
            )
            .await;
        let after = cluster.pod_uids().await.unwrap();
        for (name, uid) in &before {
            assert_eq!(after.get(name), Some(uid), "{name} was replaced");
        }
        return;
    }
    for n in &nodes {
        let verdicts = verdict_lines(cluster, n);
        say(format!("{n}'s agent:\n{verdicts}"));
        assert!(
            verdicts.contains("control-plane outage"),
            "{n}'s agent recognised the outage"
        );
    }
    let after = cluster.pod_uids().await.unwrap();
    for (name, uid) in &before {
        assert_eq!(after.get(name), Some(uid), "{name} was replaced");
    }
}

/// The peer network alone down: the peer port dropped on every node, the
/// API server reachable. Nobody fences itself and no node is fenced (S2 for
/// the peer network); every agent finds out at once, not in the next API
/// outage — its peers grant nothing, so it holds its permit through the API
/// server (`kube_fencer_permit_through_api 1`, a renewal on its permit
/// object, Event `PermitUnavailable`) — and holds it from its peers again
/// once the port is open. Last, a Node is deleted and its permit object
/// goes with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_peer_network_blocked_resets_nothing_and_is_reported() {
    peer_network_blocked(&fast_agent_args(DEFAULT_CHECKS)).await;
}

/// The same under `--fencing-protocol permit`: every node's watchdog
/// (here the agent's timer running the self-fence command) is fed only
/// under its permit, which the API server renews while the peers cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_peer_network_blocked_permit_resets_nothing() {
    peer_network_blocked(&permit_args()).await;
}

/// Fast settings under `--fencing-protocol permit`.
fn permit_args() -> Vec<&'static str> {
    let mut args = fast_agent_args(DEFAULT_CHECKS);
    args.extend(["--fencing-protocol", "permit"]);
    args
}

/// Link down under `--fencing-protocol permit`: the node's permit runs out
/// (its grantors cannot hear it, its API path is cut), its timer runs the
/// self-fence command, and the leader — which revoked the permit and
/// computed from the grantors' answers when the node is certainly reset —
/// deletes the pod only after that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_link_down_permit_resets_before_the_deletion() {
    link_down_permit(&permit_args()).await;
}

/// The same with a Lease that would take 30 s to go stale: the cut node's
/// grantors report that it stopped renewing, its Lease misses a renewal,
/// and the leader begins fencing it once no permit it could hold is left
/// (about a credit after its last renewal), long before
/// `--unreachable-after`. The reset still comes before the deletion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_link_down_permit_fenced_on_its_grantors_reports() {
    let mut flags = DEFAULT_CHECKS.to_vec();
    flags.extend([
        ("--unreachable-after", "30s"),
        ("--fence-timeout", "40s"),
        ("--fencing-protocol", "permit"),
    ]);
    let (t_cut, deleted, status) = link_down_permit(&fast_agent_args(&flags)).await;
    assert!(
        status.contains("no permit is left"),
        "not begun on the grantors' reports: {status}"
    );
    assert!(
        deleted.1 - t_cut < 30.0,
        "deleted +{:.1} s after the cut: not before the Lease went stale",
        deleted.1 - t_cut
    );
}

/// Link down under `args` (the permit protocol): the node resets before
/// its pod's deletion, nobody else resets, the leader says why it could
/// delete. When the cut was made, when the pod was last seen and first
/// seen gone, and `kube-fencer status` of the node.
async fn link_down_permit(args: &[&str]) -> (f64, (f64, f64), String) {
    let (s, pod, victim, uid) = setup(args).await;
    let cluster = &s.cluster;
    let nodes = cluster.node_names().await.unwrap();
    wait_armed(cluster, &nodes).await;
    let (t_cut, deleted) = cut_until_deleted(cluster, &victim, Cut::LinkDown, &pod, &uid).await;
    let fenced = cluster.self_fence_times(&victim);
    let timeline = format!(
        "reset (the timer ran out) at {:?}, pod deleted between +{:.1} s and +{:.1} s after the cut",
        after(&fenced, t_cut),
        deleted.0 - t_cut,
        deleted.1 - t_cut,
    );
    say(&timeline);
    let first = *fenced.first().unwrap_or_else(|| {
        panic!("UNSAFE: the pod was force-deleted while its node never reset: {timeline}")
    });
    assert!(
        first <= deleted.0,
        "UNSAFE: the pod was force-deleted before its node reset: {timeline}"
    );
    let marks = std::fs::read_to_string(cluster.self_fence_marker(&victim)).unwrap();
    assert!(marks.contains("permit ran out"), "{marks}");
    // The others never reset, and the leader said why it could delete.
    let others: Vec<String> = nodes.iter().filter(|n| **n != victim).cloned().collect();
    assert_nobody_fenced_itself(cluster, &others, "while another node was cut off");
    let status = cluster.status(&[victim.as_str()]).unwrap();
    say(format!("kube-fencer status {victim}:\n{status}"));
    assert!(status.contains("permit is revoked"), "{status}");
    // Its permit object, as status reads it: revoked under the first
    // fencing, armed before, and its grantors reporting it silent.
    assert!(
        status.contains("Permit:        REVOKED (fencing 1); grantors "),
        "{status}"
    );
    assert!(status.contains("reported silent by "), "{status}");
    (t_cut, deleted, status)
}

/// Wait until the permit object of every one of `nodes` says its agent
/// armed its watchdog under the permit in its boot.
async fn wait_armed(cluster: &Cluster, nodes: &[String]) {
    for n in nodes {
        cluster
            .wait_until(
                &format!("{n}'s agent to record its arming"),
                Duration::from_secs(30),
                async || {
                    Ok(cluster
                        .permit_annotation(n, "kube-fencer.io/armed")?
                        .filter(|a| a["boot"].is_string())
                        .map(|_| ()))
                },
            )
            .await;
    }
}

async fn peer_network_blocked(args: &[&str]) {
    let (s, _pod, _victim, _uid) = setup(args).await;
    let cluster = &s.cluster;
    let nodes = cluster.node_names().await.unwrap();
    let before = cluster.pod_uids().await.unwrap();
    for n in &nodes {
        cluster.lab().cut_peers(n, NETNS_PEER_PORT).unwrap();
    }
    cluster
        .wait_agents_export(
            &nodes,
            "kube_fencer_permit_through_api 1",
            "hold its permit through the API server",
            60,
        )
        .await;
    for n in &nodes {
        let renewal = cluster
            .permit_annotation(n, "kube-fencer.io/api-renewal")
            .unwrap();
        say(format!("{n}'s renewal through the API server: {renewal:?}"));
        let renewal = renewal.unwrap_or_default();
        assert!(renewal["count"].as_u64() >= Some(1), "{n}: {renewal}");
        assert!(renewal["credit"].is_string(), "{n}: {renewal}");
    }
    // Every grantor reports the others silent: the leader must not take
    // that for their permits being over while they renew through the API
    // server (and their kubelets renew their Leases).
    for n in &nodes {
        cluster
            .wait_until(
                &format!("{n} to report its grantees silent"),
                Duration::from_secs(30),
                async || {
                    Ok(cluster
                        .permit_annotation(n, "kube-fencer.io/silent")?
                        .filter(|r| r.as_object().is_some_and(|o| !o.is_empty())))
                },
            )
            .await;
    }
    cluster
        .wait_until(
            "an Event PermitUnavailable for every node",
            Duration::from_secs(30),
            async || {
                let events = cluster.kubectl(["get", "events", "-A", "-o", "json"])?;
                let v: serde_json::Value = serde_json::from_str(&events)?;
                let reported: Vec<&str> = v["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|e| e["reason"] == "PermitUnavailable")
                    // kubectl shows Events as core/v1: `involvedObject`.
                    .filter_map(|e| e["involvedObject"]["name"].as_str())
                    .collect();
                Ok(nodes
                    .iter()
                    .all(|n| reported.contains(&n.as_str()))
                    .then_some(()))
            },
        )
        .await;
    cluster
        .hold_for(
            "no fencing record while the peer network is down",
            Duration::from_secs(20),
            async || no_fencing_record(cluster).await,
        )
        .await;
    for n in &nodes {
        cluster.lab().heal(n).unwrap();
    }
    cluster
        .wait_agents_export(
            &nodes,
            "kube_fencer_permit_through_api 0",
            "hold its permit from its peers again",
            30,
        )
        .await;
    cluster.wait_permits_held(&nodes).await;
    assert_nobody_fenced_itself(cluster, &nodes, "while only the peer network was down");
    let after = cluster.pod_uids().await.unwrap();
    for (name, uid) in &before {
        assert_eq!(after.get(name), Some(uid), "{name} was replaced");
    }
    // A permit object is owned by its Node: deleting the Node deletes it.
    let gone = &nodes[0];
    cluster.kubectl(["delete", "node", gone]).unwrap();
    cluster
        .wait_until(
            &format!("the permit object of the deleted node {gone} to be collected"),
            Duration::from_secs(60),
            async || Ok((!cluster.permit_objects()?.contains_key(gone)).then_some(())),
        )
        .await;
    // The two others each get a new set without it; the old one (still
    // answering: its agent runs) is retired, then delisted.
    for (n, other) in [(&nodes[1], &nodes[2]), (&nodes[2], &nodes[1])] {
        let listing = cluster
            .wait_until(
                &format!("{n}'s permit object to list only a set of {other}"),
                Duration::from_secs(60),
                async || {
                    let sets = cluster
                        .permit_annotation(n, "kube-fencer.io/grantors")?
                        .unwrap_or_default();
                    let only = sets.as_array().is_some_and(|a| {
                        a.len() == 1
                            && a[0]["grantors"].as_array().is_some_and(|g| {
                                g.len() == 1 && g[0]["node"].as_str() == Some(other.as_str())
                            })
                    });
                    Ok(only.then_some(sets))
                },
            )
            .await;
        say(format!("{n}'s grantor sets after {gone} left: {listing}"));
    }
    cluster
        .wait_agents_export(
            &nodes[1..],
            "kube_fencer_permit_grants_needed 1",
            "renew with its new set",
            30,
        )
        .await;
}
