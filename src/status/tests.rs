use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::summary::{GuardSummary, LeaderSummary, NodeSummary, SafeTimeSummary, rfc3339};
use super::*;
use crate::decide::contract::record::{FenceRecord, Phase};
use crate::decide::testutil::facts;
use crate::decide::{AdvertState, RecordState};

const S: fn(u64) -> Duration = Duration::from_secs;

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + S(1_800_000_000 + secs)
}

fn summary(nodes: &[(&str, NodeSummary)]) -> LeaderSummary {
    LeaderSummary {
        updated: rfc3339(t(98)),
        synced: true,
        storm_guard: GuardSummary {
            active: false,
            unhealthy: 1,
            managed: 3,
            allowed: 1,
        },
        nodes: nodes
            .iter()
            .map(|(n, s)| (n.to_string(), s.clone()))
            .collect(),
        truncated: 0,
        warnings: vec![],
    }
}

fn fencing_summary() -> NodeSummary {
    NodeSummary {
        phase: "fencing".into(),
        excluded_because: None,
        safe_time: Some(SafeTimeSummary {
            at: rfc3339(t(120)),
            heartbeat_seconds: 10.0,
            detect_seconds: 17.0,
            consult_seconds: 9.0,
            watchdog_seconds: 10.0,
            margin_seconds: 5.0,
        }),
        external_fencing_required: false,
    }
}

fn record(phase: Phase, since: u64) -> RecordState {
    RecordState::Valid(FenceRecord {
        phase,
        fencing_since: t(since),
        fenced_at: (phase == Phase::Fenced).then(|| t(since + 40)),
        cordoned: true,
        tainted: phase == Phase::Fenced,
        by: "kube-fencer-n1".into(),
        boot_id: Some("boot-1".into()),
        held_since: None,
    })
}

/// Three nodes: n1 healthy, n2 being fenced, n3 whose agent never ran.
fn inputs(leader_summary: Option<LeaderSummary>) -> Inputs {
    let n1 = facts("n1");
    let mut n2 = facts("n2");
    n2.record = record(Phase::Fencing, 90);
    let mut n3 = facts("n3");
    n3.agent = AdvertState::Absent;
    let mut events = BTreeMap::new();
    events.insert(
        "n2".to_string(),
        vec![NodeEvent {
            time: rfc3339(t(90)),
            kind: "Normal".into(),
            reason: "FencingStarted".into(),
            message: "Lease not renewed for 20s".into(),
            at: t(90),
        }],
    );
    Inputs {
        now: Some(t(100)),
        nodes: vec![n3, n2, n1],
        renewals: [("n1", 97), ("n2", 69), ("n3", 99)]
            .into_iter()
            .map(|(n, s)| (n.to_string(), t(s)))
            .collect(),
        leader: LeaderLease {
            holder: Some("kube-fencer-n1".into()),
            renewed: Some(t(99)),
            duration: S(12),
            summary: leader_summary.map(Ok),
        },
        events,
        pods: [("n2".to_string(), vec!["db/db-1".to_string()])].into(),
        permits: BTreeMap::new(),
    }
}

fn row<'a>(s: &'a Status, n: &str) -> &'a NodeRow {
    s.nodes.iter().find(|r| r.name == n).unwrap()
}

#[test]
fn a_node_being_fenced_shows_its_safe_time_capability_pods_and_last_decision() {
    let s = Status::build(&inputs(Some(summary(&[("n2", fencing_summary())]))));
    assert_eq!(
        s.nodes.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        vec!["n1", "n2", "n3"]
    );
    assert!(s.leader.current);
    assert_eq!(s.leader.synced, Some(true));
    assert_eq!(s.leader.summary_age_seconds, Some(2));
    let n2 = row(&s, "n2");
    assert_eq!(n2.phase, "fencing");
    assert_eq!(n2.since_seconds_ago, Some(10));
    assert_eq!(n2.heartbeat_age_seconds, Some(31));
    let safe = n2.safe_time.as_ref().unwrap();
    assert_eq!(safe.remaining_seconds, 20);
    assert_eq!(safe.terms.total_seconds(), 51.0);
    assert!(n2.fencing.current);
    assert_eq!(n2.fencing.watchdog_timeout_seconds, Some(10));
    assert_eq!(n2.awaiting_recovery, vec!["db/db-1"]);
    assert_eq!(n2.last_decision.as_ref().unwrap().reason, "FencingStarted");
    assert_eq!(
        row(&s, "n1").phase,
        "healthy",
        "not in the summary: healthy"
    );
    let n3 = row(&s, "n3");
    assert!(!n3.fencing.current);
    assert!(
        n3.fencing
            .because
            .as_deref()
            .unwrap()
            .contains("no kube-fencer agent"),
        "{:?}",
        n3.fencing
    );
    let table = s.table();
    assert!(
        table.contains("kube-fencer-n1 (renewed 1s ago, caches synced)"),
        "{table}"
    );
    assert!(table.contains("STORM GUARD  off (1 of 3"), "{table}");
    let n2_line = table.lines().find(|l| l.starts_with("n2 ")).unwrap();
    for cell in ["Fencing", "10s", "31s", "20s", "exec 10s", "FencingStarted"] {
        assert!(n2_line.contains(cell), "{cell:?} missing: {n2_line}");
    }
    let n3_line = table.lines().find(|l| l.starts_with("n3 ")).unwrap();
    assert!(n3_line.contains("- (not capable)"), "{n3_line}");
}

#[test]
fn an_advertisement_from_an_earlier_boot_is_not_current() {
    let mut i = inputs(Some(summary(&[])));
    i.nodes[2].kubelet_boot_id = Some("boot-2".into()); // n1 rebooted, agent not back
    let s = Status::build(&i);
    let n1 = row(&s, "n1");
    assert!(!n1.fencing.current);
    assert!(
        n1.fencing
            .because
            .as_deref()
            .unwrap()
            .contains("not from the node's current boot")
    );
}

#[test]
fn without_a_current_leader_the_phases_come_from_the_records_and_say_so() {
    let mut i = inputs(Some(summary(&[("n2", fencing_summary())])));
    i.leader.renewed = Some(t(60)); // 40 s ago, duration 12 s
    let s = Status::build(&i);
    assert!(!s.leader.current);
    assert!(
        s.leader
            .problem
            .as_deref()
            .unwrap()
            .contains("no agent is leading")
    );
    assert_eq!(row(&s, "n2").phase, "fencing", "from the record");
    assert!(
        row(&s, "n2").safe_time.is_none(),
        "a stale summary is not shown"
    );
    assert_eq!(row(&s, "n1").phase, "unknown");
    assert!(s.storm_guard.is_none());
    assert!(s.table().contains("LEADER       none"), "{}", s.table());

    let mut i = inputs(None);
    i.leader.holder = None;
    let s = Status::build(&i);
    assert_eq!(
        s.leader.problem.as_deref(),
        Some("no leader: the leader Lease has no holder")
    );
}

#[test]
fn a_dead_node_nobody_can_fence_is_called_out() {
    let mut dead = fencing_summary();
    dead.phase = "suspect".into();
    dead.safe_time = None;
    dead.external_fencing_required = true;
    let s = Status::build(&inputs(Some(summary(&[("n3", dead)]))));
    let note = row(&s, "n3").note.clone().unwrap();
    assert!(note.contains("cannot be fenced automatically"), "{note}");
    assert!(note.contains("no kube-fencer agent"), "{note}");
    assert!(s.table().contains(&format!("n3: {note}")));
}

#[test]
fn the_timeline_of_a_node_lists_its_events_and_safe_time_terms() {
    let i = inputs(Some(summary(&[("n2", fencing_summary())])));
    let s = Status::build(&i);
    let text = s.timeline("n2", &i.events["n2"]).unwrap();
    assert!(text.contains("Phase:         fencing"), "{text}");
    assert!(
        text.contains(
            "heartbeat 10s + detect 17s + peer consultation 9s + watchdog 10s + margin 5s"
        ),
        "{text}"
    );
    assert!(text.contains("FencingStarted"), "{text}");
    assert!(text.contains("Awaiting recovery: db/db-1"), "{text}");
    assert!(s.timeline("nope", &[]).is_none());
}

#[test]
fn json_names_are_camel_case() {
    let s = Status::build(&inputs(Some(summary(&[("n2", fencing_summary())]))));
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(v["stormGuard"]["allowed"], 1);
    assert_eq!(v["nodes"][1]["safeTime"]["remainingSeconds"], 20);
    assert_eq!(v["nodes"][1]["awaitingRecovery"][0], "db/db-1");
    assert_eq!(v["leader"]["identity"], "kube-fencer-n1");
}

#[test]
fn a_node_whose_peers_grant_no_permit_is_called_out_but_not_as_a_decision() {
    let mut i = inputs(Some(summary(&[("n2", fencing_summary())])));
    let permit_event = |secs: u64, reason: &str, message: &str| NodeEvent {
        time: rfc3339(t(secs)),
        kind: "Warning".into(),
        reason: reason.into(),
        message: message.into(),
        at: t(secs),
    };
    i.events.insert(
        "n1".to_string(),
        vec![
            permit_event(50, "PermitHeld", "held again"),
            permit_event(60, "PermitUnavailable", "0 of the 2 peer grants"),
        ],
    );
    i.events
        .get_mut("n2")
        .unwrap()
        .push(permit_event(95, "PermitHeld", "held again"));
    let s = Status::build(&i);
    let n1 = row(&s, "n1");
    assert_eq!(n1.permit.as_ref().map(|p| p.held), Some(false));
    let note = n1.note.clone().unwrap();
    assert!(note.contains("holds no permit"), "{note}");
    assert!(note.contains("0 of the 2 peer grants"), "{note}");
    assert!(s.table().contains(&format!("n1: {note}")));
    // Permit reports are not the leader's decisions.
    assert_eq!(n1.last_decision, None);
    let n2 = row(&s, "n2");
    assert_eq!(n2.permit.as_ref().map(|p| p.held), Some(true));
    assert_eq!(
        n2.last_decision.as_ref().map(|e| e.reason.as_str()),
        Some("FencingStarted")
    );
    assert_eq!(row(&s, "n3").permit, None);
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(v["nodes"][0]["permit"]["held"], false);
}

#[test]
fn the_permit_objects_say_who_is_armed_revoked_and_reported_silent() {
    use crate::decide::permit::object::{ApiRenewal, Revocation, Silent};
    use crate::decide::testutil::listed_set as set;
    let mut i = inputs(Some(summary(&[("n2", fencing_summary())])));
    let boot = |n: &str| {
        i.nodes
            .iter()
            .find(|f| f.name == n)
            .and_then(|f| f.boot_id().map(str::to_string))
    };
    let (b1, b2) = (boot("n1"), boot("n2"));
    assert!(b1.is_some() && b2.is_some(), "the test nodes have boot IDs");
    let silent_about = |n: &str| {
        BTreeMap::from([(
            n.to_string(),
            Silent {
                quiet: S(4),
                credit: S(10),
            },
        )])
    };
    i.permits = BTreeMap::from([
        (
            "n1".to_string(),
            PermitState {
                sets: vec![set(1, &["n2", "n3"])],
                armed: b1,
                // n1's grantor n3 is reported by it: nothing about n1.
                silent: silent_about("n2"),
                ..Default::default()
            },
        ),
        (
            "n2".to_string(),
            PermitState {
                sets: vec![set(1, &["n1"]), set(2, &["n1", "n3"])],
                armed: b2,
                revocation: Ok(Revocation {
                    fencing: 2,
                    revoked: true,
                }),
                renewal: Ok(Some(ApiRenewal {
                    count: 3,
                    ..Default::default()
                })),
                ..Default::default()
            },
        ),
        (
            "n3".to_string(),
            PermitState {
                sets: vec![set(1, &["n1", "n2"])],
                armed: Some("an-earlier-boot".into()),
                silent: silent_about("n2"),
                ..Default::default()
            },
        ),
    ]);
    let s = Status::build(&i);
    let p = |n: &str| row(&s, n).permit_object.clone().unwrap();
    assert!(p("n1").armed && !p("n1").revoked);
    assert!(p("n1").reported_silent_by.is_empty());
    let n2 = p("n2");
    assert!(n2.revoked && n2.armed);
    assert_eq!(n2.fencing_number, 2);
    assert_eq!(n2.api_renewals, 3);
    assert_eq!(
        n2.reported_silent_by,
        vec!["n1".to_string(), "n3".to_string()]
    );
    assert_eq!(
        n2.grantor_sets,
        vec![
            vec!["n1".to_string()],
            vec!["n1".to_string(), "n3".to_string()]
        ]
    );
    assert!(!p("n3").armed, "armed in another boot");
    let table = s.table();
    assert!(table.contains("PERMIT"), "{table}");
    assert!(table.contains("REVOKED #2, 2 silent"), "{table}");
    assert!(table.contains("not armed"), "{table}");
    let timeline = s.timeline("n2", &[]).unwrap();
    assert!(
        timeline.contains(
            "Permit:        REVOKED (fencing 2); grantors n1, n3 (retiring: n1); 3 renewal(s) through the API server; reported silent by n1, n3"
        ),
        "{timeline}"
    );
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(v["nodes"][1]["permitObject"]["reportedSilentBy"][0], "n1");
    // Without a permit object: no column value, no line.
    i.permits.clear();
    let s = Status::build(&i);
    assert_eq!(row(&s, "n1").permit_object, None);
    assert!(!s.timeline("n1", &[]).unwrap().contains("Permit:"));
}
