//! The whole-protocol simulator and model checker (see
//! the library of this crate).
//!
//! ```text
//! cargo run --release -p kube-fencer-protocol-check -- --schedules 1000000
//! cargo run --release -p kube-fencer-protocol-check -- --replay SEED     # readable trace
//! cargo run --release -p kube-fencer-protocol-check -- --check --depth 3
//! ```
//!
//! Options: `--first SEED` (first seed, default 0), `--leader-side` (also
//! draw node reboots, boots after a watchdog reset and short outages with a
//! surviving leader: the faults that found the leader-side defects of the
//! storm-guard release and of records from an earlier boot; `./test.sh`
//! draws them),
//! `--legacy-sigterm` (disarm on SIGTERM even when the withdrawal failed),
//! `--threads N`, `--margin SECS` (the leader's `--safe-time-margin`, to
//! find the floor the simulator accepts), `--verbose` (timings, recovery times and the largest
//! time from a node's last observed heartbeat to its being off, on
//! stderr). Exits 1 on any violation.
//!
//! The configuration: every setting that enters the safe time and the
//! verdict can be given as the agent's flag (`--api-check-interval 30s`,
//! `--api-check-timeout`, `--api-failure-threshold`, `--peer-silence-timeout`,
//! `--unreachable-after`, `--fence-timeout`, `--watchdog-timeout`,
//! `--node-heartbeat-interval`, `--safe-time-margin`, `--burst-spread`);
//! `--sweep` instead draws them per schedule from its seed over the range
//! the flags accept (see the `sweep` module) and prints each violating
//! seed's configuration (`--sweep --replay SEED` replays it), and adds the
//! staged cuts (a node cut from the API, then from everything 10–35 s
//! later) to the schedules; `--staged-cuts` adds them alone.

#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use kube_fencer_protocol_check::checker::{self, Bounds};
use kube_fencer_protocol_check::sweep::{self, Params, Ranges};
use kube_fencer_protocol_check::{self as protocol, FaultSet, SimConfig};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().any(|a| a == name);
    let verbose = flag("--verbose");
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let mut cfg = SimConfig {
        legacy_sigterm: flag("--legacy-sigterm"),
        legacy_watchdog: flag("--legacy-watchdog"),
        ..SimConfig::default()
    };
    if let Some(m) = value("--margin") {
        // The leader's --safe-time-margin: how low the safe time may go.
        cfg.leader.safe_time_margin = Duration::from_secs(m);
    }
    let mut params = Params::of(&cfg);
    for (i, a) in args.iter().enumerate() {
        let Some(name) = a.strip_prefix("--") else {
            continue;
        };
        let (name, v) = match name.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (name, args.get(i + 1).map(String::as_str)),
        };
        let mut probe = params.clone();
        if sweep::set_flag(&mut probe, name, "1s").unwrap_or(false) {
            match v.map(|v| sweep::set_flag(&mut params, name, v)) {
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    eprintln!("{e}");
                    std::process::exit(2);
                }
                None => {
                    eprintln!("'--{name}' needs a value");
                    std::process::exit(2);
                }
            }
        }
    }
    params.apply(&mut cfg);
    let sweeping = flag("--sweep");
    let set = FaultSet {
        leader_side: flag("--leader-side"),
        staged_cuts: sweeping || flag("--staged-cuts"),
        ..FaultSet::default()
    };
    let ranges = Ranges::default();
    if let Some(seed) = value("--replay") {
        let sim = if sweeping {
            let (p, sim) = sweep::run_sweep_seed(seed, &cfg, set, &ranges, true);
            println!("configuration: {p}");
            sim
        } else {
            println!("configuration: {params}");
            protocol::run_seed(seed, &cfg, set, true)
        };
        println!("{}", sim.trace_text());
        for v in &sim.violations {
            println!("{v}");
        }
        std::process::exit(i32::from(!sim.violations.is_empty()));
    }
    let mut failed = false;
    let schedules = value("--schedules").unwrap_or(if flag("--check") { 0 } else { 10_000 });
    if schedules > 0 {
        let first = value("--first").unwrap_or(0);
        let threads = value("--threads").unwrap_or(1).max(1);
        let started = Instant::now();
        let per = schedules.div_ceil(threads);
        let parts: Vec<protocol::Summary> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|i| {
                    let cfg = cfg.clone();
                    let from = first + i * per;
                    let count = per.min((first + schedules).saturating_sub(from));
                    let sweep = sweeping.then_some(ranges);
                    s.spawn(move || protocol::simulate_with(from, count, &cfg, set, sweep.as_ref()))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("worker"))
                .collect()
        });
        let mut sum = protocol::Summary::default();
        for p in parts {
            sum.schedules += p.schedules;
            sum.violations.extend(p.violations);
            sum.recoveries.extend(p.recoveries);
            sum.configs.extend(p.configs);
            if p.worst_dead_after_heartbeat > sum.worst_dead_after_heartbeat {
                sum.worst_dead_after_heartbeat = p.worst_dead_after_heartbeat;
                sum.worst_seed = p.worst_seed;
            }
        }
        sum.violations.sort_by_key(|(seed, _)| *seed);
        println!(
            "protocol {}: {} schedules, {} violations",
            if sweeping {
                "configuration sweep"
            } else {
                "simulation"
            },
            sum.schedules,
            sum.violations.len()
        );
        let p = |q: f64| {
            sum.percentile(q)
                .map_or("-".to_string(), |d| format!("{:.1}s", d.as_secs_f64()))
        };
        if verbose {
            eprintln!(
                "  {:.1}s; power-off to pod deletion p50 {} p95 {} max {} ({} recoveries); node off at most {:.1}s after its last observed heartbeat (seed {})",
                started.elapsed().as_secs_f64(),
                p(0.5),
                p(0.95),
                p(1.0),
                sum.recoveries.len(),
                sum.worst_dead_after_heartbeat.as_secs_f64(),
                sum.worst_seed
            );
        }
        for (seed, v) in sum.violations.iter().take(10) {
            let config = sum.configs.get(seed).map_or("", String::as_str);
            let replay = if sweeping { "--sweep " } else { "" };
            eprintln!(
                "  seed {seed}: {v}\n    configuration: {config}\n    replay: {replay}--replay {seed}"
            );
        }
        failed |= !sum.violations.is_empty();
    }
    if flag("--check") || value("--depth").is_some() {
        let bounds = Bounds {
            depth: value("--depth").unwrap_or(3) as usize,
            nodes: value("--nodes").unwrap_or(3) as usize,
            step: Duration::from_secs(value("--step").unwrap_or(4)),
            ..Bounds::default()
        };
        let started = Instant::now();
        let out = checker::search(&bounds, &cfg);
        println!(
            "model check: {} states, {} violations",
            out.states,
            u8::from(out.violation.is_some())
        );
        if verbose {
            eprintln!(
                "  {:.1}s; {} paths of depth {} ({} nodes, {}s between actions)",
                started.elapsed().as_secs_f64(),
                out.paths,
                bounds.depth,
                bounds.nodes,
                bounds.step.as_secs()
            );
        }
        if let Some((path, v)) = &out.violation {
            eprintln!("  counterexample: {path:?}\n  {v}");
            let sim = checker::replay(&bounds, &cfg, path);
            eprintln!("{}", sim.trace_text());
            failed = true;
        }
    }
    std::process::exit(i32::from(failed));
}
