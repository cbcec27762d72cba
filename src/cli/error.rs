//! The command line's one error path, as netavark's `main` has it: a subcommand
//! returns an [`Outcome`]; [`finish`] prints an error once and picks the exit code.
//! Subcommands print what they found (tables, diagnostics, progress), never their
//! own "error:" line.

use knetsim_compiler::Diagnostics;

/// `Ok(code)`: the command ran to the end; the code says how it found things
/// (`status`: 1 = unhealthy, `diff`: 1 = different, a command run in a namespace: its code).
pub type Outcome = Result<i32, CliError>;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A failure, said in a sentence: `error: ...`, exit 1.
    #[error("{0}")]
    Failed(String),
    /// A topology that does not compile: its diagnostics, rendered with file:line:col.
    #[error("{}", .0.render())]
    Diagnostics(Diagnostics),
    /// A failure with its own exit code (`diff`: 2, where 1 means "different").
    #[error("{1}")]
    Code(i32, String),
    /// Already reported in full above (a failure table, a program's own output):
    /// only the exit code is left to give.
    #[error("exit {0}")]
    Reported(i32),
}

impl From<String> for CliError {
    fn from(s: String) -> Self {
        CliError::Failed(s)
    }
}

impl From<&str> for CliError {
    fn from(s: &str) -> Self {
        CliError::Failed(s.to_string())
    }
}

impl From<Diagnostics> for CliError {
    fn from(d: Diagnostics) -> Self {
        CliError::Diagnostics(d)
    }
}

/// Wraps any displayable error of the libraries as a failure sentence.
pub fn failed(e: impl std::fmt::Display) -> CliError {
    CliError::Failed(e.to_string())
}

/// Prints the outcome's error, if any, once; returns the process exit code.
pub fn finish(outcome: Outcome) -> i32 {
    match outcome {
        Ok(code) => code,
        Err(CliError::Failed(m)) => {
            eprintln!("error: {m}");
            1
        }
        Err(CliError::Code(code, m)) => {
            eprintln!("error: {m}");
            code
        }
        Err(CliError::Diagnostics(d)) => {
            eprint!("{}", d.render());
            1
        }
        Err(CliError::Reported(code)) => code,
    }
}
