//! Live tests of the Linux system, as root: they create real namespaces (all named
//! `t<pid>...`, so they never clash with anything) and check that nothing is left
//! and that the root namespace is unchanged. Without root they print `SKIP: ...`,
//! unless `CI` is set, where they fail instead.

mod common;

use common::{run, stdout};
use knetsim_compiler::plan::{AddAddress, AddRoute, Op, Plan, Probe, SetSysctl};
use knetsim_compiler::{Bundle, CompileOptions, Source};
use knetsim_executor::engine::{apply_with, teardown, Event, Options};
use knetsim_executor::state::{self, StateFile};
use knetsim_executor::system::linux::{self, LinuxSystem};
use knetsim_executor::system::{Pid, System};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: needs root, and CI is set");
    }
    println!("SKIP: {test}: needs root");
    false
}

/// Drops address lifetimes, which count down by themselves on dynamic addresses.
fn without_lifetimes(v: &mut serde_json::Value) {
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

/// The root namespace as the acceptance criteria compare it.
fn root_snapshot() -> Vec<String> {
    let mut snap: Vec<String> = [
        &["ip", "-j", "link"][..],
        &["ip", "-j", "addr"],
        &["ip", "-j", "route"],
        &["ip", "-j", "-6", "route"],
    ]
    .iter()
    .map(|argv| {
        let mut v: serde_json::Value = serde_json::from_str(&stdout(argv)).unwrap();
        without_lifetimes(&mut v);
        serde_json::to_string_pretty(&v).unwrap()
    })
    .collect();
    snap.push(std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap());
    snap
}

fn listed(list: &str, netns: &str) -> bool {
    list.lines().any(|l| l.split_whitespace().next() == Some(netns))
}

fn netns_list() -> String {
    stdout(&["ip", "netns", "list"])
}

/// Removes whatever a test created, even when it fails half-way.
struct Cleanup {
    state_dir: PathBuf,
    namespaces: Vec<String>,
    pids: Vec<u32>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let sys = LinuxSystem::new();
        if let Ok(sf) = StateFile::open(&self.state_dir, "") {
            for e in teardown(sf.state(), &sys) {
                eprintln!("cleanup: {e}");
            }
            let _ = sf.destroy();
        }
        for &pid in &self.pids {
            let _ = sys.kill(Pid { pid, start_ticks: None });
        }
        for n in &self.namespaces {
            if let Err(e) = sys.delete_netns(n) {
                eprintln!("cleanup: {n}: {e}");
            }
        }
    }
}

const TINY: &str = r#"
[[clusters]]
name = "C0"
etcd = 1
workers = 2
pods = [{ name = "c1", worker = "w1" }]
"#;

fn underlay_only(mut plan: Plan) -> Plan {
    plan.steps.retain(|s| {
        matches!(
            s.op,
            Op::CreateNetns(_)
                | Op::CreateBridge(_)
                | Op::CreateVeth(_)
                | Op::AddAddress(_)
                | Op::AddRoute(_)
                | Op::SetSysctl(_)
                | Op::WriteFile(_)
                | Op::NftLoad(_)
        )
    });
    plan
}

/// Compiles `source` for emulation `name` with its state under a fresh temporary
/// directory; returns the directory guard, the state dir, the bundle and its
/// underlay-only plan.
fn compile_underlay(source: &Source, name: &str) -> (tempfile::TempDir, PathBuf, Bundle, Plan) {
    let tmp = tempfile::tempdir().unwrap();
    let state_dir = tmp.path().join("state");
    let opts = CompileOptions {
        name: name.to_string(),
        state_dir: state_dir.clone(),
        not_ready: Default::default(),
        coredns_on_path: false,
    };
    let bundle = knetsim_compiler::compile(source, &opts).expect("topology compiles");
    let plan = underlay_only(serde_json::from_str(bundle.get("plan.json").unwrap()).unwrap());
    (tmp, state_dir, bundle, plan)
}

#[test]
fn underlay_comes_up_pings_and_leaves_nothing() {
    if !root_or_skip("underlay_comes_up_pings_and_leaves_nothing") {
        return;
    }
    let name = format!("t{}", std::process::id());
    let (_tmp, state_dir, bundle, plan) = compile_underlay(&Source::new("tiny.toml", TINY), &name);
    assert!(plan.namespaces.iter().all(|n| n.starts_with(&format!("{name}-"))));

    let before = root_snapshot();
    let cleanup = Cleanup {
        state_dir: state_dir.clone(),
        namespaces: plan.namespaces.clone(),
        pids: Vec::new(),
    };

    let sys = LinuxSystem::new();
    let mut sf = StateFile::create(&state_dir, "").unwrap();
    let mut steps = 0;
    let applied = apply_with(&plan, &bundle, &sys, &Options::new(4), Some(&mut sf), &mut |e| {
        if let Event::Finished { .. } = e {
            steps += 1;
        }
    })
    .unwrap_or_else(|e| panic!("apply: {e}"));
    assert_eq!(steps, plan.steps.len());
    assert_eq!(applied.namespaces.len(), plan.namespaces.len());

    let list = netns_list();
    for n in &plan.namespaces {
        assert!(listed(&list, n), "{n} not in {list}");
    }
    let ns = |host: &str| format!("{name}-{host}");
    let ip_of = |host: &str| {
        plan.steps
            .iter()
            .find_map(|s| match &s.op {
                Op::AddAddress(AddAddress { netns, cidr, .. }) if *netns == ns(host) => {
                    Some(cidr.split('/').next()?.to_string())
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("no address for {host}"))
    };
    // Host to host through the bridges in the switch namespace, both ways, and to etcd.
    for (from, to) in [("C0w1", "C0w2"), ("C0w2", "C0w1"), ("C0w1", "C0e1")] {
        let ip = ip_of(to);
        let out = run(&["ip", "netns", "exec", &ns(from), "ping", "-c1", "-W1", &ip]);
        assert!(
            out.status.success(),
            "ping {from} -> {to} ({ip}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // lo is up in every namespace (pod ones included).
    for n in &plan.namespaces {
        let out = run(&["ip", "netns", "exec", n, "ping", "-c1", "-W1", "127.0.0.1"]);
        assert!(out.status.success(), "lo down in {n}");
    }
    // Sysctls landed in the workers, not in the root namespace.
    let fwd = stdout(&[
        "ip",
        "netns",
        "exec",
        &ns("C0w1"),
        "cat",
        "/proc/sys/net/ipv4/ip_forward",
    ]);
    assert_eq!(fwd.trim(), "1");
    let fwd = stdout(&[
        "ip",
        "netns",
        "exec",
        &ns("C0e1"),
        "cat",
        "/proc/sys/net/ipv4/ip_forward",
    ]);
    assert_eq!(fwd.trim(), "0");
    // The service route and the bridge ports.
    let routes = stdout(&["ip", "-n", &ns("C0w1"), "route"]);
    assert!(routes.contains("100.64.0.0/16 dev eth0"), "{routes}");
    let ports = stdout(&["ip", "-n", &ns("knetsim-switches"), "link", "show", "master", "C0s0"]);
    assert!(ports.contains("C0s0-eth"), "{ports}");
    // The kube-proxy ruleset is loaded in the worker.
    let rules = stdout(&["ip", "netns", "exec", &ns("C0w1"), "nft", "list", "ruleset"]);
    assert!(!rules.trim().is_empty());
    // Probes against the live namespaces.
    assert!(sys
        .check(
            &Probe::RoutesVia {
                netns: ns("C0w1"),
                dev: "eth0".into(),
                count: 0
            },
            None
        )
        .unwrap());
    assert!(!sys
        .check(
            &Probe::RoutesVia {
                netns: ns("C0w1"),
                dev: "flannel.100".into(),
                count: 1
            },
            None
        )
        .unwrap());
    assert!(!sys
        .check(
            &Probe::TcpConnect {
                netns: ns("C0w1"),
                addr: format!("{}:2379", ip_of("C0e1")),
            },
            None
        )
        .unwrap());
    assert!(state::read(&state_dir).unwrap().unwrap().complete);

    // Down, as another process would do it: from the state file.
    drop(sf);
    let sf = StateFile::open(&state_dir, "").unwrap();
    let errors = teardown(sf.state(), &sys);
    assert!(errors.is_empty(), "{errors:?}");
    sf.destroy().unwrap();

    let list = netns_list();
    for n in &plan.namespaces {
        assert!(!listed(&list, n), "{n} left: {list}");
    }
    assert_eq!(root_snapshot(), before, "root namespace changed");
    assert!(!state_dir.exists(), "state dir left");
    drop(cleanup);
}

#[test]
fn rollback_on_failure_leaves_nothing() {
    if !root_or_skip("rollback_on_failure_leaves_nothing") {
        return;
    }
    let name = format!("t{}r", std::process::id());
    let (_tmp, state_dir, bundle, mut plan) = compile_underlay(&Source::new("tiny.toml", TINY), &name);
    // A step that fails for real, after most of the underlay exists.
    let w1 = format!("{name}-C0w1");
    let after: Vec<String> = plan.steps.iter().map(|s| s.id.clone()).collect();
    plan.steps.push(knetsim_compiler::plan::Step {
        id: "bad-route".into(),
        after,
        op: Op::AddRoute(AddRoute {
            netns: w1.clone(),
            dst: "100.65.0.0/16".into(),
            dev: "nosuchdev".into(),
        }),
    });
    let before = root_snapshot();
    let _cleanup = Cleanup {
        state_dir: state_dir.clone(),
        namespaces: plan.namespaces.clone(),
        pids: Vec::new(),
    };
    let sys = LinuxSystem::new();
    let mut sf = StateFile::create(&state_dir, "").unwrap();
    let err = apply_with(&plan, &bundle, &sys, &Options::new(4), Some(&mut sf), &mut |_| {}).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("step `bad-route` failed") && msg.contains("nosuchdev"),
        "{msg}"
    );
    assert!(msg.contains("rolled back"), "{msg}");
    assert!(sf.state().namespaces.is_empty() && sf.state().applied.is_empty());
    sf.destroy().unwrap();
    let list = netns_list();
    for n in &plan.namespaces {
        assert!(!listed(&list, n), "{n} left: {list}");
    }
    assert_eq!(root_snapshot(), before, "root namespace changed");
}

#[test]
fn probes_kill_and_namespace_processes() {
    if !root_or_skip("probes_kill_and_namespace_processes") {
        return;
    }
    let ns = format!("t{}p", std::process::id());
    let sys = LinuxSystem::new();
    let mut cleanup = Cleanup {
        state_dir: PathBuf::from("/nonexistent-knetsim-test"),
        namespaces: vec![ns.clone()],
        pids: Vec::new(),
    };
    sys.create_netns(&ns).unwrap();
    assert!(matches!(
        sys.create_netns(&ns),
        Err(knetsim_executor::system::SysError::AlreadyExists { .. })
    ));

    // An HTTP server inside the namespace, served from this process: the socket is
    // made by a thread that entered the namespace and keeps it after the thread ends.
    let listener = linux::in_netns(&ns, || {
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| knetsim_executor::system::SysError::io("bind", e))
    })
    .unwrap();
    let port = listener.local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let url = format!("http://{addr}/health");
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    let tcp = Probe::TcpConnect {
        netns: ns.clone(),
        addr: addr.clone(),
    };
    let http = Probe::HttpGet {
        netns: ns.clone(),
        url: url.clone(),
    };
    assert!(sys.check(&tcp, None).unwrap());
    assert!(sys.check(&http, None).unwrap());
    // The root namespace has no such listener (unless by chance on that port: then it is not ours).
    assert!(std::net::TcpStream::connect(&addr).is_err() || port == 0);
    let closed = Probe::TcpConnect {
        netns: ns.clone(),
        addr: "127.0.0.1:1".into(),
    };
    assert!(!sys.check(&closed, None).unwrap());

    // A process inside the namespace is found by namespace and stopped by PID.
    let child = Command::new("ip")
        .args(["netns", "exec", &ns, "sleep", "300"])
        .spawn()
        .unwrap();
    let pid = child.id();
    cleanup.pids.push(pid);
    let mut found = Vec::new();
    for _ in 0..200 {
        found = sys.netns_pids(std::slice::from_ref(&ns)).unwrap();
        if found.contains(&pid) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(found, vec![pid]);
    assert!(sys.check(&Probe::Alive, Some(pid)).unwrap());
    let ticks = linux::start_ticks(pid);
    assert!(ticks.is_some());
    // A stale record (other start time) is not this process: left alone.
    sys.kill(Pid {
        pid,
        start_ticks: ticks.map(|t| t + 1),
    })
    .unwrap();
    assert!(sys.check(&Probe::Alive, Some(pid)).unwrap());
    sys.kill(Pid {
        pid,
        start_ticks: ticks,
    })
    .unwrap();
    assert!(!sys.check(&Probe::Alive, Some(pid)).unwrap());
    assert!(sys.netns_pids(std::slice::from_ref(&ns)).unwrap().is_empty());
    drop(child);

    // Sysctl from a thread inside the namespace.
    sys.set_sysctl(&SetSysctl {
        netns: ns.clone(),
        key: "net.ipv4.ip_forward".into(),
        value: "1".into(),
    })
    .unwrap();
    let fwd = stdout(&["ip", "netns", "exec", &ns, "cat", "/proc/sys/net/ipv4/ip_forward"]);
    assert_eq!(fwd.trim(), "1");

    sys.delete_netns(&ns).unwrap();
    sys.delete_netns(&ns).unwrap(); // idempotent
    assert!(!listed(&netns_list(), &ns));
    assert!(matches!(
        sys.check(&tcp, None),
        Err(knetsim_executor::system::SysError::NotFound { .. })
    ));
}

#[test]
fn default_topology_underlay_timing() {
    if !root_or_skip("default_topology_underlay_timing") {
        return;
    }
    let name = format!("t{}d", std::process::id());
    let (_tmp, state_dir, bundle, plan) = compile_underlay(&Source::default_topology(), &name);
    let before = root_snapshot();
    let _cleanup = Cleanup {
        state_dir: state_dir.clone(),
        namespaces: plan.namespaces.clone(),
        pids: Vec::new(),
    };
    let sys = LinuxSystem::new();
    let t = std::time::Instant::now();
    let mut sf = StateFile::create(&state_dir, &name).unwrap();
    apply_with(&plan, &bundle, &sys, &Options::new(4), Some(&mut sf), &mut |_| {})
        .unwrap_or_else(|e| panic!("apply: {e}"));
    drop(sf);
    let up = t.elapsed();
    // Cross-cluster through the top switch t0 (a veth with both ends in the switch namespace).
    let c1w1 = plan
        .steps
        .iter()
        .find_map(|s| match &s.op {
            Op::AddAddress(AddAddress { netns, cidr, .. }) if *netns == format!("{name}-C1w1") => {
                Some(cidr.split('/').next().unwrap().to_string())
            }
            _ => None,
        })
        .unwrap();
    let out = run(&[
        "ip",
        "netns",
        "exec",
        &format!("{name}-C0w1"),
        "ping",
        "-c1",
        "-W1",
        &c1w1,
    ]);
    assert!(out.status.success(), "C0w1 -> C1w1 ({c1w1})");
    let t = std::time::Instant::now();
    knetsim_executor::down(&state_dir, &name, &sys).unwrap_or_else(|e| panic!("down: {e}"));
    let down = t.elapsed();
    println!(
        "default topology underlay: {} steps, {} namespaces: up {up:?}, down {down:?}",
        plan.steps.len(),
        plan.namespaces.len()
    );
    let list = netns_list();
    for n in &plan.namespaces {
        assert!(!listed(&list, n), "{n} left: {list}");
    }
    assert_eq!(root_snapshot(), before, "root namespace changed");
    assert!(!state_dir.exists());
}
