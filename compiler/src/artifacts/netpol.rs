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

impl Set {
    /// A set of addresses (`interval`: of CIDR blocks).
    fn addresses(name: &str, interval: bool, comment: String, elements: Vec<String>) -> Set {
        Set {
            name: name.to_string(),
            kind: "ipv4_addr",
            interval,
            comment,
            elements,
        }
    }
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
        ctx.sets.push(Set::addresses(
            &own,
            false,
            format!("pods of {} selected by {}", w.host.name, p.id()),
            addresses(selected.iter().copied()),
        ));
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
                sets.push(Set::addresses(
                    &name,
                    true,
                    format!("{comment} ipBlock {cidr}"),
                    vec![cidr.to_string()],
                ));
                let mut m = format!("{peer_field} @{name}");
                if !except.is_empty() {
                    let x = format!("{name}-except");
                    sets.push(Set::addresses(
                        &x,
                        true,
                        format!("{comment} ipBlock {cidr} except"),
                        except.iter().map(|e| e.to_string()).collect(),
                    ));
                    m.push_str(&format!(" {peer_field} != @{x}"));
                }
                peers.push(m);
            }
        }
    }
    if any_pod_peer {
        let name = format!("{base}-peers");
        sets.push(Set::addresses(
            &name,
            false,
            format!("{comment}: pods its peers select"),
            peer_pods.iter().map(|ip| ip.to_string()).collect(),
        ));
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

#[cfg(test)]
mod tests {
    use crate::{check, CompileOptions, Source};

    fn topology(pods_per_ns: usize, policies: usize) -> String {
        let mut t = String::from(
            "[[clusters]]\nname = \"C0\"\nworkers = 2\nflannel = { ip_masq = true }\nnamespaces = [{ name = \"x\", labels = { ns = \"x\" } }, { name = \"y\" }]\npods = [\n",
        );
        for ns in ["x", "y"] {
            for i in 0..pods_per_ns {
                let w = 1 + i % 2;
                t.push_str(&format!(
                    "  {{ name = \"p{i}\", namespace = \"{ns}\", worker = \"w{w}\", labels = {{ app = \"a{}\" }}, ports = [{{ port = 80, name = \"http\" }}] }},\n",
                    i % 3
                ));
            }
        }
        t.push_str("]\n");
        for i in 0..policies {
            t.push_str(&format!(
                "[[clusters.network_policies]]\nname = \"np{i}\"\nnamespace = \"x\"\npod_selector = {{ match_labels = {{ app = \"a{}\" }} }}\ningress = [{{ from = [{{ namespace_selector = {{ match_labels = {{ ns = \"x\" }} }} }}, {{ ip_block = {{ cidr = \"10.0.0.0/8\", except = [\"10.1.0.0/16\"] }} }}], ports = [{{ port = \"http\" }}, {{ port = 81, end_port = 90 }}] }}]\n",
                i % 3
            ));
        }
        t
    }

    fn worker_ruleset(text: &str) -> String {
        let model = check(&Source::new("t.toml", text), &CompileOptions::named("t")).unwrap();
        let c = &model.clusters[0];
        super::ruleset(c, &c.workers[0]).unwrap()
    }

    #[test]
    fn rules_grow_with_policies_not_with_pods() {
        let small = worker_ruleset(&topology(6, 3));
        let large = worker_ruleset(&topology(300, 3));
        assert_eq!(super::rule_count(&small), super::rule_count(&large), "{small}");
        assert!(large.len() > small.len(), "more pods are more set elements");
        let more = worker_ruleset(&topology(6, 6));
        assert!(super::rule_count(&more) > super::rule_count(&small));
        // One rule per (peer kind x port kind): pods or ipBlock, named or numeric.
        assert!(
            small.contains("ip daddr @p0-pods ip saddr @p0-in0-peers meta l4proto tcp th dport { 81-90 } return"),
            "{small}"
        );
        assert!(small.contains("ip saddr @p0-in0-b1 ip saddr != @p0-in0-b1-except ip daddr . meta l4proto . th dport @p0-in0-named return"), "{small}");
    }

    #[test]
    fn no_policy_no_table() {
        let model = check(&Source::default_topology(), &CompileOptions::named("t")).unwrap();
        let c = &model.clusters[0];
        assert!(super::ruleset(c, &c.workers[0]).is_none());
    }

    #[test]
    fn selectors_matching_nothing_are_warnings_with_places() {
        let text = "[[clusters]]\nname = \"C0\"\nflannel = { ip_masq = true }\npods = [{ name = \"c1\", worker = \"w1\", labels = { app = \"web\" } }]\nservices = [{ name = \"s\", selector = { app = \"wbe\" } }]\n[[clusters.network_policies]]\nname = \"p\"\npod_selector = { match_labels = { app = \"db\" } }\ningress = [{ ports = [{ port = \"sql\" }] }]\n";
        let model = check(&Source::new("t.toml", text), &CompileOptions::named("t")).unwrap();
        let w = &model.warnings;
        assert!(
            w.contains("t.toml:5:38: the selector of service `s` matches no pod"),
            "{w}"
        );
        assert!(w.contains("t.toml:8:16: network policy `p` selects no pod"), "{w}");
        assert!(w.contains("t.toml:9:32: no pod defines a port named `sql`"), "{w}");
        assert!(model.clusters[0].services[0].endpoints.is_empty());
    }
}
