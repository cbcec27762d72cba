//! A [`Picture`] as Mermaid (`flowchart BT`) or Graphviz dot text. Broken boxes and
//! lines (live facts missing or down) are drawn red.

use super::{Format, Picture};
use std::collections::BTreeMap;

const RED: &str = "#d00000";

fn id(i: usize) -> String {
    format!("n{i}")
}

fn dot_text(lines: &[String]) -> String {
    lines
        .iter()
        .map(|l| l.replace('\\', "\\\\").replace('"', "\\\""))
        .collect::<Vec<_>>()
        .join("\\n")
}

fn mermaid_text(lines: &[String]) -> String {
    lines
        .iter()
        .map(|l| l.replace('"', "#quot;"))
        .collect::<Vec<_>>()
        .join("<br/>")
}

/// Node indexes by cluster, the nodes outside any cluster first.
fn by_cluster(p: &Picture) -> BTreeMap<Option<&str>, Vec<usize>> {
    let mut out: BTreeMap<Option<&str>, Vec<usize>> = BTreeMap::new();
    for (i, n) in p.nodes.iter().enumerate() {
        out.entry(n.cluster.as_deref()).or_default().push(i);
    }
    out
}

pub fn render_picture(p: &Picture, format: Format) -> String {
    match format {
        Format::Dot => dot(p),
        Format::Mermaid => mermaid(p),
    }
}

fn dot(p: &Picture) -> String {
    // Edges are written lower end first (pod -- worker -- switch): bottom to top puts the
    // top switch on top.
    let mut out =
        String::from("graph knetsim {\n  rankdir=BT;\n  node [shape=box, fontsize=10];\n  edge [fontsize=9];\n");
    if let Some(t) = &p.title {
        out.push_str(&format!(
            "  label=\"{}\";\n  labelloc=t;\n",
            dot_text(std::slice::from_ref(t))
        ));
    }
    let red = format!(", color=\"{RED}\", fontcolor=\"{RED}\"");
    for (cluster, nodes) in by_cluster(p) {
        let indent = if cluster.is_some() { "    " } else { "  " };
        if let Some(c) = cluster {
            // Under rankdir=BT a cluster's `b` is its top.
            out.push_str(&format!(
                "  subgraph cluster_{c} {{\n    label=\"cluster {c}\";\n    labelloc=b;\n"
            ));
        }
        for i in nodes {
            let n = &p.nodes[i];
            let style = if n.down { red.as_str() } else { "" };
            out.push_str(&format!(
                "{indent}{} [label=\"{}\"{style}];\n",
                id(i),
                dot_text(&n.lines)
            ));
        }
        if cluster.is_some() {
            out.push_str("  }\n");
        }
    }
    for e in &p.edges {
        let dashed = if e.dashed { ", style=dashed" } else { "" };
        let style = if e.down { red.as_str() } else { "" };
        out.push_str(&format!(
            "  {} -- {} [label=\"{}\"{dashed}{style}];\n",
            id(e.a),
            id(e.b),
            dot_text(std::slice::from_ref(&e.label))
        ));
    }
    out.push_str("}\n");
    out
}

fn mermaid(p: &Picture) -> String {
    let mut out = String::new();
    if let Some(t) = &p.title {
        out.push_str(&format!(
            "---\ntitle: \"{}\"\n---\n",
            mermaid_text(std::slice::from_ref(t))
        ));
    }
    out.push_str("flowchart BT\n");
    for (cluster, nodes) in by_cluster(p) {
        let indent = if cluster.is_some() { "    " } else { "  " };
        if let Some(c) = cluster {
            out.push_str(&format!("  subgraph {c}[\"cluster {c}\"]\n"));
        }
        for i in nodes {
            out.push_str(&format!("{indent}{}[\"{}\"]\n", id(i), mermaid_text(&p.nodes[i].lines)));
        }
        if cluster.is_some() {
            out.push_str("  end\n");
        }
    }
    for e in &p.edges {
        let line = if e.dashed { "-.-" } else { "---" };
        let label = if e.label.is_empty() {
            String::new()
        } else {
            format!("|{}|", mermaid_text(std::slice::from_ref(&e.label)))
        };
        out.push_str(&format!("  {} {line}{label} {}\n", id(e.a), id(e.b)));
    }
    let down_nodes: Vec<String> = (0..p.nodes.len()).filter(|i| p.nodes[*i].down).map(id).collect();
    if !down_nodes.is_empty() {
        out.push_str(&format!("  classDef down stroke:{RED},color:{RED}\n"));
        out.push_str(&format!("  class {} down\n", down_nodes.join(",")));
    }
    for (i, _) in p.edges.iter().enumerate().filter(|(_, e)| e.down) {
        out.push_str(&format!("  linkStyle {i} stroke:{RED},color:{RED}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{Edge, Node};
    use super::*;

    fn picture() -> Picture {
        let node = |cluster: Option<&str>, lines: &[&str], down| Node {
            cluster: cluster.map(String::from),
            lines: lines.iter().map(|l| l.to_string()).collect(),
            down,
        };
        Picture {
            title: Some("emulation \"x\"".into()),
            nodes: vec![
                node(None, &["t0 (switch)"], false),
                node(Some("C0"), &["C0w1", "10.0.0.3"], false),
                node(Some("C0"), &["C0/c1", "no address"], true),
            ],
            edges: vec![
                Edge {
                    a: 1,
                    b: 0,
                    label: String::new(),
                    dashed: false,
                    down: false,
                },
                Edge {
                    a: 2,
                    b: 1,
                    label: "runs on".into(),
                    dashed: true,
                    down: true,
                },
            ],
        }
    }

    #[test]
    fn dot_groups_clusters_quotes_labels_and_marks_broken_parts_red() {
        let text = render_picture(&picture(), Format::Dot);
        assert_eq!(
            text,
            "graph knetsim {\n  rankdir=BT;\n  node [shape=box, fontsize=10];\n  edge [fontsize=9];\n  label=\"emulation \\\"x\\\"\";\n  labelloc=t;\n\
             \x20 n0 [label=\"t0 (switch)\"];\n\
             \x20 subgraph cluster_C0 {\n    label=\"cluster C0\";\n    labelloc=b;\n\
             \x20   n1 [label=\"C0w1\\n10.0.0.3\"];\n\
             \x20   n2 [label=\"C0/c1\\nno address\", color=\"#d00000\", fontcolor=\"#d00000\"];\n  }\n\
             \x20 n1 -- n0 [label=\"\"];\n\
             \x20 n2 -- n1 [label=\"runs on\", style=dashed, color=\"#d00000\", fontcolor=\"#d00000\"];\n}\n"
        );
    }

    #[test]
    fn mermaid_has_a_title_subgraphs_and_red_classes() {
        let text = render_picture(&picture(), Format::Mermaid);
        assert_eq!(
            text,
            "---\ntitle: \"emulation #quot;x#quot;\"\n---\nflowchart BT\n  n0[\"t0 (switch)\"]\n\
             \x20 subgraph C0[\"cluster C0\"]\n    n1[\"C0w1<br/>10.0.0.3\"]\n    n2[\"C0/c1<br/>no address\"]\n  end\n\
             \x20 n1 --- n0\n  n2 -.-|runs on| n1\n\
             \x20 classDef down stroke:#d00000,color:#d00000\n  class n2 down\n\
             \x20 linkStyle 1 stroke:#d00000,color:#d00000\n"
        );
    }
}
