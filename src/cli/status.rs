//! `knetsim status`: the components of a running emulation and their health, the
//! way `kubectl get` shows them. Also the inventory view (hosts, pods, services)
//! that `up`, `exec` and `shell` share.

use super::running::{recorded_state, NotRunning};
use super::Target;
use knetsim_compiler::artifacts::paths::INVENTORY;
use knetsim_compiler::plan::Probe;
use knetsim_executor::live::{read_current, CurrentFile};
use knetsim_executor::par::par_map;
use knetsim_executor::state::{self, State};
use knetsim_executor::system::linux::{self, LinuxSystem};
use knetsim_executor::system::System;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// How many health probes run at once.
const PROBE_THREADS: usize = 8;

#[derive(clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    target: Target,
    /// Print the status as JSON.
    #[arg(long)]
    json: bool,
}

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
    pub ports: Vec<String>,
    /// `c1 (11.10.0.2)`.
    pub endpoints: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct IngressInfo {
    pub id: String,
    pub worker: String,
    pub port: u64,
    pub routes: Vec<String>,
}

/// The parts of `inventory.json` the CLI shows.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub state_dir: String,
    pub switch_netns: String,
    pub hosts: Vec<HostInfo>,
    pub pods: Vec<PodInfo>,
    pub services: Vec<ServiceInfo>,
    pub ingresses: Vec<IngressInfo>,
}

fn s(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(x)) => x.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

impl Inventory {
    pub fn parse(text: &str) -> Result<Inventory, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("inventory.json: {e}"))?;
        let mut inv = Inventory {
            state_dir: s(&v, "state_dir"),
            switch_netns: s(&v, "switch_netns"),
            ..Inventory::default()
        };
        for c in arr(&v, "clusters") {
            let cluster = s(c, "name");
            let host = |h: &Value, role, subnet| HostInfo {
                name: s(h, "name"),
                cluster: cluster.clone(),
                role,
                netns: s(h, "netns"),
                ip: s(h, "ip"),
                prefix_len: h.get("prefix_len").and_then(Value::as_u64).unwrap_or(0),
                subnet,
            };
            for e in arr(c, "etcd") {
                inv.hosts.push(host(e, "etcd", None));
            }
            for w in arr(c, "workers") {
                inv.hosts.push(host(&w["host"], "worker", Some(s(w, "subnet"))));
            }
            // A deleted pod (`pod rm --keep-endpoints`) only lives on as a stale endpoint.
            for p in arr(c, "pods")
                .iter()
                .filter(|p| p.get("deleted") != Some(&Value::Bool(true)))
            {
                inv.pods.push(PodInfo {
                    id: format!("{cluster}/{}", s(p, "name")),
                    worker: s(p, "worker"),
                    netns: s(p, "netns"),
                    ip: s(p, "ip"),
                });
            }
            for svc in arr(c, "services") {
                inv.services.push(ServiceInfo {
                    id: format!("{cluster}/{}", s(svc, "name")),
                    vip: s(svc, "vip"),
                    ports: arr(svc, "ports")
                        .iter()
                        .map(|p| format!("{}/{}", s(p, "port"), s(p, "protocol")))
                        .collect(),
                    endpoints: arr(svc, "endpoints")
                        .iter()
                        .map(|e| format!("{} ({})", s(e, "pod"), s(e, "ip")))
                        .collect(),
                });
            }
            for i in arr(c, "ingresses") {
                inv.ingresses.push(IngressInfo {
                    id: format!("{cluster}/{}", s(i, "name")),
                    worker: s(i, "worker"),
                    port: i.get("port").and_then(Value::as_u64).unwrap_or(0),
                    routes: arr(i, "routes")
                        .iter()
                        .map(|r| format!("{} -> {}", s(r, "path"), s(r, "service")))
                        .collect(),
                });
            }
        }
        Ok(inv)
    }

    /// The inventory `up` stored in the state directory.
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

/// A human duration: `850 ms`, `3.2 s`, `5m 10s`, `2h 3m`.
pub fn human_secs(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

/// Prints a table with columns padded to their widest cell.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let n = cells.len();
        let mut out = String::new();
        for (i, (c, w)) in cells.into_iter().zip(&widths).enumerate() {
            if i + 1 == n {
                out.push_str(&c);
            } else {
                out.push_str(&format!("{c:<w$}   "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

fn netns_present(netns: &str) -> bool {
    !netns.is_empty() && LinuxSystem::netns_path(netns).exists()
}

/// Whether a recorded process still runs (same start time, not a zombie).
fn process_alive(sys: &LinuxSystem, pid: u32, start_ticks: Option<u64>) -> bool {
    let same = match (start_ticks, linux::start_ticks(pid)) {
        (_, None) => false,
        (Some(rec), Some(now)) => rec == now,
        (None, Some(_)) => true,
    };
    same && sys.check(&Probe::Alive, Some(pid)).unwrap_or(false)
}

/// IPv4 addresses on `eth0` in `netns`.
fn eth0_addresses(netns: &str) -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["-n", netns, "-j", "-4", "addr", "show", "dev", "eth0"])
        .stderr(std::process::Stdio::null())
        .output();
    let Ok(out) = out else { return Vec::new() };
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v.as_array()
        .into_iter()
        .flatten()
        .flat_map(|l| arr(l, "addr_info").iter())
        .map(|a| s(a, "local"))
        .filter(|a| !a.is_empty())
        .collect()
}

fn read_subnet(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("FLANNEL_SUBNET="))
        .map(|v| v.trim().to_string())
}

/// Directories that may hold an emulation's state: `/tmp/knetsim` and `/tmp/knetsim-*`.
pub fn state_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/tmp") {
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if (name == "knetsim" || name.starts_with("knetsim-"))
                && e.file_type().is_ok_and(|t| t.is_dir())
                && e.path().join(state::STATE_FILE).exists()
            {
                dirs.push(e.path());
            }
        }
    }
    dirs.sort();
    dirs
}

/// `(name, state dir)` of every emulation with recorded state.
pub fn emulations() -> Vec<(String, PathBuf)> {
    state_dirs()
        .into_iter()
        .filter_map(|d| match state::read(&d) {
            Ok(Some(st)) => Some((st.name, d)),
            _ => None,
        })
        .collect()
}

pub fn display_name(name: &str) -> &str {
    if name.is_empty() {
        "default"
    } else {
        name
    }
}

pub fn name_flag(name: &str) -> String {
    if name.is_empty() {
        String::new()
    } else {
        format!(" --name {name}")
    }
}

/// What `status` found.
fn gather(st: &State, inv: Option<&Inventory>) -> Value {
    let sys = LinuxSystem::new();
    let now = state::unix_now();
    let owner_alive = process_alive(&sys, st.owner_pid, None) && st.owner_pid != std::process::id();
    let phase = if st.complete {
        "Running"
    } else if owner_alive {
        "Starting"
    } else {
        "Incomplete"
    };
    let namespaces: Vec<Value> = st
        .namespaces
        .iter()
        .map(|n| json!({ "name": n, "present": netns_present(n) }))
        .collect();
    let processes: Vec<Value> = st
        .processes
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "netns": p.netns,
                "pid": p.pid,
                "alive": process_alive(&sys, p.pid, p.start_ticks),
                "uptime_s": now.saturating_sub(p.started_at),
                "log": p.log,
            })
        })
        .collect();
    let router_procs: Vec<_> = st.processes.iter().filter(|p| netns_present(&p.netns)).collect();
    let routers: Vec<Value> = par_map(&router_procs, PROBE_THREADS, |p| super::status_routers::router(p))
        .into_iter()
        .flatten()
        .collect();
    let mut etcd = Vec::new();
    let mut flannel = Vec::new();
    let mut pods = Vec::new();
    let mut services = Vec::new();
    if let Some(inv) = inv {
        let members: Vec<&HostInfo> = inv.hosts.iter().filter(|h| h.role == "etcd").collect();
        etcd = par_map(&members, PROBE_THREADS, |h| {
            let url = format!("http://{}:2379/health", h.ip);
            let healthy = netns_present(&h.netns)
                && sys
                    .check(
                        &Probe::HttpGet {
                            netns: h.netns.clone(),
                            url: url.clone(),
                        },
                        None,
                    )
                    .unwrap_or(false);
            json!({ "host": h.name, "cluster": h.cluster, "endpoint": format!("http://{}:2379", h.ip), "healthy": healthy })
        });
        for h in inv.hosts.iter().filter(|h| h.role == "worker") {
            let path = inv.subnet_env(&h.name);
            let subnet = read_subnet(&path);
            flannel.push(json!({
                "worker": h.name,
                "reserved": h.subnet,
                "subnet_env": path.display().to_string(),
                "present": subnet.is_some(),
                "subnet": subnet,
            }));
        }
        pods = par_map(&inv.pods, PROBE_THREADS, |p| {
            let present = netns_present(&p.netns);
            let addrs = if present { eth0_addresses(&p.netns) } else { Vec::new() };
            let ready = addrs.contains(&p.ip);
            json!({
                "name": p.id,
                "worker": p.worker,
                "netns": p.netns,
                "ip": p.ip,
                "present": present,
                "addresses": addrs,
                "ready": ready,
            })
        });
        services = inv
            .services
            .iter()
            .map(|s| json!({ "name": s.id, "vip": s.vip, "ports": s.ports, "endpoints": s.endpoints }))
            .collect();
    }
    // A change whose process is gone left the emulation half-way between two generations.
    let interrupted = st
        .change
        .as_ref()
        .filter(|c| !process_alive(&sys, c.pid, None) || c.pid == std::process::id());
    let healthy = st.complete
        && interrupted.is_none()
        && namespaces.iter().all(|n| n["present"] == true)
        && processes.iter().all(|p| p["alive"] == true)
        && etcd.iter().all(|e| e["healthy"] == true)
        && flannel.iter().all(|f| f["present"] == true)
        && pods.iter().all(|p| p["ready"] == true)
        && routers.iter().all(|r| r["healthy"] == true);
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
    let named = |list: &[Value], key: &str, ok: &str, what: &str| -> Vec<String> {
        list.iter()
            .filter(|v| v[ok] != true)
            .map(|v| format!("{what} {}", v[key].as_str().unwrap_or("?")))
            .collect()
    };
    problems.extend(named(&namespaces, "name", "present", "namespace missing:"));
    problems.extend(named(&processes, "name", "alive", "process dead:"));
    problems.extend(named(&etcd, "host", "healthy", "etcd unhealthy:"));
    problems.extend(named(&flannel, "worker", "present", "no flannel subnet.env on"));
    problems.extend(named(&pods, "name", "ready", "pod not ready:"));
    for r in &routers {
        problems.extend(
            r["problems"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_str().map(String::from)),
        );
    }
    json!({
        "name": st.name,
        "state_dir": st.state_dir,
        "phase": phase,
        "healthy": healthy,
        "problems": problems,
        "complete": st.complete,
        "owner_pid": st.owner_pid,
        "owner_alive": owner_alive,
        "started_at": st.started_at,
        "uptime_s": now.saturating_sub(st.started_at),
        "namespaces": namespaces,
        "processes": processes,
        "etcd": etcd,
        "flannel": flannel,
        "pods": pods,
        "services": services,
        "routers": routers,
    })
}

fn yes(v: &Value, ok: &str, bad: &str) -> String {
    if *v == true {
        ok.to_string()
    } else {
        bad.to_string()
    }
}

fn print_text(v: &Value) {
    let name = display_name(v["name"].as_str().unwrap_or(""));
    let uptime = human_secs(v["uptime_s"].as_u64().unwrap_or(0));
    println!(
        "emulation {name}: {} ({}), up {uptime}, state in {}",
        v["phase"].as_str().unwrap_or("?"),
        if v["healthy"] == true { "healthy" } else { "degraded" },
        v["state_dir"].as_str().unwrap_or("?")
    );
    for p in v["problems"].as_array().into_iter().flatten() {
        println!("  problem: {}", p.as_str().unwrap_or(""));
    }
    if v["phase"] == "Incomplete" {
        println!(
            "  the `up` that started it (pid {}) is gone before finishing: run `knetsim down{}`",
            v["owner_pid"],
            name_flag(v["name"].as_str().unwrap_or(""))
        );
    }
    let ns = v["namespaces"].as_array().cloned().unwrap_or_default();
    let present = ns.iter().filter(|n| n["present"] == true).count();
    println!("\nNAMESPACES: {present}/{} present", ns.len());
    let missing: Vec<&str> = ns
        .iter()
        .filter(|n| n["present"] != true)
        .filter_map(|n| n["name"].as_str())
        .collect();
    if !missing.is_empty() {
        println!("  missing: {}", missing.join(", "));
    }
    let rows: Vec<Vec<String>> = v["processes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            vec![
                p["name"].as_str().unwrap_or("").to_string(),
                p["netns"].as_str().unwrap_or("").to_string(),
                p["pid"].to_string(),
                yes(&p["alive"], "Running", "Dead"),
                human_secs(p["uptime_s"].as_u64().unwrap_or(0)),
                p["log"].as_str().unwrap_or("").to_string(),
            ]
        })
        .collect();
    if !rows.is_empty() {
        println!();
        print_table(&["PROCESS", "NAMESPACE", "PID", "STATUS", "AGE", "LOG"], &rows);
    }
    let rows: Vec<Vec<String>> = v["etcd"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            vec![
                e["host"].as_str().unwrap_or("").to_string(),
                e["endpoint"].as_str().unwrap_or("").to_string(),
                yes(&e["healthy"], "healthy", "unhealthy"),
            ]
        })
        .collect();
    if !rows.is_empty() {
        println!();
        print_table(&["ETCD", "ENDPOINT", "HEALTH"], &rows);
    }
    let rows: Vec<Vec<String>> = v["flannel"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            vec![
                f["worker"].as_str().unwrap_or("").to_string(),
                f["reserved"].as_str().unwrap_or("").to_string(),
                f["subnet"].as_str().unwrap_or("-").to_string(),
                yes(&f["present"], "present", "missing"),
            ]
        })
        .collect();
    if !rows.is_empty() {
        println!();
        print_table(&["WORKER", "RESERVED SUBNET", "FLANNEL_SUBNET", "SUBNET.ENV"], &rows);
    }
    let rows: Vec<Vec<String>> = v["pods"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let status = if p["ready"] == true {
                "Ready"
            } else if p["present"] == true {
                "NoAddress"
            } else {
                "Missing"
            };
            vec![
                p["name"].as_str().unwrap_or("").to_string(),
                p["worker"].as_str().unwrap_or("").to_string(),
                p["netns"].as_str().unwrap_or("").to_string(),
                p["ip"].as_str().unwrap_or("").to_string(),
                status.to_string(),
            ]
        })
        .collect();
    if !rows.is_empty() {
        println!();
        print_table(&["POD", "WORKER", "NAMESPACE", "IP", "STATUS"], &rows);
    }
    let rows: Vec<Vec<String>> = v["services"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let ports: Vec<String> = s["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect();
            let endpoints: Vec<String> = s["endpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect();
            vec![
                s["name"].as_str().unwrap_or("").to_string(),
                s["vip"].as_str().unwrap_or("").to_string(),
                if ports.is_empty() {
                    "(all)".into()
                } else {
                    ports.join(",")
                },
                endpoints.join(", "),
            ]
        })
        .collect();
    if !rows.is_empty() {
        println!();
        print_table(&["SERVICE", "VIP", "PORTS", "ENDPOINTS"], &rows);
    }
    let rows = super::status_routers::rows(v["routers"].as_array().map(Vec::as_slice).unwrap_or(&[]));
    if !rows.is_empty() {
        println!();
        print_table(&["ROUTER", "LINK / ADDRESS", "COST", "STATE", "VIA"], &rows);
    }
}

/// Exit 0: up and healthy; 1: not up, or some component is unhealthy.
pub fn status(a: StatusArgs) -> i32 {
    let (opts, st) = match recorded_state(&a.target) {
        Ok(recorded) => recorded,
        Err(e) => {
            let NotRunning::NotUp(opts) = &e else {
                eprintln!("error: {e}");
                return 1;
            };
            if a.json {
                println!(
                    "{}",
                    json!({ "name": opts.name, "state_dir": opts.state_dir, "phase": "NotUp", "healthy": false })
                );
            }
            eprintln!("{e}");
            let others: Vec<String> = emulations()
                .into_iter()
                .filter(|(n, _)| *n != opts.name)
                .map(|(n, _)| format!("knetsim status{}", name_flag(&n)))
                .collect();
            if !others.is_empty() {
                eprintln!("running emulations: {}", others.join("; "));
            }
            return 1;
        }
    };
    let inv = match Inventory::load(&opts.state_dir) {
        Ok(inv) => Some(inv),
        Err(e) => {
            if !a.json {
                eprintln!("note: no inventory ({e}); showing recorded state only");
            }
            None
        }
    };
    let v = gather(&st, inv.as_ref());
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v).expect("status serializes"));
    } else {
        print_text(&v);
    }
    i32::from(v["healthy"] != true)
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

    #[test]
    fn durations() {
        assert_eq!(human_secs(5), "5s");
        assert_eq!(human_secs(125), "2m 5s");
        assert_eq!(human_secs(7384), "2h 3m");
    }
}
