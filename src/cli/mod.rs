//! Subcommands. Each one is a function returning the process exit code.

mod change;
mod cni;
mod compile;
mod docs;
mod down;
mod edit;
mod edit_checks;
mod error;
mod events;
mod exec;
mod flanneld;
mod graph;
mod graph_live;
mod host_local;
mod matrix;
mod pod;
mod prompt;
mod repair;
mod router;
mod running;
mod serve;
mod status;
mod supervise;
mod svc;
mod test;
mod up;

use clap::{Parser, Subcommand};
use error::{CliError, Outcome};
use knetsim_compiler::{CompileOptions, Source};
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "knetsim",
    version,
    about = "Emulate Kubernetes networking in Linux network namespaces, with real etcd, CNI plugins, nftables and nginx"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options naming the emulation a topology is compiled for.
#[derive(clap::Args, Clone)]
pub struct Target {
    /// Emulation name; prefixes namespaces and moves state to /tmp/knetsim-NAME (default: the seed's plain names).
    /// Without --name, KNETSIM_NAME sets it for every command of a session (docs/tutorial.md runs that way).
    #[arg(long)]
    name: Option<String>,
    /// State directory (default: /tmp/knetsim, or /tmp/knetsim-NAME).
    #[arg(long)]
    state_dir: Option<PathBuf>,
}

impl Target {
    /// The emulation's name: --name, else KNETSIM_NAME (read here rather than by clap, so
    /// that `down --all` is not refused as if --name had been given), else the plain one.
    pub fn name(&self) -> String {
        self.name
            .clone()
            .or_else(|| std::env::var("KNETSIM_NAME").ok())
            .unwrap_or_default()
    }

    pub fn options(&self) -> Result<CompileOptions, String> {
        let mut opts = CompileOptions::named(&self.name());
        opts.coredns_on_path = knetsim_executor::system::process::which("coredns").is_some();
        if let Some(dir) = &self.state_dir {
            opts.state_dir = dir.clone();
        }
        opts.validate()?;
        Ok(opts)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Compile a topology into an artifact bundle directory.
    Compile(compile::CompileArgs),
    /// Check a topology and report every problem with its file:line:col.
    Check(compile::CheckArgs),
    /// Print the ordered action plan of a topology.
    Plan(compile::PlanArgs),
    /// Compare the artifacts of two topologies or bundles (exit 0 same, 1 different, 2 error).
    Diff(compile::DiffArgs),
    /// Draw a topology, or the running emulation with `--live`, as Mermaid, Graphviz dot or SVG.
    Graph(graph::GraphArgs),
    /// Run a CNI ADD / DEL / CHECK of a network namespace like cnitool (NETCONFPATH, CNI_PATH, CNI_ARGS).
    Cni(cni::Args),
    /// Bring an emulation up (needs root): compile, check dependencies, apply, print a summary.
    Up(up::UpArgs),
    /// Create or delete a pod of a running emulation (applies only the difference).
    Pod(pod::PodArgs),
    /// Add or remove a service of a running emulation (reloads its cluster's kube-proxy rules).
    Svc(svc::SvcArgs),
    /// Move a running emulation to an edited topology, applying only the difference; with the running topology, repair it (`--dry-run`: print it).
    Apply(change::ApplyArgs),
    /// Bring a running emulation back to its desired state by looking at what runs: restart dead processes, reload missing nft rules, re-create deleted pods (`--dry-run`: print it).
    Repair(repair::RepairArgs),
    /// What repairs did and why (`repair`, `apply`, the supervisor), like `kubectl get events` (--follow, --json).
    Events(events::EventsArgs),
    /// The emulation's supervisor, started by `up` (unless --no-supervise).
    #[command(hide = true)]
    Supervise(supervise::SuperviseArgs),
    /// Tear an emulation down from its recorded state (`--all`: every emulation).
    Down(down::DownArgs),
    /// Show an emulation's components and their health (exit 1 if not up or unhealthy).
    Status(status::StatusArgs),
    /// Run a command inside a host's (C0w1) or pod's (C0/c1) network namespace.
    Exec(exec::ExecArgs),
    /// Open an interactive shell inside a host's or pod's network namespace.
    Shell(exec::ShellArgs),
    /// Run the topology's [[checks]] in the running emulation; print a pass/fail table (exit 1 if one fails).
    Test(test::TestArgs),
    /// A Mininet-style `knetsim>` prompt over a running emulation (`C0w1 ip -br a`, `pingall`, `help`).
    Cli(prompt::CliArgs),
    /// The built-in flannel agent (flanneld's flags: -iface, -etcd-endpoints, -etcd-prefix, -subnet-file, -ip-masq).
    Flanneld(flanneld::Args),
    /// A tiny HTTP server answering every request with a text (the seed's utils/ss.py), for pod workloads.
    Serve(serve::ServeArgs),
    /// The built-in skupper router (skrouterd's `-c FILE` JSON config), used when no skrouterd is on PATH.
    Router(router::RouterArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions(docs::CompletionsArgs),
    /// Print the man page (roff).
    Man,
}

pub fn run() -> i32 {
    dispatch(Cli::parse().command)
}

/// Runs a knetsim command line in this process (the prompt's `pod`, `svc`, `status`,
/// `down`); a usage error is printed and returns 2 (0 for `--help`).
pub fn run_argv(argv: Vec<String>) -> i32 {
    match Cli::try_parse_from(argv) {
        Ok(cli) => dispatch(cli.command),
        Err(e) => {
            let _ = e.print();
            e.exit_code()
        }
    }
}

/// Runs a subcommand; its error, if any, is printed here, once.
fn dispatch(command: Command) -> i32 {
    error::finish(outcome(command))
}

fn outcome(command: Command) -> Outcome {
    match command {
        Command::Compile(a) => compile::compile(a),
        Command::Check(a) => compile::check(a),
        Command::Plan(a) => compile::plan(a),
        Command::Diff(a) => compile::diff(a),
        Command::Graph(a) => graph::graph(a),
        // The built-in programs speak as the programs they stand in for.
        Command::Cni(a) => Ok(cni::cni(a)),
        Command::Up(a) => up::up(a),
        Command::Pod(a) => pod::pod(a),
        Command::Svc(a) => svc::svc(a),
        Command::Apply(a) => change::apply(a),
        Command::Repair(a) => repair::repair(a),
        Command::Events(a) => events::events(a),
        Command::Supervise(a) => supervise::supervise(a),
        Command::Down(a) => down::down(a),
        Command::Status(a) => status::status(a),
        Command::Exec(a) => exec::exec(a),
        Command::Shell(a) => exec::shell(a),
        Command::Test(a) => test::test(a),
        Command::Cli(a) => prompt::cli(a),
        Command::Serve(a) => Ok(serve::serve(a)),
        Command::Completions(a) => docs::completions(a),
        Command::Man => docs::man(),
        Command::Router(a) => Ok(router::router(a)),
        Command::Flanneld(a) => Ok(flanneld::flanneld(a)),
    }
}

/// Loads a topology file, or the embedded default when none is given.
pub fn load_source(path: Option<&Path>) -> Result<Source, String> {
    match path {
        None => Ok(Source::default_topology()),
        Some(p) => Source::read(p).map_err(|e| format!("cannot read topology {}: {e}", p.display())),
    }
}

/// The options for `target` and the topology at `path` (or the default).
pub fn load_options_and_source(target: &Target, path: Option<&Path>) -> Result<(CompileOptions, Source), CliError> {
    let opts = target.options()?;
    Ok((opts, load_source(path)?))
}
