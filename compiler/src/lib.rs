//! knetsim compiler: a pure, deterministic translation of a TOML topology into an
//! artifact bundle (flannel, CNI, nft, nginx, skupper-router configs and an ordered,
//! shell-free action plan). Nothing here touches the system.

pub mod artifacts;
pub mod bundle;
pub mod diagnostics;
pub mod diff;
pub mod graph;
pub mod model;
pub mod plan;
pub mod topology;

pub use bundle::Bundle;
pub use diagnostics::{Diagnostic, Diagnostics};
pub use model::Model;
pub use topology::Source;

use std::path::PathBuf;

/// Where an emulation lives on the machine: everything the compiler writes into
/// paths, names and namespaces derives from these two values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileOptions {
    /// Emulation name; empty for the default emulation, which uses the seed's plain names.
    pub name: String,
    /// Directory for configs, logs and state (`/tmp/knetsim` for the default emulation).
    pub state_dir: PathBuf,
}

impl CompileOptions {
    /// Options for an emulation called `name` ("" = the default one) under `/tmp`.
    pub fn named(name: &str) -> Self {
        let state_dir = if name.is_empty() {
            PathBuf::from("/tmp/knetsim")
        } else {
            PathBuf::from(format!("/tmp/knetsim-{name}"))
        };
        CompileOptions {
            name: name.to_string(),
            state_dir,
        }
    }
}

impl Default for CompileOptions {
    fn default() -> Self {
        Self::named("")
    }
}

/// The embedded default topology: the seed project's two-cluster scenario.
pub const DEFAULT_TOPOLOGY: &str = include_str!("../../topologies/default.toml");

/// Parses and checks a topology, returning the resolved model (all addresses allocated).
pub fn check(source: &Source, opts: &CompileOptions) -> Result<Model, Diagnostics> {
    let spec = topology::parse(source)?;
    model::build(source, &spec, opts)
}

/// Compiles a topology into its artifact bundle.
pub fn compile(source: &Source, opts: &CompileOptions) -> Result<Bundle, Diagnostics> {
    let model = check(source, opts)?;
    Ok(artifacts::render_bundle(&model))
}
