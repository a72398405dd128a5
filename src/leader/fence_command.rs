//! External fencing: the leader runs `--fence-command` (`sh -c`) to power a
//! node off. The core decides when (and when to retry, with backoff); this
//! module only runs the command, bounded by `--fence-command-timeout`, and
//! says how it ended (the leader's loop gets it on a channel and records it).

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

/// How one run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure(String),
    Timeout,
}

impl Outcome {
    pub fn as_label(&self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure(_) => "failure",
            Outcome::Timeout => "timeout",
        }
    }
}

/// Run the command once for `node`. Never panics; the child is killed on timeout.
pub async fn run(command: &str, node: &str, addresses: &[String], timeout: Duration) -> Outcome {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .env("NODE_NAME", node)
        .env(
            "NODE_ADDRESS",
            addresses.first().map(String::as_str).unwrap_or(""),
        )
        .env("NODE_ADDRESSES", addresses.join(" "))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Outcome::Failure(format!("cannot start sh: {e}")),
    };
    let mut stderr = child.stderr.take();
    let wait = async {
        let mut err = String::new();
        if let Some(s) = stderr.as_mut() {
            let mut buf = Vec::new();
            let _ = s.take(4096).read_to_end(&mut buf).await;
            err = String::from_utf8_lossy(&buf).trim().to_string();
        }
        (child.wait().await, err)
    };
    match tokio::time::timeout(timeout, wait).await {
        Err(_) => Outcome::Timeout,
        Ok((Err(e), _)) => Outcome::Failure(format!("waiting for the command failed: {e}")),
        Ok((Ok(status), _)) if status.success() => Outcome::Success,
        Ok((Ok(status), err)) => {
            let tail: String = err
                .chars()
                .rev()
                .take(300)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            Outcome::Failure(if tail.is_empty() {
                format!("exited with {status}")
            } else {
                format!("exited with {status}: {tail}")
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn exit_zero_is_success_and_sees_the_environment() {
        let out = run(
            r#"test "$NODE_NAME" = n1 && test "$NODE_ADDRESS" = 10.0.0.1 && test "$NODE_ADDRESSES" = "10.0.0.1 n1.local""#,
            "n1",
            &["10.0.0.1".into(), "n1.local".into()],
            T,
        )
        .await;
        assert_eq!(out, Outcome::Success);
    }

    #[tokio::test]
    async fn nonzero_is_a_failure_with_stderr() {
        let out = run("echo 'ipmi: no route' >&2; exit 3", "n1", &[], T).await;
        match out {
            Outcome::Failure(m) => assert!(m.contains("no route") && m.contains('3'), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn slow_commands_time_out() {
        let started = Instant::now();
        let out = run("sleep 30", "n1", &[], Duration::from_millis(200)).await;
        assert_eq!(out, Outcome::Timeout);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
