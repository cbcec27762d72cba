//! Live changes: performs the actions of a plan delta
//! ([`knetsim_compiler::plan::delta`]) on a running emulation, one after another,
//! recording every effect in its state file before it happens (namespaces, files,
//! processes about to start) and the count of completed actions after each one; on
//! the first failure it undoes what it did, newest first, back to the previous
//! running state. A change killed half-way is rolled back the same way by the next
//! one ([`recover`]).

use crate::engine::{
    record_effects, removable, run_op, start_process, wait_process_ready, Begin, Effect, Options, StepError,
};
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
            if let Err(err) = run(step, old, sys, opts, state, Begin::Afresh, &mut effects) {
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

/// Runs a step of `bundle` as `up` would (a process begins as `begin` says). What
/// it will create is recorded (and saved) before it is created; what it created is
/// recorded after.
fn run(
    step: &Step,
    bundle: &Bundle,
    sys: &dyn System,
    opts: &Options,
    sf: &mut StateFile,
    begin: Begin,
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
            let started = start_process(&step.op, sys, &state_dir, begin, effects);
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
        // Its tables go too while the namespace stays (e.g. the last policy of a cluster
        // removed): an empty transaction that adds then deletes each one.
        Op::NftLoad(NftLoad { netns, path, .. }) => {
            let loaded = std::fs::read_to_string(path).unwrap_or_default();
            let tables = knetsim_compiler::artifacts::nft::tables(&loaded);
            if st.namespaces.contains(netns) && !tables.is_empty() {
                let drop: String = tables
                    .iter()
                    .map(|t| format!("add table {t}\ndelete table {t}\n"))
                    .collect();
                sys.write_file(Path::new(path), drop.as_bytes())?;
                sys.nft_load(netns, Path::new(path))?;
            }
            remove_file(path, st)?
        }
        Op::WriteFile(WriteFile { path, .. }) | Op::MakeDir(MakeDir { path }) => remove_file(path, st)?,
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

/// Stops what a process left behind that logs to its `log` in `netns` and no
/// record names (nginx workers whose master died keep serving).
fn stop_leftovers(netns: &str, log: &str, sys: &dyn System, st: &State) -> Result<(), StepError> {
    for pid in sys.pids_logging_to(netns, Path::new(log))? {
        if !st.processes.iter().any(|p| p.pid == pid) {
            sys.kill_now(Pid { pid, start_ticks: None })?;
        }
    }
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
        Action::Add(step) => run(step, new, sys, opts, sf, Begin::Afresh, effects),
        Action::Remove(step) => reverse(step, sys, sf.state_mut()),
        Action::GoesWith { step, .. } => {
            sf.state_mut().applied.retain(|id| *id != step.id);
            Ok(())
        }
        Action::Change {
            old: before,
            new: after,
        } => {
            // A process restarted after it died counts one restart more.
            let mut restarts = None;
            match (&before.op, &after.op) {
                (Op::CniAdd(add), _) => sys.cni_del(add)?,
                (Op::StartProcess(StartProcess { name, netns, log, .. }), _) => {
                    restarts = sf
                        .state()
                        .processes
                        .iter()
                        .find(|p| &p.name == name && &p.netns == netns)
                        .map(|p| p.restarts + u32::from(!crate::observe::process_alive(p.pid, p.start_ticks)));
                    stop(name, netns, sys, sf.state_mut())?;
                    stop_leftovers(netns, log, sys, sf.state())?;
                }
                (
                    Op::EtcdPut(EtcdPut {
                        netns, endpoints, key, ..
                    }),
                    Op::EtcdPut(EtcdPut { key: new_key, .. }),
                ) if key != new_key => sys.etcd_delete(netns, endpoints, key)?,
                _ => {}
            }
            // The same step again (a restart, a repair) resumes on what it stored;
            // another one begins afresh.
            let begin = if before.op == after.op {
                Begin::Resume
            } else {
                Begin::Afresh
            };
            run(after, new, sys, opts, sf, begin, effects)?;
            if let (Some(n), Op::StartProcess(StartProcess { name, netns, .. })) = (restarts, &after.op) {
                if let Some(p) = sf
                    .state_mut()
                    .processes
                    .iter_mut()
                    .find(|p| &p.name == name && &p.netns == netns)
                {
                    p.restarts = n;
                }
                sf.save()?;
            }
            Ok(())
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
mod tests;
