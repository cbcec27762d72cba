//! Live tests of `knetsim apply` across underlay changes, as root: the default
//! emulation moved to each topology variant that renumbers its hosts (single,
//! chain3) and back ends exactly like a fresh `up` of the target: same
//! `status --json` (PIDs, times and ephemeral ports aside), same nft rulesets and
//! IPv4 routes in every worker. `apply --dry-run` lists exactly the actions the
//! real apply then performs, and pods ping across workers afterwards.
//!
//! Each test uses its own emulation `a<pid><letter>` with a drop guard running
//! `knetsim down`; fresh ups for comparison reuse the name after a `down`, so
//! nothing needs renaming. Every probe runs inside the emulation through
//! `knetsim exec`. Without root or a needed program the tests print `SKIP: reason`,
//! unless `CI` is set, where they fail instead.

mod common;

use common::{assert_nothing_left, knetsim, live_ready, ok, pod_ip, stdout_of, text, Down};
use serde_json::Value;
use std::time::{Duration, Instant};

const PROGRAMS: &[&str] = &["ip", "tc", "nft", "etcd", "nginx", "python3", "ping", "curl"];

fn topology(name: &str) -> String {
    format!("{}/topologies/{name}.toml", env!("CARGO_MANIFEST_DIR"))
}

/// `status --json` (which exits 1 while the emulation is not healthy).
fn status(name: &str) -> Value {
    let out = knetsim(&["status", "--name", name, "--json"]);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("status of {name}: {e}: {}", text(&out)))
}

/// Every router link is up and every address reachable (routers re-dial after a restart).
fn settled(st: &Value) -> bool {
    st["healthy"] == true
        && st["routers"].as_array().into_iter().flatten().all(|r| {
            r["links"].as_array().into_iter().flatten().all(|l| l["up"] == true)
                && r["addresses"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .all(|a| a["reachable"] == true)
        })
}

/// `status --json` once settled (at most 20 s), without what differs between two
/// identical emulations: PIDs, times, and the ephemeral port of an accepted router link.
fn normalized_status(name: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut st = status(name);
    while !settled(&st) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        st = status(name);
    }
    assert!(settled(&st), "emulation {name} did not settle: {st:#}");
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for k in ["uptime_s", "pid", "started_at", "owner_pid", "owner_alive"] {
                    m.remove(k);
                }
                if let Some(Value::String(via)) = m.get_mut("via") {
                    if let Some((from, _port)) = via.rsplit_once(':').filter(|_| via.starts_with("interior-listener")) {
                        *via = from.to_string();
                    }
                }
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut st);
    // Listed in the order the state recorded them, which parallel starts make vary.
    for key in ["namespaces", "processes", "routers"] {
        if let Some(a) = st[key].as_array_mut() {
            a.sort_by_key(|v| v.to_string());
        }
    }
    st
}

/// `nft list ruleset` as a set: counter values dropped, and the tables, and the
/// chains, sets and maps in each table, sorted (the listing follows creation order,
/// which differs between a fresh up and a change; rules keep their order).
fn ruleset(listing: &str) -> String {
    let mut tables: Vec<(String, Vec<String>)> = Vec::new();
    for line in listing.lines() {
        let line = without_counters(line);
        if line.trim().is_empty() {
            continue;
        }
        if !line.starts_with('\t') {
            if line.starts_with("table ") {
                tables.push((line, Vec::new()));
            }
            continue;
        }
        let (_, items) = tables.last_mut().expect("a line inside a table");
        let depth = line.len() - line.trim_start_matches('\t').len();
        if (depth == 1 && line.trim() != "}") || items.is_empty() {
            items.push(line.trim().to_string());
        } else {
            let last = items.last_mut().expect("an item");
            last.push('\n');
            last.push_str(&line);
        }
    }
    for (_, items) in &mut tables {
        items.sort();
    }
    tables.sort();
    tables
        .iter()
        .map(|(t, items)| format!("{t}\n{}\n", items.join("\n")))
        .collect()
}

fn without_counters(line: &str) -> String {
    let words: Vec<&str> = line.split(' ').collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        out.push(words[i]);
        if words[i].ends_with("counter") && words.get(i + 1) == Some(&"packets") && words.get(i + 3) == Some(&"bytes") {
            i += 5;
        } else {
            i += 1;
        }
    }
    out.join(" ")
}

/// The switches' namespace: every link with its flags, bridge and peer's namespace
/// (no indices or MACs, which differ between two identical emulations), and every
/// qdisc (link shaping), sorted.
fn switches(name: &str) -> String {
    let netns = format!("{name}-knetsim-switches");
    let links = stdout_of(&["ip", "-n", &netns, "-o", "link", "show"]);
    let mut lines: Vec<String> = links
        .lines()
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let after = |key: &str| {
                words
                    .iter()
                    .position(|w| *w == key)
                    .and_then(|i| words.get(i + 1))
                    .copied()
                    .unwrap_or("-")
            };
            let ifname = words.get(1).map(|n| n.trim_end_matches(':')).unwrap_or("");
            let ifname = ifname.split('@').next().unwrap_or(ifname);
            format!(
                "link {ifname} {} master {} peer {}",
                words.get(2).copied().unwrap_or(""),
                after("master"),
                after("link-netns")
            )
        })
        .collect();
    let qdiscs = stdout_of(&["tc", "-n", &netns, "qdisc", "show"]);
    lines.extend(qdiscs.lines().map(|l| l.trim().to_string()));
    lines.sort();
    lines.join("\n")
}

/// What the acceptance compares: the normalized status, per worker its nft ruleset
/// and IPv4 routes, and the switches.
#[derive(Debug, PartialEq)]
struct Snapshot {
    status: Value,
    workers: Vec<(String, String, String)>,
    switches: String,
}

impl Snapshot {
    fn take(name: &str) -> Snapshot {
        let status = normalized_status(name);
        let mut workers = Vec::new();
        for f in status["flannel"].as_array().unwrap() {
            let w = f["worker"].as_str().unwrap().to_string();
            let nft = ok(&["exec", "--name", name, &w, "--", "nft", "list", "ruleset"]);
            let routes = ok(&["exec", "--name", name, &w, "--", "ip", "-4", "route"]);
            workers.push((w, ruleset(&nft), routes));
        }
        Snapshot {
            status,
            workers,
            switches: switches(name),
        }
    }

    /// Panics with what differs (only that: a whole snapshot is long).
    fn assert_same(&self, expected: &Snapshot, what: &str) {
        let mut diffs = Vec::new();
        if let (Value::Object(a), Value::Object(b)) = (&self.status, &expected.status) {
            for k in a.keys().chain(b.keys()) {
                if a.get(k) != b.get(k) && !diffs.iter().any(|d: &String| d.starts_with(&format!("status.{k}:"))) {
                    diffs.push(format!(
                        "status.{k}:\n  got:      {:?}\n  expected: {:?}",
                        a.get(k),
                        b.get(k)
                    ));
                }
            }
        }
        if self.workers.len() != expected.workers.len() {
            diffs.push(format!("workers: {} vs {}", self.workers.len(), expected.workers.len()));
        }
        for (got, want) in self.workers.iter().zip(&expected.workers) {
            if got != want {
                diffs.push(format!(
                    "worker {}:\n--- got\n{}\n{}\n--- expected ({})\n{}\n{}",
                    got.0, got.1, got.2, want.0, want.1, want.2
                ));
            }
        }
        if self.switches != expected.switches {
            diffs.push(format!(
                "switches:\n--- got\n{}\n--- expected\n{}",
                self.switches, expected.switches
            ));
        }
        assert!(diffs.is_empty(), "{what}:\n{}", diffs.join("\n"));
    }
}

/// `from` (a pod or host) pings `to_pod`'s address (three tries, one answer is enough).
fn assert_pings(name: &str, from: &str, to_pod: &str) {
    let ip = pod_ip(&status(name), to_pod);
    let out = knetsim(&["exec", "--name", name, from, "--", "ping", "-c3", "-i0.2", "-W1", &ip]);
    assert!(out.status.success(), "{from} -> {to_pod} ({ip}): {}", text(&out));
}

/// `apply --dry-run` then `apply` of `topology`: the dry run changes nothing, and
/// the apply performs (prints, and records as the last change) exactly its lines.
fn apply(name: &str, topology: &str) -> Duration {
    let planned: Vec<String> = ok(&["apply", topology, "--name", name, "--dry-run"])
        .lines()
        .map(str::to_string)
        .collect();
    assert!(!planned.is_empty(), "no actions to move {name} to {topology}");
    let t = Instant::now();
    let out = knetsim(&["apply", topology, "--name", name]);
    let took = t.elapsed();
    assert!(out.status.success(), "apply {topology}: {}", text(&out));
    // Each performed action is reported on stderr as `ACTION (N ms)`.
    let performed: Vec<String> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| l.rsplit_once(" (").map(|(a, _)| a.to_string()))
        .collect();
    assert_eq!(performed, planned, "apply {topology} did other than its dry run");
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("/tmp/knetsim-{name}/state.json")).unwrap()).unwrap();
    let recorded: Vec<&str> = state["last_change"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(recorded, planned);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("({} actions)", planned.len())), "{stdout}");
    println!(
        "apply {topology}: {} actions in {:.0} ms",
        planned.len(),
        took.as_secs_f64() * 1000.0
    );
    took
}

/// Default -> `variant` -> default on one emulation, each state compared with a fresh
/// `up` of the same topology; `pings` are (from, to pod) pairs across workers in the variant.
fn round_trip(test: &str, letter: char, variant_file: &str, pings: &[(&str, &str)]) {
    if !live_ready(test, PROGRAMS) {
        return;
    }
    let name = format!("a{}{letter}", std::process::id());
    let guard = Down(name.clone());
    let default = topology("default");
    let variant = std::path::Path::new(variant_file)
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap();

    ok(&["up", &default, "--name", &name]);
    let fresh_default = Snapshot::take(&name);

    apply(&name, variant_file);
    let applied_variant = Snapshot::take(&name);
    for (from, to) in pings {
        assert_pings(&name, from, to);
    }

    apply(&name, &default);
    Snapshot::take(&name).assert_same(
        &fresh_default,
        &format!("default -> {variant} -> default differs from a fresh up of default"),
    );
    assert_pings(&name, "C0/c1", "C0/c2");
    assert_pings(&name, "C1/c1", "C1/c3");
    ok(&["down", "--name", &name]);

    ok(&["up", variant_file, "--name", &name]);
    Snapshot::take(&name).assert_same(
        &applied_variant,
        &format!("default -> {variant} differs from a fresh up of {variant}"),
    );
    ok(&["down", "--name", &name]);
    drop(guard);
    assert_nothing_left(&name);
}

#[test]
fn apply_single_onto_default_and_back_ends_like_fresh_ups() {
    round_trip(
        "apply_single_onto_default_and_back_ends_like_fresh_ups",
        's',
        &topology("single"),
        &[("C0/c1", "C0/c2"), ("C0/c2", "C0/c1")],
    );
}

#[test]
fn apply_chain3_onto_default_and_back_ends_like_fresh_ups() {
    round_trip(
        "apply_chain3_onto_default_and_back_ends_like_fresh_ups",
        'c',
        &topology("chain3"),
        &[("C0w1", "C0/web"), ("C2w1", "C2/c1"), ("C1w2", "C1/c1")],
    );
}

/// 4 clusters of 8 workers, 3-member etcds, TLS router links and link shaping
/// (about 30 s here).
#[test]
fn apply_large_onto_default_and_back_ends_like_fresh_ups() {
    round_trip(
        "apply_large_onto_default_and_back_ends_like_fresh_ups",
        'l',
        &topology("large"),
        &[("C0/db1", "C0/c4"), ("C1/c1", "C1/c8"), ("C2/c2", "C2/c1")],
    );
}

#[test]
fn rulesets_compare_as_sets_of_tables_and_chains_keeping_rule_order() {
    let a = "table ip nat {\n\tchain POSTROUTING {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t\tip saddr 11.10.0.2 counter packets 3 bytes 180 jump CNI-a\n\t}\n\tchain CNI-a {\n\t\tip daddr 11.10.0.0/20 counter packets 0 bytes 0 accept\n\t}\n}\ntable ip kube-proxy {\n\tcomment \"x\"\n\tchain services {\n\t}\n}\n";
    let b = "table ip kube-proxy {\n\tcomment \"x\"\n\tchain services {\n\t}\n}\ntable ip nat {\n\tchain CNI-a {\n\t\tip daddr 11.10.0.0/20 counter packets 7 bytes 420 accept\n\t}\n\tchain POSTROUTING {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t\tip saddr 11.10.0.2 counter packets 0 bytes 0 jump CNI-a\n\t}\n}\n";
    assert_eq!(ruleset(a), ruleset(b));
    assert!(
        ruleset(a).contains("ip daddr 11.10.0.0/20 counter accept"),
        "{}",
        ruleset(a)
    );
    let other_rule = b.replace("11.10.0.0/20", "11.10.16.0/20");
    assert_ne!(ruleset(a), ruleset(&other_rule));
    let swapped = "table ip nat {\n\tchain POSTROUTING {\n\t\tip saddr 11.10.0.3 jump CNI-b\n\t\tip saddr 11.10.0.2 jump CNI-a\n\t}\n}\n";
    let ordered = "table ip nat {\n\tchain POSTROUTING {\n\t\tip saddr 11.10.0.2 jump CNI-a\n\t\tip saddr 11.10.0.3 jump CNI-b\n\t}\n}\n";
    assert_ne!(ruleset(swapped), ruleset(ordered), "rule order matters");
}
