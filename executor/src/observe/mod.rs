//! What really runs: the one place that looks at a running emulation (namespaces,
//! processes, etcd health, flannel leases, pod addresses, routers) and returns typed
//! facts. `status`, `graph --live`, `exec`, `test` and the prompt render these; they
//! do not probe or parse on their own.

mod drift;
pub mod inventory;
pub mod live_facts;
mod nft;
pub mod routers;

pub use drift::drift;
pub use inventory::Inventory;
pub use routers::RouterHealth;

use crate::par::par_map;
use crate::state::{self, ChangeRecord, State};
use crate::system::linux::{self, LinuxSystem};
use crate::system::System;
use knetsim_compiler::plan::Probe;
use serde::Serialize;
use std::path::Path;

/// How many health probes run at once.
const PROBE_THREADS: usize = 8;

/// `status`: an emulation's components and their health. Serialized as `status --json`.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub name: String,
    pub state_dir: String,
    /// Running, Starting (its `up` still runs) or Incomplete (its `up` is gone).
    pub phase: &'static str,
    pub healthy: bool,
    /// Why it is not healthy, one line each.
    pub problems: Vec<String>,
    pub complete: bool,
    pub owner_pid: u32,
    pub owner_alive: bool,
    pub started_at: u64,
    pub uptime_s: u64,
    pub namespaces: Vec<NamespaceHealth>,
    pub processes: Vec<ProcessHealth>,
    pub etcd: Vec<EtcdHealth>,
    pub flannel: Vec<FlannelHealth>,
    pub pods: Vec<PodHealth>,
    pub services: Vec<ServiceView>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<inventory::PolicyInfo>,
    pub routers: Vec<RouterHealth>,
    /// The cluster DNS, in words (`dnsmasq (serving the kube-dns Service), ...`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NamespaceHealth {
    pub name: String,
    pub present: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProcessHealth {
    pub name: String,
    pub netns: String,
    pub pid: u32,
    pub alive: bool,
    /// Ended and not to be restarted (`restart_policy = "Never"`): an end state,
    /// not a fault.
    pub ended: bool,
    pub uptime_s: u64,
    pub log: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct EtcdHealth {
    pub host: String,
    pub cluster: String,
    pub endpoint: String,
    pub healthy: bool,
}

/// A worker's flannel lease: planned (`reserved`) and what its agent wrote.
#[derive(Debug, Clone, Serialize)]
pub struct FlannelHealth {
    pub worker: String,
    pub reserved: Option<String>,
    pub subnet_env: String,
    pub present: bool,
    pub subnet: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PodHealth {
    pub name: String,
    pub worker: String,
    pub netns: String,
    pub ip: String,
    pub present: bool,
    pub addresses: Vec<String>,
    pub ready: bool,
    /// Whether its workload runs (None: it has no workload).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload_running: Option<bool>,
    /// Restarts of its workload after it died.
    pub restarts: u32,
    /// Compiled as not ready (its endpoints are out of the service rules).
    pub endpoints_out: bool,
}

impl PodHealth {
    /// Its state in the words of `kubectl get pods`' STATUS.
    pub fn phase(&self) -> &'static str {
        match (self.present, self.workload_running, self.ready) {
            (false, _, _) => "Missing",
            (true, Some(false), _) if self.restarts > 0 => "CrashLoopBackOff",
            (true, Some(false), _) => "Terminated",
            (true, _, false) => "NoAddress",
            (true, _, true) if self.endpoints_out => "NotReady",
            (true, _, true) => "Ready",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceView {
    pub name: String,
    pub vip: String,
    pub ports: Vec<String>,
    pub endpoints: Vec<String>,
}

/// The namespace exists (its mount under the netns directory).
pub fn netns_present(netns: &str) -> bool {
    !netns.is_empty() && LinuxSystem::netns_path(netns).exists()
}

/// Whether a recorded process still runs (same start time, not a zombie).
pub fn process_alive(pid: u32, start_ticks: Option<u64>) -> bool {
    let same = match (start_ticks, linux::start_ticks(pid)) {
        (_, None) => false,
        (Some(rec), Some(now)) => rec == now,
        (None, Some(_)) => true,
    };
    same && LinuxSystem::new().check(&Probe::Alive, Some(pid)).unwrap_or(false)
}

/// Pods (`C0/c4`) whose recorded workload is not running, with why: they are not
/// ready (no probes yet: a running workload counts as ready, as a container
/// without a readiness probe does).
pub fn not_ready(st: &State) -> std::collections::BTreeMap<String, String> {
    st.processes
        .iter()
        .filter_map(|p| Some((knetsim_compiler::plan::workload_pod(&p.name)?, p)))
        .filter(|(_, p)| !process_alive(p.pid, p.start_ticks))
        .map(|(pod, p)| (pod.to_string(), format!("its workload (pid {}) is not running", p.pid)))
        .collect()
}

/// `FLANNEL_SUBNET` from a flannel subnet file.
pub fn read_subnet(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("FLANNEL_SUBNET="))
        .map(|v| v.trim().to_string())
}

/// IPv4 addresses on `eth0` in `netns`.
fn eth0_addresses(netns: &str) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Link {
        #[serde(default)]
        addr_info: Vec<Addr>,
    }
    #[derive(serde::Deserialize)]
    struct Addr {
        #[serde(default)]
        local: String,
    }
    let out = std::process::Command::new("ip")
        .args(["-n", netns, "-j", "-4", "addr", "show", "dev", "eth0"])
        .stderr(std::process::Stdio::null())
        .output();
    let Ok(out) = out else { return Vec::new() };
    let links: Vec<Link> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    links
        .into_iter()
        .flat_map(|l| l.addr_info)
        .map(|a| a.local)
        .filter(|a| !a.is_empty())
        .collect()
}

/// A change recorded in the state whose process is gone: it stopped half-way.
pub fn interrupted_change(st: &State) -> Option<&ChangeRecord> {
    st.change
        .as_ref()
        .filter(|c| !process_alive(c.pid, None) || c.pid == std::process::id())
}

fn name_flag(name: &str) -> String {
    if name.is_empty() {
        String::new()
    } else {
        format!(" --name {name}")
    }
}

/// Looks at everything the state records and the inventory plans.
pub fn health(st: &State, inv: Option<&Inventory>) -> Health {
    let sys = LinuxSystem::new();
    let now = state::unix_now();
    let owner_alive = process_alive(st.owner_pid, None) && st.owner_pid != std::process::id();
    let phase = if st.complete {
        "Running"
    } else if owner_alive {
        "Starting"
    } else {
        "Incomplete"
    };
    let namespaces: Vec<NamespaceHealth> = st
        .namespaces
        .iter()
        .map(|n| NamespaceHealth {
            name: n.clone(),
            present: netns_present(n),
        })
        .collect();
    let processes: Vec<ProcessHealth> = st
        .processes
        .iter()
        .map(|p| {
            let alive = process_alive(p.pid, p.start_ticks);
            ProcessHealth {
                name: p.name.clone(),
                netns: p.netns.clone(),
                pid: p.pid,
                alive,
                ended: !alive && !p.restart.is_always(),
                uptime_s: now.saturating_sub(p.started_at),
                log: p.log.clone(),
            }
        })
        .collect();
    let router_procs: Vec<_> = st.processes.iter().filter(|p| netns_present(&p.netns)).collect();
    let routers: Vec<RouterHealth> = par_map(&router_procs, PROBE_THREADS, |p| routers::router(p))
        .into_iter()
        .flatten()
        .collect();
    let mut etcd = Vec::new();
    let mut flannel = Vec::new();
    let mut pods = Vec::new();
    let mut services = Vec::new();
    if let Some(inv) = inv {
        let members: Vec<_> = inv.hosts.iter().filter(|h| h.role == "etcd").collect();
        etcd = par_map(&members, PROBE_THREADS, |h| {
            let url = format!("http://{}:2379/health", h.ip);
            let healthy = netns_present(&h.netns)
                && sys
                    .check(
                        &Probe::HttpGet {
                            netns: h.netns.clone(),
                            url,
                        },
                        None,
                    )
                    .unwrap_or(false);
            EtcdHealth {
                host: h.name.clone(),
                cluster: h.cluster.clone(),
                endpoint: format!("http://{}:2379", h.ip),
                healthy,
            }
        });
        for h in inv.hosts.iter().filter(|h| h.role == "worker") {
            let path = inv.subnet_env(&h.name);
            let subnet = read_subnet(&path);
            flannel.push(FlannelHealth {
                worker: h.name.clone(),
                reserved: h.subnet.clone(),
                subnet_env: path.display().to_string(),
                present: subnet.is_some(),
                subnet,
            });
        }
        pods = par_map(&inv.pods, PROBE_THREADS, |p| {
            let present = netns_present(&p.netns);
            let addresses = if present { eth0_addresses(&p.netns) } else { Vec::new() };
            let workload = st
                .processes
                .iter()
                .find(|w| w.name == knetsim_compiler::plan::workload_name(&p.id));
            PodHealth {
                name: p.id.clone(),
                worker: p.worker.clone(),
                netns: p.netns.clone(),
                ip: p.ip.clone(),
                present,
                ready: addresses.contains(&p.ip),
                addresses,
                workload_running: workload.map(|w| process_alive(w.pid, w.start_ticks)),
                restarts: workload.map_or(0, |w| w.restarts),
                endpoints_out: st.not_ready.contains(&p.id),
            }
        });
        services = inv
            .services
            .iter()
            .map(|s| ServiceView {
                name: s.id.clone(),
                vip: s.vip.clone(),
                ports: s.ports.clone(),
                endpoints: s.endpoints.clone(),
            })
            .collect();
    }
    let interrupted = interrupted_change(st);
    // Why the emulation is degraded (routers say why themselves).
    let mut problems: Vec<String> = Vec::new();
    if !st.complete {
        problems.push(format!("`up` has not completed (phase {phase})"));
    }
    if let Some(c) = interrupted {
        problems.push(format!(
            "a change by pid {} was interrupted after {} action(s): the next change rolls it back (`knetsim apply{} {}/topology.toml` changes nothing else)",
            c.pid,
            c.performed,
            name_flag(&st.name),
            st.state_dir
        ));
    }
    fn missing<'a, T>(
        list: &'a [T],
        ok: impl Fn(&T) -> bool,
        name: impl Fn(&'a T) -> &'a str,
        what: &str,
    ) -> Vec<String> {
        list.iter()
            .filter(|v| !ok(v))
            .map(|v| format!("{what} {}", name(v)))
            .collect()
    }
    problems.extend(missing(&namespaces, |n| n.present, |n| &n.name, "namespace missing:"));
    problems.extend(missing(
        &processes,
        |p| p.alive || p.ended,
        |p| &p.name,
        "process dead:",
    ));
    problems.extend(missing(&etcd, |e| e.healthy, |e| &e.host, "etcd unhealthy:"));
    problems.extend(missing(
        &flannel,
        |f| f.present,
        |f| &f.worker,
        "no flannel subnet.env on",
    ));
    problems.extend(missing(&pods, |p| p.ready, |p| &p.name, "pod not ready:"));
    for r in &routers {
        problems.extend(r.problems.iter().cloned());
    }
    if st.complete
        && interrupted.is_none()
        && (namespaces.iter().any(|n| !n.present) || processes.iter().any(|p| !p.alive && !p.ended))
    {
        problems.push(format!(
            "`knetsim repair{}` restarts what died and re-creates deleted pods",
            name_flag(&st.name)
        ));
    }
    let healthy = st.complete
        && interrupted.is_none()
        && namespaces.iter().all(|n| n.present)
        && processes.iter().all(|p| p.alive || p.ended)
        && etcd.iter().all(|e| e.healthy)
        && flannel.iter().all(|f| f.present)
        && pods.iter().all(|p| p.ready)
        && routers.iter().all(|r| r.healthy);
    Health {
        name: st.name.clone(),
        state_dir: st.state_dir.clone(),
        phase,
        healthy,
        problems,
        complete: st.complete,
        owner_pid: st.owner_pid,
        owner_alive,
        started_at: st.started_at,
        uptime_s: now.saturating_sub(st.started_at),
        namespaces,
        processes,
        etcd,
        flannel,
        pods,
        services,
        policies: inv.map(|i| i.policies.clone()).unwrap_or_default(),
        routers,
        dns: inv.and_then(|i| i.dns.clone()),
    }
}
