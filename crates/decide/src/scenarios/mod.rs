//! Scenario tests of the whole core, driven by the simulated world in `sim`,
//! one file per stage; the whole lifecycle and the shared helpers are here.

mod detect;
mod dry_run;
mod fence;
mod guard;
mod recover;
mod split_brain;
mod unfence;

use std::time::{Duration, Instant};

use crate::sim::{Sim, secs};
use crate::testutil::{SELF_NODE, mono, now_at, settings, wall0};
use crate::*;

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

/// A Fenced record written at `wall0()` with our cordon and taint, in the
/// boot `boot` (None: a record from before boot IDs were kept).
fn fenced_record(boot: Option<&str>) -> RecordState {
    RecordState::Valid(FenceRecord {
        phase: Phase::Fenced,
        fencing_since: wall0(),
        fenced_at: Some(wall0()),
        cordoned: true,
        tainted: true,
        by: "x".into(),
        boot_id: boot.map(String::from),
        held_since: None,
    })
}

/// The node carries `fenced_record(boot)` and the cordon and taint it records.
fn fenced_in(facts: &mut NodeFacts, boot: Option<&str>) {
    facts.record = fenced_record(boot);
    facts.unschedulable = true;
    facts.taints.push(Taint::out_of_service());
}

/// Synced observations of the one node `facts` names.
fn only_node(facts: NodeFacts, heartbeat: Heartbeat, ready_since: Option<Instant>) -> Observations {
    let mut obs = Observations {
        synced: true,
        ..Default::default()
    };
    obs.nodes.insert(
        facts.name.clone(),
        NodeObs {
            facts,
            heartbeat: Some(heartbeat),
            ready_since,
            boot_since: None,
        },
    );
    obs
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
fn next_wakeup_is_the_earliest_timer() {
    let mut sim = cluster();
    sim.run_until(3);
    // All renewed at 0: next staleness check at 20.
    assert_eq!(sim.wakeup(), Some(20.0));
    let r = decide(&Observations::default(), now_at(0), &settings()).report;
    assert_eq!(r.next_wakeup, None);
    let _ = Duration::ZERO;
}
