//! Shell completions and the man page, generated from the command-line definition.

use super::error::{failed, Outcome};
use clap::CommandFactory;
use std::io::Write;

#[derive(clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// `knetsim completions bash > /etc/bash_completion.d/knetsim`
pub fn completions(a: CompletionsArgs) -> Outcome {
    let mut cmd = super::Cli::command();
    clap_complete::generate(a.shell, &mut cmd, "knetsim", &mut std::io::stdout());
    Ok(0)
}

/// `knetsim man > knetsim.1`: the man page in roff.
pub fn man() -> Outcome {
    let mut page = Vec::new();
    clap_mangen::Man::new(super::Cli::command())
        .render(&mut page)
        .map_err(|e| format!("cannot render the man page: {e}"))?;
    std::io::stdout().write_all(&page).map_err(failed)?;
    Ok(0)
}
