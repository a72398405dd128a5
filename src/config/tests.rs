use clap::Parser;

use super::*;
use crate::decide::Selector;

fn no_env(_: &str) -> Option<String> {
    None
}

/// Parsed and validated; a value clap refuses is its message's first
/// line (without `error: `), as the agent prints it.
fn parse(extra: &[&str]) -> Result<Config, ConfigError> {
    let mut argv = vec!["kube-fencer", "--node-name", "node-1"];
    argv.extend_from_slice(extra);
    Args::try_parse_from(argv)
        .map_err(|e| {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            ConfigError(first.trim_start_matches("error: ").to_string())
        })?
        .into_config_with(&no_env)
}

fn err(extra: &[&str]) -> String {
    parse(extra).expect_err("must be rejected").0
}

#[test]
fn defaults() {
    let c = parse(&[]).unwrap();
    let s = &c.settings;
    assert_eq!(s.self_node, "node-1");
    assert_eq!(s.identity, "kube-fencer-node-1");
    assert_eq!(c.namespace, "kube-fencer");
    assert_eq!(c.leader_lease_name, "kube-fencer-leader");
    assert_eq!(c.election.lease_duration, Duration::from_secs(12));
    assert_eq!(c.election.renew_deadline, Duration::from_secs(8));
    assert_eq!(c.election.retry_period, Duration::from_secs(4));
    assert_eq!(c.election.identity, "kube-fencer-node-1");
    assert_eq!(c.listen, "0.0.0.0:9746".parse::<SocketAddr>().unwrap());
    assert_eq!(s.unreachable_after, Duration::from_secs(20));
    assert_eq!(s.fence_timeout, Duration::from_secs(40));
    assert_eq!(s.healthy_after, Duration::from_secs(30));
    assert_eq!(s.max_unhealthy, MaxUnhealthy::Percent(40));
    assert_eq!(s.node_selector, Selector::everything());
    assert!(!s.manage_control_plane);
    assert_eq!(s.strategy, Strategy::OutOfService);
    assert!(!s.delete_pods_with_rwo_volumes);
    assert!(!c.dry_run);
    assert_eq!(c.log_format, LogFormat::Text);
    assert_eq!(c.log_level, "info");
}

#[test]
fn explicit_values() {
    let c = parse(&[
        "--pod-name",
        "agent-x",
        "--namespace",
        "ops",
        "--leader-lease-name",
        "lead",
        "--leader-lease-duration",
        "6s",
        "--listen",
        "127.0.0.1:1234",
        "--unreachable-after",
        "1m30s",
        "--fence-timeout",
        "2m",
        "--healthy-after",
        "10s",
        "--max-unhealthy",
        "3",
        "--manage-control-plane",
        "--strategy",
        "delete-pods",
        "--delete-pods-with-rwo-volumes",
        "--dry-run",
        "--log-format",
        "json",
        "--log-level",
        "debug",
    ])
    .unwrap();
    assert_eq!(c.identity(), "agent-x");
    assert_eq!(c.namespace, "ops");
    assert_eq!(c.leader_lease_name, "lead");
    assert_eq!(c.election.lease_duration, Duration::from_secs(6));
    assert_eq!(c.election.renew_deadline, Duration::from_secs(4));
    assert_eq!(c.election.retry_period, Duration::from_secs(2));
    assert_eq!(c.listen.port(), 1234);
    assert_eq!(c.settings.unreachable_after, Duration::from_secs(90));
    assert_eq!(c.settings.fence_timeout, Duration::from_secs(120));
    assert_eq!(c.settings.healthy_after, Duration::from_secs(10));
    assert_eq!(c.settings.max_unhealthy, MaxUnhealthy::Count(3));
    assert!(c.settings.manage_control_plane);
    assert_eq!(c.settings.strategy, Strategy::DeletePods);
    assert!(c.settings.delete_pods_with_rwo_volumes);
    assert!(c.dry_run);
    assert_eq!(c.log_format, LogFormat::Json);
}

#[test]
fn downward_api_fallbacks() {
    let env = |k: &str| match k {
        "NODE_NAME" => Some("worker-7".to_string()),
        "POD_NAME" => Some("kube-fencer-abcde".to_string()),
        "POD_NAMESPACE" => Some("fencing".to_string()),
        _ => None,
    };
    let c = Args::try_parse_from(["kube-fencer"])
        .unwrap()
        .into_config_with(&env)
        .unwrap();
    assert_eq!(c.node_name(), "worker-7");
    assert_eq!(c.identity(), "kube-fencer-abcde");
    assert_eq!(c.namespace, "fencing");
}

#[test]
fn node_name_required() {
    let e = Args::try_parse_from(["kube-fencer"])
        .unwrap()
        .into_config_with(&no_env)
        .unwrap_err();
    assert_eq!(
        e.0,
        "'--node-name' is required (or set NODE_NAME or KUBE_FENCER_NODE_NAME)"
    );
}

#[test]
fn node_name_must_be_dns_subdomain() {
    for bad in ["Node_1", "-a", "a..b", "a-", &"x".repeat(254)] {
        let arg = format!("--node-name={bad}");
        let e = Args::try_parse_from(["kube-fencer", &arg])
            .unwrap()
            .into_config_with(&no_env)
            .unwrap_err();
        assert!(
            e.0.starts_with(&format!(
                "invalid value '{bad}' for '--node-name': expected a DNS-1123 subdomain"
            )),
            "{e}"
        );
    }
    assert!(is_dns1123_subdomain(
        "ip-10-0-0-1.eu-west-1.compute.internal"
    ));
}

#[test]
fn bad_duration() {
    assert_eq!(
        err(&["--unreachable-after", "20x"]),
        "invalid value '20x' for '--unreachable-after <DURATION>': expected a duration such as 20s or 1m30s"
    );
    assert_eq!(
        err(&["--fence-timeout", "soon"]),
        "invalid value 'soon' for '--fence-timeout <DURATION>': expected a duration such as 20s or 1m30s"
    );
    assert_eq!(
        err(&["--healthy-after", "30"]),
        "invalid value '30' for '--healthy-after <DURATION>': expected a duration such as 20s or 1m30s"
    );
    assert_eq!(
        err(&["--leader-lease-duration", ""]),
        "invalid value '' for '--leader-lease-duration <DURATION>': expected a duration such as 20s or 1m30s"
    );
}

#[test]
fn zero_durations() {
    for flag in ["--unreachable-after", "--healthy-after"] {
        let name = flag.trim_start_matches("--");
        assert_eq!(
            err(&[flag, "0s"]),
            format!(
                "invalid value '0s' for '--{name} <DURATION>': expected a duration greater than zero, such as 20s or 1m30s"
            )
        );
    }
    assert_eq!(
        err(&["--unreachable-after", "0s", "--fence-timeout", "0s"]),
        "invalid value '0s' for '--unreachable-after <DURATION>': expected a duration greater than zero, such as 20s or 1m30s"
    );
}

#[test]
fn short_lease_duration() {
    assert_eq!(
        err(&["--leader-lease-duration", "2s"]),
        "invalid value '2s' for '--leader-lease-duration <DURATION>': expected at least 3s"
    );
    assert!(parse(&["--leader-lease-duration", "3s"]).is_ok());
}

#[test]
fn split_brain_defaults() {
    let c = parse(&[]).unwrap();
    assert_eq!(c.agent.self_fence, SelfFenceMode::None);
    assert_eq!(c.agent.api_check_interval, Duration::from_secs(5));
    assert_eq!(c.agent.api_failure_threshold, 3);
    assert_eq!(c.agent.api_check_timeout, Duration::from_secs(2));
    assert_eq!(c.agent.peer_silence_timeout, Duration::from_secs(10));
    assert_eq!(c.agent.watchdog_timeout, Duration::from_secs(10));
    assert_eq!(c.settings.safe_time_margin, Duration::from_secs(5));
    assert_eq!(c.settings.burst_spread, Duration::from_secs(2));
    assert_eq!(c.settings.node_heartbeat_interval, Duration::from_secs(10));
    assert!(!c.settings.fence_command && c.fence_command.is_none());
    assert_eq!(
        c.agent.boot_id_file,
        "/proc/sys/kernel/random/boot_id".to_string()
    );
}

#[test]
fn state_dir_is_an_absolute_path() {
    assert_eq!(
        parse(&[]).unwrap().agent.state_dir,
        std::path::PathBuf::from("/run/kube-fencer")
    );
    assert_eq!(
        parse(&["--state-dir", "/var/lib/kf"])
            .unwrap()
            .agent
            .state_dir,
        std::path::PathBuf::from("/var/lib/kf")
    );
    for bad in ["", "run/kube-fencer", "  "] {
        assert_eq!(
            err(&["--state-dir", bad]),
            format!(
                "invalid value '{bad}' for '--state-dir <PATH>': expected an absolute directory path such as /run/kube-fencer"
            )
        );
    }
}

#[test]
fn self_fence_actions() {
    let key = ["--peer-key-file", "/k"];
    for (arg, want) in [
        ("watchdog", SelfFenceMode::Watchdog),
        ("auto", SelfFenceMode::Auto),
        ("sysrq-reboot", SelfFenceMode::SysrqReboot),
        ("exec:kill -9 1", SelfFenceMode::Exec("kill -9 1".into())),
    ] {
        let mut a = vec!["--self-fence", arg];
        a.extend(key);
        assert_eq!(parse(&a).unwrap().agent.self_fence, want);
    }
    for bad in ["reboot", "exec:", "exec:  "] {
        let mut a = vec!["--self-fence", bad];
        a.extend(key);
        assert!(err(&a).contains("for '--self-fence <ACTION>'"), "{bad}");
    }
    // Self-fencing without peers would turn an API outage into a mass reboot.
    assert!(err(&["--self-fence", "watchdog"]).contains("--peer-key-file"));
    assert!(
        err(&[
            "--self-fence",
            "watchdog",
            "--peer-key-file",
            "/k",
            "--peer-listen",
            ""
        ])
        .contains("--peer-listen")
    );
    assert!(err(&["--api-failure-threshold", "0"]).contains("api-failure-threshold"));
    let c = parse(&["--fence-command", "ipmitool power off"]).unwrap();
    assert!(c.settings.fence_command);
    assert_eq!(c.fence_command.as_deref(), Some("ipmitool power off"));
    assert!(parse(&["--safe-time-margin", "0s"]).is_ok());
}

#[test]
fn fence_timeout_below_unreachable_after() {
    assert_eq!(
        err(&["--unreachable-after", "30s", "--fence-timeout", "20s"]),
        "'--fence-timeout' (20s) must be at least '--unreachable-after' (30s)"
    );
    assert!(parse(&["--unreachable-after", "30s", "--fence-timeout", "30s"]).is_ok());
}

#[test]
fn max_unhealthy_values() {
    let expected = "expected a percentage from 1% to 49% (such as 40%) or a node count of at least 1 (such as 3)";
    for bad in ["0", "0%", "101%", "abc", "-1", "4.5%", "%", ""] {
        let arg = format!("--max-unhealthy={bad}");
        assert_eq!(
            err(&[&arg]),
            format!("invalid value '{bad}' for '--max-unhealthy <PERCENT|COUNT>': {expected}")
        );
    }
    let ok = |v: &str| {
        parse(&["--max-unhealthy", v])
            .unwrap()
            .settings
            .max_unhealthy
    };
    assert_eq!(ok("49%"), MaxUnhealthy::Percent(49));
    assert_eq!(ok("1%"), MaxUnhealthy::Percent(1));
    assert_eq!(ok("1"), MaxUnhealthy::Count(1));
    assert_eq!(ok("250"), MaxUnhealthy::Count(250));
}

#[test]
fn max_unhealthy_of_half_or_more_is_rejected() {
    for bad in ["50%", "100%", " 75% "] {
        let arg = format!("--max-unhealthy={bad}");
        let e = err(&[&arg]);
        assert!(e.contains("must stay below 50% of the nodes"), "{bad}: {e}");
        assert!(e.contains("control-plane outage"), "{bad}: {e}");
    }
}

#[test]
fn bad_listen() {
    assert_eq!(
        err(&["--listen", "localhost"]),
        "invalid value 'localhost' for '--listen <ADDR>': expected an address and port such as 0.0.0.0:9746 or [::]:9746"
    );
}

#[test]
fn bad_namespace_and_lease_name() {
    assert!(
        err(&["--namespace", "Kube_Fencer"]).starts_with(
            "invalid value 'Kube_Fencer' for '--namespace': expected a DNS-1123 label"
        )
    );
    assert!(err(&["--leader-lease-name", "a b"]).starts_with(
        "invalid value 'a b' for '--leader-lease-name <NAME>': expected a DNS-1123 subdomain"
    ));
}

#[test]
fn bad_selector() {
    let e = err(&["--node-selector", "a in (b"]);
    assert!(
        e.starts_with("invalid value 'a in (b' for '--node-selector <SELECTOR>': "),
        "{e}"
    );
}

#[test]
fn good_selector() {
    let c = parse(&["--node-selector", "pool=storage,!kube-fencer.io/skip"]).unwrap();
    let mut labels = std::collections::BTreeMap::new();
    labels.insert("pool".to_string(), "storage".to_string());
    assert!(c.settings.node_selector.matches(&labels));
}

#[test]
fn bad_log_level() {
    assert!(
        err(&["--log-level", "loud=?="])
            .starts_with("invalid value 'loud=?=' for '--log-level <LEVEL>': ")
    );
}

#[test]
fn bad_enums_rejected_by_clap() {
    for (flag, value) in [("--strategy", "reboot"), ("--log-format", "xml")] {
        let e = Args::try_parse_from(["kube-fencer", "--node-name", "n", flag, value])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("invalid value '{value}' for '{flag}")),
            "{e}"
        );
        assert!(e.contains("possible values"), "{e}");
    }
}

/// The timing values the safe time's proof does not cover are refused at
/// start, naming the flag, the value and what is valid.
#[test]
fn timings_below_what_the_safe_time_covers_are_rejected() {
    let e = err(&["--api-check-timeout", "50ms"]);
    assert!(
        e.starts_with("invalid value '50ms' for '--api-check-timeout': expected at least 100ms"),
        "{e}"
    );
    let e = err(&["--api-check-interval", "100ms"]);
    assert!(
        e.starts_with("invalid value '100ms' for '--api-check-interval': expected at least 500ms"),
        "{e}"
    );
    let e = err(&["--watchdog-timeout", "500ms"]);
    assert!(
        e.starts_with("invalid value '500ms' for '--watchdog-timeout': expected at least 1s"),
        "{e}"
    );
    let e = err(&["--node-heartbeat-interval", "100ms"]);
    assert!(
        e.starts_with(
            "invalid value '100ms' for '--node-heartbeat-interval': expected at least 250ms"
        ),
        "{e}"
    );
    let e = err(&["--unreachable-after", "15s"]);
    assert!(
        e.starts_with(
            "invalid value '15s' for '--unreachable-after': expected at least 20s (2 times '--node-heartbeat-interval' 10s)"
        ),
        "{e}"
    );
    // The boundaries themselves, and the tight timings of the benchmark.
    parse(&[
        "--api-check-timeout",
        "100ms",
        "--api-check-interval",
        "500ms",
        "--watchdog-timeout",
        "1s",
        "--node-heartbeat-interval",
        "250ms",
        "--unreachable-after",
        "500ms",
        "--fence-timeout",
        "500ms",
    ])
    .unwrap();
    parse(&[
        "--api-check-interval",
        "1s",
        "--api-check-timeout",
        "500ms",
        "--peer-silence-timeout",
        "3s",
        "--watchdog-timeout",
        "5s",
        "--unreachable-after",
        "6s",
        "--fence-timeout",
        "10s",
        "--node-heartbeat-interval",
        "3s",
    ])
    .unwrap();
}
