//! The simulated cluster: nodes with their own clocks, watchdog devices as
//! the kernel runs them, agent processes running the real holder and
//! grantor, the API server with the nodes' permit objects, a lossy peer
//! network, and the leader running the real revocation.
//!
//! Real time is in nanoseconds. Every node's monotonic clock and watchdog
//! timer are [`Clock`]s of their own; the cores see only their node's
//! monotonic clock, as `Instant`s.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt;
use std::time::{Duration, Instant};

use kube_fencer_decide::permit::grantor::{self, Grantor, Memory};
use kube_fencer_decide::permit::holder::{
    self, ApiOutcome, Command, Device, Feed, Holder, HolderSettings, Saved,
};
use kube_fencer_decide::permit::object::Silent;
use kube_fencer_decide::permit::revoke::{ApiPath, Revocation, RevokeSettings};
use kube_fencer_decide::permit::silence::{self, ApiSeen, Heard, REPORT_WITHIN};
use kube_fencer_decide::permit::{Answer, GrantorSet, Renewal, Stop, StopAck};

use super::{Config, MS, Mode, SEC};
use crate::Rng;

type T = u64;

/// How long a schedule runs.
const HORIZON: T = 240 * SEC;
/// The feeding thread's period.
const FEED_PERIOD: T = 250 * MS;
/// The leader's tick, and how often it repeats an unanswered stop.
const LEADER_TICK: T = 500 * MS;
/// The kubelet renews its node's Lease this often, and retries a failed
/// renewal after a second.
const KUBELET_RENEW: T = 10 * SEC;
const KUBELET_RETRY: T = SEC;
/// The leader suspects a node through its permit only once its kubelet
/// missed a Lease renewal: none for `--node-heartbeat-interval` +
/// `--burst-spread` (the defaults), on a consistent read.
const KUBELET_MISSED: T = 12 * SEC;
/// How often an agent looks at the grantees it stopped granting.
const REPORT_EVERY: T = SEC;

/// A broken invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// S1: the leader deleted the pods of a node still running the boot it
    /// began fencing.
    DeletedWhileRunning { node: usize, at: T },
    /// S2: a node reset in an outage of the control plane or of the peer
    /// network alone.
    ResetInOutage { node: usize, at: T },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::DeletedWhileRunning { node, at } => write!(
                f,
                "S1: pods of node {node} deleted at {:.3}s while it still runs the boot being fenced",
                secs(*at)
            ),
            Violation::ResetInOutage { node, at } => write!(
                f,
                "S2: node {node} reset at {:.3}s in an outage of one path only",
                secs(*at)
            ),
        }
    }
}

fn secs(t: T) -> f64 {
    t as f64 / SEC as f64
}

/// What a schedule did.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub config: Config,
    pub violations: Vec<Violation>,
    pub fenced: u64,
    /// Fencings the leader began from the grantors' silence reports.
    pub from_reports: u64,
    /// ...of which the node still held a permit when it began.
    pub from_reports_held: u64,
    pub resets: u64,
    pub recoveries: Vec<Duration>,
    pub fencing_times: Vec<Duration>,
    pub trace: Vec<String>,
}

/// A clock running at `1 + ppm/1e6` of real time from an anchor; `paused`
/// (a VM pause) stops it.
#[derive(Clone, Copy, Debug)]
struct Clock {
    real: T,
    local: T,
    ppm: i64,
    paused: bool,
}

impl Clock {
    fn new(ppm: i64) -> Self {
        Clock {
            real: 0,
            local: 1_000 * SEC,
            ppm,
            paused: false,
        }
    }

    fn local(&self, real: T) -> T {
        if self.paused {
            return self.local;
        }
        let d = real.saturating_sub(self.real) as i128;
        self.local + (d + d * self.ppm as i128 / 1_000_000) as T
    }

    /// The real time at which the clock reads `local` (now if it has).
    fn real_at(&self, local: T, now: T) -> T {
        if self.paused {
            return T::MAX;
        }
        let at = self.local(now);
        if local <= at {
            return now;
        }
        let d = (local - at) as i128;
        let rate = 1_000_000 + self.ppm as i128;
        now + ((d * 1_000_000 + rate - 1) / rate) as T
    }

    fn set(&mut self, now: T, ppm: i64, paused: bool) {
        self.local = self.local(now);
        self.real = now;
        self.ppm = ppm;
        self.paused = paused;
    }
}

/// The watchdog device as the kernel runs it: once opened it runs until it
/// fires; a ping (a write, `WDIOC_SETTIMEOUT`, the exit of the process
/// holding it) restarts its timeout on its own timer.
#[derive(Clone, Copy, Debug)]
struct Wdt {
    open: bool,
    timeout: T,
    fires_at_local: T,
}

struct Agent {
    incarnation: u64,
    holder: Holder,
    grantor: Grantor,
    /// Set: the next feed check freezes the process this long between the
    /// decision and the ping.
    freeze_at_feed: Option<T>,
}

struct Node {
    mono: Clock,
    wdt_clock: Clock,
    wdt: Wdt,
    powered: bool,
    /// Down after a reset, until it boots again.
    down: bool,
    boot: u64,
    agent: Option<Agent>,
    frozen_until: T,
    /// The state directory (tmpfs): lost with the boot.
    state: Option<(Saved, Memory)>,
    cut_peers: bool,
    cut_api: bool,
    /// The node's monotonic clock at its boot (its uptime counts from it).
    booted_local: T,
    /// No agent has started in this boot yet.
    first_in_boot: bool,
    /// Real time it was last powered off.
    off_at: T,
    /// Real time its kubelet last renewed its Lease.
    kubelet_renewed: T,
}

#[derive(Clone, Debug)]
struct PermitObject {
    version: u64,
    /// The boot in which the node's agent armed its watchdog (written by
    /// the agent after its first ping of a boot): the leader fences through
    /// the permit only a node armed in the boot it fences.
    armed_boot: Option<u64>,
    revoked: bool,
    /// The node's fencing number: grows with every fencing, written (in
    /// the shell: with the fencing's start, before its first stop) where
    /// every leader reads it. Revocations and lifts name it.
    fencings: u64,
    renewals: u64,
    credit: Duration,
    watchdog: Duration,
    sets: Vec<GrantorSet>,
    /// As a grantor: the grantees it reports silent.
    silent: BTreeMap<String, Silent>,
}

struct Fencing {
    rev: Revocation,
    boot: u64,
    closed: bool,
    closing: bool,
    asked: BTreeMap<usize, T>,
    deleted: bool,
    /// Real time the node was powered off before this began, if it was.
    off_since: Option<T>,
    /// Real time this began.
    started: T,
    /// Begun from the node's grantors' silence reports.
    from_reports: bool,
}

struct Leader {
    node: usize,
    epoch: u64,
    fencings: BTreeMap<usize, Fencing>,
    /// Per node, the renewal count through the API server its permit
    /// object carries and when this leader first saw it (its clock).
    seen: BTreeMap<usize, (u64, T)>,
    /// Per grantor, the version of its object whose silence report this
    /// leader last took in, and what it infers from it by grantee.
    heard: BTreeMap<usize, (u64, BTreeMap<String, Heard>)>,
    /// Per node, the arming its object records as this leader last saw
    /// it: the object's version, the boot, and when it first saw that
    /// arming (its clock).
    armed: BTreeMap<usize, (u64, Option<u64>, T)>,
    /// Real time this leader last regained the API server: a Lease counts
    /// as renewed then (a renewal it could not see is not a missed one).
    api_since: T,
    api_lost: bool,
}

#[derive(Clone, Debug)]
enum Ev {
    Renew {
        node: usize,
        inc: u64,
    },
    /// An extra tick of the holder (a retry), not rescheduled.
    Tick {
        node: usize,
        inc: u64,
    },
    FeedCheck {
        node: usize,
        inc: u64,
    },
    Ping {
        node: usize,
        inc: u64,
        feed: Feed,
    },
    Fire {
        node: usize,
    },
    Deliver(Msg),
    ApiGet {
        node: usize,
        inc: u64,
        round: u64,
    },
    ApiPut {
        node: usize,
        inc: u64,
        round: u64,
        version: u64,
    },
    ApiDone {
        node: usize,
        inc: u64,
        round: u64,
        outcome: ApiOutcome,
        sets: Option<Vec<GrantorSet>>,
    },
    Restart {
        node: usize,
    },
    Boot {
        node: usize,
    },
    LeaderTick {
        epoch: u64,
    },
    CloseGet {
        epoch: u64,
        target: usize,
    },
    ClosePut {
        epoch: u64,
        target: usize,
        version: u64,
        renewals: u64,
    },
    Closed {
        epoch: u64,
        target: usize,
        path: Option<(ApiPath, Vec<GrantorSet>)>,
    },
    /// The leader's watch delivers a renewal through the API server.
    Watch {
        leader_epoch: u64,
        target: usize,
        renewals: u64,
    },
    SetSeen {
        node: usize,
        inc: u64,
    },
    Kubelet {
        node: usize,
    },
    /// An agent looks at its silent grantees.
    Report {
        node: usize,
        inc: u64,
    },
    /// Its report of `silent` reaches the API server.
    ReportPut {
        node: usize,
        silent: BTreeMap<String, Silent>,
    },
    /// The leader's watch delivers a node's arming (or its withdrawal).
    ArmedSeen {
        leader_epoch: u64,
        node: usize,
        version: u64,
        armed: Option<u64>,
    },
    /// The leader's watch delivers a grantor's report.
    ReportSeen {
        leader_epoch: u64,
        grantor: usize,
        version: u64,
        silent: BTreeMap<String, Silent>,
    },
    /// The leader unfences a node it fenced that booted again.
    Lift {
        node: usize,
    },
    Fault(Fault),
}

#[derive(Clone, Debug)]
enum Msg {
    Renew {
        from: usize,
        inc: u64,
        to: usize,
        renewal: Renewal,
    },
    Answer {
        from: usize,
        to: usize,
        inc: u64,
        round: u64,
        answer: Answer,
    },
    Stop {
        epoch: u64,
        leader: usize,
        to: usize,
        stop: Stop,
    },
    Ack {
        epoch: u64,
        from: usize,
        to: usize,
        target: usize,
        /// The stop acknowledged.
        stop: Stop,
        ack: StopAck,
    },
}

/// What a schedule does to the cluster (nodes by index; durations and
/// times in nanoseconds).
#[derive(Clone, Debug)]
pub enum Fault {
    PowerOff(usize),
    Crash {
        node: usize,
        keep_state: bool,
    },
    /// A rolling update replaces the agent: it withdraws its arming from its
    /// permit object (a conditional write, refused once it is revoked) and
    /// closes the device with the magic character; the new agent starts
    /// 1–60 s later (an image to pull) and arms again.
    Rollout(usize),
    Freeze(usize, T),
    FreezeAtFeed(usize, T),
    VmPause(usize, T),
    Rate(usize, i64),
    CutPeers(usize),
    CutApi(usize),
    Heal(usize),
    PeerOutage(bool),
    ApiOutage(bool),
    Throttle(u64),
    Slow(T),
    Loss(u64),
    Fence(usize),
    LeaderCrash,
    /// Node `n` takes the lead (after the leader Lease expired).
    Elect(usize),
    Reassign(usize),
}

pub struct World {
    seed: u64,
    cfg: Config,
    mode: Mode,
    rng: Rng,
    now: T,
    seq: u64,
    queue: BinaryHeap<Reverse<(T, u64, usize)>>,
    events: Vec<Option<Ev>>,
    base: Instant,
    nodes: Vec<Node>,
    objects: Vec<PermitObject>,
    leader: Option<Leader>,
    epochs: u64,
    incarnations: u64,
    peer_outage: bool,
    api_outage: bool,
    throttle: u64,
    slow: T,
    loss: u64,
    vm_paused: bool,
    out: Outcome,
    trace: bool,
    script: Option<Vec<(T, Fault)>>,
}

impl World {
    pub fn new(seed: u64, cfg: Config, mode: Mode, trace: bool) -> Self {
        let mut rng = Rng(seed);
        let bound = i64::from(cfg.drift_ppm);
        let rate = |rng: &mut Rng| {
            if bound == 0 {
                0
            } else {
                (rng.below(2 * bound as u64 + 1) as i64) - bound
            }
        };
        let mut nodes = Vec::new();
        for _ in 0..cfg.nodes {
            let (m, w) = (rate(&mut rng), rate(&mut rng));
            nodes.push(Node {
                mono: Clock::new(m),
                wdt_clock: Clock::new(w),
                wdt: Wdt {
                    open: false,
                    timeout: 0,
                    fires_at_local: 0,
                },
                powered: true,
                down: false,
                boot: 1,
                agent: None,
                frozen_until: 0,
                state: None,
                cut_peers: false,
                cut_api: false,
                booted_local: 0,
                first_in_boot: true,
                off_at: 0,
                kubelet_renewed: 0,
            });
        }
        let objects = (0..cfg.nodes)
            .map(|n| PermitObject {
                version: 1,
                armed_boot: None,
                revoked: false,
                fencings: 0,
                renewals: 0,
                credit: Duration::ZERO,
                watchdog: Duration::ZERO,
                sets: vec![Self::assign(&mut rng, &cfg, n, 1)],
                silent: BTreeMap::new(),
            })
            .collect();
        World {
            seed,
            cfg,
            mode,
            rng,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: Vec::new(),
            base: Instant::now(),
            nodes,
            objects,
            leader: None,
            epochs: 0,
            incarnations: 0,
            peer_outage: false,
            api_outage: false,
            throttle: 0,
            slow: 0,
            loss: 0,
            vm_paused: false,
            out: Outcome {
                config: cfg,
                violations: Vec::new(),
                fenced: 0,
                from_reports: 0,
                from_reports_held: 0,
                resets: 0,
                recoveries: Vec::new(),
                fencing_times: Vec::new(),
                trace: Vec::new(),
            },
            trace,
            script: None,
        }
    }

    /// Run this script instead of a random schedule: `(time, fault)`.
    pub fn with_script(mut self, script: Vec<(Duration, Fault)>) -> Self {
        self.script = Some(
            script
                .into_iter()
                .map(|(t, f)| (t.as_nanos() as T, f))
                .collect(),
        );
        self
    }

    /// A grantor set for `node`: `peers` other nodes.
    fn assign(rng: &mut Rng, cfg: &Config, node: usize, version: u64) -> GrantorSet {
        let mut others: Vec<usize> = (0..cfg.nodes).filter(|&n| n != node).collect();
        let mut chosen = Vec::new();
        while chosen.len() < cfg.peers && !others.is_empty() {
            let i = rng.below(others.len() as u64) as usize;
            chosen.push(name(others.swap_remove(i)));
        }
        GrantorSet::new(version, chosen)
    }

    fn log(&mut self, what: impl FnOnce() -> String) {
        if self.trace {
            let line = format!("{:>9.3}s {}", secs(self.now), what());
            self.out.trace.push(line);
        }
    }

    fn at(&mut self, t: T, ev: Ev) {
        self.seq += 1;
        self.events.push(Some(ev));
        self.queue
            .push(Reverse((t, self.seq, self.events.len() - 1)));
    }

    fn instant(&self, node: usize) -> Instant {
        self.base + Duration::from_nanos(self.nodes[node].mono.local(self.now))
    }

    /// The real time at which `node`'s monotonic clock has advanced by `d`.
    fn after_local(&self, node: usize, d: T) -> T {
        let n = &self.nodes[node];
        let target = n.mono.local(self.now) + d;
        n.mono.real_at(target, self.now).max(self.now + 1)
    }

    fn holder_settings(&self) -> HolderSettings {
        self.cfg.timings().holder()
    }

    fn revoke_settings(&self) -> RevokeSettings {
        self.cfg.timings().revoke()
    }

    fn quarantine(&self) -> Duration {
        let s = self.revoke_settings();
        grantor::quarantine(s.ack_window, s.horizon(), s.drift)
    }

    pub fn run(mut self) -> Outcome {
        for n in 0..self.cfg.nodes {
            self.start_agent(n, false);
            let t = self.rng.below(KUBELET_RENEW);
            self.at(t, Ev::Kubelet { node: n });
        }
        self.elect(0);
        self.schedule_faults();
        while let Some(Reverse((t, _, i))) = self.queue.pop() {
            if t > HORIZON {
                break;
            }
            self.now = t;
            let ev = self.events[i].take().expect("each event once");
            self.handle(ev);
        }
        self.out
    }

    // ------------------------------------------------------------ faults --

    fn schedule_faults(&mut self) {
        let n = self.cfg.nodes;
        if let Some(script) = self.script.take() {
            for (t, f) in script {
                self.at(t, Ev::Fault(f));
            }
            return;
        }
        if self.mode == Mode::PowerOff {
            // One node powered off, fenced once the leader noticed (a
            // detection delay as the kubelet's Lease gives it), nothing
            // else: L1's figures.
            let node = 1 + self.rng.below(n as u64 - 1) as usize;
            let off = 5 * SEC + self.rng.below(20 * SEC);
            self.at(off, Ev::Fault(Fault::PowerOff(node)));
            let detected = off + 10 * SEC + self.rng.below(10 * SEC);
            self.at(detected, Ev::Fault(Fault::Fence(node)));
            return;
        }
        let mut t = 5 * SEC;
        let count = 2 + self.rng.below(10);
        let mut outage_kind: Option<bool> = None;
        for _ in 0..count {
            t += self.rng.below(25 * SEC) + MS;
            let node = self.rng.below(n as u64) as usize;
            let f = match self.mode {
                Mode::Adversary => match self.rng.below(20) {
                    0 | 1 => Fault::PowerOff(node),
                    2 => Fault::Crash {
                        node,
                        keep_state: true,
                    },
                    3 => Fault::Crash {
                        node,
                        keep_state: false,
                    },
                    4 => Fault::Freeze(node, self.rng.below(30 * SEC)),
                    5 => Fault::FreezeAtFeed(
                        node,
                        self.rng
                            .below(2 * self.cfg.watchdog.as_nanos() as u64 + SEC),
                    ),
                    6 => {
                        Fault::VmPause(node, self.rng.below(self.cfg.margin.as_nanos() as u64 + 1))
                    }
                    7 => Fault::Rate(node, self.rate()),
                    8 => Fault::CutPeers(node),
                    9 => Fault::CutApi(node),
                    10 => Fault::Heal(node),
                    11 => Fault::PeerOutage(self.rng.chance(50)),
                    12 => Fault::ApiOutage(self.rng.chance(50)),
                    13 => Fault::Throttle(self.rng.below(90)),
                    14 => Fault::Slow(self.rng.below(4 * SEC)),
                    15 => Fault::Loss(self.rng.below(60)),
                    16 => Fault::LeaderCrash,
                    17 => Fault::Reassign(node),
                    18 => Fault::Rollout(node),
                    _ => Fault::Fence(node),
                },
                super::Mode::PowerOff => unreachable!("scheduled above"),
                super::Mode::Outages => match self.rng.below(10) {
                    0 => {
                        let kind = *outage_kind.get_or_insert(self.rng.chance(50));
                        if kind {
                            Fault::ApiOutage(self.rng.chance(70))
                        } else {
                            Fault::PeerOutage(self.rng.chance(70))
                        }
                    }
                    1 => Fault::Crash {
                        node,
                        keep_state: true,
                    },
                    2 => Fault::Freeze(node, self.rng.below(SEC / 2)),
                    3 => Fault::Rate(node, self.rate()),
                    4 => Fault::Throttle(self.rng.below(30)),
                    5 => Fault::Slow(self.rng.below(SEC)),
                    6 => Fault::Loss(self.rng.below(20)),
                    7 => Fault::Reassign(node),
                    8 => Fault::Rollout(node),
                    _ => Fault::LeaderCrash,
                },
            };
            self.at(t, Ev::Fault(f));
        }
        // Some adversary schedules fence a node powered off a while before:
        // the figures of L1.
        if self.mode == super::Mode::Adversary && self.rng.chance(40) {
            let node = self.rng.below(n as u64) as usize;
            let off = 5 * SEC + self.rng.below(40 * SEC);
            self.at(off, Ev::Fault(Fault::PowerOff(node)));
            let fence = off + self.rng.below(20 * SEC);
            self.at(fence, Ev::Fault(Fault::Fence(node)));
        }
    }

    fn rate(&mut self) -> i64 {
        let b = u64::from(self.cfg.drift_ppm);
        (self.rng.below(2 * b + 1) as i64) - b as i64
    }

    fn fault(&mut self, f: Fault) {
        self.log(|| format!("fault {f:?}"));
        match f {
            Fault::PowerOff(n) => {
                if self.nodes[n].powered {
                    self.nodes[n].powered = false;
                    self.nodes[n].off_at = self.now;
                    self.stop_node(n);
                    // Powered on again, a new boot, most of the time.
                    if self.rng.chance(70) {
                        let t = self.now + 20 * SEC + self.rng.below(60 * SEC);
                        self.at(t, Ev::Boot { node: n });
                    }
                }
            }
            Fault::Crash { node, keep_state } => {
                if self.nodes[node].agent.is_some() {
                    self.exit_agent(node);
                    if !keep_state {
                        self.nodes[node].state = None;
                    }
                    // The kubelet restarts it: the first restart within a
                    // couple of seconds, later ones after its backoff.
                    let t = match self.mode {
                        Mode::Outages => self.now + SEC / 2 + self.rng.below(2 * SEC),
                        _ => self.now + SEC + self.rng.below(15 * SEC),
                    };
                    self.at(t, Ev::Restart { node });
                }
            }
            Fault::Rollout(n) => {
                // The new pod comes only through the API server. In a
                // two-node cluster the other node has no other grantor: a
                // rolling update meeting an API outage is isolation there,
                // not an outage of one path (docs/permits.md).
                let alone = self.mode == Mode::Outages && self.cfg.peers < 2;
                if self.nodes[n].agent.is_none() || !self.api_reachable(n) || alone {
                    return;
                }
                if self.objects[n].revoked {
                    self.exit_agent(n);
                } else {
                    self.objects[n].armed_boot = None;
                    self.objects[n].version += 1;
                    self.watch_armed(n);
                    self.nodes[n].agent = None;
                    self.nodes[n].wdt.open = false;
                    self.log(|| format!("node {n} disarms for a rolling update"));
                }
                let t = self.now + SEC + self.rng.below(60 * SEC);
                self.at(t, Ev::Restart { node: n });
            }
            Fault::Freeze(n, d) => {
                self.nodes[n].frozen_until = self.nodes[n].frozen_until.max(self.now + d);
            }
            Fault::FreezeAtFeed(n, d) => {
                if let Some(a) = self.nodes[n].agent.as_mut() {
                    a.freeze_at_feed = Some(d);
                }
            }
            Fault::VmPause(n, d) => {
                // At most one pause, of at most the margin, per schedule:
                // the margin covers it (longer pauses are not covered).
                if std::mem::replace(&mut self.vm_paused, true) {
                    return;
                }
                let node = &mut self.nodes[n];
                let (m, w) = (node.mono.ppm, node.wdt_clock.ppm);
                node.mono.set(self.now, m, true);
                node.wdt_clock.set(self.now, w, true);
                node.frozen_until = node.frozen_until.max(self.now + d);
                self.at(self.now + d, Ev::Fault(Fault::Rate(n, i64::MIN)));
            }
            Fault::Rate(n, ppm) => {
                let now = self.now;
                let node = &mut self.nodes[n];
                if ppm == i64::MIN {
                    // The end of a VM pause: the clocks go on.
                    let (m, w) = (node.mono.ppm, node.wdt_clock.ppm);
                    node.mono.set(now, m, false);
                    node.wdt_clock.set(now, w, false);
                    self.arm_fire(n);
                } else if !node.mono.paused {
                    node.mono.set(now, ppm, false);
                    let w = node.wdt_clock.ppm;
                    node.wdt_clock.set(now, (w + ppm) / 2, false);
                    self.arm_fire(n);
                }
            }
            Fault::CutPeers(n) => {
                self.nodes[n].cut_peers = true;
                let t = self.now + self.rng.below(90 * SEC);
                self.at(t, Ev::Fault(Fault::Heal(n)));
            }
            Fault::CutApi(n) => {
                self.nodes[n].cut_api = true;
                let t = self.now + self.rng.below(90 * SEC);
                self.at(t, Ev::Fault(Fault::Heal(n)));
            }
            Fault::Heal(n) => {
                self.nodes[n].cut_peers = false;
                self.nodes[n].cut_api = false;
            }
            Fault::PeerOutage(on) => {
                self.peer_outage = on;
                if on {
                    let t = self.now + self.rng.below(60 * SEC);
                    self.at(t, Ev::Fault(Fault::PeerOutage(false)));
                }
            }
            Fault::ApiOutage(on) => {
                self.api_outage = on;
                if on {
                    let t = self.now + self.rng.below(60 * SEC);
                    self.at(t, Ev::Fault(Fault::ApiOutage(false)));
                }
            }
            Fault::Throttle(p) => self.throttle = p,
            Fault::Slow(d) => self.slow = d,
            Fault::Loss(p) => self.loss = p,
            Fault::Fence(n) => self.start_fencing(n, false),
            Fault::LeaderCrash => {
                if let Some(l) = self.leader.as_ref() {
                    let next = (l.node + 1 + self.rng.below(self.cfg.nodes as u64 - 1) as usize)
                        % self.cfg.nodes;
                    self.hand_over(next);
                }
            }
            Fault::Elect(n) => {
                if self.leader.is_none() {
                    self.elect(n);
                }
            }
            Fault::Reassign(n) => self.reassign(n),
        }
    }

    // ------------------------------------------------------------- nodes --

    fn stop_node(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        node.agent = None;
        node.wdt.open = false;
        node.state = None;
        node.down = true;
        if self.leader.as_ref().is_some_and(|l| l.node == n) {
            self.hand_over((n + 1) % self.cfg.nodes);
        }
    }

    /// The leader is gone: `next` takes over once the leader Lease
    /// expired, and starts the unfinished fencings over from the records.
    fn hand_over(&mut self, next: usize) {
        let Some(l) = self.leader.take() else { return };
        let pending: Vec<usize> = l
            .fencings
            .iter()
            .filter(|(_, f)| !f.deleted)
            .map(|(n, _)| *n)
            .collect();
        let t = self.now + 15 * SEC;
        self.at(t, Ev::Fault(Fault::Elect(next)));
        for p in pending {
            self.at(t + 1, Ev::Fault(Fault::Fence(p)));
        }
    }

    fn up(&self, n: usize) -> bool {
        self.nodes[n].powered && !self.nodes[n].down
    }

    fn start_agent(&mut self, n: usize, restart: bool) {
        if !self.up(n) {
            return;
        }
        self.incarnations += 1;
        let inc = self.incarnations;
        let now = self.instant(n);
        let mut holder = Holder::new(
            &name(n),
            &format!("boot-{}", self.nodes[n].boot),
            self.holder_settings(),
        );
        let state = self.nodes[n].state.clone();
        let memory = match state {
            Some((saved, memory)) => {
                holder.restore(saved);
                Some(memory)
            }
            None => None,
        };
        // The set: from the state directory, or read from the API server.
        if holder.sets().is_empty() && self.api_reachable(n) {
            holder.set_grantors(self.objects[n].sets.clone());
        }
        // Without memory: a first start in this boot is quarantined for what
        // is left after the uptime; a state directory lost within the boot
        // (a crash that took it) for the whole quarantine.
        let uptime =
            Duration::from_nanos(self.nodes[n].mono.local(self.now) - self.nodes[n].booted_local);
        let q = match (&memory, restart && !self.nodes[n].first_in_boot) {
            (Some(_), _) => Duration::ZERO,
            (None, true) => self.quarantine(),
            (None, false) => grantor::quarantine_left(self.quarantine(), uptime),
        };
        self.nodes[n].first_in_boot = false;
        let grantor = Grantor::new(now, memory, q);
        self.nodes[n].agent = Some(Agent {
            incarnation: inc,
            holder,
            grantor,
            freeze_at_feed: None,
        });
        self.save(n);
        self.log(|| format!("node {n} agent {inc} starts (restart {restart})"));
        self.at(self.now, Ev::Renew { node: n, inc });
        self.at(self.now, Ev::FeedCheck { node: n, inc });
        self.at(self.now, Ev::Report { node: n, inc });
    }

    fn save(&mut self, n: usize) {
        if let Some(a) = &self.nodes[n].agent {
            self.nodes[n].state = Some((a.holder.saved(), a.grantor.memory()));
        }
    }

    /// The agent's process exits: the kernel pings a running device.
    fn exit_agent(&mut self, n: usize) {
        if self.nodes[n].agent.take().is_some() && self.nodes[n].wdt.open {
            self.ping(n, None);
        }
        self.nodes[n].frozen_until = 0;
    }

    fn agent(&mut self, n: usize, inc: u64) -> Option<&mut Agent> {
        self.nodes[n]
            .agent
            .as_mut()
            .filter(|a| a.incarnation == inc)
    }

    /// Defer an event of a frozen process (or paused VM) to its thaw.
    fn frozen(&mut self, n: usize, ev: &Ev) -> bool {
        let until = self.nodes[n].frozen_until;
        if until > self.now {
            self.at(until, ev.clone());
            return true;
        }
        false
    }

    fn ping(&mut self, n: usize, timeout: Option<Duration>) {
        let now = self.now;
        let node = &mut self.nodes[n];
        if let Some(t) = timeout {
            node.wdt.timeout = t.as_nanos() as T;
        }
        node.wdt.open = true;
        node.wdt.fires_at_local = node.wdt_clock.local(now) + node.wdt.timeout;
        self.arm_fire(n);
    }

    fn arm_fire(&mut self, n: usize) {
        let node = &self.nodes[n];
        if node.wdt.open && self.up(n) {
            let t = node.wdt_clock.real_at(node.wdt.fires_at_local, self.now);
            if t != T::MAX {
                self.at(t, Ev::Fire { node: n });
            }
        }
    }

    fn fire(&mut self, n: usize) {
        let node = &self.nodes[n];
        if !node.wdt.open || !self.up(n) || node.wdt_clock.local(self.now) < node.wdt.fires_at_local
        {
            return;
        }
        self.log(|| format!("node {n} RESET by its watchdog"));
        self.out.resets += 1;
        if self.mode == Mode::Outages {
            self.out.violations.push(Violation::ResetInOutage {
                node: n,
                at: self.now,
            });
        }
        self.stop_node(n);
        let t = self.now + 20 * SEC + self.rng.below(40 * SEC);
        self.at(t, Ev::Boot { node: n });
    }

    fn boot(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        node.powered = true;
        node.down = false;
        node.boot += 1;
        node.wdt.open = false;
        node.frozen_until = 0;
        node.first_in_boot = true;
        node.booted_local = node.mono.local(self.now);
        self.log(|| format!("node {n} boots"));
        let t = self.now + 5 * SEC;
        self.at(t, Ev::Restart { node: n });
        self.at(t + 10 * SEC, Ev::Lift { node: n });
    }

    // ------------------------------------------------------------ holder --

    fn renew(&mut self, n: usize, inc: u64) {
        if self.agent(n, inc).is_none() {
            return;
        }
        self.tick(n, inc);
        let next = self.after_local(n, self.cfg.renew_interval.as_nanos() as T);
        self.at(next, Ev::Renew { node: n, inc });
    }

    fn tick(&mut self, n: usize, inc: u64) {
        let now = self.instant(n);
        let Some(a) = self.agent(n, inc) else { return };
        let cmds = a.holder.tick(now);
        for c in cmds {
            match c {
                Command::Renew { to, renewal } => {
                    for g in to {
                        let to = index(&g);
                        self.send(Msg::Renew {
                            from: n,
                            inc,
                            to,
                            renewal: renewal.clone(),
                        });
                    }
                }
                Command::RenewThroughApi { round, .. } => {
                    let t = self.api_latency(n);
                    self.at(
                        t,
                        Ev::ApiGet {
                            node: n,
                            inc,
                            round,
                        },
                    );
                }
            }
        }
        self.save(n);
    }

    fn feed_check(&mut self, n: usize, inc: u64) {
        let now = self.instant(n);
        let device = match self.nodes[n].wdt {
            w if w.open => Device::Running {
                timeout: Duration::from_nanos(w.timeout),
            },
            _ => Device::Closed,
        };
        let Some(a) = self.agent(n, inc) else { return };
        let feed = a.holder.feed(now, device);
        let end = a.holder.end();
        let freeze = a.freeze_at_feed.take();
        let at = match freeze {
            Some(d) => {
                self.nodes[n].frozen_until = self.nodes[n].frozen_until.max(self.now + d);
                self.now + d
            }
            None => self.now,
        };
        if std::env::var_os("PERMIT_DEBUG").is_some() {
            let base = self.base;
            self.log(|| format!("node {n} feed {feed:?} end {:?}", end.map(|e| e - base)));
        }
        // The ping happens after the check: later if the process froze in
        // between.
        self.at(at, Ev::Ping { node: n, inc, feed });
        let next = self.after_local(n, FEED_PERIOD);
        self.at(next.max(at + 1), Ev::FeedCheck { node: n, inc });
    }

    fn apply_feed(&mut self, n: usize, inc: u64, feed: Feed) {
        if self.agent(n, inc).is_none() || !self.up(n) {
            return;
        }
        match feed {
            Feed::Ping { timeout } => {
                if !self.nodes[n].wdt.open {
                    self.log(|| format!("node {n} arms its watchdog ({timeout:?})"));
                }
                self.ping(n, Some(timeout));
                let boot = self.nodes[n].boot;
                if self.objects[n].armed_boot != Some(boot) && self.api_reachable(n) {
                    self.objects[n].armed_boot = Some(boot);
                    self.objects[n].version += 1;
                    self.watch_armed(n);
                }
            }
            Feed::Expedite => {
                self.log(|| format!("node {n} expedites its watchdog"));
                self.ping(n, Some(holder::EXPEDITED));
            }
            Feed::Idle => {}
        }
    }

    /// The kubelet renews its node's Lease (through the API server, which
    /// may throttle it); a failed renewal is tried again after a second.
    fn kubelet(&mut self, n: usize) {
        let renewed = self.up(n) && self.api_reachable(n) && !self.throttled();
        if renewed {
            self.nodes[n].kubelet_renewed = self.now;
        }
        let next = if renewed {
            KUBELET_RENEW
        } else {
            KUBELET_RETRY
        };
        self.at(self.now + next, Ev::Kubelet { node: n });
    }

    /// The agent's reporter: the grantees its grantor stopped granting, as
    /// the real one computes them, written to its own permit object when
    /// the names differ from those it reports.
    fn report(&mut self, n: usize, inc: u64) {
        if self.frozen(n, &Ev::Report { node: n, inc }) {
            return;
        }
        let now = self.instant(n);
        let after = silence::report_after(self.cfg.renew_interval);
        let Some(a) = self.agent(n, inc) else { return };
        let silent = a.grantor.silent(now, after, REPORT_WITHIN);
        let names = |m: &BTreeMap<String, Silent>| m.keys().cloned().collect::<Vec<_>>();
        if names(&silent) != names(&self.objects[n].silent)
            && self.api_reachable(n)
            && !self.throttled()
        {
            let t = self.api_latency(n);
            self.at(t, Ev::ReportPut { node: n, silent });
        }
        let next = self.after_local(n, REPORT_EVERY);
        self.at(next, Ev::Report { node: n, inc });
    }

    /// A report reaches the API server (a write in flight lands whatever
    /// became of its writer).
    fn report_put(&mut self, n: usize, silent: BTreeMap<String, Silent>) {
        if self.api_outage || self.nodes[n].cut_api {
            return;
        }
        let o = &mut self.objects[n];
        o.silent = silent.clone();
        o.version += 1;
        let version = o.version;
        self.send_to_leader(|leader_epoch| Ev::ReportSeen {
            leader_epoch,
            grantor: n,
            version,
            silent,
        });
    }

    // ----------------------------------------------------------- network --

    fn peer_path(&self, a: usize, b: usize) -> bool {
        !self.peer_outage && !self.nodes[a].cut_peers && !self.nodes[b].cut_peers
    }

    fn send(&mut self, msg: Msg) {
        if self.rng.below(100) < self.loss {
            return;
        }
        let copies = if self.rng.chance(3) { 2 } else { 1 };
        for _ in 0..copies {
            let mut d = 200_000 + self.rng.below(5 * MS);
            if self.slow > 0 && self.rng.chance(50) {
                d += self.rng.below(self.slow);
            }
            self.at(self.now + d, Ev::Deliver(msg.clone()));
        }
    }

    fn deliver(&mut self, msg: Msg) {
        let (from, to) = match &msg {
            Msg::Renew { from, to, .. } => (*from, *to),
            Msg::Answer { from, to, .. } => (*from, *to),
            Msg::Stop { leader, to, .. } => (*leader, *to),
            Msg::Ack { from, to, .. } => (*from, *to),
        };
        if !self.peer_path(from, to) || !self.up(to) {
            return;
        }
        if self.frozen(to, &Ev::Deliver(msg.clone())) {
            return;
        }
        match msg {
            Msg::Renew {
                from, inc, renewal, ..
            } => {
                let now = self.instant(to);
                let Some(a) = self.nodes[to].agent.as_mut() else {
                    return;
                };
                let answer = a.grantor.renew(now, &renewal);
                self.send(Msg::Answer {
                    from: to,
                    to: from,
                    inc,
                    round: renewal.round,
                    answer,
                });
            }
            Msg::Answer {
                from,
                inc,
                round,
                answer,
                ..
            } => {
                let Some(a) = self.agent(to, inc) else { return };
                a.holder.answered(&name(from), round, answer);
                if answer == Answer::Retired {
                    self.at(self.now, Ev::SetSeen { node: to, inc });
                }
                self.save(to);
            }
            Msg::Stop {
                epoch,
                leader,
                stop,
                ..
            } => {
                let now = self.instant(to);
                let Some(a) = self.nodes[to].agent.as_mut() else {
                    return;
                };
                let ack = a.grantor.stop(now, &stop);
                self.log(|| format!("node {to} acks {stop:?}: {ack:?}"));
                let target = match &stop {
                    Stop::Revoke { node, .. }
                    | Stop::Retire { node, .. }
                    | Stop::Lift { node, .. } => index(node),
                };
                // Not acknowledged (a revocation of a fencing already
                // lifted): no answer the leader could count.
                let Some(ack) = ack else {
                    return;
                };
                // The memory is saved before the answer is sent.
                self.save(to);
                self.send(Msg::Ack {
                    epoch,
                    from: to,
                    to: leader,
                    target,
                    stop,
                    ack,
                });
            }
            Msg::Ack {
                epoch,
                from,
                target,
                stop,
                ack,
                ..
            } => {
                let now = self.instant(to);
                let Some(l) = self.leader.as_mut().filter(|l| l.epoch == epoch) else {
                    return;
                };
                if let Some(f) = l.fencings.get_mut(&target) {
                    f.rev.acknowledged(&name(from), now, &stop, ack);
                }
            }
        }
    }

    // --------------------------------------------------------------- API --

    fn api_reachable(&self, n: usize) -> bool {
        !self.api_outage && !self.nodes[n].cut_api && self.up(n)
    }

    /// When a request sent now reaches the API server (or its answer the
    /// node).
    fn api_latency(&mut self, _n: usize) -> T {
        let mut d = 2 * MS + self.rng.below(20 * MS);
        if self.rng.chance(5) {
            d += self.rng.below(2 * SEC);
        }
        self.now + d
    }

    fn throttled(&mut self) -> bool {
        self.rng.below(100) < self.throttle
    }

    fn api_get(&mut self, n: usize, inc: u64, round: u64) {
        if !self.api_reachable(n) {
            return self.api_done_later(n, inc, round, ApiOutcome::Failed, None);
        }
        if self.throttled() {
            return self.api_throttled(n, inc, round);
        }
        let o = self.objects[n].clone();
        if o.revoked {
            return self.api_done_later(n, inc, round, ApiOutcome::Revoked, Some(o.sets));
        }
        let back = self.api_latency(n) - self.now;
        let t = self.api_latency(n) + back;
        self.at(
            t,
            Ev::ApiPut {
                node: n,
                inc,
                round,
                version: o.version,
            },
        );
    }

    fn api_put(&mut self, n: usize, inc: u64, round: u64, version: u64) {
        if self.api_outage || self.nodes[n].cut_api {
            return self.api_done_later(n, inc, round, ApiOutcome::Failed, None);
        }
        if self.throttled() {
            return self.api_throttled(n, inc, round);
        }
        let o = &mut self.objects[n];
        if o.version != version {
            return self.api_done_later(n, inc, round, ApiOutcome::Failed, None);
        }
        // It takes effect now, whatever happens to the answer.
        o.version += 1;
        o.renewals += 1;
        o.credit = self.cfg.api_credit;
        o.watchdog = self.cfg.watchdog;
        let (renewals, sets) = (o.renewals, o.sets.clone());
        self.watch_leader(n, renewals);
        self.api_done_later(n, inc, round, ApiOutcome::Renewed, Some(sets));
    }

    /// A 429: answered at once.
    fn api_throttled(&mut self, n: usize, inc: u64, round: u64) {
        let t = self.api_latency(n);
        self.at(
            t,
            Ev::ApiDone {
                node: n,
                inc,
                round,
                outcome: ApiOutcome::Failed,
                sets: None,
            },
        );
    }

    fn api_done_later(
        &mut self,
        n: usize,
        inc: u64,
        round: u64,
        outcome: ApiOutcome,
        sets: Option<Vec<GrantorSet>>,
    ) {
        // A failed request is known after its timeout at worst; an answer
        // may be lost (the write stands).
        let t = if outcome == ApiOutcome::Failed {
            self.now + self.rng.below(2 * SEC)
        } else {
            self.api_latency(n)
        };
        self.at(
            t,
            Ev::ApiDone {
                node: n,
                inc,
                round,
                outcome,
                sets,
            },
        );
    }

    fn api_done(
        &mut self,
        n: usize,
        inc: u64,
        round: u64,
        outcome: ApiOutcome,
        sets: Option<Vec<GrantorSet>>,
    ) {
        self.log(|| format!("node {n} API renewal {round}: {outcome:?}"));
        let lost = outcome != ApiOutcome::Failed && (!self.api_reachable(n) || self.rng.chance(2));
        let outcome = if lost { ApiOutcome::Failed } else { outcome };
        let now = self.instant(n);
        let Some(a) = self.agent(n, inc) else { return };
        a.holder.api_answered(now, round, outcome);
        if outcome == ApiOutcome::Failed {
            let at = self.after_local(n, holder::API_RETRY.as_nanos() as T);
            self.at(at, Ev::Tick { node: n, inc });
        }
        let Some(a) = self.agent(n, inc) else { return };
        if let Some(s) = sets.filter(|_| !lost) {
            a.holder.set_grantors(s);
        }
        self.save(n);
    }

    /// The node reads its permit object (its watch, or after a Retired
    /// answer): it learns its current grantor set.
    fn set_seen(&mut self, n: usize, inc: u64) {
        if !self.api_reachable(n) {
            return;
        }
        let sets = self.objects[n].sets.clone();
        if let Some(a) = self.agent(n, inc) {
            a.holder.set_grantors(sets);
        }
        self.save(n);
    }

    // ------------------------------------------------------------ leader --

    fn elect(&mut self, node: usize) {
        if !self.up(node) {
            let next = (node + 1) % self.cfg.nodes;
            self.at(self.now + 15 * SEC, Ev::Fault(Fault::Elect(next)));
            return;
        }
        self.epochs += 1;
        let epoch = self.epochs;
        // Its watches start with a listing: every renewal and report is
        // first seen now.
        let local = self.nodes[node].mono.local(self.now);
        let now = self.instant(node);
        let mut seen = BTreeMap::new();
        let mut heard = BTreeMap::new();
        let mut armed = BTreeMap::new();
        for (n, o) in self.objects.iter().enumerate() {
            seen.insert(n, (o.renewals, local));
            armed.insert(n, (o.version, o.armed_boot, local));
            let h = o
                .silent
                .iter()
                .map(|(g, s)| (g.clone(), Heard::from_report(now, s.quiet, s.credit)))
                .collect();
            heard.insert(n, (o.version, h));
        }
        self.leader = Some(Leader {
            node,
            epoch,
            fencings: BTreeMap::new(),
            seen,
            heard,
            armed,
            api_since: self.now,
            api_lost: false,
        });
        self.log(|| format!("node {node} leads (epoch {epoch})"));
        self.at(self.now, Ev::LeaderTick { epoch });
    }

    fn leader_now(&self) -> Option<(usize, u64, Instant)> {
        let l = self.leader.as_ref()?;
        Some((l.node, l.epoch, self.instant(l.node)))
    }

    /// The leader's watch of the permit objects delivers `target`'s
    /// renewal count `renewals` (delayed, sometimes stalled).
    fn watch_leader(&mut self, target: usize, renewals: u64) {
        self.send_to_leader(|leader_epoch| Ev::Watch {
            leader_epoch,
            target,
            renewals,
        });
    }

    /// Deliver what `ev` makes of the current leader's epoch through its
    /// watch of the permit objects.
    fn send_to_leader(&mut self, ev: impl FnOnce(u64) -> Ev) {
        let Some((_, epoch, _)) = self.leader_now() else {
            return;
        };
        let d = self.watch_delay();
        self.at(self.now + d, ev(epoch));
    }

    /// How late the leader's watch delivers a change (sometimes stalled).
    fn watch_delay(&mut self) -> T {
        let mut d = 10 * MS + self.rng.below(100 * MS);
        if self.rng.chance(10) {
            d += self.rng.below(30 * SEC);
        }
        d
    }

    /// The leader's watch delivers `n`'s arming as its object records it.
    fn watch_armed(&mut self, n: usize) {
        let (version, armed) = (self.objects[n].version, self.objects[n].armed_boot);
        self.send_to_leader(|leader_epoch| Ev::ArmedSeen {
            leader_epoch,
            node: n,
            version,
            armed,
        });
    }

    /// The current leader's clock for a watch event `ev` of leader epoch
    /// `leader_epoch`: `None` for an earlier leader's, or while the
    /// leader's process is frozen (then `ev` comes again at the thaw).
    fn leader_takes(&mut self, ev: &Ev) -> Option<Instant> {
        let (Ev::ArmedSeen { leader_epoch, .. } | Ev::ReportSeen { leader_epoch, .. }) = ev else {
            unreachable!("a watch event of the permit objects")
        };
        let (ln, e, now) = self.leader_now()?;
        (e == *leader_epoch && !self.frozen(ln, ev)).then_some(now)
    }

    /// The leader takes in an arming: a different one than it saw is
    /// first seen now.
    fn armed_seen(&mut self, ev: Ev) {
        let Some(now) = self.leader_takes(&ev) else {
            return;
        };
        let Ev::ArmedSeen {
            node: n,
            version,
            armed,
            ..
        } = ev
        else {
            unreachable!("an arming")
        };
        let local = now.duration_since(self.base).as_nanos() as T;
        let l = self.leader.as_mut().expect("leader");
        match l.armed.get(&n) {
            Some((v, _, _)) if *v >= version => {}
            Some((_, a, since)) if *a == armed => {
                l.armed.insert(n, (version, armed, *since));
            }
            _ => {
                l.armed.insert(n, (version, armed, local));
            }
        }
    }

    /// The leader takes in a grantor's report as the shell does: each
    /// grantee's last grant inferred from this sighting, older versions
    /// ignored.
    fn report_seen(&mut self, ev: Ev) {
        let Some(now) = self.leader_takes(&ev) else {
            return;
        };
        let Ev::ReportSeen {
            grantor,
            version,
            silent,
            ..
        } = ev
        else {
            unreachable!("a report")
        };
        let l = self.leader.as_mut().expect("leader");
        if l.heard.get(&grantor).is_some_and(|(v, _)| *v >= version) {
            return;
        }
        let heard = silent
            .iter()
            .map(|(g, s)| (g.clone(), Heard::from_report(now, s.quiet, s.credit)))
            .collect();
        l.heard.insert(grantor, (version, heard));
    }

    /// The leader's fast path: a node armed in its current boot whose
    /// permit is over by the reports and renewals it has seen
    /// ([`silence::permit_over`]), and whose kubelet missed a Lease
    /// renewal (a consistent read), becomes suspect and is fenced.
    fn suspect_from_reports(&mut self, ln: usize, now: Instant) {
        for n in 0..self.cfg.nodes {
            let l = self.leader.as_ref().expect("leader");
            if n == ln || l.fencings.contains_key(&n) {
                continue;
            }
            let lease = self.nodes[n].kubelet_renewed.max(l.api_since);
            if self.now < lease + KUBELET_MISSED || self.over_by_reports(n).is_none_or(|o| now < o)
            {
                continue;
            }
            // The consistent read of the Lease (above: the API server's
            // own) comes with one of the node's permit object: what the
            // watch had not shown yet is first seen now.
            self.refresh(n, now);
            if self.over_by_reports(n).is_none_or(|o| now < o) {
                self.log(|| format!("leader: node {n}'s permit object read afresh: not over"));
                continue;
            }
            let held = self.up(n)
                && self.nodes[n]
                    .agent
                    .as_ref()
                    .is_some_and(|a| a.holder.end().is_some_and(|end| end > self.instant(n)));
            self.out.from_reports += 1;
            if held {
                self.out.from_reports_held += 1;
                if std::env::var_os("PERMIT_DEBUG").is_some() {
                    eprintln!(
                        "seed {}: node {n} held a permit at {:.3}s",
                        self.seed,
                        secs(self.now)
                    );
                }
            }
            self.log(|| format!("leader: node {n}'s permit is over by its reports (held {held})"));
            self.start_fencing(n, true);
        }
    }

    /// When `n`'s permit is over by what the leader saw
    /// ([`silence::permit_over`]), for a node armed in its current boot.
    fn over_by_reports(&self, n: usize) -> Option<Instant> {
        let l = self.leader.as_ref()?;
        let o = &self.objects[n];
        let (_, Some(boot), armed_since) = l.armed.get(&n)? else {
            return None;
        };
        if *boot != self.nodes[n].boot {
            return None;
        }
        let armed_seen = self.base + Duration::from_nanos(*armed_since);
        let heard: BTreeMap<String, Heard> = o
            .sets
            .iter()
            .flat_map(|s| s.peers.iter())
            .filter_map(|g| Some((g.clone(), *l.heard.get(&index(g))?.1.get(&name(n))?)))
            .collect();
        let api = l
            .seen
            .get(&n)
            .filter(|(renewals, _)| *renewals > 0)
            .map(|(_, first)| ApiSeen {
                first_seen: self.base + Duration::from_nanos(*first),
                credit: self.cfg.api_credit,
            });
        let drift = self.revoke_settings().drift;
        silence::permit_over(&o.sets, &heard, api, armed_seen, drift)
    }

    /// The leader reads `n`'s permit object and its grantors' (quorum
    /// reads): a renewal, an arming or a report its watch had not
    /// delivered is first seen now; an unchanged object counts as before.
    fn refresh(&mut self, n: usize, now: Instant) {
        let local = now.duration_since(self.base).as_nanos() as T;
        let grantors: Vec<usize> = self.objects[n]
            .sets
            .iter()
            .flat_map(|s| s.peers.iter().map(|p| index(p)))
            .collect();
        for g in grantors {
            let (version, silent) = (self.objects[g].version, self.objects[g].silent.clone());
            let l = self.leader.as_mut().expect("leader");
            if l.heard.get(&g).is_none_or(|(v, _)| *v < version) {
                let heard = silent
                    .iter()
                    .map(|(x, s)| (x.clone(), Heard::from_report(now, s.quiet, s.credit)))
                    .collect();
                l.heard.insert(g, (version, heard));
            }
        }
        let o = &self.objects[n];
        let (version, renewals, armed) = (o.version, o.renewals, o.armed_boot);
        let l = self.leader.as_mut().expect("leader");
        if l.seen.get(&n).is_none_or(|(r, _)| *r != renewals) {
            l.seen.insert(n, (renewals, local));
        }
        match l.armed.get(&n) {
            Some((_, a, since)) if *a == armed => {
                l.armed.insert(n, (version, armed, *since));
            }
            _ => {
                l.armed.insert(n, (version, armed, local));
            }
        }
    }

    fn start_fencing(&mut self, target: usize, from_reports: bool) {
        let Some((leader, _, _)) = self.leader_now() else {
            return;
        };
        if leader == target {
            return; // the leader never fences its own node
        }
        let l = self.leader.as_ref().expect("leader");
        if l.fencings.contains_key(&target) {
            return;
        }
        let sets = self.objects[target].sets.clone();
        let off_since = (!self.nodes[target].powered).then(|| self.nodes[target].off_at);
        let boot = self.nodes[target].boot;
        self.objects[target].fencings += 1;
        let number = self.objects[target].fencings;
        self.log(|| format!("leader fences node {target} (boot {boot}, fencing {number})"));
        let f = Fencing {
            rev: Revocation::numbered(&name(target), number, sets),
            boot,
            closed: false,
            closing: false,
            asked: BTreeMap::new(),
            deleted: false,
            off_since,
            started: self.now,
            from_reports,
        };
        self.leader
            .as_mut()
            .expect("leader")
            .fencings
            .insert(target, f);
    }

    fn leader_tick(&mut self, epoch: u64) {
        let Some((ln, e, now)) = self.leader_now() else {
            return;
        };
        if e != epoch {
            return;
        }
        if self.frozen(ln, &Ev::LeaderTick { epoch }) {
            return;
        }
        let s = self.revoke_settings();
        let targets: Vec<usize> = self
            .leader
            .as_ref()
            .expect("leader")
            .fencings
            .keys()
            .copied()
            .collect();
        for target in targets {
            let (closing, closed, deleted) = {
                let f = &self.leader.as_ref().expect("leader").fencings[&target];
                (f.closing, f.closed, f.deleted)
            };
            if deleted {
                continue;
            }
            if !closed && !closing && self.api_reachable(ln) {
                self.leader
                    .as_mut()
                    .expect("leader")
                    .fencings
                    .get_mut(&target)
                    .expect("fencing")
                    .closing = true;
                let t = self.api_latency(ln);
                self.at(t, Ev::CloseGet { epoch, target });
            }
            let ask = self.leader.as_ref().expect("leader").fencings[&target]
                .rev
                .to_ask(now, &s);
            for g in ask {
                let gi = index(&g);
                let last = self.leader.as_ref().expect("leader").fencings[&target]
                    .asked
                    .get(&gi)
                    .copied();
                if last.is_some_and(|t| self.now < t + SEC) {
                    continue;
                }
                self.leader
                    .as_mut()
                    .expect("leader")
                    .fencings
                    .get_mut(&target)
                    .expect("fencing")
                    .asked
                    .insert(gi, self.now);
                let stop = self.leader.as_ref().expect("leader").fencings[&target]
                    .rev
                    .stop();
                self.send(Msg::Stop {
                    epoch,
                    leader: ln,
                    to: gi,
                    stop,
                });
            }
            let deadline = self
                .leader
                .as_mut()
                .expect("leader")
                .fencings
                .get_mut(&target)
                .expect("fencing")
                .rev
                .deadline(now, &s);
            self.log(|| format!("leader: node {target}: {deadline:?}"));
            if deadline.is_ok_and(|d| now >= d.at) && self.api_reachable(ln) {
                self.delete_pods(target);
            }
        }
        let reachable = self.api_reachable(ln);
        let l = self.leader.as_mut().expect("leader");
        if !reachable {
            l.api_lost = true;
        } else {
            if std::mem::replace(&mut l.api_lost, false) {
                l.api_since = self.now;
            }
            self.suspect_from_reports(ln, now);
        }
        let next = self.after_local(ln, LEADER_TICK);
        self.at(next, Ev::LeaderTick { epoch });
    }

    /// S1, checked when the leader decides to delete (a stronger check
    /// than at the deletion's taking effect, which comes later).
    fn delete_pods(&mut self, target: usize) {
        let f = self
            .leader
            .as_mut()
            .expect("leader")
            .fencings
            .get_mut(&target)
            .expect("fencing");
        f.deleted = true;
        let (boot, off_since, started, from_reports) =
            (f.boot, f.off_since, f.started, f.from_reports);
        self.out.fenced += 1;
        let node = &self.nodes[target];
        let (running, powered) = (
            node.powered && !node.down && node.boot == boot,
            node.powered,
        );
        self.log(|| {
            format!("leader deletes the pods of node {target} (running {running}, begun from reports {from_reports})")
        });
        if running {
            self.out.violations.push(Violation::DeletedWhileRunning {
                node: target,
                at: self.now,
            });
        }
        if let (Some(off), false) = (off_since, powered) {
            self.out
                .recoveries
                .push(Duration::from_nanos(self.now - off));
            self.out
                .fencing_times
                .push(Duration::from_nanos(self.now - started));
        }
    }

    fn close_get(&mut self, epoch: u64, target: usize) {
        let Some((ln, e, now)) = self.leader_now() else {
            return;
        };
        if e != epoch {
            return;
        }
        if !self.api_reachable(ln) || self.throttled() {
            return self.close_failed(epoch, target);
        }
        let o = self.objects[target].clone();
        let boot = self
            .leader
            .as_ref()
            .expect("leader")
            .fencings
            .get(&target)
            .map(|f| f.boot);
        if o.armed_boot.is_none() || o.armed_boot != boot {
            // Not armed in the boot being fenced: the permit proves nothing.
            // Asked again later (it may arm; it never disarms silently).
            self.log(|| format!("leader: node {target} is not armed in boot {boot:?}"));
            let t = self.now + SEC;
            self.at(
                t,
                Ev::Closed {
                    epoch,
                    target,
                    path: None,
                },
            );
            return;
        }
        // When the leader first saw this renewal: its watch, or this read.
        let l = self.leader.as_mut().expect("leader");
        let first = match l.seen.get(&target) {
            Some((r, t)) if *r == o.renewals => *t,
            _ => {
                let local = now.duration_since(self.base).as_nanos() as T;
                l.seen.insert(target, (o.renewals, local));
                local
            }
        };
        let _ = first;
        let t = self.api_latency(ln);
        self.at(
            t,
            Ev::ClosePut {
                epoch,
                target,
                version: o.version,
                renewals: o.renewals,
            },
        );
    }

    /// The close did not go through (unreachable, throttled, a conflict):
    /// the leader tries again after a while.
    fn close_failed(&mut self, epoch: u64, target: usize) {
        let t = self.now + self.rng.below(2 * SEC);
        self.at(
            t,
            Ev::Closed {
                epoch,
                target,
                path: None,
            },
        );
    }

    fn close_put(&mut self, epoch: u64, target: usize, version: u64, renewals: u64) {
        let Some((ln, e, _)) = self.leader_now() else {
            return;
        };
        if e != epoch {
            return;
        }
        if self.api_outage || self.nodes[ln].cut_api || self.objects[target].version != version {
            return self.close_failed(epoch, target);
        }
        let o = &mut self.objects[target];
        o.version += 1;
        o.revoked = true;
        let sets = o.sets.clone();
        let path = if renewals == 0 {
            ApiPath::ClosedUnused
        } else {
            let first = self.leader.as_ref().expect("leader").seen[&target].1;
            ApiPath::ClosedAfter {
                first_seen: self.base + Duration::from_nanos(first),
                credit: o.credit,
                watchdog_timeout: o.watchdog,
            }
        };
        let t = self.api_latency(ln);
        self.at(
            t,
            Ev::Closed {
                epoch,
                target,
                path: Some((path, sets)),
            },
        );
    }

    fn closed(&mut self, epoch: u64, target: usize, path: Option<(ApiPath, Vec<GrantorSet>)>) {
        let Some(l) = self.leader.as_mut().filter(|l| l.epoch == epoch) else {
            return;
        };
        let Some(f) = l.fencings.get_mut(&target) else {
            return;
        };
        f.closing = false;
        if let Some((p, sets)) = path {
            f.closed = true;
            f.rev.api_closed(p, sets);
        }
    }

    fn watched(&mut self, epoch: u64, target: usize, renewals: u64) {
        let Some((_, e, now)) = self.leader_now() else {
            return;
        };
        if e != epoch {
            return;
        }
        let local = now.duration_since(self.base).as_nanos() as T;
        let l = self.leader.as_mut().expect("leader");
        match l.seen.get(&target) {
            Some((r, _)) if *r >= renewals => {}
            _ => {
                l.seen.insert(target, (renewals, local));
            }
        }
    }

    /// Unfence a node whose pods were deleted and which booted again: clear
    /// the revocation on its permit object and at its grantors.
    fn lift(&mut self, n: usize) {
        let Some((ln, epoch, _)) = self.leader_now() else {
            return;
        };
        let l = self.leader.as_ref().expect("leader");
        // It booted again: what the fencing was about is gone.
        let done = l
            .fencings
            .get(&n)
            .is_some_and(|f| f.boot != self.nodes[n].boot);
        if !done || !self.api_reachable(ln) {
            return;
        }
        self.leader.as_mut().expect("leader").fencings.remove(&n);
        self.objects[n].revoked = false;
        self.objects[n].version += 1;
        let grantors: Vec<usize> = self.objects[n]
            .sets
            .iter()
            .flat_map(|s| s.peers.iter().map(|p| index(p)))
            .collect();
        self.log(|| format!("leader lifts the revocation of node {n}"));
        for g in grantors {
            self.send(Msg::Stop {
                epoch,
                leader: ln,
                to: g,
                stop: Stop::Lift {
                    node: name(n),
                    fencing: self.objects[n].fencings,
                },
            });
        }
    }

    /// A new grantor set for `n`: the old one retires only once the leader
    /// knows the node can draw no permit from it (not modelled: it stays
    /// among the sets a revocation must block, which is what the leader
    /// does until the retirement completes).
    fn reassign(&mut self, n: usize) {
        // The leader assigns no new set to a node it fences.
        let Some(l) = self.leader.as_ref() else {
            return;
        };
        if !self.api_reachable(l.node) || l.fencings.contains_key(&n) {
            return;
        }
        let v = self.objects[n].sets.last().map_or(1, |s| s.version + 1);
        let set = Self::assign(&mut self.rng, &self.cfg.clone(), n, v);
        let o = &mut self.objects[n];
        o.sets.push(set);
        o.version += 1;
        if let Some(a) = self.nodes[n].agent.as_ref() {
            let inc = a.incarnation;
            let mut d = 10 * MS + self.rng.below(200 * MS);
            if self.rng.chance(20) {
                d += self.rng.below(60 * SEC);
            }
            self.at(self.now + d, Ev::SetSeen { node: n, inc });
        }
    }

    // -------------------------------------------------------------- loop --

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Renew { node, inc } => {
                if !self.frozen(node, &ev) {
                    self.renew(node, inc);
                }
            }
            Ev::Tick { node, inc } => {
                if !self.frozen(node, &ev) {
                    self.tick(node, inc);
                }
            }
            Ev::FeedCheck { node, inc } => {
                if !self.frozen(node, &ev) {
                    self.feed_check(node, inc);
                }
            }
            Ev::Ping { node, inc, feed } => {
                if !self.frozen(node, &ev) {
                    self.apply_feed(node, inc, feed);
                }
            }
            Ev::Fire { node } => self.fire(node),
            Ev::Deliver(m) => self.deliver(m),
            Ev::ApiGet { node, inc, round } => self.api_get(node, inc, round),
            Ev::ApiPut {
                node,
                inc,
                round,
                version,
            } => self.api_put(node, inc, round, version),
            Ev::ApiDone {
                node,
                inc,
                round,
                outcome,
                sets,
            } => {
                if !self.frozen(
                    node,
                    &Ev::ApiDone {
                        node,
                        inc,
                        round,
                        outcome,
                        sets: sets.clone(),
                    },
                ) {
                    self.api_done(node, inc, round, outcome, sets);
                }
            }
            Ev::Restart { node } => {
                if self.nodes[node].agent.is_none() {
                    self.start_agent(node, true);
                }
            }
            Ev::Boot { node } => {
                if !self.up(node) {
                    self.boot(node);
                }
            }
            Ev::LeaderTick { epoch } => self.leader_tick(epoch),
            Ev::CloseGet { epoch, target } => self.close_get(epoch, target),
            Ev::ClosePut {
                epoch,
                target,
                version,
                renewals,
            } => self.close_put(epoch, target, version, renewals),
            Ev::Closed {
                epoch,
                target,
                path,
            } => self.closed(epoch, target, path),
            Ev::Watch {
                leader_epoch,
                target,
                renewals,
            } => self.watched(leader_epoch, target, renewals),
            Ev::SetSeen { node, inc } => self.set_seen(node, inc),
            Ev::Kubelet { node } => self.kubelet(node),
            Ev::Report { node, inc } => self.report(node, inc),
            Ev::ReportPut { node, silent } => self.report_put(node, silent),
            ev @ Ev::ReportSeen { .. } => self.report_seen(ev),
            ev @ Ev::ArmedSeen { .. } => self.armed_seen(ev),
            Ev::Lift { node } => self.lift(node),
            Ev::Fault(f) => self.fault(f),
        }
        let _ = self.seed;
    }
}

fn name(n: usize) -> String {
    format!("n{n}")
}

fn index(name: &str) -> usize {
    name[1..].parse().expect("a node name")
}
