//! Lease-gated self-fencing, checked: the real permit cores of
//! [`kube_fencer_decide::permit`] — every node's holder and grantor, the
//! leader's revocation — run together on a virtual clock against a shell as
//! unkind as the real one ([`world`]):
//!
//! - every node's clocks (monotonic and watchdog timer) run at their own
//!   rates within the drift bound, changing rate at any time;
//! - peer messages are delayed (up to seconds), lost, duplicated and
//!   reordered; nodes are cut from their peers and/or the API server; the
//!   whole peer network or the whole control plane goes down;
//! - API requests take up to seconds, are throttled (429), land late (a
//!   write takes effect and its answer is lost), and watches stall;
//! - processes freeze (SIGSTOP) for any time, also between deciding to
//!   ping the watchdog and pinging it; VMs pause for up to the margin;
//! - agents crash and are restarted by the kubelet (their exit pings the
//!   device, as the kernel does), with or without their state directory;
//!   nodes power off and boot again; the leader crashes and another takes
//!   over its fencings from scratch; grantor sets change under a held
//!   permit;
//! - **the leader fences any node at any time**, healthy or not: a
//!   revocation must be safe whatever the detection got wrong; and it
//!   begins fencings from the grantors' silence reports as the shell does
//!   (every agent's reporter, the kubelets renewing their Leases through
//!   the same throttled API server, the leader's consistent read of a
//!   node's Lease and permit object before it begins, the real
//!   `silence::permit_over`);
//! - every schedule draws its own configuration from the whole range the
//!   flags accept ([`Config::sample`]), not only the defaults.
//!
//! Invariants, checked at every step:
//!
//! - **S1**: when the leader would delete a node's pods (its revocation's
//!   deadline passed on its clock), that node is off or has been reset since
//!   the revocation began.
//! - **S2** (schedules without node faults and without fencing, over
//!   accepted configurations): an outage of the control plane alone or of
//!   the peer network alone — with throttling, slow and lossy messages,
//!   agent restarts, grantor restarts and grantor-set changes — resets no
//!   node.
//! - **L1**: a node powered off before its revocation began is declared
//!   fenced, when nothing else fails, within the time the figures report.

pub mod world;

use std::time::Duration;

use kube_fencer_decide::permit::Drift;
use kube_fencer_decide::permit::timings::Timings;

use crate::Rng;

pub use world::{Outcome, Violation};

/// One configuration: the timings of every agent and of the leader, and
/// the cluster's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    pub nodes: usize,
    /// Peers in each node's grantor set.
    pub peers: usize,
    pub renew_interval: Duration,
    pub credit: Duration,
    pub api_credit: Duration,
    pub watchdog: Duration,
    pub margin: Duration,
    pub drift_ppm: u32,
    pub ack_window: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            nodes: 5,
            peers: 4,
            renew_interval: Duration::from_secs(1),
            credit: Duration::from_secs(10),
            api_credit: Duration::from_secs(30),
            watchdog: Duration::from_secs(5),
            margin: Duration::from_secs(1),
            drift_ppm: Drift::DEFAULT.ppm(),
            ack_window: Duration::from_secs(5),
        }
    }
}

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;

impl Config {
    /// The protocol's timings of this configuration.
    pub fn timings(&self) -> Timings {
        Timings {
            renew_interval: self.renew_interval,
            credit: self.credit,
            api_credit: self.api_credit,
            watchdog_timeout: self.watchdog,
            margin: self.margin,
            ack_window: self.ack_window,
            drift: Drift::from_ppm(self.drift_ppm).expect("drift within the bound"),
            grantors: self.peers.max(2),
        }
    }

    /// Whether the agents would start with it: accepted timings, and sets of
    /// at least two peers where the cluster has them.
    pub fn accepted(&self) -> bool {
        self.timings().check().is_ok() && (self.peers >= 2 || self.nodes == 2)
    }

    /// A configuration drawn from the whole space the flags accept, the
    /// boundaries included often.
    pub fn sample(rng: &mut Rng) -> Config {
        let mut pick = |lo: u64, hi: u64| -> u64 {
            match rng.below(8) {
                0 => lo,
                1 => hi,
                _ => lo + rng.below(hi - lo + 1),
            }
        };
        let nodes = pick(2, 7) as usize;
        let peers = pick(1, (nodes - 1) as u64) as usize;
        let renew = pick(100, 5_000) * MS;
        let watchdog = pick(1, 30) * SEC;
        let credit = pick(500, 60_000) * MS;
        let api_credit = credit.max(pick(1_000, 120_000) * MS);
        Config {
            nodes,
            peers,
            renew_interval: Duration::from_nanos(renew),
            credit: Duration::from_nanos(credit),
            api_credit: Duration::from_nanos(api_credit),
            watchdog: Duration::from_nanos(watchdog),
            margin: Duration::from_nanos(pick(0, 5_000) * MS),
            drift_ppm: pick(0, u64::from(Drift::MAX_PPM)) as u32,
            ack_window: Duration::from_nanos(pick(100, 10_000) * MS),
        }
    }
}

/// Which schedules to draw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Any fault, any fencing: S1 (and L1's figures).
    Adversary,
    /// No node fault and no fencing; an outage of the control plane or of
    /// the peer network (not both at once): S2.
    Outages,
    /// One node powered off, fenced 10–20 s later, nothing else failing:
    /// L1's figures (and S1).
    PowerOff,
}

/// What a batch of schedules found.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub schedules: u64,
    pub violations: Vec<(u64, Config, Violation)>,
    /// Revocations that reached their deadline (pods deleted).
    pub fenced: u64,
    /// From the start of a fencing to the deletion, for nodes powered off
    /// before it began (with nothing else failing, in [`Mode::PowerOff`]).
    pub fencing_times: Vec<Duration>,
    /// Power-off to deletion, for nodes powered off before their fencing
    /// began with nothing else failing meanwhile.
    pub recoveries: Vec<Duration>,
    /// Resets of nodes in outage schedules (S2 counts them as violations).
    pub resets: u64,
    /// Fencings the leader began from the grantors' silence reports, and
    /// those of them whose node still held a permit then.
    pub from_reports: u64,
    pub from_reports_held: u64,
}

impl Summary {
    pub fn merge(&mut self, other: Summary) {
        self.schedules += other.schedules;
        self.violations.extend(other.violations);
        self.fenced += other.fenced;
        self.recoveries.extend(other.recoveries);
        self.fencing_times.extend(other.fencing_times);
        self.resets += other.resets;
        self.from_reports += other.from_reports;
        self.from_reports_held += other.from_reports_held;
    }
}

/// Run `count` schedules from seed `first`; `config`: the same for all, or
/// (`None`) one drawn per schedule.
pub fn simulate(first: u64, count: u64, config: Option<Config>, mode: Mode) -> Summary {
    let mut sum = Summary::default();
    for seed in first..first + count {
        let out = run(seed, config, mode, false);
        sum.schedules += 1;
        sum.fenced += out.fenced;
        sum.resets += out.resets;
        sum.from_reports += out.from_reports;
        sum.from_reports_held += out.from_reports_held;
        sum.recoveries.extend(out.recoveries.iter().copied());
        sum.fencing_times.extend(out.fencing_times.iter().copied());
        for v in out.violations {
            sum.violations.push((seed, out.config, v));
        }
    }
    sum
}

/// One schedule (`trace`: keep a readable trace in the outcome).
pub fn run(seed: u64, config: Option<Config>, mode: Mode, trace: bool) -> Outcome {
    let mut rng = Rng(seed ^ 0x7065_726d_6974);
    let config = config.unwrap_or_else(|| {
        loop {
            // S2 holds for the configurations the agents accept; S1 for all.
            let c = Config::sample(&mut rng);
            if mode != Mode::Outages || c.accepted() {
                break c;
            }
        }
    });
    world::World::new(seed, config, mode, trace).run()
}

#[cfg(test)]
mod tests;

/// What the bounded check found.
#[derive(Clone, Debug, Default)]
pub struct CheckSummary {
    pub runs: u64,
    pub fenced: u64,
    /// The failing script, as fault names, and what broke.
    pub violations: Vec<(Vec<String>, Violation)>,
}

/// The faults the bounded check combines on three nodes (node 0 leads at
/// first): every kind that bears on a fencing, against the node being
/// fenced, its grantors or the leader.
pub fn alphabet(config: &Config) -> Vec<Option<world::Fault>> {
    use world::Fault as F;
    let w = config.watchdog.as_nanos() as u64;
    vec![
        None, // a step without a fault
        Some(F::PowerOff(1)),
        Some(F::CutPeers(1)),
        Some(F::CutApi(1)),
        Some(F::Heal(1)),
        Some(F::Crash {
            node: 1,
            keep_state: true,
        }),
        Some(F::Crash {
            node: 2,
            keep_state: false,
        }),
        Some(F::FreezeAtFeed(1, w)),
        Some(F::Freeze(1, w + SEC)),
        Some(F::Fence(1)),
        Some(F::Fence(2)),
        Some(F::LeaderCrash),
        Some(F::Reassign(1)),
        Some(F::Rollout(1)),
        Some(F::PeerOutage(true)),
        Some(F::ApiOutage(true)),
    ]
}

/// Every script of `depth` faults from [`alphabet`], one every 4 s from
/// 10 s, each followed by fencing node 1 (so that every combination is
/// also a fencing under it), on three nodes with `config`'s timings.
pub fn check(depth: usize, config: Config) -> CheckSummary {
    let config = Config {
        nodes: 3,
        peers: 2,
        ..config
    };
    let letters = alphabet(&config);
    let mut sum = CheckSummary::default();
    let mut word = vec![0usize; depth];
    loop {
        let mut script = Vec::new();
        let mut names = Vec::new();
        for (i, l) in word.iter().enumerate() {
            if let Some(f) = &letters[*l] {
                script.push((Duration::from_secs(10 + 4 * i as u64), f.clone()));
                names.push(format!("{f:?}"));
            }
        }
        let end = Duration::from_secs(10 + 4 * depth as u64);
        script.push((end, world::Fault::Fence(1)));
        let seed = word.iter().fold(0u64, |h, l| h * 31 + *l as u64);
        let out = world::World::new(seed, config, Mode::Adversary, false)
            .with_script(script)
            .run();
        sum.runs += 1;
        sum.fenced += out.fenced;
        for v in out.violations {
            sum.violations.push((names.clone(), v));
        }
        // The next word, in odometer order.
        let mut i = 0;
        loop {
            if i == depth {
                return sum;
            }
            word[i] += 1;
            if word[i] < letters.len() {
                break;
            }
            word[i] = 0;
            i += 1;
        }
    }
}
