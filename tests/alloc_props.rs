//! Property test of address allocation: random valid topologies (1-5 clusters, 1-6
//! workers, 1-3 etcd members, 0-20 pods, 0-5 services with or without given VIPs,
//! optionally a custom flannel subnet_len, optionally an ingress) always compile, the
//! addresses in the bundle's inventory.json never collide and stay inside their networks,
//! and the plan stays a valid, duplicate-free order.

use knetsim_compiler::{compile, CompileOptions, Source};
use proptest::prelude::*;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;

#[derive(Debug, Clone)]
struct ServiceGen {
    /// Backends, as indexes into the cluster's pods (taken modulo the pod count, deduplicated).
    pods: Vec<usize>,
    /// Host index inside 100.64.0.0/16, when the VIP is given.
    vip: Option<u16>,
    /// Ports; empty = IP-wide.
    ports: Vec<(u16, bool)>,
}

/// An ingress named `ing` in every cluster that has one (names are per cluster).
#[derive(Debug, Clone)]
struct IngressGen {
    worker: usize,
    port: u16,
    /// Services routed to (indexes modulo the service count).
    services: Vec<usize>,
    /// Port used for routes to IP-wide services.
    ip_wide_port: u16,
}

#[derive(Debug, Clone)]
struct ClusterGen {
    workers: usize,
    etcd: usize,
    /// Worker index (0-based) of each pod.
    pods: Vec<usize>,
    services: Vec<ServiceGen>,
    subnet_len: Option<u8>,
    ingress: Option<IngressGen>,
}

fn service_gen() -> impl Strategy<Value = ServiceGen> {
    (
        prop::collection::vec(any::<usize>(), 1..=4),
        prop::option::of(1u16..=65534),
        prop::collection::vec((1u16..=65535, any::<bool>()), 0..=2),
    )
        .prop_map(|(pods, vip, ports)| ServiceGen { pods, vip, ports })
}

fn cluster_gen() -> impl Strategy<Value = ClusterGen> {
    (1usize..=6, 1usize..=3).prop_flat_map(|(workers, etcd)| {
        (
            prop::collection::vec(0..workers, 0..=20),
            prop::collection::vec(service_gen(), 0..=5),
            prop::option::of(20u8..=26),
            prop::option::of((
                0..workers,
                1u16..=65535,
                prop::collection::vec(any::<usize>(), 1..=3),
                1u16..=65535,
            )),
        )
            .prop_map(move |(pods, services, subnet_len, ingress)| ClusterGen {
                workers,
                etcd,
                pods,
                services,
                subnet_len,
                ingress: ingress.map(|(worker, port, services, ip_wide_port)| IngressGen {
                    worker,
                    port,
                    services,
                    ip_wide_port,
                }),
            })
    })
}

fn topology_gen() -> impl Strategy<Value = Vec<ClusterGen>> {
    prop::collection::vec(cluster_gen(), 1..=5)
}

/// The TOML text of a generated topology. Services need pods, and given VIPs must be
/// distinct within a cluster: the generator's raw values are adjusted here to keep
/// every topology valid.
fn render(clusters: &[ClusterGen]) -> String {
    let mut t = String::new();
    for (ci, c) in clusters.iter().enumerate() {
        t.push_str(&format!(
            "[[clusters]]\nname = \"C{ci}\"\netcd = {}\nworkers = {}\n",
            c.etcd, c.workers
        ));
        if let Some(len) = c.subnet_len {
            t.push_str(&format!("flannel = {{ subnet_len = {len} }}\n"));
        }
        t.push_str("pods = [\n");
        for (pi, w) in c.pods.iter().enumerate() {
            t.push_str(&format!("  {{ name = \"p{pi}\", worker = \"w{}\" }},\n", w + 1));
        }
        t.push_str("]\nservices = [\n");
        if !c.pods.is_empty() {
            let mut vips = HashSet::new();
            for (si, s) in c.services.iter().enumerate() {
                let pods: BTreeSet<usize> = s.pods.iter().map(|i| i % c.pods.len()).collect();
                let pods: Vec<String> = pods.iter().map(|i| format!("\"p{i}\"")).collect();
                t.push_str(&format!("  {{ name = \"s{si}\", pods = [{}]", pods.join(", ")));
                if let Some(v) = s.vip.filter(|v| vips.insert(*v)) {
                    t.push_str(&format!(", vip = \"100.64.{}.{}\"", v >> 8, v & 0xff));
                }
                let ports: Vec<String> = unique_ports(s)
                    .iter()
                    .map(|(p, udp)| format!("{{ port = {p}, protocol = \"{}\" }}", if *udp { "udp" } else { "tcp" }))
                    .collect();
                if !ports.is_empty() {
                    t.push_str(&format!(", ports = [{}]", ports.join(", ")));
                }
                t.push_str(" },\n");
            }
        }
        t.push_str("]\n");
        if let Some(rules) = ingress_rules(c) {
            let ing = c.ingress.as_ref().expect("rules come from an ingress");
            t.push_str(&format!(
                "[[clusters.ingresses]]\nname = \"ing\"\nworker = \"w{}\"\nport = {}\nrules = [\n",
                ing.worker + 1,
                ing.port
            ));
            for (k, (si, port)) in rules.iter().enumerate() {
                t.push_str(&format!(
                    "  {{ path = \"/r{k}\", service = \"s{si}\", port = {port} }},\n"
                ));
            }
            t.push_str("]\n");
        }
        t.push('\n');
    }
    t
}

/// A service's ports without repeats, as (port, udp).
fn unique_ports(s: &ServiceGen) -> Vec<(u16, bool)> {
    let mut seen = HashSet::new();
    s.ports.iter().copied().filter(|p| seen.insert(*p)).collect()
}

/// The (service index, port) routes of a cluster's ingress: a service's first tcp port,
/// or any port for an IP-wide one; services with only udp ports are not routed to.
/// None when the cluster gets no ingress.
fn ingress_rules(c: &ClusterGen) -> Option<Vec<(usize, u16)>> {
    let ing = c.ingress.as_ref()?;
    if c.pods.is_empty() || c.services.is_empty() {
        return None;
    }
    let picked: BTreeSet<usize> = ing.services.iter().map(|i| i % c.services.len()).collect();
    let rules: Vec<(usize, u16)> = picked
        .into_iter()
        .filter_map(|si| {
            let ports = unique_ports(&c.services[si]);
            if ports.is_empty() {
                Some((si, ing.ip_wide_port))
            } else {
                ports.iter().find(|(_, udp)| !udp).map(|(p, _)| (si, *p))
            }
        })
        .collect();
    (!rules.is_empty()).then_some(rules)
}

fn ip(v: &Value) -> Ipv4Addr {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an IPv4 address: {v}"))
}

/// (network, prefix length, broadcast) of `a.b.c.d/len`.
fn net(v: &Value) -> (u32, u8, u32) {
    let s = v.as_str().unwrap_or_else(|| panic!("not a CIDR: {v}"));
    let (addr, len) = s.split_once('/').unwrap_or_else(|| panic!("not a CIDR: {s}"));
    let addr: Ipv4Addr = addr.parse().unwrap_or_else(|_| panic!("not a CIDR: {s}"));
    let len: u8 = len.parse().unwrap_or_else(|_| panic!("not a CIDR: {s}"));
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
    let network = u32::from(addr);
    assert_eq!(network & mask, network, "{s} has host bits set");
    (network, len, network | !mask)
}

fn contains(n: (u32, u8, u32), a: Ipv4Addr) -> bool {
    (n.0..=n.2).contains(&u32::from(a))
}

fn check_inventory(inv: &Value, gens: &[ClusterGen]) -> Result<(), TestCaseError> {
    let clusters = inv["clusters"].as_array().expect("clusters");
    prop_assert_eq!(clusters.len(), gens.len());
    let mut underlay: HashMap<Ipv4Addr, String> = HashMap::new();
    let underlay_net = net(&inv["underlay"]["network"]);
    for (c, g) in clusters.iter().zip(gens) {
        let cname = c["name"].as_str().unwrap();
        let workers = c["workers"].as_array().unwrap();
        let etcd = c["etcd"].as_array().unwrap();
        prop_assert_eq!(workers.len(), g.workers);
        prop_assert_eq!(etcd.len(), g.etcd);
        let flannel = net(&c["flannel"]["network"]);
        let subnet_len = c["flannel"]["subnet_len"].as_u64().unwrap() as u8;
        prop_assert_eq!(subnet_len, g.subnet_len.unwrap_or(20));

        // Underlay addresses are unique across the whole topology.
        for h in etcd.iter().chain(workers.iter().map(|w| &w["host"])) {
            let a = ip(&h["ip"]);
            let name = h["name"].as_str().unwrap().to_string();
            prop_assert!(contains(underlay_net, a), "{} {} outside the underlay", name, a);
            if let Some(prev) = underlay.insert(a, name.clone()) {
                prop_assert!(false, "{} and {} share the underlay address {}", prev, name, a);
            }
        }

        // Worker subnets: the configured length, inside the pod network, disjoint.
        let mut subnets: HashMap<String, (u32, u8, u32)> = HashMap::new();
        let mut used: HashMap<Ipv4Addr, String> = HashMap::new();
        for w in workers {
            let name = w["host"]["name"].as_str().unwrap().to_string();
            let s = net(&w["subnet"]);
            prop_assert_eq!(s.1, subnet_len, "{} subnet length", name);
            prop_assert!(
                s.0 >= flannel.0 && s.2 <= flannel.2,
                "{} subnet outside the pod network",
                name
            );
            for (other, o) in &subnets {
                prop_assert!(s.2 < o.0 || o.2 < s.0, "subnets of {} and {} overlap", other, name);
            }
            let gateway = Ipv4Addr::from(s.0 + 1);
            if let Some(prev) = used.insert(gateway, format!("{name} gateway")) {
                prop_assert!(false, "{}: {} and {name} gateway share {}", cname, prev, gateway);
            }
            subnets.insert(name, s);
        }

        // Pods: inside their worker's subnet, never its network, gateway or broadcast.
        let pods = c["pods"].as_array().unwrap();
        prop_assert_eq!(pods.len(), g.pods.len());
        for (p, w) in pods.iter().zip(&g.pods) {
            let name = p["name"].as_str().unwrap();
            let worker = p["worker"].as_str().unwrap();
            prop_assert_eq!(worker, format!("{cname}w{}", w + 1));
            let a = ip(&p["ip"]);
            let s = subnets[worker];
            prop_assert!(
                contains(s, a),
                "pod {}/{} {} outside {}'s subnet",
                cname,
                name,
                a,
                worker
            );
            let x = u32::from(a);
            prop_assert!(
                x != s.0 && x != s.0 + 1 && x != s.2,
                "pod {}/{} has the reserved address {}",
                cname,
                name,
                a
            );
            if let Some(prev) = used.insert(a, format!("pod {name}")) {
                prop_assert!(false, "{}: {} and pod {} share {}", cname, prev, name, a);
            }
        }

        // VIPs: inside the service CIDR, distinct from each other and from pods/gateways.
        let cidr = net(&c["service_cidr"]);
        let services = c["services"].as_array().unwrap();
        let expected_services = if g.pods.is_empty() { 0 } else { g.services.len() };
        prop_assert_eq!(services.len(), expected_services);
        for s in services {
            let name = s["name"].as_str().unwrap();
            let vip = ip(&s["vip"]);
            prop_assert!(contains(cidr, vip), "VIP {} of {} outside {:?}", vip, name, cidr);
            prop_assert!(u32::from(vip) != cidr.0 && u32::from(vip) != cidr.2);
            if let Some(prev) = used.insert(vip, format!("service {name}")) {
                prop_assert!(false, "{}: {} and service {} share {}", cname, prev, name, vip);
            }
            for e in s["endpoints"].as_array().unwrap() {
                let pod = pods
                    .iter()
                    .find(|p| p["name"] == e["pod"])
                    .expect("endpoint pod exists");
                prop_assert_eq!(
                    &pod["ip"],
                    &e["ip"],
                    "endpoint {} of {} has its pod's IP",
                    e["pod"],
                    name
                );
            }
        }
    }
    Ok(())
}

/// Step ids are unique and every dependency is an earlier step.
fn check_plan(plan: &Value) -> Result<(), TestCaseError> {
    let mut seen = HashSet::new();
    for step in plan["steps"].as_array().expect("steps") {
        let id = step["id"].as_str().expect("step id");
        for dep in step["after"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let dep = dep.as_str().expect("dependency id");
            prop_assert!(
                seen.contains(dep),
                "step {} depends on {}, not an earlier step",
                id,
                dep
            );
        }
        prop_assert!(seen.insert(id), "duplicate step id {}", id);
    }
    Ok(())
}

/// 64 cases by default (fast); `PROPTEST_CASES=5000` for a longer hunt.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_topologies_allocate_without_collisions(gens in topology_gen()) {
        let text = render(&gens);
        let source = Source::new("generated.toml", text.clone());
        let bundle = compile(&source, &CompileOptions::default())
            .map_err(|d| TestCaseError::fail(format!("valid topology rejected:\n{}\n{text}", d.render())))?;
        let inv: Value = serde_json::from_str(bundle.get("inventory.json").expect("inventory.json"))
            .expect("inventory.json is JSON");
        check_inventory(&inv, &gens)?;

        let plan: Value = serde_json::from_str(bundle.get("plan.json").expect("plan.json")).unwrap();
        check_plan(&plan)?;

        // Every ingress the generator asked for exists, with its own runtime directory.
        let mut dirs = HashSet::new();
        for (c, g) in inv["clusters"].as_array().unwrap().iter().zip(&gens) {
            let ingresses = c["ingresses"].as_array().unwrap();
            prop_assert_eq!(ingresses.len(), usize::from(ingress_rules(g).is_some()));
            for ing in ingresses {
                let (cname, iname) = (c["name"].as_str().unwrap(), ing["name"].as_str().unwrap());
                let path = format!("clusters/{cname}/ingress/{iname}/nginx.conf");
                let conf = bundle.get(&path);
                prop_assert!(conf.is_some(), "bundle lacks {}", path);
                let pid = conf.unwrap().lines().find(|l| l.starts_with("pid ")).map(str::to_string);
                prop_assert!(pid.is_some(), "{} has no pid line", path);
                let pid = pid.unwrap();
                prop_assert!(dirs.insert(pid.clone()), "two ingresses share `{}`", pid);
            }
        }

        // The plan hands every pod the address the inventory allocated.
        for c in inv["clusters"].as_array().unwrap() {
            for p in c["pods"].as_array().unwrap() {
                let id = format!("cni-add:{}/{}", c["name"].as_str().unwrap(), p["name"].as_str().unwrap());
                let step = plan["steps"].as_array().unwrap().iter().find(|s| s["id"] == id.as_str());
                prop_assert!(step.is_some(), "plan has no step {}", id);
                prop_assert_eq!(&step.unwrap()["ip"], &p["ip"]);
            }
        }
    }
}

/// The checker itself catches what it is meant to catch.
#[test]
fn checker_rejects_corrupted_inventories() {
    let gens = vec![ClusterGen {
        workers: 2,
        etcd: 1,
        pods: vec![0, 0, 1],
        services: vec![ServiceGen {
            pods: vec![0],
            vip: None,
            ports: vec![],
        }],
        subnet_len: None,
        ingress: None,
    }];
    let source = Source::new("generated.toml", render(&gens));
    let bundle = compile(&source, &CompileOptions::default()).expect("compiles");
    let inv: Value = serde_json::from_str(bundle.get("inventory.json").unwrap()).unwrap();
    check_inventory(&inv, &gens).expect("the real inventory passes");

    type Corruption = (&'static str, fn(&mut Value));
    let corruptions: [Corruption; 5] = [
        ("duplicate pod IP", |v| {
            v["clusters"][0]["pods"][1]["ip"] = v["clusters"][0]["pods"][0]["ip"].clone()
        }),
        ("pod on its gateway", |v| {
            v["clusters"][0]["pods"][0]["ip"] = "11.10.0.1".into()
        }),
        ("pod outside its subnet", |v| {
            v["clusters"][0]["pods"][2]["ip"] = "11.10.0.9".into()
        }),
        ("overlapping subnets", |v| {
            v["clusters"][0]["workers"][1]["subnet"] = "11.10.0.0/20".into()
        }),
        ("duplicate underlay IP", |v| {
            v["clusters"][0]["workers"][1]["host"]["ip"] = v["clusters"][0]["etcd"][0]["ip"].clone()
        }),
    ];
    for (what, corrupt) in corruptions {
        let mut bad = inv.clone();
        corrupt(&mut bad);
        assert!(check_inventory(&bad, &gens).is_err(), "checker missed: {what}");
    }
}
