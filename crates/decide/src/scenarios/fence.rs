//! Fencing: the record, the cordon, the taint, and nodes fenced in an earlier boot.

use super::guard::excluded_reason;
use super::*;

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
    fenced_in(&mut n1.facts, Some("boot-0"));
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

/// As above, while the storm guard holds: most of the cluster is cut off
/// at once, so the fencing of the earlier boot is not restarted (a
/// restart is a new fencing); it is, once the others are back.
#[test]
fn a_node_fenced_in_an_earlier_boot_is_not_fenced_again_while_the_guard_holds() {
    let mut sim = Sim::new();
    sim.nodes(&["n1", "n2", "n3", SELF_NODE]);
    let n1 = sim.get_mut("n1");
    fenced_in(&mut n1.facts, Some("boot-0"));
    sim.sync();
    sim.run_until(5);
    for n in ["n1", "n2", "n3"] {
        sim.kill(n);
    }
    sim.run_until(100);
    assert!(sim.last.as_ref().unwrap().report.storm_guard.active);
    assert!(
        sim.updates("n1", NodeIntent::RestartFencing).is_empty(),
        "{:?}",
        sim.log
    );
    let w = sim.warnings();
    assert!(
        w.iter()
            .any(|w| w.node.as_deref() == Some("n1")
                && w.message.contains("restarting the fencing of")),
        "{w:?}"
    );
    // A node fenced in its current boot is recovery's business: nothing
    // to restart, nothing to warn about.
    let mut now_fenced = Sim::new();
    now_fenced.nodes(&["n1", "n2", "n3", SELF_NODE]);
    fenced_in(&mut now_fenced.get_mut("n1").facts, Some("boot-1"));
    now_fenced.sync();
    now_fenced.run_until(5);
    for n in ["n1", "n2", "n3"] {
        now_fenced.kill(n);
    }
    now_fenced.run_until(100);
    assert!(
        !now_fenced
            .warnings()
            .iter()
            .any(|w| w.message.contains("restarting the fencing of")),
        "{:?}",
        now_fenced.warnings()
    );
    sim.revive("n2");
    sim.revive("n3");
    sim.run_until(130);
    assert_eq!(
        sim.updates("n1", NodeIntent::RestartFencing).len(),
        1,
        "{:?}",
        sim.log
    );
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
    fenced_in(&mut n1.facts, Some("boot-0"));
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

/// n1's agent fences through the permit (it advertises `selfFence: none`
/// for leaders that predate the permit), killed at 5 (last renewal at 0):
/// its fencing begins at 20.
fn permit_cluster() -> Sim {
    let mut sim = permit_node_killed();
    sim.run_until(20);
    assert_eq!(sim.updates("n1", begin()), vec![20]);
    sim
}

/// A cluster whose n1 fences through the permit.
fn permit_node() -> Sim {
    let mut sim = cluster();
    let mut a = crate::testutil::advert();
    a.self_fence = SelfFenceAction::None;
    a.permit_fence = Some(SelfFenceAction::Watchdog);
    sim.get_mut("n1").facts.agent = AdvertState::Valid(a);
    sim
}

#[test]
fn a_permit_node_is_marked_fenced_at_its_revocations_deadline_and_no_sooner() {
    let mut sim = permit_cluster();
    // No revocation, then one under way: never on time alone (its safe
    // time would have passed at 60).
    sim.run_until(100);
    sim.permits
        .insert("n1".into(), PermitFence::Pending("too few answers".into()));
    sim.run_until(130);
    assert!(sim.updates("n1", mark()).is_empty());
    assert_eq!(sim.status("n1"), NodeStatus::Fencing);
    assert!(
        !sim.last
            .as_ref()
            .unwrap()
            .report
            .safe_times
            .contains_key("n1")
    );
    // Complete: marked at its deadline.
    sim.permits
        .insert("n1".into(), PermitFence::Deadline(mono(140)));
    sim.run_until(139);
    assert!(sim.updates("n1", mark()).is_empty());
    sim.run_until(140);
    assert_eq!(sim.updates("n1", mark()), vec![140]);
    let Action::UpdateNode { why, .. } = sim
        .actions_at(140)
        .into_iter()
        .find(|a| {
            matches!(
                a,
                Action::UpdateNode {
                    intent: NodeIntent::MarkFenced,
                    ..
                }
            )
        })
        .unwrap()
    else {
        panic!()
    };
    assert!(why.contains("permit is revoked"), "{why}");
}

#[test]
fn a_deadline_before_the_settle_window_waits_for_it_not_for_the_fence_timeout() {
    let mut sim = permit_cluster();
    // A deadline already past when the fencing began: the settle window
    // still holds; --fence-timeout does not (the deadline is the proof).
    sim.permits
        .insert("n1".into(), PermitFence::Deadline(mono(1)));
    sim.run_until(300);
    let marked = sim.updates("n1", mark());
    let s = &sim.settings;
    let settled = (s.unreachable_after + s.settle_window()).as_secs();
    assert_eq!(marked, vec![settled]);
    assert!(settled < s.fence_timeout.as_secs(), "{settled}");
}

/// n1 fences through the permit; killed at 5 (last renewal at 0).
fn permit_node_killed() -> Sim {
    let mut sim = permit_node();
    sim.run_until(5);
    sim.kill("n1");
    sim
}

#[test]
fn a_node_whose_permit_is_over_is_fenced_before_its_lease_is_stale() {
    let mut sim = permit_node_killed();
    // Its grantors' reports: no permit left from 9 on. Its Lease missed a
    // renewal at 12 (heartbeat 10 s + burst spread 2 s): suspect then.
    sim.permit_over.insert("n1".into(), mono(9));
    sim.run_until(11);
    assert!(sim.updates("n1", begin()).is_empty());
    sim.run_until(12);
    assert_eq!(sim.updates("n1", begin()), vec![12]);
    let why = sim
        .actions_at(12)
        .into_iter()
        .find_map(|a| match a {
            Action::UpdateNode {
                intent: NodeIntent::BeginFencing,
                why,
                ..
            } => Some(why),
            _ => None,
        })
        .unwrap();
    assert!(why.contains("no permit is left"), "{why}");
    // Its revocation's deadline at 19; the burst spread settled at 14.
    sim.permits
        .insert("n1".into(), PermitFence::Deadline(mono(19)));
    sim.run_until(18);
    assert!(sim.updates("n1", mark()).is_empty());
    sim.run_until(40);
    assert_eq!(sim.updates("n1", mark()), vec![19]);
}

#[test]
fn a_node_suspect_through_its_permit_keeps_its_short_settle_once_its_lease_is_stale() {
    let mut sim = permit_node_killed();
    sim.permit_over.insert("n1".into(), mono(9));
    // Suspect at 12, settled at 14; its Lease goes stale at 20, and would
    // settle only at 32 (20 + heartbeat 10 s + spread 2 s).
    sim.permits
        .insert("n1".into(), PermitFence::Deadline(mono(25)));
    sim.run_until(60);
    assert_eq!(sim.updates("n1", begin()), vec![12]);
    assert_eq!(sim.updates("n1", mark()), vec![25]);
}

#[test]
fn a_node_suspect_through_its_permit_settles_for_the_burst_spread() {
    let mut sim = permit_node_killed();
    sim.permit_over.insert("n1".into(), mono(9));
    // Suspect at 12; a deadline already past: marked once settled, at 14.
    sim.permits
        .insert("n1".into(), PermitFence::Deadline(mono(1)));
    sim.run_until(60);
    assert_eq!(sim.updates("n1", mark()), vec![14]);
}

#[test]
fn the_leader_wakes_when_a_node_becomes_suspect_through_its_permit() {
    let mut sim = permit_node_killed();
    sim.permit_over.insert("n1".into(), mono(9));
    sim.run_until(6);
    // Its Lease misses a renewal at 12, after the permit is over (9).
    assert_eq!(sim.wakeup(), Some(12.0));
    let mut later = permit_node_killed();
    later.permit_over.insert("n1".into(), mono(15));
    later.run_until(6);
    assert_eq!(later.wakeup(), Some(15.0));
}

#[test]
fn a_permit_over_later_than_the_missed_renewal_decides() {
    let mut sim = permit_node_killed();
    sim.permit_over.insert("n1".into(), mono(15));
    sim.run_until(19);
    assert_eq!(sim.updates("n1", begin()), vec![15]);
}

#[test]
fn a_node_whose_kubelet_renews_is_never_suspect_through_its_permit() {
    let mut sim = permit_node();
    // Reports say no permit is left (its peers cannot reach it), but its
    // kubelet renews: left to its Lease.
    sim.permit_over.insert("n1".into(), mono(3));
    sim.run_until(200);
    assert!(sim.updates("n1", begin()).is_empty());
    assert_eq!(sim.status("n1"), NodeStatus::Healthy);
}

#[test]
fn reports_do_not_make_a_node_without_the_permit_fence_suspect() {
    let mut sim = cluster();
    sim.run_until(5);
    sim.kill("n1");
    sim.permit_over.insert("n1".into(), mono(9));
    sim.run_until(30);
    assert_eq!(sim.updates("n1", begin()), vec![20]);
}

#[test]
fn a_permit_node_not_armed_is_never_marked_fenced_and_says_so() {
    let mut sim = permit_cluster();
    sim.permits.insert("n1".into(), PermitFence::NotArmed);
    sim.run_until(600);
    assert!(sim.updates("n1", mark()).is_empty());
    let report = &sim.last.as_ref().unwrap().report;
    assert!(report.external_fencing_required.contains(&"n1".to_string()));
    assert!(
        sim.warnings()
            .iter()
            .any(|w| w.node.as_deref() == Some("n1") && w.message.contains("armed")),
        "{:?}",
        sim.warnings()
    );
}

#[test]
fn an_advertised_permit_fence_is_never_fenced_by_a_safe_time() {
    // An advertisement naming both (a leader must not choose the one it
    // can complete): the permit decides.
    let mut sim = cluster();
    let mut a = crate::testutil::advert();
    a.permit_fence = Some(SelfFenceAction::Watchdog);
    assert!(a.capable());
    sim.get_mut("n1").facts.agent = AdvertState::Valid(a);
    sim.run_until(5);
    sim.kill("n1");
    sim.run_until(600);
    assert_eq!(sim.updates("n1", begin()), vec![20]);
    assert!(sim.updates("n1", mark()).is_empty());
}

#[test]
fn a_permit_nodes_fencing_begins_only_after_a_consistent_read_of_its_lease() {
    // Under the permit the record begins the revocation, and a revoked
    // node resets: a watch that stalled must not begin one. The Lease path
    // and the reports' path alike.
    let mut f = crate::testutil::facts("n1");
    let mut a = crate::testutil::advert();
    a.self_fence = SelfFenceAction::None;
    a.permit_fence = Some(SelfFenceAction::Watchdog);
    f.agent = AdvertState::Valid(a);
    // Two healthy nodes beside it, renewing: the storm guard lets it be.
    let with_peers = |f: NodeFacts| {
        let mut obs = only_node(f, Heartbeat::first_seen(mono(0)), None);
        for peer in ["n2", "n3"] {
            let o = only_node(
                crate::testutil::facts(peer),
                Heartbeat::first_seen(mono(0)),
                None,
            );
            obs.nodes.extend(o.nodes);
        }
        obs
    };
    let renewed = |obs: &mut Observations, at: u64| {
        for peer in ["n2", "n3"] {
            obs.nodes.get_mut(peer).unwrap().heartbeat = Some(Heartbeat::first_seen(mono(at)));
        }
    };
    let mut obs = with_peers(f);
    let s = settings();
    let begins = |obs: &Observations, at: u64| {
        decide(obs, now_at(at), &s).actions.iter().any(|a| {
            matches!(
                a,
                Action::UpdateNode {
                    intent: NodeIntent::BeginFencing,
                    ..
                }
            )
        })
    };
    for over in [None, Some(mono(9))] {
        if let Some(o) = over {
            obs.permit_over.insert("n1".into(), o);
        }
        let at = if over.is_some() { 12 } else { 20 };
        renewed(&mut obs, at);
        let d = decide(&obs, now_at(at), &s);
        assert!(
            matches!(&d.actions[..], [Action::ConfirmLease { node, .. }] if node == "n1"),
            "first a consistent read of the Lease ({over:?}): {:?}",
            d.actions
        );
        obs.lease_confirmed.insert("n1".into(), mono(at));
        assert!(begins(&obs, at), "{over:?}");
        obs.lease_confirmed.clear();
    }
    // A node of the safe-time protocol begins at once: its agent fences
    // itself only after its safe time, and a renewal stops it.
    let mut obs = with_peers(crate::testutil::facts("n1"));
    renewed(&mut obs, 20);
    assert!(begins(&obs, 20));
}
