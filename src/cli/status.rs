//! `knetsim status`: the components of a running emulation and their health, the
//! way `kubectl get` shows them. What is looked at comes typed from
//! [`knetsim_executor::observe`]; this file only renders it.

use super::error::Outcome;
use super::running::{display_name, emulations, name_flag, recorded_state, NotRunning};
use super::Target;
use knetsim_executor::observe::{self, Health, Inventory, RouterHealth};
use serde_json::json;

#[derive(clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    target: Target,
    /// Print the status as JSON.
    #[arg(long)]
    json: bool,
}

/// A human duration: `850 ms`, `3.2 s`, `5m 10s`, `2h 3m`.
pub fn human_secs(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

/// Prints a table with columns padded to their widest cell.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let n = cells.len();
        let mut out = String::new();
        for (i, (c, w)) in cells.into_iter().zip(&widths).enumerate() {
            if i + 1 == n {
                out.push_str(&c);
            } else {
                out.push_str(&format!("{c:<w$}   "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

fn yes(v: bool, ok: &str, bad: &str) -> String {
    if v { ok } else { bad }.to_string()
}

fn print_text(h: &Health) {
    println!(
        "emulation {}: {} ({}), up {}, state in {}",
        display_name(&h.name),
        h.phase,
        if h.healthy { "healthy" } else { "degraded" },
        human_secs(h.uptime_s),
        h.state_dir
    );
    for p in &h.problems {
        println!("  problem: {p}");
    }
    if h.phase == "Incomplete" {
        println!(
            "  the `up` that started it (pid {}) is gone before finishing: run `knetsim down{}`",
            h.owner_pid,
            name_flag(&h.name)
        );
    }
    let present = h.namespaces.iter().filter(|n| n.present).count();
    println!("\nNAMESPACES: {present}/{} present", h.namespaces.len());
    let missing: Vec<&str> = h
        .namespaces
        .iter()
        .filter(|n| !n.present)
        .map(|n| n.name.as_str())
        .collect();
    if !missing.is_empty() {
        println!("  missing: {}", missing.join(", "));
    }
    let rows: Vec<Vec<String>> = h
        .processes
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.netns.clone(),
                p.pid.to_string(),
                match (p.alive, p.ended) {
                    (true, _) => "Running",
                    (false, true) => "Ended",
                    (false, false) => "Dead",
                }
                .to_string(),
                human_secs(p.uptime_s),
                p.log.clone(),
            ]
        })
        .collect();
    table(&["PROCESS", "NAMESPACE", "PID", "STATUS", "AGE", "LOG"], &rows);
    let rows: Vec<Vec<String>> = h
        .etcd
        .iter()
        .map(|e| {
            vec![
                e.host.clone(),
                e.endpoint.clone(),
                yes(e.healthy, "healthy", "unhealthy"),
            ]
        })
        .collect();
    table(&["ETCD", "ENDPOINT", "HEALTH"], &rows);
    let rows: Vec<Vec<String>> = h
        .flannel
        .iter()
        .map(|f| {
            vec![
                f.worker.clone(),
                f.reserved.clone().unwrap_or_default(),
                f.subnet.clone().unwrap_or_else(|| "-".into()),
                yes(f.present, "present", "missing"),
            ]
        })
        .collect();
    table(&["WORKER", "RESERVED SUBNET", "FLANNEL_SUBNET", "SUBNET.ENV"], &rows);
    let rows: Vec<Vec<String>> = h
        .pods
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.worker.clone(),
                p.netns.clone(),
                p.ip.clone(),
                p.phase().to_string(),
                p.restarts.to_string(),
            ]
        })
        .collect();
    table(&["POD", "WORKER", "NAMESPACE", "IP", "STATUS", "RESTARTS"], &rows);
    let rows: Vec<Vec<String>> = h
        .services
        .iter()
        .map(|s| service_row(&s.name, &s.vip, &s.ports, &s.endpoints))
        .collect();
    table(&["SERVICE", "VIP", "PORTS", "ENDPOINTS"], &rows);
    table(&POLICY_HEADER, &policy_rows(&h.policies));
    if let Some(dns) = &h.dns {
        println!("\nDNS: {dns}");
    }
    table(
        &["ROUTER", "LINK / ADDRESS", "COST", "STATE", "VIA"],
        &router_rows(&h.routers),
    );
}

pub const POLICY_HEADER: [&str; 4] = ["NETWORK POLICY", "TYPES", "SELECTS", "RULES"];

/// Rows of the NETWORK POLICY table (`status`, and `up`'s summary).
pub fn policy_rows(policies: &[knetsim_executor::observe::inventory::PolicyInfo]) -> Vec<Vec<String>> {
    policies
        .iter()
        .map(|p| {
            let selects = if p.selects.is_empty() {
                "(no pod)".to_string()
            } else {
                p.selects.join(", ")
            };
            vec![p.id.clone(), p.types.clone(), selects, p.rules.clone()]
        })
        .collect()
}

/// A row of the SERVICE table (`status`, and `up`'s summary).
pub fn service_row(name: &str, vip: &str, ports: &[String], endpoints: &[String]) -> Vec<String> {
    let ports = if ports.is_empty() {
        "(all)".to_string()
    } else {
        ports.join(",")
    };
    vec![name.to_string(), vip.to_string(), ports, endpoints.join(", ")]
}

/// A table after a blank line, unless it has no rows.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    if !rows.is_empty() {
        println!();
        print_table(header, rows);
    }
}

/// Rows of the ROUTER table: one per link, then one per address.
fn router_rows(routers: &[RouterHealth]) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for r in routers {
        let id = r.id.clone().unwrap_or_else(|| r.name.clone());
        if !r.reachable {
            rows.push(vec![
                id.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "metrics unreachable".into(),
            ]);
        }
        for l in &r.links {
            rows.push(vec![
                id.clone(),
                format!("link {}", l.peer),
                l.cost.to_string(),
                yes(l.up, "up", "down"),
                l.via.clone(),
            ]);
        }
        for a in &r.addresses {
            rows.push(vec![
                id.clone(),
                format!("address {}", a.address),
                "-".into(),
                yes(a.reachable, "reachable", "unreachable"),
                String::new(),
            ]);
        }
    }
    rows
}

/// Exit 0: up and healthy; 1: not up, or some component is unhealthy.
pub fn status(a: StatusArgs) -> Outcome {
    let (opts, st) = match recorded_state(&a.target) {
        Ok(recorded) => recorded,
        Err(e) => {
            let NotRunning::NotUp(opts) = &e else {
                return Err(e.into());
            };
            if a.json {
                println!(
                    "{}",
                    json!({ "name": opts.name, "state_dir": opts.state_dir, "phase": "NotUp", "healthy": false })
                );
            }
            eprintln!("{e}");
            let others: Vec<String> = emulations()
                .into_iter()
                .filter(|(n, _)| *n != opts.name)
                .map(|(n, _)| format!("knetsim status{}", name_flag(&n)))
                .collect();
            if !others.is_empty() {
                eprintln!("running emulations: {}", others.join("; "));
            }
            return Ok(1);
        }
    };
    let inv = match Inventory::load(&opts.state_dir) {
        Ok(inv) => Some(inv),
        Err(e) => {
            if !a.json {
                eprintln!("note: no inventory ({e}); showing recorded state only");
            }
            None
        }
    };
    let h = observe::health(&st, inv.as_ref());
    if a.json {
        println!("{}", serde_json::to_string_pretty(&h).expect("status serializes"));
    } else {
        print_text(&h);
    }
    Ok(i32::from(!h.healthy))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(human_secs(5), "5s");
        assert_eq!(human_secs(125), "2m 5s");
        assert_eq!(human_secs(7384), "2h 3m");
    }
}
