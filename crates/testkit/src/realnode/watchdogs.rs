//! The nodes' emulated watchdog devices (`harness/fakewdog.sh build`): one
//! per node, its expiry powering the node off.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Result, anyhow, bail};

use super::teardown::stop_pid_file;
use super::{RealCluster, harness, last_line, now_ms};

impl RealCluster {
    /// The emulated watchdog device's binary (`harness/fakewdog.sh build`).
    pub fn build_fakewdog(&self) -> Result<PathBuf> {
        let path = PathBuf::from(last_line(&harness("fakewdog.sh", &["build"])?));
        if !path.is_file() {
            bail!(
                "harness/fakewdog.sh build gave no binary ({})",
                path.display()
            );
        }
        *self.fakewdog.lock().unwrap() = Some(path.clone());
        Ok(path)
    }

    /// The node's watchdog device file (DIR/wd/NODE/watchdog).
    pub fn wd_device(&self, node: &str) -> PathBuf {
        self.dir.join("wd").join(node).join("watchdog")
    }

    /// A fresh watchdog device for `node` (a reboot resets a fired
    /// watchdog): its expiry records the time in DIR/wd/NODE.fired-at and
    /// powers the node off.
    pub fn wd_start(&self, node: &str) -> Result<()> {
        let bin = self
            .fakewdog
            .lock()
            .unwrap()
            .clone()
            .ok_or_else(|| anyhow!("build_fakewdog first"))?;
        let wd = self.dir.join("wd");
        fs::create_dir_all(&wd)?;
        let _ = fs::remove_file(wd.join(format!("{node}.state")));
        let _ = fs::remove_file(wd.join(format!("{node}.fired-at")));
        let d = self.dir.display();
        let rn = self.repo.join("harness/realnode.sh");
        let on_expire = format!(
            "date +%s%3N >'{d}/wd/{node}.fired-at'; '{}' poweroff '{d}' '{node}' >>'{d}/wd/{node}.expire.log' 2>&1",
            rn.display()
        );
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(wd.join(format!("{node}.log")))?;
        let child = Command::new("setsid")
            .arg(&bin)
            .arg("--mount")
            .arg(wd.join(node))
            .args(["--timeout", "60s", "--state-file"])
            .arg(wd.join(format!("{node}.state")))
            .arg("--on-expire")
            .arg(on_expire)
            .env("KUBE_FENCER_REALNODE_NET", self.net.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        fs::write(wd.join(format!("{node}.pid")), child.id().to_string())?;
        self.watchdogs
            .lock()
            .unwrap()
            .insert(node.to_string(), child);
        for _ in 0..100 {
            if self.wd_device(node).exists() {
                return Ok(());
            }
            if let Some(c) = self.watchdogs.lock().unwrap().get_mut(node)
                && c.try_wait()?.is_some()
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let tail = fs::read_to_string(wd.join(format!("{node}.log"))).unwrap_or_default();
        eprintln!("{tail}");
        bail!(
            "fakewdog for {node} did not mount {}",
            wd.join(node).display()
        )
    }

    /// Stop the node's watchdog emulator (SIGTERM: it unmounts and exits
    /// within about 2 s) and unmount what it left.
    pub fn wd_stop(&self, node: &str) {
        let wd = self.dir.join("wd");
        stop_pid_file(&wd.join(format!("{node}.pid")));
        if let Some(mut c) = self.watchdogs.lock().unwrap().remove(node) {
            let _ = c.wait();
        }
        let mount = wd.join(node);
        let mounted = fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .contains(&format!(" {} ", mount.display()));
        if mounted {
            let _ = Command::new("umount").arg("-l").arg(&mount).status();
        }
    }

    /// A field of the node's watchdog state file (`state`, `feeds`, …).
    pub fn wd_field(&self, node: &str, key: &str) -> String {
        fs::read_to_string(self.dir.join("wd").join(format!("{node}.state")))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
            .unwrap_or_default()
    }

    /// The device is armed and was fed more than once, last within
    /// `timeout_s`.
    pub fn wd_armed_fed(&self, node: &str, timeout_s: i64) -> bool {
        let feeds: i64 = self.wd_field(node, "feeds").parse().unwrap_or(0);
        let last: Option<i64> = self.wd_field(node, "last_feed_unix_ms").parse().ok();
        self.wd_field(node, "state") == "armed"
            && feeds > 1
            && last.is_some_and(|l| now_ms() - l < timeout_s * 1000)
    }
}
