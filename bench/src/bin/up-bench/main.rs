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

mod emulation;
mod format;
mod observe;
mod report;
mod run;

use format::{secs, utc};
use knetsim_bench::procfs::is_root;
use knetsim_bench::selected;
use observe::{namespaces_of, still_running};
use report::report;
use run::{Bench, Outcome};
use std::path::Path;
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

    let cases: Vec<Case> = selected(&CASES, only.as_deref(), |c| c.id);
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
