//! Live changes on the recording fake: exactly the delta, rollback, recovery, repair.

use super::*;
use crate::system::fake::RecordingSystem;
use knetsim_compiler::artifacts::paths::PLAN;
use knetsim_compiler::plan::{delta, Component, Plan};
use knetsim_compiler::{compile, CompileOptions, Source};

const BASE: &str = "[[clusters]]\nname = \"C0\"\npods = [\n  { name = \"c1\", worker = \"w1\", command = [\"sleep\", \"9\"] },\n  { name = \"c2\", worker = \"w2\" },\n]\nservices = [{ name = \"web\", vip = \"100.64.0.10\", pods = [\"c1\", \"c2\"] }]\n";

fn compiled(text: &str, dir: &Path) -> (Plan, Bundle) {
    let opts = CompileOptions {
        name: "d".into(),
        state_dir: dir.into(),
        not_ready: Default::default(),
        coredns_on_path: false,
    };
    let bundle = compile(&Source::new("t.toml", text), &opts).unwrap();
    let plan: Plan = serde_json::from_str(bundle.get(PLAN).unwrap()).unwrap();
    (plan.without(&[Component::Interconnect]), bundle)
}

fn fast() -> Options {
    let mut o = Options::new(1);
    o.alive_grace = Duration::ZERO;
    o
}

/// Brings `text` "up" on the fake; returns its plan, bundle and state file.
fn up_from(text: &str, dir: &Path, sys: &RecordingSystem) -> (Plan, Bundle, StateFile) {
    let (plan, bundle) = compiled(text, dir);
    let mut sf = StateFile::create(dir, "d").unwrap();
    crate::engine::apply_with(&plan, &bundle, sys, &fast(), Some(&mut sf), &mut |_| {}).unwrap();
    (plan, bundle, sf)
}

/// Brings BASE "up" on the fake, returns the state file.
fn up(dir: &Path, sys: &RecordingSystem) -> StateFile {
    up_from(BASE, dir, sys).2
}

#[test]
fn pod_add_and_rm_perform_exactly_the_delta() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("emu");
    let sys = RecordingSystem::new();
    let mut sf = up(&dir, &sys);
    let before = sys.calls().len();
    let (op, ob) = compiled(BASE, &dir);
    let more = BASE.replace(
        "  { name = \"c2\", worker = \"w2\" },\n",
        "  { name = \"c2\", worker = \"w2\" },\n  { name = \"c10\", worker = \"w1\" },\n",
    );
    let (np, nb) = compiled(&more, &dir);
    let actions = delta(&op, &ob, &np, &nb).unwrap();
    let done = apply_changes(&actions, &ob, &nb, &sys, &fast(), &mut sf, &mut |_, _| {}).unwrap();
    assert_eq!(done.performed.len(), 2);
    let calls: Vec<String> = sys.lines()[before..].to_vec();
    assert_eq!(calls, vec!["create-netns d-k0_c10", "cni-add d-k0_c10 11.10.0.3"]);
    assert!(sf.state().namespaces.contains(&"d-k0_c10".to_string()));
    assert!(sf.state().applied.contains(&"cni-add:C0/c10".to_string()));
    assert_eq!(sf.state().last_change, done.performed);

    // Back: c10 goes (CNI DEL before its namespace).
    let before = sys.calls().len();
    let actions = delta(&np, &nb, &op, &ob).unwrap();
    apply_changes(&actions, &nb, &ob, &sys, &fast(), &mut sf, &mut |_, _| {}).unwrap();
    assert_eq!(
        sys.lines()[before..].to_vec(),
        // Processes still inside are looked for before the namespace goes.
        vec![
            "cni-del d-k0_c10 11.10.0.3",
            "netns-pids d-k0_c10",
            "delete-netns d-k0_c10"
        ]
    );
    assert!(!sf.state().namespaces.contains(&"d-k0_c10".to_string()));
    assert!(!sf.state().applied.contains(&"cni-add:C0/c10".to_string()));

    // Removing c1 stops its workload by its recorded PID and reloads the rules.
    let pid = sf.state().processes.iter().find(|p| p.name == "pod C0/c1").unwrap().pid;
    let less = BASE
        .replace(
            "  { name = \"c1\", worker = \"w1\", command = [\"sleep\", \"9\"] },\n",
            "",
        )
        .replace("[\"c1\", \"c2\"]", "[\"c2\"]");
    let (lp, lb) = compiled(&less, &dir);
    let before = sys.calls().len();
    let actions = delta(&op, &ob, &lp, &lb).unwrap();
    apply_changes(&actions, &ob, &lb, &sys, &fast(), &mut sf, &mut |_, _| {}).unwrap();
    let calls = sys.lines()[before..].to_vec();
    assert_eq!(calls[0], format!("kill {pid}"));
    assert_eq!(calls[2], "cni-del d-k0_c1 11.10.0.2");
    assert_eq!(calls[3], "netns-pids d-k0_c1");
    assert_eq!(calls[4], "delete-netns d-k0_c1");
    assert!(calls.iter().any(|c| c.starts_with("nft-load d-C0w1")), "{calls:#?}");
    assert!(calls.iter().any(|c| c.starts_with("nft-load d-C0w2")), "{calls:#?}");
    assert!(!sf.state().processes.iter().any(|p| p.pid == pid));
}

#[test]
fn a_failure_half_way_rolls_back_to_the_running_state() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("emu");
    let sys = RecordingSystem::new();
    let mut sf = up(&dir, &sys);
    let state_before = sf.state().clone();
    let (op, ob) = compiled(BASE, &dir);
    let more = BASE
        .replace(
            "  { name = \"c2\", worker = \"w2\" },\n",
            "  { name = \"c2\", worker = \"w2\" },\n  { name = \"c10\", worker = \"w1\" },\n",
        )
        .replace("[\"c1\", \"c2\"]", "[\"c1\", \"c2\", \"c10\"]");
    let (np, nb) = compiled(&more, &dir);
    let actions = delta(&op, &ob, &np, &nb).unwrap();
    // Rules of w1 load, those of w2 fail: c10 and w1's rules are undone.
    let once = std::sync::atomic::AtomicBool::new(false);
    sys.fail_when(move |c| {
        c.to_string().starts_with("nft-load d-C0w2") && !once.swap(true, std::sync::atomic::Ordering::SeqCst)
    });
    let before = sys.calls().len();
    let err = apply_changes(&actions, &ob, &nb, &sys, &fast(), &mut sf, &mut |_, _| {}).unwrap_err();
    assert!(err.action.starts_with("change nft:C0w2"), "{err}");
    assert!(err.undo_errors.is_empty(), "{err}");
    let calls = sys.lines()[before..].to_vec();
    // Newest first: the failed rules back on w2, c10's CNI DEL, w1's rules, c10's namespace.
    let failed_at = calls.iter().position(|c| c.starts_with("nft-load d-C0w2")).unwrap();
    let undo: Vec<&str> = calls[failed_at + 1..]
        .iter()
        .filter(|c| !c.starts_with("write-file") && !c.starts_with("netns-pids"))
        .map(String::as_str)
        .collect();
    assert!(undo[0].starts_with("nft-load d-C0w2"), "{calls:#?}");
    assert_eq!(undo[1], "cni-del d-k0_c10 11.10.0.3", "{calls:#?}");
    assert!(undo[2].starts_with("nft-load d-C0w1"), "{calls:#?}");
    assert_eq!(undo[3], "delete-netns d-k0_c10", "{calls:#?}");
    assert_eq!(undo.len(), 4, "{calls:#?}");
    // The old rules were written back on w1 (and w2).
    let old_rules = ob.get("clusters/C0/workers/C0w1/kube-proxy.nft").unwrap();
    let last_w1_write = sys
        .calls()
        .into_iter()
        .rev()
        .find_map(|c| match c {
            crate::system::fake::Call::WriteFile { path, contents } if path.ends_with("C0w1/kube-proxy.nft") => {
                Some(contents)
            }
            _ => None,
        })
        .unwrap();
    assert_eq!(last_w1_write, old_rules);
    let mut now = sf.state().clone();
    let mut was = state_before;
    now.applied.sort();
    was.applied.sort();
    assert_eq!(now.namespaces, was.namespaces);
    assert_eq!(now.applied, was.applied);
    assert_eq!(now.processes, was.processes);
}

fn topology(name: &str) -> String {
    std::fs::read_to_string(format!("{}/../topologies/{name}.toml", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// What a state says is there: namespaces, applied steps, processes (PIDs aside).
type Contents = (Vec<String>, Vec<String>, Vec<(String, String)>);

fn contents(st: &State) -> Contents {
    let mut namespaces = st.namespaces.clone();
    let mut applied = st.applied.clone();
    let mut processes: Vec<(String, String)> = st.processes.iter().map(|p| (p.name.clone(), p.netns.clone())).collect();
    namespaces.sort();
    applied.sort();
    processes.sort();
    (namespaces, applied, processes)
}

/// A fresh "up" of `text` compiled for `dir`, its state kept elsewhere.
fn fresh(text: &str, dir: &Path) -> Contents {
    let (plan, bundle) = compiled(text, dir);
    let elsewhere = tempfile::tempdir().unwrap();
    let mut sf = StateFile::create(elsewhere.path(), "d").unwrap();
    crate::engine::apply_with(
        &plan,
        &bundle,
        &RecordingSystem::new(),
        &fast(),
        Some(&mut sf),
        &mut |_| {},
    )
    .unwrap();
    let st = contents(sf.state());
    sf.destroy().unwrap();
    st
}

#[test]
fn underlay_changes_rebuild_and_end_like_a_fresh_up() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("emu");
    let sys = RecordingSystem::new();
    let (dp, db, mut sf) = up_from(&topology("default"), &dir, &sys);
    let fresh_default = contents(sf.state());
    for variant in ["single", "chain3"] {
        let text = topology(variant);
        let (vp, vb) = compiled(&text, &dir);
        let before = sys.calls().len();
        let actions = delta(&dp, &db, &vp, &vb).unwrap();
        let done = apply_changes(&actions, &db, &vb, &sys, &fast(), &mut sf, &mut |_, _| {}).unwrap();
        assert_eq!(
            done.performed,
            actions.iter().map(ToString::to_string).collect::<Vec<_>>()
        );
        let calls = sys.lines()[before..].to_vec();
        // The etcd member C0e1 stays but its membership changes: it restarts on a fresh data dir.
        let data_dir = format!("remove-path {}/C0e1.etcd", dir.display());
        assert!(calls.contains(&data_dir), "{calls:#?}");
        // C0w1 is renumbered: its veth is deleted (its peer is in the switches), its
        // namespace re-created and its address set anew.
        let at = |call: &str| {
            calls
                .iter()
                .position(|c| c == call)
                .unwrap_or_else(|| panic!("no {call}: {calls:#?}"))
        };
        assert!(at("delete-link d-C0w1 eth0") < at("delete-netns d-C0w1"));
        assert!(at("delete-netns d-C0w1") < at("create-netns d-C0w1"));
        assert!(at("create-netns d-C0w1") < at("add-address d-C0w1 eth0 10.0.0.2/8"));
        // The switches' namespace stays.
        assert!(
            !calls.iter().any(|c| c.contains("netns d-knetsim-switches")),
            "{calls:#?}"
        );
        // The removed etcd host's veth is deleted explicitly: its peer is in the switches.
        assert!(calls.contains(&"delete-link d-C0e2 eth0".to_string()), "{calls:#?}");
        assert_eq!(contents(sf.state()), fresh(&text, &dir), "{variant}");
        let back = delta(&vp, &vb, &dp, &db).unwrap();
        apply_changes(&back, &vb, &db, &sys, &fast(), &mut sf, &mut |_, _| {}).unwrap();
        assert_eq!(contents(sf.state()), fresh_default, "{variant} and back");
    }
}

/// The default topology "up" on the fake, what its state says is there, its bundle,
/// and the actions that move it to chain3 (an underlay change).
fn default_up_and_chain3(dir: &Path, sys: &RecordingSystem) -> (StateFile, Contents, Bundle, Vec<Action>) {
    let (dp, db, sf) = up_from(&topology("default"), dir, sys);
    let running = contents(sf.state());
    let (vp, vb) = compiled(&topology("chain3"), dir);
    let actions = delta(&dp, &db, &vp, &vb).unwrap();
    (sf, running, db, actions)
}

#[test]
fn a_rebuild_failing_half_way_rolls_back_to_the_running_state() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("emu");
    let sys = RecordingSystem::new();
    let (mut sf, running, db, actions) = default_up_and_chain3(&dir, &sys);
    let vb = compiled(&topology("chain3"), &dir).1;
    let once = std::sync::atomic::AtomicBool::new(false);
    sys.fail_when(move |c| {
        c.to_string() == "start-process d-C1w1 flanneld C1w1" && !once.swap(true, std::sync::atomic::Ordering::SeqCst)
    });
    let before = sys.calls().len();
    let err = apply_changes(&actions, &db, &vb, &sys, &fast(), &mut sf, &mut |_, _| {}).unwrap_err();
    assert!(err.action.starts_with("add flanneld:C1w1"), "{err}");
    assert!(err.undo_errors.is_empty(), "{err}");
    assert!(err.undone > 10, "{err}");
    assert_eq!(contents(sf.state()), running);
    // The old underlay is back: C0w1's old veth and address, C1's second etcd member.
    let undo = sys.lines()[before..].to_vec();
    let at = undo
        .iter()
        .position(|c| c == "start-process d-C1w1 flanneld C1w1")
        .unwrap();
    let undo = &undo[at + 1..];
    for call in [
        "create-veth d-C0w1:eth0 d-knetsim-switches:C0s0-eth3",
        "add-address d-C0w1 eth0 10.0.0.3/8",
        "create-netns d-C1e2",
        "start-process d-C1e2 etcd C1e2",
    ] {
        assert!(undo.contains(&call.to_string()), "no `{call}` in {undo:#?}");
    }
}

#[test]
fn a_change_killed_after_any_action_is_rolled_back_by_recover() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("emu");
    let sys = RecordingSystem::new();
    let (mut sf, running, db, actions) = default_up_and_chain3(&dir, &sys);
    let vb = compiled(&topology("chain3"), &dir).1;
    for killed_after in [0, 1, actions.len() / 2, actions.len() - 1, actions.len()] {
        // What a process killed after `killed_after` actions leaves: those done and
        // recorded, the rest not begun.
        apply_changes(
            &actions[..killed_after],
            &db,
            &vb,
            &sys,
            &fast(),
            &mut sf,
            &mut |_, _| {},
        )
        .unwrap();
        let undone = recover(&actions, killed_after, &db, &sys, &fast(), &mut sf).unwrap();
        assert_eq!(undone, killed_after);
        assert_eq!(contents(sf.state()), running, "killed after {killed_after}");
        assert!(sf.state().starting.is_empty());
    }
}

#[test]
fn recover_clears_a_half_done_action_before_putting_the_old_side_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("emu");
    let sys = RecordingSystem::new();
    let mut sf = up(&dir, &sys);
    let running = contents(sf.state());
    let (op, ob) = compiled(BASE, &dir);
    let more = BASE.replace(
        "  { name = \"c2\", worker = \"w2\" },\n",
        "  { name = \"c2\", worker = \"w2\" },\n  { name = \"c10\", worker = \"w1\", command = [\"sleep\", \"9\"] },\n",
    );
    let (np, nb) = compiled(&more, &dir);
    let actions = delta(&op, &ob, &np, &nb).unwrap();
    // Killed while c10's workload was starting: its namespace and CNI ADD done,
    // the process recorded as starting, no PID recorded.
    let starting = actions
        .iter()
        .position(|a| matches!(&a.step().op, Op::StartProcess(_)))
        .unwrap();
    apply_changes(&actions[..starting], &ob, &nb, &sys, &fast(), &mut sf, &mut |_, _| {}).unwrap();
    let Op::StartProcess(StartProcess { name, netns, log, .. }) = &actions[starting].step().op else {
        unreachable!()
    };
    sf.state_mut().starting.push(StartingProcess {
        name: name.clone(),
        netns: netns.clone(),
        log: log.clone(),
    });
    let before = sys.calls().len();
    recover(&actions, starting, &ob, &sys, &fast(), &mut sf).unwrap();
    let calls = sys.lines()[before..].to_vec();
    assert!(calls.contains(&"cni-del d-k0_c10 11.10.0.3".to_string()), "{calls:#?}");
    assert_eq!(calls.last().unwrap(), "delete-netns d-k0_c10", "{calls:#?}");
    assert_eq!(contents(sf.state()), running);
    assert!(sf.state().starting.is_empty());
}

#[test]
fn a_repair_resumes_a_dead_member_on_its_data_and_remakes_a_gone_pod() {
    use knetsim_compiler::plan::{repair, Drift};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("emu");
    let sys = RecordingSystem::new();
    let (plan, bundle, mut sf) = up_from(BASE, &dir, &sys);
    // What etcd stored, and a leftover of the dead workload still logging.
    std::fs::create_dir_all(dir.join("C0e1.etcd/member")).unwrap();
    let log = dir.join("pods/C0/c1.log");
    sys.set_logging_pids("d-k0_c1", &log, vec![4242]);
    let drift = Drift {
        missing_netns: ["d-k0_c2".to_string()].into(),
        dead: [
            ("etcd:C0e1".to_string(), "gone".to_string()),
            ("workload:C0/c1".to_string(), "gone".to_string()),
        ]
        .into(),
        ..Drift::default()
    };
    let actions = repair(&plan, &drift).unwrap();
    let before = sys.calls().len();
    apply_changes(&actions, &bundle, &bundle, &sys, &fast(), &mut sf, &mut |_, _| {}).unwrap();
    let calls = sys.lines()[before..].to_vec();
    let data = format!("remove-path {}", dir.join("C0e1.etcd").display());
    assert!(!calls.contains(&data), "the member's data must stay: {calls:#?}");
    assert!(dir.join("C0e1.etcd/member").is_dir());
    assert!(
        calls.contains(&"start-process d-C0e1 etcd C0e1".to_string()),
        "{calls:#?}"
    );
    assert!(
        calls.contains(&"kill 4242".to_string()),
        "the leftover is stopped: {calls:#?}"
    );
    let at = |line: &str| {
        calls
            .iter()
            .position(|c| c == line)
            .unwrap_or_else(|| panic!("no `{line}` in {calls:#?}"))
    };
    assert!(at("cni-del d-k0_c2 11.10.16.2") < at("delete-netns d-k0_c2"));
    assert!(at("delete-netns d-k0_c2") < at("create-netns d-k0_c2"));
    assert!(at("create-netns d-k0_c2") < at("cni-add d-k0_c2 11.10.16.2"));
    assert!(sf.state().namespaces.contains(&"d-k0_c2".to_string()));
}
