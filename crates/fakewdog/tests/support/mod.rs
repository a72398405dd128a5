//! Runs the real `kube-fencer-fakewdog` binary on a FUSE mount of its own
//! (needs root and /dev/fuse) and drives its device with the syscalls a
//! watchdog user makes: open(2) write-only, ioctl(2) with the Linux
//! `WDIOC_*` numbers, write(2), close(2).

#![allow(dead_code)]
// The tests drive the device with raw syscalls, as a watchdog user does.
#![allow(unsafe_code)]

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// `_IOWR('W', 6, int)`, `_IOR('W', 7, int)`, `_IOR('W', 5, int)` on
/// x86_64 and aarch64 (the numbers kube-fencer's agent uses).
pub const WDIOC_SETTIMEOUT: u32 = 0xC004_5706;
pub const WDIOC_GETTIMEOUT: u32 = 0x8004_5707;
pub const WDIOC_KEEPALIVE: u32 = 0x8004_5705;
pub const WDIOC_GETTIMELEFT: u32 = 0x8004_570A;

/// One emulator: its directory (mount point, log, state file, the record
/// of its on-expire command), stopped with SIGTERM on drop.
pub struct Fakewdog {
    pub dir: PathBuf,
    pub mount: PathBuf,
    child: Option<Child>,
}

impl Fakewdog {
    /// Start it with `--timeout timeout_s` and `extra` arguments; its
    /// on-expire command appends `<unix ns> <FAKEWDOG_MOUNT>` to
    /// `DIR/fired`. Returns once `DIR/m/watchdog` is there.
    pub fn start(name: &str, timeout_s: u32, extra: &[&str]) -> Fakewdog {
        assert!(
            unsafe { libc::geteuid() } == 0,
            "these tests mount FUSE file systems: run them as root"
        );
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("fakewdog-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mount = dir.join("m");
        let log = File::create(dir.join("log")).unwrap();
        let on_expire = format!(
            "echo \"$(date +%s%N) $FAKEWDOG_MOUNT\" >> '{}'",
            dir.join("fired").display()
        );
        let child = Command::new(env!("CARGO_BIN_EXE_kube-fencer-fakewdog"))
            .arg("--mount")
            .arg(&mount)
            .arg("--on-expire")
            .arg(on_expire)
            .arg("--timeout")
            .arg(format!("{timeout_s}s"))
            .arg("--state-file")
            .arg(dir.join("state"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot start kube-fencer-fakewdog");
        let mut f = Fakewdog {
            dir,
            mount,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f.device().is_file() {
            if let Some(status) = f.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "kube-fencer-fakewdog exited at start ({status}):\n{}",
                    f.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "kube-fencer-fakewdog not ready within 10s:\n{}",
                f.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        f
    }

    pub fn device(&self) -> PathBuf {
        self.mount.join("watchdog")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// The state file as `key=value` lines.
    pub fn state(&self, key: &str) -> String {
        let s = std::fs::read_to_string(self.dir.join("state")).unwrap_or_default();
        s.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
            .unwrap_or_else(|| panic!("no {key} in the state file:\n{s}"))
    }

    /// Each run of the on-expire command: when it ran (Unix ns, its own
    /// clock) and the FAKEWDOG_MOUNT it got.
    pub fn fired(&self) -> Vec<(u128, String)> {
        let s = std::fs::read_to_string(self.dir.join("fired")).unwrap_or_default();
        s.lines()
            .map(|l| {
                let (ns, m) = l.split_once(' ').expect("ns mount");
                (ns.parse().expect("ns"), m.to_string())
            })
            .collect()
    }

    /// Wait (at most `limit`) for the on-expire command to have run.
    pub fn wait_fired(&self, limit: Duration) -> Vec<(u128, String)> {
        let deadline = Instant::now() + limit;
        loop {
            let f = self.fired();
            if !f.is_empty() {
                return f;
            }
            assert!(
                Instant::now() < deadline,
                "the watchdog did not fire within {limit:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Open the device like kube-fencer's agent (write-only).
    pub fn open(&self) -> io::Result<Wd> {
        std::fs::OpenOptions::new()
            .write(true)
            .open(self.device())
            .map(Wd)
    }

    /// Open again after a close: the kernel sends FUSE's RELEASE
    /// asynchronously, so the previous close may take a moment to count.
    pub fn reopen(&self) -> Wd {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match self.open() {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                r => return r.expect("reopen"),
            }
        }
    }

    pub fn is_mounted(&self) -> bool {
        is_mounted(&self.mount)
    }

    /// SIGTERM it and wait (at most 10 s) for it to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let threads = threads_waiting_in(child.id());
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "kube-fencer-fakewdog ignored SIGTERM for 10s; its threads wait in:\n\
                     {threads}\nits log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Fakewdog {
    fn drop(&mut self) {
        if self.child.is_some() {
            let status = self.terminate();
            if !std::thread::panicking() {
                assert!(status.success(), "exit {status}:\n{}", self.log());
            }
        }
        if self.is_mounted() {
            detach(&self.mount);
            if !std::thread::panicking() {
                panic!("still mounted after SIGTERM:\n{}", self.log());
            }
        }
        if std::thread::panicking() {
            eprintln!("--- kube-fencer-fakewdog log ---\n{}", self.log());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `comm wchan` of each thread of `pid` (where a hung process waits).
fn threads_waiting_in(pid: u32) -> String {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return String::new();
    };
    tasks
        .flatten()
        .map(|t| {
            let read = |f| std::fs::read_to_string(t.path().join(f)).unwrap_or_default();
            format!("{} {}\n", read("comm").trim(), read("wchan").trim())
        })
        .collect()
}

/// Whether `path` is a mount point (in /proc/self/mountinfo).
pub fn is_mounted(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = path.to_str().unwrap();
    info.lines().any(|l| l.split(' ').nth(4) == Some(p))
}

fn detach(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
}

/// The open device.
pub struct Wd(pub File);

impl Wd {
    fn ioctl_int(&self, cmd: u32, v: libc::c_int) -> io::Result<libc::c_int> {
        let mut v = v;
        // SAFETY: the WDIOC_* requests used here read and/or write one
        // c_int through the pointer, valid for the call.
        let r = unsafe { libc::ioctl(self.0.as_raw_fd(), cmd as _, &mut v as *mut libc::c_int) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(v)
        }
    }

    pub fn set_timeout(&self, s: libc::c_int) -> io::Result<libc::c_int> {
        self.ioctl_int(WDIOC_SETTIMEOUT, s)
    }

    pub fn get_timeout(&self) -> io::Result<libc::c_int> {
        self.ioctl_int(WDIOC_GETTIMEOUT, 0)
    }

    pub fn time_left(&self) -> io::Result<libc::c_int> {
        self.ioctl_int(WDIOC_GETTIMELEFT, 0)
    }

    pub fn keepalive(&self) -> io::Result<()> {
        self.ioctl_int(WDIOC_KEEPALIVE, 0).map(|_| ())
    }

    pub fn ioctl_raw(&self, cmd: u32) -> io::Result<()> {
        let mut buf = [0u8; 64];
        // SAFETY: a buffer larger than any size the request can encode
        // (the tests only use sizes up to 64).
        let r = unsafe { libc::ioctl(self.0.as_raw_fd(), cmd as _, buf.as_mut_ptr()) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Write `b` (the agent's feed is `b"\0"`, its magic close `b"V"`).
    pub fn write(&mut self, b: &[u8]) -> io::Result<()> {
        self.0.write_all(b).and_then(|()| self.0.flush())
    }
}

/// Now, in Unix nanoseconds (compared with the on-expire command's
/// `date +%s%N`).
pub fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

pub fn errno(r: io::Result<impl std::fmt::Debug>) -> i32 {
    r.expect_err("must fail").raw_os_error().expect("an errno")
}
