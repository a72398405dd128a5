//! Step 7: the default DaemonSet deleted (every agent withdraws and
//! disarms its watchdog; no node goes down), daemonset/unprivileged/
//! applied under Pod Security "restricted", and a node powered off with
//! nothing to fence it: it stays Fencing and cordoned, none of its pods is
//! deleted; booted, unfenced.

use std::process::{Command, Stdio};
use std::time::Duration;

use kube_fencer_testkit::realnode::{NS, RealCluster, now_ms, secs};

use super::{NODES, Run, capable_line, db_pod, replaced};

/// Step 7: uninstall, the unprivileged variant, a node it cannot fence
/// powered off and booted.
pub(super) fn step_7_unprivileged(run: &mut Run) {
    uninstall_default(run);
    let leader = apply_unprivileged(run);
    let c = &run.c;
    let mut victim5 = db_pod(c).unwrap_or_default().node;
    if victim5 == leader {
        victim5 = NODES.iter().find(|n| **n != leader).unwrap().to_string();
    }
    power_off_unfenceable(run, &leader, &victim5);
    run.c.step(format!("8: boot {victim5}"));
    run.fig.unpriv_unfence = run.heal_and_boot(&victim5);
}

/// Delete the default DaemonSet: every agent pod gone, every node's
/// arming in this boot withdrawn from its permit object, its watchdog
/// stopped (not fired), Ready.
fn uninstall_default(run: &Run) {
    let c = &run.c;
    c.step("8: uninstall the default DaemonSet; every agent withdraws and disarms its watchdog");
    let ds = c
        .repo
        .join("daemonset/10-daemonset.yaml")
        .display()
        .to_string();
    let deleted = Command::new("timeout")
        .arg("90")
        .arg(c.bin_dir.join("kubectl"))
        .arg("--kubeconfig")
        .arg(c.kubeconfig())
        .args(["delete", "-f", &ds, "--wait=true", "--timeout=80s"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !deleted {
        c.fail("kubectl delete -f daemonset/10-daemonset.yaml failed");
    }
    c.wait_until(60, "every agent pod gone", || {
        c.kubectl(&[
            "-n",
            NS,
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/name=kube-fencer",
            "-o",
            "name",
        ])
        .is_ok_and(|o| o.trim().is_empty())
    });
    for n in NODES {
        // An arming of an earlier boot may stay (it proves nothing about
        // this one); this boot's must be gone.
        let armed = c.permit_annotation(n, "kube-fencer.io/armed");
        if armed["boot"] == c.boot_id(n).as_str() {
            c.fail(format!(
                "{n}'s permit object still records the arming {armed} of this boot after its agent stopped"
            ));
        }
        let st = c.wd_field(n, "state");
        if st != "stopped" {
            c.fail(format!(
                "{n}'s watchdog is {st} after its agent's graceful stop (the magic close stops it)"
            ));
        }
        if c.ready_status(n) != "True" {
            c.fail(format!("{n} is not Ready"));
        }
    }
    c.pass("default DaemonSet deleted: every agent withdrew its arming from its permit object and disarmed its watchdog (stopped, not fired); every node still up");
}

/// `kubectl apply -f daemonset/unprivileged/` under Pod Security
/// "restricted": every agent Ready, a leader, every node advertising
/// selfFence none and not self-fence capable. The leader's node.
fn apply_unprivileged(run: &mut Run) -> String {
    let c = &run.c;
    c.step("8: kubectl apply -f daemonset/unprivileged/ under Pod Security 'restricted'");
    let t = now_ms();
    c.kubectl(&[
        "label",
        "--overwrite",
        "namespace",
        NS,
        "pod-security.kubernetes.io/enforce=restricted",
    ])
    .unwrap_or_else(|e| c.fail(format!("cannot label namespace {NS}: {e:#}")));
    c.kubectl(&["apply", "-f", "daemonset/unprivileged/"])
        .unwrap_or_else(|e| {
            c.fail(format!(
                "kubectl apply -f daemonset/unprivileged/ failed: {e:#}"
            ))
        });
    c.wait_until(180, "an unprivileged agent pod Running and Ready on every real node (Pod Security 'restricted' admitted them)", || run.all_agents_ready());
    let t_unpriv = now_ms() - t;
    c.wait_until(
        30,
        "a leader elected (Lease kube-fencer/kube-fencer-leader)",
        || c.leader_node().is_some(),
    );
    let leader = c.leader_node().unwrap_or_default();
    for n in NODES {
        c.wait_until(30, &format!("{n} advertises selfFence none"), || {
            run.self_fence_is(n, "none")
        });
        let m = c.node_metrics(n).unwrap_or_else(|e| {
            c.fail(format!(
                "GET /metrics of the unprivileged agent on {n} failed: {e:#}"
            ))
        });
        if !m.lines().any(|l| l == "kube_fencer_self_fence_capable 0") {
            c.fail(format!("{n}: {}", capable_line(&m)));
        }
    }
    c.pass(format!("unprivileged agents Running and Ready on all three nodes {} s after apply, admitted under 'restricted'; leader on {leader}; every node advertises selfFence none, /metrics says kube_fencer_self_fence_capable 0", secs(t_unpriv)));
    run.fig.unpriv_ready = t_unpriv;
    leader
}

/// Power `victim5` off with nothing to fence it: recorded Fencing, the
/// leader reports it, and 75 s later it is still only Fencing, untainted
/// and cordoned, every pod bound to it kept, a FencingStarted Event.
fn power_off_unfenceable(run: &mut Run, leader: &str, victim5: &str) {
    let c = &run.c;
    c.step(format!(
        "8: power {victim5} off with no way to fence it: nothing may be deleted"
    ));
    let uids_before = run.pod_uids();
    let t_off5 = now_ms();
    c.realnode("poweroff", &[victim5])
        .unwrap_or_else(|e| c.fail(format!("realnode.sh poweroff {victim5} failed: {e:#}")));
    c.wait_until(60, &format!("{victim5} recorded Fencing"), || {
        c.phase(victim5) == "fencing"
    });
    let t_fencing5 = now_ms() - t_off5;
    let want = format!("kube_fencer_external_fencing_required{{node=\"{victim5}\"}} 1");
    c.wait_until(
        30,
        &format!("the leader reports kube_fencer_external_fencing_required for {victim5}"),
        || {
            c.node_metrics(leader)
                .is_ok_and(|m| m.lines().any(|l| l == want))
        },
    );
    hold_fencing(c, victim5, t_off5);
    let uids_after = run.pod_uids();
    if let Some(p) = replaced(&uids_before, &uids_after, |n| n == victim5) {
        c.fail(format!("{p} of the unfenceable {victim5} was deleted"));
    }
    if !c.cordoned(victim5) {
        c.fail(format!("{victim5} is not cordoned"));
    }
    let started = c
        .kubectl_json(&[
            "get",
            "events",
            "-A",
            "--field-selector",
            "reason=FencingStarted",
        ])
        .is_ok_and(|v| {
            v["items"]
                .as_array()
                .is_some_and(|es| es.iter().any(|e| e["involvedObject"]["name"] == victim5))
        });
    if !started {
        c.fail(format!("no FencingStarted Event for {victim5}"));
    }
    c.pass(format!("{victim5} powered off: recorded Fencing at +{} s and cordoned, the leader reports kube_fencer_external_fencing_required; 75 s later it is still only Fencing, untainted, and every pod bound to it kept its UID", secs(t_fencing5)));
    run.fig.unpriv_fencing = t_fencing5;
}

/// Until 75 s after the power-off (`t_off5`), `victim5` stays Fencing and
/// untainted.
fn hold_fencing(c: &RealCluster, victim5: &str, t_off5: i64) {
    // Past --fence-timeout and what the safe time would have been (48 s
    // after the last heartbeat, at most 10 s before the power-off), with
    // margin.
    while now_ms() - t_off5 < 75_000 {
        let p = c.phase(victim5);
        if p != "fencing" {
            c.fail(format!("{victim5} is '{p}' without a way to fence it"));
        }
        if c.out_of_service(victim5) {
            c.fail(format!(
                "{victim5} tainted out-of-service without a way to fence it"
            ));
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}
