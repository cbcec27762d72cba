//! `knetsim graph --live`: the running emulation's model (from its stored topology)
//! and what really runs ([`knetsim_executor::observe::live_facts`]).

use super::running::display_name;
use super::running::{recorded_state, NotRunning};
use super::Target;
use knetsim_compiler::graph::LiveFacts;
use knetsim_compiler::{self as compiler, Model, Source};
use knetsim_executor::layout::StateLayout;
use knetsim_executor::live::{read_current, CurrentFile};
use knetsim_executor::observe;
use std::path::PathBuf;

/// The running emulation's model (from its stored topology) and its live facts.
pub fn gather(target: &Target) -> Result<(Model, LiveFacts), String> {
    let (mut opts, st) = recorded_state(target).map_err(|e| match e {
        NotRunning::NotUp(_) => format!("{e}; draw a topology file without --live"),
        NotRunning::Error(e) => e,
    })?;
    opts.state_dir = PathBuf::from(&st.state_dir);
    let path = StateLayout::new(&opts.state_dir).topology_link();
    let text = match read_current(&opts.state_dir, CurrentFile::Topology) {
        Ok(Some((_, text))) => text,
        Ok(None) => return Err(format!("emulation {} is not up", display_name(&st.name))),
        Err(e) => return Err(format!("cannot read the running topology: {e}")),
    };
    let model = compiler::check(&Source::new(path.display().to_string(), text), &opts).map_err(|d| d.render())?;
    let facts = observe::live_facts::live_facts(&st, &model);
    Ok((model, facts))
}
