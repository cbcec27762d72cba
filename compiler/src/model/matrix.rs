//! Reachability matrices: every pod to every pod on one port, the truth table the
//! upstream NetworkPolicy e2e suite prints (rows: from, columns: to; `.` connects,
//! `X` does not). Used by `knetsim test --matrix` and by `[[checks]] matrix`.

use super::report::Report;
use super::{Cluster, SYSTEM_NAMESPACE};
use crate::diagnostics::closest;
use crate::topology::{self as spec, Spanned};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Matrix {
    pub cluster: String,
    /// "tcp".
    pub protocol: String,
    pub port: u16,
    pub pods: Vec<MatrixPod>,
    /// `expect[from][to]`: whether the connection is expected to succeed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expect: Vec<Vec<bool>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatrixPod {
    /// `namespace/name`, as the upstream table labels pods.
    pub label: String,
    pub netns: String,
    pub ip: Ipv4Addr,
}

impl Matrix {
    /// The pods of `namespaces` (all but kube-system when empty) of a cluster, in
    /// namespace then declaration order; deleted pods are left out.
    pub fn of(cluster: &Cluster, namespaces: &[String], port: u16) -> Matrix {
        let mut order: Vec<String> = if namespaces.is_empty() {
            cluster
                .namespace_names()
                .into_iter()
                .filter(|n| n != SYSTEM_NAMESPACE)
                .collect()
        } else {
            namespaces.to_vec()
        };
        order.dedup();
        let pods = order
            .iter()
            .flat_map(|ns| cluster.live_pods().filter(move |p| &p.namespace == ns))
            .map(|p| MatrixPod {
                label: format!("{}/{}", p.namespace, p.name),
                netns: p.netns.clone(),
                ip: p.ip,
            })
            .collect();
        Matrix {
            cluster: cluster.name.clone(),
            protocol: "tcp".into(),
            port,
            pods,
            expect: Vec::new(),
        }
    }
}

/// A `matrix` check: the cluster's pods and the expected table.
pub(super) fn resolve(
    r: &super::checks::Resolver,
    report: &mut Report,
    s: &spec::CheckSpec,
    m: &Spanned<spec::MatrixSpec>,
) -> Option<Matrix> {
    let spec = m.get_ref();
    for (field, span) in [
        ("from", s.from.as_ref().map(|v| v.span())),
        ("ping", s.ping.as_ref().map(|v| v.span())),
        ("http", s.http.as_ref().map(|v| v.span())),
        ("dns", s.dns.as_ref().map(|v| v.span())),
        ("expect", s.expect.as_ref().map(|v| v.span())),
    ] {
        if let Some(span) = span {
            report.error(
                span,
                format!("a matrix check takes no `{field}`"),
                "not for a matrix",
                "a matrix probes every pod from every pod; its expect is the table inside matrix",
            );
        }
    }
    let protocol = match &spec.protocol {
        None => "tcp".to_string(),
        Some(p) => match p.get_ref().to_ascii_lowercase().as_str() {
            proto @ ("tcp" | "udp") => proto.to_string(),
            _ => {
                report.error(
                    p.span(),
                    format!("a matrix probes TCP or UDP, not `{}`", p.get_ref()),
                    "TCP or UDP",
                    "protocol = \"TCP\" (the default) or \"UDP\" (a datagram that gets an answer)",
                );
                return None;
            }
        },
    };
    if *spec.port.get_ref() == 0 {
        report.error(
            spec.port.span(),
            "port 0 is not usable",
            "bad port",
            "ports are 1..=65535",
        );
        return None;
    }
    let cluster = match &spec.cluster {
        Some(c) => r.cluster(report, c, c.get_ref())?,
        None => r.model.clusters.first()?,
    };
    let mut namespaces = Vec::new();
    for ns in spec.namespaces.iter().flatten() {
        if !cluster.has_namespace(ns.get_ref()) {
            let known = cluster.namespace_names();
            r.unknown(report, ns, ns.get_ref(), "namespace", &known);
            return None;
        }
        namespaces.push(ns.get_ref().clone());
    }
    let mut matrix = Matrix::of(cluster, &namespaces, *spec.port.get_ref());
    matrix.protocol = protocol;
    // The table's header names the pods probed, so pods added later leave it valid.
    let header: Vec<String> = (spec.expect.get_ref().lines().map(str::trim))
        .find(|l| !l.is_empty())
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    if let Some(unknown) = header.iter().find(|h| !matrix.pods.iter().any(|p| &&p.label == h)) {
        let known: Vec<&str> = matrix.pods.iter().map(|p| p.label.as_str()).collect();
        let hint = match closest(unknown, &known) {
            Some(c) => format!(
                "did you mean `{c}`? pods are named namespace/name (known: {})",
                known.join(" ")
            ),
            None => format!("pods are named namespace/name (known: {})", known.join(" ")),
        };
        report.error(
            spec.expect.span(),
            format!(
                "the expected matrix names `{unknown}`, which is not a pod of cluster `{}`",
                cluster.name
            ),
            "unknown pod",
            &hint,
        );
        return None;
    }
    matrix.pods = header
        .iter()
        .filter_map(|h| matrix.pods.iter().find(|p| &p.label == h).cloned())
        .collect();
    let labels: Vec<&str> = matrix.pods.iter().map(|p| p.label.as_str()).collect();
    match parse(spec.expect.get_ref(), &labels) {
        Ok(cells) => matrix.expect = cells,
        Err(e) => {
            report.error(
                spec.expect.span(),
                format!("the expected matrix does not read: {e}"),
                "bad table",
                "a header of pods (ns/name), then a row per pod: its name and `.` (connects) or `X` per column",
            );
            return None;
        }
    }
    Some(matrix)
}

/// Renders a table of `cells[from][to]` with the pods' labels.
pub fn render(labels: &[&str], cells: &[Vec<bool>]) -> String {
    let width = labels.iter().map(|l| l.len()).max().unwrap_or(0);
    let mut out = format!("{:width$}", "");
    for l in labels {
        out.push_str(&format!(" {l:>width$}"));
    }
    out.push('\n');
    for (l, row) in labels.iter().zip(cells) {
        out.push_str(&format!("{l:width$}"));
        for &ok in row {
            out.push_str(&format!(" {:>width$}", if ok { "." } else { "X" }));
        }
        out.push('\n');
    }
    out
}

/// Reads an expected table: a header of column labels, then one row per pod (its
/// label, then `.` or `X` per column). Rows and columns may be in any order but
/// must name exactly `labels`; returns `cells[from][to]` in `labels`' order.
pub fn parse(text: &str, labels: &[&str]) -> Result<Vec<Vec<bool>>, String> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let header: Vec<&str> = lines.next().ok_or("the table is empty")?.split_whitespace().collect();
    let index = |l: &str, what: &str| {
        labels
            .iter()
            .position(|x| *x == l)
            .ok_or_else(|| format!("{what} `{l}` is not a probed pod (pods: {})", labels.join(" ")))
    };
    let columns: Vec<usize> = header.iter().map(|l| index(l, "column")).collect::<Result<_, _>>()?;
    let mut cells = vec![vec![None; labels.len()]; labels.len()];
    let mut seen_rows = vec![false; labels.len()];
    for line in lines {
        let mut words = line.split_whitespace();
        let label = words.next().unwrap_or_default();
        let row = index(label, "row")?;
        if std::mem::replace(&mut seen_rows[row], true) {
            return Err(format!("row `{label}` is given twice"));
        }
        let marks: Vec<&str> = words.collect();
        if marks.len() != columns.len() {
            return Err(format!(
                "row `{label}` has {} cells for {} columns",
                marks.len(),
                columns.len()
            ));
        }
        for (&col, mark) in columns.iter().zip(marks) {
            cells[row][col] = Some(match mark {
                "." => true,
                "X" | "x" => false,
                other => {
                    return Err(format!(
                        "row `{label}`: `{other}` is neither `.` (connects) nor `X` (does not)"
                    ))
                }
            });
        }
    }
    cells
        .into_iter()
        .enumerate()
        .map(|(r, row)| {
            row.into_iter()
                .enumerate()
                .map(|(c, v)| v.ok_or_else(|| format!("no cell for {} -> {}", labels[r], labels[c])))
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_read_back_what_they_render() {
        let labels = ["x/a", "x/b", "y/a"];
        let cells = vec![
            vec![true, false, true],
            vec![true, true, false],
            vec![false, false, true],
        ];
        let text = render(&labels, &cells);
        assert_eq!(parse(&text, &labels).unwrap(), cells);
        // Columns in another order are mapped back.
        let swapped = "y/a x/a x/b\nx/a . . X\nx/b X . .\ny/a . X X\n";
        assert_eq!(parse(swapped, &labels).unwrap(), cells);
        assert!(parse("x/a x/b\nx/a . .\n", &labels).unwrap_err().contains("no cell"));
        assert!(parse("x/a x/b y/a\nz/z . . .\n", &labels).unwrap_err().contains("z/z"));
        assert!(parse("x/a x/b y/a\nx/a . ? .\n", &labels).unwrap_err().contains("`?`"));
    }
}
