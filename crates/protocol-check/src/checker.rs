//! An explicit-state search over the same cores: from a settled cluster,
//! every sequence of fault actions from a small alphabet, each followed by
//! a few seconds of the protocol running (its decision points: checks every
//! few seconds, the leader's lease every four), up to a depth; states are
//! deduplicated by a coarse fingerprint, and every leaf runs on without
//! further faults until everything settled. The same invariants hold at
//! every step; a counterexample is a replayable path.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use super::world::{Fault, Link, Sim, SimConfig, T, Violation};

/// The bound of a search.
#[derive(Clone, Debug)]
pub struct Bounds {
    pub nodes: usize,
    pub depth: usize,
    /// Time between two actions.
    pub step: Duration,
    /// How long a leaf runs on without faults.
    pub settle: Duration,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            nodes: 3,
            depth: 3,
            step: Duration::from_secs(4),
            settle: Duration::from_secs(150),
        }
    }
}

/// One action of the alphabet.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Wait,
    Fault(Fault),
}

/// The outcome of a search.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub states: u64,
    pub paths: u64,
    pub violation: Option<(Vec<Action>, Violation)>,
}

/// The alphabet, for a cluster whose leader runs on `leader` (faults hit
/// the leader's node and one follower; the other followers are symmetric).
pub fn alphabet(nodes: usize, leader: usize) -> Vec<Action> {
    let follower = (leader + 1) % nodes;
    let mut out = vec![
        Action::Wait,
        Action::Fault(Fault::ApiOutage(Link::Fast)),
        Action::Fault(Fault::ApiOutage(Link::Blackhole)),
        Action::Fault(Fault::ApiRestored),
        Action::Fault(Fault::LeaderCrash),
    ];
    for n in [follower, leader] {
        out.extend(
            [
                Fault::PowerOff(n),
                Fault::KubeletDies(n),
                Fault::KubeletHang(n, Duration::from_secs(30)),
                Fault::CutApi(n, Link::Fast),
                Fault::CutAll(n, Link::Fast),
                Fault::CutAll(n, Link::Blackhole),
                Fault::Heal(n),
                Fault::AgentCrash(n),
                Fault::AgentHang(n, Duration::from_secs(60)),
            ]
            .map(Action::Fault),
        );
    }
    out
}

fn settled(cfg: &SimConfig, seed: u64) -> Sim {
    let mut sim = Sim::new(cfg.clone(), seed, false);
    sim.run_until(30_000_000_000);
    sim
}

fn apply(sim: &mut Sim, a: &Action, step: Duration) {
    if let Action::Fault(f) = a {
        sim.inject(f.clone());
    }
    let until: T = sim.now + u64::try_from(step.as_nanos()).unwrap_or(u64::MAX);
    sim.run_until(until);
}

/// Search every path up to the bounds (breadth first).
pub fn search(bounds: &Bounds, base: &SimConfig) -> Outcome {
    let mut cfg = base.clone();
    cfg.nodes = bounds.nodes;
    let root = settled(&cfg, 1);
    let leader = root.leader.as_ref().map_or(0, |l| l.node);
    let actions = alphabet(bounds.nodes, leader);
    let mut out = Outcome::default();
    let mut seen = HashSet::new();
    seen.insert(root.fingerprint());
    let mut queue = VecDeque::new();
    queue.push_back((root, Vec::<Action>::new()));
    while let Some((sim, path)) = queue.pop_front() {
        if path.len() == bounds.depth {
            let mut leaf = sim;
            let until = leaf.now + u64::try_from(bounds.settle.as_nanos()).unwrap_or(u64::MAX);
            leaf.run_until(until);
            leaf.finish();
            out.paths += 1;
            if let Some(v) = leaf.violations.first() {
                out.violation = Some((path, v.clone()));
                return out;
            }
            continue;
        }
        for a in &actions {
            let mut next = sim.clone();
            apply(&mut next, a, bounds.step);
            let mut p = path.clone();
            p.push(a.clone());
            if let Some(v) = next.violations.first() {
                out.states += 1;
                out.violation = Some((p, v.clone()));
                return out;
            }
            if seen.insert(next.fingerprint()) {
                out.states += 1;
                queue.push_back((next, p));
            }
        }
    }
    out.states += 1;
    out
}

/// Replay a path with a trace.
pub fn replay(bounds: &Bounds, base: &SimConfig, path: &[Action]) -> Sim {
    let mut cfg = base.clone();
    cfg.nodes = bounds.nodes;
    let mut sim = Sim::new(cfg, 1, true);
    sim.run_until(30_000_000_000);
    for a in path {
        apply(&mut sim, a, bounds.step);
        if !sim.violations.is_empty() {
            return sim;
        }
    }
    let until = sim.now + u64::try_from(bounds.settle.as_nanos()).unwrap_or(u64::MAX);
    sim.run_until(until);
    sim.finish();
    sim
}
