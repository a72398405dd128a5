//! What this node can fence itself with, settled once at start from
//! `--self-fence` and what the node has: `auto` resolved against the
//! watchdog device, a watchdog's timeout read back from the device, the
//! sysrq trigger checked. The validated configuration stays as the flags
//! gave it; what start-up found is this value, handed to the self-check.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{AgentConfig, SelfFenceMode};
use crate::decide::SelfFenceAction;
use kube_fencer_watchdog::{Watchdog, WatchdogError};

/// Whether `path` is there as a device: a character device, or a file (a
/// device emulated in user space, through FUSE). Not a directory: what a
/// container runtime makes of a hostPath that is missing.
fn is_device(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_char_device() || m.is_file())
}

/// The kernel's trigger `--self-fence=sysrq-reboot` writes to.
pub const SYSRQ_TRIGGER: &str = "/proc/sysrq-trigger";

/// How this node fences itself, and the timeout it advertises.
#[derive(Clone, Debug)]
pub struct SelfFenceMeans {
    pub method: Method,
    /// What the leader is told (it derives this node's safe time from it):
    /// the device's own timeout for a watchdog, never merely the requested
    /// one; `--watchdog-timeout` otherwise (it also bounds the command).
    pub timeout: Duration,
    /// `--fencing-protocol=permit`: what the permit feeds (the self-check
    /// then fences nothing itself: `method` is `None`).
    pub permit: Option<PermitFeed>,
}

/// What the permit's feeding thread pings (`--fencing-protocol=permit`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PermitFeed {
    /// The watchdog device at this path, opened at the first ping.
    Watchdog(String),
    /// A timer in the agent that runs this command (tests).
    Exec(String),
}

#[derive(Clone, Debug)]
pub enum Method {
    /// This node cannot fence itself, so it is never fenced automatically;
    /// `unavailable` says why when `--self-fence=auto` found no watchdog.
    None {
        unavailable: Option<String>,
    },
    Watchdog(Arc<Watchdog>),
    SysrqReboot,
    Exec(String),
}

/// Why the agent must not start with the self-fencing it was given.
#[derive(Debug, thiserror::Error)]
pub enum MeansError {
    #[error(
        "--self-fence=watchdog: {0}; load a watchdog driver (a hardware one, or `modprobe softdog`), or run with --self-fence=auto to start without one"
    )]
    Watchdog(WatchdogError),
    #[error("--self-fence=sysrq-reboot: {0} is missing")]
    NoSysrq(String),
}

impl SelfFenceMeans {
    /// Open the watchdog (for `watchdog`, and `auto` if the node has one) or
    /// check the sysrq trigger.
    pub fn arm(cfg: &AgentConfig) -> Result<Self, MeansError> {
        Self::arm_with(cfg, Watchdog::open, Path::new(SYSRQ_TRIGGER))
    }

    /// [`SelfFenceMeans::arm`] with the device opening and the trigger's path given (tests).
    pub(crate) fn arm_with(
        cfg: &AgentConfig,
        open: impl FnOnce(&str, Duration) -> Result<Watchdog, WatchdogError>,
        sysrq_trigger: &Path,
    ) -> Result<Self, MeansError> {
        let requested = cfg.watchdog_timeout;
        let method = match &cfg.self_fence {
            SelfFenceMode::None => Method::None { unavailable: None },
            SelfFenceMode::SysrqReboot if !sysrq_trigger.exists() => {
                return Err(MeansError::NoSysrq(sysrq_trigger.display().to_string()));
            }
            SelfFenceMode::SysrqReboot => Method::SysrqReboot,
            SelfFenceMode::Exec(cmd) => Method::Exec(cmd.clone()),
            mode @ (SelfFenceMode::Auto | SelfFenceMode::Watchdog) => {
                match open(&cfg.watchdog_device, requested) {
                    Ok(w) => {
                        log_timeout(&cfg.watchdog_device, requested, &w);
                        return Ok(Self::with_watchdog(Arc::new(w)));
                    }
                    Err(e) if *mode == SelfFenceMode::Auto => {
                        let why = format!(
                            "--self-fence=auto found no usable watchdog ({e}); load a watchdog driver (a hardware one, or `modprobe softdog`) and restart the agent"
                        );
                        tracing::error!(device = %cfg.watchdog_device, "{why}; this node cannot fence itself and is never fenced automatically");
                        Method::None {
                            unavailable: Some(why),
                        }
                    }
                    Err(e) => return Err(MeansError::Watchdog(e)),
                }
            }
        };
        Ok(SelfFenceMeans {
            method,
            timeout: requested,
            permit: None,
        })
    }

    /// Under the permit: nothing is opened at start (opening arms the
    /// device, and the node has no permit yet); `auto` is the watchdog when
    /// the device is there.
    pub fn for_permit(cfg: &AgentConfig) -> Self {
        let device = Path::new(&cfg.watchdog_device);
        let (permit, unavailable) = match &cfg.self_fence {
            SelfFenceMode::None | SelfFenceMode::SysrqReboot => (None, None),
            SelfFenceMode::Exec(cmd) => (Some(PermitFeed::Exec(cmd.clone())), None),
            SelfFenceMode::Watchdog => (
                Some(PermitFeed::Watchdog(cfg.watchdog_device.clone())),
                None,
            ),
            SelfFenceMode::Auto if is_device(device) => (
                Some(PermitFeed::Watchdog(cfg.watchdog_device.clone())),
                None,
            ),
            SelfFenceMode::Auto => (
                None,
                Some(format!(
                    "--self-fence=auto found no watchdog device at {}; load a watchdog driver (a hardware one, or `modprobe softdog`) and restart the agent",
                    cfg.watchdog_device
                )),
            ),
        };
        SelfFenceMeans {
            method: Method::None { unavailable },
            timeout: cfg.watchdog_timeout,
            permit,
        }
    }

    /// What the advertisement names as the permit's fence.
    pub fn permit_fence(&self) -> Option<SelfFenceAction> {
        self.permit.as_ref().map(|p| match p {
            PermitFeed::Watchdog(_) => SelfFenceAction::Watchdog,
            PermitFeed::Exec(_) => SelfFenceAction::Exec,
        })
    }

    /// Fencing by `w`, advertising the timeout the device itself reported.
    pub(crate) fn with_watchdog(w: Arc<Watchdog>) -> Self {
        SelfFenceMeans {
            timeout: w.timeout(),
            method: Method::Watchdog(w),
            permit: None,
        }
    }

    /// What the advertisement and the core's settings call it.
    pub fn action(&self) -> SelfFenceAction {
        match self.method {
            Method::None { .. } => SelfFenceAction::None,
            Method::Watchdog(_) => SelfFenceAction::Watchdog,
            Method::SysrqReboot => SelfFenceAction::SysrqReboot,
            Method::Exec(_) => SelfFenceAction::Exec,
        }
    }

    /// Whether the self-check fences this node (under the permit it does
    /// not: [`SelfFenceMeans::permit`] does).
    pub fn capable(&self) -> bool {
        !matches!(self.method, Method::None { .. })
    }

    pub fn watchdog(&self) -> Option<&Arc<Watchdog>> {
        match &self.method {
            Method::Watchdog(w) => Some(w),
            _ => None,
        }
    }

    /// Why `--self-fence=auto` left this node unable to fence itself.
    pub fn unavailable(&self) -> Option<&str> {
        match &self.method {
            Method::None { unavailable } => unavailable.as_deref(),
            _ => None,
        }
    }

    /// No self-fencing (tests of the shell that do not fence).
    #[cfg(test)]
    pub(crate) fn none() -> Self {
        SelfFenceMeans {
            method: Method::None { unavailable: None },
            timeout: Duration::from_secs(10),
            permit: None,
        }
    }
}

/// Log the device's timeout against the requested one.
fn log_timeout(device: &str, requested: Duration, w: &Watchdog) {
    let h = humantime::format_duration;
    let (actual, feed_period) = (w.timeout(), w.feed_period());
    if actual > requested {
        tracing::warn!(
            requested = %h(requested),
            actual = %h(actual),
            device = %device,
            "--self-fence=watchdog: the device's timeout is longer than --watchdog-timeout; advertising the device's (pods of this node are deleted later)"
        );
    } else if actual < requested {
        tracing::warn!(
            requested = %h(requested),
            actual = %h(actual),
            device = %device,
            feed_period = %h(feed_period),
            "--self-fence=watchdog: the device's timeout is shorter than --watchdog-timeout; advertising the device's, and feeding it at a period derived from it"
        );
    } else {
        tracing::info!(timeout = %h(actual), device = %device, feed_period = %h(feed_period), "watchdog armed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::self_check::tests::cfg as agent;

    /// A regular file as the device, whose "programmed" timeout is `device_secs`.
    fn device_of(
        name: &str,
        device_secs: u32,
    ) -> impl FnOnce(&str, Duration) -> Result<Watchdog, WatchdogError> {
        let path = std::env::temp_dir().join(format!("kf-means-{name}-{}", std::process::id()));
        std::fs::write(&path, "").unwrap();
        move |_, requested| {
            let w = Watchdog::open_with(path.to_str().unwrap(), requested, |_, _| Ok(device_secs));
            let _ = std::fs::remove_file(&path);
            w
        }
    }

    fn missing(_: &str, _: Duration) -> Result<Watchdog, WatchdogError> {
        Watchdog::open("/nonexistent/watchdog", Duration::from_secs(10))
    }

    const KEYED: [&str; 4] = ["--peer-listen", "0.0.0.0:9747", "--peer-key-file", "/k"];

    #[test]
    fn under_the_permit_auto_takes_a_device_that_is_there_and_says_why_not() {
        let dir = std::env::temp_dir().join(format!("kf-permit-auto-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("watchdog");
        let means = |device: &std::path::Path| {
            let cfg = agent(&with_keys(&[
                "--fencing-protocol",
                "permit",
                "--self-fence",
                "auto",
                "--watchdog-device",
                device.to_str().unwrap(),
            ]));
            SelfFenceMeans::for_permit(&cfg)
        };
        // Not there: no permit fence, and the reason.
        let none = means(&file);
        assert!(none.permit.is_none());
        assert!(
            none.unavailable()
                .is_some_and(|w| w.contains("no watchdog device"))
        );
        // A device emulated in user space (a FUSE file, as the real-node
        // tests' watchdog) is a device too: nothing is opened yet.
        std::fs::write(&file, "").unwrap();
        let some = means(&file);
        assert_eq!(some.permit_fence(), Some(SelfFenceAction::Watchdog));
        assert!(some.unavailable().is_none());
        // A directory (what a runtime makes of a missing hostPath) is not.
        assert!(means(&dir).permit.is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn with_keys<'a>(args: &[&'a str]) -> Vec<&'a str> {
        args.iter().copied().chain(KEYED).collect()
    }

    #[test]
    fn the_advertised_timeout_is_the_devices_not_the_requested_one() {
        let cfg = agent(&with_keys(&[
            "--self-fence=watchdog",
            "--watchdog-timeout=10s",
        ]));
        let longer = SelfFenceMeans::arm_with(&cfg, device_of("longer", 30), Path::new("/"));
        let longer = longer.unwrap();
        assert_eq!(longer.action(), SelfFenceAction::Watchdog);
        assert_eq!(longer.timeout, Duration::from_secs(30));
        let shorter = SelfFenceMeans::arm_with(&cfg, device_of("shorter", 4), Path::new("/"));
        assert_eq!(shorter.unwrap().timeout, Duration::from_secs(4));
        // The flags are not rewritten.
        assert_eq!(cfg.watchdog_timeout, Duration::from_secs(10));
        assert_eq!(cfg.self_fence, SelfFenceMode::Watchdog);
    }

    #[test]
    fn auto_without_a_watchdog_cannot_fence_and_says_why() {
        let cfg = agent(&with_keys(&["--self-fence=auto"]));
        let m = SelfFenceMeans::arm_with(&cfg, missing, Path::new("/")).unwrap();
        assert!(!m.capable());
        assert_eq!(m.action(), SelfFenceAction::None);
        let why = m.unavailable().unwrap();
        assert!(why.contains("/nonexistent/watchdog"), "{why}");
        assert!(why.contains("modprobe softdog"), "{why}");
        let found = SelfFenceMeans::arm_with(&cfg, device_of("auto", 10), Path::new("/"));
        assert_eq!(found.unwrap().action(), SelfFenceAction::Watchdog);
    }

    #[test]
    fn watchdog_without_a_device_refuses_to_start() {
        let cfg = agent(&with_keys(&["--self-fence=watchdog"]));
        let e = SelfFenceMeans::arm_with(&cfg, missing, Path::new("/")).unwrap_err();
        assert!(matches!(
            e,
            MeansError::Watchdog(WatchdogError::Open { .. })
        ));
        assert!(e.to_string().contains("--self-fence=auto"), "{e}");
    }

    #[test]
    fn sysrq_needs_its_trigger_and_exec_keeps_the_requested_timeout() {
        let cfg = agent(&with_keys(&["--self-fence=sysrq-reboot"]));
        let e = SelfFenceMeans::arm_with(&cfg, missing, Path::new("/nonexistent/sysrq"));
        assert!(matches!(e, Err(MeansError::NoSysrq(p)) if p == "/nonexistent/sysrq"));
        let ok = SelfFenceMeans::arm_with(&cfg, missing, Path::new("/")).unwrap();
        assert_eq!(ok.action(), SelfFenceAction::SysrqReboot);
        let cfg = agent(&with_keys(&[
            "--self-fence=exec:/bin/true",
            "--watchdog-timeout=12s",
        ]));
        let exec = SelfFenceMeans::arm_with(&cfg, missing, Path::new("/")).unwrap();
        assert!(matches!(&exec.method, Method::Exec(c) if c == "/bin/true"));
        assert_eq!(exec.timeout, Duration::from_secs(12));
        let none = agent(&["--self-fence=none"]);
        let none = SelfFenceMeans::arm_with(&none, missing, Path::new("/")).unwrap();
        assert!(!none.capable() && none.unavailable().is_none());
    }
}
