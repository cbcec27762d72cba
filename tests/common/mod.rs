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
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
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
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
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
/// addresses, routes, the nft ruleset and every `net.*` sysctl.
#[derive(Debug, Clone, PartialEq)]
pub struct RootSnapshot {
    pub links: String,
    pub addrs: String,
    pub routes: String,
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
