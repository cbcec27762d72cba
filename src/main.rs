//! knetsim: the command line. Parsing and dispatch only; the work is in the
//! compiler and executor libraries.

mod cli;

fn main() {
    std::process::exit(cli::run());
}
