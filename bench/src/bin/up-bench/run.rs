//! Running one case: its repetitions of up and down, with the measurements taken around
//! them (memory and CPU of the daemons, an idle soak), collected as an `Outcome`.

use crate::emulation::{DownRun, Emulation, UpRun};
use crate::observe::{
    loadavg, mems, namespaces_of, plan_deps, proc_cpu, recorded_processes, still_running, Mem, Recorded,
};
use crate::{stopped, Case, Topo, CASES};
use knetsim_bench::generate;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub(super) struct Outcome {
    pub(super) ups: Vec<UpRun>,
    pub(super) downs: Vec<DownRun>,
    pub(super) deps: HashMap<String, Vec<String>>,
    pub(super) agents_after_up: Vec<Mem>,
    pub(super) agents_after_soak: Vec<Mem>,
    pub(super) etcd_after_up: Vec<Mem>,
    pub(super) etcd_after_soak: Vec<Mem>,
    /// CPU the daemons used while the emulation sat idle for the soak, by kind:
    /// (processes, CPU time, soak duration).
    pub(super) idle_cpu: BTreeMap<String, (usize, Duration)>,
    pub(super) idle_for: Duration,
    pub(super) load_before: String,
    pub(super) load_after: String,
    pub(super) errors: Vec<String>,
}

pub(super) struct Bench {
    pub(super) bin: PathBuf,
    pub(super) work: tempfile::TempDir,
    pub(super) counter: usize,
    pub(super) names: Vec<String>,
    /// The state directories of all of them.
    pub(super) dirs: Vec<PathBuf>,
    pub(super) recorded: Vec<Recorded>,
    pub(super) soak: u64,
}

impl Bench {
    fn next_name(&mut self) -> String {
        loop {
            self.counter += 1;
            let name = format!("ub{}{}", std::process::id(), self.counter);
            assert!(name.len() <= 16, "emulation name {name} too long");
            let free = CASES
                .iter()
                .map(|c| Path::new(c.state_base.unwrap_or("/tmp")).join(format!("knetsim-{name}")))
                .all(|d| !d.exists());
            if free && namespaces_of(&name).is_empty() {
                self.names.push(name.clone());
                return name;
            }
        }
    }

    fn topology_file(&self, topo: Topo) -> std::io::Result<Option<PathBuf>> {
        match topo {
            Topo::Default => Ok(None),
            Topo::Generated(c, w, p) => {
                let path = self.work.path().join(format!("{c}x{w}x{p}.toml"));
                if !path.exists() {
                    std::fs::write(&path, generate(c, w, p))?;
                }
                Ok(Some(path))
            }
        }
    }

    pub(super) fn run_case(&mut self, case: &Case, reps: usize, soak_rep: Option<usize>) -> Outcome {
        let mut o = Outcome {
            load_before: loadavg(),
            ..Outcome::default()
        };
        let topology = match self.topology_file(case.topo) {
            Ok(t) => t,
            Err(e) => {
                o.errors.push(format!("cannot write the topology: {e}"));
                return o;
            }
        };
        for rep in 0..reps {
            if stopped() {
                o.errors.push("interrupted".into());
                break;
            }
            let name = self.next_name();
            eprintln!(
                "[up-bench] {} {}/{reps}: up --name {name} --skip {} ...",
                case.id,
                rep + 1,
                case.skip
            );
            let mut emu = Emulation {
                bin: &self.bin,
                state_dir: case.state_base.map(|b| Path::new(b).join(format!("knetsim-{name}"))),
                name,
                active: true,
            };
            let mut up = match emu.up(topology.as_deref(), case.skip) {
                Ok(u) => u,
                Err(e) => {
                    o.errors.push(format!("cannot run knetsim up: {e}"));
                    break;
                }
            };
            let state_dir = emu.state_dir();
            self.dirs.push(state_dir.clone());
            let procs = recorded_processes(&state_dir).unwrap_or_default();
            self.recorded.extend(procs.iter().cloned());
            for p in &procs {
                let kind = p.kind.split_whitespace().next().unwrap_or("?").to_string();
                *up.daemon_cpu.entry(kind).or_default() += proc_cpu(p.pid).unwrap_or_default();
            }
            if !up.ok {
                o.errors.push(format!(
                    "rep {}: up failed: {}",
                    rep + 1,
                    up.other_stderr
                        .iter()
                        .rev()
                        .take(8)
                        .rev()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(" | ")
                ));
            } else {
                if o.deps.is_empty() {
                    o.deps = plan_deps(&state_dir);
                }
                o.agents_after_up.extend(mems(&procs, "flanneld"));
                o.etcd_after_up.extend(mems(&procs, "etcd"));
                if soak_rep == Some(rep) {
                    eprintln!("[up-bench] {}: {} s with the emulation running ...", case.id, self.soak);
                    let cpu0: Vec<Option<Duration>> = procs.iter().map(|p| proc_cpu(p.pid)).collect();
                    let t0 = Instant::now();
                    let until = t0 + Duration::from_secs(self.soak);
                    while Instant::now() < until && !stopped() {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    o.idle_for = t0.elapsed();
                    for (p, c0) in procs.iter().zip(cpu0) {
                        if let (Some(c0), Some(c1)) = (c0, proc_cpu(p.pid)) {
                            let kind = p.kind.split_whitespace().next().unwrap_or("?").to_string();
                            let e = o.idle_cpu.entry(kind).or_default();
                            e.0 += 1;
                            e.1 += c1.saturating_sub(c0);
                        }
                    }
                    o.agents_after_soak.extend(mems(&procs, "flanneld"));
                    o.etcd_after_soak.extend(mems(&procs, "etcd"));
                }
            }
            let down = emu.down();
            if !down.ok {
                o.errors
                    .push(format!("rep {}: down failed: {}", rep + 1, down.output.trim()));
            }
            let left = namespaces_of(&emu.name);
            if !left.is_empty() {
                o.errors.push(format!(
                    "rep {}: namespaces left after down: {}",
                    rep + 1,
                    left.join(" ")
                ));
            }
            let alive: Vec<String> = procs
                .iter()
                .filter(|p| still_running(p))
                .map(|p| p.pid.to_string())
                .collect();
            if !alive.is_empty() {
                o.errors.push(format!(
                    "rep {}: processes still running after down: {}",
                    rep + 1,
                    alive.join(" ")
                ));
            }
            if up.ok && down.ok {
                o.ups.push(up);
                o.downs.push(down);
            }
            drop(emu);
            // Also after the last one: the next case must not meet the kernel still
            // freeing these namespaces.
            let until = Instant::now() + Duration::from_secs(case.settle);
            while Instant::now() < until && !stopped() {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        o.load_after = loadavg();
        o
    }
}
