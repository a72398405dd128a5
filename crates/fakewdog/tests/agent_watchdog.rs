//! kube-fencer's own watchdog code (the crate `kube-fencer-watchdog`, which
//! the agent uses) against the emulated device: it programs and reads back the timeout,
//! feeds while its permit lasts, and either disarms with the magic close or,
//! once the permit lapses, lets the device fire. Run as root.

mod support;

use std::time::{Duration, Instant};

use kube_fencer_watchdog::{Watchdog, WatchdogError};
use support::{Fakewdog, unix_ns};

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
    let Err(e) = Watchdog::open(dev.to_str().unwrap(), Duration::from_secs(1)) else {
        panic!("the fired device refuses");
    };
    assert!(matches!(e, WatchdogError::Open { .. }), "{e}");
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

/// The kernel pings a running device on `WDIOC_SETTIMEOUT`: once its node
/// must fence itself the agent sets the shortest timeout, so the reset
/// comes within a second, not after the full timeout (and a process exit
/// after it, which pings once more, buys the node at most that second).
#[test]
fn a_self_fence_decision_expedites_the_reset() {
    let f = Fakewdog::start("agent-expedite", 60, &[]);
    let dev = f.device();
    let w = Watchdog::open(dev.to_str().unwrap(), Duration::from_secs(10)).unwrap();
    assert_eq!(w.timeout(), Duration::from_secs(10));
    w.permit_until(Instant::now() + Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(700));
    let decided = unix_ns();
    w.stop_feeding();
    let fired = f.wait_fired(Duration::from_secs(5));
    let after = (fired[0].0 - decided) as f64 / 1e9;
    eprintln!("fired {after:.3}s after the decision");
    assert!(
        (0.9..2.0).contains(&after),
        "fired {after:.3}s after the decision, not within the expedited 1s:\n{}",
        f.log()
    );
}

/// A crashed agent's exit pings the device (the close without the magic
/// character); its successor, started within the boot, must not ping it
/// again by programming the timeout it already has — the node resets the
/// timeout after the predecessor's exit unless the successor is permitted
/// to feed.
#[test]
fn a_restarted_agent_does_not_ping_a_programmed_device() {
    let f = Fakewdog::start("agent-restart", 60, &[]);
    let dev = f.device();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_agent_feeds_then_exits_without_disarming",
            "--ignored",
            "--nocapture",
        ])
        .env("FAKEWDOG_CHILD_DEVICE", &dev)
        .status()
        .unwrap();
    assert!(status.success(), "the child agent failed");
    let exited = unix_ns();
    // The kernel passes the close on to the device asynchronously.
    let deadline = Instant::now() + Duration::from_secs(2);
    while f.state("open") != "0" {
        assert!(Instant::now() < deadline, "still open:\n{}", f.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let last_feed: u128 = f.state("last_feed_unix_ms").parse().unwrap();
    let feeds = f.state("feeds");
    assert_eq!(f.state("timeout_seconds"), "3");
    // The device may still report the closed file as open for a moment.
    let deadline = Instant::now() + Duration::from_secs(2);
    let w = loop {
        match Watchdog::open(dev.to_str().unwrap(), Duration::from_secs(3)) {
            Ok(w) => break w,
            Err(WatchdogError::Open { error, .. })
                if Instant::now() < deadline && error.raw_os_error() == Some(libc::EBUSY) =>
            {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => panic!("{e}:\n{}", f.log()),
        }
    };
    assert_eq!(w.timeout(), Duration::from_secs(3));
    assert_eq!(f.state("feeds"), feeds, "the restart pinged:\n{}", f.log());
    let fired = f.wait_fired(Duration::from_secs(6));
    let after_feed = fired[0].0 as f64 / 1e9 - last_feed as f64 / 1e3;
    eprintln!("fired {after_feed:.3}s after the predecessor's last ping");
    assert!(
        (2.9..3.6).contains(&after_feed),
        "fired {after_feed:.3}s after the last ping (timeout 3s):\n{}",
        f.log()
    );
    assert!(fired[0].0 >= exited, "fired before the predecessor exited");
    drop(w);
}

/// The predecessor of [`a_restarted_agent_does_not_ping_a_programmed_device`],
/// run by it as a process of its own: opens, feeds, exits without disarming.
#[test]
#[ignore = "a child process of a_restarted_agent_does_not_ping_a_programmed_device"]
fn child_agent_feeds_then_exits_without_disarming() {
    let dev = std::env::var("FAKEWDOG_CHILD_DEVICE").expect("run by its parent test");
    let w = Watchdog::open(&dev, Duration::from_secs(3)).unwrap();
    w.permit_until(Instant::now() + Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(1200));
    std::process::exit(0);
}

/// The permit's device (`--fencing-protocol permit`): nothing happens
/// until the first ping opens it; every ping is a `WDIOC_SETTIMEOUT` read
/// back; pings with a shrinking timeout keep it from firing; once they
/// stop it fires within the last one; and a magic close stops it.
#[test]
fn the_permit_device_opens_at_its_first_ping_and_fires_a_timeout_after_its_last() {
    use kube_fencer_watchdog::PermitDevice;
    let f = Fakewdog::start("permit-device", 60, &[]);
    let dev = f.device();
    let mut d = PermitDevice::new(dev.to_str().unwrap());
    assert!(!d.is_open());
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        f.fired().is_empty(),
        "fired before it was opened:\n{}",
        f.log()
    );
    assert_eq!(
        d.ping(Duration::from_secs(3)).unwrap(),
        Duration::from_secs(3)
    );
    assert!(d.is_open());
    assert_eq!(f.state("timeout_seconds"), "3");
    // A permit running out: pings of 2 s, then 1 s.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        d.ping(Duration::from_secs(2)).unwrap(),
        Duration::from_secs(2)
    );
    std::thread::sleep(Duration::from_millis(1000));
    let last = unix_ns();
    assert_eq!(
        d.ping(Duration::from_secs(1)).unwrap(),
        Duration::from_secs(1)
    );
    assert!(f.fired().is_empty(), "fired while pinged:\n{}", f.log());
    let fired = f.wait_fired(Duration::from_secs(10));
    let after = (fired[0].0 - last) as f64 / 1e9;
    assert!(
        (0.9..2.0).contains(&after),
        "fired {after:.3}s after a ping of 1s:\n{}",
        f.log()
    );
    // Disarmed before it ran out: never fires.
    let g = Fakewdog::start("permit-disarm", 60, &[]);
    let mut d = PermitDevice::new(g.device().to_str().unwrap());
    d.ping(Duration::from_secs(1)).unwrap();
    d.disarm().unwrap();
    assert!(!d.is_open());
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        g.fired().is_empty(),
        "fired after the magic close:\n{}",
        g.log()
    );
    assert_eq!(g.state("state"), "stopped", "{}", g.log());
}
