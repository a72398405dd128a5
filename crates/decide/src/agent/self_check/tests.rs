use super::*;
use crate::FenceRecord;
use crate::agent::self_fence::Reason;
use crate::testutil::{mono, wall0};

const S: fn(u64) -> Duration = Duration::from_secs;

fn settings() -> CheckSettings {
    CheckSettings {
        api_check_interval: S(5),
        api_check_timeout: S(2),
        api_failure_threshold: 3,
        peer_silence_timeout: S(10),
        action: SelfFenceAction::Watchdog,
        watchdog_timeout: S(10),
        static_peers: false,
        kubelet_stale_after: None,
    }
}

fn check() -> SelfCheck {
    SelfCheck::new(settings(), mono(0), Some("b1".into()), None)
}

fn peers(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("p{i}")).collect()
}

fn probes(cmds: &[Command]) -> usize {
    cmds.iter()
        .filter(|c| matches!(c, Command::Probe { .. }))
        .count()
}

fn asked(cmds: &[Command]) -> Option<Vec<String>> {
    cmds.iter().find_map(|c| match c {
        Command::AskPeers { peers, .. } => Some(peers.clone()),
        _ => None,
    })
}

fn fences(cmds: &[Command]) -> bool {
    cmds.iter().any(|c| matches!(c, Command::SelfFence { .. }))
}

fn permit(cmds: &[Command]) -> Option<Instant> {
    cmds.iter().find_map(|c| match c {
        Command::PermitFeeding { until } => Some(*until),
        _ => None,
    })
}

/// Tick at `t`, answering advertisements and peer refreshes at once;
/// every command issued.
fn drive(c: &mut SelfCheck, t: Instant, n: usize) -> Vec<Command> {
    let mut all = c.tick(t);
    let mut i = 0;
    while i < all.len() {
        let more = match &all[i] {
            Command::Advertise { .. } => c.handle(t, Input::Advertised { ok: true }),
            Command::RefreshPeers => c.handle(t, Input::Peers(peers(n))),
            _ => Vec::new(),
        };
        all.extend(more);
        i += 1;
    }
    all
}

/// A connected agent: contact at 0, advertised, peers known, probed
/// successfully at 5.
fn connected(n: usize) -> SelfCheck {
    let mut c = check();
    assert!(c.handle(mono(0), Input::ApiResponse).is_empty());
    // The first check at once.
    assert_eq!(c.next_wake(), mono(0));
    // Advertise and refresh the peers beside the check; fed until the
    // next check (at 5) has had time to end: probe 2 s, peers 3 s.
    let out = c.tick(mono(0));
    assert_eq!(
        out,
        vec![
            Command::Advertise {
                boot_id: "b1".into()
            },
            Command::RefreshPeers,
            Command::VerdictChanged(Verdict::Healthy),
            Command::PermitFeeding { until: mono(5 + 5) }
        ]
    );
    assert!(c.handle(mono(0), Input::Advertised { ok: true }).is_empty());
    assert!(c.handle(mono(0), Input::Peers(peers(n))).is_empty());
    assert_eq!(c.next_wake(), mono(5));
    // At 5: no contact for an interval: probe; refresh peers (5 s back-off).
    let out = c.tick(mono(5));
    assert_eq!(probes(&out), 1);
    let out = c.handle(mono(5), Input::ProbeDone { ok: true });
    assert_eq!(out[0], Command::RefreshPeers);
    assert_eq!(permit(&out), Some(mono(10 + 5)));
    c.handle(mono(5), Input::Peers(peers(n)));
    assert_eq!(c.next_wake(), mono(10));
    c
}

#[test]
fn contact_within_the_interval_needs_no_probe() {
    let mut c = connected(3);
    // Contact every 4 s: no probe, ever.
    for t in (6..100).step_by(4) {
        c.handle(mono(t), Input::WatchItem { data: true });
        if c.next_wake() <= mono(t + 1) {
            let out = c.tick(c.next_wake());
            assert_eq!(probes(&out), 0, "at {t}: {out:?}");
        }
        // Answer peer refreshes as they come.
        if c.refreshing.is_some() {
            c.handle(mono(t), Input::Peers(peers(3)));
        }
    }
    assert_eq!(c.verdict(), &Verdict::Healthy);
    assert_eq!(c.failures(), 0);
}

#[test]
fn isolated_agent_follows_the_schedule_and_fences() {
    // Last contact at 5 (the probe); nothing answers from then on.
    let mut c = connected(3);
    let mut t = c.next_wake();
    let mut fenced_at = None;
    let mut probe_times = Vec::new();
    while t < mono(60) && fenced_at.is_none() {
        let out = c.tick(t);
        if probes(&out) > 0 {
            probe_times.push(t);
        }
        if let Some(p) = asked(&out) {
            assert_eq!(p, peers(3));
        }
        if fences(&out) {
            fenced_at = Some(t);
        }
        t = c.next_wake();
    }
    // Probes at 10, 15, 20: each probe 2 s + asking 3 s = 5 s.
    assert_eq!(probe_times, vec![mono(10), mono(15), mono(20)]);
    // The first failure ends at 12; the third check ends at 20 + 2 + 3
    // = 25, past the silence of 10 s: i + 2p + t + a after the contact.
    assert_eq!(fenced_at, Some(mono(25)));
    assert!(matches!(
        c.verdict(),
        Verdict::SelfFence(Reason::Isolated { known: 3, .. })
    ));
    assert!(c.previous().self_fence_decided);
    c.handle(mono(30), Input::SelfFenceDone { ok: true });
    assert!(c.fenced());
}

/// Run a cut-off agent (nothing answers after the contact at 5) until
/// it fences or 60 s pass; when it fenced, with which verdict.
fn run_cut_off(mut c: SelfCheck) -> (Option<Instant>, Verdict) {
    let mut t = c.next_wake();
    let mut fenced_at = None;
    while t < mono(60) && fenced_at.is_none() {
        if fences(&c.tick(t)) {
            fenced_at = Some(t);
        }
        t = c.next_wake();
    }
    (fenced_at, c.verdict().clone())
}

/// A connected agent with rule 5b on (`--unreachable-after` 20 s).
fn connected_5b(n: usize) -> SelfCheck {
    let mut c = connected(n);
    c.s.kubelet_stale_after = Some(S(20));
    c
}

#[test]
fn a_stale_kubelet_fences_after_one_failed_check() {
    // The kubelet renewed at -18 (by the Lease's renewTime, seen at 0):
    // stale for more than 20 s from 2 on. The contact at 5 is the last;
    // the first check fails at 10 + 2, nobody answers by 15: isolated
    // then (rule 5b), not at 25 (rule 5).
    let mut c = connected_5b(3);
    c.handle(mono(0), Input::KubeletLease { age: S(18) });
    let (at, v) = run_cut_off(c);
    assert_eq!(at, Some(mono(15)));
    assert!(
        matches!(
            v,
            Verdict::SelfFence(Reason::IsolatedKubeletStale {
                answered: 0,
                known: 3,
                kubelet: self_fence::KubeletStale::For(d)
            }) if d == S(33)
        ),
        "{v:?}"
    );
}

#[test]
fn a_kubelet_renewed_recently_leaves_the_full_schedule() {
    // Renewed at 0 (seen at once): not stale before 20, so the checks
    // ending at 15 and 20 follow rules 2 and 5; the one ending at 25 is
    // isolated by either rule.
    let mut c = connected_5b(3);
    c.handle(mono(0), Input::KubeletLease { age: S(0) });
    // A renewal seen late but older than the one known changes nothing.
    c.handle(mono(4), Input::KubeletLease { age: S(30) });
    let (at, _) = run_cut_off(c);
    assert_eq!(at, Some(mono(25)));
    // The same renewal with rule 5b off.
    let mut c = connected(3);
    c.handle(mono(0), Input::KubeletLease { age: S(0) });
    assert_eq!(run_cut_off(c).0, Some(mono(25)));
    // A renewal that stays fresh through the checks (seen at 4, made
    // then), and the threshold well above the schedule: rule 5.
    let mut c = connected_5b(3);
    c.s.kubelet_stale_after = Some(S(100));
    c.handle(mono(4), Input::KubeletLease { age: S(0) });
    let (at, v) = run_cut_off(c);
    assert_eq!(at, Some(mono(25)));
    assert!(
        matches!(v, Verdict::SelfFence(Reason::Isolated { .. })),
        "{v:?}"
    );
}

#[test]
fn no_renewal_seen_counts_as_stale() {
    let (at, v) = run_cut_off(connected_5b(3));
    assert_eq!(at, Some(mono(15)));
    assert!(
        matches!(
            v,
            Verdict::SelfFence(Reason::IsolatedKubeletStale {
                kubelet: self_fence::KubeletStale::NeverSeen,
                ..
            })
        ),
        "{v:?}"
    );
    // A renewal older than the clock can express is no renewal either.
    let mut c = connected_5b(3);
    c.handle(mono(0), Input::KubeletLease { age: Duration::MAX });
    assert_eq!(run_cut_off(c).0, Some(mono(15)));
}

/// Run `c` for 200 s with every peer answering that it cannot reach
/// the API either; it must never fence.
fn run_outage(c: &mut SelfCheck) {
    let mut t = c.next_wake();
    while t < mono(200) {
        let out = c.tick(t);
        assert!(!fences(&out), "{out:?}");
        for peer in asked(&out).unwrap_or_default() {
            let reply = PeerReply {
                api_reachable: false,
                phase: None,
                boot_id: None,
            };
            let o = c.handle(
                t + S(1),
                Input::PeerReply {
                    peer,
                    reply: Some(reply),
                },
            );
            assert!(!fences(&o), "{o:?}");
        }
        t = c.next_wake();
    }
}

#[test]
fn a_stale_kubelet_in_an_outage_does_not_fence() {
    // Rule 4 comes before rule 5b, however stale the kubelet.
    let mut c = connected_5b(3);
    run_outage(&mut c);
    assert!(matches!(c.verdict(), Verdict::ControlPlaneOutage { .. }));
}

#[test]
fn peers_that_cannot_reach_the_api_mean_an_outage() {
    let mut c = connected(3);
    run_outage(&mut c);
    assert!(matches!(c.verdict(), Verdict::ControlPlaneOutage { .. }));
    assert!(c.failures() > 3);
}

#[test]
fn a_peer_reporting_my_record_fences_at_the_first_failure() {
    let mut c = connected(3);
    let mut t = c.next_wake();
    let mut fenced_at = None;
    while t < mono(60) && fenced_at.is_none() {
        let out = c.tick(t);
        if let Some(p) = asked(&out) {
            for peer in p {
                let reply = PeerReply {
                    api_reachable: true,
                    phase: Some(Phase::Fencing),
                    boot_id: Some("b1".into()),
                };
                let o = c.handle(
                    t,
                    Input::PeerReply {
                        peer,
                        reply: Some(reply),
                    },
                );
                if fences(&o) {
                    fenced_at = Some(t);
                }
            }
        }
        t = c.next_wake();
    }
    // Rule 3 from the first failed check (ending at 12) on.
    assert_eq!(fenced_at, Some(mono(12)));
    // A record of another boot is satisfied already.
    let mut c = connected(3);
    let mut t = c.next_wake();
    while t < mono(25) {
        let out = c.tick(t);
        if let Some(p) = asked(&out) {
            for peer in p {
                let reply = PeerReply {
                    api_reachable: true,
                    phase: Some(Phase::Fenced),
                    boot_id: Some("b0".into()),
                };
                let o = c.handle(
                    t,
                    Input::PeerReply {
                        peer,
                        reply: Some(reply),
                    },
                );
                assert!(!fences(&o));
            }
        }
        t = c.next_wake();
    }
}

fn record(phase: Phase, boot: &str) -> RecordState {
    RecordState::Valid(FenceRecord {
        phase,
        fencing_since: wall0(),
        fenced_at: None,
        cordoned: true,
        tainted: false,
        by: "leader".into(),
        held_since: None,
        boot_id: Some(boot.into()),
    })
}

#[test]
fn own_record_while_connected_fences_at_once() {
    let mut c = connected(3);
    c.handle(mono(6), Input::WatchItem { data: true });
    // The record arrives: a check at once (contact is fresh: no probe).
    let out = c.handle(mono(7), Input::OwnRecord(record(Phase::Fencing, "b1")));
    assert_eq!(probes(&out), 0);
    assert!(fences(&out), "{out:?}");
    // Deciding to fence ends the permits.
    assert_eq!(permit(&out), None);
    assert_eq!(
        permit(&c.handle(mono(10), Input::SelfFenceDone { ok: true })),
        None
    );
    // A record of an earlier boot does not.
    let mut c = connected(3);
    c.handle(mono(7), Input::OwnRecord(record(Phase::Fenced, "b0")));
    c.handle(mono(8), Input::WatchItem { data: true });
    assert!(!fences(&drive(&mut c, mono(10), 3)));
}

#[test]
fn a_new_boot_id_resets_and_readvertises() {
    let mut c = connected(3);
    c.handle(mono(6), Input::WatchItem { data: true });
    assert!(fences(&c.handle(
        mono(7),
        Input::OwnRecord(record(Phase::Fencing, "b1"))
    )));
    c.handle(mono(10), Input::SelfFenceDone { ok: true });
    assert!(c.fenced());
    // Unreadable: not a reboot.
    c.handle(mono(11), Input::BootId(None));
    assert!(c.fenced());
    c.handle(mono(11), Input::BootId(Some("b2".into())));
    assert!(!c.fenced());
    c.handle(mono(12), Input::WatchItem { data: true });
    let out = c.tick(c.next_wake());
    assert_eq!(
        out[0],
        Command::Advertise {
            boot_id: "b2".into()
        }
    );
}

#[test]
fn unanswered_steps_fail_at_their_deadline() {
    let mut c = connected(3);
    // Probe never answered: failure at 10 + 2; peers asked then.
    assert_eq!(probes(&c.tick(mono(10))), 1);
    assert_eq!(c.next_wake(), mono(12));
    let out = c.tick(mono(12));
    assert_eq!(c.failures(), 1);
    assert_eq!(asked(&out), Some(peers(3)));
    // Peers never answer: verdict at 12 + 3.
    assert_eq!(c.next_wake(), mono(15));
    let out = c.tick(mono(15));
    // Fed until the next failing check (at 15) has had time to end.
    assert_eq!(out, vec![Command::PermitFeeding { until: mono(20) }]);
    assert_eq!(c.verdict(), &Verdict::Healthy);
    // Next check at 10 + 5 (started + interval).
    assert_eq!(c.next_wake(), mono(15));
}

#[test]
fn peers_refresh_on_their_back_off() {
    let mut c = connected(3);
    let mut refreshes = vec![0, 5];
    let mut t = mono(5);
    while t < mono(700) {
        c.handle(t, Input::WatchItem { data: true });
        let wake = c.next_wake();
        if wake <= t + S(4) {
            let out = c.tick(wake);
            if out.contains(&Command::RefreshPeers) {
                refreshes.push(wake.duration_since(mono(0)).as_secs());
                c.handle(wake, Input::Peers(peers(3)));
            }
            if out.iter().any(|c| matches!(c, Command::Advertise { .. })) {
                c.handle(wake, Input::Advertised { ok: true });
                let out = c.tick(wake);
                assert!(out.is_empty());
            }
        }
        t += S(4);
    }
    // First refresh at 5; then +5, +10, +20, +40, +80, +160, +300 (on
    // the check schedule, which runs every 5 s with contact every 4 s).
    let gaps: Vec<u64> = refreshes.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.len() >= 6, "{refreshes:?}");
    for (g, want) in gaps.iter().zip([5, 10, 20, 40, 80, 160, 300]) {
        assert!(*g >= want && *g < want + 5, "{refreshes:?}");
    }
}

#[test]
fn peers_that_do_not_answer_count_as_asked() {
    // Two of three peers answer "no API" and one is silent: a majority
    // of the three answered, so this is an outage (rule 4), not an
    // isolation of a node that knows no peers.
    let mut c = connected(3);
    let mut t = c.next_wake();
    while t < mono(120) {
        let out = c.tick(t);
        assert!(!fences(&out), "{:?}", c.verdict());
        for peer in asked(&out).unwrap_or_default() {
            let reply = (peer != "p2").then_some(PeerReply {
                api_reachable: false,
                phase: None,
                boot_id: None,
            });
            let o = c.handle(t, Input::PeerReply { peer, reply });
            assert!(!fences(&o), "{:?}", c.verdict());
        }
        t = c.next_wake();
    }
    assert_eq!(
        c.verdict(),
        &Verdict::ControlPlaneOutage {
            unreachable: 2,
            answered: 2
        }
    );
    // All three silent: isolated, out of three known peers.
    let mut c = connected(3);
    let mut t = c.next_wake();
    while !c.verdict().self_fence() && t < mono(60) {
        let out = c.tick(t);
        for peer in asked(&out).unwrap_or_default() {
            c.handle(t, Input::PeerReply { peer, reply: None });
        }
        t = c.next_wake();
    }
    assert!(matches!(
        c.verdict(),
        Verdict::SelfFence(Reason::Isolated { known: 3, .. })
    ));
}

#[test]
fn a_hanging_advertisement_does_not_delay_the_first_probe() {
    // The advertisement is due again (READVERTISE) at the check right
    // before the cut, and its write hangs: the probe still comes one
    // interval after the last contact, and fails on time.
    let mut c = connected(3);
    let t0 = mono(5) + READVERTISE;
    c.handle(t0, Input::WatchItem { data: true });
    let out = c.tick(c.next_wake().max(t0));
    assert!(
        out.iter().any(|c| matches!(c, Command::Advertise { .. })),
        "{out:?}"
    );
    // Never answered. The next check: no contact since t0.
    assert_eq!(c.next_wake(), t0 + S(5));
    let out = c.tick(t0 + S(5));
    assert_eq!(probes(&out), 1);
    c.tick(t0 + S(7));
    assert_eq!(c.failures(), 1);
}

#[test]
fn a_hung_loop_lets_the_permit_lapse() {
    // Connected, contact every 4 s: every completed check renews the
    // permit to at most the end of the next one (interval + longest
    // check = 5 + 5 s). When the loop stops, feeding ends by then.
    let mut c = connected(3);
    let mut last = None;
    let mut t = mono(6);
    while t < mono(60) {
        c.handle(t, Input::WatchItem { data: true });
        while c.next_wake() <= t + S(4) {
            let wake = c.next_wake();
            let out = drive(&mut c, wake, 3);
            if let Some(until) = permit(&out) {
                assert!(until <= wake + S(10), "{until:?} at {wake:?}");
                assert!(
                    until > c.next_wake(),
                    "the next check must end before the permit"
                );
                last = Some(until);
            }
        }
        t += S(4);
    }
    let last = last.expect("permits were issued");
    // The loop hangs at 60: nothing is fed after the last permit.
    assert!(last <= mono(60) + S(10));
}

fn previous(contact: u64, decided: bool) -> Previous {
    Previous {
        boot_id: "b1".into(),
        last_contact: Some(mono(contact)),
        self_fence_decided: decided,
        peers: peers(3),
    }
}

#[test]
fn a_restarted_agent_cut_off_feeds_nothing_and_fences_at_once() {
    // Last contact at 0, restarted at 30: the failure run goes on from
    // there (first failure at 0 + 5 + 2), so the first check, failing
    // with its peers silent, is the verdict; nothing was fed.
    let mut c = SelfCheck::new(
        settings(),
        mono(30),
        Some("b1".into()),
        Some(previous(0, false)),
    );
    assert_eq!(c.failures(), 5);
    let mut all = c.tick(mono(30));
    assert_eq!(probes(&all), 1);
    let out = c.handle(mono(32), Input::ProbeDone { ok: false });
    assert_eq!(asked(&out), Some(peers(3)));
    all.extend(out.clone());
    for peer in peers(3) {
        all.extend(c.handle(mono(35), Input::PeerReply { peer, reply: None }));
    }
    assert!(fences(&all), "{all:?}");
    assert_eq!(permit(&all), None);
    assert!(matches!(
        c.verdict(),
        Verdict::SelfFence(Reason::Isolated { known: 3, .. })
    ));
}

#[test]
fn a_restarted_agent_feeds_after_contact_or_an_outage_verdict() {
    // Contact: fed.
    let mut c = SelfCheck::new(
        settings(),
        mono(30),
        Some("b1".into()),
        Some(previous(0, false)),
    );
    assert_eq!(probes(&c.tick(mono(30))), 1);
    let out = c.handle(mono(30), Input::ProbeDone { ok: true });
    assert!(permit(&out).is_some(), "{out:?}");
    // Peers that cannot reach the API either: an outage, fed.
    let mut c = SelfCheck::new(
        settings(),
        mono(30),
        Some("b1".into()),
        Some(previous(0, false)),
    );
    c.tick(mono(30));
    let mut all = c.handle(mono(32), Input::ProbeDone { ok: false });
    for peer in peers(3) {
        let reply = Some(PeerReply {
            api_reachable: false,
            phase: None,
            boot_id: None,
        });
        all.extend(c.handle(mono(33), Input::PeerReply { peer, reply }));
    }
    assert!(matches!(c.verdict(), Verdict::ControlPlaneOutage { .. }));
    assert!(permit(&all).is_some(), "{all:?}");
    // Restarted soon after the last contact: not yet failing, and not
    // fed before contact either.
    let mut c = SelfCheck::new(
        settings(),
        mono(3),
        Some("b1".into()),
        Some(previous(0, false)),
    );
    assert_eq!(c.failures(), 0);
    let mut all = c.tick(mono(3));
    all.extend(c.handle(mono(5), Input::ProbeDone { ok: false }));
    for peer in peers(3) {
        all.extend(c.handle(mono(8), Input::PeerReply { peer, reply: None }));
    }
    assert_eq!(permit(&all), None, "{all:?}");
}

#[test]
fn a_decision_survives_a_restart() {
    let mut c = SelfCheck::new(
        settings(),
        mono(30),
        Some("b1".into()),
        Some(previous(0, true)),
    );
    let out = c.tick(mono(30));
    assert!(fences(&out));
    assert_eq!(permit(&out), None);
    // A record of another boot is not resumed.
    let mut p = previous(0, true);
    p.boot_id = "b0".into();
    let mut c = SelfCheck::new(settings(), mono(30), Some("b1".into()), Some(p));
    assert_eq!(c.failures(), 0);
    assert!(!fences(&c.tick(mono(30))));
}

#[test]
fn batches_rotate_through_every_peer() {
    let peers = peers(70);
    let mut cursor = 0;
    let mut seen = BTreeSet::new();
    for _ in 0..3 {
        let b = next_batch(&peers, &mut cursor);
        assert_eq!(b.len(), PEER_BATCH);
        seen.extend(b);
    }
    assert_eq!(seen.len(), 70);
    assert!(next_batch(&[], &mut cursor).is_empty());
}

#[test]
fn a_fast_failing_network_is_no_contact() {
    // The watches restart every second (an Init item each time) while
    // every request fails at once: the agent probes, and with its peers
    // silent it fences itself on the isolation schedule.
    let mut c = connected(3);
    let mut t = mono(6);
    let mut fenced_at = None;
    while t < mono(60) && fenced_at.is_none() {
        let out = c.handle(t, Input::WatchItem { data: false });
        assert!(!fences(&out));
        while c.next_wake() <= t + S(1) && fenced_at.is_none() {
            let wake = c.next_wake().max(t);
            let out = c.tick(wake);
            if probes(&out) > 0 {
                let o = c.handle(wake, Input::ProbeDone { ok: false });
                for peer in asked(&o).unwrap_or_default() {
                    if fences(&c.handle(wake, Input::PeerReply { peer, reply: None })) {
                        fenced_at = Some(wake);
                    }
                }
            }
            if fences(&out) {
                fenced_at = Some(wake);
            }
        }
        t += S(1);
    }
    // Last contact at 5: failures at 10, 15, 20, the third past the silence.
    assert_eq!(fenced_at, Some(mono(20)), "{:?}", c.verdict());
}
