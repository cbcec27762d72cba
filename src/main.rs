//! knetsim: the command line. Parsing and dispatch only; the work is in the
//! compiler and executor libraries.

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
