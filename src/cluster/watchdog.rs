//! The hardware watchdog used by `--self-fence=watchdog`: opened at start
//! (the agent refuses to start without it), fed from a thread of its own
//! while the node is healthy, and no longer fed when the node must fence
//! itself, so the watchdog resets the node.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The watchdog device, fed by a thread while `feeding` is true.
pub struct Watchdog {
    feeding: Arc<AtomicBool>,
    device: Arc<Mutex<std::fs::File>>,
}

impl Watchdog {
    /// Open the device (refuse to start without it) and feed it every
    /// `period` from a thread of its own, independent of the async runtime.
    pub fn open(path: &str, period: Duration) -> Result<Self, String> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| format!("cannot open the watchdog device {path}: {e}"))?;
        let feeding = Arc::new(AtomicBool::new(true));
        let device = Arc::new(Mutex::new(file));
        let (f, d) = (feeding.clone(), device.clone());
        std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || {
                loop {
                    {
                        // Checked under the lock, so a feed can never follow
                        // the magic close written by `disarm`.
                        let mut dev = d.lock().unwrap_or_else(|p| p.into_inner());
                        if !f.load(Ordering::SeqCst) {
                            return;
                        }
                        if let Err(e) = dev.write_all(b"\0").and_then(|()| dev.flush()) {
                            tracing::error!(error = %e, "feeding the watchdog failed");
                        }
                    }
                    std::thread::sleep(period);
                }
            })
            .map_err(|e| format!("cannot start the watchdog thread: {e}"))?;
        Ok(Watchdog { feeding, device })
    }

    /// Stop feeding: the watchdog resets the node when it expires.
    pub fn stop_feeding(&self) {
        let _dev = self.device.lock().unwrap_or_else(|p| p.into_inner());
        self.feeding.store(false, Ordering::SeqCst);
    }

    /// Graceful shutdown: write the magic close character so the watchdog
    /// is disarmed (only when still feeding: a fencing must go through).
    pub fn disarm(&self) {
        let mut dev = self.device.lock().unwrap_or_else(|p| p.into_inner());
        if self.feeding.swap(false, Ordering::SeqCst) {
            let _ = dev.write_all(b"V").and_then(|()| dev.flush());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_watchdog_device_is_an_error() {
        let e = Watchdog::open("/nonexistent/watchdog", Duration::from_secs(1))
            .err()
            .expect("must fail");
        assert!(e.contains("/nonexistent/watchdog"), "{e}");
    }

    fn fed(name: &str, stop: impl FnOnce(&Watchdog)) -> Vec<u8> {
        let path = std::env::temp_dir().join(format!("kf-wd-{name}-{}", std::process::id()));
        std::fs::write(&path, "").unwrap();
        let w = Watchdog::open(path.to_str().unwrap(), Duration::from_millis(10)).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        stop(&w);
        std::thread::sleep(Duration::from_millis(200));
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
