//! The execution engine: runs a plan's steps in dependency order, independent
//! ready steps concurrently on a bounded pool of worker threads, records what it
//! did in the state file as it goes, and on the first failure stops scheduling,
//! waits for the running steps and undoes everything applied, newest first.
//! [`teardown`] removes a whole emulation from its recorded state.

use crate::par::par_map;
use crate::state::{unix_now, LockWait, ProcessRecord, State, StateError, StateFile};
use crate::system::{CertRequest, CniAddRequest, Impairment, Pid, ProcessSpec, SysError, System};
use knetsim_compiler::plan::{Op, Plan, Probe};
use knetsim_compiler::Bundle;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Options {
    /// Worker threads (at least 1).
    pub parallelism: usize,
    /// How long a readiness probe or a `wait` step may take.
    pub probe_timeout: Duration,
    /// Pause between two checks of a probe.
    pub probe_interval: Duration,
    /// How long a process must stay up to pass the `alive` probe.
    pub alive_grace: Duration,
}

impl Options {
    pub fn new(parallelism: usize) -> Self {
        Options {
            parallelism,
            probe_timeout: Duration::from_secs(30),
            probe_interval: Duration::from_millis(20),
            alive_grace: Duration::from_millis(300),
        }
    }
}

/// Progress, reported from the coordinating thread. A `Warning` is something a
/// step could not do exactly (e.g. a delay without netem); it is not a failure.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Started { step: String },
    Finished { step: String, elapsed: Duration },
    Failed { step: String, error: String },
    Undone { step: String, what: String },
    Warning { step: String, message: String },
}

/// What a successful [`apply`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// Step ids in completion order.
    pub completed: Vec<String>,
    pub namespaces: Vec<String>,
    pub processes: Vec<ProcessRecord>,
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Sys(#[from] SysError),
    #[error("artifact `{0}` is not in the bundle")]
    MissingArtifact(String),
    #[error("artifact `{artifact}`: {detail}")]
    BadArtifact { artifact: String, detail: String },
    #[error("not ready after {waited:?}: {probe}")]
    NotReady { probe: String, waited: Duration },
    #[error("process {pid} exited before it was ready (log: {log})")]
    Exited { pid: u32, log: String },
    #[error("CNI result {got:?} does not carry the planned address {expected}")]
    IpMismatch { expected: String, got: Vec<String> },
    #[error("recording state: {0}")]
    State(#[from] StateError),
    #[error("cancelled because another step failed")]
    Cancelled,
    #[error("panicked: {0}")]
    Panicked(String),
}

#[derive(Debug, thiserror::Error)]
#[error("undo of `{step}` ({what}): {error}")]
pub struct UndoError {
    pub step: String,
    pub what: String,
    pub error: SysError,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("invalid plan: {0}")]
    InvalidPlan(String),
    #[error(transparent)]
    StepFailed(Box<StepFailure>),
}

/// The first failing step, what else failed meanwhile, and how the rollback went.
#[derive(Debug, thiserror::Error)]
#[error("{}", describe_failure(&self.step, &self.error, &self.also_failed, self.undone, &self.undo_errors))]
pub struct StepFailure {
    pub step: String,
    pub error: StepError,
    /// Other steps that failed (or were cancelled) while the first failure was handled.
    pub also_failed: Vec<(String, StepError)>,
    /// How many undo actions ran.
    pub undone: usize,
    pub undo_errors: Vec<UndoError>,
}

fn describe_failure(
    step: &str,
    error: &StepError,
    also: &[(String, StepError)],
    undone: usize,
    undo_errors: &[UndoError],
) -> String {
    let mut s = format!("step `{step}` failed: {error}");
    for (id, e) in also {
        let _ = write!(s, "; step `{id}` also failed: {e}");
    }
    if undo_errors.is_empty() {
        let _ = write!(s, "; rolled back ({undone} undo actions)");
    } else {
        let _ = write!(
            s,
            "; rollback left {} error(s) (run `knetsim down`):",
            undo_errors.len()
        );
        for e in undo_errors {
            let _ = write!(s, " [{e}]");
        }
    }
    s
}

#[derive(Debug, thiserror::Error)]
pub enum TeardownError {
    #[error("stopping {name} (pid {pid}): {error}")]
    Kill { name: String, pid: u32, error: SysError },
    #[error("finding processes in the emulation's namespaces: {0}")]
    FindProcesses(SysError),
    #[error("deleting namespace {netns}: {error}")]
    DeleteNetns { netns: String, error: SysError },
    #[error("removing {}: {error}", .path.display())]
    Remove { path: PathBuf, error: SysError },
}

/// Something a step did to the machine, which undo and teardown reverse.
#[derive(Debug, Clone)]
pub(crate) enum Effect {
    Netns(String),
    Process(ProcessRecord),
    Path(PathBuf),
}

impl Effect {
    fn describe(&self) -> String {
        match self {
            Effect::Netns(n) => format!("delete namespace {n}"),
            Effect::Process(p) => format!("stop {} (pid {})", p.name, p.pid),
            Effect::Path(p) => format!("remove {}", p.display()),
        }
    }
}

struct Report {
    index: usize,
    effects: Vec<Effect>,
    warnings: Vec<String>,
    result: Result<(), StepError>,
    elapsed: Duration,
}

/// Applies a plan with default options and no state file.
pub fn apply(plan: &Plan, bundle: &Bundle, sys: &dyn System, parallelism: usize) -> Result<Applied, ApplyError> {
    apply_with(plan, bundle, sys, &Options::new(parallelism), None, &mut |_| {})
}

/// Dependency graph of a plan, validated.
struct Graph {
    indegree: Vec<usize>,
    dependents: Vec<Vec<usize>>,
}

impl Graph {
    fn new(plan: &Plan) -> Result<Graph, ApplyError> {
        let mut index = HashMap::new();
        for (i, s) in plan.steps.iter().enumerate() {
            if index.insert(s.id.as_str(), i).is_some() {
                return Err(ApplyError::InvalidPlan(format!("duplicate step id `{}`", s.id)));
            }
        }
        let mut indegree = vec![0; plan.steps.len()];
        let mut dependents = vec![Vec::new(); plan.steps.len()];
        for (i, s) in plan.steps.iter().enumerate() {
            let deps: HashSet<&str> = s.after.iter().map(String::as_str).collect();
            for d in deps {
                let &j = index
                    .get(d)
                    .ok_or_else(|| ApplyError::InvalidPlan(format!("step `{}` is after unknown step `{d}`", s.id)))?;
                indegree[i] += 1;
                dependents[j].push(i);
            }
        }
        // Kahn's algorithm once, to reject cycles before anything runs.
        let mut left = indegree.clone();
        let mut queue: Vec<usize> = (0..left.len()).filter(|&i| left[i] == 0).collect();
        let mut seen = 0;
        while let Some(i) = queue.pop() {
            seen += 1;
            for &j in &dependents[i] {
                left[j] -= 1;
                if left[j] == 0 {
                    queue.push(j);
                }
            }
        }
        if seen != plan.steps.len() {
            let stuck: Vec<&str> = (0..left.len())
                .filter(|&i| left[i] > 0)
                .map(|i| plan.steps[i].id.as_str())
                .take(5)
                .collect();
            return Err(ApplyError::InvalidPlan(format!(
                "dependency cycle among {}",
                stuck.join(", ")
            )));
        }
        Ok(Graph { indegree, dependents })
    }
}

/// Applies a plan. With a state file, every namespace and written file is recorded
/// before it is created, every process as soon as it is started, and the applied
/// step ids as they complete, so `down` can remove a half-applied emulation.
pub fn apply_with(
    plan: &Plan,
    bundle: &Bundle,
    sys: &dyn System,
    opts: &Options,
    mut state: Option<&mut StateFile>,
    on_event: &mut dyn FnMut(&Event),
) -> Result<Applied, ApplyError> {
    let graph = Graph::new(plan)?;
    let started = Instant::now();
    let parallelism = opts.parallelism.max(1);
    let cancel = AtomicBool::new(false);
    let state_dir = PathBuf::from(&plan.state_dir);
    let ctx = Ctx {
        bundle,
        state_dir: &state_dir,
        sys,
        opts,
        cancel: &cancel,
    };

    let mut indegree = graph.indegree.clone();
    let mut ready: BTreeSet<usize> = (0..plan.steps.len()).filter(|&i| indegree[i] == 0).collect();
    let mut completed: Vec<String> = Vec::new();
    let mut undo: Vec<(usize, Effect)> = Vec::new();
    let mut failure: Option<(usize, StepError)> = None;
    let mut also_failed: Vec<(String, StepError)> = Vec::new();

    let (job_tx, job_rx) = mpsc::channel::<usize>();
    let job_rx = Mutex::new(job_rx);
    let (done_tx, done_rx) = mpsc::channel::<Report>();
    std::thread::scope(|scope| {
        for _ in 0..parallelism.min(plan.steps.len()) {
            let done_tx = done_tx.clone();
            let job_rx = &job_rx;
            let ctx = &ctx;
            scope.spawn(move || loop {
                let job = job_rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                let Ok(index) = job else { break };
                let t = Instant::now();
                let mut effects = Vec::new();
                let mut warnings = Vec::new();
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    ctx.execute(&plan.steps[index].op, &mut effects, &mut warnings)
                }))
                .unwrap_or_else(|p| Err(StepError::Panicked(panic_message(&p))));
                let report = Report {
                    index,
                    effects,
                    warnings,
                    result,
                    elapsed: t.elapsed(),
                };
                if done_tx.send(report).is_err() {
                    break;
                }
            });
        }
        drop(done_tx);

        let mut running = 0usize;
        loop {
            if failure.is_none() {
                let mut batch = Vec::new();
                while running + batch.len() < parallelism {
                    match ready.pop_first() {
                        Some(i) => batch.push(i),
                        None => break,
                    }
                }
                if !batch.is_empty() {
                    if let Some(st) = state.as_deref_mut() {
                        if record_intents(plan, &batch, st.state_mut()) {
                            if let Err(e) = st.save() {
                                failure = Some((batch[0], e.into()));
                                cancel.store(true, Ordering::SeqCst);
                                batch.clear();
                            }
                        }
                    }
                }
                for i in batch {
                    on_event(&Event::Started {
                        step: plan.steps[i].id.clone(),
                    });
                    job_tx.send(i).expect("workers are alive while the coordinator runs");
                    running += 1;
                }
            }
            if running == 0 {
                break;
            }
            let first = done_rx.recv().expect("a worker reports every job it takes");
            let mut reports = vec![first];
            reports.extend(done_rx.try_iter());
            let mut last = 0;
            for r in reports {
                running -= 1;
                last = r.index;
                let step = &plan.steps[r.index];
                let st = state.as_deref_mut().map(StateFile::state_mut);
                let created_netns = r.effects.iter().any(|e| matches!(e, Effect::Netns(_)));
                record_effects(st, &r.effects);
                undo.extend(r.effects.into_iter().map(|e| (r.index, e)));
                for message in r.warnings {
                    on_event(&Event::Warning {
                        step: step.id.clone(),
                        message,
                    });
                }
                match r.result {
                    Ok(()) => {
                        completed.push(step.id.clone());
                        if let Some(st) = state.as_deref_mut() {
                            st.state_mut().applied.push(step.id.clone());
                        }
                        on_event(&Event::Finished {
                            step: step.id.clone(),
                            elapsed: r.elapsed,
                        });
                        for &j in &graph.dependents[r.index] {
                            indegree[j] -= 1;
                            if indegree[j] == 0 {
                                ready.insert(j);
                            }
                        }
                    }
                    Err(e) => {
                        if let (Op::CreateNetns { netns }, Some(st), false) =
                            (&step.op, state.as_deref_mut(), created_netns)
                        {
                            // Not ours (e.g. it already existed): never delete it later.
                            st.state_mut().namespaces.retain(|n| n != netns);
                        }
                        on_event(&Event::Failed {
                            step: step.id.clone(),
                            error: e.to_string(),
                        });
                        cancel.store(true, Ordering::SeqCst);
                        if failure.is_none() {
                            failure = Some((r.index, e));
                        } else {
                            also_failed.push((step.id.clone(), e));
                        }
                    }
                }
            }
            if let Some(st) = state.as_deref_mut() {
                if let Err(e) = st.save() {
                    cancel.store(true, Ordering::SeqCst);
                    if failure.is_none() {
                        failure = Some((last, e.into()));
                    }
                }
            }
        }
        drop(job_tx);
    });

    let Some((index, error)) = failure else {
        debug_assert_eq!(completed.len(), plan.steps.len());
        let mut applied = Applied {
            completed,
            namespaces: Vec::new(),
            processes: Vec::new(),
            elapsed: started.elapsed(),
        };
        for (_, e) in undo {
            match e {
                Effect::Netns(n) => applied.namespaces.push(n),
                Effect::Process(p) => applied.processes.push(p),
                Effect::Path(_) => {}
            }
        }
        if let Some(st) = state {
            st.state_mut().complete = true;
            st.save().map_err(|e| {
                ApplyError::StepFailed(Box::new(StepFailure {
                    step: "(state)".into(),
                    error: e.into(),
                    also_failed: Vec::new(),
                    undone: 0,
                    undo_errors: Vec::new(),
                }))
            })?;
        }
        return Ok(applied);
    };

    // Roll back, newest effect first.
    let mut undo_errors = Vec::new();
    let mut undone = 0;
    let mut st = state;
    for (i, effect) in undo.into_iter().rev() {
        let step = plan.steps[i].id.clone();
        let what = effect.describe();
        let result = match &effect {
            Effect::Netns(n) => sys.delete_netns(n),
            Effect::Process(p) => sys.kill(Pid {
                pid: p.pid,
                start_ticks: p.start_ticks,
            }),
            Effect::Path(p) if removable(p, &state_dir) => sys.remove_path(p),
            Effect::Path(_) => Ok(()),
        };
        undone += 1;
        match result {
            Ok(()) => {
                if let Some(s) = st.as_deref_mut() {
                    forget(s.state_mut(), &effect, &step);
                    let _ = s.save();
                }
                on_event(&Event::Undone { step, what });
            }
            Err(error) => undo_errors.push(UndoError { step, what, error }),
        }
    }
    if let Some(s) = st {
        // Steps without effects of their own (links, addresses...) went with their namespace.
        let done: HashSet<&String> = completed.iter().collect();
        s.state_mut().applied.retain(|id| !done.contains(id));
        let _ = s.save();
    }
    Err(ApplyError::StepFailed(Box::new(StepFailure {
        step: plan.steps[index].id.clone(),
        error,
        also_failed,
        undone,
        undo_errors,
    })))
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Records, before the steps run, the namespaces and files they will create, so a
/// crash in between leaves nothing that `down` does not know about.
fn record_intents(plan: &Plan, batch: &[usize], st: &mut State) -> bool {
    let mut changed = false;
    for &i in batch {
        match &plan.steps[i].op {
            Op::CreateNetns { netns } if !st.namespaces.contains(netns) => {
                st.namespaces.push(netns.clone());
                changed = true;
            }
            Op::WriteFile { path, .. } | Op::NftLoad { path, .. } if !st.paths.contains(path) => {
                st.paths.push(path.clone());
                changed = true;
            }
            _ => {}
        }
    }
    changed
}

pub(crate) fn record_effects(st: Option<&mut State>, effects: &[Effect]) {
    let Some(st) = st else { return };
    for e in effects {
        match e {
            Effect::Netns(n) => {
                if !st.namespaces.contains(n) {
                    st.namespaces.push(n.clone());
                }
            }
            Effect::Process(p) => st.processes.push(p.clone()),
            Effect::Path(p) => {
                let p = p.display().to_string();
                if !st.paths.contains(&p) {
                    st.paths.push(p);
                }
            }
        }
    }
}

fn forget(st: &mut State, effect: &Effect, step: &str) {
    st.applied.retain(|s| s != step);
    match effect {
        Effect::Netns(n) => st.namespaces.retain(|x| x != n),
        Effect::Process(p) => st.processes.retain(|x| x.pid != p.pid),
        Effect::Path(p) => {
            let p = p.display().to_string();
            st.paths.retain(|x| *x != p);
        }
    }
}

/// Runs one operation on the calling thread (for live changes), returning what it
/// created in `effects`.
pub(crate) fn run_op(
    op: &Op,
    bundle: &Bundle,
    state_dir: &Path,
    sys: &dyn System,
    opts: &Options,
    effects: &mut Vec<Effect>,
    warnings: &mut Vec<String>,
) -> Result<(), StepError> {
    let cancel = AtomicBool::new(false);
    Ctx {
        bundle,
        state_dir,
        sys,
        opts,
        cancel: &cancel,
    }
    .execute(op, effects, warnings)
}

/// Starts the process of a `StartProcess` op, after removing what a predecessor
/// wrote (etcd's data directory, the file its probe waits for: a started process
/// always begins afresh). Records what it created, the process last, in `effects`.
pub(crate) fn start_process(
    op: &Op,
    sys: &dyn System,
    state_dir: &Path,
    effects: &mut Vec<Effect>,
) -> Result<ProcessRecord, StepError> {
    let Op::StartProcess {
        name,
        netns,
        argv,
        builtin,
        log,
        ..
    } = op
    else {
        unreachable!("start_process takes a StartProcess op");
    };
    for out in knetsim_compiler::plan::delta::process_outputs(op) {
        let out = Path::new(out);
        if removable(out, state_dir) {
            sys.remove_path(out)?;
            effects.push(Effect::Path(out.to_path_buf()));
        }
    }
    let spawned = sys.start_process(&ProcessSpec {
        name: name.clone(),
        netns: netns.clone(),
        argv: argv.clone(),
        builtin: builtin.clone(),
        log: log.clone(),
    })?;
    effects.extend(spawned.created.into_iter().map(Effect::Path));
    let record = ProcessRecord {
        name: name.clone(),
        netns: netns.clone(),
        pid: spawned.pid,
        start_ticks: spawned.start_ticks,
        argv: argv.clone(),
        log: log.clone(),
        started_at: unix_now(),
    };
    effects.push(Effect::Process(record.clone()));
    Ok(record)
}

/// Waits until a started process passes its readiness probe.
pub(crate) fn wait_process_ready(
    op: &Op,
    pid: u32,
    bundle: &Bundle,
    state_dir: &Path,
    sys: &dyn System,
    opts: &Options,
) -> Result<(), StepError> {
    let Op::StartProcess { ready, log, .. } = op else {
        return Ok(());
    };
    let cancel = AtomicBool::new(false);
    Ctx {
        bundle,
        state_dir,
        sys,
        opts,
        cancel: &cancel,
    }
    .wait_ready(ready, Some((pid, log)))
}

/// What a worker needs to run one step.
struct Ctx<'a> {
    bundle: &'a Bundle,
    /// Only paths inside it are ever removed.
    state_dir: &'a Path,
    sys: &'a dyn System,
    opts: &'a Options,
    cancel: &'a AtomicBool,
}

impl Ctx<'_> {
    fn artifact(&self, name: &str) -> Result<&str, StepError> {
        self.bundle
            .get(name)
            .ok_or_else(|| StepError::MissingArtifact(name.to_string()))
    }

    fn write(&self, path: &str, contents: &str, effects: &mut Vec<Effect>) -> Result<(), StepError> {
        let dirs = self.sys.write_file(Path::new(path), contents.as_bytes())?;
        effects.extend(dirs.into_iter().map(Effect::Path));
        effects.push(Effect::Path(PathBuf::from(path)));
        Ok(())
    }

    fn execute(&self, op: &Op, effects: &mut Vec<Effect>, warnings: &mut Vec<String>) -> Result<(), StepError> {
        let sys = self.sys;
        match op {
            Op::CreateNetns { netns } => {
                sys.create_netns(netns)?;
                effects.push(Effect::Netns(netns.clone()));
            }
            Op::CreateBridge { netns, name } => sys.create_bridge(netns, name)?,
            Op::CreateVeth { a, b } => sys.create_veth(a, b)?,
            Op::AddAddress { netns, ifname, cidr } => sys.add_address(netns, ifname, cidr)?,
            Op::AddRoute { netns, dst, dev } => sys.add_route(netns, dst, dev)?,
            Op::SetSysctl { netns, key, value } => sys.set_sysctl(netns, key, value)?,
            Op::Impair {
                netns,
                ifname,
                rate,
                delay,
                loss,
            } => warnings.extend(sys.impair(
                netns,
                ifname,
                &Impairment {
                    rate: rate.clone(),
                    delay: delay.clone(),
                    loss: *loss,
                },
            )?),
            Op::MakeDir { path } => {
                let dirs = sys.make_dir(Path::new(path))?;
                effects.extend(dirs.into_iter().map(Effect::Path));
            }
            Op::WriteFile { path, artifact } => self.write(path, self.artifact(artifact)?, effects)?,
            Op::GenerateCerts {
                dir,
                common_name,
                ip_sans,
                ca_dir,
            } => {
                let created = sys.generate_certs(&CertRequest {
                    dir: dir.clone(),
                    common_name: common_name.clone(),
                    ip_sans: ip_sans.clone(),
                    ca_dir: ca_dir.clone(),
                })?;
                effects.extend(created.into_iter().map(Effect::Path));
            }
            Op::NftLoad { netns, artifact, path } => {
                self.write(path, self.artifact(artifact)?, effects)?;
                sys.nft_load(netns, Path::new(path))?;
            }
            Op::StartProcess { log, ready, .. } => {
                let started = start_process(op, sys, self.state_dir, effects)?;
                self.wait_ready(ready, Some((started.pid, log)))?;
            }
            Op::EtcdPut {
                netns,
                endpoints,
                key,
                artifact,
                pointer,
            } => {
                let text = self.artifact(artifact)?;
                let value = if pointer.is_empty() {
                    text.to_string()
                } else {
                    let doc: serde_json::Value = serde_json::from_str(text).map_err(|e| StepError::BadArtifact {
                        artifact: artifact.clone(),
                        detail: e.to_string(),
                    })?;
                    match doc.pointer(pointer) {
                        Some(serde_json::Value::String(s)) => s.clone(),
                        Some(v) => v.to_string(),
                        None => {
                            return Err(StepError::BadArtifact {
                                artifact: artifact.clone(),
                                detail: format!("no member at {pointer}"),
                            })
                        }
                    }
                };
                sys.etcd_put(netns, endpoints, key, &value)?;
            }
            Op::CniAdd { ip, .. } => {
                let request = CniAddRequest::of(op).expect("a CNI ADD");
                let got = sys.cni_add(&request)?;
                if !got.iter().any(|a| a.split('/').next() == Some(ip.as_str())) {
                    return Err(StepError::IpMismatch {
                        expected: ip.clone(),
                        got,
                    });
                }
            }
            Op::Wait { probe } => self.wait_ready(probe, None)?,
        }
        Ok(())
    }

    /// Sleeps unless cancelled; returns false when cancelled.
    fn pause(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        loop {
            if self.cancel.load(Ordering::SeqCst) {
                return false;
            }
            let now = Instant::now();
            if now >= end {
                return true;
            }
            std::thread::sleep((end - now).min(Duration::from_millis(10)));
        }
    }

    fn wait_ready(&self, probe: &Probe, process: Option<(u32, &String)>) -> Result<(), StepError> {
        let pid = process.map(|(p, _)| p);
        let exited = || {
            let (pid, log) = process.expect("alive probes belong to a process");
            StepError::Exited { pid, log: log.clone() }
        };
        if matches!(probe, Probe::Alive) {
            if !self.pause(self.opts.alive_grace) {
                return Err(StepError::Cancelled);
            }
            return match self.sys.check(probe, pid)? {
                true => Ok(()),
                false => Err(exited()),
            };
        }
        let start = Instant::now();
        loop {
            if self.sys.check(probe, pid)? {
                return Ok(());
            }
            if pid.is_some() && !self.sys.check(&Probe::Alive, pid)? {
                return Err(exited());
            }
            if start.elapsed() >= self.opts.probe_timeout {
                return Err(StepError::NotReady {
                    probe: describe_probe(probe),
                    waited: start.elapsed(),
                });
            }
            if !self.pause(self.opts.probe_interval) {
                return Err(StepError::Cancelled);
            }
        }
    }
}

pub fn describe_probe(p: &Probe) -> String {
    match p {
        Probe::Alive => "process alive".into(),
        Probe::HttpGet { netns, url } => format!("GET {url} in {netns}"),
        Probe::TcpConnect { netns, addr } => format!("TCP connect to {addr} in {netns}"),
        Probe::FileExists { path } => format!("file {path} exists"),
        Probe::RoutesVia { netns, dev, count } => format!("{count} routes via {dev} in {netns}"),
    }
}

/// Only paths strictly inside an absolute state directory are ever removed.
pub(crate) fn removable(path: &Path, state_dir: &Path) -> bool {
    use std::path::Component;
    let plain = |p: &Path| p.is_absolute() && !p.components().any(|c| matches!(c, Component::ParentDir));
    plain(path) && plain(state_dir) && state_dir.parent().is_some() && path.starts_with(state_dir) && path != state_dir
}

const TEARDOWN_THREADS: usize = 8;

/// Removes an emulation from its recorded state: stops every recorded process at
/// once ([`System::kill_now`]; and any other process still inside its
/// namespaces), deletes every recorded
/// namespace and removes the files it created under its state directory. Goes on
/// past failures and returns all of them; empty = everything is gone.
pub fn teardown(state: &State, sys: &dyn System) -> Vec<TeardownError> {
    let mut errors = Vec::new();
    let procs: Vec<&ProcessRecord> = state.processes.iter().rev().collect();
    for (p, r) in procs.iter().zip(par_map(&procs, TEARDOWN_THREADS, |p| {
        sys.kill_now(Pid {
            pid: p.pid,
            start_ticks: p.start_ticks,
        })
    })) {
        if let Err(error) = r {
            errors.push(TeardownError::Kill {
                name: p.name.clone(),
                pid: p.pid,
                error,
            });
        }
    }
    // Processes not in the record (started just before a crash, or forked by a daemon).
    if !state.namespaces.is_empty() {
        match sys.netns_pids(&state.namespaces) {
            Ok(pids) => {
                let known: HashSet<u32> = state.processes.iter().map(|p| p.pid).collect();
                let stray: Vec<u32> = pids.into_iter().filter(|p| !known.contains(p)).collect();
                let results = par_map(&stray, TEARDOWN_THREADS, |&pid| {
                    sys.kill_now(Pid { pid, start_ticks: None })
                });
                for (pid, r) in stray.iter().zip(results) {
                    if let Err(error) = r {
                        errors.push(TeardownError::Kill {
                            name: "process in the emulation's namespaces".into(),
                            pid: *pid,
                            error,
                        });
                    }
                }
            }
            Err(e) => errors.push(TeardownError::FindProcesses(e)),
        }
    }
    let namespaces: Vec<&String> = state.namespaces.iter().rev().collect();
    for (n, r) in namespaces
        .iter()
        .zip(par_map(&namespaces, TEARDOWN_THREADS, |n| sys.delete_netns(n)))
    {
        if let Err(error) = r {
            errors.push(TeardownError::DeleteNetns {
                netns: n.to_string(),
                error,
            });
        }
    }
    let state_dir = Path::new(&state.state_dir);
    let mut paths: Vec<&str> = state.paths.iter().map(String::as_str).collect();
    paths.extend(state.processes.iter().map(|p| p.log.as_str()));
    let mut seen = HashSet::new();
    for p in paths.into_iter().rev() {
        let path = Path::new(p);
        if !seen.insert(p) || !removable(path, state_dir) {
            continue;
        }
        if let Err(error) = sys.remove_path(path) {
            errors.push(TeardownError::Remove {
                path: path.to_path_buf(),
                error,
            });
        }
    }
    errors
}

#[derive(Debug, thiserror::Error)]
pub enum DownError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{} error(s) tearing down (the state is kept; run down again): {}", .0.len(), join_errors(.0))]
    Teardown(Vec<TeardownError>),
}

fn join_errors(errors: &[TeardownError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// `knetsim down` for one emulation: locks its state, tears everything down and,
/// if nothing failed, removes the state (and the state directory if `up` made it).
pub fn down(state_dir: &Path, name: &str, sys: &dyn System) -> Result<(), DownError> {
    down_waiting(state_dir, name, sys, &mut LockWait::no_wait())
}

/// [`down`], waiting for a change that holds the lock as `wait` says.
pub fn down_waiting(state_dir: &Path, name: &str, sys: &dyn System, wait: &mut LockWait) -> Result<(), DownError> {
    let sf = StateFile::open_waiting(state_dir, name, wait)?;
    let errors = teardown(sf.state(), sys);
    if !errors.is_empty() {
        return Err(DownError::Teardown(errors));
    }
    sf.destroy()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::removable;
    use std::path::Path;

    #[test]
    fn removes_only_inside_the_state_dir() {
        let dir = Path::new("/tmp/knetsim");
        assert!(removable(Path::new("/tmp/knetsim/C0w1/x.conf"), dir));
        assert!(!removable(dir, dir));
        assert!(!removable(Path::new("/tmp/knetsim/../etc"), dir));
        assert!(!removable(Path::new("/etc/passwd"), dir));
        assert!(!removable(Path::new("/etc/passwd"), Path::new("")));
        assert!(!removable(Path::new("/etc/passwd"), Path::new("/")));
        assert!(!removable(Path::new("rel/x"), Path::new("rel")));
    }
}
