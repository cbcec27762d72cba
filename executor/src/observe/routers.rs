//! The routers of a running emulation: for each router process, its `/metrics`
//! fetched from inside its worker's namespace, read back into its links (peer, cost,
//! up/down) and the addresses it serves; a configured connector with no link up is
//! shown down. A router is healthy when its `/healthz` answers 200, its metrics are
//! readable and every inter-router link its connectors should hold is up; otherwise its
//! `problems` say why.

use crate::http;
use crate::state::ProcessRecord;
use crate::system::linux;
use knetsim_router::config::Role;
use knetsim_router::Config;
use serde::Serialize;
use std::net::SocketAddr;
use std::time::Duration;

/// One router as observed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouterHealth {
    /// The process's name (`router C0`).
    pub name: String,
    /// The router id from its config.
    pub id: Option<String>,
    pub netns: String,
    /// The URL its metrics were read from.
    pub metrics: String,
    /// Its metrics could be read.
    pub reachable: bool,
    /// Its /healthz answered 200 (None: it has no healthz listener).
    pub healthz: Option<bool>,
    pub healthy: bool,
    pub problems: Vec<String>,
    pub links: Vec<RouterLink>,
    pub addresses: Vec<RouterAddress>,
}

/// An inter-router link: up as the metrics report it, or down for a configured
/// connector the metrics do not show.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouterLink {
    pub peer: String,
    pub via: String,
    pub cost: u64,
    pub up: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouterAddress {
    pub address: String,
    pub reachable: bool,
}

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
pub fn from_metrics(metrics: &str, cfg: Option<&Config>) -> (Vec<RouterLink>, Vec<RouterAddress>) {
    let mut links = Vec::new();
    let mut addresses = Vec::new();
    for (name, labels, value) in samples(metrics) {
        match name {
            "skrouter_link_cost" => links.push(RouterLink {
                peer: label(labels, "peer").unwrap_or("").to_string(),
                via: label(labels, "link").unwrap_or("").to_string(),
                cost: value.parse::<u64>().unwrap_or(0),
                up: true,
            }),
            "skrouter_address_reachable" => addresses.push(RouterAddress {
                address: label(labels, "address").unwrap_or("").to_string(),
                reachable: value == "1",
            }),
            _ => {}
        }
    }
    for c in cfg
        .into_iter()
        .flat_map(|c| &c.connectors)
        .filter(|c| c.role == Role::InterRouter)
    {
        let via = format!("connector {}", c.name);
        if !links.iter().any(|l| l.via == via) {
            links.push(RouterLink {
                peer: format!("{}:{}", c.host, c.port),
                via,
                cost: u64::from(c.cost),
                up: false,
            });
        }
    }
    (links, addresses)
}

/// The status code and body of a GET from inside `netns`, or None if the request failed.
fn http_get(netns: &str, addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    linux::in_netns(netns, || {
        Ok(http::get(addr, path, Duration::from_secs(1), Duration::from_secs(2)).ok())
    })
    .ok()
    .flatten()
    .map(|(code, body)| (code, String::from_utf8_lossy(&body).into_owned()))
}

/// Why a router is unhealthy: its /healthz (None when it has no healthz listener), its
/// metrics (None when unreadable) and its links; empty when healthy.
pub fn problems(id: &str, healthz: Option<Result<(), String>>, metrics_ok: bool, links: &[RouterLink]) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(Err(why)) = healthz {
        out.push(format!("router {id}: /healthz {why}"));
    }
    if !metrics_ok {
        out.push(format!("router {id}: /metrics unreachable"));
    }
    for l in links.iter().filter(|l| !l.up) {
        out.push(format!(
            "router {id}: inter-router link to {} ({}) is down",
            l.peer, l.via
        ));
    }
    out
}

/// The router status of a recorded process, or None if it is no router.
pub fn router(p: &ProcessRecord) -> Option<RouterHealth> {
    if !p.name.starts_with("router ") {
        return None;
    }
    let conf = p.argv.iter().skip_while(|a| *a != "-c").nth(1)?;
    let cfg = std::fs::read_to_string(conf).ok().and_then(|t| Config::parse(&t).ok());
    let http_listener = cfg
        .as_ref()
        .and_then(|c| c.listeners.iter().find(|l| l.http && l.metrics));
    let http = http_listener
        .map(|l| {
            let host = if l.host.is_empty() || l.host == "0.0.0.0" {
                "127.0.0.1"
            } else {
                &l.host
            };
            format!("{host}:{}", l.port)
        })
        .unwrap_or_else(|| "127.0.0.1:9090".into());
    let addr: Option<SocketAddr> = http.parse().ok();
    let metrics = addr
        .and_then(|a| http_get(&p.netns, a, "/metrics"))
        .filter(|(code, _)| *code == 200)
        .map(|(_, body)| body);
    let healthz =
        http_listener
            .filter(|l| l.healthz)
            .map(|_| match addr.and_then(|a| http_get(&p.netns, a, "/healthz")) {
                Some((200, _)) => Ok(()),
                Some((code, _)) => Err(format!("answered {code}")),
                None => Err(format!("at {http} did not answer")),
            });
    let (links, addresses) = from_metrics(metrics.as_deref().unwrap_or(""), cfg.as_ref());
    let id = cfg.as_ref().map(|c| c.router.id.clone());
    let problems = problems(
        id.as_deref().unwrap_or(&p.name),
        healthz.clone(),
        metrics.is_some(),
        &links,
    );
    Some(RouterHealth {
        name: p.name.clone(),
        id,
        netns: p.netns.clone(),
        metrics: format!("http://{http}/metrics"),
        reachable: metrics.is_some(),
        healthz: healthz.map(|h| h.is_ok()),
        healthy: problems.is_empty(),
        problems,
        links,
        addresses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(peer: &str, via: &str, cost: u64, up: bool) -> RouterLink {
        RouterLink {
            peer: peer.into(),
            via: via.into(),
            cost,
            up,
        }
    }

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
        assert_eq!(
            links,
            [
                link("c0", "connector link-c0", 1, true),
                link("10.0.0.9:55671", "connector link-c2", 5, false)
            ]
        );
        assert_eq!(addrs.len(), 2);
        assert_eq!(addrs[0].address, "web");
        assert!(!addrs[1].reachable);
    }

    #[test]
    fn a_failing_healthz_or_a_down_link_makes_a_router_unhealthy_with_reasons() {
        let up = link("c0", "connector link-c0", 1, true);
        let down = link("10.0.0.9:55671", "connector link-c2", 5, false);
        assert!(problems("c1", Some(Ok(())), true, std::slice::from_ref(&up)).is_empty());
        assert!(
            problems("c1", None, true, &[]).is_empty(),
            "no healthz listener: not checked"
        );
        let p = problems("c1", Some(Err("answered 503".into())), true, &[up.clone(), down]);
        assert_eq!(
            p,
            [
                "router c1: /healthz answered 503",
                "router c1: inter-router link to 10.0.0.9:55671 (connector link-c2) is down"
            ]
        );
        let p = problems("c1", Some(Err("at 127.0.0.1:9090 did not answer".into())), false, &[]);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[1].contains("/metrics unreachable"));
    }
}
