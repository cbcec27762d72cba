//! The operations a plan step performs. Each `Op` variant wraps a struct of its
//! own, and the executor's `System` takes that same struct: the plan hands its
//! steps over typed, with nothing to copy field by field.

pub use crate::model::RestartPolicy;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Op {
    CreateNetns(CreateNetns),
    CreateBridge(CreateBridge),
    CreateVeth(CreateVeth),
    AddAddress(AddAddress),
    AddRoute(AddRoute),
    SetSysctl(SetSysctl),
    Impair(Impair),
    MakeDir(MakeDir),
    WriteFile(WriteFile),
    StartProcess(StartProcess),
    EtcdPut(EtcdPut),
    CniAdd(CniAdd),
    NftLoad(NftLoad),
    Wait(Wait),
    GenerateCerts(GenerateCerts),
}

/// `ip netns add`, with `lo` up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateNetns {
    pub netns: String,
}

/// A Linux bridge (a switch) inside `netns`, up, STP off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateBridge {
    pub netns: String,
    pub name: String,
}

/// A veth pair created with each end directly in its namespace, both ends up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateVeth {
    pub a: VethEnd,
    pub b: VethEnd,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VethEnd {
    pub netns: String,
    pub ifname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddAddress {
    pub netns: String,
    pub ifname: String,
    pub cidr: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddRoute {
    pub netns: String,
    pub dst: String,
    pub dev: String,
}

/// A `net.*` sysctl inside a namespace (never the root one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetSysctl {
    pub netns: String,
    pub key: String,
    pub value: String,
}

/// Shape a link (tbf for rate; netem for delay/loss where the kernel has it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Impair {
    pub netns: String,
    pub ifname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MakeDir {
    pub path: String,
}

/// Install a bundle artifact at a runtime path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteFile {
    pub path: String,
    pub artifact: String,
}

/// Start a long-running process inside `netns`, detached, logging to `log`.
/// If `argv[0]` is not on PATH and `builtin` is set, run `knetsim <builtin> argv[1..]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartProcess {
    pub name: String,
    pub netns: String,
    pub argv: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builtin: Option<String>,
    pub log: String,
    /// What the process writes that must go before it starts again, so that it
    /// begins afresh: etcd's data directory (a restarted member would otherwise
    /// keep its old membership) and the file its readiness probe waits for
    /// (flannel's subnet file, else the probe would pass on the old one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<String>,
    /// Files it reads again on SIGHUP (dnsmasq's hosts file): when only these change,
    /// a live change reloads it instead of restarting it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reloads: Vec<String>,
    /// Whether it is started again once it ended (a pod's `restart_policy`).
    #[serde(default, skip_serializing_if = "RestartPolicy::is_always")]
    pub restart: RestartPolicy,
    pub ready: Probe,
}

/// Put a key whose value is an artifact (or a member of a JSON artifact).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdPut {
    pub netns: String,
    pub endpoints: Vec<String>,
    pub key: String,
    pub artifact: String,
    /// JSON pointer into the artifact, e.g. `/value`; empty = the whole file.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pointer: String,
}

/// CNI ADD of `network` (a conf in `conf_dir`) for a pod namespace, run in the
/// worker as a kubelet would issue it. A CNI DEL takes the same request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniAdd {
    pub worker_netns: String,
    pub conf_dir: String,
    pub network: String,
    pub container_id: String,
    pub pod_netns: String,
    pub ifname: String,
    /// Passed as CNI_ARGS `IP=`; the result must carry exactly this address.
    pub ip: String,
}

/// `nft -f` of an artifact inside a namespace (atomic).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NftLoad {
    pub netns: String,
    pub artifact: String,
    pub path: String,
}

/// Block until the probe succeeds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wait {
    pub probe: Probe,
}

/// Generate a TLS key and certificate in `dir`: without `ca_dir`, a self-signed CA
/// (`ca.crt`, `ca.key`); with it, `tls.crt` and `tls.key` for `common_name` with IP
/// SANs `ip_sans`, signed by the CA in `ca_dir`, and a copy of its `ca.crt`.
/// Keys are written mode 0600.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerateCerts {
    pub dir: String,
    pub common_name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_sans: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_dir: Option<String>,
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
