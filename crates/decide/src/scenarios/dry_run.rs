//! Dry run: the same decisions as a real run, with nothing written.

use super::*;

/// A busy scenario: used to compare a dry run with a real run.
fn busy(dry: bool) -> Sim {
    let mut sim = Sim::new();
    sim.nodes(&["n1", "n2", "n3", "n4", "n5", "n6", "n7", SELF_NODE]);
    sim.get_mut("n2").facts.taints = vec![Taint {
        key: "dedicated".into(),
        value: Some("db".into()),
        effect: "NoSchedule".into(),
    }];
    sim.get_mut("n3").facts.unschedulable = true;
    if dry {
        sim.dry_run();
    }
    sim.sync();
    for n in ["n1", "n2", "n3"] {
        sim.sts_pod(n, &format!("db/{n}-0"), "db");
        sim.pod(
            n,
            &format!("web/{n}-x"),
            Some(("apps/v1", "ReplicaSet", "web")),
            vec![],
        );
    }
    sim.pod(
        "n2",
        "db/vol-0",
        Some(("apps/v1", "StatefulSet", "vol")),
        vec![claim("data", "pv-9", true)],
    );
    sim.va("va-9", "n2", "pv-9");
    sim.run_until(5);
    sim.kill("n1");
    sim.run_until(12);
    sim.kill("n2");
    sim.run_until(50);
    sim.kill("n3");
    sim.run_until(90);
    sim.revive("n3"); // comes back while fencing
    sim.run_until(200);
    sim.revive("n1");
    sim.run_until(400);
    sim
}

#[test]
fn a_dry_run_decides_exactly_like_a_real_run_and_changes_nothing() {
    let real = busy(false);
    let dry = busy(true);
    let intents: Vec<(u64, &str, &NodeIntent)> = real
        .log
        .iter()
        .filter_map(|l| match &l.action {
            Action::UpdateNode { node, intent, .. } => {
                Some((l.at.as_secs(), node.as_str(), intent))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        intents,
        vec![
            (20, "n1", &begin()),
            (30, "n2", &begin()),
            (60, "n1", &mark()),
            (70, "n2", &mark()),
            (70, "n3", &begin()),
            (120, "n3", &unfence()),
            (230, "n1", &unfence()),
        ]
    );
    assert_eq!(real.deleted_pods().len(), 3);
    assert_eq!(dry.log, real.log);
    // The real run changed the world; the dry run did not.
    let untouched = {
        let mut s = Sim::new();
        s.nodes(&["n1", "n2", "n3", "n4", "n5", "n6", "n7", SELF_NODE]);
        s.get_mut("n2").facts.taints = dry.get("n2").facts.taints.clone();
        s.get_mut("n3").facts.unschedulable = true;
        s
    };
    for n in ["n1", "n2", "n3", "n4", "n5"] {
        let (d, u) = (&dry.get(n).facts, &untouched.get(n).facts);
        assert_eq!(
            (
                &d.resource_version,
                &d.labels,
                d.unschedulable,
                &d.taints,
                &d.record
            ),
            (
                &u.resource_version,
                &u.labels,
                u.unschedulable,
                &u.taints,
                &u.record
            ),
            "{n}"
        );
    }
    assert_eq!(dry.world.pods.len(), 7);
    assert_eq!(dry.world.vas.len(), 1);
    assert!(real.world.pods.len() < 7);
    assert!(real.world.vas.is_empty());
    assert_ne!(real.get("n2").facts, untouched.get("n2").facts);
    // The overlay is what the dry run saw instead.
    let overlay = dry.memory.dry_run.as_ref().unwrap();
    assert_eq!(overlay.deleted_attachments.len(), 1);
    assert!(overlay.nodes.contains_key("n2"));
    assert!(
        !overlay.nodes.contains_key("n1"),
        "unfenced: back to the observed facts"
    );
    assert!(!overlay.nodes.contains_key("n3"));
}
