//! Scenario tests of the whole core, driven by the simulated world in `sim`.

use std::time::Duration;

use super::sim::{Sim, secs};
use super::testutil::{SELF_NODE, mono, now_at, settings, wall0};
use super::*;

fn begin() -> NodeIntent {
    NodeIntent::BeginFencing
}
fn mark() -> NodeIntent {
    NodeIntent::MarkFenced
}
fn unfence() -> NodeIntent {
    NodeIntent::Unfence
}

/// Four worker nodes plus the agent's own node, synced at 0.
fn cluster() -> Sim {
    let mut sim = Sim::new();
    sim.nodes(&["n1", "n2", "n3", "n4", SELF_NODE]);
    sim.sync();
    sim.decide_now();
    sim
}

fn claim(name: &str, pv: &str, rwo: bool) -> ClaimObs {
    ClaimObs {
        claim: name.into(),
        volume: Some(pv.into()),
        read_write_once: rwo,
    }
}

#[test]
fn full_lifecycle_healthy_suspect_fencing_fenced_recovered_unfenced() {
    let mut sim = cluster();
    let pod = sim.pod(
        "n1",
        "db/pg-0",
        Some(("apps/v1", "StatefulSet", "pg")),
        vec![claim("data-pg-0", "pv-1", true)],
    );
    sim.va("va-1", "n1", "pv-1");
    sim.run_until(5);
    assert_eq!(sim.status("n1"), NodeStatus::Healthy);
    sim.kill("n1"); // last renewal observed at 0

    sim.run_until(19);
    assert!(sim.log.is_empty(), "{:?}", sim.log);
    assert_eq!(sim.status("n1"), NodeStatus::Healthy);
    assert_eq!(sim.wakeup(), Some(20.0));

    sim.run_until(20);
    assert_eq!(sim.updates("n1", begin()), vec![20]);
    let Action::UpdateNode { why, .. } = sim.actions_at(20)[0] else {
        panic!()
    };
    assert_eq!(why, "Lease not renewed for 20s (--unreachable-after 20s)");
    assert!(sim.get("n1").facts.unschedulable);
    assert!(
        matches!(sim.record("n1"), RecordState::Valid(r) if r.phase == Phase::Fencing && r.cordoned)
    );

    sim.run_until(21);
    assert_eq!(sim.status("n1"), NodeStatus::Fencing);
    assert_eq!(
        sim.wakeup(),
        Some(32.0),
        "n1's settle window: stale at 20 + heartbeat interval 10 + burst spread 2"
    );
    sim.run_until(51);
    assert_eq!(sim.wakeup(), Some(60.0), "n1's fence timeout");

    // One tick before fence_timeout: nothing. At it: MarkFenced.
    sim.run_until(59);
    assert_eq!(sim.updates("n1", mark()), Vec::<u64>::new());
    sim.run_until(60);
    assert_eq!(sim.updates("n1", mark()), vec![60]);
    assert!(
        sim.deleted_pods().is_empty(),
        "no pod deletion in the deciding that marks fenced"
    );
    assert!(
        sim.get("n1")
            .facts
            .taints
            .contains(&Taint::out_of_service())
    );

    sim.run_until(61);
    assert_eq!(sim.status("n1"), NodeStatus::Fenced);
    assert_eq!(sim.deleted_pods(), vec![(61, pod.clone())]);
    assert_eq!(sim.deleted_vas(), vec!["va-1".to_string()]);
    let Action::DeletePod { pod: r, .. } = sim.actions_at(61)[0] else {
        panic!()
    };
    assert_eq!(r.statefulset.as_deref(), Some("pg"));
    assert!(!sim.pod_exists(&pod));

    sim.run_until(100);
    assert_eq!(sim.deleted_pods().len(), 1, "each pod once");
    sim.revive("n1");
    sim.run_until(129);
    assert!(
        sim.updates("n1", unfence()).is_empty(),
        "healthy_after not yet reached"
    );
    assert_eq!(sim.status("n1"), NodeStatus::Fenced);
    sim.run_until(130);
    assert_eq!(sim.updates("n1", unfence()), vec![130]);
    let n1 = &sim.get("n1").facts;
    assert_eq!(n1.record, RecordState::Absent);
    assert!(!n1.unschedulable);
    assert!(n1.taints.is_empty());
    sim.run_until(200);
    assert_eq!(sim.status("n1"), NodeStatus::Healthy);
    assert_eq!(sim.log.len(), 5, "{:#?}", sim.log);
}

#[test]
fn fencing_is_cancelled_when_the_node_comes_back() {
    let mut sim = cluster();
    let pod = sim.sts_pod("n1", "db/pg-0", "pg");
    sim.run_until(5);
    sim.kill("n1");
    sim.run_until(30);
    assert_eq!(sim.updates("n1", begin()), vec![20]);
    sim.reconnect("n1"); // renews at 30: streak restarts (gap 30 s); no reboot needed
    sim.run_until(59);
    assert!(sim.updates("n1", unfence()).is_empty());
    assert_eq!(sim.status("n1"), NodeStatus::Fencing);
    sim.run_until(60);
    assert_eq!(sim.updates("n1", unfence()), vec![60]);
    sim.run_until(300);
    assert!(
        sim.updates("n1", mark()).is_empty(),
        "a fresh Lease never advances to Fenced"
    );
    assert!(sim.deleted_pods().is_empty());
    assert!(sim.pod_exists(&pod));
    assert_eq!(sim.get("n1").facts, {
        let mut f = testutil::facts("n1");
        f.resource_version = sim.get("n1").facts.resource_version.clone();
        f
    });
}

#[test]
fn a_recorded_fencing_node_with_a_fresh_lease_never_advances() {
    // Lease comes back but Ready stays False: no unfencing, and no MarkFenced either.
    let mut sim = cluster();
    sim.run_until(5);
    sim.kill("n1");
    sim.run_until(25);
    sim.revive("n1");
    sim.set_ready("n1", Readiness::False);
    sim.run_until(400);
    assert_eq!(sim.updates("n1", begin()), vec![20]);
    assert!(sim.updates("n1", mark()).is_empty());
    assert!(sim.updates("n1", unfence()).is_empty());
    assert_eq!(sim.status("n1"), NodeStatus::Fencing);
    // Ready comes back: unfenced healthy_after later.
    sim.set_ready("n1", Readiness::True);
    sim.run_until(429);
    assert!(sim.updates("n1", unfence()).is_empty());
    sim.run_until(430);
    assert_eq!(sim.updates("n1", unfence()), vec![430]);
}

#[test]
fn a_fresh_lease_is_never_suspect_whatever_ready_says() {
    let mut sim = cluster();
    sim.set_ready("n1", Readiness::Unknown);
    sim.set_ready("n2", Readiness::False);
    sim.run_until(600);
    assert!(sim.log.is_empty());
    assert_eq!(sim.status("n1"), NodeStatus::Healthy);
    assert_eq!(sim.status("n2"), NodeStatus::Healthy);
}

#[test]
fn renewal_gaps_just_under_unreachable_after_never_fence() {
    let mut sim = cluster();
    sim.get_mut("n1").renew_every = secs(19);
    sim.get_mut("n1").next_renewal = secs(19);
    sim.run_until(1000);
    assert!(sim.log.is_empty(), "{:?}", sim.log);
}

#[test]
fn a_renewal_gap_of_unreachable_after_fences() {
    let mut sim = cluster();
    sim.get_mut("n1").renew_every = secs(21);
    sim.get_mut("n1").next_renewal = secs(21);
    sim.run_until(20);
    assert_eq!(sim.updates("n1", begin()), vec![20]);
    sim.run_until(400);
    // It keeps renewing every 21 s: stale one second in 21, never for fence_timeout.
    assert!(sim.updates("n1", mark()).is_empty());
    // Each renewal comes after a gap of unreachable_after or more: the streak
    // restarts every time, so it is never unfenced either.
    assert!(sim.updates("n1", unfence()).is_empty());
    assert_eq!(sim.status("n1"), NodeStatus::Fencing);
}

#[test]
fn a_flapping_node_is_not_unfenced_until_steady_for_healthy_after() {
    let mut sim = cluster();
    sim.run_until(5);
    sim.kill("n1");
    sim.run_until(70);
    assert_eq!(sim.updates("n1", mark()), vec![60]);
    // Comes back with gaps of exactly unreachable_after: each renewal restarts the streak.
    sim.revive("n1");
    sim.get_mut("n1").renew_every = secs(20);
    sim.run_until(300);
    assert!(sim.updates("n1", unfence()).is_empty());
    // Gaps just under: a steady streak; unfenced once it lasted healthy_after.
    sim.get_mut("n1").renew_every = secs(19);
    let start = sim.get("n1").next_renewal.as_secs(); // the next renewal still follows a 20 s gap
    sim.run_until(start + 29);
    assert!(sim.updates("n1", unfence()).is_empty());
    sim.run_until(start + 30);
    assert_eq!(sim.updates("n1", unfence()), vec![start + 30]);
}

#[test]
fn ready_flipping_delays_unfencing() {
    let mut sim = cluster();
    sim.run_until(5);
    sim.kill("n1");
    sim.run_until(70);
    sim.revive("n1");
    // Ready flips False for a second every 25 s: never Ready for healthy_after.
    for k in 0..10 {
        sim.run_until(70 + 25 * k + 24);
        sim.set_ready("n1", Readiness::False);
        sim.tick();
        sim.set_ready("n1", Readiness::True);
    }
    assert!(sim.updates("n1", unfence()).is_empty());
    let t = sim.t.as_secs();
    sim.run_until(t + 29);
    assert!(sim.updates("n1", unfence()).is_empty());
    sim.run_until(t + 30);
    assert_eq!(sim.updates("n1", unfence()), vec![t + 30]);
}

#[test]
fn unfencing_needs_the_lease_streak_as_well_as_ready() {
    // Ready for long, Lease streak short: wait for the streak.
    let obs_with = |streak: u64, ready: u64, readiness: Readiness| {
        let mut f = testutil::facts("n1");
        f.ready = readiness;
        f.record = RecordState::Valid(FenceRecord {
            phase: Phase::Fenced,
            fencing_since: wall0(),
            fenced_at: Some(wall0()),
            cordoned: true,
            tainted: true,
            by: "x".into(),
            // Fenced during an earlier boot: the node has rebooted since.
            boot_id: Some("boot-0".into()),
            held_since: None,
        });
        let mut obs = Observations {
            synced: true,
            ..Default::default()
        };
        obs.nodes.insert(
            "n1".into(),
            NodeObs {
                facts: f,
                heartbeat: Some(Heartbeat {
                    last_renewal: mono(1000),
                    streak_since: mono(1000 - streak),
                }),
                ready_since: Some(mono(1000 - ready)),
                boot_since: None,
            },
        );
        decide(&obs, now_at(1000), &settings())
    };
    let obs_for = |streak, ready| obs_with(streak, ready, Readiness::True);
    // Ready must be True now, whatever ready_since says.
    assert!(obs_with(500, 500, Readiness::False).actions.is_empty());
    assert!(obs_with(500, 500, Readiness::Unknown).actions.is_empty());
    assert!(obs_for(29, 500).actions.is_empty());
    assert_eq!(obs_for(29, 500).report.next_wakeup, Some(mono(1001)));
    assert!(obs_for(500, 29).actions.is_empty());
    assert_eq!(obs_for(500, 29).report.next_wakeup, Some(mono(1001)));
    assert_eq!(obs_for(30, 30).actions.len(), 1);
}

fn storm(max: MaxUnhealthy, kill: &[&str]) -> Sim {
    let mut s = settings();
    s.max_unhealthy = max;
    let mut sim = Sim::with(s);
    sim.nodes(&["n1", "n2", "n3", "n4", SELF_NODE]);
    sim.label(SELF_NODE, EXCLUDE_LABEL, "true");
    sim.sync();
    sim.run_until(5);
    for n in kill {
        sim.kill(n);
    }
    sim.run_until(100);
    sim
}

fn fenced_nodes(sim: &Sim) -> Vec<String> {
    ["n1", "n2", "n3", "n4"]
        .iter()
        .filter(|n| !sim.updates(n, mark()).is_empty())
        .map(|n| n.to_string())
        .collect()
}

/// Three nodes, one of them the leader's: the default 40% allows one failure
/// (40% of 3), and the leader's own node counts as one of the three.
#[test]
fn three_node_cluster_with_default_threshold_fences_one_node_not_two() {
    let mut s = settings();
    s.max_unhealthy = MaxUnhealthy::Percent(40);
    let mut sim = Sim::with(s.clone());
    sim.nodes(&["n1", "n2", SELF_NODE]);
    sim.sync();
    sim.run_until(5);
    sim.kill("n1");
    sim.run_until(100);
    assert_eq!(fenced_nodes(&sim), ["n1"]);
    let g = &sim.last.as_ref().unwrap().report.storm_guard;
    assert_eq!((g.managed, g.unhealthy, g.allowed), (3, 1, 1));

    let mut sim = Sim::with(s);
    sim.nodes(&["n1", "n2", SELF_NODE]);
    sim.sync();
    sim.run_until(5);
    sim.kill("n1");
    sim.kill("n2");
    sim.run_until(100);
    assert!(sim.log.is_empty(), "{:?}", sim.log);
    assert!(sim.last.as_ref().unwrap().report.storm_guard.active);
}

#[test]
fn storm_guard_percent_below_at_and_above() {
    // 4 managed nodes (the agent's own node is excluded), 40% ⇒ 1 allowed.
    let sim = storm(MaxUnhealthy::Percent(40), &["n1"]);
    assert_eq!(fenced_nodes(&sim), ["n1"]);
    let g = &sim.last.as_ref().unwrap().report.storm_guard;
    assert_eq!(
        (g.managed, g.unhealthy, g.allowed, g.active),
        (4, 1, 1, false)
    );
    let sim = storm(MaxUnhealthy::Percent(40), &["n1", "n2"]);
    assert!(sim.log.is_empty(), "{:?}", sim.log);
    let r = &sim.last.as_ref().unwrap().report;
    assert_eq!(
        (
            r.storm_guard.managed,
            r.storm_guard.unhealthy,
            r.storm_guard.allowed,
            r.storm_guard.active
        ),
        (4, 2, 1, true)
    );
    for n in ["n1", "n2"] {
        assert_eq!(sim.status(n), NodeStatus::Suspect);
        let w = r
            .warnings
            .iter()
            .find(|w| w.node.as_deref() == Some(n))
            .expect(n);
        assert!(
            w.message.contains("2 of 4") && w.message.contains("1 allowed"),
            "{}",
            w.message
        );
        assert!(w.message.contains("--max-unhealthy 40%"), "{}", w.message);
    }
}

/// Half of the population cut off is never fenced, whatever the threshold:
/// each of those nodes may hear a majority of its peers and take the cut for
/// a control-plane outage (self-fence rule 4), so it would not fence itself.
#[test]
fn half_of_the_population_cut_off_is_held_whatever_max_unhealthy_says() {
    for max in [MaxUnhealthy::Percent(50), MaxUnhealthy::Count(2)] {
        let sim = storm(max, &["n1", "n3"]);
        assert!(sim.log.is_empty(), "{max:?}: {:?}", sim.log);
        let r = &sim.last.as_ref().unwrap().report;
        assert_eq!((r.storm_guard.allowed, r.storm_guard.active), (1, true));
        assert!(
            r.warnings
                .iter()
                .any(|w| w.message.contains("capped below half of the 4 nodes")),
            "{:?}",
            r.warnings
        );
    }
}

#[test]
fn storm_guard_count_below_at_and_above() {
    assert_eq!(
        fenced_nodes(&storm(MaxUnhealthy::Count(1), &["n1"])),
        ["n1"]
    );
    let sim = storm(MaxUnhealthy::Count(1), &["n1", "n3"]);
    assert!(sim.log.is_empty());
    assert!(
        sim.warnings()
            .iter()
            .any(|w| w.message.contains("--max-unhealthy 1"))
    );
    assert!(storm(MaxUnhealthy::Count(0), &["n1"]).log.is_empty());
}

#[test]
fn storm_guard_holds_mark_fenced_but_not_recovery_or_unfencing() {
    let mut s = settings();
    s.max_unhealthy = MaxUnhealthy::Count(1);
    let mut sim = Sim::with(s);
    sim.nodes(&["n1", "n2", "n3", "n4", "n5", SELF_NODE]);
    sim.sync();
    sim.run_until(5);
    sim.kill("n1");
    sim.run_until(70);
    assert_eq!(sim.updates("n1", mark()), vec![60]);
    // n2 starts fencing alone... then n3 dies too: the guard holds n2's MarkFenced.
    sim.kill("n2");
    sim.run_until(75);
    sim.kill("n3");
    // n1 (fenced, still dead) counts as unhealthy: n2 at 90 makes 2 > 1.
    sim.run_until(200);
    assert!(sim.updates("n2", begin()).is_empty());
    assert!(sim.updates("n2", mark()).is_empty());
    assert!(sim.updates("n3", begin()).is_empty());
    assert!(sim.last.as_ref().unwrap().report.storm_guard.active);
    // A StatefulSet pod shows up on the fenced n1: recovery continues.
    let pod = sim.sts_pod("n1", "db/late-0", "late");
    sim.tick();
    assert!(sim.deleted_pods().iter().any(|(_, u)| *u == pod));
    // n1 comes back: unfenced although the guard is active.
    sim.revive("n1");
    let t = sim.t.as_secs();
    sim.run_until(t + 30);
    assert_eq!(sim.updates("n1", unfence()), vec![t + 30]);
}

#[test]
fn storm_guard_holds_mark_fenced_of_a_fencing_node() {
    let mut s = settings();
    s.max_unhealthy = MaxUnhealthy::Count(1);
    let mut sim = Sim::with(s);
    sim.nodes(&["n1", "n2", "n3", "n4"]);
    sim.sync();
    sim.run_until(5);
    sim.kill("n1");
    sim.run_until(30);
    assert_eq!(sim.updates("n1", begin()), vec![20]);
    sim.kill("n2");
    sim.run_until(200);
    assert!(sim.updates("n1", mark()).is_empty());
    let w = sim.warnings();
    assert!(
        w.iter()
            .any(|w| w.node.as_deref() == Some("n1") && w.message.contains("marking as fenced")),
        "{w:?}"
    );
    assert_eq!(sim.status("n1"), NodeStatus::Fencing);
    // n2 comes back: the guard lifts; n1's fencing restarts from the release
    // (not marked fenced at once on its old record's long-past safe time).
    sim.revive("n2");
    sim.tick();
    assert_eq!(sim.updates("n1", NodeIntent::RestartFencing), vec![201]);
    sim.run_until(300);
    let marked = sim.updates("n1", mark());
    assert_eq!(marked.len(), 1);
    assert!(marked[0] >= 201 + 15, "{marked:?}");
}

fn excluded_reason(sim: &Sim, node: &str) -> String {
    match sim.status(node) {
        NodeStatus::Excluded(why) => why,
        other => panic!("{node} is {other:?}"),
    }
}

#[test]
fn excluded_nodes_are_never_fenced() {
    let mut s = settings();
    s.node_selector = Selector::parse("pool=workers").unwrap();
    let mut sim = Sim::with(s);
    sim.nodes(&[
        "w1",
        "w2",
        "w3",
        "w4",
        "x-label",
        "x-selector",
        "cp",
        "master",
        SELF_NODE,
    ]);
    for n in ["w1", "w2", "w3", "w4", "x-label", "cp", "master", SELF_NODE] {
        sim.label(n, "pool", "workers");
    }
    sim.label("x-label", EXCLUDE_LABEL, "true");
    sim.label("cp", "node-role.kubernetes.io/control-plane", "");
    sim.label("master", "node-role.kubernetes.io/master", "");
    sim.label("w4", EXCLUDE_LABEL, "false"); // only "true" excludes
    sim.sync();
    for n in ["x-label", "x-selector", "cp", "master", SELF_NODE] {
        sim.sts_pod(n, &format!("ns/{n}-0"), n);
    }
    sim.run_until(5);
    for n in ["x-label", "x-selector", "cp", "master", SELF_NODE] {
        sim.kill(n);
    }
    sim.run_until(300);
    assert!(sim.log.is_empty(), "{:?}", sim.log);
    assert!(excluded_reason(&sim, "x-label").contains("kube-fencer.io/exclude=true"));
    assert!(excluded_reason(&sim, "x-selector").contains("--node-selector \"pool=workers\""));
    assert!(excluded_reason(&sim, "cp").contains("control-plane"));
    assert!(excluded_reason(&sim, "master").contains("node-role.kubernetes.io/master"));
    // The own node is never acted on, but it counts for the storm guard.
    assert_eq!(sim.status(SELF_NODE), NodeStatus::Suspect);
    assert_eq!(sim.status("w4"), NodeStatus::Healthy);
    let g = &sim.last.as_ref().unwrap().report.storm_guard;
    assert_eq!((g.managed, g.unhealthy, g.active), (5, 1, false));
    let w = sim.warnings();
    let own = w
        .iter()
        .find(|w| w.node.as_deref() == Some(SELF_NODE))
        .expect("warning about the leader's own node");
    assert!(
        own.message.contains("kubelet looks dead"),
        "{}",
        own.message
    );
}

#[test]
fn control_plane_nodes_are_fenced_with_the_flag() {
    let mut s = settings();
    s.manage_control_plane = true;
    let mut sim = Sim::with(s);
    sim.nodes(&["cp", "n1", "n2"]);
    sim.label("cp", "node-role.kubernetes.io/control-plane", "");
    sim.sync();
    sim.run_until(5);
    sim.kill("cp");
    sim.run_until(70);
    assert_eq!(sim.updates("cp", begin()), vec![20]);
    assert_eq!(sim.updates("cp", mark()), vec![60]);
}

#[test]
fn excluding_a_fencing_node_stops_fencing_but_unfencing_still_undoes_it() {
    let mut sim = cluster();
    sim.run_until(5);
    sim.kill("n1");
    sim.run_until(30);
    assert_eq!(sim.updates("n1", begin()), vec![20]);
    sim.label("n1", EXCLUDE_LABEL, "true");
    sim.run_until(300);
    assert!(sim.updates("n1", mark()).is_empty());
    sim.revive("n1");
    sim.run_until(330);
    assert_eq!(sim.updates("n1", unfence()), vec![330]);
    assert!(!sim.get("n1").facts.unschedulable);
}

#[test]
fn own_node_with_a_record_is_unfenced_but_nothing_else() {
    let mut sim = Sim::new();
    sim.nodes(&["n1", "n2", SELF_NODE]);
    let fenced = RecordState::Valid(FenceRecord {
        phase: Phase::Fenced,
        fencing_since: wall0(),
        fenced_at: Some(wall0()),
        cordoned: true,
        tainted: true,
        by: "previous-leader".into(),
        // Fenced during an earlier boot: the node has rebooted since.
        boot_id: Some("boot-0".into()),
        held_since: None,
    });
    let me = sim.get_mut(SELF_NODE);
    me.facts.record = fenced;
    me.facts.unschedulable = true;
    me.facts.taints = vec![Taint::out_of_service()];
    sim.sts_pod(SELF_NODE, "db/pg-0", "pg");
    sim.sync();
    sim.run_until(30);
    assert_eq!(sim.updates(SELF_NODE, unfence()), vec![30]);
    assert_eq!(sim.log.len(), 1);
}

#[test]
fn malformed_record_means_hands_off_with_a_warning() {
    let mut sim = Sim::new();
    sim.nodes(&["n1", "n2", "n3"]);
    let bad = record::parse(r#"{"phase":"Zombie"}"#);
    assert!(matches!(bad, RecordState::Malformed(_)));
    sim.get_mut("n1").facts.record = bad;
    sim.get_mut("n1").facts.unschedulable = true;
    sim.sts_pod("n1", "db/pg-0", "pg");
    sim.sync();
    sim.run_until(5);
    sim.kill("n1");
    sim.run_until(300);
    assert!(sim.log.is_empty());
    assert!(excluded_reason(&sim, "n1").contains("malformed"));
    let w = sim.warnings();
    let w = w
        .iter()
        .find(|w| w.node.as_deref() == Some("n1"))
        .expect("warning");
    assert!(
        w.message.contains("n1") && w.message.contains("Zombie"),
        "{}",
        w.message
    );
    // Healthy again with a malformed record: still hands off.
    sim.revive("n1");
    sim.run_until(600);
    assert!(sim.log.is_empty());
    assert!(sim.get("n1").facts.unschedulable);
}

#[test]
fn a_node_without_lease_is_unmonitored() {
    let mut sim = Sim::new();
    sim.nodes(&["n1", "n2", "n3"]);
    sim.get_mut("n1").has_lease = false;
    sim.set_ready("n1", Readiness::Unknown);
    sim.sync();
    sim.run_until(600);
    assert!(sim.log.is_empty());
    assert_eq!(sim.status("n1"), NodeStatus::Unmonitored);
    assert!(
        sim.warnings()
            .iter()
            .any(|w| w.node.as_deref() == Some("n1") && w.message.contains("no Lease"))
    );
    let g = &sim.last.as_ref().unwrap().report.storm_guard;
    // It belongs to the population its peers count, and nothing shows it
    // alive: it counts as unhealthy for the storm guard.
    assert_eq!((g.managed, g.unhealthy), (3, 1));
}

#[test]
fn nothing_happens_before_the_caches_are_synced() {
    let mut sim = Sim::new();
    sim.nodes(&["n1", "n2", "n3"]);
    sim.kill("n1");
    sim.run_until(300);
    assert!(sim.log.is_empty());
    let r = &sim.last.as_ref().unwrap().report;
    assert!(!r.synced);
    assert!(r.nodes.is_empty());
    assert!(nodes_needing_pods(&sim.observations(), &sim.settings).is_empty());
    // Once synced, every timer starts at the sync.
    sim.sync();
    sim.run_until(319);
    assert!(sim.log.is_empty());
    sim.run_until(320);
    assert_eq!(sim.updates("n1", begin()), vec![320]);
}

#[test]
fn a_new_leader_resumes_fencing_from_the_record_alone() {
    let mut sim = cluster();
    sim.run_until(5);
    sim.kill("n1");
    sim.run_until(30);
    assert_eq!(sim.updates("n1", begin()), vec![20]);
    sim.new_leader("kube-fencer-new");
    // The new leader's timers start at its own sync (30): MarkFenced at 90, not 60.
    sim.run_until(89);
    assert!(sim.updates("n1", mark()).is_empty());
    assert_eq!(sim.status("n1"), NodeStatus::Fencing);
    sim.run_until(90);
    assert_eq!(sim.updates("n1", mark()), vec![90]);
    assert_eq!(sim.updates("n1", begin()), vec![20], "never begun twice");
    match sim.record("n1") {
        RecordState::Valid(r) => {
            assert_eq!(r.by, "kube-fencer-new");
            assert_eq!(
                r.fencing_since,
                wall0() + secs(20),
                "kept from the first leader"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_new_leader_continues_recovery_of_a_fenced_node() {
    let mut sim = cluster();
    let pod = sim.sts_pod("n1", "db/pg-0", "pg");
    sim.run_until(5);
    sim.kill("n1");
    sim.run_until(60);
    assert_eq!(sim.updates("n1", mark()), vec![60]);
    assert!(sim.deleted_pods().is_empty());
    // Leadership changes right after the mark, before any pod was deleted.
    sim.t += secs(1);
    sim.new_leader("kube-fencer-new");
    // Recovery resumes as soon as the new leader sees the Lease stale
    // (unreachable_after after its sync), not after another fence_timeout.
    sim.run_until(80);
    assert!(sim.deleted_pods().is_empty());
    sim.run_until(81);
    assert_eq!(sim.deleted_pods(), vec![(81, pod)]);
    assert_eq!(sim.updates("n1", mark()), vec![60], "not marked again");
}

#[test]
fn a_fenced_record_with_a_stale_lease_recovers_in_the_first_decision() {
    let mut f = testutil::facts("n1");
    f.record = RecordState::Valid(FenceRecord {
        phase: Phase::Fenced,
        fencing_since: wall0(),
        fenced_at: Some(wall0()),
        cordoned: true,
        tainted: true,
        by: "old".into(),
        boot_id: None,
        held_since: None,
    });
    let mut obs = Observations {
        synced: true,
        ..Default::default()
    };
    obs.nodes.insert(
        "n1".into(),
        NodeObs {
            facts: f,
            heartbeat: Some(Heartbeat::first_seen(mono(0))),
            ready_since: None,
            boot_since: None,
        },
    );
    assert_eq!(
        nodes_needing_pods(&obs, &settings()),
        vec!["n1".to_string()]
    );
    obs.pods.insert(
        "n1".into(),
        vec![PodObs {
            namespace: "db".into(),
            name: "pg-0".into(),
            uid: "u1".into(),
            resource_version: Some("1".into()),
            node: "n1".into(),
            controller: Some(OwnerRef {
                api_version: "apps/v1".into(),
                kind: "StatefulSet".into(),
                name: "pg".into(),
            }),
            claims: vec![],
        }],
    );
    let d = decide(&obs, now_at(19), &settings());
    assert!(d.actions.is_empty(), "Lease not stale yet");
    let d = decide(&obs, now_at(20), &settings());
    assert!(
        matches!(&d.actions[..], [Action::ConfirmLease { node, .. }] if node == "n1"),
        "first a consistent read of the Lease: {:?}",
        d.actions
    );
    obs.lease_confirmed.insert("n1".into(), mono(20));
    let d = decide(&obs, now_at(20), &settings());
    assert!(matches!(&d.actions[..], [Action::DeletePod { pod, .. }] if pod.uid == "u1"));
}

/// The Lease watch stalled silently (kubernetes/kubernetes#142331 is the
/// same class: acting on a stale cache): the node keeps renewing, the leader
/// sees nothing. Every irreversible step is preceded by a consistent read,
/// which shows the renewal: nothing irreversible happens.
#[test]
fn a_silently_stalled_lease_watch_never_leads_to_an_irreversible_step() {
    for fence_command in [false, true] {
        let mut s = settings();
        s.fence_command = fence_command;
        let mut sim = Sim::with(s);
        sim.nodes(&["n1", "n2", "n3", "n4", SELF_NODE]);
        let pod = sim.sts_pod("n1", "db/db-0", "db");
        sim.sync();
        sim.run_until(5);
        sim.agent.lease_events_lost.insert("n1".into());
        sim.run_until(300);
        assert!(sim.updates("n1", mark()).is_empty(), "{:?}", sim.log);
        assert!(
            !sim.log
                .iter()
                .any(|l| matches!(l.action, Action::RunFenceCommand { .. })),
            "{:?}",
            sim.log
        );
        assert!(sim.pod_exists(&pod));
        assert!(!sim.lease_reads.is_empty(), "the reads were made");
    }
}

/// The same world with a working watch: the reads confirm, and fencing
/// proceeds at the usual times.
#[test]
fn consistent_lease_reads_confirm_a_dead_node_without_delay() {
    let mut sim = Sim::new();
    sim.nodes(&["n1", "n2", "n3", "n4", SELF_NODE]);
    let pod = sim.sts_pod("n1", "db/db-0", "db");
    sim.sync();
    sim.run_until(5);
    sim.kill("n1");
    sim.run_until(100);
    assert_eq!(sim.updates("n1", mark()), vec![60]);
    assert_eq!(sim.deleted_pods(), vec![(61, pod)]);
    let reads: Vec<_> = sim.lease_reads.iter().map(|(t, _)| *t).collect();
    assert_eq!(
        reads,
        vec![60],
        "one read, before marking; still valid for the deletion at 61"
    );
}

#[test]
fn only_statefulset_pods_on_the_node_itself_are_deleted() {
    let mut sim = cluster();
    let sts = sim.pod(
        "n1",
        "db/pg-0",
        Some(("apps/v1", "StatefulSet", "pg")),
        vec![
            claim("data-pg-0", "pv-1", true),
            claim("unbound", "", false),
        ],
    );
    sim.world.pods.last_mut().unwrap().pod.claims[1].volume = None;
    let ds = sim.pod(
        "n1",
        "kube-system/proxy-x",
        Some(("apps/v1", "DaemonSet", "proxy")),
        vec![],
    );
    let rs = sim.pod(
        "n1",
        "web/web-abc",
        Some(("apps/v1", "ReplicaSet", "web-5d")),
        vec![claim("cache", "pv-2", true)],
    );
    let bare = sim.pod(
        "n1",
        "default/debug",
        None,
        vec![claim("scratch", "pv-3", true)],
    );
    let old_api = sim.pod(
        "n1",
        "db/old-0",
        Some(("apps/v1beta1", "StatefulSet", "old")),
        vec![],
    );
    let job = sim.pod(
        "n1",
        "batch/job-1",
        Some(("batch/v1", "Job", "job")),
        vec![],
    );
    // A StatefulSet pod on n2 wrongly listed under n1 by the shell.
    let elsewhere = sim.sts_pod("n2", "db/pg-1", "pg");
    sim.world.pods.last_mut().unwrap().listed_under = "n1".into();
    sim.va("va-1", "n1", "pv-1");
    sim.va("va-1-other-node", "n2", "pv-1");
    sim.va("va-2", "n1", "pv-2");
    sim.va("va-3", "n1", "pv-3");
    sim.run_until(5);
    sim.kill("n1");
    sim.run_until(200);
    let deleted: Vec<String> = sim.deleted_pods().into_iter().map(|(_, u)| u).collect();
    assert_eq!(deleted, vec![sts]);
    assert_eq!(sim.deleted_vas(), vec!["va-1".to_string()]);
    for uid in [ds, rs, bare, old_api, job, elsewhere] {
        assert!(sim.pod_exists(&uid));
    }
}

#[test]
fn rwo_flag_also_deletes_pods_with_read_write_once_claims() {
    let mut s = settings();
    s.delete_pods_with_rwo_volumes = true;
    let mut sim = Sim::with(s);
    sim.nodes(&["n1", "n2", "n3"]);
    sim.sync();
    let rs = sim.pod(
        "n1",
        "web/web-abc",
        Some(("apps/v1", "ReplicaSet", "web-5d")),
        vec![claim("cache", "pv-2", true)],
    );
    let bare = sim.pod(
        "n1",
        "default/debug",
        None,
        vec![claim("scratch", "pv-3", true)],
    );
    let rwx = sim.pod(
        "n1",
        "web/shared-abc",
        Some(("apps/v1", "ReplicaSet", "shared")),
        vec![claim("shared", "pv-4", false)],
    );
    let ds = sim.pod(
        "n1",
        "kube-system/proxy-x",
        Some(("apps/v1", "DaemonSet", "proxy")),
        vec![],
    );
    let elsewhere = sim.pod("n2", "default/other", None, vec![claim("c", "pv-5", true)]);
    sim.world.pods.last_mut().unwrap().listed_under = "n1".into();
    sim.va("va-2", "n1", "pv-2");
    sim.va("va-4", "n1", "pv-4");
    sim.va("va-5", "n2", "pv-5");
    sim.run_until(5);
    sim.kill("n1");
    sim.run_until(200);
    let mut deleted: Vec<String> = sim.deleted_pods().into_iter().map(|(_, u)| u).collect();
    deleted.sort();
    let mut want = vec![rs, bare];
    want.sort();
    assert_eq!(deleted, want);
    assert_eq!(sim.deleted_vas(), vec!["va-2".to_string()]);
    assert!(sim.pod_exists(&rwx) && sim.pod_exists(&ds) && sim.pod_exists(&elsewhere));
    let refs: Vec<Option<String>> = sim
        .log
        .iter()
        .filter_map(|l| match &l.action {
            Action::DeletePod { pod, .. } => Some(pod.statefulset.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(refs, vec![None, None]);
}

#[test]
fn foreign_taints_are_never_removed_or_reordered() {
    let foreign = |key: &str, value: Option<&str>, effect: &str| Taint {
        key: key.into(),
        value: value.map(String::from),
        effect: effect.into(),
    };
    let theirs = vec![
        foreign("z-last", Some("1"), "NoSchedule"),
        foreign("a-first", None, "PreferNoSchedule"),
        foreign("node.kubernetes.io/unreachable", None, "NoExecute"),
    ];
    let mut sim = cluster();
    sim.get_mut("n1").facts.taints = theirs.clone();
    sim.run_until(5);
    sim.kill("n1");
    sim.run_until(70);
    let mut with_ours = theirs.clone();
    with_ours.push(Taint::out_of_service());
    assert_eq!(sim.get("n1").facts.taints, with_ours);
    sim.revive("n1");
    sim.run_until(100);
    assert_eq!(sim.updates("n1", unfence()), vec![100]);
    assert_eq!(sim.get("n1").facts.taints, theirs);
}

#[test]
fn a_pre_existing_out_of_service_taint_is_left_alone() {
    let operators = Taint {
        key: OUT_OF_SERVICE_TAINT_KEY.into(),
        value: Some("manual".into()),
        effect: "NoSchedule".into(),
    };
    let mut sim = cluster();
    sim.get_mut("n1").facts.taints = vec![operators.clone()];
    sim.get_mut("n1").facts.unschedulable = true; // and cordoned by the operator
    sim.run_until(5);
    sim.kill("n1");
    sim.run_until(70);
    assert_eq!(sim.updates("n1", mark()), vec![60]);
    assert_eq!(sim.get("n1").facts.taints, vec![operators.clone()]);
    assert!(matches!(sim.record("n1"), RecordState::Valid(r) if !r.tainted && !r.cordoned));
    sim.revive("n1");
    sim.run_until(100);
    assert_eq!(sim.updates("n1", unfence()), vec![100]);
    assert_eq!(sim.get("n1").facts.taints, vec![operators]);
    assert!(
        sim.get("n1").facts.unschedulable,
        "the operator's cordon stays"
    );
}

#[test]
fn delete_pods_strategy_adds_no_taint() {
    let mut s = settings();
    s.strategy = Strategy::DeletePods;
    let mut sim = Sim::with(s);
    sim.nodes(&["n1", "n2", "n3"]);
    sim.sync();
    let pod = sim.sts_pod("n1", "db/pg-0", "pg");
    sim.run_until(5);
    sim.kill("n1");
    sim.run_until(70);
    assert!(sim.get("n1").facts.taints.is_empty());
    assert_eq!(sim.deleted_pods(), vec![(61, pod)]);
}

/// A busy scenario: used to compare a dry run with a real run.
fn busy(dry: bool) -> Sim {
    let mut sim = Sim::new();
    sim.nodes(&["n1", "n2", "n3", "n4", "n5", "n6", "n7", SELF_NODE]);
    sim.get_mut("n2").facts.taints = vec![Taint {
        key: "dedicated".into(),
        value: Some("db".into()),
        effect: "NoSchedule".into(),
    }];
    sim.get_mut("n3").facts.unschedulable = true;
    if dry {
        sim.dry_run();
    }
    sim.sync();
    for n in ["n1", "n2", "n3"] {
        sim.sts_pod(n, &format!("db/{n}-0"), "db");
        sim.pod(
            n,
            &format!("web/{n}-x"),
            Some(("apps/v1", "ReplicaSet", "web")),
            vec![],
        );
    }
    sim.pod(
        "n2",
        "db/vol-0",
        Some(("apps/v1", "StatefulSet", "vol")),
        vec![claim("data", "pv-9", true)],
    );
    sim.va("va-9", "n2", "pv-9");
    sim.run_until(5);
    sim.kill("n1");
    sim.run_until(12);
    sim.kill("n2");
    sim.run_until(50);
    sim.kill("n3");
    sim.run_until(90);
    sim.revive("n3"); // comes back while fencing
    sim.run_until(200);
    sim.revive("n1");
    sim.run_until(400);
    sim
}

#[test]
fn a_dry_run_decides_exactly_like_a_real_run_and_changes_nothing() {
    let real = busy(false);
    let dry = busy(true);
    let intents: Vec<(u64, &str, &NodeIntent)> = real
        .log
        .iter()
        .filter_map(|l| match &l.action {
            Action::UpdateNode { node, intent, .. } => {
                Some((l.at.as_secs(), node.as_str(), intent))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        intents,
        vec![
            (20, "n1", &begin()),
            (30, "n2", &begin()),
            (60, "n1", &mark()),
            (70, "n2", &mark()),
            (70, "n3", &begin()),
            (120, "n3", &unfence()),
            (230, "n1", &unfence()),
        ]
    );
    assert_eq!(real.deleted_pods().len(), 3);
    assert_eq!(dry.log, real.log);
    // The real run changed the world; the dry run did not.
    let untouched = {
        let mut s = Sim::new();
        s.nodes(&["n1", "n2", "n3", "n4", "n5", "n6", "n7", SELF_NODE]);
        s.get_mut("n2").facts.taints = dry.get("n2").facts.taints.clone();
        s.get_mut("n3").facts.unschedulable = true;
        s
    };
    for n in ["n1", "n2", "n3", "n4", "n5"] {
        let (d, u) = (&dry.get(n).facts, &untouched.get(n).facts);
        assert_eq!(
            (
                &d.resource_version,
                &d.labels,
                d.unschedulable,
                &d.taints,
                &d.record
            ),
            (
                &u.resource_version,
                &u.labels,
                u.unschedulable,
                &u.taints,
                &u.record
            ),
            "{n}"
        );
    }
    assert_eq!(dry.world.pods.len(), 7);
    assert_eq!(dry.world.vas.len(), 1);
    assert!(real.world.pods.len() < 7);
    assert!(real.world.vas.is_empty());
    assert_ne!(real.get("n2").facts, untouched.get("n2").facts);
    // The overlay is what the dry run saw instead.
    let overlay = dry.agent.dry_run.as_ref().unwrap();
    assert_eq!(overlay.deleted_attachments.len(), 1);
    assert!(overlay.nodes.contains_key("n2"));
    assert!(
        !overlay.nodes.contains_key("n1"),
        "unfenced: back to the observed facts"
    );
    assert!(!overlay.nodes.contains_key("n3"));
}

#[test]
fn next_wakeup_is_the_earliest_timer() {
    let mut sim = cluster();
    sim.run_until(3);
    // All renewed at 0: next staleness check at 20.
    assert_eq!(sim.wakeup(), Some(20.0));
    let r = decide(&Observations::default(), now_at(0), &settings()).report;
    assert_eq!(r.next_wakeup, None);
    let _ = Duration::ZERO;
}

#[test]
fn nodes_needing_pods_are_the_managed_fenced_ones() {
    let mut sim = Sim::new();
    sim.nodes(&["fenced", "fencing", "excluded-fenced", "healthy", SELF_NODE]);
    let rec = |phase| {
        RecordState::Valid(FenceRecord {
            phase,
            fencing_since: wall0(),
            fenced_at: None,
            cordoned: false,
            tainted: false,
            by: "x".into(),
            boot_id: None,
            held_since: None,
        })
    };
    sim.get_mut("fenced").facts.record = rec(Phase::Fenced);
    sim.get_mut("excluded-fenced").facts.record = rec(Phase::Fenced);
    sim.label("excluded-fenced", EXCLUDE_LABEL, "true");
    sim.get_mut(SELF_NODE).facts.record = rec(Phase::Fenced);
    sim.get_mut("fencing").facts.record = rec(Phase::Fencing);
    sim.sync();
    assert_eq!(
        nodes_needing_pods(&sim.observations(), &sim.settings),
        vec!["fenced".to_string()]
    );
}

/// The storm guard held a Fencing node (its agent may meanwhile have taken
/// the burst for a control-plane outage and not fenced itself), then
/// released when the other nodes healed. Its old record's safe time is long
/// past; without a restart it would be marked fenced within a second.
#[test]
fn a_node_held_by_the_storm_guard_restarts_its_safe_time_at_the_release() {
    let mut sim = Sim::new();
    sim.nodes(&["n1", "n2", "n3", "n4", "n5", SELF_NODE]);
    let pod = sim.sts_pod("n1", "db/db-0", "db");
    sim.sync();
    sim.run_until(5);
    sim.kill("n1");
    sim.run_until(30);
    assert_eq!(sim.updates("n1", begin()), vec![20]);
    sim.kill("n2");
    sim.kill("n3");
    sim.run_until(100);
    assert!(sim.last.as_ref().unwrap().report.storm_guard.active);
    assert!(sim.updates("n1", mark()).is_empty());
    assert_eq!(sim.updates("n1", NodeIntent::HoldFencing).len(), 1);
    assert!(matches!(sim.record("n1"), RecordState::Valid(r) if r.held_since.is_some()));

    sim.reconnect("n2");
    sim.reconnect("n3");
    sim.run_until(300);
    let released = 101;
    assert_eq!(
        sim.updates("n1", NodeIntent::RestartFencing),
        vec![released]
    );
    let RecordState::Valid(r) = sim.record("n1") else {
        panic!("n1 has a record")
    };
    assert_eq!(r.fencing_since, wall0() + secs(released));
    assert_eq!(r.held_since, None);
    // Marked fenced no earlier than the release + the agent's
    // verdict after learning of the record + watchdog + margin.
    let marked = sim.updates("n1", mark());
    assert_eq!(marked.len(), 1, "{:?}", sim.log);
    let a = testutil::advert();
    let floor = released
        + (a.api_check_timeout + a.watchdog_timeout + sim.settings.safe_time_margin).as_secs();
    assert!(marked[0] >= floor, "marked at {} < {floor}", marked[0]);
    assert!(!sim.pod_exists(&pod));
}

/// Three of six nodes powered off within 2 s, their Leases renewing at
/// different phases (observed on the real control plane): they go stale up
/// to one heartbeat interval + 2 s apart. The first must not be powered off
/// or marked fenced before the guard has counted the whole burst.
fn burst(settings: Settings) -> Sim {
    let mut sim = Sim::with(settings);
    sim.nodes(&["n1", "n2", "n3", "n4", "n5", SELF_NODE]);
    sim.get_mut("n2").next_renewal = secs(9);
    sim.get_mut("n3").next_renewal = secs(5);
    sim.sync();
    sim.run_until(30);
    sim.kill("n1"); // last renewal 30
    sim.tick();
    sim.kill("n2"); // last renewal 29
    sim.tick();
    sim.kill("n3"); // last renewal 25: stale first, at 45
    sim.run_until(200);
    sim
}

fn fence_command_settings(burst_spread: Duration, heartbeat: Duration) -> Settings {
    let mut s = settings();
    s.max_unhealthy = MaxUnhealthy::Percent(40); // 2 of 6
    s.fence_command = true;
    s.burst_spread = burst_spread;
    s.node_heartbeat_interval = heartbeat;
    s
}

fn irreversible(sim: &Sim) -> Vec<(u64, String)> {
    sim.log
        .iter()
        .filter_map(|l| match &l.action {
            Action::RunFenceCommand { node, .. }
            | Action::UpdateNode {
                node,
                intent: NodeIntent::MarkFenced,
                ..
            } => Some((l.at.as_secs(), node.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_burst_of_failures_with_staggered_lease_phases_is_counted_whole_before_anything_irreversible() {
    let sim = burst(fence_command_settings(secs(2), secs(10)));
    assert_eq!(irreversible(&sim), vec![], "{:?}", sim.log);
    let r = &sim.last.as_ref().unwrap().report;
    assert!(r.storm_guard.active);
    assert_eq!(r.storm_guard.unhealthy, 3);
    // Without a settle window (as before) the first one was powered off and
    // marked fenced before the guard engaged.
    let sim = burst(fence_command_settings(Duration::ZERO, Duration::ZERO));
    assert!(!irreversible(&sim).is_empty());
}

/// Time to recovery of one powered-off node (its StatefulSet pod deleted)
/// after its kubelet's last renewal, with the settle window or without.
fn single_failure_ttr(s: Settings, renewed_at: u64) -> u64 {
    let mut sim = Sim::with(s);
    sim.nodes(&["n1", "n2", "n3", "n4", "n5", SELF_NODE]);
    let pod = sim.sts_pod("n1", "db/db-0", "db");
    sim.sync();
    sim.run_until(renewed_at);
    sim.kill("n1");
    sim.run_until(renewed_at + 300);
    assert!(!sim.pod_exists(&pod));
    sim.deleted_pods()[0].0 - renewed_at
}

/// The trade-off of the settle window, measured: what it costs in time to
/// recovery, and which bursts it catches.
#[test]
fn settle_window_trade_off() {
    let hb = secs(10);
    let mut rows = Vec::new();
    for spread in [0u64, 2, 5] {
        let with_cmd = single_failure_ttr(fence_command_settings(secs(spread), hb), 30);
        let mut s = fence_command_settings(secs(spread), hb);
        s.fence_command = false;
        let self_fence = single_failure_ttr(s, 30);
        let caught = irreversible(&burst(fence_command_settings(secs(spread), hb))).is_empty();
        rows.push((spread, with_cmd, self_fence, caught));
    }
    let none = single_failure_ttr(fence_command_settings(Duration::ZERO, Duration::ZERO), 30);
    let mut s = fence_command_settings(Duration::ZERO, Duration::ZERO);
    s.fence_command = false;
    let none_self = single_failure_ttr(s, 30);
    eprintln!("settle window: none -> TTR fence-command {none}s, self-fence {none_self}s");
    for (spread, cmd, selff, caught) in &rows {
        eprintln!(
            "settle window {}s (heartbeat 10s + spread {spread}s) -> TTR fence-command {cmd}s, self-fence {selff}s, 2s burst caught: {caught}",
            10 + spread
        );
    }
    // Fence command: the window adds itself to the recovery; self-fencing:
    // the safe time already exceeds it, nothing changes.
    for (spread, cmd, selff, caught) in &rows {
        // (one tick less: the fence command no longer waits for the tick
        // after BeginFencing, it runs when the window closes)
        assert_eq!(*cmd, none + 10 + spread - 1);
        assert_eq!(*selff, none_self);
        assert!(*caught, "spread {spread}");
    }
}

/// The same trade-off on the benchmark's tight timings (`bench/bench.py`
/// TIGHT_ARGS + SF_TIGHT: Leases renewed every 3 s, --unreachable-after 6s,
/// --fence-timeout 10s, watchdog 5s, margin 3s): the default settle window
/// (3 s + 2 s) ends 11 s after the last heartbeat, before the self-fence
/// safe time, so self-fencing recovers exactly as fast; only the
/// fence-command path pays the window.
#[test]
fn settle_window_trade_off_on_the_benchmarks_tight_timings() {
    let tight = |spread: Duration, heartbeat: Duration, fence_command: bool| {
        let mut s = settings();
        s.unreachable_after = secs(6);
        s.fence_timeout = secs(10);
        s.safe_time_margin = secs(3);
        s.node_heartbeat_interval = heartbeat;
        s.burst_spread = spread;
        s.fence_command = fence_command;
        s.max_unhealthy = MaxUnhealthy::Percent(40);
        let mut sim = Sim::with(s);
        sim.nodes(&["n1", "n2", "n3", "n4", "n5", SELF_NODE]);
        for n in sim.world.nodes.values_mut() {
            n.renew_every = secs(3);
            n.facts.agent = AdvertState::Valid(AgentAdvert {
                api_check_interval: Duration::from_secs(1),
                api_check_timeout: Duration::from_millis(500),
                api_failure_threshold: 3,
                peer_silence_timeout: secs(3),
                watchdog_timeout: secs(5),
                ..testutil::advert()
            });
        }
        let pod = sim.sts_pod("n1", "db/db-0", "db");
        sim.sync();
        sim.run_until(30);
        sim.kill("n1"); // last renewal at 30
        sim.run_until(200);
        assert!(!sim.pod_exists(&pod));
        sim.deleted_pods()[0].0 - 30
    };
    let (zero, hb) = (Duration::ZERO, secs(3));
    let self_none = tight(zero, zero, false);
    let self_default = tight(secs(2), hb, false);
    let cmd_none = tight(zero, zero, true);
    let cmd_default = tight(secs(2), hb, true);
    eprintln!(
        "tight timings: self-fence TTR {self_none}s without a settle window, {self_default}s with 3s+2s; fence command {cmd_none}s vs {cmd_default}s"
    );
    assert_eq!(self_default, self_none);
    assert!(cmd_default > cmd_none && cmd_default <= cmd_none + 5);
}

/// A record Fenced in boot `boot-0`, with our cordon and taint.
fn fenced_in_boot_0(facts: &mut NodeFacts) {
    facts.record = RecordState::Valid(FenceRecord {
        phase: Phase::Fenced,
        fencing_since: wall0(),
        fenced_at: Some(wall0()),
        cordoned: true,
        tainted: true,
        by: "x".into(),
        boot_id: Some("boot-0".into()),
        held_since: None,
    });
    facts.unschedulable = true;
    facts.taints.push(Taint::out_of_service());
}

/// Marked fenced in boot `boot-0`, the node booted again (`boot-1`) before
/// its pods were deleted, its kubelet renewed its Lease and started them
/// again, and then it was cut off. The record of the earlier boot says
/// nothing about this one (its agent ignores it): deleting the pod on it
/// would delete a pod that may be running.
#[test]
fn a_node_fenced_in_an_earlier_boot_is_fenced_again_before_its_pods_are_deleted() {
    let mut sim = Sim::new();
    sim.nodes(&["n1", "n2", "n3", SELF_NODE]);
    let pod = sim.sts_pod("n1", "db/db-0", "db");
    let n1 = sim.get_mut("n1");
    fenced_in_boot_0(&mut n1.facts);
    sim.sync();
    sim.run_until(5);
    sim.kill("n1");
    sim.run_until(300);
    let restarted = 20;
    assert_eq!(
        sim.updates("n1", NodeIntent::RestartFencing),
        vec![restarted],
        "{:?}",
        sim.log
    );
    let marked = sim.updates("n1", mark());
    assert_eq!(marked.len(), 1, "{:?}", sim.log);
    let a = testutil::advert();
    let floor = restarted
        + (a.api_check_timeout + a.watchdog_timeout + sim.settings.safe_time_margin).as_secs();
    assert!(marked[0] >= floor, "marked at {} < {floor}", marked[0]);
    let deleted = sim.deleted_pods();
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert!(deleted[0].0 >= marked[0], "{deleted:?} before {marked:?}");
    assert!(!sim.pod_exists(&pod));
    let RecordState::Valid(r) = sim.record("n1") else {
        panic!("n1 has a record")
    };
    assert_eq!(r.boot_id.as_deref(), Some("boot-1"));
}

/// A node that rebooted reports its new boot ID a moment before its first
/// Lease renewal: its fencing is not restarted then (its agent of the new
/// boot would take the record for its own and fence a healthy node); it is
/// unfenced once healthy.
#[test]
fn a_node_fenced_in_an_earlier_boot_that_is_coming_back_is_not_fenced_again() {
    let mut sim = Sim::new();
    sim.nodes(&["n1", "n2", "n3", SELF_NODE]);
    let n1 = sim.get_mut("n1");
    fenced_in_boot_0(&mut n1.facts);
    n1.facts.kubelet_boot_id = Some("boot-0".into());
    sim.sync();
    sim.kill("n1");
    sim.run_until(100);
    // The reboot: the kubelet's status names the new boot, its first Lease
    // renewal follows a few seconds later.
    sim.get_mut("n1").facts.kubelet_boot_id = Some("boot-1".into());
    sim.run_until(104);
    sim.reconnect("n1");
    sim.run_until(200);
    assert!(
        sim.updates("n1", NodeIntent::RestartFencing).is_empty(),
        "{:?}",
        sim.log
    );
    assert_eq!(
        sim.updates("n1", NodeIntent::Unfence).len(),
        1,
        "{:?}",
        sim.log
    );
}
