//! kube-fencer's own watchdog code — `src/cluster/watchdog.rs` of the root
//! crate, compiled into this test as it is (its unit tests come along) —
//! against the emulated device: it programs and reads back the timeout,
//! feeds while its permit lasts, and either disarms with the magic close or,
//! once the permit lapses, lets the device fire. Run as root.

mod support;

#[allow(dead_code)]
#[path = "../../../src/cluster/watchdog.rs"]
mod watchdog;

use std::time::{Duration, Instant};

use support::{Fakewdog, unix_ns};
use watchdog::Watchdog;

#[test]
fn the_agent_feeds_while_permitted_then_disarms_with_the_magic_close() {
    let f = Fakewdog::start("agent-disarm", 60, &[]);
    let dev = f.device();
    let w = Watchdog::open(dev.to_str().unwrap(), Duration::from_millis(1500)).unwrap();
    assert_eq!(
        w.timeout(),
        Duration::from_secs(2),
        "1.5s rounded up, read back"
    );
    assert_eq!(f.state("timeout_seconds"), "2");
    // A permit of more than twice the timeout, renewed once.
    w.permit_until(Instant::now() + Duration::from_secs(3));
    std::thread::sleep(Duration::from_secs(2));
    w.permit_until(Instant::now() + Duration::from_secs(3));
    std::thread::sleep(Duration::from_secs(2));
    assert!(f.fired().is_empty(), "fired while fed:\n{}", f.log());
    w.disarm();
    drop(w);
    std::thread::sleep(Duration::from_secs(3));
    assert!(f.fired().is_empty(), "fired after disarm:\n{}", f.log());
    assert_eq!(f.state("state"), "stopped", "{}", f.log());
    let feeds: u64 = f.state("feeds").parse().unwrap();
    assert!(feeds >= 6, "fed every 500ms for 4s, got {feeds} feeds");
}

#[test]
fn when_the_agent_s_permit_lapses_the_device_fires() {
    let f = Fakewdog::start("agent-lapse", 60, &[]);
    let dev = f.device();
    let w = Watchdog::open(dev.to_str().unwrap(), Duration::from_secs(1)).unwrap();
    assert_eq!(w.timeout(), Duration::from_secs(1));
    let permit_end = unix_ns() + 2_000_000_000;
    w.permit_until(Instant::now() + Duration::from_secs(2));
    std::thread::sleep(Duration::from_millis(1800));
    assert!(
        f.fired().is_empty(),
        "fired within the permit:\n{}",
        f.log()
    );
    let fired = f.wait_fired(Duration::from_secs(10));
    assert!(
        fired[0].0 >= permit_end,
        "fired before the permit ended:\n{}",
        f.log()
    );
    eprintln!(
        "fired {:.3}s after the permit ended",
        (fired[0].0 - permit_end) as f64 / 1e9
    );
    // A graceful shutdown after the feeds stopped must not disarm it.
    w.stop_feeding();
    w.disarm();
    drop(w);
    // A restarted agent cannot open the device of a node that was reset.
    std::thread::sleep(Duration::from_millis(100));
    let e = Watchdog::open(dev.to_str().unwrap(), Duration::from_secs(1))
        .err()
        .expect("the fired device refuses");
    assert!(e.contains("cannot open the watchdog device"), "{e}");
    assert_eq!(f.fired().len(), 1);
}

#[test]
fn the_agent_uses_the_device_s_own_timeout_when_its_request_is_refused() {
    let f = Fakewdog::start("agent-max", 5, &["--max-timeout", "5"]);
    let dev = f.device();
    let w = Watchdog::open(dev.to_str().unwrap(), Duration::from_secs(10)).unwrap();
    assert_eq!(w.timeout(), Duration::from_secs(5), "what the device uses");
    assert!(
        f.log().contains("WDIOC_SETTIMEOUT 10s refused"),
        "{}",
        f.log()
    );
    w.permit_until(Instant::now() + Duration::from_secs(1));
    w.disarm();
    drop(w);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(f.state("state"), "stopped", "{}", f.log());
}
