//! The recorded state of the emulation a subcommand names: what `exec`, `shell`,
//! `test`, `status`, the prompt, live changes and `graph --live` read first.

use super::Target;
use knetsim_compiler::CompileOptions;
use knetsim_executor::layout::{state_dirs_on_host, HostLayout};
use knetsim_executor::state::{self, State};
use std::fmt;
use std::path::PathBuf;

/// Why the emulation named by a [`Target`] has no recorded state to act on.
pub enum NotRunning {
    /// No state file: the emulation is not up.
    NotUp(CompileOptions),
    /// Bad options (name, state directory), or a state file that cannot be read.
    Error(String),
}

impl fmt::Display for NotRunning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotRunning::NotUp(opts) => write!(
                f,
                "emulation {} is not up (no {})",
                display_name(&opts.name),
                opts.state_dir.join(state::STATE_FILE).display()
            ),
            NotRunning::Error(e) => f.write_str(e),
        }
    }
}

impl From<NotRunning> for String {
    fn from(e: NotRunning) -> String {
        e.to_string()
    }
}

impl From<NotRunning> for super::error::CliError {
    fn from(e: NotRunning) -> Self {
        super::error::CliError::Failed(e.to_string())
    }
}

/// The options and recorded state of the emulation named by `target`.
pub fn recorded_state(target: &Target) -> Result<(CompileOptions, State), NotRunning> {
    let opts = target.options().map_err(NotRunning::Error)?;
    match state::read(&opts.state_dir) {
        Ok(Some(st)) => Ok((opts, st)),
        Ok(None) => Err(NotRunning::NotUp(opts)),
        Err(e) => Err(NotRunning::Error(e.to_string())),
    }
}

/// Directories that may hold an emulation's state: `/tmp/knetsim` and `/tmp/knetsim-*`.
pub fn state_dirs() -> Vec<PathBuf> {
    state_dirs_on_host(&HostLayout::system())
        .into_iter()
        .filter(|d| d.join(state::STATE_FILE).exists())
        .collect()
}

/// `(name, state dir)` of every emulation with recorded state.
pub fn emulations() -> Vec<(String, PathBuf)> {
    state_dirs()
        .into_iter()
        .filter_map(|d| match state::read(&d) {
            Ok(Some(st)) => Some((st.name, d)),
            _ => None,
        })
        .collect()
}

pub fn display_name(name: &str) -> &str {
    if name.is_empty() {
        "default"
    } else {
        name
    }
}

pub fn name_flag(name: &str) -> String {
    if name.is_empty() {
        String::new()
    } else {
        format!(" --name {name}")
    }
}
