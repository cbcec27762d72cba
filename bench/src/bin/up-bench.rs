//! up-bench: how fast `knetsim up` and `knetsim down` are, and how much memory the
//! built-in flannel agent (`knetsim flanneld`) and etcd take. Needs root.
//!
//! ```sh
//! cargo build --release && cargo run --release -p knetsim-bench --bin up-bench
//! cargo run --release -p knetsim-bench --bin up-bench -- --only default --reps 10   # a subset
//! ```
//!
//! `cargo run -p knetsim-bench` does not build the `knetsim` binary: the benchmark runs
//! the release CLI found next to its own executable (`target/release/knetsim`), so build
//! it first. See docs/performance.md, section "Emulation up/down".
//!
//! Every `up` and `down` is the CLI as a child process, timed from spawn to exit, with a
//! fresh emulation name `ub<pid><n>` each time. `up` prints one progress line per step
//! with the step's own duration on stderr (not a TTY here): the benchmark timestamps them
//! as they arrive and, with the dependencies from the bundle's `plan.json`, reports the
//! slowest steps, the time per kind of step and the critical path. Whatever it brings up
//! it takes down again, also on error or Ctrl-C (a guard runs `knetsim down`).
//! Without root it prints why and exits 0; it always exits 0 once it has run (it is a
//! report, not a test), and 2 when the knetsim binary is missing.

use knetsim_bench::{cpu_model, generate, progress_step};
use knetsim_compiler::plan::Plan;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// Targets of issue 3 (this 2-core machine).
const UP_TARGET: Duration = Duration::from_secs(1);
const DOWN_TARGET: Duration = Duration::from_millis(300);
const AGENT_RSS_TARGET_KB: u64 = 5_000_000 / 1024; // 5 MB = 5 * 10^6 bytes

#[derive(Debug, Clone, Copy)]
enum Topo {
    /// The embedded seed topology (no topology argument).
    Default,
    /// `knetsim_bench::generate(clusters, workers, pods_per_worker)`.
    Generated(usize, usize, usize),
}

#[derive(Debug, Clone, Copy)]
struct Case {
    id: &'static str,
    topo: Topo,
    skip: &'static str,
    /// Repetitions when not overridden.
    reps: usize,
    /// Seconds to wait after each `down` before the next `up` (the kernel frees
    /// deleted namespaces asynchronously).
    settle: u64,
    /// Where the state directory goes (`--state-dir BASE/knetsim-NAME`); None = knetsim's
    /// default, /tmp/knetsim-NAME.
    state_base: Option<&'static str>,
}

const CASES: [Case; 4] = [
    Case {
        id: "default",
        topo: Topo::Default,
        skip: "ingress,interconnect",
        reps: 5,
        settle: 2,
        state_base: None,
    },
    // The same with the state directory (bundle, state.json, etcd data, logs, IPAM)
    // on tmpfs: how much of `up` is file creation on /tmp's file system.
    Case {
        id: "default-shm",
        topo: Topo::Default,
        skip: "ingress,interconnect",
        reps: 5,
        settle: 2,
        state_base: Some("/dev/shm"),
    },
    Case {
        id: "default+ingress",
        topo: Topo::Default,
        skip: "interconnect",
        reps: 5,
        settle: 2,
        state_base: None,
    },
    Case {
        id: "10x20x5",
        topo: Topo::Generated(10, 20, 5),
        skip: "interconnect",
        reps: 2,
        settle: 15,
        state_base: None,
    },
];

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn stopped() -> bool {
    STOP.load(Ordering::SeqCst)
}

// ---------------------------------------------------------------- one up / down

/// One step of an `up`, from its progress line.
#[derive(Debug, Clone)]
struct Step {
    id: String,
    /// The step's own run time, as knetsim reports it.
    ms: u64,
    /// When its line arrived, since `up` was spawned.
    finish: Duration,
}

impl Step {
    fn start(&self) -> Duration {
        self.finish.saturating_sub(Duration::from_millis(self.ms))
    }
}

#[derive(Debug, Default)]
struct UpRun {
    ok: bool,
    wall: Duration,
    /// "is up in X s" from knetsim's summary (from its own start, after exec).
    own: Option<f64>,
    /// When "bringing up ..." arrived (compile, preflight, state and bundle written).
    apply_begin: Option<Duration>,
    steps: Vec<Step>,
    /// "(119 steps, 10 hosts, 11 pods, 15 processes)"
    summary: String,
    other_stderr: Vec<String>,
    /// CPU time (user + sys) of `knetsim up` and of the helpers it waited for (ip, nft,
    /// CNI plugins, iptables, ...), from getrusage(RUSAGE_CHILDREN).
    cpu: Duration,
    /// CPU time the daemons it started (still running) had used when it exited, by
    /// the first word of their recorded name (etcd, flanneld, pod, nginx, ...).
    daemon_cpu: BTreeMap<String, Duration>,
}

#[derive(Debug, Default)]
struct DownRun {
    ok: bool,
    wall: Duration,
    own: Option<f64>,
    output: String,
}

/// A named emulation this benchmark may have brought up: dropped, it is taken down.
struct Emulation<'a> {
    bin: &'a Path,
    name: String,
    /// `--state-dir`, when not knetsim's default.
    state_dir: Option<PathBuf>,
    active: bool,
}

impl Emulation<'_> {
    fn state_dir(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("/tmp/knetsim-{}", self.name)))
    }

    fn target_args(&self) -> Vec<std::ffi::OsString> {
        let mut args = vec!["--name".into(), self.name.clone().into()];
        if let Some(d) = &self.state_dir {
            args.push("--state-dir".into());
            args.push(d.clone().into());
        }
        args
    }

    fn up(&self, topology: Option<&Path>, skip: &str) -> std::io::Result<UpRun> {
        let mut cmd = Command::new(self.bin);
        cmd.arg("up");
        if let Some(t) = topology {
            cmd.arg(t);
        }
        cmd.args(self.target_args())
            .args(["--skip", skip])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let cpu_before = children_cpu();
        let start = Instant::now();
        let mut child = cmd.spawn()?;
        let mut stdout = child.stdout.take().expect("piped");
        let out = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            s
        });
        let mut run = UpRun::default();
        for line in BufReader::new(child.stderr.take().expect("piped")).lines() {
            let t = start.elapsed();
            let Ok(line) = line else { break };
            if let Some((id, ms)) = progress_step(&line) {
                run.steps.push(Step {
                    id: id.to_string(),
                    ms,
                    finish: t,
                });
            } else if line.starts_with("bringing up ") {
                run.apply_begin = Some(t);
            } else {
                run.other_stderr.push(line);
            }
        }
        let status = child.wait()?;
        run.wall = start.elapsed();
        run.cpu = children_cpu().saturating_sub(cpu_before);
        let out = out.join().unwrap_or_default();
        run.ok = status.success();
        if let Some(line) = out.lines().find(|l| l.contains(" is up in ")) {
            run.own = line
                .split(" is up in ")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .and_then(|v| v.parse().ok());
            run.summary = line
                .split_once(" s (")
                .map(|(_, r)| r.split(')').next().unwrap_or("").to_string())
                .unwrap_or_default();
        }
        if !run.ok {
            run.other_stderr.push(format!("knetsim up exited with {status}"));
        }
        Ok(run)
    }

    fn down(&mut self) -> DownRun {
        self.active = false;
        let start = Instant::now();
        let out = Command::new(self.bin)
            .arg("down")
            .args(self.target_args())
            .stdin(Stdio::null())
            .output();
        let wall = start.elapsed();
        match out {
            Ok(o) => {
                let stdout = String::from_utf8_lossy(&o.stdout).to_string();
                let own = stdout
                    .lines()
                    .find(|l| l.contains(" is down "))
                    .and_then(|l| l.rsplit(" in ").next())
                    .and_then(|r| r.trim_end_matches(" s").parse().ok());
                DownRun {
                    ok: o.status.success(),
                    wall,
                    own,
                    output: format!("{stdout}{}", String::from_utf8_lossy(&o.stderr)),
                }
            }
            Err(e) => DownRun {
                ok: false,
                wall,
                own: None,
                output: e.to_string(),
            },
        }
    }
}

impl Drop for Emulation<'_> {
    fn drop(&mut self) {
        if self.active {
            eprintln!("[up-bench] taking {} down", self.name);
            let d = self.down();
            if !d.ok {
                eprintln!(
                    "[up-bench] knetsim down --name {} failed: {}",
                    self.name,
                    d.output.trim()
                );
            }
        }
    }
}

// ---------------------------------------------------------------- state, plan, /proc

/// A process recorded in state.json.
#[derive(Debug, Clone)]
struct Recorded {
    /// state.json's name: "etcd C0e1", "flanneld C0w1", "pod C0/c1", ...
    kind: String,
    pid: u32,
    start_ticks: Option<u64>,
}

/// The part of state.json this benchmark reads.
#[derive(Deserialize)]
struct StateFile {
    #[serde(default)]
    processes: Vec<ProcessEntry>,
}

#[derive(Deserialize)]
struct ProcessEntry {
    name: String,
    pid: u32,
    #[serde(default)]
    start_ticks: Option<u64>,
}

fn recorded_processes(state_dir: &Path) -> Result<Vec<Recorded>, String> {
    let path = state_dir.join("state.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let state: StateFile = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(state
        .processes
        .into_iter()
        .map(|p| Recorded {
            kind: p.name,
            pid: p.pid,
            start_ticks: p.start_ticks,
        })
        .collect())
}

/// step id -> the ids it runs after, from the bundle's plan.json.
fn plan_deps(state_dir: &Path) -> HashMap<String, Vec<String>> {
    let text = std::fs::read_to_string(state_dir.join("bundle").join("plan.json")).unwrap_or_default();
    let Ok(plan) = serde_json::from_str::<Plan>(&text) else {
        return HashMap::new();
    };
    plan.steps.into_iter().map(|s| (s.id, s.after)).collect()
}

/// Memory of a process in kB: VmRSS, VmHWM, RssAnon, RssFile, Pss.
#[derive(Debug, Clone, Copy, Default)]
struct Mem {
    rss: u64,
    hwm: u64,
    anon: u64,
    file: u64,
    pss: u64,
}

fn kb_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn mem(pid: u32) -> Option<Mem> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    Some(Mem {
        rss: kb_field(&status, "VmRSS")?,
        hwm: kb_field(&status, "VmHWM")?,
        anon: kb_field(&status, "RssAnon").unwrap_or(0),
        file: kb_field(&status, "RssFile").unwrap_or(0),
        pss: kb_field(&rollup, "Pss").unwrap_or(0),
    })
}

fn mems(procs: &[Recorded], kind: &str) -> Vec<Mem> {
    procs
        .iter()
        .filter(|p| p.kind.split_whitespace().next() == Some(kind))
        .filter_map(|p| mem(p.pid))
        .collect()
}

/// CPU time of the waited-for children of this process (and their waited-for descendants).
fn children_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// utime + stime of a process, from /proc/PID/stat.
fn proc_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut f = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let ticks: u64 = f.next()?.parse::<u64>().ok()? + f.next()?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_millis(ticks * 1000 / hz))
}

/// State (field 3) and start time in clock ticks since boot (field 22) of /proc/PID/stat.
fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    Some((state, fields.nth(18)?.parse().ok()?))
}

/// Whether a recorded process still runs (same PID and start time, not a zombie
/// waiting for init to reap it).
fn still_running(p: &Recorded) -> bool {
    match (proc_stat(p.pid), p.start_ticks) {
        (None, _) | (Some(('Z' | 'X', _)), _) => false,
        (Some((_, now)), Some(then)) => now == then,
        (Some(_), None) => true,
    }
}

fn namespaces_of(name: &str) -> Vec<String> {
    let prefix = format!("{name}-");
    let mut v: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------- running the cases

#[derive(Debug, Default)]
struct Outcome {
    ups: Vec<UpRun>,
    downs: Vec<DownRun>,
    deps: HashMap<String, Vec<String>>,
    agents_after_up: Vec<Mem>,
    agents_after_soak: Vec<Mem>,
    etcd_after_up: Vec<Mem>,
    etcd_after_soak: Vec<Mem>,
    /// CPU the daemons used while the emulation sat idle for the soak, by kind:
    /// (processes, CPU time, soak duration).
    idle_cpu: BTreeMap<String, (usize, Duration)>,
    idle_for: Duration,
    load_before: String,
    load_after: String,
    errors: Vec<String>,
}

struct Bench {
    bin: PathBuf,
    work: tempfile::TempDir,
    counter: usize,
    names: Vec<String>,
    /// The state directories of all of them.
    dirs: Vec<PathBuf>,
    recorded: Vec<Recorded>,
    soak: u64,
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

    fn run_case(&mut self, case: &Case, reps: usize, soak_rep: Option<usize>) -> Outcome {
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

// ---------------------------------------------------------------- report

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut only: Option<Vec<String>> = None;
    let mut reps: Option<usize> = None;
    let mut big_reps: Option<usize> = None;
    let mut soak = 10u64;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--only" => only = it.next().map(|v| v.split(',').map(str::to_string).collect()),
            "--reps" => reps = it.next().and_then(|v| v.parse().ok()),
            "--big-reps" => big_reps = it.next().and_then(|v| v.parse().ok()),
            "--soak" => soak = it.next().and_then(|v| v.parse().ok()).unwrap_or(soak),
            "-h" | "--help" => {
                println!(
                    "up-bench [--only CASE,...] [--reps N] [--big-reps N] [--soak SECONDS]\n\
                     cases: {}\n\
                     run as root, after `cargo build --release`:\n  \
                     cargo build --release && cargo run --release -p knetsim-bench --bin up-bench",
                    CASES.iter().map(|c| c.id).collect::<Vec<_>>().join(", ")
                );
                return;
            }
            other => eprintln!("ignoring unknown argument {other}"),
        }
    }

    if !is_root() {
        println!(
            "up-bench: skipped: it needs root (knetsim up creates network namespaces, bridges, \
             nft rules and mounts); run it as root:\n  \
             cargo build --release && sudo target/release/up-bench"
        );
        return;
    }
    let dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let bin = dir.join("knetsim");
    if !bin.is_file() {
        eprintln!(
            "up-bench: {} is missing: `cargo run -p knetsim-bench` does not build the knetsim binary. Run\n  \
             cargo build --release && cargo run --release -p knetsim-bench --bin up-bench",
            bin.display()
        );
        std::process::exit(2);
    }
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic.
        unsafe {
            libc::signal(sig, on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t);
        }
    }

    let cases: Vec<Case> = CASES
        .iter()
        .copied()
        .filter(|c| match &only {
            None => true,
            Some(o) => o.iter().any(|x| x == c.id),
        })
        .collect();
    // Run a private copy: other builds in this target directory during the run
    // (`cargo build --release` by someone else) must not change what is measured.
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .map(utc)
        .unwrap_or_else(|_| "?".into());
    let work = tempfile::tempdir().expect("temp dir");
    let copy = work.path().join("knetsim");
    if let Err(e) = std::fs::copy(&bin, &copy) {
        eprintln!("up-bench: cannot copy {} to {}: {e}", bin.display(), copy.display());
        std::process::exit(2);
    }
    let mut bench = Bench {
        bin: copy,
        work,
        counter: 0,
        names: Vec::new(),
        dirs: Vec::new(),
        recorded: Vec::new(),
        soak,
    };
    let started = Instant::now();
    let started_at = SystemTime::now();
    let mut results: Vec<(Case, Outcome)> = Vec::new();
    for case in &cases {
        let n = match case.topo {
            Topo::Generated(..) => big_reps.unwrap_or(case.reps),
            Topo::Default => reps.unwrap_or(case.reps),
        }
        .max(1);
        // The agents' memory after the soak: the last repetition of the default case.
        let soak_rep = (case.id == "default").then_some(n - 1);
        let o = bench.run_case(case, n, soak_rep);
        results.push((*case, o));
        if stopped() {
            break;
        }
    }

    report(&bin, &built, started_at, &results, soak);

    // Nothing of ours may remain.
    let left_ns: Vec<String> = bench.names.iter().flat_map(|n| namespaces_of(n)).collect();
    let left_dirs: Vec<String> = bench
        .dirs
        .iter()
        .filter(|d| d.exists())
        .map(|d| d.display().to_string())
        .collect();
    let left_procs: Vec<String> = bench
        .recorded
        .iter()
        .filter(|p| still_running(p))
        .map(|p| format!("{} {}", p.kind, p.pid))
        .collect();
    println!();
    if left_ns.is_empty() && left_dirs.is_empty() && left_procs.is_empty() {
        println!(
            "cleanup: none of the {} emulations ({} recorded processes) left a namespace, process or state directory",
            bench.names.len(),
            bench.recorded.len()
        );
    } else {
        println!(
            "cleanup: LEFT OVER: namespaces [{}], state [{}], processes [{}]",
            left_ns.join(" "),
            left_dirs.join(" "),
            left_procs.join(", ")
        );
    }
    println!("total benchmark wall time: {}", secs(started.elapsed()));
}

fn report(bin: &Path, built: &str, started_at: SystemTime, results: &[(Case, Outcome)], soak: u64) {
    println!();
    println!("knetsim up/down benchmark, {}", utc(started_at));
    println!(
        "machine: {} x {} | knetsim: {} (built {built}, run from a private copy){}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        cpu_model(),
        bin.display(),
        if bin.parent().and_then(Path::file_name).is_some_and(|d| d == "release") {
            ""
        } else {
            " NOT A RELEASE BUILD"
        }
    );
    println!(
        "each up/down is the knetsim CLI in a child process; wall = spawn to exit; own = the time knetsim prints; MB = 10^6 bytes"
    );
    println!(
        "cpu = user + sys of `knetsim up` and the helpers it waited for (ip, nft, CNI plugins, iptables; not the daemons)"
    );
    if let Some(py) = on_path("python3") {
        let script = std::fs::read(&py).map(|b| b.starts_with(b"#!")).unwrap_or(false);
        println!(
            "python3 on PATH (pod C0/c4 of the default topology runs `python3 -m http.server`): {}{}",
            py.display(),
            if script { " (a script, e.g. a pyenv shim)" } else { "" }
        );
    }
    println!();

    println!("Up and down (wall clock)");
    println!(
        "{:<16} {:<22} {:<32} {:>4} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  load before -> after",
        "case",
        "skip",
        "size",
        "reps",
        "up min",
        "up med",
        "up max",
        "own med",
        "cpu med",
        "down min",
        "down med",
        "down max",
        "own med"
    );
    for (case, o) in results {
        let up: Vec<Duration> = o.ups.iter().map(|u| u.wall).collect();
        let down: Vec<Duration> = o.downs.iter().map(|d| d.wall).collect();
        let own: Vec<Duration> = o
            .ups
            .iter()
            .filter_map(|u| u.own)
            .map(Duration::from_secs_f64)
            .collect();
        let down_own: Vec<Duration> = o
            .downs
            .iter()
            .filter_map(|d| d.own)
            .map(Duration::from_secs_f64)
            .collect();
        let size = o.ups.first().map(|u| u.summary.as_str()).unwrap_or("-");
        println!(
            "{:<16} {:<22} {:<32} {:>4} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  {} -> {}",
            case.id,
            case.skip,
            size.replace(" processes", " procs"),
            up.len(),
            opt(stat(&up).map(|s| s.0)),
            opt(stat(&up).map(|s| s.1)),
            opt(stat(&up).map(|s| s.2)),
            opt(stat(&own).map(|s| s.1)),
            opt(stat(&o.ups.iter().map(|u| u.cpu).collect::<Vec<_>>()).map(|s| s.1)),
            opt(stat(&down).map(|s| s.0)),
            opt(stat(&down).map(|s| s.1)),
            opt(stat(&down).map(|s| s.2)),
            opt(stat(&down_own).map(|s| s.1)),
            o.load_before,
            o.load_after,
        );
    }
    for (case, _) in results {
        if let Some(base) = case.state_base {
            println!(
                "  {}: state directory on {base} (`--state-dir {base}/knetsim-NAME`)",
                case.id
            );
        }
    }
    for (case, o) in results {
        let list = |v: Vec<Duration>| v.into_iter().map(secs).collect::<Vec<_>>().join(", ");
        if !o.ups.is_empty() {
            println!(
                "  {}: up {} | down {}",
                case.id,
                list(o.ups.iter().map(|u| u.wall).collect()),
                list(o.downs.iter().map(|d| d.wall).collect())
            );
        }
    }
    for (case, o) in results {
        for e in &o.errors {
            println!("  {}: ERROR {e}", case.id);
        }
    }
    println!();

    println!("Memory (min / median / max over the processes; kB = 1024 bytes as /proc reports it, shown in MB)");
    println!(
        "{:<48} {:>4}  {:<27} {:<27} {:>8} {:>8} {:>8}",
        "processes", "n", "VmRSS", "VmHWM", "RssAnon", "RssFile", "Pss"
    );
    for (case, o) in results {
        let rows = [
            ("flanneld (built-in agent)", "after up", &o.agents_after_up),
            ("flanneld (built-in agent)", "after soak", &o.agents_after_soak),
            ("etcd", "after up", &o.etcd_after_up),
            ("etcd", "after soak", &o.etcd_after_soak),
        ];
        for (what, when, m) in rows {
            if m.is_empty() {
                continue;
            }
            let when = if when == "after soak" {
                format!("{soak} s after up")
            } else {
                when.to_string()
            };
            let f = |get: fn(&Mem) -> u64| m.iter().map(get).collect::<Vec<u64>>();
            let triple = |v: Vec<u64>| {
                let (a, b, c) = stat(&v).unwrap_or_default();
                format!("{} / {} / {}", mb(a), mb(b), mb(c))
            };
            println!(
                "{:<48} {:>4}  {:<27} {:<27} {:>8} {:>8} {:>8}",
                format!("{what}, {}, {when}", case.id),
                m.len(),
                triple(f(|m| m.rss)),
                triple(f(|m| m.hwm)),
                mb(median(&f(|m| m.anon))),
                mb(median(&f(|m| m.file))),
                mb(median(&f(|m| m.pss))),
            );
        }
    }
    println!("(RssAnon / RssFile / Pss: medians; RssFile = file pages mapped (the knetsim or etcd binary), shared between the processes; Pss shares them out)");
    for (case, o) in results {
        if o.idle_cpu.is_empty() {
            continue;
        }
        let secs_idle = o.idle_for.as_secs_f64().max(1e-3);
        let parts: Vec<String> = o
            .idle_cpu
            .iter()
            .map(|(k, (n, c))| {
                format!(
                    "{k} ({n}) {} ms = {:.1} % of a core",
                    c.as_millis(),
                    c.as_secs_f64() / secs_idle * 100.0
                )
            })
            .collect();
        println!(
            "CPU of the daemons of {} while idle for {:.1} s after up: {}",
            case.id,
            secs_idle,
            parts.join("; ")
        );
    }
    println!();

    for (case, o) in results {
        breakdown(case, o);
    }

    targets(results, soak);
}

/// Where the time of `up` goes, for the repetition with the median wall time.
fn breakdown(case: &Case, o: &Outcome) {
    if o.ups.is_empty() {
        return;
    }
    let mut order: Vec<usize> = (0..o.ups.len()).collect();
    order.sort_by_key(|&i| o.ups[i].wall);
    let run = &o.ups[order[(order.len() - 1) / 2]];
    let Some(last) = run.steps.iter().max_by_key(|s| s.finish) else {
        return;
    };
    let begin = run.apply_begin.unwrap_or_default();
    println!(
        "Where `up` goes, {} (the median repetition: {}; {} steps)",
        case.id,
        secs(run.wall),
        run.steps.len()
    );
    println!(
        "  before the first step (exec, compile, preflight, state + bundle written): {}",
        ms(begin)
    );
    println!(
        "  steps (\"bringing up\" -> last step done):                               {}",
        ms(last.finish.saturating_sub(begin))
    );
    println!(
        "  after the last step (summary, exit):                                     {}",
        ms(run.wall.saturating_sub(last.finish))
    );
    println!(
        "  CPU (user + sys): knetsim up and the helpers it ran {} ms; the daemons it started, until it exited: {}",
        run.cpu.as_millis(),
        run.daemon_cpu
            .iter()
            .map(|(k, v)| format!("{k} {} ms", v.as_millis()))
            .collect::<Vec<_>>()
            .join(", ")
    );

    if o.deps.is_empty() {
        println!("  (no plan.json read: no critical path)");
    } else {
        let chain = critical_path(run, &o.deps);
        let own: u64 = chain.iter().map(|s| s.ms).sum();
        println!(
            "  critical path ({} steps, {} ms in the steps themselves, the rest waiting for a worker thread / the coordinator):",
            chain.len(),
            own
        );
        println!("    {:>8} {:>8} {:>8}  step", "start", "took", "waited");
        let mut prev_finish = begin;
        for s in &chain {
            println!(
                "    {:>8} {:>8} {:>8}  {}",
                ms(s.start()),
                format!("{} ms", s.ms),
                ms(s.start().saturating_sub(prev_finish)),
                s.id
            );
            prev_finish = s.finish;
        }
        println!("  critical path of every repetition, by kind of step (ms; \"wait\" = between steps, \"pre\"/\"post\" = before/after the steps):");
        for u in &o.ups {
            println!("    {:>7}: {}", secs(u.wall), path_by_kind(u, &o.deps));
        }
    }

    // Slowest steps: median over the repetitions.
    let mut per_step: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for u in &o.ups {
        for s in &u.steps {
            per_step.entry(&s.id).or_default().push(s.ms);
        }
    }
    let mut slow: Vec<(&str, u64, u64)> = per_step
        .iter()
        .map(|(id, v)| (*id, median(v), v.iter().copied().max().unwrap_or(0)))
        .collect();
    slow.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    println!("  slowest steps (median / max over {} repetitions):", o.ups.len());
    for (id, med, max) in slow.iter().take(10) {
        println!("    {:>6} ms {:>6} ms  {id}", med, max);
    }

    // Per kind of step (the id up to ':'), in the median repetition.
    let mut kinds: BTreeMap<&str, (usize, u64, u64, Duration, Duration)> = BTreeMap::new();
    for s in &run.steps {
        let kind = s.id.split(':').next().unwrap_or(&s.id);
        let e = kinds.entry(kind).or_insert((0, 0, 0, Duration::MAX, Duration::ZERO));
        e.0 += 1;
        e.1 += s.ms;
        e.2 = e.2.max(s.ms);
        e.3 = e.3.min(s.start());
        e.4 = e.4.max(s.finish);
    }
    let mut kinds: Vec<_> = kinds.into_iter().collect();
    kinds.sort_by_key(|k| std::cmp::Reverse(k.1 .1));
    println!("  by kind of step (median repetition; sum of the steps' own times, they overlap):");
    println!(
        "    {:<16} {:>6} {:>10} {:>8} {:>19}",
        "kind", "steps", "sum", "max", "first start..last end"
    );
    for (kind, (n, sum, max, first, end)) in kinds {
        println!(
            "    {kind:<16} {n:>6} {:>10} {:>8} {:>19}",
            format!("{sum} ms"),
            format!("{max} ms"),
            format!("{}..{}", ms(first), ms(end))
        );
    }
    println!();
}

/// The chain of steps that decided when `up` was done: from the step that finished
/// last, back through the dependency of each step that finished last.
fn critical_path<'a>(run: &'a UpRun, deps: &HashMap<String, Vec<String>>) -> Vec<&'a Step> {
    let by_id: HashMap<&str, &Step> = run.steps.iter().map(|s| (s.id.as_str(), s)).collect();
    let Some(mut cur) = run.steps.iter().max_by_key(|s| s.finish) else {
        return Vec::new();
    };
    let mut chain = vec![cur];
    while let Some(pred) = deps
        .get(&cur.id)
        .into_iter()
        .flatten()
        .filter_map(|d| by_id.get(d.as_str()).copied())
        .max_by_key(|s| s.finish)
    {
        chain.push(pred);
        cur = pred;
    }
    chain.reverse();
    chain
}

/// `pre 35 | bridge 5 | link 22 | etcd 22+33 | ... | wait 40 | post 4`
fn path_by_kind(run: &UpRun, deps: &HashMap<String, Vec<String>>) -> String {
    let chain = critical_path(run, deps);
    let Some(last) = chain.last() else {
        return "-".into();
    };
    let begin = run.apply_begin.unwrap_or_default();
    let mut parts: Vec<(String, Vec<u64>)> = Vec::new();
    let mut wait = Duration::ZERO;
    let mut prev_finish = begin;
    for s in &chain {
        wait += s.start().saturating_sub(prev_finish);
        prev_finish = s.finish;
        let kind = s.id.split(':').next().unwrap_or(&s.id).to_string();
        match parts.last_mut() {
            Some((k, v)) if *k == kind => v.push(s.ms),
            _ => parts.push((kind, vec![s.ms])),
        }
    }
    let mut text = format!("pre {}", begin.as_millis());
    for (k, v) in parts {
        let v: Vec<String> = v.iter().map(u64::to_string).collect();
        text.push_str(&format!(" | {k} {}", v.join("+")));
    }
    text.push_str(&format!(
        " | wait {} | post {}",
        wait.as_millis(),
        run.wall.saturating_sub(last.finish).as_millis()
    ));
    text
}

fn targets(results: &[(Case, Outcome)], soak: u64) {
    let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
    println!("Targets (issue 3, this machine)");
    if let Some((_, o)) = results.iter().find(|(c, _)| c.id == "default") {
        let up: Vec<Duration> = o.ups.iter().map(|u| u.wall).collect();
        let down: Vec<Duration> = o.downs.iter().map(|d| d.wall).collect();
        if let Some((lo, med, hi)) = stat(&up) {
            println!(
                "  default up (skip ingress,interconnect) < 1 s    median {:>9}  min {:>9}  max {:>9}   {}",
                secs(med),
                secs(lo),
                secs(hi),
                verdict(med < UP_TARGET)
            );
        }
        if let Some((lo, med, hi)) = stat(&down) {
            println!(
                "  default down < 0.3 s                            median {:>9}  min {:>9}  max {:>9}   {}",
                secs(med),
                secs(lo),
                secs(hi),
                verdict(med < DOWN_TARGET)
            );
        }
        let all: Vec<&Mem> = o.agents_after_up.iter().chain(&o.agents_after_soak).collect();
        if !all.is_empty() {
            let rss = all.iter().map(|m| m.rss).max().unwrap_or(0);
            let hwm = all.iter().map(|m| m.hwm).max().unwrap_or(0);
            println!(
                "  flannel agent RSS < 5 MB (VmRSS, after up and {soak} s later)   max {:>9}                        {}",
                mb(rss),
                verdict(rss < AGENT_RSS_TARGET_KB)
            );
            println!(
                "  (info) flannel agent peak (VmHWM, same processes)          max {:>9}                        {} 5 MB",
                mb(hwm),
                if hwm < AGENT_RSS_TARGET_KB { "below" } else { "above" }
            );
        }
        let load1: f64 = o
            .load_before
            .split_whitespace()
            .next()
            .and_then(|l| l.parse().ok())
            .unwrap_or(0.0);
        if load1 > 1.0 {
            println!(
                "  note: the load average was {} when the default case started: other work shares the cores, \
                 so up is slower than on a quiet machine",
                o.load_before
            );
        }
    } else {
        println!("  (the `default` case did not run)");
    }
}

// ---------------------------------------------------------------- formatting

fn stat<T: Copy + Ord>(v: &[T]) -> Option<(T, T, T)> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    Some((s[0], s[(s.len() - 1) / 2], s[s.len() - 1]))
}

/// The median (the lower one of the middle two for an even count).
fn median(v: &[u64]) -> u64 {
    stat(v).map(|s| s.1).unwrap_or(0)
}

fn opt(d: Option<Duration>) -> String {
    d.map(secs).unwrap_or_else(|| "-".into())
}

fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 10.0 {
        format!("{s:.1} s")
    } else if s >= 1.0 {
        format!("{s:.2} s")
    } else {
        format!("{:.0} ms", s * 1e3)
    }
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

fn mb(kb: u64) -> String {
    let b = kb as f64 * 1024.0 / 1e6;
    if b >= 10.0 {
        format!("{b:.1} MB")
    } else {
        format!("{b:.2} MB")
    }
}

/// Where `program` is found on PATH.
fn on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// `YYYY-MM-DD HH:MM:SS UTC`.
fn utc(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
