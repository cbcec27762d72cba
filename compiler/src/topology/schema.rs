//! Serde types for the topology file. Values that need checking keep their span
//! (`Spanned`) so every error can point at `file:line:col`.

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use std::fmt;
pub use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologySpec {
    #[serde(default)]
    pub underlay: UnderlaySpec,
    /// Spanned so an empty `clusters = []` can be pointed at.
    pub clusters: Option<Spanned<Vec<ClusterSpec>>>,
    pub interconnect: Option<InterconnectSpec>,
    /// Validation probes run by `knetsim test` (and at the end of `knetsim up`).
    #[serde(default)]
    pub checks: Vec<CheckSpec>,
    /// Cluster DNS (opt-in): one DNS server per cluster behind the `kube-dns` Service.
    pub dns: Option<Spanned<DnsSpec>>,
}

/// `[dns]`: the cluster domain and which real DNS server serves it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSpec {
    /// The cluster domain (kubelet's `clusterDomain`), default `cluster.local`.
    pub domain: Option<Spanned<String>>,
    /// `auto` (default: CoreDNS when it is on PATH, else dnsmasq), `dnsmasq` or `coredns`.
    pub server: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnderlaySpec {
    /// Network the hosts are numbered in, Mininet style (default 10.0.0.0/8).
    pub network: Option<Spanned<String>>,
    /// Name of the switch every cluster switch links to (default "t0").
    pub top_switch: Option<Spanned<String>>,
    #[serde(default)]
    pub impairments: Vec<ImpairmentSpec>,
}

/// Shaping of one node's uplink (a host's link to its cluster switch, or a cluster
/// switch's link to the top switch).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImpairmentSpec {
    pub uplink: Spanned<String>,
    /// e.g. "10mbit", "1gbit", "500kbit"
    pub rate: Option<Spanned<String>>,
    /// e.g. "10ms", "250us"
    pub delay: Option<Spanned<String>>,
    /// percent, 0..=100
    pub loss: Option<Spanned<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    pub name: Spanned<String>,
    /// A count (`3` = w1..w3) or a list of local names.
    pub workers: Option<Spanned<NameList>>,
    /// A count (`2` = e1, e2) or a list of local names.
    pub etcd: Option<Spanned<NameList>>,
    /// Where etcd hosts are pinned (default 10.<cluster index + 1>.0.0/16, as the seed).
    pub etcd_network: Option<Spanned<String>>,
    #[serde(default)]
    pub flannel: FlannelSpec,
    /// Service VIPs are taken from here (default 100.64.0.0/16).
    pub service_cidr: Option<Spanned<String>>,
    /// Kubernetes namespaces besides `default` and `kube-system` (which always exist).
    #[serde(default)]
    pub namespaces: Vec<NamespaceSpec>,
    #[serde(default)]
    pub pods: Vec<PodSpec>,
    #[serde(default)]
    pub services: Vec<ServiceSpec>,
    #[serde(default)]
    pub ingresses: Vec<IngressSpec>,
    /// Kubernetes NetworkPolicies (networking.k8s.io/v1), enforced by nft on every worker.
    #[serde(default)]
    pub network_policies: Vec<super::NetworkPolicySpec>,
}

/// Overrides of `conf/flannel-network-config.json` for one cluster.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlannelSpec {
    pub network: Option<Spanned<String>>,
    pub subnet_len: Option<Spanned<u8>>,
    pub subnet_min: Option<Spanned<String>>,
    pub subnet_max: Option<Spanned<String>>,
    pub backend: Option<Spanned<String>>,
    pub vni: Option<Spanned<u32>>,
    pub port: Option<Spanned<u16>>,
    /// flanneld's `-ip-masq` (kube-flannel.yml passes it): flannel masquerades what
    /// leaves the pod network, the bridge delegate nothing. Default false, as the seed.
    pub ip_masq: Option<Spanned<bool>>,
}

/// A Kubernetes namespace and its labels (what a NetworkPolicy's namespaceSelector sees).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceSpec {
    pub name: Spanned<String>,
    #[serde(default)]
    pub labels: Option<Spanned<Labels>>,
}

/// Kubernetes labels (or a Service's selector): key = value.
pub type Labels = std::collections::BTreeMap<Spanned<String>, Spanned<String>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodSpec {
    pub name: Spanned<String>,
    /// The pod's Kubernetes namespace (default `default`).
    pub namespace: Option<Spanned<String>>,
    pub labels: Option<Spanned<Labels>>,
    pub worker: Spanned<String>,
    /// argv of the pod's workload; no shell is involved.
    pub command: Option<Spanned<Vec<String>>>,
    /// Ports the workload listens on inside the pod: `80` or
    /// `{ port = 80, name = "http", protocol = "TCP" }` (a container port).
    #[serde(default)]
    pub ports: Vec<Spanned<ContainerPortSpec>>,
    /// A fixed address in the worker's pod subnet (`knetsim pod rm` pins the pods
    /// after a removed one so that they keep theirs). Default: the next free one.
    pub ip: Option<Spanned<String>>,
    /// The pod was deleted (`knetsim pod rm --keep-endpoints`) but services still
    /// list it: it keeps its address and its stale endpoints, nothing runs for it.
    #[serde(default)]
    pub deleted: bool,
    /// Kubernetes' `restartPolicy` of the workload: `Always` (default) or `Never`.
    pub restart_policy: Option<Spanned<String>>,
    /// Kubernetes' probes of the workload, run by the supervisor.
    pub readiness_probe: Option<Spanned<ProbeSpec>>,
    pub liveness_probe: Option<Spanned<ProbeSpec>>,
    pub startup_probe: Option<Spanned<ProbeSpec>>,
}

/// A Kubernetes `Probe`: one handler and its timing (Kubernetes' defaults when left out).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSpec {
    pub tcp_socket: Option<TcpSocketSpec>,
    pub http_get: Option<HttpGetSpec>,
    pub exec: Option<ExecSpec>,
    pub initial_delay_seconds: Option<Spanned<u32>>,
    pub period_seconds: Option<Spanned<u32>>,
    pub timeout_seconds: Option<Spanned<u32>>,
    pub success_threshold: Option<Spanned<u32>>,
    pub failure_threshold: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpSocketSpec {
    pub port: Spanned<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpGetSpec {
    pub port: Spanned<u16>,
    /// Default `/`.
    pub path: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecSpec {
    /// argv run in the pod's network namespace; exit status 0 = success.
    pub command: Spanned<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub name: Spanned<String>,
    /// The service's Kubernetes namespace (default `default`); its backends are pods of it.
    pub namespace: Option<Spanned<String>>,
    /// Given, or allocated from the cluster's service CIDR; `"None"` makes the
    /// service headless (Kubernetes' `clusterIP: None`).
    pub vip: Option<Spanned<String>>,
    /// The backends by name ...
    pub pods: Option<Spanned<Vec<Spanned<String>>>>,
    /// ... or by labels, as a Kubernetes Service's `selector`.
    pub selector: Option<Spanned<Labels>>,
    /// No ports = IP-wide DNAT (the seed's form); ports = kube-proxy style per-port rules.
    #[serde(default)]
    pub ports: Vec<Spanned<PortSpec>>,
}

/// `80` or `{ port = 80, target_port = 8080, protocol = "udp" }`.
#[derive(Debug, Clone)]
pub enum PortSpec {
    Number(u16),
    Full {
        port: u16,
        target_port: Option<u16>,
        /// Spanned so an unsupported protocol is pointed at precisely.
        protocol: Option<Spanned<String>>,
        /// A named port (an IANA_SVC_NAME): it gets an SRV record.
        name: Option<Spanned<String>>,
    },
}

/// A pod's container port: `80` or `{ port = 80, name = "http", protocol = "TCP" }`.
#[derive(Debug, Clone)]
pub struct ContainerPortSpec {
    pub port: u16,
    /// A named port (an IANA_SVC_NAME), for NetworkPolicy and SRV records.
    pub name: Option<Spanned<String>>,
    pub protocol: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FullContainerPort {
    port: u16,
    name: Option<Spanned<String>>,
    protocol: Option<Spanned<String>>,
}

impl<'de> Deserialize<'de> for ContainerPortSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ContainerPortVisitor;
        impl<'de> Visitor<'de> for ContainerPortVisitor {
            type Value = ContainerPortSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a port number (e.g. 80) or a table like { port = 80, name = \"http\" }")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ContainerPortSpec, E> {
                u16::try_from(v)
                    .map(|port| ContainerPortSpec {
                        port,
                        name: None,
                        protocol: None,
                    })
                    .map_err(|_| E::custom(format!("port {v} is out of range 0..=65535")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ContainerPortSpec, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(-1))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<ContainerPortSpec, A::Error> {
                let full = FullContainerPort::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(ContainerPortSpec {
                    port: full.port,
                    name: full.name,
                    protocol: full.protocol,
                })
            }
        }
        deserializer.deserialize_any(ContainerPortVisitor)
    }
}

/// The table form of a service port; its own type so unknown keys are rejected
/// (an untagged enum would silently ignore a typo such as `protocl`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FullPortSpec {
    port: u16,
    target_port: Option<u16>,
    protocol: Option<Spanned<String>>,
    name: Option<Spanned<String>>,
}

impl<'de> Deserialize<'de> for PortSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PortVisitor;
        impl<'de> Visitor<'de> for PortVisitor {
            type Value = PortSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a port number (e.g. 80) or a table like { port = 80, target_port = 8080, protocol = \"udp\" }",
                )
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortSpec, E> {
                u16::try_from(v)
                    .map(PortSpec::Number)
                    .map_err(|_| E::custom(format!("port {v} is out of range 0..=65535")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortSpec, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(-1))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<PortSpec, A::Error> {
                let full = FullPortSpec::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(PortSpec::Full {
                    port: full.port,
                    target_port: full.target_port,
                    protocol: full.protocol,
                    name: full.name,
                })
            }
        }
        deserializer.deserialize_any(PortVisitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngressSpec {
    pub name: Spanned<String>,
    pub worker: Spanned<String>,
    pub port: Spanned<u16>,
    pub rules: Vec<IngressRuleSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngressRuleSpec {
    pub path: Spanned<String>,
    pub service: Spanned<String>,
    /// Service port; optional when the service declares exactly one.
    pub port: Option<Spanned<u16>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterconnectSpec {
    /// Local worker name that runs each cluster's router (default: the cluster's first worker).
    pub router_worker: Option<Spanned<String>>,
    #[serde(default)]
    pub links: Vec<LinkSpec>,
    #[serde(default)]
    pub expose: Vec<ExposeSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    /// The cluster whose router dials (skrouterd connector).
    pub from: Spanned<String>,
    /// The cluster whose router accepts (inter-router listener).
    pub to: Spanned<String>,
    pub cost: Option<Spanned<u32>>,
    #[serde(default)]
    pub tls: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExposeSpec {
    /// The service address carried between routers.
    pub name: Spanned<String>,
    pub cluster: Spanned<String>,
    /// The pod that serves it (tcpConnector target) ...
    pub pod: Option<Spanned<String>>,
    /// ... or a service of that cluster (its VIP is the target).
    pub service: Option<Spanned<String>>,
    pub port: Spanned<u16>,
    pub listen: Vec<ListenSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenSpec {
    pub cluster: Spanned<String>,
    pub port: Spanned<u16>,
}

/// `3` or `["w1", "w2", "w3"]`.
#[derive(Debug, Clone)]
pub enum NameList {
    Count(u32),
    Names(Vec<Spanned<String>>),
}

impl<'de> Deserialize<'de> for NameList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameListVisitor;
        impl<'de> Visitor<'de> for NameListVisitor {
            type Value = NameList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a count (e.g. 3) or a list of names (e.g. [\"w1\", \"w2\"])")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<NameList, E> {
                u32::try_from(v)
                    .map(NameList::Count)
                    .map_err(|_| E::custom(format!("count must be between 0 and {}, got {v}", u32::MAX)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<NameList, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(-1))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NameList, A::Error> {
                let mut names = Vec::new();
                while let Some(name) = seq.next_element::<Spanned<String>>()? {
                    names.push(name);
                }
                Ok(NameList::Names(names))
            }
        }
        deserializer.deserialize_any(NameListVisitor)
    }
}

/// One `[[checks]]` entry: a probe run from a host or pod, like netlab's `validate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    pub name: Spanned<String>,
    /// A host (`C0w1`, `C0e1`) or a pod (`C0/c1`); not for a `matrix`.
    pub from: Option<Spanned<String>>,
    /// An address, a host (`C1w1`), a pod (`C0/c2`) or a service (`C0/vip`).
    pub ping: Option<Spanned<String>>,
    /// `http://HOST[:PORT][/PATH]`; HOST as for `ping`, with `NAME.CLUSTER` for pods and services.
    pub http: Option<Spanned<String>>,
    /// A DNS name looked up from a pod, through its resolv.conf (nameserver, search, ndots).
    pub dns: Option<Spanned<String>>,
    /// dns only: the record type, `A` (default) or `SRV`.
    #[serde(rename = "type")]
    pub record_type: Option<Spanned<String>>,
    /// dns only: the expected A addresses, or SRV answers as `"port target"`, in any order.
    pub addresses: Option<Spanned<Vec<String>>>,
    /// dns only: the name must not exist (NXDOMAIN).
    pub nxdomain: Option<Spanned<bool>>,
    /// "success" (default) or "failure".
    pub expect: Option<Spanned<String>>,
    /// Text every response contains, or a list of texts each seen over `tries` requests.
    pub body: Option<Spanned<BodySpec>>,
    /// Echo requests of a ping probe.
    pub count: Option<Spanned<u32>>,
    /// Requests of an http probe (each a new connection).
    pub tries: Option<Spanned<u32>>,
    /// Seconds one reply or response may take.
    pub timeout: Option<Spanned<u32>>,
    /// Every pod pair's reachability, as the upstream NetworkPolicy e2e suite prints it.
    pub matrix: Option<Spanned<MatrixSpec>>,
}

/// `{ port = 80, expect = """ ... """ }`: a TCP connect from every pod (rows) to
/// every pod (columns) of a cluster; `.` connects, `X` does not.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixSpec {
    pub port: Spanned<u16>,
    /// Only "TCP" (the default) for now.
    pub protocol: Option<Spanned<String>>,
    /// Default: the only cluster (or the first).
    pub cluster: Option<Spanned<String>>,
    /// The namespaces whose pods are probed (default: every one but kube-system).
    pub namespaces: Option<Vec<Spanned<String>>>,
    pub expect: Spanned<String>,
}

/// `"S1-W"` or `["S1-W2", "S1-W3"]`.
#[derive(Debug, Clone)]
pub enum BodySpec {
    Every(String),
    Each(Vec<String>),
}

impl<'de> Deserialize<'de> for BodySpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BodyVisitor;
        impl<'de> Visitor<'de> for BodyVisitor {
            type Value = BodySpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a text (e.g. \"S1-W\") or a list of texts (e.g. [\"S1-W2\", \"S1-W3\"])")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<BodySpec, E> {
                Ok(BodySpec::Every(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<BodySpec, A::Error> {
                let mut texts = Vec::new();
                while let Some(t) = seq.next_element::<String>()? {
                    texts.push(t);
                }
                Ok(BodySpec::Each(texts))
            }
        }
        deserializer.deserialize_any(BodyVisitor)
    }
}
