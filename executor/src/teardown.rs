//! Removing a whole emulation from its recorded state: every recorded process (and
//! any other inside its namespaces), every namespace, every file under its state
//! directory. `knetsim down` is [`down`].

use crate::engine::removable;
use crate::par::par_map;
use crate::state::{LockWait, ProcessRecord, State, StateError, StateFile};
use crate::system::{Pid, SysError, System};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TeardownError {
    #[error("stopping {name} (pid {pid}): {error}")]
    Kill { name: String, pid: u32, error: SysError },
    #[error("finding processes in the emulation's namespaces: {0}")]
    FindProcesses(SysError),
    #[error("deleting namespace {netns}: {error}")]
    DeleteNetns { netns: String, error: SysError },
    #[error("removing {}: {error}", .path.display())]
    Remove { path: PathBuf, error: SysError },
}

const TEARDOWN_THREADS: usize = 8;

/// Removes an emulation from its recorded state: stops every recorded process at
/// once ([`System::kill_now`]; and any other process still inside its
/// namespaces), deletes every recorded
/// namespace and removes the files it created under its state directory. Goes on
/// past failures and returns all of them; empty = everything is gone.
pub fn teardown(state: &State, sys: &dyn System) -> Vec<TeardownError> {
    let mut errors = Vec::new();
    let procs: Vec<&ProcessRecord> = state.processes.iter().rev().collect();
    for (p, r) in procs.iter().zip(par_map(&procs, TEARDOWN_THREADS, |p| {
        sys.kill_now(Pid {
            pid: p.pid,
            start_ticks: p.start_ticks,
        })
    })) {
        if let Err(error) = r {
            errors.push(TeardownError::Kill {
                name: p.name.clone(),
                pid: p.pid,
                error,
            });
        }
    }
    // Processes not in the record (started just before a crash, or forked by a daemon).
    if !state.namespaces.is_empty() {
        match sys.netns_pids(&state.namespaces) {
            Ok(pids) => {
                let known: HashSet<u32> = state.processes.iter().map(|p| p.pid).collect();
                let stray: Vec<u32> = pids.into_iter().filter(|p| !known.contains(p)).collect();
                let results = par_map(&stray, TEARDOWN_THREADS, |&pid| {
                    sys.kill_now(Pid { pid, start_ticks: None })
                });
                for (pid, r) in stray.iter().zip(results) {
                    if let Err(error) = r {
                        errors.push(TeardownError::Kill {
                            name: "process in the emulation's namespaces".into(),
                            pid: *pid,
                            error,
                        });
                    }
                }
            }
            Err(e) => errors.push(TeardownError::FindProcesses(e)),
        }
    }
    let namespaces: Vec<&String> = state.namespaces.iter().rev().collect();
    for (n, r) in namespaces
        .iter()
        .zip(par_map(&namespaces, TEARDOWN_THREADS, |n| sys.delete_netns(n)))
    {
        if let Err(error) = r {
            errors.push(TeardownError::DeleteNetns {
                netns: n.to_string(),
                error,
            });
        }
    }
    let state_dir = Path::new(&state.state_dir);
    let mut paths: Vec<&str> = state.paths.iter().map(String::as_str).collect();
    paths.extend(state.processes.iter().map(|p| p.log.as_str()));
    let mut seen = HashSet::new();
    for p in paths.into_iter().rev() {
        let path = Path::new(p);
        if !seen.insert(p) || !removable(path, state_dir) {
            continue;
        }
        if let Err(error) = sys.remove_path(path) {
            errors.push(TeardownError::Remove {
                path: path.to_path_buf(),
                error,
            });
        }
    }
    errors
}

#[derive(Debug, thiserror::Error)]
pub enum DownError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{} error(s) tearing down (the state is kept; run down again): {}", .0.len(), join_errors(.0))]
    Teardown(Vec<TeardownError>),
}

fn join_errors(errors: &[TeardownError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// `knetsim down` for one emulation: locks its state, tears everything down and,
/// if nothing failed, removes the state (and the state directory if `up` made it).
pub fn down(state_dir: &Path, name: &str, sys: &dyn System) -> Result<(), DownError> {
    down_waiting(state_dir, name, sys, &mut LockWait::no_wait())
}

/// [`down`], waiting for a change that holds the lock as `wait` says.
pub fn down_waiting(state_dir: &Path, name: &str, sys: &dyn System, wait: &mut LockWait) -> Result<(), DownError> {
    let sf = StateFile::open_waiting(state_dir, name, wait)?;
    let errors = teardown(sf.state(), sys);
    if !errors.is_empty() {
        return Err(DownError::Teardown(errors));
    }
    sf.destroy()?;
    Ok(())
}
