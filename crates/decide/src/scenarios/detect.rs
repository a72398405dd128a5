//! Detection: when a heartbeat gap makes a node suspect, and what must hold before anything irreversible.

use super::*;

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
        sim.memory.lease_events_lost.insert("n1".into());
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
