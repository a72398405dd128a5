//! The flags as clap parses them: [`Args`], each value through its value
//! parser (durations, percentages, addresses, selectors, the self-fence
//! action), so a bad value is refused with clap's message naming the flag,
//! the value and what is valid.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use super::SelfFenceMode;
use crate::decide::{MaxUnhealthy, Selector};

/// Smallest accepted `--leader-lease-duration`: the leader renews every third
/// of it, and must step down well before it runs out.
pub const MIN_LEASE_DURATION: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StrategyArg {
    /// Taint the fenced node `node.kubernetes.io/out-of-service` and force-delete its StatefulSet pods.
    OutOfService,
    /// Only force-delete the fenced node's StatefulSet pods.
    DeletePods,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// kube-fencer: confirms a Kubernetes node is down, fences it, and recovers
/// its StatefulSet pods on healthy nodes.
///
/// Runs as a DaemonSet; one agent (elected through a Lease) acts, the others
/// stand by.
#[derive(Clone, Debug, Parser)]
#[command(name = "kube-fencer", version, about, long_about = None)]
pub struct Args {
    /// Name of the node this agent runs on (falls back to env NODE_NAME). Required.
    #[arg(long, env = "KUBE_FENCER_NODE_NAME", value_name = "NODE")]
    pub node_name: Option<String>,

    /// Identity in leader election and records (falls back to env POD_NAME, then kube-fencer-<node>).
    #[arg(long, env = "KUBE_FENCER_POD_NAME", value_name = "NAME")]
    pub pod_name: Option<String>,

    /// Namespace of the leader Lease and of the agent (falls back to env POD_NAMESPACE, then kube-fencer).
    #[arg(long, env = "KUBE_FENCER_NAMESPACE", value_name = "NAMESPACE")]
    pub namespace: Option<String>,

    /// Name of the coordination.k8s.io Lease used for leader election.
    #[arg(
        long,
        env = "KUBE_FENCER_LEADER_LEASE_NAME",
        default_value = "kube-fencer-leader",
        value_name = "NAME",
        value_parser = dns_subdomain,
    )]
    pub leader_lease_name: String,

    /// Leader Lease duration; the leader renews every third of it and steps
    /// down after failing to renew for two thirds of it. At least 3s.
    #[arg(
        long,
        env = "KUBE_FENCER_LEADER_LEASE_DURATION",
        default_value = "12s",
        value_name = "DURATION",
        value_parser = lease_duration,
    )]
    pub leader_lease_duration: Duration,

    /// Address of the /metrics, /healthz and /readyz endpoints.
    #[arg(
        long,
        env = "KUBE_FENCER_LISTEN",
        default_value = "0.0.0.0:9746",
        value_name = "ADDR",
        value_parser = listen_address,
    )]
    pub listen: SocketAddr,

    /// A node whose Lease was not seen renewed for this long is suspect.
    #[arg(
        long,
        env = "KUBE_FENCER_UNREACHABLE_AFTER",
        default_value = "20s",
        value_name = "DURATION",
        value_parser = positive_duration,
    )]
    pub unreachable_after: Duration,

    /// Time after a node's last observed heartbeat by which it must have
    /// stopped; only then is it tainted and are its pods deleted
    /// (must be at least --unreachable-after).
    #[arg(
        long,
        env = "KUBE_FENCER_FENCE_TIMEOUT",
        default_value = "40s",
        value_name = "DURATION",
        value_parser = positive_duration,
    )]
    pub fence_timeout: Duration,

    /// A fenced node must renew its Lease and be Ready this long before it is unfenced.
    #[arg(
        long,
        env = "KUBE_FENCER_HEALTHY_AFTER",
        default_value = "30s",
        value_name = "DURATION",
        value_parser = positive_duration,
    )]
    pub healthy_after: Duration,

    /// Storm guard: fence nothing new while more managed nodes than this are
    /// unhealthy. A percentage (1%–100%) or an absolute count (≥ 1).
    #[arg(
        long,
        env = "KUBE_FENCER_MAX_UNHEALTHY",
        default_value = "40%",
        value_name = "PERCENT|COUNT",
        value_parser = parse_max_unhealthy,
    )]
    pub max_unhealthy: MaxUnhealthy,

    /// Only nodes matching this label selector are managed (empty: all).
    #[arg(
        long,
        env = "KUBE_FENCER_NODE_SELECTOR",
        default_value = "",
        value_name = "SELECTOR",
        value_parser = node_selector,
    )]
    pub node_selector: Selector,

    /// Also manage control-plane nodes.
    #[arg(long, env = "KUBE_FENCER_MANAGE_CONTROL_PLANE")]
    pub manage_control_plane: bool,

    /// What to do once a node is fenced.
    #[arg(
        long,
        env = "KUBE_FENCER_STRATEGY",
        value_enum,
        default_value = "out-of-service"
    )]
    pub strategy: StrategyArg,

    /// Also force-delete pods that mount ReadWriteOnce(Pod) volumes.
    #[arg(long, env = "KUBE_FENCER_DELETE_PODS_WITH_RWO_VOLUMES")]
    pub delete_pods_with_rwo_volumes: bool,

    /// Decide and report (logs, metrics, Events saying "would …") but fence,
    /// delete and unfence nothing: the only writes are the leader Lease, Events
    /// and this agent's advertisement on its own Node.
    #[arg(long, env = "KUBE_FENCER_DRY_RUN")]
    pub dry_run: bool,

    /// External fencing: a command the leader runs (`sh -c`) to power a node
    /// off, with NODE_NAME, NODE_ADDRESS (first address) and NODE_ADDRESSES
    /// (space-separated) in its environment. Exit 0 means "powered off": the
    /// node is marked fenced at once. Empty: no external fencing.
    #[arg(
        long,
        env = "KUBE_FENCER_FENCE_COMMAND",
        default_value = "",
        value_name = "COMMAND"
    )]
    pub fence_command: String,

    /// The fence command is killed and counted as failed after this long.
    #[arg(
        long,
        env = "KUBE_FENCER_FENCE_COMMAND_TIMEOUT",
        default_value = "30s",
        value_name = "DURATION",
        value_parser = positive_duration,
    )]
    pub fence_command_timeout: Duration,

    /// Delay before retrying a failed fence command; doubles per attempt (at most 5m).
    #[arg(
        long,
        env = "KUBE_FENCER_FENCE_COMMAND_BACKOFF",
        default_value = "5s",
        value_name = "DURATION",
        value_parser = positive_duration,
    )]
    pub fence_command_backoff: Duration,

    /// Added to every node's safe time (covers watch and reconcile latency
    /// and clock-rate drift).
    #[arg(
        long,
        env = "KUBE_FENCER_SAFE_TIME_MARGIN",
        default_value = "5s",
        value_name = "DURATION",
        value_parser = any_duration,
    )]
    pub safe_time_margin: Duration,

    /// Nodes that fail within this long of each other count as failing at
    /// once for the storm guard: no node is powered off by --fence-command
    /// or marked fenced until it has been suspect for
    /// --node-heartbeat-interval (Leases renew at different phases) plus
    /// this, so every node of a burst is counted first. 0s allowed.
    #[arg(
        long,
        env = "KUBE_FENCER_BURST_SPREAD",
        default_value = "2s",
        value_name = "DURATION",
        value_parser = any_duration,
    )]
    pub burst_spread: Duration,

    /// The kubelets' node Lease renewal interval (a quarter of the kubelet's
    /// nodeLeaseDurationSeconds, 40s by default): a node may be cut off up
    /// to this long after its last renewal, so it is a term of the safe time.
    #[arg(
        long,
        env = "KUBE_FENCER_NODE_HEARTBEAT_INTERVAL",
        default_value = "10s",
        value_name = "DURATION",
        value_parser = positive_duration,
    )]
    pub node_heartbeat_interval: Duration,

    /// How this agent fences its own node when it must:
    /// none | auto | watchdog | sysrq-reboot | exec:<command>. `auto` is
    /// `watchdog` when --watchdog-device opens and reports its timeout, else
    /// `none` — said loudly (a Warning Event on the Node, the metric
    /// kube_fencer_self_fence_capable 0, and the advertisement's reason).
    /// Without a self-fence action (and without --fence-command) the leader
    /// never marks this node fenced.
    #[arg(
        long,
        env = "KUBE_FENCER_SELF_FENCE",
        default_value = "none",
        value_name = "ACTION",
        value_parser = parse_self_fence,
    )]
    pub self_fence: SelfFenceMode,

    /// How this node's self-fencing is proven to the leader: safe-time (the
    /// self-check's verdicts and the leader's safe time) or permit (the
    /// watchdog fed only while the node's peers or the API server renew
    /// its permit, which the leader revokes to fence it; docs/permits.md).
    /// Every agent of a cluster should run the same.
    #[arg(
        long,
        env = "KUBE_FENCER_FENCING_PROTOCOL",
        default_value = "safe-time",
        value_name = "PROTOCOL",
        value_enum
    )]
    pub fencing_protocol: super::FencingProtocol,

    /// Watchdog device opened with --self-fence=watchdog.
    #[arg(
        long,
        env = "KUBE_FENCER_WATCHDOG_DEVICE",
        default_value = "/dev/watchdog",
        value_name = "PATH"
    )]
    pub watchdog_device: String,

    /// Upper bound from deciding to self-fence to the node running nothing:
    /// the watchdog's timeout, or the time the sysrq/exec action may take.
    #[arg(
        long,
        env = "KUBE_FENCER_WATCHDOG_TIMEOUT",
        default_value = "10s",
        value_name = "DURATION",
        value_parser = positive_duration,
    )]
    pub watchdog_timeout: Duration,

    /// The agent checks that it reaches the API server this often.
    #[arg(
        long,
        env = "KUBE_FENCER_API_CHECK_INTERVAL",
        default_value = "5s",
        value_name = "DURATION",
        value_parser = positive_duration,
    )]
    pub api_check_interval: Duration,

    /// One API check (a /readyz probe) fails after this long.
    #[arg(
        long,
        env = "KUBE_FENCER_API_CHECK_TIMEOUT",
        default_value = "2s",
        value_name = "DURATION",
        value_parser = positive_duration,
    )]
    pub api_check_timeout: Duration,

    /// The API is declared unreachable after this many failed checks in a row.
    #[arg(
        long,
        env = "KUBE_FENCER_API_FAILURE_THRESHOLD",
        default_value_t = 3,
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub api_failure_threshold: u32,

    /// With the API unreachable and no answer from a majority of peers for
    /// this long, the agent considers its node isolated and self-fences.
    #[arg(
        long,
        env = "KUBE_FENCER_PEER_SILENCE_TIMEOUT",
        default_value = "10s",
        value_name = "DURATION",
        value_parser = positive_duration,
    )]
    pub peer_silence_timeout: Duration,

    /// Address of the peer endpoint (host port in the DaemonSet). Empty: no peer endpoint.
    #[arg(
        long,
        env = "KUBE_FENCER_PEER_LISTEN",
        default_value = "0.0.0.0:9747",
        value_name = "ADDR",
        value_parser = peer_listen,
    )]
    pub peer_listen: PeerListen,

    /// Address peers reach this agent at; default: the Node's InternalIP
    /// and the --peer-listen port (or --peer-listen itself when it names a host).
    #[arg(
        long,
        env = "KUBE_FENCER_PEER_ADVERTISE",
        default_value = "",
        value_name = "ADDR"
    )]
    pub peer_advertise: String,

    /// File holding the shared peer key (HMAC-SHA256; at least 16 bytes).
    /// A self-fence action needs this or --peer-key-secret.
    #[arg(
        long,
        env = "KUBE_FENCER_PEER_KEY_FILE",
        default_value = "",
        value_name = "PATH"
    )]
    pub peer_key_file: String,

    /// Secret (in the agent's namespace, data key `key`) holding the shared
    /// peer key; the first agent that finds none creates it with a random
    /// key. Cached in --state-dir for restarts while the API is out of reach.
    #[arg(
        long,
        env = "KUBE_FENCER_PEER_KEY_SECRET",
        default_value = "",
        value_name = "NAME"
    )]
    pub peer_key_secret: String,

    /// Fixed peer addresses (host:port, comma-separated) instead of
    /// discovering them from the other Nodes' advertisements.
    #[arg(
        long,
        env = "KUBE_FENCER_PEERS",
        default_value = "",
        value_name = "ADDRS"
    )]
    pub peers: String,

    /// File with the node's boot ID (re-read at every API check).
    #[arg(
        long,
        env = "KUBE_FENCER_BOOT_ID_FILE",
        default_value = "/proc/sys/kernel/random/boot_id",
        value_name = "PATH"
    )]
    pub boot_id_file: String,

    /// Directory for the agent's state across its own restarts within one
    /// boot (the last genuine API contact, with the boot ID), so that an
    /// agent restarted while its node is cut off resumes its schedule
    /// instead of starting from scratch. Must be an absolute path; the
    /// privileged DaemonSet mounts a hostPath (tmpfs: /run) here.
    #[arg(
        long,
        env = "KUBE_FENCER_STATE_DIR",
        default_value = "/run/kube-fencer",
        value_name = "PATH",
        value_parser = state_dir,
    )]
    pub state_dir: std::path::PathBuf,

    /// Log output format.
    #[arg(
        long,
        env = "KUBE_FENCER_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// Log level or tracing filter directive (RUST_LOG overrides it).
    #[arg(
        long,
        env = "KUBE_FENCER_LOG_LEVEL",
        default_value = "info",
        value_name = "LEVEL",
        value_parser = log_level,
    )]
    pub log_level: String,
}

// Value parsers: each flag's value is checked where clap reads it, and its
// error ("invalid value 'X' for '--flag <VALUE>': expected …") names the
// flag, the value and what is valid. `into_config` only checks relations
// between flags and the fallbacks clap cannot see.

fn parse_self_fence(value: &str) -> Result<SelfFenceMode, String> {
    let v = value.trim();
    Ok(match v {
        "none" | "" => SelfFenceMode::None,
        "auto" => SelfFenceMode::Auto,
        "watchdog" => SelfFenceMode::Watchdog,
        "sysrq-reboot" => SelfFenceMode::SysrqReboot,
        _ => match v.strip_prefix("exec:") {
            Some(cmd) if !cmd.trim().is_empty() => SelfFenceMode::Exec(cmd.to_string()),
            _ => {
                return Err("expected none, auto, watchdog, sysrq-reboot or exec:<command>".into());
            }
        },
    })
}

/// `--state-dir`: an absolute path.
fn state_dir(value: &str) -> Result<std::path::PathBuf, String> {
    let path = std::path::PathBuf::from(value.trim());
    if !path.is_absolute() {
        return Err("expected an absolute directory path such as /run/kube-fencer".into());
    }
    Ok(path)
}

/// A duration, zero allowed.
fn any_duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value.trim())
        .map_err(|_| "expected a duration such as 2s (0s allowed)".to_string())
}

fn positive_duration(value: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(value.trim())
        .map_err(|_| "expected a duration such as 20s or 1m30s".to_string())?;
    if d.is_zero() {
        return Err("expected a duration greater than zero, such as 20s or 1m30s".into());
    }
    Ok(d)
}

/// `--leader-lease-duration`: at least [`MIN_LEASE_DURATION`].
fn lease_duration(value: &str) -> Result<Duration, String> {
    let d = positive_duration(value)?;
    if d < MIN_LEASE_DURATION {
        return Err(format!(
            "expected at least {}",
            humantime::format_duration(MIN_LEASE_DURATION)
        ));
    }
    Ok(d)
}

fn listen_address(value: &str) -> Result<SocketAddr, String> {
    value
        .trim()
        .parse()
        .map_err(|_| "expected an address and port such as 0.0.0.0:9746 or [::]:9746".into())
}

/// `--peer-listen`: an address, or empty for no peer endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerListen(pub Option<SocketAddr>);

fn peer_listen(value: &str) -> Result<PeerListen, String> {
    if value.trim().is_empty() {
        return Ok(PeerListen(None));
    }
    value
        .trim()
        .parse()
        .map(|a| PeerListen(Some(a)))
        .map_err(|_| "expected an address and port such as 0.0.0.0:9747 (empty: none)".into())
}

/// `--node-selector`: a label selector; empty selects every node.
fn node_selector(value: &str) -> Result<Selector, String> {
    if value.trim().is_empty() {
        return Ok(Selector::everything());
    }
    Selector::parse(value).map_err(|e| e.to_string())
}

fn log_level(value: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::builder()
        .parse(value)
        .map(|_| value.to_string())
        .map_err(|_| {
            "expected error, warn, info, debug, trace or a tracing filter directive".into()
        })
}

fn dns_subdomain(value: &str) -> Result<String, String> {
    if is_dns1123_subdomain(value) {
        Ok(value.to_string())
    } else {
        Err("expected a DNS-1123 subdomain".into())
    }
}

fn parse_max_unhealthy(value: &str) -> Result<MaxUnhealthy, String> {
    let err = || {
        "expected a percentage from 1% to 49% (such as 40%) or a node count of at least 1 (such as 3)"
            .to_string()
    };
    let v = value.trim();
    if let Some(p) = v.strip_suffix('%') {
        let n: u32 = p.trim().parse().map_err(|_| err())?;
        if (50..=100).contains(&n) {
            // The agents take "most of my peers cannot reach the API either"
            // for a control-plane outage; a group the leader may fence must
            // never be that many (a count is capped at each decision instead).
            return Err(
                "must stay below 50% of the nodes: a group of half the nodes or more cut off together would take itself for a control-plane outage and not fence itself (counts are capped below half at each decision)".into(),
            );
        }
        if !(1..=49).contains(&n) {
            return Err(err());
        }
        Ok(MaxUnhealthy::Percent(n))
    } else {
        let n: u32 = v.parse().map_err(|_| err())?;
        if n == 0 {
            return Err(err());
        }
        Ok(MaxUnhealthy::Count(n))
    }
}

/// RFC 1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 subdomain: dot-separated labels, at most 253 characters.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}
