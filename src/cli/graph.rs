//! `knetsim graph`: a topology, or with `--live` the running emulation, as Mermaid,
//! Graphviz dot, or SVG (dot piped through Graphviz's `dot -Tsvg`).

use super::error::{failed, CliError, Outcome};
use super::{load_options_and_source, Target};
use knetsim_compiler::graph::{self, Picture};
use knetsim_compiler::{self as compiler};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

#[derive(clap::Args)]
pub struct GraphArgs {
    /// Topology file (default: the embedded seed topology).
    #[arg(conflicts_with = "live")]
    topology: Option<PathBuf>,
    /// Draw the running emulation (`--name`) as it really is: pod addresses from their CNI
    /// results, each worker's flannel subnet file, services as its kube-proxy table
    /// programs them, router links as the routers' metrics report them; missing or down in red.
    #[arg(long)]
    live: bool,
    /// `mermaid` (GitHub renders it), `dot` (Graphviz source), or `svg` (needs Graphviz's `dot`:
    /// apt-get install graphviz; without it `svg` is an error, nothing is printed).
    #[arg(long, value_enum, default_value_t = GraphFormat::Mermaid)]
    format: GraphFormat,
    #[command(flatten)]
    target: Target,
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
enum GraphFormat {
    Mermaid,
    Dot,
    Svg,
}

#[derive(Debug, thiserror::Error)]
enum SvgError {
    #[error(
        "--format svg needs Graphviz's `dot`, which is not on PATH: install graphviz \
         (apt-get install graphviz), or use --format dot (the source) or --format mermaid"
    )]
    NoDot,
    #[error("running `dot -Tsvg`: {0}")]
    Io(#[from] std::io::Error),
    #[error("`dot -Tsvg` failed: {0}")]
    Failed(String),
}

/// Graphviz's SVG of a dot text.
fn svg(dot: &str) -> Result<String, SvgError> {
    let mut child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => SvgError::NoDot,
            _ => SvgError::Io(e),
        })?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = dot.to_string();
    // Written from a thread: a large picture must not block on a full pipe either way.
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output()?;
    writer.join().expect("writer thread")?;
    if !out.status.success() {
        return Err(SvgError::Failed(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    String::from_utf8(out.stdout).map_err(|e| SvgError::Failed(e.to_string()))
}

fn picture(a: &GraphArgs) -> Result<Picture, CliError> {
    if a.live {
        let (model, facts) = super::graph_live::gather(&a.target)?;
        return Ok(Picture::of_model(&model, Some(&facts)));
    }
    let (opts, source) = load_options_and_source(&a.target, a.topology.as_deref())?;
    Ok(Picture::of_model(&compiler::check(&source, &opts)?, None))
}

pub fn graph(a: GraphArgs) -> Outcome {
    let p = picture(&a)?;
    let text = match a.format {
        GraphFormat::Mermaid => graph::render_picture(&p, graph::Format::Mermaid),
        GraphFormat::Dot => graph::render_picture(&p, graph::Format::Dot),
        GraphFormat::Svg => svg(&graph::render_picture(&p, graph::Format::Dot)).map_err(failed)?,
    };
    print!("{text}");
    Ok(0)
}
