//! The I/O of `kube-fencer status`: list what it needs, hand it to
//! [`super::Status::build`], print.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use clap::{Parser, ValueEnum};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::ListParams;
use kube::{Api, Client};

use super::summary::{LEADER_STATUS_ANNOTATION, LeaderSummary, rfc3339};
use super::{Inputs, LeaderLease, NodeEvent, Status};
use crate::k8s::NODE_LEASE_NAMESPACE;
use crate::k8s::facts::node_facts;
use crate::observability::events::REPORTER;

/// What kube-fencer sees: every node's phase, heartbeat, safe time and
/// fencing capability, the leader and the storm guard; with NODE, that
/// node's timeline.
#[derive(Parser, Debug)]
#[command(name = "kube-fencer status", version)]
pub struct StatusArgs {
    /// Show this node's state and its timeline of kube-fencer Events.
    #[arg(value_name = "NODE")]
    pub node: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Print again every --interval until interrupted.
    #[arg(short = 'w', long)]
    pub watch: bool,
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Namespace kube-fencer runs in (its leader Lease is there).
    #[arg(short = 'n', long, default_value = "kube-fencer")]
    pub namespace: String,
    /// Name of the leader Lease (the agents' --leader-lease-name).
    #[arg(long, default_value = "kube-fencer-leader")]
    pub leader_lease_name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

fn to_system(t: &k8s_openapi::jiff::Timestamp) -> SystemTime {
    SystemTime::from(*t)
}

fn event_time(e: &Event) -> Option<SystemTime> {
    e.series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref())
        .map(|t| to_system(&t.0))
        .or_else(|| e.event_time.as_ref().map(|t| to_system(&t.0)))
        .or_else(|| e.last_timestamp.as_ref().map(|t| to_system(&t.0)))
        .or_else(|| e.first_timestamp.as_ref().map(|t| to_system(&t.0)))
}

async fn read(client: &Client, args: &StatusArgs) -> anyhow::Result<Inputs> {
    use anyhow::Context;
    let lp = ListParams::default();
    let nodes: Vec<_> = Api::<Node>::all(client.clone())
        .list(&lp)
        .await
        .context("cannot list Nodes")?
        .items
        .iter()
        .map(node_facts)
        .collect();
    let renewals = Api::<Lease>::namespaced(client.clone(), NODE_LEASE_NAMESPACE)
        .list(&lp)
        .await
        .context("cannot list the kubelets' Leases in kube-node-lease")?
        .items
        .into_iter()
        .filter_map(|l| {
            let renewed = l.spec.as_ref()?.renew_time.as_ref()?;
            Some((l.metadata.name?, to_system(&renewed.0)))
        })
        .collect();
    let lease = Api::<Lease>::namespaced(client.clone(), &args.namespace)
        .get_opt(&args.leader_lease_name)
        .await
        .with_context(|| {
            format!(
                "cannot read the leader Lease {}/{}",
                args.namespace, args.leader_lease_name
            )
        })?;
    let leader = match lease {
        None => LeaderLease::default(),
        Some(l) => {
            let spec = l.spec.unwrap_or_default();
            LeaderLease {
                holder: spec.holder_identity.filter(|h| !h.is_empty()),
                renewed: spec.renew_time.map(|t| to_system(&t.0)),
                duration: Duration::from_secs(
                    spec.lease_duration_seconds.unwrap_or(0).max(0) as u64
                ),
                summary: l
                    .metadata
                    .annotations
                    .and_then(|a| a.get(LEADER_STATUS_ANNOTATION).cloned())
                    .map(|v| serde_json::from_str::<LeaderSummary>(&v).map_err(|e| e.to_string())),
            }
        }
    };
    let mut selector = "involvedObject.kind=Node".to_string();
    if let Some(n) = &args.node {
        selector.push_str(&format!(",involvedObject.name={n}"));
    }
    let mut events: BTreeMap<String, Vec<NodeEvent>> = BTreeMap::new();
    let listed = Api::<Event>::namespaced(client.clone(), "default")
        .list(&ListParams::default().fields(&selector))
        .await
        .context("cannot list Events in namespace default")?;
    for e in listed.items {
        let ours = e.reporting_component.as_deref() == Some(REPORTER)
            || e.source.as_ref().and_then(|s| s.component.as_deref()) == Some(REPORTER);
        let (Some(node), Some(at)) = (e.involved_object.name.clone(), event_time(&e)) else {
            continue;
        };
        if !ours {
            continue;
        }
        events.entry(node).or_default().push(NodeEvent {
            time: rfc3339(at),
            kind: e.type_.unwrap_or_default(),
            reason: e.reason.unwrap_or_default(),
            message: e.message.unwrap_or_default(),
            at,
        });
    }
    for list in events.values_mut() {
        list.sort_by_key(|e| e.at);
    }
    let mut pods = BTreeMap::new();
    for node in Status::fencing_nodes(&nodes) {
        let on_node = Api::<Pod>::all(client.clone())
            .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
            .await
            .with_context(|| format!("cannot list the pods on {node}"))?;
        let stateful: Vec<String> = on_node
            .items
            .iter()
            .filter(|p| {
                p.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.kind == "StatefulSet")
            })
            .map(|p| {
                format!(
                    "{}/{}",
                    p.metadata.namespace.as_deref().unwrap_or_default(),
                    p.metadata.name.as_deref().unwrap_or_default()
                )
            })
            .collect();
        pods.insert(node, stateful);
    }
    let permits = read_permits(client, &args.namespace).await?;
    Ok(Inputs {
        now: Some(SystemTime::now()),
        nodes,
        renewals,
        leader,
        events,
        pods,
        permits,
    })
}

/// The permit objects in the agents' namespace (one list request), by
/// node.
async fn read_permits(
    client: &kube::Client,
    namespace: &str,
) -> anyhow::Result<BTreeMap<String, crate::decide::permit::object::PermitState>> {
    use crate::decide::permit::object::{self, LABEL};
    use anyhow::Context;
    let prefix = object::name("");
    let listed = Api::<Lease>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("{LABEL}=true")))
        .await
        .with_context(|| {
            format!("cannot list the permit objects (Leases) in namespace {namespace}")
        })?;
    Ok(listed
        .items
        .iter()
        .filter_map(|l| {
            let node = l.metadata.name.as_deref()?.strip_prefix(&prefix)?;
            Some((
                node.to_string(),
                object::read(l.metadata.annotations.as_ref()),
            ))
        })
        .collect())
}

fn render(args: &StatusArgs, inputs: &Inputs) -> anyhow::Result<String> {
    let status = Status::build(inputs);
    match (&args.node, args.output) {
        (None, Output::Table) => Ok(status.table()),
        (None, Output::Json) => Ok(serde_json::to_string_pretty(&status)? + "\n"),
        (Some(node), output) => {
            let Some(row) = status.nodes.iter().find(|n| &n.name == node) else {
                anyhow::bail!("there is no Node {node}");
            };
            let events = inputs.events.get(node).cloned().unwrap_or_default();
            match output {
                Output::Table => Ok(status.timeline(node, &events).unwrap_or_default()),
                Output::Json => Ok(serde_json::to_string_pretty(&serde_json::json!({
                    "leader": status.leader,
                    "node": row,
                    "timeline": events,
                }))? + "\n"),
            }
        }
    }
}

/// Reads and prints once, or every `--interval` with `--watch`; an error
/// is for the caller to report.
pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let cfg = crate::k8s::startup::config().await?;
    let client = Client::try_from(cfg)?;
    loop {
        let inputs = read(&client, &args).await?;
        let text = render(&args, &inputs)?;
        if args.watch && args.output == Output::Table {
            // Clear the screen, as `watch` does.
            print!("\x1b[H\x1b[2J{text}");
        } else {
            print!("{text}");
        }
        if !args.watch {
            return Ok(());
        }
        tokio::time::sleep(args.interval).await;
    }
}
