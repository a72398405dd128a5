//! The agent's state across its own restarts within one boot (`--state-dir`).
//!
//! An agent restarted while its node is cut off from the API server (a
//! crash, an OOM kill, a liveness restart: the kubelet restarts containers
//! even while partitioned) must not start its schedule from scratch: the
//! leader's safe time counts from the last heartbeat it saw, not from the
//! agent's restart. So the agent keeps, in a small file, when it last had
//! genuine contact with the API server, and a restarted agent resumes from
//! there.
//!
//! The time is stored as `CLOCK_BOOTTIME` nanoseconds (monotonic, counts
//! suspend, meaningful only within one boot) together with the boot ID: a
//! file from another boot, or with an unknown boot ID, is ignored. The file
//! is replaced atomically (written to a temporary file, then renamed).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use crate::decide::agent::self_check::Previous;

/// What is kept across restarts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    boot_id: String,
    /// `CLOCK_BOOTTIME` of the last genuine API contact, in nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_api_contact_boottime_ns: Option<u64>,
    /// The agent had decided to fence its node (this boot).
    #[serde(default)]
    self_fence_decided: bool,
    /// The known peers: a restarted agent cut off from the API cannot list
    /// them, and without them an outage would look like isolation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    peers: Vec<String>,
}

/// `CLOCK_BOOTTIME` now (since boot, including suspend).
#[allow(unsafe_code)] // clock_gettime(CLOCK_BOOTTIME), which std does not offer
pub fn boottime_now() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through the pointer, which is
    // valid for the duration of the call.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if r != 0 {
        return None;
    }
    Some(Duration::new(
        u64::try_from(ts.tv_sec).ok()?,
        u32::try_from(ts.tv_nsec).ok()?,
    ))
}

/// The state file of agent `node` in `dir` (one per node name, so that agents
/// sharing a host in tests do not share it).
pub fn path(dir: &Path, node: &str) -> PathBuf {
    let safe: String = node
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!("agent-{safe}.json"))
}

/// Persist `previous` (`now` and `boottime` are the same moment on both
/// clocks), atomically.
pub fn save_at(
    file: &Path,
    previous: &Previous,
    now: Instant,
    boottime: Duration,
) -> std::io::Result<()> {
    let at = |contact: Instant| {
        let t = boottime.saturating_sub(now.saturating_duration_since(contact));
        u64::try_from(t.as_nanos()).unwrap_or(u64::MAX)
    };
    let wire = Wire {
        boot_id: previous.boot_id.clone(),
        last_api_contact_boottime_ns: previous.last_contact.map(at),
        self_fence_decided: previous.self_fence_decided,
        peers: previous.peers.clone(),
    };
    let text = serde_json::to_vec(&wire).map_err(std::io::Error::other)?;
    write_atomically(file, &text)
}

/// Replace `file` with `bytes`: written to a temporary file beside it,
/// synced, then renamed over it (a crash leaves the old or the new file,
/// never a torn one).
pub fn write_atomically(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = file.with_extension("json.tmp");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, file)
}

/// [`save_at`] now.
pub fn save(file: &Path, previous: &Previous) -> std::io::Result<()> {
    let boottime = boottime_now().ok_or_else(|| std::io::Error::other("no CLOCK_BOOTTIME"))?;
    save_at(file, previous, Instant::now(), boottime)
}

/// What an earlier agent of this boot persisted in `file`, with its times
/// as `Instant`s of this process (`now` and `boottime` being the same
/// moment; a contact older than this process's clock can represent is set
/// to the oldest instant it can). `None`: no file, unreadable, another boot
/// or an unknown boot ID (`boot_id` must be known). A contact "from the
/// future" (a garbled file) is dropped.
pub fn load_at(
    file: &Path,
    boot_id: Option<&str>,
    now: Instant,
    boottime: Duration,
) -> Option<Previous> {
    let boot_id = boot_id.filter(|b| !b.is_empty())?;
    let text = std::fs::read(file).ok()?;
    let wire: Wire = serde_json::from_slice(&text).ok()?;
    if wire.boot_id != boot_id {
        return None;
    }
    let last_contact = wire
        .last_api_contact_boottime_ns
        .and_then(|ns| boottime.checked_sub(Duration::from_nanos(ns)))
        .map(|age| {
            now.checked_sub(age)
                .unwrap_or_else(|| oldest_before(now, age))
        });
    Some(Previous {
        boot_id: wire.boot_id,
        last_contact,
        self_fence_decided: wire.self_fence_decided,
        peers: wire.peers,
    })
}

/// [`load_at`] now.
pub fn load(file: &Path, boot_id: Option<&str>) -> Option<Previous> {
    load_at(file, boot_id, Instant::now(), boottime_now()?)
}

/// The oldest `Instant` at most `age` before `now` (an `Instant` cannot
/// reach before the clock's origin).
fn oldest_before(now: Instant, age: Duration) -> Instant {
    let mut d = age;
    while d > Duration::from_millis(1) {
        d /= 2;
        if let Some(t) = now.checked_sub(d) {
            return t;
        }
    }
    now
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kf-state-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn previous(boot: &str, contact: Option<Instant>, decided: bool) -> Previous {
        Previous {
            boot_id: boot.into(),
            last_contact: contact,
            self_fence_decided: decided,
            peers: vec!["10.0.0.2:9747".into(), "no-address/n3".into()],
        }
    }

    #[test]
    fn the_last_contact_survives_a_restart_within_the_same_boot() {
        let d = dir("roundtrip");
        let file = path(&d.join("sub"), "worker-1");
        let t0 = Instant::now();
        let boot = Duration::from_secs(1_000);
        // Contact 3s before t0; saved at t0 (boottime 1000s).
        let p = previous("b1", Some(t0 - Duration::from_secs(3)), true);
        save_at(&file, &p, t0, boot).unwrap();
        // Read back by a new process 7s later, whose Instant runs 100s
        // ahead of the old one's: the contact was 10s ago.
        let t1 = t0 + Duration::from_secs(100);
        let back = load_at(&file, Some("b1"), t1, boot + Duration::from_secs(7)).unwrap();
        assert_eq!(back.last_contact, Some(t1 - Duration::from_secs(10)));
        assert!(back.self_fence_decided);
        assert_eq!(back.boot_id, "b1");
        // Another boot, an unknown boot ID, no file: nothing to resume.
        assert_eq!(load_at(&file, Some("b2"), t1, boot), None);
        assert_eq!(load_at(&file, None, t1, boot), None);
        assert_eq!(load_at(&file, Some(""), t1, boot), None);
        assert_eq!(load_at(&path(&d, "other"), Some("b1"), t1, boot), None);
        // Replaced atomically: no temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(file.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["agent-worker-1.json".to_string()]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn no_contact_yet_and_garbled_files() {
        let d = dir("garbled");
        let file = path(&d, "n");
        let t0 = Instant::now();
        save_at(
            &file,
            &previous("b", None, false),
            t0,
            Duration::from_secs(9),
        )
        .unwrap();
        let back = load_at(&file, Some("b"), t0, Duration::from_secs(9)).unwrap();
        assert_eq!(back, previous("b", None, false));
        std::fs::write(&file, "{not json").unwrap();
        assert_eq!(load_at(&file, Some("b"), t0, Duration::from_secs(5)), None);
        // A contact after "now" (garbled): dropped, the rest kept.
        std::fs::write(
            &file,
            r#"{"bootId":"b","lastApiContactBoottimeNs":9000000000,"selfFenceDecided":true}"#,
        )
        .unwrap();
        let back = load_at(&file, Some("b"), t0, Duration::from_secs(5)).unwrap();
        let written = Previous {
            peers: Vec::new(),
            ..previous("b", None, true)
        };
        assert_eq!(back, written);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn with_the_real_clocks_the_age_is_kept() {
        let d = dir("real");
        let file = path(&d, "n/../x");
        assert!(file.file_name().unwrap().to_str().unwrap() == "agent-n_.._x.json");
        let contact = Instant::now() - Duration::from_millis(200);
        save(&file, &previous("b", Some(contact), false)).unwrap();
        let back = load(&file, Some("b")).unwrap().last_contact.unwrap();
        let err = back.max(contact) - back.min(contact);
        assert!(err < Duration::from_millis(50), "{err:?}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
