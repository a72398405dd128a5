//! The simulated world: nodes (power, kubelet, agent process, watchdog),
//! the API server, the network, the leader, pods — event-driven on a
//! virtual clock (the simulation jumps from one event to the next).
//!
//! Every node's clock runs at its own rate (within [`super::DRIFT_BOUND`]);
//! the cores only ever see their own node's clock.
//!
//! Why one long file: every model here (power, kubelet, agent, watchdog,
//! API server, network, leader) reads and writes the one `Sim` state and
//! the one event queue, and a schedule is easiest to follow when the
//! handler of each event is beside the others. Split it by model when a
//! model grows a state of its own.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kube_fencer_decide::agent::self_check::{
    self, CheckSettings, Command, Input, PeerReply, Previous, SelfCheck,
};
use kube_fencer_decide::contract::safe_time;
use kube_fencer_decide::leader::patch;
use kube_fencer_decide::{
    AdvertState, AgentAdvert, Decision, Heartbeat, MaxUnhealthy, NodeFacts, NodeIntent, NodeObs,
    Now, Observations, OwnerRef, PodObs, Readiness, RecordState, Selector, SelfFenceAction,
    Settings, Strategy, Taint, boot_seen_since, decide, nodes_needing_pods,
};

use super::{DRIFT_BOUND, Rng};

/// Real (simulated) time in nanoseconds since the start.
pub type T = u64;

fn ns(d: Duration) -> T {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn secs(t: T) -> f64 {
    t as f64 / 1e9
}

const MS: T = 1_000_000;
const SEC: T = 1_000_000_000;

/// How a connection fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Link {
    Ok,
    /// Requests fail at once; watches restart about every second (an Init item each time).
    Fast,
    /// Requests time out; watches stall.
    Blackhole,
}

/// A fault of the schedule.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    /// Power lost for good.
    PowerOff(usize),
    /// Reset and boot again (new boot ID).
    Reboot(usize),
    /// The kubelet stops (its containers keep running).
    KubeletDies(usize),
    /// The kubelet stops renewing for the duration (hung, or its own
    /// requests failing), then renews again.
    KubeletHang(usize, Duration),
    /// A hung kubelet renews again (the follow-up of [`Fault::KubeletHang`]).
    KubeletResumes(usize),
    /// Cut from the API server only.
    CutApi(usize, Link),
    /// Cut from the API server and from every peer.
    CutAll(usize, Link),
    /// A group cut from the API server and from the other nodes, not from each other.
    CutGroup(Vec<usize>, Link),
    /// Connectivity of the node restored.
    Heal(usize),
    /// The API server is down for everybody.
    ApiOutage(Link),
    ApiRestored,
    /// The agent process dies (the kubelet restarts it, if alive).
    AgentCrash(usize),
    /// The agent process hangs (alive) for the duration, then its liveness
    /// probe restarts it.
    AgentHang(usize, Duration),
    /// SIGTERM: withdraw, then exit; restarted after a few seconds.
    Sigterm(usize),
    /// The leader's agent crashes.
    LeaderCrash,
}

impl Fault {
    /// Only an outage of the control plane (for S2).
    fn is_control_plane_only(&self) -> bool {
        matches!(self, Fault::ApiOutage(_) | Fault::ApiRestored)
    }
}

/// An invariant broken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub invariant: &'static str,
    pub at: T,
    pub what: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at {:.3}s: {}",
            self.invariant,
            secs(self.at),
            self.what
        )
    }
}

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub nodes: usize,
    pub horizon: Duration,
    pub check: CheckSettings,
    pub leader: Settings,
    /// Kubelet Lease renewal interval.
    pub heartbeat: Duration,
    /// Leader election: lease duration, renew deadline, retry period.
    pub election: (Duration, Duration, Duration),
    /// Legacy SIGTERM: disarm the watchdog even when the withdrawal failed.
    pub legacy_sigterm: bool,
    /// Legacy watchdog handling: every agent start programs the timeout
    /// (a ping, also of a device its crashed predecessor left running), and
    /// a decision or a lapsed permit only stops feeding (a process exit
    /// before the reset then pings it once more).
    pub legacy_watchdog: bool,
    /// A node reset by its watchdog boots again (new boot ID). Off by
    /// default: a node back with a new boot while its old record and
    /// advertisement are still on its Node is the leader's side (record and
    /// advertisement freshness tied to the kubelet's boot ID), fixed there.
    pub boot_after_reset: bool,
}

impl Default for SimConfig {
    /// The command line's defaults, with watchdog self-fencing.
    fn default() -> Self {
        let s = Duration::from_secs;
        SimConfig {
            nodes: 4,
            horizon: s(400),
            check: CheckSettings {
                api_check_interval: s(5),
                api_check_timeout: s(2),
                api_failure_threshold: 3,
                peer_silence_timeout: s(10),
                action: SelfFenceAction::Watchdog,
                watchdog_timeout: s(10),
                static_peers: false,
                kubelet_stale_after: Some(s(20)),
            },
            leader: Settings {
                self_node: String::new(),
                identity: String::new(),
                unreachable_after: s(20),
                fence_timeout: s(40),
                healthy_after: s(30),
                max_unhealthy: MaxUnhealthy::Percent(40),
                node_selector: Selector::everything(),
                manage_control_plane: false,
                strategy: Strategy::OutOfService,
                delete_pods_with_rwo_volumes: false,
                safe_time_margin: s(5),
                node_heartbeat_interval: s(10),
                burst_spread: s(2),
                fence_command: false,
                fence_command_backoff: s(5),
            },
            heartbeat: s(10),
            election: (s(12), s(8), s(4)),
            legacy_sigterm: false,
            legacy_watchdog: false,
            boot_after_reset: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proc {
    Running,
    Hung,
    Down,
}

/// A Linux watchdog device as the kernel's watchdog core runs it
/// (`drivers/watchdog/watchdog_dev.c`): opening starts it, a write feeds
/// it, `WDIOC_SETTIMEOUT` on a running device also pings it, and the last
/// close without the magic 'V' — which is what a process exit does —
/// pings it once more ("watchdog did not stop!"). It resets the node its
/// timeout after the last ping. The device outlives the agent process;
/// only a reset (or a magic close) ends it.
#[derive(Clone, Debug)]
pub struct Watchdog {
    /// Running: opened and not disarmed.
    pub armed: bool,
    /// The current agent process decided to self-fence.
    pub stopped: bool,
    /// The last ping not from the current process's feeding: its start
    /// (open), a `WDIOC_SETTIMEOUT`, an earlier process's exit.
    pub ping: T,
    /// The device's timeout is the shortest (the agent expedited the reset).
    pub short: bool,
    /// The current process's feeding is permitted until (real time); 0: not yet.
    pub permit_until: T,
    pub g: u64,
}

/// The timeout an agent expedites the reset with.
const EXPEDITED: T = self_check::EXPEDITED_TIMEOUT.as_nanos() as T;
/// How long after a permit's end the feeding thread expedites.
const GRACE: T = self_check::PERMIT_GRACE.as_nanos() as T;

impl Watchdog {
    fn new() -> Self {
        Watchdog {
            armed: false,
            stopped: false,
            ping: 0,
            short: false,
            permit_until: 0,
            g: 0,
        }
    }

    /// The last ping at or before `now`: the current process feeds
    /// continuously while its permit lasts.
    fn last_feed(&self, now: T) -> T {
        self.ping.max(self.permit_until.min(now))
    }
}

#[derive(Clone, Debug)]
pub struct SimNode {
    pub name: String,
    pub rate: f64,
    pub on: bool,
    pub boot: u32,
    pub kubelet: bool,
    pub api: Link,
    pub facts: NodeFacts,
    pub lease_rv: u64,
    pub kubelet_next: T,
    pub kubelet_backoff: T,
    pub last_renewal: Option<T>,
    pub proc: Proc,
    pub check: Option<SelfCheck>,
    pub agent_gen: u64,
    pub wake_token: u64,
    pub wd: Watchdog,
    pub persisted: Option<Previous>,
    /// Faults that touched this node (for S2).
    pub touched: bool,
    /// When it went off (power off or reset), for the floor figure.
    pub off_at: Option<T>,
}

impl SimNode {
    fn boot_id(&self) -> String {
        format!("{}-boot{}", self.name, self.boot)
    }
}

#[derive(Clone, Debug)]
pub struct SimPod {
    pub uid: String,
    pub sts: String,
    pub node: Option<usize>,
    /// (node, boot) it runs on.
    pub running: Option<(usize, u32)>,
}

#[derive(Clone, Debug)]
pub struct Leader {
    pub node: usize,
    pub term: u32,
    pub heartbeats: BTreeMap<String, Heartbeat>,
    pub seen_rv: BTreeMap<String, u64>,
    pub ready_since: BTreeMap<String, Instant>,
    pub boot_since: BTreeMap<String, (String, Instant)>,
    /// The leader's watches missed events (and how): caught up on reconnect.
    pub blind: Option<Link>,
    pub valid_until: T,
    pub token: u64,
    /// Consistent Lease reads that found the Lease as the watch showed it.
    pub lease_confirmed: BTreeMap<String, Instant>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Fault(usize),
    AgentWake(usize, u64, u64),
    Deliver(usize, u64, DeliverBox),
    Kubelet(usize),
    ReadyCheck(usize, u64),
    Election(usize, u64),
    LeaderDecide(u64),
    InitTick(usize, u64),
    WatchdogCheck(usize, u64),
    Boot(usize),
    AgentStart(usize, u64),
    Recreate(String),
    L1(usize, T),
}

/// An input in the queue (ordered by its debug text, for determinism).
#[derive(Clone, Debug)]
struct DeliverBox(Input);

impl PartialEq for DeliverBox {
    fn eq(&self, o: &Self) -> bool {
        format!("{:?}", self.0) == format!("{:?}", o.0)
    }
}
impl Eq for DeliverBox {}
impl PartialOrd for DeliverBox {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for DeliverBox {
    fn cmp(&self, _o: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

#[derive(Clone, Debug)]
pub struct Sim {
    pub cfg: SimConfig,
    pub now: T,
    pub base: Instant,
    pub rng: Rng,
    pub nodes: Vec<SimNode>,
    pub pods: Vec<SimPod>,
    pub api_down: Link,
    /// Directed pairs that cannot talk (from, to).
    pub blocked: BTreeSet<(usize, usize)>,
    pub leader: Option<Leader>,
    /// Election lease: holder and expiry (real).
    pub election: Option<(usize, T)>,
    pub terms: u32,
    queue: BinaryHeap<Reverse<(T, u64, Ev)>>,
    seq: u64,
    faults: Vec<Fault>,
    pub violations: Vec<Violation>,
    pub trace: Option<Vec<String>>,
    /// No fault other than a control-plane outage happened yet.
    pub cp_only: bool,
    pub pod_seq: u64,
    pub recoveries: Vec<Duration>,
    pub worst_dead_after_heartbeat: Duration,
    /// Nodes for which L1 is being watched: (since, deadline, pod uid).
    pub l1: BTreeMap<usize, (T, T, String)>,
}

impl Sim {
    pub fn new(cfg: SimConfig, seed: u64, trace: bool) -> Self {
        let mut rng = Rng(seed);
        let base = base_instant();
        let mut nodes = Vec::new();
        for i in 0..cfg.nodes {
            let name = format!("n{i}");
            let rate = 1.0 + DRIFT_BOUND * rng.unit();
            let facts = NodeFacts {
                name: name.clone(),
                uid: None,
                resource_version: Some("1".into()),
                labels: BTreeMap::new(),
                unschedulable: false,
                taints: Vec::new(),
                ready: Readiness::True,
                record: RecordState::Absent,
                agent: AdvertState::Absent,
                unfence_requested: false,
                addresses: vec![format!("10.0.0.{i}")],
                kubelet_boot_id: Some(format!("{name}-boot1")),
            };
            nodes.push(SimNode {
                name,
                rate,
                on: true,
                boot: 1,
                kubelet: true,
                api: Link::Ok,
                facts,
                lease_rv: 0,
                kubelet_next: 0,
                kubelet_backoff: 0,
                last_renewal: None,
                proc: Proc::Down,
                check: None,
                agent_gen: 0,
                wake_token: 0,
                wd: Watchdog::new(),
                persisted: None,
                touched: false,
                off_at: None,
            });
        }
        let mut sim = Sim {
            cfg,
            now: 0,
            base,
            rng,
            nodes,
            pods: Vec::new(),
            api_down: Link::Ok,
            blocked: BTreeSet::new(),
            leader: None,
            election: None,
            terms: 0,
            queue: BinaryHeap::new(),
            seq: 0,
            faults: Vec::new(),
            violations: Vec::new(),
            trace: trace.then(Vec::new),
            cp_only: true,
            pod_seq: 0,
            recoveries: Vec::new(),
            worst_dead_after_heartbeat: Duration::ZERO,
            l1: BTreeMap::new(),
        };
        let hb = ns(sim.cfg.heartbeat);
        for i in 0..sim.nodes.len() {
            // Kubelets renew at random phases; agents start at random times.
            let phase = sim.rng.below(hb);
            sim.nodes[i].kubelet_next = phase;
            sim.push(phase, Ev::Kubelet(i));
            let start = sim.rng.below(3 * SEC);
            sim.push(start, Ev::AgentStart(i, 0));
            let sts = format!("sts{i}");
            sim.pod_seq += 1;
            sim.pods.push(SimPod {
                uid: format!("{sts}-{}", sim.pod_seq),
                sts,
                node: Some(i),
                running: Some((i, 1)),
            });
        }
        sim
    }

    pub fn log(&mut self, msg: impl FnOnce() -> String) {
        if let Some(t) = &mut self.trace {
            t.push(format!("{:>9.3}s  {}", secs(self.now), msg()));
        }
    }

    fn push(&mut self, at: T, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((at.max(self.now), self.seq, ev)));
    }

    pub fn schedule_fault(&mut self, at: Duration, f: Fault) {
        let i = self.faults.len();
        self.faults.push(f);
        self.push(ns(at), Ev::Fault(i));
    }

    /// Apply a fault now (the model checker's entry point).
    pub fn inject(&mut self, f: Fault) {
        let i = self.faults.len();
        self.faults.push(f);
        self.fault(i);
    }

    // ---- clocks ----

    fn local(&self, n: usize, t: T) -> Instant {
        self.base + Duration::from_nanos((t as f64 * self.nodes[n].rate) as u64)
    }

    fn wall(&self, n: usize, t: T) -> SystemTime {
        UNIX_EPOCH
            + Duration::from_secs(1_800_000_000)
            + Duration::from_nanos((t as f64 * self.nodes[n].rate) as u64)
    }

    fn real(&self, n: usize, at: Instant) -> T {
        let d = at.saturating_duration_since(self.base);
        let r = (d.as_nanos() as f64 / self.nodes[n].rate).ceil();
        let mut t = if r >= u64::MAX as f64 {
            u64::MAX / 2
        } else {
            r as u64
        };
        if t < u64::MAX / 2 && self.local(n, t) < at {
            t += 1;
        }
        t
    }

    // ---- connectivity ----

    /// The node's path to the API server.
    pub fn api(&self, n: usize) -> Link {
        let node = &self.nodes[n];
        if !node.on {
            return Link::Blackhole;
        }
        if self.api_down != Link::Ok {
            return self.api_down;
        }
        node.api
    }

    fn talk(&self, a: usize, b: usize) -> bool {
        self.nodes[a].on
            && self.nodes[b].on
            && !self.blocked.contains(&(a, b))
            && !self.blocked.contains(&(b, a))
    }

    fn latency(&mut self) -> T {
        MS + self.rng.below(50 * MS)
    }

    // ---- the run ----

    pub fn run(&mut self) {
        let end = ns(self.cfg.horizon);
        self.run_until(end);
        self.finish();
    }

    /// Process events up to `until`.
    pub fn run_until(&mut self, until: T) {
        while let Some(Reverse((t, _, _))) = self.queue.peek() {
            if *t > until {
                break;
            }
            let Some(Reverse((t, _, ev))) = self.queue.pop() else {
                break;
            };
            self.now = t;
            self.event(ev);
            if !self.violations.is_empty() {
                return;
            }
        }
        self.now = self.now.max(until);
    }

    /// End-of-run checks.
    pub fn finish(&mut self) {
        let pending: Vec<(usize, (T, T, String))> =
            self.l1.iter().map(|(k, v)| (*k, v.clone())).collect();
        for (n, (_, deadline, uid)) in pending {
            if self.now >= deadline && self.pods.iter().any(|p| p.uid == uid) {
                self.violate(
                    "L1",
                    format!("pod {uid} of powered-off node n{n} not recovered by its bound"),
                );
            }
        }
    }

    fn violate(&mut self, invariant: &'static str, what: String) {
        self.log(|| format!("VIOLATION {invariant}: {what}"));
        self.violations.push(Violation {
            invariant,
            at: self.now,
            what,
        });
    }

    fn event(&mut self, ev: Ev) {
        match ev {
            Ev::Fault(i) => self.fault(i),
            Ev::AgentWake(n, g, token) => {
                let node = &self.nodes[n];
                if node.agent_gen == g && node.wake_token == token && node.proc == Proc::Running {
                    let now = self.local(n, self.now);
                    let cmds = self.nodes[n]
                        .check
                        .as_mut()
                        .map(|c| c.tick(now))
                        .unwrap_or_default();
                    self.after_agent(n, cmds);
                }
            }
            Ev::Deliver(n, g, DeliverBox(input)) => self.deliver(n, g, input),
            Ev::Kubelet(n) => self.kubelet(n),
            Ev::ReadyCheck(n, rv) => {
                if self.nodes[n].lease_rv == rv && self.nodes[n].facts.ready == Readiness::True {
                    self.log(|| format!("n{n}: node controller sets Ready=Unknown"));
                    let mut f = self.nodes[n].facts.clone();
                    f.ready = Readiness::Unknown;
                    self.write_facts(n, f);
                }
            }
            Ev::Election(n, g) => self.election(n, g),
            Ev::LeaderDecide(token) => {
                if self.leader.as_ref().is_some_and(|l| l.term == token as u32) {
                    self.leader_decide();
                }
            }
            Ev::InitTick(n, g) => {
                if self.nodes[n].agent_gen == g
                    && self.nodes[n].proc != Proc::Down
                    && self.api(n) == Link::Fast
                {
                    self.send_agent(n, 0, Input::WatchItem { data: false });
                    let next = self.now + 700 * MS + self.rng.below(600 * MS);
                    self.push(next, Ev::InitTick(n, g));
                }
            }
            Ev::WatchdogCheck(n, g) => {
                let node = &self.nodes[n];
                if node.on && node.wd.armed && node.wd.g == g {
                    let at = self.reset_at(n);
                    if at <= self.now {
                        self.log(|| format!("n{n}: WATCHDOG RESET"));
                        self.power_down(n);
                        if self.cfg.boot_after_reset {
                            let boot = self.now + 20 * SEC + self.rng.below(20 * SEC);
                            self.push(boot, Ev::Boot(n));
                        }
                    } else {
                        self.push(at, Ev::WatchdogCheck(n, g));
                    }
                }
            }
            Ev::Boot(n) => self.boot(n),
            Ev::AgentStart(n, g) => {
                if self.nodes[n].agent_gen == g
                    && self.nodes[n].on
                    && self.nodes[n].proc == Proc::Down
                {
                    self.start_agent(n);
                }
            }
            Ev::Recreate(sts) => self.recreate(&sts),
            Ev::L1(n, since) => {
                if let Some((s, _, uid)) = self.l1.get(&n).cloned()
                    && s == since
                {
                    if self.pods.iter().any(|p| p.uid == uid) {
                        self.violate("L1", format!("pod {uid} of node n{n} (powered off at {:.3}s) not recovered by its bound", secs(since)));
                    }
                    self.l1.remove(&n);
                }
            }
        }
    }

    // ---- faults ----

    fn fault(&mut self, i: usize) {
        let f = self.faults[i].clone();
        self.log(|| format!("FAULT {f:?}"));
        if !f.is_control_plane_only() {
            self.cp_only = false;
        }
        // Anything else spoils the L1 watch (except more power-offs).
        if !matches!(f, Fault::PowerOff(_)) {
            self.l1.clear();
        }
        match f {
            Fault::PowerOff(n) => {
                if self.nodes[n].on {
                    self.watch_l1(n);
                    self.power_down(n);
                }
            }
            Fault::Reboot(n) => {
                if self.nodes[n].on {
                    self.power_down(n);
                    let boot = self.now + 20 * SEC + self.rng.below(20 * SEC);
                    self.push(boot, Ev::Boot(n));
                }
            }
            Fault::KubeletDies(n) => self.nodes[n].kubelet = false,
            Fault::KubeletHang(n, d) => {
                if self.nodes[n].kubelet {
                    self.nodes[n].kubelet = false;
                    let at = self.now + ns(d);
                    self.schedule_fault(Duration::from_nanos(at), Fault::KubeletResumes(n));
                }
            }
            Fault::KubeletResumes(n) => {
                if self.nodes[n].on && !self.nodes[n].kubelet {
                    let node = &mut self.nodes[n];
                    node.kubelet = true;
                    node.kubelet_next = self.now;
                    self.push(self.now, Ev::Kubelet(n));
                }
            }
            Fault::CutApi(n, link) => self.set_api(n, link),
            Fault::CutAll(n, link) => {
                self.set_api(n, link);
                for m in 0..self.nodes.len() {
                    if m != n {
                        self.blocked.insert((n, m));
                        self.blocked.insert((m, n));
                    }
                }
            }
            Fault::CutGroup(group, link) => {
                for &n in &group {
                    self.set_api(n, link);
                    for m in 0..self.nodes.len() {
                        if !group.contains(&m) {
                            self.blocked.insert((n, m));
                            self.blocked.insert((m, n));
                        }
                    }
                }
            }
            Fault::Heal(n) => {
                self.blocked.retain(|(a, b)| *a != n && *b != n);
                self.set_api(n, Link::Ok);
            }
            Fault::ApiOutage(link) => {
                self.api_down = link;
                self.links_changed();
            }
            Fault::ApiRestored => {
                self.api_down = Link::Ok;
                self.links_changed();
            }
            Fault::AgentCrash(n) => self.crash_agent(n, true),
            Fault::AgentHang(n, d) => {
                if self.nodes[n].proc == Proc::Running {
                    self.nodes[n].proc = Proc::Hung;
                    if self.leader.as_ref().is_some_and(|l| l.node == n) {
                        // The election renewals stop with the process.
                    }
                    let g = self.nodes[n].agent_gen;
                    let _ = g;
                    // The liveness probe kills and restarts it.
                    let at = self.now + ns(d);
                    self.schedule_fault(Duration::from_nanos(at), Fault::AgentCrash(n));
                    self.faults_skip_last();
                }
            }
            Fault::Sigterm(n) => self.sigterm(n),
            Fault::LeaderCrash => {
                if let Some(l) = &self.leader {
                    let n = l.node;
                    self.crash_agent(n, true);
                }
            }
        }
        if let Fault::CutApi(n, _)
        | Fault::CutAll(n, _)
        | Fault::Heal(n)
        | Fault::KubeletDies(n)
        | Fault::KubeletHang(n, _)
        | Fault::KubeletResumes(n)
        | Fault::AgentCrash(n)
        | Fault::AgentHang(n, _)
        | Fault::Sigterm(n)
        | Fault::Reboot(n) = self.faults[i]
        {
            self.nodes[n].touched = true;
        }
    }

    /// A follow-up fault pushed by a fault handler is not a new "fault" for S2.
    fn faults_skip_last(&mut self) {}

    fn set_api(&mut self, n: usize, link: Link) {
        self.nodes[n].api = link;
        self.links_changed();
    }

    /// Connectivity changed: watches fail, stall or catch up.
    fn links_changed(&mut self) {
        for n in 0..self.nodes.len() {
            let link = self.api(n);
            if self.nodes[n].proc != Proc::Down {
                let g = self.nodes[n].agent_gen;
                match link {
                    Link::Fast => {
                        let at = self.now + self.rng.below(SEC);
                        self.push(at, Ev::InitTick(n, g));
                    }
                    Link::Ok => {
                        // The own-Node watch catches up (or relists).
                        let rec = self.nodes[n].facts.record.clone();
                        let lat = self.latency();
                        self.send_agent(n, lat, Input::WatchItem { data: true });
                        self.send_agent(n, lat, Input::OwnRecord(rec));
                        // And the own-Lease watch.
                        self.deliver_lease(n, lat);
                    }
                    Link::Blackhole => {}
                }
            }
        }
        if let Some(l) = &self.leader {
            let n = l.node;
            match self.api(n) {
                Link::Ok => self.leader_catch_up(),
                bad => {
                    let l = self.leader.as_mut().expect("checked");
                    l.blind = Some(l.blind.map_or(bad, |b| b.min(bad)));
                }
            }
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].kubelet && self.nodes[i].on && self.api(i) == Link::Ok {
                // Kubelets retry soon after the API is back.
                let at = self.now + self.rng.below(SEC);
                if self.nodes[i].kubelet_next > at {
                    self.nodes[i].kubelet_next = at;
                    self.push(at, Ev::Kubelet(i));
                }
            }
        }
    }

    fn power_down(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        node.on = false;
        node.kubelet = false;
        node.off_at = Some(self.now);
        node.wd = Watchdog::new();
        node.wd.g = node.agent_gen + 1000;
        self.stop_agent(n);
        for p in &mut self.pods {
            if p.running.is_some_and(|(m, _)| m == n) {
                p.running = None;
            }
        }
        if self.leader.as_ref().is_some_and(|l| l.node == n) {
            self.log(|| format!("leader n{n} is gone"));
            self.leader = None;
            // L1 assumes the leader stays up.
            self.l1.clear();
        }
    }

    fn boot(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        node.on = true;
        node.boot += 1;
        node.kubelet = true;
        node.api = Link::Ok;
        node.off_at = None;
        node.kubelet_next = self.now;
        let b = node.boot;
        // The kubelet reports the new boot in status.nodeInfo.bootID.
        let mut f = node.facts.clone();
        f.kubelet_boot_id = Some(node.boot_id());
        self.write_facts(n, f);
        self.blocked.retain(|(a, c)| *a != n && *c != n);
        self.log(|| format!("n{n}: booted (boot {b})"));
        self.push(self.now, Ev::Kubelet(n));
        let g = self.nodes[n].agent_gen;
        self.push(self.now + 3 * SEC, Ev::AgentStart(n, g));
    }

    fn watch_l1(&mut self, n: usize) {
        // L1 applies when the node is healthy and everything else is fine.
        let Some(uid) = self
            .pods
            .iter()
            .find(|p| p.node == Some(n))
            .map(|p| p.uid.clone())
        else {
            return;
        };
        let clean = self.cp_only_except_poweroffs()
            && self.api_down == Link::Ok
            && self.nodes[n].facts.record == RecordState::Absent
            && self.nodes[n].kubelet
            && self
                .leader
                .as_ref()
                .is_some_and(|l| l.node != n && self.api(l.node) == Link::Ok)
            && self.nodes.iter().filter(|m| !m.on).count() == 0;
        if !clean {
            return;
        }
        // Only a node whose agent advertised in this boot can be fenced on
        // time (one powered off before its agent of this boot spoke waits,
        // rightly, for an operator or a fence command).
        let Ok(a) = self.nodes[n].facts.capable_advert() else {
            return;
        };
        let s = &self.cfg.leader;
        let t0 = self.local(n, 0);
        let st = safe_time::safe_time(a, t0, t0, &s.leader_terms());
        // Nothing irreversible before the settle window either.
        let settle = s.unreachable_after + s.node_heartbeat_interval + s.burst_spread;
        let bound = st.total().max(s.fence_timeout).max(settle);
        // Watch latency, decision and drift.
        let deadline = self.now + ns(bound) + 2 * SEC;
        self.l1.insert(n, (self.now, deadline, uid));
        self.push(deadline, Ev::L1(n, self.now));
    }

    fn cp_only_except_poweroffs(&self) -> bool {
        self.nodes.iter().all(|n| !n.touched)
            && self.blocked.is_empty()
            && self.nodes.iter().all(|n| n.api == Link::Ok)
    }

    // ---- kubelets ----

    fn kubelet(&mut self, n: usize) {
        if self.nodes[n].kubelet_next > self.now {
            return;
        }
        if !self.nodes[n].on || !self.nodes[n].kubelet {
            self.nodes[n].kubelet_next = u64::MAX;
            return;
        }
        if self.api(n) == Link::Ok {
            let node = &mut self.nodes[n];
            node.lease_rv += 1;
            node.last_renewal = Some(self.now);
            node.kubelet_backoff = 0;
            let next = self.now + ns(self.cfg.heartbeat);
            node.kubelet_next = next;
            let rv = node.lease_rv;
            self.push(next, Ev::Kubelet(n));
            self.push(self.now + 40 * SEC, Ev::ReadyCheck(n, rv));
            if self.nodes[n].facts.ready != Readiness::True {
                let mut f = self.nodes[n].facts.clone();
                f.ready = Readiness::True;
                self.write_facts(n, f);
            }
            // The kubelet runs the pods bound to it.
            let boot = self.nodes[n].boot;
            for p in &mut self.pods {
                if p.node == Some(n) && p.running.is_none() {
                    p.running = Some((n, boot));
                }
            }
            self.schedule_pending();
            // The agent's own-Lease watch delivers the renewal.
            let lat = self.latency();
            self.send_agent(n, lat, Input::WatchItem { data: true });
            self.deliver_lease(n, lat);
            self.leader_sees_renewal(n);
        } else {
            // Retry with back-off (200 ms doubling up to 7 s).
            let node = &mut self.nodes[n];
            node.kubelet_backoff = (node.kubelet_backoff * 2).clamp(200 * MS, 7 * SEC);
            let next = self.now + node.kubelet_backoff;
            node.kubelet_next = next;
            self.push(next, Ev::Kubelet(n));
        }
    }

    // ---- the API's writes ----

    fn write_facts(&mut self, n: usize, mut f: NodeFacts) {
        let rv = f
            .resource_version
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let old = self.nodes[n]
            .facts
            .resource_version
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        f.resource_version = Some((rv.max(old) + 1).to_string());
        self.nodes[n].facts = f;
        // The own-Node watch of that node's agent.
        if self.api(n) == Link::Ok {
            let rec = self.nodes[n].facts.record.clone();
            let lat = self.latency();
            self.send_agent(n, lat, Input::WatchItem { data: true });
            self.send_agent(n, lat, Input::OwnRecord(rec));
        }
        self.schedule_pending();
        self.leader_poke();
    }

    fn schedulable(&self, n: usize) -> bool {
        let node = &self.nodes[n];
        node.on
            && node.kubelet
            && self.api(n) == Link::Ok
            && !node.facts.unschedulable
            && node.facts.ready == Readiness::True
            && !node
                .facts
                .taints
                .iter()
                .any(|t| *t == Taint::out_of_service())
    }

    fn schedule_pending(&mut self) {
        for i in 0..self.pods.len() {
            if self.pods[i].node.is_none() {
                let cands: Vec<usize> = (0..self.nodes.len())
                    .filter(|&n| self.schedulable(n))
                    .collect();
                if !cands.is_empty() {
                    let n = cands[self.rng.below(cands.len() as u64) as usize];
                    let boot = self.nodes[n].boot;
                    self.pods[i].node = Some(n);
                    self.pods[i].running = Some((n, boot));
                    let uid = self.pods[i].uid.clone();
                    self.log(|| format!("pod {uid} scheduled and started on n{n}"));
                }
            }
        }
    }

    fn recreate(&mut self, sts: &str) {
        if self.pods.iter().any(|p| p.sts == sts) {
            return;
        }
        self.pod_seq += 1;
        let uid = format!("{sts}-{}", self.pod_seq);
        self.log(|| format!("StatefulSet recreates {uid}"));
        self.pods.push(SimPod {
            uid,
            sts: sts.to_string(),
            node: None,
            running: None,
        });
        self.schedule_pending();
    }

    // ---- agents ----

    fn start_agent(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        if !node.kubelet {
            return;
        }
        node.agent_gen += 1;
        node.proc = Proc::Running;
        let now = self.base + Duration::from_nanos((self.now as f64 * node.rate) as u64);
        let previous = node.persisted.clone();
        let check = SelfCheck::new(self.cfg.check.clone(), now, Some(node.boot_id()), previous);
        node.check = Some(check);
        node.wd.stopped = false;
        node.wd.permit_until = 0;
        if self.cfg.check.action == SelfFenceAction::Watchdog {
            // The agent opens the device at start and programs its timeout:
            // opening starts a stopped device; on one left running by a
            // crashed predecessor, programming pings it — unless, as the
            // agent does, the timeout read back is already the one wanted.
            if !node.wd.armed {
                node.wd.armed = true;
                node.wd.ping = self.now;
                node.wd.short = false;
            } else if self.cfg.legacy_watchdog {
                node.wd.ping = self.now;
                node.wd.short = false;
            }
            node.wd.g += 1;
        }
        self.log(|| format!("n{n}: agent starts"));
        let cmds = self.nodes[n]
            .check
            .as_mut()
            .map(|c| c.tick(now))
            .unwrap_or_default();
        self.after_agent(n, cmds);
        // Watches start: Init before any request, then the initial list.
        self.send_agent(n, 0, Input::WatchItem { data: false });
        match self.api(n) {
            Link::Ok => {
                let rec = self.nodes[n].facts.record.clone();
                let lat = self.latency();
                self.send_agent(n, lat, Input::WatchItem { data: true });
                self.send_agent(n, lat, Input::OwnRecord(rec));
                self.deliver_lease(n, lat);
            }
            Link::Fast => {
                let g = self.nodes[n].agent_gen;
                self.push(self.now + SEC, Ev::InitTick(n, g));
            }
            Link::Blackhole => {}
        }
        let g = self.nodes[n].agent_gen;
        let at = self.now + self.rng.below(ns(self.cfg.election.2));
        self.push(at, Ev::Election(n, g));
        self.arm_watchdog_check(n);
    }

    fn stop_agent(&mut self, n: usize) {
        let expedite = !self.cfg.legacy_watchdog;
        let node = &mut self.nodes[n];
        if node.proc != Proc::Down && node.wd.armed && node.on {
            // The process exits: its feeding ends, a lapse before now was
            // expedited by its feeding thread, and the kernel's close
            // without the magic character pings the device once more.
            let wd = &mut node.wd;
            if expedite && wd.permit_until > 0 && wd.permit_until + GRACE <= self.now && !wd.short {
                // Expedited at the lapse, pinged at the exit.
                wd.short = true;
            }
            wd.ping = self.now;
            wd.permit_until = 0;
            wd.g += 1;
        }
        node.proc = Proc::Down;
        node.check = None;
        node.agent_gen += 1;
        if self.leader.as_ref().is_some_and(|l| l.node == n) {
            self.log(|| format!("leader n{n} is gone"));
            self.leader = None;
            // L1 assumes the leader stays up.
            self.l1.clear();
        }
        self.arm_watchdog_check(n);
    }

    fn crash_agent(&mut self, n: usize, restart: bool) {
        if !self.nodes[n].on || self.nodes[n].proc == Proc::Down {
            return;
        }
        self.log(|| format!("n{n}: agent process dies"));
        self.stop_agent(n);
        if restart && self.nodes[n].kubelet {
            let g = self.nodes[n].agent_gen;
            let at = self.now + SEC + self.rng.below(9 * SEC);
            self.push(at, Ev::AgentStart(n, g));
        }
    }

    fn sigterm(&mut self, n: usize) {
        if !self.nodes[n].on || self.nodes[n].proc != Proc::Running {
            return;
        }
        let written = self.api(n) == Link::Ok;
        if written {
            let mut f = self.nodes[n].facts.clone();
            if let AdvertState::Valid(a) = &mut f.agent {
                a.self_fence = SelfFenceAction::None;
            }
            self.write_facts(n, f);
        }
        let disarm = written || self.cfg.legacy_sigterm;
        self.log(|| {
            format!("n{n}: SIGTERM, withdrawal written: {written}, watchdog disarmed: {disarm}")
        });
        self.stop_agent(n);
        if disarm {
            self.nodes[n].wd.armed = false;
        }
        let g = self.nodes[n].agent_gen;
        self.push(self.now + 5 * SEC, Ev::AgentStart(n, g));
    }

    /// The node's own-Lease watch hands its agent the last renewal, `lat`
    /// from now: its renewTime aged by the node's clock at delivery.
    fn deliver_lease(&mut self, n: usize, lat: T) {
        let Some(r) = self.nodes[n].last_renewal else {
            return;
        };
        let age = self
            .local(n, self.now + lat)
            .saturating_duration_since(self.local(n, r));
        self.send_agent(n, lat, Input::KubeletLease { age });
    }

    fn send_agent(&mut self, n: usize, after: T, input: Input) {
        let g = self.nodes[n].agent_gen;
        self.push(self.now + after, Ev::Deliver(n, g, DeliverBox(input)));
    }

    fn deliver(&mut self, n: usize, g: u64, input: Input) {
        if self.nodes[n].agent_gen != g || self.nodes[n].proc != Proc::Running {
            return;
        }
        let now = self.local(n, self.now);
        let cmds = self.nodes[n]
            .check
            .as_mut()
            .map(|c| c.handle(now, input))
            .unwrap_or_default();
        self.after_agent(n, cmds);
    }

    fn after_agent(&mut self, n: usize, cmds: Vec<Command>) {
        for c in cmds {
            self.command(n, c);
        }
        let node = &mut self.nodes[n];
        if let Some(c) = &node.check {
            node.persisted = Some(c.previous());
            let wake = c.next_wake();
            node.wake_token += 1;
            let (g, token) = (node.agent_gen, node.wake_token);
            let at = self.real(n, wake);
            self.push(at, Ev::AgentWake(n, g, token));
        }
    }

    fn command(&mut self, n: usize, c: Command) {
        let s = self.cfg.check.clone();
        match c {
            Command::Probe { timeout } => {
                let (after, ok) = match self.api(n) {
                    Link::Ok => (self.latency(), true),
                    Link::Fast => (MS, false),
                    Link::Blackhole => (ns(timeout), false),
                };
                self.send_agent(n, after, Input::ProbeDone { ok });
            }
            Command::AskPeers { peers, timeout } => {
                for p in peers {
                    let m: usize = p.trim_start_matches('n').parse().unwrap_or(usize::MAX);
                    let (after, reply) = self.peer_answer(n, m, timeout);
                    self.send_agent(n, after, Input::PeerReply { peer: p, reply });
                }
            }
            Command::Advertise { boot_id } => match self.api(n) {
                Link::Ok => {
                    let mut f = self.nodes[n].facts.clone();
                    f.agent = AdvertState::Valid(AgentAdvert {
                        self_fence: s.action,
                        watchdog_timeout: s.watchdog_timeout,
                        api_check_interval: s.api_check_interval,
                        api_check_timeout: s.api_check_timeout,
                        api_failure_threshold: s.api_failure_threshold,
                        peer_silence_timeout: s.peer_silence_timeout,
                        boot_id,
                        peer_address: Some(self.nodes[n].name.clone()),
                        self_fence_unavailable: None,
                        kubelet_stale_after: s.kubelet_stale_after,
                        permit_fence: None,
                    });
                    self.write_facts(n, f);
                    let lat = self.latency();
                    self.send_agent(n, lat, Input::Advertised { ok: true });
                }
                Link::Fast => self.send_agent(n, MS, Input::Advertised { ok: false }),
                Link::Blackhole => {}
            },
            Command::RefreshPeers => match self.api(n) {
                Link::Ok => {
                    let mut peers: Vec<String> = (0..self.nodes.len())
                        .filter(|&m| m != n)
                        .filter(|&m| matches!(&self.nodes[m].facts.agent, AdvertState::Valid(a) if a.peer_address.is_some()))
                        .map(|m| self.nodes[m].name.clone())
                        .collect();
                    peers.sort();
                    let lat = self.latency();
                    self.send_agent(n, lat, Input::Peers(peers));
                }
                Link::Fast => self.send_agent(n, MS, Input::PeersRefreshFailed),
                Link::Blackhole => {}
            },
            Command::PermitFeeding { until } => {
                let real = self.real(n, until);
                let node = &mut self.nodes[n];
                node.wd.permit_until = real;
                node.wd.g += 1;
                self.arm_watchdog_check(n);
            }
            Command::SelfFence { description } => {
                let at = self.now;
                self.log(|| format!("n{n}: SELF-FENCE: {description}"));
                if self.cp_only {
                    self.violate(
                        "S2",
                        format!(
                            "n{n} fences itself in a control-plane outage alone: {description}"
                        ),
                    );
                }
                let legacy = self.cfg.legacy_watchdog;
                let node = &mut self.nodes[n];
                node.wd.stopped = true;
                node.wd.permit_until = node.wd.permit_until.min(at);
                if node.wd.armed && !legacy {
                    // Expedite: WDIOC_SETTIMEOUT to the shortest (a ping).
                    node.wd.ping = node.wd.last_feed(at).max(at);
                    node.wd.permit_until = 0;
                    node.wd.short = true;
                }
                node.wd.g += 1;
                self.arm_watchdog_check(n);
                self.send_agent(n, 0, Input::SelfFenceDone { ok: true });
            }
            Command::VerdictChanged(v) => {
                self.log(|| format!("n{n}: verdict {}", v.describe()));
            }
        }
    }

    /// What peer `m` answers `n` (and after how long).
    fn peer_answer(&mut self, n: usize, m: usize, timeout: Duration) -> (T, Option<PeerReply>) {
        if m >= self.nodes.len() || !self.talk(n, m) {
            return (ns(timeout), None);
        }
        if self.nodes[m].proc != Proc::Running {
            // Connection refused (process gone) or no answer (hung).
            let after = if self.nodes[m].proc == Proc::Down {
                MS
            } else {
                ns(timeout)
            };
            return (after, None);
        }
        let local = self.local(m, self.now);
        let fresh = self.nodes[m]
            .check
            .as_ref()
            .and_then(|c| c.last_contact())
            .is_some_and(|t| {
                local.saturating_duration_since(t)
                    < safe_time::peer_fresh_within(
                        self.cfg.check.api_check_interval,
                        self.cfg.check.api_check_timeout,
                    )
            });
        let rtt = self.latency();
        let unreachable = PeerReply {
            api_reachable: false,
            phase: None,
            boot_id: None,
        };
        if !fresh {
            return (rtt, Some(unreachable));
        }
        match self.api(m) {
            Link::Ok => {
                let r = self.nodes[n].facts.record.valid();
                let reply = PeerReply {
                    api_reachable: true,
                    phase: r.map(|r| r.phase),
                    boot_id: r.and_then(|r| r.boot_id.clone()),
                };
                (rtt * 2, Some(reply))
            }
            Link::Fast => (rtt, Some(unreachable)),
            Link::Blackhole => (
                rtt + ns(self.cfg.check.api_check_timeout),
                Some(unreachable),
            ),
        }
    }

    // ---- watchdogs ----

    fn reset_at(&self, n: usize) -> T {
        let node = &self.nodes[n];
        let wd = &node.wd;
        let wdt = ns(self.cfg.check.watchdog_timeout) as f64 / node.rate;
        let fed = wd.permit_until > 0 && node.proc != Proc::Down;
        if wd.short {
            return wd.ping.saturating_add(EXPEDITED);
        }
        if fed && !self.cfg.legacy_watchdog {
            // The feeding thread expedites the reset when the permit lapsed.
            let last = wd.ping.max(wd.permit_until);
            return (last + GRACE + EXPEDITED).min(last.saturating_add(wdt as u64));
        }
        wd.last_feed(u64::MAX).saturating_add(wdt as u64)
    }

    fn arm_watchdog_check(&mut self, n: usize) {
        if self.nodes[n].wd.armed && self.nodes[n].on {
            let at = self.reset_at(n);
            if at < u64::MAX / 4 {
                let g = self.nodes[n].wd.g;
                self.push(at, Ev::WatchdogCheck(n, g));
            }
        }
    }

    // ---- the leader ----

    fn election(&mut self, n: usize, g: u64) {
        if self.nodes[n].agent_gen != g || self.nodes[n].proc == Proc::Down {
            return;
        }
        let (dur, deadline, retry) = self.cfg.election;
        self.push(self.now + ns(retry), Ev::Election(n, g));
        if self.nodes[n].proc == Proc::Hung || self.api(n) != Link::Ok {
            return;
        }
        let holder = self
            .election
            .filter(|(_, exp)| *exp > self.now)
            .map(|(h, _)| h);
        match holder {
            Some(h) if h == n => {
                self.election = Some((n, self.now + ns(dur)));
                if let Some(l) = &mut self.leader
                    && l.node == n
                {
                    l.valid_until = self.now + ns(deadline);
                }
            }
            Some(_) => {}
            None => {
                self.election = Some((n, self.now + ns(dur)));
                self.terms += 1;
                let term = self.terms;
                self.log(|| format!("n{n}: becomes leader (term {term})"));
                let local = self.local(n, self.now);
                let mut l = Leader {
                    node: n,
                    term,
                    heartbeats: BTreeMap::new(),
                    seen_rv: BTreeMap::new(),
                    ready_since: BTreeMap::new(),
                    boot_since: BTreeMap::new(),
                    blind: None,
                    valid_until: self.now + ns(deadline),
                    token: 0,
                    lease_confirmed: BTreeMap::new(),
                };
                // A new leader starts with no heartbeat history.
                for node in &self.nodes {
                    l.heartbeats
                        .insert(node.name.clone(), Heartbeat::first_seen(local));
                    l.seen_rv.insert(node.name.clone(), node.lease_rv);
                }
                self.leader = Some(l);
                self.leader_poke();
            }
        }
        // The election Lease renewal reaches every connected agent's watch.
        if self.election.is_some_and(|(h, _)| h == n) {
            for m in 0..self.nodes.len() {
                if self.api(m) == Link::Ok {
                    let lat = self.latency();
                    self.send_agent(m, lat, Input::WatchItem { data: true });
                }
            }
        }
    }

    fn leader_sees_renewal(&mut self, n: usize) {
        let Some(l) = &self.leader else { return };
        let ln = l.node;
        if self.api(ln) != Link::Ok || self.nodes[ln].proc == Proc::Down {
            let bad = self.api(ln);
            let l = self.leader.as_mut().expect("checked");
            if bad != Link::Ok {
                l.blind = Some(l.blind.map_or(bad, |b| b.min(bad)));
            }
            return;
        }
        let local = self.local(ln, self.now);
        let ua = self.cfg.leader.unreachable_after;
        let name = self.nodes[n].name.clone();
        let rv = self.nodes[n].lease_rv;
        let l = self.leader.as_mut().expect("checked");
        let hb = l
            .heartbeats
            .get(&name)
            .map_or(Heartbeat::first_seen(local), |h| h.renewed(local, ua));
        l.heartbeats.insert(name, hb);
        l.seen_rv.insert(self.nodes[n].name.clone(), rv);
        self.leader_poke();
    }

    /// The leader's watches work again: a stalled one delivers what it
    /// missed, a failed one relists (every heartbeat starts now).
    fn leader_catch_up(&mut self) {
        let Some(l) = &self.leader else { return };
        let Some(how) = l.blind else { return };
        let ln = l.node;
        let local = self.local(ln, self.now);
        let ua = self.cfg.leader.unreachable_after;
        let rvs: Vec<(String, u64)> = self
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.lease_rv))
            .collect();
        let l = self.leader.as_mut().expect("checked");
        l.blind = None;
        for (name, rv) in rvs {
            let seen = l.seen_rv.get(&name).copied().unwrap_or(0);
            if how == Link::Fast {
                l.heartbeats
                    .insert(name.clone(), Heartbeat::first_seen(local));
            } else if rv != seen {
                let hb = l
                    .heartbeats
                    .get(&name)
                    .map_or(Heartbeat::first_seen(local), |h| h.renewed(local, ua));
                l.heartbeats.insert(name.clone(), hb);
            }
            l.seen_rv.insert(name, rv);
        }
        self.leader_poke();
    }

    fn leader_poke(&mut self) {
        if let Some(l) = &self.leader {
            let term = u64::from(l.term);
            self.push(self.now + MS, Ev::LeaderDecide(term));
        }
    }

    fn leader_decide(&mut self) {
        let Some(l) = self.leader.clone() else { return };
        let ln = l.node;
        if self.now >= l.valid_until {
            self.log(|| format!("n{ln}: leadership lapsed"));
            self.leader = None;
            return;
        }
        if self.api(ln) != Link::Ok || self.nodes[ln].proc != Proc::Running || l.blind.is_some() {
            // Blind and unable to write; retried when connectivity changes.
            return;
        }
        let local = self.local(ln, self.now);
        let now = Now {
            mono: local,
            wall: self.wall(ln, self.now),
        };
        let mut settings = self.cfg.leader.clone();
        settings.self_node = self.nodes[ln].name.clone();
        settings.identity = format!("leader-n{ln}-term{}", l.term);
        let mut obs = Observations {
            synced: true,
            lease_confirmed: l.lease_confirmed.clone(),
            ..Default::default()
        };
        let mut ready_since = l.ready_since.clone();
        let mut boot_since = l.boot_since.clone();
        for node in &self.nodes {
            let bs = boot_seen_since(&mut boot_since, &node.facts, local);
            let rs = if node.facts.ready == Readiness::True {
                Some(*ready_since.entry(node.name.clone()).or_insert(local))
            } else {
                ready_since.remove(&node.name);
                None
            };
            obs.nodes.insert(
                node.name.clone(),
                NodeObs {
                    facts: node.facts.clone(),
                    heartbeat: l.heartbeats.get(&node.name).copied(),
                    ready_since: rs,
                    boot_since: bs,
                },
            );
        }
        for name in nodes_needing_pods(&obs, &settings) {
            let i: usize = name.trim_start_matches('n').parse().unwrap_or(usize::MAX);
            let pods = self
                .pods
                .iter()
                .filter(|p| p.node == Some(i))
                .map(|p| PodObs {
                    namespace: "default".into(),
                    name: p.sts.clone() + "-0",
                    uid: p.uid.clone(),
                    resource_version: Some("1".into()),
                    node: name.clone(),
                    controller: Some(OwnerRef {
                        api_version: "apps/v1".into(),
                        kind: "StatefulSet".into(),
                        name: p.sts.clone(),
                    }),
                    claims: Vec::new(),
                })
                .collect();
            obs.pods.insert(name, pods);
        }
        if let Some(l) = &mut self.leader {
            l.ready_since = ready_since;
            l.boot_since = boot_since;
        }
        let d: Decision = decide(&obs, now, &settings);
        if d.report.storm_guard.active {
            self.l1.clear();
        }
        for a in &d.actions {
            self.leader_action(ln, a, now, &settings, &obs);
        }
        if let Some(w) = d.report.next_wakeup {
            let at = self.real(ln, w);
            if let Some(l) = &mut self.leader
                && l.token != at
            {
                l.token = at;
                let term = u64::from(l.term);
                self.push(at, Ev::LeaderDecide(term));
            }
        }
    }

    fn leader_action(
        &mut self,
        ln: usize,
        a: &kube_fencer_decide::Action,
        now: Now,
        settings: &Settings,
        obs: &Observations,
    ) {
        use kube_fencer_decide::Action;
        match a {
            Action::UpdateNode { node, intent, why } => {
                let n: usize = node.trim_start_matches('n').parse().unwrap_or(usize::MAX);
                if n >= self.nodes.len() {
                    return;
                }
                let Ok(p) = patch::render(intent, &self.nodes[n].facts, now, settings) else {
                    return;
                };
                self.log(|| format!("leader n{ln}: {intent:?} {node}: {why}"));
                if self.cp_only
                    && matches!(intent, NodeIntent::BeginFencing | NodeIntent::MarkFenced)
                {
                    self.violate(
                        "S2",
                        format!("leader {intent:?} {node} in a control-plane outage alone"),
                    );
                }
                if *intent == NodeIntent::MarkFenced {
                    // How long after the last observed heartbeat is the node off?
                    if let Some(hb) = obs.nodes.get(node).and_then(|o| o.heartbeat) {
                        let lr = self.real(ln, hb.last_renewal);
                        let off = self.nodes[n].off_at.unwrap_or(self.now).min(self.now);
                        let _ = off;
                        self.mark_fenced_at(n, lr);
                    }
                }
                let f = patch::apply(&self.nodes[n].facts, &p);
                self.write_facts(n, f);
            }
            Action::DeletePod { node, pod, .. } => {
                let Some(i) = self.pods.iter().position(|p| p.uid == pod.uid) else {
                    return;
                };
                let p = self.pods.remove(i);
                self.log(|| format!("leader n{ln}: force-deletes pod {} on {node}", p.uid));
                if let Some((m, boot)) = p.running
                    && self.nodes[m].on
                    && self.nodes[m].boot == boot
                {
                    self.violate(
                        "S1",
                        format!(
                            "pod {} force-deleted while {} (boot {boot}) still runs it",
                            p.uid, self.nodes[m].name
                        ),
                    );
                }
                if let Some(n) = p.node
                    && let Some((since, _, uid)) = self.l1.get(&n).cloned()
                    && uid == p.uid
                {
                    self.recoveries.push(Duration::from_nanos(self.now - since));
                    self.l1.remove(&n);
                }
                self.push(self.now + SEC, Ev::Recreate(p.sts));
            }
            Action::ConfirmLease { node, .. } => {
                // A GET of the Lease from the API server: renewed since the
                // leader's watch last showed it, or not.
                let Some(n) = self.nodes.iter().position(|x| x.name == *node) else {
                    return;
                };
                let rv = self.nodes[n].lease_rv;
                let ua = self.cfg.leader.unreachable_after;
                let Some(l) = self.leader.as_mut() else {
                    return;
                };
                if l.seen_rv.get(node).copied().unwrap_or(0) != rv {
                    let hb = l
                        .heartbeats
                        .get(node)
                        .map_or(Heartbeat::first_seen(now.mono), |h| h.renewed(now.mono, ua));
                    l.heartbeats.insert(node.clone(), hb);
                    l.seen_rv.insert(node.clone(), rv);
                } else {
                    l.lease_confirmed.insert(node.clone(), now.mono);
                }
                self.leader_poke();
            }
            Action::DeleteVolumeAttachment { .. } | Action::RunFenceCommand { .. } => {}
        }
    }

    /// Marked fenced on time: record how long after the last observed
    /// heartbeat the node is (or will be) off.
    fn mark_fenced_at(&mut self, n: usize, lr: T) {
        let node = &self.nodes[n];
        let off = if !node.on {
            node.off_at.unwrap_or(self.now)
        } else if node.wd.armed {
            self.reset_at(n)
        } else {
            u64::MAX
        };
        // Still fed an hour on: it is not going down by itself (S1 says more).
        let d = Duration::from_nanos(off.saturating_sub(lr));
        if d > self.worst_dead_after_heartbeat && off < self.now + 3600 * SEC {
            self.worst_dead_after_heartbeat = d;
        }
    }

    /// A fingerprint of the state, coarse in time (for the model checker).
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let q = |t: T| (t / SEC) as i64;
        self.api_down.hash(&mut h);
        self.blocked.hash(&mut h);
        for n in &self.nodes {
            (n.on, n.boot, n.kubelet, n.api, n.proc).hash(&mut h);
            n.facts.record.phase().map(|p| p.as_label()).hash(&mut h);
            n.facts.unschedulable.hash(&mut h);
            n.last_renewal.map(|t| q(self.now) - q(t)).hash(&mut h);
            (
                n.wd.armed,
                n.wd.stopped,
                q(n.wd.last_feed(self.now)) - q(self.now),
            )
                .hash(&mut h);
            if let Some(c) = &n.check {
                (
                    c.failures(),
                    c.fenced(),
                    std::mem::discriminant(c.verdict()),
                )
                    .hash(&mut h);
                c.last_contact()
                    .map(|t| {
                        (t.saturating_duration_since(self.base).as_secs() as i64) - q(self.now)
                    })
                    .hash(&mut h);
            }
        }
        for p in &self.pods {
            (&p.sts, p.node, p.running).hash(&mut h);
        }
        self.leader.as_ref().map(|l| l.node).hash(&mut h);
        h.finish()
    }

    pub fn trace_text(&self) -> String {
        self.trace
            .as_ref()
            .map(|t| t.join("\n"))
            .unwrap_or_default()
    }
}

fn base_instant() -> Instant {
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *BASE.get_or_init(Instant::now)
}
