//! Self-fence: the decision an agent takes about its *own* node, so that a
//! node the leader believes dead really stops running its workloads.
//!
//! | # | situation | verdict |
//! |---|---|---|
//! | 1 | connected, and my own Node carries a fencing record (Fencing or Fenced) | **self-fence now** |
//! | 2 | fewer than `--api-failure-threshold` API checks failed in a row, and rule 3 does not apply | healthy, nothing to do |
//! | 3 | API lost (from the first failed check on); a peer that reaches the API says my Node is Fencing/Fenced | **self-fence** |
//! | 4 | API lost; a majority of all my peers answered and most of them cannot reach the API either | control-plane outage: **do not** self-fence |
//! | 5 | API lost; no majority of my peers answered for `--peer-silence-timeout` | isolated: **self-fence** |
//! | 5b | my own kubelet's Lease unrenewed for `--unreachable-after` (or never seen); one API check failed; no majority of the peers asked in *this* check answered | isolated: **self-fence** |
//! | 6 | API lost; peers answer, reach the API and report me healthy (or too few answered, not yet for the timeout) | keep checking |
//!
//! Rule 4 counts answers against *all* peers asked, not only those that
//! answered: a small group of nodes cut off together (they reach each other
//! but not the API) must not take itself for "the whole cluster sees an
//! outage". Such a group is a minority, hears from fewer than half of the
//! peers it asks, and falls under rule 5. The silence of rule 5 is counted
//! from the first failed check, while the failures add up to the threshold.
//!
//! Rule 5b is rule 5 without the wait, for a node the leader is fencing by
//! now: once its own kubelet has not renewed its Lease for
//! `--unreachable-after` (the leader's threshold for a Fencing record), a
//! blip that the threshold and the silence timeout would forgive is no blip
//! any more. It needs one failed check and one round of asking, so the
//! leader's safe time ([`crate::contract::safe_time`]) counts on it instead of on the
//! whole threshold. It changes nothing in an outage of the control plane
//! alone (rule 4 still comes first: the peers answer that they cannot reach
//! the API either), and "never seen" counts as stale: an agent that does not
//! know may only fence sooner, never later.

use std::fmt;
use std::time::Duration;

use super::Phase;

/// One peer's answer, collected after the API was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerAnswer {
    /// The peer reaches the API server.
    pub api_reachable: bool,
    /// The phase the cluster records for *my* node, as the peer read it
    /// (meaningful only when `api_reachable`).
    pub my_phase: Option<Phase>,
}

/// The agent's tunables (its own flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SelfFenceSettings {
    pub api_failure_threshold: u32,
    pub peer_silence_timeout: Duration,
}

/// What the agent knows right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelfFenceInput<'a> {
    /// Consecutive failed API checks (0 = the last check succeeded).
    pub api_failures: u32,
    /// The fencing record on my own Node as read through a *working* API
    /// connection (the own-Node watch); `None` when there is none.
    pub own_phase_seen_connected: Option<Phase>,
    /// Distinct peers asked within the last `peer_silence_timeout` (all
    /// peers in a small cluster; a rotating sample of them in a large one).
    pub known_peers: usize,
    /// Answers received within the last `peer_silence_timeout`.
    pub answers: &'a [PeerAnswer],
    /// Time since the first failed API check of the current run of
    /// failures (the agent asks peers from then on).
    pub unreachable_for: Duration,
    /// `Some` once the own kubelet's Lease has gone unrenewed for
    /// `--unreachable-after` (rule 5b).
    pub kubelet_stale: Option<KubeletStale>,
    /// The peers asked in the current check, and how many of them answered
    /// (rule 5b counts only these).
    pub this_check: Round,
}

/// One check's round of asking.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Round {
    pub asked: usize,
    pub answered: usize,
}

impl Round {
    /// A majority of the peers asked answered.
    pub fn majority(&self) -> bool {
        self.answered * 2 > self.asked
    }
}

/// How stale the own kubelet's Lease is, past the threshold of rule 5b.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KubeletStale {
    /// Last renewal this long ago.
    For(Duration),
    /// No renewal seen since the agent started.
    NeverSeen,
}

impl fmt::Display for KubeletStale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KubeletStale::For(d) => write!(
                f,
                "my kubelet's Lease has not been renewed for {}",
                humantime::format_duration(Duration::from_secs(d.as_secs()))
            ),
            KubeletStale::NeverSeen => {
                write!(f, "I have seen no renewal of my kubelet's Lease")
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    /// The API is lost; waiting for peers (rule 6).
    Consulting {
        answered: usize,
        known: usize,
    },
    /// Rule 4: the control plane is down for everybody; do nothing.
    ControlPlaneOutage {
        unreachable: usize,
        answered: usize,
    },
    SelfFence(Reason),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Rule 1.
    OwnRecord(Phase),
    /// Rule 3.
    PeersReportFencing(Phase),
    /// Rule 5.
    Isolated {
        answered: usize,
        known: usize,
        silent_for: Duration,
    },
    /// Rule 5b.
    IsolatedKubeletStale {
        answered: usize,
        known: usize,
        kubelet: KubeletStale,
    },
}

impl Verdict {
    pub fn self_fence(&self) -> bool {
        matches!(self, Verdict::SelfFence(_))
    }

    /// One sentence for logs.
    pub fn describe(&self) -> String {
        match self {
            Verdict::Healthy => "API reachable".into(),
            Verdict::Consulting { answered, known } => {
                format!("API unreachable; consulting peers ({answered} of {known} answered so far)")
            }
            Verdict::ControlPlaneOutage {
                unreachable,
                answered,
            } => format!(
                "API unreachable, and {unreachable} of {answered} answering peers cannot reach it either: control-plane outage, not self-fencing"
            ),
            Verdict::SelfFence(Reason::OwnRecord(p)) => format!(
                "my own Node carries a kube-fencer record in phase {p:?}: the cluster is fencing this node"
            ),
            Verdict::SelfFence(Reason::PeersReportFencing(p)) => {
                format!("API unreachable, and peers that reach it report my Node in phase {p:?}")
            }
            Verdict::SelfFence(Reason::Isolated {
                answered,
                known,
                silent_for,
            }) => format!(
                "API unreachable and only {answered} of {known} peers answered for {}: this node is isolated",
                humantime::format_duration(Duration::from_secs(silent_for.as_secs()))
            ),
            Verdict::SelfFence(Reason::IsolatedKubeletStale {
                answered,
                known,
                kubelet,
            }) => format!(
                "API unreachable, {kubelet} (the cluster is fencing this node), and only {answered} of {known} peers answered: this node is isolated"
            ),
        }
    }
}

/// Whether a fencing record on my own Node (as I or a peer read it) still
/// concerns *this boot* of the node: a record made before my last reboot
/// (another boot ID) is already satisfied — what ran then is gone — so it
/// must not make me fence myself again (that would be a reboot loop). A
/// record without a boot ID is taken to concern me.
pub fn own_record_applies(
    phase: Option<Phase>,
    record_boot_id: Option<&str>,
    my_boot_id: &str,
) -> Option<Phase> {
    match record_boot_id {
        Some(b) if b != my_boot_id => None,
        _ => phase,
    }
}

/// The decision table above, in order.
pub fn verdict(input: &SelfFenceInput<'_>, s: &SelfFenceSettings) -> Verdict {
    // Rule 1: connected and recorded as being fenced.
    if input.api_failures == 0
        && let Some(phase) = input.own_phase_seen_connected
    {
        return Verdict::SelfFence(Reason::OwnRecord(phase));
    }
    // Rule 3 (before rule 2): someone who can see the cluster says I am
    // being fenced — from the first failed check on: the leader is fencing
    // this node, and waiting for the threshold would only let it run on.
    if input.api_failures > 0
        && let Some(phase) = input
            .answers
            .iter()
            .filter(|a| a.api_reachable)
            .find_map(|a| a.my_phase)
    {
        return Verdict::SelfFence(Reason::PeersReportFencing(phase));
    }
    // Rule 2 (rule 5b needs a single failed check).
    let threshold = if input.kubelet_stale.is_some() {
        1
    } else {
        s.api_failure_threshold.max(1)
    };
    if input.api_failures < threshold {
        return Verdict::Healthy;
    }
    let answered = input.answers.len();
    let known = input.known_peers;
    let majority_answered = answered * 2 > known;
    // Rule 4: most of the cluster answers and most of it cannot reach the API.
    let unreachable = input.answers.iter().filter(|a| !a.api_reachable).count();
    if majority_answered && unreachable * 2 > answered {
        return Verdict::ControlPlaneOutage {
            unreachable,
            answered,
        };
    }
    // Rule 5: no majority of peers heard for the whole silence timeout.
    if !majority_answered && input.unreachable_for >= s.peer_silence_timeout {
        return Verdict::SelfFence(Reason::Isolated {
            answered,
            known,
            silent_for: input.unreachable_for,
        });
    }
    // Rule 5b: the leader is fencing this node, and this check's round of
    // asking found no majority (answers kept from earlier rounds do not
    // count: the safe time gives rule 5b one check).
    if !input.this_check.majority()
        && let Some(kubelet) = input.kubelet_stale
    {
        return Verdict::SelfFence(Reason::IsolatedKubeletStale {
            answered: input.this_check.answered,
            known: input.this_check.asked,
            kubelet,
        });
    }
    // Rule 6.
    Verdict::Consulting { answered, known }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: SelfFenceSettings = SelfFenceSettings {
        api_failure_threshold: 3,
        peer_silence_timeout: Duration::from_secs(30),
    };

    fn up(my_phase: Option<Phase>) -> PeerAnswer {
        PeerAnswer {
            api_reachable: true,
            my_phase,
        }
    }

    fn down() -> PeerAnswer {
        PeerAnswer {
            api_reachable: false,
            my_phase: None,
        }
    }

    fn input(failures: u32, answers: &[PeerAnswer], known: usize, secs: u64) -> SelfFenceInput<'_> {
        SelfFenceInput {
            api_failures: failures,
            own_phase_seen_connected: None,
            known_peers: known,
            answers,
            unreachable_for: Duration::from_secs(secs),
            kubelet_stale: None,
            this_check: Round {
                asked: known,
                answered: answers.len(),
            },
        }
    }

    fn stale(mut i: SelfFenceInput<'_>, kubelet: KubeletStale) -> SelfFenceInput<'_> {
        i.kubelet_stale = Some(kubelet);
        i
    }

    #[test]
    fn rule5b_a_stale_kubelet_needs_one_failed_check_and_one_round() {
        let k = KubeletStale::For(Duration::from_secs(21));
        // One failed check, nobody answered: isolated at once.
        let v = verdict(&stale(input(1, &[], 4, 0), k), &S);
        assert_eq!(
            v,
            Verdict::SelfFence(Reason::IsolatedKubeletStale {
                answered: 0,
                known: 4,
                kubelet: k
            })
        );
        assert!(
            v.describe().contains("not been renewed for 21s"),
            "{}",
            v.describe()
        );
        assert!(
            verdict(&stale(input(1, &[], 4, 0), KubeletStale::NeverSeen), &S)
                .describe()
                .contains("no renewal")
        );
        // The same without the stale kubelet: below the threshold, healthy.
        assert_eq!(verdict(&input(1, &[], 4, 0), &S), Verdict::Healthy);
        // No failed check: nothing to decide.
        assert_eq!(
            verdict(&stale(input(0, &[], 4, 0), k), &S),
            Verdict::Healthy
        );
        // A minority answered (a group cut off together): isolated.
        let answers = [down()];
        assert!(verdict(&stale(input(1, &answers, 4, 0), k), &S).self_fence());
        // Most peers reach the API and see me healthy: keep checking.
        let answers = [up(None), up(None), up(None)];
        assert!(matches!(
            verdict(&stale(input(1, &answers, 4, 0), k), &S),
            Verdict::Consulting { .. }
        ));
        // A majority answered in earlier checks (kept for the silence
        // timeout), none in this one: the node was cut from its peers
        // since, isolated.
        let answers = [up(None), up(None), up(None)];
        let mut i = stale(input(1, &answers, 4, 0), k);
        i.this_check = Round {
            asked: 4,
            answered: 0,
        };
        assert!(verdict(&i, &S).self_fence());
        // An outage of the control plane: rule 4 first, however stale.
        let answers = [down(), down(), down()];
        assert!(matches!(
            verdict(&stale(input(1, &answers, 4, 0), k), &S),
            Verdict::ControlPlaneOutage { .. }
        ));
    }

    #[test]
    fn rule1_own_record_while_connected_fences_at_once() {
        for phase in [Phase::Fencing, Phase::Fenced] {
            let mut i = input(0, &[], 5, 0);
            i.own_phase_seen_connected = Some(phase);
            assert_eq!(
                verdict(&i, &S),
                Verdict::SelfFence(Reason::OwnRecord(phase))
            );
        }
        // No record: healthy.
        assert_eq!(verdict(&input(0, &[], 5, 0), &S), Verdict::Healthy);
    }

    #[test]
    fn rule2_below_the_threshold_is_healthy() {
        for f in 0..3 {
            assert_eq!(verdict(&input(f, &[], 5, 1000), &S), Verdict::Healthy);
        }
        // At the threshold, with every peer silent past the timeout: isolated.
        assert!(verdict(&input(3, &[], 5, 30), &S).self_fence());
    }

    #[test]
    fn rule3_applies_from_the_first_failed_check() {
        // One failed check, and a peer that reaches the API passes on my
        // Fencing record: fence now, not at the threshold.
        let answers = [up(Some(Phase::Fencing)), down()];
        assert_eq!(
            verdict(&input(1, &answers, 3, 0), &S),
            Verdict::SelfFence(Reason::PeersReportFencing(Phase::Fencing))
        );
        // Connected (no failed check): peers are not consulted.
        assert_eq!(verdict(&input(0, &answers, 3, 0), &S), Verdict::Healthy);
    }

    #[test]
    fn rule3_peers_reporting_fencing() {
        for phase in [Phase::Fencing, Phase::Fenced] {
            let answers = [up(Some(phase)), up(None), up(None)];
            assert_eq!(
                verdict(&input(3, &answers, 3, 0), &S),
                Verdict::SelfFence(Reason::PeersReportFencing(phase))
            );
        }
        // A peer that cannot reach the API is not believed about my phase.
        let answers = [
            PeerAnswer {
                api_reachable: false,
                my_phase: Some(Phase::Fenced),
            },
            down(),
        ];
        assert!(matches!(
            verdict(&input(3, &answers, 3, 0), &S),
            Verdict::ControlPlaneOutage { .. }
        ));
    }

    #[test]
    fn rule4_control_plane_outage_never_self_fences() {
        // Everybody down, for ever so long.
        let answers = [down(), down(), down(), down()];
        assert_eq!(
            verdict(&input(100, &answers, 4, 10_000), &S),
            Verdict::ControlPlaneOutage {
                unreachable: 4,
                answered: 4
            }
        );
        // A majority of a majority.
        let answers = [down(), down(), up(None)];
        assert!(matches!(
            verdict(&input(3, &answers, 4, 10_000), &S),
            Verdict::ControlPlaneOutage { .. }
        ));
    }

    #[test]
    fn rule4_needs_a_majority_of_all_peers() {
        // Two nodes cut off together: they hear only each other.
        let answers = [down()];
        assert!(matches!(
            verdict(&input(3, &answers, 4, 30), &S),
            Verdict::SelfFence(Reason::Isolated {
                answered: 1,
                known: 4,
                ..
            })
        ));
        // Half is not a majority.
        let answers = [down(), down()];
        assert!(verdict(&input(3, &answers, 4, 30), &S).self_fence());
    }

    #[test]
    fn rule5_isolated_after_the_silence_timeout() {
        assert_eq!(
            verdict(&input(3, &[], 4, 29), &S),
            Verdict::Consulting {
                answered: 0,
                known: 4
            }
        );
        assert_eq!(
            verdict(&input(3, &[], 4, 30), &S),
            Verdict::SelfFence(Reason::Isolated {
                answered: 0,
                known: 4,
                silent_for: Duration::from_secs(30)
            })
        );
        // A single-node cluster has nobody to ask.
        assert!(verdict(&input(3, &[], 0, 30), &S).self_fence());
    }

    #[test]
    fn rule6_peers_that_see_me_healthy_keep_me_waiting() {
        let answers = [up(None), up(None), up(None)];
        assert_eq!(
            verdict(&input(3, &answers, 3, 10_000), &S),
            Verdict::Consulting {
                answered: 3,
                known: 3
            }
        );
    }

    #[test]
    fn a_record_from_a_previous_boot_does_not_fence_again() {
        let p = Some(Phase::Fenced);
        assert_eq!(own_record_applies(p, Some("b1"), "b1"), p);
        assert_eq!(own_record_applies(p, None, "b1"), p);
        assert_eq!(own_record_applies(p, Some("b0"), "b1"), None);
        assert_eq!(own_record_applies(None, Some("b1"), "b1"), None);
    }

    #[test]
    fn descriptions_name_the_rule() {
        assert!(
            Verdict::ControlPlaneOutage {
                unreachable: 2,
                answered: 3
            }
            .describe()
            .contains("outage")
        );
        assert!(
            Verdict::SelfFence(Reason::Isolated {
                answered: 0,
                known: 2,
                silent_for: Duration::from_secs(31)
            })
            .describe()
            .contains("isolated")
        );
    }

    fn answer() -> impl Strategy<Value = PeerAnswer> {
        (any::<bool>(), 0u8..3).prop_map(|(r, p)| PeerAnswer {
            api_reachable: r,
            my_phase: match p {
                0 => None,
                1 => Some(Phase::Fencing),
                _ => Some(Phase::Fenced),
            },
        })
    }

    proptest! {
        /// Whatever peers say, an agent that reaches the API and sees no
        /// record on its own Node never fences itself; below the threshold
        /// only a peer passing on a record can make it.
        #[test]
        fn connected_and_unrecorded_never_fences(
            failures in 0u32..3,
            mut answers in proptest::collection::vec(answer(), 0..8),
            extra in 0usize..4,
            secs in 0u64..1000,
        ) {
            if failures > 0 {
                for a in &mut answers {
                    a.my_phase = None;
                }
            }
            let known = answers.len() + extra;
            let i = input(failures, &answers, known, secs);
            prop_assert_eq!(verdict(&i, &S), Verdict::Healthy);
        }

        /// With every answering peer unable to reach the API and a majority
        /// answering, no self-fence, however long it lasts.
        #[test]
        fn outage_never_fences(
            n in 1usize..10,
            missing in 0usize..10,
            secs in 0u64..100_000,
            failures in 1u32..10,
            kubelet in proptest::option::of(0u64..1000),
        ) {
            let answers = vec![down(); n];
            let known = n + missing.min(n.saturating_sub(1));
            let mut i = input(failures, &answers, known, secs);
            i.kubelet_stale = kubelet.map(|s| KubeletStale::For(Duration::from_secs(s)));
            prop_assert!(!verdict(&i, &S).self_fence());
        }
    }
}
