//! Timestamped lines on stderr: every arm, disarm and fire, the first feed
//! and periodic feed summaries. Also a `log` backend for fuser's own
//! warnings.

use std::time::{SystemTime, UNIX_EPOCH};

/// Print one line, `2026-12-02T09:55:00.123Z fakewdog: MESSAGE`, to stderr
/// (with `eprintln!`, so that unit tests capture it).
pub fn line(msg: impl std::fmt::Display) {
    eprintln!("{} fakewdog: {msg}", timestamp(SystemTime::now()));
}

/// `t` as an RFC 3339 UTC timestamp with milliseconds.
pub fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Milliseconds since the Unix epoch (for the state file).
pub fn unix_ms(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()
}

/// Year, month, day of the `z`th day after 1970-01-01 (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m as u32, d as u32)
}

/// Forwards fuser's warnings and errors (unexpected requests, mount
/// trouble) to [`line`].
struct FuserLog;

impl log::Log for FuserLog {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            line(format_args!("fuser {}: {}", r.level(), r.args()));
        }
    }
    fn flush(&self) {}
}

/// Install [`FuserLog`] as the `log` backend.
pub fn install_fuser_log() {
    static LOGGER: FuserLog = FuserLog;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Warn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_utc_rfc3339_with_milliseconds() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_000_000_000_123);
        assert_eq!(timestamp(t), "2001-09-09T01:46:40.123Z");
        // A leap day and the last second of a year.
        assert_eq!(
            timestamp(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            timestamp(UNIX_EPOCH + Duration::from_secs(1_798_761_599)),
            "2026-12-31T23:59:59.000Z"
        );
    }
}
