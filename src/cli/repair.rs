//! `knetsim repair` (and `knetsim apply` with nothing edited): brings a running
//! emulation back to its desired state by looking at what really runs. Dead
//! processes are restarted, nft tables deleted by hand loaded again, pods whose
//! namespace was deleted made again; the desired state does not change. It goes
//! through the same lock and commit protocol as every change.

use super::change::{lock, options, peek};
use super::error::{failed, CliError, Outcome};
use super::running::display_name;
use super::Target;
use knetsim_compiler::plan::{Action, Drift};
use knetsim_executor::events::{self, Event};
use knetsim_executor::live::{diagnose, Locked, Repair};
use knetsim_executor::observe::{not_ready, process_alive};
use knetsim_executor::state;
use knetsim_executor::supervise;
use knetsim_executor::system::process::is_root;
use knetsim_executor::LinuxSystem;
use std::collections::BTreeMap;
use std::time::Instant;

#[derive(clap::Args)]
pub struct RepairArgs {
    #[command(flatten)]
    target: Target,
    /// Print what is wrong and what would be done, and change nothing.
    #[arg(long)]
    dry_run: bool,
}

pub fn repair(a: RepairArgs) -> Outcome {
    if a.dry_run {
        return dry_run(&a.target);
    }
    if !is_root() {
        return Err("repairing a running emulation needs root: run it with sudo".into());
    }
    let sys = LinuxSystem::new();
    let (mut locked, _) = lock(&a.target, &sys)?;
    restart_supervisor(&mut locked, &sys, "repair")?;
    repair_locked(&mut locked, &sys, &a.target, "repair")
}

/// Prints the findings and the actions, without the lock: changes nothing.
pub(super) fn dry_run(target: &Target) -> Outcome {
    let running = peek(target)?;
    let st = state::read(&running.opts.state_dir)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("emulation {} is not up", display_name(&running.opts.name)))?;
    let (drift, actions) = diagnose(&st, &running.bundle, &running.skip).map_err(failed)?;
    report(&drift, &actions);
    for a in &actions {
        println!("{a}");
    }
    Ok(0)
}

/// Repairs the emulation whose lock is held (its supervisor already looked after by
/// the caller); `source` (`repair`, `apply`) names who did it in the events.
pub(super) fn repair_locked(locked: &mut Locked, sys: &LinuxSystem, target: &Target, source: &str) -> Outcome {
    let t0 = Instant::now();
    let (drift, actions) = locked.diagnose().map_err(failed)?;
    report(&drift, &actions);
    if actions.is_empty() {
        sync_readiness(locked, sys, source)?;
        return Ok(0);
    }
    let done = locked
        .repair(
            &Repair {
                drift: &drift,
                actions: &actions,
                source,
                notes: BTreeMap::new(),
            },
            sys,
            &options(),
            &mut |a, d| eprintln!("{a} ({:.1} ms)", d.as_secs_f64() * 1000.0),
        )
        .map_err(failed)?;
    sync_readiness(locked, sys, source)?;
    println!(
        "emulation {} repaired in {:.1} ms ({} action{})",
        display_name(&target.options()?.name),
        t0.elapsed().as_secs_f64() * 1000.0,
        done.performed.len(),
        if done.performed.len() == 1 { "" } else { "s" }
    );
    Ok(0)
}

/// Pods whose workload runs (again) are back in their services' rules, and those
/// whose workload does not run leave them.
fn sync_readiness(locked: &mut Locked, sys: &LinuxSystem, source: &str) -> Result<(), CliError> {
    let not_ready = not_ready(locked.file.state());
    if locked
        .set_readiness(&not_ready, source, sys, &options())
        .map_err(failed)?
        .is_some()
    {
        eprintln!("readiness applied: {} pod(s) not ready", not_ready.len());
    }
    Ok(())
}

/// A supervisor that was started (by `up`) and died is started again: its
/// own death is repaired by the next command that changes the emulation
/// (`repair`, `apply`, `pod`, `svc`).
pub(super) fn restart_supervisor(locked: &mut Locked, sys: &LinuxSystem, source: &str) -> Result<(), CliError> {
    let Some(dead) = locked
        .file
        .state()
        .processes
        .iter()
        .find(|p| p.name == supervise::NAME && !process_alive(p.pid, p.start_ticks))
        .cloned()
    else {
        return Ok(());
    };
    let reason = format!("{} (pid {}) is not running", supervise::NAME, dead.pid);
    eprintln!("found: {reason}");
    let started = supervise::start(&mut locked.file, sys, &dead.netns, dead.argv.clone()).map_err(failed)?;
    eprintln!("restarted the supervisor (pid {})", started.pid);
    let event = Event {
        at_ms: events::now_ms(),
        source: source.to_string(),
        object: supervise::NAME.to_string(),
        reason,
        action: "restarted".into(),
    };
    locked.record_events(&[event]).map_err(failed)?;
    Ok(())
}

fn report(drift: &Drift, actions: &[Action]) {
    if drift.is_empty() {
        eprintln!("nothing to repair: everything the plan made is in place");
        return;
    }
    for f in drift.findings() {
        eprintln!("found: {f}");
    }
    eprintln!(
        "{} action{} to repair",
        actions.len(),
        if actions.len() == 1 { "" } else { "s" }
    );
}
