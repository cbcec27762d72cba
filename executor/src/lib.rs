//! knetsim executor: applies a compiled plan (`plan.json` plus its artifact
//! bundle) to the machine.
//!
//! - [`engine`]: dependency-ordered, concurrent application with rollback, and teardown.
//! - [`state`]: the state file and lock of an emulation.
//! - [`cni`]: the CNI runtime (libcni/cnitool equivalent) and the built-in `flannel` plugin.
//! - [`checks`]: the topology's validation probes (`knetsim test`), run in the emulation's namespaces.
//! - [`preflight`]: every program and plugin a plan needs, checked before `up` changes anything.
//! - [`etcd`]: a small etcd v3 client (JSON gateway over HTTP/1.1).
//! - [`http`]: the small HTTP/1.1 client of the etcd client, the probes and `status`.
//! - [`flannel`]: the built-in flannel agent (`knetsim flanneld`): etcd subnet manager, vxlan backend.
//! - [`par`]: a scoped thread pool for independent blocking calls, results in order.
//! - [`system`]: the side-effect boundary ([`system::System`]), with the real Linux
//!   implementation and a recording fake for tests.
//!
//! `up` is [`StateFile::create`] (fails clearly if the emulation is up or busy),
//! then [`apply_with`] with that state file; on an error whose rollback had no undo
//! errors, [`StateFile::destroy`]. `down` is [`down`]: [`StateFile::open`],
//! [`teardown`], then [`StateFile::destroy`] if nothing failed.

pub mod checks;
pub mod cni;
pub mod delta;
pub mod dns_probe;
pub mod engine;
pub mod etcd;
pub mod events;
pub mod flannel;
pub mod http;
pub mod layout;
pub mod live;
pub mod matrix;
pub mod observe;
pub mod par;
pub mod preflight;
pub mod prober;
pub mod state;
pub mod supervise;
pub mod system;
pub mod teardown;

pub use engine::{apply, apply_with, down, teardown, Applied, ApplyError, Event, Options, StepFailure};
pub use state::{State, StateFile};
pub use system::{linux::LinuxSystem, System};
