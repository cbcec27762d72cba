//! `knetsim supervise` (started by `up`, not by people): the
//! emulation's supervisor, restarting what dies with the kubelet's back-off. The
//! loop is `knetsim_executor::supervise`; this only starts it and logs.

use super::error::Outcome;
use super::Target;
use knetsim_executor::supervise::{self, Backoff};
use knetsim_executor::LinuxSystem;
use std::time::Duration;

#[derive(clap::Args)]
pub struct SuperviseArgs {
    #[command(flatten)]
    target: Target,
    /// How often to look, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    period_ms: u64,
}

pub fn supervise(a: SuperviseArgs) -> Outcome {
    let opts = a.target.options()?;
    let sys = LinuxSystem::new();
    let mut backoff = Backoff::kubelet(supervise::backoff_scale());
    eprintln!(
        "supervising {} every {} ms (back-off {:?} doubling to {:?})",
        opts.state_dir.display(),
        a.period_ms,
        backoff.initial,
        backoff.max
    );
    supervise::run(
        &opts.state_dir,
        &opts.name,
        &sys,
        Duration::from_millis(a.period_ms.max(50)),
        &mut backoff,
        &mut |line| eprintln!("{line}"),
    );
    eprintln!("the emulation's state is gone: stopping");
    Ok(0)
}
