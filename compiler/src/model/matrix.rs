//! Reachability matrices: every pod to every pod on one port, the truth table the
//! upstream NetworkPolicy e2e suite prints (rows: from, columns: to; `.` connects,
//! `X` does not). Used by `knetsim test --matrix` and by `[[checks]] matrix`.

use super::{Cluster, SYSTEM_NAMESPACE};
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
