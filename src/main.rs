//! knetsim: the command line. `cli` has one module per subcommand, which parses its
//! arguments, calls the compiler and executor libraries and renders what they return
//! (status tables, graphs, the `knetsim>` prompt, change summaries), or runs one of the
//! built-in programs (`flanneld`, `router`, `serve`). The same binary is also the
//! built-in CNI plugins, chosen by `argv[0]` before anything else.

mod cli;

fn main() {
    // Behave like other command-line tools when piped into `head`: end quietly on a
    // closed pipe instead of panicking on the failed write.
    // SAFETY: setting a signal disposition to its default before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    if let Some(code) = knetsim_executor::cni::run_builtin_plugin() {
        std::process::exit(code); // started as a built-in CNI plugin (argv[0] = `flannel`)
    }
    std::process::exit(cli::run());
}
