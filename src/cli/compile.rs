//! compile, check, plan, diff: the commands that need no root (`graph` is in graph.rs).

use super::{load_options_and_source, report_diagnostics, Target};
use knetsim_compiler::{self as compiler, diff, Bundle};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct CompileArgs {
    /// Topology file (default: the embedded seed topology).
    topology: Option<PathBuf>,
    /// Output directory for the bundle.
    #[arg(short, long)]
    output: PathBuf,
    #[command(flatten)]
    target: Target,
}

#[derive(clap::Args)]
pub struct CheckArgs {
    /// Topology file (default: the embedded seed topology).
    topology: Option<PathBuf>,
    #[command(flatten)]
    target: Target,
}

#[derive(clap::Args)]
pub struct PlanArgs {
    /// Topology file (default: the embedded seed topology).
    topology: Option<PathBuf>,
    /// Print plan.json instead of the readable list.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    target: Target,
}

#[derive(clap::Args)]
pub struct DiffArgs {
    /// A topology file or a compiled bundle directory.
    a: PathBuf,
    /// A topology file or a compiled bundle directory.
    b: PathBuf,
    /// Only list the changed artifacts.
    #[arg(long)]
    stat: bool,
    /// Lines of context around each change.
    #[arg(short = 'U', long, default_value_t = 3)]
    context: usize,
    #[command(flatten)]
    target: Target,
}

/// Compiles `path` (or the default topology) for `target`; reports problems and returns None on failure.
fn compile_to_bundle(path: Option<&Path>, target: &Target) -> Option<Bundle> {
    let (opts, source) = load_options_and_source(target, path)?;
    compiler::compile(&source, &opts)
        .map_err(|d| report_diagnostics(&d))
        .ok()
}

pub fn compile(a: CompileArgs) -> i32 {
    let Some(bundle) = compile_to_bundle(a.topology.as_deref(), &a.target) else {
        return 1;
    };
    if let Err(e) = bundle.write_to(&a.output) {
        eprintln!("error: cannot write bundle to {}: {e}", a.output.display());
        return 1;
    }
    println!(
        "wrote {} artifacts and manifest.json to {}",
        bundle.files.len(),
        a.output.display()
    );
    0
}

pub fn check(a: CheckArgs) -> i32 {
    let Some((opts, source)) = load_options_and_source(&a.target, a.topology.as_deref()) else {
        return 1;
    };
    match compiler::check(&source, &opts) {
        Ok(m) => {
            let hosts = m.hosts().count();
            let pods: usize = m.clusters.iter().map(|c| c.pods.len()).sum();
            let services: usize = m.clusters.iter().map(|c| c.services.len()).sum();
            println!(
                "{}: ok ({} clusters, {hosts} hosts, {pods} pods, {services} services, {} routers)",
                source.name,
                m.clusters.len(),
                m.routers.len()
            );
            0
        }
        Err(d) => {
            report_diagnostics(&d);
            1
        }
    }
}

pub fn plan(a: PlanArgs) -> i32 {
    let Some(bundle) = compile_to_bundle(a.topology.as_deref(), &a.target) else {
        return 1;
    };
    let text = bundle.get(compiler::artifacts::paths::PLAN).expect("bundle has a plan");
    if a.json {
        print!("{text}");
    } else {
        let plan: compiler::plan::Plan = serde_json::from_str(text).expect("plan.json parses");
        print!("{}", compiler::plan::to_text(&plan));
    }
    0
}

/// A topology file is compiled; a directory is read as a bundle.
fn load_side(path: &Path, target: &Target) -> Option<Bundle> {
    if path.is_dir() {
        Bundle::read_from(path)
            .map_err(|e| eprintln!("error: cannot read bundle {}: {e}", path.display()))
            .ok()
    } else {
        compile_to_bundle(Some(path), target)
    }
}

pub fn diff(a: DiffArgs) -> i32 {
    let (Some(left), Some(right)) = (load_side(&a.a, &a.target), load_side(&a.b, &a.target)) else {
        return 2;
    };
    let changes = diff::changes(&left, &right);
    if changes.is_empty() {
        return 0;
    }
    if a.stat {
        for c in &changes {
            let mark = match c {
                diff::Change::Added(_) => "added",
                diff::Change::Removed(_) => "removed",
                diff::Change::Modified(_) => "modified",
            };
            println!("{mark:>8}  {}", c.path());
        }
    } else {
        print!("{}", diff::unified(&left, &right, a.context));
    }
    1
}
