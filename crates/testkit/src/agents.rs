//! The kube-fencer side: the manifests, the agents' kubeconfigs, agents as
//! host processes (started, stopped, their metrics and logs), the leader.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;

use super::*;

impl Cluster {
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
        let bin = kube_fencer_bin();
        let bin = bin.as_path();
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
            .insert(node.to_string(), AgentProcess { listen, child });
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
}
