//! The resolved model: every host, pod, service and router with its allocated
//! addresses and runtime names. Built from the schema by `build`, checked as a graph
//! by `graph`. Serialized as the bundle's `inventory.json`.

mod allocate;
mod build;
pub mod checks;
pub mod dns_check;
pub mod matrix;
mod names;
pub mod policy;
mod report;
pub mod topology_graph;

pub use build::build;
pub use checks::{BodyMatch, Check, CheckProbe, Expectation};
pub use names::Naming;
pub use policy::{LabelSelector, NetworkPolicy, Peer, PolicyPort, PolicyRule, PortRef};

use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Model {
    /// Emulation name ("" for the default emulation).
    pub name: String,
    pub state_dir: String,
    /// Namespace that holds every switch (Linux bridge) of the underlay.
    pub switch_netns: String,
    pub underlay: Underlay,
    pub clusters: Vec<Cluster>,
    pub routers: Vec<Router>,
    /// Cluster DNS (`[dns]`): each cluster then has the implicit pod [`DNS_POD`] and the
    /// Service [`DNS_SERVICE`] in `kube-system`, and every pod a resolv.conf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    /// The topology's `[[checks]]`, resolved; written as `checks.json`, not in the inventory.
    #[serde(skip)]
    pub checks: Vec<Check>,
    /// Rendered warnings of the build (legal input that is likely a mistake), for the CLI to print.
    #[serde(skip)]
    pub warnings: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Underlay {
    pub network: Ipv4Network,
    pub switches: Vec<Switch>,
    pub links: Vec<Link>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Switch {
    pub name: String,
    /// Cluster index, or None for the top switch.
    pub cluster: Option<usize>,
}

/// A veth pair: `a` is the node side (host eth0, or a cluster switch's uplink port),
/// `b` is a port on switch `b_switch`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Link {
    pub a: LinkEnd,
    pub b: LinkEnd,
    pub impairment: Option<Impairment>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinkEnd {
    /// Host or switch name.
    pub node: String,
    pub netns: String,
    pub ifname: String,
    /// The bridge this end is enslaved to, if any.
    pub bridge: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Impairment {
    /// tc rate, e.g. "10mbit".
    pub rate: Option<String>,
    /// tc delay, e.g. "10ms".
    pub delay: Option<String>,
    /// Loss in percent.
    pub loss: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cluster {
    pub name: String,
    pub index: usize,
    pub switch: String,
    pub etcd: Vec<Host>,
    pub workers: Vec<Worker>,
    pub flannel: Flannel,
    pub service_cidr: Ipv4Network,
    /// Declared namespaces (`default` and `kube-system` always exist besides).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<Namespace>,
    pub pods: Vec<Pod>,
    pub services: Vec<Service>,
    pub ingresses: Vec<Ingress>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_policies: Vec<NetworkPolicy>,
}

/// The namespace every unqualified pod and service is in.
pub const DEFAULT_NAMESPACE: &str = "default";
/// The namespace that always exists besides `default` (the cluster DNS runs there).
pub const SYSTEM_NAMESPACE: &str = "kube-system";
/// The label Kubernetes puts on every namespace (since 1.21), holding its name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

pub type Labels = std::collections::BTreeMap<String, String>;

/// The implicit pod that runs each cluster's DNS server (in `kube-system`): the
/// kube-dns add-on's name, whichever server runs in it.
pub const DNS_POD: &str = "kube-dns";
/// The Service in front of it, as kubeadm names it.
pub const DNS_SERVICE: &str = "kube-dns";
/// The label kubeadm's DNS pods carry and the Service selects.
pub const DNS_LABEL: (&str, &str) = ("k8s-app", "kube-dns");

/// `[dns]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    /// The cluster domain (`cluster.local`).
    pub domain: String,
    pub server: DnsServer,
}

/// Which real DNS server serves the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DnsServer {
    /// Debian's dnsmasq: records from a hosts file (SIGHUP re-reads it) and its config.
    Dnsmasq,
    /// CoreDNS with a Corefile and a zone file (its `reload` and `file` plugins).
    Coredns,
}

impl DnsServer {
    pub fn program(self) -> &'static str {
        match self {
            DnsServer::Dnsmasq => "dnsmasq",
            DnsServer::Coredns => "coredns",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Namespace {
    pub name: String,
    /// As declared; [`Cluster::namespace_labels`] adds Kubernetes' own.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
}

/// How a pod or service of `namespace` is named across the emulation: `C0/c1` in
/// `default` (the seed's form), `C0/prod/web` in any other namespace.
pub fn workload_id(cluster: &str, namespace: &str, name: &str) -> String {
    if namespace == DEFAULT_NAMESPACE {
        format!("{cluster}/{name}")
    } else {
        format!("{cluster}/{namespace}/{name}")
    }
}

/// `C0/c1` -> (`C0`, `default`, `c1`); `C0/prod/web` -> (`C0`, `prod`, `web`).
pub fn split_workload_id(id: &str) -> Option<(&str, &str, &str)> {
    let mut parts = id.split('/');
    let (a, b, c) = (parts.next()?, parts.next()?, parts.next());
    if parts.next().is_some() || a.is_empty() || b.is_empty() {
        return None;
    }
    match c {
        None => Some((a, DEFAULT_NAMESPACE, b)),
        Some(c) if !c.is_empty() => Some((a, b, c)),
        Some(_) => None,
    }
}

fn default_namespace() -> String {
    DEFAULT_NAMESPACE.to_string()
}

fn is_default_namespace(ns: &str) -> bool {
    ns == DEFAULT_NAMESPACE
}

impl Cluster {
    /// Whether `name` exists: declared, or `default` / `kube-system`.
    pub fn has_namespace(&self, name: &str) -> bool {
        name == DEFAULT_NAMESPACE || name == SYSTEM_NAMESPACE || self.namespaces.iter().any(|n| n.name == name)
    }

    /// A namespace's labels as Kubernetes has them: the declared ones plus
    /// `kubernetes.io/metadata.name`.
    pub fn namespace_labels(&self, name: &str) -> Labels {
        let mut labels = self
            .namespaces
            .iter()
            .find(|n| n.name == name)
            .map(|n| n.labels.clone())
            .unwrap_or_default();
        labels.insert(NAMESPACE_NAME_LABEL.to_string(), name.to_string());
        labels
    }

    /// Every namespace name: `default`, `kube-system`, then the declared ones.
    pub fn namespace_names(&self) -> Vec<String> {
        let mut out = vec![DEFAULT_NAMESPACE.to_string(), SYSTEM_NAMESPACE.to_string()];
        for n in &self.namespaces {
            if !out.contains(&n.name) {
                out.push(n.name.clone());
            }
        }
        out
    }

    /// A pod's emulation-wide name (`C0/c1`, `C0/prod/web`).
    pub fn pod_id(&self, pod: &Pod) -> String {
        workload_id(&self.name, &pod.namespace, &pod.name)
    }

    pub fn service_id(&self, service: &Service) -> String {
        workload_id(&self.name, &service.namespace, &service.name)
    }

    /// The pod `name` of `namespace`.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<&Pod> {
        self.pods.iter().find(|p| p.name == name && p.namespace == namespace)
    }

    pub fn service(&self, namespace: &str, name: &str) -> Option<&Service> {
        self.services
            .iter()
            .find(|s| s.name == name && s.namespace == namespace)
    }

    pub fn worker(&self, local: &str) -> Option<&Worker> {
        self.workers.iter().find(|w| w.host.local == local)
    }

    pub fn pods_on<'a>(&'a self, worker: &'a Worker) -> impl Iterator<Item = &'a Pod> + 'a {
        self.pods.iter().filter(move |p| p.worker == worker.host.name)
    }

    /// Client URLs of every etcd member.
    pub fn etcd_endpoints(&self) -> Vec<String> {
        self.etcd.iter().map(|e| format!("http://{}:2379", e.ip)).collect()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Host {
    /// Global name, e.g. `C0w1`.
    pub name: String,
    /// Name inside the cluster, e.g. `w1`.
    pub local: String,
    pub netns: String,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub ifname: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Worker {
    pub host: Host,
    /// Flannel subnet reserved for this worker.
    pub subnet: Ipv4Network,
    /// Stable MAC of `flannel.<VNI>`, derived from the worker name.
    pub vtep_mac: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Flannel {
    pub network: Ipv4Network,
    pub subnet_len: u8,
    pub subnet_min: Ipv4Addr,
    pub subnet_max: Ipv4Addr,
    pub backend: String,
    pub vni: u32,
    pub port: u16,
    /// flanneld runs with `-ip-masq` (left out of the inventory when false, the seed's way).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ip_masq: bool,
}

impl Flannel {
    /// The VXLAN device flannel creates.
    pub fn device(&self) -> String {
        format!("flannel.{}", self.vni)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pod {
    pub name: String,
    #[serde(default = "default_namespace", skip_serializing_if = "is_default_namespace")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    /// Global name of the worker host.
    pub worker: String,
    pub netns: String,
    pub ip: Ipv4Addr,
    /// CNI container id.
    pub container_id: String,
    pub command: Option<Vec<String>>,
    pub ports: Vec<u16>,
    /// The container ports that have a name (NetworkPolicy's named ports, SRV records).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub named_ports: Vec<NamedPort>,
    /// Deleted, its endpoints kept (nothing is created for it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// Made by knetsim, not declared (the cluster DNS pod).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub implicit: bool,
    #[serde(default, skip_serializing_if = "RestartPolicy::is_always")]
    pub restart_policy: RestartPolicy,
    #[serde(default, skip_serializing_if = "Probes::is_empty")]
    pub probes: Probes,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedPort {
    pub name: String,
    pub port: u16,
    /// "tcp" or "udp".
    pub protocol: String,
}

/// A pod's Kubernetes probes, run by the supervisor against its workload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<PodProbe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<PodProbe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup: Option<PodProbe>,
}

impl Probes {
    pub fn is_empty(&self) -> bool {
        self.readiness.is_none() && self.liveness.is_none() && self.startup.is_none()
    }
}

/// One probe, with Kubernetes' defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodProbe {
    pub handler: ProbeHandler,
    pub initial_delay_seconds: u32,
    pub period_seconds: u32,
    pub timeout_seconds: u32,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeHandler {
    /// A TCP connect to the pod's address.
    TcpSocket { port: u16 },
    /// An HTTP GET of the pod's address; 200-399 is a success.
    HttpGet { port: u16, path: String },
    /// A command in the pod's network namespace; exit status 0 is a success.
    Exec { command: Vec<String> },
}

/// Kubernetes' `restartPolicy`: whether a workload that ended is started again
/// (by the supervisor, with the kubelet's back-off, or by `knetsim repair`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartPolicy {
    #[default]
    Always,
    /// Left as it ended: its pod is not ready and leaves its services' rules.
    Never,
}

impl RestartPolicy {
    pub fn is_always(&self) -> bool {
        *self == RestartPolicy::Always
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    #[serde(default = "default_namespace", skip_serializing_if = "is_default_namespace")]
    pub namespace: String,
    /// The label selector its endpoints come from (empty: a list of pods).
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub selector: Labels,
    /// 0.0.0.0 for a headless service.
    pub vip: Ipv4Addr,
    /// `clusterIP: None`: no VIP and no kube-proxy rules; DNS names its endpoints.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub headless: bool,
    /// Made by knetsim, not declared (`kube-dns`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub implicit: bool,
    pub endpoints: Vec<Endpoint>,
    /// Empty = IP-wide DNAT.
    pub ports: Vec<ServicePort>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Endpoint {
    /// The pod's name, in the service's namespace.
    pub pod: String,
    pub ip: Ipv4Addr,
    /// Whether the pod is ready (a live fact: [`crate::CompileOptions::not_ready`]).
    /// Only ready endpoints are in the kube-proxy rules.
    #[serde(default = "ready", skip_serializing_if = "is_ready")]
    pub ready: bool,
}

fn ready() -> bool {
    true
}

fn is_ready(r: &bool) -> bool {
    *r
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePort {
    pub port: u16,
    pub target_port: u16,
    /// "tcp" or "udp".
    pub protocol: String,
    /// A named port: DNS gives it an SRV record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ingress {
    pub name: String,
    /// Global name of the worker host.
    pub worker: String,
    pub port: u16,
    pub routes: Vec<IngressRoute>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IngressRoute {
    pub path: String,
    pub service: String,
    pub vip: Ipv4Addr,
    pub port: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Router {
    /// Router id, as skrouterd's `router.id`.
    pub id: String,
    pub cluster: String,
    /// Global name of the worker that runs it.
    pub worker: String,
    pub ip: Ipv4Addr,
    pub inter_router_port: u16,
    /// Whether the inter-router listener requires TLS (some link to it asks for it).
    pub listener_tls: bool,
    pub connectors: Vec<RouterConnector>,
    pub tcp_listeners: Vec<TcpListener>,
    pub tcp_connectors: Vec<TcpConnector>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RouterConnector {
    pub name: String,
    pub to_cluster: String,
    pub host: Ipv4Addr,
    pub port: u16,
    pub cost: u32,
    pub tls: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TcpListener {
    pub name: String,
    pub port: u16,
    pub address: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TcpConnector {
    pub name: String,
    pub host: Ipv4Addr,
    pub port: u16,
    pub address: String,
}

impl Model {
    /// Marks the endpoints of the pods `not_ready` (`C0/c4`) not ready.
    pub fn mark_not_ready(&mut self, not_ready: &std::collections::BTreeSet<String>) {
        for c in &mut self.clusters {
            for s in &mut c.services {
                for e in &mut s.endpoints {
                    e.ready = !not_ready.contains(&workload_id(&c.name, &s.namespace, &e.pod));
                }
            }
        }
    }

    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.name == name)
    }

    pub fn naming(&self) -> Naming {
        Naming::new(&self.name, &self.state_dir)
    }

    /// Every host of every cluster, in declaration order.
    pub fn hosts(&self) -> impl Iterator<Item = (&Cluster, &Host)> {
        self.clusters.iter().flat_map(|c| {
            c.etcd
                .iter()
                .chain(c.workers.iter().map(|w| &w.host))
                .map(move |h| (c, h))
        })
    }
}
