//! The FUSE file system: a directory holding one file, `watchdog`, backed
//! by a [`Device`], and the timer thread that fires it.
//!
//! The file is opened with `FOPEN_DIRECT_IO | FOPEN_STREAM`, so every
//! write(2) reaches the device at once (no page cache) and it has no file
//! position, like the kernel's watchdog. Its ioctls are FUSE's "restricted"
//! ioctls: the kernel copies in and out as many bytes as the request number
//! encodes, which the `WDIOC_*` numbers do.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, INodeNo, IoctlFlags, LockOwner,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen,
    ReplyWrite, ReplyXattr, Request, WriteFlags,
};

use crate::device::{Device, State};
use crate::log;

/// The name of the device file inside the mount.
pub const DEVICE_NAME: &str = "watchdog";
const DEVICE_INO: INodeNo = INodeNo(2);
const TTL: Duration = Duration::from_secs(60);

/// What the file system, the timer thread and `main` share.
pub struct Shared {
    device: Mutex<Inner>,
    wake: Condvar,
    mount: PathBuf,
    on_expire: String,
    state_file: Option<PathBuf>,
}

struct Inner {
    dev: Device,
    shutdown: bool,
}

impl Shared {
    pub fn new(
        dev: Device,
        mount: PathBuf,
        on_expire: String,
        state_file: Option<PathBuf>,
    ) -> Arc<Self> {
        Arc::new(Shared {
            device: Mutex::new(Inner {
                dev,
                shutdown: false,
            }),
            wake: Condvar::new(),
            mount,
            on_expire,
            state_file,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.device.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` on the device, then wake the timer (the deadline may have
    /// moved) and write the state file.
    fn with<R>(&self, f: impl FnOnce(&mut Device, Instant) -> R) -> R {
        let mut inner = self.lock();
        let now = Instant::now();
        let r = f(&mut inner.dev, now);
        self.persist(&inner.dev, now);
        self.wake.notify_all();
        r
    }

    /// Write the state file (if any) atomically: a temporary file renamed
    /// over it.
    fn persist(&self, dev: &Device, now: Instant) {
        let Some(path) = &self.state_file else {
            return;
        };
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        let r = std::fs::write(&tmp, dev.status(now)).and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = r {
            log::line(format_args!(
                "cannot write the state file {}: {e}",
                path.display()
            ));
        }
    }

    /// Write the initial state file.
    pub fn persist_now(&self) {
        let inner = self.lock();
        self.persist(&inner.dev, Instant::now());
    }

    /// The device's state (for the exit message).
    pub fn state(&self) -> State {
        self.lock().dev.state()
    }

    /// Stop the timer thread.
    pub fn shutdown(&self) {
        self.lock().shutdown = true;
        self.wake.notify_all();
    }

    /// The timer: fires the device when its deadline passes, logs feed
    /// summaries, and returns after [`Shared::shutdown`].
    pub fn run_timer(self: Arc<Self>) {
        let mut inner = self.lock();
        loop {
            if inner.shutdown {
                return;
            }
            let now = Instant::now();
            if inner.dev.expire(now) {
                self.persist(&inner.dev, now);
                drop(inner);
                self.run_on_expire();
                inner = self.lock();
                continue;
            }
            inner.dev.summarize(now);
            let wait = inner
                .dev
                .next_wake()
                .map_or(Duration::from_secs(3600), |t| {
                    t.saturating_duration_since(now)
                });
            inner = self
                .wake
                .wait_timeout(inner, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Run the on-expire command (`sh -c`), once, and log how it ended.
    fn run_on_expire(&self) {
        log::line(format_args!(
            "running the on-expire command: {}",
            self.on_expire
        ));
        let device = self.mount.join(DEVICE_NAME);
        let timeout = self.lock().dev.timeout();
        let child = Command::new("sh")
            .arg("-c")
            .arg(&self.on_expire)
            .env("FAKEWDOG_MOUNT", &self.mount)
            .env("FAKEWDOG_DEVICE", &device)
            .env("FAKEWDOG_TIMEOUT", timeout.to_string())
            .stdin(Stdio::null())
            .spawn();
        match child {
            Ok(mut child) => {
                let pid = child.id();
                let start = Instant::now();
                let spawned =
                    std::thread::Builder::new()
                        .name("on-expire".into())
                        .spawn(move || match child.wait() {
                            Ok(status) => log::line(format_args!(
                                "on-expire command (pid {pid}) exited after {:.3}s: {status}",
                                start.elapsed().as_secs_f64()
                            )),
                            Err(e) => log::line(format_args!(
                                "on-expire command (pid {pid}): wait failed: {e}"
                            )),
                        });
                if let Err(e) = spawned {
                    log::line(format_args!("cannot wait for the on-expire command: {e}"));
                }
            }
            Err(e) => log::line(format_args!("cannot run the on-expire command: {e}")),
        }
    }
}

/// The file system: `/` and `/watchdog`.
pub struct WatchdogFs {
    shared: Arc<Shared>,
    root: FileAttr,
    file: FileAttr,
}

impl WatchdogFs {
    pub fn new(shared: Arc<Shared>) -> Self {
        // SAFETY: getuid and getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let now = SystemTime::now();
        let attr = |ino, kind, perm, nlink| FileAttr {
            ino,
            size: 0,
            blocks: 0,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            kind,
            perm,
            nlink,
            uid,
            gid,
            rdev: 0,
            flags: 0,
            blksize: 512,
        };
        WatchdogFs {
            shared,
            root: attr(INodeNo::ROOT, FileType::Directory, 0o755, 2),
            file: attr(DEVICE_INO, FileType::RegularFile, 0o600, 1),
        }
    }

    fn attr(&self, ino: INodeNo) -> Option<&FileAttr> {
        if ino == INodeNo::ROOT {
            Some(&self.root)
        } else if ino == DEVICE_INO {
            Some(&self.file)
        } else {
            None
        }
    }
}

fn errno(e: i32) -> Errno {
    Errno::from_i32(e)
}

impl Filesystem for WatchdogFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent == INodeNo::ROOT && name == DEVICE_NAME {
            reply.entry(&TTL, &self.file, fuser::Generation(0));
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino) {
            Some(a) => reply.attr(&TTL, a),
            None => reply.error(Errno::ENOENT),
        }
    }

    /// Truncation (`echo V > watchdog` opens with `O_TRUNC`) and the like
    /// are accepted and change nothing.
    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        self.getattr(_req, ino, None, reply);
    }

    /// No extended attributes (ENOSYS: the kernel stops asking), without
    /// fuser's "not implemented" warning for every `ls -l`.
    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino != INodeNo::ROOT {
            reply.error(Errno::ENOTDIR);
            return;
        }
        let entries = [
            (INodeNo::ROOT, FileType::Directory, "."),
            (INodeNo::ROOT, FileType::Directory, ".."),
            (DEVICE_INO, FileType::RegularFile, DEVICE_NAME),
        ];
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(ino, (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn open(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if ino != DEVICE_INO {
            reply.error(Errno::EISDIR);
            return;
        }
        match self.shared.with(|d, now| d.open(req.pid(), now)) {
            Ok(fh) => reply.opened(
                FileHandle(fh),
                FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_STREAM,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        reply.error(Errno::EINVAL);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.shared.with(|d, now| d.write(fh.0, data, now)) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.shared.with(|d, now| d.release(fh.0, now));
        reply.ok();
    }

    fn ioctl(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: IoctlFlags,
        cmd: u32,
        in_data: &[u8],
        out_size: u32,
        reply: ReplyIoctl,
    ) {
        if ino != DEVICE_INO {
            reply.error(Errno::ENOTTY);
            return;
        }
        match self.shared.with(|d, now| d.ioctl(fh.0, cmd, in_data, now)) {
            Ok(out) if out.len() <= out_size as usize => reply.ioctl(0, &out),
            Ok(_) => reply.error(Errno::EFAULT),
            Err(e) => reply.error(errno(e)),
        }
    }
}
