//! `knetsim exec NODE -- CMD...` and `knetsim shell NODE`: run a command, or an
//! interactive shell, inside a host's or a pod's network namespace. The child
//! enters the namespace between fork and exec; knetsim itself never does.

use super::error::{CliError, Outcome};
use super::running::display_name;
use super::running::recorded_state;
use super::Target;
use knetsim_executor::observe::Inventory;
use knetsim_executor::system::linux::open_netns_entry;
use knetsim_executor::system::process::{command_in_netns, exit_code, run_foreground, which};

#[derive(clap::Args)]
pub struct ExecArgs {
    #[command(flatten)]
    target: Target,
    /// A host (`C0w1`, `C0e1`), a pod (`C0/c1`), or `switches`.
    node: String,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

#[derive(clap::Args)]
pub struct ShellArgs {
    #[command(flatten)]
    target: Target,
    /// A host (`C0w1`, `C0e1`), a pod (`C0/c1`), or `switches`.
    node: String,
}

/// The namespace of `node` in the emulation named by `target`, or an error message.
fn resolve(target: &Target, node: &str) -> Result<(String, String), String> {
    let (opts, _) = recorded_state(target)?;
    let inv = Inventory::load(&opts.state_dir)?;
    match inv.netns_of(node) {
        Some(ns) => Ok((ns.to_string(), opts.name)),
        None => Err(format!(
            "no node `{node}` in emulation {}; nodes: {}",
            display_name(&opts.name),
            inv.node_names()
        )),
    }
}

/// Runs `program` in `netns` in the foreground; `Ok` with its exit code.
pub(super) fn run_in(netns: &str, node: &str, program: &str, args: &[String], env: &[(&str, String)]) -> Outcome {
    let fd = open_netns_entry(netns).map_err(|e| format!("{node}: {e}"))?;
    let mut cmd = command_in_netns(fd, program, args);
    cmd.env("KNETSIM_NODE", node);
    for (k, v) in env {
        cmd.env(k, v);
    }
    match run_foreground(&mut cmd) {
        Ok(status) => Ok(exit_code(status)),
        // As a shell says it: 127 not found, 126 not runnable.
        Err(e) => Err(CliError::Code(
            if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            },
            format!("cannot run `{program}` in {node}: {e}"),
        )),
    }
}

pub fn exec(a: ExecArgs) -> Outcome {
    let (netns, _) = resolve(&a.target, &a.node)?;
    run_in(&netns, &a.node, &a.command[0], &a.command[1..], &[])
}

pub fn shell(a: ShellArgs) -> Outcome {
    let (netns, name) = resolve(&a.target, &a.node)?;
    let label = if name.is_empty() {
        a.node.clone()
    } else {
        format!("{name}:{}", a.node)
    };
    if which("bash").is_some() {
        // No rc files: they would set their own PS1.
        let args = ["--norc", "--noprofile", "-i"].map(String::from);
        run_in(
            &netns,
            &a.node,
            "bash",
            &args,
            &[("PS1", format!("[knetsim {label}] \\w \\$ "))],
        )
    } else {
        run_in(
            &netns,
            &a.node,
            "sh",
            &["-i".to_string()],
            &[("PS1", format!("[knetsim {label}] # "))],
        )
    }
}
