//! knetsim executor: applies a compiled plan (`plan.json` plus its artifact
//! bundle) to the machine.
//!
//! - [`engine`]: dependency-ordered, concurrent application with rollback, and teardown.
//! - [`state`]: the state file and lock of an emulation.
//! - [`system`]: the side-effect boundary ([`system::System`]), with the real Linux
//!   implementation and a recording fake for tests.
//!
//! `up` is [`StateFile::create`] (fails clearly if the emulation is up or busy),
//! then [`apply_with`] with that state file; on an error whose rollback had no undo
//! errors, [`StateFile::destroy`]. `down` is [`down`]: [`StateFile::open`],
//! [`teardown`], then [`StateFile::destroy`] if nothing failed.

pub mod engine;
pub mod state;
pub mod system;

pub use engine::{apply, apply_with, down, teardown, Applied, ApplyError, Event, Options, StepFailure};
pub use state::{State, StateFile};
pub use system::{linux::LinuxSystem, System};
