use super::*;
use crate::testutil::*;

fn taint(key: &str, value: Option<&str>, effect: &str) -> Taint {
    Taint {
        key: key.into(),
        value: value.map(String::from),
        effect: effect.into(),
    }
}

fn record(phase: Phase, cordoned: bool, tainted: bool) -> RecordState {
    RecordState::Valid(FenceRecord {
        phase,
        fencing_since: wall0(),
        fenced_at: (phase == Phase::Fenced).then(wall0),
        cordoned,
        tainted,
        by: "old-leader".into(),
        boot_id: None,
        held_since: None,
    })
}

#[test]
fn a_held_fencing_is_noted_then_restarted_from_the_release() {
    let s = settings();
    let mut f = facts("n1");
    f.record = record(Phase::Fencing, true, false);
    let p = render(&NodeIntent::HoldFencing, &f, now_at(50), &s).unwrap();
    let Some(Some(held)) = p.record else {
        panic!("{p:?}")
    };
    assert_eq!(
        held.held_since,
        Some(wall0() + std::time::Duration::from_secs(50))
    );
    assert_eq!(
        held.fencing_since,
        wall0(),
        "holding does not move the start"
    );
    assert!(p.unschedulable.is_none() && p.taints.is_none());
    f.record = RecordState::Valid(held.clone());
    assert_eq!(
        render(&NodeIntent::HoldFencing, &f, now_at(51), &s),
        Err(Skip::AlreadyDone)
    );
    let p = render(&NodeIntent::RestartFencing, &f, now_at(90), &s).unwrap();
    let Some(Some(restarted)) = p.record else {
        panic!("{p:?}")
    };
    assert_eq!(
        restarted.fencing_since,
        wall0() + std::time::Duration::from_secs(90)
    );
    assert_eq!(restarted.held_since, None);
    // The cordon is kept; the record names the node's current boot.
    assert_eq!(
        (restarted.cordoned, restarted.boot_id.clone()),
        (held.cordoned, f.boot_id().map(String::from))
    );
    f.record = RecordState::Valid(restarted);
    assert_eq!(
        render(&NodeIntent::RestartFencing, &f, now_at(91), &s),
        Err(Skip::AlreadyDone)
    );
    // Only a Fencing record is held or restarted.
    f.record = record(Phase::Fenced, true, true);
    assert!(matches!(
        render(&NodeIntent::HoldFencing, &f, now_at(0), &s),
        Err(Skip::NoLongerApplies(_))
    ));
    f.record = RecordState::Absent;
    assert!(matches!(
        render(&NodeIntent::RestartFencing, &f, now_at(0), &s),
        Err(Skip::NoLongerApplies(_))
    ));
}

#[test]
fn a_node_fenced_in_an_earlier_boot_goes_back_to_fencing_without_our_taint() {
    let s = settings();
    let mut f = facts("n1");
    let RecordState::Valid(mut r) = record(Phase::Fenced, true, true) else {
        unreachable!()
    };
    r.boot_id = Some("boot-0".into());
    f.record = RecordState::Valid(r.clone());
    f.taints.push(Taint::out_of_service());
    f.unschedulable = true;
    let p = render(&NodeIntent::RestartFencing, &f, now_at(90), &s).unwrap();
    let Some(Some(next)) = p.record else {
        panic!("{p:?}")
    };
    assert_eq!(next.phase, Phase::Fencing);
    assert_eq!(next.fenced_at, None);
    assert!(!next.tainted);
    assert!(next.cordoned, "the cordon stays");
    assert_eq!(next.boot_id.as_deref(), f.current_boot().ok());
    assert_ne!(next.boot_id, r.boot_id);
    assert_eq!(
        next.fencing_since,
        wall0() + std::time::Duration::from_secs(90)
    );
    let taints = p.taints.expect("our taint is removed");
    assert!(!taints.contains(&Taint::out_of_service()), "{taints:?}");
    assert!(p.unschedulable.is_none());
    // Fenced in this very boot: nothing to restart.
    r.boot_id = f.current_boot().ok().map(String::from);
    f.record = RecordState::Valid(r);
    assert!(matches!(
        render(&NodeIntent::RestartFencing, &f, now_at(91), &s),
        Err(Skip::NoLongerApplies(_))
    ));
}

#[test]
fn begin_fencing_records_the_kubelets_boot_id_before_the_agents() {
    let s = settings();
    let mut f = facts("n1");
    f.kubelet_boot_id = Some("kubelet-boot".into());
    let stamp = |f: &NodeFacts| match render(&NodeIntent::BeginFencing, f, now_at(0), &s) {
        Ok(NodePatch {
            record: Some(Some(r)),
            ..
        }) => r.boot_id,
        other => panic!("{other:?}"),
    };
    assert_eq!(stamp(&f).as_deref(), Some("kubelet-boot"));
    f.kubelet_boot_id = None;
    assert_eq!(stamp(&f).as_deref(), Some("boot-1"), "the agent's");
    f.agent = crate::AdvertState::Absent;
    assert_eq!(stamp(&f), None);
}

#[test]
fn begin_fencing_records_and_cordons() {
    let s = settings();
    let f = facts("n1");
    let now = now_at(5);
    let p = render(&NodeIntent::BeginFencing, &f, now, &s).unwrap();
    assert_eq!(p.resource_version, f.resource_version);
    assert_eq!(p.unschedulable, Some(true));
    assert_eq!(p.taints, None);
    let Some(Some(r)) = &p.record else { panic!() };
    assert_eq!(r.phase, Phase::Fencing);
    assert_eq!(r.fencing_since, now.wall);
    assert_eq!(r.fenced_at, None);
    assert!(r.cordoned && !r.tainted);
    assert_eq!(r.by, s.identity);
    let after = apply(&f, &p);
    assert!(after.unschedulable);
    assert_eq!(
        after.labels.get(PHASE_LABEL).map(String::as_str),
        Some("fencing")
    );
    assert_ne!(after.resource_version, f.resource_version);
}

#[test]
fn begin_fencing_of_a_cordoned_node_does_not_claim_the_cordon() {
    let mut f = facts("n1");
    f.unschedulable = true;
    let p = render(&NodeIntent::BeginFencing, &f, now_at(0), &settings()).unwrap();
    assert_eq!(p.unschedulable, None);
    assert!(matches!(&p.record, Some(Some(r)) if !r.cordoned));
}

#[test]
fn begin_fencing_skips_recorded_nodes() {
    let s = settings();
    let mut f = facts("n1");
    f.record = record(Phase::Fencing, true, false);
    assert_eq!(
        render(&NodeIntent::BeginFencing, &f, now_at(0), &s),
        Err(Skip::AlreadyDone)
    );
    f.record = RecordState::Malformed("x".into());
    assert!(matches!(
        render(&NodeIntent::BeginFencing, &f, now_at(0), &s),
        Err(Skip::NoLongerApplies(_))
    ));
}

#[test]
fn mark_fenced_appends_the_taint_keeping_others_in_order() {
    let s = settings();
    let mut f = facts("n1");
    f.unschedulable = true;
    f.record = record(Phase::Fencing, true, false);
    let others = vec![
        taint("b", Some("1"), "NoSchedule"),
        taint("node.kubernetes.io/unreachable", None, "NoExecute"),
        taint("a", None, "PreferNoSchedule"),
    ];
    f.taints = others.clone();
    let now = now_at(70);
    let p = render(&NodeIntent::MarkFenced, &f, now, &s).unwrap();
    let mut want = others.clone();
    want.push(Taint::out_of_service());
    assert_eq!(p.taints, Some(want));
    assert_eq!(p.unschedulable, None);
    let Some(Some(r)) = &p.record else { panic!() };
    assert_eq!(r.phase, Phase::Fenced);
    assert_eq!(r.fenced_at, Some(now.wall));
    assert_eq!(r.fencing_since, wall0());
    assert!(r.tainted && r.cordoned);
}

#[test]
fn mark_fenced_leaves_someone_elses_out_of_service_taint() {
    let s = settings();
    let mut f = facts("n1");
    f.record = record(Phase::Fencing, false, false);
    f.taints = vec![taint(
        OUT_OF_SERVICE_TAINT_KEY,
        Some("manual"),
        "NoSchedule",
    )];
    let p = render(&NodeIntent::MarkFenced, &f, now_at(70), &s).unwrap();
    assert_eq!(p.taints, None);
    assert!(matches!(&p.record, Some(Some(r)) if !r.tainted && !r.cordoned));
}

#[test]
fn mark_fenced_with_delete_pods_adds_no_taint() {
    let mut s = settings();
    s.strategy = Strategy::DeletePods;
    let mut f = facts("n1");
    f.record = record(Phase::Fencing, true, false);
    let p = render(&NodeIntent::MarkFenced, &f, now_at(70), &s).unwrap();
    assert_eq!(p.taints, None);
    assert!(matches!(&p.record, Some(Some(r)) if !r.tainted && r.phase == Phase::Fenced));
}

#[test]
fn mark_fenced_requires_a_fencing_record() {
    let s = settings();
    let mut f = facts("n1");
    assert!(matches!(
        render(&NodeIntent::MarkFenced, &f, now_at(0), &s),
        Err(Skip::NoLongerApplies(_))
    ));
    f.record = RecordState::Malformed("bad".into());
    assert!(matches!(
        render(&NodeIntent::MarkFenced, &f, now_at(0), &s),
        Err(Skip::NoLongerApplies(_))
    ));
    f.record = record(Phase::Fenced, true, true);
    assert_eq!(
        render(&NodeIntent::MarkFenced, &f, now_at(0), &s),
        Err(Skip::AlreadyDone)
    );
}

#[test]
fn unfence_removes_only_what_is_ours() {
    let s = settings();
    let mut f = facts("n1");
    f.unschedulable = true;
    f.record = record(Phase::Fenced, true, true);
    f.taints = vec![
        taint("x", Some("1"), "NoSchedule"),
        Taint::out_of_service(),
        taint(OUT_OF_SERVICE_TAINT_KEY, Some("other"), "NoSchedule"),
        taint("y", None, "NoExecute"),
    ];
    let p = render(&NodeIntent::Unfence, &f, now_at(0), &s).unwrap();
    assert_eq!(
        p.taints,
        Some(vec![
            taint("x", Some("1"), "NoSchedule"),
            taint(OUT_OF_SERVICE_TAINT_KEY, Some("other"), "NoSchedule"),
            taint("y", None, "NoExecute"),
        ])
    );
    assert_eq!(p.unschedulable, Some(false));
    assert_eq!(p.record, Some(None));
    let after = apply(&f, &p);
    assert_eq!(after.record, RecordState::Absent);
    assert!(!after.labels.contains_key(PHASE_LABEL));
}

#[test]
fn unfence_keeps_taint_and_cordon_it_did_not_add() {
    let s = settings();
    let mut f = facts("n1");
    f.unschedulable = true;
    f.record = record(Phase::Fenced, false, false);
    f.taints = vec![Taint::out_of_service()];
    let p = render(&NodeIntent::Unfence, &f, now_at(0), &s).unwrap();
    assert_eq!(p.taints, None);
    assert_eq!(p.unschedulable, None);
    assert_eq!(p.record, Some(None));
}

#[test]
fn unfence_of_an_uncordoned_node_only_drops_the_record() {
    let s = settings();
    let mut f = facts("n1");
    f.record = record(Phase::Fencing, true, false);
    let p = render(&NodeIntent::Unfence, &f, now_at(0), &s).unwrap();
    assert_eq!(p.unschedulable, None);
    assert_eq!(p.taints, None);
    assert_eq!(p.record, Some(None));
}

#[test]
fn unfence_skips() {
    let s = settings();
    let mut f = facts("n1");
    assert_eq!(
        render(&NodeIntent::Unfence, &f, now_at(0), &s),
        Err(Skip::AlreadyDone)
    );
    f.record = RecordState::Malformed("bad".into());
    assert!(matches!(
        render(&NodeIntent::Unfence, &f, now_at(0), &s),
        Err(Skip::NoLongerApplies(_))
    ));
}

#[test]
fn an_unfence_request_is_cleared_only_from_a_node_without_a_record() {
    let s = settings();
    let mut f = facts("n1");
    f.unfence_requested = true;
    let p = render(&NodeIntent::ClearUnfenceRequest, &f, now_at(0), &s).unwrap();
    assert!(p.clear_unfence_request);
    assert_eq!(p.resource_version, f.resource_version, "the precondition");
    assert!(!apply(&f, &p).unfence_requested);
    assert_eq!((p.unschedulable, p.taints, p.record), (None, None, None));
    // A record written since the node was observed: the annotation may be
    // an operator unfencing it now.
    for rec in [
        record(Phase::Fencing, true, false),
        record(Phase::Fenced, true, true),
        RecordState::Malformed("bad".into()),
    ] {
        f.record = rec;
        assert!(matches!(
            render(&NodeIntent::ClearUnfenceRequest, &f, now_at(0), &s),
            Err(Skip::NoLongerApplies(_))
        ));
    }
    let f = facts("n1");
    assert_eq!(
        render(&NodeIntent::ClearUnfenceRequest, &f, now_at(0), &s),
        Err(Skip::AlreadyDone)
    );
}

#[test]
fn a_fencing_begins_without_an_earlier_unfence_request() {
    let s = settings();
    let mut f = facts("n1");
    let p = render(&NodeIntent::BeginFencing, &f, now_at(0), &s).unwrap();
    assert!(!p.clear_unfence_request);
    f.unfence_requested = true;
    let p = render(&NodeIntent::BeginFencing, &f, now_at(0), &s).unwrap();
    assert!(p.clear_unfence_request);
    let after = apply(&f, &p);
    assert!(!after.unfence_requested && after.record.valid().is_some());
}

#[test]
fn full_cycle_restores_the_node() {
    let s = settings();
    let mut f = facts("n1");
    f.taints = vec![taint("keep", Some("me"), "NoSchedule")];
    let original = f.clone();
    for (i, intent) in [
        NodeIntent::BeginFencing,
        NodeIntent::MarkFenced,
        NodeIntent::Unfence,
    ]
    .iter()
    .enumerate()
    {
        let p = render(intent, &f, now_at(i as u64 * 60), &s).unwrap();
        f = apply(&f, &p);
    }
    assert_eq!(f.taints, original.taints);
    assert_eq!(f.unschedulable, original.unschedulable);
    assert_eq!(f.record, original.record);
    assert_eq!(f.labels, original.labels);
}
