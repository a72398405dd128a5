//! The agent advertisement (`kube-fencer.io/agent`): what the kube-fencer
//! agent running on a node tells the leader about itself, written on its own
//! Node while it can reach the API server.
//!
//! The leader uses it for two things: whether the node can fence *itself*
//! (and how long that takes at the latest: the [`super::safe_time`]), and the
//! node's boot ID (a node that reconnects without having rebooted stays
//! fenced, see [`super::unfence`]).
//!
//! The value is JSON, for example
//! `{"selfFence":"watchdog","watchdogTimeout":"60s","apiCheckInterval":"5s","apiCheckTimeout":"5s","apiFailureThreshold":3,"peerSilenceTimeout":"30s","bootId":"6f1c…","kubeletStaleAfter":"20s"}`.
//! Durations are humantime strings; unknown fields are ignored; anything
//! else unreadable makes the advertisement [`AdvertState::Malformed`], which
//! the leader treats exactly like no advertisement: not self-fence capable.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How an agent fences its own node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SelfFenceAction {
    /// Not capable: the node is never marked fenced on time alone.
    None,
    /// Stop feeding `/dev/watchdog`: the hardware (or softdog) resets the node.
    Watchdog,
    /// Write `b` to `/proc/sysrq-trigger`: immediate reboot.
    SysrqReboot,
    /// Run an operator-supplied command (tests; site-specific power-off).
    Exec,
}

impl SelfFenceAction {
    pub fn as_str(self) -> &'static str {
        match self {
            SelfFenceAction::None => "none",
            SelfFenceAction::Watchdog => "watchdog",
            SelfFenceAction::SysrqReboot => "sysrq-reboot",
            SelfFenceAction::Exec => "exec",
        }
    }
}

/// What an agent advertises about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentAdvert {
    pub self_fence: SelfFenceAction,
    /// Upper bound from "decided to self-fence" to "the node runs nothing":
    /// the watchdog timeout, or the exec/sysrq action's own bound.
    pub watchdog_timeout: Duration,
    /// The agent checks its API connection this often…
    pub api_check_interval: Duration,
    /// …each check taking at most this long…
    pub api_check_timeout: Duration,
    /// …and declares the API unreachable after this many failures in a row.
    pub api_failure_threshold: u32,
    /// Without an answer from a majority of its peers for this long after
    /// losing the API, the agent considers itself isolated and self-fences.
    pub peer_silence_timeout: Duration,
    /// `/proc/sys/kernel/random/boot_id` of the node when the agent started.
    pub boot_id: String,
    /// Where peers reach this agent (`host:port`).
    pub peer_address: Option<String>,
    /// Why this agent cannot fence its node although it was asked to
    /// (`--self-fence=auto` on a node without a usable watchdog).
    pub self_fence_unavailable: Option<String>,
    /// Once its own kubelet's Lease has gone unrenewed for this long, the
    /// agent takes a single failed API check with silent peers for isolation
    /// (the leader is fencing the node by then): see
    /// [`crate::agent::self_fence`]. `None` from agents that predate it (the leader
    /// then counts on the full `apiFailureThreshold` and `peerSilenceTimeout`).
    pub kubelet_stale_after: Option<Duration>,
    /// Set by an agent that fences its node through the permit protocol
    /// (`docs/permits.md`): how (`watchdog`; `exec` in tests). Such an
    /// agent advertises `selfFence: none`, so that a leader that predates
    /// the permit never counts on a safe time it does not keep; a leader
    /// that knows the permit fences the node by revoking it, once the
    /// node's permit object says it armed in the boot being fenced.
    pub permit_fence: Option<SelfFenceAction>,
}

impl AgentAdvert {
    /// Whether the agent promised to fence its own node.
    pub fn capable(&self) -> bool {
        self.self_fence != SelfFenceAction::None
    }
}

/// The annotation as found on a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdvertState {
    Absent,
    Valid(AgentAdvert),
    Malformed(String),
}

impl AdvertState {
    pub fn valid(&self) -> Option<&AgentAdvert> {
        match self {
            AdvertState::Valid(a) => Some(a),
            _ => None,
        }
    }

    /// Whether the node's agent advertised a self-fencing action.
    pub fn capable(&self) -> bool {
        self.valid().is_some_and(AgentAdvert::capable)
    }

    pub fn boot_id(&self) -> Option<&str> {
        self.valid()
            .map(|a| a.boot_id.as_str())
            .filter(|b| !b.is_empty())
    }

    /// One sentence for logs and Events about why the node cannot be
    /// trusted to fence itself.
    pub fn not_capable_because(&self) -> String {
        match self {
            AdvertState::Absent => format!(
                "no kube-fencer agent advertised itself on the node (annotation {} missing)",
                super::AGENT_ANNOTATION
            ),
            AdvertState::Malformed(why) => format!(
                "the node's {} annotation is unreadable ({why})",
                super::AGENT_ANNOTATION
            ),
            AdvertState::Valid(a) if !a.capable() => match &a.self_fence_unavailable {
                Some(why) => format!("the node's agent cannot fence it: {why}"),
                None => "the node's agent runs with --self-fence=none".to_string(),
            },
            AdvertState::Valid(_) => "the node's agent is self-fence capable".to_string(),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    self_fence: SelfFenceAction,
    watchdog_timeout: String,
    api_check_interval: String,
    api_check_timeout: String,
    api_failure_threshold: u32,
    peer_silence_timeout: String,
    #[serde(default)]
    boot_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    peer_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    self_fence_unavailable: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kubelet_stale_after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    permit_fence: Option<SelfFenceAction>,
}

/// Parse the annotation value. Never panics.
pub fn parse(value: &str) -> AdvertState {
    let wire: Wire = match serde_json::from_str(value) {
        Ok(w) => w,
        Err(e) => return AdvertState::Malformed(format!("not a valid agent advertisement: {e}")),
    };
    let d = |field: &str, text: &str| -> Result<Duration, String> {
        humantime::parse_duration(text.trim())
            .map_err(|e| format!("{field} {text:?} is not a duration: {e}"))
    };
    let parsed = (|| {
        Ok::<_, String>(AgentAdvert {
            self_fence: wire.self_fence,
            watchdog_timeout: d("watchdogTimeout", &wire.watchdog_timeout)?,
            api_check_interval: d("apiCheckInterval", &wire.api_check_interval)?,
            api_check_timeout: d("apiCheckTimeout", &wire.api_check_timeout)?,
            api_failure_threshold: wire.api_failure_threshold,
            peer_silence_timeout: d("peerSilenceTimeout", &wire.peer_silence_timeout)?,
            boot_id: wire.boot_id.clone(),
            peer_address: wire.peer_address.clone(),
            self_fence_unavailable: wire.self_fence_unavailable.clone(),
            kubelet_stale_after: wire
                .kubelet_stale_after
                .as_deref()
                .map(|t| d("kubeletStaleAfter", t))
                .transpose()?,
            permit_fence: wire.permit_fence.filter(|a| *a != SelfFenceAction::None),
        })
    })();
    match parsed {
        Ok(a) if a.api_failure_threshold == 0 => {
            AdvertState::Malformed("apiFailureThreshold must be at least 1".into())
        }
        Ok(a) => AdvertState::Valid(a),
        Err(e) => AdvertState::Malformed(e),
    }
}

/// Render an advertisement as the annotation value.
pub fn render(a: &AgentAdvert) -> String {
    let f = |d: Duration| humantime::format_duration(d).to_string();
    let wire = Wire {
        self_fence: a.self_fence,
        watchdog_timeout: f(a.watchdog_timeout),
        api_check_interval: f(a.api_check_interval),
        api_check_timeout: f(a.api_check_timeout),
        api_failure_threshold: a.api_failure_threshold,
        peer_silence_timeout: f(a.peer_silence_timeout),
        boot_id: a.boot_id.clone(),
        peer_address: a.peer_address.clone(),
        self_fence_unavailable: a.self_fence_unavailable.clone(),
        kubelet_stale_after: a.kubelet_stale_after.map(f),
        permit_fence: a.permit_fence,
    };
    serde_json::to_string(&wire).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub fn sample() -> AgentAdvert {
        AgentAdvert {
            self_fence: SelfFenceAction::Watchdog,
            watchdog_timeout: Duration::from_secs(60),
            api_check_interval: Duration::from_secs(5),
            api_check_timeout: Duration::from_secs(5),
            api_failure_threshold: 3,
            peer_silence_timeout: Duration::from_secs(30),
            boot_id: "6f1c2d3e-0000-4000-8000-000000000001".into(),
            peer_address: None,
            self_fence_unavailable: None,
            kubelet_stale_after: Some(Duration::from_secs(20)),
            permit_fence: None,
        }
    }

    #[test]
    fn a_node_without_a_usable_watchdog_says_why_it_cannot_be_fenced() {
        let mut a = sample();
        a.self_fence = SelfFenceAction::None;
        a.self_fence_unavailable = Some("no usable watchdog (no /dev/watchdog)".into());
        let text = render(&a);
        assert!(text.contains("\"selfFenceUnavailable\""), "{text}");
        let back = parse(&text);
        assert_eq!(back, AdvertState::Valid(a));
        assert!(!back.capable());
        let why = back.not_capable_because();
        assert!(why.contains("no /dev/watchdog"), "{why}");
        // Without a reason the field is left out.
        assert!(!render(&sample()).contains("selfFenceUnavailable"));
    }

    #[test]
    fn renders_the_documented_format() {
        assert_eq!(
            render(&sample()),
            r#"{"selfFence":"watchdog","watchdogTimeout":"1m","apiCheckInterval":"5s","apiCheckTimeout":"5s","apiFailureThreshold":3,"peerSilenceTimeout":"30s","bootId":"6f1c2d3e-0000-4000-8000-000000000001","kubeletStaleAfter":"20s"}"#
        );
    }

    #[test]
    fn an_advertisement_without_kubelet_stale_after_is_an_older_agent() {
        // Agents that predate the field: valid, and the leader counts on
        // their full failure threshold and silence timeout.
        let mut a = sample();
        a.kubelet_stale_after = None;
        let text = render(&a);
        assert!(!text.contains("kubeletStaleAfter"), "{text}");
        assert_eq!(parse(&text), AdvertState::Valid(a));
        let bad = render(&sample()).replace("\"20s\"", "\"soon\"");
        assert!(
            matches!(parse(&bad), AdvertState::Malformed(ref e) if e.contains("kubeletStaleAfter")),
            "{bad}"
        );
    }

    #[test]
    fn round_trips_every_action() {
        for action in [
            SelfFenceAction::None,
            SelfFenceAction::Watchdog,
            SelfFenceAction::SysrqReboot,
            SelfFenceAction::Exec,
        ] {
            let mut a = sample();
            a.self_fence = action;
            a.api_check_interval = Duration::from_millis(1500);
            a.peer_address = Some("10.0.0.7:9747".into());
            assert_eq!(parse(&render(&a)), AdvertState::Valid(a.clone()));
            assert_eq!(a.capable(), action != SelfFenceAction::None);
        }
    }

    #[test]
    fn a_permit_agent_is_not_capable_for_a_leader_reading_only_the_safe_time() {
        let mut a = sample();
        a.self_fence = SelfFenceAction::None;
        a.permit_fence = Some(SelfFenceAction::Watchdog);
        let text = render(&a);
        assert!(
            text.contains(r#""selfFence":"none""#) && text.contains(r#""permitFence":"watchdog""#),
            "{text}"
        );
        let st = parse(&text);
        assert_eq!(st, AdvertState::Valid(a.clone()));
        assert!(!st.capable());
        // `none` names no permit fence; an older agent names none at all.
        let none = text.replace(r#""permitFence":"watchdog""#, r#""permitFence":"none""#);
        assert_eq!(parse(&none).valid().unwrap().permit_fence, None);
        assert!(!render(&sample()).contains("permitFence"));
    }

    #[test]
    fn unknown_fields_are_ignored_and_boot_id_is_optional() {
        let s = r#"{"selfFence":"exec","watchdogTimeout":"2s","apiCheckInterval":"1s","apiCheckTimeout":"1s","apiFailureThreshold":2,"peerSilenceTimeout":"3s","future":1}"#;
        let st = parse(s);
        assert!(st.capable());
        assert_eq!(st.boot_id(), None);
    }

    #[test]
    fn malformed_is_not_capable() {
        for s in [
            "",
            "{}",
            "null",
            r#"{"selfFence":"magic","watchdogTimeout":"2s","apiCheckInterval":"1s","apiCheckTimeout":"1s","apiFailureThreshold":2,"peerSilenceTimeout":"3s"}"#,
            r#"{"selfFence":"exec","watchdogTimeout":"soon","apiCheckInterval":"1s","apiCheckTimeout":"1s","apiFailureThreshold":2,"peerSilenceTimeout":"3s"}"#,
            r#"{"selfFence":"exec","watchdogTimeout":"2s","apiCheckInterval":"1s","apiCheckTimeout":"1s","apiFailureThreshold":0,"peerSilenceTimeout":"3s"}"#,
        ] {
            let st = parse(s);
            assert!(matches!(st, AdvertState::Malformed(_)), "{s}: {st:?}");
            assert!(!st.capable());
            assert!(st.not_capable_because().contains("unreadable"));
        }
        assert!(!AdvertState::Absent.capable());
        assert!(
            AdvertState::Absent
                .not_capable_because()
                .contains("no kube-fencer agent")
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".*") {
            let _ = parse(&s);
        }
    }
}
