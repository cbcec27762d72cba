//! The action plan: typed, ordered, shell-free steps with explicit dependencies.
//! Steps are listed in a valid order; `after` lets the executor run independent
//! steps concurrently. Every command is an argv array, never `sh -c`.

mod build;
pub mod delta;
mod filter;
mod render;

pub use build::build;
pub use delta::{delta, Action, Unsupported};
pub use filter::Component;
pub use render::to_text;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Emulation name ("" = default).
    pub name: String,
    pub state_dir: String,
    /// Every namespace the plan creates (teardown deletes these).
    pub namespaces: Vec<String>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Unique, stable id, e.g. `netns:C0w1`, `cni-add:C0/c1`.
    pub id: String,
    /// Ids of steps that must be complete before this one starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    #[serde(flatten)]
    pub op: Op,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Op {
    /// `ip netns add`, with `lo` up.
    CreateNetns {
        netns: String,
    },
    /// A Linux bridge (a switch) inside `netns`, up, STP off.
    CreateBridge {
        netns: String,
        name: String,
    },
    /// A veth pair created with each end directly in its namespace, both ends up.
    CreateVeth {
        a: VethEnd,
        b: VethEnd,
    },
    AddAddress {
        netns: String,
        ifname: String,
        cidr: String,
    },
    AddRoute {
        netns: String,
        dst: String,
        dev: String,
    },
    /// A `net.*` sysctl inside a namespace (never the root one).
    SetSysctl {
        netns: String,
        key: String,
        value: String,
    },
    /// Shape a link (tbf for rate; netem for delay/loss where the kernel has it).
    Impair {
        netns: String,
        ifname: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        rate: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        delay: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        loss: Option<f64>,
    },
    MakeDir {
        path: String,
    },
    /// Install a bundle artifact at a runtime path.
    WriteFile {
        path: String,
        artifact: String,
    },
    /// Start a long-running process inside `netns`, detached, logging to `log`.
    /// If `argv[0]` is not on PATH and `builtin` is set, run `knetsim <builtin> argv[1..]`.
    StartProcess {
        name: String,
        netns: String,
        argv: Vec<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        builtin: Option<String>,
        log: String,
        ready: Probe,
    },
    /// Put a key whose value is an artifact (or a member of a JSON artifact).
    EtcdPut {
        netns: String,
        endpoints: Vec<String>,
        key: String,
        artifact: String,
        /// JSON pointer into the artifact, e.g. `/value`; empty = the whole file.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pointer: String,
    },
    /// CNI ADD of `network` (a conf in `conf_dir`) for a pod namespace, run in the worker.
    CniAdd {
        worker_netns: String,
        conf_dir: String,
        network: String,
        container_id: String,
        pod_netns: String,
        ifname: String,
        /// Passed as CNI_ARGS `IP=`; the result must carry exactly this address.
        ip: String,
    },
    /// `nft -f` of an artifact inside a namespace (atomic).
    NftLoad {
        netns: String,
        artifact: String,
        path: String,
    },
    /// Block until the probe succeeds.
    Wait {
        probe: Probe,
    },
    /// Generate a TLS key and certificate in `dir`: without `ca_dir`, a self-signed CA
    /// (`ca.crt`, `ca.key`); with it, `tls.crt` and `tls.key` for `common_name` with IP
    /// SANs `ip_sans`, signed by the CA in `ca_dir`, and a copy of its `ca.crt`.
    /// Keys are written mode 0600.
    GenerateCerts {
        dir: String,
        common_name: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ip_sans: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ca_dir: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VethEnd {
    pub netns: String,
    pub ifname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "probe", rename_all = "kebab-case")]
pub enum Probe {
    /// The process is alive after a short grace period.
    Alive,
    /// HTTP GET inside `netns` returns 2xx.
    HttpGet { netns: String, url: String },
    /// A TCP connect inside `netns` succeeds.
    TcpConnect { netns: String, addr: String },
    /// A file exists (e.g. flannel's subnet.env).
    FileExists { path: String },
    /// `count` routes via device `dev` exist in `netns` (flannel has learnt its peers).
    RoutesVia { netns: String, dev: String, count: usize },
}

impl Plan {
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.id == id)
    }
}
