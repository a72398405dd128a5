//! What the holder keeps across the agent's restarts within a boot, in
//! `--state-dir` (`permit-holder-NODE.json`): whether a process of this
//! boot armed the watchdog, and the credits it feeds on
//! ([`crate::decide::permit::holder::Saved`]), their send times as
//! `CLOCK_BOOTTIME` (which keeps counting across processes). A restarted
//! agent feeds on them while it renews, so a restart within the permit
//! costs the node nothing; a file of another boot, or an unreadable one, is
//! no file: nothing armed, nothing to feed on.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::agent::state_dir::{boottime_now, write_atomically};
use crate::decide::permit::GrantorSet;
use crate::decide::permit::holder::Saved;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct File {
    boot: String,
    armed: bool,
    sets: Vec<GrantorSet>,
    /// (set version, grantor, send time as boot-clock nanoseconds).
    credits: Vec<(u64, String, u64)>,
    api_credit: Option<u64>,
    credit_ms: u64,
    api_credit_ms: u64,
    watchdog_ms: u64,
}

/// The holder's file of agent `node` in `dir`.
pub fn path(dir: &Path, node: &str) -> PathBuf {
    dir.join(format!("permit-holder-{node}.json"))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// An instant as boot-clock nanoseconds (`now` and `boot_now` read
/// together).
fn to_boot(t: Instant, now: Instant, boot_now: Duration) -> u64 {
    let ago = now.saturating_duration_since(t);
    u64::try_from(boot_now.saturating_sub(ago).as_nanos()).unwrap_or(u64::MAX)
}

/// Boot-clock nanoseconds as an instant; `None` if it lies before this
/// process could name it.
fn from_boot(ns: u64, now: Instant, boot_now: Duration) -> Option<Instant> {
    let ago = boot_now.saturating_sub(Duration::from_nanos(ns));
    now.checked_sub(ago)
}

/// Save `saved` for boot `boot`, `armed` saying whether a process of this
/// boot pinged the device.
pub fn save(file: &Path, boot: &str, armed: bool, saved: &Saved) -> std::io::Result<()> {
    let boot_now = boottime_now().ok_or_else(|| std::io::Error::other("no CLOCK_BOOTTIME"))?;
    let now = Instant::now();
    let f = File {
        boot: boot.to_string(),
        armed,
        sets: saved.sets.clone(),
        credits: saved
            .credits
            .iter()
            .map(|((v, g), t)| (*v, g.clone(), to_boot(*t, now, boot_now)))
            .collect(),
        api_credit: saved.api_credit.map(|t| to_boot(t, now, boot_now)),
        credit_ms: ms(saved.credit),
        api_credit_ms: ms(saved.api_credit_duration),
        watchdog_ms: ms(saved.watchdog_timeout),
    };
    let bytes = serde_json::to_vec(&f).map_err(std::io::Error::other)?;
    write_atomically(file, &bytes)
}

/// What a process of boot `boot` saved: whether it armed, and its credits
/// (those older than this process can name are dropped: long expired).
pub fn load(file: &Path, boot: &str) -> Option<(bool, Saved)> {
    let f: File = serde_json::from_slice(&std::fs::read(file).ok()?).ok()?;
    if f.boot != boot || boot.is_empty() {
        return None;
    }
    let boot_now = boottime_now()?;
    let now = Instant::now();
    Some((
        f.armed,
        Saved {
            sets: f.sets,
            credits: f
                .credits
                .into_iter()
                .filter_map(|(v, g, ns)| Some(((v, g), from_boot(ns, now, boot_now)?)))
                .collect(),
            api_credit: f.api_credit.and_then(|ns| from_boot(ns, now, boot_now)),
            credit: Duration::from_millis(f.credit_ms),
            api_credit_duration: Duration::from_millis(f.api_credit_ms),
            watchdog_timeout: Duration::from_millis(f.watchdog_ms),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_save_comes_back_in_the_same_boot_only() {
        let dir = std::env::temp_dir().join(format!("kf-holder-{}", std::process::id()));
        let file = path(&dir, "n1");
        let now = Instant::now();
        let saved = Saved {
            sets: vec![GrantorSet::new(3, vec!["a".into(), "b".into()])],
            credits: vec![((3, "a".into()), now - Duration::from_secs(2))],
            api_credit: Some(now - Duration::from_secs(5)),
            credit: Duration::from_secs(10),
            api_credit_duration: Duration::from_secs(30),
            watchdog_timeout: Duration::from_secs(5),
        };
        save(&file, "boot-1", true, &saved).unwrap();
        let (armed, back) = load(&file, "boot-1").unwrap();
        assert!(armed);
        assert_eq!(back.sets, saved.sets);
        assert_eq!(back.credit, saved.credit);
        assert_eq!(back.watchdog_timeout, saved.watchdog_timeout);
        let ((v, g), t) = &back.credits[0];
        assert_eq!((*v, g.as_str()), (3, "a"));
        // The same instant within the clocks' reading apart.
        let diff = if *t > saved.credits[0].1 {
            *t - saved.credits[0].1
        } else {
            saved.credits[0].1 - *t
        };
        assert!(diff < Duration::from_millis(50), "{diff:?}");
        assert!(load(&file, "boot-2").is_none());
        assert!(load(&file, "").is_none());
        std::fs::write(&file, "not json").unwrap();
        assert!(load(&file, "boot-1").is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
