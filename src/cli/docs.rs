//! Shell completions and the man page, generated from the command-line definition.

use clap::CommandFactory;
use std::io::Write;

#[derive(clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// `knetsim completions bash > /etc/bash_completion.d/knetsim`
pub fn completions(a: CompletionsArgs) -> i32 {
    let mut cmd = super::Cli::command();
    clap_complete::generate(a.shell, &mut cmd, "knetsim", &mut std::io::stdout());
    0
}

/// `knetsim man > knetsim.1`: the man page in roff.
pub fn man() -> i32 {
    let mut page = Vec::new();
    if let Err(e) = clap_mangen::Man::new(super::Cli::command()).render(&mut page) {
        eprintln!("error: cannot render the man page: {e}");
        return 1;
    }
    match std::io::stdout().write_all(&page) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}
