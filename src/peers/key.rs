//! The peer protocol's shared key from a Secret the agents create together
//! (`--peer-key-secret`), so that `kubectl apply -f rbac/ -f daemonset/` is
//! the whole install: the first agent that finds no Secret creates one with
//! a random key, every other one (losing the create race included) reads it.
//!
//! The key is cached in `--state-dir` (tmpfs, root only, emptied by a
//! reboot), so an agent restarted while its node is cut off from the API
//! server still has it — that is exactly when it needs its peers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};

use crate::peers::auth::{KeyTooShort, PeerKey};

/// The Secret's data key holding the peer key.
pub const SECRET_KEY: &str = "key";
/// Each API call gives up after this long (the cache is used then).
const API_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum PeerKeyError {
    #[error(
        "cannot get the peer key from Secret {namespace}/{name} ({api}) and there is no cached copy in {cache} ({cached})"
    )]
    Unavailable {
        namespace: String,
        name: String,
        api: Box<SecretApiError>,
        cache: String,
        cached: CacheError,
    },
    #[error("Secret {namespace}/{name}: {why}")]
    Invalid {
        namespace: String,
        name: String,
        why: String,
    },
    #[error("cannot read {0} random bytes from /dev/urandom: {1}")]
    Random(usize, std::io::Error),
}

/// Why the API server could not be asked for the Secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretApiError {
    #[error("{0} timed out after {secs}s", secs = API_TIMEOUT.as_secs())]
    TimedOut(&'static str),
    #[error("{verb}: {error}")]
    Api {
        verb: &'static str,
        error: kube::Error,
    },
    #[error("created by another agent, then gone")]
    Vanished,
}

/// Why the cached copy cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{0}")]
    Unreadable(std::io::Error),
    #[error(transparent)]
    Invalid(KeyTooShort),
}

/// Where the key is cached.
pub fn cache_path(state_dir: &Path) -> PathBuf {
    state_dir.join("peer-key")
}

/// A new random key: 32 bytes from the kernel, hex.
fn random_key() -> Result<String, PeerKeyError> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| PeerKeyError::Random(bytes.len(), e))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn key_of(secret: &Secret, namespace: &str, name: &str) -> Result<Vec<u8>, PeerKeyError> {
    let invalid = |why: String| PeerKeyError::Invalid {
        namespace: namespace.to_string(),
        name: name.to_string(),
        why,
    };
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(SECRET_KEY))
        .map(|b| b.0.clone())
        .ok_or_else(|| invalid(format!("has no data key {SECRET_KEY:?}")))?;
    PeerKey::from_bytes(&bytes).map_err(|e| invalid(e.to_string()))?;
    Ok(bytes)
}

/// The Secret's key, creating the Secret if there is none. The outer error:
/// the API server could not be asked; the inner one: the Secret is unusable.
async fn get_or_create(
    api: &Api<Secret>,
    namespace: &str,
    name: &str,
) -> Result<Result<Vec<u8>, PeerKeyError>, SecretApiError> {
    let get = || async {
        tokio::time::timeout(API_TIMEOUT, api.get_opt(name))
            .await
            .map_err(|_| SecretApiError::TimedOut("GET"))?
            .map_err(|error| SecretApiError::Api { verb: "GET", error })
    };
    if let Some(s) = get().await? {
        return Ok(key_of(&s, namespace, name));
    }
    let key = match random_key() {
        Ok(k) => k,
        Err(e) => return Ok(Err(e)),
    };
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(
                [(
                    "app.kubernetes.io/name".to_string(),
                    "kube-fencer".to_string(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        data: Some([(SECRET_KEY.to_string(), ByteString(key.into_bytes()))].into()),
        ..Default::default()
    };
    match tokio::time::timeout(API_TIMEOUT, api.create(&PostParams::default(), &secret)).await {
        Ok(Ok(created)) => {
            tracing::info!(secret = %format!("{namespace}/{name}"), "created the peer key Secret");
            Ok(key_of(&created, namespace, name))
        }
        // Another agent created it first: take theirs.
        Ok(Err(kube::Error::Api(e))) if e.code == 409 => match get().await? {
            Some(s) => Ok(key_of(&s, namespace, name)),
            None => Err(SecretApiError::Vanished),
        },
        Ok(Err(error)) => Err(SecretApiError::Api {
            verb: "CREATE",
            error,
        }),
        Err(_) => Err(SecretApiError::TimedOut("CREATE")),
    }
}

/// The key from Secret `namespace/name`, created if missing; the cached copy
/// when the API server cannot be reached. A Secret that exists but holds no
/// valid key is an error (never silently replaced: every agent must agree).
pub async fn load(
    client: kube::Client,
    namespace: &str,
    name: &str,
    state_dir: &Path,
) -> Result<PeerKey, PeerKeyError> {
    let cache = cache_path(state_dir);
    let api: Api<Secret> = Api::namespaced(client, namespace);
    match get_or_create(&api, namespace, name).await {
        Ok(Err(invalid)) => Err(invalid),
        Ok(Ok(bytes)) => {
            if let Err(e) = write_cache(&cache, &bytes) {
                tracing::warn!(error = %e, path = %cache.display(), "cannot cache the peer key");
            }
            PeerKey::from_bytes(&bytes).map_err(|e| PeerKeyError::Invalid {
                namespace: namespace.to_string(),
                name: name.to_string(),
                why: e.to_string(),
            })
        }
        Err(api_error) => match std::fs::read(&cache)
            .map_err(CacheError::Unreadable)
            .and_then(|b| PeerKey::from_bytes(&b).map_err(CacheError::Invalid))
        {
            Ok(key) => {
                tracing::warn!(error = %api_error, path = %cache.display(), "the peer key Secret is out of reach; using the cached key");
                Ok(key)
            }
            Err(cached) => Err(PeerKeyError::Unavailable {
                namespace: namespace.to_string(),
                name: name.to_string(),
                api: Box::new(api_error),
                cache: cache.display().to_string(),
                cached,
            }),
        },
    }
}

/// Write the cache readable by its owner only, whole or not at all.
fn write_cache(path: &Path, key: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A name of this process's own: agents sharing a state directory (one
    // host, several agents, as in the end-to-end tests) never rename each
    // other's file away.
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(key)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_keys_are_long_enough_and_differ() {
        let a = random_key().unwrap();
        let b = random_key().unwrap();
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(PeerKey::from_bytes(a.as_bytes()).is_ok());
    }

    #[test]
    fn a_secret_without_a_valid_key_is_refused() {
        let mut s = Secret::default();
        let e = key_of(&s, "ns", "k").unwrap_err().to_string();
        assert!(e.contains("ns/k") && e.contains("\"key\""), "{e}");
        s.data = Some([(SECRET_KEY.to_string(), ByteString(b"short".to_vec()))].into());
        let e = key_of(&s, "ns", "k").unwrap_err().to_string();
        assert!(e.contains("at least"), "{e}");
        s.data = Some([(SECRET_KEY.to_string(), ByteString(vec![b'a'; 40]))].into());
        assert_eq!(key_of(&s, "ns", "k").unwrap(), vec![b'a'; 40]);
    }

    #[test]
    fn the_cache_is_written_whole_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("kf-peer-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = cache_path(&dir);
        write_cache(&p, b"0123456789abcdef0123").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        let back = std::fs::read(&p).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(mode, 0o600);
        assert_eq!(back, b"0123456789abcdef0123");
    }
}
