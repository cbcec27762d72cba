//! NetworkPolicy enforcement as a per-worker nftables table (rendered from
//! `templates/network-policy.nft.j2`). Selectors are resolved here, at compile time,
//! into address sets, so a worker's rule count grows with its policies' rules, and
//! the pods only add set elements: never one rule per pod pair.

use super::templates;
use crate::model::{Cluster, NetworkPolicy, Peer, Pod, PolicyPort, PolicyRule, PortRef, Worker};
use serde::Serialize;
use std::collections::BTreeSet;

pub const TABLE: &str = "network-policy";

#[derive(Serialize)]
struct Ctx<'a> {
    table: &'a str,
    cluster: &'a str,
    worker: &'a str,
    ingress_isolated: Vec<String>,
    egress_isolated: Vec<String>,
    sets: Vec<Set>,
    ingress: Vec<Rule>,
    egress: Vec<Rule>,
}

#[derive(Serialize)]
struct Set {
    name: String,
    kind: &'static str,
    interval: bool,
    comment: String,
    elements: Vec<String>,
}

#[derive(Serialize)]
struct Rule {
    text: String,
    comment: String,
}

/// Which way a rule looks: ingress rules match the pods' addresses as destinations
/// and their peers as sources; egress the other way round.
#[derive(Clone, Copy, PartialEq)]
enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    fn short(self) -> &'static str {
        match self {
            Direction::Ingress => "in",
            Direction::Egress => "eg",
        }
    }
    fn name(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
    /// The address field of the policy's own pods, and of the peer.
    fn fields(self) -> (&'static str, &'static str) {
        match self {
            Direction::Ingress => ("ip daddr", "ip saddr"),
            Direction::Egress => ("ip saddr", "ip daddr"),
        }
    }
}

/// The worker's ruleset, or None when the cluster has no policy (no table at all).
pub fn ruleset(c: &Cluster, w: &Worker) -> Option<String> {
    if c.network_policies.is_empty() {
        return None;
    }
    let local = |p: &&Pod| p.worker == w.host.name;
    let mut ctx = Ctx {
        table: TABLE,
        cluster: &c.name,
        worker: &w.host.name,
        ingress_isolated: Vec::new(),
        egress_isolated: Vec::new(),
        sets: Vec::new(),
        ingress: Vec::new(),
        egress: Vec::new(),
    };
    let (mut ing, mut eg) = (BTreeSet::new(), BTreeSet::new());
    for (i, p) in c.network_policies.iter().enumerate() {
        let selected: Vec<&Pod> = c.selected_by(p).filter(local).collect();
        if selected.is_empty() {
            continue;
        }
        let own = format!("p{i}-pods");
        ctx.sets.push(Set {
            name: own.clone(),
            kind: "ipv4_addr",
            interval: false,
            comment: format!("pods of {} selected by {}", w.host.name, p.id()),
            elements: addresses(selected.iter().copied()),
        });
        for (dir, rules) in [(Direction::Ingress, &p.ingress), (Direction::Egress, &p.egress)] {
            let Some(rules) = rules else { continue };
            let isolated = if dir == Direction::Ingress { &mut ing } else { &mut eg };
            isolated.extend(selected.iter().map(|pod| pod.ip));
            for (r, rule) in rules.iter().enumerate() {
                let lines = rule_lines(c, p, &selected, dir, i, r, rule, &own, &mut ctx.sets);
                let out = if dir == Direction::Ingress {
                    &mut ctx.ingress
                } else {
                    &mut ctx.egress
                };
                out.extend(lines);
            }
        }
    }
    ctx.ingress_isolated = ing.iter().map(|ip| ip.to_string()).collect();
    ctx.egress_isolated = eg.iter().map(|ip| ip.to_string()).collect();
    Some(templates::render("network-policy.nft.j2", ctx))
}

fn addresses<'a>(pods: impl Iterator<Item = &'a Pod>) -> Vec<String> {
    let set: BTreeSet<_> = pods.map(|p| p.ip).collect();
    set.iter().map(|ip| ip.to_string()).collect()
}

/// The nft rules of one policy rule: one per kind of peer match times one per kind
/// of port match (each a set lookup), all returning to the caller when they match.
#[allow(clippy::too_many_arguments)]
fn rule_lines(
    c: &Cluster,
    p: &NetworkPolicy,
    selected: &[&Pod],
    dir: Direction,
    i: usize,
    r: usize,
    rule: &PolicyRule,
    own: &str,
    sets: &mut Vec<Set>,
) -> Vec<Rule> {
    let (own_field, peer_field) = dir.fields();
    let base = format!("p{i}-{}{r}", dir.short());
    let comment = format!("{} {}[{r}]", p.id(), dir.name());
    // Peer matches: the pods the selectors name, then each ipBlock.
    let mut peers: Vec<String> = Vec::new();
    if rule.peers.is_empty() {
        peers.push(String::new());
    }
    let mut peer_pods: BTreeSet<std::net::Ipv4Addr> = BTreeSet::new();
    let mut any_pod_peer = false;
    for (k, peer) in rule.peers.iter().enumerate() {
        match peer {
            Peer::Pods {
                namespace_selector,
                pod_selector,
            } => {
                any_pod_peer = true;
                peer_pods.extend(c.peer_pods(p, namespace_selector, pod_selector).map(|pod| pod.ip));
            }
            Peer::IpBlock { cidr, except } => {
                let name = format!("{base}-b{k}");
                sets.push(Set {
                    name: name.clone(),
                    kind: "ipv4_addr",
                    interval: true,
                    comment: format!("{comment} ipBlock {cidr}"),
                    elements: vec![cidr.to_string()],
                });
                let mut m = format!("{peer_field} @{name}");
                if !except.is_empty() {
                    let x = format!("{name}-except");
                    sets.push(Set {
                        name: x.clone(),
                        kind: "ipv4_addr",
                        interval: true,
                        comment: format!("{comment} ipBlock {cidr} except"),
                        elements: except.iter().map(|e| e.to_string()).collect(),
                    });
                    m.push_str(&format!(" {peer_field} != @{x}"));
                }
                peers.push(m);
            }
        }
    }
    if any_pod_peer {
        let name = format!("{base}-peers");
        sets.push(Set {
            name: name.clone(),
            kind: "ipv4_addr",
            interval: false,
            comment: format!("{comment}: pods its peers select"),
            elements: peer_pods.iter().map(|ip| ip.to_string()).collect(),
        });
        peers.insert(0, format!("{peer_field} @{name}"));
    }
    // Port matches: numeric ports grouped by protocol, whole protocols, named ports.
    let mut ports: Vec<String> = Vec::new();
    if rule.ports.is_empty() {
        ports.push(String::new());
    }
    let mut by_protocol: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    let mut whole: BTreeSet<&str> = BTreeSet::new();
    let mut named: Vec<&PolicyPort> = Vec::new();
    for port in &rule.ports {
        match (&port.port, port.end_port) {
            (None, _) => {
                whole.insert(&port.protocol);
            }
            (Some(PortRef::Number(n)), None) => by_protocol.entry(&port.protocol).or_default().push(n.to_string()),
            (Some(PortRef::Number(n)), Some(end)) => by_protocol.entry(&port.protocol).or_default().push(if end > *n {
                format!("{n}-{end}")
            } else {
                n.to_string()
            }),
            (Some(PortRef::Name(_)), _) => named.push(port),
        }
    }
    for proto in &whole {
        ports.push(format!("meta l4proto {proto}"));
    }
    for (proto, list) in by_protocol.iter().filter(|(proto, _)| !whole.contains(*proto)) {
        ports.push(format!("meta l4proto {proto} th dport {{ {} }}", list.join(", ")));
    }
    if !named.is_empty() {
        // A named port is resolved on the destination pod: the selected pods for
        // ingress, any pod for egress.
        let destinations: Vec<&Pod> = match dir {
            Direction::Ingress => selected.to_vec(),
            Direction::Egress => c.live_pods().collect(),
        };
        let mut elements = BTreeSet::new();
        for port in &named {
            let Some(PortRef::Name(name)) = &port.port else {
                continue;
            };
            for pod in &destinations {
                for np in pod
                    .named_ports
                    .iter()
                    .filter(|np| &np.name == name && np.protocol == port.protocol)
                {
                    elements.insert((pod.ip, np.protocol.clone(), np.port));
                }
            }
        }
        let name = format!("{base}-named");
        sets.push(Set {
            name: name.clone(),
            kind: "ipv4_addr . inet_proto . inet_service",
            interval: false,
            comment: format!("{comment}: named ports on their pods"),
            elements: elements
                .iter()
                .map(|(ip, proto, port)| format!("{ip} . {proto} . {port}"))
                .collect(),
        });
        ports.push(format!("ip daddr . meta l4proto . th dport @{name}"));
    }
    let mut out = Vec::new();
    for peer in &peers {
        for port in &ports {
            let text = [format!("{own_field} @{own}"), peer.clone(), port.clone()]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            out.push(Rule {
                text,
                comment: comment.clone(),
            });
        }
    }
    out
}

/// Rules in a rendered ruleset (lines that end in a verdict), for reports.
pub fn rule_count(ruleset: &str) -> usize {
    ruleset
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.starts_with('#')
                && (l.contains(" return") || l.contains(" drop") || l.contains(" accept") || l.contains(" jump "))
        })
        .filter(|l| !l.starts_with("type "))
        .count()
}
