//! The first contact with the API server, with the errors a newcomer meets
//! first said once, in words: what is wrong and what to do. The client
//! library's own errors nest their causes and print them again at every
//! level; these name the one cause that matters.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

/// Why kube-fencer cannot start talking to the cluster.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(
        "no Kubernetes API configuration: not running in a pod (KUBERNETES_SERVICE_HOST is unset) and no kubeconfig at {tried}; set KUBECONFIG to a kubeconfig file or run kube-fencer inside the cluster"
    )]
    NoConfig { tried: String },
    #[error(
        "the in-cluster configuration is unusable ({cause}); is the ServiceAccount token mounted (automountServiceAccountToken)?"
    )]
    InCluster { cause: String },
    #[error("kubeconfig {path}: {cause}")]
    Kubeconfig { path: String, cause: String },
    #[error("cannot build an API client for {url}: {cause}")]
    Client { url: String, cause: String },
    #[error(
        "cannot reach the API server at {url}: {cause}; check the address in the kubeconfig and the network (kube-fencer retries on its own once it has run in this boot)"
    )]
    Unreachable { url: String, cause: String },
    #[error(
        "the API server at {url} refuses this identity ({user}) to get Node {node}: apply rbac/ (kubectl apply -f rbac/) and run the agent as ServiceAccount kube-fencer/kube-fencer"
    )]
    Forbidden {
        url: String,
        user: String,
        node: String,
    },
    #[error(
        "there is no Node {node} at {url}: --node-name (or NODE_NAME) must name this node as the API knows it"
    )]
    NoSuchNode { url: String, node: String },
    #[error("the API server at {url} answered {code} to GET Node {node}: {message}")]
    Api {
        url: String,
        node: String,
        code: u16,
        message: String,
    },
}

/// The deepest cause of an error, its first line: the part that says what
/// happened.
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    let text = cur.to_string();
    text.lines().next().unwrap_or_default().trim().to_string()
}

/// The kubeconfig files a client would read: `$KUBECONFIG` (a
/// colon-separated list) or `~/.kube/config`.
fn kubeconfig_paths() -> Vec<PathBuf> {
    match std::env::var_os("KUBECONFIG") {
        Some(v) if !v.is_empty() => std::env::split_paths(&v).collect(),
        _ => std::env::var_os("HOME")
            .map(|h| vec![PathBuf::from(h).join(".kube/config")])
            .unwrap_or_default(),
    }
}

/// The client configuration: in-cluster inside a pod, else the kubeconfig.
pub async fn config() -> Result<Config, StartupError> {
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        return Config::incluster().map_err(|e| StartupError::InCluster {
            cause: root_cause(&e),
        });
    }
    let paths = kubeconfig_paths();
    let existing: Vec<&PathBuf> = paths.iter().filter(|p| p.exists()).collect();
    let shown = |ps: &[&PathBuf]| {
        ps.iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if existing.is_empty() {
        return Err(StartupError::NoConfig {
            tried: if paths.is_empty() {
                "~/.kube/config (HOME is unset)".into()
            } else {
                shown(&paths.iter().collect::<Vec<_>>())
            },
        });
    }
    let kubeconfig_error = |e: &(dyn std::error::Error + 'static)| StartupError::Kubeconfig {
        path: shown(&existing),
        cause: root_cause(e),
    };
    let mut merged = Kubeconfig::default();
    for p in &existing {
        let one = Kubeconfig::read_from(p).map_err(|e| kubeconfig_error(&e))?;
        merged = merged.merge(one).map_err(|e| kubeconfig_error(&e))?;
    }
    Config::from_custom_kubeconfig(merged, &KubeConfigOptions::default())
        .await
        .map_err(|e| kubeconfig_error(&e))
}

/// Connect and make the first request: GET of this agent's own Node (it
/// needs it, and it proves the address, the credentials and the RBAC).
/// `Unreachable` is the only error worth retrying.
pub async fn connect(node: &str, timeout: Duration) -> Result<Client, StartupError> {
    let config = config().await?;
    let url = config.cluster_url.to_string();
    let user = match &config.auth_info.username {
        Some(u) => u.clone(),
        None => "its token or certificate".into(),
    };
    let client = Client::try_from(config).map_err(|e| StartupError::Client {
        url: url.clone(),
        cause: root_cause(&e),
    })?;
    let api: Api<Node> = Api::all(client.clone());
    match tokio::time::timeout(timeout, api.get_metadata(node)).await {
        Err(_) => Err(StartupError::Unreachable {
            url,
            cause: format!("no answer within {}s", timeout.as_secs()),
        }),
        Ok(Ok(_)) => Ok(client),
        Ok(Err(kube::Error::Api(s))) if s.code == 403 => Err(StartupError::Forbidden {
            url,
            user: forbidden_user(&s.message).unwrap_or(user),
            node: node.to_string(),
        }),
        Ok(Err(kube::Error::Api(s))) if s.code == 404 => Err(StartupError::NoSuchNode {
            url,
            node: node.to_string(),
        }),
        Ok(Err(kube::Error::Api(s))) => Err(StartupError::Api {
            url,
            node: node.to_string(),
            code: s.code,
            message: s.message,
        }),
        Ok(Err(e)) => Err(StartupError::Unreachable {
            url,
            cause: root_cause(&e),
        }),
    }
}

/// The identity the API server refused, from its 403 message
/// (`nodes "n" is forbidden: User "system:serviceaccount:ns:sa" cannot get
/// resource "nodes" …`): a token names no user in the kubeconfig, but the
/// server knows whom it authenticated.
fn forbidden_user(message: &str) -> Option<String> {
    let rest = &message[message.find("User \"")? + "User \"".len()..];
    let user = &rest[..rest.find('"')?];
    (!user.is_empty()).then(|| user.to_string())
}

impl StartupError {
    /// Whether waiting may cure it (the API server is down or out of reach).
    pub fn transient(&self) -> bool {
        matches!(self, StartupError::Unreachable { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::forbidden_user;

    #[test]
    fn the_refused_identity_comes_from_the_api_servers_message() {
        assert_eq!(
            forbidden_user(
                "nodes \"node-1\" is forbidden: User \"system:serviceaccount:kube-fencer:nobody\" cannot get resource \"nodes\" in API group \"\" at the cluster scope"
            )
            .as_deref(),
            Some("system:serviceaccount:kube-fencer:nobody")
        );
        assert_eq!(forbidden_user("forbidden"), None);
        assert_eq!(forbidden_user("User \"\" cannot"), None);
        assert_eq!(forbidden_user("User \"unterminated"), None);
    }
}
