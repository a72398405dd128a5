//! Property tests of the decision core: safety invariants over random
//! observations and over random event sequences in the simulated world.

use proptest::prelude::*;
use proptest::strategy::Strategy;

use super::Strategy as FenceStrategy;
use super::sim::{Sim, secs};
use super::testutil::{SELF_NODE, mono, now_at, settings, wall0};
use super::*;
use crate::leader::{guard, patch, recover};
use std::time::Duration;

const NOW: u64 = 1000;

fn taint_pool() -> Vec<Taint> {
    vec![
        Taint::out_of_service(),
        Taint {
            key: OUT_OF_SERVICE_TAINT_KEY.into(),
            value: Some("manual".into()),
            effect: "NoSchedule".into(),
        },
        Taint {
            key: OUT_OF_SERVICE_TAINT_KEY.into(),
            value: Some(OUT_OF_SERVICE_TAINT_VALUE.into()),
            effect: "NoSchedule".into(),
        },
        Taint {
            key: "node.kubernetes.io/unreachable".into(),
            value: None,
            effect: "NoExecute".into(),
        },
        Taint {
            key: "dedicated".into(),
            value: Some("db".into()),
            effect: "NoSchedule".into(),
        },
    ]
}

fn arb_settings() -> impl Strategy<Value = Settings> {
    (
        prop_oneof![
            (0u32..=100).prop_map(MaxUnhealthy::Percent),
            (0u32..5).prop_map(MaxUnhealthy::Count)
        ],
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(max, oos, rwo, cp, sel)| {
            let mut s = settings();
            s.max_unhealthy = max;
            s.strategy = if oos {
                FenceStrategy::OutOfService
            } else {
                FenceStrategy::DeletePods
            };
            s.delete_pods_with_rwo_volumes = rwo;
            s.manage_control_plane = cp;
            // Whether a fence command is configured: derived from the rwo
            // flag's sibling to keep the tuple small but both cases covered.
            s.fence_command = rwo ^ cp;
            if sel {
                s.node_selector = Selector::parse("pool!=b").unwrap();
            }
            s
        })
}

fn arb_record() -> impl Strategy<Value = RecordState> {
    prop_oneof![
        2 => Just(RecordState::Absent),
        3 => (any::<bool>(), any::<bool>(), any::<bool>(), 0u64..200, any::<bool>()).prop_map(|(fenced, cordoned, tainted, since_ago, held)| {
            // Written up to 200 s before the decision (the other times are
            // up to ~150 s old), sometimes held by a storm guard.
            let since = wall0() + Duration::from_secs(NOW - since_ago);
            RecordState::Valid(FenceRecord {
                phase: if fenced { Phase::Fenced } else { Phase::Fencing },
                fencing_since: since,
                fenced_at: fenced.then_some(since),
                cordoned,
                tainted,
                by: "someone".into(),
                boot_id: None,
                held_since: held.then_some(since),
            })
        }),
        1 => Just(RecordState::Malformed("bad".into())),
    ]
}

fn arb_ready() -> impl Strategy<Value = Readiness> {
    prop_oneof![
        Just(Readiness::True),
        Just(Readiness::False),
        Just(Readiness::Unknown)
    ]
}

fn arb_node(name: String) -> impl Strategy<Value = NodeObs> {
    (
        (
            proptest::option::of(prop_oneof![Just("true"), Just("false")]),
            proptest::option::of(prop_oneof![Just("a"), Just("b")]),
            any::<bool>(),
        ),
        arb_record(),
        proptest::option::of((0u64..200, 0u64..200)),
        arb_ready(),
        proptest::option::of(0u64..200),
        any::<bool>(),
        proptest::sample::subsequence(taint_pool(), 0..=5),
        proptest::bool::weighted(0.3),
        (0u8..6, any::<bool>(), 0u8..3, 0u8..3),
    )
        .prop_map(
            move |(
                (exclude, pool, cp),
                record,
                hb,
                ready,
                ready_for,
                unsched,
                taints,
                shuffle,
                (agent, unfence_requested, record_boot, kubelet_boot),
            )| {
                let mut f = testutil::facts(&name);
                f.kubelet_boot_id = match kubelet_boot {
                    0 => None,
                    1 => Some("boot-1".into()),
                    _ => Some("boot-0".into()),
                };
                if let Some(v) = exclude {
                    f.labels.insert(EXCLUDE_LABEL.into(), v.into());
                }
                if let Some(p) = pool {
                    f.labels.insert("pool".into(), p.into());
                }
                if cp {
                    f.labels
                        .insert(CONTROL_PLANE_LABELS[0].into(), String::new());
                }
                f.record = record;
                if let RecordState::Valid(r) = &mut f.record {
                    r.boot_id = match record_boot {
                        0 => None,
                        1 => Some("boot-1".into()),
                        _ => Some("boot-0".into()),
                    };
                }
                f.agent = match agent {
                    0 => AdvertState::Absent,
                    1 => AdvertState::Malformed("bad".into()),
                    2 => AdvertState::Valid(AgentAdvert {
                        self_fence: SelfFenceAction::None,
                        ..testutil::advert()
                    }),
                    3 => AdvertState::Valid(AgentAdvert {
                        // A safe time (130 s) longer than the fence timeout.
                        watchdog_timeout: Duration::from_secs(100),
                        ..testutil::advert()
                    }),
                    4 => AdvertState::Valid(AgentAdvert {
                        // Rule 5b: one failed check once the kubelet is stale.
                        kubelet_stale_after: Some(Duration::from_secs(6)),
                        ..testutil::advert()
                    }),
                    _ => AdvertState::Valid(testutil::advert()),
                };
                f.unfence_requested = unfence_requested;
                f.ready = ready;
                f.unschedulable = unsched;
                f.taints = taints;
                if shuffle {
                    f.taints.reverse();
                }
                NodeObs {
                    facts: f,
                    heartbeat: hb.map(|(age, streak)| Heartbeat {
                        last_renewal: mono(NOW - age),
                        streak_since: mono(NOW - age - streak),
                    }),
                    ready_since: ready_for.map(|d| mono(NOW - d)),
                    boot_since: None,
                }
            },
        )
}

fn arb_pod(nodes: Vec<String>) -> impl Strategy<Value = (usize, PodObs)> {
    let n = nodes.len();
    (
        0..n,
        0..n,
        prop_oneof![
            Just(None),
            Just(Some(("apps/v1", "StatefulSet"))),
            Just(Some(("apps/v1", "DaemonSet"))),
            Just(Some(("apps/v1", "ReplicaSet"))),
            Just(Some(("apps/v1beta2", "StatefulSet"))),
            Just(Some(("batch/v1", "Job"))),
        ],
        proptest::collection::vec((0u8..4, any::<bool>(), any::<bool>()), 0..3),
        0u32..1_000_000,
    )
        .prop_map(move |(listed, on, owner, claims, uid)| {
            (
                listed,
                PodObs {
                    namespace: "ns".into(),
                    name: format!("p{uid}"),
                    uid: format!("u{uid}"),
                    resource_version: Some("1".into()),
                    node: nodes[on].clone(),
                    controller: owner.map(|(a, k)| OwnerRef {
                        api_version: a.into(),
                        kind: k.into(),
                        name: "owner".into(),
                    }),
                    claims: claims
                        .into_iter()
                        .map(|(pv, bound, rwo)| ClaimObs {
                            claim: format!("c{pv}"),
                            volume: bound.then(|| format!("pv{pv}")),
                            read_write_once: rwo,
                        })
                        .collect(),
                },
            )
        })
}

fn arb_obs() -> impl Strategy<Value = Observations> {
    (1usize..7, proptest::bool::weighted(0.9), any::<bool>())
        .prop_flat_map(|(n, synced, with_self)| {
            let mut names: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
            if with_self {
                names[0] = SELF_NODE.to_string();
            }
            let nodes: Vec<_> = names.iter().map(|nm| arb_node(nm.clone())).collect();
            let vas = proptest::collection::vec((0..n, 0u8..4, 0u32..1000), 0..6);
            (
                Just(names.clone()),
                Just(synced),
                nodes,
                proptest::collection::vec(arb_pod(names), 0..12),
                vas,
                proptest::collection::vec(0u8..4, n),
                proptest::collection::vec(proptest::option::weighted(0.7, 0u64..200), n),
            )
        })
        .prop_map(|(names, synced, nodes, pods, vas, cmds, reads)| {
            let mut obs = Observations {
                synced,
                ..Default::default()
            };
            // Consistent Lease reads, from just now to long ago (before or
            // after the last renewal seen).
            for (name, read) in names.iter().zip(reads) {
                if let Some(ago) = read {
                    obs.lease_confirmed
                        .insert(name.clone(), mono(NOW) - Duration::from_millis(ago * 25));
                }
            }
            for (name, cmd) in names.iter().zip(cmds) {
                let state = match cmd {
                    0 => continue,
                    1 => FenceCommandState::Running { attempt: 1 },
                    2 => FenceCommandState::Succeeded { attempt: 1 },
                    _ => FenceCommandState::Failed {
                        attempt: 1,
                        at: mono(NOW - 3),
                        error: "exit 1".into(),
                    },
                };
                obs.fence_commands.insert(name.clone(), state);
            }
            for (name, node) in names.iter().zip(nodes) {
                obs.nodes.insert(name.clone(), node);
            }
            for (listed, pod) in pods {
                obs.pods.entry(names[listed].clone()).or_default().push(pod);
            }
            obs.volume_attachments = vas
                .into_iter()
                .map(|(node, pv, id)| VolumeAttachmentObs {
                    name: format!("va{id}"),
                    uid: format!("va-uid{id}"),
                    resource_version: Some(format!("{pv}")),
                    node: names[node].clone(),
                    volume: Some(format!("pv{pv}")),
                })
                .collect();
            obs
        })
}

fn stale(obs: &Observations, node: &str, s: &Settings, now: Now) -> bool {
    obs.nodes[node]
        .heartbeat
        .is_some_and(|hb| hb.is_stale(now.mono, s.unreachable_after))
}

/// The invariants every single decision must satisfy.
fn check(obs: &Observations, now: Now, s: &Settings, d: &Decision) -> Result<(), TestCaseError> {
    if !obs.synced {
        prop_assert!(
            d.actions.is_empty(),
            "acted on a cold cache: {:?}",
            d.actions
        );
        return Ok(());
    }
    // Every irreversible step rests on a recent consistent read of the
    // node's Lease taken after the last renewal seen.
    let confirmed = |node: &str| {
        let hb = obs.nodes[node].heartbeat.unwrap();
        obs.lease_confirmed.get(node).is_some_and(|at| {
            *at >= hb.last_renewal && now.mono.duration_since(*at) <= LEASE_CONFIRM_VALIDITY
        })
    };
    for a in &d.actions {
        match a {
            Action::RunFenceCommand { node, .. }
            | Action::DeletePod { node, .. }
            | Action::DeleteVolumeAttachment { node, .. }
            | Action::UpdateNode {
                node,
                intent: NodeIntent::MarkFenced,
                ..
            } => prop_assert!(
                confirmed(node),
                "not confirmed by a consistent read: {:?}",
                a
            ),
            _ => {}
        }
        match a {
            Action::ConfirmLease { node, .. } => {
                let n = &obs.nodes[node];
                prop_assert!(stale(obs, node, s, now), "{:?}", a);
                prop_assert!(guard::scope(n, s).is_managed(), "{:?}", a);
                prop_assert!(n.facts.record.phase().is_some(), "{:?}", a);
                prop_assert!(!confirmed(node), "asked again: {:?}", a);
            }
            Action::RunFenceCommand { node, .. } => {
                prop_assert!(s.fence_command, "{:?}", a);
                prop_assert_eq!(obs.nodes[node].facts.record.phase(), Some(Phase::Fencing));
            }
            Action::DeletePod { node, pod, .. } => {
                let n = &obs.nodes[node];
                prop_assert_eq!(n.facts.record.phase(), Some(Phase::Fenced), "{:?}", a);
                // Never on the record of an earlier boot of the node.
                prop_assert!(n.facts.record_of_other_boot().is_none(), "{:?}", a);
                prop_assert!(stale(obs, node, s, now), "{:?}", a);
                prop_assert!(guard::scope(n, s).is_managed(), "{:?}", a);
                let listed = obs.pods[node].iter().find(|p| p.uid == pod.uid);
                prop_assert!(listed.is_some_and(|p| p.node == *node), "{:?}", a);
                let p = listed.unwrap();
                let sts = recover::statefulset_of(p).is_some();
                let rwo =
                    s.delete_pods_with_rwo_volumes && p.claims.iter().any(|c| c.read_write_once);
                prop_assert!(sts || rwo, "{:?}", a);
            }
            Action::DeleteVolumeAttachment {
                node, attachment, ..
            } => {
                prop_assert_eq!(obs.nodes[node].facts.record.phase(), Some(Phase::Fenced));
                // Exactly the attachment as listed: its UID and
                // resourceVersion are the delete's preconditions.
                let listed = obs.volume_attachments.iter().any(|v| {
                    v.uid == attachment.uid
                        && v.name == attachment.name
                        && v.resource_version == attachment.resource_version
                        && v.node == *node
                });
                prop_assert!(listed, "{:?}", a);
            }
            Action::UpdateNode { node, intent, .. } => {
                let n = &obs.nodes[node];
                if *node == s.self_node {
                    prop_assert!(
                        matches!(
                            intent,
                            NodeIntent::Unfence | NodeIntent::ClearUnfenceRequest
                        ),
                        "{:?}",
                        a
                    );
                }
                match intent {
                    NodeIntent::BeginFencing | NodeIntent::MarkFenced => {
                        prop_assert!(stale(obs, node, s, now), "fenced a fresh Lease: {:?}", a);
                        prop_assert!(guard::scope(n, s).is_managed(), "{:?}", a);
                        prop_assert!(!d.report.storm_guard.active, "{:?}", a);
                    }
                    NodeIntent::Unfence => {
                        prop_assert!(n.facts.record.valid().is_some());
                        prop_assert!(!stale(obs, node, s, now));
                    }
                    NodeIntent::ClearUnfenceRequest => {
                        // Only an override on a node observed without a record.
                        prop_assert_eq!(&n.facts.record, &RecordState::Absent, "{:?}", a);
                        prop_assert!(n.facts.unfence_requested, "{:?}", a);
                    }
                    NodeIntent::HoldFencing | NodeIntent::RestartFencing => {
                        prop_assert!(stale(obs, node, s, now), "{:?}", a);
                        prop_assert!(guard::scope(n, s).is_managed(), "{:?}", a);
                        let held = n
                            .facts
                            .record
                            .valid()
                            .is_some_and(|r| r.held_since.is_some());
                        let hold = *intent == NodeIntent::HoldFencing;
                        let other_boot = match (
                            n.facts.record.valid().and_then(|r| r.boot_id.as_deref()),
                            n.facts.current_boot(),
                        ) {
                            (Some(recorded), Ok(current)) => recorded != current,
                            _ => false,
                        };
                        // Held only while the guard is active; restarted only
                        // once it is not, and only a held record or one of
                        // another boot.
                        prop_assert_eq!(d.report.storm_guard.active, hold, "{:?}", a);
                        if hold {
                            prop_assert_eq!(n.facts.record.phase(), Some(Phase::Fencing));
                            prop_assert!(!held, "{:?}", a);
                        } else {
                            prop_assert!(held || other_boot, "{:?}", a);
                            // A Fenced record is restarted only for another boot.
                            if n.facts.record.phase() == Some(Phase::Fenced) {
                                prop_assert!(other_boot, "{:?}", a);
                            }
                        }
                    }
                }
                if *intent == NodeIntent::MarkFenced {
                    let hb = n.heartbeat.unwrap();
                    prop_assert_eq!(n.facts.record.phase(), Some(Phase::Fencing));
                    // Known fenced: powered off by the fence command, or a
                    // self-fence capable agent past both timeouts.
                    let powered_off = matches!(
                        obs.fence_commands.get(node),
                        Some(FenceCommandState::Succeeded { .. })
                    );
                    // An independent lower bound from the advertised terms
                    // (not the production formula): the agent cannot have
                    // decided before it failed `k` checks `i` apart after the
                    // last heartbeat (one check with rule 5b, whose stale
                    // kubelet it may have seen at once), nor before the
                    // Fencing record it may learn of existed; its action
                    // then takes up to the watchdog timeout, and the margin
                    // comes on top.
                    let record = n.facts.record.valid().unwrap();
                    prop_assert!(record.held_since.is_none(), "marked a held node: {:?}", a);
                    let recorded_age = now
                        .wall
                        .duration_since(record.fencing_since)
                        .unwrap_or_default();
                    let self_fenced = n.facts.agent.valid().is_some_and(|a| {
                        let action = a.watchdog_timeout + s.safe_time_margin;
                        let checks = if a.kubelet_stale_after.is_some() {
                            1
                        } else {
                            a.api_failure_threshold
                        };
                        let detect = a.api_check_interval * checks;
                        a.capable()
                            && hb.age(now.mono) >= s.fence_timeout
                            && hb.age(now.mono) >= detect + action
                            && recorded_age >= action
                    });
                    prop_assert!(powered_off || self_fenced, "not known fenced: {:?}", a);
                }
                if *intent == NodeIntent::Unfence
                    && let Some(r) = n.facts.record.valid()
                    && r.phase == Phase::Fenced
                {
                    // The reboot is proven by the kernel's boot ID as the
                    // kubelet reports it (an advertisement may be left over
                    // from the fenced boot); only when the kubelet reports
                    // none may the agent's prove it.
                    let now_reported = match n.facts.kubelet_boot_id.as_deref() {
                        Some(kubelet) => Some(kubelet),
                        None => n.facts.agent.boot_id(),
                    };
                    let rebooted = matches!(
                        (r.boot_id.as_deref(), now_reported),
                        (Some(old), Some(new)) if old != new
                    );
                    prop_assert!(
                        rebooted || n.facts.unfence_requested,
                        "unfenced without a reboot: {:?}",
                        a
                    );
                }
            }
        }
        if let Action::UpdateNode { node, .. } | Action::DeletePod { node, .. } = a {
            let unfence = matches!(
                a,
                Action::UpdateNode {
                    intent: NodeIntent::Unfence | NodeIntent::ClearUnfenceRequest,
                    ..
                }
            );
            prop_assert!(
                *node != s.self_node || unfence,
                "acted on its own node: {:?}",
                a
            );
        }
    }
    // One write per node and decision: a second one, rendered against the
    // same observed node, would only conflict with the first.
    let mut written = std::collections::BTreeSet::new();
    for a in &d.actions {
        if let Action::UpdateNode { node, .. } = a {
            prop_assert!(
                written.insert(node),
                "two writes to {}: {:?}",
                node,
                d.actions
            );
        }
    }
    if let Some(w) = d.report.next_wakeup {
        prop_assert!(w > now.mono);
    }
    Ok(())
}

/// Unfencing never touches a taint other than exactly ours, and ours only
/// when the record says kube-fencer added it.
fn check_unfence_patch(facts: &NodeFacts, s: &Settings) -> Result<(), TestCaseError> {
    let Ok(p) = patch::render(&NodeIntent::Unfence, facts, now_at(NOW), s) else {
        return Ok(());
    };
    let tainted = facts.record.valid().is_some_and(|r| r.tainted);
    let cordoned = facts.record.valid().is_some_and(|r| r.cordoned);
    if let Some(new) = &p.taints {
        prop_assert!(tainted);
        let expected: Vec<Taint> = facts
            .taints
            .iter()
            .filter(|t| **t != Taint::out_of_service())
            .cloned()
            .collect();
        prop_assert_eq!(new, &expected);
        prop_assert!(new.len() < facts.taints.len());
    }
    if let Some(u) = p.unschedulable {
        prop_assert!(!u && cordoned && facts.unschedulable);
    }
    prop_assert_eq!(p.record, Some(None));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn single_decisions_are_safe(obs in arb_obs(), s in arb_settings()) {
        let now = now_at(NOW);
        let d = decide(&obs, now, &s);
        check(&obs, now, &s, &d)?;
        prop_assert_eq!(&decide(&obs, now, &s), &d, "deterministic");
        for n in obs.nodes.values() {
            check_unfence_patch(&n.facts, &s)?;
        }
        // Every node the shell lists pods for is managed and Fenced.
        for name in nodes_needing_pods(&obs, &s) {
            prop_assert_eq!(obs.nodes[&name].facts.record.phase(), Some(Phase::Fenced));
        }
    }

    #[test]
    fn marking_fenced_never_drops_a_foreign_taint(obs in arb_obs(), s in arb_settings()) {
        for n in obs.nodes.values() {
            if let Ok(p) = patch::render(&NodeIntent::MarkFenced, &n.facts, now_at(NOW), &s)
                && let Some(new) = &p.taints
            {
                prop_assert_eq!(&new[..new.len() - 1], &n.facts.taints[..]);
                prop_assert_eq!(new.last(), Some(&Taint::out_of_service()));
                prop_assert!(matches!(&p.record, Some(Some(r)) if r.tainted));
            }
        }
    }
}

#[derive(Clone, Debug)]
enum Event {
    Advance(u64),
    Kill(usize),
    Revive(usize),
    Ready(usize, Readiness),
    RenewEvery(usize, u64),
    NewLeader,
    Unsync,
    StsPod(usize),
}

fn arb_event() -> impl Strategy<Value = Event> {
    prop_oneof![
        6 => (1u64..40).prop_map(Event::Advance),
        2 => (0usize..6).prop_map(Event::Kill),
        2 => (0usize..6).prop_map(Event::Revive),
        1 => (0usize..6, arb_ready()).prop_map(|(i, r)| Event::Ready(i, r)),
        1 => (0usize..6, 5u64..30).prop_map(|(i, e)| Event::RenewEvery(i, e)),
        1 => Just(Event::NewLeader),
        1 => Just(Event::Unsync),
        1 => (0usize..6).prop_map(Event::StsPod),
    ]
}

const NAMES: [&str; 6] = ["n0", "n1", "n2", "n3", "n4", SELF_NODE];

fn foreign() -> Taint {
    Taint {
        key: "team".into(),
        value: Some("x".into()),
        effect: "NoSchedule".into(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn event_sequences_are_safe(
        s in arb_settings(),
        events in proptest::collection::vec(arb_event(), 1..40),
        dry in proptest::bool::weighted(0.2),
    ) {
        let mut sim = Sim::with(s);
        sim.nodes(&NAMES);
        for n in NAMES {
            sim.get_mut(n).facts.taints = vec![foreign()];
        }
        if dry {
            sim.dry_run();
        }
        sim.sync();
        let mut pods = 0;
        for e in events {
            match e {
                Event::Advance(n) => {
                    for _ in 0..n {
                        let d = sim.tick();
                        let obs = sim.last_obs.clone().unwrap();
                        check(&obs, sim.now(), &sim.settings, &d)?;
                        for name in NAMES {
                            let node = sim.get(name);
                            // A live kubelet renewing well within unreachable_after is never fenced.
                            if node.alive
                                && node.renew_every < sim.settings.unreachable_after
                                && sim.log.iter().any(|l| l.at == sim.t && matches!(&l.action,
                                    Action::UpdateNode { node: n, intent: NodeIntent::BeginFencing | NodeIntent::MarkFenced, .. } if n == name))
                            {
                                let hb = obs.nodes[name].heartbeat.unwrap();
                                prop_assert!(hb.is_stale(sim.now().mono, sim.settings.unreachable_after));
                            }
                            // Foreign taints survive, first and in place.
                            prop_assert_eq!(&node.facts.taints[0], &foreign());
                            prop_assert!(node.facts.taints.len() <= 2);
                        }
                    }
                }
                Event::Kill(i) => sim.kill(NAMES[i]),
                Event::Revive(i) => sim.revive(NAMES[i]),
                Event::Ready(i, r) => sim.set_ready(NAMES[i], r),
                Event::RenewEvery(i, e) => sim.get_mut(NAMES[i]).renew_every = secs(e),
                Event::NewLeader => sim.new_leader("other-leader"),
                Event::Unsync => {
                    sim.memory.synced = false;
                    let d = sim.tick();
                    prop_assert!(d.actions.is_empty());
                    sim.sync();
                }
                Event::StsPod(i) => {
                    pods += 1;
                    sim.sts_pod(NAMES[i], &format!("ns/p{pods}"), "sts");
                }
            }
        }
        if dry {
            // A dry run never changes the world.
            for n in NAMES {
                prop_assert_eq!(&sim.get(n).facts.taints, &vec![foreign()]);
                prop_assert_eq!(&sim.get(n).facts.record, &RecordState::Absent);
                prop_assert!(!sim.get(n).facts.unschedulable);
            }
            prop_assert_eq!(sim.world.pods.len(), pods);
        }
    }
}
