//! The side-effect boundary: every change the executor makes to the machine goes
//! through [`System`]. The engine only decides *what* and *when*; a `System` does
//! it. [`linux::LinuxSystem`] is the real one, [`fake::RecordingSystem`] records
//! calls for unit tests that run without root.

pub mod certs;
pub mod fake;
pub mod garp;
pub mod impair;
pub mod linux;
pub mod probe;
pub mod process;

use knetsim_compiler::plan::{
    AddAddress, AddRoute, CniAdd, CreateBridge, CreateVeth, GenerateCerts, Impair, Probe, SetSysctl, StartProcess,
};
use std::path::{Path, PathBuf};

/// What went wrong inside one effect.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{argv}` failed ({status}): {stderr}")]
    Command {
        argv: String,
        status: String,
        stderr: String,
    },
    #[error("{what} already exists")]
    AlreadyExists { what: String },
    #[error("{what} does not exist")]
    NotFound { what: String },
    #[error("invalid {what}: {detail}")]
    Invalid { what: String, detail: String },
    /// An error injected by [`fake::RecordingSystem`].
    #[error("injected failure: {call}")]
    Injected { call: String },
}

impl SysError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        SysError::Io {
            context: context.into(),
            source,
        }
    }
}

pub type SysResult<T> = Result<T, SysError>;

/// What [`System::start_process`] started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spawned {
    pub pid: u32,
    /// The process's start time in clock ticks since boot (`/proc/PID/stat` field 22),
    /// so a later kill never hits a recycled PID.
    pub start_ticks: Option<u64>,
    /// Files and directories the start created (the log and its parents).
    pub created: Vec<PathBuf>,
}

/// A recorded process to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pid {
    pub pid: u32,
    pub start_ticks: Option<u64>,
}

/// One method per kind of effect the plan needs; a method that does what an `Op`
/// does takes that op's struct. Implementations must be safe to
/// call from several worker threads at once, must never change the root network
/// namespace, and must never leave a thread of the calling process inside another
/// namespace.
pub trait System: Send + Sync {
    /// A named namespace (`/run/netns/NAME`, as `ip netns add`) with `lo` up.
    /// Fails with [`SysError::AlreadyExists`] if the name is taken.
    fn create_netns(&self, name: &str) -> SysResult<()>;
    /// Removes a named namespace; a missing one is not an error.
    fn delete_netns(&self, name: &str) -> SysResult<()>;
    /// A Linux bridge inside `netns`, up, STP off.
    fn create_bridge(&self, br: &CreateBridge) -> SysResult<()>;
    /// A veth pair with each end created directly in its namespace, both ends up,
    /// each enslaved to its bridge if it names one.
    fn create_veth(&self, veth: &CreateVeth) -> SysResult<()>;
    fn add_address(&self, addr: &AddAddress) -> SysResult<()>;
    fn add_route(&self, route: &AddRoute) -> SysResult<()>;
    /// A `net.*` sysctl inside `netns`.
    fn set_sysctl(&self, sysctl: &SetSysctl) -> SysResult<()>;
    /// Shapes a link. Returns warnings about what could not be emulated exactly
    /// (e.g. delay on a kernel without netem): reported, not failures.
    fn impair(&self, imp: &Impair) -> SysResult<Vec<String>>;
    /// `mkdir -p`; returns the directories it created, outermost first.
    fn make_dir(&self, path: &Path) -> SysResult<Vec<PathBuf>>;
    /// Writes a file, creating missing parents; returns the directories it created.
    fn write_file(&self, path: &Path, contents: &[u8]) -> SysResult<Vec<PathBuf>>;
    /// Generates the TLS files of `req` in `req.dir` (keys mode 0600); returns the
    /// directories and files it created.
    fn generate_certs(&self, req: &GenerateCerts) -> SysResult<Vec<PathBuf>>;
    /// Removes a file or a directory tree; a missing path is not an error.
    fn remove_path(&self, path: &Path) -> SysResult<()>;
    /// `nft -f path` inside `netns` (atomic).
    fn nft_load(&self, netns: &str, path: &Path) -> SysResult<()>;
    /// Starts a detached process (own session, survives the caller) inside `netns`.
    /// Its readiness is the caller's to wait for; `outputs` the caller's to clear.
    fn start_process(&self, spec: &StartProcess) -> SysResult<Spawned>;
    /// Stops a process: SIGTERM, then SIGKILL if it lingers. A process that is
    /// already gone (or whose PID now belongs to another process) is not an error.
    fn kill(&self, pid: Pid) -> SysResult<()>;
    /// Stops a process at once (SIGKILL), for bulk teardown, where whatever a
    /// graceful exit would clean up goes away with the namespaces anyway (and an
    /// etcd leader asked to stop waits seconds for a leadership transfer).
    fn kill_now(&self, pid: Pid) -> SysResult<()> {
        self.kill(pid)
    }
    /// PIDs of every process whose network namespace is one of `netns`.
    fn netns_pids(&self, netns: &[String]) -> SysResult<Vec<u32>>;
    /// PIDs of the processes in `netns` whose stdout is `log`: those started for a
    /// step (each has a log of its own) whose PID was never recorded.
    fn pids_logging_to(&self, netns: &str, log: &Path) -> SysResult<Vec<u32>>;
    /// One check of a readiness probe; `Ok(false)` = not yet. `pid` is the process
    /// the probe belongs to, if any (needed by [`Probe::Alive`]).
    fn check(&self, probe: &Probe, pid: Option<u32>) -> SysResult<bool>;
    /// Puts `key` = `value` into etcd at `endpoints`, from inside `netns`.
    fn etcd_put(&self, netns: &str, endpoints: &[String], key: &str, value: &str) -> SysResult<()>;
    /// Runs a CNI ADD; returns the addresses (CIDR form) of the result.
    fn cni_add(&self, req: &CniAdd) -> SysResult<Vec<String>>;
    /// Runs the CNI DEL matching an earlier ADD (the IPAM plugin frees the address).
    fn cni_del(&self, req: &CniAdd) -> SysResult<()>;
    /// Deletes `key` from etcd at `endpoints`, from inside `netns`.
    fn etcd_delete(&self, netns: &str, endpoints: &[String], key: &str) -> SysResult<()>;
    /// Deletes a link (a bridge, or a veth together with its peer) inside `netns`.
    fn delete_link(&self, netns: &str, ifname: &str) -> SysResult<()>;
    /// Undoes [`System::add_address`]; an address already gone is not an error.
    fn delete_address(&self, addr: &AddAddress) -> SysResult<()>;
    /// Undoes [`System::add_route`]; a route already gone is not an error.
    fn delete_route(&self, route: &AddRoute) -> SysResult<()>;
    /// Undoes [`System::impair`]: the interface's qdiscs and loss rule go; an
    /// interface without them is not an error.
    fn clear_impairment(&self, netns: &str, ifname: &str) -> SysResult<()>;
    /// Asks a running process to reload its configuration (SIGHUP, as `nginx -s reload`).
    /// A process that is gone (or whose PID was recycled) is an error.
    fn reload(&self, pid: Pid) -> SysResult<()>;
}
