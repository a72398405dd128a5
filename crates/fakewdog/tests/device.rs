//! The emulated watchdog through the kernel: FUSE open, write, ioctl and
//! release as a watchdog user makes them. Run as root.

mod support;

use std::time::{Duration, Instant};

use support::{Fakewdog, errno, unix_ns};

const SECOND_NS: u128 = 1_000_000_000;

/// Feed `wd` with `b"\0"` every `every` for `dur`; returns the Unix time
/// (ns) just before the last write, a lower bound of the last feed.
fn feed_for(wd: &mut support::Wd, dur: Duration, every: Duration) -> u128 {
    let end = Instant::now() + dur;
    let mut last = unix_ns();
    while Instant::now() < end {
        last = unix_ns();
        wd.write(b"\0").expect("feed");
        std::thread::sleep(every);
    }
    last
}

#[test]
fn fed_past_its_timeout_then_closed_with_the_magic_v_it_never_fires() {
    let f = Fakewdog::start("magic", 60, &[]);
    let mut wd = f.open().unwrap();
    assert_eq!(f.state("state"), "armed");
    assert_eq!(
        wd.set_timeout(2).unwrap(),
        2,
        "SETTIMEOUT returns the timeout in use"
    );
    assert_eq!(wd.get_timeout().unwrap(), 2);
    // Twice the timeout: it would have fired if the writes did not feed.
    feed_for(&mut wd, Duration::from_secs(4), Duration::from_millis(250));
    assert!(f.fired().is_empty(), "fired while fed:\n{}", f.log());
    wd.write(b"V").unwrap();
    drop(wd);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        f.fired().is_empty(),
        "fired after the magic close:\n{}",
        f.log()
    );
    assert_eq!(f.state("state"), "stopped");
    assert!(f.log().contains("DISARMED by magic close"), "{}", f.log());
}

#[test]
fn not_fed_for_its_timeout_it_fires_once_and_stays_fired() {
    let f = Fakewdog::start("expire", 60, &[]);
    let mut wd = f.open().unwrap();
    assert_eq!(wd.set_timeout(1).unwrap(), 1);
    // Fed for longer than the timeout, then not at all.
    let last_feed = feed_for(
        &mut wd,
        Duration::from_millis(1500),
        Duration::from_millis(200),
    );
    assert!(f.fired().is_empty(), "fired while fed:\n{}", f.log());
    let fired = f.wait_fired(Duration::from_secs(10));
    let (at, mount) = &fired[0];
    let after = at.saturating_sub(last_feed);
    eprintln!(
        "fired {:.3}s after the last feed (timeout 1s)",
        after as f64 / 1e9
    );
    assert!(
        *at >= last_feed + SECOND_NS,
        "fired {after} ns after the last feed, before the 1s timeout:\n{}",
        f.log()
    );
    assert_eq!(mount, f.mount.to_str().unwrap(), "FAKEWDOG_MOUNT");
    // Once, and for good: the open file and new opens get EIO.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(f.fired().len(), 1, "{:?}", f.fired());
    assert_eq!(f.state("state"), "fired");
    assert_eq!(errno(wd.write(b"\0")), libc::EIO);
    assert_eq!(errno(wd.get_timeout()), libc::EIO);
    drop(wd);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(errno(f.open().map(|_| ())), libc::EIO);
    assert!(f.log().contains("FIRED: not fed for"), "{}", f.log());
}

#[test]
fn closed_without_the_magic_v_it_stays_armed_and_fires() {
    let f = Fakewdog::start("nomagic", 60, &[]);
    let mut wd = f.open().unwrap();
    assert_eq!(wd.set_timeout(1).unwrap(), 1);
    feed_for(
        &mut wd,
        Duration::from_millis(600),
        Duration::from_millis(200),
    );
    // A 'V' counts only in the last write before the close.
    wd.write(b"V").unwrap();
    wd.write(b"\0").unwrap();
    let closed = unix_ns();
    drop(wd);
    let fired = f.wait_fired(Duration::from_secs(10));
    assert!(
        fired[0].0 >= closed + SECOND_NS,
        "fired before the timeout after the close (which feeds once):\n{}",
        f.log()
    );
    assert!(f.log().contains("watchdog did not stop!"), "{}", f.log());
    assert_eq!(f.state("state"), "fired");
}

#[test]
fn reopened_after_a_close_without_v_it_can_be_fed_and_disarmed() {
    let f = Fakewdog::start("reopen", 2, &[]);
    let mut wd = f.open().unwrap();
    wd.write(b"\0").unwrap();
    drop(wd);
    let mut wd = f.reopen();
    assert_eq!(f.state("state"), "armed");
    // Through two timeouts by WDIOC_KEEPALIVE alone.
    let end = Instant::now() + Duration::from_secs(4);
    while Instant::now() < end {
        wd.keepalive().unwrap();
        assert!((0..=2).contains(&wd.time_left().unwrap()));
        std::thread::sleep(Duration::from_millis(300));
    }
    wd.write(b"V").unwrap();
    drop(wd);
    std::thread::sleep(Duration::from_secs(3));
    assert!(f.fired().is_empty(), "{}", f.log());
    assert_eq!(f.state("state"), "stopped");
}

#[test]
fn a_second_opener_gets_ebusy() {
    let f = Fakewdog::start("busy", 60, &[]);
    let mut wd = f.open().unwrap();
    assert_eq!(errno(f.open().map(|_| ())), libc::EBUSY);
    assert_eq!(
        errno(std::fs::File::open(f.device())),
        libc::EBUSY,
        "read-only too"
    );
    wd.write(b"V").unwrap();
    drop(wd);
    // Free again once closed.
    let mut wd = f.reopen();
    wd.write(b"V").unwrap();
    drop(wd);
    assert!(f.fired().is_empty());
}

#[test]
fn bad_timeouts_are_einval_and_other_requests_enotty() {
    let f = Fakewdog::start("ioctl", 60, &["--max-timeout", "600"]);
    let rw = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(f.device());
    let mut wd = support::Wd(rw.unwrap());
    for bad in [0, -1, 601] {
        assert_eq!(errno(wd.set_timeout(bad)), libc::EINVAL, "{bad}");
    }
    assert_eq!(wd.get_timeout().unwrap(), 60, "unchanged");
    assert_eq!(wd.set_timeout(600).unwrap(), 600);
    // WDIOC_SETOPTIONS (not emulated) and a terminal request.
    assert_eq!(errno(wd.ioctl_raw(0x8004_5704)), libc::ENOTTY);
    assert_eq!(errno(wd.ioctl_raw(libc::TCGETS as u32)), libc::ENOTTY);
    // Reads are EINVAL, as on the kernel's watchdog.
    assert_eq!(
        errno(std::io::Read::read(&mut wd.0, &mut [0u8; 8])),
        libc::EINVAL
    );
    wd.write(b"V").unwrap();
}

#[test]
fn sigterm_unmounts_even_while_the_device_is_open() {
    let mut f = Fakewdog::start("sigterm", 60, &[]);
    assert!(f.is_mounted());
    let mut wd = f.open().unwrap();
    wd.write(b"\0").unwrap();
    let status = f.terminate();
    assert!(status.success(), "{status}:\n{}", f.log());
    assert!(!f.is_mounted(), "still mounted:\n{}", f.log());
    assert!(wd.write(b"\0").is_err(), "the device is gone");
    assert!(f.log().contains("exiting while armed"), "{}", f.log());
    drop(wd);

    let mut f = Fakewdog::start("sigterm-idle", 60, &[]);
    assert!(f.terminate().success());
    assert!(!f.is_mounted());
    assert!(f.log().contains("unmounted"), "{}", f.log());
}

#[test]
fn sigterm_exits_even_while_another_mount_namespace_holds_a_copy_of_the_mount() {
    let mut f = Fakewdog::start("sigterm-ns", 60, &[]);
    // A mount namespace created now copies the mount; unmounting here does
    // not end the FUSE session while that copy lives.
    // (Killed on drop, also when the test fails: the copy holds every
    // mount of the machine as it was.)
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let holder = KillOnDrop(
        std::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sleep", "60"])
            .spawn()
            .expect("unshare (util-linux) is needed"),
    );
    let ours = std::fs::read_link("/proc/self/ns/mnt").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_link(format!("/proc/{}/ns/mnt", holder.0.id())).ok() == Some(ours.clone()) {
        assert!(Instant::now() < deadline, "unshare did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    let start = Instant::now();
    let status = f.terminate();
    let took = start.elapsed();
    drop(holder);
    assert!(status.success(), "{status}:\n{}", f.log());
    assert!(took < Duration::from_secs(5), "took {took:?}:\n{}", f.log());
    assert!(!f.is_mounted());
    assert!(f.log().contains("aborts the connection"), "{}", f.log());
}
