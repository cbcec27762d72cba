//! Schema -> model: resolves names, allocates every address, and checks references.
//! The build never stops at the first problem: all of them are reported together.
//! When a value is wrong it is reported once and replaced by a fallback, so that
//! the rest of the topology is still checked without follow-on errors.

use super::allocate::{self, VipAllocator};
use super::checks::{overlaps, PortTable, Report, Unique};
use super::validate;
use super::*;
use crate::diagnostics::{closest, Diagnostics};
use crate::topology::{self as spec, FlannelDefaults, NameList, PortSpec, RouterBaseListener, Source, Spanned};
use crate::CompileOptions;
use std::collections::{HashMap, HashSet};
use std::ops::Range;

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
    };
    let model = b.model(topo);
    if b.report.items.is_empty() {
        let graph_problems = graph::check(&model);
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
            checks: Vec::new(),
        };
        model.checks = validate::resolve(
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
            pods: Vec::new(),
            services: Vec::new(),
            ingresses: Vec::new(),
        };
        self.pods(cs, &mut cluster);
        self.services(cs, &mut cluster, cidr_ok);
        self.ingresses(cs, &mut cluster);
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

    /// The cluster's flannel config: `conf/flannel-network-config.json` overridden by
    /// the topology. Defaults that do not fit an overridden Network are derived the
    /// way flannel does (SubnetMin = second subnet, SubnetMax = last subnet). Invalid
    /// values are reported and replaced by those defaults.
    fn flannel(&mut self, cs: &spec::ClusterSpec, cname: &str) -> (Flannel, FlannelOk) {
        let d = FlannelDefaults::get();
        let f = &cs.flannel;
        let cspan = cs.name.span();
        let default_network: Ipv4Network = d.network.parse().expect("conf default is valid");
        let (network, network_ok) = match &f.network {
            Some(n) => match self.report.ipv4_net(n, "flannel network") {
                Some(net) => (net, true),
                None => (default_network, false),
            },
            None => (default_network, true),
        };
        let mut range_ok = network_ok;
        let fits = |len: u8| len > network.prefix() && len <= 30;
        // A usable length when the written or default one is not.
        let fallback_len = if fits(d.subnet_len) {
            d.subnet_len
        } else {
            (network.prefix() + 2).min(32)
        };
        let suggestion = if fits(d.subnet_len) {
            d.subnet_len
        } else {
            (network.prefix() + 2).min(30)
        };
        let subnet_len = match &f.subnet_len {
            Some(l) if fits(*l.get_ref()) => *l.get_ref(),
            Some(l) => {
                if network_ok {
                    self.report.error(
                        l.span(),
                        format!(
                            "flannel subnet_len {} must be longer than the network's /{} and at most 30",
                            l.get_ref(),
                            network.prefix()
                        ),
                        "bad subnet length",
                        &format!(
                            "flannel gives each worker a /subnet_len slice of Network {network}, e.g. subnet_len = {suggestion}"
                        ),
                    );
                }
                range_ok = false;
                fallback_len
            }
            None if fits(d.subnet_len) => d.subnet_len,
            None => {
                self.report.error(
                    span_of(&f.network).unwrap_or(cspan.clone()),
                    format!(
                        "flannel network {network} is too small for the default subnet_len {}",
                        d.subnet_len
                    ),
                    "network too small",
                    &format!(
                        "set subnet_len (longer than /{}, at most 30) or use a larger network",
                        network.prefix()
                    ),
                );
                range_ok = false;
                fallback_len
            }
        };
        let size = 1u64 << (32 - u32::from(subnet_len.min(32)));
        let aligned = |a: Ipv4Addr| u64::from(u32::from(a)) % size == 0;
        let base = u64::from(u32::from(network.network()));
        let end = base + (1u64 << (32 - u32::from(network.prefix())));
        let derived_min = Ipv4Addr::from((base + size).min(u64::from(u32::MAX)) as u32);
        let derived_max = Ipv4Addr::from(end.saturating_sub(size).max(base) as u32);
        let mut addr = |b: &mut Self, v: &Option<Spanned<String>>, conf: &str, derived: Ipv4Addr, what: &str| match v {
            Some(s) => match b.report.ipv4_addr(s, what) {
                Some(a) => (a, Some(s.span())),
                None => {
                    range_ok = false;
                    (derived, None)
                }
            },
            None => {
                let c: Ipv4Addr = conf.parse().expect("conf default is valid");
                if network.contains(c) && aligned(c) {
                    (c, None)
                } else {
                    (derived, None)
                }
            }
        };
        let (mut subnet_min, min_span) = addr(self, &f.subnet_min, &d.subnet_min, derived_min, "flannel subnet_min");
        let (mut subnet_max, max_span) = addr(self, &f.subnet_max, &d.subnet_max, derived_max, "flannel subnet_max");
        if range_ok {
            for (what, a, span) in [
                ("subnet_min", subnet_min, &min_span),
                ("subnet_max", subnet_max, &max_span),
            ] {
                let Some(span) = span else { continue };
                if !network.contains(a) {
                    self.report.error(
                        span.clone(),
                        format!("flannel {what} {a} is outside Network {network} of cluster `{cname}`"),
                        "outside the pod network",
                        &format!("SubnetMin and SubnetMax must lie inside Network {network}"),
                    );
                    range_ok = false;
                } else if !aligned(a) {
                    let down = Ipv4Addr::from((u64::from(u32::from(a)) / size * size) as u32);
                    self.report.error(
                        span.clone(),
                        format!("flannel {what} {a} is not aligned to /{subnet_len}"),
                        "not a subnet start",
                        &format!("use the first address of its /{subnet_len} subnet: \"{down}\""),
                    );
                    range_ok = false;
                }
            }
        }
        if range_ok && subnet_max < subnet_min {
            let (span, message) = match (&max_span, &min_span) {
                (Some(s), _) => (
                    s.clone(),
                    format!("flannel subnet_max {subnet_max} is below subnet_min {subnet_min}"),
                ),
                (None, Some(s)) => (
                    s.clone(),
                    format!("flannel subnet_min {subnet_min} is above the default subnet_max {subnet_max}"),
                ),
                (None, None) => (
                    cspan.clone(),
                    format!("flannel subnet_max {subnet_max} is below subnet_min {subnet_min}"),
                ),
            };
            self.report.error(
                span,
                message,
                "empty range",
                "subnet_min must not be above subnet_max: swap them or set both",
            );
            range_ok = false;
        }
        if !range_ok {
            (subnet_min, subnet_max) = (derived_min, derived_max);
        }
        let backend = f
            .backend
            .as_ref()
            .map(|b| b.get_ref().clone())
            .unwrap_or(d.backend.kind.clone());
        if backend != "vxlan" {
            let span = span_of(&f.backend).unwrap_or(cspan.clone());
            self.report.error(
                span,
                format!("flannel backend `{backend}` is not emulated in cluster `{cname}`"),
                "unsupported backend",
                "use \"vxlan\"",
            );
        }
        let vni = f.vni.as_ref().map(|v| *v.get_ref()).unwrap_or(d.backend.vni);
        if vni == 0 || vni > 0xff_ffff {
            let span = span_of(&f.vni).unwrap_or(cspan.clone());
            self.report.error(
                span,
                format!("VXLAN VNI {vni} of cluster `{cname}` is out of range"),
                "bad VNI",
                "a VNI is 1..=16777215",
            );
        }
        let port = f.port.as_ref().map(|v| *v.get_ref()).unwrap_or(d.backend.port);
        if port == 0 {
            let span = span_of(&f.port).unwrap_or(cspan.clone());
            self.report.error(
                span,
                "VXLAN port 0 is not usable",
                "bad port",
                "flannel's default is 8472",
            );
        }
        let flannel = Flannel {
            network,
            subnet_len,
            subnet_min,
            subnet_max,
            backend,
            vni,
            port,
            ip_masq: f.ip_masq.as_ref().is_some_and(|m| *m.get_ref()),
        };
        (
            flannel,
            FlannelOk {
                network: network_ok,
                range: range_ok,
            },
        )
    }

    fn pods(&mut self, cs: &spec::ClusterSpec, cluster: &mut Cluster) {
        let mut names = Unique::within("pod", format!("cluster `{}`", cluster.name));
        let mut per_worker: HashMap<String, usize> = HashMap::new();
        // Pinned addresses first: the others skip them.
        let mut pinned: HashMap<usize, Ipv4Addr> = HashMap::new();
        let mut taken: HashSet<Ipv4Addr> = HashSet::new();
        for (i, p) in cs.pods.iter().enumerate() {
            let (Some(v), Some(worker)) = (&p.ip, cluster.worker(p.worker.get_ref())) else {
                continue;
            };
            let Some(ip) = self.report.ipv4_addr(v, "pod address") else {
                continue;
            };
            let first = allocate::pod_ip(worker.subnet, 0);
            let slot = allocate::Slot::of(worker.subnet, ip);
            // A host address below the first pod address is `.1`, the bridge's.
            let usable = slot == allocate::Slot::Host && matches!(first, Some(first) if ip >= first);
            if !usable {
                let (label, relation) = match slot {
                    allocate::Slot::Outside => ("outside the worker's subnet", slot.relation()),
                    allocate::Slot::Network => ("network address", slot.relation()),
                    allocate::Slot::Broadcast => ("broadcast address", slot.relation()),
                    allocate::Slot::Host => ("bridge gateway", "is the bridge gateway (cni0) address of"),
                };
                let why = if slot == allocate::Slot::Outside {
                    ""
                } else {
                    " and cannot be a pod address"
                };
                let hint = match first {
                    Some(first) => format!(
                        "pod addresses of {} start at \"{first}\"; or leave ip out to have the next free address allocated",
                        worker.subnet
                    ),
                    None => "leave ip out to have the next free address allocated".to_string(),
                };
                self.report.error(
                    v.span(),
                    format!(
                        "pod address {ip} {relation} worker {}'s subnet {}{why}",
                        worker.host.name, worker.subnet
                    ),
                    label,
                    &hint,
                );
                continue;
            }
            if !taken.insert(ip) {
                self.report.error(
                    v.span(),
                    format!("pod address {ip} is pinned twice"),
                    "duplicate",
                    "give each pod its own address, or leave ip out",
                );
                continue;
            }
            pinned.insert(i, ip);
        }
        for (i, p) in cs.pods.iter().enumerate() {
            // An invalid name is reported but the pod is kept, so references to it
            // do not fail as well.
            self.report.identifier(&p.name, "pod name", 40);
            if !names.insert(&mut self.report, p.name.get_ref(), p.name.span(), self.text) {
                continue;
            }
            // Checked before the worker, so a pod on an unknown worker has them checked too.
            let mut ports = Unique::within("port", format!("pod `{}`", p.name.get_ref()));
            for port in &p.ports {
                if *port.get_ref() == 0 {
                    self.report.error(
                        port.span(),
                        format!("port 0 of pod `{}` is not usable", p.name.get_ref()),
                        "bad port",
                        "ports are 1..=65535 (the pod's readiness is a TCP connect to its first port)",
                    );
                    continue;
                }
                ports.insert(&mut self.report, &port.get_ref().to_string(), port.span(), self.text);
            }
            let Some(worker) = cluster.worker(p.worker.get_ref()) else {
                self.unknown(
                    &p.worker,
                    "worker",
                    &cluster.name,
                    cluster.workers.iter().map(|w| w.host.local.as_str()),
                );
                continue;
            };
            let slot = per_worker.entry(worker.host.name.clone()).or_default();
            let next = |slot: &mut usize| loop {
                let ip = allocate::pod_ip(worker.subnet, *slot);
                *slot += 1;
                match ip {
                    Some(ip) if taken.contains(&ip) => continue,
                    other => break other,
                }
            };
            let ip = match pinned.get(&i).copied().or_else(|| next(slot)) {
                Some(ip) => ip,
                None => {
                    self.report.error(
                        p.name.span(),
                        format!(
                            "worker {} has no pod address left in {} for pod `{}`",
                            worker.host.name,
                            worker.subnet,
                            p.name.get_ref()
                        ),
                        "subnet full",
                        "use a shorter flannel subnet_len, or place the pod on another worker",
                    );
                    Ipv4Addr::UNSPECIFIED
                }
            };
            if let Some(cmd) = &p.command {
                if !matches!(cmd.get_ref().first(), Some(program) if !program.trim().is_empty()) {
                    self.report.error(
                        cmd.span(),
                        format!("pod `{}` has an empty command", p.name.get_ref()),
                        "no program",
                        "give argv, e.g. [\"knetsim\", \"serve\", \"--text\", \"hello\"]",
                    );
                }
            }
            cluster.pods.push(Pod {
                name: p.name.get_ref().clone(),
                worker: worker.host.name.clone(),
                netns: self.naming.pod_netns(cluster.index, p.name.get_ref()),
                ip,
                container_id: format!("{}-{}", cluster.name, p.name.get_ref()),
                command: p.command.as_ref().map(|c| c.get_ref().clone()),
                ports: p.ports.iter().map(|p| *p.get_ref()).collect(),
                deleted: p.deleted,
            });
        }
    }

    /// `cidr_ok`: the service CIDR was valid (VIPs are only checked against a valid one).
    fn services(&mut self, cs: &spec::ClusterSpec, cluster: &mut Cluster, cidr_ok: bool) {
        let mut names = Unique::within("service", format!("cluster `{}`", cluster.name));
        let mut vips = Unique::within("VIP", format!("cluster `{}`", cluster.name));
        let mut given = HashSet::new();
        let mut resolved: Vec<(usize, Option<Ipv4Addr>)> = Vec::new();
        for (i, s) in cs.services.iter().enumerate() {
            self.report.identifier(&s.name, "service name", 40);
            if !names.insert(&mut self.report, s.name.get_ref(), s.name.span(), self.text) {
                continue;
            }
            // A bad VIP is reported and the service gets an allocated one instead,
            // so ingress rules and exposes that name it are still checked.
            let vip = match &s.vip {
                Some(v) => 'vip: {
                    let Some(ip) = self.report.ipv4_addr(v, "VIP") else {
                        break 'vip None;
                    };
                    if !cidr_ok {
                        break 'vip None;
                    }
                    let slot = allocate::Slot::of(cluster.service_cidr, ip);
                    if slot != allocate::Slot::Host {
                        let (label, why) = match slot {
                            allocate::Slot::Outside => ("outside service CIDR", ""),
                            allocate::Slot::Network => ("network address", " and cannot be a VIP"),
                            _ => ("broadcast address", " and cannot be a VIP"),
                        };
                        let hint = match allocate::nth_host(cluster.service_cidr, 1) {
                            Some(first) => format!(
                                "pick a host address of service_cidr (e.g. \"{first}\"), or leave vip out to have one allocated"
                            ),
                            None => "service_cidr has no host address: use a larger one".to_string(),
                        };
                        self.report.error(
                            v.span(),
                            format!(
                                "VIP {ip} {} the service CIDR {} of cluster `{}`{why}",
                                slot.relation(),
                                cluster.service_cidr,
                                cluster.name
                            ),
                            label,
                            &hint,
                        );
                        break 'vip None;
                    }
                    if !vips.insert(&mut self.report, &ip.to_string(), v.span(), self.text) {
                        break 'vip None;
                    }
                    given.insert(ip);
                    Some(ip)
                }
                None => None,
            };
            resolved.push((i, vip));
        }
        let mut alloc = VipAllocator::new(cluster.service_cidr, given);
        for (i, vip) in resolved {
            let s = &cs.services[i];
            let vip = match vip.or_else(|| alloc.next_free()) {
                Some(v) => v,
                None => {
                    self.report.error(
                        s.name.span(),
                        format!("service CIDR {} has no VIP left", cluster.service_cidr),
                        "no VIP",
                        "use a larger service_cidr",
                    );
                    continue;
                }
            };
            let mut endpoints = Vec::new();
            let mut seen = Unique::within("backend", format!("service `{}`", s.name.get_ref()));
            for p in s.pods.get_ref() {
                if !seen.insert(&mut self.report, p.get_ref(), p.span(), self.text) {
                    continue;
                }
                match cluster.pods.iter().find(|x| &x.name == p.get_ref()) {
                    Some(pod) => endpoints.push(Endpoint {
                        pod: pod.name.clone(),
                        ip: pod.ip,
                    }),
                    None if cs.services.iter().any(|other| other.name.get_ref() == p.get_ref()) => {
                        let pods: Vec<&str> = cluster.pods.iter().map(|p| p.name.as_str()).collect();
                        self.report.error(
                            p.span(),
                            format!(
                                "backend `{}` of service `{}` is a service, not a pod",
                                p.get_ref(),
                                s.name.get_ref()
                            ),
                            "not a pod",
                            &if pods.is_empty() {
                                format!(
                                    "services load-balance to pods, and cluster `{}` declares none",
                                    cluster.name
                                )
                            } else {
                                format!(
                                    "services load-balance to pods; list pods of `{}`: {}",
                                    cluster.name,
                                    pods.iter().take(8).copied().collect::<Vec<_>>().join(", ")
                                )
                            },
                        );
                    }
                    // Declared but not placed (its worker is unknown): already reported.
                    None if cs.pods.iter().any(|x| x.name.get_ref() == p.get_ref()) => {}
                    None => self.unknown(p, "pod", &cluster.name, cluster.pods.iter().map(|p| p.name.as_str())),
                }
            }
            if s.pods.get_ref().is_empty() {
                self.report.error(
                    s.pods.span(),
                    format!("service `{}` has no backend pods", s.name.get_ref()),
                    "empty",
                    "list at least one pod of this cluster",
                );
            }
            let ports = self.service_ports(s);
            cluster.services.push(Service {
                name: s.name.get_ref().clone(),
                vip,
                endpoints,
                ports,
            });
        }
    }

    fn service_ports(&mut self, s: &spec::ServiceSpec) -> Vec<ServicePort> {
        let mut out: Vec<ServicePort> = Vec::new();
        for p in &s.ports {
            let (port, target_port, protocol, protocol_span) = match p.get_ref() {
                PortSpec::Number(n) => (*n, *n, "tcp".to_string(), p.span()),
                PortSpec::Full {
                    port,
                    target_port,
                    protocol,
                } => (
                    *port,
                    target_port.unwrap_or(*port),
                    protocol
                        .as_ref()
                        .map(|p| p.get_ref().to_ascii_lowercase())
                        .unwrap_or_else(|| "tcp".into()),
                    protocol.as_ref().map(|p| p.span()).unwrap_or(p.span()),
                ),
            };
            if port == 0 || target_port == 0 {
                self.report
                    .error(p.span(), "port 0 is not usable", "bad port", "ports are 1..=65535");
                continue;
            }
            if protocol != "tcp" && protocol != "udp" {
                self.report.error(
                    protocol_span,
                    format!(
                        "protocol `{protocol}` of service `{}` port {port} is not supported",
                        s.name.get_ref()
                    ),
                    "bad protocol",
                    "use \"tcp\" or \"udp\"",
                );
                continue;
            }
            if out.iter().any(|o| o.port == port && o.protocol == protocol) {
                self.report.error(
                    p.span(),
                    format!("service `{}` declares {protocol} port {port} twice", s.name.get_ref()),
                    "duplicate port",
                    "each port/protocol once",
                );
                continue;
            }
            out.push(ServicePort {
                port,
                target_port,
                protocol,
            });
        }
        out
    }

    fn ingresses(&mut self, cs: &spec::ClusterSpec, cluster: &mut Cluster) {
        let mut names = Unique::within("ingress", format!("cluster `{}`", cluster.name));
        for ing in &cs.ingresses {
            self.report.identifier(&ing.name, "ingress name", 40);
            if !names.insert(&mut self.report, ing.name.get_ref(), ing.name.span(), self.text) {
                continue;
            }
            // An unknown worker is reported, and the rules are still checked.
            let worker = cluster.worker(ing.worker.get_ref()).map(|w| w.host.name.clone());
            if worker.is_none() {
                self.unknown(
                    &ing.worker,
                    "worker",
                    &cluster.name,
                    cluster.workers.iter().map(|w| w.host.local.as_str()),
                );
            }
            let port = *ing.port.get_ref();
            if port == 0 {
                self.report.error(
                    ing.port.span(),
                    "port 0 is not usable",
                    "bad port",
                    "ports are 1..=65535",
                );
            } else if let Some(worker) = &worker {
                self.ports.claim(
                    &mut self.report,
                    worker,
                    port,
                    format!("ingress `{}`", ing.name.get_ref()),
                    Some(ing.port.span()),
                    ing.port.span(),
                );
            }
            let mut paths = Unique::new("ingress path");
            let mut routes = Vec::new();
            if ing.rules.is_empty() {
                self.report.error(
                    ing.name.span(),
                    format!("ingress `{}` has no rules", ing.name.get_ref()),
                    "no rules",
                    "add rules = [{ path = \"/svc1\", service = \"...\" }]",
                );
            }
            for r in &ing.rules {
                if !r.path.get_ref().starts_with('/')
                    || r.path
                        .get_ref()
                        .chars()
                        .any(|c| c.is_whitespace() || c == ';' || c == '{' || c == '}')
                {
                    self.report.error(
                        r.path.span(),
                        format!("ingress path `{}` is not a URL path", r.path.get_ref()),
                        "bad path",
                        "paths start with '/' and contain no spaces, ';' or braces",
                    );
                    continue;
                }
                paths.insert(&mut self.report, r.path.get_ref(), r.path.span(), self.text);
                let Some(svc) = cluster.services.iter().find(|s| &s.name == r.service.get_ref()) else {
                    self.unknown(
                        &r.service,
                        "service",
                        &cluster.name,
                        cluster.services.iter().map(|s| s.name.as_str()),
                    );
                    continue;
                };
                let port = match (&r.port, svc.ports.as_slice()) {
                    (Some(p), _) if *p.get_ref() == 0 => {
                        self.report
                            .error(p.span(), "port 0 is not usable", "bad port", "ports are 1..=65535");
                        continue;
                    }
                    (Some(p), ports)
                        if ports.is_empty()
                            || ports.iter().any(|sp| sp.port == *p.get_ref() && sp.protocol == "tcp") =>
                    {
                        *p.get_ref()
                    }
                    (Some(p), _) => {
                        self.report.error(
                            p.span(),
                            format!("service `{}` has no tcp port {}", svc.name, p.get_ref()),
                            "unknown service port",
                            "use one of the service's ports",
                        );
                        continue;
                    }
                    (None, [one]) => one.port,
                    (None, []) => {
                        self.report.error(
                            r.service.span(),
                            format!(
                                "ingress rule `{}` needs a port: service `{}` is IP-wide (it declares no ports)",
                                r.path.get_ref(),
                                svc.name
                            ),
                            "which port?",
                            "add port = ... to the rule, e.g. { path = \"/x\", service = \"s1\", port = 8000 }",
                        );
                        continue;
                    }
                    (None, ports) => {
                        let list: Vec<String> = ports.iter().map(|p| format!("{}/{}", p.port, p.protocol)).collect();
                        self.report.error(
                            r.service.span(),
                            format!(
                                "ingress rule `{}` needs a port: service `{}` has several ({})",
                                r.path.get_ref(),
                                svc.name,
                                list.join(", ")
                            ),
                            "which port?",
                            "add port = ... to the rule",
                        );
                        continue;
                    }
                };
                routes.push(IngressRoute {
                    path: r.path.get_ref().clone(),
                    service: svc.name.clone(),
                    vip: svc.vip,
                    port,
                });
            }
            if let Some(worker) = worker {
                cluster.ingresses.push(Ingress {
                    name: ing.name.get_ref().clone(),
                    worker,
                    port,
                    routes,
                });
            }
        }
    }

    fn impairments(&mut self, specs: &[spec::ImpairmentSpec], underlay: &mut Underlay) {
        let mut seen = Unique::new("impairment of uplink");
        for imp in specs {
            if !seen.insert(&mut self.report, imp.uplink.get_ref(), imp.uplink.span(), self.text) {
                continue;
            }
            let mut ok = true;
            if let Some(r) = &imp.rate {
                if allocate::parse_rate(r.get_ref()).is_none() {
                    self.report.error(
                        r.span(),
                        format!("rate `{}` is not a tc rate", r.get_ref()),
                        "bad rate",
                        "write it like \"10mbit\", \"500kbit\" or \"1gbit\"",
                    );
                    ok = false;
                }
            }
            if let Some(d) = &imp.delay {
                if allocate::parse_delay(d.get_ref()).is_none() {
                    self.report.error(
                        d.span(),
                        format!("delay `{}` is not a tc time", d.get_ref()),
                        "bad delay",
                        "write it like \"10ms\" or \"250us\"",
                    );
                    ok = false;
                }
            }
            if let Some(l) = &imp.loss {
                let loss = *l.get_ref();
                // NaN is in no range, so it is refused here too.
                if !(0.0..=100.0).contains(&loss) {
                    self.report.error(
                        l.span(),
                        format!("loss {loss} is not a percentage"),
                        "bad loss",
                        "loss is 0..=100 (percent); 100 cuts the link",
                    );
                    ok = false;
                } else if ((loss * 100.0).round() - loss * 100.0).abs() > 1e-6 {
                    // Without netem the executor drops `numgen random mod 10000 < loss*100`.
                    self.report.error(
                        l.span(),
                        format!("loss {loss} is finer than 0.01 %"),
                        "too precise",
                        &format!(
                            "loss is applied in steps of 0.01 % (an nft rule where the kernel has no netem): write {}",
                            (loss * 100.0).round() / 100.0
                        ),
                    );
                    ok = false;
                }
            }
            if imp.rate.is_none() && imp.delay.is_none() && imp.loss.is_none() {
                self.report.error(
                    imp.uplink.span(),
                    "impairment sets none of rate, delay, loss",
                    "nothing to do",
                    "add rate, delay or loss",
                );
                ok = false;
            }
            let Some(link) = underlay.links.iter_mut().find(|l| &l.a.node == imp.uplink.get_ref()) else {
                let nodes: Vec<String> = underlay.links.iter().map(|l| l.a.node.clone()).collect();
                self.unknown(
                    &imp.uplink,
                    "host or cluster switch",
                    "the underlay",
                    nodes.iter().map(String::as_str),
                );
                continue;
            };
            if ok {
                link.impairment = Some(Impairment {
                    // Trimmed as parse_rate and parse_delay read them: tc takes no blanks.
                    rate: imp.rate.as_ref().map(|r| r.get_ref().trim().to_string()),
                    delay: imp.delay.as_ref().map(|r| r.get_ref().trim().to_string()),
                    loss: imp.loss.as_ref().map(|r| *r.get_ref()),
                });
            }
        }
    }

    fn interconnect(&mut self, ic: &spec::InterconnectSpec, declared: &[Declared]) -> Vec<Router> {
        let find = |name: &Spanned<String>| {
            declared
                .iter()
                .find(|d| &d.cluster.name == name.get_ref())
                .map(|d| &d.cluster)
        };
        let cluster_names: Vec<&str> = declared.iter().map(|d| d.cluster.name.as_str()).collect();
        let base_ports = RouterBaseListener::ports();
        let inter_router_port = base_ports
            .iter()
            .find(|(n, _)| n == "interior-listener")
            .map(|(_, p)| *p)
            .unwrap_or(55671);

        // Clusters that take part get a router, in declaration order.
        let mut involved: Vec<String> = Vec::new();
        let mut mark = |c: &Cluster| {
            if !involved.contains(&c.name) {
                involved.push(c.name.clone());
            }
        };
        let mut links = Vec::new();
        let mut link_pairs = Unique::new("interconnect link");
        let mut listener_tls: HashMap<&str, (bool, String)> = HashMap::new();
        for l in &ic.links {
            let (from, to) = (find(&l.from), find(&l.to));
            for (end, found) in [(&l.from, from.is_some()), (&l.to, to.is_some())] {
                if !found && !self.unusable_clusters.contains(end.get_ref()) {
                    self.unknown(end, "cluster", "the topology", cluster_names.iter().copied());
                }
            }
            let (Some(from), Some(to)) = (from, to) else { continue };
            if from.name == to.name {
                self.report.error(
                    l.to.span(),
                    format!("interconnect link from `{}` to itself", from.name),
                    "self link",
                    "links join two different clusters",
                );
                continue;
            }
            let mut pair = [from.name.as_str(), to.name.as_str()];
            pair.sort();
            if !link_pairs.insert(&mut self.report, &pair.join(" <-> "), l.from.span(), self.text) {
                continue;
            }
            let cost = l.cost.as_ref().map(|c| *c.get_ref()).unwrap_or(1);
            if cost == 0 {
                self.report.error(
                    l.cost.as_ref().map(|c| c.span()).unwrap_or(l.from.span()),
                    "link cost 0 is not allowed",
                    "bad cost",
                    "costs start at 1",
                );
                continue;
            }
            // One inter-router listener per router: it requires TLS or it does not.
            match listener_tls.get(to.name.as_str()) {
                Some(&(tls, ref first)) if tls != l.tls => {
                    let (this, other) = if l.tls {
                        ("TLS", "plain-text")
                    } else {
                        ("plain-text", "TLS")
                    };
                    self.report.error(
                        l.to.span(),
                        format!(
                            "a {this} link into `{}`, whose router already takes a {other} link (from `{first}`)",
                            to.name
                        ),
                        "TLS and plain text mixed",
                        "a router has one inter-router listener, which requires TLS or not: give every link into it the same `tls`",
                    );
                    continue;
                }
                Some(_) => {}
                None => {
                    listener_tls.insert(to.name.as_str(), (l.tls, from.name.clone()));
                }
            }
            mark(from);
            mark(to);
            links.push((from, to, cost, l.tls));
        }

        fn router_worker<'c>(ic: &spec::InterconnectSpec, c: &'c Cluster) -> Option<&'c Worker> {
            match &ic.router_worker {
                Some(w) => c.worker(w.get_ref()),
                None => c.workers.first(),
            }
        }
        let mut routers: Vec<Router> = Vec::new();
        for d in declared.iter().filter(|d| involved.contains(&d.cluster.name)) {
            let c = &d.cluster;
            let Some(w) = router_worker(ic, c) else {
                if let Some(rw) = &ic.router_worker {
                    self.unknown(rw, "worker", &c.name, c.workers.iter().map(|w| w.host.local.as_str()));
                }
                continue;
            };
            // The base listeners are implicit: a clash is reported at the other claim.
            let router_span = span_of(&ic.router_worker).unwrap_or(d.spec.name.span());
            for (name, port) in &base_ports {
                self.ports.claim(
                    &mut self.report,
                    &w.host.name,
                    *port,
                    format!("the skupper router's `{name}` listener"),
                    None,
                    router_span.clone(),
                );
            }
            routers.push(Router {
                id: c.name.to_ascii_lowercase(),
                cluster: c.name.clone(),
                worker: w.host.name.clone(),
                ip: w.host.ip,
                inter_router_port,
                listener_tls: false,
                connectors: Vec::new(),
                tcp_listeners: Vec::new(),
                tcp_connectors: Vec::new(),
            });
        }
        for (from, to, cost, tls) in links {
            let Some(to_ip) = routers.iter().find(|r| r.cluster == to.name).map(|r| r.ip) else {
                continue;
            };
            if tls {
                if let Some(r) = routers.iter_mut().find(|r| r.cluster == to.name) {
                    r.listener_tls = true;
                }
            }
            if let Some(r) = routers.iter_mut().find(|r| r.cluster == from.name) {
                r.connectors.push(RouterConnector {
                    name: format!("link-{}", to.name.to_ascii_lowercase()),
                    to_cluster: to.name.clone(),
                    host: to_ip,
                    port: inter_router_port,
                    cost,
                    tls,
                });
            }
        }
        self.exposes(ic, declared, &mut routers);
        routers
    }

    fn exposes(&mut self, ic: &spec::InterconnectSpec, declared: &[Declared], routers: &mut [Router]) {
        let cluster_names: Vec<&str> = declared.iter().map(|d| d.cluster.name.as_str()).collect();
        let mut names = Unique::new("exposed service");
        for e in &ic.expose {
            self.report.identifier(&e.name, "exposed service name", 60);
            if !names.insert(&mut self.report, e.name.get_ref(), e.name.span(), self.text) {
                continue;
            }
            for port in [&e.port].into_iter().chain(e.listen.iter().map(|l| &l.port)) {
                if *port.get_ref() == 0 {
                    self.report
                        .error(port.span(), "port 0 is not usable", "bad port", "ports are 1..=65535");
                }
            }
            let Some((c, cspec)) = declared
                .iter()
                .find(|d| &d.cluster.name == e.cluster.get_ref())
                .map(|d| (&d.cluster, d.spec))
            else {
                if !self.unusable_clusters.contains(e.cluster.get_ref()) {
                    self.unknown(&e.cluster, "cluster", "the topology", cluster_names.iter().copied());
                }
                continue;
            };
            let target = match (&e.pod, &e.service) {
                (Some(p), None) => match c.pods.iter().find(|x| &x.name == p.get_ref()) {
                    Some(pod) => pod.ip,
                    // Declared but not placed (its worker is unknown): already reported.
                    None if cspec.pods.iter().any(|x| x.name.get_ref() == p.get_ref()) => continue,
                    None => {
                        self.unknown(p, "pod", &c.name, c.pods.iter().map(|p| p.name.as_str()));
                        continue;
                    }
                },
                (None, Some(s)) => match c.services.iter().find(|x| &x.name == s.get_ref()) {
                    Some(svc) => svc.vip,
                    None => {
                        self.unknown(s, "service", &c.name, c.services.iter().map(|s| s.name.as_str()));
                        continue;
                    }
                },
                (Some(p), Some(s)) => {
                    self.report.error(
                        s.span(),
                        format!(
                            "exposed service `{}` names both pod `{}` and service `{}`",
                            e.name.get_ref(),
                            p.get_ref(),
                            s.get_ref()
                        ),
                        "second target",
                        "keep exactly one of `pod` or `service`",
                    );
                    continue;
                }
                (None, None) => {
                    self.report.error(
                        e.name.span(),
                        format!("exposed service `{}` needs one of `pod` or `service`", e.name.get_ref()),
                        "what serves it?",
                        "set pod = \"c4\" or service = \"...\"",
                    );
                    continue;
                }
            };
            if !routers.iter().any(|r| r.cluster == c.name) {
                self.report.error(
                    e.cluster.span(),
                    format!("cluster `{}` has no router: no interconnect link touches it", c.name),
                    "no router here",
                    "add a link to or from this cluster in [[interconnect.links]]",
                );
                continue;
            }
            if e.listen.is_empty() {
                self.report.error(
                    e.name.span(),
                    format!("exposed service `{}` is listened for nowhere", e.name.get_ref()),
                    "no listeners",
                    "add listen = [{ cluster = \"C1\", port = 1028 }]",
                );
            }
            let reachable = router_reachability(routers, &c.name);
            for l in &e.listen {
                let Some(lc) = declared.iter().find(|d| &d.cluster.name == l.cluster.get_ref()) else {
                    if !self.unusable_clusters.contains(l.cluster.get_ref()) {
                        self.unknown(&l.cluster, "cluster", "the topology", cluster_names.iter().copied());
                    }
                    continue;
                };
                if !reachable.contains(&lc.cluster.name) {
                    self.report.error(
                        l.cluster.span(),
                        format!("cluster `{}` cannot reach exposed service `{}`: no chain of interconnect links joins it to `{}`", lc.cluster.name, e.name.get_ref(), c.name),
                        "unreachable",
                        "add an interconnect link between these clusters",
                    );
                    continue;
                }
                let Some(r) = routers.iter_mut().find(|r| r.cluster == lc.cluster.name) else {
                    continue;
                };
                self.ports.claim(
                    &mut self.report,
                    &r.worker,
                    *l.port.get_ref(),
                    format!("the skupper tcpListener for `{}`", e.name.get_ref()),
                    Some(l.port.span()),
                    l.port.span(),
                );
                r.tcp_listeners.push(TcpListener {
                    name: format!("{}:{}", e.name.get_ref(), l.port.get_ref()),
                    port: *l.port.get_ref(),
                    address: e.name.get_ref().clone(),
                });
            }
            if let Some(r) = routers.iter_mut().find(|r| r.cluster == c.name) {
                r.tcp_connectors.push(TcpConnector {
                    name: e.name.get_ref().clone(),
                    host: target,
                    port: *e.port.get_ref(),
                    address: e.name.get_ref().clone(),
                });
            }
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

/// Clusters whose routers are joined to `start` through links (either direction).
fn router_reachability(routers: &[Router], start: &str) -> HashSet<String> {
    let mut seen: HashSet<String> = HashSet::from([start.to_string()]);
    let mut frontier = vec![start.to_string()];
    while let Some(c) = frontier.pop() {
        for r in routers {
            for conn in &r.connectors {
                let next = if r.cluster == c {
                    Some(&conn.to_cluster)
                } else if conn.to_cluster == c {
                    Some(&r.cluster)
                } else {
                    None
                };
                if let Some(n) = next {
                    if seen.insert(n.clone()) {
                        frontier.push(n.clone());
                    }
                }
            }
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use crate::{check, CompileOptions, Source};

    /// The rendered diagnostics of `text` as `t.toml` (empty when it compiles).
    fn errors_of(text: &str) -> String {
        check(&Source::new("t.toml", text), &CompileOptions::named("v"))
            .map(|_| String::new())
            .unwrap_or_else(|d| d.render())
    }

    fn impairment(loss: &str) -> String {
        format!("[[clusters]]\nname = \"C0\"\n\n[[underlay.impairments]]\nuplink = \"C0s0\"\nloss = {loss}\n")
    }

    #[test]
    fn loss_100_compiles_and_losses_the_executor_cannot_apply_are_refused_where_written() {
        assert_eq!(errors_of(&impairment("100")), "");
        assert_eq!(errors_of(&impairment("0")), "");
        assert_eq!(errors_of(&impairment("12.25")), "");
        for (loss, message) in [
            ("100.5", "t.toml:6:8: loss 100.5 is not a percentage"),
            ("-1", "t.toml:6:8: loss -1 is not a percentage"),
            ("nan", "t.toml:6:8: loss NaN is not a percentage"),
            ("inf", "t.toml:6:8: loss inf is not a percentage"),
            ("0.005", "t.toml:6:8: loss 0.005 is finer than 0.01 %"),
            ("99.999", "t.toml:6:8: loss 99.999 is finer than 0.01 %"),
        ] {
            let errors = errors_of(&impairment(loss));
            assert!(errors.contains(message), "loss = {loss}:\n{errors}");
        }
        assert!(errors_of(&impairment("0.005")).contains("write 0.01"));
    }

    #[test]
    fn port_0_of_a_pod_or_an_ingress_rule_is_refused_where_written() {
        let pod = "[[clusters]]\nname = \"C0\"\npods = [{ name = \"c1\", worker = \"w1\", ports = [80, 0] }]\n";
        let errors = errors_of(pod);
        assert!(
            errors.contains("t.toml:3:52: port 0 of pod `c1` is not usable"),
            "{errors}"
        );
        assert!(errors.contains("1..=65535"), "{errors}");
        // Also on an unknown worker, with the worker reported as well.
        let errors = errors_of(&pod.replace("w1", "w9"));
        assert!(
            errors.contains("port 0 of pod `c1`") && errors.contains("w9"),
            "{errors}"
        );
        let rule = r#"[[clusters]]
name = "C0"
pods = [{ name = "c1", worker = "w1" }]
services = [{ name = "s1", pods = ["c1"] }]
ingresses = [{ name = "i", worker = "w1", port = 8001, rules = [{ path = "/x", service = "s1", port = 0 }] }]
"#;
        let errors = errors_of(rule);
        assert!(errors.contains("t.toml:5:103: port 0 is not usable"), "{errors}");
    }

    fn vip(vip: &str) -> String {
        format!(
            "[[clusters]]\nname = \"C0\"\nservice_cidr = \"100.64.0.0/16\"\npods = [{{ name = \"c1\", worker = \"w1\" }}]\n\
             services = [{{ name = \"s1\", vip = \"{vip}\", pods = [\"c1\"] }}]\n"
        )
    }

    #[test]
    fn a_vip_at_the_network_or_broadcast_address_is_not_called_outside() {
        let errors = errors_of(&vip("100.64.0.0"));
        assert!(
            errors.contains(
                "t.toml:5:34: VIP 100.64.0.0 is the network address of the service CIDR 100.64.0.0/16 of cluster `C0` and cannot be a VIP"
            ),
            "{errors}"
        );
        assert!(!errors.contains("outside"), "{errors}");
        assert!(errors.contains("100.64.0.1"), "the hint names a usable VIP: {errors}");
        let errors = errors_of(&vip("100.64.255.255"));
        assert!(
            errors
                .contains("t.toml:5:34: VIP 100.64.255.255 is the broadcast address of the service CIDR 100.64.0.0/16"),
            "{errors}"
        );
        assert!(!errors.contains("outside"), "{errors}");
        let errors = errors_of(&vip("100.65.0.1"));
        assert!(
            errors.contains("t.toml:5:34: VIP 100.65.0.1 is outside the service CIDR 100.64.0.0/16"),
            "{errors}"
        );
        assert_eq!(errors_of(&vip("100.64.255.254")), "");
    }

    fn pinned(ip: &str) -> String {
        format!("[[clusters]]\nname = \"C0\"\npods = [{{ name = \"c1\", worker = \"w1\", ip = \"{ip}\" }}]\n")
    }

    #[test]
    fn a_pinned_pod_address_says_why_it_cannot_be_used() {
        // w1's subnet is 11.10.0.0/20: .0 network, .1 the bridge, 11.10.15.255 broadcast.
        for (ip, says) in [
            (
                "11.10.0.0",
                "is the network address of worker C0w1's subnet 11.10.0.0/20",
            ),
            (
                "11.10.0.1",
                "is the bridge gateway (cni0) address of worker C0w1's subnet 11.10.0.0/20",
            ),
            (
                "11.10.15.255",
                "is the broadcast address of worker C0w1's subnet 11.10.0.0/20",
            ),
            ("11.10.16.2", "is outside worker C0w1's subnet 11.10.0.0/20"),
        ] {
            let errors = errors_of(&pinned(ip));
            assert!(
                errors.contains(&format!("t.toml:3:44: pod address {ip} {says}")),
                "{ip}:\n{errors}"
            );
            assert!(errors.contains("start at \"11.10.0.2\""), "{errors}");
        }
        assert_eq!(errors_of(&pinned("11.10.0.2")), "");
        assert_eq!(errors_of(&pinned("11.10.15.254")), "");
    }
}
