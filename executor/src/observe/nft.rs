//! The services a worker's live kube-proxy table really programs, read back from
//! `nft -j list table ip kube-proxy`: IP-wide services are one rule in chain
//! `services` (`ip daddr VIP dnat to jhash ... map { 0 : IP, ... }`, commented
//! `service NAME (IP-wide)`); services with ports are elements of map `service-ips`
//! (`VIP . proto . port : goto service-NAME/proto/port`) whose chain picks an
//! `endpoint-...` chain that DNATs to `IP:port`.

use knetsim_compiler::graph::LiveService;
use serde_json::Value;
use std::collections::BTreeMap;

/// The `kind` objects (`rule`, `map`, ...) of an `nft -j` listing.
fn objects<'a>(v: &'a Value, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(move |o| o.get(kind))
}

fn dnat_targets(rule: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for e in rule["expr"].as_array().into_iter().flatten() {
        let Some(d) = e.get("dnat") else { continue };
        match (&d["addr"], d.get("port")) {
            (Value::String(ip), Some(port)) => out.push(format!("{ip}:{port}")),
            (Value::String(ip), None) => out.push(ip.clone()),
            (addr, _) => out.extend(
                addr["map"]["data"]["set"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|pair| pair.get(1)?.as_str().map(String::from)),
            ),
        }
    }
    out
}

fn daddr_match(rule: &Value) -> Option<String> {
    rule["expr"].as_array()?.iter().find_map(|e| {
        let m = e.get("match")?;
        (m["left"]["payload"]["field"] == "daddr").then(|| m["right"].as_str().map(String::from))?
    })
}

/// The `goto` targets of a rule's verdict map.
fn goto_targets(rule: &Value) -> Vec<String> {
    rule["expr"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("vmap"))
        .flat_map(|m| m["data"]["set"].as_array().into_iter().flatten())
        .filter_map(|pair| pair.get(1)?["goto"]["target"].as_str().map(String::from))
        .collect()
}

/// Service name -> VIP and backends, from one `nft -j list table` output.
pub fn services(listing: &Value) -> BTreeMap<String, LiveService> {
    let mut out: BTreeMap<String, LiveService> = BTreeMap::new();
    let rules: Vec<&Value> = objects(listing, "rule").collect();
    for r in rules.iter().filter(|r| r["chain"] == "services") {
        let comment = r["comment"].as_str().unwrap_or("");
        let Some(name) = comment
            .strip_prefix("service ")
            .and_then(|c| c.split_whitespace().next())
        else {
            continue;
        };
        let Some(vip) = daddr_match(r) else { continue };
        out.insert(
            name.to_string(),
            LiveService {
                vip,
                backends: dnat_targets(r),
            },
        );
    }
    let maps = objects(listing, "map").filter(|m| m["name"] == "service-ips");
    for elem in maps.flat_map(|m| m["elem"].as_array().into_iter().flatten()) {
        let (Some(vip), Some(chain)) = (elem[0]["concat"][0].as_str(), elem[1]["goto"]["target"].as_str()) else {
            continue;
        };
        // `service-NAME/proto/port`, NAME being `web` or `shop/web` (another namespace).
        let Some(name) = chain.strip_prefix("service-").and_then(|c| c.rsplitn(3, '/').nth(2)) else {
            continue;
        };
        let endpoints: Vec<String> = rules
            .iter()
            .filter(|r| r["chain"] == chain)
            .flat_map(|r| goto_targets(r))
            .collect();
        let svc = out.entry(name.to_string()).or_insert_with(|| LiveService {
            vip: vip.to_string(),
            backends: Vec::new(),
        });
        for b in rules
            .iter()
            .filter(|r| r["chain"].as_str().is_some_and(|c| endpoints.iter().any(|e| e == c)))
            .flat_map(|r| dnat_targets(r))
        {
            if !svc.backends.contains(&b) {
                svc.backends.push(b);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Trimmed from `nft -j list table ip kube-proxy` of a worker (nftables 1.0.6).
    fn listing() -> Value {
        let rule = |chain: &str, expr: Value| json!({"rule": {"family": "ip", "table": "kube-proxy", "chain": chain, "expr": expr}});
        let endpoint = |chain: &str, ip: &str, port: u16| {
            rule(
                chain,
                json!([{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}},
                       {"counter": {"packets": 0, "bytes": 0}}, {"dnat": {"addr": ip, "port": port}}]),
            )
        };
        let mut all = vec![
            json!({"metainfo": {"version": "1.0.6"}}),
            json!({"rule": {"family": "ip", "table": "kube-proxy", "chain": "services", "comment": "service all (IP-wide)",
                "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "100.64.0.9"}},
                         {"counter": {"packets": 3, "bytes": 252}},
                         {"dnat": {"addr": {"map": {"key": {"jhash": {"mod": 2}}, "data": {"set": [[0, "11.10.0.2"], [1, "11.10.16.2"]]}}}}}]}}),
            json!({"map": {"name": "service-ips", "table": "kube-proxy", "elem": [
                [{"concat": ["100.64.0.1", "tcp", 80]}, {"goto": {"target": "service-web/tcp/80"}}],
                [{"concat": ["100.64.0.2", "udp", 53]}, {"goto": {"target": "service-dns/udp/53"}}],
                [{"concat": ["100.64.0.2", "tcp", 53]}, {"goto": {"target": "service-dns/tcp/53"}}]]}}),
            rule(
                "service-web/tcp/80",
                json!([{"vmap": {"key": {"numgen": {"mod": 2}}, "data": {"set": [
                [0, {"goto": {"target": "endpoint-web/tcp/80__11.10.0.2/8080"}}],
                [1, {"goto": {"target": "endpoint-web/tcp/80__11.10.16.2/8080"}}]]}}}]),
            ),
            endpoint("endpoint-web/tcp/80__11.10.0.2/8080", "11.10.0.2", 8080),
            endpoint("endpoint-web/tcp/80__11.10.16.2/8080", "11.10.16.2", 8080),
            // An endpoint chain no service chain reaches is not a backend.
            endpoint("endpoint-web/tcp/80__11.10.16.9/8080", "11.10.16.9", 8080),
        ];
        for proto in ["udp", "tcp"] {
            let chain = format!("endpoint-dns/{proto}/53__11.10.16.3/53");
            all.push(rule(
                &format!("service-dns/{proto}/53"),
                json!([{"vmap": {"data": {"set": [[0, {"goto": {"target": chain}}]]}}}]),
            ));
            all.push(endpoint(&chain, "11.10.16.3", 53));
        }
        json!({ "nftables": all })
    }

    #[test]
    fn ip_wide_and_ported_services_with_their_backends() {
        let s = services(&listing());
        assert_eq!(s.keys().collect::<Vec<_>>(), ["all", "dns", "web"]);
        assert_eq!(s["all"].vip, "100.64.0.9");
        assert_eq!(s["all"].backends, ["11.10.0.2", "11.10.16.2"]);
        assert_eq!(s["web"].vip, "100.64.0.1");
        assert_eq!(s["web"].backends, ["11.10.0.2:8080", "11.10.16.2:8080"]);
        assert_eq!(s["dns"].vip, "100.64.0.2");
        assert_eq!(s["dns"].backends, ["11.10.16.3:53"]);
        assert!(services(&json!({})).is_empty());
    }
}
