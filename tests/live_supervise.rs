//! The supervisor `knetsim up` starts, on the default topology, as root: kill -9 of one
//! process of each kind (router, flannel agent, etcd member, nginx master, a pod's
//! workload) is repaired by the supervisor without any command, within the
//! back-off plus 2 s: `status` healthy again and `knetsim test` passing, the
//! restart listed by `knetsim events`. A process killed again waits out the
//! kubelet's back-off (scaled by `KNETSIM_BACKOFF_SCALE=0.1`: 1 s). While a
//! backend's workload is dead its pod is not ready and its service's VIP sends
//! every request to the other backend; back, both answer. A deleted pod
//! namespace is re-created. The supervisor's own death shows in `status` and is
//! repaired by `knetsim repair`. `down` leaves nothing and the root namespace is as
//! it was.
//!
//! The emulation is named `s<pid>`; a drop guard runs `knetsim down --name ...`.
//! Only processes it recorded are killed, by PID from its state. Without root or a
//! needed program the test prints `SKIP: reason`, unless `CI` is set, where it
//! fails instead.

mod common;

use common::{
    assert_nothing_left, installed_or_built_in, knetsim, live_ready, recorded_pid, run, state_json, text, wait_for,
    Down, RootSnapshot,
};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

const PROGRAMS: &[&str] = &["ip", "nft", "etcd", "nginx", "ping", "curl", "sysctl"];

fn pid_of(name: &str, process: &str) -> Option<u32> {
    recorded_pid(name, process)
}

fn healthy(name: &str) -> bool {
    knetsim(&["status", "--name", name]).status.success()
}

/// The events as `knetsim events --json` lists them.
fn events(name: &str) -> Vec<Value> {
    let out = knetsim(&["events", "--name", name, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The bodies of `n` requests to `url` from `C0w1`, one line each.
fn bodies(name: &str, url: &str, n: usize) -> Vec<String> {
    let script = format!("for i in $(seq {n}); do curl -s -m 1 {url}; done");
    let out = knetsim(&["exec", "--name", name, "C0w1", "--", "sh", "-c", &script]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Whether emulation `name`'s state lists `pod` as not ready.
fn not_ready(name: &str, pod: &str) -> bool {
    state_json(name)["not_ready"]
        .as_array()
        .is_some_and(|a| a.iter().any(|p| p == pod))
}

/// The service `web` of the small topologies below.
const WEB_VIP: &str = "http://100.64.0.10:8000/";

/// Brings `text` up as emulation `name` (its file in `dir`); the guard tears it down.
fn up_topology(name: &str, topology_text: &str, dir: &std::path::Path) -> Down {
    let topology = dir.join("topology.toml");
    std::fs::write(&topology, topology_text).unwrap();
    let guard = Down(name.to_string());
    let out = knetsim(&["up", "--name", name, "--no-checks", topology.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    guard
}

#[test]
fn the_supervisor_restarts_each_kind_and_backs_off() {
    let test = "the_supervisor_restarts_each_kind_and_backs_off";
    if !live_ready(test, PROGRAMS) || !installed_or_built_in(test, "flanneld", "flanneld") {
        return;
    }
    let root_before = RootSnapshot::take();
    let name = format!("s{}", std::process::id());
    let guard = Down(name.clone());
    let out = Command::new(env!("CARGO_BIN_EXE_knetsim"))
        .args(["up", "--name", &name, "--no-checks"])
        .env("KNETSIM_BACKOFF_SCALE", "0.1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        wait_for(Duration::from_secs(20), || healthy(&name)).is_some(),
        "not healthy after up"
    );
    let supervisor = pid_of(&name, "supervisor").expect("the supervisor is recorded");

    // One of each kind; the first restart of each comes at once.
    let kinds = [
        ("router c0", "router:C0"),
        ("flanneld C0w1", "flanneld:C0w1"),
        ("etcd C0e2", "etcd:C0e2"),
        ("ingress C0/grp1", "nginx:C0/grp1"),
        ("pod C0/c4", "workload:C0/c4"),
    ];
    for (process, step) in kinds {
        let old = pid_of(&name, process).unwrap();
        run(&["kill", "-9", &old.to_string()]);
        let listed = |old: u32| {
            events(&name).iter().any(|e| {
                e["object"] == step
                    && e["source"] == "supervisor"
                    && e["reason"].as_str().unwrap().contains(&format!("(pid {old})"))
            })
        };
        // Back, healthy, and listed (the event is written once the repair is committed).
        let took = wait_for(Duration::from_secs(3), || {
            pid_of(&name, process).is_some_and(|p| p != old) && healthy(&name) && listed(old)
        });
        let took = took.unwrap_or_else(|| {
            panic!(
                "{process} not back (or not listed) within 3 s:\n{}\n{:#?}",
                text(&knetsim(&["status", "--name", &name])),
                events(&name)
            )
        });
        eprintln!("{process}: healthy again {:.2} s after kill -9", took.as_secs_f64());
    }
    let out = knetsim(&["test", "--name", &name]);
    assert!(out.status.success(), "checks fail after the restarts:\n{}", text(&out));
    let status: Value = serde_json::from_slice(&knetsim(&["status", "--name", &name, "--json"]).stdout).unwrap();
    let c4 = status["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "C0/c4")
        .unwrap()
        .clone();
    assert_eq!(c4["restarts"], 1, "{c4:#}");
    assert_eq!(c4["workload_running"], true, "{c4:#}");

    // A crash loop: the router's first back-off (1 s here) is over, so a kill is
    // restarted at once (restart 2); killed again at once, restart 3 waits out the
    // doubled back-off (2 s) counted from restart 2.
    let router_restarts = || -> Vec<Value> {
        events(&name)
            .into_iter()
            .filter(|e| e["object"] == "router:C0")
            .collect()
    };
    for (n, least_gap_ms) in [(2usize, 0u64), (3, 1800)] {
        let old = pid_of(&name, "router c0").unwrap();
        run(&["kill", "-9", &old.to_string()]);
        let took = wait_for(Duration::from_secs(5), || {
            pid_of(&name, "router c0").is_some_and(|p| p != old) && router_restarts().len() == n
        })
        .unwrap_or_else(|| panic!("router c0: restart {n} missing: {:#?}", router_restarts()));
        let restarts = router_restarts();
        let gap = restarts[n - 1]["at_ms"].as_u64().unwrap() - restarts[n - 2]["at_ms"].as_u64().unwrap();
        eprintln!(
            "router c0, restart {n}: {:.2} s after the kill, {gap} ms after restart {}",
            took.as_secs_f64(),
            n - 1
        );
        assert!(
            gap >= least_gap_ms,
            "restart {n} came {gap} ms after the previous one: {restarts:#?}"
        );
        assert!(
            restarts[n - 1]["action"]
                .as_str()
                .unwrap()
                .contains(&format!("restart {n};")),
            "{restarts:#?}"
        );
    }

    // Readiness drives endpoints: while ic0's workload is dead (in its back-off),
    // the pod is not ready and service s1's VIP sends everything to ic1; once it
    // runs again both answer. Killed again and again, the back-off grows (1, 2, 4 s)
    // until a burst of 50 requests fits in the window.
    let mut seen_out = false;
    for _ in 0..5 {
        let old = pid_of(&name, "pod C0/ic0").unwrap();
        run(&["kill", "-9", &old.to_string()]);
        assert!(
            wait_for(Duration::from_secs(3), || not_ready(&name, "C0/ic0")).is_some(),
            "ic0 never not ready"
        );
        let bodies = bodies(&name, "http://100.64.11.1:8000/", 50);
        if !not_ready(&name, "C0/ic0") {
            // Restarted before the burst ended: try again with a longer back-off.
            assert!(wait_for(Duration::from_secs(5), || pid_of(&name, "pod C0/ic0")
                .is_some_and(|p| p != old))
            .is_some());
            continue;
        }
        assert_eq!(bodies.len(), 50, "{bodies:?}");
        assert!(
            bodies.iter().all(|b| b == "S1-W3"),
            "a not-ready backend answered: {bodies:?}"
        );
        // `status` says so, as `kubectl get pods` would (unless it just came back).
        let shown = text(&knetsim(&["status", "--name", &name]));
        let line = shown
            .lines()
            .find(|l| l.starts_with("C0/ic0 "))
            .unwrap_or_default()
            .to_string();
        assert!(
            line.contains("CrashLoopBackOff") || !not_ready(&name, "C0/ic0"),
            "{shown}"
        );
        seen_out = true;
        break;
    }
    assert!(seen_out, "no burst fitted in ic0's back-off");
    assert!(
        wait_for(Duration::from_secs(10), || !not_ready(&name, "C0/ic0")
            && healthy(&name))
        .is_some(),
        "ic0 not ready again"
    );
    let bodies = bodies(&name, "http://100.64.11.1:8000/", 50);
    assert!(
        bodies.iter().any(|b| b == "S1-W2") && bodies.iter().any(|b| b == "S1-W3"),
        "{bodies:?}"
    );
    let listed = events(&name);
    assert!(
        listed
            .iter()
            .any(|e| e["object"] == "C0/ic0" && e["action"] == "endpoints left the service rules")
            && listed
                .iter()
                .any(|e| e["object"] == "C0/ic0" && e["action"] == "endpoints back in the service rules"),
        "{listed:#?}"
    );

    // A pod's namespace deleted by hand is made again.
    let netns = format!("{name}-k0_c2");
    assert!(run(&["ip", "netns", "del", &netns]).status.success());
    assert!(
        wait_for(Duration::from_secs(3), || std::path::Path::new(&format!(
            "/run/netns/{netns}"
        ))
        .exists()
            && healthy(&name))
        .is_some(),
        "{netns} not re-created"
    );

    // The supervisor's own death: seen by status, repaired by `repair`.
    run(&["kill", "-9", &supervisor.to_string()]);
    assert!(
        wait_for(Duration::from_secs(2), || !healthy(&name)).is_some(),
        "status misses the dead supervisor"
    );
    let out = knetsim(&["repair", "--name", &name]);
    assert!(
        out.status.success() && text(&out).contains("restarted the supervisor"),
        "{}",
        text(&out)
    );
    assert!(healthy(&name));
    assert_ne!(pid_of(&name, "supervisor"), Some(supervisor));
    // Any change repairs it too.
    let second = pid_of(&name, "supervisor").unwrap();
    run(&["kill", "-9", &second.to_string()]);
    assert!(wait_for(Duration::from_secs(2), || !healthy(&name)).is_some());
    let out = knetsim(&["pod", "add", "--name", &name, "C0/x1", "--worker", "w1"]);
    assert!(
        out.status.success() && text(&out).contains("restarted the supervisor"),
        "{}",
        text(&out)
    );
    assert!(healthy(&name));

    drop(guard);
    assert_nothing_left(&name);
    RootSnapshot::take().assert_same_as(&root_before);
}

const NEVER: &str = r#"[[clusters]]
name = "C0"
workers = 2
pods = [
  { name = "web1", worker = "w1", command = ["knetsim", "serve", "--text", "one", "--port", "8000"], ports = [8000] },
  { name = "web2", worker = "w2", command = ["knetsim", "serve", "--text", "two", "--port", "8000"], ports = [8000], restart_policy = "Never" },
]
services = [{ name = "web", vip = "100.64.0.10", pods = ["web1", "web2"] }]
"#;

#[test]
fn restart_policy_never_leaves_the_workload_ended_and_out_of_its_service() {
    let test = "restart_policy_never_leaves_the_workload_ended_and_out_of_its_service";
    if !live_ready(test, PROGRAMS) || !installed_or_built_in(test, "flanneld", "flanneld") {
        return;
    }
    let root_before = RootSnapshot::take();
    let name = format!("n{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let guard = up_topology(&name, NEVER, dir.path());
    let both = bodies(&name, WEB_VIP, 20);
    assert!(
        both.iter().any(|a| a == "one") && both.iter().any(|a| a == "two"),
        "{both:?}"
    );

    let (web1, web2) = (
        pid_of(&name, "pod C0/web1").unwrap(),
        pid_of(&name, "pod C0/web2").unwrap(),
    );
    run(&["kill", "-9", &web1.to_string(), &web2.to_string()]);
    assert!(
        wait_for(Duration::from_secs(5), || {
            pid_of(&name, "pod C0/web1").is_some_and(|p| p != web1)
                && not_ready(&name, "C0/web2")
                && !not_ready(&name, "C0/web1")
        })
        .is_some(),
        "web1 not restarted or web2 not out: {:#}",
        state_json(&name)
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        pid_of(&name, "pod C0/web2"),
        Some(web2),
        "a Never workload was restarted"
    );
    let one = bodies(&name, WEB_VIP, 20);
    assert_eq!(one.len(), 20, "{one:?}");
    assert!(one.iter().all(|a| a == "one"), "the ended pod still answers: {one:?}");

    // An end state, not a fault: healthy, nothing to repair, shown as such.
    let out = knetsim(&["status", "--name", &name]);
    assert!(out.status.success(), "{}", text(&out));
    let shown = text(&out);
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("pod C0/web2 ") && l.contains("Ended")),
        "{shown}"
    );
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("C0/web2 ") && l.contains("Terminated")),
        "{shown}"
    );
    let out = knetsim(&["repair", "--name", &name, "--dry-run"]);
    assert!(text(&out).contains("nothing to repair"), "{}", text(&out));

    drop(guard);
    assert_nothing_left(&name);
    RootSnapshot::take().assert_same_as(&root_before);
}

/// web1's readiness and web2's liveness are files the test creates and removes.
fn probes_topology(dir: &str) -> String {
    format!(
        r#"[[clusters]]
name = "C0"
workers = 2
pods = [
  {{ name = "web1", worker = "w1", command = ["knetsim", "serve", "--text", "one", "--port", "8000"], ports = [8000],
     readiness_probe = {{ exec = {{ command = ["test", "!", "-e", "{dir}/web1-unready"] }}, period_seconds = 1, failure_threshold = 2 }} }},
  {{ name = "web2", worker = "w2", command = ["knetsim", "serve", "--text", "two", "--port", "8000"], ports = [8000],
     readiness_probe = {{ http_get = {{ port = 8000, path = "/" }}, period_seconds = 1 }},
     liveness_probe = {{ exec = {{ command = ["test", "!", "-e", "{dir}/web2-sick"] }}, period_seconds = 1, failure_threshold = 2 }} }},
]
services = [{{ name = "web", vip = "100.64.0.10", pods = ["web1", "web2"] }}]
"#
    )
}

#[test]
fn probes_drive_readiness_and_liveness() {
    let test = "probes_drive_readiness_and_liveness";
    if !live_ready(test, PROGRAMS) || !installed_or_built_in(test, "flanneld", "flanneld") {
        return;
    }
    let root_before = RootSnapshot::take();
    let name = format!("p{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let guard = up_topology(&name, &probes_topology(&dir.path().display().to_string()), dir.path());
    let both = |a: &[String]| a.iter().any(|x| x == "one") && a.iter().any(|x| x == "two");
    assert!(
        wait_for(Duration::from_secs(5), || both(&bodies(&name, WEB_VIP, 20))).is_some(),
        "not both answering"
    );

    // web1's readiness probe fails twice: out of the service, though it runs.
    let web1 = pid_of(&name, "pod C0/web1").unwrap();
    std::fs::write(dir.path().join("web1-unready"), "").unwrap();
    let took = wait_for(Duration::from_secs(5), || not_ready(&name, "C0/web1")).expect("web1 never not ready");
    eprintln!(
        "web1 not ready {:.2} s after its probe began failing",
        took.as_secs_f64()
    );
    let only = bodies(&name, WEB_VIP, 50);
    assert_eq!(only.len(), 50, "{only:?}");
    assert!(only.iter().all(|a| a == "two"), "a not-ready pod answered: {only:?}");
    assert_eq!(pid_of(&name, "pod C0/web1"), Some(web1), "readiness must not restart");
    std::fs::remove_file(dir.path().join("web1-unready")).unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || !not_ready(&name, "C0/web1")).is_some(),
        "web1 not ready again"
    );
    assert!(both(&bodies(&name, WEB_VIP, 20)));

    // web2's liveness probe fails twice: killed and restarted, one restart more.
    let web2 = pid_of(&name, "pod C0/web2").unwrap();
    std::fs::write(dir.path().join("web2-sick"), "").unwrap();
    let took = wait_for(Duration::from_secs(6), || {
        pid_of(&name, "pod C0/web2").is_some_and(|p| p != web2)
    })
    .expect("web2 not restarted by its liveness probe");
    eprintln!(
        "web2 restarted {:.2} s after its liveness probe began failing",
        took.as_secs_f64()
    );
    std::fs::remove_file(dir.path().join("web2-sick")).unwrap();
    let listed = events(&name);
    assert!(
        listed.iter().any(|e| e["object"] == "workload:C0/web2"
            && e["reason"].as_str().unwrap().contains("liveness probe")
            && e["action"].as_str().unwrap().starts_with("killed")),
        "{listed:#?}"
    );
    assert!(wait_for(Duration::from_secs(5), || healthy(&name)
        && both(&bodies(&name, WEB_VIP, 20)))
    .is_some());
    let status: Value = serde_json::from_slice(&knetsim(&["status", "--name", &name, "--json"]).stdout).unwrap();
    let w2 = status["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "C0/web2")
        .unwrap()
        .clone();
    assert_eq!(w2["restarts"], 1, "{w2:#}");

    drop(guard);
    assert_nothing_left(&name);
    RootSnapshot::take().assert_same_as(&root_before);
}
