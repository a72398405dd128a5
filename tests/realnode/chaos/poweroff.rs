//! Steps 2 to 4: a StatefulSet off the leader's node, that node powered
//! off (db-0 Running again elsewhere with the same claim) and booted
//! (unfenced).

use std::fs;
use std::time::{Duration, Instant};

use kube_fencer_testkit::realnode::{harness, now_ms, secs};

use super::{Run, TTR_BOUND, UNFENCE_BOUND, WATCHDOG_TIMEOUT, db_pod, pvc_uid, replaced};

/// Step 2: a StatefulSet (db-0, claim data-db-0 bound to pv-data) on a
/// node that is not the leader's, and three bystanders.
pub(super) fn step_2_workload(run: &mut Run) {
    let c = &run.c;
    let leader = &run.leader;
    c.step("3: a StatefulSet off the leader's node");
    harness(
        "cluster.sh",
        &[
            "pv-create",
            &c.dir.display().to_string(),
            "pv-data",
            "1Gi",
            "default/data-db-0",
        ],
    )
    .unwrap_or_else(|e| c.fail(format!("pv-create failed: {e:#}")));
    let workload = fs::read_to_string(c.repo.join("harness/realnode/chaos-workload.yaml"))
        .unwrap()
        .replace("@LEADER@", leader);
    c.apply(&workload)
        .unwrap_or_else(|e| c.fail(format!("cannot create the workload: {e:#}")));
    let db_running = || db_pod(c).is_some_and(|d| d.phase == "Running" && d.ready && !d.deleting);
    c.wait_until(90, "db-0 Running", db_running);
    c.wait_until(90, "three bystander pods Running", || {
        c.kubectl_json(&["get", "pods", "-l", "app=bystander"])
            .is_ok_and(|v| {
                v["items"].as_array().map(|ps| {
                    ps.iter()
                        .filter(|p| p["status"]["phase"] == "Running")
                        .count()
                }) == Some(3)
            })
    });
    let db = db_pod(c).unwrap_or_default();
    let (db_uid, victim) = (db.uid.clone(), db.node.clone());
    if victim == *leader {
        c.fail(format!("db-0 is on the leader's node {leader}"));
    }
    let pvc = pvc_uid(c);
    let vol = c
        .kubectl_json(&["get", "pvc", "data-db-0"])
        .map(|p| p["spec"]["volumeName"].as_str().unwrap_or("").to_string())
        .unwrap_or_default();
    if vol != "pv-data" {
        c.fail("data-db-0 is not bound to pv-data");
    }
    let uids_before = run.pod_uids();
    c.pass(format!("db-0 (uid {db_uid}) Running on {victim} (leader on {leader}), claim data-db-0 (uid {pvc}) bound to pv-data; {} pods recorded", uids_before.len()));
    run.db_uid = db_uid;
    run.victim = victim;
    run.pvc = pvc;
    run.pods_before = uids_before;
}

/// When step 3 saw what, in ms since the epoch.
#[derive(Default)]
struct PowerOffSeen {
    fencing: Option<i64>,
    fenced: Option<i64>,
    taint: Option<i64>,
    db_gone: Option<i64>,
}

/// Step 3: power db-0's node off; db-0 Running again elsewhere with the
/// same claim, the node recorded Fencing then Fenced, tainted
/// out-of-service and cordoned, no pod of another node deleted.
pub(super) fn step_3_power_off(run: &mut Run) {
    let c = &run.c;
    let victim = &run.victim;
    c.step(format!("4: power {victim} off"));
    let t_off = now_ms();
    c.realnode("poweroff", &[victim])
        .unwrap_or_else(|e| c.fail(format!("realnode.sh poweroff {victim} failed: {e:#}")));
    c.say(format!("{victim} powered off"));
    let (seen, t_recovered) = watch_power_off(run);
    let db2 = db_pod(c).unwrap_or_default();
    if db2.node == *victim {
        c.fail(format!("db-0 is Running on {victim} again"));
    }
    let t_fencing = seen
        .fencing
        .unwrap_or_else(|| c.fail(format!("{victim} was never seen Fencing")));
    let t_fenced = seen.fenced.unwrap_or_else(|| {
        if c.phase(victim) == "fenced" {
            now_ms()
        } else {
            c.fail(format!("{victim} is not Fenced"))
        }
    });
    if t_fencing > t_fenced {
        c.fail("Fenced seen before Fencing");
    }
    check_fenced_pods_kept(run);
    let pvc = &run.pvc;
    let ttr = t_recovered - t_off;
    c.pass(format!("db-0 Running on {} (uid {}) with claim data-db-0 (uid {pvc}) {} s after the power-off (bound {TTR_BOUND} s); Fencing at +{} s, Fenced at +{} s, out-of-service taint seen at +{} s, old db-0 gone at +{} s; every pod of the other nodes kept its UID",
        db2.node, db2.uid, secs(ttr), secs(t_fencing - t_off), secs(t_fenced - t_off),
        secs(seen.taint.unwrap_or(t_recovered) - t_off), secs(seen.db_gone.unwrap_or(t_recovered) - t_off)));
    run.fig.poweroff_ttr = ttr;
    run.fig.poweroff_fencing = t_fencing - t_off;
    run.fig.poweroff_fenced = t_fenced - t_off;
    run.fig.poweroff_old_pod_gone = seen.db_gone.unwrap_or(t_recovered) - t_off;
    run.db_node = db2.node;
}

/// Poll every 0.5 s until a new db-0 is Running and Ready (or fail after
/// TTR_BOUND): when the powered-off node was seen Fencing, Fenced, tainted,
/// the old db-0 gone; and when the new one was Ready.
fn watch_power_off(run: &Run) -> (PowerOffSeen, i64) {
    let (c, victim, db_uid) = (&run.c, &run.victim, &run.db_uid);
    let mut seen = PowerOffSeen::default();
    let deadline = Instant::now() + Duration::from_secs(TTR_BOUND);
    let t_recovered = loop {
        if Instant::now() >= deadline {
            c.fail(format!(
                "db-0 not Running on another node within {TTR_BOUND}s of the power-off"
            ));
        }
        let p = c.phase(victim);
        if seen.fencing.is_none() && p == "fencing" {
            seen.fencing = Some(now_ms());
            c.say(format!("{victim} recorded Fencing"));
        }
        if seen.fenced.is_none() && p == "fenced" {
            seen.fenced = Some(now_ms());
            c.say(format!("{victim} recorded Fenced"));
        }
        if seen.taint.is_none() && c.out_of_service(victim) {
            seen.taint = Some(now_ms());
        }
        let db = db_pod(c);
        if seen.db_gone.is_none() && db.as_ref().is_none_or(|d| d.uid != *db_uid) {
            seen.db_gone = Some(now_ms());
        }
        if let Some(d) = &db
            && d.uid != *db_uid
            && d.phase == "Running"
            && d.ready
        {
            break now_ms();
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    (seen, t_recovered)
}

/// The powered-off node tainted out-of-service and cordoned; db-0 on the
/// same claim (same UID); every pod of the other nodes kept its UID.
fn check_fenced_pods_kept(run: &Run) {
    let (c, victim) = (&run.c, &run.victim);
    if !c.out_of_service(victim) {
        c.fail(format!("{victim} has no out-of-service taint"));
    }
    if !c.cordoned(victim) {
        c.fail(format!("{victim} is not cordoned"));
    }
    let claim = c.kubectl_json(&["get", "pod", "db-0"]).ok().and_then(|p| {
        p["spec"]["volumes"].as_array().and_then(|vs| {
            vs.iter().find(|v| v["name"] == "data").and_then(|v| {
                v["persistentVolumeClaim"]["claimName"]
                    .as_str()
                    .map(str::to_string)
            })
        })
    });
    if claim.as_deref() != Some("data-db-0") {
        c.fail("db-0 does not use claim data-db-0");
    }
    if pvc_uid(c) != run.pvc {
        c.fail("claim data-db-0 has a new UID");
    }
    let uids_after = run.pod_uids();
    if let Some(p) = replaced(&run.pods_before, &uids_after, |n| n != victim) {
        c.fail(format!("{p} (healthy) was deleted or replaced"));
    }
}

/// Step 4: boot the powered-off node with a fresh watchdog device: a new
/// boot ID, unfenced (not before --healthy-after), its agent Ready, its
/// new device armed and fed.
pub(super) fn step_4_boot(run: &mut Run) {
    let c = &run.c;
    let victim = &run.victim;
    c.step(format!("5: boot {victim}"));
    let boot_old = c.boot_id(victim);
    // A reboot resets the watchdog: a fresh device (the old one fired after
    // the agent died without a magic close, or will).
    c.wd_stop(victim);
    c.wd_start(victim)
        .unwrap_or_else(|e| c.fail(format!("{e:#}")));
    let t_boot = now_ms();
    c.realnode("boot", &[victim])
        .unwrap_or_else(|e| c.fail(format!("realnode.sh boot {victim} failed: {e:#}")));
    let t_boot_ready = now_ms() - t_boot;
    let boot_new = c.boot_id(victim);
    if boot_new.is_empty() || boot_new == boot_old {
        c.fail(format!("boot ID did not change ({boot_old} -> {boot_new})"));
    }
    c.wait_until(
        UNFENCE_BOUND,
        &format!("{victim} unfenced after its reboot"),
        || c.unfenced(victim),
    );
    let t_unfence = now_ms() - t_boot;
    c.wait_until(60, &format!("{victim}'s agent pod Ready again"), || {
        c.agent_ready(victim)
    });
    c.wait_until(30, &format!("{victim} advertises its new boot ID"), || {
        c.advert(victim)["bootId"] == boot_new.as_str()
    });
    c.wait_until(
        15,
        &format!("{victim}'s new watchdog armed and fed"),
        || c.wd_armed_fed(victim, WATCHDOG_TIMEOUT),
    );
    if t_unfence < 30_000 {
        c.fail(format!(
            "{victim} unfenced {} s after boot, before --healthy-after (30 s)",
            secs(t_unfence)
        ));
    }
    c.pass(format!("{victim} booted (Ready in {} s, boot ID {boot_old} -> {boot_new}), unfenced {} s after boot (record, taint, cordon gone), its agent Ready, its new device armed and fed", secs(t_boot_ready), secs(t_unfence)));
    run.fig.poweroff_unfence = t_unfence;
}
