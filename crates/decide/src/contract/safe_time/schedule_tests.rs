//! The safe time against the agent's own schedule: the real self-check
//! core ([`crate::agent::self_check`]) driven on a virtual clock through
//! the worst cases each term stands for, and the moment it reaches its
//! verdict (or its watchdog permit lapses) compared with the safe time. The
//! bounds come from running the core, never from the formula: each
//! scenario below is laid out so the core's verdict comes as late as the
//! agent's schedule allows, so that dropping a term of the safe time (or a
//! summand of it) that the scenario needs makes the safe time come before
//! the node is off.

use std::time::{Duration, Instant};

use super::*;
use crate::agent::self_check::{CheckSettings, Command, Input, SelfCheck};
use crate::agent::watchdog_timing::PERMIT_GRACE;
use crate::contract::advert::SelfFenceAction;
use crate::testutil::mono;

const S: fn(u64) -> Duration = Duration::from_secs;
const MS: fn(u64) -> Duration = Duration::from_millis;

/// One agent configuration and the leader's terms.
#[derive(Clone, Copy, Debug)]
struct Cfg {
    i: Duration,
    t: Duration,
    k: u32,
    silence: Duration,
    watchdog: Duration,
    /// `--unreachable-after` (the agent's `kubeletStaleAfter` unless `old`).
    x: Duration,
    /// An older agent that does not advertise `kubeletStaleAfter`.
    old: bool,
    heartbeat: Duration,
    margin: Duration,
}

impl Cfg {
    fn defaults() -> Self {
        Cfg {
            i: S(5),
            t: S(2),
            k: 3,
            silence: S(10),
            watchdog: S(10),
            x: S(20),
            old: false,
            heartbeat: S(10),
            margin: S(5),
        }
    }

    fn check(&self) -> CheckSettings {
        CheckSettings {
            api_check_interval: self.i,
            api_check_timeout: self.t,
            api_failure_threshold: self.k,
            peer_silence_timeout: self.silence,
            action: SelfFenceAction::Watchdog,
            watchdog_timeout: self.watchdog,
            static_peers: true,
            kubelet_stale_after: (!self.old).then_some(self.x),
        }
    }

    fn advert(&self) -> AgentAdvert {
        AgentAdvert {
            self_fence: SelfFenceAction::Watchdog,
            watchdog_timeout: self.watchdog,
            api_check_interval: self.i,
            api_check_timeout: self.t,
            api_failure_threshold: self.k,
            peer_silence_timeout: self.silence,
            boot_id: "b".into(),
            peer_address: None,
            self_fence_unavailable: None,
            kubelet_stale_after: (!self.old).then_some(self.x),
            permit_fence: None,
        }
    }

    /// The leader's safe time for a heartbeat at `hb`, the record written
    /// `recorded` later.
    fn safe(&self, hb: Instant, recorded: Duration) -> Instant {
        let l = LeaderTerms {
            unreachable_after: self.x,
            heartbeat_interval: self.heartbeat,
            margin: self.margin,
        };
        safe_time(&self.advert(), hb, hb + recorded, &l).at
    }
}

/// What the peers answer, as a function of when they are asked.
#[derive(Clone, Copy, Debug)]
enum Peers {
    /// Cut off: nobody answers (each waits out its timeout).
    Silent,
    /// They reach the API: no record until `record`, then Fencing; each
    /// answer comes `read` after the question and reflects that moment, or
    /// (`early`) the moment of the question (the peer read the Node at
    /// once, its answer took the rest of the time).
    Reporting {
        record: Instant,
        read: Duration,
        early: bool,
    },
}

/// The agent's kubelet renewed at `hb` (and never again); the agent is in
/// contact with the API until `contact` (a probe answered at that very
/// moment, as late in the interval as it can be), then cut from it.
/// Returns when the core decided to fence, or, with `hang`, when its
/// watchdog permit lapsed plus the grace (its loop hangs right after the
/// contact). `None`: no verdict within an hour.
fn run(c: &Cfg, hb: Instant, contact: Instant, peers: Peers, hang: bool) -> Option<Instant> {
    let names: Vec<String> = vec!["p0".into(), "p1".into()];
    let mut sc = SelfCheck::new(c.check(), hb, Some("b".into()), None);
    let mut permit = None;
    let mut queue: Vec<(Instant, Input)> = vec![
        (hb, Input::Peers(names.clone())),
        (
            hb,
            Input::KubeletLease {
                age: Duration::ZERO,
            },
        ),
    ];
    // Contact every 100 ms until one interval before `contact` (the watch
    // events of a connected agent), so the check at `contact` probes.
    let mut t = hb;
    while t + c.i < contact {
        queue.push((t, Input::ApiResponse));
        t += MS(100);
    }
    let mut now = hb;
    let end = hb + S(3600);
    while now < end {
        queue.sort_by_key(|(at, _)| *at);
        let next_input = queue.first().map(|(at, _)| *at);
        let wake = sc.next_wake();
        let (at, cmds) = match next_input {
            Some(at) if at <= wake => {
                let (at, input) = queue.remove(0);
                (at, sc.handle(at, input))
            }
            _ => (wake, sc.tick(wake)),
        };
        now = at.max(now);
        for cmd in cmds {
            match cmd {
                // Answered at once while in contact; never after.
                Command::Probe { .. } if now <= contact && now + c.i >= contact => {
                    queue.push((now, Input::ProbeDone { ok: true }));
                }
                Command::AskPeers { peers: asked, .. } => {
                    if let Peers::Reporting {
                        record,
                        read,
                        early,
                    } = peers
                    {
                        let seen = if early { now } else { now + read };
                        let phase = (seen >= record).then_some(crate::Phase::Fencing);
                        for p in asked {
                            let reply = crate::agent::self_check::PeerReply {
                                api_reachable: true,
                                phase,
                                boot_id: Some("b".into()),
                            };
                            queue.push((
                                now + read,
                                Input::PeerReply {
                                    peer: p,
                                    reply: Some(reply),
                                },
                            ));
                        }
                    }
                }
                Command::PermitFeeding { until } => permit = Some(until),
                Command::SelfFence { .. } => return Some(now),
                _ => {}
            }
        }
        if hang && now >= contact {
            return permit.map(|p| p + PERMIT_GRACE);
        }
    }
    None
}

/// The node is off by the safe time: the verdict, then the watchdog, then
/// the margin.
fn assert_covered(c: &Cfg, hb: Instant, recorded: Duration, verdict: Instant, what: &str) {
    let off = verdict + c.watchdog + c.margin;
    let safe = c.safe(hb, recorded);
    assert!(
        safe >= off,
        "{what}: the node is off {:?} after its last heartbeat (with the margin), the safe time is {:?}: {c:?}",
        off - hb,
        safe - hb
    );
}

/// The kubelet died first; the agent, still in contact, was cut off just
/// before the Fencing record (written at `x`) reached it (1 s later), and
/// its check loop hung there: the watchdog is fed until the permit of its
/// last check runs out, then the feeding thread waits the grace.
#[test]
fn a_loop_hung_just_before_the_record_arrived_is_covered() {
    for c in configs() {
        let hb = mono(0);
        let contact = hb + c.x + RECORD_DELIVERY - MS(1);
        let v = run(&c, hb, contact, Peers::Silent, true).expect("a permit");
        assert_covered(&c, hb, c.x, v, "hung");
    }
}

/// The same cut, the loop running, the peers silent: isolation (rule 5,
/// or rule 5b once the kubelet has been stale for `x`).
#[test]
fn an_agent_cut_off_just_before_the_record_arrived_is_covered() {
    for c in configs() {
        for old in [false, true] {
            let c = Cfg { old, ..c };
            let hb = mono(0);
            let contact = hb + c.x + RECORD_DELIVERY - MS(1);
            let v = run(&c, hb, contact, Peers::Silent, false).expect("isolated");
            assert_covered(&c, hb, c.x, v, "isolated after a late contact");
        }
    }
}

/// The whole node cut off at once, every phase of the cut within one
/// heartbeat interval after the last renewal: rule 5b waits for the
/// kubelet to go stale for `x`.
#[test]
fn a_node_cut_off_with_its_kubelet_is_covered() {
    for c in configs() {
        for old in [false, true] {
            let c = Cfg { old, ..c };
            let hb = mono(0);
            for tenth in 0..=10 {
                let contact = hb + c.heartbeat * tenth / 10;
                let v = run(&c, hb, contact, Peers::Silent, false).expect("isolated");
                assert_covered(&c, hb, c.x, v, "isolated with the kubelet");
            }
        }
    }
}

/// Cut from the API only, long before the record: the peers keep
/// answering that they see no record, then pass it on (rule 3), the
/// record written at `recorded` (late, when the storm guard held it). The
/// latest case: a peer read the Node just before the record and its answer
/// took the whole wait, and the next check's probe and answer as long.
#[test]
fn an_agent_whose_peers_pass_on_the_record_is_covered() {
    for c in configs() {
        let hb = mono(0);
        let a = peer_answer_timeout(c.t);
        let p = failing_check_period(c.i, c.t);
        for recorded in [c.x, c.x + S(37)] {
            for early in [false, true] {
                for tenth in 0..=10 {
                    let read = (a * tenth / 10).clamp(MS(1), a - MS(1));
                    for phase in 0..50 {
                        let contact = hb + MS(1) + p * phase / 50;
                        let peers = Peers::Reporting {
                            record: hb + recorded,
                            read,
                            early,
                        };
                        let v = run(&c, hb, contact, peers, false).expect("reported");
                        assert_covered(&c, hb, recorded, v, "reported");
                    }
                }
            }
        }
    }
}

/// The defaults, the benchmark's tight timings, and configurations where
/// checks are spaced by their own length (`2t + 1 > i`), the silence is
/// long, the threshold high.
fn configs() -> Vec<Cfg> {
    let d = Cfg::defaults();
    vec![
        d,
        Cfg {
            i: S(1),
            t: MS(500),
            silence: S(3),
            watchdog: S(5),
            x: S(6),
            heartbeat: S(3),
            margin: S(3),
            ..d
        },
        Cfg {
            i: S(1),
            t: S(5),
            ..d
        },
        Cfg {
            silence: S(30),
            ..d
        },
        Cfg { k: 7, ..d },
        Cfg {
            i: S(12),
            t: S(1),
            k: 1,
            silence: MS(1),
            ..d
        },
    ]
}
