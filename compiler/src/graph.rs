//! Pictures of a topology: Mermaid and Graphviz dot, drawn from the petgraph model.
//! A [`Picture`] is plain data (boxes grouped by cluster, lines between them); it is
//! built from the model alone (`knetsim graph`) or from the model with the facts read
//! from a running emulation ([`LiveFacts`], `knetsim graph --live`), and [`render`]ed
//! to text. Nothing here reads the system.

mod live;
mod render;

pub use live::{LiveFacts, LiveLink, LiveRouter, LiveService};
pub use render::render_picture;

use crate::model::topology_graph::{EdgeKind, NodeKind, TopologyGraph};
use crate::model::Model;
use petgraph::visit::EdgeRef;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Mermaid,
    Dot,
}

/// One box: its text lines, its cluster (None = outside every cluster), and whether
/// it is drawn as broken (a live fact is missing or wrong).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub cluster: Option<String>,
    pub lines: Vec<String>,
    pub down: bool,
}

/// One line between boxes `a` and `b` (indexes into `Picture::nodes`). Underlay links are
/// solid; placements and references dashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub a: usize,
    pub b: usize,
    pub label: String,
    pub dashed: bool,
    pub down: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Picture {
    /// Shown above the picture (live pictures say which emulation).
    pub title: Option<String>,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
}

/// The compiled topology as text.
pub fn render(model: &Model, format: Format) -> String {
    render_picture(&Picture::of_model(model, None), format)
}

fn static_lines(kind: &NodeKind, name: &str) -> Vec<String> {
    match kind {
        NodeKind::Switch => vec![format!("{name} (switch)")],
        NodeKind::EtcdHost { ip } => vec![format!("{name} etcd"), ip.to_string()],
        NodeKind::Worker { ip, subnet } => vec![name.to_string(), ip.to_string(), format!("pods {subnet}")],
        NodeKind::Pod { ip } => vec![name.to_string(), ip.to_string()],
        NodeKind::Service { vip } => vec![format!("svc {name}"), vip.to_string()],
        NodeKind::Ingress { port } => vec![format!("ingress {name}"), format!(":{port}")],
        NodeKind::Router => vec![name.to_string()],
    }
}

fn edge_label(kind: &EdgeKind) -> String {
    match kind {
        EdgeKind::Link => String::new(),
        EdgeKind::Placement => "runs on".into(),
        EdgeKind::Backend => "backend".into(),
        EdgeKind::Route => "route".into(),
        EdgeKind::Interconnect { cost } => format!("link cost {cost}"),
    }
}

impl Picture {
    /// The model's graph; with `live`, pods, workers, services and router links show
    /// what the running emulation has instead of what was planned.
    pub fn of_model(model: &Model, live: Option<&LiveFacts>) -> Picture {
        let tg = TopologyGraph::from_model(model);
        let g = &tg.graph;
        let nodes: Vec<Node> = g
            .node_indices()
            .map(|n| {
                let node = &g[n];
                let (lines, down) = match live {
                    Some(f) => f.lines(node),
                    None => (static_lines(&node.kind, &node.name), false),
                };
                Node {
                    cluster: node.cluster.clone(),
                    lines,
                    down,
                }
            })
            .collect();
        let mut picture = Picture {
            title: live.map(|f| f.title.clone()),
            nodes,
            edges: Vec::new(),
        };
        for e in g.edge_references() {
            let (a, b) = (e.source().index(), e.target().index());
            let mut edge = Edge {
                a,
                b,
                label: edge_label(e.weight()),
                dashed: *e.weight() != EdgeKind::Link,
                down: false,
            };
            if let Some(f) = live {
                match e.weight() {
                    // Live backends come from the ruleset below, not from the plan.
                    EdgeKind::Backend => continue,
                    EdgeKind::Interconnect { .. } => {
                        f.interconnect(&g[e.source()].name, &g[e.target()].name, &mut edge)
                    }
                    _ => {}
                }
            }
            picture.edges.push(edge);
        }
        if let Some(f) = live {
            f.add_backends(g, &mut picture);
        }
        picture
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CompileOptions, Source};

    fn model(text: &str) -> Model {
        crate::check(&Source::new("t.toml", text), &CompileOptions::named("t")).expect("topology checks")
    }

    const ONE: &str = "[[clusters]]\nname = \"C0\"\netcd = 1\nworkers = 1\n\
                       pods = [{ name = \"c1\", worker = \"w1\" }]\n\
                       services = [{ name = \"web\", vip = \"100.64.0.1\", pods = [\"c1\"] }]\n";

    #[test]
    fn the_model_picture_has_every_node_and_a_backend_edge() {
        let p = Picture::of_model(&model(ONE), None);
        let texts: Vec<String> = p.nodes.iter().map(|n| n.lines.join(" ")).collect();
        assert!(texts.contains(&"svc web 100.64.0.1".to_string()), "{texts:?}");
        let pod = texts.iter().position(|t| t.starts_with("C0/c1 ")).expect("pod node");
        let svc = texts
            .iter()
            .position(|t| t.starts_with("svc web"))
            .expect("service node");
        assert!(p
            .edges
            .iter()
            .any(|e| (e.a, e.b) == (svc, pod) && e.label == "backend" && e.dashed));
        assert!(p.nodes.iter().all(|n| !n.down) && p.title.is_none());
        // Switch-host underlay links are solid.
        assert!(p.edges.iter().any(|e| !e.dashed && e.label.is_empty()));
    }
}
