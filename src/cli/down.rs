//! `knetsim down`: tear an emulation down from its recorded state (processes by
//! PID, namespaces, files), or every emulation that has state with `--all`.

use super::error::Outcome;
use super::running::{display_name, emulations, name_flag};
use super::Target;
use knetsim_executor::engine::DownError;
use knetsim_executor::layout::{state_dirs_on_host, HostLayout};
use knetsim_executor::state::{self, LockWait, StateError};
use knetsim_executor::system::process::is_root;
use knetsim_executor::LinuxSystem;
use std::path::Path;
use std::time::Instant;

#[derive(clap::Args)]
pub struct DownArgs {
    #[command(flatten)]
    target: Target,
    /// Tear down every emulation that has state in /tmp/knetsim or /tmp/knetsim-*.
    #[arg(long, conflicts_with_all = ["name", "state_dir"])]
    all: bool,
}

/// Tears one emulation down; prints what happened.
fn down_one(state_dir: &Path, name: &str, sys: &LinuxSystem) -> Result<(), String> {
    let t = Instant::now();
    let (namespaces, processes) = match state::read(state_dir) {
        Ok(Some(st)) => (st.namespaces.len(), st.processes.len()),
        _ => (0, 0),
    };
    let mut tell = |busy: &StateError| eprintln!("waiting: {busy}");
    let mut wait = LockWait {
        timeout: super::change::lock_timeout(),
        on_busy: Some(&mut tell),
    };
    match knetsim_executor::engine::down_waiting(state_dir, name, sys, &mut wait) {
        Ok(()) => {
            println!(
                "emulation {} is down ({namespaces} namespaces, {processes} processes) in {:.2} s",
                display_name(name),
                t.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Err(DownError::State(StateError::NotUp { .. })) if state::remove_abandoned(state_dir) => {
            println!(
                "emulation {} never got past its first instant (an `up` killed early): removed {}",
                display_name(name),
                state_dir.display()
            );
            Ok(())
        }
        Err(DownError::State(StateError::NotUp { path, .. })) => {
            eprintln!(
                "emulation {} is not up (no {}): nothing to do",
                display_name(name),
                path.display()
            );
            Ok(())
        }
        Err(e) => Err(format!("down{}: {e}", name_flag(name))),
    }
}

pub fn down(a: DownArgs) -> Outcome {
    if !is_root() {
        return Err("knetsim down needs root (it deletes network namespaces and mounts): run it with sudo".into());
    }
    let sys = LinuxSystem::new();
    if a.all {
        let found = emulations();
        if found.is_empty() {
            let host = HostLayout::system();
            println!(
                "no emulation has state in {} or {}: nothing to do",
                host.state_dir("").display(),
                host.state_dir("*").display()
            );
        }
        // Every emulation is tried; what failed is said together at the end.
        let failed: Vec<String> = found
            .iter()
            .filter_map(|(name, dir)| down_one(dir, name, &sys).err())
            .collect();
        for dir in abandoned_state_dirs() {
            if state::remove_abandoned(&dir) {
                println!("removed {} (an `up` killed before its first state save)", dir.display());
            }
        }
        warn_unrecorded_namespaces();
        return if failed.is_empty() {
            Ok(0)
        } else {
            Err(failed.join("\n").into())
        };
    }
    let opts = a.target.options()?;
    down_one(&opts.state_dir, &opts.name, &sys)?;
    Ok(0)
}

/// knetsim's state directories without a state: an `up` killed in its
/// first instants may have left them (`state::remove_abandoned` decides).
fn abandoned_state_dirs() -> Vec<std::path::PathBuf> {
    state_dirs_on_host(&HostLayout::system())
        .into_iter()
        .filter(|d| !d.join(state::STATE_FILE).exists())
        .collect()
}

/// Switch namespaces no recorded emulation owns (e.g. from a state directory that
/// was deleted by hand). They are only reported: `down` never removes by name.
fn warn_unrecorded_namespaces() {
    let Ok(entries) = std::fs::read_dir(HostLayout::system().netns_dir) else {
        return;
    };
    let mut stray: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| n == "knetsim-switches" || n.ends_with("-knetsim-switches"))
        .collect();
    stray.sort();
    if !stray.is_empty() {
        eprintln!(
            "note: namespaces of emulations without recorded state remain: {} (remove with `ip netns delete`)",
            stray.join(", ")
        );
    }
}
