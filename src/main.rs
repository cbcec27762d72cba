//! knetsim: the command line. Parsing and dispatch only; the work is in the
//! compiler and executor libraries.

mod cli;

fn main() {
    if let Some(code) = knetsim_executor::cni::run_builtin_plugin() {
        std::process::exit(code); // started as a built-in CNI plugin (argv[0] = `flannel`)
    }
    std::process::exit(cli::run());
}
