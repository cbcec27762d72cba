//! The routers part of `knetsim status`: for each router process, its `/metrics`
//! fetched from inside its worker's namespace, read back into its links (peer, cost,
//! up/down) and the addresses it serves; a configured connector with no link up is
//! shown down.

use knetsim_executor::state::ProcessRecord;
use knetsim_executor::system::linux;
use knetsim_router::config::Role;
use knetsim_router::Config;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The value of `key="..."` in a Prometheus label set.
fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    let start = labels.find(&format!("{key}=\""))? + key.len() + 2;
    let end = labels[start..].find('"')? + start;
    Some(&labels[start..end])
}

/// (metric name, labels, value) of each sample line.
fn samples(text: &str) -> impl Iterator<Item = (&str, &str, &str)> {
    text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| {
        let (head, value) = l.rsplit_once(' ')?;
        let (name, labels) = head.split_once('{').unwrap_or((head, ""));
        Some((name, labels.trim_end_matches('}'), value))
    })
}

/// Links and addresses of one router from its metrics and its config.
pub fn from_metrics(metrics: &str, cfg: Option<&Config>) -> (Vec<Value>, Vec<Value>) {
    let mut links = Vec::new();
    let mut addresses = Vec::new();
    for (name, labels, value) in samples(metrics) {
        match name {
            "skrouter_link_cost" => links.push(json!({
                "peer": label(labels, "peer").unwrap_or(""),
                "via": label(labels, "link").unwrap_or(""),
                "cost": value.parse::<u64>().unwrap_or(0),
                "up": true,
            })),
            "skrouter_address_reachable" => addresses.push(json!({
                "address": label(labels, "address").unwrap_or(""),
                "reachable": value == "1",
            })),
            _ => {}
        }
    }
    for c in cfg
        .into_iter()
        .flat_map(|c| &c.connectors)
        .filter(|c| c.role == Role::InterRouter)
    {
        let via = format!("connector {}", c.name);
        if !links.iter().any(|l| l["via"] == via.as_str()) {
            links.push(json!({
                "peer": format!("{}:{}", c.host, c.port),
                "via": via,
                "cost": c.cost,
                "up": false,
            }));
        }
    }
    (links, addresses)
}

fn http_get(netns: &str, addr: SocketAddr, path: &str) -> Option<String> {
    let path = path.to_string();
    linux::in_netns(netns, move || {
        let io = |e: std::io::Error| knetsim_executor::system::SysError::io(format!("GET {addr}{path}"), e);
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).map_err(io)?;
        s.set_read_timeout(Some(Duration::from_secs(2))).map_err(io)?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n").map_err(io)?;
        let mut text = String::new();
        s.read_to_string(&mut text).map_err(io)?;
        Ok(text)
    })
    .ok()
    .and_then(|t| t.split_once("\r\n\r\n").map(|(_, body)| body.to_string()))
}

/// The router status of a recorded process, or None if it is no router.
pub fn router(p: &ProcessRecord) -> Option<Value> {
    if !p.name.starts_with("router ") {
        return None;
    }
    let conf = p.argv.iter().skip_while(|a| *a != "-c").nth(1)?;
    let cfg = std::fs::read_to_string(conf).ok().and_then(|t| Config::parse(&t).ok());
    let http = cfg
        .as_ref()
        .and_then(|c| c.listeners.iter().find(|l| l.http && l.metrics))
        .map(|l| {
            let host = if l.host.is_empty() || l.host == "0.0.0.0" {
                "127.0.0.1"
            } else {
                &l.host
            };
            format!("{host}:{}", l.port)
        })
        .unwrap_or_else(|| "127.0.0.1:9090".into());
    let metrics = http.parse().ok().and_then(|a| http_get(&p.netns, a, "/metrics"));
    let (links, addresses) = from_metrics(metrics.as_deref().unwrap_or(""), cfg.as_ref());
    Some(json!({
        "name": p.name,
        "id": cfg.as_ref().map(|c| c.router.id.clone()),
        "netns": p.netns,
        "metrics": format!("http://{http}/metrics"),
        "reachable": metrics.is_some(),
        "links": links,
        "addresses": addresses,
    }))
}

/// Rows of the ROUTER table: one per link, then one per address.
pub fn rows(routers: &[Value]) -> Vec<Vec<String>> {
    let s = |v: &Value| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
    let mut rows = Vec::new();
    for r in routers {
        let id = s(&r["id"]);
        if r["reachable"] != true {
            rows.push(vec![
                id.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "metrics unreachable".into(),
            ]);
        }
        for l in r["links"].as_array().into_iter().flatten() {
            rows.push(vec![
                id.clone(),
                format!("link {}", s(&l["peer"])),
                s(&l["cost"]),
                if l["up"] == true { "up" } else { "down" }.into(),
                s(&l["via"]),
            ]);
        }
        for a in r["addresses"].as_array().into_iter().flatten() {
            rows.push(vec![
                id.clone(),
                format!("address {}", s(&a["address"])),
                "-".into(),
                if a["reachable"] == true {
                    "reachable"
                } else {
                    "unreachable"
                }
                .into(),
                String::new(),
            ]);
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_become_links_and_addresses_and_a_silent_connector_is_down() {
        let m = "# HELP x\nskrouter_links{router=\"c1\"} 1\n\
                 skrouter_link_cost{router=\"c1\",peer=\"c0\",link=\"connector link-c0\"} 1\n\
                 skrouter_address_reachable{router=\"c1\",address=\"web\"} 1\n\
                 skrouter_address_reachable{router=\"c1\",address=\"api\"} 0\n";
        let cfg = Config::parse(
            r#"[["router", {"id": "c1"}],
                ["connector", {"name": "link-c0", "role": "inter-router", "host": "10.0.0.4", "port": 55671}],
                ["connector", {"name": "link-c2", "role": "inter-router", "host": "10.0.0.9", "port": 55671, "cost": 5}]]"#,
        )
        .unwrap();
        let (links, addrs) = from_metrics(m, Some(&cfg));
        assert_eq!(links.len(), 2, "{links:?}");
        assert_eq!(links[0]["peer"], "c0");
        assert_eq!(links[0]["up"], true);
        assert_eq!(links[1]["peer"], "10.0.0.9:55671");
        assert_eq!(links[1]["up"], false);
        assert_eq!(links[1]["cost"], 5);
        assert_eq!(addrs.len(), 2);
        assert_eq!(addrs[0]["address"], "web");
        assert_eq!(addrs[1]["reachable"], false);
        let r = json!({"id": "c1", "reachable": true, "links": links, "addresses": addrs});
        assert_eq!(rows(&[r]).len(), 4);
    }
}
