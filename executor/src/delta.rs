//! Live changes: performs the actions of a plan delta
//! ([`knetsim_compiler::plan::delta`]) on a running emulation, one after another,
//! recording every effect in its state file before it happens (namespaces, files,
//! processes about to start) and the count of completed actions after each one; on
//! the first failure it undoes what it did, newest first, back to the previous
//! running state. A change killed half-way is rolled back the same way by the next
//! one ([`recover`]).

use crate::engine::{record_effects, removable, run_op, start_process, wait_process_ready, Effect, Options, StepError};
use crate::state::{StartingProcess, State, StateFile};
use crate::system::{Pid, SysError, System};
use knetsim_compiler::plan::{
    Action, CreateBridge, CreateNetns, CreateVeth, EtcdPut, GenerateCerts, Impair, MakeDir, NftLoad, Op, StartProcess,
    Step, WriteFile,
};
use knetsim_compiler::Bundle;
use std::path::Path;
use std::time::{Duration, Instant};

/// A failed live change and how its rollback went.
#[derive(Debug, thiserror::Error)]
#[error("{}", describe(.action, .error, .undone, .undo_errors))]
pub struct ChangeError {
    /// The action that failed (its one-line form).
    pub action: String,
    pub error: Box<StepError>,
    /// How many performed actions were undone.
    pub undone: usize,
    pub undo_errors: Vec<String>,
}

fn describe(action: &str, error: &StepError, undone: &usize, undo_errors: &[String]) -> String {
    let mut s = format!("`{action}` failed: {error}");
    if undo_errors.is_empty() {
        s.push_str(&format!(
            "; rolled back to the previous state ({undone} action(s) undone)"
        ));
    } else {
        s.push_str(&format!(
            "; rollback left {} error(s): {}",
            undo_errors.len(),
            undo_errors.join("; ")
        ));
    }
    s
}

/// What [`apply_changes`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Changed {
    /// Each performed action's one-line form, in order (also kept in the state as `last_change`).
    pub performed: Vec<String>,
    pub elapsed: Duration,
}

/// Performs `actions` (computed from the running `old` bundle to `new`) in order,
/// recording every change in `state` as it goes (and, when the state carries a
/// [`crate::state::ChangeRecord`], how many actions completed). On failure the
/// performed actions are reversed, newest first, with the bundles' roles swapped.
pub fn apply_changes(
    actions: &[Action],
    old: &Bundle,
    new: &Bundle,
    sys: &dyn System,
    opts: &Options,
    state: &mut StateFile,
    on_done: &mut dyn FnMut(&Action, Duration),
) -> Result<Changed, ChangeError> {
    let started = Instant::now();
    for (i, action) in actions.iter().enumerate() {
        let t = Instant::now();
        let mut effects = Vec::new();
        let result = perform(action, new, sys, opts, state, &mut effects);
        if let Some(c) = state.state_mut().change.as_mut() {
            c.performed = i + usize::from(result.is_ok());
        }
        let saved = state.save();
        match result.and_then(|()| saved.map_err(StepError::from)) {
            Ok(()) => on_done(action, t.elapsed()),
            Err(error) => {
                let mut undo_errors = Vec::new();
                if let Action::Add(_) = action {
                    // What the failed step itself created.
                    for e in effects.iter().rev() {
                        if let Err(err) = undo_effect(e, sys, state.state_mut()) {
                            undo_errors.push(format!("{action}: {err}"));
                        }
                    }
                    let _ = state.save();
                } else if let Action::Change { .. } = action {
                    let inverse = action.inverse();
                    let mut ignored = Vec::new();
                    if let Err(err) = perform(&inverse, old, sys, opts, state, &mut ignored) {
                        undo_errors.push(format!("{inverse}: {err}"));
                    }
                }
                let undone = roll_back(&actions[..i], old, sys, opts, state, &mut undo_errors);
                return Err(ChangeError {
                    action: action.to_string(),
                    error: Box::new(error),
                    undone,
                    undo_errors,
                });
            }
        }
    }
    let lines: Vec<String> = actions.iter().map(ToString::to_string).collect();
    state.state_mut().last_change = lines.clone();
    state.save().map_err(|e| ChangeError {
        action: "(state)".into(),
        error: Box::new(e.into()),
        undone: 0,
        undo_errors: Vec::new(),
    })?;
    Ok(Changed {
        performed: lines,
        elapsed: started.elapsed(),
    })
}

/// Undoes `performed` actions, newest first (`old`: the bundle being returned to).
/// Returns how many were undone; what failed goes to `undo_errors`.
fn roll_back(
    performed: &[Action],
    old: &Bundle,
    sys: &dyn System,
    opts: &Options,
    state: &mut StateFile,
    undo_errors: &mut Vec<String>,
) -> usize {
    let mut undone = 0;
    for (i, done) in performed.iter().enumerate().rev() {
        let inverse = done.inverse();
        let mut ignored = Vec::new();
        if let Err(err) = perform(&inverse, old, sys, opts, state, &mut ignored) {
            undo_errors.push(format!("{inverse}: {err}"));
        }
        undone += 1;
        if let Some(c) = state.state_mut().change.as_mut() {
            c.performed = i;
        }
        let _ = state.save();
    }
    undone
}

/// Rolls back a change that was killed after `performed` of its `actions` completed
/// (the next change finds its [`crate::state::ChangeRecord`]): whatever the action
/// under way had done is removed first (every removal tolerates what is already
/// gone), then the completed ones are undone, newest first. `old` is the bundle of
/// the generation the emulation returns to.
pub fn recover(
    actions: &[Action],
    performed: usize,
    old: &Bundle,
    sys: &dyn System,
    opts: &Options,
    state: &mut StateFile,
) -> Result<usize, ChangeError> {
    let performed = performed.min(actions.len());
    let mut undo_errors = Vec::new();
    kill_starting(sys, state.state_mut());
    let _ = state.save();
    if let Some(under_way) = actions.get(performed) {
        // Its new side may be half made, its old side half removed: clear both
        // (best effort: much of it may not exist), then put the old side back.
        let (old_step, new_step) = match under_way {
            Action::Add(s) => (None, Some(s)),
            Action::Remove(s) => (Some(s), None),
            Action::Change { old, new } => (Some(&**old), Some(&**new)),
            Action::GoesWith { .. } | Action::Reload(_) => (None, None),
        };
        for step in new_step.into_iter().chain(old_step) {
            let _ = reverse(step, sys, state.state_mut());
            let _ = state.save();
        }
        if let Some(step) = old_step {
            let mut effects = Vec::new();
            if let Err(err) = run(step, old, sys, opts, state, &mut effects) {
                undo_errors.push(format!("{under_way} (put back): {err}"));
            }
        }
    }
    let undone = roll_back(&actions[..performed], old, sys, opts, state, &mut undo_errors);
    if undo_errors.is_empty() {
        Ok(undone)
    } else {
        Err(ChangeError {
            action: "(rolling back an interrupted change)".into(),
            error: Box::new(StepError::Cancelled),
            undone,
            undo_errors,
        })
    }
}

/// Stops processes recorded as starting whose PID was never recorded (a kill between
/// the spawn and the state save): they are found by their log, their stdout.
fn kill_starting(sys: &dyn System, st: &mut State) {
    let starting = std::mem::take(&mut st.starting);
    for s in starting {
        let known: Vec<u32> = st.processes.iter().map(|p| p.pid).collect();
        if let Ok(pids) = sys.pids_logging_to(&s.netns, Path::new(&s.log)) {
            for pid in pids.into_iter().filter(|p| !known.contains(p)) {
                let _ = sys.kill_now(Pid { pid, start_ticks: None });
            }
        }
    }
}

fn undo_effect(e: &Effect, sys: &dyn System, st: &mut State) -> Result<(), SysError> {
    if let Effect::Netns(n) = e {
        stop_all_in(n, sys, st)?;
    }
    e.undo(sys, Path::new(&st.state_dir))?;
    e.forget(st);
    Ok(())
}

/// Stops every process inside `netns` before it is deleted: a process left in a
/// deleted namespace would run on where no `down` can find it.
fn stop_all_in(netns: &str, sys: &dyn System, st: &mut State) -> Result<(), SysError> {
    for pid in sys.netns_pids(&[netns.to_string()])? {
        let start_ticks = st.processes.iter().find(|p| p.pid == pid).and_then(|p| p.start_ticks);
        sys.kill_now(Pid { pid, start_ticks })?;
        st.processes.retain(|p| p.pid != pid);
    }
    Ok(())
}

/// Runs a step of `bundle` as `up` would. What it will create is recorded (and
/// saved) before it is created; what it created is recorded after.
fn run(
    step: &Step,
    bundle: &Bundle,
    sys: &dyn System,
    opts: &Options,
    sf: &mut StateFile,
    effects: &mut Vec<Effect>,
) -> Result<(), StepError> {
    let st = sf.state_mut();
    let state_dir = std::path::PathBuf::from(&st.state_dir);
    let mut intent = false;
    let mut new_netns = false;
    match &step.op {
        Op::CreateNetns(CreateNetns { netns }) if !st.namespaces.contains(netns) => {
            st.namespaces.push(netns.clone());
            new_netns = true;
            intent = true;
        }
        Op::WriteFile(WriteFile { path, .. }) | Op::NftLoad(NftLoad { path, .. }) if !st.paths.contains(path) => {
            st.paths.push(path.clone());
            intent = true;
        }
        Op::StartProcess(p) => {
            st.starting.push(StartingProcess {
                name: p.name.clone(),
                netns: p.netns.clone(),
                log: p.log.clone(),
            });
            for path in p.outputs.iter().chain([&p.log]) {
                if !st.paths.contains(path) {
                    st.paths.push(path.clone());
                }
            }
            intent = true;
        }
        _ => {}
    }
    if intent {
        sf.save()?;
    }
    let result = match &step.op {
        Op::StartProcess(StartProcess { log, .. }) => {
            let started = start_process(&step.op, sys, &state_dir, effects);
            // The PID is recorded at once, before the wait for readiness.
            let st = sf.state_mut();
            st.starting.retain(|s| s.log != *log);
            record_effects(Some(st), effects);
            sf.save()?;
            started.and_then(|p| wait_process_ready(&step.op, p.pid, bundle, &state_dir, sys, opts))
        }
        _ => {
            let mut warnings = Vec::new();
            let result = run_op(&step.op, bundle, &state_dir, sys, opts, effects, &mut warnings);
            record_effects(Some(sf.state_mut()), effects);
            result
        }
    };
    let st = sf.state_mut();
    if let (Op::CreateNetns(CreateNetns { netns }), true, true) = (&step.op, new_netns, effects.is_empty()) {
        if result.is_err() {
            // It was not created (e.g. someone else's namespace of that name): not ours.
            st.namespaces.retain(|n| n != netns);
        }
    }
    result?;
    if !st.applied.contains(&step.id) {
        st.applied.push(step.id.clone());
    }
    Ok(())
}

/// Reverses a step that ran (as `down` would, for that step only).
fn reverse(step: &Step, sys: &dyn System, st: &mut State) -> Result<(), StepError> {
    let state_dir = st.state_dir.clone();
    let remove_file = |path: &str, st: &mut State| -> Result<(), StepError> {
        if removable(Path::new(path), Path::new(&state_dir)) {
            sys.remove_path(Path::new(path))?;
        }
        st.paths.retain(|x| x != path);
        Ok(())
    };
    match &step.op {
        Op::CreateNetns(CreateNetns { netns }) => {
            stop_all_in(netns, sys, st)?;
            sys.delete_netns(netns)?;
            st.namespaces.retain(|n| n != netns);
        }
        Op::CniAdd(add) => sys.cni_del(add)?,
        Op::StartProcess(p) => {
            stop(&p.name, &p.netns, sys, st)?;
            remove_file(&p.log, st)?;
            // Stopped for good: what it wrote goes too, so a new one starts afresh.
            for path in &p.outputs {
                remove_file(path, st)?;
            }
        }
        Op::WriteFile(WriteFile { path, .. }) | Op::NftLoad(NftLoad { path, .. }) | Op::MakeDir(MakeDir { path }) => {
            remove_file(path, st)?
        }
        // Certificates no router uses any more: the directory goes (keys included).
        Op::GenerateCerts(GenerateCerts { dir, .. }) => remove_file(dir, st)?,
        Op::EtcdPut(EtcdPut {
            netns, endpoints, key, ..
        }) => sys.etcd_delete(netns, endpoints, key)?,
        Op::CreateBridge(CreateBridge { netns, name }) => sys.delete_link(netns, name)?,
        Op::CreateVeth(CreateVeth { a, .. }) => sys.delete_link(&a.netns, &a.ifname)?,
        Op::AddAddress(addr) => sys.delete_address(addr)?,
        Op::AddRoute(route) => sys.delete_route(route)?,
        Op::Impair(Impair { netns, ifname, .. }) => sys.clear_impairment(netns, ifname)?,
        // A sysctl is only ever removed with its namespace (the delta refuses otherwise);
        // a wait has nothing to undo.
        Op::SetSysctl(_) | Op::Wait(_) => {}
    }
    st.applied.retain(|id| *id != step.id);
    Ok(())
}

/// Stops the recorded process `name` in `netns` (nothing recorded: nothing to stop).
fn stop(name: &str, netns: &str, sys: &dyn System, st: &mut State) -> Result<(), StepError> {
    let found: Vec<_> = st
        .processes
        .iter()
        .filter(|p| p.name == name && p.netns == netns)
        .cloned()
        .collect();
    for p in found {
        sys.kill(Pid {
            pid: p.pid,
            start_ticks: p.start_ticks,
        })?;
        st.processes.retain(|x| x.pid != p.pid);
    }
    Ok(())
}

/// Performs one action. `new` is the bundle of the plan being moved to (the old
/// one for a rollback).
fn perform(
    action: &Action,
    new: &Bundle,
    sys: &dyn System,
    opts: &Options,
    sf: &mut StateFile,
    effects: &mut Vec<Effect>,
) -> Result<(), StepError> {
    match action {
        Action::Add(step) => run(step, new, sys, opts, sf, effects),
        Action::Remove(step) => reverse(step, sys, sf.state_mut()),
        Action::GoesWith { step, .. } => {
            sf.state_mut().applied.retain(|id| *id != step.id);
            Ok(())
        }
        Action::Change {
            old: before,
            new: after,
        } => {
            match (&before.op, &after.op) {
                (Op::CniAdd(add), _) => sys.cni_del(add)?,
                // The restarted process begins afresh (its outputs are removed as it starts).
                (Op::StartProcess(StartProcess { name, netns, .. }), _) => stop(name, netns, sys, sf.state_mut())?,
                (
                    Op::EtcdPut(EtcdPut {
                        netns, endpoints, key, ..
                    }),
                    Op::EtcdPut(EtcdPut { key: new_key, .. }),
                ) if key != new_key => sys.etcd_delete(netns, endpoints, key)?,
                _ => {}
            }
            run(after, new, sys, opts, sf, effects)
        }
        Action::Reload(step) => {
            let Op::StartProcess(StartProcess { name, netns, .. }) = &step.op else {
                return Ok(());
            };
            let p = sf
                .state()
                .processes
                .iter()
                .find(|p| &p.name == name && &p.netns == netns)
                .ok_or_else(|| SysError::NotFound {
                    what: format!("a recorded process `{name}`"),
                })?;
            sys.reload(Pid {
                pid: p.pid,
                start_ticks: p.start_ticks,
            })?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
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
        let mut processes: Vec<(String, String)> =
            st.processes.iter().map(|p| (p.name.clone(), p.netns.clone())).collect();
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
            c.to_string() == "start-process d-C1w1 flanneld C1w1"
                && !once.swap(true, std::sync::atomic::Ordering::SeqCst)
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
}
