//! Scope and the storm guard: which nodes may be fenced, and how many at once.

use super::*;

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

pub(super) fn excluded_reason(sim: &Sim, node: &str) -> String {
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
    // Fenced during an earlier boot: the node has rebooted since.
    fenced_in(&mut sim.get_mut(SELF_NODE).facts, Some("boot-0"));
    sim.sts_pod(SELF_NODE, "db/pg-0", "pg");
    sim.sync();
    sim.run_until(30);
    assert_eq!(sim.updates(SELF_NODE, unfence()), vec![30]);
    assert_eq!(sim.log.len(), 1);
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
