//! The recorded state of the emulation a subcommand names: what `exec`, `shell`,
//! `test`, `status`, the prompt, live changes and `graph --live` read first.

use super::status::display_name;
use super::Target;
use knetsim_compiler::CompileOptions;
use knetsim_executor::state::{self, State};
use std::fmt;

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

/// The options and recorded state of the emulation named by `target`.
pub fn recorded_state(target: &Target) -> Result<(CompileOptions, State), NotRunning> {
    let opts = target.options().map_err(NotRunning::Error)?;
    match state::read(&opts.state_dir) {
        Ok(Some(st)) => Ok((opts, st)),
        Ok(None) => Err(NotRunning::NotUp(opts)),
        Err(e) => Err(NotRunning::Error(e.to_string())),
    }
}
