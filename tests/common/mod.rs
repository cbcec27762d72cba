//! Helpers shared by the live tests (`live_up.rs`, `live_default.rs`, ...): running
//! knetsim, skipping without root or a needed program (or failing when `CI` is set),
//! the drop guard that runs `knetsim down`, the root-namespace snapshot and the
//! leftovers check.
//! Each test binary uses a part of them.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

pub fn knetsim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_knetsim"))
        .args(args)
        .output()
        .expect("run knetsim")
}

pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs knetsim, asserts it succeeded and returns its stdout.
pub fn ok(args: &[&str]) -> String {
    let out = knetsim(args);
    assert!(out.status.success(), "knetsim {}: {}", args.join(" "), text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Prints `SKIP: test: reason` and returns false; panics instead when `CI` is set.
pub fn skip(test: &str, reason: &str) -> bool {
    if std::env::var_os("CI").is_some() {
        panic!("{test}: {reason}, and CI is set");
    }
    println!("SKIP: {test}: {reason}");
    false
}

pub fn on_path(program: &str) -> bool {
    knetsim_executor::system::process::which(program).is_some()
}

/// The subcommands this build of knetsim has.
pub fn subcommands() -> Vec<String> {
    let help = ok(&["--help"]);
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect()
}

/// Whether the real CNI plugins knetsim delegates to are installed.
pub fn cni_plugins_installed() -> bool {
    ["bridge", "host-local", "loopback"]
        .iter()
        .all(|p| Path::new("/usr/lib/cni").join(p).exists() || Path::new("/opt/cni/bin").join(p).exists())
}

/// Whether live tests can run here: as root, with every one of `programs` on PATH and
/// the real CNI plugins installed. Prints `SKIP` (panics under `CI`) when not.
pub fn live_ready(test: &str, programs: &[&str]) -> bool {
    if !nix_is_root() {
        return skip(test, "needs root");
    }
    if let Some(p) = programs.iter().find(|p| !on_path(p)) {
        return skip(test, &format!("`{p}` is not installed"));
    }
    if !cni_plugins_installed() {
        return skip(
            test,
            "the CNI plugins bridge, host-local and loopback are not installed (containernetworking-plugins)",
        );
    }
    true
}

/// Whether `program` is installed or this knetsim has `subcommand` built in in its
/// place (flanneld, skrouterd). Prints `SKIP` (panics under `CI`) when neither.
pub fn installed_or_built_in(test: &str, program: &str, subcommand: &str) -> bool {
    on_path(program)
        || subcommands().iter().any(|s| s == subcommand)
        || skip(test, &format!("no {program} and no built-in `knetsim {subcommand}`"))
}

/// The address of pod `pod` (as `status --json` names it) in a `status --json` value.
pub fn pod_ip(status: &serde_json::Value, pod: &str) -> String {
    status["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == pod)
        .unwrap_or_else(|| panic!("{pod} not in {status:#}"))["ip"]
        .as_str()
        .unwrap()
        .to_string()
}

pub fn nix_is_root() -> bool {
    knetsim_executor::system::process::is_root()
}

/// Runs `knetsim down --name NAME` when dropped (after a failure, or always: down of
/// an emulation that is not up does nothing).
pub struct Down(pub String);

impl Drop for Down {
    fn drop(&mut self) {
        let out = knetsim(&["down", "--name", &self.0]);
        if !out.status.success() {
            eprintln!("cleanup: knetsim down --name {}: {}", self.0, text(&out));
        }
    }
}

pub fn stdout_of(argv: &[&str]) -> String {
    let out = Command::new(argv[0]).args(&argv[1..]).output().expect(argv[0]);
    assert!(out.status.success(), "{argv:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Drops address lifetimes, which count down by themselves on dynamic addresses.
pub fn without_lifetimes(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.remove("valid_life_time");
            m.remove("preferred_life_time");
            m.values_mut().for_each(without_lifetimes);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(without_lifetimes),
        _ => {}
    }
}

/// Net sysctls that count by themselves and say nothing about configuration.
const VOLATILE_SYSCTLS: &[&str] = &["net.netfilter.nf_conntrack_count"];

/// The root network namespace as the acceptance criteria compare it: links,
/// addresses, routes, policy rules, the nft ruleset and every `net.*` sysctl.
#[derive(Debug, Clone, PartialEq)]
pub struct RootSnapshot {
    pub links: String,
    pub addrs: String,
    pub routes: String,
    pub rules: String,
    pub nft: String,
    pub sysctls: BTreeMap<String, String>,
}

fn json_of(argv: &[&str]) -> String {
    let mut v: serde_json::Value = serde_json::from_str(&stdout_of(argv)).unwrap();
    without_lifetimes(&mut v);
    serde_json::to_string_pretty(&v).unwrap()
}

impl RootSnapshot {
    pub fn take() -> RootSnapshot {
        let sysctls = stdout_of(&["sysctl", "-a", "--pattern", r"^net\."])
            .lines()
            .filter_map(|l| l.split_once(" = ").or_else(|| l.split_once(" =")))
            .filter(|(k, _)| !VOLATILE_SYSCTLS.contains(k))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        RootSnapshot {
            links: json_of(&["ip", "-j", "link"]),
            addrs: json_of(&["ip", "-j", "addr"]),
            routes: json_of(&["ip", "-j", "route"]),
            rules: json_of(&["ip", "-j", "rule"]),
            nft: stdout_of(&["nft", "list", "ruleset"]),
            sysctls,
        }
    }

    /// What differs in `self` (after) from `before`. A sysctl that appeared is a
    /// difference, unless its whole family (`net.netfilter`, `net.bridge`, ...) is new:
    /// that is a kernel module loaded by the kernel on first use (nf_conntrack,
    /// br_netfilter), which creates its sysctls with defaults in every namespace.
    pub fn differences(&self, before: &RootSnapshot) -> Vec<String> {
        let mut diffs = Vec::new();
        for (what, b, a) in [
            ("ip -j link", &before.links, &self.links),
            ("ip -j addr", &before.addrs, &self.addrs),
            ("ip -j route", &before.routes, &self.routes),
            ("ip -j rule", &before.rules, &self.rules),
            ("nft list ruleset", &before.nft, &self.nft),
        ] {
            if a != b {
                diffs.push(format!("{what} changed:\n--- before\n{b}\n--- after\n{a}"));
            }
        }
        let family = |k: &str| k.split('.').take(2).collect::<Vec<_>>().join(".");
        for (k, v) in &before.sysctls {
            match self.sysctls.get(k) {
                None => diffs.push(format!("sysctl {k} is gone (was {v})")),
                Some(now) if now != v => diffs.push(format!("sysctl {k} = {now} (was {v})")),
                Some(_) => {}
            }
        }
        for (k, v) in &self.sysctls {
            if !before.sysctls.contains_key(k) {
                let fam = family(k);
                if before.sysctls.keys().any(|b| family(b) == fam) {
                    diffs.push(format!("sysctl {k} = {v} appeared"));
                } else {
                    println!("note: sysctl {k} appeared with a newly loaded module ({fam})");
                }
            }
        }
        diffs
    }

    /// Panics with every difference when the root namespace is not as it was.
    pub fn assert_same_as(&self, before: &RootSnapshot) {
        let diffs = self.differences(before);
        assert!(diffs.is_empty(), "the root namespace changed:\n{}", diffs.join("\n"));
    }
}

pub fn namespaces_of(name: &str) -> Vec<String> {
    let prefix = format!("{name}-");
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// PIDs of processes whose command line mentions `needle` (never killed here: only counted).
pub fn processes_mentioning(needle: &str) -> Vec<(u32, String)> {
    let me = std::process::id();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                found.push((pid, cmd));
            }
        }
    }
    found
}

pub fn mounts_of(name: &str) -> Vec<String> {
    let needle = format!("/run/netns/{name}-");
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_string)
        .collect()
}

/// No namespace, netns mount, state directory or daemon of emulation `name` is left.
pub fn assert_nothing_left(name: &str) {
    let state_dir = format!("/tmp/knetsim-{name}");
    assert_eq!(namespaces_of(name), Vec::<String>::new(), "namespaces left");
    assert_eq!(mounts_of(name), Vec::<String>::new(), "mounts left");
    assert!(!Path::new(&state_dir).exists(), "{state_dir} left");
    // Every daemon has the state directory in its command line.
    assert_eq!(processes_mentioning(&state_dir), Vec::new(), "processes left");
}

/// A small seeded generator (xorshift64*), so that a failing random run can be
/// replayed from its printed seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // splitmix64 of the seed: nearby seeds give unrelated sequences; never 0.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// The seed of a random test: `KNETSIM_SEED` if set, else the clock. Printed, so a
/// failure can be replayed with `KNETSIM_SEED=<seed>`.
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("KNETSIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    println!("{test}: seed {seed} (replay with KNETSIM_SEED={seed})");
    seed
}

/// Runs a program (not knetsim) and returns its output, whatever its exit status.
pub fn run(argv: &[&str]) -> Output {
    Command::new(argv[0]).args(&argv[1..]).output().expect(argv[0])
}

/// The state directory of emulation `name`.
pub fn state_dir(name: &str) -> String {
    format!("/tmp/knetsim-{name}")
}

/// Every string value of key `netns` anywhere in `v`: the namespaces an inventory plans.
fn netns_values(v: &serde_json::Value, out: &mut std::collections::BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("netns" | "switch_netns", serde_json::Value::String(s)) => {
                        out.insert(s.clone());
                    }
                    _ => netns_values(x, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| netns_values(x, out)),
        _ => {}
    }
}

/// What an inventory plans, as the live comparison needs it.
#[derive(Debug, PartialEq)]
pub struct Planned {
    /// Every namespace the inventory names (hosts, switches, pods).
    pub namespaces: std::collections::BTreeSet<String>,
    /// Pod `cluster/pod` -> (its namespace, its address).
    pub pods: BTreeMap<String, (String, String)>,
    /// Service `cluster/svc` -> (its VIP, its sorted backend addresses).
    pub services: BTreeMap<String, (String, Vec<String>)>,
    /// Cluster -> its workers' namespaces.
    pub workers: BTreeMap<String, Vec<String>>,
}

impl Planned {
    pub fn of_inventory(inv: &serde_json::Value) -> Planned {
        let mut namespaces = std::collections::BTreeSet::new();
        netns_values(inv, &mut namespaces);
        let mut pods = BTreeMap::new();
        let mut services = BTreeMap::new();
        let mut workers = BTreeMap::new();
        for c in inv["clusters"].as_array().into_iter().flatten() {
            let cluster = c["name"].as_str().unwrap_or_default().to_string();
            for p in c["pods"].as_array().into_iter().flatten() {
                if p["deleted"] == true {
                    continue;
                }
                pods.insert(
                    format!("{cluster}/{}", p["name"].as_str().unwrap_or_default()),
                    (
                        p["netns"].as_str().unwrap_or_default().to_string(),
                        p["ip"].as_str().unwrap_or_default().to_string(),
                    ),
                );
            }
            for s in c["services"].as_array().into_iter().flatten() {
                let mut backends: Vec<String> = s["endpoints"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e["ip"].as_str().map(str::to_string))
                    .collect();
                backends.sort();
                services.insert(
                    format!("{cluster}/{}", s["name"].as_str().unwrap_or_default()),
                    (s["vip"].as_str().unwrap_or_default().to_string(), backends),
                );
            }
            let ws = c["workers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|w| w["host"]["netns"].as_str().map(str::to_string))
                .collect();
            workers.insert(cluster, ws);
        }
        Planned {
            namespaces,
            pods,
            services,
            workers,
        }
    }
}

/// What `<state>/topology.toml` compiles to now (with the emulation's name).
pub fn planned_from_stored_topology(name: &str) -> Result<Planned, String> {
    let topo = format!("{}/topology.toml", state_dir(name));
    let out = tempfile::tempdir().unwrap();
    let res = knetsim(&["compile", &topo, "-o", out.path().to_str().unwrap(), "--name", name]);
    if !res.status.success() {
        return Err(format!("the stored {topo} does not compile: {}", text(&res)));
    }
    let inv = std::fs::read_to_string(out.path().join("inventory.json")).map_err(|e| e.to_string())?;
    let inv: serde_json::Value = serde_json::from_str(&inv).map_err(|e| e.to_string())?;
    Ok(Planned::of_inventory(&inv))
}

/// VIP -> sorted backends, as a worker's live `kube-proxy` table programs them.
pub fn live_services(netns: &str) -> Result<BTreeMap<String, Vec<String>>, String> {
    let out = run(&["ip", "netns", "exec", netns, "nft", "list", "table", "ip", "kube-proxy"]);
    if !out.status.success() {
        return Err(format!("nft list table ip kube-proxy in {netns}: {}", text(&out)));
    }
    let mut vips = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(rest) = line.trim().strip_prefix("ip daddr ") else {
            continue;
        };
        let vip = rest.split_whitespace().next().unwrap_or_default().to_string();
        let mut backends: Vec<String> = match (rest.find("map {"), rest.rfind('}')) {
            (Some(a), Some(b)) if b > a => rest[a + 5..b]
                .split(',')
                .filter_map(|kv| kv.split(':').nth(1))
                .map(|ip| ip.trim().to_string())
                .collect(),
            _ => rest
                .split("dnat to ")
                .nth(1)
                .and_then(|t| t.split_whitespace().next())
                .map(|ip| vec![ip.to_string()])
                .unwrap_or_default(),
        };
        backends.sort();
        vips.insert(vip, backends);
    }
    Ok(vips)
}

/// Every way the running emulation `name` differs from what its stored topology
/// (`<state>/topology.toml`) says: the stored bundle's inventory disagrees with a fresh
/// compile, a pod's namespace or address is missing, a namespace nobody plans exists,
/// a worker's kube-proxy table has a VIP or backend too many or too few. Empty = equal.
pub fn live_mismatches(name: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let planned = match planned_from_stored_topology(name) {
        Ok(p) => p,
        Err(e) => return vec![e],
    };
    let inv_path = format!("{}/bundle/inventory.json", state_dir(name));
    match std::fs::read_to_string(&inv_path)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).map_err(|e| e.to_string()))
    {
        Ok(inv) => {
            let stored = Planned::of_inventory(&inv);
            if stored != planned {
                problems.push(format!(
                    "{inv_path} does not match topology.toml compiled afresh:\nstored: {stored:?}\nfresh:  {planned:?}"
                ));
            }
        }
        Err(e) => problems.push(format!("{inv_path}: {e}")),
    }
    let live: std::collections::BTreeSet<String> = namespaces_of(name).into_iter().collect();
    for ns in live.difference(&planned.namespaces) {
        problems.push(format!(
            "namespace {ns} exists but topology.toml plans no such node (orphan)"
        ));
    }
    for ns in planned.namespaces.difference(&live) {
        problems.push(format!("namespace {ns} is planned but does not exist"));
    }
    for (pod, (ns, ip)) in &planned.pods {
        if !live.contains(ns) {
            continue;
        }
        let out = run(&["ip", "-n", ns, "-4", "-o", "addr", "show"]);
        let addrs = String::from_utf8_lossy(&out.stdout);
        if !addrs.contains(&format!(" {ip}/")) {
            problems.push(format!(
                "pod {pod}: {ns} does not have its planned address {ip}:\n{addrs}"
            ));
        }
    }
    for (cluster, workers) in &planned.workers {
        let expected: BTreeMap<String, Vec<String>> = planned
            .services
            .iter()
            .filter(|(s, _)| s.starts_with(&format!("{cluster}/")))
            .map(|(_, (vip, b))| (vip.clone(), b.clone()))
            .collect();
        for w in workers {
            match live_services(w) {
                Ok(got) if got == expected => {}
                Ok(got) => problems.push(format!(
                    "kube-proxy in {w}: VIP -> backends {got:?}, topology.toml says {expected:?}"
                )),
                Err(e) => problems.push(e),
            }
        }
    }
    problems
}

/// The inode of every namespace of emulation `name` now (to find, later, processes
/// left in one of them after it is deleted).
pub fn netns_inodes_of(name: &str) -> Vec<u64> {
    use std::os::unix::fs::MetadataExt;
    namespaces_of(name)
        .iter()
        .filter_map(|n| std::fs::metadata(Path::new("/run/netns").join(n)).ok())
        .map(|m| m.ino())
        .collect()
}

/// Processes (PID, command line) whose network namespace is one of `inodes`.
pub fn processes_in_netns(inodes: &std::collections::BTreeSet<u64>) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(link) = std::fs::read_link(e.path().join("ns/net")) else {
            continue;
        };
        let ino = link
            .to_str()
            .and_then(|l| l.strip_prefix("net:["))
            .and_then(|l| l.strip_suffix(']'))
            .and_then(|l| l.parse::<u64>().ok());
        if ino.is_some_and(|i| inodes.contains(&i)) {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            found.push((pid, String::from_utf8_lossy(&cmd).replace('\0', " ")));
        }
    }
    found
}

/// Emulation `name`'s `state.json`.
pub fn state_json(name: &str) -> serde_json::Value {
    let path = format!("{}/state.json", state_dir(name));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))).unwrap()
}

/// The PID emulation `name` recorded for process `process` (`router c0`), if any.
pub fn recorded_pid(name: &str, process: &str) -> Option<u32> {
    state_json(name)["processes"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == process)
        .and_then(|p| p["pid"].as_u64())
        .map(|p| p as u32)
}

/// Waits until `cond` holds; how long it took, or None after `within`.
pub fn wait_for(within: std::time::Duration, mut cond: impl FnMut() -> bool) -> Option<std::time::Duration> {
    let start = std::time::Instant::now();
    while start.elapsed() < within {
        if cond() {
            return Some(start.elapsed());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    None
}
