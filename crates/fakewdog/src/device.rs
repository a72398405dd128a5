//! The watchdog's state machine, after the Linux watchdog core
//! (`drivers/watchdog/watchdog_dev.c`) for a device with
//! `WDIOF_SETTIMEOUT | WDIOF_MAGICCLOSE | WDIOF_KEEPALIVEPING` and without
//! `nowayout`:
//!
//! - the first open arms it (its keepalive clock starts); one opener at a
//!   time, a second open gets `EBUSY`;
//! - any write of at least one byte feeds it; a write clears the magic-close
//!   permission and a `V` in it grants it again, so only a `V` in the last
//!   write before the close counts;
//! - the last close after a `V` disarms it (magic close); a close without
//!   one leaves it armed ("watchdog did not stop!") after one last feed, so
//!   it fires its timeout later unless it is opened and fed again (reopening
//!   an armed device does not feed it);
//! - `WDIOC_SETTIMEOUT` takes `1..=max` seconds (`EINVAL` otherwise), feeds,
//!   and returns the timeout now in use; `WDIOC_GETTIMEOUT`,
//!   `WDIOC_GETTIMELEFT`, `WDIOC_KEEPALIVE` (feeds), `WDIOC_GETSUPPORT`,
//!   `WDIOC_GETSTATUS` and `WDIOC_GETBOOTSTATUS` (both 0) as in the kernel;
//!   any other request is `ENOTTY`; reads are `EINVAL` (the kernel's
//!   watchdog has no read);
//! - armed and not fed for the timeout, it fires: once, for good. A fired
//!   device refuses opens, writes and ioctls with `EIO` (the node it guards
//!   is off) until the emulator is restarted.
//!
//! Time is passed in, so the rules are tested without waiting.

use std::time::{Duration, Instant, SystemTime};

use crate::log;

const INT: usize = std::mem::size_of::<libc::c_int>();

/// The requests of `<linux/watchdog.h>` this device answers, encoded as
/// the agent's device encodes them.
pub use kube_fencer_watchdog::ioctl::{
    INFO_SIZE, WDIOC_GETBOOTSTATUS, WDIOC_GETSTATUS, WDIOC_GETSUPPORT, WDIOC_GETTIMELEFT,
    WDIOC_GETTIMEOUT, WDIOC_KEEPALIVE, WDIOC_SETTIMEOUT,
};

const WDIOF_SETTIMEOUT: u32 = 0x0080;
const WDIOF_MAGICCLOSE: u32 = 0x0100;
const WDIOF_KEEPALIVEPING: u32 = 0x8000;
const IDENTITY: &[u8] = b"kube-fencer fakewdog";

/// The kernel's own bound on a timeout (`UINT_MAX / 1000` seconds).
pub const KERNEL_MAX_TIMEOUT: u32 = u32::MAX / 1000;

/// How often an armed device logs how it is being fed.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Never opened, or disarmed by a magic close.
    Stopped,
    /// Counting down from the last feed.
    Armed,
    /// Expired: the on-expire command ran. For good.
    Fired,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Stopped => "stopped",
            State::Armed => "armed",
            State::Fired => "fired",
        }
    }
}

pub struct Device {
    state: State,
    timeout: u32,
    max_timeout: u32,
    /// The file handle of the one open file, if any.
    opener: Option<u64>,
    next_fh: u64,
    /// A `V` was in the last write (the kernel's `_WDOG_ALLOW_RELEASE`).
    allow_release: bool,
    armed_at: Instant,
    last_feed: Instant,
    last_feed_wall: Option<SystemTime>,
    /// Feeds since arming, and since the last summary.
    feeds: u64,
    window_feeds: u64,
    window_start: Instant,
    fired_wall: Option<SystemTime>,
}

/// The outcome of an ioctl: the bytes to copy out, or an errno.
pub type IoctlResult = Result<Vec<u8>, i32>;

impl Device {
    /// A stopped device with a `timeout` of seconds (1..=`max_timeout`).
    pub fn new(timeout: u32, max_timeout: u32, now: Instant) -> Self {
        assert!((1..=max_timeout).contains(&timeout));
        Device {
            state: State::Stopped,
            timeout,
            max_timeout,
            opener: None,
            next_fh: 1,
            allow_release: false,
            armed_at: now,
            last_feed: now,
            last_feed_wall: None,
            feeds: 0,
            window_feeds: 0,
            window_start: now,
            fired_wall: None,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn timeout(&self) -> u32 {
        self.timeout
    }

    /// Open the device: arms it when stopped. `EBUSY` while another file
    /// has it open, `EIO` once fired.
    pub fn open(&mut self, pid: u32, now: Instant) -> Result<u64, i32> {
        if self.state == State::Fired {
            log::line(format_args!(
                "open by pid {pid} refused (EIO): the watchdog has fired"
            ));
            return Err(libc::EIO);
        }
        if self.opener.is_some() {
            log::line(format_args!(
                "open by pid {pid} refused (EBUSY): already open"
            ));
            return Err(libc::EBUSY);
        }
        let fh = self.next_fh;
        self.next_fh += 1;
        self.opener = Some(fh);
        self.allow_release = false;
        match self.state {
            State::Stopped => {
                self.state = State::Armed;
                self.armed_at = now;
                self.last_feed = now;
                self.last_feed_wall = Some(SystemTime::now());
                self.feeds = 0;
                self.window_feeds = 0;
                self.window_start = now;
                log::line(format_args!(
                    "ARMED by pid {pid}: timeout {}s",
                    self.timeout
                ));
            }
            State::Armed => log::line(format_args!(
                "reopened by pid {pid} while armed: fires in {} unless fed",
                secs(self.time_left(now))
            )),
            State::Fired => unreachable!(),
        }
        Ok(fh)
    }

    fn check(&self, fh: u64) -> Result<(), i32> {
        if self.opener != Some(fh) {
            return Err(libc::EBADF);
        }
        if self.state == State::Fired {
            return Err(libc::EIO);
        }
        Ok(())
    }

    fn feed(&mut self, how: &str, now: Instant) {
        if self.feeds == 0 {
            log::line(format_args!(
                "first feed ({how}) {} after arming",
                secs(now - self.armed_at)
            ));
        }
        self.feeds += 1;
        self.window_feeds += 1;
        self.last_feed = now;
        self.last_feed_wall = Some(SystemTime::now());
    }

    /// A write of `data`: feeds; a `V` in it allows the next close to
    /// disarm.
    pub fn write(&mut self, fh: u64, data: &[u8], now: Instant) -> Result<(), i32> {
        self.check(fh)?;
        if data.is_empty() {
            return Ok(());
        }
        self.allow_release = data.contains(&b'V');
        self.feed("write", now);
        Ok(())
    }

    /// An ioctl `cmd` with `input` (the bytes the kernel copied in).
    pub fn ioctl(&mut self, fh: u64, cmd: u32, input: &[u8], now: Instant) -> IoctlResult {
        self.check(fh)?;
        match cmd {
            WDIOC_GETSUPPORT => {
                let mut info = Vec::with_capacity(INFO_SIZE);
                let options = WDIOF_SETTIMEOUT | WDIOF_MAGICCLOSE | WDIOF_KEEPALIVEPING;
                info.extend_from_slice(&options.to_ne_bytes());
                info.extend_from_slice(&0u32.to_ne_bytes());
                info.extend_from_slice(IDENTITY);
                info.resize(INFO_SIZE, 0);
                Ok(info)
            }
            WDIOC_GETSTATUS | WDIOC_GETBOOTSTATUS => Ok(int(0)),
            WDIOC_KEEPALIVE => {
                self.feed("WDIOC_KEEPALIVE", now);
                Ok(Vec::new())
            }
            WDIOC_SETTIMEOUT => {
                let bytes: [u8; INT] = input.try_into().map_err(|_| libc::EFAULT)?;
                // The kernel reads an unsigned int: -1 is a huge timeout.
                let asked = libc::c_int::from_ne_bytes(bytes) as u32;
                if asked < 1 || asked > self.max_timeout {
                    log::line(format_args!(
                        "WDIOC_SETTIMEOUT {asked}s refused (EINVAL): not in 1..={}s",
                        self.max_timeout
                    ));
                    return Err(libc::EINVAL);
                }
                if asked != self.timeout {
                    log::line(format_args!(
                        "timeout set to {asked}s (was {}s)",
                        self.timeout
                    ));
                }
                self.timeout = asked;
                self.feed("WDIOC_SETTIMEOUT", now);
                Ok(int(self.timeout))
            }
            WDIOC_GETTIMEOUT => Ok(int(self.timeout)),
            WDIOC_GETTIMELEFT => Ok(int(self.time_left(now).as_secs() as u32)),
            _ => Err(libc::ENOTTY),
        }
    }

    /// The last close of the open file `fh`.
    pub fn release(&mut self, fh: u64, now: Instant) {
        if self.opener != Some(fh) {
            return;
        }
        self.opener = None;
        let allow_release = std::mem::take(&mut self.allow_release);
        match self.state {
            State::Armed if allow_release => {
                self.state = State::Stopped;
                log::line(format_args!(
                    "DISARMED by magic close: fed {} times over {}",
                    self.feeds,
                    secs(now - self.armed_at)
                ));
            }
            State::Armed => {
                self.feed("close without magic", now);
                log::line(format_args!(
                    "watchdog did not stop! closed without the magic 'V': still armed, \
                     fires in {}s unless reopened and fed",
                    self.timeout
                ));
            }
            State::Stopped => {}
            State::Fired => log::line("closed after firing"),
        }
    }

    /// When an armed device fires unless fed.
    pub fn deadline(&self) -> Option<Instant> {
        (self.state == State::Armed)
            .then(|| self.last_feed + Duration::from_secs(self.timeout.into()))
    }

    fn time_left(&self, now: Instant) -> Duration {
        self.deadline()
            .map_or(Duration::ZERO, |d| d.saturating_duration_since(now))
    }

    /// Fire if armed and not fed for the timeout at `now`; true if it fired
    /// (only once: a fired device stays fired).
    pub fn expire(&mut self, now: Instant) -> bool {
        if self.deadline().is_none_or(|d| now < d) {
            return false;
        }
        self.state = State::Fired;
        self.fired_wall = Some(SystemTime::now());
        log::line(format_args!(
            "FIRED: not fed for {} (timeout {}s; last feed {}, {} feeds since arming {} ago)",
            secs(now - self.last_feed),
            self.timeout,
            self.last_feed_wall.map_or("never".into(), log::timestamp),
            self.feeds,
            secs(now - self.armed_at),
        ));
        true
    }

    /// When the timer thread must look again: the deadline or the next
    /// feed summary, whichever is first (`None`: not armed).
    pub fn next_wake(&self) -> Option<Instant> {
        let d = self.deadline()?;
        Some(d.min(self.window_start + SUMMARY_EVERY))
    }

    /// Log how the device was fed since the last summary, if one is due.
    pub fn summarize(&mut self, now: Instant) {
        if self.state != State::Armed || now < self.window_start + SUMMARY_EVERY {
            return;
        }
        let since_feed = now - self.last_feed;
        let left = secs(self.time_left(now));
        if self.window_feeds > 0 {
            log::line(format_args!(
                "fed {} times in the last {} (last {} ago); fires in {left} unless fed",
                self.window_feeds,
                secs(now - self.window_start),
                secs(since_feed)
            ));
        } else {
            log::line(format_args!(
                "NOT FED for {}; fires in {left}",
                secs(since_feed)
            ));
        }
        self.window_feeds = 0;
        self.window_start = now;
    }

    /// The state file: `key=value` lines.
    pub fn status(&self, now: Instant) -> String {
        let ms = |t: Option<SystemTime>| t.map_or(String::new(), |t| log::unix_ms(t).to_string());
        format!(
            "state={}\nopen={}\ntimeout_seconds={}\ntime_left_ms={}\nfeeds={}\n\
             last_feed_unix_ms={}\nfired_unix_ms={}\n",
            self.state.name(),
            u8::from(self.opener.is_some()),
            self.timeout,
            self.time_left(now).as_millis(),
            self.feeds,
            ms(self.last_feed_wall),
            ms(self.fired_wall),
        )
    }
}

fn int(v: u32) -> Vec<u8> {
    (v.min(libc::c_int::MAX as u32) as libc::c_int)
        .to_ne_bytes()
        .to_vec()
}

fn secs(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn dev(t0: Instant) -> Device {
        Device::new(60, KERNEL_MAX_TIMEOUT, t0)
    }

    fn get(v: &[u8]) -> i32 {
        i32::from_ne_bytes(v.try_into().unwrap())
    }

    #[test]
    fn opening_arms_and_only_one_opener_at_a_time() {
        let t0 = Instant::now();
        let mut d = dev(t0);
        assert_eq!(d.state(), State::Stopped);
        assert_eq!(d.deadline(), None);
        let fh = d.open(1, t0).unwrap();
        assert_eq!(d.state(), State::Armed);
        assert_eq!(d.deadline(), Some(t0 + 60 * S));
        assert_eq!(d.open(2, t0), Err(libc::EBUSY));
        d.release(fh, t0);
        assert!(d.open(2, t0).is_ok(), "free again after the close");
    }

    #[test]
    fn a_write_feeds_and_a_v_in_the_last_write_disarms_on_close() {
        let t0 = Instant::now();
        let mut d = dev(t0);
        let fh = d.open(1, t0).unwrap();
        d.write(fh, b"\0", t0 + 50 * S).unwrap();
        assert_eq!(d.deadline(), Some(t0 + 110 * S));
        assert!(!d.expire(t0 + 109 * S));
        d.write(fh, b"V", t0 + 100 * S).unwrap();
        d.release(fh, t0 + 100 * S);
        assert_eq!(d.state(), State::Stopped);
        assert!(!d.expire(t0 + 1000 * S), "a disarmed device never fires");
    }

    #[test]
    fn a_v_followed_by_another_write_does_not_disarm() {
        let t0 = Instant::now();
        let mut d = dev(t0);
        let fh = d.open(1, t0).unwrap();
        d.write(fh, b"V", t0).unwrap();
        d.write(fh, b"\0", t0 + S).unwrap();
        d.release(fh, t0 + 2 * S);
        assert_eq!(d.state(), State::Armed);
        // The close fed it once more; then it counts down.
        assert_eq!(d.deadline(), Some(t0 + 62 * S));
        assert!(!d.expire(t0 + 61 * S));
        assert!(d.expire(t0 + 62 * S));
        assert_eq!(d.state(), State::Fired);
    }

    #[test]
    fn a_reopened_armed_device_keeps_its_deadline_until_fed() {
        let t0 = Instant::now();
        let mut d = dev(t0);
        let fh = d.open(1, t0).unwrap();
        d.release(fh, t0);
        let fh = d.open(1, t0 + 30 * S).unwrap();
        assert_eq!(d.deadline(), Some(t0 + 60 * S), "reopening does not feed");
        d.write(fh, b"x", t0 + 40 * S).unwrap();
        assert_eq!(d.deadline(), Some(t0 + 100 * S));
    }

    #[test]
    fn a_fired_device_stays_fired_and_refuses_everything() {
        let t0 = Instant::now();
        let mut d = dev(t0);
        let fh = d.open(1, t0).unwrap();
        assert!(d.expire(t0 + 60 * S));
        assert!(!d.expire(t0 + 120 * S), "fires once");
        assert_eq!(d.write(fh, b"V", t0), Err(libc::EIO));
        assert_eq!(d.ioctl(fh, WDIOC_KEEPALIVE, &[], t0), Err(libc::EIO));
        d.release(fh, t0);
        assert_eq!(d.open(1, t0), Err(libc::EIO));
        assert_eq!(d.state(), State::Fired);
    }

    #[test]
    fn settimeout_feeds_validates_and_returns_the_timeout_in_use() {
        let t0 = Instant::now();
        let mut d = Device::new(60, 120, t0);
        let fh = d.open(1, t0).unwrap();
        let set = |d: &mut Device, v: i32, at| d.ioctl(fh, WDIOC_SETTIMEOUT, &v.to_ne_bytes(), at);
        assert_eq!(get(&set(&mut d, 2, t0 + 10 * S).unwrap()), 2);
        assert_eq!(d.deadline(), Some(t0 + 12 * S), "set and fed");
        assert_eq!(get(&d.ioctl(fh, WDIOC_GETTIMEOUT, &[], t0).unwrap()), 2);
        for bad in [0, -1, 121] {
            assert_eq!(set(&mut d, bad, t0), Err(libc::EINVAL), "{bad}");
        }
        assert_eq!(d.timeout(), 2, "unchanged by refused requests");
        assert_eq!(get(&set(&mut d, 120, t0).unwrap()), 120);
        assert_eq!(
            get(&d.ioctl(fh, WDIOC_GETTIMELEFT, &[], t0 + 20 * S).unwrap()),
            100
        );
    }

    #[test]
    fn keepalive_feeds_and_unknown_requests_are_enotty() {
        let t0 = Instant::now();
        let mut d = dev(t0);
        let fh = d.open(1, t0).unwrap();
        assert_eq!(d.ioctl(fh, WDIOC_KEEPALIVE, &[], t0 + 5 * S), Ok(vec![]));
        assert_eq!(d.deadline(), Some(t0 + 65 * S));
        assert_eq!(d.ioctl(fh, 0x8004_5704, &[0; 4], t0), Err(libc::ENOTTY));
        let info = d.ioctl(fh, WDIOC_GETSUPPORT, &[], t0).unwrap();
        assert_eq!(info.len(), 40);
        assert_eq!(u32::from_ne_bytes(info[..4].try_into().unwrap()), 0x8180);
        assert!(info[8..].starts_with(IDENTITY));
    }

    #[test]
    fn the_timer_wakes_for_the_deadline_or_the_next_summary() {
        let t0 = Instant::now();
        let mut d = Device::new(5, 60, t0);
        assert_eq!(d.next_wake(), None, "not armed: nothing to wait for");
        let fh = d.open(1, t0).unwrap();
        assert_eq!(d.next_wake(), Some(t0 + 5 * S));
        d.ioctl(fh, WDIOC_SETTIMEOUT, &30i32.to_ne_bytes(), t0)
            .unwrap();
        assert_eq!(d.next_wake(), Some(t0 + SUMMARY_EVERY));
        d.summarize(t0 + SUMMARY_EVERY);
        assert_eq!(d.next_wake(), Some(t0 + 2 * SUMMARY_EVERY));
    }

    #[test]
    fn the_status_names_the_state() {
        let t0 = Instant::now();
        let mut d = dev(t0);
        assert!(d.status(t0).starts_with("state=stopped\nopen=0\n"));
        let fh = d.open(1, t0).unwrap();
        assert!(
            d.status(t0)
                .starts_with("state=armed\nopen=1\ntimeout_seconds=60\n")
        );
        d.expire(t0 + 60 * S);
        d.release(fh, t0);
        let s = d.status(t0);
        assert!(s.starts_with("state=fired\nopen=0\n"), "{s}");
        assert!(!s.contains("fired_unix_ms=\n"), "{s}");
    }
}
