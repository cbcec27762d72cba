//! `knetsim graph --live` of a running default topology (without ingress; the routers stay,
//! for their link): the picture carries the pods' real addresses (as the kernel has them on
//! their eth0), the subnets the flannel agents wrote, the services' VIPs with a backend line
//! to each endpoint pod, and the router link up; taking the kube-proxy table out of a worker
//! turns its cluster's services red. `--format svg` is Graphviz's SVG.
//!
//! Root only; `SKIP: reason` without root or a needed program, unless `CI` is set (then it
//! fails). Unique `--name`, and a drop guard running `knetsim down`.

mod common;

use common::{installed_or_built_in, knetsim, live_ready, on_path, skip, stdout_of, text, Down};
use serde_json::Value;
use std::time::{Duration, Instant};

fn can_run(test: &str) -> bool {
    live_ready(test, &["ip", "nft", "etcd"])
        && installed_or_built_in(test, "flanneld", "flanneld")
        && installed_or_built_in(test, "skrouterd", "router")
}

fn graph(name: &str, format: &str) -> String {
    let out = knetsim(&["graph", "--live", "--name", name, "--format", format]);
    assert!(out.status.success(), "graph --live --format {format}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn items<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v[key].as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("no {key} in {v}"))
}

/// The IPv4 addresses on eth0 of a namespace, as the kernel has them.
fn eth0_addresses(netns: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(&stdout_of(&[
        "ip", "-n", netns, "-j", "-4", "addr", "show", "dev", "eth0",
    ]))
    .expect("ip -j is JSON");
    v.as_array()
        .into_iter()
        .flatten()
        .flat_map(|l| items(l, "addr_info"))
        .map(|a| str_of(a, "local").to_string())
        .collect()
}

#[test]
fn the_live_graph_shows_real_addresses_subnets_services_and_router_links() {
    if !can_run("the_live_graph_shows_real_addresses_subnets_services_and_router_links") {
        return;
    }
    let name = format!("g{}", std::process::id());
    let _down = Down(name.clone());
    let out = knetsim(&["up", "--skip", "ingress", "--name", &name]);
    assert!(out.status.success(), "up: {}", text(&out));
    let state = format!("/tmp/knetsim-{name}");
    let inv: Value = serde_json::from_str(&std::fs::read_to_string(format!("{state}/bundle/inventory.json")).unwrap())
        .expect("inventory");

    // The routers' link comes up a moment after `up`: wait for the picture to show it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let dot = loop {
        let dot = graph(&name, "dot");
        if dot.contains("link cost 1 up") || Instant::now() > deadline {
            break dot;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(dot.contains("label=\"emulation "), "a live title:\n{dot}");
    assert!(dot.contains("[label=\"link cost 1 up\""), "router link up:\n{dot}");
    assert!(
        !dot.contains("#d00000"),
        "nothing is broken in a fresh emulation:\n{dot}"
    );

    let mut pods = 0;
    for c in items(&inv, "clusters") {
        let cluster = str_of(c, "name");
        for p in items(c, "pods") {
            let addrs = eth0_addresses(str_of(p, "netns"));
            assert_eq!(addrs.len(), 1, "{p}: {addrs:?}");
            let label = format!("\"{cluster}/{}\\n{}\"", str_of(p, "name"), addrs[0]);
            assert!(dot.contains(&label), "pod box {label}:\n{dot}");
            pods += 1;
        }
        for w in items(c, "workers") {
            let host = str_of(&w["host"], "name");
            let env = std::fs::read_to_string(format!("{state}/{host}/flannel-subnet.env")).expect("subnet file");
            let subnet = env
                .lines()
                .find_map(|l| l.strip_prefix("FLANNEL_SUBNET="))
                .expect("FLANNEL_SUBNET");
            let label = format!("\"{host}\\n{}\\nflannel {subnet}\"", str_of(&w["host"], "ip"));
            assert!(dot.contains(&label), "worker box {label}:\n{dot}");
        }
        for s in items(c, "services") {
            let label = format!("\"svc {}\\n{}\"", str_of(s, "name"), str_of(s, "vip"));
            assert!(dot.contains(&label), "service box {label}:\n{dot}");
        }
    }
    assert_eq!(pods, 11, "the default topology's pods");
    // vip (2 endpoints), s1 (2), s2 (2) in C0, vip (2) in C1: one line per endpoint pod.
    assert_eq!(dot.matches("[label=\"backend\"").count(), 8, "{dot}");

    // Mermaid shows the same facts.
    let mermaid = graph(&name, "mermaid");
    assert!(mermaid.starts_with("---\ntitle:"), "{mermaid}");
    assert!(mermaid.contains("svc vip<br/>100.64.10.1"), "{mermaid}");

    if on_path("dot") {
        let svg = graph(&name, "svg");
        assert!(svg.starts_with("<?xml"), "{}", &svg[..svg.len().min(200)]);
        assert!(
            svg.contains("<svg") && svg.contains("100.64.10.1"),
            "an SVG of the picture"
        );
    } else {
        skip("the_live_graph (svg)", "Graphviz's `dot` is not installed");
    }

    // The services are read from the live ruleset: without C0w1's kube-proxy table, C0's
    // services are drawn unprogrammed and red, with no backend lines.
    let netns = format!("{name}-C0w1");
    stdout_of(&[
        "ip",
        "netns",
        "exec",
        &netns,
        "nft",
        "delete",
        "table",
        "ip",
        "kube-proxy",
    ]);
    let dot = graph(&name, "dot");
    assert!(
        dot.contains("\"svc vip\\n100.64.10.1\\nnot programmed\", color=\"#d00000\""),
        "{dot}"
    );
    assert_eq!(
        dot.matches("[label=\"backend\"").count(),
        2,
        "only C1's service:\n{dot}"
    );
}

#[test]
fn live_needs_a_running_emulation_and_no_topology_file() {
    let name = format!("g{}none", std::process::id());
    let out = knetsim(&["graph", "--live", "--name", &name]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not up"), "{}", text(&out));
    let out = knetsim(&["graph", "--live", "topologies/default.toml"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot be used with"),
        "{}",
        text(&out)
    );
}
