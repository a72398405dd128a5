//! Silence: when a node's permit is over by every account the leader has,
//! so that the leader may begin fencing a powered-off node seconds after
//! its renewals stopped instead of after its kubelet's Lease went stale.
//!
//! A grantor reports a grantee that stopped renewing
//! ([`super::grantor::Grantor::silent`]) on its own permit object
//! ([`super::object::SILENT_ANNOTATION`]): how long ago it last granted it
//! and the credit that grant carried. The leader takes the report for
//! having been written when it first saw it, so the last grant it infers
//! is never earlier than the real one. From the reports of a node's
//! grantors and the node's renewals through the API server,
//! [`permit_over`] says from when no permit the node could hold is left:
//! under every listed set enough grantors last granted it more than a
//! credit ago that no majority of the set is left, and its last renewal
//! through the API server, if any, ran out too.
//!
//! This moves only *when* a fencing begins, never what proves it: the
//! revocation's deadline ([`super::revoke`]) holds for a fencing begun at
//! any moment. What it must not do is fence a node that would have kept
//! its permit (S2): a node cut from its peers alone renews through the API
//! server within a few renewal intervals, long before its peers' grants
//! run out, and the leader's rule adds that its kubelet missed a Lease
//! renewal (`crate::leader::detect::permit_suspect`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{Drift, GrantorSet};

/// A grantor reports a grantee it has not granted for at least this long
/// ([`report_after`]), so that one lost renewal or a slow answer is no
/// news, and the report is on its object well within a credit of the last
/// grant.
pub const REPORT_AFTER: Duration = Duration::from_secs(3);

/// How long a grantor waits before it reports a grantee renewing every
/// `renew_interval`: three renewal intervals, and at least
/// [`REPORT_AFTER`]. A grantee between two renewals is no news: reported
/// there, it would be written and withdrawn at every renewal, and a
/// withdrawal the leader has not seen yet would make a healthy node's
/// permit look over.
pub fn report_after(renew_interval: Duration) -> Duration {
    renew_interval.saturating_mul(3).max(REPORT_AFTER)
}

/// ...and no longer than this: a grantee gone for longer (powered off and
/// fenced long ago, or now renewing with other grantors) is no news.
pub const REPORT_WITHIN: Duration = Duration::from_secs(600);

/// What the leader knows of one grantor's last grant to a node: when it
/// was at the latest (the leader's clock) and the credit it carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heard {
    pub last: Instant,
    pub credit: Duration,
}

impl Heard {
    /// From a report `quiet` long and first seen by the leader at
    /// `first_seen`.
    pub fn from_report(first_seen: Instant, quiet: Duration, credit: Duration) -> Self {
        Heard {
            last: first_seen.checked_sub(quiet).unwrap_or(first_seen),
            credit,
        }
    }
}

/// The node's latest renewal through the API server as the leader saw it:
/// when it first saw it, and the credit it named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiSeen {
    pub first_seen: Instant,
    pub credit: Duration,
}

/// From when no permit the node could hold is left, on the leader's
/// clock: under each of `sets` (every set the node's object lists),
/// [`GrantorSet::stops_needed`] of its grantors report (in `heard`, by
/// grantor) a last grant whose credit, stretched by the clocks' drift,
/// has run out; and the renewal through the API server `api`, if any, has
/// run out as well. `None` while some set lacks the reports (or the node
/// lists no usable set): nothing says its permit is over.
///
/// A report whose last grant is earlier than `armed_seen` (when the
/// leader first saw the node's current arming) counts for nothing: it is
/// about an earlier boot, or about the gap of a rolling update, and the
/// agent that armed since held a permit then — granted by whom, no report
/// says yet.
pub fn permit_over(
    sets: &[GrantorSet],
    heard: &BTreeMap<String, Heard>,
    api: Option<ApiSeen>,
    armed_seen: Instant,
    drift: Drift,
) -> Option<Instant> {
    if sets.is_empty() {
        return None;
    }
    let mut over: Option<Instant> = None;
    for set in sets {
        if !set.usable() {
            return None;
        }
        let mut ends: Vec<Instant> = set
            .peers
            .iter()
            .filter_map(|p| heard.get(p))
            .filter(|h| h.last >= armed_seen)
            .map(|h| h.last + drift.stretch(h.credit))
            .collect();
        ends.sort();
        // By the k-th earliest end, k of them grant nothing any more.
        let end = *ends.get(set.stops_needed() - 1)?;
        over = Some(over.map_or(end, |o| o.max(end)));
    }
    let api_end = api.map(|a| a.first_seen + drift.stretch(a.credit));
    over.map(|o| api_end.map_or(o, |a| o.max(a)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn set(version: u64, peers: &[&str]) -> GrantorSet {
        GrantorSet::new(version, peers.iter().map(|p| p.to_string()).collect())
    }

    fn heard(t0: Instant, reports: &[(&str, u32)]) -> BTreeMap<String, Heard> {
        reports
            .iter()
            .map(|(g, at)| {
                (
                    g.to_string(),
                    Heard {
                        last: t0 + *at * S,
                        credit: 10 * S,
                    },
                )
            })
            .collect()
    }

    fn exact() -> Drift {
        Drift::from_ppm(0).unwrap()
    }

    #[test]
    fn a_report_is_taken_as_written_when_first_seen() {
        let t0 = Instant::now();
        let h = Heard::from_report(t0 + 10 * S, 3 * S, 10 * S);
        assert_eq!(h.last, t0 + 7 * S);
        assert_eq!(h.credit, 10 * S);
    }

    #[test]
    fn over_once_no_majority_of_the_set_can_still_grant() {
        let t0 = Instant::now();
        // Four peers and the node: three votes make a majority, so the
        // node holds with two peers' grants; three must have stopped.
        let sets = [set(1, &["a", "b", "c", "d"])];
        assert_eq!(
            permit_over(&sets, &heard(t0, &[("a", 5), ("c", 2)]), None, t0, exact()),
            None,
            "two silent peers of four leave a majority"
        );
        assert_eq!(
            permit_over(
                &sets,
                &heard(t0, &[("a", 5), ("c", 2), ("d", 3)]),
                None,
                t0,
                exact()
            ),
            Some(t0 + 15 * S),
            "the latest of the three needed grants runs out last"
        );
        // With four reports, the three earliest decide.
        assert_eq!(
            permit_over(
                &sets,
                &heard(t0, &[("a", 5), ("b", 9), ("c", 2), ("d", 3)]),
                None,
                t0,
                exact()
            ),
            Some(t0 + 15 * S)
        );
    }

    #[test]
    fn reports_of_grantors_outside_the_set_count_for_nothing() {
        let t0 = Instant::now();
        let sets = [set(1, &["a", "b"])];
        assert_eq!(
            permit_over(&sets, &heard(t0, &[("a", 1), ("x", 1)]), None, t0, exact()),
            None
        );
    }

    #[test]
    fn every_listed_set_must_be_over() {
        let t0 = Instant::now();
        // Two peers and the node: two votes make a majority, so both peers
        // must have stopped.
        let sets = [set(1, &["a", "b"]), set(2, &["c", "d"])];
        assert_eq!(
            permit_over(&sets, &heard(t0, &[("a", 1), ("b", 2)]), None, t0, exact()),
            None,
            "set 2 may still grant"
        );
        assert_eq!(
            permit_over(
                &sets,
                &heard(t0, &[("a", 1), ("b", 2), ("c", 0), ("d", 4)]),
                None,
                t0,
                exact()
            ),
            Some(t0 + 14 * S)
        );
    }

    #[test]
    fn a_renewal_through_the_api_server_keeps_the_permit_until_its_credit_ran_out() {
        let t0 = Instant::now();
        let sets = [set(1, &["a", "b"])];
        let both = heard(t0, &[("a", 1), ("b", 0)]);
        let api = ApiSeen {
            first_seen: t0 + 3 * S,
            credit: 30 * S,
        };
        assert_eq!(
            permit_over(&sets, &both, Some(api), t0, exact()),
            Some(t0 + 33 * S)
        );
        // An old renewal that ran out before the peers' grants did.
        let old = ApiSeen {
            first_seen: t0,
            credit: 5 * S,
        };
        assert_eq!(
            permit_over(&sets, &both, Some(old), t0, exact()),
            Some(t0 + 11 * S)
        );
    }

    #[test]
    fn no_usable_set_is_never_over() {
        let t0 = Instant::now();
        assert_eq!(permit_over(&[], &heard(t0, &[]), None, t0, exact()), None);
        assert_eq!(
            permit_over(&[set(1, &[])], &heard(t0, &[]), None, t0, exact()),
            None
        );
    }

    #[test]
    fn the_credit_is_stretched_by_the_clocks_drift() {
        let t0 = Instant::now();
        let sets = [set(1, &["a"])];
        let over = permit_over(&sets, &heard(t0, &[("a", 0)]), None, t0, Drift::DEFAULT).unwrap();
        // 1000 ppm each way: 10 s on one clock is up to about 10.02 s on
        // another.
        assert!(over > t0 + 10 * S, "{:?}", over - t0);
        assert!(
            over < t0 + 10 * S + 30 * Duration::from_millis(1),
            "{:?}",
            over - t0
        );
    }
}

#[cfg(test)]
mod armed_tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn three_renewal_intervals_and_never_less_than_three_seconds() {
        assert_eq!(report_after(Duration::from_millis(500)), 3 * S);
        assert_eq!(report_after(S), 3 * S);
        assert_eq!(report_after(2 * S), 6 * S);
        assert_eq!(report_after(5 * S), 15 * S);
    }

    #[test]
    fn reports_of_a_grant_before_the_current_arming_count_for_nothing() {
        let t0 = Instant::now();
        let exact = Drift::from_ppm(0).unwrap();
        let sets = [GrantorSet::new(1, vec!["a".into(), "b".into()])];
        let at = |secs: u32| Heard {
            last: t0 + secs * S,
            credit: 10 * S,
        };
        let heard = BTreeMap::from([("a".to_string(), at(5)), ("b".to_string(), at(7))]);
        // Armed before both grants: both count, the later decides.
        assert_eq!(
            permit_over(&sets, &heard, None, t0 + 5 * S, exact),
            Some(t0 + 17 * S)
        );
        // Armed again after a's report (a rolling update, a new boot): a's
        // says nothing of the agent now holding, and b's alone is no
        // majority of the two.
        assert_eq!(permit_over(&sets, &heard, None, t0 + 6 * S, exact), None);
        assert_eq!(permit_over(&sets, &heard, None, t0 + 8 * S, exact), None);
    }
}
