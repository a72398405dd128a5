//! Unfencing: when a node that came back is given back.

use super::*;

#[test]
fn a_flapping_node_is_not_unfenced_until_steady_for_healthy_after() {
    let mut sim = cluster();
    sim.run_until(5);
    sim.kill("n1");
    sim.run_until(70);
    assert_eq!(sim.updates("n1", mark()), vec![60]);
    // Comes back with gaps of exactly unreachable_after: each renewal restarts the streak.
    sim.revive("n1");
    sim.get_mut("n1").renew_every = secs(20);
    sim.run_until(300);
    assert!(sim.updates("n1", unfence()).is_empty());
    // Gaps just under: a steady streak; unfenced once it lasted healthy_after.
    sim.get_mut("n1").renew_every = secs(19);
    let start = sim.get("n1").next_renewal.as_secs(); // the next renewal still follows a 20 s gap
    sim.run_until(start + 29);
    assert!(sim.updates("n1", unfence()).is_empty());
    sim.run_until(start + 30);
    assert_eq!(sim.updates("n1", unfence()), vec![start + 30]);
}

#[test]
fn ready_flipping_delays_unfencing() {
    let mut sim = cluster();
    sim.run_until(5);
    sim.kill("n1");
    sim.run_until(70);
    sim.revive("n1");
    // Ready flips False for a second every 25 s: never Ready for healthy_after.
    for k in 0..10 {
        sim.run_until(70 + 25 * k + 24);
        sim.set_ready("n1", Readiness::False);
        sim.tick();
        sim.set_ready("n1", Readiness::True);
    }
    assert!(sim.updates("n1", unfence()).is_empty());
    let t = sim.t.as_secs();
    sim.run_until(t + 29);
    assert!(sim.updates("n1", unfence()).is_empty());
    sim.run_until(t + 30);
    assert_eq!(sim.updates("n1", unfence()), vec![t + 30]);
}

#[test]
fn unfencing_needs_the_lease_streak_as_well_as_ready() {
    // Ready for long, Lease streak short: wait for the streak.
    let obs_with = |streak: u64, ready: u64, readiness: Readiness| {
        let mut f = testutil::facts("n1");
        f.ready = readiness;
        // Fenced during an earlier boot: the node has rebooted since.
        f.record = fenced_record(Some("boot-0"));
        let heartbeat = Heartbeat {
            last_renewal: mono(1000),
            streak_since: mono(1000 - streak),
        };
        let obs = only_node(f, heartbeat, Some(mono(1000 - ready)));
        decide(&obs, now_at(1000), &settings())
    };
    let obs_for = |streak, ready| obs_with(streak, ready, Readiness::True);
    // Ready must be True now, whatever ready_since says.
    assert!(obs_with(500, 500, Readiness::False).actions.is_empty());
    assert!(obs_with(500, 500, Readiness::Unknown).actions.is_empty());
    assert!(obs_for(29, 500).actions.is_empty());
    assert_eq!(obs_for(29, 500).report.next_wakeup, Some(mono(1001)));
    assert!(obs_for(500, 29).actions.is_empty());
    assert_eq!(obs_for(500, 29).report.next_wakeup, Some(mono(1001)));
    assert_eq!(obs_for(30, 30).actions.len(), 1);
}

/// An operator's `kube-fencer.io/unfence=true` on a node kube-fencer has
/// not fenced means nothing now, but left in place it would unfence the
/// node's next fencing as soon as its Lease is fresh, without a reboot.
#[test]
fn an_unfence_request_on_a_node_without_a_record_is_removed() {
    let mut sim = cluster();
    sim.run_until(5);
    sim.get_mut("n1").facts.unfence_requested = true;
    sim.run_until(6);
    assert!(
        !sim.get("n1").facts.unfence_requested,
        "the override is removed"
    );
    // Fenced later, it reconnects without a reboot: it stays fenced.
    sim.kill("n1");
    sim.run_until(70);
    assert_eq!(sim.status("n1"), NodeStatus::Fenced);
    sim.reconnect("n1");
    sim.run_until(300);
    assert!(sim.updates("n1", unfence()).is_empty());
    assert_eq!(sim.status("n1"), NodeStatus::Fenced);
}

/// The override set just before the fencing begins (in the same pass):
/// the fencing starts fresh, without it.
#[test]
fn a_fencing_that_begins_drops_an_unfence_request_set_before_it() {
    let mut sim = cluster();
    sim.run_until(5);
    sim.kill("n1");
    sim.run_until(19);
    sim.get_mut("n1").facts.unfence_requested = true;
    sim.run_until(20);
    assert_eq!(sim.updates("n1", begin()), vec![20]);
    assert!(
        !sim.get("n1").facts.unfence_requested,
        "the override is removed with the fencing's first write"
    );
    sim.run_until(70);
    assert_eq!(sim.status("n1"), NodeStatus::Fenced);
    sim.reconnect("n1");
    sim.run_until(300);
    assert!(sim.updates("n1", unfence()).is_empty());
    assert_eq!(sim.status("n1"), NodeStatus::Fenced);
}
