//! kube-proxy's per-worker nftables ruleset (rendered from `templates/kube-proxy.nft.j2`).
//!
//! IP-wide services use the seed's form (`dnat to jhash ip checksum mod N map {...}`);
//! services with ports use kube-proxy's nftables mode shape: a `service-ips` verdict
//! map, a chain per service port picking an endpoint with `numgen random`, and a chain
//! per endpoint doing the DNAT.

use super::cni;
use super::templates;
use crate::model::{Cluster, Service};
use serde::Serialize;
use std::sync::Arc;

pub const TABLE: &str = "kube-proxy";

#[derive(Serialize)]
struct Ctx<'a> {
    table: &'a str,
    cluster: &'a str,
    pod_bridge: &'a str,
    ip_wide: &'a [IpWide],
    ported: &'a [PortRule],
}

#[derive(Serialize)]
struct IpWide {
    name: String,
    vip: String,
    /// `0 : 11.10.16.2, 1 : 11.10.32.2`
    endpoints: Vec<String>,
}

#[derive(Serialize)]
struct PortRule {
    service: String,
    vip: String,
    protocol: String,
    port: u16,
    chain: String,
    endpoints: Vec<EndpointRule>,
}

#[derive(Serialize)]
struct EndpointRule {
    chain: String,
    ip: String,
    target_port: u16,
}

/// How a service is named in chain names and comments: `web` in `default` (the
/// seed's), `shop/web` in another namespace, so that names never clash.
pub fn rule_name(s: &Service) -> String {
    if s.namespace == crate::model::DEFAULT_NAMESPACE {
        s.name.clone()
    } else {
        format!("{}/{}", s.namespace, s.name)
    }
}

fn ip_wide(s: &Service) -> IpWide {
    IpWide {
        name: rule_name(s),
        vip: s.vip.to_string(),
        endpoints: s
            .endpoints
            .iter()
            .filter(|e| e.ready)
            .map(|e| e.ip.to_string())
            .collect(),
    }
}

fn port_rules(s: &Service) -> impl Iterator<Item = PortRule> + '_ {
    s.ports.iter().map(move |p| {
        let base = format!("{}/{}/{}", rule_name(s), p.protocol, p.port);
        PortRule {
            service: rule_name(s),
            vip: s.vip.to_string(),
            protocol: p.protocol.clone(),
            port: p.port,
            chain: format!("service-{base}"),
            endpoints: s
                .endpoints
                .iter()
                .filter(|e| e.ready)
                .map(|e| EndpointRule {
                    chain: format!("endpoint-{base}__{}/{}", e.ip, p.target_port),
                    ip: e.ip.to_string(),
                    target_port: p.target_port,
                })
                .collect(),
        }
    })
}

/// `FAMILY NAME` of every table a ruleset defines (`table ip kube-proxy {`).
pub fn tables(ruleset: &str) -> Vec<String> {
    let mut out: Vec<String> = ruleset
        .lines()
        .filter_map(|l| l.trim().strip_prefix("table ")?.strip_suffix('{'))
        .map(|t| t.trim().to_string())
        .collect();
    out.dedup();
    out
}

/// The cluster's ruleset, with the ready endpoints only (a service none of whose
/// endpoints is ready has no rule, as one without endpoints). Like kube-proxy, which programs every node with every
/// service, each worker of a cluster loads the same rules: the text is rendered once
/// and shared by the workers' artifacts.
pub fn ruleset(c: &Cluster) -> Arc<str> {
    let ip_wide: Vec<IpWide> = c
        .services
        .iter()
        .filter(|s| !s.headless && s.ports.is_empty() && s.endpoints.iter().any(|e| e.ready))
        .map(ip_wide)
        .collect();
    let ported: Vec<PortRule> = c
        .services
        .iter()
        // A headless service has no VIP: kube-proxy ignores it, DNS names its endpoints.
        .filter(|s| !s.headless && s.endpoints.iter().any(|e| e.ready))
        .flat_map(port_rules)
        .collect();
    Arc::from(templates::render(
        "kube-proxy.nft.j2",
        Ctx {
            table: TABLE,
            cluster: &c.name,
            pod_bridge: cni::POD_BRIDGE,
            ip_wide: &ip_wide,
            ported: &ported,
        },
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn tables_of_a_ruleset() {
        let text = "add table ip kube-proxy\ndelete table ip kube-proxy\n\ntable ip kube-proxy {\n  chain services {\n  }\n}\n";
        assert_eq!(super::tables(text), ["ip kube-proxy"]);
        assert!(super::tables("").is_empty());
    }

    #[test]
    fn services_of_one_name_in_two_namespaces_get_their_own_chains() {
        use crate::{check, CompileOptions, Source};
        let text = "[[clusters]]\nname = \"C0\"\nnamespaces = [{ name = \"shop\" }]\npods = [{ name = \"a\", worker = \"w1\" }, { name = \"a\", namespace = \"shop\", worker = \"w2\" }]\nservices = [{ name = \"web\", pods = [\"a\"], ports = [80] }, { name = \"web\", namespace = \"shop\", pods = [\"a\"], ports = [80] }]\n";
        let model = check(&Source::new("t.toml", text), &CompileOptions::named("t")).unwrap();
        let c = &model.clusters[0];
        let rules = super::ruleset(c);
        assert!(rules.contains("chain service-web/tcp/80 {"), "{rules}");
        assert!(rules.contains("chain service-shop/web/tcp/80 {"), "{rules}");
        assert!(
            rules.contains(&format!("dnat to {}:80", c.pod("shop", "a").unwrap().ip)),
            "{rules}"
        );
    }

    #[test]
    fn a_pod_not_ready_leaves_the_rules_and_stays_listed() {
        use crate::{check, CompileOptions, Source};
        let source = Source::default_topology();
        let mut opts = CompileOptions::named("");
        let all = check(&source, &opts).unwrap();
        opts.not_ready.insert("C0/ic0".into());
        let less = check(&source, &opts).unwrap();
        let c0 = |m: &crate::Model| m.cluster("C0").unwrap().clone();
        let (all, less) = (c0(&all), c0(&less));
        let ip = |c: &crate::model::Cluster, pod: &str| c.pods.iter().find(|p| p.name == pod).unwrap().ip.to_string();
        let (ic0, ic1) = (ip(&all, "ic0"), ip(&all, "ic1"));
        let rules = super::ruleset(&all);
        assert!(rules.contains(&ic0) && rules.contains(&ic1));
        let rules = super::ruleset(&less);
        assert!(!rules.contains(&ic0), "{rules}");
        assert!(rules.contains(&ic1), "{rules}");
        let s1 = less.services.iter().find(|s| s.name == "s1").unwrap();
        assert_eq!(
            s1.endpoints
                .iter()
                .map(|e| (e.pod.as_str(), e.ready))
                .collect::<Vec<_>>(),
            [("ic0", false), ("ic1", true)]
        );
        // No ready endpoint left: no rule for the service at all.
        opts.not_ready.insert("C0/ic1".into());
        let none = c0(&check(&source, &opts).unwrap());
        let vip = s1.vip.to_string();
        assert!(!super::ruleset(&none).contains(&vip));
    }
}
