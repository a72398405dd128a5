//! Test support for kube-fencer's end-to-end tests (`tests/e2e/`).
//! Black-box: it does
//! not depend on the kube-fencer crate; it drives its binary, its manifests
//! and the harness scripts, and reads the API server.
//!
//! A real Kubernetes control plane on loopback
//! (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) with
//! KWOK-simulated nodes, driven through `harness/cluster.sh`, plus helpers to
//! run kube-fencer agents as host processes and to observe the cluster with a
//! real API client.
//!
//! Nothing here is mocked: every assertion reads the API server.
//!
//! Here: the cluster's processes (start, kubectl, nodes, teardown). Beside
//! it, by concern: `agents` (the manifests, kubeconfigs and agents),
//! `workloads` (what the scenarios deploy), `waits` (polls with deadlines),
//! `diagnostics` (what a failed test prints), `objects` (predicates on API
//! objects), `scenario` (the shared set-up), `self_fencing` (self-fence
//! defaults), `netns` (real partitions), `chart` (Helm and Prometheus).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

mod agents;
mod args;
mod chart;
mod diagnostics;
mod netns;
mod objects;
pub mod realnode;
mod scenario;
mod self_fencing;
mod waits;
mod workloads;
pub use chart::*;
pub use netns::*;
pub use objects::*;
pub use scenario::*;
pub use self_fencing::*;

/// Namespace the manifests in rbac/ and daemonset/ install into.
pub const FENCER_NAMESPACE: &str = "kube-fencer";
/// ServiceAccount the agents authenticate as.
pub const FENCER_SERVICE_ACCOUNT: &str = "kube-fencer";
/// Annotation the agent keeps its per-node fencing state in.
pub const STATE_ANNOTATION: &str = "kube-fencer.io/state";
/// Name of the agents' leader-election Lease (in [`FENCER_NAMESPACE`]).
pub const LEADER_LEASE: &str = "kube-fencer-leader";
/// The non-graceful node shutdown taint.
pub const OUT_OF_SERVICE_TAINT: &str = "node.kubernetes.io/out-of-service";

/// Agent timings scaled down for tests: the kwok lease is 10 s (renewed every
/// ~2.5 s, hence a 3 s heartbeat interval in the safe time) so a node is
/// considered unreachable after 6 s without a renewal.
pub const FAST_AGENT_ARGS: &[&str] = &[
    "--unreachable-after",
    "6s",
    "--node-heartbeat-interval",
    "3s",
    "--fence-timeout",
    "10s",
    "--healthy-after",
    "5s",
    "--max-unhealthy",
    "40%",
    "--leader-lease-duration",
    "8s",
];

/// Longest a single poll of `wait_until`/`hold_for` may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(15);
/// A poll always gets at least this long, even right at the deadline.
const CHECK_TIMEOUT_MIN: Duration = Duration::from_secs(2);

/// Options for [`Cluster::start`].
#[derive(Clone, Debug)]
pub struct ClusterOpts {
    /// kwok's `--node-lease-duration-seconds` (renewal every lease/4).
    pub node_lease_seconds: u32,
    /// kube-controller-manager's `--node-monitor-grace-period`.
    pub node_monitor_grace_period: String,
    /// Run each node's agent in a network namespace of its own ([`NetLab`]);
    /// the API server then listens on every address and its certificate
    /// names the namespaces' host-side address.
    pub netns: bool,
}

impl Default for ClusterOpts {
    fn default() -> Self {
        Self {
            node_lease_seconds: 10,
            node_monitor_grace_period: "10s".to_string(),
            netns: false,
        }
    }
}

/// A kube-fencer agent running as a host process; killed on drop.
pub struct AgentProcess {
    pub listen: String,
    child: Child,
}

impl AgentProcess {
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running local cluster. Dropping it (also while unwinding from a failed
/// assertion) stops the agents and runs `cluster.sh down`.
pub struct Cluster {
    pub dir: PathBuf,
    pub repo_root: PathBuf,
    pub bin_dir: PathBuf,
    pub client: Client,
    agents: Mutex<HashMap<String, AgentProcess>>,
    agent_kubeconfig: Mutex<Option<PathBuf>>,
    /// The nodes' network namespaces (with `ClusterOpts::netns`); dropped
    /// after the agents and the control plane are gone.
    pub netlab: Option<NetLab>,
}

/// Repository root (where Cargo.toml, harness/, rbac/ and daemonset/ live):
/// the nearest directory with `harness/` and a `Cargo.toml` at or above the
/// package whose tests run (Cargo sets `CARGO_MANIFEST_DIR` when it runs
/// them), else above this crate's directory as it was compiled. The
/// package's own comes first: a target directory shared between clones
/// (the CI cache) may reuse this crate compiled in another clone, whose
/// path is baked into it — and whose harness and sources would be tested.
pub fn repo_root() -> PathBuf {
    let compiled = Path::new(env!("CARGO_MANIFEST_DIR"));
    let running = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
    running
        .iter()
        .map(PathBuf::as_path)
        .chain([compiled])
        .find_map(|dir| {
            dir.ancestors()
                .find(|d| d.join("harness").is_dir() && d.join("Cargo.toml").is_file())
        })
        .map_or_else(|| compiled.to_path_buf(), Path::to_path_buf)
}

/// The kube-fencer binary Cargo built for the running test: the test
/// executable is `<target>/<profile>/deps/<test>-<hash>`, the binary
/// `<target>/<profile>/kube-fencer` (Cargo builds a package's binaries before
/// its integration tests; `CARGO_BIN_EXE_*` exists only at the test's own
/// compile time, not in a library it depends on).
pub fn kube_fencer_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| {
            if deps.ends_with("deps") {
                deps.parent()
            } else {
                Some(deps)
            }
        })
        .expect("the test executable's directory");
    let bin = profile_dir.join(format!("kube-fencer{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "no kube-fencer binary at {} (run the tests with cargo test)",
        bin.display()
    );
    bin
}

/// Print a timestamped line to the test output.
pub fn say(msg: impl AsRef<str>) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() % 86_400;
    eprintln!(
        "[e2e {:02}:{:02}:{:02}.{:03}] {}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60,
        now.subsec_millis(),
        msg.as_ref()
    );
}

fn unique_dir() -> Result<PathBuf> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let base = std::env::var_os("KUBE_FENCER_E2E_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.subsec_nanos();
    let dir = base.join(format!(
        "kube-fencer-e2e-{}-{}-{:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst),
        nanos
    ));
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Run a command to completion, returning stdout; stderr is passed through so
/// harness progress shows up in the test output.
fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("spawning {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{:?} failed with {}: {}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A free TCP port on 127.0.0.1 (released before return; good enough on a
/// test machine).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

pub(crate) fn read_env_file(path: &Path) -> Result<BTreeMap<String, String>> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect())
}

async fn client_for(kubeconfig: &Path) -> Result<Client> {
    let kc = Kubeconfig::read_from(kubeconfig)?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

impl Cluster {
    /// Start a cluster with `nodes` kwok nodes (`node-1` .. `node-N`).
    pub async fn start(nodes: usize, opts: ClusterOpts) -> Result<Cluster> {
        let repo_root = repo_root();
        let dir = unique_dir()?;
        say(format!(
            "starting cluster with {nodes} node(s) in {}",
            dir.display()
        ));
        let netlab = if opts.netns {
            let names: Vec<String> = (1..=nodes).map(|i| format!("node-{i}")).collect();
            Some(NetLab::new(&names).context("creating the nodes' network namespaces")?)
        } else {
            None
        };
        let script = repo_root.join("harness/cluster.sh");
        let mut cmd = Command::new(&script);
        cmd.arg("up")
            .arg(&dir)
            .arg("--nodes")
            .arg(nodes.to_string())
            .arg("--node-lease-seconds")
            .arg(opts.node_lease_seconds.to_string())
            .arg("--node-monitor-grace-period")
            .arg(&opts.node_monitor_grace_period);
        if let Some(lab) = &netlab {
            cmd.args(["--api-bind", "0.0.0.0", "--api-san", &lab.host_ip]);
        }
        let started = Instant::now();
        tokio::task::block_in_place(|| run(&mut cmd)).context("harness/cluster.sh up")?;
        say(format!(
            "cluster up in {:.1}s",
            started.elapsed().as_secs_f64()
        ));
        let state = read_env_file(&dir.join("cluster.env"))?;
        let bin_dir = PathBuf::from(
            state
                .get("BIN_DIR")
                .ok_or_else(|| anyhow!("cluster.env has no BIN_DIR"))?,
        );
        let client = match client_for(&dir.join("kubeconfig")).await {
            Ok(c) => c,
            Err(e) => {
                let _ = Command::new(&script).arg("down").arg(&dir).status();
                return Err(e.context("building the admin client"));
            }
        };
        Ok(Cluster {
            dir,
            repo_root,
            bin_dir,
            client,
            agents: Mutex::new(HashMap::new()),
            agent_kubeconfig: Mutex::new(None),
            netlab,
        })
    }

    fn script(&self) -> Command {
        let mut c = Command::new(self.repo_root.join("harness/cluster.sh"));
        c.env("KUBE_FENCER_BIN_DIR", &self.bin_dir);
        c
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// Run kubectl as cluster admin; returns stdout.
    pub fn kubectl<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::new(self.bin_dir.join("kubectl"));
        // Bounded, so a paused or dead API server cannot hang a test.
        cmd.arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--request-timeout=20s")
            .args(args);
        cmd.current_dir(&self.repo_root);
        tokio::task::block_in_place(|| run(&mut cmd))
    }

    /// `kube-fencer status [NODE] ARGS…` as cluster admin (the user's
    /// kubeconfig, not the agents'); returns stdout.
    pub fn status(&self, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new(kube_fencer_bin());
        cmd.arg("status")
            .args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .env_remove("KUBERNETES_SERVICE_HOST");
        tokio::task::block_in_place(|| run(&mut cmd))
    }

    /// `kube-fencer status -o json`: the phase it reports for `node`, and
    /// that node's row.
    pub fn status_of(&self, node: &str) -> Result<(String, serde_json::Value)> {
        let v: serde_json::Value = serde_json::from_str(&self.status(&["-o", "json"])?)?;
        let row = v["nodes"]
            .as_array()
            .and_then(|ns| ns.iter().find(|n| n["name"] == node))
            .cloned()
            .ok_or_else(|| anyhow!("status lists no node {node}: {v}"))?;
        let phase = row["phase"].as_str().unwrap_or_default().to_string();
        Ok((phase, row))
    }

    /// `kubectl apply -f -` with the given manifest.
    pub fn apply(&self, manifest: &str) -> Result<String> {
        let kubectl = self.bin_dir.join("kubectl");
        tokio::task::block_in_place(|| kubectl_apply(&kubectl, &self.kubeconfig(), manifest))
    }

    // ------------------------------------------------------------- nodes --

    /// Power the node off: SIGKILL its kwok process, so its Lease stops
    /// renewing and its pods stay as they are.
    pub fn stop_node(&self, name: &str) -> Result<()> {
        let mut cmd = self.script();
        cmd.arg("node-stop").arg(&self.dir).arg(name);
        tokio::task::block_in_place(|| run(&mut cmd)).map(|_| ())
    }

    /// Power the node back on; returns once its Lease is renewed and it is Ready.
    pub fn start_node(&self, name: &str) -> Result<()> {
        let mut cmd = self.script();
        cmd.arg("node-start").arg(&self.dir).arg(name);
        tokio::task::block_in_place(|| run(&mut cmd)).map(|_| ())
    }

    pub async fn node(&self, name: &str) -> Result<Node> {
        Ok(Api::<Node>::all(self.client.clone()).get(name).await?)
    }

    pub async fn node_names(&self) -> Result<Vec<String>> {
        let nodes = Api::<Node>::all(self.client.clone())
            .list(&ListParams::default())
            .await?;
        let mut names: Vec<String> = nodes
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect();
        names.sort();
        Ok(names)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Agents first, so they do not react to the control plane going away.
        self.agents.lock().map(|mut a| a.clear()).ok();
        let status = Command::new(self.repo_root.join("harness/cluster.sh"))
            .arg("down")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!(
                "warning: cluster.sh down {} failed: {status:?}",
                self.dir.display()
            );
        }
        let keep = std::thread::panicking() || std::env::var_os("KUBE_FENCER_E2E_KEEP").is_some();
        if keep {
            eprintln!("cluster state and logs kept in {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// `kubectl --kubeconfig KUBECONFIG apply -f -` with `manifest` on its
/// stdin; its output, or an error with what it printed. For the local and
/// the real-node clusters alike.
pub(crate) fn kubectl_apply(kubectl: &Path, kubeconfig: &Path, manifest: &str) -> Result<String> {
    let mut child = Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("no stdin"))?
        .write_all(manifest.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "kubectl apply failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
