//! NetworkPolicy, live, as root. First the upstream e2e cases of `tests/netpol/`
//! (base.toml plus one case each, see its README): one emulation is brought up and
//! moved from case to case with `knetsim apply`, and each case's truth tables are
//! probed (`[[checks]] matrix`: a TCP connect from every pod to every pod). Then the
//! policies are all removed (the tables leave the workers, everything connects).
//! Second, `topologies/policies.toml`: label-selected service backends reached
//! through the VIP (policy after DNAT), a host source that no pod selector matches,
//! and a live `pod add` that a default-deny policy covers at once.
//!
//! Emulations are named `np<pid>` / `pp<pid>`; a drop guard runs `knetsim down`.
//! Without root or a needed program the tests print `SKIP: reason`, unless `CI` is
//! set, where they fail instead.

mod common;

use common::{assert_nothing_left, knetsim, live_ready, ok, text, Down, RootSnapshot};
use serde_json::Value;
use std::path::Path;

const PROGRAMS: &[&str] = &["ip", "nft", "etcd", "curl"];

fn cases() -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/netpol/cases");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

/// `knetsim test --json` once: the failed checks with their details.
fn failed_checks(name: &str) -> Vec<String> {
    let out = knetsim(&["test", "--name", name, "--json", "--settle", "2"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["result"] != "pass")
        .map(|c| format!("{}: {}", c["name"], c["detail"].as_str().unwrap_or_default()))
        .collect()
}

fn tables_in(netns: &str) -> String {
    common::stdout_of(&["ip", "netns", "exec", netns, "nft", "list", "tables"])
}

#[test]
fn upstream_netpol_cases_hold_their_truth_tables() {
    let test = "upstream_netpol_cases_hold_their_truth_tables";
    if !live_ready(test, PROGRAMS) {
        return;
    }
    let root_before = RootSnapshot::take();
    let name = format!("np{}", std::process::id());
    let dir = tempfile_dir(&name);
    let base = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/netpol/base.toml")).unwrap();
    let cases = cases();
    assert!(cases.len() >= 20, "at least 20 upstream cases, found {}", cases.len());
    let guard = Down(name.clone());
    let topology = dir.join("topology.toml");
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let text_of_case = std::fs::read_to_string(case).unwrap();
        std::fs::write(&topology, format!("{base}\n{text_of_case}")).unwrap();
        let verb = if i == 0 { "up" } else { "apply" };
        let mut args = vec![verb, "--name", &name];
        if i == 0 {
            args.push("--no-checks");
        }
        args.push(topology.to_str().unwrap());
        let out = knetsim(&args);
        assert!(out.status.success(), "{verb} {}: {}", case.display(), text(&out));
        let file = case.file_name().unwrap().to_string_lossy().to_string();
        failures.extend(failed_checks(&name).into_iter().map(|f| format!("{file}: {f}")));
    }
    assert!(
        failures.is_empty(),
        "cases whose truth table differs:\n{}",
        failures.join("\n")
    );

    // Every policy removed: the tables leave both workers and every pair connects.
    std::fs::write(&topology, &base).unwrap();
    ok(&["apply", "--name", &name, topology.to_str().unwrap()]);
    for w in ["C0w1", "C0w2"] {
        let tables = tables_in(&format!("{name}-{w}"));
        assert!(!tables.contains("network-policy"), "{w}: {tables}");
    }
    let out = knetsim(&["test", "--name", &name, "--matrix", "--ports", "80,81", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
    for table in v.as_array().unwrap() {
        let all = table["reachable"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().unwrap());
        assert!(all.clone().all(|c| c == true), "{table}");
        assert_eq!(all.count(), 81);
    }
    drop(guard);
    assert_nothing_left(&name);
    RootSnapshot::take().assert_same_as(&root_before);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn policies_topology_applies_after_dnat_and_covers_new_pods() {
    let test = "policies_topology_applies_after_dnat_and_covers_new_pods";
    if !live_ready(test, PROGRAMS) {
        return;
    }
    let name = format!("pp{}", std::process::id());
    let topology = Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/policies.toml");
    let guard = Down(name.clone());
    // `up` runs the topology's checks: via the service VIP, across namespaces, from a
    // host, and its matrix; it fails if any does.
    let out = knetsim(&["up", "--name", &name, topology.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    // One table per worker, each with only its own pods' sets.
    for (w, own, other) in [("C0w1", "11.10.0.3", "11.10.16.2"), ("C0w2", "11.10.16.2", "11.10.0.3")] {
        let rules = common::stdout_of(&[
            "ip",
            "netns",
            "exec",
            &format!("{name}-{w}"),
            "nft",
            "list",
            "table",
            "ip",
            "network-policy",
        ]);
        let isolated = rules.split("set egress-isolated").next().unwrap();
        assert!(isolated.contains(own) && !isolated.contains(other), "{w}:\n{rules}");
    }
    // ops/probe (on C0w2) may only send DNS, yet its own worker is always reachable (as
    // Kubernetes defines it); another worker is not.
    let ping = |to: &str| {
        knetsim(&[
            "exec",
            "--name",
            &name,
            "C0/ops/probe",
            "--",
            "ping",
            "-c",
            "1",
            "-W",
            "1",
            to,
        ])
    };
    // Mininet numbering: C0e1 10.0.0.1, C0w1 10.0.0.2, C0w2 10.0.0.3.
    let out = ping("10.0.0.3");
    assert!(out.status.success(), "its own worker: {}", text(&out));
    let out = ping("10.0.0.2");
    assert!(!out.status.success(), "another worker: {}", text(&out));

    // Through a service VIP the policy judges the backend kube-proxy picked: db (on
    // C0w1) admits api (C0w2) and refuses web (C0w1, the same bridge), as directly.
    ok(&[
        "svc",
        "add",
        "--name",
        &name,
        "C0/shop/db",
        "--vip",
        "100.64.30.1",
        "--pods",
        "db",
        "--port",
        "8080",
    ]);
    let via_vip = |pod: &str| curl_from(&name, pod, "http://100.64.30.1:8080/");
    let out = via_vip("C0/shop/api");
    assert!(out.status.success() && text_of(&out).contains("db"), "{}", text(&out));
    let out = via_vip("C0/shop/web");
    assert!(!out.status.success(), "web reached db through its VIP: {}", text(&out));

    // A host is no pod, but an ipBlock takes it: allow C0w2's address on the pod network
    // (its flannel.<vni> address, the source of what it sends to pods elsewhere).
    let original = std::fs::read_to_string(&topology).unwrap();
    let peers = "from = [{ namespace_selector = {} }], ports = [{ port = \"http\" }]";
    assert!(original.contains(peers));
    let with_host = original
        .replace(peers, "from = [{ namespace_selector = {} }, { ip_block = { cidr = \"11.10.16.0/32\" } }], ports = [{ port = \"http\" }]")
        .replace("expect = \"failure\"\ntimeout = 1\n\n[[checks]]\nname = \"who", "timeout = 1\n\n[[checks]]\nname = \"who");
    let dir = tempfile_dir(&name);
    let edited = dir.join("policies.toml");
    std::fs::write(&edited, with_host).unwrap();
    ok(&["apply", "--name", &name, edited.to_str().unwrap()]);
    let status: Value = serde_json::from_str(&ok(&["status", "--name", &name, "--json"])).unwrap();
    let web = common::pod_ip(&status, "C0/shop/web");
    let out = curl_from(&name, "C0w2", &format!("http://{web}:8080/"));
    assert!(out.status.success() && text_of(&out).contains("web"), "{}", text(&out));
    let out = curl_from(&name, "C0e1", &format!("http://{web}:8080/"));
    assert!(!out.status.success(), "C0e1 is outside the block: {}", text(&out));
    let _ = std::fs::remove_dir_all(&dir);

    // A pod added live to `shop` is covered by its default-deny at once: c1 cannot
    // reach it, though it listens; one of the same namespace labelled app=web can.
    ok(&[
        "pod",
        "add",
        "--name",
        &name,
        "C0/shop/extra",
        "--worker",
        "w2",
        "--port",
        "8080",
        "--",
        "knetsim",
        "serve",
        "--text",
        "extra",
        "--port",
        "8080",
    ]);
    let status: Value = serde_json::from_str(&ok(&["status", "--name", &name, "--json"])).unwrap();
    let extra = common::pod_ip(&status, "C0/shop/extra");
    let url = format!("http://{extra}:8080/");
    let from = |pod: &str| curl_from(&name, pod, &url);
    let out = from("C0/c1");
    assert!(!out.status.success(), "c1 reached the new pod: {}", text(&out));
    let out = from("C0/shop/api");
    assert!(!out.status.success(), "api reached the new pod: {}", text(&out));
    // Its own worker listens to it: a connect from itself always works (loopback).
    let out = from("C0/shop/extra");
    assert!(out.status.success(), "{}", text(&out));
    drop(guard);
    assert_nothing_left(&name);
}

/// `curl` of `url` from `node` of emulation `name`, 2 s at most.
fn curl_from(name: &str, node: &str, url: &str) -> std::process::Output {
    knetsim(&["exec", "--name", name, node, "--", "curl", "-s", "-m", "2", url])
}

fn text_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn tempfile_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("knetsim-test-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
