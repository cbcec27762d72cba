//! The effects of `knetsim graph --live`: reads what a running emulation really has
//! into [`LiveFacts`] — each pod's address from its CNI ADD result (libcni's cache,
//! only while the pod's namespace exists), each worker's subnet from the subnet file
//! its flannel agent wrote, each cluster's services from a worker's live kube-proxy
//! table, each router's links from its `/metrics` (as `status` reads them), and which
//! recorded processes (etcd, flanneld, nginx, routers) still run.

use super::running::{recorded_state, NotRunning};
use super::status::display_name;
use super::Target;
use knetsim_compiler::artifacts::{nft, paths::runtime};
use knetsim_compiler::graph::{LiveFacts, LiveLink, LiveRouter};
use knetsim_compiler::plan::Probe;
use knetsim_compiler::{self as compiler, Model, Source};
use knetsim_executor::layout::StateLayout;
use knetsim_executor::live::{read_current, CurrentFile};
use knetsim_executor::system::linux::{self, LinuxSystem};
use knetsim_executor::system::System;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn netns_present(netns: &str) -> bool {
    !netns.is_empty() && LinuxSystem::netns_path(netns).exists()
}

/// The running emulation's model (from its stored topology) and its live facts.
pub fn gather(target: &Target) -> Result<(Model, LiveFacts), String> {
    let (mut opts, st) = recorded_state(target).map_err(|e| match e {
        NotRunning::NotUp(_) => format!("{e}; draw a topology file without --live"),
        NotRunning::Error(e) => e,
    })?;
    opts.state_dir = PathBuf::from(&st.state_dir);
    let path = StateLayout::new(&opts.state_dir).topology_link();
    let text = match read_current(&opts.state_dir, CurrentFile::Topology) {
        Ok(Some((_, text))) => text,
        Ok(None) => return Err(format!("emulation {} is not up", display_name(&st.name))),
        Err(e) => return Err(format!("cannot read the running topology: {e}")),
    };
    let model = compiler::check(&Source::new(path.display().to_string(), text), &opts).map_err(|d| d.render())?;
    let mut facts = LiveFacts {
        title: format!("emulation {} (live)", display_name(&st.name)),
        ..LiveFacts::default()
    };
    let naming = model.naming();
    for c in &model.clusters {
        for w in &c.workers {
            let results = Path::new(&runtime::cni_cache_dir(&naming, w)).join("results");
            for (netns, ips) in cni_results(&results) {
                let pod = c.pods.iter().find(|p| !p.deleted && p.netns == netns);
                if let Some(p) = pod.filter(|p| netns_present(&p.netns)) {
                    facts.pod_ips.insert(format!("{}/{}", c.name, p.name), ips);
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
    let sys = LinuxSystem::new();
    facts.skipped = st.skip.clone();
    for p in &st.processes {
        let same = match (p.start_ticks, linux::start_ticks(p.pid)) {
            (_, None) => false,
            (Some(recorded), Some(now)) => recorded == now,
            (None, Some(_)) => true,
        };
        if same && sys.check(&Probe::Alive, Some(p.pid)).unwrap_or(false) {
            facts.running.insert(p.name.clone());
        }
    }
    for p in st.processes.iter().filter(|p| netns_present(&p.netns)) {
        if let Some(r) = super::status_routers::router(p) {
            let Some(id) = r["id"].as_str() else { continue };
            facts.routers.insert(id.to_string(), live_router(&r));
        }
    }
    Ok((model, facts))
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

fn read_subnet(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("FLANNEL_SUBNET="))
        .map(|v| v.trim().to_string())
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
    super::graph_nft::services(&listing)
}

/// A router as `status` reports it (see `status_routers::router`).
fn live_router(r: &Value) -> LiveRouter {
    LiveRouter {
        reachable: r["reachable"] == true,
        links: r["links"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| LiveLink {
                peer: l["peer"].as_str().unwrap_or("").to_string(),
                cost: l["cost"].as_u64().unwrap_or(0),
                up: l["up"] == true,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let r = serde_json::json!({"id": "c1", "reachable": true,
            "links": [{"peer": "c0", "via": "connector link-c0", "cost": 1, "up": true},
                      {"peer": "10.0.0.9:55671", "via": "connector x", "cost": 5, "up": false}]});
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
