//! Lease-gated self-fencing, checked (see the library's `permits` module).
//!
//! ```text
//! cargo run --release -p kube-fencer-protocol-check --bin permit-check -- --schedules 100000
//! cargo run --release -p kube-fencer-protocol-check --bin permit-check -- --replay SEED
//! ```
//!
//! `--check DEPTH` runs every script of DEPTH faults from a small alphabet
//! before a fencing, on three nodes. `--suite` runs every mode briefly and
//! the check to depth 3 (what `./test.sh` runs). Options:
//! `--first SEED`, `--threads N`, `--outages` (S2: outages of one
//! path only, over accepted configurations), `--power-off` (one node
//! powered off and fenced, L1's figures; default: the adversary, S1),
//! `--defaults` (the default configuration only; default: one drawn from
//! the whole space per schedule). Exits 1 on any violation.

#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use kube_fencer_protocol_check::permits::{self, Config, Mode, Summary};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().any(|a| a == name);
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let mode = if flag("--outages") {
        Mode::Outages
    } else if flag("--power-off") {
        Mode::PowerOff
    } else {
        Mode::Adversary
    };
    let config = flag("--defaults").then(Config::default);
    if let Some(seed) = value("--replay") {
        let out = permits::run(seed, config, mode, true);
        println!("{:?}", out.config);
        for line in &out.trace {
            println!("{line}");
        }
        for v in &out.violations {
            println!("{v}");
        }
        std::process::exit(i32::from(!out.violations.is_empty()));
    }
    if let Some(depth) = value("--check") {
        std::process::exit(i32::from(bounded(depth as usize)));
    }
    if flag("--suite") {
        // ./test.sh's run: every mode, a few seconds each.
        let mut failed = false;
        for (mode, config, n) in [
            (Mode::Adversary, None, 600),
            (Mode::Outages, None, 300),
            (Mode::PowerOff, Some(Config::default()), 100),
        ] {
            failed |= report(mode, run(0, n, 1, config, mode), 5);
        }
        failed |= bounded(3);
        std::process::exit(i32::from(failed));
    }
    let schedules = value("--schedules").unwrap_or(10_000);
    let first = value("--first").unwrap_or(0);
    let threads = value("--threads").unwrap_or(1).max(1);
    let shown = value("--show").unwrap_or(20) as usize;
    let sum = run(first, schedules, threads, config, mode);
    std::process::exit(i32::from(report(mode, sum, shown)));
}

/// `schedules` schedules from seed `first` on `threads` threads.
fn run(
    first: u64,
    schedules: u64,
    threads: u64,
    config: Option<Config>,
    mode: Mode,
) -> (Summary, Duration) {
    let started = Instant::now();
    let per = schedules.div_ceil(threads);
    let parts: Vec<Summary> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let from = first + i * per;
                let count = per.min((first + schedules).saturating_sub(from));
                s.spawn(move || permits::simulate(from, count, config, mode))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker"))
            .collect()
    });
    let mut sum = Summary::default();
    for p in parts {
        sum.merge(p);
    }
    (sum, started.elapsed())
}

/// The bounded check to `depth` faults; whether it found a violation.
fn bounded(depth: usize) -> bool {
    let started = Instant::now();
    let sum = permits::check(depth, Config::default());
    println!(
        "permit check: every script of {depth} faults of {} before a fencing, {} runs, {} violations ({:.1}s); {} fencings",
        permits::alphabet(&Config::default()).len(),
        sum.runs,
        sum.violations.len(),
        started.elapsed().as_secs_f64(),
        sum.fenced
    );
    for (script, v) in sum.violations.iter().take(5) {
        println!("{script:?}: {v}");
    }
    !sum.violations.is_empty()
}

/// Print the figures and up to `shown` violations; whether any.
fn report(mode: Mode, (sum, took): (Summary, Duration), shown: usize) -> bool {
    let mut rec = sum.recoveries.clone();
    rec.sort();
    let pct = |p: f64| {
        rec.get(((rec.len() as f64 - 1.0) * p).round() as usize)
            .map_or("-".to_string(), |d: &Duration| {
                format!("{:.1}s", d.as_secs_f64())
            })
    };
    println!(
        "permit simulation ({}): {} schedules, {} violations ({:.1}s); {} fencings, {} resets; power-off to deletion p50 {}, p95 {}, max {} ({} recoveries)",
        match mode {
            Mode::Adversary => "adversary",
            Mode::Outages => "outages",
            Mode::PowerOff => "power-off",
        },
        sum.schedules,
        sum.violations.len(),
        took.as_secs_f64(),
        sum.fenced,
        sum.resets,
        pct(0.5),
        pct(0.95),
        pct(1.0),
        rec.len()
    );
    let mut ft = sum.fencing_times.clone();
    ft.sort();
    if let (Some(a), Some(b)) = (ft.get(ft.len() / 2), ft.last()) {
        println!(
            "fencing start to deletion: p50 {:.1}s, max {:.1}s",
            a.as_secs_f64(),
            b.as_secs_f64()
        );
    }
    println!(
        "fencings begun from silence reports: {} ({} while the node still held a permit)",
        sum.from_reports, sum.from_reports_held
    );
    for (seed, cfg, v) in sum.violations.iter().take(shown) {
        println!("seed {seed}: {v}\n    {cfg:?}");
    }
    !sum.violations.is_empty()
}
