//! change-bench: how long live changes take on a running emulation (root only).
//!
//! `cargo build --release && sudo ./target/release/change-bench [--runs N]`
//!
//! Brings up the default topology (`--skip interconnect`) as emulation `cb<pid>`
//! with the knetsim binary beside this one, then times, each `--runs` times (default 5):
//! a one-pod add (and its rm) on C0w1, and a service add (and its rm); then adds 10x
//! the default's pods on the other workers (one `apply`) and times the same again.
//! Two figures per change: the whole `knetsim` command (process start, compile,
//! delta, apply, storing the new topology), and the part the command reports
//! ("changed in X ms"). Then, on a second emulation of the full default topology, it
//! times `apply` of topologies/chain3.toml (an underlay change: every host renumbered)
//! and back. It always tears the emulations down. Without root it says
//! `SKIP` and exits 0: it is a report, not a test.

use knetsim_bench::procfs::is_root;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn knetsim_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KNETSIM") {
        return PathBuf::from(p);
    }
    let me = std::env::current_exe().expect("own path");
    me.parent().expect("a directory").join("knetsim")
}

/// Runs knetsim; returns (wall time, the reported change time in ms if any).
fn run(args: &[&str]) -> (Duration, Option<f64>) {
    let t = Instant::now();
    let out = Command::new(knetsim_bin()).args(args).output().expect("run knetsim");
    let wall = t.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        panic!(
            "knetsim {}: {}\n{}",
            args.join(" "),
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let reported = stdout
        .lines()
        .find_map(|l| l.split(" changed in ").nth(1))
        .and_then(|rest| rest.split(" ms").next())
        .and_then(|ms| ms.parse().ok());
    (wall, reported)
}

struct Figures {
    wall: Vec<f64>,
    reported: Vec<f64>,
}

impl Figures {
    fn new() -> Self {
        Figures {
            wall: Vec::new(),
            reported: Vec::new(),
        }
    }
    fn push(&mut self, (wall, reported): (Duration, Option<f64>)) {
        self.wall.push(wall.as_secs_f64() * 1000.0);
        self.reported.extend(reported);
    }
    fn line(&self, what: &str) -> String {
        let med = |v: &[f64]| {
            let mut v = v.to_vec();
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
        };
        let max = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max);
        format!(
            "{what:<34} command median {:>7.1} ms (max {:>7.1})   change median {:>7.1} ms (max {:>7.1})",
            med(&self.wall),
            max(&self.wall),
            med(&self.reported),
            max(&self.reported)
        )
    }
}

fn measure(name: &str, runs: usize, label: &str) {
    let mut add = Figures::new();
    let mut rm = Figures::new();
    let mut svc_add = Figures::new();
    let mut svc_rm = Figures::new();
    for i in 0..runs {
        let pod = format!("C0/bench{i}");
        add.push(run(&["pod", "add", &pod, "--worker", "w1", "--name", name]));
        rm.push(run(&["pod", "rm", &pod, "--name", name]));
    }
    for i in 0..runs {
        let svc = format!("C0/bsvc{i}");
        svc_add.push(run(&["svc", "add", &svc, "--pods", "c1,c2", "--name", name]));
        svc_rm.push(run(&["svc", "rm", &svc, "--name", name]));
    }
    println!("{label}:");
    println!("  {}", add.line("one-pod add (C0w1)"));
    println!("  {}", rm.line("one-pod rm (C0w1)"));
    println!("  {}", svc_add.line("service add (C0, 3 workers reload)"));
    println!("  {}", svc_rm.line("service rm"));
}

/// Runs `knetsim down --name NAME` when dropped.
struct Down(String);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = Command::new(knetsim_bin()).args(["down", "--name", &self.0]).output();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(5usize);
    if !is_root() {
        println!("SKIP: change-bench needs root (it brings up an emulation)");
        return;
    }
    if !knetsim_bin().is_file() {
        println!(
            "SKIP: no knetsim binary at {} (cargo build --release, or set KNETSIM)",
            knetsim_bin().display()
        );
        return;
    }
    let name = format!("cb{}", std::process::id());
    let _down = Down(name.clone());
    let t = Instant::now();
    run(&["up", "--skip", "interconnect", "--name", &name]);
    println!(
        "emulation {name}: default topology up (--skip interconnect) in {:.2} s; {runs} runs per figure",
        t.elapsed().as_secs_f64()
    );
    let before = std::fs::read_to_string(format!("/tmp/knetsim-{name}/topology.toml")).expect("stored topology");
    measure(&name, runs, "default topology (11 pods)");

    // 10x the pods, all on other workers than C0w1: 50 per cluster on w2 and w3.
    let mut text = before.clone();
    for (cluster, marker) in [
        ("C0", "  { name = \"ic3\""),
        ("C1", "  { name = \"c3\", worker = \"w3\" },\n]"),
    ] {
        let mut extra = String::new();
        for i in 0..50 {
            let worker = if i % 2 == 0 { "w2" } else { "w3" };
            extra.push_str(&format!("  {{ name = \"x{i}\", worker = \"{worker}\" }},\n"));
        }
        let at = text
            .find(marker)
            .unwrap_or_else(|| panic!("{cluster}: {marker} not in the topology"));
        text.insert_str(at, &extra);
    }
    let file = std::env::temp_dir().join(format!("{name}-10x.toml"));
    std::fs::write(&file, &text).expect("write the 10x topology");
    let t = Instant::now();
    run(&["apply", file.to_str().expect("utf-8 path"), "--name", &name]);
    let _ = std::fs::remove_file(&file);
    println!(
        "applied 100 more pods on C0w2, C0w3, C1w2, C1w3 in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    measure(&name, runs, "with 10x pods (111 pods, 100 on other workers)");
    drop(_down);
    measure_underlay(runs);
}

/// An underlay change: the full default topology (ingress and interconnect included)
/// moved to chain3 (every host renumbered, C1 loses a worker and an etcd member,
/// C2 appears) and back, on an emulation of its own.
fn measure_underlay(runs: usize) {
    let topologies = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../topologies");
    let (default, chain3) = (topologies.join("default.toml"), topologies.join("chain3.toml"));
    let (default, chain3) = (default.to_str().expect("utf-8"), chain3.to_str().expect("utf-8"));
    let name = format!("cb{}u", std::process::id());
    let _down = Down(name.clone());
    run(&["up", default, "--name", &name]);
    let mut there = Figures::new();
    let mut back = Figures::new();
    for _ in 0..runs {
        there.push(run(&["apply", chain3, "--name", &name]));
        back.push(run(&["apply", default, "--name", &name]));
    }
    println!("underlay change (full default topology, {runs} runs):");
    println!("  {}", there.line("apply default -> chain3"));
    println!("  {}", back.line("apply chain3 -> default"));
}
