//! `knetsim svc add|rm`: add or remove a service of a running emulation (the
//! kube-proxy rules of its cluster's workers are reloaded), by editing the stored topology.

use super::change::{edit_running, Running};
use super::edit::{self, List};
use super::Target;
use toml_edit::{Array, InlineTable, Value};

#[derive(clap::Args)]
pub struct SvcArgs {
    #[command(subcommand)]
    command: SvcCommand,
}

#[derive(clap::Subcommand)]
enum SvcCommand {
    /// Add a service (a VIP load-balanced over pods) to a cluster.
    Add(AddArgs),
    /// Remove a service.
    Rm(RmArgs),
}

#[derive(clap::Args)]
struct AddArgs {
    /// CLUSTER/SERVICE or CLUSTER/NAMESPACE/SERVICE, e.g. C0/web.
    service: String,
    /// The VIP (default: the next free one of the cluster's service CIDR).
    #[arg(long)]
    vip: Option<String>,
    /// Backend pods of the service's namespace, comma-separated ...
    #[arg(
        long,
        value_delimiter = ',',
        required_unless_present = "selector",
        conflicts_with = "selector"
    )]
    pods: Vec<String>,
    /// ... or a label selector KEY=VALUE (repeatable), as a Kubernetes Service's.
    #[arg(long, value_parser = edit::parse_label)]
    selector: Vec<(String, String)>,
    /// Service ports (default: IP-wide, pingable).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    port: Vec<u16>,
    #[command(flatten)]
    target: Target,
    /// Print the actions and change nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(clap::Args)]
struct RmArgs {
    /// CLUSTER/SERVICE or CLUSTER/NAMESPACE/SERVICE.
    service: String,
    #[command(flatten)]
    target: Target,
    /// Print the actions and change nothing.
    #[arg(long)]
    dry_run: bool,
}

pub fn svc(a: SvcArgs) -> super::error::Outcome {
    match a.command {
        SvcCommand::Add(a) => edit_running(&a.target, a.dry_run, |r| add(r, &a)),
        SvcCommand::Rm(a) => edit_running(&a.target, a.dry_run, |r| rm(r, &a)),
    }
}

fn add(running: &Running, a: &AddArgs) -> Result<String, String> {
    let (cluster, ns, name) = edit::split_id(&a.service)?;
    let mut doc = edit::parse(&running.text)?;
    let c = edit::cluster_mut(&mut doc, cluster)?;
    let mut services = List::of(c, "services", true).ok_or("`services` of the cluster is not a list")?;
    if services.position(ns, name).is_some() {
        return Err(format!("service {} already exists", a.service));
    }
    let mut t = InlineTable::new();
    t.insert("name", name.into());
    if ns != knetsim_compiler::model::DEFAULT_NAMESPACE {
        t.insert("namespace", ns.into());
    }
    if let Some(vip) = &a.vip {
        t.insert("vip", vip.as_str().into());
    }
    if a.selector.is_empty() {
        t.insert("pods", edit::string_array(&a.pods));
    } else {
        t.insert("selector", Value::InlineTable(edit::labels_table(&a.selector)));
    }
    if !a.port.is_empty() {
        let mut ports = Array::new();
        for p in &a.port {
            ports.push(i64::from(*p));
        }
        t.insert("ports", Value::Array(ports));
    }
    services.push(t);
    Ok(doc.to_string())
}

fn rm(running: &Running, a: &RmArgs) -> Result<String, String> {
    let (cluster, ns, name) = edit::split_id(&a.service)?;
    let mut doc = edit::parse(&running.text)?;
    let c = edit::cluster_mut(&mut doc, cluster)?;
    let mut services = List::of(c, "services", false).ok_or_else(|| format!("cluster {cluster} has no services"))?;
    let i = services
        .position(ns, name)
        .ok_or_else(|| format!("no service {}", a.service))?;
    services.remove(i);
    let dropped = super::edit_checks::drop_checks_naming(&mut doc, cluster, ns, name);
    super::edit_checks::report_dropped(&dropped, &a.service);
    Ok(doc.to_string())
}
