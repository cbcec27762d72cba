//! What `knetsim graph --live` draws, read from the running emulation: each pod's
//! address from its CNI ADD result (libcni's cache, only while the pod's namespace
//! exists), each worker's subnet from the subnet file its flannel agent wrote, each
//! cluster's services from a worker's live kube-proxy table, each router's links from
//! its `/metrics` (as `status` reads them), and which recorded processes still run.

use super::routers::{self, RouterHealth};
use super::{netns_present, process_alive, read_subnet};
use crate::state::State;
use knetsim_compiler::artifacts::{nft, paths::runtime};
use knetsim_compiler::graph::{LiveFacts, LiveLink, LiveRouter};
use knetsim_compiler::Model;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};

/// The live facts of the emulation whose state is `st` and whose model is `model`.
pub fn live_facts(st: &State, model: &Model) -> LiveFacts {
    let mut facts = LiveFacts {
        title: format!(
            "emulation {} (live)",
            if st.name.is_empty() { "default" } else { &st.name }
        ),
        ..LiveFacts::default()
    };
    let naming = model.naming();
    for c in &model.clusters {
        for w in &c.workers {
            let results = Path::new(&runtime::cni_cache_dir(&naming, w)).join("results");
            for (netns, ips) in cni_results(&results) {
                let pod = c.pods.iter().find(|p| !p.deleted && p.netns == netns);
                if let Some(p) = pod.filter(|p| netns_present(&p.netns)) {
                    facts.pod_ips.insert(c.pod_id(p), ips);
                }
            }
            if let Some(subnet) = read_subnet(Path::new(&runtime::subnet_env(&naming, w))) {
                facts.subnets.insert(w.host.name.clone(), subnet);
            }
        }
        // Every worker of a cluster loads the same table; the first one present answers.
        if let Some(w) = c.workers.iter().find(|w| netns_present(&w.host.netns)) {
            for (name, svc) in kube_proxy_services(&w.host.netns) {
                facts.services.insert(format!("{}/{name}", c.name), svc);
            }
        }
    }
    facts.skipped = st.skip.clone();
    for p in st.processes.iter().filter(|p| process_alive(p.pid, p.start_ticks)) {
        facts.running.insert(p.name.clone());
    }
    for p in st.processes.iter().filter(|p| netns_present(&p.netns)) {
        if let Some(r) = routers::router(p) {
            let Some(id) = r.id.clone() else { continue };
            facts.routers.insert(id, live_router(&r));
        }
    }
    facts
}

/// `(namespace name, addresses)` of every cached CNI ADD result in `dir`.
fn cni_results(dir: &Path) -> Vec<(String, Vec<String>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<String>)> = entries
        .flatten()
        .filter_map(|e| serde_json::from_slice::<Value>(&std::fs::read(e.path()).ok()?).ok())
        .filter_map(|entry| {
            let netns = Path::new(entry["netns"].as_str()?).file_name()?.to_str()?.to_string();
            let ips = entry["result"]["ips"]
                .as_array()?
                .iter()
                .filter_map(|ip| ip["address"].as_str())
                .map(|a| a.split('/').next().unwrap_or(a).to_string())
                .collect();
            Some((netns, ips))
        })
        .collect();
    out.sort();
    out
}

fn kube_proxy_services(netns: &str) -> std::collections::BTreeMap<String, knetsim_compiler::graph::LiveService> {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "nft", "-j", "list", "table", "ip", nft::TABLE])
        .stderr(Stdio::null())
        .output();
    let listing = out
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok())
        .unwrap_or(Value::Null);
    super::nft::services(&listing)
}

/// A router as `status` reports it, for the picture.
fn live_router(r: &RouterHealth) -> LiveRouter {
    LiveRouter {
        reachable: r.reachable,
        links: r
            .links
            .iter()
            .map(|l| LiveLink {
                peer: l.peer.clone(),
                cost: l.cost,
                up: l.up,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::routers::RouterLink;

    #[test]
    fn cni_cache_entries_give_namespaces_and_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let entry = serde_json::json!({
            "kind": "cniCacheV1", "containerId": "C0-c1", "ifName": "eth0", "networkName": "C0w1",
            "netns": "/run/netns/x-k0_c1",
            "result": {"cniVersion": "1.0.0", "ips": [{"interface": 2, "address": "11.10.0.2/20", "gateway": "11.10.0.1"}]}
        });
        std::fs::write(dir.path().join("C0w1-C0-c1-eth0"), entry.to_string()).unwrap();
        std::fs::write(dir.path().join("garbage"), "not json").unwrap();
        assert_eq!(
            cni_results(dir.path()),
            vec![("x-k0_c1".to_string(), vec!["11.10.0.2".to_string()])]
        );
        assert!(cni_results(&dir.path().join("missing")).is_empty());
        let env = dir.path().join("subnet.env");
        std::fs::write(&env, "FLANNEL_NETWORK=11.0.0.0/8\nFLANNEL_SUBNET=11.10.0.1/20\n").unwrap();
        assert_eq!(read_subnet(&env).as_deref(), Some("11.10.0.1/20"));
    }

    #[test]
    fn router_status_becomes_live_links() {
        let link = |peer: &str, via: &str, cost, up| RouterLink {
            peer: peer.into(),
            via: via.into(),
            cost,
            up,
        };
        let r = RouterHealth {
            name: "router C1".into(),
            id: Some("c1".into()),
            netns: "C1w1".into(),
            metrics: String::new(),
            reachable: true,
            healthz: None,
            healthy: false,
            problems: Vec::new(),
            links: vec![
                link("c0", "connector link-c0", 1, true),
                link("10.0.0.9:55671", "connector x", 5, false),
            ],
            addresses: Vec::new(),
        };
        let live = live_router(&r);
        assert!(live.reachable);
        assert_eq!(live.links.len(), 2);
        assert_eq!(
            (live.links[0].peer.as_str(), live.links[0].cost, live.links[0].up),
            ("c0", 1, true)
        );
        assert!(!live.links[1].up);
    }
}
