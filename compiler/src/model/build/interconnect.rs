//! The interconnect: routers, their links and costs, and the services each
//! cluster exposes to the others.

use super::*;

impl Builder<'_> {
    pub(super) fn interconnect(&mut self, ic: &spec::InterconnectSpec, declared: &[Declared]) -> Vec<Router> {
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

    pub(super) fn exposes(&mut self, ic: &spec::InterconnectSpec, declared: &[Declared], routers: &mut [Router]) {
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
                // `name` (of `default`) or `namespace/name`.
                (Some(p), None) => match c.pod(ns_of(p.get_ref()).0, ns_of(p.get_ref()).1) {
                    Some(pod) => pod.ip,
                    // Declared but not placed (its worker is unknown): already reported.
                    None if cspec.pods.iter().any(|x| x.name.get_ref() == p.get_ref()) => continue,
                    None => {
                        let known: Vec<String> = c.pods.iter().map(|p| qualified(&p.namespace, &p.name)).collect();
                        self.unknown(p, "pod", &c.name, known.iter().map(String::as_str));
                        continue;
                    }
                },
                (None, Some(s)) => match c.service(ns_of(s.get_ref()).0, ns_of(s.get_ref()).1) {
                    Some(svc) if svc.headless => {
                        self.report.error(
                            s.span(),
                            format!("service `{}` is headless: it has no VIP to connect to", s.get_ref()),
                            "headless",
                            "expose one of its pods (pod = ...), or a service with a VIP",
                        );
                        continue;
                    }
                    Some(svc) => svc.vip,
                    None => {
                        let known: Vec<String> = c.services.iter().map(|s| qualified(&s.namespace, &s.name)).collect();
                        self.unknown(s, "service", &c.name, known.iter().map(String::as_str));
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

/// `web` -> (`default`, `web`); `prod/web` -> (`prod`, `web`).
fn ns_of(name: &str) -> (&str, &str) {
    name.split_once('/').unwrap_or((DEFAULT_NAMESPACE, name))
}

/// The inverse of [`ns_of`], for hints.
fn qualified(namespace: &str, name: &str) -> String {
    if namespace == DEFAULT_NAMESPACE {
        name.to_string()
    } else {
        format!("{namespace}/{name}")
    }
}
