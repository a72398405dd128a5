//! The state annotation (`kube-fencer.io/state`) kept on a Node while
//! kube-fencer fences it. It is the only durable state: a new leader resumes
//! from it, and unfencing undoes exactly what it says kube-fencer did.
//!
//! The value is JSON, for example
//! `{"phase":"Fencing","fencingSince":"2026-11-21T12:00:00Z","fencedAt":null,"cordoned":true,"tainted":false,"by":"kube-fencer-abc"}`.
//! Unknown fields are ignored so that an older agent can read a newer
//! agent's record; a missing field, an unknown phase or a bad time makes the
//! record [`RecordState::Malformed`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Recorded and cordoned; waiting until the node is known fenced.
    Fencing,
    /// Known fenced: tainted (out-of-service strategy) and being recovered.
    Fenced,
}

impl Phase {
    /// Value of the phase label ([`super::PHASE_LABEL`]).
    pub fn as_label(self) -> &'static str {
        match self {
            Phase::Fencing => "fencing",
            Phase::Fenced => "fenced",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FenceRecord {
    pub phase: Phase,
    /// When fencing began (wall clock of the leader that began it).
    pub fencing_since: SystemTime,
    /// When the node was marked fenced.
    pub fenced_at: Option<SystemTime>,
    /// Whether kube-fencer cordoned the node (false: it was already cordoned).
    pub cordoned: bool,
    /// Whether kube-fencer added the out-of-service taint.
    pub tainted: bool,
    /// Identity of the agent that last wrote the record.
    pub by: String,
    /// The node's boot ID as its agent advertised it when fencing began;
    /// unfencing a Fenced node requires a different one (it rebooted).
    pub boot_id: Option<String>,
    /// Set while the storm guard holds a Fencing node back: its agent may
    /// meanwhile have taken the situation for a control-plane outage and not
    /// fenced itself. When the guard releases, the leader re-stamps
    /// `fencing_since` (and clears this) before the node may be marked
    /// fenced, so its safe time counts from the release — also for a new
    /// leader, which never saw the guard active.
    pub held_since: Option<SystemTime>,
}

/// The annotation as found on a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordState {
    Absent,
    Valid(FenceRecord),
    /// Present but unparseable: the node is left alone and an operator warned.
    Malformed(String),
}

impl RecordState {
    /// The record, when it is valid.
    pub fn valid(&self) -> Option<&FenceRecord> {
        match self {
            RecordState::Valid(r) => Some(r),
            _ => None,
        }
    }

    /// The phase of a valid record.
    pub fn phase(&self) -> Option<Phase> {
        self.valid().map(|r| r.phase)
    }
}

/// The wire form. `fencedAt` may be `null` or absent; every other field is required.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    phase: Phase,
    fencing_since: String,
    #[serde(default)]
    fenced_at: Option<String>,
    cordoned: bool,
    tainted: bool,
    by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    boot_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    held_since: Option<String>,
}

/// Parse the annotation value. Never panics.
pub fn parse(value: &str) -> RecordState {
    let wire: Wire = match serde_json::from_str(value) {
        Ok(w) => w,
        Err(e) => return RecordState::Malformed(format!("not a valid fencing record: {e}")),
    };
    let fencing_since = match parse_time(&wire.fencing_since) {
        Ok(t) => t,
        Err(e) => {
            return RecordState::Malformed(format!(
                "fencingSince {:?} is not an RFC 3339 UTC time: {e}",
                wire.fencing_since
            ));
        }
    };
    let fenced_at = match wire.fenced_at.as_deref().map(parse_time) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            return RecordState::Malformed(format!(
                "fencedAt {:?} is not an RFC 3339 UTC time: {e}",
                wire.fenced_at.unwrap_or_default()
            ));
        }
    };
    let held_since = match wire.held_since.as_deref().map(parse_time) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            return RecordState::Malformed(format!(
                "heldSince {:?} is not an RFC 3339 UTC time: {e}",
                wire.held_since.unwrap_or_default()
            ));
        }
    };
    RecordState::Valid(FenceRecord {
        phase: wire.phase,
        fencing_since,
        fenced_at,
        cordoned: wire.cordoned,
        tainted: wire.tainted,
        by: wire.by,
        boot_id: wire.boot_id,
        held_since,
    })
}

/// Render a record as the annotation value (stable JSON, RFC 3339 UTC times).
pub fn render(record: &FenceRecord) -> String {
    let wire = Wire {
        phase: record.phase,
        fencing_since: format_time(record.fencing_since),
        fenced_at: record.fenced_at.map(format_time),
        cordoned: record.cordoned,
        tainted: record.tainted,
        by: record.by.clone(),
        boot_id: record.boot_id.clone(),
        held_since: record.held_since.map(format_time),
    };
    // Serializing plain strings and booleans cannot fail.
    serde_json::to_string(&wire).unwrap_or_default()
}

fn parse_time(text: &str) -> Result<SystemTime, humantime::TimestampError> {
    humantime::parse_rfc3339(text)
}

/// The latest instant RFC 3339 can express (9999-12-31T23:59:59.999999999Z).
fn latest() -> SystemTime {
    UNIX_EPOCH + Duration::new(253_402_300_799, 999_999_999)
}

/// RFC 3339 in UTC, clamped to the representable range so it never panics.
fn format_time(time: SystemTime) -> String {
    let clamped = time.clamp(UNIX_EPOCH, latest());
    humantime::format_rfc3339(clamped).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn sample() -> FenceRecord {
        FenceRecord {
            phase: Phase::Fencing,
            fencing_since: humantime::parse_rfc3339("2026-11-21T12:00:00Z").unwrap(),
            fenced_at: None,
            cordoned: true,
            tainted: false,
            by: "kube-fencer-abc".into(),
            boot_id: None,
            held_since: None,
        }
    }

    #[test]
    fn renders_the_documented_format() {
        assert_eq!(
            render(&sample()),
            r#"{"phase":"Fencing","fencingSince":"2026-11-21T12:00:00Z","fencedAt":null,"cordoned":true,"tainted":false,"by":"kube-fencer-abc"}"#
        );
    }

    #[test]
    fn parses_the_documented_format() {
        let text = r#"{"phase":"Fencing","fencingSince":"2026-11-21T12:00:00Z","fencedAt":null,"cordoned":true,"tainted":false,"by":"kube-fencer-abc"}"#;
        assert_eq!(parse(text), RecordState::Valid(sample()));
    }

    #[test]
    fn round_trips_fenced_with_subsecond_times() {
        let r = FenceRecord {
            phase: Phase::Fenced,
            fencing_since: at(1_800_000_000) + Duration::from_nanos(123_456_789),
            fenced_at: Some(at(1_800_000_061) + Duration::from_millis(5)),
            cordoned: false,
            tainted: true,
            by: "agent \"quoted\" ü".into(),
            boot_id: Some("b".into()),
            held_since: Some(at(1_800_000_030)),
        };
        assert_eq!(parse(&render(&r)), RecordState::Valid(r));
    }

    #[test]
    fn ignores_unknown_fields() {
        let text = r#"{"phase":"Fenced","fencingSince":"2026-11-21T12:00:00Z","fencedAt":"2026-11-21T12:01:00Z","cordoned":false,"tainted":true,"by":"x","future":{"a":1}}"#;
        let RecordState::Valid(r) = parse(text) else {
            panic!("expected a valid record")
        };
        assert_eq!(r.phase, Phase::Fenced);
        assert!(r.tainted && !r.cordoned);
        assert_eq!(
            r.fenced_at,
            Some(humantime::parse_rfc3339("2026-11-21T12:01:00Z").unwrap())
        );
    }

    #[test]
    fn boot_id_is_optional_and_round_trips() {
        // Records written before boot IDs existed still parse.
        let old = r#"{"phase":"Fenced","fencingSince":"2026-11-21T12:00:00Z","fencedAt":"2026-11-21T12:01:00Z","cordoned":true,"tainted":true,"by":"x"}"#;
        assert!(matches!(parse(old), RecordState::Valid(r) if r.boot_id.is_none()));
        let mut r = sample();
        r.boot_id = Some("6f1c-boot".into());
        let text = render(&r);
        assert!(
            text.ends_with(r#","by":"kube-fencer-abc","bootId":"6f1c-boot"}"#),
            "{text}"
        );
        assert_eq!(parse(&text), RecordState::Valid(r));
    }

    #[test]
    fn held_since_is_optional_and_checked() {
        let mut r = sample();
        r.held_since = Some(humantime::parse_rfc3339("2026-11-21T12:00:30Z").unwrap());
        let text = render(&r);
        assert!(
            text.ends_with(r#","heldSince":"2026-11-21T12:00:30Z"}"#),
            "{text}"
        );
        assert_eq!(parse(&text), RecordState::Valid(r));
        let m = malformed(
            r#"{"phase":"Fencing","fencingSince":"2026-11-21T12:00:00Z","cordoned":true,"tainted":false,"by":"x","heldSince":"later"}"#,
        );
        assert!(m.contains("heldSince"), "{m}");
    }

    #[test]
    fn fenced_at_may_be_absent() {
        let text = r#"{"phase":"Fencing","fencingSince":"2026-11-21T12:00:00Z","cordoned":true,"tainted":false,"by":"x"}"#;
        assert!(matches!(parse(text), RecordState::Valid(r) if r.fenced_at.is_none()));
    }

    fn malformed(text: &str) -> String {
        match parse(text) {
            RecordState::Malformed(m) => m,
            other => panic!("expected malformed for {text:?}, got {other:?}"),
        }
    }

    #[test]
    fn rejects_missing_fields_bad_phase_and_bad_times() {
        let m = malformed(
            r#"{"phase":"Fencing","fencingSince":"2026-11-21T12:00:00Z","cordoned":true,"tainted":false}"#,
        );
        assert!(m.contains("by"), "{m}");
        let m = malformed(
            r#"{"phase":"Dead","fencingSince":"2026-11-21T12:00:00Z","cordoned":true,"tainted":false,"by":"x"}"#,
        );
        assert!(m.contains("Dead"), "{m}");
        let m = malformed(
            r#"{"phase":"Fencing","fencingSince":"yesterday","cordoned":true,"tainted":false,"by":"x"}"#,
        );
        assert!(m.contains("fencingSince") && m.contains("yesterday"), "{m}");
        let m = malformed(
            r#"{"phase":"Fenced","fencingSince":"2026-11-21T12:00:00Z","fencedAt":"2026-13-01T00:00:00Z","cordoned":true,"tainted":false,"by":"x"}"#,
        );
        assert!(m.contains("fencedAt"), "{m}");
        let m = malformed(
            r#"{"phase":"Fencing","fencingSince":"2026-11-21T12:00:00Z","cordoned":"yes","tainted":false,"by":"x"}"#,
        );
        assert!(m.contains("cordoned") || m.contains("boolean"), "{m}");
        malformed("");
        malformed("null");
        malformed("[]");
        malformed("{}");
    }

    #[test]
    fn render_never_panics_on_extreme_times() {
        let mut r = sample();
        r.fencing_since = UNIX_EPOCH - Duration::from_secs(10);
        r.fenced_at = Some(UNIX_EPOCH + Duration::from_secs(400_000_000_000));
        assert!(matches!(parse(&render(&r)), RecordState::Valid(_)));
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".*") {
            let _ = parse(&s);
        }

        #[test]
        fn parse_never_panics_on_near_records(
            phase in "(Fencing|Fenced|fenced|)",
            since in "[0-9T:\\-\\.Z+ ]{0,40}",
            extra in "[a-z\"{}:,0-9]{0,20}",
        ) {
            let s = format!(r#"{{"phase":"{phase}","fencingSince":"{since}","cordoned":true,"tainted":false,"by":"x"{extra}}}"#);
            let _ = parse(&s);
        }

        #[test]
        fn round_trips(
            fenced in any::<bool>(),
            since in 0u64..253_402_300_799,
            nanos in 0u32..1_000_000_000,
            at_secs in proptest::option::of(0u64..253_402_300_799),
            cordoned in any::<bool>(),
            tainted in any::<bool>(),
            by in ".*",
        ) {
            let r = FenceRecord {
                phase: if fenced { Phase::Fenced } else { Phase::Fencing },
                fencing_since: UNIX_EPOCH + Duration::new(since, nanos),
                fenced_at: at_secs.map(at),
                cordoned,
                tainted,
                by,
                boot_id: None,
                held_since: None,
            };
            prop_assert_eq!(parse(&render(&r)), RecordState::Valid(r));
        }
    }
}
