//! The grantor's memory on disk (`grantor-<node>.json` in `--state-dir`):
//! its stops and a running quarantine, with this boot's ID. Times are
//! `CLOCK_BOOTTIME` nanoseconds, which keep counting across the agent's
//! restarts within a boot; a file of another boot is no memory of this one.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::decide::permit::grantor::{Memory, Stopped};

/// The memory file of the grantor of agent `node` in `dir`.
pub fn path(dir: &Path, node: &str) -> std::path::PathBuf {
    let agent = crate::agent::state_dir::path(dir, node);
    let name = agent
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("agent.json")
        .replacen("agent-", "grantor-", 1);
    dir.join(name)
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    boot_id: String,
    stops: Vec<WireStop>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    quarantined_until_boottime_ns: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireStop {
    node: String,
    /// The latest fencing number a revocation or a lift named.
    #[serde(default, skip_serializing_if = "is_zero")]
    fencing: u64,
    /// Whether that was a revocation (until a lift).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    revoked: bool,
    /// No grant under a set version below this one.
    #[serde(default, skip_serializing_if = "is_zero")]
    below_version: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What a start found.
#[derive(Debug, PartialEq, Eq)]
pub enum Loaded {
    /// The memory an earlier process of this boot saved.
    Found(Memory),
    /// No file, or one of another boot: no process of this boot saved one.
    Absent,
    /// A file that cannot be read or understood: memory lost.
    Unreadable,
}

/// Save `memory` of boot `boot_id` to `file` (`now` and `boottime` are the
/// same moment on both clocks), atomically.
pub fn save_at(
    file: &Path,
    boot_id: &str,
    memory: &Memory,
    now: Instant,
    boottime: Duration,
) -> std::io::Result<()> {
    let wire = Wire {
        boot_id: boot_id.to_string(),
        stops: memory
            .stops
            .iter()
            .map(|(node, s)| WireStop {
                node: node.clone(),
                fencing: s.fencing,
                revoked: s.revoked,
                below_version: s.below,
            })
            .collect(),
        quarantined_until_boottime_ns: memory.quarantined_until.map(|until| {
            let t = boottime.saturating_add(until.saturating_duration_since(now));
            u64::try_from(t.as_nanos()).unwrap_or(u64::MAX)
        }),
    };
    let text = serde_json::to_vec(&wire).map_err(std::io::Error::other)?;
    crate::agent::state_dir::write_atomically(file, &text)
}

/// The memory in `file` for boot `boot_id`, its quarantine as an
/// `Instant` of this process (`now` and `boottime` the same moment).
pub fn load_at(file: &Path, boot_id: &str, now: Instant, boottime: Duration) -> Loaded {
    let text = match std::fs::read(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Loaded::Absent,
        Err(_) => return Loaded::Unreadable,
    };
    let Ok(wire) = serde_json::from_slice::<Wire>(&text) else {
        return Loaded::Unreadable;
    };
    if wire.boot_id != boot_id {
        return Loaded::Absent;
    }
    let mut stops = Vec::new();
    for s in wire.stops {
        if s.revoked && s.fencing == 0 {
            // A revocation always names its fencing.
            return Loaded::Unreadable;
        }
        let stopped = Stopped {
            fencing: s.fencing,
            revoked: s.revoked,
            below: s.below_version,
        };
        stops.push((s.node, stopped));
    }
    let quarantined_until = match wire.quarantined_until_boottime_ns {
        None => None,
        Some(ns) => {
            let left = Duration::from_nanos(ns).saturating_sub(boottime);
            match now.checked_add(left) {
                Some(t) => Some(t),
                None => return Loaded::Unreadable,
            }
        }
    };
    Loaded::Found(Memory {
        stops,
        quarantined_until,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory of this test's own.
    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("kf-grantor-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn stops_and_a_running_quarantine_survive_a_restart() {
        let dir = tmp("restart");
        let file = path(&dir, "node-a");
        let t0 = Instant::now();
        let bt0 = Duration::from_secs(1000);
        let memory = Memory {
            stops: vec![
                ("b".into(), Stopped::revoked(3)),
                ("c".into(), Stopped::below(7)),
                (
                    "d".into(),
                    Stopped {
                        fencing: 2,
                        revoked: false,
                        below: 4,
                    },
                ),
            ],
            quarantined_until: Some(t0 + Duration::from_secs(40)),
        };
        save_at(&file, "boot-1", &memory, t0, bt0).unwrap();
        // A new process, 15 s later on the boot clock, with an Instant
        // origin of its own.
        let t1 = Instant::now() + Duration::from_secs(3);
        let Loaded::Found(m) = load_at(&file, "boot-1", t1, bt0 + Duration::from_secs(15)) else {
            panic!("memory lost")
        };
        assert_eq!(m.stops, memory.stops);
        assert_eq!(m.quarantined_until, Some(t1 + Duration::from_secs(25)));
    }

    #[test]
    fn a_file_of_another_boot_is_absent_and_a_garbled_one_is_lost() {
        let dir = tmp("boots");
        let file = path(&dir, "node-a");
        assert_eq!(
            load_at(&file, "boot-1", Instant::now(), Duration::ZERO),
            Loaded::Absent
        );
        let m = Memory {
            stops: vec![("b".into(), Stopped::revoked(1))],
            quarantined_until: None,
        };
        save_at(&file, "boot-1", &m, Instant::now(), Duration::ZERO).unwrap();
        assert_eq!(
            load_at(&file, "boot-2", Instant::now(), Duration::ZERO),
            Loaded::Absent
        );
        std::fs::write(
            &file,
            // A revocation without its fencing number.
            b"{\"bootId\":\"boot-1\",\"stops\":[{\"node\":\"b\",\"revoked\":true}]}",
        )
        .unwrap();
        assert_eq!(
            load_at(&file, "boot-1", Instant::now(), Duration::ZERO),
            Loaded::Unreadable
        );
        std::fs::write(&file, b"not json").unwrap();
        assert_eq!(
            load_at(&file, "boot-1", Instant::now(), Duration::ZERO),
            Loaded::Unreadable
        );
    }

    #[test]
    fn the_file_is_named_after_the_node_beside_the_agents_state() {
        let p = path(Path::new("/run/kube-fencer"), "node/1");
        assert_eq!(p, Path::new("/run/kube-fencer/grantor-node_1.json"));
    }
}
