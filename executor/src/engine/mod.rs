//! The execution engine: runs a plan's steps in dependency order, independent
//! ready steps concurrently on a bounded pool of worker threads, records what it
//! did in the state file as it goes, and on the first failure stops scheduling,
//! waits for the running steps and undoes everything applied, newest first.
//! Running one step is in `step.rs`; removing a whole emulation from its recorded
//! state ([`teardown`], [`down`]) in `crate::teardown`.

use crate::state::{ProcessRecord, State, StateError, StateFile};
use crate::system::{SysError, System};
use knetsim_compiler::plan::{CreateNetns, NftLoad, Op, Plan, WriteFile};
use knetsim_compiler::Bundle;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

mod effect;
mod step;

pub(crate) use effect::{record_effects, Effect};

pub use crate::teardown::{down, down_waiting, teardown, DownError, TeardownError};
pub use step::describe_probe;
use step::Ctx;
pub(crate) use step::{removable, run_op, start_process, wait_process_ready};

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
                        if let (Op::CreateNetns(CreateNetns { netns }), Some(st), false) =
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
        return finish(completed, undo, started.elapsed(), state);
    };
    let (undone, undo_errors) = roll_back(plan, undo, &completed, sys, &state_dir, state, on_event);
    Err(ApplyError::StepFailed(Box::new(StepFailure {
        step: plan.steps[index].id.clone(),
        error,
        also_failed,
        undone,
        undo_errors,
    })))
}

/// Every step ran: the state says so, and what was made is listed.
fn finish(
    completed: Vec<String>,
    made: Vec<(usize, Effect)>,
    elapsed: Duration,
    state: Option<&mut StateFile>,
) -> Result<Applied, ApplyError> {
    let mut applied = Applied {
        completed,
        namespaces: Vec::new(),
        processes: Vec::new(),
        elapsed,
    };
    for (_, e) in made {
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
    Ok(applied)
}

/// Undoes every effect, newest first, forgetting each in the state as it goes.
/// Returns how many undo actions ran and which failed.
fn roll_back(
    plan: &Plan,
    made: Vec<(usize, Effect)>,
    completed: &[String],
    sys: &dyn System,
    state_dir: &Path,
    mut state: Option<&mut StateFile>,
    on_event: &mut dyn FnMut(&Event),
) -> (usize, Vec<UndoError>) {
    let mut undo_errors = Vec::new();
    let mut undone = 0;
    for (i, effect) in made.into_iter().rev() {
        let step = plan.steps[i].id.clone();
        let what = effect.describe();
        undone += 1;
        match effect.undo(sys, state_dir) {
            Ok(()) => {
                if let Some(s) = state.as_deref_mut() {
                    s.state_mut().applied.retain(|id| *id != step);
                    effect.forget(s.state_mut());
                    let _ = s.save();
                }
                on_event(&Event::Undone { step, what });
            }
            Err(error) => undo_errors.push(UndoError { step, what, error }),
        }
    }
    if let Some(s) = state {
        // Steps without effects of their own (links, addresses...) went with their namespace.
        let done: HashSet<&String> = completed.iter().collect();
        s.state_mut().applied.retain(|id| !done.contains(id));
        let _ = s.save();
    }
    (undone, undo_errors)
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
            Op::CreateNetns(CreateNetns { netns }) if !st.namespaces.contains(netns) => {
                st.namespaces.push(netns.clone());
                changed = true;
            }
            Op::WriteFile(WriteFile { path, .. }) | Op::NftLoad(NftLoad { path, .. }) if !st.paths.contains(path) => {
                st.paths.push(path.clone());
                changed = true;
            }
            _ => {}
        }
    }
    changed
}
