//! Logs: human-readable text by default, one JSON object per line with
//! `--log-format json`. `RUST_LOG`, when set, overrides `--log-level`.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// The filter: `RUST_LOG` if set and valid, else `level` — without the
/// client library's own error line per failed request (kube-fencer reports
/// every failure itself, with its cause and what it does about it).
pub fn filter(level: &str) -> EnvFilter {
    let quiet = |f: EnvFilter| {
        f.add_directive(
            "kube_client::client=off"
                .parse()
                .expect("a valid directive"),
        )
    };
    match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => {
            EnvFilter::try_new(&v).unwrap_or_else(|_| quiet(EnvFilter::new(level)))
        }
        _ => quiet(EnvFilter::new(level)),
    }
}

/// Install the global subscriber (once, at start).
pub fn init(format: LogFormat, level: &str) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(level))
        .with_writer(std::io::stderr)
        .with_target(false);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    if let Err(e) = result {
        eprintln!("kube-fencer: could not install the logger: {e}");
    }
}
