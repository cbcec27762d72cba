//! knetsim compiler: a pure, deterministic translation of a TOML topology into an
//! artifact bundle (flannel, CNI, nft, nginx, skupper-router configs and an ordered,
//! shell-free action plan). Nothing here touches the system.

pub mod artifacts;
pub mod bundle;
pub mod diagnostics;
pub mod diff;
pub mod graph;
pub mod host;
pub mod model;
pub mod plan;
pub mod topology;

pub use bundle::Bundle;
pub use diagnostics::{Diagnostic, Diagnostics};
pub use model::Model;
pub use topology::Source;

use std::collections::BTreeSet;
use std::path::PathBuf;

/// Where an emulation lives on the machine: everything the compiler writes into
/// paths, names and namespaces derives from these two values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileOptions {
    /// Emulation name; empty for the default emulation, which uses the seed's plain names.
    pub name: String,
    /// Directory for configs, logs and state (`/tmp/knetsim` for the default emulation).
    pub state_dir: PathBuf,
    /// A live fact, observed by the running emulation's supervisor: pods (`C0/c4`)
    /// that are not ready. Their endpoints stay listed but leave the kube-proxy
    /// rules, as an EndpointSlice's `ready: false` endpoints do.
    pub not_ready: BTreeSet<String>,
    /// A fact of the machine, found by the caller (the compiler looks at nothing):
    /// whether `coredns` is on PATH, which `[dns] server = "auto"` then runs.
    pub coredns_on_path: bool,
}

impl CompileOptions {
    /// Options for an emulation called `name` ("" = the default one), its state
    /// directory where [`host::HostLayout::system`] puts it.
    pub fn named(name: &str) -> Self {
        CompileOptions {
            name: name.to_string(),
            state_dir: host::HostLayout::system().state_dir(name),
            not_ready: BTreeSet::new(),
            coredns_on_path: false,
        }
    }
}

impl CompileOptions {
    /// The name and state directory end up in namespace names and in generated
    /// configs (nginx.conf, CNI JSON) unquoted: keep them to plain characters.
    pub fn validate(&self) -> Result<(), String> {
        let name_ok = self.name.len() <= 16
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && !self.name.starts_with('-');
        if !name_ok {
            return Err(format!(
                "invalid emulation name `{}`: use at most 16 letters, digits, '-' or '_' (not starting with '-')",
                self.name
            ));
        }
        let dir = self.state_dir.to_string_lossy();
        let dir_ok = self.state_dir.is_absolute()
            && dir.len() > 1
            && dir.chars().all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c))
            && !dir.split('/').any(|part| part == "..");
        if !dir_ok {
            return Err(format!(
                "invalid state directory `{dir}`: use an absolute path of letters, digits, '/', '.', '_' and '-' (no `..`)"
            ));
        }
        Ok(())
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
    opts.validate().map_err(|e| {
        source.diagnostics(vec![
            Diagnostic::new(None, e).hint("see `knetsim --help` for --name and --state-dir")
        ])
    })?;
    let spec = topology::parse(source)?;
    let mut model = model::build(source, &spec, opts)?;
    model.mark_not_ready(&opts.not_ready);
    Ok(model)
}

/// A compiled topology, handed to the executor typed: the model, the plan, and the
/// bundle (which carries both as `inventory.json` and `plan.json` for the disk).
#[derive(Debug, Clone)]
pub struct Compiled {
    pub model: Model,
    pub plan: plan::Plan,
    pub bundle: Bundle,
}

/// Compiles a topology into its model, plan and artifact bundle.
pub fn compile_all(source: &Source, opts: &CompileOptions) -> Result<Compiled, Diagnostics> {
    let model = check(source, opts)?;
    let (plan, bundle) = artifacts::render(&model);
    Ok(Compiled { model, plan, bundle })
}

/// Compiles a topology into its artifact bundle only (the model and plan dropped).
pub fn compile(source: &Source, opts: &CompileOptions) -> Result<Bundle, Diagnostics> {
    let model = check(source, opts)?;
    Ok(artifacts::render_bundle(&model))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_names_and_state_dirs_are_refused() {
        let with = |name: &str, dir: &str| CompileOptions {
            name: name.into(),
            state_dir: dir.into(),
            not_ready: BTreeSet::new(),
            coredns_on_path: false,
        };
        assert!(with("", "/tmp/knetsim").validate().is_ok());
        assert!(with("lab-1", "/tmp/knetsim-lab-1").validate().is_ok());
        for (name, dir) in [
            ("a b", "/tmp/x"),
            ("-x", "/tmp/x"),
            ("x", "relative/dir"),
            ("x", "/tmp/with space"),
            ("x", "/tmp/semi;colon"),
            ("x", "/tmp/../etc"),
        ] {
            assert!(
                with(name, dir).validate().is_err(),
                "{name:?} {dir:?} should be refused"
            );
        }
        let err = check(&Source::default_topology(), &with("x", "/tmp/{brace}")).unwrap_err();
        assert!(err.render().contains("invalid state directory"));
    }
}
