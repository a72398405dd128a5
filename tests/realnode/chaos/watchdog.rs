//! Steps 5 and 6: db-0's node cut off, its watchdog powers it off before
//! the replica is deleted: because its permit lapsed and its agent stopped
//! feeding (step 5), or because its agent was frozen (step 6).

use std::process::Command;
use std::time::{Duration, Instant};

use kube_fencer_testkit::Cut;
use kube_fencer_testkit::realnode::{RealCluster, now_ms, rfc3339_ms, secs};

use super::{Run, TTR_BOUND, WATCHDOG_SLACK, WATCHDOG_TIMEOUT, db_pod, pvc_uid, replaced};

/// When step 5 saw what, in ms since the epoch.
#[derive(Default)]
struct CutSeen {
    /// The time of the agent's "PERMIT LAPSED" log line.
    decision: Option<i64>,
    /// When the watchdog fired (its state file).
    fired: Option<i64>,
    /// When the old db-0 was last seen.
    last_present: Option<i64>,
}

/// Step 5: cut db-0's node off (link down): its permit lapses and its
/// agent stops feeding (the "decision"), its watchdog fires within the
/// watchdog timeout of that and powers it off, and the old db-0 is deleted
/// only after that; heal, boot, unfenced again.
pub(super) fn step_5_cut_self_fence(run: &mut Run) {
    let c = &run.c;
    let cut = run.db_node.clone();
    c.step(format!("6: cut {cut} off; its watchdog must power it off"));
    if c.leader_node().as_deref() == Some(cut.as_str()) {
        c.fail(format!("db-0 is on the leader's node {cut}"));
    }
    let db_uid3 = db_pod(c).unwrap_or_default().uid;
    let uids_before = run.pod_uids();
    let log_lines_before = c.agent_log(&cut).lines().count();
    let t_cut = now_ms();
    c.cut(&cut, Cut::LinkDown)
        .unwrap_or_else(|e| c.fail(format!("cut {cut} down failed: {e:#}")));
    c.say(format!("{cut} cut off (eth0 down)"));
    let (seen, t_recovered2) = watch_cut(c, &cut, &db_uid3, log_lines_before, t_cut);
    let (t_decision, t_fired, t_last_present) = check_fired_first(c, &cut, &seen, t_cut);
    let db4 = db_pod(c).unwrap_or_default();
    if db4.node == cut {
        c.fail(format!("db-0 back on {cut}"));
    }
    if pvc_uid(c) != run.pvc {
        c.fail("claim data-db-0 has a new UID");
    }
    let uids_after = run.pod_uids();
    if let Some(p) = replaced(&uids_before, &uids_after, |n| n != cut) {
        c.fail(format!("{p} (healthy) was deleted or replaced"));
    }
    if c.phase(&cut) != "fenced" {
        c.fail(format!("{cut} is not Fenced"));
    }
    let ttr2 = t_recovered2 - t_cut;
    c.pass(format!("cut {cut}: permit lapsed at +{} s, watchdog fired {} s later (bound {WATCHDOG_TIMEOUT}+{WATCHDOG_SLACK} s) and powered it off; old db-0 still there at +{} s (after the fire), db-0 Running on {} (uid {}, same claim) {} s after the cut; other pods kept their UIDs",
        secs(t_decision - t_cut), secs(t_fired - t_decision), secs(t_last_present - t_cut), db4.node, db4.uid, secs(ttr2)));

    c.step(format!("6: heal and boot {cut}"));
    let t_unfence2 = run.heal_and_boot(&cut);
    run.fig.cut_decision = t_decision - t_cut;
    run.fig.cut_watchdog = t_fired - t_decision;
    run.fig.cut_ttr = ttr2;
    run.fig.cut_unfence = t_unfence2;
    run.db_node = db4.node;
}

/// What step 5 saw, checked: the agent's decision, its watchdog firing
/// within the timeout of it (its on-expire command ran, the node is off),
/// the old db-0 still there after that. The times of the decision, the
/// fire and the old db-0's last sighting.
fn check_fired_first(c: &RealCluster, cut: &str, seen: &CutSeen, t_cut: i64) -> (i64, i64, i64) {
    let t_decision = seen
        .decision
        .unwrap_or_else(|| c.fail(format!("no 'PERMIT LAPSED' in {cut}'s agent log")));
    let t_fired = seen
        .fired
        .unwrap_or_else(|| c.fail(format!("{cut}'s watchdog never fired")));
    if t_fired < t_decision {
        c.fail(format!(
            "{cut}'s watchdog fired {} s before its permit lapsed",
            secs(t_decision - t_fired)
        ));
    }
    if t_fired > t_decision + (WATCHDOG_TIMEOUT + WATCHDOG_SLACK) * 1000 {
        c.fail(format!("{cut}'s watchdog fired {} s after its permit lapsed (more than {WATCHDOG_TIMEOUT}+{WATCHDOG_SLACK} s)", secs(t_fired - t_decision)));
    }
    if !c.dir.join("wd").join(format!("{cut}.fired-at")).exists() {
        c.fail("the watchdog's on-expire command did not run");
    }
    if c.power_state(cut) != "off" {
        c.fail(format!("{cut} is not off after its watchdog fired"));
    }
    let t_last_present = seen
        .last_present
        .unwrap_or_else(|| c.fail("the old db-0 was never seen after the cut"));
    if t_last_present <= t_fired {
        c.fail(format!(
            "the old db-0 was gone before {cut}'s watchdog fired (last seen +{} s, fired +{} s)",
            secs(t_last_present - t_cut),
            secs(t_fired - t_cut)
        ));
    }
    (t_decision, t_fired, t_last_present)
}

/// Poll every 0.5 s until a new db-0 is Running and Ready (or fail after
/// TTR_BOUND): the cut node's decision (its agent log after
/// `log_lines_before`), its watchdog firing, the old db-0 (`db_uid`) last
/// seen; and when the new one was Ready.
fn watch_cut(
    c: &RealCluster,
    cut: &str,
    db_uid: &str,
    log_lines_before: usize,
    t_cut: i64,
) -> (CutSeen, i64) {
    let mut seen = CutSeen::default();
    let deadline = Instant::now() + Duration::from_secs(TTR_BOUND);
    let t_recovered = loop {
        if Instant::now() >= deadline {
            c.fail(format!(
                "db-0 not Running on another node within {TTR_BOUND}s of the cut"
            ));
        }
        if seen.decision.is_none()
            && let Some(line) = c
                .agent_log(cut)
                .lines()
                .skip(log_lines_before)
                .find(|l| l.contains("PERMIT LAPSED"))
        {
            let t = line
                .split(' ')
                .next()
                .and_then(rfc3339_ms)
                .unwrap_or_else(|| c.fail(format!("no time in the log line {line}")));
            seen.decision = Some(t);
            c.say(format!(
                "{cut}'s permit lapsed at +{} s: its agent stopped feeding",
                secs(t - t_cut)
            ));
        }
        if seen.fired.is_none() && c.wd_field(cut, "state") == "fired" {
            let f: i64 = c.wd_field(cut, "fired_unix_ms").parse().unwrap_or(0);
            seen.fired = Some(f);
            c.say(format!("{cut}'s watchdog fired at +{} s", secs(f - t_cut)));
        }
        let db = db_pod(c);
        if db.as_ref().is_some_and(|d| d.uid == db_uid) {
            seen.last_present = Some(now_ms());
        }
        if let Some(d) = &db
            && !d.uid.is_empty()
            && d.uid != db_uid
            && d.phase == "Running"
            && d.ready
        {
            break now_ms();
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    (seen, t_recovered)
}

/// Step 6: cut db-0's node off (packets dropped) and freeze its agent
/// (SIGSTOP) 2 s later: its watchdog, no longer fed, fires within its
/// timeout of the freeze and powers the node off before the old db-0 is
/// force-deleted; heal, boot, unfenced again.
pub(super) fn step_6_cut_frozen_agent(run: &mut Run) {
    let c = &run.c;
    let frozen = run.db_node.clone();
    c.step(format!(
        "7: cut {frozen} off and freeze its agent; its watchdog must power it off"
    ));
    if c.leader_node().as_deref() == Some(frozen.as_str()) {
        c.fail(format!("db-0 is on the leader's node {frozen}"));
    }
    c.wait_until(30, &format!("{frozen}'s watchdog armed and fed"), || {
        c.wd_armed_fed(&frozen, WATCHDOG_TIMEOUT)
    });
    let db_uid5 = db_pod(c).unwrap_or_default().uid;
    let (t_cut3, t_freeze) = cut_and_freeze(c, &frozen);
    let (t_fired3, t_last3, t_recovered3) = watch_frozen(c, &frozen, &db_uid5, t_freeze);
    if t_fired3 < t_freeze - 1000 {
        c.fail(format!(
            "{frozen}'s watchdog fired before its agent was frozen"
        ));
    }
    if t_fired3 > t_freeze + (WATCHDOG_TIMEOUT + WATCHDOG_SLACK) * 1000 {
        c.fail(format!("{frozen}'s watchdog fired {} s after the freeze (more than {WATCHDOG_TIMEOUT}+{WATCHDOG_SLACK} s)", secs(t_fired3 - t_freeze)));
    }
    if c.power_state(&frozen) != "off" {
        c.fail(format!("{frozen} is not off after its watchdog fired"));
    }
    let t_last3 = t_last3.unwrap_or_else(|| c.fail("the old db-0 was never seen after the cut"));
    if t_last3 <= t_fired3 {
        c.fail(format!(
            "the old db-0 was gone before {frozen}'s watchdog fired"
        ));
    }
    let ttr3 = t_recovered3 - t_cut3;
    c.pass(format!("froze {frozen}'s agent on a cut-off node: its watchdog fired {} s after the freeze (bound {WATCHDOG_TIMEOUT}+{WATCHDOG_SLACK} s) and powered it off; old db-0 still there at +{} s, db-0 Running elsewhere {} s after the cut",
        secs(t_fired3 - t_freeze), secs(t_last3 - t_cut3), secs(ttr3)));

    c.step(format!("7: heal and boot {frozen}"));
    let t_unfence3 = run.heal_and_boot(&frozen);
    run.fig.frozen_watchdog = t_fired3 - t_freeze;
    run.fig.frozen_ttr = ttr3;
    run.fig.frozen_unfence = t_unfence3;
}

/// Cut `frozen` off (packets dropped) and SIGSTOP its agent 2 s later;
/// the times of the cut and of the freeze.
fn cut_and_freeze(c: &RealCluster, frozen: &str) -> (i64, i64) {
    let apid = c
        .node_pid(frozen, &["-x", "kube-fencer"])
        .unwrap_or_else(|| c.fail(format!("no kube-fencer process in {frozen}'s cgroup")));
    let t_cut3 = now_ms();
    c.cut(frozen, Cut::Blackhole)
        .unwrap_or_else(|e| c.fail(format!("cut {frozen} drop failed: {e:#}")));
    std::thread::sleep(Duration::from_secs(2));
    let stopped = Command::new("kill")
        .args(["-STOP", &apid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    if !stopped {
        c.fail(format!("cannot SIGSTOP {frozen}'s agent (pid {apid})"));
    }
    let t_freeze = now_ms();
    c.say(format!(
        "{frozen} cut off (packets dropped), its agent (pid {apid}) frozen 2 s later"
    ));
    (t_cut3, t_freeze)
}

/// Poll every 0.5 s until a new db-0 is Running and Ready (or fail after
/// TTR_BOUND): when the frozen node's watchdog fired (it must), when the
/// old db-0 (`db_uid`) was last seen, when the new one was Ready.
fn watch_frozen(
    c: &RealCluster,
    frozen: &str,
    db_uid: &str,
    t_freeze: i64,
) -> (i64, Option<i64>, i64) {
    let (mut t_fired3, mut t_last3) = (None::<i64>, None::<i64>);
    let deadline = Instant::now() + Duration::from_secs(TTR_BOUND);
    let t_recovered3 = loop {
        if Instant::now() >= deadline {
            c.fail(format!(
                "db-0 not Running on another node within {TTR_BOUND}s of the cut"
            ));
        }
        if t_fired3.is_none() && c.wd_field(frozen, "state") == "fired" {
            let f: i64 = c.wd_field(frozen, "fired_unix_ms").parse().unwrap_or(0);
            t_fired3 = Some(f);
            c.say(format!(
                "{frozen}'s watchdog fired {} s after the freeze",
                secs(f - t_freeze)
            ));
        }
        let db = db_pod(c);
        if db.as_ref().is_some_and(|d| d.uid == db_uid) {
            t_last3 = Some(now_ms());
        }
        if let Some(d) = &db
            && !d.uid.is_empty()
            && d.uid != db_uid
            && d.phase == "Running"
            && d.ready
        {
            break now_ms();
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let t_fired3 = t_fired3.unwrap_or_else(|| {
        c.fail(format!(
            "{frozen}'s watchdog never fired although its agent was frozen"
        ))
    });
    (t_fired3, t_last3, t_recovered3)
}
