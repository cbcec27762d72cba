//! What a running emulation consists of, from the model its bundle carries
//! (`inventory.json`, the compiler's [`Model`] serialized): hosts, pods, services and
//! ingresses with their namespaces and addresses, in the shapes the views show.

use crate::live::{read_current, CurrentFile};
use knetsim_compiler::artifacts::paths::INVENTORY;
use knetsim_compiler::Model;
use std::path::{Path, PathBuf};

/// A host (etcd member or worker) of the inventory.
#[derive(Debug, Clone)]
pub struct HostInfo {
    pub name: String,
    pub cluster: String,
    /// "etcd" or "worker".
    pub role: &'static str,
    pub netns: String,
    pub ip: String,
    pub prefix_len: u64,
    /// Flannel subnet (workers).
    pub subnet: Option<String>,
}

#[derive(Debug, Clone)]
pub struct PodInfo {
    /// `C0/c1`.
    pub id: String,
    pub worker: String,
    pub netns: String,
    pub ip: String,
}

#[derive(Debug, Clone)]
pub struct ServiceInfo {
    /// `C0/web`.
    pub id: String,
    pub vip: String,
    /// `80/TCP`.
    pub ports: Vec<String>,
    /// `c1 (11.10.0.2)`.
    pub endpoints: Vec<String>,
}

/// A NetworkPolicy, as `status` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PolicyInfo {
    /// `C0/shop/api-from-web`.
    pub id: String,
    /// `Ingress`, `Egress` or `Ingress,Egress`.
    pub types: String,
    /// The pods it selects (`C0/shop/api`).
    pub selects: Vec<String>,
    /// `1 ingress, 0 egress`.
    pub rules: String,
}

#[derive(Debug, Clone)]
pub struct IngressInfo {
    pub id: String,
    pub worker: String,
    pub port: u64,
    /// `/svc1 -> svc1`.
    pub routes: Vec<String>,
}

/// The parts of the model the views show.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub state_dir: String,
    pub switch_netns: String,
    pub hosts: Vec<HostInfo>,
    pub pods: Vec<PodInfo>,
    pub services: Vec<ServiceInfo>,
    pub ingresses: Vec<IngressInfo>,
    pub policies: Vec<PolicyInfo>,
    /// Which cluster DNS runs, in words (`[dns]`), for `up` and `status`.
    pub dns: Option<String>,
}

impl Inventory {
    pub fn parse(text: &str) -> Result<Inventory, String> {
        let model: Model = serde_json::from_str(text).map_err(|e| format!("{INVENTORY}: {e}"))?;
        Ok(Inventory::of(&model))
    }

    pub fn of(model: &Model) -> Inventory {
        let mut inv = Inventory {
            state_dir: model.state_dir.clone(),
            switch_netns: model.switch_netns.clone(),
            dns: model.dns.as_ref().map(|d| {
                // dnsmasq and CoreDNS are both real DNS servers: only the name differs.
                format!(
                    "{} (serving the kube-dns Service), domain {}",
                    d.server.program(),
                    d.domain
                )
            }),
            ..Inventory::default()
        };
        for c in &model.clusters {
            let host = |h: &knetsim_compiler::model::Host, role, subnet| HostInfo {
                name: h.name.clone(),
                cluster: c.name.clone(),
                role,
                netns: h.netns.clone(),
                ip: h.ip.to_string(),
                prefix_len: u64::from(h.prefix_len),
                subnet,
            };
            inv.hosts.extend(c.etcd.iter().map(|e| host(e, "etcd", None)));
            inv.hosts.extend(
                c.workers
                    .iter()
                    .map(|w| host(&w.host, "worker", Some(w.subnet.to_string()))),
            );
            // A deleted pod (`pod rm --keep-endpoints`) only lives on as a stale endpoint.
            inv.pods.extend(c.pods.iter().filter(|p| !p.deleted).map(|p| PodInfo {
                id: c.pod_id(p),
                worker: p.worker.clone(),
                netns: p.netns.clone(),
                ip: p.ip.to_string(),
            }));
            inv.services.extend(c.services.iter().map(|s| {
                ServiceInfo {
                    id: c.service_id(s),
                    vip: if s.headless { "None".into() } else { s.vip.to_string() },
                    ports: s.ports.iter().map(|p| format!("{}/{}", p.port, p.protocol)).collect(),
                    endpoints: s
                        .endpoints
                        .iter()
                        .map(|e| match e.ready {
                            true => format!("{} ({})", e.pod, e.ip),
                            false => format!("{} ({}, not ready)", e.pod, e.ip),
                        })
                        .collect(),
                }
            }));
            inv.policies.extend(c.network_policies.iter().map(|np| {
                let mut types = Vec::new();
                if np.ingress.is_some() {
                    types.push("Ingress");
                }
                if np.egress.is_some() {
                    types.push("Egress");
                }
                let count = |r: &Option<Vec<_>>| r.as_ref().map_or(0, Vec::len);
                PolicyInfo {
                    id: format!("{}/{}", c.name, np.id()),
                    types: types.join(","),
                    selects: c.selected_by(np).map(|p| c.pod_id(p)).collect(),
                    rules: format!("{} ingress, {} egress", count(&np.ingress), count(&np.egress)),
                }
            }));
            inv.ingresses.extend(c.ingresses.iter().map(|i| {
                IngressInfo {
                    id: format!("{}/{}", c.name, i.name),
                    worker: i.worker.clone(),
                    port: u64::from(i.port),
                    routes: i
                        .routes
                        .iter()
                        .map(|r| format!("{} -> {}", r.path, r.service))
                        .collect(),
                }
            }));
        }
        inv
    }

    /// The inventory of the running generation of the emulation in `state_dir`.
    pub fn load(state_dir: &Path) -> Result<Inventory, String> {
        match read_current(state_dir, CurrentFile::Artifact(INVENTORY)) {
            Ok(Some((_, text))) => Inventory::parse(&text),
            Ok(None) => Err(format!("no emulation has its state in {}", state_dir.display())),
            Err(e) => Err(format!("cannot read the inventory: {e}")),
        }
    }

    /// The namespace of a node: a host (`C0w1`), a pod (`C0/c1`), or `switches`.
    pub fn netns_of(&self, node: &str) -> Option<&str> {
        if node == "switches" {
            return Some(&self.switch_netns);
        }
        self.hosts
            .iter()
            .find(|h| h.name == node)
            .map(|h| h.netns.as_str())
            .or_else(|| self.pods.iter().find(|p| p.id == node).map(|p| p.netns.as_str()))
    }

    /// A short list of valid node names, for error messages.
    pub fn node_names(&self) -> String {
        let mut names: Vec<&str> = self.hosts.iter().map(|h| h.name.as_str()).collect();
        names.extend(self.pods.iter().map(|p| p.id.as_str()));
        const SHOWN: usize = 12;
        let mut text = names.iter().take(SHOWN).copied().collect::<Vec<_>>().join(", ");
        if names.len() > SHOWN {
            text.push_str(&format!(", ... ({} in all)", names.len()));
        }
        text
    }

    /// `<state>/<host>/flannel-subnet.env`, as the plan writes it.
    pub fn subnet_env(&self, host: &str) -> PathBuf {
        Path::new(&self.state_dir).join(host).join("flannel-subnet.env")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use knetsim_compiler::{CompileOptions, Source};

    #[test]
    fn inventory_names_nodes() {
        let bundle = knetsim_compiler::compile(
            &Source::new(
                "t.toml",
                "[[clusters]]\nname = \"C0\"\npods = [{ name = \"c1\", worker = \"w1\" }]\nservices = [{ name = \"web\", pods = [\"c1\"] }]\n",
            ),
            &CompileOptions::named("x"),
        )
        .unwrap();
        let inv = Inventory::parse(bundle.get(INVENTORY).unwrap()).unwrap();
        assert_eq!(inv.netns_of("C0w1"), Some("x-C0w1"));
        assert_eq!(inv.netns_of("C0e1"), Some("x-C0e1"));
        assert_eq!(inv.netns_of("C0/c1"), Some("x-k0_c1"));
        assert_eq!(inv.netns_of("switches"), Some("x-knetsim-switches"));
        assert_eq!(inv.netns_of("C0/c9"), None);
        assert_eq!(inv.netns_of("c1"), None);
        assert!(inv.node_names().contains("C0/c1"));
        assert_eq!(inv.services[0].endpoints, vec![format!("c1 ({})", inv.pods[0].ip)]);
        assert_eq!(
            inv.subnet_env("C0w1"),
            PathBuf::from("/tmp/knetsim-x/C0w1/flannel-subnet.env")
        );
        assert!(inv.hosts.iter().any(|h| h.role == "worker" && h.subnet.is_some()));
    }
}
