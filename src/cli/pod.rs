//! `knetsim pod add|rm`: create or delete a pod of a running emulation (its
//! namespace, CNI ADD/DEL, workload), by editing the stored topology.

use super::change::{edit_running, Running};
use super::edit::{self, List};
use super::host_local;
use super::Target;
use knetsim_compiler::artifacts::paths::{self, INVENTORY};
use knetsim_compiler::model::DEFAULT_NAMESPACE;
use toml_edit::{InlineTable, Value};

#[derive(clap::Args)]
pub struct PodArgs {
    #[command(subcommand)]
    command: PodCommand,
}

#[derive(clap::Subcommand)]
enum PodCommand {
    /// Create a pod on a worker: namespace, CNI ADD (the next address of the worker's subnet), workload.
    Add(AddArgs),
    /// Delete a pod (CNI DEL frees its address) and take it out of every service's endpoints.
    Rm(RmArgs),
}

#[derive(clap::Args)]
struct AddArgs {
    /// CLUSTER/POD (namespace default) or CLUSTER/NAMESPACE/POD, e.g. C0/c10, C0/prod/web.
    pod: String,
    /// Local worker name, e.g. w1.
    #[arg(long)]
    worker: String,
    /// A label KEY=VALUE (repeatable), e.g. --label app=web.
    #[arg(long, value_parser = edit::parse_label)]
    label: Vec<(String, String)>,
    /// A port the workload listens on (readiness is a TCP connect to the first).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    port: Vec<u16>,
    #[command(flatten)]
    target: Target,
    /// Print the actions and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// The pod's workload (argv, no shell).
    #[arg(last = true)]
    command: Vec<String>,
}

#[derive(clap::Args)]
struct RmArgs {
    /// CLUSTER/POD or CLUSTER/NAMESPACE/POD, e.g. C0/c2.
    pod: String,
    /// Leave the pod's endpoint in the services' rules (stale, as in the deck's chapter 3:
    /// some connections to the VIP then fail). The pod is kept in the topology as `deleted = true`.
    #[arg(long)]
    keep_endpoints: bool,
    #[command(flatten)]
    target: Target,
    /// Print the actions and change nothing.
    #[arg(long)]
    dry_run: bool,
}

pub fn pod(a: PodArgs) -> super::error::Outcome {
    match a.command {
        PodCommand::Add(a) => edit_running(&a.target, a.dry_run, |r| add(r, &a)),
        PodCommand::Rm(a) => edit_running(&a.target, a.dry_run, |r| rm(r, &a)),
    }
}

fn add(running: &Running, a: &AddArgs) -> Result<String, String> {
    let (cluster, ns, name) = edit::split_id(&a.pod)?;
    let id = &a.pod;
    let mut doc = edit::parse(&running.text)?;
    let c = edit::cluster_mut(&mut doc, cluster)?;
    let mut pods = List::of(c, "pods", true).ok_or("`pods` of the cluster is not a list")?;
    if let Some(i) = pods.position(ns, name) {
        return Err(if pods.bool_field(i, "deleted") {
            format!(
                "pod {id} was deleted with --keep-endpoints and its stale endpoint remains: \
                 `knetsim pod rm {id}` first"
            )
        } else {
            format!("pod {id} already exists")
        });
    }
    let mut t = InlineTable::new();
    t.insert("name", name.into());
    if ns != DEFAULT_NAMESPACE {
        t.insert("namespace", ns.into());
    }
    if !a.label.is_empty() {
        t.insert("labels", Value::InlineTable(edit::labels_table(&a.label)));
    }
    t.insert("worker", a.worker.as_str().into());
    if !a.command.is_empty() {
        t.insert("command", edit::string_array(&a.command));
    }
    if !a.port.is_empty() {
        let mut ports = toml_edit::Array::new();
        for p in &a.port {
            ports.push(i64::from(*p));
        }
        t.insert("ports", Value::Array(ports));
    }
    if let Some(ip) = host_local_next(running, cluster, &a.worker) {
        t.insert("ip", ip.to_string().into());
    }
    pods.push(t);
    Ok(doc.to_string())
}

/// The address the real host-local would give the next pod on `worker` (see
/// `host_local`); None before the worker ever reserved one, when the compiler's
/// first free address is host-local's answer too.
fn host_local_next(running: &Running, cluster: &str, worker: &str) -> Option<std::net::Ipv4Addr> {
    let inv: serde_json::Value = serde_json::from_str(running.bundle.get(INVENTORY)?).ok()?;
    let c = inv["clusters"].as_array()?.iter().find(|c| c["name"] == cluster)?;
    let w = c["workers"].as_array()?.iter().find(|w| w["host"]["local"] == worker)?;
    let global = w["host"]["name"].as_str()?;
    let (network, prefix) = w["subnet"].as_str()?.split_once('/')?;
    let conf = running.bundle.get(&paths::cni_config_of(cluster, global))?;
    let last = std::fs::read_to_string(host_local::last_reserved_path(conf)?).ok()?;
    let used = c["pods"]
        .as_array()?
        .iter()
        .filter(|p| p["worker"] == global)
        .filter_map(|p| p["ip"].as_str()?.parse().ok())
        .collect();
    host_local::next_after(
        network.parse().ok()?,
        prefix.parse().ok()?,
        last.trim().parse().ok()?,
        &used,
    )
}

/// Addresses of the running pods of a cluster: (namespace/name, global worker, ip).
fn running_addresses(running: &Running, cluster: &str) -> Vec<(String, String, String)> {
    let inv: serde_json::Value = running
        .bundle
        .get(INVENTORY)
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default();
    inv["clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["name"] == cluster)
        .flat_map(|c| c["pods"].as_array().cloned().unwrap_or_default())
        .map(|p| {
            let s = |k: &str| p[k].as_str().unwrap_or_default().to_string();
            let ns = p["namespace"].as_str().unwrap_or(DEFAULT_NAMESPACE);
            (format!("{ns}/{}", s("name")), s("worker"), s("ip"))
        })
        .collect()
}

fn rm(running: &Running, a: &RmArgs) -> Result<String, String> {
    let (cluster, ns, name) = edit::split_id(&a.pod)?;
    let id = &a.pod;
    let addresses = running_addresses(running, cluster);
    let mut doc = edit::parse(&running.text)?;
    let c = edit::cluster_mut(&mut doc, cluster)?;
    let mut pods = List::of(c, "pods", false).ok_or_else(|| format!("cluster {cluster} has no pods"))?;
    let i = pods.position(ns, name).ok_or_else(|| format!("no pod {id}"))?;
    if a.keep_endpoints {
        if pods.bool_field(i, "deleted") {
            return Err(format!("pod {id} is already deleted (its endpoint is stale)"));
        }
        pods.set_field(i, "deleted", Value::from(true));
        return Ok(doc.to_string());
    }
    // The pods after it on the same worker keep their addresses: pin them.
    let worker = pods.str_field(i, "worker").unwrap_or_default();
    for j in i + 1..pods.len() {
        if pods.str_field(j, "worker").as_deref() != Some(worker.as_str()) || pods.str_field(j, "ip").is_some() {
            continue;
        }
        let Some(pod) = pods.str_field(j, "name") else { continue };
        let pod = format!("{}/{pod}", pods.namespace(j));
        if let Some((_, _, ip)) = addresses.iter().find(|(n, _, _)| *n == pod) {
            pods.set_field(j, "ip", Value::from(ip.as_str()));
        }
    }
    pods.remove(i);
    edit::drop_endpoint(c, ns, name);
    let dropped = super::edit_checks::drop_checks_naming(&mut doc, cluster, ns, name);
    super::edit_checks::report_dropped(&dropped, &a.pod);
    Ok(doc.to_string())
}
