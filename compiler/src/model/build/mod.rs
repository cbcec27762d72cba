//! Schema -> model: resolves names, allocates every address, and checks references.
//! The build never stops at the first problem: all of them are reported together.
//! When a value is wrong it is reported once and replaced by a fallback, so that
//! the rest of the topology is still checked without follow-on errors.

use super::allocate::{self, VipAllocator};
use super::checks;
use super::report::{overlaps, PortTable, Report, Unique};
use super::*;
use crate::diagnostics::{closest, Diagnostics};
use crate::topology::{self as spec, FlannelDefaults, NameList, PortSpec, RouterBaseListener, Source, Spanned};
use crate::CompileOptions;
use std::collections::{HashMap, HashSet};
use std::ops::Range;

mod dns;
mod flannel;
mod impairments;
mod interconnect;
mod namespaces;
mod policies;
mod ports;
#[cfg(test)]
mod tests;
mod workloads;

const DEFAULT_WORKERS: u32 = 2;
const DEFAULT_ETCD: u32 = 1;
const DEFAULT_SERVICE_CIDR: &str = "100.64.0.0/16";
const DEFAULT_UNDERLAY: &str = "10.0.0.0/8";
const MAX_NAME: usize = 10;
const MAX_CLUSTER_NAME: usize = 6;
/// Hosts of one kind (etcd or workers) per cluster: each one is a network namespace
/// with its own daemons, and its switch port name must fit IFNAMSIZ.
const MAX_HOSTS: u32 = 1000;

pub fn build(source: &Source, topo: &spec::TopologySpec, opts: &CompileOptions) -> Result<Model, Diagnostics> {
    let mut b = Builder {
        report: Report::default(),
        text: &source.text,
        naming: Naming::new(&opts.name, &opts.state_dir.display().to_string()),
        host_names: Unique::new("host"),
        switch_names: HashSet::new(),
        underlay_ips: HashMap::new(),
        unusable_clusters: HashSet::new(),
        ports: PortTable::default(),
        dns: None,
        coredns_on_path: opts.coredns_on_path,
    };
    let mut model = b.model(topo);
    if b.report.items.is_empty() {
        if !b.report.warnings.is_empty() {
            let mut warnings = std::mem::take(&mut b.report.warnings);
            warnings.sort_by_key(|d| d.span.as_ref().map(|s| s.start));
            model.warnings = source.diagnostics(warnings).render_warnings();
        }
        let graph_problems = topology_graph::check(&model);
        if graph_problems.is_empty() {
            return Ok(model);
        }
        return Err(source.diagnostics(graph_problems));
    }
    // In file order, as a reader goes through them (stable: equal places keep build order).
    let mut items = b.report.items;
    items.sort_by_key(|d| d.span.as_ref().map(|s| s.start));
    Err(source.diagnostics(items))
}

struct Builder<'a> {
    report: Report,
    text: &'a str,
    naming: Naming,
    host_names: Unique<'static>,
    /// Names the switches take (the top switch and every `<cluster>s0`); no host may take one.
    switch_names: HashSet<String>,
    /// Underlay addresses handed out so far: the host, and the `etcd_network` span that pinned it.
    underlay_ips: HashMap<Ipv4Addr, (String, Option<Range<usize>>)>,
    /// Clusters whose name is invalid: already reported, so references to them are not.
    unusable_clusters: HashSet<String>,
    ports: PortTable,
    /// `[dns]`, resolved before the clusters (their DNS pod and Service depend on it).
    dns: Option<Dns>,
    coredns_on_path: bool,
}

/// A cluster as declared, with the spans needed by later (cross-cluster) checks.
struct Declared<'s> {
    spec: &'s spec::ClusterSpec,
    cluster: Cluster,
}

/// The underlay network and where it was written (None when it is the default).
struct UnderlayNet {
    network: Ipv4Network,
    span: Option<Range<usize>>,
    /// False when the written value was invalid (and reported): checks against it are skipped.
    valid: bool,
}

/// Which parts of a cluster's flannel settings are usable for further checks.
struct FlannelOk {
    network: bool,
    /// subnet_len, subnet_min and subnet_max are valid together.
    range: bool,
}

fn span_of<T>(v: &Option<Spanned<T>>) -> Option<Range<usize>> {
    v.as_ref().map(|s| s.span())
}

impl<'a> Builder<'a> {
    fn model(&mut self, topo: &spec::TopologySpec) -> Model {
        let clusters: &[spec::ClusterSpec] = topo.clusters.as_ref().map(|c| c.get_ref().as_slice()).unwrap_or(&[]);
        if clusters.is_empty() {
            self.report.push(
                crate::Diagnostic::new(
                    Some(span_of(&topo.clusters).unwrap_or(0..0)),
                    "the topology declares no cluster",
                )
                .label("nothing to emulate")
                .hint("add one:\n[[clusters]]\nname = \"C0\""),
            );
        }
        let default_underlay: Ipv4Network = DEFAULT_UNDERLAY.parse().expect("valid");
        let underlay_net = match &topo.underlay.network {
            Some(n) => match self.report.ipv4_net(n, "underlay network") {
                Some(network) => UnderlayNet {
                    network,
                    span: Some(n.span()),
                    valid: true,
                },
                None => UnderlayNet {
                    network: default_underlay,
                    span: Some(n.span()),
                    valid: false,
                },
            },
            None => UnderlayNet {
                network: default_underlay,
                span: None,
                valid: true,
            },
        };
        let network = underlay_net.network;
        let top_switch = match &topo.underlay.top_switch {
            Some(s) => {
                self.report.identifier(s, "switch", MAX_NAME);
                s.get_ref().clone()
            }
            None => "t0".to_string(),
        };
        self.switch_names.insert(top_switch.clone());
        for cs in clusters {
            let switch = format!("{}s0", cs.name.get_ref());
            if switch == top_switch {
                if let Some(s) = &topo.underlay.top_switch {
                    self.report.error(
                        s.span(),
                        format!(
                            "top switch `{top_switch}` has the name of cluster `{}`'s switch",
                            cs.name.get_ref()
                        ),
                        "name taken",
                        "cluster switches are named `<cluster>s0`; pick another top_switch",
                    );
                }
            }
            self.switch_names.insert(switch);
        }

        self.dns = self.dns_settings(&topo.dns);
        let mut cluster_names = Unique::new("cluster");
        let mut host_counter: u64 = 0;
        let mut declared = Vec::new();
        for (index, cs) in clusters.iter().enumerate() {
            let name_ok = self.report.identifier(&cs.name, "cluster name", MAX_CLUSTER_NAME);
            let unique = cluster_names.insert(&mut self.report, cs.name.get_ref(), cs.name.span(), self.text);
            if !name_ok && unique {
                self.unusable_clusters.insert(cs.name.get_ref().clone());
            }
            // A repeated cluster is still checked, but its hosts are not registered
            // again (that would only repeat the duplicate-name error).
            let cluster = self.cluster(index, cs, &underlay_net, &mut host_counter, unique);
            if name_ok && unique {
                declared.push(Declared { spec: cs, cluster });
            }
        }

        let mut underlay = Underlay {
            network,
            switches: vec![Switch {
                name: top_switch.clone(),
                cluster: None,
            }],
            links: Vec::new(),
        };
        let sw_ns = self.naming.switch_netns();
        let mut top_ports = 0;
        for d in &declared {
            let c = &d.cluster;
            underlay.switches.push(Switch {
                name: c.switch.clone(),
                cluster: Some(c.index),
            });
            let mut port = 0;
            for host in c.etcd.iter().chain(c.workers.iter().map(|w| &w.host)) {
                port += 1;
                underlay.links.push(Link {
                    a: LinkEnd {
                        node: host.name.clone(),
                        netns: host.netns.clone(),
                        ifname: host.ifname.clone(),
                        bridge: None,
                    },
                    b: LinkEnd {
                        node: c.switch.clone(),
                        netns: sw_ns.clone(),
                        ifname: format!("{}-eth{port}", c.switch),
                        bridge: Some(c.switch.clone()),
                    },
                    impairment: None,
                });
            }
            top_ports += 1;
            underlay.links.push(Link {
                a: LinkEnd {
                    node: c.switch.clone(),
                    netns: sw_ns.clone(),
                    ifname: format!("{}-eth{}", c.switch, port + 1),
                    bridge: Some(c.switch.clone()),
                },
                b: LinkEnd {
                    node: top_switch.clone(),
                    netns: sw_ns.clone(),
                    ifname: format!("{top_switch}-eth{top_ports}"),
                    bridge: Some(top_switch.clone()),
                },
                impairment: None,
            });
        }
        self.interface_names(&underlay, &declared, topo);
        self.impairments(&topo.underlay.impairments, &mut underlay);

        let routers = match &topo.interconnect {
            Some(ic) => self.interconnect(ic, &declared),
            None => Vec::new(),
        };
        let mut model = Model {
            name: self.naming_name(),
            state_dir: self.naming.state_dir().to_string(),
            switch_netns: sw_ns,
            underlay,
            clusters: declared.into_iter().map(|d| d.cluster).collect(),
            routers,
            dns: self.dns.clone(),
            checks: Vec::new(),
            warnings: String::new(),
        };
        model.checks = checks::resolve(
            &topo.checks,
            &model,
            &self.unusable_clusters,
            &mut self.report,
            self.text,
        );
        model
    }

    fn naming_name(&self) -> String {
        self.naming.host_netns("").trim_end_matches('-').to_string()
    }

    /// Switch-side veth names must fit IFNAMSIZ.
    fn interface_names(&mut self, underlay: &Underlay, declared: &[Declared], topo: &spec::TopologySpec) {
        for link in &underlay.links {
            for end in [&link.a, &link.b] {
                if end.ifname.len() > 15 {
                    let span = declared
                        .iter()
                        .find(|d| end.ifname.starts_with(&d.cluster.switch))
                        .map(|d| d.spec.name.span())
                        .or_else(|| span_of(&topo.underlay.top_switch))
                        .unwrap_or(0..0);
                    self.report.error(
                        span,
                        format!("interface name `{}` would exceed 15 characters", end.ifname),
                        "name too long for a switch port",
                        "use a shorter cluster or switch name, or fewer hosts per cluster",
                    );
                    return;
                }
            }
        }
    }

    /// Local host names of an `etcd` or `workers` entry, each with the span to report it at.
    fn names(
        &mut self,
        list: Option<&Spanned<NameList>>,
        default: u32,
        prefix: &str,
        what: &str,
        cspan: &Range<usize>,
    ) -> Vec<(String, Range<usize>)> {
        match list {
            None => (1..=default).map(|i| (format!("{prefix}{i}"), cspan.clone())).collect(),
            Some(l) => match l.get_ref() {
                NameList::Count(n) => {
                    if *n > MAX_HOSTS {
                        self.report.error(
                            l.span(),
                            format!("{n} {what} is more than the {MAX_HOSTS} a cluster may have"),
                            "too many hosts",
                            "every host is a network namespace with its own daemons; use fewer",
                        );
                    }
                    (1..=(*n).min(MAX_HOSTS))
                        .map(|i| (format!("{prefix}{i}"), l.span()))
                        .collect()
                }
                NameList::Names(names) => {
                    if names.len() > MAX_HOSTS as usize {
                        self.report.error(
                            l.span(),
                            format!("{} {what} is more than the {MAX_HOSTS} a cluster may have", names.len()),
                            "too many hosts",
                            "every host is a network namespace with its own daemons; use fewer",
                        );
                    }
                    names
                        .iter()
                        .take(MAX_HOSTS as usize)
                        .map(|n| {
                            // An invalid name is reported but kept, so references to it
                            // do not also fail.
                            self.report.identifier(n, "host name", MAX_NAME);
                            (n.get_ref().clone(), n.span())
                        })
                        .collect()
                }
            },
        }
    }

    /// Records an underlay address; a clash is reported where the address was pinned.
    fn claim_ip(&mut self, ip: Ipv4Addr, host: &str, pinned: Option<Range<usize>>, fallback: &Range<usize>) {
        match self.underlay_ips.get(&ip) {
            Some((other, other_pin)) => {
                let span = pinned.clone().or(other_pin.clone()).unwrap_or(fallback.clone());
                self.report.error(
                    span,
                    format!("hosts {other} and {host} would both get the underlay address {ip}"),
                    "address clash",
                    "pin each cluster's etcd hosts to a distinct etcd_network that no other host is numbered in",
                );
            }
            None => {
                self.underlay_ips.insert(ip, (host.to_string(), pinned));
            }
        }
    }

    fn cluster(
        &mut self,
        index: usize,
        cs: &spec::ClusterSpec,
        underlay: &UnderlayNet,
        counter: &mut u64,
        register: bool,
    ) -> Cluster {
        let cname = cs.name.get_ref().clone();
        let cspan = cs.name.span();
        let etcd_names = self.names(cs.etcd.as_ref(), DEFAULT_ETCD, "e", "etcd members", &cspan);
        let worker_names = self.names(cs.workers.as_ref(), DEFAULT_WORKERS, "w", "workers", &cspan);
        if worker_names.is_empty() {
            self.report.error(
                span_of(&cs.workers).unwrap_or(cspan.clone()),
                format!("cluster `{cname}` has no worker"),
                "no workers",
                "a cluster needs at least one worker: use `workers = 1` or more",
            );
        }
        if etcd_names.is_empty() {
            self.report.error(
                span_of(&cs.etcd).unwrap_or(cspan.clone()),
                format!("cluster `{cname}` has no etcd member"),
                "no etcd",
                "flannel needs an etcd member: use `etcd = 1`",
            );
        }
        // Local names are unique in the cluster; the global `<cluster><local>` names
        // are unique in the topology and must not be a switch's name.
        let mut local = Unique::within("host", format!("cluster `{cname}`"));
        let mut keep = |b: &mut Self, names: Vec<(String, Range<usize>)>| -> Vec<(String, Range<usize>)> {
            let mut kept = Vec::new();
            for (n, span) in names {
                if !local.insert(&mut b.report, &n, span.clone(), b.text) {
                    continue;
                }
                let global = format!("{cname}{n}");
                if b.switch_names.contains(&global) {
                    b.report.error(
                        span.clone(),
                        format!("host `{n}` of cluster `{cname}` would be named `{global}`, the name of a switch"),
                        "name taken by a switch",
                        "rename this host: switches are named `<cluster>s0`, and the top switch `t0` by default",
                    );
                } else if register {
                    b.host_names.insert(&mut b.report, &global, span.clone(), b.text);
                }
                kept.push((n, span));
            }
            kept
        };
        let etcd_names = keep(self, etcd_names);
        let worker_names = keep(self, worker_names);

        // etcd hosts are pinned, as in the seed, but still consume a Mininet host number.
        let etcd_net: Option<(Ipv4Network, Option<Range<usize>>)> = match &cs.etcd_network {
            Some(n) => self.report.ipv4_net(n, "etcd network").map(|net| (net, Some(n.span()))),
            None if underlay.network.prefix() <= 15 && index < 255 => {
                let base = u64::from(u32::from(underlay.network.network())) + ((index as u64 + 1) << 16);
                let net = Ipv4Network::new(Ipv4Addr::from(base as u32), 16).expect("valid");
                // The seed's pinning only when the /16 lies inside the underlay.
                (base <= u64::from(u32::MAX) && underlay.network.contains(net.network())).then_some((net, None))
            }
            None => None,
        };
        if let Some((net, Some(span))) = &etcd_net {
            if underlay.valid && !underlay.network.contains(net.network()) {
                self.report.error(
                    span.clone(),
                    format!(
                        "etcd network {net} of cluster `{cname}` is outside the underlay network {}",
                        underlay.network
                    ),
                    "unreachable from the workers",
                    "all hosts share one underlay network; pick an etcd_network inside it",
                );
            }
        }
        let mut etcd = Vec::new();
        let mut exhausted = false;
        for (k, (local_name, span)) in etcd_names.iter().enumerate() {
            *counter += 1;
            let ip = match &etcd_net {
                Some((net, _)) => allocate::nth_host(*net, k as u64 + 1),
                None => allocate::nth_host(underlay.network, *counter),
            };
            let host_name = format!("{cname}{local_name}");
            let ip = match ip {
                Some(ip) => {
                    if register {
                        let pinned = etcd_net.as_ref().and_then(|e| e.1.clone());
                        self.claim_ip(ip, &host_name, pinned, span);
                    }
                    ip
                }
                None => {
                    if !exhausted {
                        let (span, net) = match &etcd_net {
                            Some((net, pin)) => (pin.clone().unwrap_or(span.clone()), *net),
                            None => (underlay.span.clone().unwrap_or(span.clone()), underlay.network),
                        };
                        self.report.error(
                            span,
                            format!("{net} has no address left for etcd host {host_name}"),
                            "network too small",
                            "use a larger etcd_network (or underlay network), or fewer etcd members",
                        );
                    }
                    exhausted = true;
                    Ipv4Addr::UNSPECIFIED
                }
            };
            etcd.push(self.host(&cname, local_name, ip, underlay.network.prefix()));
        }

        let (flannel, fok) = self.flannel(cs, &cname);
        let (service_cidr, cidr_ok) = match &cs.service_cidr {
            Some(s) => match self.report.ipv4_net(s, "service CIDR") {
                Some(net) => (net, true),
                None => (DEFAULT_SERVICE_CIDR.parse().expect("valid"), false),
            },
            None => (DEFAULT_SERVICE_CIDR.parse().expect("valid"), true),
        };
        // Networks whose value is invalid were reported already and are left out.
        let mut nets: Vec<(&str, Ipv4Network, Option<Range<usize>>)> = Vec::new();
        if underlay.valid {
            nets.push(("underlay network", underlay.network, underlay.span.clone()));
        }
        if fok.network {
            nets.push(("pod network (flannel)", flannel.network, span_of(&cs.flannel.network)));
        }
        if cidr_ok {
            nets.push(("service CIDR", service_cidr, span_of(&cs.service_cidr)));
        }
        for i in 0..nets.len() {
            for j in i + 1..nets.len() {
                if overlaps(nets[i].1, nets[j].1) {
                    self.report.error(
                        nets[j].2.clone().or(nets[i].2.clone()).unwrap_or(cspan.clone()),
                        format!(
                            "in cluster `{cname}` the {} {} overlaps the {} {}",
                            nets[j].0, nets[j].1, nets[i].0, nets[i].1
                        ),
                        "overlapping networks",
                        "underlay, pod and service networks of a cluster must be disjoint",
                    );
                }
            }
        }

        let needed = worker_names.len() as u64;
        let available = allocate::flannel_subnet_count(flannel.subnet_min, flannel.subnet_max, flannel.subnet_len);
        if fok.range && needed > available {
            let f = &cs.flannel;
            let span = span_of(&f.subnet_max)
                .or(span_of(&f.subnet_min))
                .or(span_of(&f.subnet_len))
                .or(span_of(&cs.workers))
                .unwrap_or(cspan.clone());
            self.report.error(
                span,
                format!(
                    "cluster `{cname}` has {needed} workers but SubnetMin..SubnetMax ({}..{}) holds only {available} /{} subnets",
                    flannel.subnet_min, flannel.subnet_max, flannel.subnet_len
                ),
                "too few subnets",
                "widen SubnetMin..SubnetMax, use a longer subnet_len, or use fewer workers",
            );
        }
        let mut workers = Vec::new();
        let mut subnets = allocate::flannel_subnets(flannel.subnet_min, flannel.subnet_max, flannel.subnet_len);
        let mut underlay_full = false;
        for (local_name, span) in &worker_names {
            *counter += 1;
            let host_name = format!("{cname}{local_name}");
            let ip = match allocate::nth_host(underlay.network, *counter) {
                Some(ip) => {
                    if register {
                        self.claim_ip(ip, &host_name, None, span);
                    }
                    ip
                }
                None => {
                    if !underlay_full && underlay.valid {
                        self.report.error(
                            underlay.span.clone().unwrap_or(span.clone()),
                            format!(
                                "the underlay network {} has no address left for {host_name}",
                                underlay.network
                            ),
                            "too many hosts",
                            "use a larger underlay network, or fewer hosts",
                        );
                    }
                    underlay_full = true;
                    Ipv4Addr::UNSPECIFIED
                }
            };
            // Too few subnets was reported above; the worker still exists for the
            // checks that refer to it.
            let subnet = subnets.next().unwrap_or_else(|| {
                Ipv4Network::new(flannel.subnet_min, flannel.subnet_len.min(32)).unwrap_or(flannel.network)
            });
            let host = self.host(&cname, local_name, ip, underlay.network.prefix());
            let vtep_mac = allocate::stable_mac(&format!("vtep/{}", host.name));
            workers.push(Worker { host, subnet, vtep_mac });
        }

        let mut cluster = Cluster {
            name: cname.clone(),
            index,
            switch: format!("{cname}s0"),
            etcd,
            workers,
            flannel,
            service_cidr,
            namespaces: Vec::new(),
            pods: Vec::new(),
            services: Vec::new(),
            ingresses: Vec::new(),
            network_policies: Vec::new(),
        };
        self.namespaces(cs, &mut cluster);
        self.pods(cs, &mut cluster);
        self.services(cs, &mut cluster, cidr_ok);
        self.ingresses(cs, &mut cluster);
        self.network_policies(cs, &mut cluster);
        cluster
    }

    fn host(&self, cluster: &str, local: &str, ip: Ipv4Addr, prefix_len: u8) -> Host {
        let name = format!("{cluster}{local}");
        Host {
            netns: self.naming.host_netns(&name),
            name,
            local: local.to_string(),
            ip,
            prefix_len,
            ifname: "eth0".into(),
        }
    }

    fn unknown<'n>(&mut self, name: &Spanned<String>, what: &str, scope: &str, known: impl Iterator<Item = &'n str>) {
        let known: Vec<&str> = known.collect();
        let listed = || {
            let mut l = known.iter().take(8).copied().collect::<Vec<_>>().join(", ");
            if known.len() > 8 {
                l.push_str(", ...");
            }
            l
        };
        let hint = match closest(name.get_ref(), &known) {
            Some(c) => format!("did you mean `{c}`? (known: {})", listed()),
            None if known.is_empty() => format!("{scope} declares no {what}"),
            None => format!("known: {}", listed()),
        };
        self.report.error(
            name.span(),
            format!("unknown {what} `{}` in {scope}", name.get_ref()),
            &format!("no such {what}"),
            &hint,
        );
    }
}
