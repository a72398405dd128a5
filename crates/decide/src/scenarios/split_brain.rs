//! Scenario tests of split-brain safety: a node is marked fenced only when
//! it is *known* fenced (self-fence capable agent past its safe time, or a
//! successful external fence command), and a Fenced node is unfenced only
//! after a reboot (new boot ID) or an operator's override.

use std::time::Duration;

use crate::leader::fence::fence_command_backoff;
use crate::sim::{Sim, secs};
use crate::testutil::{SELF_NODE, settings};
use crate::*;

fn mark() -> NodeIntent {
    NodeIntent::MarkFenced
}
fn unfence() -> NodeIntent {
    NodeIntent::Unfence
}

fn cluster_with(s: Settings) -> Sim {
    let mut sim = Sim::with(s);
    sim.nodes(&["n1", "n2", "n3", "n4", SELF_NODE]);
    sim.sync();
    sim.decide_now();
    sim
}

fn cluster() -> Sim {
    cluster_with(settings())
}

fn runs(sim: &Sim, node: &str) -> Vec<(u64, u32)> {
    sim.log
        .iter()
        .filter_map(|l| match &l.action {
            Action::RunFenceCommand {
                node: n, attempt, ..
            } if n == node => Some((l.at.as_secs(), *attempt)),
            _ => None,
        })
        .collect()
}

fn warned(sim: &Sim, needle: &str) -> bool {
    sim.warnings().iter().any(|w| w.message.contains(needle))
}

fn not_capable_is_never_fenced(agent: AdvertState, because: &str) {
    let mut sim = cluster();
    sim.get_mut("n1").facts.agent = agent;
    let pod = sim.sts_pod("n1", "db/pg-0", "pg");
    sim.run_until(5);
    sim.kill("n1");
    sim.run_until(1000);
    assert_eq!(
        sim.updates("n1", NodeIntent::BeginFencing),
        vec![20],
        "recorded and cordoned as usual"
    );
    assert!(sim.updates("n1", mark()).is_empty(), "never marked fenced");
    assert!(sim.deleted_pods().is_empty());
    assert!(sim.pod_exists(&pod));
    assert_eq!(sim.status("n1"), NodeStatus::Fencing);
    let report = &sim.last.as_ref().unwrap().report;
    assert_eq!(report.external_fencing_required, vec!["n1".to_string()]);
    assert!(!report.safe_times.contains_key("n1"));
    assert!(
        warned(&sim, "will NOT be marked fenced"),
        "{:?}",
        sim.warnings()
    );
    assert!(warned(&sim, because), "{:?}", sim.warnings());
    assert!(warned(&sim, "no --fence-command is configured"));
}

#[test]
fn a_node_without_an_agent_advertisement_is_never_marked_fenced() {
    not_capable_is_never_fenced(AdvertState::Absent, "no kube-fencer agent advertised");
}

#[test]
fn a_node_whose_agent_cannot_self_fence_is_never_marked_fenced() {
    let mut a = testutil::advert();
    a.self_fence = SelfFenceAction::None;
    not_capable_is_never_fenced(AdvertState::Valid(a), "--self-fence=none");
}

#[test]
fn a_malformed_advertisement_is_not_capable() {
    not_capable_is_never_fenced(AdvertState::Malformed("bad".into()), "unreadable");
}

#[test]
fn mark_fenced_waits_for_the_safe_time_when_it_is_later() {
    let mut sim = cluster();
    let mut a = testutil::advert();
    a.watchdog_timeout = secs(100);
    sim.get_mut("n1").facts.agent = AdvertState::Valid(a);
    sim.run_until(5);
    sim.kill("n1"); // last renewal observed at 0
    sim.run_until(30);
    let st = sim.last.as_ref().unwrap().report.safe_times["n1"];
    // i 2, k 3, t 1: a = 2, p = max(2, 1+2) = 3; detect 2 + 2×3 + 1 = 9;
    // Fencing recorded at 20: the agent may have had contact until 21
    // (its kubelet dead first), isolated 21 + 9 + 2 = 32 (reported
    // 20 + 3 + 1 + 2 = 26) → consult 32 - 10 - 9 = 13; + watchdog 100 + margin 5
    assert_eq!(
        (st.heartbeat, st.detect, st.consult, st.total()),
        (secs(10), secs(9), secs(13), secs(137))
    );
    sim.run_until(136);
    assert!(
        sim.updates("n1", mark()).is_empty(),
        "fence timeout (60) passed, safe time (137) not"
    );
    sim.run_until(137);
    assert_eq!(sim.updates("n1", mark()), vec![137]);
    let Action::UpdateNode { why, .. } = sim.actions_at(137)[0] else {
        panic!()
    };
    assert!(
        why.contains("safe time 2m 17s") && why.contains("exec"),
        "{why}"
    );
}

#[test]
fn mark_fenced_waits_for_the_fence_timeout_when_it_is_later() {
    let mut sim = cluster();
    sim.run_until(5);
    sim.kill("n1");
    sim.run_until(59);
    assert_eq!(
        sim.last.as_ref().unwrap().report.safe_times["n1"].total(),
        secs(47)
    );
    assert!(sim.updates("n1", mark()).is_empty());
    sim.run_until(60);
    assert_eq!(sim.updates("n1", mark()), vec![60]);
}

#[test]
fn a_successful_fence_command_marks_fenced_at_once() {
    let mut s = settings();
    s.fence_command = true;
    let mut sim = cluster_with(s);
    // Not capable, and a long safe time would not matter either.
    sim.get_mut("n1").facts.agent = AdvertState::Absent;
    let pod = sim.sts_pod("n1", "db/pg-0", "pg");
    sim.run_until(5);
    sim.kill("n1");
    sim.run_until(21);
    assert!(
        !warned(&sim, "will NOT be marked fenced"),
        "no alarm while the fence command runs"
    );
    sim.run_until(30);
    assert!(runs(&sim, "n1").is_empty(), "not within the settle window");
    sim.run_until(40);
    assert_eq!(
        runs(&sim, "n1"),
        vec![(32, 1)],
        "once the record says Fencing and the node has been suspect for the settle window (stale at 20 + 10 + 2)"
    );
    let Action::RunFenceCommand { addresses, .. } = sim.actions_at(32)[0] else {
        panic!()
    };
    assert_eq!(addresses, &vec!["10.0.0.1".to_string()]);
    assert_eq!(sim.updates("n1", mark()), vec![33], "without waiting");
    let Action::UpdateNode { why, .. } = sim.actions_at(33)[0] else {
        panic!()
    };
    assert!(why.contains("powered off"), "{why}");
    assert_eq!(sim.deleted_pods(), vec![(34, pod)]);
}

#[test]
fn a_failing_fence_command_is_retried_with_backoff_and_nothing_is_deleted() {
    let mut s = settings();
    s.fence_command = true;
    let mut sim = cluster_with(s);
    sim.get_mut("n1").facts.agent = AdvertState::Absent;
    sim.fence_command_ok = false;
    let pod = sim.sts_pod("n1", "db/pg-0", "pg");
    sim.run_until(5);
    sim.kill("n1");
    sim.run_until(100);
    // 32 (settle window), +5, +10, +20
    assert_eq!(runs(&sim, "n1"), vec![(32, 1), (37, 2), (47, 3), (67, 4)]);
    assert!(sim.updates("n1", mark()).is_empty());
    assert!(sim.pod_exists(&pod));
    assert!(warned(&sim, "--fence-command failed"));
    assert!(warned(&sim, "until --fence-command succeeds"));
    // It starts working: marked fenced right after the next attempt.
    sim.fence_command_ok = true;
    sim.run_until(200);
    assert_eq!(runs(&sim, "n1").last(), Some(&(107, 5)));
    assert_eq!(sim.updates("n1", mark()), vec![108]);
}

#[test]
fn a_failing_fence_command_does_not_hold_back_a_capable_agent() {
    let mut s = settings();
    s.fence_command = true;
    let mut sim = cluster_with(s);
    sim.fence_command_ok = false;
    sim.run_until(5);
    sim.kill("n1");
    sim.run_until(70);
    assert_eq!(sim.updates("n1", mark()), vec![60]);
}

#[test]
fn no_fence_command_while_the_storm_guard_holds() {
    let mut s = settings();
    s.fence_command = true;
    s.max_unhealthy = MaxUnhealthy::Count(1);
    let mut sim = cluster_with(s);
    sim.run_until(5);
    sim.kill("n1");
    sim.run_until(21);
    sim.kill("n2");
    sim.run_until(200);
    assert!(runs(&sim, "n2").is_empty());
    assert!(sim.updates("n2", mark()).is_empty());
}

#[test]
fn backoff_doubles_and_is_capped() {
    let b = secs(5);
    assert_eq!(fence_command_backoff(b, 1), secs(5));
    assert_eq!(fence_command_backoff(b, 2), secs(10));
    assert_eq!(fence_command_backoff(b, 4), secs(40));
    assert_eq!(fence_command_backoff(b, 30), FENCE_COMMAND_MAX_BACKOFF);
    assert_eq!(
        fence_command_backoff(b, u32::MAX),
        FENCE_COMMAND_MAX_BACKOFF
    );
    assert_eq!(fence_command_backoff(b, 0), secs(5));
}

/// Fence n1 (power loss), recover its pod; returns the sim at t=70.
fn fenced_n1() -> Sim {
    let mut sim = cluster();
    sim.sts_pod("n1", "db/pg-0", "pg");
    sim.run_until(5);
    sim.kill("n1");
    sim.run_until(70);
    assert_eq!(sim.status("n1"), NodeStatus::Fenced);
    assert_eq!(
        sim.record("n1").valid().unwrap().boot_id.as_deref(),
        Some("boot-1"),
        "the boot ID at fencing time is recorded"
    );
    sim
}

#[test]
fn a_fenced_node_that_reconnects_without_rebooting_stays_fenced() {
    let mut sim = fenced_n1();
    sim.reconnect("n1");
    sim.run_until(1000);
    assert!(sim.updates("n1", unfence()).is_empty());
    assert_eq!(sim.status("n1"), NodeStatus::Fenced);
    assert!(warned(&sim, "same boot ID boot-1"), "{:?}", sim.warnings());
    // Then it reboots: unfenced healthy_after later.
    sim.kill("n1");
    sim.run_until(1010);
    sim.revive("n1");
    sim.run_until(1039);
    assert!(sim.updates("n1", unfence()).is_empty());
    sim.run_until(1040);
    assert_eq!(sim.updates("n1", unfence()), vec![1040]);
    assert_eq!(sim.get("n1").facts.record, RecordState::Absent);
}

#[test]
fn a_fenced_node_that_rebooted_is_unfenced() {
    let mut sim = fenced_n1();
    sim.revive("n1"); // at 70, new boot ID
    sim.run_until(100);
    assert_eq!(sim.updates("n1", unfence()), vec![100]);
}

#[test]
fn the_operator_override_unfences_without_a_reboot_and_is_removed() {
    let mut sim = fenced_n1();
    sim.reconnect("n1");
    sim.run_until(200);
    assert!(sim.updates("n1", unfence()).is_empty());
    sim.get_mut("n1").facts.unfence_requested = true;
    sim.run_until(201);
    assert_eq!(sim.updates("n1", unfence()), vec![201]);
    assert!(!sim.get("n1").facts.unfence_requested, "annotation removed");
}

/// A record the agent takes for its own makes it fence itself on every
/// boot: the node is never healthy for --healthy-after. The operator's
/// override must still reach it: the record goes as soon as the Lease is
/// fresh, which stops the agent's rule 1.
#[test]
fn the_operator_override_breaks_a_reboot_loop() {
    let mut sim = fenced_n1();
    if let RecordState::Valid(r) = &mut sim.get_mut("n1").facts.record {
        r.boot_id = None;
    }
    sim.get_mut("n1").facts.unfence_requested = true;
    let mut t = 70;
    for _ in 0..5 {
        // Boots, its kubelet renews for 8 s, then its agent fences it again.
        sim.revive("n1");
        t += 8;
        sim.run_until(t);
        if sim.record("n1").valid().is_none() {
            break;
        }
        sim.kill("n1");
        t += 30;
        sim.run_until(t);
    }
    assert_eq!(sim.updates("n1", unfence()), vec![71]);
    assert_eq!(sim.record("n1"), &RecordState::Absent);
    assert!(!sim.get("n1").facts.unfence_requested, "annotation removed");
}

#[test]
fn a_fenced_record_without_a_boot_id_needs_the_override() {
    let mut sim = fenced_n1();
    if let RecordState::Valid(r) = &mut sim.get_mut("n1").facts.record {
        r.boot_id = None;
    }
    sim.revive("n1");
    sim.run_until(500);
    assert!(sim.updates("n1", unfence()).is_empty());
    assert!(warned(&sim, "no boot ID was recorded"));
    sim.get_mut("n1").facts.unfence_requested = true;
    sim.run_until(501);
    assert_eq!(sim.updates("n1", unfence()), vec![501]);
}

#[test]
fn without_any_boot_id_a_reboot_cannot_be_proven() {
    let mut sim = fenced_n1();
    sim.revive("n1");
    let n = sim.get_mut("n1");
    if let AdvertState::Valid(a) = &mut n.facts.agent {
        a.boot_id = String::new();
    }
    n.facts.kubelet_boot_id = None;
    sim.run_until(500);
    assert!(sim.updates("n1", unfence()).is_empty());
    assert!(warned(&sim, "neither the kubelet"), "{:?}", sim.warnings());
}

/// Issue: the demo's victim died before its agent ever advertised; its
/// record carried no boot ID and it stayed fenced for ever after its reboot.
/// The kubelet's `nodeInfo.bootID` is recorded and proves the reboot.
#[test]
fn a_node_whose_agent_never_advertised_is_unfenced_after_its_kubelet_reports_a_new_boot() {
    let mut s = settings();
    s.fence_command = true;
    let mut sim = cluster_with(s);
    sim.get_mut("n1").facts.agent = AdvertState::Absent;
    sim.run_until(5);
    sim.kill("n1");
    sim.run_until(70);
    assert_eq!(sim.status("n1"), NodeStatus::Fenced);
    assert_eq!(
        sim.record("n1").valid().unwrap().boot_id.as_deref(),
        Some("boot-1"),
        "the kubelet's boot ID is recorded"
    );
    sim.revive("n1"); // at 70: the kubelet reports boot-1+, still no agent
    sim.run_until(100);
    assert_eq!(sim.updates("n1", unfence()), vec![100]);
}

/// After a reboot where the agent never came up, its old "capable"
/// advertisement promises nothing: the node is not marked fenced on time.
#[test]
fn an_advertisement_from_before_the_current_boot_is_not_capable() {
    let mut sim = cluster();
    sim.get_mut("n1").facts.kubelet_boot_id = Some("boot-2".into());
    sim.run_until(5);
    sim.kill("n1");
    sim.run_until(300);
    assert_eq!(sim.status("n1"), NodeStatus::Fencing);
    assert!(sim.updates("n1", mark()).is_empty());
    assert!(
        warned(&sim, "not from the node's current boot"),
        "{:?}",
        sim.warnings()
    );
    assert_eq!(
        sim.record("n1").valid().unwrap().boot_id.as_deref(),
        Some("boot-2"),
        "stamped with the kubelet's boot ID, not the stale advertisement's"
    );
}

/// After a reboot the agent's advertisement still names the old boot
/// until the new agent writes its own (or for ever, if no agent comes up):
/// the kubelet reads the boot ID from the running kernel, so its new boot
/// ID proves the reboot on its own.
#[test]
fn a_reboot_the_kubelet_reports_unfences_before_the_agent_re_advertises() {
    let mut sim = fenced_n1();
    sim.revive("n1");
    if let AdvertState::Valid(a) = &mut sim.get_mut("n1").facts.agent {
        a.boot_id = "boot-1".into();
    }
    sim.run_until(500);
    assert!(
        !sim.updates("n1", unfence()).is_empty(),
        "{:?}",
        sim.warnings()
    );
}

/// The other way round the kubelet wins as well: an agent that claims a
/// new boot while the kubelet still reports the fenced one proves nothing
/// (the node did not reboot; maybe the agent reads the wrong file).
#[test]
fn an_agent_claiming_a_reboot_the_kubelet_does_not_report_keeps_the_node_fenced() {
    let mut sim = fenced_n1();
    sim.revive("n1");
    sim.get_mut("n1").facts.kubelet_boot_id = Some("boot-1".into());
    sim.run_until(500);
    assert!(sim.updates("n1", unfence()).is_empty());
    assert!(warned(&sim, "same boot ID"), "{:?}", sim.warnings());
}

#[test]
fn cancelling_a_fencing_needs_no_reboot() {
    let mut sim = cluster();
    sim.run_until(5);
    sim.kill("n1");
    sim.run_until(30);
    assert_eq!(sim.status("n1"), NodeStatus::Fencing);
    sim.reconnect("n1");
    sim.run_until(60);
    assert_eq!(sim.updates("n1", unfence()), vec![60]);
    assert!(sim.updates("n1", mark()).is_empty());
}

#[test]
fn safe_times_are_reported_only_for_fencing_nodes() {
    let mut sim = cluster();
    sim.run_until(30);
    assert!(sim.last.as_ref().unwrap().report.safe_times.is_empty());
    sim.kill("n1");
    sim.run_until(55);
    let r = &sim.last.as_ref().unwrap().report;
    assert_eq!(r.safe_times.keys().collect::<Vec<_>>(), vec!["n1"]);
    assert_eq!(
        r.safe_times["n1"].at,
        testutil::mono(30) + Duration::from_secs(47)
    );
}

#[test]
fn a_fencing_record_delayed_by_the_storm_guard_delays_the_safe_time() {
    // n1 and n2 die together: the storm guard (1 allowed) holds both. When n2
    // comes back the guard releases, and n1 is only then recorded Fencing.
    // Its agent, if it still reaches its peers, learns "you are being fenced"
    // only from that record on: the safe time counts from the record, not
    // from heartbeat + --unreachable-after (long past by then).
    let mut s = settings();
    s.max_unhealthy = MaxUnhealthy::Count(1);
    let mut sim = cluster_with(s);
    sim.run_until(5);
    sim.kill("n1");
    sim.kill("n2");
    sim.run_until(100);
    assert!(
        sim.record("n1").valid().is_none(),
        "held by the storm guard"
    );
    sim.reconnect("n2");
    sim.run_until(300);
    let begun = sim.updates("n1", NodeIntent::BeginFencing);
    assert_eq!(begun.len(), 1, "{begun:?}");
    let marked = sim.updates("n1", mark());
    assert_eq!(marked.len(), 1, "{marked:?}");
    // Recorded at F: the agent may have had contact until F + 1, isolated
    // F + 1 + 11; + watchdog 10 + margin 5.
    assert_eq!(marked[0], begun[0] + 27, "begun at {}", begun[0]);
}

/// The node rebooted while it was only Fencing, and its kubelet died again
/// before the fencing was cancelled: the record still names the earlier
/// boot, which the node's agent of this boot rightly ignores (rule 1 is for
/// this boot), so its safe time would promise nothing. The fencing restarts
/// for the current boot before the node may be marked fenced (simulator,
/// `--leader-side` seed 4602: S1).
#[test]
fn a_fencing_record_of_an_earlier_boot_is_restarted_for_the_current_one() {
    let mut sim = cluster();
    sim.run_until(5);
    sim.kill("n1");
    sim.run_until(30);
    assert_eq!(sim.status("n1"), NodeStatus::Fencing);
    sim.revive("n1"); // a new boot, renewing again, not yet healthy for long
    sim.run_until(40);
    sim.kill("n1");
    sim.run_until(400);
    let current = sim.get("n1").facts.kubelet_boot_id.clone();
    assert!(current.is_some());
    assert!(
        !sim.updates("n1", NodeIntent::RestartFencing).is_empty(),
        "the fencing was not restarted for the new boot"
    );
    if sim.status("n1") == NodeStatus::Fenced {
        assert_eq!(
            sim.record("n1").valid().unwrap().boot_id,
            current,
            "marked fenced on a record of another boot"
        );
    }
}
