//! The scheduler: runs jobs along a dependency graph, independent ready jobs at
//! once on a bounded pool of worker threads, lowest index first. It knows nothing
//! of plans, state or rollback: its owner says, on the coordinating thread, what
//! to record before jobs start and after each ends, and whether to go on.

use knetsim_compiler::plan::Plan;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};

/// A plan's dependency graph, validated (known ids, no duplicates, no cycle).
pub(super) struct Graph {
    indegree: Vec<usize>,
    dependents: Vec<Vec<usize>>,
}

impl Graph {
    pub(super) fn new(plan: &Plan) -> Result<Graph, String> {
        let mut index = HashMap::new();
        for (i, s) in plan.steps.iter().enumerate() {
            if index.insert(s.id.as_str(), i).is_some() {
                return Err(format!("duplicate step id `{}`", s.id));
            }
        }
        let mut indegree = vec![0; plan.steps.len()];
        let mut dependents = vec![Vec::new(); plan.steps.len()];
        for (i, s) in plan.steps.iter().enumerate() {
            let deps: HashSet<&str> = s.after.iter().map(String::as_str).collect();
            for d in deps {
                let &j = index
                    .get(d)
                    .ok_or_else(|| format!("step `{}` is after unknown step `{d}`", s.id))?;
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
            return Err(format!("dependency cycle among {}", stuck.join(", ")));
        }
        Ok(Graph { indegree, dependents })
    }

    pub(super) fn len(&self) -> usize {
        self.indegree.len()
    }
}

/// What the scheduler asks of its owner, always on the coordinating thread.
/// Returning `false` from any of these stops it: nothing more is handed out,
/// `cancel` is raised, and the jobs under way are waited for and reported.
pub(super) trait Coordinator<R> {
    /// Before `batch` is handed out (e.g. record what it will create).
    fn dispatching(&mut self, batch: &[usize]) -> bool;
    /// Job `index` ended with `report`; `true` (it went well) releases its
    /// dependents, `false` stops.
    fn finished(&mut self, index: usize, report: R) -> bool;
    /// After the reports that arrived together were handled (`last`: the newest).
    fn settled(&mut self, last: usize) -> bool;
}

/// Runs every job of `graph` with `work` on up to `parallelism` worker threads,
/// each once all it is after have finished well. Returns when no job is running
/// and none can start.
pub(super) fn run<R: Send>(
    graph: &Graph,
    parallelism: usize,
    cancel: &AtomicBool,
    work: &(dyn Fn(usize) -> R + Sync),
    coordinator: &mut dyn Coordinator<R>,
) {
    let parallelism = parallelism.max(1);
    let mut indegree = graph.indegree.clone();
    let mut ready: BTreeSet<usize> = (0..graph.len()).filter(|&i| indegree[i] == 0).collect();
    let mut stopped = false;
    let stop = |stopped: &mut bool| {
        *stopped = true;
        cancel.store(true, Ordering::SeqCst);
    };

    let (job_tx, job_rx) = mpsc::channel::<usize>();
    let job_rx = Mutex::new(job_rx);
    let (done_tx, done_rx) = mpsc::channel::<(usize, R)>();
    std::thread::scope(|scope| {
        for _ in 0..parallelism.min(graph.len()) {
            let done_tx = done_tx.clone();
            let job_rx = &job_rx;
            scope.spawn(move || loop {
                let job = job_rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                let Ok(index) = job else { break };
                if done_tx.send((index, work(index))).is_err() {
                    break;
                }
            });
        }
        drop(done_tx);

        let mut running = 0usize;
        loop {
            if !stopped {
                let mut batch = Vec::new();
                while running + batch.len() < parallelism {
                    match ready.pop_first() {
                        Some(i) => batch.push(i),
                        None => break,
                    }
                }
                if !batch.is_empty() && !coordinator.dispatching(&batch) {
                    stop(&mut stopped);
                    batch.clear();
                }
                for i in batch {
                    job_tx.send(i).expect("workers are alive while the coordinator runs");
                    running += 1;
                }
            }
            if running == 0 {
                break;
            }
            let first = done_rx.recv().expect("a worker reports every job it takes");
            let mut last = first.0;
            for (index, report) in std::iter::once(first).chain(done_rx.try_iter()) {
                running -= 1;
                last = index;
                if coordinator.finished(index, report) {
                    for &j in &graph.dependents[index] {
                        indegree[j] -= 1;
                        if indegree[j] == 0 {
                            ready.insert(j);
                        }
                    }
                } else {
                    stop(&mut stopped);
                }
            }
            if !coordinator.settled(last) {
                stop(&mut stopped);
            }
        }
        drop(job_tx);
    });
}
