//! The action plan: typed, ordered, shell-free steps with explicit dependencies.
//! Steps are listed in a valid order; `after` lets the executor run independent
//! steps concurrently. Every command is an argv array, never `sh -c`.
//!
//! Adding an `Op` touches: `op.rs` (its struct and variant), `build.rs` (where it is
//! emitted), `render.rs` (its line in `knetsim plan`), `delta/` (how it is undone or
//! changed); in the executor, the `System` method taking the struct (`system/mod.rs`,
//! `linux.rs`, `fake.rs`), its arm in `engine/step.rs` and its reversal in `delta/mod.rs`.

mod build;
pub mod delta;
mod filter;
mod op;
mod render;

pub use build::{build, workload_name, workload_pod};
pub use delta::{delta, repair, Action, Drift, Unsupported};
pub use filter::Component;
pub use op::*;
pub use render::to_text;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Emulation name ("" = default).
    pub name: String,
    pub state_dir: String,
    /// Every namespace the plan creates (teardown deletes these).
    pub namespaces: Vec<String>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Unique, stable id, e.g. `netns:C0w1`, `cni-add:C0/c1`.
    pub id: String,
    /// Ids of steps that must be complete before this one starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    #[serde(flatten)]
    pub op: Op,
}

impl Plan {
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.id == id)
    }
}
