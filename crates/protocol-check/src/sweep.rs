//! The configuration sweep: the agent's and the leader's settings that
//! enter the safe time and the self-fence verdict, as parameters of the
//! simulation, and a draw of them per schedule (from its seed, so a failing
//! seed replays exactly) over the range the agent's flags accept, the
//! boundaries included.
//!
//! The flags accept any positive duration down to the limits of
//! [`kube_fencer_decide::contract::limits`] (`--safe-time-margin` and
//! `--burst-spread` also zero; `--unreachable-after` at least twice
//! `--node-heartbeat-interval`) and any `--api-failure-threshold` ≥ 1; a
//! draw takes each flag's lower boundary, its upper sweep boundary
//! ([`Ranges`]; `u32::MAX` for the threshold) or a log-uniform value
//! between them. Above the upper sweep boundaries every term of the safe
//! time only grows, and the horizon of the run grows with the safe time,
//! so the schedule still reaches the deletion. The simulated kubelet renews
//! at exactly the `--node-heartbeat-interval` the leader is told.

use std::fmt;
use std::time::Duration;

use kube_fencer_decide::contract::{limits, safe_time};

use super::world::SimConfig;
use super::{FaultSet, Rng};

/// The settings that enter the safe time and the verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    pub api_check_interval: Duration,
    pub api_check_timeout: Duration,
    pub api_failure_threshold: u32,
    pub peer_silence_timeout: Duration,
    /// `--unreachable-after`: the leader's threshold, and the agent's
    /// `kubeletStaleAfter` (rule 5b).
    pub unreachable_after: Duration,
    pub fence_timeout: Duration,
    pub watchdog_timeout: Duration,
    /// `--node-heartbeat-interval`, and the simulated kubelet's renewal interval.
    pub node_heartbeat_interval: Duration,
    pub safe_time_margin: Duration,
    pub burst_spread: Duration,
}

impl Default for Params {
    /// The flags' defaults.
    fn default() -> Self {
        Params::of(&SimConfig::default())
    }
}

/// The range of each parameter, boundaries included: the lower ones are
/// the smallest values the agent's flags accept; the upper ones are the
/// sweep's (the flags accept more: every term of the safe time only grows
/// with them, and the horizon with the safe time).
#[derive(Clone, Copy, Debug)]
pub struct Ranges {
    pub api_check_interval: (Duration, Duration),
    pub api_check_timeout: (Duration, Duration),
    pub api_failure_threshold: (u32, u32),
    pub peer_silence_timeout: (Duration, Duration),
    pub unreachable_after: (Duration, Duration),
    /// `--fence-timeout` − `--unreachable-after` (the flags require ≥ 0).
    pub fence_timeout_over: (Duration, Duration),
    pub watchdog_timeout: (Duration, Duration),
    pub node_heartbeat_interval: (Duration, Duration),
    pub safe_time_margin: (Duration, Duration),
    pub burst_spread: (Duration, Duration),
    /// Not swept below the simulated leader Lease duration (12 s): an API
    /// outage shorter than the leader's renew deadline (8 s) keeps the
    /// leader, whose heartbeats aged while it was blind, and an
    /// `--unreachable-after` shorter than that outage plus the kubelets'
    /// retry makes it begin fencing healthy nodes (S2, the leader's side:
    /// their agents then fence themselves; found by this sweep, open).
    pub leader_lease_duration: Duration,
}

impl Default for Ranges {
    fn default() -> Self {
        let s = Duration::from_secs;
        Ranges {
            api_check_interval: (limits::MIN_API_CHECK_INTERVAL, s(60)),
            api_check_timeout: (limits::MIN_API_CHECK_TIMEOUT, s(30)),
            api_failure_threshold: (1, 10),
            peer_silence_timeout: (NS, s(120)),
            // At least `UNREACHABLE_AFTER_HEARTBEATS` heartbeat intervals.
            unreachable_after: (NS, s(120)),
            fence_timeout_over: (Duration::ZERO, s(120)),
            watchdog_timeout: (limits::MIN_WATCHDOG_TIMEOUT, s(60)),
            node_heartbeat_interval: (limits::MIN_NODE_HEARTBEAT_INTERVAL, s(40)),
            safe_time_margin: (Duration::ZERO, s(30)),
            burst_spread: (Duration::ZERO, s(10)),
            leader_lease_duration: SimConfig::default().election.0,
        }
    }
}

const NS: Duration = Duration::from_nanos(1);

/// A duration in `[lo, hi]`: either boundary (a fifth of the draws each)
/// or log-uniform between them.
fn draw_duration(rng: &mut Rng, lo: Duration, hi: Duration) -> Duration {
    match rng.below(10) {
        0 | 1 => lo,
        2 | 3 => hi,
        _ => {
            let (l, h) = (lo.as_secs_f64().max(1e-9), hi.as_secs_f64());
            let x = l * (h / l).powf(rng.below(1_000_001) as f64 / 1e6);
            Duration::from_secs_f64(x).clamp(lo, hi)
        }
    }
}

/// A round duration most of the time (as operators write them), so that
/// the failing figures read well; the boundaries stay exact.
fn roundish(rng: &mut Rng, d: Duration, lo: Duration, hi: Duration) -> Duration {
    if d == lo || d == hi || d < Duration::from_secs(2) || rng.chance(30) {
        return d;
    }
    Duration::from_secs(d.as_secs()).clamp(lo, hi)
}

impl Params {
    /// The parameters a configuration runs with.
    pub fn of(cfg: &SimConfig) -> Self {
        Params {
            api_check_interval: cfg.check.api_check_interval,
            api_check_timeout: cfg.check.api_check_timeout,
            api_failure_threshold: cfg.check.api_failure_threshold,
            peer_silence_timeout: cfg.check.peer_silence_timeout,
            unreachable_after: cfg.leader.unreachable_after,
            fence_timeout: cfg.leader.fence_timeout,
            watchdog_timeout: cfg.check.watchdog_timeout,
            node_heartbeat_interval: cfg.leader.node_heartbeat_interval,
            safe_time_margin: cfg.leader.safe_time_margin,
            burst_spread: cfg.leader.burst_spread,
        }
    }

    /// A configuration drawn from the flags' range.
    pub fn draw(rng: &mut Rng, r: &Ranges) -> Self {
        let d = |rng: &mut Rng, (lo, hi): (Duration, Duration)| {
            let v = draw_duration(rng, lo, hi);
            roundish(rng, v, lo, hi)
        };
        let api_check_interval = d(rng, r.api_check_interval);
        let api_check_timeout = d(rng, r.api_check_timeout);
        let (klo, khi) = r.api_failure_threshold;
        let api_failure_threshold = match rng.below(10) {
            0 | 1 => klo,
            2 => khi,
            // The flag's own upper boundary.
            3 => u32::MAX,
            _ => klo + rng.below(u64::from(khi - klo) + 1) as u32,
        };
        let peer_silence_timeout = d(rng, r.peer_silence_timeout);
        let node_heartbeat_interval = d(rng, r.node_heartbeat_interval);
        let least = (node_heartbeat_interval * limits::UNREACHABLE_AFTER_HEARTBEATS)
            .max(r.leader_lease_duration);
        let (xlo, xhi) = r.unreachable_after;
        let unreachable_after = d(rng, (xlo.max(least), xhi.max(least)));
        let fence_timeout = unreachable_after + d(rng, r.fence_timeout_over);
        let watchdog_timeout = d(rng, r.watchdog_timeout);
        let safe_time_margin = d(rng, r.safe_time_margin);
        let burst_spread = d(rng, r.burst_spread);
        Params {
            api_check_interval,
            api_check_timeout,
            api_failure_threshold,
            peer_silence_timeout,
            unreachable_after,
            fence_timeout,
            watchdog_timeout,
            node_heartbeat_interval,
            safe_time_margin,
            burst_spread,
        }
    }

    /// Run `cfg` with these parameters; the horizon grows with the safe
    /// time, so that a node cut off late in the schedule is still fenced
    /// and its pod deleted within the run.
    pub fn apply(&self, cfg: &mut SimConfig) {
        cfg.check.api_check_interval = self.api_check_interval;
        cfg.check.api_check_timeout = self.api_check_timeout;
        cfg.check.api_failure_threshold = self.api_failure_threshold;
        cfg.check.peer_silence_timeout = self.peer_silence_timeout;
        cfg.check.watchdog_timeout = self.watchdog_timeout;
        cfg.check.kubelet_stale_after = Some(self.unreachable_after);
        cfg.leader.unreachable_after = self.unreachable_after;
        cfg.leader.fence_timeout = self.fence_timeout;
        cfg.leader.node_heartbeat_interval = self.node_heartbeat_interval;
        cfg.leader.safe_time_margin = self.safe_time_margin;
        cfg.leader.burst_spread = self.burst_spread;
        cfg.heartbeat = self.node_heartbeat_interval;
        let bound = self.bound();
        let base = SimConfig::default().horizon;
        cfg.horizon = base.max(Duration::from_secs(200) + bound.saturating_mul(2));
    }

    /// How much later than in the default run the faults come: every agent
    /// refreshes its peer list at its first check and then at the first
    /// check 5 s later (checks come every `--api-check-interval` while the
    /// API is reachable), and an agent that knows no peers takes any outage
    /// for isolation (a known limitation: the safe reading). The faults
    /// come once every agent has had the time to learn its peers.
    pub fn warmup(&self) -> Duration {
        self.api_check_interval
            .saturating_add(self.api_check_timeout)
            .saturating_add(Duration::from_secs(10))
    }

    /// The safe time after the last heartbeat (record written at once),
    /// or the fence timeout when longer.
    pub fn bound(&self) -> Duration {
        let mut cfg = SimConfig::default();
        cfg.check.api_check_interval = self.api_check_interval;
        let advert = kube_fencer_decide::AgentAdvert {
            self_fence: cfg.check.action,
            watchdog_timeout: self.watchdog_timeout,
            api_check_interval: self.api_check_interval,
            api_check_timeout: self.api_check_timeout,
            api_failure_threshold: self.api_failure_threshold,
            peer_silence_timeout: self.peer_silence_timeout,
            boot_id: String::new(),
            peer_address: None,
            self_fence_unavailable: None,
            kubelet_stale_after: Some(self.unreachable_after),
            permit_fence: None,
        };
        let terms = safe_time::LeaderTerms {
            unreachable_after: self.unreachable_after,
            heartbeat_interval: self.node_heartbeat_interval,
            margin: self.safe_time_margin,
        };
        let t = std::time::Instant::now();
        safe_time::safe_time(&advert, t, t, &terms)
            .total()
            .max(self.fence_timeout)
    }
}

/// As the agent's flags (what a failing seed prints, to replay it).
impl fmt::Display for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = |d: Duration| humantime::format_duration(d).to_string().replace(' ', "");
        write!(
            f,
            "--api-check-interval={} --api-check-timeout={} --api-failure-threshold={} \
             --peer-silence-timeout={} --unreachable-after={} --fence-timeout={} \
             --watchdog-timeout={} --node-heartbeat-interval={} --safe-time-margin={} \
             --burst-spread={}",
            h(self.api_check_interval),
            h(self.api_check_timeout),
            self.api_failure_threshold,
            h(self.peer_silence_timeout),
            h(self.unreachable_after),
            h(self.fence_timeout),
            h(self.watchdog_timeout),
            h(self.node_heartbeat_interval),
            h(self.safe_time_margin),
            h(self.burst_spread)
        )
    }
}

/// Set a parameter from its flag's name and value; `Ok(false)` when the
/// name is none of the parameters.
pub fn set_flag(p: &mut Params, name: &str, value: &str) -> Result<bool, String> {
    let dur = || {
        humantime::parse_duration(value.trim())
            .map_err(|e| format!("invalid value '{value}' for '--{name}': {e}"))
    };
    match name {
        "api-check-interval" => p.api_check_interval = dur()?,
        "api-check-timeout" => p.api_check_timeout = dur()?,
        "api-failure-threshold" => {
            p.api_failure_threshold = value
                .trim()
                .parse()
                .map_err(|e| format!("invalid value '{value}' for '--{name}': {e}"))?;
        }
        "peer-silence-timeout" => p.peer_silence_timeout = dur()?,
        "unreachable-after" => p.unreachable_after = dur()?,
        "fence-timeout" => p.fence_timeout = dur()?,
        "watchdog-timeout" => p.watchdog_timeout = dur()?,
        "node-heartbeat-interval" => p.node_heartbeat_interval = dur()?,
        "safe-time-margin" => p.safe_time_margin = dur()?,
        "burst-spread" => p.burst_spread = dur()?,
        _ => return Ok(false),
    }
    Ok(true)
}

/// The sweep's seeds draw their configuration from a stream of their own,
/// so that the default run's recorded seeds stay what they were.
const SWEEP_STREAM: u64 = 0x5eed_c0f1_9000_0000;

/// One schedule of the sweep: a configuration and a fault schedule, both
/// from `seed`.
pub fn run_sweep_seed(
    seed: u64,
    base: &SimConfig,
    set: FaultSet,
    ranges: &Ranges,
    trace: bool,
) -> (Params, super::Sim) {
    let mut rng = Rng(seed ^ SWEEP_STREAM);
    let params = Params::draw(&mut rng, ranges);
    let mut cfg = base.clone();
    params.apply(&mut cfg);
    cfg.horizon = cfg.horizon.saturating_add(params.warmup());
    let sim = super::run_schedule(&mut rng, &cfg, set, params.warmup(), trace);
    (params, sim)
}
