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
use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

mod effect;
mod schedule;
mod step;

pub(crate) use effect::{record_effects, Effect};

pub use crate::teardown::{down, down_waiting, teardown, DownError, TeardownError};
use schedule::Graph;
pub use step::describe_probe;
pub(crate) use step::{removable, run_op, start_process, wait_process_ready, Begin};
use step::{Ctx, Report};

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

/// Applies a plan with default options and no state file.
pub fn apply(plan: &Plan, bundle: &Bundle, sys: &dyn System, parallelism: usize) -> Result<Applied, ApplyError> {
    apply_with(plan, bundle, sys, &Options::new(parallelism), None, &mut |_| {})
}

/// Applies a plan. With a state file, every namespace and written file is recorded
/// before it is created, every process as soon as it is started, and the applied
/// step ids as they complete, so `down` can remove a half-applied emulation.
pub fn apply_with(
    plan: &Plan,
    bundle: &Bundle,
    sys: &dyn System,
    opts: &Options,
    state: Option<&mut StateFile>,
    on_event: &mut dyn FnMut(&Event),
) -> Result<Applied, ApplyError> {
    let graph = Graph::new(plan).map_err(ApplyError::InvalidPlan)?;
    let started = Instant::now();
    let cancel = AtomicBool::new(false);
    let state_dir = PathBuf::from(&plan.state_dir);
    let ctx = Ctx {
        bundle,
        state_dir: &state_dir,
        sys,
        opts,
        cancel: &cancel,
    };
    let work = |index: usize| ctx.report(&plan.steps[index].op);
    let mut recorder = Recorder {
        plan,
        state,
        on_event,
        completed: Vec::new(),
        made: Vec::new(),
        failure: None,
        also_failed: Vec::new(),
    };
    schedule::run(&graph, opts.parallelism, &cancel, &work, &mut recorder);

    let Recorder {
        state,
        on_event,
        completed,
        made,
        failure,
        also_failed,
        ..
    } = recorder;
    let Some((index, error)) = failure else {
        debug_assert_eq!(completed.len(), plan.steps.len());
        return finish(completed, made, started.elapsed(), state);
    };
    let (undone, undo_errors) = roll_back(plan, made, &completed, sys, &state_dir, state, on_event);
    Err(ApplyError::StepFailed(Box::new(StepFailure {
        step: plan.steps[index].id.clone(),
        error,
        also_failed,
        undone,
        undo_errors,
    })))
}

/// What `up` keeps while the scheduler runs the plan: the state file (intents
/// before steps start, effects and applied ids after), progress events, what was
/// made (for a rollback) and what failed.
struct Recorder<'a, 'e> {
    plan: &'a Plan,
    state: Option<&'a mut StateFile>,
    on_event: &'e mut dyn FnMut(&Event),
    completed: Vec<String>,
    made: Vec<(usize, Effect)>,
    failure: Option<(usize, StepError)>,
    also_failed: Vec<(String, StepError)>,
}

impl Recorder<'_, '_> {
    fn fail(&mut self, index: usize, error: StepError) {
        if self.failure.is_none() {
            self.failure = Some((index, error));
        } else {
            self.also_failed.push((self.plan.steps[index].id.clone(), error));
        }
    }
}

impl schedule::Coordinator<Report> for Recorder<'_, '_> {
    fn dispatching(&mut self, batch: &[usize]) -> bool {
        if let Some(st) = self.state.as_deref_mut() {
            if record_intents(self.plan, batch, st.state_mut()) {
                if let Err(e) = st.save() {
                    self.fail(batch[0], e.into());
                    return false;
                }
            }
        }
        for &i in batch {
            (self.on_event)(&Event::Started {
                step: self.plan.steps[i].id.clone(),
            });
        }
        true
    }

    fn finished(&mut self, index: usize, r: Report) -> bool {
        let step = &self.plan.steps[index];
        let created_netns = r.effects.iter().any(|e| matches!(e, Effect::Netns(_)));
        record_effects(self.state.as_deref_mut().map(StateFile::state_mut), &r.effects);
        self.made.extend(r.effects.into_iter().map(|e| (index, e)));
        for message in r.warnings {
            (self.on_event)(&Event::Warning {
                step: step.id.clone(),
                message,
            });
        }
        match r.result {
            Ok(()) => {
                self.completed.push(step.id.clone());
                if let Some(st) = self.state.as_deref_mut() {
                    st.state_mut().applied.push(step.id.clone());
                }
                (self.on_event)(&Event::Finished {
                    step: step.id.clone(),
                    elapsed: r.elapsed,
                });
                true
            }
            Err(e) => {
                if let (Op::CreateNetns(CreateNetns { netns }), Some(st), false) =
                    (&step.op, self.state.as_deref_mut(), created_netns)
                {
                    // Not ours (e.g. it already existed): never delete it later.
                    st.state_mut().namespaces.retain(|n| n != netns);
                }
                (self.on_event)(&Event::Failed {
                    step: step.id.clone(),
                    error: e.to_string(),
                });
                self.fail(index, e);
                false
            }
        }
    }

    fn settled(&mut self, last: usize) -> bool {
        let Some(st) = self.state.as_deref_mut() else {
            return true;
        };
        match st.save() {
            Ok(()) => true,
            Err(e) => {
                // Not a step's failure: reported only if nothing else failed first.
                self.failure.get_or_insert((last, e.into()));
                false
            }
        }
    }
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
