//! Engine, teardown and state-file behaviour against the recording fake (no root needed).

use knetsim_compiler::plan::{
    AddAddress, AddRoute, CreateBridge, CreateNetns, CreateVeth, Op, Plan, Probe, StartProcess, Step, VethEnd,
    WriteFile,
};
use knetsim_compiler::{Bundle, CompileOptions, Source};
use knetsim_executor::engine::{apply_with, teardown, ApplyError, Event, Options, StepError, TeardownError};
use knetsim_executor::state::{self, ProcessRecord, State, StateFile};
use knetsim_executor::system::fake::{Call, RecordingSystem};
use knetsim_executor::system::SysError;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

fn opts(parallelism: usize) -> Options {
    Options {
        parallelism,
        probe_timeout: Duration::from_millis(200),
        probe_interval: Duration::from_millis(5),
        alive_grace: Duration::from_millis(1),
    }
}

fn step(id: &str, after: &[&str], op: Op) -> Step {
    Step {
        id: id.into(),
        after: after.iter().map(|s| s.to_string()).collect(),
        op,
    }
}

fn netns(n: &str) -> Op {
    Op::CreateNetns(CreateNetns { netns: n.into() })
}

fn plan(state_dir: &str, steps: Vec<Step>) -> Plan {
    Plan {
        name: "t".into(),
        state_dir: state_dir.into(),
        namespaces: steps
            .iter()
            .filter_map(|s| match &s.op {
                Op::CreateNetns(CreateNetns { netns }) => Some(netns.clone()),
                _ => None,
            })
            .collect(),
        steps,
    }
}

fn bundle() -> Bundle {
    let mut b = Bundle::default();
    b.insert(
        "a.conf",
        knetsim_compiler::bundle::ArtifactKind::CniConfig,
        None,
        None,
        "{\"x\": 1}\n".into(),
    );
    b
}

/// A serial chain: each step after the previous one.
fn chain(dir: &str) -> Plan {
    plan(
        dir,
        vec![
            step("netns:a", &[], netns("a")),
            step("netns:b", &["netns:a"], netns("b")),
            step(
                "bridge:br",
                &["netns:b"],
                Op::CreateBridge(CreateBridge {
                    netns: "a".into(),
                    name: "br".into(),
                }),
            ),
            step(
                "link:b",
                &["bridge:br"],
                Op::CreateVeth(CreateVeth {
                    a: VethEnd {
                        netns: "b".into(),
                        ifname: "eth0".into(),
                        bridge: None,
                    },
                    b: VethEnd {
                        netns: "a".into(),
                        ifname: "br-eth1".into(),
                        bridge: Some("br".into()),
                    },
                }),
            ),
            step(
                "file:a",
                &["link:b"],
                Op::WriteFile(WriteFile {
                    path: format!("{dir}/a.conf"),
                    artifact: "a.conf".into(),
                }),
            ),
            step(
                "proc:p",
                &["file:a"],
                Op::StartProcess(StartProcess {
                    name: "p".into(),
                    netns: "b".into(),
                    argv: vec!["sleep".into(), "100".into()],
                    builtin: None,
                    log: format!("{dir}/p.log"),
                    outputs: vec![],
                    reloads: vec![],
                    restart: Default::default(),
                    ready: Probe::Alive,
                }),
            ),
            step(
                "addr:b",
                &["proc:p"],
                Op::AddAddress(AddAddress {
                    netns: "b".into(),
                    ifname: "eth0".into(),
                    cidr: "10.0.0.1/8".into(),
                }),
            ),
            step(
                "route:b",
                &["addr:b"],
                Op::AddRoute(AddRoute {
                    netns: "b".into(),
                    dst: "100.64.0.0/16".into(),
                    dev: "eth0".into(),
                }),
            ),
        ],
    )
}

fn default_compiled(name: &str, dir: &Path) -> (Plan, Bundle) {
    let bundle = knetsim_compiler::compile(
        &Source::default_topology(),
        &CompileOptions {
            name: name.into(),
            state_dir: dir.to_path_buf(),
            not_ready: Default::default(),
            coredns_on_path: false,
        },
    )
    .expect("default topology compiles");
    let plan: Plan = serde_json::from_str(bundle.get("plan.json").expect("plan artifact")).unwrap();
    (plan, bundle)
}

#[test]
fn default_plan_runs_in_dependency_order() {
    let tmp = tempfile::tempdir().unwrap();
    let (plan, bundle) = default_compiled("u1", tmp.path());
    let sys = RecordingSystem::new();
    let mut events = Vec::new();
    let applied = apply_with(&plan, &bundle, &sys, &opts(4), None, &mut |e| events.push(e.clone())).unwrap();
    assert_eq!(applied.completed.len(), plan.steps.len());
    assert_eq!(applied.namespaces.len(), plan.namespaces.len());
    let starts = plan
        .steps
        .iter()
        .filter(|s| matches!(s.op, Op::StartProcess(_)))
        .count();
    assert_eq!(applied.processes.len(), starts);

    let mut finished = HashSet::new();
    let mut started = 0;
    for e in &events {
        match e {
            Event::Started { step } => {
                started += 1;
                for dep in &plan.step(step).unwrap().after {
                    assert!(finished.contains(dep), "{step} started before {dep} finished");
                }
            }
            Event::Finished { step, .. } => {
                finished.insert(step.clone());
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
    assert_eq!(started, plan.steps.len());

    // The recorded calls agree: every veth after both namespaces, every address after its veth.
    let lines = sys.lines();
    let pos = |l: &str| {
        lines
            .iter()
            .position(|x| x == l)
            .unwrap_or_else(|| panic!("no call {l}"))
    };
    assert!(pos("create-netns u1-C0w1") < pos("create-veth u1-C0w1:eth0 u1-knetsim-switches:C0s0-eth3"));
    assert!(pos("create-netns u1-knetsim-switches") < pos("create-bridge u1-knetsim-switches C0s0"));
    assert!(
        pos("create-bridge u1-knetsim-switches C0s0") < pos("create-veth u1-C0w1:eth0 u1-knetsim-switches:C0s0-eth3")
    );
    assert!(pos("create-veth u1-C0w1:eth0 u1-knetsim-switches:C0s0-eth3") < pos("add-address u1-C0w1 eth0 10.0.0.3/8"));

    // Etcd puts of a JSON member are the compact member, as flannel stores leases.
    let put = sys
        .calls()
        .into_iter()
        .find_map(|c| match c {
            // Both clusters reserve the same subnet in their own etcd: pick cluster 0's.
            Call::EtcdPut { netns, key, value }
                if netns.starts_with("u1-C0") && key == "/coreos.com/network/subnets/11.10.0.0-20" =>
            {
                Some(value)
            }
            _ => None,
        })
        .unwrap();
    assert!(
        put.starts_with("{\"PublicIP\":\"10.0.0.3\",\"BackendType\":\"vxlan\""),
        "{put}"
    );
}

#[test]
fn independent_steps_overlap_within_the_bound() {
    let steps = (0..12)
        .map(|i| step(&format!("netns:n{i}"), &[], netns(&format!("n{i}"))))
        .collect();
    let p = plan("/tmp/none", steps);
    let sys = RecordingSystem::new().with_delay(Duration::from_millis(40));
    let t = Instant::now();
    apply_with(&p, &Bundle::default(), &sys, &opts(4), None, &mut |_| {}).unwrap();
    let elapsed = t.elapsed();
    assert!(sys.max_concurrency() > 1, "no overlap");
    assert!(
        sys.max_concurrency() <= 4,
        "more than 4 at once: {}",
        sys.max_concurrency()
    );
    assert!(
        elapsed < Duration::from_millis(12 * 40),
        "took {elapsed:?}: not concurrent"
    );

    let serial = RecordingSystem::new().with_delay(Duration::from_millis(5));
    apply_with(&p, &Bundle::default(), &serial, &opts(1), None, &mut |_| {}).unwrap();
    assert_eq!(serial.max_concurrency(), 1);
}

#[test]
fn failure_rolls_back_everything_in_reverse() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    let p = chain(dir);
    let sys = RecordingSystem::new();
    sys.fail_on("add-address b eth0 10.0.0.1/8");
    let err = apply_with(&p, &bundle(), &sys, &opts(4), None, &mut |_| {}).unwrap_err();
    let ApplyError::StepFailed(f) = &err else {
        panic!("{err}")
    };
    let (step, error, undo_errors) = (&f.step, &f.error, &f.undo_errors);
    assert_eq!(step, "addr:b");
    assert!(matches!(error, StepError::Sys(SysError::Injected { .. })));
    assert!(undo_errors.is_empty());
    let msg = err.to_string();
    assert!(
        msg.contains("step `addr:b` failed: injected failure: add-address b eth0 10.0.0.1/8"),
        "{msg}"
    );

    let lines = sys.lines();
    let failed = lines.iter().position(|l| l.starts_with("add-address")).unwrap();
    // Nothing after the failing step was scheduled; the undo is the reverse of what was applied.
    assert_eq!(
        lines[failed + 1..],
        [
            "kill 1000".to_string(),
            format!("remove-path {dir}/p.log"),
            format!("remove-path {dir}/a.conf"),
            "delete-netns b".to_string(),
            "delete-netns a".to_string(),
        ]
    );
    assert!(!lines.iter().any(|l| l.starts_with("add-route")));
}

#[test]
fn failure_waits_for_running_steps_and_reports_undo_errors() {
    let p = plan(
        "/tmp/none",
        vec![
            step("netns:a", &[], netns("a")),
            step("netns:b", &[], netns("b")),
            step("netns:c", &[], netns("c")),
            step("netns:d", &["netns:a", "netns:b", "netns:c"], netns("d")),
        ],
    );
    let sys = RecordingSystem::new().with_delay(Duration::from_millis(20));
    sys.fail_on("create-netns a");
    sys.fail_on("delete-netns c");
    let err = apply_with(&p, &Bundle::default(), &sys, &opts(4), None, &mut |_| {}).unwrap_err();
    let lines = sys.lines();
    // b and c were running when a failed: they completed and were undone; a (failed) is not deleted; d never ran.
    assert!(lines.contains(&"delete-netns b".to_string()), "{lines:?}");
    assert!(lines.contains(&"delete-netns c".to_string()), "{lines:?}");
    assert!(!lines.contains(&"delete-netns a".to_string()), "{lines:?}");
    assert!(!lines.contains(&"create-netns d".to_string()), "{lines:?}");
    let ApplyError::StepFailed(f) = &err else {
        panic!("{err}")
    };
    assert_eq!(f.undo_errors.len(), 1);
    assert!(
        err.to_string().contains("undo of `netns:c` (delete namespace c)"),
        "{err}"
    );
}

#[test]
fn probe_timeout_fails_and_stops_the_process() {
    let p = plan(
        "/tmp/none",
        vec![
            step("netns:a", &[], netns("a")),
            step(
                "proc:etcd",
                &["netns:a"],
                Op::StartProcess(StartProcess {
                    name: "etcd".into(),
                    netns: "a".into(),
                    argv: vec!["etcd".into()],
                    builtin: None,
                    log: "/tmp/none/etcd.log".into(),
                    outputs: vec![],
                    reloads: vec![],
                    restart: Default::default(),
                    ready: Probe::HttpGet {
                        netns: "a".into(),
                        url: "http://127.0.0.1:2379/health".into(),
                    },
                }),
            ),
        ],
    );
    let sys = RecordingSystem::new();
    sys.never_ready_when(|c| {
        matches!(
            c,
            Call::Check {
                probe: Probe::HttpGet { .. },
                ..
            }
        )
    });
    let err = apply_with(&p, &Bundle::default(), &sys, &opts(2), None, &mut |_| {}).unwrap_err();
    assert!(
        matches!(&err, ApplyError::StepFailed(f) if f.step == "proc:etcd" && matches!(f.error, StepError::NotReady { .. })),
        "{err}"
    );
    let lines = sys.lines();
    let tail: Vec<&str> = lines.iter().rev().take(3).map(String::as_str).collect();
    assert_eq!(tail, ["delete-netns a", "remove-path /tmp/none/etcd.log", "kill 1000"]);
}

#[test]
fn invalid_plans_are_rejected_before_anything_runs() {
    let sys = RecordingSystem::new();
    let cycle = plan(
        "/tmp/none",
        vec![
            step("netns:a", &["netns:b"], netns("a")),
            step("netns:b", &["netns:a"], netns("b")),
        ],
    );
    let err = apply_with(&cycle, &Bundle::default(), &sys, &opts(2), None, &mut |_| {}).unwrap_err();
    assert!(matches!(err, ApplyError::InvalidPlan(_)), "{err}");
    let unknown = plan("/tmp/none", vec![step("netns:a", &["nope"], netns("a"))]);
    let err = apply_with(&unknown, &Bundle::default(), &sys, &opts(2), None, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("unknown step `nope`"), "{err}");
    assert!(sys.calls().is_empty());
}

fn record(name: &str, pid: u32, dir: &str) -> ProcessRecord {
    ProcessRecord {
        name: name.into(),
        netns: "n1".into(),
        pid,
        start_ticks: Some(7),
        argv: vec![name.into()],
        log: format!("{dir}/{name}.log"),
        started_at: 0,
        restarts: 0,
        restart: Default::default(),
    }
}

#[test]
fn teardown_goes_on_past_errors_and_returns_them_all() {
    let dir = "/tmp/knetsim-x";
    let st = State {
        name: "x".into(),
        state_dir: dir.into(),
        namespaces: vec!["n1".into(), "n2".into(), "n3".into()],
        processes: vec![
            record("p1", 1001, dir),
            record("p2", 1002, dir),
            record("p3", 1003, dir),
        ],
        paths: vec![format!("{dir}/w1"), format!("{dir}/w1/conf"), "/etc/passwd".into()],
        ..State::default()
    };
    let sys = RecordingSystem::new();
    sys.set_netns_pids("n2", vec![1002, 4242]);
    sys.fail_on("kill 1001");
    sys.fail_on("delete-netns n2");
    sys.fail_on(&format!("remove-path {dir}/w1/conf"));
    let errors = teardown(&st, &sys);
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(matches!(&errors[0], TeardownError::Kill { pid: 1001, .. }));
    assert!(matches!(&errors[1], TeardownError::DeleteNetns { netns, .. } if netns == "n2"));
    assert!(matches!(&errors[2], TeardownError::Remove { .. }));
    let lines: HashSet<String> = sys.lines().into_iter().collect();
    for l in [
        "kill 1001",
        "kill 1002",
        "kill 1003",
        "kill 4242",
        "delete-netns n1",
        "delete-netns n2",
        "delete-netns n3",
    ] {
        assert!(lines.contains(l), "missing {l}: {lines:?}");
    }
    for l in ["w1", "w1/conf", "p1.log", "p2.log", "p3.log"] {
        assert!(lines.contains(&format!("remove-path {dir}/{l}")), "missing {l}");
    }
    // Never outside the state directory.
    assert!(!lines.contains("remove-path /etc/passwd"));
    // Processes are stopped before their namespaces go.
    let order = sys.lines();
    let last_kill = order.iter().rposition(|l| l.starts_with("kill")).unwrap();
    let first_delete = order.iter().position(|l| l.starts_with("delete-netns")).unwrap();
    assert!(last_kill < first_delete);
}

#[test]
fn state_is_saved_step_by_step() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("emu");
    let dir_s = dir.to_str().unwrap().to_string();
    let p = chain(&dir_s);
    let deps: HashMap<String, Vec<String>> = p.steps.iter().map(|s| (s.id.clone(), s.after.clone())).collect();
    let sys = RecordingSystem::new();
    let mut sf = StateFile::create(&dir, "t").unwrap();
    let mut checked = 0;
    apply_with(&p, &bundle(), &sys, &opts(4), Some(&mut sf), &mut |e| {
        if let Event::Started { step } = e {
            let on_disk = state::read(&dir).unwrap().unwrap();
            for d in &deps[step] {
                assert!(on_disk.applied.contains(d), "{d} not saved before {step} started");
            }
            checked += 1;
        }
    })
    .unwrap();
    assert_eq!(checked, p.steps.len());
    let on_disk = state::read(&dir).unwrap().unwrap();
    assert!(on_disk.complete);
    assert_eq!(on_disk.applied.len(), p.steps.len());
    assert_eq!(on_disk.namespaces, ["a", "b"]);
    assert_eq!(on_disk.processes.len(), 1);
    assert_eq!(on_disk.processes[0].pid, 1000);
    assert!(on_disk.paths.contains(&format!("{dir_s}/a.conf")));

    // Another process (after this one is gone) tears it down from the file alone.
    drop(sf);
    let sf = StateFile::open(&dir, "t").unwrap();
    let down = RecordingSystem::new();
    assert!(teardown(sf.state(), &down).is_empty());
    let lines = down.lines();
    assert!(lines.contains(&"kill 1000".to_string()));
    assert!(lines.contains(&"delete-netns a".to_string()) && lines.contains(&"delete-netns b".to_string()));
    sf.destroy().unwrap();
    assert!(!dir.exists());
}

#[test]
fn a_crash_mid_apply_leaves_a_state_that_down_can_use() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("emu");
    let p = chain(dir.to_str().unwrap());
    let sys = RecordingSystem::new();
    let mut sf = StateFile::create(&dir, "t").unwrap();
    // The callback panics when `addr:b` is about to start: the applying "process" dies
    // without any rollback, like a kill -9.
    let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        apply_with(&p, &bundle(), &sys, &opts(4), Some(&mut sf), &mut |e| {
            if matches!(e, Event::Started { step } if step == "addr:b") {
                panic!("simulated crash");
            }
        })
    }));
    assert!(crashed.is_err());
    assert!(!sys
        .lines()
        .iter()
        .any(|l| l.starts_with("delete-netns") || l.starts_with("kill")));
    drop(sf);
    let on_disk = state::read(&dir).unwrap().unwrap();
    assert!(!on_disk.complete);
    assert_eq!(on_disk.namespaces, ["a", "b"]);
    assert_eq!(on_disk.processes.len(), 1);
    let sf = StateFile::open(&dir, "t").unwrap();
    let down = RecordingSystem::new();
    assert!(teardown(sf.state(), &down).is_empty());
    assert!(down.lines().contains(&"kill 1000".to_string()));
    assert!(down.lines().contains(&"delete-netns b".to_string()));
    sf.destroy().unwrap();
}

#[test]
fn namespaces_are_recorded_before_creation_and_dropped_if_not_ours() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("emu");
    let p = plan(
        dir.to_str().unwrap(),
        vec![
            step("netns:a", &[], netns("a")),
            step("netns:taken", &["netns:a"], netns("taken")),
        ],
    );
    let sys = RecordingSystem::new();
    sys.fail_on("create-netns taken");
    let mut sf = StateFile::create(&dir, "t").unwrap();
    let mut seen_intent = false;
    let err = apply_with(&p, &Bundle::default(), &sys, &opts(2), Some(&mut sf), &mut |e| {
        if matches!(e, Event::Started { step } if step == "netns:taken") {
            seen_intent = state::read(&dir)
                .unwrap()
                .unwrap()
                .namespaces
                .contains(&"taken".to_string());
        }
    })
    .unwrap_err();
    assert!(seen_intent, "namespace not recorded before its creation");
    assert!(err.to_string().contains("netns:taken"));
    // Rolled back cleanly: nothing left to tear down, and the foreign namespace is not claimed.
    assert!(sf.state().namespaces.is_empty(), "{:?}", sf.state());
    assert!(sf.state().applied.is_empty());
    assert_eq!(state::read(&dir).unwrap().unwrap(), *sf.state());
    sf.destroy().unwrap();
}
