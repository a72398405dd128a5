//! Waiting: every wait is a poll with a deadline; a failed one dumps the
//! cluster ([`Cluster::dump_state`]) before it panics.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};

use super::*;

impl Cluster {
    /// Poll `check` (every 500 ms) until it returns `Ok(Some(v))`, then
    /// return `v`. Errors from `check` count as "not yet" (and the last one
    /// is reported). At the deadline, print what the cluster looked like and
    /// panic.
    pub async fn wait_until<T>(
        &self,
        what: &str,
        deadline: Duration,
        mut check: impl AsyncFnMut() -> Result<Option<T>>,
    ) -> T {
        let start = Instant::now();
        let mut last_err: Option<anyhow::Error> = None;
        loop {
            // One slow API call (a paused API server) must not outlive the deadline.
            let budget = deadline
                .saturating_sub(start.elapsed())
                .max(CHECK_TIMEOUT_MIN);
            let outcome = tokio::time::timeout(budget.min(CHECK_TIMEOUT), check())
                .await
                .unwrap_or_else(|_| Err(anyhow!("check did not answer in time")));
            match outcome {
                Ok(Some(v)) => {
                    say(format!(
                        "ok after {:.1}s: {what}",
                        start.elapsed().as_secs_f64()
                    ));
                    return v;
                }
                Ok(None) => {}
                Err(e) => last_err = Some(e),
            }
            if start.elapsed() >= deadline {
                self.dump_state();
                panic!(
                    "timed out after {:?} waiting for {what}{}",
                    deadline,
                    last_err
                        .map(|e| format!(" (last error: {e:#})"))
                        .unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Check `invariant` repeatedly for `window`; if it ever fails (returns
    /// `Ok(Err(reason))`), print the cluster state and panic. For asserting
    /// that something does NOT happen. API errors are retried.
    pub async fn hold_for(
        &self,
        what: &str,
        window: Duration,
        mut invariant: impl AsyncFnMut() -> Result<std::result::Result<(), String>>,
    ) {
        let start = Instant::now();
        while start.elapsed() < window {
            if let Ok(Ok(Err(reason))) = tokio::time::timeout(CHECK_TIMEOUT, invariant()).await {
                self.dump_state();
                panic!(
                    "{what} stopped holding after {:.1}s: {reason}",
                    start.elapsed().as_secs_f64()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        say(format!("held for {window:?}: {what}"));
    }
}
