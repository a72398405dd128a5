//! Recovery: which pods (and VolumeAttachments) of a fenced node are deleted.

use super::*;

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
    f.record = fenced_record(None);
    let mut obs = only_node(f, Heartbeat::first_seen(mono(0)), None);
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

/// A VolumeAttachment is deleted only exactly as it was listed: the action
/// carries its UID and resourceVersion, the delete's preconditions, so an
/// attachment replaced (same name) or changed since is left alone.
#[test]
fn a_volume_attachment_is_deleted_exactly_as_it_was_listed() {
    let mut sim = cluster();
    sim.pod(
        "n1",
        "db/pg-0",
        Some(("apps/v1", "StatefulSet", "pg")),
        vec![claim("data", "pv-1", true)],
    );
    sim.va("va-1", "n1", "pv-1");
    sim.world.vas[0].resource_version = Some("7".into());
    sim.run_until(5);
    sim.kill("n1");
    sim.run_until(200);
    let deletes: Vec<&AttachmentRef> = sim
        .log
        .iter()
        .filter_map(|l| match &l.action {
            Action::DeleteVolumeAttachment { attachment, .. } => Some(attachment),
            _ => None,
        })
        .collect();
    assert_eq!(
        deletes,
        [&AttachmentRef {
            name: "va-1".into(),
            uid: "uid-va-1".into(),
            resource_version: Some("7".into()),
        }]
    );
}
