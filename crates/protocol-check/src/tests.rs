//! The simulator's own behaviour, and the scenarios it found (each named
//! after its seed or path; each failed on the code before its fix).

use std::time::Duration;

use super::world::{Fault, Link, Sim, SimConfig};
use super::{FaultSet, run_seed};
use kube_fencer_decide::RecordState;

const S: fn(u64) -> Duration = Duration::from_secs;

fn sim(nodes: usize) -> Sim {
    let cfg = SimConfig {
        nodes,
        horizon: S(300),
        ..SimConfig::default()
    };
    Sim::new(cfg, 42, true)
}

/// Run the cluster for 50 s and name a node that is not the leader's.
fn follower(s: &mut Sim) -> usize {
    s.run_until(50_000_000_000);
    let leader = s.leader.as_ref().expect("a leader by now").node;
    (leader + 1) % s.nodes.len()
}

fn assert_clean(sim: &Sim) {
    assert!(
        sim.violations.is_empty(),
        "{:?}\n{}",
        sim.violations,
        sim.trace_text()
    );
}

#[test]
fn without_faults_nothing_is_fenced() {
    let mut s = sim(4);
    s.run();
    assert_clean(&s);
    assert!(
        s.nodes
            .iter()
            .all(|n| n.facts.record == RecordState::Absent && n.on && n.boot == 1)
    );
    assert!(s.leader.is_some());
}

#[test]
fn a_powered_off_node_is_recovered_within_its_bound() {
    let mut s = sim(4);
    s.schedule_fault(S(60), Fault::PowerOff(1));
    s.run();
    assert_clean(&s);
    assert_eq!(s.recoveries.len(), 1, "{}", s.trace_text());
    // Safe time 48 s after the last heartbeat, which is at most 10 s before the power-off.
    assert!(
        s.recoveries[0] >= S(38) && s.recoveries[0] <= S(49),
        "{:?}",
        s.recoveries
    );
    // The pod runs again elsewhere.
    let pod = s.pods.iter().find(|p| p.sts == "sts1").expect("recreated");
    assert!(pod.running.is_some_and(|(n, _)| n != 1));
}

#[test]
fn a_control_plane_outage_alone_fences_nothing() {
    for link in [Link::Fast, Link::Blackhole] {
        let mut s = sim(4);
        s.schedule_fault(S(60), Fault::ApiOutage(link));
        s.schedule_fault(S(200), Fault::ApiRestored);
        s.run();
        assert_clean(&s);
        assert!(
            s.nodes.iter().all(|n| n.on && n.boot == 1),
            "{}",
            s.trace_text()
        );
    }
}

#[test]
fn a_seed_replays_exactly() {
    let cfg = SimConfig::default();
    let a = run_seed(7, &cfg, FaultSet::default(), true);
    let b = run_seed(7, &cfg, FaultSet::default(), true);
    assert!(!a.trace_text().is_empty());
    assert_eq!(a.trace_text(), b.trace_text());
}

fn assert_seed_clean(seed: u64) {
    let sim = run_seed(seed, &SimConfig::default(), FaultSet::default(), true);
    assert_clean(&sim);
}

/// A node cut off by a fast-failing network (link down, TCP reset): its
/// watches restart every second and their Init items passed for contact,
/// so the agent never probed and the leader deleted its pod (S1).
#[test]
fn seed_5_fast_failing_cut_off_node_fences_itself() {
    assert_seed_clean(5);
}

/// A cut-off agent restarted mid-partition (a crash, an OOM kill or a
/// liveness restart, which the kubelet performs while partitioned) fed
/// the watchdog at once and started its timers from scratch: it fenced
/// itself too late, after the leader had deleted its pod (S1).
#[test]
fn seed_195_agent_restarted_mid_partition() {
    assert_seed_clean(195);
}

#[test]
fn seed_142_agent_restarted_while_cut_off() {
    assert_seed_clean(142);
}

/// The same, written out: cut off from everything, restarted 2 s later,
/// or just before it would have fenced itself.
#[test]
fn restart_after_the_cut() {
    for (link, after) in [
        (Link::Fast, 2),
        (Link::Blackhole, 2),
        (Link::Fast, 17),
        (Link::Blackhole, 17),
    ] {
        let mut s = sim(4);
        let n = follower(&mut s);
        s.schedule_fault(S(60), Fault::CutAll(n, link));
        s.schedule_fault(S(60 + after), Fault::AgentCrash(n));
        s.run();
        assert_clean(&s);
        assert!(
            !s.nodes[n].on,
            "n{n} must have been reset:\n{}",
            s.trace_text()
        );
    }
}

/// An agent whose check loop hangs (process alive) kept the watchdog fed
/// from its own thread; cut off afterwards, the node ran on for ever
/// while the leader deleted its pod (S1). A dead man's switch lets the
/// permit lapse and the watchdog reset the node in time.
#[test]
fn hung_agent_then_cut_off_is_reset_in_time() {
    for cut_after in [1, 15] {
        let mut s = sim(4);
        let n = follower(&mut s);
        s.schedule_fault(S(60), Fault::AgentHang(n, S(300)));
        s.schedule_fault(S(60 + cut_after), Fault::CutAll(n, Link::Blackhole));
        s.run();
        assert_clean(&s);
        assert!(
            !s.nodes[n].on,
            "n{n} must have been reset:\n{}",
            s.trace_text()
        );
    }
}

/// The kubelet dies first and the agent, still in contact, is cut off
/// later, just before the Fencing record reaches it: its isolation
/// schedule starts from that late contact, after the safe time assumed
/// (last heartbeat + one heartbeat interval) (S1).
#[test]
fn seed_91_kubelet_dies_then_cut_off() {
    assert_seed_clean(91);
}

#[test]
fn seed_666_kubelet_dies_then_blackholed() {
    assert_seed_clean(666);
}

#[test]
fn kubelet_dies_then_cut_off_just_before_the_record() {
    for (link, before) in [
        (Link::Blackhole, 1),
        (Link::Fast, 1),
        (Link::Blackhole, 5),
        (Link::Fast, 9),
    ] {
        let mut s = sim(4);
        let n = follower(&mut s);
        s.schedule_fault(S(60), Fault::KubeletDies(n));
        s.run_until(60_000_000_000);
        // The leader records Fencing 20 s after the last renewal.
        let lr = s.nodes[n].last_renewal.expect("renewed");
        s.schedule_fault(
            Duration::from_nanos(lr + 20_000_000_000 - before * 1_000_000_000),
            Fault::CutAll(n, link),
        );
        s.run();
        assert_clean(&s);
    }
}

/// The model checker's counterexample on the faithful port: a follower
/// cut off from the API by a fast-failing network.
/// The kernel pings a running watchdog on every process exit and on
/// `WDIOC_SETTIMEOUT`. A cut-off agent decided to fence its node, then
/// crashed, was restarted (programming the timeout again), stopped by
/// SIGTERM without withdrawing and restarted again: each ping gave the
/// node another full timeout, and the leader deleted its pod while it still
/// ran (S1). Fixed by not reprogramming a device that has the timeout and
/// by expediting the reset once the node must fence itself.
#[test]
fn seed_9552_exit_and_programming_pings_after_the_decision() {
    let set = FaultSet {
        leader_side: true,
        ..FaultSet::default()
    };
    let legacy = SimConfig {
        legacy_watchdog: true,
        ..SimConfig::default()
    };
    let before = run_seed(9552, &legacy, set, true);
    assert!(
        before.violations.iter().any(|v| v.invariant == "S1"),
        "the adversary no longer sees the defect: {:?}",
        before.violations
    );
    assert_clean(&run_seed(9552, &SimConfig::default(), set, true));
}

#[test]
fn model_check_path_wait_then_cut_api_fast() {
    use super::checker::{Action, Bounds, replay};
    let path = [Action::Wait, Action::Fault(Fault::CutApi(1, Link::Fast))];
    let sim = replay(&Bounds::default(), &SimConfig::default(), &path);
    assert_clean(&sim);
    assert!(sim.recoveries.is_empty() || !sim.nodes[1].on);
}

#[test]
fn a_bounded_model_check_finds_nothing() {
    use super::checker::{Bounds, search};
    let bounds = Bounds {
        depth: 2,
        ..Bounds::default()
    };
    let out = search(&bounds, &SimConfig::default());
    assert!(out.violation.is_none(), "{:?}", out.violation);
    assert!(out.states > 100, "{}", out.states);
}

#[test]
fn a_sweep_seed_replays_with_its_configuration() {
    use super::sweep::{Ranges, run_sweep_seed};
    let r = Ranges::default();
    let (pa, a) = run_sweep_seed(3, &SimConfig::default(), FaultSet::default(), &r, true);
    let (pb, b) = run_sweep_seed(3, &SimConfig::default(), FaultSet::default(), &r, true);
    assert_eq!(pa, pb);
    assert_eq!(a.trace_text(), b.trace_text());
    // The printed configuration sets the same parameters again.
    let mut p = super::sweep::Params::default();
    for kv in pa.to_string().split_whitespace() {
        let (k, v) = kv.trim_start_matches("--").split_once('=').expect("k=v");
        assert!(super::sweep::set_flag(&mut p, k, v).expect("parses"));
    }
    assert_eq!(p, pa);
}

/// The defaults with `--peer-silence-timeout 30s` (the flags and the chart
/// accept it).
fn silence_30s() -> SimConfig {
    let mut cfg = SimConfig::default();
    cfg.check.peer_silence_timeout = S(30);
    cfg
}

/// A node cut from the API server while its peers still answer (they
/// reach the API and see no record yet), then cut from everything 10–35 s
/// later: rule 5b counted the peers' answers kept for the whole
/// `--peer-silence-timeout`, so with 30 s the agent waited for them to
/// expire, long after the one check the safe time allows it, and the
/// leader deleted the pod while the node still ran it (S1; a quarter of
/// such schedules with the sweep's staged cuts, e.g. seed 62 of
/// `--staged-cuts --peer-silence-timeout 30s`).
#[test]
fn cut_from_the_api_then_from_the_peers_with_a_long_silence_timeout() {
    for link in [Link::Blackhole, Link::Fast] {
        for later in [10, 15, 20, 25, 30, 35] {
            let cfg = SimConfig {
                nodes: 4,
                horizon: S(300),
                ..silence_30s()
            };
            let mut s = Sim::new(cfg, 42, true);
            let n = follower(&mut s);
            s.schedule_fault(S(60), Fault::CutApi(n, link));
            s.schedule_fault(S(60 + later), Fault::CutAll(n, link));
            s.run();
            assert!(
                s.violations.is_empty(),
                "{link:?}, cut from the peers {later}s later: {:?}\n{}",
                s.violations,
                s.trace_text()
            );
        }
    }
}

#[test]
fn staged_cuts_seed_62_with_a_30s_silence_timeout() {
    let set = FaultSet {
        staged_cuts: true,
        ..FaultSet::default()
    };
    assert_clean(&run_seed(62, &silence_30s(), set, true));
}

/// Sweep seed 19923: a group of two nodes cut off together, with
/// `--peer-silence-timeout` 38 ms (shorter than one round of asking). The
/// "asked" marks were stamped with the start of the round and expired
/// before its verdict, the answers (stamped at its end) did not: the one
/// answer of the other member made a majority of a denominator of one,
/// rule 4 took the cut for a control-plane outage, and the leader deleted
/// both pods while the nodes still ran them (S1).
#[test]
fn sweep_seed_19923_a_silence_shorter_than_a_round_of_asking() {
    use super::sweep::{Ranges, run_sweep_seed};
    let set = FaultSet {
        leader_side: true,
        staged_cuts: true,
        ..FaultSet::default()
    };
    let (p, sim) = run_sweep_seed(19923, &SimConfig::default(), set, &Ranges::default(), true);
    assert!(p.peer_silence_timeout < Duration::from_millis(50), "{p}");
    assert_clean(&sim);
}

/// Sweep seed 10112: `--api-check-interval` 500 ms, shorter than the
/// leader Lease's renewals, so a connected agent's contact comes from its
/// own probes, one every interval, each taking a moment. A peer answered
/// "I cannot reach the API" whenever its last contact was older than its
/// check interval — while its next probe was in flight. A node cut from
/// the API heard that from both its peers, took it for a control-plane
/// outage (rule 4), was then cut from everything, kept those answers for
/// its 2 min silence timeout, and the leader deleted its pod (S1).
#[test]
fn sweep_seed_10112_a_connected_peer_between_two_probes() {
    use super::sweep::{Ranges, run_sweep_seed};
    let set = FaultSet {
        leader_side: true,
        staged_cuts: true,
        ..FaultSet::default()
    };
    let (p, sim) = run_sweep_seed(10112, &SimConfig::default(), set, &Ranges::default(), true);
    assert_eq!(p.api_check_interval, Duration::from_millis(500), "{p}");
    assert_clean(&sim);
}
