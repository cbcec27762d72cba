//! `knetsim cni add|del|check NETWORK NETNS`: the deck's cnitool step, done by
//! knetsim's own CNI runtime (`knetsim_executor::cni`). As with cnitool, the network
//! configuration named NETWORK is looked up in `$NETCONFPATH` (default
//! `/etc/cni/net.d`), plugins in `$CNI_PATH` (default `/usr/lib/cni:/opt/cni/bin`),
//! and `$CNI_ARGS` / `$CNI_IFNAME` apply; options override them. The plugins run in
//! the current network namespace (`ip netns exec C0w1 knetsim cni ...`, as the deck
//! runs cnitool on the worker) or in the one named by `--in`.

use knetsim_executor::cni::{
    default_container_id, netns_path, parse_cni_args, split_path, CniRuntime, Error, NetworkConf, RuntimeConf,
};
use knetsim_executor::system::linux::in_netns;
use std::path::{Path, PathBuf};

const DEFAULT_CONF_DIR: &str = "/etc/cni/net.d";
const DEFAULT_CNI_PATH: &str = "/usr/lib/cni:/opt/cni/bin";
/// libcni's cache directory, used when the configuration directory has no `cni-cache`.
const DEFAULT_CACHE_DIR: &str = "/var/lib/cni";

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Attach NETNS to NETWORK (CNI ADD) and print the result.
    Add(Attach),
    /// Detach NETNS from NETWORK (CNI DEL).
    Del(Attach),
    /// Check that NETNS is attached to NETWORK as the cached result says (CNI CHECK).
    Check(Attach),
    /// Ask a plugin which CNI versions it supports (CNI VERSION).
    Version {
        /// The plugin's type, e.g. `bridge` or `flannel`.
        plugin: String,
    },
}

#[derive(clap::Args)]
struct Attach {
    /// The network's name (knetsim: the worker's, e.g. `C0w1`).
    network: String,
    /// The container's network namespace: a name (`k0_c1`) or a path (`/var/run/netns/k0_c1`).
    netns: String,
    /// Where the network configuration is (default: $NETCONFPATH, else /etc/cni/net.d; knetsim: /tmp/knetsim/C0w1).
    #[arg(long, value_name = "DIR")]
    conf_dir: Option<PathBuf>,
    /// The interface inside the container (default: $CNI_IFNAME, else eth0).
    #[arg(long, short = 'i')]
    ifname: Option<String>,
    /// CNI_ARGS, e.g. `IgnoreUnknown=1;IP=11.10.0.9` (default: $CNI_ARGS).
    #[arg(long = "args", value_name = "K=V;...")]
    cni_args: Option<String>,
    /// The container id (default: for del/check the one of the cached attachment of NETNS, e.g. the
    /// one `knetsim up` used; otherwise cnitool's, derived from the namespace path).
    #[arg(long)]
    container_id: Option<String>,
    /// Where results are cached (default: <conf dir>/cni-cache if it exists, as in a knetsim worker's
    /// state, else /var/lib/cni as cnitool).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Run the plugins inside this network namespace (a worker's, e.g. `C0w1`) instead of the current one.
    #[arg(long = "in", value_name = "NETNS")]
    in_netns: Option<String>,
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.into())
}

fn plugin_dirs() -> Vec<PathBuf> {
    split_path(&env_or("CNI_PATH", DEFAULT_CNI_PATH))
}

pub fn cni(args: Args) -> i32 {
    let outcome = match args.action {
        Action::Add(a) => attach("ADD", a),
        Action::Del(a) => attach("DEL", a),
        Action::Check(a) => attach("CHECK", a),
        Action::Version { plugin } => {
            let runtime = CniRuntime::new(plugin_dirs(), DEFAULT_CACHE_DIR);
            runtime
                .version(&plugin)
                .map(|info| serde_json::to_string_pretty(&info).expect("version info serializes"))
                .map_err(|e| e.to_string())
        }
    };
    match outcome {
        Ok(out) => {
            if !out.is_empty() {
                println!("{out}");
            }
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

fn attach(command: &str, a: Attach) -> Result<String, String> {
    let conf_dir = a
        .conf_dir
        .unwrap_or_else(|| PathBuf::from(env_or("NETCONFPATH", DEFAULT_CONF_DIR)));
    let net = NetworkConf::load(&conf_dir, &a.network).map_err(|e| e.to_string())?;
    let cache_dir = a.cache_dir.unwrap_or_else(|| {
        let worker_cache = conf_dir.join("cni-cache");
        if worker_cache.is_dir() {
            worker_cache
        } else {
            PathBuf::from(DEFAULT_CACHE_DIR)
        }
    });
    let runtime = CniRuntime::new(plugin_dirs(), cache_dir);
    let netns = netns_path(&a.netns);
    if !netns.exists() {
        return Err(format!("network namespace {} does not exist", netns.display()));
    }
    let ifname = a.ifname.unwrap_or_else(|| env_or("CNI_IFNAME", "eth0"));
    // DEL and CHECK of an attachment made earlier (by `knetsim up` or a cnitool-style
    // ADD): its container id and namespace path as ADD had them.
    let cached = match command {
        "ADD" => None,
        _ => runtime.cached_attachment(&net.name, &netns, &ifname),
    };
    let (container_id, netns) = match (a.container_id, cached) {
        (Some(id), Some((cached_id, ns))) if id == cached_id => (id, ns),
        (Some(id), _) => (id, netns.display().to_string()),
        (None, Some(attachment)) => attachment,
        (None, None) => (default_container_id(&netns), netns.display().to_string()),
    };
    let mut rt = RuntimeConf::new(container_id, netns, ifname);
    let cni_args = a.cni_args.unwrap_or_else(|| env_or("CNI_ARGS", ""));
    rt.args = parse_cni_args(&cni_args).map_err(|e| e.to_string())?;

    let run = || -> Result<String, Error> {
        match command {
            "ADD" => {
                let result = runtime.add(&net, &rt)?;
                Ok(serde_json::to_string_pretty(result.json()).expect("a result serializes"))
            }
            "DEL" => runtime.del(&net, &rt).map(|()| String::new()),
            _ => runtime.check(&net, &rt).map(|()| String::new()),
        }
    };
    match &a.in_netns {
        Some(ns) => in_netns(ns, || Ok(run())).map_err(|e| e.to_string())?,
        None => {
            if in_root_netns() {
                eprintln!(
                    "note: the plugins run in this (the root) network namespace; use --in WORKER to run them in a worker's"
                );
            }
            run()
        }
    }
    .map_err(|e| e.to_string())
}

/// Whether this process is in the initial network namespace.
fn in_root_netns() -> bool {
    let ns = |p: &str| std::fs::read_link(Path::new(p)).ok();
    matches!((ns("/proc/self/ns/net"), ns("/proc/1/ns/net")), (Some(a), Some(b)) if a == b)
}
