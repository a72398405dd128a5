use super::*;
use crate::decide::StormGuard;
use std::collections::BTreeMap;

#[test]
fn renders_all_families() {
    let m = Metrics::new();
    m.fencing_operations
        .with_label_values(&["begin", "success"])
        .inc();
    m.pods_force_deleted.with_label_values(&["success"]).inc();
    m.volume_attachments_deleted
        .with_label_values(&["not_found"])
        .inc();
    m.recovery_seconds.observe(42.0);
    m.watch_error("nodes");
    m.api_error("patch", "nodes");
    let text = m.render();
    for needle in [
        "kube_fencer_build_info{version=\"",
        "kube_fencer_leader 0",
        "kube_fencer_nodes{phase=\"healthy\"} 0",
        "kube_fencer_nodes{phase=\"unmonitored\"} 0",
        "kube_fencer_fencing_operations_total{operation=\"begin\",result=\"success\"} 1",
        "kube_fencer_pods_force_deleted_total{result=\"success\"} 1",
        "kube_fencer_volume_attachments_deleted_total{result=\"not_found\"} 1",
        "kube_fencer_recovery_seconds_bucket{le=\"45\"} 1",
        "kube_fencer_recovery_seconds_count 1",
        "kube_fencer_storm_guard_active 0",
        "kube_fencer_storm_guard_activations_total 0",
        "kube_fencer_watch_errors_total{resource=\"nodes\"} 1",
        "kube_fencer_api_errors_total{resource=\"nodes\",verb=\"patch\"} 1",
        "kube_fencer_warnings_total 0",
        "# TYPE kube_fencer_recovery_seconds histogram",
        "# HELP kube_fencer_leader ",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
}

#[test]
fn report_sets_phase_gauges() {
    let m = Metrics::new();
    let mut nodes = BTreeMap::new();
    nodes.insert("a".to_string(), NodeStatus::Healthy);
    nodes.insert("b".to_string(), NodeStatus::Healthy);
    nodes.insert("c".to_string(), NodeStatus::Fenced);
    nodes.insert("d".to_string(), NodeStatus::Excluded("label".into()));
    let report = Report {
        synced: true,
        nodes,
        storm_guard: StormGuard {
            active: true,
            unhealthy: 1,
            managed: 3,
            allowed: 0,
        },
        warnings: vec![],
        next_wakeup: None,
        safe_times: BTreeMap::new(),
        external_fencing_required: vec!["c".to_string()],
    };
    m.observe_report(&report);
    let text = m.render();
    assert!(text.contains("kube_fencer_nodes{phase=\"healthy\"} 2"));
    assert!(text.contains("kube_fencer_nodes{phase=\"fenced\"} 1"));
    assert!(text.contains("kube_fencer_nodes{phase=\"excluded\"} 1"));
    assert!(text.contains("kube_fencer_nodes{phase=\"suspect\"} 0"));
    assert!(text.contains("kube_fencer_storm_guard_active 1"));
    assert!(text.contains("kube_fencer_unhealthy_nodes 1"));
    m.clear_leader_gauges();
    assert!(
        m.render()
            .contains("kube_fencer_nodes{phase=\"healthy\"} 0")
    );
}

// ---- the alerts, the dashboard and promtool's lint (harness/monitoring.sh test)

use crate::decide::SafeTime;
use prometheus::core::Collector;
use prometheus::proto::MetricType;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const RULES: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/daemonset/monitoring/rules/kube-fencer.rules.yaml"
));
const PROMETHEUS_RULE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/daemonset/monitoring/prometheusrule.yaml"
));
const RULES_TEST: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/harness/monitoring/rules-test.yaml"
));
const DASHBOARD: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/daemonset/monitoring/grafana/dashboard.json"
));

/// Labels Prometheus (and the ServiceMonitor) put on every scraped
/// series, beside the agent's own.
const TARGET_LABELS: [&str; 7] = [
    "job",
    "instance",
    "namespace",
    "pod",
    "service",
    "endpoint",
    "container",
];

/// Every family registered: name and variable labels, from the
/// collectors' descriptors. The pattern names every field of `Metrics`,
/// so a metric added without being listed here does not compile.
fn registered_descs(m: &Metrics) -> BTreeMap<String, Vec<String>> {
    let Metrics {
        registry: _,
        build_info,
        leader,
        leader_transitions,
        cache_synced,
        nodes,
        fencing_operations,
        pods_force_deleted,
        volume_attachments_deleted,
        recovery_seconds,
        storm_guard_active,
        storm_guard_activations,
        unhealthy_nodes,
        warnings,
        watch_errors,
        api_errors,
        reconcile_duration,
        events_dropped,
        safe_time_seconds,
        external_fencing_required,
        fence_commands,
        self_fence_state,
        self_fence_capable,
        api_check_failures,
        peers,
        contradictions,
        peer_requests,
        permit_held,
        permit_grants,
        permit_grants_needed,
        permit_through_api,
        permit_api_renewals,
        permit_stops,
        permit_revocation_seconds,
        permit_silence_reports,
    } = m;
    let collectors: [&dyn Collector; 34] = [
        build_info,
        leader,
        leader_transitions,
        cache_synced,
        nodes,
        fencing_operations,
        pods_force_deleted,
        volume_attachments_deleted,
        recovery_seconds,
        storm_guard_active,
        storm_guard_activations,
        unhealthy_nodes,
        warnings,
        watch_errors,
        api_errors,
        reconcile_duration,
        events_dropped,
        safe_time_seconds,
        external_fencing_required,
        fence_commands,
        self_fence_state,
        self_fence_capable,
        api_check_failures,
        peers,
        contradictions,
        peer_requests,
        permit_held,
        permit_grants,
        permit_grants_needed,
        permit_through_api,
        permit_api_renewals,
        permit_stops,
        permit_revocation_seconds,
        permit_silence_reports,
    ];
    collectors
        .iter()
        .flat_map(|c| c.desc())
        .map(|d| (d.fq_name.clone(), d.variable_labels.clone()))
        .collect()
}

/// The leader's metrics while it fences: n3 is being fenced (its agent
/// can self-fence), n5 too (it cannot: external fencing required), n4
/// was fenced and its pods deleted; one fence command ran.
fn leader_fencing() -> Metrics {
    let m = Metrics::new();
    m.leader.set(1);
    m.leader_transitions.inc();
    m.cache_synced.set(1);
    m.self_fence_capable.set(1);
    m.peers.set(4);
    let mut nodes = BTreeMap::new();
    nodes.insert("n1".to_string(), NodeStatus::Healthy);
    nodes.insert("n2".to_string(), NodeStatus::Suspect);
    nodes.insert("n3".to_string(), NodeStatus::Fencing);
    nodes.insert("n4".to_string(), NodeStatus::Fenced);
    nodes.insert("n5".to_string(), NodeStatus::Fencing);
    nodes.insert(
        "cp".to_string(),
        NodeStatus::Excluded("control plane".into()),
    );
    nodes.insert("n6".to_string(), NodeStatus::Unmonitored);
    let secs = Duration::from_secs;
    let safe = SafeTime {
        at: Instant::now(),
        heartbeat: secs(10),
        detect: secs(15),
        consult: secs(10),
        watchdog: secs(10),
        margin: secs(5),
    };
    m.observe_report(&Report {
        synced: true,
        nodes,
        storm_guard: StormGuard {
            active: false,
            unhealthy: 3,
            managed: 6,
            allowed: 3,
        },
        warnings: vec![],
        next_wakeup: None,
        safe_times: BTreeMap::from([("n3".to_string(), safe)]),
        external_fencing_required: vec!["n5".to_string()],
    });
    for (op, result) in [
        ("begin", "success"),
        ("begin", "success"),
        ("begin", "success"),
        ("fence", "success"),
        ("unfence", "skipped"),
    ] {
        m.fencing_operations.with_label_values(&[op, result]).inc();
    }
    m.pods_force_deleted.with_label_values(&["success"]).inc();
    m.pods_force_deleted.with_label_values(&["not_found"]).inc();
    m.volume_attachments_deleted
        .with_label_values(&["success"])
        .inc();
    m.recovery_seconds.observe(52.4);
    m.storm_guard_activations.inc();
    m.warnings.inc();
    m.watch_error("leases");
    m.api_error("patch", "nodes");
    m.reconcile_duration.observe(0.0042);
    m.events_dropped.inc();
    m.fence_commands.with_label_values(&["failure"]).inc();
    m.contradictions.inc();
    m.peer_requests.with_label_values(&["out", "ok"]).inc();
    m.peer_requests.with_label_values(&["in", "bad_mac"]).inc();
    m.permit_api_renewals.with_label_values(&["renewed"]).inc();
    m.permit_stops.with_label_values(&["revoke", "ok"]).inc();
    m.permit_stops.with_label_values(&["lift", "error"]).inc();
    m.permit_revocation_seconds.observe(18.5);
    m
}

/// A follower's at the same moment: its agent was asked about n3.
fn follower_fencing() -> Metrics {
    let m = Metrics::new();
    m.self_fence_capable.set(1);
    m.peers.set(4);
    m.set_self_fence_state("consulting");
    m.api_check_failures.set(1);
    m.peer_requests.with_label_values(&["in", "ok"]).inc();
    m.watch_error("own_node");
    m
}

/// Name -> (type, labels) of every family, from the real registry; the
/// leader's exposition in a fencing holds every one of them.
fn families() -> BTreeMap<String, (MetricType, Vec<String>)> {
    let m = leader_fencing();
    let descs = registered_descs(&m);
    let gathered: BTreeMap<String, MetricType> = m
        .registry
        .gather()
        .iter()
        .map(|f| (f.name().to_string(), f.get_field_type()))
        .collect();
    assert_eq!(
        gathered.keys().collect::<Vec<_>>(),
        descs.keys().collect::<Vec<_>>(),
        "the leader-in-a-fencing scenario must export every registered family"
    );
    descs
        .into_iter()
        .map(|(name, labels)| (name.clone(), (gathered[&name], labels)))
        .collect()
}

fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// A metric name used in a query, with its `{...}` matchers if any.
struct Selector {
    name: String,
    matchers: Vec<(String, String, String)>,
}

/// Every `kube_fencer_*` name in `text`, with its label matchers.
fn selectors(text: &str) -> Vec<Selector> {
    let chars: Vec<char> = text.chars().collect();
    let prefix: Vec<char> = "kube_fencer_".chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let starts = chars[i..].starts_with(&prefix) && (i == 0 || !ident_char(chars[i - 1]));
        if !starts {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && ident_char(chars[i]) {
            i += 1;
        }
        let name: String = chars[start..i].iter().collect();
        let mut j = i;
        while j < chars.len() && chars[j].is_whitespace() {
            j += 1;
        }
        let mut matchers = Vec::new();
        if j < chars.len() && chars[j] == '{' {
            j += 1;
            // label op "value" pairs, comma separated, values quoted.
            loop {
                while j < chars.len() && (chars[j].is_whitespace() || chars[j] == ',') {
                    j += 1;
                }
                if j >= chars.len() || chars[j] == '}' {
                    break;
                }
                let l = j;
                while j < chars.len() && ident_char(chars[j]) {
                    j += 1;
                }
                let label: String = chars[l..j].iter().collect();
                while j < chars.len() && chars[j].is_whitespace() {
                    j += 1;
                }
                let o = j;
                while j < chars.len() && "=!~".contains(chars[j]) {
                    j += 1;
                }
                let op: String = chars[o..j].iter().collect();
                while j < chars.len() && chars[j].is_whitespace() {
                    j += 1;
                }
                let quote = chars.get(j).copied();
                assert!(
                    !label.is_empty()
                        && ["=", "!=", "=~", "!~"].contains(&op.as_str())
                        && matches!(quote, Some('"') | Some('\'')),
                    "cannot read the matchers of {name} in {text:?}"
                );
                j += 1;
                let v = j;
                while j < chars.len() && Some(chars[j]) != quote {
                    if chars[j] == '\\' {
                        j += 1;
                    }
                    j += 1;
                }
                let value: String = chars[v..j.min(chars.len())].iter().collect();
                j += 1;
                matchers.push((label, op, value));
            }
        }
        out.push(Selector { name, matchers });
    }
    out
}

/// The label lists of `by`, `without`, `on`, `ignoring`, `group_left`
/// and `group_right` clauses in a query.
fn grouping_labels(query: &str) -> Vec<String> {
    let mut out = Vec::new();
    for kw in [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ] {
        let mut rest = query;
        while let Some(pos) = rest.find(kw) {
            let before = rest[..pos].chars().last();
            let after = rest[pos + kw.len()..].trim_start();
            rest = &rest[pos + kw.len()..];
            if before.is_some_and(ident_char) || !after.starts_with('(') {
                continue;
            }
            let list = &after[1..after.find(')').expect("a closed label list")];
            out.extend(
                list.split(',')
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_string),
            );
        }
    }
    out
}

/// The family a series name belongs to: itself, or for a histogram its
/// `_bucket`, `_sum` and `_count` series.
fn family_of<'a>(
    families: &'a BTreeMap<String, (MetricType, Vec<String>)>,
    name: &str,
) -> Option<(&'a String, &'a (MetricType, Vec<String>))> {
    if let Some(f) = families.get_key_value(name) {
        return Some(f);
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let f = families.get_key_value(name.strip_suffix(suffix)?)?;
        (f.1.0 == MetricType::HISTOGRAM).then_some(f)
    })
}

/// Label values the agent can export, where the metrics name them all.
fn known_values(family: &str, label: &str) -> Option<&'static [&'static str]> {
    match (family, label) {
        ("kube_fencer_nodes", "phase") => Some(&PHASES[..]),
        ("kube_fencer_self_fence_state", "state") => Some(&SELF_FENCE_STATES[..]),
        ("kube_fencer_fence_commands_total", "result") => Some(&FENCE_COMMAND_RESULTS[..]),
        _ => None,
    }
}

/// What is wrong with the metrics `query` names: unknown families,
/// labels they do not have, values they never take.
fn problems(
    families: &BTreeMap<String, (MetricType, Vec<String>)>,
    query: &str,
    grouping: bool,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut labels: BTreeSet<String> = TARGET_LABELS.iter().map(|l| l.to_string()).collect();
    for sel in selectors(query) {
        let Some((family, (_, own))) = family_of(families, &sel.name) else {
            problems.push(format!("{} is not a metric the agent registers", sel.name));
            continue;
        };
        labels.extend(own.iter().cloned());
        if sel.name.ends_with("_bucket") {
            labels.insert("le".to_string());
        }
        for (label, op, value) in &sel.matchers {
            let allowed = TARGET_LABELS.contains(&label.as_str())
                || own.contains(label)
                || (label == "le" && sel.name.ends_with("_bucket"));
            if !allowed {
                problems.push(format!("{} has no label {label:?}", sel.name));
            }
            if let Some(values) = known_values(family, label) {
                let wanted: Vec<&str> = if op.ends_with('~') {
                    value.split('|').collect()
                } else {
                    vec![value.as_str()]
                };
                for v in wanted {
                    if !values.contains(&v) {
                        problems.push(format!(
                            "{} never has {label}={v:?} (only {values:?})",
                            sel.name
                        ));
                    }
                }
            }
        }
    }
    if grouping {
        for label in grouping_labels(query) {
            if !labels.contains(&label) {
                problems.push(format!(
                    "grouping by {label:?}, which none of its metrics has"
                ));
            }
        }
    }
    problems
}

/// The `expr:` values of a rule file (inline or block scalars).
fn rule_exprs(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(value) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let value = value.trim();
        if value.starts_with('|') || value.starts_with('>') {
            let indent = line.len() - line.trim_start().len();
            let body: Vec<&str> = lines[i + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
                .copied()
                .collect();
            out.push(body.join("\n"));
        } else {
            out.push(value.trim_matches(|c| c == '"' || c == '\'').to_string());
        }
    }
    out
}

/// The queries of a Grafana dashboard: every target's `expr` and every
/// template variable's `query`/`definition`.
fn dashboard_queries(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "query" | "definition", serde_json::Value::String(s)) => {
                        out.push(s.clone())
                    }
                    _ => dashboard_queries(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| dashboard_queries(v, out)),
        _ => {}
    }
}

fn assert_no_problems(what: &str, problems: Vec<String>) {
    assert!(problems.is_empty(), "{what}:\n  {}", problems.join("\n  "));
}

#[test]
fn alert_rules_use_only_registered_metrics() {
    let families = families();
    for (file, text) in [
        ("rules/kube-fencer.rules.yaml", RULES),
        ("prometheusrule.yaml", PROMETHEUS_RULE),
    ] {
        let exprs = rule_exprs(text);
        assert_eq!(
            exprs.len(),
            text.matches("- alert: ").count(),
            "{file}: one expr per alert"
        );
        assert!(exprs.len() >= 9, "{file}: {} alerts", exprs.len());
        for expr in &exprs {
            assert!(
                !selectors(expr).is_empty(),
                "{file}: {expr:?} names no kube_fencer metric"
            );
            assert_no_problems(&format!("{file}: {expr}"), problems(&families, expr, true));
        }
        // Names anywhere else in the file (annotations, comments) too.
        assert_no_problems(file, problems(&families, text, false));
    }
}

#[test]
fn rule_tests_feed_series_the_agent_exports() {
    let families = families();
    let series: Vec<&str> = RULES_TEST
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("- series:"))
        .map(|s| s.trim().trim_matches('\''))
        .collect();
    assert!(series.len() >= 20, "{} input series", series.len());
    for s in series {
        assert_no_problems(s, problems(&families, s, false));
    }
}

#[test]
fn dashboard_uses_only_registered_metrics() {
    let families = families();
    let dashboard: serde_json::Value =
        serde_json::from_str(DASHBOARD).expect("dashboard.json is JSON");
    let mut queries = Vec::new();
    dashboard_queries(&dashboard, &mut queries);
    let with_metrics = queries.iter().filter(|q| !selectors(q).is_empty()).count();
    assert!(
        with_metrics >= 15,
        "{with_metrics} dashboard queries name a metric"
    );
    for q in &queries {
        assert_no_problems(
            &format!("dashboard query {q}"),
            problems(&families, q, true),
        );
    }
    // Every target of every panel queries a kube-fencer metric.
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_default();
            assert!(
                !selectors(expr).is_empty(),
                "panel {:?}: target {expr:?} names no kube_fencer metric",
                panel["title"]
            );
        }
    }
    // Names in any other string (titles, descriptions) too.
    fn strings(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::String(s) => out.push(s.clone()),
            serde_json::Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
            serde_json::Value::Object(m) => m.values().for_each(|v| strings(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    strings(&dashboard, &mut all);
    for s in &all {
        assert_no_problems("dashboard.json", problems(&families, s, false));
    }
}

#[test]
fn the_checks_catch_unknown_metrics_labels_and_values() {
    let families = families();
    for (query, expect) in [
        (
            "kube_fencer_leaders == 1",
            "kube_fencer_leaders is not a metric",
        ),
        (
            "rate(kube_fencer_leader_bucket[5m])",
            "kube_fencer_leader_bucket is not",
        ),
        (
            "kube_fencer_recovery_seconds_total",
            "kube_fencer_recovery_seconds_total is not",
        ),
        (
            "kube_fencer_nodes{state=\"fenced\"}",
            "has no label \"state\"",
        ),
        (
            "kube_fencer_nodes{phase=\"down\"}",
            "never has phase=\"down\"",
        ),
        (
            "kube_fencer_fence_commands_total{result=~\"failure|error\"}",
            "never has result=\"error\"",
        ),
        ("sum by (verb) (kube_fencer_nodes)", "grouping by \"verb\""),
    ] {
        let found = problems(&families, query, true);
        assert!(
            found.iter().any(|p| p.contains(expect)),
            "{query}: expected a problem containing {expect:?}, got {found:?}"
        );
    }
    for query in [
        "histogram_quantile(0.9, sum by (le) (rate(kube_fencer_recovery_seconds_bucket[1h])))",
        "sum by (pod, instance, verb, resource) (rate(kube_fencer_api_errors_total{verb!=\"\"}[5m]))",
        "max by (namespace, node) (kube_fencer_safe_time_seconds)",
        "kube_fencer_self_fence_state{state=\"self_fencing\"} == 1",
    ] {
        assert_no_problems(query, problems(&families, query, true));
    }
}

#[test]
fn fence_command_results_are_exported_from_the_start() {
    use crate::leader::fence_command::Outcome;
    for outcome in [
        Outcome::Success,
        Outcome::Failure("x".into()),
        Outcome::Timeout,
    ] {
        assert!(FENCE_COMMAND_RESULTS.contains(&outcome.as_label()));
    }
    let text = Metrics::new().render();
    for result in FENCE_COMMAND_RESULTS {
        let line = format!("kube_fencer_fence_commands_total{{result=\"{result}\"}} 0");
        assert!(text.contains(&line), "missing {line:?} in\n{text}");
    }
}

/// The real exposition of a leader and a follower during a fencing. With
/// KUBE_FENCER_METRICS_OUT=DIR it is written to DIR/{leader,follower}.prom
/// for `promtool check metrics` (harness/monitoring.sh test).
#[test]
fn exposition_during_a_fencing() {
    let leader = leader_fencing().render();
    let follower = follower_fencing().render();
    for needle in [
        "kube_fencer_leader 1",
        "kube_fencer_nodes{phase=\"fencing\"} 2",
        "kube_fencer_safe_time_seconds{node=\"n3\"} 50",
        "kube_fencer_external_fencing_required{node=\"n5\"} 1",
        "kube_fencer_recovery_seconds_bucket{le=\"60\"} 1",
        "kube_fencer_fence_commands_total{result=\"failure\"} 1",
    ] {
        assert!(leader.contains(needle), "missing {needle:?} in\n{leader}");
    }
    assert!(follower.contains("kube_fencer_leader 0"));
    assert!(follower.contains("kube_fencer_self_fence_state{state=\"consulting\"} 1"));
    assert!(!follower.contains("kube_fencer_safe_time_seconds{"));
    if let Some(dir) = std::env::var_os("KUBE_FENCER_METRICS_OUT") {
        let dir = std::path::Path::new(&dir);
        std::fs::write(dir.join("leader.prom"), &leader).expect("write leader.prom");
        std::fs::write(dir.join("follower.prom"), &follower).expect("write follower.prom");
    }
}
