//! The grantor's silence reports: the grantees this agent granted and has
//! not granted for three renewal intervals ([`report_after`]), written to
//! its own permit object ([`SILENT_ANNOTATION`]) whenever that list of
//! names changes, so that the
//! leader learns within seconds that a powered-off node's permit is over
//! ([`crate::decide::permit::silence`]). One write per change, none at
//! steady state; in an outage of the peer network, one per agent.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;

use crate::decide::permit::object::{SILENT_ANNOTATION, Silent, render_value};
use crate::decide::permit::silence::{REPORT_WITHIN, report_after};
use crate::decide::permit::timings::Timings;
use crate::k8s::permit_object::{Edit, update_fresh};
use crate::observability::metrics::Metrics;

use super::Grants;

/// How often the grantor's silent grantees are looked at.
const EVERY: Duration = Duration::from_secs(1);

/// The edit that makes the object report `silent` (nothing when it does
/// already, by name).
fn edit(reported: &BTreeMap<String, Silent>, silent: &BTreeMap<String, Silent>) -> Option<Edit> {
    let names = |m: &BTreeMap<String, Silent>| m.keys().cloned().collect::<BTreeSet<_>>();
    if names(reported) == names(silent) {
        return None;
    }
    Some(if silent.is_empty() {
        Edit::Remove(SILENT_ANNOTATION)
    } else {
        Edit::Set(SILENT_ANNOTATION, render_value(silent))
    })
}

/// Reads and writes per report when the object changes in between (the
/// agent's own renewals and arming are written to the same object).
const ATTEMPTS: usize = 3;

/// After a failed write (no object yet, the API server out of reach).
const RETRY: Duration = Duration::from_secs(5);

/// Report this grantor's silent grantees on `node`'s permit object until
/// the task is dropped. The object is read only when the names to report
/// differ from those last written (and once at the start): no request at
/// steady state.
pub async fn run(grants: Arc<Grants>, api: Api<Lease>, node: String, metrics: Metrics) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The names the object reports, as far as this process knows.
    let mut written: Option<BTreeSet<String>> = None;
    let mut retry_at = tokio::time::Instant::now();
    let after = report_after(Timings::default().renew_interval);
    loop {
        tick.tick().await;
        let silent = grants.silent(after, REPORT_WITHIN);
        let names: BTreeSet<String> = silent.keys().cloned().collect();
        if written.as_ref() == Some(&names) || tokio::time::Instant::now() < retry_at {
            continue;
        }
        match update_fresh(&api, &node, ATTEMPTS, |state| {
            let e = edit(&state.silent, &silent);
            let wrote = e.is_some();
            Ok((e, wrote))
        })
        .await
        {
            Ok(wrote) => {
                if wrote {
                    metrics
                        .permit_silence_reports
                        .with_label_values(&["written"])
                        .inc();
                    tracing::info!(silent = ?names, "reported the grantees this grantor has not granted for {}s", after.as_secs());
                }
                written = Some(names);
            }
            Err(e) => {
                metrics
                    .permit_silence_reports
                    .with_label_values(&["failed"])
                    .inc();
                retry_at = tokio::time::Instant::now() + RETRY;
                tracing::debug!(error = %e, "cannot write this grantor's silence report; trying again");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(names: &[(&str, u64)]) -> BTreeMap<String, Silent> {
        names
            .iter()
            .map(|(n, q)| {
                (
                    n.to_string(),
                    Silent {
                        quiet: Duration::from_secs(*q),
                        credit: Duration::from_secs(10),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn written_when_the_names_change_not_when_the_silences_grow() {
        assert_eq!(edit(&report(&[]), &report(&[])), None);
        assert_eq!(edit(&report(&[("a", 3)]), &report(&[("a", 9)])), None);
        assert_eq!(
            edit(&report(&[]), &report(&[("a", 3)])),
            Some(Edit::Set(
                SILENT_ANNOTATION,
                render_value(&report(&[("a", 3)]))
            ))
        );
        assert_eq!(
            edit(&report(&[("a", 3)]), &report(&[("a", 4), ("b", 3)])),
            Some(Edit::Set(
                SILENT_ANNOTATION,
                render_value(&report(&[("a", 4), ("b", 3)]))
            ))
        );
        assert_eq!(
            edit(&report(&[("a", 3)]), &report(&[])),
            Some(Edit::Remove(SILENT_ANNOTATION))
        );
    }
}
