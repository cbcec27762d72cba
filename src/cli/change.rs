//! Live changes to a running emulation: `knetsim apply`, and the machinery that
//! `pod` and `svc` share. The emulation keeps its desired topology text
//! (`<state>/topology.toml`) and compiled bundle (`<state>/bundle/`); a change
//! compiles the new text, computes the delta against the running plan and applies
//! only that. A change that does not compile, or that the running emulation cannot
//! take, changes nothing; one that fails half-way is rolled back.

use super::running::recorded_state;
use super::status::{display_name, BUNDLE_DIR};
use super::up::is_root;
use super::{report_diagnostics, Target};
use knetsim_compiler::artifacts::paths::PLAN;
use knetsim_compiler::diff::{changes, Change};
use knetsim_compiler::plan::{delta, Component, Plan};
use knetsim_compiler::{self as compiler, Bundle, CompileOptions, Source};
use knetsim_executor::delta::apply_changes;
use knetsim_executor::engine::Options;
use knetsim_executor::state::StateFile;
use knetsim_executor::LinuxSystem;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The running emulation's desired topology, inside its state directory.
pub const TOPOLOGY_FILE: &str = "topology.toml";

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

/// A running emulation, as a change sees it.
pub struct Running {
    pub opts: CompileOptions,
    pub text: String,
    pub bundle: Bundle,
    pub skip: Vec<Component>,
}

impl Running {
    pub fn load(target: &Target) -> Result<Running, String> {
        let (mut opts, state) = recorded_state(target)?;
        if !state.complete {
            return Err(format!(
                "emulation {} is not completely up (run `knetsim status` or `knetsim down`)",
                display_name(&opts.name)
            ));
        }
        opts.state_dir = PathBuf::from(&state.state_dir);
        let path = opts.state_dir.join(TOPOLOGY_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "cannot read the running topology {}: {e} (brought up by an older knetsim? run down and up)",
                path.display()
            )
        })?;
        let bundle = Bundle::read_from(&opts.state_dir.join(BUNDLE_DIR))
            .map_err(|e| format!("cannot read the running bundle: {e}"))?;
        let skip = state
            .skip
            .iter()
            .map(|s| s.parse::<Component>())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Running {
            opts,
            text,
            bundle,
            skip,
        })
    }

    fn plan(&self, bundle: &Bundle) -> Plan {
        serde_json::from_str::<Plan>(bundle.get(PLAN).expect("bundle has a plan"))
            .expect("plan.json parses")
            .without(&self.skip)
    }
}

/// Writes only the artifacts that differ, and the manifest.
fn update_bundle(old: &Bundle, new: &Bundle, dir: &Path) -> std::io::Result<()> {
    for c in changes(old, new) {
        let target = dir.join(c.path());
        match c {
            Change::Removed(_) => match std::fs::remove_file(&target) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            },
            Change::Added(p) | Change::Modified(p) => {
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(&target, new.get(&p).unwrap_or_default())?;
            }
        }
    }
    std::fs::write(dir.join(knetsim_compiler::bundle::MANIFEST), new.manifest_json())
}

/// Moves the running emulation to `new_text` (named `origin` in diagnostics).
/// Exit code 0 = changed (or nothing to change), 1 = refused or failed.
/// `pod`/`svc` edits: load the running emulation, edit its stored topology text, and
/// apply (or with `dry_run` print) the resulting change.
pub fn edit_running(target: &Target, dry_run: bool, edit: impl FnOnce(&Running) -> Result<String, String>) -> i32 {
    match Running::load(target).and_then(|r| edit(&r).map(|text| (r, text))) {
        Ok((running, text)) => change_to(running, "topology.toml (edited)", text, dry_run),
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

pub fn change_to(running: Running, origin: &str, new_text: String, dry_run: bool) -> i32 {
    let t0 = Instant::now();
    // KNETSIM_TIMING=1: where a change spends its time, on stderr.
    let timing = std::env::var_os("KNETSIM_TIMING").is_some();
    let mark = |what: &str| {
        if timing {
            eprintln!("timing: {what} at {:.1} ms", t0.elapsed().as_secs_f64() * 1000.0);
        }
    };
    let source = Source::new(origin, new_text);
    let new_bundle = match compiler::compile(&source, &running.opts) {
        Ok(b) => b,
        Err(d) => {
            report_diagnostics(&d);
            eprintln!("error: the change does not compile; nothing was changed");
            return 1;
        }
    };
    mark("compiled");
    let old_plan = running.plan(&running.bundle);
    let new_plan = running.plan(&new_bundle);
    let actions = match delta(&old_plan, &running.bundle, &new_plan, &new_bundle) {
        Ok(a) => a,
        Err(unsupported) => {
            eprintln!("error: the running emulation cannot take this change (nothing was changed):");
            for u in unsupported {
                eprintln!("  - {u}");
            }
            return 1;
        }
    };
    mark("delta computed");
    if dry_run {
        for a in &actions {
            println!("{a}");
        }
        if actions.is_empty() {
            eprintln!("no changes");
        }
        return 0;
    }
    if !is_root() {
        eprintln!("error: changing a running emulation needs root: run it with sudo");
        return 1;
    }
    let name = running.opts.name.clone();
    let state_dir = running.opts.state_dir.clone();
    let mut sf = match StateFile::open(&state_dir, &name) {
        Ok(sf) => sf,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    mark("state locked");
    let sys = LinuxSystem::new();
    let mut options = Options::new(1);
    options.probe_timeout = Duration::from_secs(30);
    let result = apply_changes(
        &actions,
        &running.bundle,
        &new_bundle,
        &sys,
        &options,
        &mut sf,
        &mut |a, d| eprintln!("{a} ({:.1} ms)", d.as_secs_f64() * 1000.0),
    );
    match result {
        Ok(done) => {
            mark("applied");
            let stored = update_bundle(&running.bundle, &new_bundle, &state_dir.join(BUNDLE_DIR))
                .and_then(|()| std::fs::write(state_dir.join(TOPOLOGY_FILE), &source.text));
            if let Err(e) = stored {
                eprintln!("error: the change was applied but storing the new topology failed: {e}");
                return 1;
            }
            mark("stored");
            println!(
                "emulation {} changed in {:.1} ms ({} action{})",
                display_name(&name),
                t0.elapsed().as_secs_f64() * 1000.0,
                done.performed.len(),
                if done.performed.len() == 1 { "" } else { "s" }
            );
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

pub fn apply(a: ApplyArgs) -> i32 {
    let running = match Running::load(&a.target) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let text = match std::fs::read_to_string(&a.topology) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read topology {}: {e}", a.topology.display());
            return 1;
        }
    };
    change_to(running, &a.topology.display().to_string(), text, a.dry_run)
}
