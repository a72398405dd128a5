//! kube-fencer agent: wiring only.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use kube_fencer::agent::self_check::{Population, SelfCheckTask};
use kube_fencer::agent::self_fence::SelfFenceMeans;
use kube_fencer::config::Args;
use kube_fencer::k8s::ApiContact;
use kube_fencer::observability::{self, EventSink, Health, Metrics};
use kube_fencer::peers;
use kube_fencer::peers::auth::{Challenges, NonceCache, PeerKey};
use tokio::sync::watch;

const TERMINATION_LOG: &str = "/dev/termination-log";

/// glibc gives every thread that allocates concurrently an arena of its
/// own and keeps freed memory in it: a small agent on a many-core node
/// would hold several mostly empty arenas. Two are plenty. (The container
/// image is built with musl, whose allocator returns memory by itself.)
#[allow(unsafe_code)] // mallopt, before any thread starts
fn cap_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn main() -> ExitCode {
    cap_malloc_arenas();
    // `kube-fencer status …`, also as the kubectl plugin `kubectl fencer
    // status …` (kubectl runs `kubectl-fencer status …`).
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let plugin = argv.first().is_some_and(|a| {
        std::path::Path::new(a)
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("kubectl-fencer"))
    });
    if plugin || argv.get(1).is_some_and(|a| a == "status") {
        return status_command(plugin, &argv);
    }
    let args = Args::parse();
    let config = match args.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("\nFor more information, try '--help'.");
            return ExitCode::from(2);
        }
    };
    observability::logging::init(config.log_format, &config.log_level);
    let plain_fatal = config.log_format != kube_fencer::config::LogFormat::Text;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fatal(&format!("cannot start the async runtime: {e}"), plain_fatal),
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fatal(&format!("{e:#}"), plain_fatal),
    }
}

fn status_command(plugin: bool, argv: &[std::ffi::OsString]) -> ExitCode {
    use clap::Parser;
    use kube_fencer::status::cli::{StatusArgs, run};
    if argv.get(1).is_none_or(|a| a != "status") {
        eprintln!("usage: kubectl fencer status [NODE] [-o table|json] [--watch]");
        return ExitCode::from(2);
    }
    let name = if plugin {
        "kubectl fencer status"
    } else {
        "kube-fencer status"
    };
    let args = match StatusArgs::try_parse_from(&argv[1..]) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Log a fatal error (once: as a plain line too when the log is JSON), also
/// to the Kubernetes termination log when present.
fn fatal(message: &str, plain: bool) -> ExitCode {
    tracing::error!("fatal: {message}");
    if plain {
        eprintln!("kube-fencer: fatal: {message}");
    }
    if std::path::Path::new(TERMINATION_LOG).exists() {
        let _ = std::fs::write(TERMINATION_LOG, message);
    }
    ExitCode::FAILURE
}

async fn run(config: kube_fencer::config::Config) -> anyhow::Result<()> {
    use anyhow::Context;
    config.log_effective();
    let metrics = Metrics::new();
    // Set by every watch and request that the API server answers.
    let contact = ApiContact::default();
    // A follower hears from the API at least every renewal of the leader Lease.
    let health = Health::new(
        (config.election.lease_duration * 3).max(std::time::Duration::from_secs(30)),
        contact.clone(),
    );

    // Self-fencing prerequisites first: refuse to start without them.
    let mut key = match &config.agent.peer_key_file {
        Some(path) => Some(read_peer_key_file(path)?),
        None => None,
    };
    // The first API contact (own Node GET) before anything is armed: a
    // misconfigured agent must exit before it opens the watchdog.
    let client = connect(&config).await?;

    // Self-fencing: the watchdog (with auto: if the node has a usable one;
    // said loudly when not — advertisement, Event, metric — as such a node
    // is never fenced automatically).
    let permit_protocol =
        config.agent.fencing_protocol == kube_fencer::config::FencingProtocol::Permit;
    let means = if permit_protocol {
        SelfFenceMeans::for_permit(&config.agent)
    } else {
        SelfFenceMeans::arm(&config.agent)?
    };
    metrics
        .self_fence_capable
        .set(i64::from(means.capable() || means.permit.is_some()));

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    tracing::info!(addr = %config.listen, "serving /healthz, /readyz and /metrics");
    let server = serve(
        listener,
        observability::health::router(health.clone(), metrics.clone()),
        shutdown_rx.clone(),
    );

    if let Some(name) = &config.agent.peer_key_secret {
        let loaded = kube_fencer::peers::key::load(
            client.clone(),
            &config.namespace,
            name,
            &config.agent.state_dir,
        )
        .await
        .with_context(|| format!("--peer-key-secret {name}"))?;
        key = Some(loaded);
    }
    let (events, events_rx) = EventSink::channel(1024, metrics.clone());
    let publisher = tokio::spawn(observability::events::publish_loop(
        client.clone(),
        config.identity().to_string(),
        events_rx,
        metrics.clone(),
    ));
    if let Some(why) = means.unavailable() {
        events.warning(
            observability::events::node_ref(config.node_name(), None),
            "SelfFenceUnavailable",
            "Advertise",
            &format!("this node cannot fence itself, so it is never fenced automatically: {why}"),
        );
    }

    let (own_record_tx, own_record) =
        tokio::sync::watch::channel(kube_fencer::decide::RecordState::Absent);
    let (kubelet_lease_tx, kubelet_lease) = tokio::sync::watch::channel(None);
    // This boot's ID, for the grantor's memory and the permit's renewals.
    let boot = kube_fencer::agent::self_check::read_boot_id(&config.agent.boot_id_file);
    let peer_server = match (config.agent.peer_listen, &key) {
        (Some(addr), Some(key)) => {
            let grants = start_grantor(&config, boot.as_deref());
            if let Some(g) = &grants
                && !config.dry_run
            {
                tokio::spawn(kube_fencer::peers::permit::report::run(
                    g.clone(),
                    kube::Api::namespaced(client.clone(), &config.namespace),
                    config.node_name().to_string(),
                    metrics.clone(),
                ));
            }
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on --peer-listen {addr}"))?;
            tracing::info!(addr = %addr, "serving the peer endpoint");
            let app = peers::router(peers::Server {
                client: client.clone(),
                key: key.clone(),
                nonces: Arc::new(std::sync::Mutex::new(NonceCache::default())),
                challenges: Arc::new(std::sync::Mutex::new(Challenges::default())),
                api_timeout: config.agent.api_check_timeout,
                fresh_within: kube_fencer::decide::contract::safe_time::peer_fresh_within(
                    config.agent.api_check_interval,
                    config.agent.api_check_timeout,
                ),
                contact: contact.clone(),
                metrics: metrics.clone(),
                clock: kube_fencer::peers::auth::unix_now,
                grants,
            });
            Some(serve(listener, app, shutdown_rx.clone()))
        }
        _ => None,
    };
    let (peer_list_tx, peer_list) = watch::channel(Vec::new());
    let permit = key.clone().map(|key| {
        let (assigned, _watch) = kube_fencer::agent::permit::watch_own_permit(
            client.clone(),
            &config.namespace,
            config.node_name(),
            metrics.clone(),
        );
        let timings = kube_fencer::decide::permit::timings::Timings::default();
        let mut settings = timings.holder();
        settings.watchdog_timeout = means
            .timeout
            .min(kube_fencer::decide::permit::timings::WATCHDOG_CAP);
        tokio::spawn(
            kube_fencer::agent::permit::PermitTask {
                node: config.node_name().to_string(),
                boot: boot.clone().unwrap_or_default(),
                key,
                settings,
                grantors: timings.grantors,
                peers: peer_list,
                assigned,
                metrics: metrics.clone(),
                events: events.clone(),
                objects: Some(kube::Api::namespaced(client.clone(), &config.namespace)),
                feeding: means
                    .permit
                    .clone()
                    .map(|p| kube_fencer::agent::permit::Feeding {
                        device: match p {
                            kube_fencer::agent::self_fence::PermitFeed::Watchdog(path) => {
                                Box::new(kube_fencer_watchdog::PermitDevice::new(&path))
                                    as Box<dyn kube_fencer::agent::permit::feed::Device>
                            }
                            kube_fencer::agent::self_fence::PermitFeed::Exec(cmd) => {
                                Box::new(kube_fencer::agent::permit::feed::ExecDevice::new(&cmd))
                            }
                        },
                        state_file: kube_fencer::agent::permit::saved::path(
                            &config.agent.state_dir,
                            config.node_name(),
                        ),
                    }),
            }
            .run(shutdown_rx.clone()),
        )
    });
    let self_check = tokio::spawn(
        SelfCheckTask {
            client: client.clone(),
            node: config.node_name().to_string(),
            cfg: config.agent.clone(),
            key: key.clone(),
            metrics: metrics.clone(),
            own_record,
            kubelet_lease,
            contact: contact.clone(),
            means,
            population: Population {
                node_selector: config.settings.node_selector.clone(),
                manage_control_plane: config.settings.manage_control_plane,
            },
            peer_list: Arc::new(peer_list_tx),
        }
        .run(shutdown_rx.clone()),
    );

    let context = kube_fencer::context::Context {
        client,
        config,
        metrics,
        health,
        contact,
        events,
        own_record: own_record_tx,
        kubelet_lease: kubelet_lease_tx,
        peer_key: key,
    };
    let roles = tokio::spawn(context.run(shutdown_rx));

    let signal = wait_for_signal().await?;
    tracing::info!(signal, "shutting down: stopping, releasing leadership");
    let _ = shutdown_tx.send(true);
    match tokio::time::timeout(std::time::Duration::from_secs(10), roles).await {
        Ok(r) => r.context("the election and leader task failed")?,
        Err(_) => tracing::warn!("the election and leader task did not stop within 10s"),
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self_check).await;
    if let Some(p) = permit {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), p).await;
    }
    if let Some(p) = peer_server {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), p).await;
    }
    // Let queued Events go out briefly.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), publisher).await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), server).await;
    tracing::info!("stopped");
    Ok(())
}

fn read_peer_key_file(path: &str) -> anyhow::Result<PeerKey> {
    use anyhow::Context;
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read --peer-key-file {path}"))?;
    PeerKey::from_bytes(&bytes).map_err(|e| anyhow::anyhow!("--peer-key-file {path}: {e}"))
}

/// Serve `app` on `listener` until `shutdown` turns true.
fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = shutdown.wait_for(|s| *s).await;
            })
            .await
    })
}

async fn wait_for_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

/// This agent's grantor of the permit protocol (`docs/permits.md`), its
/// memory in --state-dir. Not yet consulted by any holder: it answers
/// renewals and stops so that the peer path can be exercised. `None` (and
/// said) when its memory has no place.
fn start_grantor(
    config: &kube_fencer::config::Config,
    boot: Option<&str>,
) -> Option<Arc<kube_fencer::peers::permit::Grants>> {
    use kube_fencer::decide::permit::{grantor, timings::Timings};
    use kube_fencer::peers::permit::{Grants, memory};
    let revoke = Timings::default().revoke();
    let quarantine = grantor::quarantine(revoke.ack_window, revoke.horizon(), revoke.drift);
    let file = memory::path(&config.agent.state_dir, config.node_name());
    match Grants::start(Some(file), boot, quarantine) {
        Ok(g) => Some(g),
        Err(e) => {
            tracing::warn!(error = %e, "the grantor cannot keep its memory: it refuses renewals and stops");
            None
        }
    }
}

/// The API client, after a first request that proves address, credentials
/// and RBAC. An API server out of reach is fatal only to an agent that has
/// not run in this boot yet: one restarted within the boot (its state is in
/// --state-dir) may be on a node cut off right now, and must carry on from
/// its peers and its persisted checks.
async fn connect(config: &kube_fencer::config::Config) -> anyhow::Result<kube::Client> {
    use kube_fencer::agent::state_dir;
    use kube_fencer::k8s::startup;
    let node = config.node_name();
    let boot = std::fs::read_to_string(&config.agent.boot_id_file).ok();
    let state = state_dir::path(&config.agent.state_dir, node);
    if state_dir::load(&state, boot.as_deref().map(str::trim)).is_some() {
        // Restarted within the boot: resume at once, without waiting on a
        // first request (the node may be cut off right now).
        let cfg = startup::config().await?;
        return Ok(kube::Client::try_from(cfg)?);
    }
    Ok(startup::connect(node, std::time::Duration::from_secs(15)).await?)
}
