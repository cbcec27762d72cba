//! The supervisor (started by `knetsim up`, unless `--no-supervise`): one process per emulation that
//! restarts what dies, as the kubelet restarts containers and static pods, and
//! re-creates a pod whose namespace was deleted. It changes nothing itself: when
//! it sees a recorded process dead or a namespace gone it takes the emulation's
//! lock (never waiting: a busy lock is left for the next round) and runs the same
//! repair as `knetsim repair`, which records its intents and its events.
//!
//! Restarts follow the kubelet's CrashLoopBackOff: the first one at once, then
//! no sooner than 10 s after the previous one, doubling to at most 5 min, and
//! forgotten after 10 min of running. `KNETSIM_BACKOFF_SCALE` (a factor, e.g. 0.1)
//! shortens every delay for teaching and tests.
//!
//! Idle cost: one read of `state.json` and one `/proc/PID/stat` per recorded
//! process a second.

use crate::engine::Options;
use crate::events::{self, Event};
use crate::live::{self, CurrentFile, LiveError, Locked, Repair};
use crate::observe::{self, netns_present, process_alive};
use crate::prober::{self, Prober, Verdicts};
use crate::state::{self, LockWait, ProcessRecord, StartingProcess, State, StateError, StateFile};
use crate::system::Pid;
use crate::system::System;
use knetsim_compiler::plan::workload_name;
use knetsim_compiler::plan::{Action, Op, Probe, RestartPolicy, StartProcess};
use knetsim_compiler::Model;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

/// The supervisor's name among the emulation's processes.
pub const NAME: &str = "supervisor";

/// The kubelet's restart back-off, per process.
#[derive(Debug, Clone)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    /// Running this long since the last restart forgets the back-off.
    pub reset_after: Duration,
    entries: HashMap<String, (u32, Instant)>,
}

impl Backoff {
    /// The kubelet's figures (10 s doubling to 5 min, reset after 10 min), times `scale`.
    pub fn kubelet(scale: f64) -> Backoff {
        let s = |secs: f64| Duration::from_secs_f64((secs * scale).max(0.0));
        Backoff {
            initial: s(10.0),
            max: s(300.0),
            reset_after: s(600.0),
            entries: HashMap::new(),
        }
    }

    fn delay(&self, restarts: u32) -> Duration {
        let doublings = restarts.saturating_sub(1).min(16);
        (self.initial * 2u32.pow(doublings)).min(self.max)
    }

    /// How much longer `key` must wait at `now` before it restarts (zero: now).
    pub fn wait(&self, key: &str, now: Instant) -> Duration {
        match self.entries.get(key) {
            None => Duration::ZERO,
            Some(&(_, last)) if now.duration_since(last) >= self.reset_after => Duration::ZERO,
            Some(&(restarts, last)) => (last + self.delay(restarts)).saturating_duration_since(now),
        }
    }

    /// `key` restarts at `now`; returns its restart count since the back-off was
    /// last forgotten.
    pub fn restarted(&mut self, key: &str, now: Instant) -> u32 {
        let reset = self.wait(key, now).is_zero()
            && self
                .entries
                .get(key)
                .is_some_and(|&(_, last)| now.duration_since(last) >= self.reset_after);
        let e = self.entries.entry(key.to_string()).or_insert((0, now));
        if reset {
            e.0 = 0;
        }
        e.0 += 1;
        e.1 = now;
        e.0
    }

    /// The back-off that applies after restart number `restarts`.
    pub fn next_delay(&self, restarts: u32) -> Duration {
        self.delay(restarts)
    }
}

/// The back-off scale from `KNETSIM_BACKOFF_SCALE` (1 if unset or invalid).
pub fn backoff_scale() -> f64 {
    std::env::var("KNETSIM_BACKOFF_SCALE")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|f| f.is_finite() && *f >= 0.0)
        .unwrap_or(1.0)
}

/// Starts the supervisor of the emulation in `file` (recorded before it starts,
/// like every process), inside the switches' namespace `netns` so that `down`
/// finds it there too. `argv` is its command line.
pub fn start(
    file: &mut StateFile,
    sys: &dyn System,
    netns: &str,
    argv: Vec<String>,
) -> Result<ProcessRecord, LiveError> {
    let log = file.layout().supervisor_log().display().to_string();
    let st = file.state_mut();
    st.starting.push(StartingProcess {
        name: NAME.into(),
        netns: netns.into(),
        log: log.clone(),
    });
    if !st.paths.contains(&log) {
        st.paths.push(log.clone());
    }
    file.save()?;
    let spec = StartProcess {
        name: NAME.into(),
        netns: netns.into(),
        argv: argv.clone(),
        builtin: None,
        log: log.clone(),
        outputs: Vec::new(),
        reloads: vec![],
        restart: Default::default(),
        ready: Probe::Alive,
    };
    let spawned = sys.start_process(&spec);
    let st = file.state_mut();
    st.starting.retain(|s| s.log != log);
    let record = spawned.map(|s| ProcessRecord {
        name: NAME.into(),
        netns: netns.into(),
        pid: s.pid,
        start_ticks: s.start_ticks,
        argv,
        log,
        started_at: state::unix_now(),
        restarts: 0,
        restart: RestartPolicy::Always,
    });
    if let Ok(r) = &record {
        st.processes.retain(|p| p.name != NAME);
        st.processes.push(r.clone());
    }
    file.save()?;
    record.map_err(|e| LiveError::Io {
        context: "starting the supervisor".into(),
        source: std::io::Error::other(e.to_string()),
    })
}

/// Runs the supervision of the emulation in `state_dir` until its state is gone.
/// `say` gets one line per thing done (the supervisor's log).
pub fn run(
    state_dir: &Path,
    name: &str,
    sys: &dyn System,
    period: Duration,
    backoff: &mut Backoff,
    say: &mut dyn FnMut(&str),
) {
    let me = std::process::id();
    let opts = Options::new(1);
    let mut prober = Prober::default();
    let mut model: Option<(u64, Model)> = None;
    loop {
        std::thread::sleep(period);
        let st = match state::read(state_dir) {
            Ok(Some(st)) => st,
            Ok(None) => return,
            Err(_) => continue,
        };
        if st.change.is_some() || !st.complete {
            continue;
        }
        // The running generation's model says which pods have probes.
        if model.as_ref().map(|m| m.0) != Some(st.generation) {
            model = running_model(state_dir);
        }
        let now = Instant::now();
        let verdicts = match &model {
            Some((_, m)) => {
                prober.sync(m, &st, now, &process_alive);
                prober.tick(now, &prober::run_in_netns)
            }
            None => Verdicts::default(),
        };
        let due = st
            .processes
            .iter()
            .filter(|p| p.pid != me && p.name != NAME && p.restart.is_always())
            .filter(|p| !process_alive(p.pid, p.start_ticks))
            .any(|p| backoff.wait(&p.name, now).is_zero());
        let gone = st.namespaces.iter().any(|n| !netns_present(n));
        let not_ready: BTreeSet<String> = not_ready(&st, &verdicts).into_keys().collect();
        let stale = not_ready != st.not_ready.iter().cloned().collect::<BTreeSet<_>>();
        if !due && !gone && !stale && verdicts.kill.is_empty() {
            continue;
        }
        if let Err(e) = round(state_dir, name, sys, &opts, backoff, &verdicts, say) {
            say(&format!("repair failed: {e}"));
        }
    }
}

/// One repair under the lock, without the processes still in back-off.
fn round(
    state_dir: &Path,
    name: &str,
    sys: &dyn System,
    opts: &Options,
    backoff: &mut Backoff,
    verdicts: &Verdicts,
    say: &mut dyn FnMut(&str),
) -> Result<(), LiveError> {
    let mut locked = match Locked::open(state_dir, name, &mut LockWait::no_wait(), sys, opts, &mut |n| say(n)) {
        Ok(l) => l,
        // Someone else is changing it: the next round looks again.
        Err(LiveError::State(StateError::Locked { .. })) => return Ok(()),
        Err(e) => return Err(e),
    };
    // A workload whose liveness (or startup) probe failed is stopped, as the
    // kubelet kills its container; the repair below restarts it.
    kill_unhealthy(&mut locked, sys, verdicts, say)?;
    // A dead workload's pod leaves its services' rules first, and comes back once
    // it runs again (below), as a pod's Ready condition drives its endpoints.
    readiness(&mut locked, sys, opts, verdicts, say)?;
    let (drift, actions) = locked.diagnose()?;
    let now = Instant::now();
    let process_name = |a: &Action| match (&a, &a.step().op) {
        (Action::Change { .. }, Op::StartProcess(p)) => Some(p.name.clone()),
        _ => None,
    };
    let actions: Vec<Action> = actions
        .into_iter()
        .filter(|a| process_name(a).is_none_or(|n| backoff.wait(&n, now).is_zero()))
        .collect();
    if actions.is_empty() {
        return Ok(());
    }
    let mut notes = BTreeMap::new();
    for a in &actions {
        if let Some(n) = process_name(a) {
            let count = backoff.restarted(&n, now);
            notes.insert(
                a.step().id.clone(),
                format!(
                    "(restart {count}; back-off {} s before the next)",
                    backoff.next_delay(count).as_secs_f64()
                ),
            );
        }
    }
    let repair = Repair {
        drift: &drift,
        actions: &actions,
        source: NAME,
        notes,
    };
    locked.repair(&repair, sys, opts, &mut |a, d| {
        say(&format!("{a} ({:.1} ms)", d.as_secs_f64() * 1000.0))
    })?;
    readiness(&mut locked, sys, opts, verdicts, say)?;
    Ok(())
}

/// Pods not ready: those whose workload is not running, and those their probes say.
fn not_ready(st: &State, verdicts: &Verdicts) -> BTreeMap<String, String> {
    let mut out = observe::not_ready(st);
    for (pod, why) in &verdicts.not_ready {
        out.entry(pod.clone()).or_insert_with(|| why.clone());
    }
    out
}

/// Stops the workloads the probes condemned (by their recorded PID), with an event each.
fn kill_unhealthy(
    locked: &mut Locked,
    sys: &dyn System,
    verdicts: &Verdicts,
    say: &mut dyn FnMut(&str),
) -> Result<(), LiveError> {
    let mut list = Vec::new();
    for (pod, pid, why) in &verdicts.kill {
        let Some(w) = locked
            .file
            .state()
            .processes
            .iter()
            .find(|w| w.pid == *pid && w.name == workload_name(pod))
            .cloned()
        else {
            continue;
        };
        let _ = sys.kill(Pid {
            pid: w.pid,
            start_ticks: w.start_ticks,
        });
        say(&format!("{pod}: {why}: killed pid {pid}"));
        list.push(Event {
            at_ms: events::now_ms(),
            source: NAME.into(),
            object: format!("workload:{pod}"),
            reason: why.clone(),
            action: format!("killed (pid {pid}); restarted with the back-off"),
        });
    }
    locked.record_events(&list)
}

/// The running generation and its model (its bundle's inventory), read as every
/// reader reads them ([`live::read_current`]), if they can be read.
fn running_model(state_dir: &Path) -> Option<(u64, Model)> {
    let inventory = CurrentFile::Artifact(knetsim_compiler::artifacts::paths::INVENTORY);
    let (st, text) = live::read_current(state_dir, inventory).ok()??;
    Some((st.generation, serde_json::from_str(&text).ok()?))
}

/// Applies the pods' readiness as the recorded processes and the probes say it is.
fn readiness(
    locked: &mut Locked,
    sys: &dyn System,
    opts: &Options,
    verdicts: &Verdicts,
    say: &mut dyn FnMut(&str),
) -> Result<(), LiveError> {
    let t = Instant::now();
    let not_ready = not_ready(locked.file.state(), verdicts);
    if locked.set_readiness(&not_ready, NAME, sys, opts)?.is_some() {
        let pods: Vec<&str> = not_ready.keys().map(String::as_str).collect();
        say(&format!(
            "readiness applied in {:.1} ms (not ready: {})",
            t.elapsed().as_secs_f64() * 1000.0,
            if pods.is_empty() {
                "none".to_string()
            } else {
                pods.join(", ")
            }
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_the_kubelets() {
        let mut b = Backoff::kubelet(1.0);
        let t0 = Instant::now();
        assert_eq!(b.wait("r", t0), Duration::ZERO, "the first restart is at once");
        assert_eq!(b.restarted("r", t0), 1);
        assert_eq!(b.wait("r", t0 + Duration::from_secs(4)), Duration::from_secs(6));
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(b.wait("r", t1), Duration::ZERO);
        assert_eq!(b.restarted("r", t1), 2);
        assert_eq!(b.wait("r", t1), Duration::from_secs(20));
        let mut t = t1;
        for n in 3..=12 {
            t += b.wait("r", t);
            assert_eq!(b.restarted("r", t), n);
        }
        assert_eq!(b.wait("r", t), Duration::from_secs(300), "capped at 5 min");
        // Ten minutes up: forgotten.
        let later = t + Duration::from_secs(600);
        assert_eq!(b.wait("r", later), Duration::ZERO);
        assert_eq!(b.restarted("r", later), 1);
        // Another process has its own.
        assert_eq!(b.wait("x", later), Duration::ZERO);
        let fast = Backoff::kubelet(0.1);
        assert_eq!(fast.next_delay(1), Duration::from_secs(1));
    }
}
