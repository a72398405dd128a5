//! The Helm chart installed for real, and a Prometheus server that scrapes
//! the agents and evaluates the shipped rules the way the installed
//! ServiceMonitor and PrometheusRule tell it to.
//!
//! The agents still run as host processes (kwok runs no containers), but
//! with the container arguments of the DaemonSet the chart installed, as
//! the chart's ServiceAccount, with the chart's peer-key Secret: only the
//! flags that name something inside the pod (device, addresses, state
//! directory, the self-fence action) are the host's own
//! ([`POD_ONLY_FLAGS`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::args::flag_name;
use super::{Cluster, FENCER_NAMESPACE, free_port, run, say};

/// The chart's release name: objects are then named `kube-fencer`, as in
/// the plain manifests (ServiceAccount, DaemonSet, Secret).
pub const RELEASE: &str = "kube-fencer";

/// DaemonSet flags that name something of the pod rather than of the
/// cluster, replaced for a host process: the watchdog device (the e2e
/// self-fence is an `exec:` action that stops the node's kwok), the
/// self-fence action itself, the listen addresses (every host process
/// needs ports of its own) and the state directory (one per cluster).
pub const POD_ONLY_FLAGS: &[&str] = &[
    "--self-fence",
    "--watchdog-device",
    "--listen",
    "--peer-listen",
    "--state-dir",
];

/// The last line a `harness/<script> build` prints: the path of what it
/// built (cached after the first build; `./test.sh` builds both before the
/// end-to-end tests).
pub fn harness_build(script: &str) -> Result<PathBuf> {
    let root = super::repo_root();
    let out = run(Command::new(root.join("harness").join(script)).arg("build"))?;
    let last = out
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .with_context(|| format!("harness/{script} build printed no path"))?;
    Ok(PathBuf::from(last.trim()))
}

impl Cluster {
    /// `helm install kube-fencer charts/kube-fencer` into FENCER_NAMESPACE
    /// (created by Helm), with the prometheus-operator CRDs the monitoring
    /// objects need, and `sets` as `--set` values; waits for the DaemonSet.
    pub fn helm_install(&self, sets: &[&str]) -> Result<()> {
        let helm = harness_build("helm.sh")?;
        let root = super::repo_root();
        self.kubectl([
            "apply".as_ref(),
            "-f".as_ref(),
            root.join("harness/helm/crds.yaml").as_os_str(),
        ])?;
        self.kubectl([
            "wait",
            "--for",
            "condition=Established",
            "--timeout",
            "30s",
            "crd/servicemonitors.monitoring.coreos.com",
            "crd/prometheusrules.monitoring.coreos.com",
        ])?;
        let mut cmd = Command::new(&helm);
        cmd.args(["install", RELEASE])
            .arg(root.join("charts/kube-fencer"))
            .args(["--namespace", FENCER_NAMESPACE, "--create-namespace"])
            .args(["--wait", "--timeout", "120s"])
            .env("KUBECONFIG", self.kubeconfig());
        for s in sets {
            cmd.args(["--set", s]);
        }
        let out = run(&mut cmd)?;
        say(format!(
            "helm install {RELEASE} charts/kube-fencer {sets:?}:\n{}",
            out.lines().take(6).collect::<Vec<_>>().join("\n")
        ));
        Ok(())
    }

    /// The container arguments of the DaemonSet the chart installed, less
    /// [`POD_ONLY_FLAGS`].
    pub fn chart_agent_args(&self) -> Result<Vec<String>> {
        let ds: Value = serde_json::from_str(&self.kubectl([
            "get",
            "daemonset",
            RELEASE,
            "-n",
            FENCER_NAMESPACE,
            "-o",
            "json",
        ])?)?;
        let args = ds["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .context("the installed DaemonSet has no container args")?;
        let mut out = Vec::new();
        for a in args {
            let a = a.as_str().context("a DaemonSet arg is not a string")?;
            if !a.starts_with("--") {
                bail!("DaemonSet arg {a:?} is not a --flag[=value]");
            }
            if !POD_ONLY_FLAGS.contains(&flag_name(a)) {
                out.push(a.to_string());
            }
        }
        Ok(out)
    }

    /// The installed object `kind/name` in FENCER_NAMESPACE, as JSON.
    fn installed(&self, kind: &str, name: &str) -> Result<Value> {
        Ok(serde_json::from_str(&self.kubectl([
            "get",
            kind,
            name,
            "-n",
            FENCER_NAMESPACE,
            "-o",
            "json",
        ])?)?)
    }
}

/// A Prometheus server (built from the pinned module by
/// `harness/monitoring.sh build`) scraping the agents; killed on drop.
pub struct Prometheus {
    pub url: String,
    child: Child,
    /// The file its scrape job discovers targets from (file_sd): rewritten
    /// by [`Prometheus::set_targets`] when an agent restarts on a new
    /// address, as prometheus-operator follows a new pod.
    targets_file: PathBuf,
    /// The labels every target gets, but `pod`.
    labels: Value,
}

/// The file_sd file: one group per agent, with the target labels
/// prometheus-operator gives an endpoint of the metrics Service. Written
/// beside and renamed into place, so Prometheus never reads half a file.
fn write_targets(file: &Path, labels: &Value, targets: &[(String, String)]) -> Result<()> {
    let groups: Vec<Value> = targets
        .iter()
        .map(|(node, addr)| {
            let mut labels = labels.clone();
            labels["pod"] = json!(format!("{RELEASE}-{node}"));
            json!({ "targets": [addr], "labels": labels })
        })
        .collect();
    let tmp = file.with_extension("json.tmp");
    fs::write(&tmp, serde_json::to_vec_pretty(&groups)?)?;
    fs::rename(&tmp, file)?;
    Ok(())
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Start Prometheus with what the chart installed: one scrape job from
    /// the ServiceMonitor (its endpoint's path and interval; the agents'
    /// `--listen` addresses as its targets, since kwok pods have no real
    /// IPs, with the target labels prometheus-operator gives an endpoint of
    /// the metrics Service), and the PrometheusRule's groups as its rule
    /// file, evaluated at the scrape interval.
    pub fn start(cluster: &Cluster, targets: &[(String, String)]) -> Result<Prometheus> {
        let bin = harness_build("monitoring.sh")?.join("prometheus");
        let sm = cluster.installed("servicemonitor", RELEASE)?;
        let endpoint = &sm["spec"]["endpoints"][0];
        let interval = endpoint["interval"].as_str().unwrap_or("30s").to_string();
        let path = endpoint["path"].as_str().unwrap_or("/metrics").to_string();
        let service = format!("{RELEASE}-metrics");
        // The metrics Service the ServiceMonitor selects must be there, on
        // the port the endpoint names.
        let svc = cluster.installed("service", &service)?;
        let port = endpoint["port"]
            .as_str()
            .context("ServiceMonitor endpoint without a port")?;
        if !svc["spec"]["ports"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["name"] == port))
        {
            bail!("Service {service} has no port {port:?} for the ServiceMonitor: {svc}");
        }
        let rules = cluster.installed("prometheusrule", RELEASE)?;
        let groups = &rules["spec"]["groups"];
        if groups.as_array().is_none_or(|g| g.is_empty()) {
            bail!("the installed PrometheusRule has no groups: {rules}");
        }

        let dir = cluster.dir.join("prometheus");
        fs::create_dir_all(&dir)?;
        // JSON is YAML: both files are written as JSON.
        let rules_file = dir.join("kube-fencer.rules.json");
        fs::write(
            &rules_file,
            serde_json::to_vec_pretty(&json!({ "groups": groups }))?,
        )?;
        let labels = json!({
            "namespace": FENCER_NAMESPACE,
            "service": service,
            "endpoint": port,
            "container": "kube-fencer",
        });
        let targets_file = dir.join("targets.json");
        write_targets(&targets_file, &labels, targets)?;
        let config = json!({
            "global": { "scrape_interval": interval, "evaluation_interval": interval },
            "rule_files": [rules_file],
            "scrape_configs": [{
                "job_name": format!("serviceMonitor/{FENCER_NAMESPACE}/{RELEASE}/0"),
                "metrics_path": path,
                "file_sd_configs": [{ "files": [targets_file] }],
            }],
        });
        let config_file = dir.join("prometheus.json");
        fs::write(&config_file, serde_json::to_vec_pretty(&config)?)?;
        let addr = format!("127.0.0.1:{}", free_port()?);
        let log = fs::File::create(cluster.dir.join("logs/prometheus.log"))?;
        let child = Command::new(&bin)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let p = Prometheus {
            url: format!("http://{addr}"),
            child,
            targets_file,
            labels,
        };
        say(format!(
            "prometheus {} at {} (scrape and evaluation every {interval}, {} targets, rules of PrometheusRule {RELEASE})",
            bin.display(),
            p.url,
            targets.len()
        ));
        Ok(p)
    }

    /// Scrape these `(node, address)` targets from now on (an agent that
    /// restarted listens on a new port).
    pub fn set_targets(&self, targets: &[(String, String)]) -> Result<()> {
        write_targets(&self.targets_file, &self.labels, targets)
    }

    /// GET `path` of the HTTP API with `query` parameters; the `data` of a
    /// `status: success` answer.
    fn api(&self, path: &str, query: &[(&str, &str)]) -> Result<Value> {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "5", "--get"]);
        for (k, v) in query {
            cmd.arg("--data-urlencode").arg(format!("{k}={v}"));
        }
        cmd.arg(format!("{}{path}", self.url));
        let out = tokio::task::block_in_place(|| cmd.output())?;
        if !out.status.success() {
            bail!(
                "curl {path}: {} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let v: Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("{path}: {}", String::from_utf8_lossy(&out.stdout)))?;
        if v["status"] != "success" {
            bail!("{path}: {v}");
        }
        Ok(v["data"].clone())
    }

    /// An instant query's result vector (`[{metric, value: [t, "v"]}]`).
    pub fn query(&self, promql: &str) -> Result<Vec<Value>> {
        Ok(self.api("/api/v1/query", &[("query", promql)])?["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// The value of an instant query that returns one sample, if it does.
    pub fn scalar(&self, promql: &str) -> Result<Option<f64>> {
        let r = self.query(promql)?;
        Ok(match r.as_slice() {
            [one] => one["value"][1].as_str().and_then(|v| v.parse().ok()),
            _ => None,
        })
    }

    /// Every alert, pending or firing (`/api/v1/alerts`).
    pub fn alerts(&self) -> Result<Vec<Value>> {
        Ok(self.api("/api/v1/alerts", &[])?["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// The scrape targets' health (`/api/v1/targets`): (pod, health).
    pub fn target_health(&self) -> Result<Vec<(String, String)>> {
        Ok(self.api("/api/v1/targets", &[])?["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|t| {
                (
                    t["labels"]["pod"].as_str().unwrap_or("").to_string(),
                    t["health"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect())
    }

    /// Wait for the HTTP API to answer.
    pub async fn wait_ready(&self, cluster: &Cluster, deadline: Duration) {
        cluster
            .wait_until("prometheus ready", deadline, async || {
                Ok(self.query("up").is_ok().then_some(()))
            })
            .await;
    }
}
