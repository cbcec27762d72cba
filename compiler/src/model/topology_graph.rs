//! The topology as a petgraph graph: switches, hosts, pods, services, ingresses and
//! routers are nodes; links, placements and references are edges. Address allocation
//! is verified on this graph (connectivity, uniqueness, containment), and `knetsim
//! graph` draws it.

use super::Model;
use crate::diagnostics::Diagnostic;
use ipnetwork::Ipv4Network;
use petgraph::graph::{NodeIndex, UnGraph};
use petgraph::visit::Bfs;
use std::collections::HashMap;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    Switch,
    EtcdHost { ip: Ipv4Addr },
    Worker { ip: Ipv4Addr, subnet: Ipv4Network },
    Pod { ip: Ipv4Addr },
    Service { vip: Ipv4Addr },
    Ingress { port: u16 },
    Router,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    /// Cluster name; None for the top switch.
    pub cluster: Option<String>,
    pub kind: NodeKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeKind {
    /// Underlay veth (host-switch or switch-switch).
    Link,
    /// Pod runs on worker; ingress or router runs on worker.
    Placement,
    /// Service load-balances to pod.
    Backend,
    /// Ingress routes to service.
    Route,
    /// Router-to-router interconnect link, with its cost.
    Interconnect { cost: u32 },
}

pub struct TopologyGraph {
    pub graph: UnGraph<Node, EdgeKind>,
    pub top: NodeIndex,
}

impl TopologyGraph {
    pub fn from_model(model: &Model) -> Self {
        let mut g = UnGraph::new_undirected();
        let mut index: HashMap<String, NodeIndex> = HashMap::new();
        fn add_to(
            g: &mut UnGraph<Node, EdgeKind>,
            index: &mut HashMap<String, NodeIndex>,
            key: String,
            node: Node,
        ) -> NodeIndex {
            let i = g.add_node(node);
            index.insert(key, i);
            i
        }
        macro_rules! add {
            ($g:expr, $key:expr, $node:expr) => {
                add_to($g, &mut index, $key, $node)
            };
        }
        let top_name = model
            .underlay
            .switches
            .first()
            .map(|s| s.name.clone())
            .unwrap_or_default();
        let top = add!(
            &mut g,
            top_name.clone(),
            Node {
                name: top_name,
                cluster: None,
                kind: NodeKind::Switch
            }
        );
        for c in &model.clusters {
            add!(
                &mut g,
                c.switch.clone(),
                Node {
                    name: c.switch.clone(),
                    cluster: Some(c.name.clone()),
                    kind: NodeKind::Switch
                }
            );
            for h in &c.etcd {
                add!(
                    &mut g,
                    h.name.clone(),
                    Node {
                        name: h.name.clone(),
                        cluster: Some(c.name.clone()),
                        kind: NodeKind::EtcdHost { ip: h.ip }
                    }
                );
            }
            for w in &c.workers {
                add!(
                    &mut g,
                    w.host.name.clone(),
                    Node {
                        name: w.host.name.clone(),
                        cluster: Some(c.name.clone()),
                        kind: NodeKind::Worker {
                            ip: w.host.ip,
                            subnet: w.subnet
                        }
                    }
                );
            }
            for p in &c.pods {
                let i = add!(
                    &mut g,
                    c.pod_id(p),
                    Node {
                        name: c.pod_id(p),
                        cluster: Some(c.name.clone()),
                        kind: NodeKind::Pod { ip: p.ip }
                    }
                );
                g.add_edge(i, index[&p.worker], EdgeKind::Placement);
            }
            for s in &c.services {
                let key = format!("svc:{}", c.service_id(s));
                let i = add!(
                    &mut g,
                    key,
                    Node {
                        name: match s.namespace.as_str() {
                            super::DEFAULT_NAMESPACE => s.name.clone(),
                            ns => format!("{ns}/{}", s.name),
                        },
                        cluster: Some(c.name.clone()),
                        kind: NodeKind::Service { vip: s.vip }
                    }
                );
                for e in &s.endpoints {
                    g.add_edge(
                        i,
                        index[&super::workload_id(&c.name, &s.namespace, &e.pod)],
                        EdgeKind::Backend,
                    );
                }
            }
            for ing in &c.ingresses {
                let i = add!(
                    &mut g,
                    format!("{}/ing/{}", c.name, ing.name),
                    Node {
                        name: ing.name.clone(),
                        cluster: Some(c.name.clone()),
                        kind: NodeKind::Ingress { port: ing.port }
                    }
                );
                g.add_edge(i, index[&ing.worker], EdgeKind::Placement);
                for r in &ing.routes {
                    g.add_edge(
                        i,
                        index[&format!(
                            "svc:{}",
                            super::workload_id(&c.name, super::DEFAULT_NAMESPACE, &r.service)
                        )],
                        EdgeKind::Route,
                    );
                }
            }
        }
        for l in &model.underlay.links {
            if let (Some(a), Some(b)) = (index.get(&l.a.node), index.get(&l.b.node)) {
                g.add_edge(*a, *b, EdgeKind::Link);
            }
        }
        for r in &model.routers {
            let i = add!(
                &mut g,
                format!("router/{}", r.cluster),
                Node {
                    name: format!("router {}", r.id),
                    cluster: Some(r.cluster.clone()),
                    kind: NodeKind::Router
                }
            );
            g.add_edge(i, index[&r.worker], EdgeKind::Placement);
        }
        for r in &model.routers {
            for c in &r.connectors {
                let (a, b) = (
                    index[&format!("router/{}", r.cluster)],
                    index[&format!("router/{}", c.to_cluster)],
                );
                g.add_edge(a, b, EdgeKind::Interconnect { cost: c.cost });
            }
        }
        TopologyGraph { graph: g, top }
    }

    /// Nodes reachable from the top switch over underlay links only.
    fn underlay_reachable(&self) -> Vec<bool> {
        let mut seen = vec![false; self.graph.node_count()];
        let links_only = petgraph::visit::EdgeFiltered::from_fn(&self.graph, |e| *e.weight() == EdgeKind::Link);
        let mut bfs = Bfs::new(&links_only, self.top);
        while let Some(n) = bfs.next(&links_only) {
            seen[n.index()] = true;
        }
        seen
    }
}

/// Verifies the allocation on the graph. The builder reports user mistakes with
/// spans; this is the invariant check behind it, so its findings name nodes.
pub fn check(model: &Model) -> Vec<Diagnostic> {
    let tg = TopologyGraph::from_model(model);
    let g = &tg.graph;
    let mut problems = Vec::new();
    let reachable = tg.underlay_reachable();
    let mut underlay_ips: HashMap<Ipv4Addr, &str> = HashMap::new();
    for n in g.node_indices() {
        let node = &g[n];
        let host_ip = match &node.kind {
            NodeKind::EtcdHost { ip } | NodeKind::Worker { ip, .. } => Some(*ip),
            _ => None,
        };
        let Some(ip) = host_ip else { continue };
        if !reachable[n.index()] {
            problems.push(Diagnostic::new(
                None,
                format!("host {} is not connected to the underlay", node.name),
            ));
        }
        if !model.underlay.network.contains(ip) {
            problems.push(Diagnostic::new(
                None,
                format!(
                    "host {} has address {ip} outside the underlay network {}",
                    node.name, model.underlay.network
                ),
            ));
        }
        if let Some(other) = underlay_ips.insert(ip, &node.name) {
            problems.push(Diagnostic::new(
                None,
                format!("hosts {other} and {} share the underlay address {ip}", node.name),
            ));
        }
    }
    let mut by_cluster: HashMap<&str, Vec<NodeIndex>> = HashMap::new();
    for n in g.node_indices() {
        if let Some(c) = g[n].cluster.as_deref() {
            by_cluster.entry(c).or_default().push(n);
        }
    }
    for c in &model.clusters {
        let mut used: HashMap<Ipv4Addr, String> = HashMap::new();
        let mut claim = |ip: Ipv4Addr, who: String, problems: &mut Vec<Diagnostic>| {
            if let Some(prev) = used.insert(ip, who.clone()) {
                problems.push(Diagnostic::new(
                    None,
                    format!("in cluster {}: {prev} and {who} share the address {ip}", c.name),
                ));
            }
        };
        for w in &c.workers {
            claim(
                w.subnet.nth(1).unwrap_or(w.subnet.ip()),
                format!("{} bridge gateway", w.host.name),
                &mut problems,
            );
            for other in &c.workers {
                if other.host.name < w.host.name && super::report::overlaps(other.subnet, w.subnet) {
                    problems.push(Diagnostic::new(
                        None,
                        format!(
                            "workers {} and {} have overlapping subnets",
                            other.host.name, w.host.name
                        ),
                    ));
                }
            }
        }
        for &n in by_cluster.get(c.name.as_str()).map(Vec::as_slice).unwrap_or_default() {
            match &g[n].kind {
                NodeKind::Pod { ip } => {
                    claim(*ip, format!("pod {}", g[n].name), &mut problems);
                    let inside = g
                        .neighbors(n)
                        .any(|w| matches!(g[w].kind, NodeKind::Worker { subnet, .. } if subnet.contains(*ip)));
                    if !inside {
                        problems.push(Diagnostic::new(
                            None,
                            format!("pod {} ({ip}) is outside its worker's subnet", g[n].name),
                        ));
                    }
                }
                // A headless service has no VIP to claim.
                NodeKind::Service { vip } if !vip.is_unspecified() => {
                    claim(*vip, format!("service {}", g[n].name), &mut problems)
                }
                _ => {}
            }
        }
    }
    problems
}
