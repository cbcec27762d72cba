//! Schema -> model: resolves names, allocates every address, and checks references.
//! The build never stops at the first problem: all of them are reported together.

use super::allocate::{self, VipAllocator};
use super::checks::{overlaps, PortTable, Report, Unique};
use super::*;
use crate::diagnostics::Diagnostics;
use crate::topology::{self as spec, FlannelDefaults, NameList, PortSpec, RouterBaseListener, Source, Spanned};
use crate::CompileOptions;
use std::collections::{HashMap, HashSet};
use std::ops::Range;

const DEFAULT_WORKERS: u32 = 2;
const DEFAULT_ETCD: u32 = 1;
const DEFAULT_SERVICE_CIDR: &str = "100.64.0.0/16";
const MAX_NAME: usize = 10;

pub fn build(source: &Source, topo: &spec::TopologySpec, opts: &CompileOptions) -> Result<Model, Diagnostics> {
    let mut b = Builder {
        report: Report::default(),
        text: &source.text,
        naming: Naming::new(&opts.name, &opts.state_dir.display().to_string()),
        host_names: Unique::new("host"),
        ports: PortTable::default(),
    };
    let model = b.model(topo);
    if b.report.items.is_empty() {
        if let Some(model) = model {
            let graph_problems = graph::check(&model);
            if graph_problems.is_empty() {
                return Ok(model);
            }
            return Err(source.diagnostics(graph_problems));
        }
    }
    Err(source.diagnostics(b.report.items))
}

struct Builder<'a> {
    report: Report,
    text: &'a str,
    naming: Naming,
    host_names: Unique<'static>,
    ports: PortTable,
}

/// A cluster as declared, with the spans needed by later (cross-cluster) checks.
struct Declared<'s> {
    spec: &'s spec::ClusterSpec,
    cluster: Cluster,
}

impl<'a> Builder<'a> {
    fn model(&mut self, topo: &spec::TopologySpec) -> Option<Model> {
        if topo.clusters.is_empty() {
            self.report.push(
                crate::Diagnostic::new(Some(0..0), "the topology declares no cluster")
                    .label("nothing to emulate")
                    .hint("add one:\n[[clusters]]\nname = \"C0\""),
            );
            return None;
        }
        let network = match &topo.underlay.network {
            Some(n) => self.report.ipv4_net(n, "underlay network")?,
            None => "10.0.0.0/8".parse().expect("valid"),
        };
        let top_switch = match &topo.underlay.top_switch {
            Some(s) if self.report.identifier(s, "switch", MAX_NAME) => s.get_ref().clone(),
            Some(_) => return None,
            None => "t0".to_string(),
        };
        self.host_names.insert(&mut self.report, &top_switch, 0..0, self.text);

        let mut cluster_names = Unique::new("cluster");
        let mut host_counter: u64 = 0;
        let mut declared = Vec::new();
        for (index, cs) in topo.clusters.iter().enumerate() {
            let name_ok = self.report.identifier(&cs.name, "cluster name", 6);
            let unique = cluster_names.insert(&mut self.report, cs.name.get_ref(), cs.name.span(), self.text);
            if let Some(cluster) = self.cluster(index, cs, network, &mut host_counter) {
                if name_ok && unique {
                    declared.push(Declared { spec: cs, cluster });
                }
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
        self.interface_names(&underlay, &declared);
        self.impairments(&topo.underlay.impairments, &mut underlay);

        let routers = match &topo.interconnect {
            Some(ic) => self.interconnect(ic, &declared),
            None => Vec::new(),
        };
        Some(Model {
            name: self.naming_name(),
            state_dir: self.naming.state_dir().to_string(),
            switch_netns: sw_ns,
            underlay,
            clusters: declared.into_iter().map(|d| d.cluster).collect(),
            routers,
        })
    }

    fn naming_name(&self) -> String {
        self.naming.host_netns("").trim_end_matches('-').to_string()
    }

    /// Switch-side veth names must fit IFNAMSIZ.
    fn interface_names(&mut self, underlay: &Underlay, declared: &[Declared]) {
        for link in &underlay.links {
            for end in [&link.a, &link.b] {
                if end.ifname.len() > 15 {
                    let span = declared
                        .iter()
                        .find(|d| end.ifname.starts_with(&d.cluster.switch))
                        .map(|d| d.spec.name.span())
                        .unwrap_or(0..0);
                    self.report.error(
                        span,
                        format!("interface name `{}` would exceed 15 characters", end.ifname),
                        "name too long for a switch port",
                        "use a shorter cluster name or fewer hosts per cluster",
                    );
                    return;
                }
            }
        }
    }

    fn names(&mut self, list: Option<&Spanned<NameList>>, default: u32, prefix: &str) -> Vec<(String, Range<usize>)> {
        match list {
            None => (1..=default).map(|i| (format!("{prefix}{i}"), 0..0)).collect(),
            Some(l) => match l.get_ref() {
                NameList::Count(n) => (1..=*n).map(|i| (format!("{prefix}{i}"), l.span())).collect(),
                NameList::Names(names) => names
                    .iter()
                    .filter(|n| self.report.identifier(n, "host name", MAX_NAME))
                    .map(|n| (n.get_ref().clone(), n.span()))
                    .collect(),
            },
        }
    }

    fn cluster(
        &mut self,
        index: usize,
        cs: &spec::ClusterSpec,
        underlay: Ipv4Network,
        counter: &mut u64,
    ) -> Option<Cluster> {
        let cname = cs.name.get_ref().clone();
        let cspan = cs.name.span();
        let etcd_names = self.names(cs.etcd.as_ref(), DEFAULT_ETCD, "e");
        let worker_names = self.names(cs.workers.as_ref(), DEFAULT_WORKERS, "w");
        if worker_names.is_empty() {
            let span = cs.workers.as_ref().map(|w| w.span()).unwrap_or(cspan.clone());
            self.report.error(
                span,
                format!("cluster `{cname}` has no worker"),
                "no workers",
                "a cluster needs at least one worker",
            );
        }
        if etcd_names.is_empty() {
            let span = cs.etcd.as_ref().map(|w| w.span()).unwrap_or(cspan.clone());
            self.report.error(
                span,
                format!("cluster `{cname}` has no etcd member"),
                "no etcd",
                "flannel needs an etcd member: use `etcd = 1`",
            );
        }
        let mut local = Unique::new("host name in this cluster");
        for (n, span) in etcd_names.iter().chain(&worker_names) {
            let span = if span.is_empty() { cspan.clone() } else { span.clone() };
            local.insert(&mut self.report, n, span.clone(), self.text);
            self.host_names
                .insert(&mut self.report, &format!("{cname}{n}"), span, self.text);
        }

        // etcd hosts are pinned, as in the seed, but still consume a Mininet host number.
        let etcd_net = match &cs.etcd_network {
            Some(n) => Some((self.report.ipv4_net(n, "etcd network")?, n.span())),
            None if underlay.prefix() <= 15 && index < 255 => {
                let base = u32::from(underlay.network()) + ((index as u32 + 1) << 16);
                Some((Ipv4Network::new(base.into(), 16).expect("valid"), cspan.clone()))
            }
            None => None,
        };
        let mut etcd = Vec::new();
        for (k, (local_name, span)) in etcd_names.iter().enumerate() {
            *counter += 1;
            let ip = match &etcd_net {
                Some((net, _)) => allocate::nth_host(*net, k as u64 + 1),
                None => allocate::nth_host(underlay, *counter),
            };
            let Some(ip) = ip else {
                let span = etcd_net.as_ref().map(|e| e.1.clone()).unwrap_or(span.clone());
                self.report.error(
                    span,
                    format!("no address left for etcd host {cname}{local_name}"),
                    "network too small",
                    "use a larger etcd_network",
                );
                continue;
            };
            etcd.push(self.host(&cname, local_name, ip, underlay.prefix()));
        }
        if let Some((net, span)) = &etcd_net {
            if !underlay.contains(net.network()) {
                self.report.error(
                    span.clone(),
                    format!("etcd network {net} is outside the underlay network {underlay}"),
                    "unreachable from the workers",
                    "all hosts share one underlay network; pick an etcd_network inside it",
                );
            }
        }

        let flannel = self.flannel(cs, &cname)?;
        let service_cidr = match &cs.service_cidr {
            Some(s) => self.report.ipv4_net(s, "service CIDR")?,
            None => DEFAULT_SERVICE_CIDR.parse().expect("valid"),
        };
        let span_of = |s: &Option<Spanned<String>>| s.as_ref().map(|s| s.span()).unwrap_or(cspan.clone());
        let nets = [
            ("underlay network", underlay, cspan.clone()),
            ("pod network (flannel)", flannel.network, span_of(&cs.flannel.network)),
            ("service CIDR", service_cidr, span_of(&cs.service_cidr)),
        ];
        for i in 0..nets.len() {
            for j in i + 1..nets.len() {
                if overlaps(nets[i].1, nets[j].1) {
                    self.report.error(
                        nets[j].2.clone(),
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
        if needed > available {
            self.report.error(
                span_of(&cs.flannel.subnet_max),
                format!("cluster `{cname}` has {needed} workers but SubnetMin..SubnetMax holds only {available} /{} subnets", flannel.subnet_len),
                "too few subnets",
                "widen SubnetMin..SubnetMax or use a longer subnet_len",
            );
        }
        let mut workers = Vec::new();
        let mut subnets = allocate::flannel_subnets(flannel.subnet_min, flannel.subnet_max, flannel.subnet_len);
        for (local_name, _) in &worker_names {
            *counter += 1;
            let Some(ip) = allocate::nth_host(underlay, *counter) else {
                self.report.error(
                    cspan.clone(),
                    format!("the underlay network {underlay} has no address left for {cname}{local_name}"),
                    "too many hosts",
                    "use a larger underlay network",
                );
                continue;
            };
            let Some(subnet) = subnets.next() else { continue };
            let host = self.host(&cname, local_name, ip, underlay.prefix());
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
        self.services(cs, &mut cluster);
        self.ingresses(cs, &mut cluster);
        Some(cluster)
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

    fn flannel(&mut self, cs: &spec::ClusterSpec, cname: &str) -> Option<Flannel> {
        let d = FlannelDefaults::get();
        let f = &cs.flannel;
        let cspan = cs.name.span();
        let network = match &f.network {
            Some(n) => self.report.ipv4_net(n, "flannel network")?,
            None => d.network.parse().expect("conf default is valid"),
        };
        let subnet_len = f.subnet_len.as_ref().map(|s| *s.get_ref()).unwrap_or(d.subnet_len);
        let len_span = f.subnet_len.as_ref().map(|s| s.span()).unwrap_or(cspan.clone());
        if subnet_len <= network.prefix() || subnet_len > 30 {
            self.report.error(
                len_span,
                format!(
                    "flannel subnet_len {subnet_len} must be longer than the network's /{} and at most 30",
                    network.prefix()
                ),
                "bad subnet length",
                "flannel gives each worker a /subnet_len slice of Network",
            );
            return None;
        }
        let addr = |b: &mut Self,
                    v: &Option<Spanned<String>>,
                    default: &str,
                    what: &str|
         -> Option<(Ipv4Addr, Range<usize>)> {
            match v {
                Some(s) => Some((b.report.ipv4_addr(s, what)?, s.span())),
                None => Some((default.parse().expect("conf default is valid"), cspan.clone())),
            }
        };
        let (subnet_min, min_span) = addr(self, &f.subnet_min, &d.subnet_min, "flannel subnet_min")?;
        let (subnet_max, max_span) = addr(self, &f.subnet_max, &d.subnet_max, "flannel subnet_max")?;
        let mut ok = true;
        for (what, a, span) in [
            ("subnet_min", subnet_min, &min_span),
            ("subnet_max", subnet_max, &max_span),
        ] {
            if !network.contains(a) {
                self.report.error(
                    span.clone(),
                    format!("flannel {what} {a} is outside Network {network}"),
                    "outside the pod network",
                    "SubnetMin and SubnetMax must lie inside Network",
                );
                ok = false;
            } else if u32::from(a) % (1u32 << (32 - u32::from(subnet_len))) != 0 {
                self.report.error(
                    span.clone(),
                    format!("flannel {what} {a} is not aligned to /{subnet_len}"),
                    "not a subnet start",
                    "use the first address of a /subnet_len subnet",
                );
                ok = false;
            }
        }
        if ok && subnet_max < subnet_min {
            self.report.error(
                max_span,
                format!("flannel subnet_max {subnet_max} is below subnet_min {subnet_min}"),
                "empty range",
                "swap them",
            );
            ok = false;
        }
        let backend = f
            .backend
            .as_ref()
            .map(|b| b.get_ref().clone())
            .unwrap_or(d.backend.kind.clone());
        if backend != "vxlan" {
            let span = f.backend.as_ref().map(|b| b.span()).unwrap_or(cspan.clone());
            self.report.error(
                span,
                format!("flannel backend `{backend}` is not emulated in cluster `{cname}`"),
                "unsupported backend",
                "use \"vxlan\"",
            );
            ok = false;
        }
        let vni = f.vni.as_ref().map(|v| *v.get_ref()).unwrap_or(d.backend.vni);
        if vni == 0 || vni > 0xff_ffff {
            let span = f.vni.as_ref().map(|v| v.span()).unwrap_or(cspan.clone());
            self.report.error(
                span,
                format!("VXLAN VNI {vni} is out of range"),
                "bad VNI",
                "a VNI is 1..=16777215",
            );
            ok = false;
        }
        let port = f.port.as_ref().map(|v| *v.get_ref()).unwrap_or(d.backend.port);
        if port == 0 {
            let span = f.port.as_ref().map(|v| v.span()).unwrap_or(cspan.clone());
            self.report.error(
                span,
                "VXLAN port 0 is not usable",
                "bad port",
                "flannel's default is 8472",
            );
            ok = false;
        }
        ok.then_some(Flannel {
            network,
            subnet_len,
            subnet_min,
            subnet_max,
            backend,
            vni,
            port,
        })
    }

    fn pods(&mut self, cs: &spec::ClusterSpec, cluster: &mut Cluster) {
        let mut names = Unique::new("pod");
        let mut per_worker: HashMap<String, usize> = HashMap::new();
        for p in &cs.pods {
            if !self.report.identifier(&p.name, "pod name", 40)
                || !names.insert(&mut self.report, p.name.get_ref(), p.name.span(), self.text)
            {
                continue;
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
            let Some(ip) = allocate::pod_ip(worker.subnet, *slot) else {
                self.report.error(
                    p.name.span(),
                    format!(
                        "worker {} has no pod address left in {}",
                        worker.host.name, worker.subnet
                    ),
                    "subnet full",
                    "use a shorter flannel subnet_len",
                );
                continue;
            };
            *slot += 1;
            if let Some(cmd) = &p.command {
                if cmd.get_ref().is_empty() || cmd.get_ref()[0].is_empty() {
                    self.report.error(
                        cmd.span(),
                        format!("pod `{}` has an empty command", p.name.get_ref()),
                        "no program",
                        "give argv, e.g. [\"knetsim\", \"serve\", \"--text\", \"hello\"]",
                    );
                }
            }
            let mut ports = Unique::new("port of this pod");
            for port in &p.ports {
                ports.insert(&mut self.report, &port.get_ref().to_string(), port.span(), self.text);
            }
            cluster.pods.push(Pod {
                name: p.name.get_ref().clone(),
                worker: worker.host.name.clone(),
                netns: self.naming.pod_netns(cluster.index, p.name.get_ref()),
                ip,
                container_id: format!("{}-{}", cluster.name, p.name.get_ref()),
                command: p.command.as_ref().map(|c| c.get_ref().clone()),
                ports: p.ports.iter().map(|p| *p.get_ref()).collect(),
            });
        }
    }

    fn services(&mut self, cs: &spec::ClusterSpec, cluster: &mut Cluster) {
        let mut names = Unique::new("service");
        let mut vips = Unique::new("VIP");
        let mut given = HashSet::new();
        let mut resolved: Vec<(usize, Option<Ipv4Addr>)> = Vec::new();
        for (i, s) in cs.services.iter().enumerate() {
            if !self.report.identifier(&s.name, "service name", 40)
                || !names.insert(&mut self.report, s.name.get_ref(), s.name.span(), self.text)
            {
                continue;
            }
            let vip = match &s.vip {
                Some(v) => {
                    let Some(ip) = self.report.ipv4_addr(v, "VIP") else {
                        continue;
                    };
                    if !cluster.service_cidr.contains(ip)
                        || allocate::nth_host(cluster.service_cidr, 1).is_none()
                        || ip == cluster.service_cidr.network()
                        || ip == cluster.service_cidr.broadcast()
                    {
                        self.report.error(
                            v.span(),
                            format!(
                                "VIP {ip} is outside the service CIDR {} of cluster `{}`",
                                cluster.service_cidr, cluster.name
                            ),
                            "outside service CIDR",
                            "pick a VIP inside service_cidr, or leave vip out to have one allocated",
                        );
                        continue;
                    }
                    if !vips.insert(&mut self.report, &ip.to_string(), v.span(), self.text) {
                        continue;
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
            let mut seen = Unique::new("backend");
            for p in s.pods.get_ref() {
                if !seen.insert(&mut self.report, p.get_ref(), p.span(), self.text) {
                    continue;
                }
                match cluster.pods.iter().find(|x| &x.name == p.get_ref()) {
                    Some(pod) => endpoints.push(Endpoint {
                        pod: pod.name.clone(),
                        ip: pod.ip,
                    }),
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
            let (port, target_port, protocol) = match p.get_ref() {
                PortSpec::Number(n) => (*n, *n, "tcp".to_string()),
                PortSpec::Full {
                    port,
                    target_port,
                    protocol,
                } => (
                    *port,
                    target_port.unwrap_or(*port),
                    protocol.clone().unwrap_or_else(|| "tcp".into()).to_ascii_lowercase(),
                ),
            };
            if port == 0 || target_port == 0 {
                self.report
                    .error(p.span(), "port 0 is not usable", "bad port", "ports are 1..=65535");
                continue;
            }
            if protocol != "tcp" && protocol != "udp" {
                self.report.error(
                    p.span(),
                    format!("protocol `{protocol}` is not supported"),
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
        let mut names = Unique::new("ingress");
        for ing in &cs.ingresses {
            if !self.report.identifier(&ing.name, "ingress name", 40)
                || !names.insert(&mut self.report, ing.name.get_ref(), ing.name.span(), self.text)
            {
                continue;
            }
            let Some(worker) = cluster.worker(ing.worker.get_ref()).map(|w| w.host.name.clone()) else {
                self.unknown(
                    &ing.worker,
                    "worker",
                    &cluster.name,
                    cluster.workers.iter().map(|w| w.host.local.as_str()),
                );
                continue;
            };
            let port = *ing.port.get_ref();
            if port == 0 {
                self.report.error(
                    ing.port.span(),
                    "port 0 is not usable",
                    "bad port",
                    "ports are 1..=65535",
                );
                continue;
            }
            self.ports.claim(
                &mut self.report,
                &worker,
                port,
                format!("ingress `{}`", ing.name.get_ref()),
                ing.port.span(),
            );
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
                    (None, _) => {
                        self.report.error(
                            r.service.span(),
                            format!("ingress rule for `{}` needs a port", svc.name),
                            "which port?",
                            "add port = ... (the service is IP-wide or has several ports)",
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
            cluster.ingresses.push(Ingress {
                name: ing.name.get_ref().clone(),
                worker,
                port,
                routes,
            });
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
                if !(0.0..=100.0).contains(l.get_ref()) {
                    self.report.error(
                        l.span(),
                        format!("loss {} is not a percentage", l.get_ref()),
                        "bad loss",
                        "loss is 0..=100 (percent)",
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
                    rate: imp.rate.as_ref().map(|r| r.get_ref().clone()),
                    delay: imp.delay.as_ref().map(|r| r.get_ref().clone()),
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
        for l in &ic.links {
            let (from, to) = (find(&l.from), find(&l.to));
            if from.is_none() {
                self.unknown(&l.from, "cluster", "the topology", cluster_names.iter().copied());
            }
            if to.is_none() {
                self.unknown(&l.to, "cluster", "the topology", cluster_names.iter().copied());
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
            if !link_pairs.insert(&mut self.report, &pair.join("<->"), l.from.span(), self.text) {
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
            for (name, port) in &base_ports {
                self.ports.claim(
                    &mut self.report,
                    &w.host.name,
                    *port,
                    format!("router listener `{name}`"),
                    d.spec.name.span(),
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
            if !self.report.identifier(&e.name, "exposed service name", 60)
                || !names.insert(&mut self.report, e.name.get_ref(), e.name.span(), self.text)
            {
                continue;
            }
            let Some(c) = declared
                .iter()
                .find(|d| &d.cluster.name == e.cluster.get_ref())
                .map(|d| &d.cluster)
            else {
                self.unknown(&e.cluster, "cluster", "the topology", cluster_names.iter().copied());
                continue;
            };
            let target = match (&e.pod, &e.service) {
                (Some(p), None) => match c.pods.iter().find(|x| &x.name == p.get_ref()) {
                    Some(pod) => pod.ip,
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
                _ => {
                    self.report.error(
                        e.name.span(),
                        format!(
                            "exposed service `{}` needs exactly one of `pod` or `service`",
                            e.name.get_ref()
                        ),
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
                    self.unknown(&l.cluster, "cluster", "the topology", cluster_names.iter().copied());
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
                    format!("tcpListener `{}`", e.name.get_ref()),
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
        let hint = match closest(name.get_ref(), &known) {
            Some(c) => format!("did you mean `{c}`?"),
            None if known.is_empty() => format!("{scope} declares no {what}"),
            None => format!(
                "known: {}",
                known.iter().take(8).copied().collect::<Vec<_>>().join(", ")
            ),
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

/// The known name closest to a misspelt one (edit distance <= 2).
fn closest<'n>(name: &str, known: &[&'n str]) -> Option<&'n str> {
    known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for j in 0..b.len() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != b[j])).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}
