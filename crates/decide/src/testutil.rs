//! Shared fixtures for the decision core's unit tests.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::*;

/// The fixed origin of every test clock.
pub fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// Wall time at the test clock's origin (2027-01-15T08:00:00Z).
pub fn wall0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

pub fn mono(secs: u64) -> Instant {
    base() + Duration::from_secs(secs)
}

pub fn now_at(secs: u64) -> Now {
    now_after(Duration::from_secs(secs))
}

pub fn now_after(offset: Duration) -> Now {
    Now {
        mono: base() + offset,
        wall: wall0() + offset,
    }
}

pub const SELF_NODE: &str = "agent-node";

pub fn settings() -> Settings {
    Settings {
        self_node: SELF_NODE.into(),
        identity: "kube-fencer-test".into(),
        unreachable_after: Duration::from_secs(20),
        fence_timeout: Duration::from_secs(60),
        healthy_after: Duration::from_secs(30),
        max_unhealthy: MaxUnhealthy::Percent(50),
        node_selector: Selector::everything(),
        manage_control_plane: false,
        strategy: Strategy::OutOfService,
        delete_pods_with_rwo_volumes: false,
        safe_time_margin: Duration::from_secs(5),
        node_heartbeat_interval: Duration::from_secs(10),
        burst_spread: Duration::from_secs(2),
        fence_command: false,
        fence_command_backoff: Duration::from_secs(5),
    }
}

pub fn facts(name: &str) -> NodeFacts {
    NodeFacts {
        name: name.into(),
        uid: Some(format!("uid-{name}")),
        resource_version: Some("1".into()),
        labels: BTreeMap::new(),
        unschedulable: false,
        taints: Vec::new(),
        ready: Readiness::True,
        record: RecordState::Absent,
        agent: AdvertState::Valid(advert()),
        unfence_requested: false,
        addresses: vec!["10.0.0.1".into()],
        kubelet_boot_id: Some("boot-1".into()),
    }
}

/// A self-fence capable agent whose safe time (47 s with the test
/// settings: see `split_brain::mark_fenced_waits_for_the_fence_timeout_when_it_is_later`)
/// stays within the test fence timeout (60s), so the fence-timeout rule is
/// what the older scenario tests see.
pub fn advert() -> AgentAdvert {
    AgentAdvert {
        self_fence: SelfFenceAction::Exec,
        watchdog_timeout: Duration::from_secs(10),
        api_check_interval: Duration::from_secs(2),
        api_check_timeout: Duration::from_secs(1),
        api_failure_threshold: 3,
        peer_silence_timeout: Duration::from_secs(3),
        boot_id: "boot-1".into(),
        peer_address: None,
        self_fence_unavailable: None,
        kubelet_stale_after: None,
        permit_fence: None,
    }
}

/// A listed grantor set of `version` naming `peers`, each at port 9747.
pub fn listed_set(version: u64, peers: &[&str]) -> crate::permit::object::ListedSet {
    use crate::permit::object::{Grantor, ListedSet};
    ListedSet {
        version,
        grantors: peers
            .iter()
            .map(|p| Grantor {
                node: p.to_string(),
                address: format!("{p}:9747"),
            })
            .collect(),
    }
}
