//! A running emulation, locked for a live change (`pod`, `svc`, `apply`), and the
//! change's commit protocol:
//!
//! 1. take the lock (waiting for a holder), then read the state; a change found
//!    under way (its process was killed) is rolled back first;
//! 2. read the running generation's topology and bundle ([`crate::layout`]);
//! 3. record the change ([`ChangeRecord`]) in the state, then write the new
//!    generation whole;
//! 4. perform the actions ([`crate::delta::apply_changes`]), each recorded before
//!    and after;
//! 5. commit: the state names the new generation (one atomic rename), then the
//!    `topology.toml`/`bundle` links follow and generations older than the previous
//!    one go. A failed change is rolled back and its generation removed.
//!
//! Readers (`status`, `exec`, `test`, `graph --live`) never take the lock: they read
//! `state.json` first and then the generation it names ([`read_current`]).

use crate::delta::{apply_changes, recover, ChangeError, Changed};
use crate::engine::Options;
use crate::events::{self, Event};
use crate::layout::StateLayout;
use crate::state::{self, ChangeRecord, LockWait, State, StateError, StateFile};
use crate::system::System;
use knetsim_compiler::artifacts::paths::PLAN;
use knetsim_compiler::plan::{delta, repair, Action, Component, CreateNetns, Drift, Op, Plan};
use knetsim_compiler::Bundle;
use knetsim_compiler::{CompileOptions, Source};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("emulation {0} is not completely up (run `knetsim status` or `knetsim down`)")]
    NotComplete(String),
    #[error("emulation {0} was brought up by an older knetsim (no desired/ generations): run down and up")]
    OldLayout(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the running bundle: {0}")]
    Plan(String),
    #[error(transparent)]
    Change(#[from] ChangeError),
    #[error("cannot be repaired in place (nothing was changed):\n{0}")]
    Unrepairable(String),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> LiveError {
    let context = context.into();
    move |source| LiveError::Io { context, source }
}

fn display(name: &str) -> &str {
    if name.is_empty() {
        "default"
    } else {
        name
    }
}

/// The plan in a bundle, less the components left out with `up --skip`.
pub fn plan_of(bundle: &Bundle, skip: &[Component]) -> Result<Plan, LiveError> {
    let text = bundle.get(PLAN).ok_or_else(|| LiveError::Plan(format!("no {PLAN}")))?;
    let plan: Plan = serde_json::from_str(text).map_err(|e| LiveError::Plan(format!("{PLAN}: {e}")))?;
    Ok(plan.without(skip))
}

/// What a repair does ([`Locked::repair`]): the `actions` that repair `drift`,
/// done by `source` (`repair`, `apply`, `supervisor`), with a note per step id for
/// its event (e.g. the back-off).
pub struct Repair<'a> {
    pub drift: &'a Drift,
    pub actions: &'a [Action],
    pub source: &'a str,
    pub notes: BTreeMap<String, String>,
}

/// A running emulation whose lock we hold, with its desired state.
pub struct Locked {
    pub file: StateFile,
    /// The running generation's topology text.
    pub text: String,
    pub bundle: Bundle,
    pub skip: Vec<Component>,
}

impl Locked {
    /// Takes the emulation's lock (waiting as `wait` says), rolls back a change a
    /// killed process left under way (`on_note` is told), and reads the running
    /// generation.
    pub fn open(
        state_dir: &Path,
        name: &str,
        wait: &mut LockWait,
        sys: &dyn System,
        opts: &Options,
        on_note: &mut dyn FnMut(&str),
    ) -> Result<Locked, LiveError> {
        let mut file = StateFile::open_waiting(state_dir, name, wait)?;
        let skip = file
            .state()
            .skip
            .iter()
            .map(|s| s.parse::<Component>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(LiveError::Plan)?;
        if file.state().change.is_some() {
            let note = roll_back_interrupted(&mut file, &skip, sys, opts)?;
            on_note(&note);
        }
        if !file.state().complete {
            return Err(LiveError::NotComplete(display(name).to_string()));
        }
        let generation = file.state().generation;
        if generation == 0 {
            return Err(LiveError::OldLayout(display(name).to_string()));
        }
        let layout = file.layout();
        let (text, bundle) = layout
            .read_generation(generation)
            .map_err(io(format!("reading {}", layout.generation(generation).display())))?;
        // After a kill between a commit and the links' update they may lag behind.
        layout.point_links(generation).map_err(io("pointing the links"))?;
        Ok(Locked {
            file,
            text,
            bundle,
            skip,
        })
    }

    pub fn plan(&self, bundle: &Bundle) -> Result<Plan, LiveError> {
        plan_of(bundle, &self.skip)
    }

    /// What the emulation lacks against its running generation, and the actions
    /// that repair it.
    pub fn diagnose(&self) -> Result<(Drift, Vec<Action>), LiveError> {
        diagnose(self.file.state(), &self.bundle, &self.skip)
    }

    /// Performs repair `actions` ([`Locked::diagnose`] found `drift`) under the
    /// commit protocol: the desired state stays what it is (a new generation with
    /// the same text). Each thing repaired becomes an event of `source`, its action
    /// followed by `notes[step id]` if any (e.g. the back-off waited).
    pub fn repair(
        &mut self,
        repair: &Repair,
        sys: &dyn System,
        opts: &Options,
        on_done: &mut dyn FnMut(&Action, Duration),
    ) -> Result<Changed, LiveError> {
        let Repair {
            drift,
            actions,
            source,
            notes,
        } = repair;
        let (text, bundle) = (self.text.clone(), self.bundle.clone());
        let done = self.change_to(&text, &bundle, actions, sys, opts, on_done)?;
        let at_ms = events::now_ms();
        let events: Vec<Event> = actions
            .iter()
            .filter_map(|a| {
                let s = a.step();
                let (reason, action) = match (a, &s.op) {
                    (Action::Change { .. }, Op::StartProcess(_)) => (drift.dead.get(&s.id)?.clone(), "restarted"),
                    (Action::Change { .. }, Op::NftLoad(_)) => {
                        (drift.missing_rules.get(&s.id)?.clone(), "rules loaded again")
                    }
                    (Action::Add(_), Op::CreateNetns(CreateNetns { netns })) => {
                        (format!("namespace {netns} is gone"), "re-created with its pod")
                    }
                    _ => return None,
                };
                let action = match notes.get(&s.id) {
                    Some(n) => format!("{action} {n}"),
                    None => action.to_string(),
                };
                Some(Event {
                    at_ms,
                    source: source.to_string(),
                    object: s.id.clone(),
                    reason,
                    action,
                })
            })
            .collect();
        self.record_events(&events)?;
        Ok(done)
    }

    /// Recompiles the running topology with `not_ready` (pod -> why) as the pods
    /// that are not ready and applies the difference (the kube-proxy rules of the
    /// workers of their clusters), recording it in the state and as events of
    /// `source`. Nothing to do if the state already says so.
    pub fn set_readiness(
        &mut self,
        not_ready: &BTreeMap<String, String>,
        source: &str,
        sys: &dyn System,
        opts: &Options,
    ) -> Result<Option<Changed>, LiveError> {
        let was: BTreeSet<String> = self.file.state().not_ready.iter().cloned().collect();
        let now: BTreeSet<String> = not_ready.keys().cloned().collect();
        if was == now {
            return Ok(None);
        }
        let st = self.file.state();
        let compile_opts = CompileOptions {
            name: st.name.clone(),
            state_dir: st.state_dir.clone().into(),
            not_ready: now.clone(),
            coredns_on_path: crate::system::process::which("coredns").is_some(),
        };
        let compiled =
            knetsim_compiler::compile_all(&Source::new("topology.toml", self.text.clone()), &compile_opts)
                .map_err(|d| LiveError::Plan(format!("the running topology does not compile: {}", d.render())))?;
        let new_plan = compiled.plan.without(&self.skip);
        let old_plan = self.plan(&self.bundle)?;
        let actions = delta(&old_plan, &self.bundle, &new_plan, &compiled.bundle).map_err(|u| {
            LiveError::Plan(format!(
                "readiness cannot be applied: {}",
                u.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
            ))
        })?;
        let text = self.text.clone();
        let done = self.change_to(&text, &compiled.bundle, &actions, sys, opts, &mut |_, _| {})?;
        self.file.state_mut().not_ready = now.iter().cloned().collect();
        self.file.save()?;
        let at_ms = events::now_ms();
        let mut list: Vec<Event> = now
            .difference(&was)
            .map(|pod| Event {
                at_ms,
                source: source.into(),
                object: pod.clone(),
                reason: format!("not ready: {}", not_ready[pod]),
                action: "endpoints left the service rules".into(),
            })
            .collect();
        list.extend(was.difference(&now).map(|pod| Event {
            at_ms,
            source: source.into(),
            object: pod.clone(),
            reason: "ready again".into(),
            action: "endpoints back in the service rules".into(),
        }));
        self.record_events(&list)?;
        Ok(Some(done))
    }

    /// Appends `events` to the emulation's events (`knetsim events`), the file
    /// recorded in the state before it is first written.
    pub fn record_events(&mut self, events: &[Event]) -> Result<(), LiveError> {
        let layout = self.file.layout();
        let path = layout.events_file().display().to_string();
        if !self.file.state().paths.contains(&path) {
            self.file.state_mut().paths.push(path);
            self.file.save()?;
        }
        events::append(&layout, events).map_err(io("recording the events"))
    }

    /// Moves the emulation to `text`/`bundle` by performing `actions` (the delta
    /// from the running generation), under the commit protocol of this module.
    pub fn change_to(
        &mut self,
        text: &str,
        bundle: &Bundle,
        actions: &[Action],
        sys: &dyn System,
        opts: &Options,
        on_done: &mut dyn FnMut(&Action, Duration),
    ) -> Result<Changed, LiveError> {
        let layout = self.file.layout();
        let from = self.file.state().generation;
        let to = from + 1;
        self.file.state_mut().change = Some(ChangeRecord {
            from,
            to,
            pid: std::process::id(),
            performed: 0,
        });
        self.file.save()?;
        if let Err(e) = layout.write_generation(to, text, bundle) {
            self.abandon(to);
            return Err(io(format!("writing {}", layout.generation(to).display()))(e));
        }
        match apply_changes(actions, &self.bundle, bundle, sys, opts, &mut self.file, on_done) {
            Ok(done) => {
                let st = self.file.state_mut();
                st.generation = to;
                st.change = None;
                self.file.save()?;
                self.text = text.to_string();
                self.bundle = bundle.clone();
                layout.point_links(to).map_err(io("pointing the links"))?;
                // The previous generation stays for readers that are reading it now.
                for old in older_generations(&layout, from) {
                    let _ = layout.remove_generation(old);
                }
                Ok(done)
            }
            Err(e) => {
                self.abandon(to);
                Err(e.into())
            }
        }
    }

    /// Forgets a change that did not happen (rolled back, or never started).
    fn abandon(&mut self, to: u64) {
        self.file.state_mut().change = None;
        let _ = self.file.save();
        let _ = self.file.layout().remove_generation(to);
    }
}

/// What the emulation recorded in `st`, running `bundle` (less `skip`), lacks, and
/// the actions that repair it (pure, from what `observe::drift` sees).
pub fn diagnose(st: &State, bundle: &Bundle, skip: &[Component]) -> Result<(Drift, Vec<Action>), LiveError> {
    let plan = plan_of(bundle, skip)?;
    let drift = crate::observe::drift(&plan, bundle, st);
    let actions = repair(&plan, &drift).map_err(|unsupported| {
        let list: Vec<String> = unsupported.iter().map(|u| format!("  - {u}")).collect();
        LiveError::Unrepairable(list.join("\n"))
    })?;
    Ok((drift, actions))
}

/// Generations below `keep` still on disk.
fn older_generations(layout: &StateLayout, keep: u64) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(layout.desired_root()) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
        .filter(|&n| n < keep)
        .collect()
}

/// Rolls back the change recorded in the state (its process was killed): the delta
/// between the two stored generations is computed again (compiling is
/// deterministic) and undone from where it stopped. Returns a line for the user.
fn roll_back_interrupted(
    file: &mut StateFile,
    skip: &[Component],
    sys: &dyn System,
    opts: &Options,
) -> Result<String, LiveError> {
    let record = file.state().change.clone().expect("a change is recorded");
    let layout = file.layout();
    let old = layout
        .read_generation(record.from)
        .map_err(io(format!("reading {}", layout.generation(record.from).display())))?;
    let undone = match layout.read_generation(record.to) {
        // Killed before the new generation was written whole: nothing was done.
        Err(_) => 0,
        Ok((_, new_bundle)) => {
            let (old_plan, new_plan) = (plan_of(&old.1, skip)?, plan_of(&new_bundle, skip)?);
            let actions = delta(&old_plan, &old.1, &new_plan, &new_bundle).map_err(|unsupported| {
                LiveError::Plan(format!(
                    "the interrupted change cannot be recomputed: {}",
                    unsupported
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                ))
            })?;
            recover(&actions, record.performed, &old.1, sys, opts, file)?
        }
    };
    file.state_mut().change = None;
    file.save()?;
    let _ = layout.remove_generation(record.to);
    let _ = std::fs::remove_dir_all(layout.desired_root().join(format!(".{}.tmp", record.to)));
    Ok(format!(
        "a change by pid {} was interrupted after {} action(s): rolled back ({undone} undone)",
        record.pid, record.performed
    ))
}

/// Stores the first generation for `up` (before anything else is created).
pub fn store_first_generation(file: &mut StateFile, text: &str, bundle: &Bundle) -> Result<(), LiveError> {
    let layout = file.layout();
    let st = file.state_mut();
    for p in [layout.desired_root(), layout.topology_link(), layout.bundle_link()] {
        st.paths.push(p.display().to_string());
    }
    file.save()?;
    layout
        .write_generation(1, text, bundle)
        .map_err(io(format!("writing {}", layout.generation(1).display())))?;
    layout.point_links(1).map_err(io("pointing the links"))?;
    file.state_mut().generation = 1;
    file.save()?;
    Ok(())
}

/// What a reader sees of a running emulation: its state and one file of the
/// generation that state names (`topology.toml`, or an artifact of the bundle).
/// Retried when a change replaced the generation between the two reads.
pub fn read_current(state_dir: &Path, file: CurrentFile) -> Result<Option<(State, String)>, LiveError> {
    let layout = StateLayout::new(state_dir);
    let mut tries = 0;
    loop {
        let Some(st) = state::read(state_dir)? else {
            return Ok(None);
        };
        let path = match (&file, st.generation) {
            (CurrentFile::Topology, 0) => layout.topology_link(),
            (CurrentFile::Topology, n) => layout.topology(n),
            (CurrentFile::Artifact(a), n) => layout.running_bundle(n).join(a),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => return Ok(Some((st, text))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 5 => tries += 1,
            Err(e) => return Err(io(format!("reading {}", path.display()))(e)),
        }
    }
}

/// A file of the running generation.
pub enum CurrentFile<'a> {
    Topology,
    /// A bundle artifact by its path in the bundle (`inventory.json`, `checks.json`).
    Artifact(&'a str),
}
