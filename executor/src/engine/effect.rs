//! What a step did to the machine that must be undone (a namespace, a process, a
//! path), and the one way each is undone and forgotten, for `up`'s rollback and for
//! live changes alike.

use super::removable;
use crate::state::{ProcessRecord, State};
use crate::system::{Pid, SysError, System};
use std::path::{Path, PathBuf};

/// Something a step did to the machine, which undo and teardown reverse.
#[derive(Debug, Clone)]
pub(crate) enum Effect {
    Netns(String),
    Process(ProcessRecord),
    Path(PathBuf),
}

impl Effect {
    pub(super) fn describe(&self) -> String {
        match self {
            Effect::Netns(n) => format!("delete namespace {n}"),
            Effect::Process(p) => format!("stop {} (pid {})", p.name, p.pid),
            Effect::Path(p) => format!("remove {}", p.display()),
        }
    }

    /// Reverses it on the machine; a path is only removed inside `state_dir`.
    pub(crate) fn undo(&self, sys: &dyn System, state_dir: &Path) -> Result<(), SysError> {
        match self {
            Effect::Netns(n) => sys.delete_netns(n),
            Effect::Process(p) => sys.kill(Pid {
                pid: p.pid,
                start_ticks: p.start_ticks,
            }),
            Effect::Path(p) if removable(p, state_dir) => sys.remove_path(p),
            Effect::Path(_) => Ok(()),
        }
    }

    /// Drops its record from the state (after it was undone).
    pub(crate) fn forget(&self, st: &mut State) {
        match self {
            Effect::Netns(n) => st.namespaces.retain(|x| x != n),
            Effect::Process(p) => st.processes.retain(|x| x.pid != p.pid),
            Effect::Path(p) => {
                let p = p.display().to_string();
                st.paths.retain(|x| *x != p);
            }
        }
    }
}

pub(crate) fn record_effects(st: Option<&mut State>, effects: &[Effect]) {
    let Some(st) = st else { return };
    for e in effects {
        match e {
            Effect::Netns(n) => {
                if !st.namespaces.contains(n) {
                    st.namespaces.push(n.clone());
                }
            }
            Effect::Process(p) => st.processes.push(p.clone()),
            Effect::Path(p) => {
                let p = p.display().to_string();
                if !st.paths.contains(&p) {
                    st.paths.push(p);
                }
            }
        }
    }
}
