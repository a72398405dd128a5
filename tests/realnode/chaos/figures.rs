//! The figures of a run (ms): what the test prints at the end and writes to
//! KUBE_FENCER_REALNODE_RESULT as JSON.

use kube_fencer_testkit::realnode::secs;

#[derive(Default, Debug)]
pub(super) struct Figures {
    /// From `realnode.sh add` to Ready, rn-1 to rn-3.
    pub node_ready: [i64; 3],
    /// From apply to every agent pod Ready (step 1).
    pub daemonset_ready: i64,
    /// Step 3, from the power-off: db-0 Running elsewhere, the node
    /// recorded Fencing, Fenced, the old db-0 gone.
    pub poweroff_ttr: i64,
    pub poweroff_fencing: i64,
    pub poweroff_fenced: i64,
    pub poweroff_old_pod_gone: i64,
    /// Step 4: from boot to unfenced.
    pub poweroff_unfence: i64,
    /// Step 5: the agent's decision after the cut, the watchdog after the
    /// decision, db-0 Running elsewhere after the cut, unfenced after boot.
    pub cut_decision: i64,
    pub cut_watchdog: i64,
    pub cut_ttr: i64,
    pub cut_unfence: i64,
    /// Step 6: the watchdog after the freeze, db-0 Running elsewhere after
    /// the cut, unfenced after boot.
    pub frozen_watchdog: i64,
    pub frozen_ttr: i64,
    pub frozen_unfence: i64,
    /// Step 7: from apply to every unprivileged agent Ready, Fencing after
    /// the power-off, unfenced after boot.
    pub unpriv_ready: i64,
    pub unpriv_fencing: i64,
    pub unpriv_unfence: i64,
}

impl Figures {
    /// The timings line printed at the end of the run.
    pub fn summary(&self, t_total: i64) -> String {
        format!(
            "timings: node Ready rn-1 {} s, rn-2 {} s, rn-3 {} s; DaemonSet Ready {} s; \
             power-off TTR {} s (Fencing +{} s, Fenced +{} s); unfence {} s after boot; \
             cut: decision +{} s, watchdog +{} s after it, TTR {} s, unfence {} s; \
             frozen agent: watchdog +{} s after the freeze, TTR {} s; \
             unprivileged: Ready {} s after apply, unfenceable node kept its pods, unfence {} s after boot; total {} s",
            secs(self.node_ready[0]),
            secs(self.node_ready[1]),
            secs(self.node_ready[2]),
            secs(self.daemonset_ready),
            secs(self.poweroff_ttr),
            secs(self.poweroff_fencing),
            secs(self.poweroff_fenced),
            secs(self.poweroff_unfence),
            secs(self.cut_decision),
            secs(self.cut_watchdog),
            secs(self.cut_ttr),
            secs(self.cut_unfence),
            secs(self.frozen_watchdog),
            secs(self.frozen_ttr),
            secs(self.unpriv_ready),
            secs(self.unpriv_unfence),
            secs(t_total)
        )
    }

    /// The figures of this run, in seconds, for bench/ (the realnode
    /// section).
    pub fn json(&self, t_total: i64) -> String {
        let s = secs;
        format!(
            r#"{{"node_ready": [{}, {}, {}],
 "daemonset_ready": {},
 "poweroff": {{"ttr": {}, "fencing": {}, "fenced": {},
              "old_pod_gone": {}, "unfence_after_boot": {}}},
 "cut": {{"decision": {}, "watchdog_after_decision": {},
         "ttr": {}, "unfence_after_boot": {}}},
 "frozen": {{"watchdog_after_freeze": {}, "ttr": {},
            "unfence_after_boot": {}}},
 "unprivileged": {{"daemonset_ready": {}, "fencing": {},
                  "unfence_after_boot": {}}},
 "total": {}}}
"#,
            s(self.node_ready[0]),
            s(self.node_ready[1]),
            s(self.node_ready[2]),
            s(self.daemonset_ready),
            s(self.poweroff_ttr),
            s(self.poweroff_fencing),
            s(self.poweroff_fenced),
            s(self.poweroff_old_pod_gone),
            s(self.poweroff_unfence),
            s(self.cut_decision),
            s(self.cut_watchdog),
            s(self.cut_ttr),
            s(self.cut_unfence),
            s(self.frozen_watchdog),
            s(self.frozen_ttr),
            s(self.frozen_unfence),
            s(self.unpriv_ready),
            s(self.unpriv_fencing),
            s(self.unpriv_unfence),
            s(t_total)
        )
    }
}
