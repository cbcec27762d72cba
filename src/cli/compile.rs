//! compile, check, plan, diff: the commands that need no root (`graph` is in graph.rs).

use super::error::{CliError, Outcome};
use super::{load_options_and_source, Target};
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

/// Compiles `path` (or the default topology) for `target`.
fn compile_to_bundle(path: Option<&Path>, target: &Target) -> Result<Bundle, CliError> {
    let (opts, source) = load_options_and_source(target, path)?;
    Ok(compiler::compile(&source, &opts)?)
}

pub fn compile(a: CompileArgs) -> Outcome {
    let bundle = compile_to_bundle(a.topology.as_deref(), &a.target)?;
    bundle
        .write_to(&a.output)
        .map_err(|e| format!("cannot write bundle to {}: {e}", a.output.display()))?;
    println!(
        "wrote {} artifacts and manifest.json to {}",
        bundle.files.len(),
        a.output.display()
    );
    Ok(0)
}

pub fn check(a: CheckArgs) -> Outcome {
    let (opts, source) = load_options_and_source(&a.target, a.topology.as_deref())?;
    let m = compiler::check(&source, &opts)?;
    eprint!("{}", m.warnings);
    let hosts = m.hosts().count();
    let pods: usize = m.clusters.iter().map(|c| c.pods.len()).sum();
    let services: usize = m.clusters.iter().map(|c| c.services.len()).sum();
    println!(
        "{}: ok ({} clusters, {hosts} hosts, {pods} pods, {services} services, {} routers)",
        source.name,
        m.clusters.len(),
        m.routers.len()
    );
    Ok(0)
}

pub fn plan(a: PlanArgs) -> Outcome {
    let (opts, source) = load_options_and_source(&a.target, a.topology.as_deref())?;
    let compiled = compiler::compile_all(&source, &opts)?;
    eprint!("{}", compiled.model.warnings);
    if a.json {
        print!(
            "{}",
            compiled
                .bundle
                .get(compiler::artifacts::paths::PLAN)
                .unwrap_or_default()
        );
    } else {
        print!("{}", compiler::plan::to_text(&compiled.plan));
    }
    Ok(0)
}

/// A topology file is compiled; a directory is read as a bundle.
fn load_side(path: &Path, target: &Target) -> Result<Bundle, CliError> {
    if path.is_dir() {
        Bundle::read_from(path).map_err(|e| format!("cannot read bundle {}: {e}", path.display()).into())
    } else {
        compile_to_bundle(Some(path), target)
    }
}

/// Exit 0: the same; 1: different; 2: a side could not be read or compiled.
pub fn diff(a: DiffArgs) -> Outcome {
    let exit2 = |e: CliError| match e {
        CliError::Failed(m) => CliError::Code(2, m),
        CliError::Diagnostics(d) => {
            eprint!("{}", d.render());
            CliError::Reported(2)
        }
        other => other,
    };
    let left = load_side(&a.a, &a.target).map_err(exit2)?;
    let right = load_side(&a.b, &a.target).map_err(exit2)?;
    let changes = diff::changes(&left, &right);
    if changes.is_empty() {
        return Ok(0);
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
    Ok(1)
}
