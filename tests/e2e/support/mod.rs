//! End-to-end test support: a real Kubernetes control plane on loopback
//! (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) with
//! KWOK-simulated nodes, driven through `harness/cluster.sh`, plus helpers to
//! run kube-fencer agents as host processes and to observe the cluster with a
//! real API client.
//!
//! Nothing here is mocked: every assertion reads the API server.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

mod chart;
mod netns;
mod scenario;
mod split_brain;
pub use chart::*;
pub use netns::*;
pub use scenario::*;
pub use split_brain::*;

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
pub struct Agent {
    pub listen: String,
    child: Child,
}

impl Agent {
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
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
    agents: Mutex<HashMap<String, Agent>>,
    agent_kubeconfig: Mutex<Option<PathBuf>>,
    /// The nodes' network namespaces (with `ClusterOpts::netns`); dropped
    /// after the agents and the control plane are gone.
    pub netlab: Option<NetLab>,
}

/// Repository root (where Cargo.toml, harness/, rbac/ and daemonset/ live).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
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

fn read_env_file(path: &Path) -> Result<BTreeMap<String, String>> {
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
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kube-fencer"));
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
        let mut child = Command::new(self.bin_dir.join("kubectl"))
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
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
        let out = tokio::task::block_in_place(|| child.wait_with_output())?;
        if !out.status.success() {
            bail!(
                "kubectl apply failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
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

    // ------------------------------------------------------------ fencer --

    /// `kubectl apply -f rbac/ -f daemonset/` from the repository root.
    pub fn install_kube_fencer(&self) -> Result<()> {
        let rbac = self.repo_root.join("rbac");
        let ds = self.repo_root.join("daemonset");
        for d in [&rbac, &ds] {
            if !d.is_dir() {
                bail!("{} is missing", d.display());
            }
        }
        let out = self.kubectl([
            "apply".as_ref(),
            "-f".as_ref(),
            rbac.as_os_str(),
            "-f".as_ref(),
            ds.as_os_str(),
        ])?;
        say(format!(
            "installed kube-fencer manifests:\n{}",
            out.trim_end()
        ));
        Ok(())
    }

    /// A kubeconfig that authenticates as the kube-fencer ServiceAccount with
    /// a bound token, so agents prove the shipped RBAC is sufficient.
    pub fn agent_kubeconfig(&self) -> Result<PathBuf> {
        let mut cached = self.agent_kubeconfig.lock().unwrap();
        if let Some(p) = cached.as_ref() {
            return Ok(p.clone());
        }
        let path = self.service_account_kubeconfig(FENCER_SERVICE_ACCOUNT)?;
        *cached = Some(path.clone());
        Ok(path)
    }

    /// A kubeconfig (`DIR/SA.kubeconfig`) that authenticates as the
    /// ServiceAccount `sa` of FENCER_NAMESPACE with a bound token.
    pub fn service_account_kubeconfig(&self, sa: &str) -> Result<PathBuf> {
        let token = self
            .kubectl([
                "create",
                "token",
                sa,
                "-n",
                FENCER_NAMESPACE,
                "--duration=2h",
            ])?
            .trim()
            .to_string();
        if token.is_empty() {
            bail!("kubectl create token {sa} returned nothing");
        }
        let server = self
            .kubectl([
                "config",
                "view",
                "--minify",
                "-o",
                "jsonpath={.clusters[0].cluster.server}",
            ])?
            .trim()
            .to_string();
        let path = self.dir.join(if sa == FENCER_SERVICE_ACCOUNT {
            "agent.kubeconfig".to_string()
        } else {
            format!("{sa}.kubeconfig")
        });
        let ca = self.dir.join("pki/ca.crt");
        fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {server}\n    certificate-authority: {}\nusers:\n- name: {sa}\n  user:\n    token: {token}\ncontexts:\n- name: agent\n  context:\n    cluster: local\n    user: {sa}\n    namespace: {FENCER_NAMESPACE}\ncurrent-context: agent\n",
                ca.display()
            ),
        )?;
        Ok(path)
    }

    /// Start `kube-fencer` for `node` as a host process (as the DaemonSet
    /// would on that node), authenticated as the ServiceAccount, with its own
    /// `--listen` port. Its log goes to `DIR/logs/agent-NODE.log`.
    pub fn spawn_agent(&self, node: &str, extra_args: &[&str]) -> Result<()> {
        let kubeconfig = if self.netns_ip(node).is_some() {
            self.netns_kubeconfig()?
        } else {
            self.agent_kubeconfig()?
        };
        self.launch_agent(node, extra_args, &kubeconfig)
    }

    /// The address of `node`'s network namespace, if its agent runs in one.
    pub fn netns_ip(&self, node: &str) -> Option<String> {
        self.netlab.as_ref()?.node(node).map(|(_, ip)| ip)
    }

    /// The netns lab; panics if the cluster was started without one.
    pub fn lab(&self) -> &NetLab {
        self.netlab
            .as_ref()
            .expect("the cluster was started with ClusterOpts::netns")
    }

    /// The agents' kubeconfig with the API server at the namespaces'
    /// host-side address.
    pub fn netns_kubeconfig(&self) -> Result<PathBuf> {
        let port = self
            .api_address()?
            .rsplit_once(':')
            .map(|(_, p)| p.to_string())
            .context("no port in the API server address")?;
        let host = &self.lab().host_ip;
        self.agent_kubeconfig_via("netns", &format!("https://{host}:{port}"))
    }

    /// Start the agent of `node` with the split-brain defaults and
    /// `kubeconfig` (in the node's network namespace if it has one).
    fn launch_agent(&self, node: &str, extra_args: &[&str], kubeconfig: &Path) -> Result<()> {
        let netns = self.netns_ip(node);
        let listen = match &netns {
            Some(ip) => format!("{ip}:{NETNS_LISTEN_PORT}"),
            None => format!("127.0.0.1:{}", free_port()?),
        };
        let log_path = self.dir.join("logs").join(format!("agent-{node}.log"));
        let mut log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let defaults = self.split_brain_args(node, extra_args)?;
        writeln!(
            log,
            "### agent for {node} started at {:.3}, listen {listen}, kubeconfig {}, args {extra_args:?} {defaults:?}",
            unix_now_f64(),
            kubeconfig.display()
        )?;
        let stderr = log.try_clone()?;
        let bin = Path::new(env!("CARGO_BIN_EXE_kube-fencer"));
        let mut command = match &netns {
            Some(_) => self.lab().command(node, bin)?,
            None => Command::new(bin),
        };
        let child = command
            .args(["--node-name", node, "--namespace", FENCER_NAMESPACE])
            .args(["--listen", &listen])
            .args(&defaults)
            .args(extra_args)
            .env("KUBECONFIG", kubeconfig)
            .env("NODE_NAME", node)
            .env("POD_NAMESPACE", FENCER_NAMESPACE)
            .env(
                "RUST_LOG",
                std::env::var("KUBE_FENCER_E2E_LOG")
                    .unwrap_or_else(|_| "info,kube_fencer=debug".into()),
            )
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBERNETES_SERVICE_PORT")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .context("spawning kube-fencer")?;
        let via = match &netns {
            Some(ip) => format!(", in its network namespace at {ip}"),
            None => String::new(),
        };
        say(format!(
            "agent for {node} started (pid {}, listen {listen}{via})",
            child.id()
        ));
        let old = self
            .agents
            .lock()
            .unwrap()
            .insert(node.to_string(), Agent { listen, child });
        drop(old);
        Ok(())
    }

    /// The holder of the leader Lease, if any.
    pub async fn leader_identity(&self) -> Result<Option<String>> {
        let lease = Api::<Lease>::namespaced(self.client.clone(), FENCER_NAMESPACE)
            .get_opt(LEADER_LEASE)
            .await?;
        Ok(lease
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
            .filter(|h| !h.is_empty()))
    }

    /// Wait until some agent holds the leader Lease; returns the holder.
    pub async fn wait_leader(&self, deadline: Duration) -> String {
        self.wait_until("a kube-fencer leader to be elected", deadline, async || {
            self.leader_identity().await
        })
        .await
    }

    /// Wait until the agent of `node` has advertised itself on its Node: the
    /// leader marks a node fenced only if its agent advertised a self-fence
    /// action before it died.
    pub async fn wait_advertised(&self, node: &str) {
        self.wait_until(
            &format!("the agent of {node} to advertise itself"),
            Duration::from_secs(60),
            async || {
                let n = self.node(node).await?;
                Ok(node_annotation(&n, "kube-fencer.io/agent"))
            },
        )
        .await;
    }

    /// Kill the agent of `node` (as a power loss would).
    pub fn stop_agent(&self, node: &str) {
        if let Some(mut a) = self.agents.lock().unwrap().remove(node) {
            a.kill();
            say(format!("agent for {node} stopped"));
        }
    }

    /// Whether the agent of `node` is still running; an agent that exited is
    /// reported with its status.
    pub fn agent_running(&self, node: &str) -> Result<bool> {
        let mut agents = self.agents.lock().unwrap();
        match agents.get_mut(node) {
            None => Ok(false),
            Some(a) => match a.child.try_wait()? {
                None => Ok(true),
                Some(status) => bail!("agent for {node} exited: {status}"),
            },
        }
    }

    /// The `--listen` address of the agent of `node`.
    pub fn agent_listen(&self, node: &str) -> Option<String> {
        self.agents
            .lock()
            .unwrap()
            .get(node)
            .map(|a| a.listen.clone())
    }

    pub fn agent_log(&self, node: &str) -> Option<String> {
        let path = self.dir.join("logs").join(format!("agent-{node}.log"));
        fs::read_to_string(path).ok()
    }

    // ---------------------------------------------------------- workloads --

    pub fn ensure_namespace(&self, ns: &str) -> Result<()> {
        self.apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"
        ))?;
        Ok(())
    }

    /// Create `replicas` static PVs pre-bound to `data-NAME-i` and a
    /// StatefulSet `NAME` with a `data` volumeClaimTemplate and its headless
    /// Service. Replicas prefer (not require) distinct nodes.
    pub fn deploy_statefulset(&self, ns: &str, name: &str, replicas: u32) -> Result<()> {
        self.ensure_namespace(ns)?;
        for i in 0..replicas {
            let pv = format!("{ns}-{name}-{i}");
            let claim = format!("{ns}/data-{name}-{i}");
            let mut cmd = self.script();
            cmd.arg("pv-create")
                .arg(&self.dir)
                .args([pv.as_str(), "1Gi", claim.as_str()]);
            tokio::task::block_in_place(|| run(&mut cmd))?;
        }
        self.apply(&statefulset_manifest(ns, name, replicas))?;
        Ok(())
    }

    /// A Deployment whose pods avoid the nodes in `avoid_nodes`.
    pub fn deploy_deployment(
        &self,
        ns: &str,
        name: &str,
        replicas: u32,
        avoid_nodes: &[&str],
    ) -> Result<()> {
        self.ensure_namespace(ns)?;
        let avoid = avoid_nodes
            .iter()
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let affinity = if avoid_nodes.is_empty() {
            String::new()
        } else {
            format!(
                "      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
            - matchExpressions:
              - key: kubernetes.io/hostname
                operator: NotIn
                values: [{avoid}]
"
            )
        };
        self.apply_deployment(ns, name, replicas, &affinity)
    }

    /// A one-replica Deployment whose pods must run on `node` (nodeSelector
    /// on the hostname label; the scheduler binds them, so a replacement of
    /// a removed pod stays Pending instead of being bound to a dead node).
    pub fn deploy_pinned_deployment(&self, ns: &str, name: &str, node: &str) -> Result<()> {
        self.ensure_namespace(ns)?;
        self.apply_deployment(
            ns,
            name,
            1,
            &format!("      nodeSelector:\n        kubernetes.io/hostname: \"{node}\"\n"),
        )
    }

    /// A Deployment of pause containers; `placement` is spliced into the
    /// pod spec before `containers:` (indented, newline-terminated).
    fn apply_deployment(&self, ns: &str, name: &str, replicas: u32, placement: &str) -> Result<()> {
        self.apply(&format!(
            "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {ns}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
{placement}      containers:
      - name: main
        image: registry.k8s.io/pause:3.10
"
        ))?;
        Ok(())
    }

    /// A bare pod bound straight to `node` (no controller, no scheduler).
    pub fn create_pod_on(&self, ns: &str, name: &str, node: &str) -> Result<()> {
        self.ensure_namespace(ns)?;
        self.apply(&format!(
            "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {ns}
  labels: {{app: {name}}}
spec:
  nodeName: {node}
  containers:
  - name: main
    image: registry.k8s.io/pause:3.10
"
        ))?;
        Ok(())
    }

    pub async fn pod(&self, ns: &str, name: &str) -> Result<Option<Pod>> {
        Ok(Api::<Pod>::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await?)
    }

    /// The node a pod is bound to (None if the pod does not exist or is unscheduled).
    pub async fn pod_node(&self, ns: &str, name: &str) -> Result<Option<String>> {
        Ok(self
            .pod(ns, name)
            .await?
            .and_then(|p| p.spec.and_then(|s| s.node_name)))
    }

    /// All pods (every namespace) bound to `node`.
    pub async fn pods_on_node(&self, node: &str) -> Result<Vec<Pod>> {
        let lp = ListParams::default().fields(&format!("spec.nodeName={node}"));
        Ok(Api::<Pod>::all(self.client.clone()).list(&lp).await?.items)
    }

    /// (namespace/name, uid) of every pod in the cluster.
    pub async fn pod_uids(&self) -> Result<BTreeMap<String, String>> {
        let pods = Api::<Pod>::all(self.client.clone())
            .list(&ListParams::default())
            .await?;
        Ok(pods
            .items
            .into_iter()
            .map(|p| {
                (
                    format!(
                        "{}/{}",
                        p.metadata.namespace.unwrap_or_default(),
                        p.metadata.name.unwrap_or_default()
                    ),
                    p.metadata.uid.unwrap_or_default(),
                )
            })
            .collect())
    }

    /// (name, uid) of a PVC.
    pub async fn pvc(&self, ns: &str, name: &str) -> Result<Option<(String, String)>> {
        Ok(
            Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), ns)
                .get_opt(name)
                .await?
                .map(|p| {
                    (
                        p.metadata.name.unwrap_or_default(),
                        p.metadata.uid.unwrap_or_default(),
                    )
                }),
        )
    }

    /// Wait until the StatefulSet's pods `NAME-0..` exist, are Running and
    /// Ready, and their PVCs are Bound; returns pod name -> node.
    pub async fn wait_statefulset_ready(
        &self,
        ns: &str,
        name: &str,
        replicas: u32,
        deadline: Duration,
    ) -> BTreeMap<String, String> {
        self.wait_until(
            &format!("StatefulSet {ns}/{name} to have {replicas} Running pods with Bound PVCs"),
            deadline,
            async || {
                let mut placement = BTreeMap::new();
                for i in 0..replicas {
                    let pod_name = format!("{name}-{i}");
                    let Some(pod) = self.pod(ns, &pod_name).await? else {
                        return Ok(None);
                    };
                    if !pod_running_ready(&pod) || pod.metadata.deletion_timestamp.is_some() {
                        return Ok(None);
                    }
                    let pvc = Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), ns)
                        .get_opt(&format!("data-{pod_name}"))
                        .await?;
                    let bound = pvc
                        .and_then(|p| p.status)
                        .and_then(|s| s.phase)
                        .is_some_and(|p| p == "Bound");
                    if !bound {
                        return Ok(None);
                    }
                    let node = pod.spec.and_then(|s| s.node_name).unwrap_or_default();
                    placement.insert(pod_name, node);
                }
                Ok(Some(placement))
            },
        )
        .await
    }

    // ------------------------------------------------------------ waiting --

    /// Poll `check` (every 500 ms) until it returns `Ok(Some(v))`, then
    /// return `v`. Errors from `check` count as "not yet" (and the last one
    /// is reported). At the deadline, print what the cluster looked like and
    /// panic.
    pub async fn wait_until<T>(
        &self,
        what: &str,
        deadline: Duration,
        mut check: impl AsyncFnMut() -> Result<Option<T>>,
    ) -> T {
        let start = Instant::now();
        let mut last_err: Option<anyhow::Error> = None;
        loop {
            // One slow API call (a paused API server) must not outlive the deadline.
            let budget = deadline
                .saturating_sub(start.elapsed())
                .max(CHECK_TIMEOUT_MIN);
            let outcome = tokio::time::timeout(budget.min(CHECK_TIMEOUT), check())
                .await
                .unwrap_or_else(|_| Err(anyhow!("check did not answer in time")));
            match outcome {
                Ok(Some(v)) => {
                    say(format!(
                        "ok after {:.1}s: {what}",
                        start.elapsed().as_secs_f64()
                    ));
                    return v;
                }
                Ok(None) => {}
                Err(e) => last_err = Some(e),
            }
            if start.elapsed() >= deadline {
                self.dump_state();
                panic!(
                    "timed out after {:?} waiting for {what}{}",
                    deadline,
                    last_err
                        .map(|e| format!(" (last error: {e:#})"))
                        .unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Check `invariant` repeatedly for `window`; if it ever fails (returns
    /// `Ok(Err(reason))`), print the cluster state and panic. For asserting
    /// that something does NOT happen. API errors are retried.
    pub async fn hold_for(
        &self,
        what: &str,
        window: Duration,
        mut invariant: impl AsyncFnMut() -> Result<std::result::Result<(), String>>,
    ) {
        let start = Instant::now();
        while start.elapsed() < window {
            if let Ok(Ok(Err(reason))) = tokio::time::timeout(CHECK_TIMEOUT, invariant()).await {
                self.dump_state();
                panic!(
                    "{what} stopped holding after {:.1}s: {reason}",
                    start.elapsed().as_secs_f64()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        say(format!("held for {window:?}: {what}"));
    }

    /// Print nodes (taints, cordon, kube-fencer annotations, Ready), pods
    /// (node, phase, deletion timestamp), recent events and the tail of each
    /// agent's log.
    pub fn dump_state(&self) {
        let mut out = String::new();
        out.push_str("\n==================== cluster state ====================\n");
        let sections: [(&str, Vec<&str>); 4] = [
            (
                "nodes",
                vec![
                    "get",
                    "nodes",
                    "-o",
                    "custom-columns=NAME:.metadata.name,READY:.status.conditions[?(@.type==\"Ready\")].status,UNSCHEDULABLE:.spec.unschedulable,TAINTS:.spec.taints[*].key,STATE:.metadata.annotations.kube-fencer\\.io/state",
                ],
            ),
            (
                "node annotations",
                vec![
                    "get",
                    "nodes",
                    "-o",
                    "jsonpath={range .items[*]}{.metadata.name}{\"\\t\"}{.metadata.annotations}{\"\\n\"}{end}",
                ],
            ),
            (
                "pods",
                vec![
                    "get",
                    "pods",
                    "-A",
                    "-o",
                    "custom-columns=NAMESPACE:.metadata.namespace,NAME:.metadata.name,NODE:.spec.nodeName,PHASE:.status.phase,DELETION:.metadata.deletionTimestamp,UID:.metadata.uid",
                ],
            ),
            (
                "leases",
                vec![
                    "get",
                    "leases",
                    "-A",
                    "-o",
                    "custom-columns=NAMESPACE:.metadata.namespace,NAME:.metadata.name,HOLDER:.spec.holderIdentity,RENEWED:.spec.renewTime",
                ],
            ),
        ];
        for (title, args) in sections {
            out.push_str(&format!("--- {title}\n"));
            match self.kubectl(args) {
                Ok(s) => out.push_str(&s),
                Err(e) => out.push_str(&format!("(kubectl failed: {e:#})\n")),
            }
        }
        out.push_str("--- recent events\n");
        match self.kubectl([
            "get",
            "events",
            "-A",
            "--sort-by=.lastTimestamp",
            "-o",
            "custom-columns=LAST:.lastTimestamp,NS:.metadata.namespace,OBJECT:.involvedObject.name,REASON:.reason,SOURCE:.source.component,MESSAGE:.message",
        ]) {
            Ok(s) => {
                let lines: Vec<&str> = s.lines().collect();
                for l in &lines[lines.len().saturating_sub(40)..] {
                    out.push_str(l);
                    out.push('\n');
                }
            }
            Err(e) => out.push_str(&format!("(kubectl failed: {e:#})\n")),
        }
        let mut logs: Vec<PathBuf> = fs::read_dir(self.dir.join("logs"))
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        logs.sort();
        for path in logs {
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if !name.starts_with("agent-") {
                continue;
            }
            out.push_str(&format!("--- tail of {name}\n"));
            out.push_str(&tail(&path, 30));
        }
        out.push_str(&format!(
            "--- all logs: {}\n=======================================================\n",
            self.dir.join("logs").display()
        ));
        eprintln!("{out}");
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

fn tail(path: &Path, n: usize) -> String {
    let Ok(f) = fs::File::open(path) else {
        return String::from("(unreadable)\n");
    };
    let lines: Vec<String> = BufReader::new(f).lines().map_while(|l| l.ok()).collect();
    let mut s = String::new();
    for l in &lines[lines.len().saturating_sub(n)..] {
        s.push_str(l);
        s.push('\n');
    }
    s
}

/// Phase Running and condition Ready=True.
pub fn pod_running_ready(pod: &Pod) -> bool {
    let Some(status) = pod.status.as_ref() else {
        return false;
    };
    status.phase.as_deref() == Some("Running")
        && status
            .conditions
            .as_ref()
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub fn node_ready_status(node: &Node) -> String {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.clone())
        .unwrap_or_else(|| "Missing".into())
}

pub fn node_has_taint(node: &Node, key: &str) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == key))
}

pub fn node_unschedulable(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
}

pub fn node_annotation(node: &Node, key: &str) -> Option<String> {
    node.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key).cloned())
}

pub fn pod_uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

pub fn pod_node_name(pod: &Pod) -> Option<String> {
    pod.spec.as_ref().and_then(|s| s.node_name.clone())
}

/// Claim names of a pod's PVC volumes.
pub fn pod_claims(pod: &Pod) -> Vec<String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .map(|vs| {
            vs.iter()
                .filter_map(|v| {
                    v.persistent_volume_claim
                        .as_ref()
                        .map(|c| c.claim_name.clone())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Headless Service + StatefulSet with a `data` volumeClaimTemplate.
pub fn statefulset_manifest(ns: &str, name: &str, replicas: u32) -> String {
    include_str!("../../../harness/statefulset.yaml")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("${NAMESPACE}", ns)
        .replace("${NAME}", name)
        .replace("${REPLICAS}", &replicas.to_string())
        .replace("${SIZE}", "1Gi")
        .replace("${STORAGE_CLASS}", "static")
}
