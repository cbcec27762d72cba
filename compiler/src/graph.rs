//! Pictures of a topology: Mermaid and Graphviz dot, drawn from the petgraph model.

use crate::model::graph::{EdgeKind, NodeKind, TopologyGraph};
use crate::model::Model;
use petgraph::visit::EdgeRef;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Mermaid,
    Dot,
}

fn label(kind: &NodeKind, name: &str) -> String {
    match kind {
        NodeKind::Switch => format!("{name} (switch)"),
        NodeKind::EtcdHost { ip } => format!("{name} etcd<br/>{ip}"),
        NodeKind::Worker { ip, subnet } => format!("{name}<br/>{ip}<br/>pods {subnet}"),
        NodeKind::Pod { ip } => format!("{name}<br/>{ip}"),
        NodeKind::Service { vip } => format!("svc {name}<br/>{vip}"),
        NodeKind::Ingress { port } => format!("ingress {name}<br/>:{port}"),
        NodeKind::Router => name.to_string(),
    }
}

fn id(i: usize) -> String {
    format!("n{i}")
}

pub fn render(model: &Model, format: Format) -> String {
    let tg = TopologyGraph::from_model(model);
    let g = &tg.graph;
    let mut by_cluster: BTreeMap<Option<String>, Vec<usize>> = BTreeMap::new();
    for n in g.node_indices() {
        by_cluster.entry(g[n].cluster.clone()).or_default().push(n.index());
    }
    let mut out = String::new();
    let is_dot = format == Format::Dot;
    out.push_str(if is_dot {
        "graph knetsim {\n  node [shape=box, fontsize=10];\n"
    } else {
        "flowchart TB\n"
    });
    for (cluster, nodes) in &by_cluster {
        let indent = if cluster.is_some() { "    " } else { "  " };
        if let Some(c) = cluster {
            out.push_str(&if is_dot {
                format!("  subgraph cluster_{c} {{\n    label=\"cluster {c}\";\n")
            } else {
                format!("  subgraph {c}[\"cluster {c}\"]\n")
            });
        }
        for i in nodes {
            let node = &g[petgraph::graph::NodeIndex::new(*i)];
            let text = label(&node.kind, &node.name);
            if is_dot {
                out.push_str(&format!(
                    "{indent}{} [label=\"{}\"];\n",
                    id(*i),
                    text.replace("<br/>", "\\n")
                ));
            } else {
                out.push_str(&format!("{indent}{}[\"{}\"]\n", id(*i), text));
            }
        }
        if cluster.is_some() {
            out.push_str(if is_dot { "  }\n" } else { "  end\n" });
        }
    }
    for e in g.edge_references() {
        let (a, b) = (id(e.source().index()), id(e.target().index()));
        let text = match e.weight() {
            EdgeKind::Link => String::new(),
            EdgeKind::Placement => "runs on".into(),
            EdgeKind::Backend => "backend".into(),
            EdgeKind::Route => "route".into(),
            EdgeKind::Interconnect { cost } => format!("link cost {cost}"),
        };
        if is_dot {
            let style = if matches!(e.weight(), EdgeKind::Link) {
                ""
            } else {
                ", style=dashed"
            };
            out.push_str(&format!("  {a} -- {b} [label=\"{text}\"{style}];\n"));
        } else if text.is_empty() {
            out.push_str(&format!("  {a} --- {b}\n"));
        } else {
            out.push_str(&format!("  {a} -.-|{text}| {b}\n"));
        }
    }
    if is_dot {
        out.push_str("}\n");
    }
    out
}
