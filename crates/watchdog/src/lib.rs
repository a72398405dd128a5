//! The hardware watchdog used by `--self-fence=watchdog`: opened at start
//! (the agent refuses to start without it), its timeout programmed to the
//! requested `--watchdog-timeout` and read back, fed from a thread of its
//! own while the self-check's permit lasts (renewed after every completed
//! check: a dead man's switch), and no longer fed when the node must fence
//! itself or the self-check stops completing, so the watchdog resets the
//! node.
//!
//! The timeout read back from the device is the one that counts: the leader
//! computes when a node's pods may be deleted from the advertised watchdog
//! timeout, so the agent must advertise the device's real timeout, never
//! merely the requested one. A device whose timeout cannot be read back is
//! refused.
//!
//! The kernel's watchdog core pings a running device in two more places
//! than a write (`drivers/watchdog/watchdog_dev.c`): `WDIOC_SETTIMEOUT`,
//! and the last close without the magic character — which is what every
//! process exit is. So an agent that decided to fence its node and then
//! crashed (or was restarted, and programmed the timeout again) would give
//! the node another full timeout. Hence: the timeout is programmed only when
//! the device does not already have it (an agent restarted within the same
//! boot finds it programmed, and does not ping), and once the node must
//! fence itself — a self-fence decision, or a permit that lapsed — the
//! reset is *expedited*: the timeout is set to the shortest the device
//! takes (1 s), so an exit ping after it buys at most that much.

use std::fs::File;
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use kube_fencer_decide::agent::watchdog_timing::{EXPEDITED_TIMEOUT, PERMIT_GRACE};

use ioctl::{WDIOC_GETTIMEOUT, WDIOC_SETTIMEOUT};

pub mod ioctl;

/// Whole seconds to ask the device for: rounded up (a shorter timeout than
/// requested is safe, a longer one is not), at least 1.
fn seconds_rounded_up(d: Duration) -> u32 {
    let s = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
    u32::try_from(s.max(1))
        .unwrap_or(u32::MAX)
        .min(libc::c_int::MAX as u32)
}

/// How often to feed a device whose timeout is `timeout`: a quarter of it,
/// within 500ms..10s.
fn feed_period(timeout: Duration) -> Duration {
    (timeout / 4).clamp(Duration::from_millis(500), Duration::from_secs(10))
}

/// `WDIOC_SETTIMEOUT`: the timeout the device took (a ping, if it runs).
#[allow(unsafe_code)] // the ioctl, on a descriptor this module owns
fn set_timeout(file: &File, seconds: u32) -> std::io::Result<()> {
    let mut set: libc::c_int = libc::c_int::try_from(seconds).unwrap_or(libc::c_int::MAX);
    // SAFETY: WDIOC_SETTIMEOUT reads and writes one c_int through the
    // pointer, which is valid for the duration of the call.
    let r = unsafe {
        libc::ioctl(
            file.as_raw_fd(),
            WDIOC_SETTIMEOUT as _,
            &mut set as *mut libc::c_int,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Why the agent cannot use a watchdog device.
#[derive(Debug, thiserror::Error)]
pub enum WatchdogError {
    #[error("cannot open the watchdog device {path}: {error}")]
    Open { path: String, error: std::io::Error },
    #[error("watchdog device {path}: {error}")]
    Timeout { path: String, error: TimeoutError },
    #[error("cannot start the watchdog thread: {0}")]
    Thread(std::io::Error),
}

/// Why a device's timeout cannot be verified.
#[derive(Debug, thiserror::Error)]
pub enum TimeoutError {
    #[error(
        "WDIOC_GETTIMEOUT failed: {0} (not a watchdog device?); its timeout cannot be verified"
    )]
    Unreadable(std::io::Error),
    #[error("WDIOC_GETTIMEOUT returned an invalid timeout of {0}s")]
    Invalid(libc::c_int),
}

/// `WDIOC_GETTIMEOUT`, validated.
#[allow(unsafe_code)] // the ioctl, on a descriptor this module owns
fn get_timeout(file: &File) -> Result<u32, TimeoutError> {
    let mut got: libc::c_int = 0;
    // SAFETY: WDIOC_GETTIMEOUT writes one c_int through the pointer, which
    // is valid for the duration of the call.
    let r = unsafe {
        libc::ioctl(
            file.as_raw_fd(),
            WDIOC_GETTIMEOUT as _,
            &mut got as *mut libc::c_int,
        )
    };
    if r < 0 {
        return Err(TimeoutError::Unreadable(std::io::Error::last_os_error()));
    }
    u32::try_from(got)
        .ok()
        .filter(|s| *s > 0)
        .ok_or(TimeoutError::Invalid(got))
}

/// Program the device's timeout to `seconds` and read back the timeout it
/// actually uses. The device is asked first: when it already has that
/// timeout (an agent restarted within the boot), nothing is written, as a
/// `WDIOC_SETTIMEOUT` would ping it. A failed set is tolerated (some
/// devices have a fixed timeout); a failed read-back is not.
fn program_timeout(file: &File, seconds: u32) -> Result<u32, TimeoutError> {
    if get_timeout(file).is_ok_and(|s| s == seconds) {
        return Ok(seconds);
    }
    if let Err(e) = set_timeout(file, seconds) {
        tracing::warn!(error = %e, requested_seconds = seconds, "WDIOC_SETTIMEOUT failed; reading the device's own timeout");
    }
    get_timeout(file)
}

/// Make the reset come as soon as the device allows: the shortest timeout
/// it takes (from 1 s up to its current one). Called once the node must
/// fence itself, so that a ping after it (the kernel pings on the exit of
/// the process, and programming pings) buys the node at most that long.
fn expedite(file: &File, timeout: Duration) {
    let current = seconds_rounded_up(timeout);
    let shortest = seconds_rounded_up(EXPEDITED_TIMEOUT);
    for s in shortest..current.min(8) {
        match set_timeout(file, s) {
            Ok(()) => {
                tracing::warn!(
                    seconds = s,
                    "watchdog reset expedited: the device's timeout is now {s}s and it is no longer fed"
                );
                return;
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => continue,
            Err(e) => {
                tracing::error!(error = %e, "cannot expedite the watchdog reset; it comes within the device's {current}s timeout after the last feed");
                return;
            }
        }
    }
}

/// What the feeding thread and the agent share (under one lock, so a feed
/// can never follow the magic close written by [`Watchdog::disarm`]).
struct Feed {
    device: File,
    /// Feed only before this instant: the self-check renews it after every
    /// completed check. `None`: not yet permitted (a fresh start).
    permit: Option<Instant>,
    /// False once the node is to fence itself, or after the magic close.
    feeding: bool,
}

impl Feed {
    /// Feeding ends for good: expedite the reset (unless disarmed).
    fn end(&mut self, timeout: Duration) {
        if std::mem::replace(&mut self.feeding, false) {
            self.permit = None;
            expedite(&self.device, timeout);
        }
    }
}

/// The watchdog device, fed by a thread of its own while the self-check's
/// permit lasts: a dead man's switch. A self-check loop that hangs (a stuck
/// await, a deadlock, blocked logging) stops renewing the permit, the feeds
/// stop at its end, and the watchdog resets the node its timeout later —
/// exactly as when the agent crashes.
pub struct Watchdog {
    shared: Arc<(Mutex<Feed>, Condvar)>,
    timeout: Duration,
    period: Duration,
}

/// Its timings (the feed state lives behind the feeding thread's lock).
impl std::fmt::Debug for Watchdog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watchdog")
            .field("timeout", &self.timeout)
            .field("period", &self.period)
            .finish_non_exhaustive()
    }
}

impl Watchdog {
    /// Open the device (refuse to start without it), program its timeout to
    /// `requested_timeout` rounded up to whole seconds, read back the timeout
    /// it actually uses (refuse when that fails: an unverifiable watchdog
    /// cannot back the advertised timeout), and feed it from a thread of its
    /// own, independent of the async runtime, every quarter of the actual
    /// timeout (within 500ms..10s) — but only while a permit given by
    /// [`Watchdog::permit_until`] lasts. There is none at first: opening
    /// arms the device, and the node resets unless the self-check permits
    /// feeding within the timeout.
    ///
    /// The caller must advertise [`Watchdog::timeout`], which may differ
    /// from `requested_timeout`.
    pub fn open(path: &str, requested_timeout: Duration) -> Result<Self, WatchdogError> {
        Self::open_with(path, requested_timeout, program_timeout)
    }

    /// [`Watchdog::open`] with the timeout programming step given:
    /// `program(device, requested seconds)` returns the device's actual
    /// timeout in seconds (tests pass a closure and a regular file, which
    /// skips the ioctls).
    pub fn open_with(
        path: &str,
        requested_timeout: Duration,
        program: impl FnOnce(&File, u32) -> Result<u32, TimeoutError>,
    ) -> Result<Self, WatchdogError> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|error| WatchdogError::Open {
                path: path.to_string(),
                error,
            })?;
        let actual = match program(&file, seconds_rounded_up(requested_timeout)) {
            Ok(s) => Duration::from_secs(u64::from(s)),
            Err(e) => {
                disarm_refused(file);
                return Err(WatchdogError::Timeout {
                    path: path.to_string(),
                    error: e,
                });
            }
        };
        Self::start(file, actual)
    }

    /// Feed `file`, whose timeout is `timeout`, from a thread of its own.
    fn start(file: File, timeout: Duration) -> Result<Self, WatchdogError> {
        let period = feed_period(timeout);
        let shared = Arc::new((
            Mutex::new(Feed {
                device: file,
                permit: None,
                feeding: true,
            }),
            Condvar::new(),
        ));
        let s = shared.clone();
        std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || {
                let (lock, wake) = &*s;
                let mut feed = lock.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    if !feed.feeding {
                        return;
                    }
                    if feed
                        .permit
                        .is_some_and(|until| Instant::now() >= until + PERMIT_GRACE)
                    {
                        // The permit lapsed: the self-check stopped
                        // completing (hung, or its process is going).
                        // Expedite first: logging may block.
                        feed.end(timeout);
                        tracing::error!("the self-check's feeding permit lapsed: the node resets");
                        return;
                    }
                    if feed.permit.is_some_and(|until| Instant::now() < until) {
                        let dev = &mut feed.device;
                        if let Err(e) = dev.write_all(b"\0").and_then(|()| dev.flush()) {
                            tracing::error!(error = %e, "feeding the watchdog failed");
                        }
                    }
                    // Sleep one period, or less when the permit ends sooner
                    // (so the last feed is never after it); a new permit or
                    // a stop wakes the thread at once.
                    let now = Instant::now();
                    let nap = match feed.permit {
                        Some(until) if until > now => period.min(until - now),
                        Some(until) => (until + PERMIT_GRACE).saturating_duration_since(now),
                        None => period,
                    };
                    feed = wake
                        .wait_timeout(feed, nap)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            })
            .map_err(WatchdogError::Thread)?;
        Ok(Watchdog {
            shared,
            timeout,
            period,
        })
    }

    fn with<R>(&self, f: impl FnOnce(&mut Feed) -> R) -> R {
        let (lock, wake) = &*self.shared;
        let r = f(&mut lock.lock().unwrap_or_else(|p| p.into_inner()));
        wake.notify_all();
        r
    }

    /// The device's actual timeout, as read back from it: the value to
    /// advertise, whatever was requested.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// How often the device is fed (derived from [`Watchdog::timeout`]).
    pub fn feed_period(&self) -> Duration {
        self.period
    }

    /// Feed until `until` (the self-check's verdict after a completed
    /// check); a permit that is not renewed lapses: no feed follows its end.
    /// Renewed within [`PERMIT_GRACE`] it feeds again at once; later, the
    /// feeding has ended for good and the reset was expedited.
    pub fn permit_until(&self, until: Instant) {
        self.with(|f| f.permit = Some(until));
    }

    /// When feeding is permitted until (`None`: never permitted yet).
    pub fn permitted_until(&self) -> Option<Instant> {
        self.with(|f| f.permit)
    }

    /// Stop feeding for good and expedite the reset: the node must fence
    /// itself.
    pub fn stop_feeding(&self) {
        let timeout = self.timeout;
        self.with(|f| f.end(timeout));
    }

    /// Graceful shutdown: write the magic close character so the watchdog
    /// is disarmed (only when still feeding: a fencing must go through).
    /// Call it only once nothing relies on the watchdog any more (the
    /// self-fence advertisement was withdrawn).
    pub fn disarm(&self) {
        self.with(|f| {
            if std::mem::replace(&mut f.feeding, false) {
                f.permit = None;
                let dev = &mut f.device;
                let _ = dev.write_all(b"V").and_then(|()| dev.flush());
            }
        });
    }
}

/// The watchdog device as the permit protocol feeds it
/// (`docs/permits.md`, the feeding lemma): not opened until the first ping
/// (opening arms it), then pinged only by `WDIOC_SETTIMEOUT` with the
/// timeout each ping may buy, read back: a device that took a longer
/// timeout than asked is an error (it would outlast the permit).
pub struct PermitDevice {
    path: String,
    file: Option<File>,
}

impl PermitDevice {
    pub fn new(path: &str) -> Self {
        PermitDevice {
            path: path.to_string(),
            file: None,
        }
    }

    /// Whether this process opened the device.
    pub fn is_open(&self) -> bool {
        self.file.is_some()
    }

    /// Open the device if it is not (arming it), and set its timeout to
    /// `timeout` (whole seconds, at least 1), which pings it; the timeout
    /// the device took.
    pub fn ping(&mut self, timeout: Duration) -> std::io::Result<Duration> {
        let seconds = u32::try_from(timeout.as_secs().max(1)).unwrap_or(u32::MAX);
        if self.file.is_none() {
            let file = std::fs::OpenOptions::new().write(true).open(&self.path)?;
            self.file = Some(file);
        }
        let file = self.file.as_ref().expect("opened");
        set_timeout(file, seconds)?;
        let took = get_timeout(file).map_err(|e| std::io::Error::other(e.to_string()))?;
        if took > seconds {
            return Err(std::io::Error::other(format!(
                "the device took a {took}s timeout when asked for {seconds}s: it would outlast the permit"
            )));
        }
        Ok(Duration::from_secs(u64::from(took)))
    }

    /// Graceful stop: the magic close character, so the device stops (only
    /// once nothing relies on it any more: the arming was withdrawn).
    pub fn disarm(&mut self) -> std::io::Result<()> {
        if let Some(mut file) = self.file.take() {
            file.write_all(b"V")?;
            file.flush()?;
        }
        Ok(())
    }
}

/// A device refused after opening may still be a watchdog that opening
/// armed: write the magic close so that refusing to start does not reset the
/// node. Only to character devices: a regular file named by mistake is left
/// untouched.
fn disarm_refused(mut file: File) {
    use std::os::unix::fs::FileTypeExt;
    if file
        .metadata()
        .is_ok_and(|m| m.file_type().is_char_device())
    {
        let _ = file.write_all(b"V").and_then(|()| file.flush());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_requested_timeout_is_rounded_up_to_whole_seconds() {
        assert_eq!(seconds_rounded_up(Duration::from_secs(10)), 10);
        assert_eq!(seconds_rounded_up(Duration::from_millis(10_001)), 11);
        assert_eq!(seconds_rounded_up(Duration::from_millis(1)), 1);
        assert_eq!(seconds_rounded_up(Duration::ZERO), 1);
        assert_eq!(
            seconds_rounded_up(Duration::MAX),
            libc::c_int::MAX as u32,
            "never more than the ioctl can carry"
        );
    }

    #[test]
    fn a_missing_watchdog_device_is_an_error() {
        let e =
            Watchdog::open("/nonexistent/watchdog", Duration::from_secs(1)).expect_err("must fail");
        assert!(
            matches!(&e, WatchdogError::Open { path, .. } if path == "/nonexistent/watchdog"),
            "{e:?}"
        );
        assert!(e.to_string().contains("/nonexistent/watchdog"), "{e}");
    }

    fn temp_device(name: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("kf-wd-{name}-{}", std::process::id()));
        std::fs::write(&path, "").unwrap();
        path
    }

    #[test]
    fn a_plain_file_is_refused_as_its_timeout_cannot_be_read_back() {
        let path = temp_device("plain");
        let p = path.to_str().unwrap();
        let e =
            Watchdog::open(p, Duration::from_secs(10)).expect_err("a plain file is no watchdog");
        let written = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(
            matches!(&e, WatchdogError::Timeout { error: TimeoutError::Unreadable(io), .. }
                if io.raw_os_error() == Some(libc::ENOTTY)),
            "{e:?}"
        );
        let e = e.to_string();
        assert!(e.contains(p), "names the path: {e}");
        assert!(e.contains("WDIOC_GETTIMEOUT"), "{e}");
        assert!(
            e.contains(&std::io::Error::from_raw_os_error(libc::ENOTTY).to_string()),
            "names the errno: {e}"
        );
        assert!(
            written.is_empty(),
            "nothing written to a refused plain file"
        );
    }

    #[test]
    fn a_failed_programming_step_is_refused_with_the_path() {
        let path = temp_device("progfail");
        let p = path.to_str().unwrap();
        let e = Watchdog::open_with(p, Duration::from_secs(10), |_, _| {
            Err(TimeoutError::Invalid(-1))
        })
        .expect_err("must fail");
        let _ = std::fs::remove_file(&path);
        assert!(
            matches!(&e, WatchdogError::Timeout { path, error: TimeoutError::Invalid(-1) } if path == p),
            "{e:?}"
        );
        let text = e.to_string();
        assert!(text.contains(p) && text.contains("-1s"), "{text}");
    }

    #[test]
    fn the_device_is_asked_for_the_requested_timeout_rounded_up() {
        let path = temp_device("asked");
        let mut asked = None;
        let w = Watchdog::open_with(
            path.to_str().unwrap(),
            Duration::from_millis(9_500),
            |_, s| {
                asked = Some(s);
                Ok(s)
            },
        )
        .unwrap();
        w.disarm();
        let _ = std::fs::remove_file(&path);
        assert_eq!(asked, Some(10));
        assert_eq!(w.timeout(), Duration::from_secs(10));
    }

    #[test]
    fn a_device_with_a_longer_timeout_reports_the_longer_one() {
        let path = temp_device("longer");
        let w = Watchdog::open_with(path.to_str().unwrap(), Duration::from_secs(10), |_, _| {
            Ok(60)
        })
        .unwrap();
        w.disarm();
        let _ = std::fs::remove_file(&path);
        assert_eq!(
            w.timeout(),
            Duration::from_secs(60),
            "the actual, not the requested"
        );
    }

    #[test]
    fn the_feed_period_follows_the_actual_timeout() {
        assert_eq!(
            feed_period(Duration::from_secs(1)),
            Duration::from_millis(500)
        );
        assert_eq!(feed_period(Duration::from_secs(8)), Duration::from_secs(2));
        assert_eq!(
            feed_period(Duration::from_secs(60)),
            Duration::from_secs(10)
        );

        // Requested 1s (period 500ms) but the device runs 8s: fed every 2s,
        // so only the first feed within 1.2s.
        let path = temp_device("period");
        let w = Watchdog::open_with(path.to_str().unwrap(), Duration::from_secs(1), |_, _| Ok(8))
            .unwrap();
        assert_eq!(w.feed_period(), Duration::from_secs(2));
        w.permit_until(Instant::now() + Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(1_200));
        w.stop_feeding();
        let out = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(out, vec![0], "one feed, not one per 500ms");

        // A device that is shorter than requested: fed at its own pace.
        let path = temp_device("shorter");
        let w = Watchdog::open_with(path.to_str().unwrap(), Duration::from_secs(60), |_, _| {
            Ok(4)
        })
        .unwrap();
        w.disarm();
        let _ = std::fs::remove_file(&path);
        assert_eq!(w.timeout(), Duration::from_secs(4));
        assert_eq!(w.feed_period(), Duration::from_secs(1));
    }

    #[test]
    fn an_opened_watchdog_is_not_fed_before_a_permit() {
        // A restarted agent must not keep the node alive before its
        // self-check found the node healthy.
        let path = temp_device("nopermit");
        let w = Watchdog::open_with(path.to_str().unwrap(), Duration::from_secs(1), |_, s| Ok(s))
            .unwrap();
        std::thread::sleep(Duration::from_millis(1_200));
        let out = std::fs::read(&path).unwrap();
        w.stop_feeding();
        let _ = std::fs::remove_file(&path);
        assert!(out.is_empty(), "fed without a permit: {out:?}");
    }

    #[test]
    fn a_permit_that_is_not_renewed_stops_the_feeds() {
        // The dead man's switch: the self-check stops completing (a hung
        // loop), so the permit is not renewed and the feeds stop at its end.
        let path = temp_device("lapse");
        let w = Watchdog::open_with(path.to_str().unwrap(), Duration::from_secs(1), |_, s| Ok(s))
            .unwrap();
        let len = || std::fs::read(&path).unwrap().len();
        let wait_for_more_than = |n: usize| {
            let deadline = Instant::now() + Duration::from_millis(400);
            while len() <= n && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            len()
        };
        let until = Instant::now() + Duration::from_millis(800);
        w.permit_until(until);
        let fed_at_once = wait_for_more_than(0);
        std::thread::sleep(
            until.saturating_duration_since(Instant::now()) + Duration::from_millis(50),
        );
        let at_lapse = len();
        // More than one feed period after the end of the permit.
        std::thread::sleep(w.feed_period() + Duration::from_millis(300));
        let later = len();
        // Renewed: fed again at once, without waiting for a period.
        w.permit_until(Instant::now() + Duration::from_secs(60));
        let renewed = wait_for_more_than(later);
        w.stop_feeding();
        let _ = std::fs::remove_file(&path);
        assert_eq!(fed_at_once, 1, "a new permit feeds at once");
        assert!(
            (1..=2).contains(&at_lapse),
            "fed every 500ms while permitted: {at_lapse}"
        );
        assert_eq!(later, at_lapse, "no feed after the permit lapsed");
        assert_eq!(renewed, later + 1, "a renewed permit feeds at once");
    }

    #[test]
    fn a_permit_lapsed_beyond_the_grace_ends_the_feeding_for_good() {
        let path = temp_device("grace");
        let w = Watchdog::open_with(path.to_str().unwrap(), Duration::from_secs(1), |_, s| Ok(s))
            .unwrap();
        w.permit_until(Instant::now() + Duration::from_millis(100));
        std::thread::sleep(Duration::from_millis(100) + PERMIT_GRACE + Duration::from_millis(300));
        let at_end = std::fs::read(&path).unwrap().len();
        w.permit_until(Instant::now() + Duration::from_secs(60));
        std::thread::sleep(w.feed_period() + Duration::from_millis(300));
        let later = std::fs::read(&path).unwrap().len();
        let _ = std::fs::remove_file(&path);
        assert_eq!(at_end, 1, "fed once while permitted");
        assert_eq!(later, at_end, "a permit after the grace feeds nothing");
    }

    /// Feeds at the shortest period (a 1s device: every 500ms) for 1.2s,
    /// then `stop`s and waits more than a period.
    fn fed(name: &str, stop: impl FnOnce(&Watchdog)) -> Vec<u8> {
        let path = temp_device(name);
        let w = Watchdog::open_with(path.to_str().unwrap(), Duration::from_secs(1), |_, s| Ok(s))
            .unwrap();
        assert_eq!(w.feed_period(), Duration::from_millis(500));
        w.permit_until(Instant::now() + Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(1_200));
        stop(&w);
        std::thread::sleep(Duration::from_millis(700));
        let out = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        out
    }

    #[test]
    fn the_watchdog_is_fed_then_disarmed_with_the_magic_close() {
        let out = fed("disarm", Watchdog::disarm);
        assert!(out.iter().filter(|b| **b == 0).count() >= 2, "{out:?}");
        assert_eq!(out.last(), Some(&b'V'), "nothing after the magic close");
    }

    #[test]
    fn stopping_the_feed_writes_nothing_more_and_no_magic_close() {
        let out = fed("stop", |w| {
            w.stop_feeding();
            // A later disarm (graceful shutdown) must not cancel the fencing.
            w.disarm();
        });
        assert!(!out.is_empty() && !out.contains(&b'V'), "{out:?}");
    }
}
