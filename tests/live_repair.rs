//! `knetsim apply` with nothing edited (and `knetsim repair`) on the default topology, as
//! root: one fault of each kind (kill -9 of a router, a flannel agent, an etcd
//! member, nginx's master and a pod's workload; `nft delete table` inside a worker;
//! `ip netns del` of a pod's namespace), then `repair` brings everything back:
//! `status` healthy, `knetsim test` passes, the pod keeps its address, the etcd
//! member keeps its data, nginx's orphaned worker is gone. A host's namespace
//! deleted by hand is refused with a clear message and changes nothing; `down`
//! still leaves nothing and the root namespace is as it was.
//!
//! The emulation is named `r<pid>`; a drop guard runs `knetsim down --name ...`.
//! Faults are made only inside its namespaces, and only processes it recorded are
//! killed (by PID from its state). Without root or a needed program the test prints
//! `SKIP: reason`, unless `CI` is set, where it fails instead.

mod common;

use common::{
    assert_nothing_left, installed_or_built_in, knetsim, live_ready, ok, pod_ip, recorded_pid, run, state_dir, text,
    Down, RootSnapshot,
};
use serde_json::Value;
use std::time::{Duration, Instant};

const PROGRAMS: &[&str] = &["ip", "nft", "etcd", "nginx", "ping", "curl", "sysctl"];

/// The recorded PID of `process` (as `status` names it).
fn pid_of(name: &str, process: &str) -> u32 {
    recorded_pid(name, process).unwrap_or_else(|| panic!("no process {process} in the state"))
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
}

/// Children of `pid` (nginx's workers of its master).
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| s.rsplit(')').next()?.split_whitespace().nth(1)?.parse::<u32>().ok())
                == Some(pid)
        })
        .collect()
}

/// `status --json` once healthy (routers relink within seconds), else the last answer.
fn healthy_status(name: &str, within: Duration) -> (bool, Value) {
    let start = Instant::now();
    loop {
        let out = knetsim(&["status", "--name", name, "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if out.status.success() || start.elapsed() > within {
            return (out.status.success(), v);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn repair_brings_back_one_fault_of_each_kind() {
    let test = "repair_brings_back_one_fault_of_each_kind";
    if !live_ready(test, PROGRAMS) || !installed_or_built_in(test, "flanneld", "flanneld") {
        return;
    }
    let root_before = RootSnapshot::take();
    let name = format!("r{}", std::process::id());
    let guard = Down(name.clone());
    // Without the supervisor, which would repair the faults before `repair` does.
    ok(&["up", "--name", &name, "--no-checks", "--no-supervise"]);
    let (healthy, status) = healthy_status(&name, Duration::from_secs(20));
    assert!(healthy, "not healthy after up: {status:#}");
    let c1_ip = pod_ip(&status, "C0/c1");

    let out = knetsim(&["repair", "--name", &name, "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("nothing to repair"), "{}", text(&out));

    // One fault of each kind, inside the emulation only.
    let nginx = pid_of(&name, "ingress C0/grp1");
    let nginx_workers = children(nginx);
    assert!(!nginx_workers.is_empty(), "nginx has no worker");
    for p in [
        "router c0",
        "flanneld C0w1",
        "etcd C0e2",
        "ingress C0/grp1",
        "pod C0/c4",
    ] {
        run(&["kill", "-9", &pid_of(&name, p).to_string()]);
    }
    let etcd_data = format!("{}/C0e2.etcd/member", state_dir(&name));
    assert!(std::path::Path::new(&etcd_data).is_dir(), "{etcd_data}");
    let w2 = format!("{name}-C0w2");
    let out = run(&["ip", "netns", "exec", &w2, "nft", "delete", "table", "ip", "kube-proxy"]);
    assert!(out.status.success(), "{}", text(&out));
    let c1_netns = format!("{name}-k0_c1");
    let out = run(&["ip", "netns", "del", &c1_netns]);
    assert!(out.status.success(), "{}", text(&out));
    std::thread::sleep(Duration::from_millis(300));
    // nginx's workers outlive their master: the seed's "dead, yet still serving".
    assert!(
        nginx_workers.iter().any(|&w| alive(w)),
        "no orphaned nginx worker to find"
    );

    let out = knetsim(&["status", "--name", &name]);
    assert!(!out.status.success(), "status must see the faults: {}", text(&out));
    assert!(
        text(&out).contains(&format!("knetsim repair --name {name}")),
        "{}",
        text(&out)
    );

    // A dry run names every fault and what it would do, and changes nothing.
    let out = knetsim(&["repair", "--name", &name, "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    for expected in [
        format!("found: namespace {c1_netns} is gone"),
        "found: router:C0:".to_string(),
        "found: flanneld:C0w1:".to_string(),
        "found: etcd:C0e2:".to_string(),
        "found: nginx:C0/grp1:".to_string(),
        "found: workload:C0/c4:".to_string(),
        format!("found: nft:C0w2: table ip kube-proxy missing in {w2}"),
        "remove cni-add:C0/c1: CNI DEL".to_string(),
        "add cni-add:C0/c1: CNI ADD".to_string(),
        "change router:C0: restart router c0".to_string(),
        "change nft:C0w2: nft -f".to_string(),
    ] {
        assert!(said.contains(&expected), "dry run lacks `{expected}`:\n{said}");
    }
    assert!(
        !std::path::Path::new(&format!("/run/netns/{c1_netns}")).exists(),
        "the dry run changed something"
    );

    // `apply` of the running topology, edited in nothing, repairs it all.
    let topology = format!("{}/topology.toml", state_dir(&name));
    let out = knetsim(&["apply", "--name", &name, &topology]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("repaired in"), "{}", text(&out));
    let (healthy, status) = healthy_status(&name, Duration::from_secs(20));
    assert!(healthy, "not healthy after repair: {status:#}");
    assert_eq!(pod_ip(&status, "C0/c1"), c1_ip, "the re-created pod keeps its address");
    let out = knetsim(&["test", "--name", &name]);
    assert!(out.status.success(), "checks fail after repair:\n{}", text(&out));
    // The orphaned nginx worker was stopped with its dead master; the etcd member
    // rejoined on its own data.
    assert!(
        nginx_workers.iter().all(|&w| !alive(w)),
        "an orphaned nginx worker still runs"
    );
    assert!(std::path::Path::new(&etcd_data).is_dir(), "etcd's data directory went");
    let out = run(&[
        "grep",
        "-c",
        "cluster ID mismatch",
        &format!("{}/C0e2.log", state_dir(&name)),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0",
        "etcd C0e2 did not rejoin as itself"
    );

    // Nothing left to do, whether asked with `repair` or with `apply` of the running topology.
    let out = knetsim(&["repair", "--name", &name]);
    assert!(text(&out).contains("nothing to repair"), "{}", text(&out));
    let out = knetsim(&["apply", "--name", &name, &topology]);
    assert!(
        out.status.success() && text(&out).contains("nothing to repair"),
        "{}",
        text(&out)
    );

    // A workload killed again is repaired by `repair`.
    run(&["kill", "-9", &pid_of(&name, "pod C0/c4").to_string()]);
    std::thread::sleep(Duration::from_millis(200));
    let out = knetsim(&["repair", "--name", &name]);
    assert!(
        out.status.success() && text(&out).contains("restart pod C0/c4"),
        "{}",
        text(&out)
    );
    assert!(healthy_status(&name, Duration::from_secs(10)).0);

    // A host's namespace is not repaired in place: refused, nothing changed.
    let w3 = format!("{name}-C0w3");
    let out = run(&["ip", "netns", "del", &w3]);
    assert!(out.status.success(), "{}", text(&out));
    let before = std::fs::read_to_string(format!("{}/state.json", state_dir(&name))).unwrap();
    let out = knetsim(&["repair", "--name", &name]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("namespace {w3} is gone")) && text(&out).contains("knetsim down"),
        "{}",
        text(&out)
    );
    let after = std::fs::read_to_string(format!("{}/state.json", state_dir(&name))).unwrap();
    assert_eq!(before, after, "a refused repair changed the state");

    drop(guard);
    assert_nothing_left(&name);
    RootSnapshot::take().assert_same_as(&root_before);
}
