//! The errors a newcomer meets first, from the real binary: each start-up
//! failure exits non-zero with one line that names the cause and the fix,
//! said once.
//!
//! The API server's answers (403, 404, 200) come from a one-file HTTP stub:
//! these are error paths of the first request, not features; the real API
//! server and RBAC are exercised by the end-to-end tests.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("kube-fencer-startup-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    fn path(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn kubeconfig(dir: &Scratch, server: &str) -> PathBuf {
    let path = dir.path("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    server: {server}
users:
- name: u
  user:
    token: not-a-real-token
contexts:
- name: x
  context: {{cluster: c, user: u}}
current-context: x
"
        ),
    )
    .unwrap();
    path
}

/// Answers every request with `status` and `body`, closing the connection.
fn stub_api(status: &'static str, body: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}")
}

fn status_body(code: u16, reason: &str, message: &str) -> String {
    serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    })
    .to_string()
}

/// Runs the agent for `node-a` with a state directory of its own, no
/// in-cluster environment, and `extra` flags.
fn run(dir: &Scratch, kubeconfig: &Path, extra: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kube-fencer"));
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("KUBE_FENCER_") || k.starts_with("KUBERNETES_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("KUBECONFIG", kubeconfig)
        .env("HOME", dir.path("home"))
        .env("RUST_LOG", "info")
        .args(["--node-name", "node-a", "--namespace", "kube-fencer"])
        .arg("--state-dir")
        .arg(dir.path("state"))
        .args(["--listen", "127.0.0.1:0", "--peer-listen", "127.0.0.1:0"])
        .args(extra);
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "took {:?}",
        start.elapsed()
    );
    out
}

/// The one fatal line (asserting there is exactly one, the process failed,
/// and the line says `needles`).
fn fatal_line(out: &Output, needles: &[&str]) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "exited 0:\n{text}");
    let fatal: Vec<&str> = text.lines().filter(|l| l.contains("fatal")).collect();
    assert_eq!(fatal.len(), 1, "one fatal line expected:\n{text}");
    let line = fatal[0].to_string();
    for n in needles {
        assert!(
            line.contains(n),
            "{n:?} missing from the fatal line: {line}"
        );
    }
    // Said once: no part of the cause repeated within the line.
    let words: Vec<&str> = line.split(": ").collect();
    for (i, w) in words.iter().enumerate() {
        if w.len() > 20 {
            assert!(!words[i + 1..].contains(w), "repeated {w:?} in: {line}");
        }
    }
    line
}

fn node_json() -> String {
    serde_json::json!({
        "kind": "Node", "apiVersion": "v1",
        "metadata": {"name": "node-a", "uid": "1", "resourceVersion": "1"},
    })
    .to_string()
}

#[test]
fn outside_a_cluster_without_a_kubeconfig() {
    let dir = Scratch::new("noconfig");
    let missing = dir.path("no-such-kubeconfig");
    let out = run(&dir, &missing, &["--self-fence=none"]);
    fatal_line(
        &out,
        &[
            "no Kubernetes API configuration",
            "KUBERNETES_SERVICE_HOST is unset",
            &missing.display().to_string(),
            "set KUBECONFIG",
        ],
    );
}

#[test]
fn a_kubeconfig_that_is_not_one() {
    let dir = Scratch::new("badconfig");
    let path = dir.path("kubeconfig");
    std::fs::write(&path, "this: [is not a kubeconfig").unwrap();
    let out = run(&dir, &path, &["--self-fence=none"]);
    fatal_line(&out, &["kubeconfig", &path.display().to_string()]);
}

#[test]
fn an_api_server_out_of_reach() {
    let dir = Scratch::new("unreachable");
    // A port nobody listens on: bound, then released.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = format!("http://127.0.0.1:{port}");
    let cfg = kubeconfig(&dir, &server);
    let out = run(&dir, &cfg, &["--self-fence=none"]);
    fatal_line(&out, &["cannot reach the API server", &server]);
}

#[test]
fn an_identity_rbac_does_not_allow() {
    let dir = Scratch::new("forbidden");
    let server = stub_api(
        "403 Forbidden",
        status_body(
            403,
            "Forbidden",
            "nodes \"node-a\" is forbidden: User \"system:anonymous\" cannot get resource \"nodes\"",
        ),
    );
    let cfg = kubeconfig(&dir, &server);
    let out = run(&dir, &cfg, &["--self-fence=none"]);
    fatal_line(
        &out,
        &[
            "refuses this identity (system:anonymous)",
            "apply rbac/",
            "node-a",
        ],
    );
}

#[test]
fn a_node_name_the_api_does_not_know() {
    let dir = Scratch::new("nosuchnode");
    let server = stub_api(
        "404 Not Found",
        status_body(404, "NotFound", "nodes \"node-a\" not found"),
    );
    let cfg = kubeconfig(&dir, &server);
    let out = run(&dir, &cfg, &["--self-fence=none"]);
    fatal_line(&out, &["there is no Node node-a", "--node-name"]);
}

#[test]
fn a_watchdog_device_that_is_missing() {
    let dir = Scratch::new("watchdog");
    let server = stub_api("200 OK", node_json());
    let cfg = kubeconfig(&dir, &server);
    let device = dir.path("no-watchdog");
    let device_arg = format!("--watchdog-device={}", device.display());
    let key = dir.path("key");
    std::fs::write(&key, "a-peer-key-of-enough-bytes-for-the-agent-0123456789").unwrap();
    let key_arg = format!("--peer-key-file={}", key.display());
    let out = run(
        &dir,
        &cfg,
        &["--self-fence=watchdog", &device_arg, &key_arg],
    );
    fatal_line(
        &out,
        &[
            "--self-fence=watchdog",
            &device.display().to_string(),
            "modprobe softdog",
            "--self-fence=auto",
        ],
    );
}

#[test]
fn a_peer_key_file_that_is_missing() {
    let dir = Scratch::new("nokey");
    let cfg = kubeconfig(&dir, "http://127.0.0.1:9");
    let key = dir.path("no-key");
    let key_arg = format!("--peer-key-file={}", key.display());
    let out = run(&dir, &cfg, &["--self-fence=none", &key_arg]);
    fatal_line(&out, &["--peer-key-file", &key.display().to_string()]);
}

#[test]
fn a_peer_key_that_is_too_short() {
    let dir = Scratch::new("shortkey");
    let cfg = kubeconfig(&dir, "http://127.0.0.1:9");
    let key = dir.path("key");
    std::fs::write(&key, "short").unwrap();
    let key_arg = format!("--peer-key-file={}", key.display());
    let out = run(&dir, &cfg, &["--self-fence=none", &key_arg]);
    fatal_line(
        &out,
        &["--peer-key-file", &key.display().to_string(), "at least"],
    );
}
