//! `knetsim router -c FILE`: the built-in skupper router, reading skrouterd's JSON config.
//! The executor starts it on a cluster's worker when no real `skrouterd` is on PATH.

use std::path::PathBuf;

#[derive(clap::Args)]
pub struct RouterArgs {
    /// skrouterd's JSON configuration (a list of [entity, attributes]).
    #[arg(short = 'c', long = "config")]
    config: PathBuf,
}

pub fn router(a: RouterArgs) -> i32 {
    knetsim_router::run_file(&a.config)
}
