//! `knetsim test --matrix`: a TCP connect (or a UDP datagram answered) from every pod to every pod of a cluster,
//! printed as the reachability truth table the upstream NetworkPolicy e2e suite
//! prints (rows: from, columns: to; `.` connects, `X` does not).

use super::error::Outcome;
use super::running::recorded_state;
use super::Target;
use knetsim_compiler::artifacts::paths::INVENTORY;
use knetsim_compiler::model::matrix::{render, Matrix};
use knetsim_compiler::model::Model;
use knetsim_executor::layout::StateLayout;
use std::time::{Duration, Instant};

pub struct MatrixArgs<'a> {
    pub target: &'a Target,
    pub ports: &'a [u16],
    pub protocol: &'a str,
    pub namespaces: &'a [String],
    pub cluster: Option<&'a str>,
    pub timeout: Duration,
    pub json: bool,
}

/// The kernel holds at most `gc_thresh3` (1024) neighbour entries younger than 5 s,
/// for all namespaces together, and only the host may raise it: pods of one worker
/// reach each other on one bridge, each pair needing an entry both ways.
const NEIGHBOUR_BUDGET: usize = 900;

fn warn_neighbours(cluster: &knetsim_compiler::model::Cluster, m: &Matrix) {
    let mut per_worker: std::collections::BTreeMap<&str, usize> = Default::default();
    for p in &m.pods {
        if let Some(pod) = cluster.pods.iter().find(|x| x.netns == p.netns) {
            *per_worker.entry(pod.worker.as_str()).or_default() += 1;
        }
    }
    let needed: usize = per_worker.values().map(|k| k * k.saturating_sub(1)).sum::<usize>() + 2 * m.pods.len();
    if needed > NEIGHBOUR_BUDGET {
        eprintln!(
            "warning: this matrix makes about {needed} neighbour (ARP) entries at once; the kernel keeps at most \
             1024 new ones for all namespaces together (net.ipv4.neigh.default.gc_thresh3, a host setting), so \
             some connections may fail for that alone (dmesg: \"neighbor table overflow\"): probe fewer namespaces \
             (--namespace), or spread the pods over more workers"
        );
    }
}

pub fn matrix(a: MatrixArgs) -> Outcome {
    let (opts, st) = recorded_state(a.target)?;
    let path = StateLayout::new(&opts.state_dir)
        .running_bundle(st.generation)
        .join(INVENTORY);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let model: Model = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let cluster = match a.cluster {
        Some(name) => model.cluster(name).ok_or_else(|| {
            let names: Vec<&str> = model.clusters.iter().map(|c| c.name.as_str()).collect();
            format!("no cluster `{name}` (clusters: {})", names.join(", "))
        })?,
        None => model.clusters.first().ok_or("the emulation has no cluster")?,
    };
    if let Some(ns) = a.namespaces.iter().find(|ns| !cluster.has_namespace(ns)) {
        return Err(format!(
            "no namespace `{ns}` in cluster {} (namespaces: {})",
            cluster.name,
            cluster.namespace_names().join(", ")
        )
        .into());
    }
    warn_neighbours(cluster, &Matrix::of(cluster, a.namespaces, 0));
    let matrices: Vec<Matrix> = a
        .ports
        .iter()
        .map(|&port| Matrix {
            protocol: a.protocol.to_string(),
            ..Matrix::of(cluster, a.namespaces, port)
        })
        .collect();
    let t0 = Instant::now();
    let seen = knetsim_executor::matrix::probe_all(&matrices, a.timeout)?;
    let took = t0.elapsed();
    let tables: Vec<(Matrix, Vec<Vec<bool>>, std::time::Duration)> =
        matrices.into_iter().zip(seen).map(|(m, s)| (m, s, took)).collect();
    if a.json {
        let out: Vec<serde_json::Value> = tables
            .iter()
            .map(|(m, seen, took)| {
                serde_json::json!({
                    "cluster": m.cluster,
                    "protocol": m.protocol,
                    "port": m.port,
                    "pods": m.pods.iter().map(|p| &p.label).collect::<Vec<_>>(),
                    "reachable": seen,
                    "seconds": took.as_secs_f64(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out).expect("JSON serializes"));
        return Ok(0);
    }
    for (m, seen, took) in &tables {
        let labels: Vec<&str> = m.pods.iter().map(|p| p.label.as_str()).collect();
        let open: usize = seen.iter().map(|r| r.iter().filter(|&&ok| ok).count()).sum();
        let n = labels.len();
        println!(
            "reachability of cluster {} on {}/{} ({n}x{n}: {open} connect, {} blocked; {:.2} s)",
            m.cluster,
            m.protocol.to_uppercase(),
            m.port,
            n * n - open,
            took.as_secs_f64()
        );
        print!("{}", render(&labels, seen));
    }
    Ok(0)
}
