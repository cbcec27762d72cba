//! Live test of link impairments, as root: `loss = 100` is how users cut a link, and
//! it must come up (issue 9: nft refused `numgen random mod 10000 < 10000`), drop
//! everything across the cut, and stop dropping when it is taken out again. The
//! emulation is named `t<pid>x`, a drop guard runs `knetsim down` if the test fails
//! half-way, and every ping runs inside the emulation's namespaces (`knetsim exec`).
//! Without root or a needed program it prints `SKIP: reason` (fails under `CI`).

mod common;

use common::{
    assert_nothing_left, installed_or_built_in, knetsim, nix_is_root, ok, on_path, skip, stdout_of, text, Down,
};
use std::time::{Duration, Instant};

/// Two clusters of one etcd and one worker; C0's switch uplink (C0s0 to the top
/// switch) is cut, so each cluster still reaches its own etcd and comes up.
const CUT: &str = r#"
[[clusters]]
name = "C0"
etcd = 1
workers = 1

[[clusters]]
name = "C1"
etcd = 1
workers = 1

[[underlay.impairments]]
uplink = "C0s0"
loss = 100
"#;

fn ready_or_skip(test: &str) -> bool {
    if !nix_is_root() {
        return skip(test, "needs root");
    }
    if let Some(p) = ["ip", "tc", "nft", "etcd", "ping"].into_iter().find(|p| !on_path(p)) {
        return skip(test, &format!("`{p}` is not installed"));
    }
    installed_or_built_in(test, "flanneld", "flanneld")
}

/// The underlay address of `host` from `up`'s summary (`C0w1   worker   NS   10.0.0.2/8 ...`).
fn address_of(summary: &str, host: &str) -> String {
    summary
        .lines()
        .find(|l| l.split_whitespace().next() == Some(host))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|cidr| cidr.split('/').next())
        .unwrap_or_else(|| panic!("no address of {host} in\n{summary}"))
        .to_string()
}

/// Whether one ping from `from` to `ip` is answered within `wait` seconds.
fn pings(name: &str, from: &str, ip: &str, wait: &str) -> bool {
    knetsim(&["exec", "--name", name, from, "--", "ping", "-c1", "-W", wait, ip])
        .status
        .success()
}

#[test]
fn loss_100_on_an_uplink_cuts_it_and_taking_it_out_reopens_it() {
    let test = "loss_100_on_an_uplink_cuts_it_and_taking_it_out_reopens_it";
    if !ready_or_skip(test) {
        return;
    }
    let started = Instant::now();
    let name = format!("t{}x", std::process::id());
    let tmp = tempfile::tempdir().unwrap();
    let cut = tmp.path().join("cut.toml");
    let open = tmp.path().join("open.toml");
    std::fs::write(&cut, CUT).unwrap();
    let without = CUT.split("[[underlay.impairments]]").next().unwrap();
    std::fs::write(&open, without).unwrap();
    let (cut, open) = (cut.to_str().unwrap(), open.to_str().unwrap());
    let guard = Down(name.clone());

    let out = knetsim(&["up", cut, "--name", &name, "--no-checks"]);
    assert!(out.status.success(), "up with loss = 100: {}", text(&out));
    let summary = String::from_utf8_lossy(&out.stdout).into_owned();
    let (c0w1, c0e1, c1w1) = (
        address_of(&summary, "C0w1"),
        address_of(&summary, "C0e1"),
        address_of(&summary, "C1w1"),
    );

    // Without netem the cut is an nft drop of every packet, with no random share.
    let switches = format!("{name}-knetsim-switches");
    let netem = stdout_of(&["tc", "-n", &switches, "qdisc", "show"]);
    if !netem.contains("netem") {
        let rules = stdout_of(&["ip", "netns", "exec", &switches, "nft", "list", "ruleset"]);
        assert!(
            rules.contains("knetsim-impair") && rules.contains("drop") && !rules.contains("numgen"),
            "no unconditional drop in\n{rules}"
        );
    }

    // Across the cut nothing passes, either way; inside each cluster everything does.
    assert!(!pings(&name, "C0w1", &c1w1, "1"), "C0w1 -> C1w1 crossed the cut");
    assert!(!pings(&name, "C1w1", &c0w1, "1"), "C1w1 -> C0w1 crossed the cut");
    assert!(pings(&name, "C0w1", &c0e1, "2"), "C0w1 -> C0e1, beside the cut, failed");

    // Without the impairment the same pings succeed (neighbours may still be failed: retry).
    let out = knetsim(&["apply", open, "--name", &name]);
    assert!(out.status.success(), "apply without the impairment: {}", text(&out));
    let reopened = (0..3).any(|_| pings(&name, "C0w1", &c1w1, "2"));
    assert!(reopened, "C0w1 -> C1w1 still fails without the impairment");
    assert!(
        pings(&name, "C1w1", &c0w1, "2"),
        "C1w1 -> C0w1 fails without the impairment"
    );

    // Cut again by a live change (apply, not up).
    let out = knetsim(&["apply", cut, "--name", &name]);
    assert!(out.status.success(), "apply with loss = 100: {}", text(&out));
    assert!(
        !pings(&name, "C0w1", &c1w1, "1"),
        "C0w1 -> C1w1 crossed the re-applied cut"
    );

    ok(&["down", "--name", &name]);
    assert_nothing_left(&name);
    drop(guard);
    let took = started.elapsed();
    println!("{test}: {took:?}");
    assert!(took < Duration::from_secs(15), "took {took:?}");
}

/// One cluster, one worker, one pod: enough for `pod add` and `svc add` to a running emulation.
const SMALL: &str = r#"
[[clusters]]
name = "C0"
etcd = 1
workers = 1
pods = [{ name = "c1", worker = "w1" }]
"#;

#[test]
fn port_0_and_vips_at_the_cidrs_edges_are_refused_by_live_changes_and_change_nothing() {
    let test = "port_0_and_vips_at_the_cidrs_edges_are_refused_by_live_changes_and_change_nothing";
    if !ready_or_skip(test) || !common::live_ready(test, &[]) {
        return;
    }
    let name = format!("t{}v", std::process::id());
    let tmp = tempfile::tempdir().unwrap();
    let small = tmp.path().join("small.toml");
    std::fs::write(&small, SMALL).unwrap();
    let guard = Down(name.clone());
    ok(&["up", small.to_str().unwrap(), "--name", &name, "--no-checks"]);
    let topology = format!("/tmp/knetsim-{name}/topology.toml");
    let before = std::fs::read_to_string(&topology).unwrap();

    // A refused change returns at once, not after a 30 s wait for port 0.
    let t = Instant::now();
    let out = knetsim(&["pod", "add", "C0/p0", "--worker", "w1", "--port", "0", "--name", &name]);
    assert!(!out.status.success(), "pod add --port 0: {}", text(&out));
    assert!(text(&out).contains("1..=65535"), "{}", text(&out));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());

    for (vip, says) in [
        ("100.64.0.0", "is the network address of the service CIDR 100.64.0.0/16"),
        (
            "100.64.255.255",
            "is the broadcast address of the service CIDR 100.64.0.0/16",
        ),
    ] {
        let out = knetsim(&["svc", "add", "C0/x", "--vip", vip, "--pods", "c1", "--name", &name]);
        assert!(!out.status.success(), "svc add --vip {vip}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("VIP {vip} {says}")), "{err}");
        assert!(!err.contains("outside"), "{err}");
    }
    assert_eq!(
        std::fs::read_to_string(&topology).unwrap(),
        before,
        "a refused change changed the topology"
    );
    assert!(!common::namespaces_of(&name).iter().any(|n| n.contains("p0")));

    ok(&["down", "--name", &name]);
    assert_nothing_left(&name);
    drop(guard);
}
