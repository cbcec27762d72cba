//! Live changes to a running emulation: `knetsim apply`, and the machinery that
//! `pod` and `svc` share. A change takes the emulation's lock before it reads
//! anything (waiting for another change to finish), compiles the edited topology,
//! computes the delta against the running plan and applies only that, under the
//! commit protocol of [`knetsim_executor::live`]. A change that does not compile,
//! or that the running emulation cannot take, changes nothing; one that fails
//! half-way is rolled back, and so is one whose process was killed (by the next).

use super::error::{failed, CliError, Outcome};
use super::running::display_name;
use super::Target;
use knetsim_compiler::plan::{delta, Action, Component};
use knetsim_compiler::{self as compiler, Bundle, CompileOptions, Source};
use knetsim_executor::engine::Options;
use knetsim_executor::layout::StateLayout;
use knetsim_executor::live::{plan_of, Locked};
use knetsim_executor::state::{self, LockWait, DEFAULT_LOCK_TIMEOUT};
use knetsim_executor::system::process::is_root;
use knetsim_executor::LinuxSystem;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct ApplyArgs {
    /// The edited topology to move the running emulation to.
    topology: PathBuf,
    #[command(flatten)]
    target: Target,
    /// Print the actions the change would perform, and change nothing.
    #[arg(long)]
    dry_run: bool,
}

/// A running emulation's desired state, as a change (or its dry run) sees it.
pub struct Running {
    pub opts: CompileOptions,
    pub text: String,
    pub bundle: Bundle,
    pub skip: Vec<Component>,
}

/// How long a change waits for another one: KNETSIM_LOCK_TIMEOUT seconds, else 60 s.
pub fn lock_timeout() -> Duration {
    std::env::var("KNETSIM_LOCK_TIMEOUT")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_LOCK_TIMEOUT)
}

pub(super) fn options() -> Options {
    let mut options = Options::new(1);
    options.probe_timeout = Duration::from_secs(30);
    options
}

/// Takes the emulation's lock (waiting for a holder, saying who) and reads its
/// desired state; a change left half-done by a killed process is rolled back first.
pub(super) fn lock(target: &Target, sys: &LinuxSystem) -> Result<(Locked, Running), String> {
    let opts = target.options()?;
    let mut tell = |busy: &state::StateError| eprintln!("waiting: {busy}");
    let mut wait = LockWait {
        timeout: lock_timeout(),
        on_busy: Some(&mut tell),
    };
    let locked = Locked::open(&opts.state_dir, &opts.name, &mut wait, sys, &options(), &mut |note| {
        eprintln!("note: {note}")
    })
    .map_err(|e| e.to_string())?;
    let mut opts = opts;
    // Readiness is a live fact every compile of this emulation takes.
    opts.not_ready = locked.file.state().not_ready.iter().cloned().collect();
    let running = Running {
        opts,
        text: locked.text.clone(),
        bundle: locked.bundle.clone(),
        skip: locked.skip.clone(),
    };
    Ok((locked, running))
}

/// The desired state without the lock, for a dry run: the generation that
/// `state.json` names is complete and stays on disk while a change replaces it.
pub(super) fn peek(target: &Target) -> Result<Running, String> {
    let opts = target.options()?;
    let layout = StateLayout::new(&opts.state_dir);
    let mut tries = 0;
    loop {
        let st = state::read(&opts.state_dir)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("emulation {} is not up", display_name(&opts.name)))?;
        if !st.complete {
            return Err(format!(
                "emulation {} is not completely up (run `knetsim status` or `knetsim down`)",
                display_name(&opts.name)
            ));
        }
        match layout.read_generation(st.generation) {
            Ok((text, bundle)) => {
                let skip = st
                    .skip
                    .iter()
                    .map(|s| s.parse::<Component>())
                    .collect::<Result<Vec<_>, _>>()?;
                let mut opts = opts;
                opts.not_ready = st.not_ready.iter().cloned().collect();
                return Ok(Running {
                    opts,
                    text,
                    bundle,
                    skip,
                });
            }
            Err(_) if tries < 5 => tries += 1,
            Err(e) => return Err(format!("cannot read the running topology: {e}")),
        }
    }
}

/// `pod`/`svc` edits: edit the running emulation's stored topology text and apply
/// (or with `dry_run` print) the resulting change.
pub fn edit_running(target: &Target, dry_run: bool, edit: impl FnOnce(&Running) -> Result<String, String>) -> Outcome {
    run_change(target, dry_run, "topology.toml (edited)", Unchanged::NothingToDo, edit)
}

/// What a change whose topology equals the running one does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Unchanged {
    NothingToDo,
    /// `apply` of the running topology: converge on it by observation (`repair`).
    Repair,
}

/// Moves the running emulation to the topology `edit` makes of its desired one.
/// Exit code 0 = changed (or nothing to change), 1 = refused or failed.
fn run_change(
    target: &Target,
    dry_run: bool,
    origin: &str,
    unchanged: Unchanged,
    edit: impl FnOnce(&Running) -> Result<String, String>,
) -> Outcome {
    let t0 = Instant::now();
    // KNETSIM_TIMING=1: where a change spends its time, on stderr.
    let timing = std::env::var_os("KNETSIM_TIMING").is_some();
    let mark = |what: &str| {
        if timing {
            eprintln!("timing: {what} at {:.1} ms", t0.elapsed().as_secs_f64() * 1000.0);
        }
    };
    if dry_run {
        let running = peek(target)?;
        let text = edit(&running)?;
        let (_, new_bundle, actions) = compute(&running, origin, text)?;
        if actions.is_empty() && new_bundle == running.bundle && unchanged == Unchanged::Repair {
            return super::repair::dry_run(target);
        }
        for a in &actions {
            println!("{a}");
        }
        if actions.is_empty() && new_bundle != running.bundle {
            eprintln!("no actions: only the stored topology changes (e.g. probes, which the supervisor reads)");
        } else if actions.is_empty() {
            eprintln!("no changes");
        }
        return Ok(0);
    }
    if !is_root() {
        return Err("changing a running emulation needs root: run it with sudo".into());
    }
    let sys = LinuxSystem::new();
    let (mut locked, running) = lock(target, &sys)?;
    mark("state locked");
    super::repair::restart_supervisor(&mut locked, &sys, "change")?;
    let text = edit(&running)?;
    let (source, new_bundle, actions) = compute(&running, origin, text)?;
    mark("delta computed");
    // The same desired state: converge on it. (A change without actions, such as a
    // pod's probes, is still stored: the supervisor reads it from the generation.)
    if actions.is_empty() && new_bundle == running.bundle && unchanged == Unchanged::Repair {
        return super::repair::repair_locked(&mut locked, &sys, target, "apply");
    }
    let done = locked
        .change_to(&source.text, &new_bundle, &actions, &sys, &options(), &mut |a, d| {
            eprintln!("{a} ({:.1} ms)", d.as_secs_f64() * 1000.0)
        })
        .map_err(failed)?;
    mark("applied and stored");
    println!(
        "emulation {} changed in {:.1} ms ({} action{})",
        display_name(&running.opts.name),
        t0.elapsed().as_secs_f64() * 1000.0,
        done.performed.len(),
        if done.performed.len() == 1 { "" } else { "s" }
    );
    Ok(0)
}

/// Compiles `text` and computes the actions that move `running` to it.
fn compute(running: &Running, origin: &str, text: String) -> Result<(Source, Bundle, Vec<Action>), CliError> {
    let source = Source::new(origin, text);
    let compiled = compiler::compile_all(&source, &running.opts).map_err(|d| {
        eprint!("{}", d.render());
        CliError::from("the change does not compile; nothing was changed")
    })?;
    eprint!("{}", compiled.model.warnings);
    let (new_plan, new_bundle) = (compiled.plan.without(&running.skip), compiled.bundle);
    // The running plan comes from the stored generation, as the disk has it.
    let old_plan = plan_of(&running.bundle, &running.skip).map_err(failed)?;
    let actions = delta(&old_plan, &running.bundle, &new_plan, &new_bundle).map_err(|unsupported| {
        let list: Vec<String> = unsupported.iter().map(|u| format!("  - {u}")).collect();
        CliError::Failed(format!(
            "the running emulation cannot take this change (nothing was changed):\n{}",
            list.join("\n")
        ))
    })?;
    Ok((source, new_bundle, actions))
}

pub fn apply(a: ApplyArgs) -> Outcome {
    let text = std::fs::read_to_string(&a.topology)
        .map_err(|e| format!("cannot read topology {}: {e}", a.topology.display()))?;
    run_change(
        &a.target,
        a.dry_run,
        &a.topology.display().to_string(),
        Unchanged::Repair,
        |_| Ok(text),
    )
}
