//! The facts read from a running emulation, and how they change its picture: pods show
//! the address of their CNI result, workers the subnet their flannel agent wrote,
//! services the VIP and backends programmed in the worker's ruleset, router links their
//! state in the routers' metrics. What the plan promised but the system lacks is red.

use super::{Edge, Picture};
use crate::model::topology_graph::{EdgeKind, Node, NodeKind};
use ipnetwork::Ipv4Network;
use petgraph::graph::UnGraph;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveFacts {
    /// Shown above the picture: which emulation, when.
    pub title: String,
    /// Pod (`C0/c1`) -> the addresses of its CNI ADD result; a pod without one is absent.
    pub pod_ips: BTreeMap<String, Vec<String>>,
    /// Worker (`C0w1`) -> `FLANNEL_SUBNET` of the subnet file its agent wrote.
    pub subnets: BTreeMap<String, String>,
    /// Service (`C0/web`) -> as programmed in the cluster's kube-proxy ruleset.
    pub services: BTreeMap<String, LiveService>,
    /// Router id -> what its `/metrics` say; a router that does not run is absent.
    pub routers: BTreeMap<String, LiveRouter>,
    /// Recorded processes still alive, by their state name (`etcd C0e1`, `flanneld C0w1`,
    /// `ingress C0/grp1`, ...).
    pub running: BTreeSet<String>,
    /// Components left out with `up --skip` (`ingress`, ...): not running is no fault.
    pub skipped: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveService {
    pub vip: String,
    /// Endpoint addresses (`11.10.0.2`, or `11.10.0.2:8000` for a ported service).
    pub backends: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveRouter {
    /// Its metrics answered.
    pub reachable: bool,
    pub links: Vec<LiveLink>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveLink {
    /// The peer router's id (or `host:port` of a connector that has no link).
    pub peer: String,
    pub cost: u64,
    pub up: bool,
}

/// `11.10.0.2:8000` -> `11.10.0.2`.
fn host_of(backend: &str) -> &str {
    backend.split_once(':').map_or(backend, |(h, _)| h)
}

fn router_id(node_name: &str) -> &str {
    node_name.strip_prefix("router ").unwrap_or(node_name)
}

impl LiveFacts {
    /// The pod of `cluster` that holds `ip`.
    fn pod_with(&self, cluster: &str, ip: &str) -> Option<&str> {
        self.pod_ips
            .iter()
            .find(|(pod, ips)| pod.split_once('/').is_some_and(|(c, _)| c == cluster) && ips.iter().any(|i| i == ip))
            .map(|(pod, _)| pod.as_str())
    }

    /// The text lines of a box, and whether it is broken.
    pub(super) fn lines(&self, node: &Node) -> (Vec<String>, bool) {
        let name = &node.name;
        match &node.kind {
            NodeKind::Pod { ip } => match self.pod_ips.get(name).filter(|ips| !ips.is_empty()) {
                Some(ips) => {
                    let mut lines = vec![name.clone(), ips.join(", ")];
                    if !ips.contains(&ip.to_string()) {
                        lines.push(format!("planned {ip}"));
                    }
                    (lines, false)
                }
                None => (vec![name.clone(), "no CNI result".into()], true),
            },
            NodeKind::Worker { ip, subnet } => {
                let (mut lines, mut down) = match self.subnets.get(name) {
                    Some(s) => (vec![name.clone(), ip.to_string(), format!("flannel {s}")], false),
                    None => (vec![name.clone(), ip.to_string(), "no subnet file".into()], true),
                };
                // The agent's lease is not the subnet reserved for this worker.
                let leased = self.subnets.get(name).and_then(|s| s.parse::<Ipv4Network>().ok());
                if leased.is_some_and(|l| l.network() != subnet.network() || l.prefix() != subnet.prefix()) {
                    lines.push(format!("planned {subnet}"));
                }
                if !self.running.contains(&format!("flanneld {name}")) {
                    lines.push("flanneld not running".into());
                    down = true;
                }
                (lines, down)
            }
            NodeKind::EtcdHost { .. } => {
                let mut lines = super::static_lines(&node.kind, name);
                let down = !self.running.contains(&format!("etcd {name}"));
                if down {
                    lines.push("etcd not running".into());
                }
                (lines, down)
            }
            NodeKind::Ingress { .. } => {
                let mut lines = super::static_lines(&node.kind, name);
                let cluster = node.cluster.as_deref().unwrap_or("");
                if self.running.contains(&format!("ingress {cluster}/{name}")) {
                    (lines, false)
                } else if self.skipped.iter().any(|s| s == "ingress") {
                    lines.push("left out (--skip)".into());
                    (lines, false)
                } else {
                    lines.push("nginx not running".into());
                    (lines, true)
                }
            }
            NodeKind::Service { vip } => {
                let cluster = node.cluster.as_deref().unwrap_or("");
                match self.services.get(&format!("{cluster}/{name}")) {
                    Some(s) => {
                        let mut lines = vec![format!("svc {name}"), s.vip.clone()];
                        let stale: Vec<&String> = s
                            .backends
                            .iter()
                            .filter(|b| self.pod_with(cluster, host_of(b)).is_none())
                            .collect();
                        lines.extend(stale.iter().map(|b| format!("to {b}: no pod")));
                        (lines, !stale.is_empty())
                    }
                    None => (
                        vec![format!("svc {name}"), vip.to_string(), "not programmed".into()],
                        true,
                    ),
                }
            }
            NodeKind::Router => match self.routers.get(router_id(name)) {
                Some(r) if r.reachable => (vec![name.clone()], false),
                Some(_) => (vec![name.clone(), "metrics unreachable".into()], true),
                None => (vec![name.clone(), "not running".into()], true),
            },
            NodeKind::Switch => (super::static_lines(&node.kind, name), false),
        }
    }

    /// The state of the interconnect link between two routers (box names `router ID`),
    /// as either end's metrics report it.
    pub(super) fn interconnect(&self, from: &str, to: &str, edge: &mut Edge) {
        let (from, to) = (router_id(from), router_id(to));
        let seen = |a: &str, b: &str| {
            self.routers
                .get(a)
                .and_then(|r| r.links.iter().find(|l| l.up && l.peer == b))
        };
        if let Some(l) = seen(from, to).or_else(|| seen(to, from)) {
            edge.label = format!("link cost {} up", l.cost);
        } else {
            let known = [from, to]
                .iter()
                .any(|r| self.routers.get(*r).is_some_and(|r| r.reachable));
            edge.label = if known {
                "link down".into()
            } else {
                "link unknown (no metrics)".into()
            };
            edge.down = true;
        }
    }

    /// One `backend` line from each service to each pod its live ruleset sends to.
    pub(super) fn add_backends(&self, g: &UnGraph<Node, EdgeKind>, picture: &mut Picture) {
        let index: BTreeMap<&str, usize> = g
            .node_indices()
            .filter(|n| matches!(g[*n].kind, NodeKind::Pod { .. }))
            .map(|n| (g[n].name.as_str(), n.index()))
            .collect();
        for n in g.node_indices() {
            let node = &g[n];
            let (NodeKind::Service { .. }, Some(cluster)) = (&node.kind, &node.cluster) else {
                continue;
            };
            let Some(s) = self.services.get(&format!("{cluster}/{}", node.name)) else {
                continue;
            };
            let mut pods: Vec<usize> = s
                .backends
                .iter()
                .filter_map(|b| self.pod_with(cluster, host_of(b)))
                .filter_map(|pod| index.get(pod).copied())
                .collect();
            pods.dedup();
            for pod in pods {
                picture.edges.push(Edge {
                    a: n.index(),
                    b: pod,
                    label: "backend".into(),
                    dashed: true,
                    down: false,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{render_picture, Format, Picture};
    use super::*;
    use crate::{CompileOptions, Model, Source};

    const TWO: &str = "[[clusters]]\nname = \"C0\"\netcd = 1\nworkers = 2\n\
        pods = [{ name = \"c1\", worker = \"w1\" }, { name = \"c2\", worker = \"w2\" }]\n\
        services = [{ name = \"web\", vip = \"100.64.0.1\", pods = [\"c1\", \"c2\"] }]\n\
        [[clusters]]\nname = \"C1\"\netcd = 1\nworkers = 1\n\
        [interconnect]\nlinks = [{ from = \"C1\", to = \"C0\", cost = 3 }]\n";

    fn model() -> Model {
        crate::check(&Source::new("t.toml", TWO), &CompileOptions::named("t")).expect("topology checks")
    }

    fn facts() -> LiveFacts {
        let mut f = LiveFacts {
            title: "emulation t (live)".into(),
            ..LiveFacts::default()
        };
        f.pod_ips.insert("C0/c1".into(), vec!["11.10.0.2".into()]);
        f.pod_ips.insert("C0/c2".into(), vec!["11.10.16.7".into()]);
        f.subnets.insert("C0w1".into(), "11.10.0.1/20".into());
        f.subnets.insert("C0w2".into(), "11.10.16.1/20".into());
        f.services.insert(
            "C0/web".into(),
            LiveService {
                vip: "100.64.0.1".into(),
                backends: vec!["11.10.16.7".into(), "11.10.0.9".into()],
            },
        );
        let router = |peer: &str, up| LiveRouter {
            reachable: true,
            links: vec![LiveLink {
                peer: peer.into(),
                cost: 3,
                up,
            }],
        };
        f.routers.insert("c0".into(), router("c1", true));
        f.routers.insert("c1".into(), router("c0", true));
        for p in [
            "etcd C0e1",
            "etcd C1e1",
            "flanneld C0w1",
            "flanneld C0w2",
            "flanneld C1w1",
        ] {
            f.running.insert(p.into());
        }
        f
    }

    fn text(p: &Picture, start: &str) -> (usize, String, bool) {
        let (i, n) = p
            .nodes
            .iter()
            .enumerate()
            .find(|(_, n)| n.lines[0] == start)
            .unwrap_or_else(|| panic!("no box {start}: {p:?}"));
        (i, n.lines.join(" | "), n.down)
    }

    #[test]
    fn live_facts_replace_the_plan() {
        let p = Picture::of_model(&model(), Some(&facts()));
        assert_eq!(p.title.as_deref(), Some("emulation t (live)"));
        assert_eq!(text(&p, "C0/c1").1, "C0/c1 | 11.10.0.2");
        // c2 got another address than planned: both are shown.
        let (c2, line, down) = text(&p, "C0/c2");
        assert!(line.starts_with("C0/c2 | 11.10.16.7 | planned 11.10.16."), "{line}");
        assert!(!down);
        assert_eq!(text(&p, "C0w1").1, "C0w1 | 10.0.0.2 | flannel 11.10.0.1/20");
        // C1's worker has no subnet file, C1 has no pods and no services.
        let (_, line, down) = text(&p, "C1w1");
        assert!(line.ends_with("no subnet file") && down, "{line}");
        // The service sends to c2 and to an address no pod holds.
        let (svc, line, down) = text(&p, "svc web");
        assert_eq!(line, "svc web | 100.64.0.1 | to 11.10.0.9: no pod");
        assert!(down);
        let backends: Vec<(usize, usize)> = p
            .edges
            .iter()
            .filter(|e| e.label == "backend")
            .map(|e| (e.a, e.b))
            .collect();
        assert_eq!(backends, vec![(svc, c2)]);
        let link = p
            .edges
            .iter()
            .find(|e| e.label.starts_with("link"))
            .expect("router link");
        assert_eq!(link.label, "link cost 3 up");
        assert!(!link.down);
        assert!(render_picture(&p, Format::Dot).contains("flannel 11.10.0.1/20"));
        assert_eq!(
            text(&p, "C0e1 etcd"),
            (text(&p, "C0e1 etcd").0, "C0e1 etcd | 10.1.0.1".into(), false)
        );
    }

    #[test]
    fn dead_agents_are_red() {
        let mut f = facts();
        f.running.remove("flanneld C0w2");
        f.running.remove("etcd C1e1");
        let p = Picture::of_model(&model(), Some(&f));
        let (_, line, down) = text(&p, "C0w2");
        assert_eq!(
            (line.as_str(), down),
            ("C0w2 | 10.0.0.3 | flannel 11.10.16.1/20 | flanneld not running", true)
        );
        let (_, line, down) = text(&p, "C1e1 etcd");
        assert!(line.ends_with("etcd not running") && down, "{line}");
    }

    #[test]
    fn a_lease_other_than_the_reserved_subnet_shows_both() {
        let mut f = facts();
        f.subnets.insert("C0w1".into(), "11.10.48.1/20".into());
        let p = Picture::of_model(&model(), Some(&f));
        assert_eq!(
            text(&p, "C0w1").1,
            "C0w1 | 10.0.0.2 | flannel 11.10.48.1/20 | planned 11.10.0.0/20"
        );
        assert_eq!(text(&p, "C0w2").1, "C0w2 | 10.0.0.3 | flannel 11.10.16.1/20");
    }

    #[test]
    fn a_missing_pod_a_down_link_and_a_silent_router_are_red() {
        let mut f = facts();
        f.pod_ips.remove("C0/c1");
        f.routers.insert("c0".into(), LiveRouter::default());
        f.routers.insert("c1".into(), {
            let mut r = f.routers["c1"].clone();
            r.links[0].up = false;
            r
        });
        let p = Picture::of_model(&model(), Some(&f));
        let (_, line, down) = text(&p, "C0/c1");
        assert_eq!((line.as_str(), down), ("C0/c1 | no CNI result", true));
        let (_, line, down) = text(&p, "router c0");
        assert_eq!((line.as_str(), down), ("router c0 | metrics unreachable", true));
        let link = p
            .edges
            .iter()
            .find(|e| e.label.starts_with("link"))
            .expect("router link");
        assert_eq!((link.label.as_str(), link.down), ("link down", true));
        f.routers.clear();
        let p = Picture::of_model(&model(), Some(&f));
        let link = p
            .edges
            .iter()
            .find(|e| e.label.starts_with("link"))
            .expect("router link");
        assert_eq!(link.label, "link unknown (no metrics)");
        assert!(text(&p, "router c1").2);
        let mermaid = render_picture(&p, Format::Mermaid);
        assert!(
            mermaid.contains("classDef down") && mermaid.contains("linkStyle"),
            "{mermaid}"
        );
    }
}
