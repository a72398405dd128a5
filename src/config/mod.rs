//! Command line: [`flags`] (what clap parses) and the validated [`Config`].
//!
//! Every flag can also be given as an environment variable
//! `KUBE_FENCER_<FLAG>` (upper case, `-` → `_`). The node name, pod name and
//! namespace additionally fall back to the downward-API variables
//! `NODE_NAME`, `POD_NAME` and `POD_NAMESPACE`.
//!
//! [`Args`] is what clap parses: each value through its value parser
//! (durations, percentages, addresses, selectors, the self-fence action), so
//! a bad value is refused with clap's message naming the flag, the value and
//! what is valid. [`Args::into_config`] then only checks relations between
//! flags and the downward-API fallbacks, into a [`Config`].

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::decide::election::ElectionSettings;
use crate::decide::{MaxUnhealthy, Settings, Strategy};

mod flags;
pub use flags::{
    Args, LogFormat, MIN_LEASE_DURATION, PeerListen, StrategyArg, is_dns1123_label,
    is_dns1123_subdomain,
};

/// A rejected configuration; the message names the flag(s), value(s) and what is valid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn invalid(flag: &str, value: &str, expected: impl fmt::Display) -> ConfigError {
    ConfigError(format!(
        "invalid value '{value}' for '--{flag}': {expected}"
    ))
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Settings of the decision core.
    pub settings: Settings,
    /// Settings of leader election.
    pub election: ElectionSettings,
    pub namespace: String,
    pub leader_lease_name: String,
    pub listen: SocketAddr,
    pub dry_run: bool,
    pub log_format: LogFormat,
    pub log_level: String,
    /// `--fence-command`, when set.
    pub fence_command: Option<String>,
    pub fence_command_timeout: Duration,
    /// The agent's own side: API checks, peers, self-fencing.
    pub agent: AgentConfig,
}

/// `--self-fence`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SelfFenceMode {
    None,
    /// The watchdog if it can be used, else none (resolved at start).
    Auto,
    Watchdog,
    SysrqReboot,
    Exec(String),
}

/// As `--self-fence` takes it.
impl fmt::Display for SelfFenceMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SelfFenceMode::None => f.write_str("none"),
            SelfFenceMode::Auto => f.write_str("auto"),
            SelfFenceMode::Watchdog => f.write_str("watchdog"),
            SelfFenceMode::SysrqReboot => f.write_str("sysrq-reboot"),
            SelfFenceMode::Exec(cmd) => write!(f, "exec:{cmd}"),
        }
    }
}

/// How a node's self-fencing is proven to the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FencingProtocol {
    /// The self-check's verdict table and the leader's safe time.
    SafeTime,
    /// The permit (`docs/permits.md`): the watchdog is fed only while the
    /// node's peers (or the API server) renew its permit, and the leader
    /// revokes it.
    Permit,
}

/// Settings of the agent's self-fencing side.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub self_fence: SelfFenceMode,
    /// `--fencing-protocol`.
    pub fencing_protocol: FencingProtocol,
    pub watchdog_device: String,
    pub watchdog_timeout: Duration,
    pub api_check_interval: Duration,
    pub api_check_timeout: Duration,
    pub api_failure_threshold: u32,
    pub peer_silence_timeout: Duration,
    pub peer_listen: Option<SocketAddr>,
    pub peer_advertise: Option<String>,
    pub peer_key_file: Option<String>,
    pub peer_key_secret: Option<String>,
    pub boot_id_file: String,
    /// `--state-dir`.
    pub state_dir: std::path::PathBuf,
    /// `--peers`.
    pub static_peers: Vec<String>,
    /// `--unreachable-after` as the agent uses it: once its own kubelet's
    /// Lease has gone unrenewed this long, the leader is fencing the node,
    /// and one failed API check with silent peers is isolation (rule 5b of
    /// [`crate::decide::agent::self_fence`]).
    pub kubelet_stale_after: Duration,
}

impl Config {
    pub fn node_name(&self) -> &str {
        &self.settings.self_node
    }

    pub fn identity(&self) -> &str {
        &self.settings.identity
    }
}

/// Environment lookups used for the downward-API fallbacks (injectable for tests).
pub trait Env {
    fn var(&self, key: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.is_empty())
    }
}

impl<F: Fn(&str) -> Option<String>> Env for F {
    fn var(&self, key: &str) -> Option<String> {
        self(key)
    }
}

impl Args {
    /// Validate against the process environment.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        self.into_config_with(&ProcessEnv)
    }

    /// Validate, looking up the downward-API fallbacks in `env`.
    pub fn into_config_with(self, env: &dyn Env) -> Result<Config, ConfigError> {
        self.check_timing_limits()?;
        let node = match self.node_name.filter(|n| !n.is_empty()) {
            Some(n) => n,
            None => env.var("NODE_NAME").ok_or_else(|| {
                ConfigError(
                    "'--node-name' is required (or set NODE_NAME or KUBE_FENCER_NODE_NAME)".into(),
                )
            })?,
        };
        if !is_dns1123_subdomain(&node) {
            return Err(invalid(
                "node-name",
                &node,
                "expected a DNS-1123 subdomain (lower-case letters, digits, '-' and '.', \
                 starting and ending with a letter or digit, at most 253 characters)",
            ));
        }
        let identity = self
            .pod_name
            .filter(|n| !n.is_empty())
            .or_else(|| env.var("POD_NAME"))
            .unwrap_or_else(|| format!("kube-fencer-{node}"));
        let namespace = self
            .namespace
            .filter(|n| !n.is_empty())
            .or_else(|| env.var("POD_NAMESPACE"))
            .unwrap_or_else(|| "kube-fencer".to_string());
        if !is_dns1123_label(&namespace) {
            return Err(invalid(
                "namespace",
                &namespace,
                "expected a DNS-1123 label (lower-case letters, digits and '-', at most 63 characters)",
            ));
        }
        if self.fence_timeout < self.unreachable_after {
            return Err(ConfigError(format!(
                "'--fence-timeout' ({}) must be at least '--unreachable-after' ({})",
                humantime::format_duration(self.fence_timeout),
                humantime::format_duration(self.unreachable_after)
            )));
        }
        let self_fence = self.self_fence.clone();
        let peer_listen = self.peer_listen.0;
        let unreachable_after = self.unreachable_after;
        let peer_key_file =
            (!self.peer_key_file.trim().is_empty()).then(|| self.peer_key_file.clone());
        let peer_key_secret = (!self.peer_key_secret.trim().is_empty())
            .then(|| self.peer_key_secret.trim().to_string());
        if peer_key_file.is_some() && peer_key_secret.is_some() {
            return Err(ConfigError(
                "'--peer-key-file' and '--peer-key-secret' are both set: give one source of the peer key".into(),
            ));
        }
        if let Some(name) = &peer_key_secret
            && !is_dns1123_subdomain(name)
        {
            return Err(invalid(
                "peer-key-secret",
                name,
                "expected a Secret name (a DNS subdomain such as kube-fencer-peer-key)",
            ));
        }
        if !matches!(self_fence, SelfFenceMode::None)
            && (peer_listen.is_none() || (peer_key_file.is_none() && peer_key_secret.is_none()))
        {
            return Err(ConfigError(format!(
                "'--self-fence' ({self_fence}) needs '--peer-listen' and '--peer-key-file' or '--peer-key-secret': without peers, an API-server outage would make every node fence itself"
            )));
        }
        if self.fencing_protocol == FencingProtocol::Permit {
            if matches!(self_fence, SelfFenceMode::SysrqReboot) {
                return Err(invalid(
                    "self-fence",
                    "sysrq-reboot",
                    "with '--fencing-protocol permit' a node fences itself through a device that resets it a timeout after its last ping: watchdog or auto (exec:<command> in tests)",
                ));
            }
            let w = self.watchdog_timeout;
            if matches!(self_fence, SelfFenceMode::Watchdog | SelfFenceMode::Auto)
                && (w.subsec_nanos() != 0
                    || w < Duration::from_secs(3)
                    || w > crate::decide::permit::timings::WATCHDOG_CAP)
            {
                return Err(invalid(
                    "watchdog-timeout",
                    &humantime::format_duration(w).to_string(),
                    "with '--fencing-protocol permit': whole seconds from 3s to 30s",
                ));
            }
        }
        let agent = AgentConfig {
            self_fence,
            fencing_protocol: self.fencing_protocol,
            watchdog_device: self.watchdog_device.clone(),
            watchdog_timeout: self.watchdog_timeout,
            api_check_interval: self.api_check_interval,
            api_check_timeout: self.api_check_timeout,
            api_failure_threshold: self.api_failure_threshold,
            peer_silence_timeout: self.peer_silence_timeout,
            peer_listen,
            peer_advertise: (!self.peer_advertise.trim().is_empty())
                .then(|| self.peer_advertise.clone()),
            peer_key_file,
            peer_key_secret,
            boot_id_file: self.boot_id_file.clone(),
            state_dir: self.state_dir.clone(),
            static_peers: self
                .peers
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(String::from)
                .collect(),
            kubelet_stale_after: unreachable_after,
        };
        let settings = Settings {
            self_node: node,
            identity: identity.clone(),
            unreachable_after,
            fence_timeout: self.fence_timeout,
            healthy_after: self.healthy_after,
            max_unhealthy: self.max_unhealthy,
            node_selector: self.node_selector,
            manage_control_plane: self.manage_control_plane,
            strategy: match self.strategy {
                StrategyArg::OutOfService => Strategy::OutOfService,
                StrategyArg::DeletePods => Strategy::DeletePods,
            },
            delete_pods_with_rwo_volumes: self.delete_pods_with_rwo_volumes,
            safe_time_margin: self.safe_time_margin,
            node_heartbeat_interval: self.node_heartbeat_interval,
            burst_spread: self.burst_spread,
            fence_command: !self.fence_command.trim().is_empty(),
            fence_command_backoff: self.fence_command_backoff,
        };
        let lease_duration = self.leader_lease_duration;
        let election = ElectionSettings {
            identity,
            lease_duration,
            renew_deadline: lease_duration * 2 / 3,
            retry_period: lease_duration / 3,
        };
        Ok(Config {
            settings,
            election,
            namespace,
            leader_lease_name: self.leader_lease_name,
            listen: self.listen,
            dry_run: self.dry_run,
            log_format: self.log_format,
            log_level: self.log_level,
            fence_command: (!self.fence_command.trim().is_empty())
                .then(|| self.fence_command.clone()),
            fence_command_timeout: self.fence_command_timeout,
            agent,
        })
    }
}

impl Args {
    /// The timing values the safe time's proof covers
    /// ([`crate::decide::contract::limits`]); anything else is refused.
    fn check_timing_limits(&self) -> Result<(), ConfigError> {
        use crate::decide::contract::limits;
        let h = |d: Duration| humantime::format_duration(d).to_string();
        let at_least = |flag: &str, value: Duration, min: Duration, why: &str| {
            if value < min {
                Err(invalid(
                    flag,
                    &h(value),
                    format!("expected at least {} ({why})", h(min)),
                ))
            } else {
                Ok(())
            }
        };
        at_least(
            "api-check-timeout",
            self.api_check_timeout,
            limits::MIN_API_CHECK_TIMEOUT,
            "a shorter probe fails against a healthy API server",
        )?;
        at_least(
            "api-check-interval",
            self.api_check_interval,
            limits::MIN_API_CHECK_INTERVAL,
            "the shortest interval the safe time is proven for",
        )?;
        at_least(
            "watchdog-timeout",
            self.watchdog_timeout,
            limits::MIN_WATCHDOG_TIMEOUT,
            "watchdog devices count whole seconds",
        )?;
        at_least(
            "node-heartbeat-interval",
            self.node_heartbeat_interval,
            limits::MIN_NODE_HEARTBEAT_INTERVAL,
            "a kubelet renews its Lease at most every quarter second",
        )?;
        let least = self
            .node_heartbeat_interval
            .saturating_mul(limits::UNREACHABLE_AFTER_HEARTBEATS);
        if self.unreachable_after < least {
            return Err(ConfigError(format!(
                "invalid value '{}' for '--unreachable-after': expected at least {} ({} times '--node-heartbeat-interval' {}): shorter, a healthy node between two Lease renewals is taken for an unreachable one",
                h(self.unreachable_after),
                h(least),
                limits::UNREACHABLE_AFTER_HEARTBEATS,
                h(self.node_heartbeat_interval)
            )));
        }
        Ok(())
    }
}

impl fmt::Display for MaxUnhealthyDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            MaxUnhealthy::Percent(p) => write!(f, "{p}%"),
            MaxUnhealthy::Count(n) => write!(f, "{n}"),
        }
    }
}

/// Displays a [`MaxUnhealthy`] as the flag accepts it.
pub struct MaxUnhealthyDisplay<'a>(pub &'a MaxUnhealthy);

impl Config {
    /// Log the effective configuration (one structured line).
    pub fn log_effective(&self) {
        let s = &self.settings;
        tracing::info!(
            node = %s.self_node,
            identity = %s.identity,
            namespace = %self.namespace,
            leader_lease_name = %self.leader_lease_name,
            leader_lease_duration = %humantime::format_duration(self.election.lease_duration),
            listen = %self.listen,
            unreachable_after = %humantime::format_duration(s.unreachable_after),
            fence_timeout = %humantime::format_duration(s.fence_timeout),
            healthy_after = %humantime::format_duration(s.healthy_after),
            max_unhealthy = %MaxUnhealthyDisplay(&s.max_unhealthy),
            node_selector = %s.node_selector,
            manage_control_plane = s.manage_control_plane,
            strategy = ?s.strategy,
            delete_pods_with_rwo_volumes = s.delete_pods_with_rwo_volumes,
            fence_command = self.fence_command.as_deref().unwrap_or(""),
            safe_time_margin = %humantime::format_duration(s.safe_time_margin),
            node_heartbeat_interval = %humantime::format_duration(s.node_heartbeat_interval),
            burst_spread = %humantime::format_duration(s.burst_spread),
            self_fence = %self.agent.self_fence,
            api_check_interval = %humantime::format_duration(self.agent.api_check_interval),
            api_failure_threshold = self.agent.api_failure_threshold,
            peer_silence_timeout = %humantime::format_duration(self.agent.peer_silence_timeout),
            peer_listen = ?self.agent.peer_listen,
            dry_run = self.dry_run,
            log_format = %self.log_format,
            log_level = %self.log_level,
            "effective configuration"
        );
    }
}

#[cfg(test)]
mod tests;
