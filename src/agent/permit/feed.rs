//! The permit's feeding thread (`--fencing-protocol=permit`): the device
//! is pinged only while the node holds its permit, each ping with the
//! timeout [`feed_for`] allows (`min(W, (end − now)/2)` in whole seconds),
//! and checked again right after the ping — a ping delayed past its check
//! (a frozen process) is followed by an expedite at once. After the permit
//! a running device is expedited (1 s): whatever exit ping follows buys the
//! node at most that. The thread holds only the permit's end, handed over
//! by the holder's task; it does not depend on the async runtime, so a hung
//! task stops nothing that the permit's end does not already bound.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::decide::permit::holder::{self, EXPEDITED, Feed, feed_for};

/// How often the thread looks at the permit.
const TICK: Duration = Duration::from_millis(250);

/// What the thread pings.
pub trait Device: Send + Sync + 'static {
    /// Open (arm) the device if this process has not, and set its timeout,
    /// which pings it; the timeout it took.
    fn ping(&mut self, timeout: Duration) -> std::io::Result<Duration>;
    /// Called every tick (a device emulated in-process fires here).
    fn poll(&mut self, _now: Instant) {}
    /// Graceful stop (the magic close).
    fn disarm(&mut self) -> std::io::Result<()>;
}

impl Device for kube_fencer_watchdog::PermitDevice {
    fn ping(&mut self, timeout: Duration) -> std::io::Result<Duration> {
        kube_fencer_watchdog::PermitDevice::ping(self, timeout)
    }

    fn disarm(&mut self) -> std::io::Result<()> {
        kube_fencer_watchdog::PermitDevice::disarm(self)
    }
}

/// `--self-fence=exec` under the permit (tests, and sites whose command is
/// the fence): a timer in this process that runs the command once when a
/// ping's timeout runs out. Unlike a device, it stops with the process.
pub struct ExecDevice {
    command: String,
    deadline: Option<Instant>,
    fired: bool,
}

impl ExecDevice {
    pub fn new(command: &str) -> Self {
        ExecDevice {
            command: command.to_string(),
            deadline: None,
            fired: false,
        }
    }
}

impl Device for ExecDevice {
    fn ping(&mut self, timeout: Duration) -> std::io::Result<Duration> {
        if !self.fired {
            self.deadline = Some(Instant::now() + timeout);
        }
        Ok(timeout)
    }

    fn poll(&mut self, now: Instant) {
        if self.fired || self.deadline.is_none_or(|d| now < d) {
            return;
        }
        self.fired = true;
        tracing::error!(command = %self.command, "the permit's watchdog timer ran out: running the self-fence command");
        if let Err(e) = std::process::Command::new("sh")
            .arg("-c")
            .arg(&self.command)
            .env(
                "KUBE_FENCER_SELF_FENCE_REASON",
                "the permit ran out (isolated from its peers and the API server, or revoked)",
            )
            .spawn()
        {
            tracing::error!(error = %e, "cannot run the self-fence command");
        }
    }

    fn disarm(&mut self) -> std::io::Result<()> {
        self.deadline = None;
        Ok(())
    }
}

struct Shared {
    end: Option<Instant>,
    device: holder::Device,
    /// This process pinged the device.
    armed: bool,
    stopped: bool,
}

/// The feeding thread's handle.
#[derive(Clone)]
pub struct Feeder {
    shared: Arc<(Mutex<Shared>, Condvar)>,
    dev: Arc<Mutex<Box<dyn Device>>>,
}

impl std::fmt::Debug for Feeder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feeder").finish_non_exhaustive()
    }
}

impl Feeder {
    /// Feed `device`, whose timeout may be at most `watchdog`, from a
    /// thread of its own. `running`: an earlier process of this agent armed
    /// the device in this boot (it may run: with no permit, it is
    /// expedited).
    pub fn start(
        device: Box<dyn Device>,
        watchdog: Duration,
        running: bool,
        end: Option<Instant>,
    ) -> std::io::Result<Self> {
        let initially = if running {
            holder::Device::Running { timeout: watchdog }
        } else {
            holder::Device::Closed
        };
        let feeder = Feeder {
            shared: Arc::new((
                Mutex::new(Shared {
                    end,
                    device: initially,
                    armed: false,
                    stopped: false,
                }),
                Condvar::new(),
            )),
            dev: Arc::new(Mutex::new(device)),
        };
        let f = feeder.clone();
        std::thread::Builder::new()
            .name("permit-feed".into())
            .spawn(move || f.run(watchdog))?;
        Ok(feeder)
    }

    fn run(&self, watchdog: Duration) {
        let (lock, wake) = &*self.shared;
        // Said once per lapse: the line an operator looks for after a reset.
        let mut told_lapsed = false;
        loop {
            let mut shared = lock.lock().unwrap_or_else(|p| p.into_inner());
            if shared.stopped {
                return;
            }
            let mut dev = self.dev.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            dev.poll(now);
            let feed = feed_for(shared.end, now, watchdog, shared.device);
            match feed {
                Feed::Ping { timeout } => {
                    match dev.ping(timeout) {
                        Ok(took) => {
                            shared.device = holder::Device::Running { timeout: took };
                            shared.armed = true;
                            if told_lapsed {
                                told_lapsed = false;
                                tracing::warn!(
                                    "this node holds its permit again before its watchdog ran out: fed again"
                                );
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "cannot ping the watchdog device under the permit");
                        }
                    }
                    // Checked again after the ping: one that came late
                    // (the process froze in between) is expedited at once.
                    let after = feed_for(shared.end, Instant::now(), watchdog, shared.device);
                    if !matches!(after, Feed::Ping { .. }) && shared.armed {
                        let _ = dev.ping(EXPEDITED);
                        shared.device = holder::Device::Running { timeout: EXPEDITED };
                    }
                }
                Feed::Expedite => {
                    let _ = dev.ping(EXPEDITED);
                    shared.device = holder::Device::Running { timeout: EXPEDITED };
                }
                Feed::Idle => {}
            }
            if !matches!(feed, Feed::Ping { .. }) && shared.armed && !told_lapsed {
                told_lapsed = true;
                tracing::error!(
                    expedited = matches!(feed, Feed::Expedite),
                    "PERMIT LAPSED: this node holds no permit; its watchdog is no longer fed and resets it within {}s",
                    EXPEDITED.as_secs()
                );
            }
            drop(dev);
            let _ = wake.wait_timeout(shared, TICK);
        }
    }

    /// The permit now ends at `end` (`None`: no permit).
    pub fn set_end(&self, end: Option<Instant>) {
        let (lock, wake) = &*self.shared;
        lock.lock().unwrap_or_else(|p| p.into_inner()).end = end;
        wake.notify_all();
    }

    /// Whether this process pinged the device.
    pub fn armed(&self) -> bool {
        self.shared
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .armed
    }

    /// Graceful stop: no more pings, and the magic close (only once the
    /// arming was withdrawn from the permit object: nothing relies on the
    /// device any more).
    pub fn disarm(&self) -> std::io::Result<()> {
        let (lock, wake) = &*self.shared;
        let mut shared = lock.lock().unwrap_or_else(|p| p.into_inner());
        shared.stopped = true;
        shared.end = None;
        wake.notify_all();
        self.dev.lock().unwrap_or_else(|p| p.into_inner()).disarm()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device that records its pings.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<Duration>>>);

    impl Device for Recorder {
        fn ping(&mut self, timeout: Duration) -> std::io::Result<Duration> {
            self.0.lock().unwrap().push(timeout);
            Ok(timeout)
        }

        fn disarm(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn settle() {
        std::thread::sleep(TICK * 3);
    }

    #[test]
    fn no_permit_no_ping_and_a_closed_device_stays_closed() {
        let rec = Recorder::default();
        let f = Feeder::start(Box::new(rec.clone()), Duration::from_secs(5), false, None).unwrap();
        settle();
        assert!(rec.0.lock().unwrap().is_empty());
        assert!(!f.armed());
        f.disarm().unwrap();
    }

    #[test]
    fn a_permit_pings_with_at_most_half_of_what_is_left() {
        let rec = Recorder::default();
        let f = Feeder::start(Box::new(rec.clone()), Duration::from_secs(5), false, None).unwrap();
        f.set_end(Some(Instant::now() + Duration::from_secs(60)));
        settle();
        assert!(f.armed());
        let pings = rec.0.lock().unwrap().clone();
        assert!(!pings.is_empty());
        assert!(
            pings.iter().all(|p| *p == Duration::from_secs(5)),
            "{pings:?}"
        );
        // A permit ending in 5 s: pings of 2 s (half, rounded down).
        rec.0.lock().unwrap().clear();
        f.set_end(Some(Instant::now() + Duration::from_secs(5)));
        settle();
        let pings = rec.0.lock().unwrap().clone();
        assert!(pings.contains(&Duration::from_secs(2)), "{pings:?}");
        assert!(
            pings.iter().all(|p| *p <= Duration::from_secs(2)),
            "{pings:?}"
        );
        f.disarm().unwrap();
    }

    #[test]
    fn once_the_permit_is_gone_the_device_is_expedited_once() {
        let rec = Recorder::default();
        let f = Feeder::start(Box::new(rec.clone()), Duration::from_secs(5), false, None).unwrap();
        f.set_end(Some(Instant::now() + Duration::from_secs(60)));
        settle();
        rec.0.lock().unwrap().clear();
        f.set_end(None);
        settle();
        assert_eq!(rec.0.lock().unwrap().clone(), vec![EXPEDITED]);
        f.disarm().unwrap();
    }

    #[test]
    fn a_device_an_earlier_process_armed_is_expedited_without_a_permit() {
        let rec = Recorder::default();
        let f = Feeder::start(Box::new(rec.clone()), Duration::from_secs(5), true, None).unwrap();
        settle();
        assert_eq!(rec.0.lock().unwrap().clone(), vec![EXPEDITED]);
        f.disarm().unwrap();
    }

    #[test]
    fn the_exec_timer_runs_its_command_when_a_ping_runs_out() {
        let marker = std::env::temp_dir().join(format!("kf-permit-exec-{}", std::process::id()));
        let _ = std::fs::remove_file(&marker);
        let mut dev = ExecDevice::new(&format!("touch {}", marker.display()));
        dev.ping(Duration::from_secs(1)).unwrap();
        dev.poll(Instant::now());
        assert!(!dev.fired);
        dev.poll(Instant::now() + Duration::from_secs(2));
        assert!(dev.fired);
        let start = Instant::now();
        while !marker.exists() && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(marker.exists());
        let _ = std::fs::remove_file(&marker);
        // Disarmed: a ping's timeout running out fires nothing.
        let mut dev = ExecDevice::new("false");
        dev.ping(Duration::from_secs(1)).unwrap();
        dev.disarm().unwrap();
        dev.poll(Instant::now() + Duration::from_secs(2));
        assert!(!dev.fired);
    }
}
