//! kube-fencer-fakewdog: a Linux watchdog device emulated in user space
//! (FUSE), for kube-fencer's tests on machines without /dev/watchdog.
//!
//! It mounts a directory holding one file, `watchdog`, that behaves like
//! the Linux watchdog core's character device (see `device.rs`); when it is
//! armed and not fed for its timeout, it runs the `--on-expire` command
//! once (the node's "power-off") and stays fired. SIGTERM or SIGINT
//! unmounts and exits.

// A test device speaks to the kernel directly: signal masks, mount and
// umount, the caller's uid through libc.
#![allow(unsafe_code)]

mod device;
mod fs;
mod log;

use std::path::PathBuf;
use std::time::Duration;

use device::{Device, KERNEL_MAX_TIMEOUT};

const USAGE: &str = "\
usage: kube-fencer-fakewdog --mount DIR --on-expire CMD [--timeout 60s]
                            [--max-timeout SECONDS] [--state-file FILE]

Mounts a FUSE file system on DIR (created if missing) holding one file,
DIR/watchdog, which behaves like a Linux watchdog device: the first open
arms it, any write feeds it, a 'V' in the last write before the close
disarms it (magic close), WDIOC_SETTIMEOUT/GETTIMEOUT/KEEPALIVE/GETTIMELEFT/
GETSUPPORT work, other ioctls are ENOTTY, a second opener gets EBUSY. Armed
and not fed for the timeout, it runs `sh -c CMD` once (environment:
FAKEWDOG_MOUNT=DIR, FAKEWDOG_DEVICE=DIR/watchdog, FAKEWDOG_TIMEOUT=seconds)
and stays fired: opens, writes and ioctls then fail with EIO.

  --timeout T        initial timeout, whole seconds: 60, 60s, 2m (default 60s)
  --max-timeout T    the largest timeout WDIOC_SETTIMEOUT accepts (default
                     the kernel's, 4294967s); larger requests are EINVAL
  --state-file FILE  keep FILE up to date (key=value lines: state=stopped|
                     armed|fired, open, timeout_seconds, time_left_ms, feeds,
                     last_feed_unix_ms, fired_unix_ms)

Needs root (it mounts with mount(2)) and /dev/fuse. SIGTERM/SIGINT unmount;
after a crash: umount DIR (or umount -l DIR while the file is still open).";

struct Args {
    mount: PathBuf,
    on_expire: String,
    timeout: u32,
    max_timeout: u32,
    state_file: Option<PathBuf>,
}

/// Whole seconds: `60`, `60s`, `2m`, `1h` (at least 1).
fn parse_seconds(s: &str) -> Result<u32, String> {
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(format!("{s:?}: not whole seconds (like 60, 60s, 2m)")),
    };
    num.parse::<u32>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|n| *n >= 1)
        .ok_or_else(|| format!("{s:?}: not a number of seconds of at least 1"))
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut mount, mut on_expire, mut state_file) = (None, None, None);
    let (mut timeout, mut max_timeout) = (60, KERNEL_MAX_TIMEOUT);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--mount" => mount = Some(PathBuf::from(value()?)),
            "--on-expire" => on_expire = Some(value()?),
            "--timeout" => timeout = parse_seconds(&value()?)?,
            "--max-timeout" => max_timeout = parse_seconds(&value()?)?,
            "--state-file" => state_file = Some(PathBuf::from(value()?)),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {a:?}")),
        }
    }
    let max_timeout = max_timeout.min(KERNEL_MAX_TIMEOUT);
    if timeout > max_timeout {
        return Err(format!(
            "--timeout {timeout}s is above --max-timeout {max_timeout}s"
        ));
    }
    Ok(Args {
        mount: mount.ok_or("--mount is required")?,
        on_expire: on_expire.ok_or("--on-expire is required")?,
        timeout,
        max_timeout,
        state_file,
    })
}

/// SIGTERM, SIGINT and SIGHUP, blocked in every thread so that the main
/// thread takes them with `sigtimedwait` (child processes start with an
/// empty mask: std resets it).
fn block_signals() -> libc::sigset_t {
    // SAFETY: plain libc signal-set calls on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// The signal received within `timeout`, if any.
fn wait_signal(set: &libc::sigset_t, timeout: Duration) -> Option<i32> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: valid set and timespec; no siginfo wanted.
    let s = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) };
    (s > 0).then_some(s)
}

fn main() {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("kube-fencer-fakewdog: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    std::process::exit(run(args));
}

fn run(args: Args) -> i32 {
    log::install_fuser_log();
    let signals = block_signals();
    if let Err(e) = std::fs::create_dir_all(&args.mount) {
        log::line(format_args!(
            "cannot create the mount point {}: {e}",
            args.mount.display()
        ));
        return 1;
    }
    let mount = match args.mount.canonicalize() {
        Ok(m) => m,
        Err(e) => {
            log::line(format_args!("mount point {}: {e}", args.mount.display()));
            return 1;
        }
    };
    // The file system answers from one thread: writing the state file
    // inside it would wait for that thread forever.
    if let Some(f) = &args.state_file {
        let parent = f.parent().filter(|p| !p.as_os_str().is_empty());
        let dir = parent.unwrap_or(std::path::Path::new(".")).canonicalize();
        if dir.is_ok_and(|d| d.starts_with(&mount)) {
            log::line(format_args!(
                "the state file {} cannot be inside the mount {}",
                f.display(),
                mount.display()
            ));
            return 2;
        }
    }
    let dev = Device::new(args.timeout, args.max_timeout, std::time::Instant::now());
    let shared = fs::Shared::new(dev, mount.clone(), args.on_expire, args.state_file);
    let timer = {
        let s = shared.clone();
        std::thread::Builder::new()
            .name("timer".into())
            .spawn(move || s.run_timer())
            .expect("cannot start the timer thread")
    };
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName("kube-fencer-fakewdog".into()),
        fuser::MountOption::Subtype("fakewdog".into()),
        fuser::MountOption::NoSuid,
        fuser::MountOption::NoExec,
    ];
    let session = match fuser::spawn_mount(fs::WatchdogFs::new(shared.clone()), &mount, &config) {
        Ok(s) => s,
        Err(e) => {
            log::line(format_args!(
                "cannot mount {} (needs root and /dev/fuse): {e}",
                mount.display()
            ));
            return 1;
        }
    };
    shared.persist_now();
    let device = mount.join(fs::DEVICE_NAME);
    log::line(format_args!(
        "ready: {} (timeout {}s, max {}s; pid {})",
        device.display(),
        args.timeout,
        args.max_timeout,
        std::process::id()
    ));

    let code = loop {
        if let Some(sig) = wait_signal(&signals, Duration::from_millis(200)) {
            log::line(format_args!("signal {sig}: unmounting {}", mount.display()));
            break 0;
        }
        if session.guard.is_finished() {
            log::line(format_args!(
                "{} was unmounted from outside; exiting",
                mount.display()
            ));
            break 0;
        }
    };
    shared.shutdown();
    let _ = timer.join();
    if shared.state() == device::State::Armed {
        log::line("exiting while armed: this watchdog will never fire");
    }
    unmount(session, &mount);
    code
}

/// Unmount (lazily when the device is still open: `EBUSY`), then wait a
/// little for the FUSE session to end. It does not end while a copy of the
/// mount lives on in another mount namespace (one created while it was
/// mounted, e.g. by `unshare -m` or `ip netns exec`): then the process exits
/// anyway, and closing /dev/fuse aborts the connection, so those copies fail
/// with ENOTCONN instead of keeping this process alive.
fn unmount(session: fuser::BackgroundSession, mount: &std::path::Path) {
    if !session.guard.is_finished() {
        let c = std::ffi::CString::new(mount.as_os_str().as_encoded_bytes())
            .expect("a path without NUL");
        // SAFETY: a valid C string.
        if unsafe { libc::umount(c.as_ptr()) } == 0 {
            log::line(format_args!("unmounted {}", mount.display()));
        } else {
            let e = std::io::Error::last_os_error();
            log::line(format_args!(
                "unmounting {} failed ({e}); detaching it lazily",
                mount.display()
            ));
            // SAFETY: a valid C string.
            if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
                log::line(format_args!(
                    "lazy unmount of {} failed: {}",
                    mount.display(),
                    std::io::Error::last_os_error()
                ));
            }
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while !session.guard.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if !session.guard.is_finished() {
        log::line(
            "the FUSE session goes on (a copy of the mount in another mount namespace?); \
             exiting, which aborts the connection",
        );
    }
    // Not dropped: that would join a session that goes on, or unmount again
    // (fuser's own unmount, after ours). Exiting closes /dev/fuse.
    std::mem::forget(session);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Result<Args, String> {
        parse_args(a.iter().map(|s| s.to_string()))
    }

    #[test]
    fn seconds_are_whole_and_at_least_one() {
        assert_eq!(parse_seconds("60"), Ok(60));
        assert_eq!(parse_seconds("2s"), Ok(2));
        assert_eq!(parse_seconds("2m"), Ok(120));
        assert_eq!(parse_seconds("1h"), Ok(3600));
        for bad in ["0", "0s", "1.5s", "500ms", "", "s", "-1", "99999999999"] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mount_and_on_expire_are_required() {
        assert!(args(&["--mount", "/x"]).is_err());
        assert!(args(&["--on-expire", "true"]).is_err());
        let a = args(&["--mount", "/x", "--on-expire", "true", "--timeout", "2s"]).unwrap();
        assert_eq!((a.timeout, a.max_timeout), (2, KERNEL_MAX_TIMEOUT));
        assert!(args(&["--mount", "/x", "--on-expire", "t", "--max-timeout", "5"]).is_err());
        assert!(args(&["--mount", "/x", "--on-expire", "t", "--bogus"]).is_err());
    }
}
