use super::*;

const S: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

/// No drift, so that the figures below can be checked by hand; the drift
/// has its own test.
fn settings() -> RevokeSettings {
    RevokeSettings {
        ack_window: 5 * S,
        credit_cap: 60 * S,
        watchdog_cap: 60 * S,
        margin: S,
        drift: Drift::from_ppm(0).unwrap(),
    }
}

fn set(version: u64, peers: &[&str]) -> GrantorSet {
    GrantorSet::new(version, peers.iter().map(|p| p.to_string()).collect())
}

/// Close the API path on the sets the revocation began with.
trait Close {
    fn close(&mut self, api: ApiPath);
}

impl Close for Revocation {
    fn close(&mut self, api: ApiPath) {
        let sets = self.sets.clone();
        self.api_closed(api, sets);
    }
}

fn ack(age: Duration) -> StopAck {
    StopAck {
        since_last_grant: age,
        credit: Some(10 * S),
        watchdog_timeout: Some(5 * S),
    }
}

#[test]
fn a_node_dead_for_longer_than_its_credit_is_reset_a_watchdog_timeout_after_the_answers() {
    let t = Instant::now();
    let s = settings();
    let mut r = Revocation::new("n", vec![set(1, &["a", "b", "c", "d"])]);
    r.close(ApiPath::ClosedUnused);
    assert_eq!(r.to_ask(t, &s), vec!["a", "b", "c", "d"]);
    // Five voters (the node, four peers): stopping three leaves no
    // majority to the node.
    r.answered("a", t, ack(15 * S));
    r.answered("b", t, ack(16 * S));
    assert!(matches!(
        r.deadline(t, &s),
        Err(Pending::Answers {
            version: 1,
            have: 2,
            need: 3
        })
    ));
    r.answered("c", t + 100 * MS, ack(15 * S));
    let d = r.deadline(t + 100 * MS, &s).unwrap();
    // The node's last grant was 15 s before the answers, its credit 10 s:
    // its permit ended before them. Then the watchdog (5 s), two expedited
    // seconds of an agent exiting after it, and the margin.
    assert_eq!(d.permit_end, t + 100 * MS);
    assert_eq!(d.watchdog_timeout, 5 * S);
    assert_eq!(d.at, t + 100 * MS + 8 * S);
}

#[test]
fn a_node_granted_just_before_the_stop_keeps_its_credit_to_the_end() {
    let t = Instant::now();
    let s = settings();
    let mut r = Revocation::new("n", vec![set(1, &["a", "b"])]);
    r.close(ApiPath::ClosedUnused);
    // Three voters: a grant of either peer makes a majority with the node,
    // so both must be stopped; the later end counts.
    r.answered("a", t, ack(500 * MS));
    assert!(r.deadline(t, &s).is_err());
    r.answered("b", t + S, ack(3 * S));
    let d = r.deadline(t + S, &s).unwrap();
    // a: t + 9.5 s; b: t + 1 s + 7 s = t + 8 s.
    assert_eq!(d.permit_end, t + 9500 * MS);
    assert_eq!(d.at, t + 9500 * MS + 8 * S);
}

#[test]
fn with_more_answers_than_needed_the_node_needs_several_of_them() {
    let t = Instant::now();
    let s = settings();
    let mut r = Revocation::new("n", vec![set(1, &["a", "b", "c", "d"])]);
    r.close(ApiPath::ClosedUnused);
    // All four answered: the node needs two grants, both from answered
    // grantors, so the second-latest end decides (b's), not a's.
    r.answered("a", t, ack(S));
    r.answered("b", t, ack(4 * S));
    r.answered("c", t, ack(20 * S));
    r.answered("d", t, ack(20 * S));
    assert_eq!(r.deadline(t, &s).unwrap().permit_end, t + 6 * S);
    // Three answered: one unanswered grant plus one answered one suffice,
    // so the latest answered end decides.
    let mut r3 = Revocation::new("n", vec![set(1, &["a", "b", "c", "d"])]);
    r3.close(ApiPath::ClosedUnused);
    r3.answered("a", t, ack(S));
    r3.answered("b", t, ack(4 * S));
    r3.answered("c", t, ack(20 * S));
    assert_eq!(r3.deadline(t, &s).unwrap().permit_end, t + 9 * S);
}

#[test]
fn answers_older_than_the_window_are_asked_again_and_do_not_count() {
    let t = Instant::now();
    let s = settings();
    let mut r = Revocation::new("n", vec![set(1, &["a", "b"])]);
    r.close(ApiPath::ClosedUnused);
    r.answered("a", t, ack(20 * S));
    let later = t + 5 * S + MS;
    r.answered("b", later, ack(20 * S));
    assert_eq!(r.to_ask(later, &s), vec!["a"]);
    assert!(r.deadline(later, &s).is_err());
    r.answered("a", later, ack(25 * S));
    assert!(r.deadline(later, &s).is_ok());
}

#[test]
fn a_complete_revocation_keeps_its_deadline_and_asks_no_more() {
    let t = Instant::now();
    let s = settings();
    let mut r = Revocation::new("n", vec![set(1, &["a", "b"])]);
    r.close(ApiPath::ClosedUnused);
    r.answered("a", t, ack(20 * S));
    r.answered("b", t, ack(20 * S));
    let first = r.deadline(t, &s).unwrap();
    // Answers that came later (a repeated stop) would put it later: the
    // deadline stays, and nothing is asked any more.
    r.answered("a", t + 6 * S, ack(26 * S));
    r.answered("b", t + 6 * S, ack(26 * S));
    assert_eq!(r.deadline(t + 60 * S, &s).unwrap(), first);
    assert!(r.to_ask(t + 60 * S, &s).is_empty());
}

#[test]
fn every_set_the_node_may_draw_on_must_be_blocked() {
    let t = Instant::now();
    let s = settings();
    let mut r = Revocation::new("n", vec![set(1, &["a", "b"]), set(2, &["b", "c"])]);
    r.close(ApiPath::ClosedUnused);
    assert_eq!(r.to_ask(t, &s), vec!["a", "b", "c"]);
    r.answered("a", t, ack(20 * S));
    r.answered("b", t, ack(20 * S));
    assert!(matches!(
        r.deadline(t, &s),
        Err(Pending::Answers { version: 2, .. })
    ));
    r.answered("c", t, ack(20 * S));
    assert!(r.deadline(t, &s).is_ok());
}

#[test]
fn the_api_path_must_be_closed_and_a_renewal_through_it_counts_from_when_it_was_seen() {
    let t = Instant::now();
    let s = settings();
    let mut r = Revocation::new("n", vec![set(1, &["a"])]);
    r.answered("a", t, ack(20 * S));
    assert_eq!(r.deadline(t, &s), Err(Pending::ApiOpen));
    r.close(ApiPath::ClosedAfter {
        first_seen: t - 12 * S,
        credit: 30 * S,
        watchdog_timeout: 7 * S,
    });
    let d = r.deadline(t, &s).unwrap();
    assert_eq!(d.permit_end, t + 18 * S);
    assert_eq!(d.watchdog_timeout, 7 * S);
    assert_eq!(d.at, t + 18 * S + 7 * S + 2 * S + S);
}

#[test]
fn an_answer_that_cannot_name_the_timings_is_taken_at_the_caps() {
    let t = Instant::now();
    let s = settings();
    let mut r = Revocation::new("n", vec![set(1, &["a"])]);
    r.close(ApiPath::ClosedUnused);
    // A grantor restarted 2 s ago: it granted nothing since, and cannot say
    // what it granted before.
    r.answered(
        "a",
        t,
        StopAck {
            since_last_grant: 2 * S,
            credit: None,
            watchdog_timeout: None,
        },
    );
    let d = r.deadline(t, &s).unwrap();
    assert_eq!(d.permit_end, t + 58 * S);
    assert_eq!(d.watchdog_timeout, 60 * S);
}

#[test]
fn drift_lengthens_every_term_and_the_window_bounds_the_quarantine() {
    let t = Instant::now();
    let s = RevokeSettings {
        drift: Drift::DEFAULT,
        ..settings()
    };
    let mut r = Revocation::new("n", vec![set(1, &["a"])]);
    r.close(ApiPath::ClosedUnused);
    r.answered("a", t, ack(Duration::ZERO));
    let mut without = r.clone();
    let d = r.deadline(t, &s).unwrap();
    // 10 s of credit as a slow node counts it, read by a fast leader.
    assert!(d.permit_end > t + 10_020 * MS, "{:?}", d.permit_end - t);
    assert!(d.permit_end < t + 10_021 * MS);
    let no_drift = without.deadline(t, &settings()).unwrap();
    assert!(d.at - d.permit_end > no_drift.at - no_drift.permit_end);
    // A deadline never lies more than the horizon after an answer it counts.
    assert!(d.at - t <= s.horizon());
    assert!(s.horizon() >= 60 * S + 60 * S + 2 * S + S);
}

#[test]
fn a_node_without_a_grantor_set_has_nothing_to_revoke() {
    let t = Instant::now();
    let mut r = Revocation::new("n", vec![]);
    r.close(ApiPath::ClosedUnused);
    assert_eq!(r.deadline(t, &settings()), Err(Pending::NoGrantorSet));
    assert_eq!(r.node(), "n");
}

#[test]
fn the_sets_named_where_the_api_path_was_closed_are_the_ones_blocked() {
    let t = Instant::now();
    let s = settings();
    // Begun on the set the leader last saw; the node's permit object had a
    // newer one when the revocation was written on it.
    let mut r = Revocation::new("n", vec![set(1, &["a"])]);
    r.answered("a", t, ack(20 * S));
    r.api_closed(ApiPath::ClosedUnused, vec![set(1, &["a"]), set(2, &["b"])]);
    assert!(matches!(
        r.deadline(t, &s),
        Err(Pending::Answers { version: 2, .. })
    ));
    assert_eq!(r.to_ask(t, &s), vec!["b"]);
    r.answered("b", t, ack(20 * S));
    assert!(r.deadline(t, &s).is_ok());
}

#[test]
fn only_the_acknowledgement_of_its_own_stop_counts() {
    // The long run's seed 306202: the acknowledgement of the previous
    // fencing's lift, arriving after this fencing began, was counted as a
    // stop of this one.
    let t0 = Instant::now();
    let set = GrantorSet::new(1, vec!["g".into()]);
    let mut r = Revocation::numbered("n", 2, vec![set]);
    let ack = StopAck {
        since_last_grant: Duration::from_secs(1),
        credit: Some(Duration::from_secs(10)),
        watchdog_timeout: Some(Duration::from_secs(5)),
    };
    let lift = Stop::Lift {
        node: "n".into(),
        fencing: 1,
    };
    let older = Stop::Revoke {
        node: "n".into(),
        fencing: 1,
    };
    let other = Stop::Revoke {
        node: "m".into(),
        fencing: 2,
    };
    for stop in [&lift, &older, &other] {
        assert!(!r.acknowledged("g", t0, stop, ack), "{stop:?}");
    }
    assert_eq!(r.to_ask(t0, &settings()), vec!["g".to_string()]);
    assert!(r.acknowledged("g", t0, &r.stop(), ack));
    assert!(r.to_ask(t0, &settings()).is_empty());
}
