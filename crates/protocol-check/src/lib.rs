//! The whole protocol, checked: the real leader core
//! ([`kube_fencer_decide::decide`]) and the real self-check of every agent
//! ([`kube_fencer_decide::agent::self_check`]) run together on
//! a virtual clock against models of kubelets, the API server, the network,
//! agents, watchdogs and leader changes ([`world`]), under random fault
//! schedules ([`random_schedule`]) and under every interleaving of a small
//! fault alphabet up to a depth ([`checker`]). The invariants:
//!
//! - **S1**: no pod is force-deleted while its node may still run it (the
//!   node has not been powered off or reset since the pod started there).
//! - **S2**: in an outage of the control plane alone (every node healthy and
//!   connected to its peers), no node fences itself and no node is fenced.
//! - **L1**: a powered-off node's StatefulSet pods are recovered within its
//!   computed bound, when nothing else goes wrong meanwhile (the leader is
//!   up, the API reachable, the storm guard not engaged).
//!
//! What is *not* modelled: the leader's in-flight writes outliving its
//! leadership, stale watch caches and relists beyond "a stalled watch
//! catches up", config changes, VolumeAttachments, fence commands, the
//! storm guard's population mismatch with unmanaged nodes (every simulated
//! node is managed), and clock drift beyond [`DRIFT_BOUND`].

#![forbid(unsafe_code)]

pub mod checker;
pub mod permits;
pub mod sweep;
pub mod world;

use std::collections::BTreeMap;
use std::time::Duration;

pub use world::{Fault, Link, Sim, SimConfig, Violation};

/// Largest clock-rate difference from real time of any node's clock
/// (monotonic clock and watchdog timer alike), as a fraction: 1000 ppm.
pub const DRIFT_BOUND: f64 = 1e-3;

/// A small deterministic PRNG (splitmix64): a seed replays exactly.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when n is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// Uniform in `[lo, hi)` nanoseconds.
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let (lo, hi) = (lo.as_nanos() as u64, hi.as_nanos() as u64);
        Duration::from_nanos(lo + self.below(hi.saturating_sub(lo).max(1)))
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// Uniform in `[-1, 1]`.
    pub fn unit(&mut self) -> f64 {
        (self.below(2_000_001) as f64 / 1_000_000.0) - 1.0
    }
}

/// Which faults random schedules draw from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultSet {
    /// Faults whose known violations are on the leader's side and fixed
    /// elsewhere: short API outages (the leader decides on heartbeats that
    /// aged while it was blind), leader crashes, reboots and nodes booting
    /// again after a reset (record and advertisement of an earlier boot),
    /// groups larger than the storm guard allows (its release).
    pub leader_side: bool,
    /// SIGTERM of agents (the shell must disarm only after withdrawing).
    pub sigterm: bool,
    /// A quarter of the schedules are a node cut from the API server while
    /// its peers still answer, then cut from everything 10–35 s later
    /// (rule 5b's answers kept from before the second cut). Off in the
    /// default run, whose recorded seeds draw as they always did.
    pub staged_cuts: bool,
}

impl Default for FaultSet {
    fn default() -> Self {
        FaultSet {
            leader_side: false,
            sigterm: true,
            staged_cuts: false,
        }
    }
}

/// A random fault schedule for `nodes` nodes over `horizon`.
pub fn random_schedule(
    rng: &mut Rng,
    nodes: usize,
    horizon: Duration,
    set: FaultSet,
) -> Vec<(Duration, Fault)> {
    let mut out = Vec::new();
    let s = Duration::from_secs;
    // A third of the schedules are a control-plane outage alone (S2).
    if rng.chance(30) {
        let n = 1 + rng.below(2);
        let mut t = rng.between(s(20), s(80));
        for _ in 0..n {
            let link = if rng.chance(50) {
                Link::Fast
            } else {
                Link::Blackhole
            };
            // Long enough that the leader loses its lease (short outages
            // with a surviving leader are leader-side).
            let min = if set.leader_side { 1 } else { 15 };
            let d = rng.between(s(min), s(150));
            out.push((t, Fault::ApiOutage(link)));
            out.push((t + d, Fault::ApiRestored));
            t += d + rng.between(s(5), s(60));
        }
        return out;
    }
    let faults = 1 + rng.below(4);
    for _ in 0..faults {
        let t = rng.between(s(15), horizon.saturating_sub(s(90)).max(s(16)));
        let node = rng.below(nodes as u64) as usize;
        let link = if rng.chance(50) {
            Link::Fast
        } else {
            Link::Blackhole
        };
        let heal = t + rng.between(s(1), s(120));
        let f = match rng.below(if set.sigterm { 12 } else { 11 }) {
            0 => Fault::PowerOff(node),
            // Half of the kubelet failures hang for a while instead (and the
            // node may be cut off meanwhile): renewals resume after the
            // Fencing record, or the agent sees a later renewal than the
            // leader. Drawn from bits of `t`, so that the stream of draws,
            // and every recorded seed, stays what it was.
            1 if t.subsec_nanos() & 1 == 1 => {
                let bits = u64::from(t.subsec_nanos() >> 1);
                if bits & 1 == 1 {
                    out.push((t + s(5 + (bits >> 1) % 30), Fault::CutAll(node, link)));
                }
                Fault::KubeletHang(node, s(5 + (bits >> 6) % 55))
            }
            1 => Fault::KubeletDies(node),
            2 => {
                out.push((heal, Fault::Heal(node)));
                Fault::CutApi(node, link)
            }
            3 => {
                out.push((heal, Fault::Heal(node)));
                Fault::CutAll(node, link)
            }
            4 => {
                // A group cut off together (a site, a rack).
                let mut group: Vec<usize> = (0..nodes).filter(|_| rng.chance(40)).collect();
                if group.is_empty() {
                    group.push(node);
                }
                if !set.leader_side {
                    // A group larger than the storm guard allows trips it,
                    // and what follows its release is the leader's side.
                    group.truncate((nodes * 40 / 100).max(1));
                }
                for &g in &group {
                    out.push((heal, Fault::Heal(g)));
                }
                Fault::CutGroup(group, link)
            }
            5 => Fault::AgentCrash(node),
            6 => Fault::AgentHang(node, rng.between(s(2), s(90))),
            7 if set.leader_side => Fault::Reboot(node),
            7 => Fault::PowerOff(node),
            8 => {
                // Kubelet dies, and the node is cut a little later (just
                // before or after the Fencing record).
                let later = t + rng.between(s(5), s(35));
                out.push((later, Fault::CutAll(node, link)));
                Fault::KubeletDies(node)
            }
            9 => {
                // Cut, then the agent restarts mid-partition.
                let later = t + rng.between(s(1), s(30));
                out.push((later, Fault::AgentCrash(node)));
                Fault::CutAll(node, link)
            }
            10 => {
                if set.leader_side {
                    Fault::LeaderCrash
                } else {
                    out.push((t + rng.between(s(1), s(30)), Fault::AgentCrash(node)));
                    Fault::PowerOff((node + 1) % nodes)
                }
            }
            _ => Fault::Sigterm(node),
        };
        out.push((t, f));
    }
    out.sort_by_key(|(t, _)| *t);
    out
}

/// A node cut from the API server while its peers still answer, then cut
/// from everything 10–35 s later (healed a while after, or not).
pub fn staged_cut_schedule(
    rng: &mut Rng,
    nodes: usize,
    horizon: Duration,
) -> Vec<(Duration, Fault)> {
    let s = Duration::from_secs;
    let node = rng.below(nodes as u64) as usize;
    let link = |rng: &mut Rng| {
        if rng.chance(50) {
            Link::Fast
        } else {
            Link::Blackhole
        }
    };
    let t = rng.between(s(15), horizon.saturating_sub(s(200)).max(s(16)));
    let later = t + rng.between(s(10), s(35));
    let mut out = vec![
        (t, Fault::CutApi(node, link(rng))),
        (later, Fault::CutAll(node, link(rng))),
    ];
    if rng.chance(50) {
        out.push((later + rng.between(s(1), s(120)), Fault::Heal(node)));
    }
    out
}

/// The outcome of many random schedules.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub schedules: u64,
    pub violations: Vec<(u64, Violation)>,
    /// Time from power-off to the deletion of the node's pod, for the
    /// schedules where L1 applies.
    pub recoveries: Vec<Duration>,
    /// Largest observed time from the leader's last observed heartbeat of
    /// a node marked fenced on time to that node being off (or reset).
    pub worst_dead_after_heartbeat: Duration,
    /// The seed of that worst case.
    pub worst_seed: u64,
    /// The configuration of each violating seed (sweep: drawn from it).
    pub configs: BTreeMap<u64, String>,
}

impl Summary {
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        let mut v = self.recoveries.clone();
        if v.is_empty() {
            return None;
        }
        v.sort();
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        Some(v[i.min(v.len() - 1)])
    }
}

/// Run one schedule from `seed`; `trace` keeps a readable log.
pub fn run_seed(seed: u64, base: &SimConfig, set: FaultSet, trace: bool) -> Sim {
    run_schedule(&mut Rng(seed), base, set, Duration::ZERO, trace)
}

/// Run the schedule `rng` draws next, on `base`, its faults `offset` later.
pub fn run_schedule(
    rng: &mut Rng,
    base: &SimConfig,
    set: FaultSet,
    offset: Duration,
    trace: bool,
) -> Sim {
    let mut cfg = base.clone();
    cfg.boot_after_reset |= set.leader_side;
    cfg.nodes = 3 + rng.below(3) as usize;
    let schedule = if set.staged_cuts && rng.chance(25) {
        staged_cut_schedule(rng, cfg.nodes, cfg.horizon)
    } else {
        random_schedule(rng, cfg.nodes, cfg.horizon, set)
    };
    let mut sim = Sim::new(cfg, rng.next_u64(), trace);
    for (t, f) in schedule {
        sim.schedule_fault(t + offset, f);
    }
    sim.run();
    sim
}

/// Run `count` schedules from seeds `first..`.
pub fn simulate(first: u64, count: u64, base: &SimConfig, set: FaultSet) -> Summary {
    simulate_with(first, count, base, set, None)
}

/// Run `count` schedules from seeds `first..`; with `sweep`, each on a
/// configuration drawn from its seed ([`sweep::run_sweep_seed`]).
pub fn simulate_with(
    first: u64,
    count: u64,
    base: &SimConfig,
    set: FaultSet,
    sweep: Option<&sweep::Ranges>,
) -> Summary {
    let mut sum = Summary::default();
    for seed in first..first + count {
        let (params, sim) = match sweep {
            Some(r) => {
                let (p, sim) = sweep::run_sweep_seed(seed, base, set, r, false);
                (p, sim)
            }
            None => (sweep::Params::of(base), run_seed(seed, base, set, false)),
        };
        sum.schedules += 1;
        if let Some(v) = sim.violations.first() {
            sum.violations.push((seed, v.clone()));
            sum.configs.insert(seed, params.to_string());
        }
        sum.recoveries.extend(sim.recoveries.iter().copied());
        if sim.worst_dead_after_heartbeat > sum.worst_dead_after_heartbeat {
            sum.worst_dead_after_heartbeat = sim.worst_dead_after_heartbeat;
            sum.worst_seed = seed;
        }
    }
    sum
}

#[cfg(test)]
mod tests;
