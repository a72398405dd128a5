use super::*;
use clap::Parser;
use k8s_openapi::api::core::v1::{NodeAddress, NodeStatus};
use std::sync::Arc;

fn no_env(_: &str) -> Option<String> {
    None
}

/// The agent's settings from these flags (validated; no environment).
pub(crate) fn cfg(extra: &[&str]) -> AgentConfig {
    let mut argv = vec!["kube-fencer", "--node-name", "n1"];
    argv.extend_from_slice(extra);
    crate::config::Args::try_parse_from(argv)
        .unwrap()
        .into_config_with(&no_env)
        .unwrap()
        .agent
}

fn node(addrs: &[(&str, &str)]) -> Node {
    Node {
        status: Some(NodeStatus {
            addresses: Some(
                addrs
                    .iter()
                    .map(|(t, a)| NodeAddress {
                        type_: t.to_string(),
                        address: a.to_string(),
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn peer_address_prefers_advertise_then_listen_then_internal_ip() {
    let n = node(&[("Hostname", "n1"), ("InternalIP", "10.0.0.7")]);
    assert_eq!(
        peer_address(&cfg(&["--peer-advertise", "1.2.3.4:1"]), Some(&n)).as_deref(),
        Some("1.2.3.4:1")
    );
    assert_eq!(
        peer_address(&cfg(&["--peer-listen", "127.0.0.1:9999"]), Some(&n)).as_deref(),
        Some("127.0.0.1:9999")
    );
    assert_eq!(
        peer_address(&cfg(&[]), Some(&n)).as_deref(),
        Some("10.0.0.7:9747")
    );
    let v6 = node(&[("InternalIP", "fd00::7")]);
    assert_eq!(
        peer_address(&cfg(&[]), Some(&v6)).as_deref(),
        Some("[fd00::7]:9747")
    );
    assert_eq!(peer_address(&cfg(&[]), None), None);
    assert_eq!(peer_address(&cfg(&["--peer-listen", ""]), Some(&n)), None);
}

#[test]
fn boot_id_is_trimmed_and_none_when_unreadable() {
    let dir = std::env::temp_dir().join(format!("kf-boot-{}", std::process::id()));
    std::fs::write(&dir, "  6f1c-boot\n").unwrap();
    assert_eq!(
        read_boot_id(dir.to_str().unwrap()).as_deref(),
        Some("6f1c-boot")
    );
    let _ = std::fs::remove_file(&dir);
    assert_eq!(read_boot_id("/nonexistent/boot_id"), None);
    std::fs::write(&dir, "\n").unwrap();
    assert_eq!(read_boot_id(dir.to_str().unwrap()), None);
    let _ = std::fs::remove_file(&dir);
}

fn addrs(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("10.0.0.{i}:9747")).collect()
}

#[test]
fn every_agent_orders_its_peers_differently() {
    let (mut a, mut b) = (addrs(50), addrs(50));
    peer_order("node-a", &mut a);
    peer_order("node-b", &mut b);
    assert_ne!(a, b);
    let mut a2 = addrs(50);
    a2.reverse();
    peer_order("node-a", &mut a2);
    assert_eq!(a, a2, "the order depends on the node, not the input order");
    a.sort();
    assert_eq!(
        a,
        addrs(50)
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
    );
}

/// A self-check with `--self-fence=watchdog` on `watchdog` if given (else
/// one that cannot fence; tests that fence set `cfg` and `means`).
fn self_check(client: Client, watchdog: Option<Arc<Watchdog>>) -> SelfCheckTask {
    let means = watchdog.map_or_else(SelfFenceMeans::none, SelfFenceMeans::with_watchdog);
    SelfCheckTask {
        client,
        node: "n1".into(),
        cfg: cfg(&[
            "--self-fence",
            "watchdog",
            "--peer-key-file",
            "/nonexistent/key",
            "--api-check-timeout",
            "1s",
        ]),
        key: None,
        metrics: Metrics::new(),
        own_record: watch::channel(RecordState::Absent).1,
        kubelet_lease: watch::channel(None).1,
        contact: ApiContact::default(),
        means,
        population: Population {
            node_selector: decide::Selector::everything(),
            manage_control_plane: false,
        },
        peer_list: Arc::new(watch::channel(Vec::new()).0),
    }
}

/// Checks fast enough for a test (isolation is found within a second or
/// two; the shortest interval the flags accept), then `more`.
fn fast_checks<'a>(more: &[&'a str]) -> Vec<&'a str> {
    let fast = [
        "--api-check-interval",
        "500ms",
        "--api-check-timeout",
        "100ms",
        "--api-failure-threshold",
        "2",
        "--peer-silence-timeout",
        "200ms",
    ];
    fast.iter().chain(more).copied().collect()
}

/// A self-check that fences with the command `exec` (`exec:…`), with
/// these further flags.
fn fencing_by(client: Client, exec: &str, flags: &[&str]) -> SelfCheckTask {
    let mut g = self_check(client, None);
    let mut args = vec!["--self-fence", exec, "--peer-key-file", "/nonexistent/key"];
    args.extend_from_slice(flags);
    g.cfg = cfg(&args);
    g.means = SelfFenceMeans::arm(&g.cfg).unwrap();
    g
}

/// The reason the self-fence command (`echo "$KUBE_FENCER_SELF_FENCE_REASON"
/// > marker`) wrote, once its whole line is there (the shell creates the
/// file before echo writes it), or what is there after `within`;
/// `meanwhile` runs every 50 ms of the wait.
async fn reason_written(
    marker: &std::path::Path,
    within: Duration,
    meanwhile: impl Fn(),
) -> String {
    let deadline = Instant::now() + within;
    loop {
        let text = std::fs::read_to_string(marker).unwrap_or_default();
        if text.ends_with('\n') || Instant::now() >= deadline {
            return text;
        }
        meanwhile();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A fed fake watchdog device (a regular file) and its path.
fn fed_watchdog(name: &str) -> (Arc<Watchdog>, std::path::PathBuf) {
    let path = std::env::temp_dir().join(format!("kf-gwd-{name}-{}", std::process::id()));
    std::fs::write(&path, "").unwrap();
    let w =
        Watchdog::open_with(path.to_str().unwrap(), Duration::from_secs(1), |_, s| Ok(s)).unwrap();
    w.permit_until(Instant::now() + Duration::from_secs(60));
    (Arc::new(w), path)
}

#[tokio::test]
async fn the_advertisement_and_the_core_get_the_devices_timeout_not_the_flags() {
    // fed_watchdog's device reports 1 s; --watchdog-timeout is left at its default.
    let (w, path) = fed_watchdog("advertised");
    let g = self_check(
        crate::k8s::own_node::tests::refusing_client(),
        Some(w.clone()),
    );
    w.stop_feeding();
    let _ = std::fs::remove_file(&path);
    assert_ne!(g.cfg.watchdog_timeout, Duration::from_secs(1));
    let advert = g.advert(Some("b1"), None);
    assert_eq!(advert.self_fence, decide::SelfFenceAction::Watchdog);
    assert_eq!(advert.watchdog_timeout, Duration::from_secs(1));
    let settings = check_settings(&g.cfg, &g.means);
    assert_eq!(settings.watchdog_timeout, Duration::from_secs(1));
}

#[tokio::test]
async fn sigterm_keeps_the_watchdog_armed_when_the_withdrawal_fails() {
    // A partitioned agent being stopped: its Node still says "capable",
    // so the watchdog is its only guarantee and must not be disarmed.
    let (w, path) = fed_watchdog("withdraw-fails");
    let g = self_check(
        crate::k8s::own_node::tests::refusing_client(),
        Some(w.clone()),
    );
    let withdrawn = g.withdraw().await;
    let out = std::fs::read(&path).unwrap();
    w.stop_feeding();
    let _ = std::fs::remove_file(&path);
    assert!(withdrawn.is_err());
    assert!(
        !out.contains(&b'V'),
        "disarmed without a withdrawal: {out:?}"
    );
}

#[tokio::test]
async fn sigterm_disarms_the_watchdog_once_the_withdrawal_is_written() {
    use http::{Request, Response};
    use http_body_util::BodyExt;
    use kube::client::Body;
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let (w, path) = fed_watchdog("withdraw-ok");
    let g = self_check(Client::new(service, "default"), Some(w.clone()));
    let api = tokio::spawn(async move {
        let mut patch = None;
        while let Some((req, send)) = handle.next_request().await {
            let is_patch = req.method() == http::Method::PATCH;
            if is_patch {
                let body = req.into_body().collect().await.unwrap().to_bytes();
                patch = Some(serde_json::from_slice::<serde_json::Value>(&body).unwrap());
            }
            let node = serde_json::json!({
                "apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
                "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.7"}]},
            });
            send.send_response(
                Response::builder()
                    .body(Body::from(serde_json::to_vec(&node).unwrap()))
                    .unwrap(),
            );
            if is_patch {
                break;
            }
        }
        patch
    });
    let withdrawn = g.withdraw().await;
    let patch = api.await.unwrap().expect("the withdrawal was written");
    let out = std::fs::read(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(withdrawn.is_ok(), "{withdrawn:?}");
    assert_eq!(out.last(), Some(&b'V'), "disarmed after the withdrawal");
    let value = patch["metadata"]["annotations"][decide::AGENT_ANNOTATION]
        .as_str()
        .unwrap()
        .to_string();
    let advert = decide::advert::parse(&value);
    let advert = advert.valid().expect("a valid advertisement");
    assert!(!advert.capable(), "{value}");
    assert_eq!(
        advert.peer_address, None,
        "a withdrawn agent is no peer any more: {value}"
    );
}

/// An agent cut off by a fast-failing network (link down / TCP reset:
/// every request fails at once, and the own Node watch restarts with
/// Event::Init about every second), no peers known, its kubelet's
/// Lease last renewed at `renewed` as far as it knows. Until it fences
/// (10 s at most): the reason it gave, its metrics when it began to, what
/// it persisted.
async fn cut_off(
    tag: &str,
    renewed: Option<std::time::SystemTime>,
) -> (String, String, Option<self_check::Previous>) {
    let dir = std::env::temp_dir().join(format!("kf-guard-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let marker = dir.join("fenced");
    let exec = format!(
        "exec:echo \"$KUBE_FENCER_SELF_FENCE_REASON\" > {}",
        marker.display()
    );
    let state = dir.join("state");
    let mut g = fencing_by(
        crate::k8s::own_node::tests::refusing_client(),
        &exec,
        &fast_checks(&[
            "--unreachable-after",
            "20s",
            "--fence-timeout",
            "40s",
            "--state-dir",
            state.to_str().unwrap(),
        ]),
    );
    let (hook, own_record) = watch::channel(RecordState::Absent);
    g.own_record = own_record;
    let (_lease, kubelet_lease) = watch::channel(renewed);
    g.kubelet_lease = kubelet_lease;
    let (stop, rx) = watch::channel(false);
    let watch = tokio::spawn(crate::k8s::own_node::watch_own_node(
        g.client.clone(),
        "n1".into(),
        hook,
        crate::observability::Health::new(Duration::from_secs(30), g.contact.clone()),
        g.contact.clone(),
        Metrics::new(),
        rx.clone(),
    ));
    let metrics = g.metrics.clone();
    let run = tokio::spawn(g.run(rx));
    // The metrics as they were when the command started (the checks go on).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !marker.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let rendered = metrics.render();
    let reason = reason_written(&marker, Duration::from_secs(10), || ()).await;
    let _ = stop.send(true);
    let _ = run.await;
    let _ = watch.await;
    // The withdrawal failed (cut off): the successor resumes from here.
    let boot = read_boot_id("/proc/sys/kernel/random/boot_id");
    let kept = crate::agent::state_dir::load(
        &crate::agent::state_dir::path(&state, "n1"),
        boot.as_deref(),
    );
    let _ = std::fs::remove_dir_all(&dir);
    (reason, rendered, kept)
}

#[tokio::test]
async fn an_agent_cut_off_by_a_fast_failing_network_fences_itself() {
    // No renewal of its kubelet's Lease seen: rule 5b, one failed check
    // and one silent round of peers.
    let (reason, rendered, kept) = cut_off("cut", None).await;
    assert!(
        reason.contains("this node is isolated") && reason.contains("no renewal"),
        "the isolated agent did not fence itself: {reason:?}"
    );
    let kept = kept.expect("the self-check persisted for a restarted agent");
    assert!(kept.self_fence_decided, "{kept:?}");
    assert_eq!(kept.last_contact, None, "no API contact ever: {kept:?}");
    assert!(
        rendered.contains("kube_fencer_api_check_failures 1"),
        "{rendered}"
    );
}

#[tokio::test]
async fn a_cut_off_agent_whose_kubelet_renewed_just_now_waits_for_the_threshold() {
    // The own-Lease watch saw a renewal (dated a little in the future:
    // age 0): not stale for 20 s, so rules 2 and 5 decide, after the
    // second failed check and the silence timeout.
    let soon = std::time::SystemTime::now() + Duration::from_secs(1);
    let (reason, rendered, _) = cut_off("fresh", Some(soon)).await;
    assert!(
        reason.contains("this node is isolated") && reason.contains("peers answered for"),
        "{reason:?}"
    );
    assert!(
        rendered.contains("kube_fencer_api_check_failures 2")
            || rendered.contains("kube_fencer_api_check_failures 3"),
        "{rendered}"
    );
}

#[tokio::test]
async fn a_connected_agent_whose_node_is_being_fenced_fences_itself() {
    // Rule 1: the own-Node watch delivers a Fencing record of this boot
    // while the API answers: the agent fences its node at its next check.
    use http::{Request, Response};
    use kube::client::Body;
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let api = tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let body = if req.uri().path() == "/api/v1/nodes" {
                serde_json::json!({"apiVersion": "v1", "kind": "NodeList", "metadata": {}, "items": []})
            } else if req.uri().path() == "/readyz" {
                serde_json::json!("ok")
            } else {
                serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}})
            };
            send.send_response(
                Response::builder()
                    .body(Body::from(serde_json::to_vec(&body).unwrap()))
                    .unwrap(),
            );
        }
    });
    let dir = std::env::temp_dir().join(format!("kf-guard-rule1-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let marker = dir.join("fenced");
    let exec = format!(
        "exec:echo \"$KUBE_FENCER_SELF_FENCE_REASON\" > {}",
        marker.display()
    );
    let mut g = fencing_by(
        Client::new(service, "default"),
        &exec,
        &[
            "--api-check-interval",
            "500ms",
            "--api-check-timeout",
            "500ms",
            "--state-dir",
            dir.join("state").to_str().unwrap(),
        ],
    );
    let (hook, own_record) = watch::channel(RecordState::Absent);
    g.own_record = own_record;
    let contact = g.contact.clone();
    let (stop, rx) = watch::channel(false);
    let run = tokio::spawn(g.run(rx));
    // Connected (watch events keep arriving), no record: no fencing.
    for _ in 0..10 {
        contact.seen();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!marker.exists(), "fenced without a record");
    hook.send_replace(RecordState::Valid(decide::FenceRecord {
        phase: decide::Phase::Fencing,
        fencing_since: std::time::SystemTime::now(),
        fenced_at: None,
        cordoned: true,
        tainted: false,
        by: "leader".into(),
        held_since: None,
        boot_id: read_boot_id("/proc/sys/kernel/random/boot_id"),
    }));
    let reason = reason_written(&marker, Duration::from_secs(5), || contact.seen()).await;
    let _ = stop.send(true);
    let _ = run.await;
    api.abort();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        reason.contains("the cluster is fencing this node"),
        "rule 1 did not fence the node: {reason:?}"
    );
}

#[test]
fn the_state_is_saved_when_it_changes_but_not_on_every_contact() {
    let t0 = Instant::now();
    let p = |boot: &str, contact: Option<Duration>, decided: bool| self_check::Previous {
        boot_id: boot.into(),
        last_contact: contact.map(|d| t0 + d),
        self_fence_decided: decided,
        peers: Vec::new(),
    };
    let ms = Duration::from_millis;
    let saved = p("b", Some(ms(0)), false);
    assert!(needs_saving(None, &saved));
    assert!(!needs_saving(Some(&saved), &saved));
    assert!(!needs_saving(Some(&saved), &p("b", Some(ms(900)), false)));
    assert!(needs_saving(Some(&saved), &p("b", Some(ms(1_000)), false)));
    assert!(
        needs_saving(Some(&saved), &p("b", Some(ms(10)), true)),
        "decided"
    );
    assert!(
        needs_saving(Some(&saved), &p("b2", Some(ms(0)), false)),
        "rebooted"
    );
    assert!(
        needs_saving(Some(&p("b", None, false)), &saved),
        "first contact"
    );
    assert!(
        !needs_saving(None, &p("", Some(ms(0)), true)),
        "boot unknown"
    );
}

#[tokio::test]
async fn in_a_control_plane_outage_the_agent_asks_its_peers_and_does_not_fence() {
    // Rule 4: the API is gone for everybody; both peers answer at once
    // that they cannot reach it either (over real sockets, with the key).
    const KEY: &str = "0123456789abcdef-outage";
    let key = PeerKey::from_bytes(KEY.as_bytes()).unwrap();
    let mut addrs = Vec::new();
    for _ in 0..2 {
        let server = peers::Server {
            client: crate::k8s::own_node::tests::refusing_client(),
            key: key.clone(),
            nonces: Default::default(),
            challenges: Default::default(),
            api_timeout: Duration::from_secs(1),
            fresh_within: Duration::from_secs(1),
            contact: ApiContact::default(),
            metrics: Metrics::new(),
            clock: crate::peers::auth::unix_now,
            grants: None,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.push(listener.local_addr().unwrap().to_string());
        tokio::spawn(async move { axum::serve(listener, peers::router(server)).await });
    }
    let dir = std::env::temp_dir().join(format!("kf-guard-outage-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let marker = dir.join("fenced");
    let exec = format!("exec:touch {}", marker.display());
    let peer_list = addrs.join(",");
    let mut g = fencing_by(
        crate::k8s::own_node::tests::refusing_client(),
        &exec,
        &fast_checks(&[
            "--peers",
            &peer_list,
            "--state-dir",
            dir.join("state").to_str().unwrap(),
        ]),
    );
    g.key = Some(key);
    let metrics = g.metrics.clone();
    let (stop, rx) = watch::channel(false);
    let run = tokio::spawn(g.run(rx));
    // Well past the isolation schedule (the test above fences in < 1s).
    let outage = |m: &Metrics| {
        m.render()
            .contains("kube_fencer_self_fence_state{state=\"outage\"} 1")
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && !marker.exists() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(true);
    let _ = run.await;
    let fenced = marker.exists();
    let rendered = metrics.render();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!fenced, "fenced during a control-plane outage");
    assert!(outage(&metrics), "{rendered}");
    assert!(
        rendered.contains("kube_fencer_peer_requests_total{direction=\"out\",result=\"ok\"}"),
        "{rendered}"
    );
    assert!(rendered.contains("kube_fencer_peers 2"), "{rendered}");
}

#[test]
fn every_member_of_the_population_is_a_peer_answering_or_not() {
    let live = r#"{"selfFence":"watchdog","watchdogTimeout":"10s","apiCheckInterval":"5s","apiCheckTimeout":"2s","apiFailureThreshold":3,"peerSilenceTimeout":"10s","bootId":"b1","peerAddress":"10.0.0.7:9747"}"#;
    let pop = Population {
        node_selector: decide::Selector::parse("pool=db").unwrap(),
        manage_control_plane: false,
    };
    let labels = |pairs: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let ann = |v: &str| {
        Some(std::iter::once((decide::AGENT_ANNOTATION.to_string(), v.to_string())).collect())
    };
    let db = labels(&[("pool", "db")]);
    assert_eq!(
        population_peer("a", &db, ann(live).as_ref(), &pop).as_deref(),
        Some("10.0.0.7:9747")
    );
    // No agent, a withdrawn advertisement, an unreadable one: members
    // that never answer, so a group cut off together stays a minority.
    let withdrawn = live
        .replace(r#""selfFence":"watchdog""#, r#""selfFence":"none""#)
        .replace(r#","peerAddress":"10.0.0.7:9747""#, "");
    for a in [None, ann(&withdrawn), ann("{garbage")] {
        assert_eq!(
            population_peer("b", &db, a.as_ref(), &pop).as_deref(),
            Some("no-address/b")
        );
    }
    // Outside the population: not a peer, even with an agent.
    let web = labels(&[("pool", "web")]);
    assert_eq!(population_peer("c", &web, ann(live).as_ref(), &pop), None);
    let excluded = labels(&[("pool", "db"), (decide::EXCLUDE_LABEL, "true")]);
    assert_eq!(
        population_peer("d", &excluded, ann(live).as_ref(), &pop),
        None
    );
    let cp = labels(&[
        ("pool", "db"),
        ("node-role.kubernetes.io/control-plane", ""),
    ]);
    assert_eq!(population_peer("e", &cp, ann(live).as_ref(), &pop), None);
    let managed_cp = Population {
        manage_control_plane: true,
        ..pop.clone()
    };
    assert!(population_peer("e", &cp, ann(live).as_ref(), &managed_cp).is_some());
}
