use super::*;

const S: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

fn settings() -> HolderSettings {
    HolderSettings {
        renew_interval: S,
        credit: 10 * S,
        api_credit: 30 * S,
        watchdog_timeout: 5 * S,
    }
}

fn peers(n: usize) -> GrantorSet {
    GrantorSet::new(1, (0..n).map(|i| format!("p{i}")).collect())
}

/// A holder with `n` peers that sent its first round at `t0`.
fn holder(n: usize, t0: Instant) -> (Holder, u64) {
    let mut h = Holder::new("me", "boot-1", settings());
    h.set_grantors(vec![peers(n)]);
    let round = match h.tick(t0).as_slice() {
        [Command::Renew { renewal, to }] => {
            assert_eq!(to.len(), n);
            assert_eq!(renewal.watchdog_timeout, 5 * S);
            assert_eq!(renewal.credit, 10 * S);
            renewal.round
        }
        other => panic!("{other:?}"),
    };
    (h, round)
}

fn renew_round(h: &mut Holder, now: Instant) -> u64 {
    h.tick(now)
        .into_iter()
        .find_map(|c| match c {
            Command::Renew { renewal, .. } => Some(renewal.round),
            Command::RenewThroughApi { .. } => None,
        })
        .expect("a renewal round")
}

/// The round of the renewal through the API server a tick at `at` starts.
fn api(h: &mut Holder, at: Instant) -> Option<u64> {
    h.tick(at).into_iter().find_map(|c| match c {
        Command::RenewThroughApi { round, .. } => Some(round),
        Command::Renew { .. } => None,
    })
}

#[test]
fn a_grant_counts_from_the_renewals_sending_not_from_its_answer() {
    let t0 = Instant::now();
    let (mut h, r) = holder(2, t0);
    // Three peers' worth of voters with the node: one grant makes a
    // majority. It arrives 3 s late and still counts from t0.
    h.answered("p0", r, Answer::Granted);
    assert_eq!(h.end(), Some(t0 + 10 * S));
    assert_eq!(h.status(t0 + 3 * S).lack, None);
    assert_eq!(h.status(t0 + 10 * S).end, None);
}

#[test]
fn the_permit_needs_a_majority_of_the_set_with_the_nodes_own_vote() {
    let t0 = Instant::now();
    let (mut h, r) = holder(4, t0);
    // Five voters: the node and two peers.
    h.answered("p0", r, Answer::Granted);
    assert_eq!(h.end(), None);
    assert_eq!(
        h.status(t0).lack,
        Some(Lack::TooFewGrants {
            granted: 1,
            needed: 2
        })
    );
    let r2 = renew_round(&mut h, t0 + S);
    h.answered("p1", r2, Answer::Granted);
    // The second-latest grant decides: p0's, sent at t0.
    assert_eq!(h.end(), Some(t0 + 10 * S));
    h.answered("p2", r2, Answer::Granted);
    assert_eq!(h.end(), Some(t0 + 11 * S));
}

#[test]
fn grants_of_peers_outside_the_set_and_of_forgotten_rounds_do_not_count() {
    let t0 = Instant::now();
    let (mut h, r) = holder(2, t0);
    h.answered("stranger", r, Answer::Granted);
    h.answered("p0", 999, Answer::Granted);
    assert_eq!(h.end(), None);
    // A round older than the longest credit is forgotten: its late grant
    // would count from a sending that no longer makes a permit anyway.
    h.tick(t0 + 31 * S);
    h.answered("p0", r, Answer::Granted);
    assert_eq!(h.end(), None);
}

#[test]
fn a_new_grantor_set_takes_over_without_a_gap_and_a_retired_one_stops_counting() {
    let t0 = Instant::now();
    let (mut h, r) = holder(2, t0);
    h.answered("p0", r, Answer::Granted);
    assert_eq!(h.end(), Some(t0 + 10 * S));
    // The leader lists a new set beside the old one: the old one's grants
    // still count, and renewals go to both, each naming its own set.
    let new = GrantorSet::new(2, vec!["p1".into(), "p9".into()]);
    h.set_grantors(vec![peers(2), new.clone()]);
    assert_eq!(h.end(), Some(t0 + 10 * S));
    assert_eq!(h.sets(), [peers(2), new.clone()].as_slice());
    let cmds = h.tick(t0 + S);
    let named: Vec<(u64, Vec<String>)> = cmds
        .iter()
        .filter_map(|c| match c {
            Command::Renew { to, renewal } => Some((renewal.set_version, to.clone())),
            Command::RenewThroughApi { .. } => None,
        })
        .collect();
    assert_eq!(
        named,
        vec![
            (1, vec!["p0".to_string(), "p1".to_string()]),
            (2, vec!["p1".to_string(), "p9".to_string()])
        ]
    );
    // A grant for the new set counts there only (p1 is in both).
    let round_v2 = match &cmds[1] {
        Command::Renew { renewal, .. } => renewal.round,
        Command::RenewThroughApi { .. } => unreachable!(),
    };
    h.answered("p9", round_v2, Answer::Granted);
    assert_eq!(h.end(), Some(t0 + 11 * S));
    // The old set retired and delisted (the newest version is the same):
    // its grants are forgotten, also in what a restart would take over.
    h.set_grantors(vec![new.clone()]);
    assert_eq!(h.sets(), [new].as_slice());
    assert_eq!(h.end(), Some(t0 + 11 * S));
    assert!(
        h.saved().credits.iter().all(|((v, _), _)| *v == 2),
        "{:?}",
        h.saved().credits
    );
    h.set_grantors(vec![GrantorSet::new(3, vec!["p7".into()])]);
    assert_eq!(h.end(), None);
    // An older list is ignored.
    h.set_grantors(vec![peers(2)]);
    assert_eq!(h.set().version, 3);
}

#[test]
fn the_watchdog_is_fed_with_at_most_half_the_permit_left_in_whole_seconds() {
    let t0 = Instant::now();
    let (mut h, r) = holder(2, t0);
    let running = Device::Running { timeout: 5 * S };
    assert_eq!(
        h.feed(t0, Device::Closed),
        Feed::Idle,
        "no permit, not armed"
    );
    h.answered("p0", r, Answer::Granted);
    // The permit ends at t0 + 10 s.
    assert_eq!(h.feed(t0, Device::Closed), Feed::Ping { timeout: 5 * S });
    assert!(h.armed());
    assert_eq!(h.feed(t0 + 2 * S, running), Feed::Ping { timeout: 4 * S });
    assert_eq!(
        h.feed(t0 + 2500 * MS, running),
        Feed::Ping { timeout: 3 * S }
    );
    assert_eq!(h.feed(t0 + 8 * S, running), Feed::Ping { timeout: S });
    assert_eq!(h.feed(t0 + 8001 * MS, running), Feed::Expedite);
    assert_eq!(
        h.feed(t0 + 8001 * MS, Device::Running { timeout: S }),
        Feed::Idle,
        "already expedited"
    );
    assert_eq!(h.feed(t0 + 11 * S, Device::Closed), Feed::Idle);
}

#[test]
fn a_started_agent_that_finds_the_device_running_without_a_permit_expedites_it() {
    let t0 = Instant::now();
    let mut h = Holder::new("me", "boot-1", settings());
    assert_eq!(
        h.feed(t0, Device::Running { timeout: 5 * S }),
        Feed::Expedite
    );
    assert!(!h.armed());
}

#[test]
fn two_rounds_without_a_majority_renew_through_the_api_server() {
    let t0 = Instant::now();
    let (mut h, r) = holder(2, t0);
    h.answered("p0", r, Answer::Granted);
    // Renewals go out every second; the peers stop answering. The permit
    // (t0 + 10 s) has less than 10 − 2 s left after t0 + 2 s.
    let mut api = None;
    for s in 1..=4 {
        for c in h.tick(t0 + s * S) {
            if let Command::RenewThroughApi {
                round,
                credit,
                watchdog_timeout,
            } = c
            {
                assert_eq!((credit, watchdog_timeout), (30 * S, 5 * S));
                api.get_or_insert((s, round));
            }
        }
    }
    assert!(
        !h.status(t0 + 2 * S).through_api,
        "the peers' grants hold it"
    );
    let (at, round) = api.expect("a renewal through the API");
    assert_eq!(at, 3, "at t0 + 3 s (less than 8 s left)");
    // One at a time.
    assert!(
        !h.tick(t0 + 5 * S)
            .iter()
            .any(|c| matches!(c, Command::RenewThroughApi { .. }))
    );
    h.api_answered(t0 + 4 * S, round, ApiOutcome::Renewed);
    assert_eq!(h.end(), Some(t0 + 33 * S));
    let st = h.status(t0 + 12 * S);
    assert!(st.through_api);
    assert_eq!(st.lack, None);
    // Not renewed through the API again while that credit is long.
    assert!(
        !h.tick(t0 + 6 * S)
            .iter()
            .any(|c| matches!(c, Command::RenewThroughApi { .. }))
    );
}

#[test]
fn no_renewal_through_the_api_before_the_first_round_could_be_answered() {
    let t0 = Instant::now();
    let (mut h, _) = holder(2, t0);
    assert!(
        !h.tick(t0 + 999 * MS)
            .iter()
            .any(|c| matches!(c, Command::RenewThroughApi { .. }))
    );
    assert!(
        h.tick(t0 + S)
            .iter()
            .any(|c| matches!(c, Command::RenewThroughApi { .. }))
    );
}

#[test]
fn a_revocation_heard_from_a_grantor_or_the_api_server_is_reported() {
    let t0 = Instant::now();
    let (mut h, r) = holder(2, t0);
    h.answered("p0", r, Answer::Revoked);
    assert_eq!(h.status(t0).lack, Some(Lack::Revoked));
    // A grant after all (the revocation was lifted): no longer revoked.
    let r2 = renew_round(&mut h, t0 + S);
    h.answered("p1", r2, Answer::Granted);
    assert_eq!(h.status(t0 + S).lack, None);
    assert_eq!(
        h.status(t0 + 12 * S).lack,
        Some(Lack::TooFewGrants {
            granted: 0,
            needed: 1
        })
    );
    let (mut h, _) = holder(2, t0);
    let round = h
        .tick(t0 + S)
        .into_iter()
        .find_map(|c| match c {
            Command::RenewThroughApi { round, .. } => Some(round),
            Command::Renew { .. } => None,
        })
        .unwrap();
    h.api_answered(t0 + S, round, ApiOutcome::Revoked);
    assert_eq!(h.status(t0 + S).lack, Some(Lack::Revoked));
    assert_eq!(h.end(), None);
    assert_eq!(
        Holder::new("me", "b", settings()).status(t0).lack,
        Some(Lack::NoGrantors)
    );
}

#[test]
fn a_restarted_agent_feeds_on_the_saved_credits_unless_its_timings_grew() {
    let t0 = Instant::now();
    let (mut h, r) = holder(2, t0);
    h.answered("p0", r, Answer::Granted);
    let saved = h.saved();

    let mut same = Holder::new("me", "boot-1", settings());
    same.restore(saved.clone());
    assert_eq!(same.end(), Some(t0 + 10 * S));
    assert_eq!(
        same.feed(t0 + S, Device::Running { timeout: 5 * S }),
        Feed::Ping { timeout: 4 * S }
    );

    for grown in [
        HolderSettings {
            watchdog_timeout: 6 * S,
            ..settings()
        },
        HolderSettings {
            credit: 11 * S,
            ..settings()
        },
    ] {
        let mut h = Holder::new("me", "boot-1", grown);
        h.restore(saved.clone());
        assert_eq!(h.end(), None, "{grown:?}");
    }
    // Shorter timings take the saved credits.
    let mut shorter = Holder::new(
        "me",
        "boot-1",
        HolderSettings {
            credit: 8 * S,
            ..settings()
        },
    );
    shorter.restore(saved);
    assert_eq!(shorter.end(), Some(t0 + 8 * S));
}

#[test]
fn a_failed_renewal_through_the_api_is_tried_again_soon_and_a_short_permit_does_not_wait() {
    let t0 = Instant::now();
    let (mut h, r) = holder(2, t0);
    h.answered("p0", r, Answer::Granted);
    // Less than 8 s left: through the API at once, although this process
    // never had a round answered... it did (t0); the permit is what counts.
    let round = api(&mut h, t0 + 2500 * MS).expect("a renewal through the API");
    h.api_answered(t0 + 2600 * MS, round, ApiOutcome::Failed);
    assert_eq!(h.next_wake(), Some(t0 + 2850 * MS));
    assert_eq!(api(&mut h, t0 + 2800 * MS), None, "not before the retry");
    assert!(api(&mut h, t0 + 2850 * MS).is_some());

    // A restarted agent with a short saved permit renews at once.
    let mut again = Holder::new("me", "boot-1", settings());
    again.restore(h.saved());
    assert!(api(&mut again, t0 + 3 * S).is_some());
}

#[test]
fn a_revoked_node_asks_the_api_server_again_only_once_an_interval() {
    let t0 = Instant::now();
    let (mut h, _) = holder(2, t0);
    let round = api(&mut h, t0 + 1500 * MS).expect("no grants: through the API");
    h.api_answered(t0 + 1510 * MS, round, ApiOutcome::Revoked);
    assert_eq!(h.status(t0 + 1510 * MS).lack, Some(Lack::Revoked));
    assert_eq!(api(&mut h, t0 + 1520 * MS), None, "not at once again");
    assert_eq!(api(&mut h, t0 + 2500 * MS), None);
    assert!(api(&mut h, t0 + 2510 * MS).is_some());
}

#[test]
fn a_restarted_agent_keeps_its_api_credit_unless_its_timings_grew() {
    let t0 = Instant::now();
    let (mut h, _) = holder(2, t0);
    let round = h
        .tick(t0 + S)
        .into_iter()
        .find_map(|c| match c {
            Command::RenewThroughApi { round, .. } => Some(round),
            Command::Renew { .. } => None,
        })
        .expect("a renewal through the API");
    h.api_answered(t0 + S, round, ApiOutcome::Renewed);
    let saved = h.saved();
    let mut same = Holder::new("me", "boot-1", settings());
    same.restore(saved.clone());
    assert_eq!(same.end(), Some(t0 + 31 * S));
    for grown in [
        HolderSettings {
            watchdog_timeout: 6 * S,
            ..settings()
        },
        HolderSettings {
            api_credit: 31 * S,
            ..settings()
        },
    ] {
        let mut h = Holder::new("me", "boot-1", grown);
        h.restore(saved.clone());
        assert_eq!(h.end(), None, "{grown:?}");
    }
}

#[test]
fn renewals_go_out_once_an_interval() {
    let t0 = Instant::now();
    let (mut h, _) = holder(2, t0);
    let renewals = |h: &mut Holder, at: Instant| {
        h.tick(at)
            .iter()
            .filter(|c| matches!(c, Command::Renew { .. }))
            .count()
    };
    assert_eq!(renewals(&mut h, t0 + 999 * MS), 0);
    assert_eq!(h.next_wake(), Some(t0 + S));
    assert_eq!(renewals(&mut h, t0 + S), 1);
    assert_eq!(renewals(&mut h, t0 + S), 0);
}
