//! `down --all` after `up` was killed in its first milliseconds (issue 9, item 8), as
//! root: nothing of that emulation remains, whether or not it had saved its state.
//! This is a test binary of its own because `down --all` tears down every emulation
//! with state in /tmp: it runs only when no other emulation is up (cargo runs test
//! binaries one after another, so in CI none is), and says SKIP otherwise. Every
//! emulation is named `t<pid>a<round>`; a drop guard runs `knetsim down --name ...`
//! and removes what is left of that uniquely named emulation.

mod common;

use common::{knetsim, live_ready, namespaces_of, processes_mentioning, run, seed, state_dir, text, Rng};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PROGRAMS: &[&str] = &["ip", "nft", "etcd"];

const TOPOLOGY: &str = r#"[[clusters]]
name = "C0"
etcd = 1
workers = 2
pods = [{ name = "c1", worker = "w1" }, { name = "c2", worker = "w2" }]
"#;

const ROUNDS: usize = 12;

/// Every namespace on the machine.
fn all_namespaces() -> BTreeSet<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// State directories of emulations other than `ours` (`/tmp/knetsim`, `/tmp/knetsim-*`).
fn other_emulations(ours: &str) -> Vec<String> {
    std::fs::read_dir("/tmp")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter(|n| n == "knetsim" || n.starts_with("knetsim-"))
                .filter(|n| *n != format!("knetsim-{ours}"))
                .filter(|n| Path::new("/tmp").join(n).is_dir())
                .collect()
        })
        .unwrap_or_default()
}

/// Runs `knetsim down --name NAME`, then removes what is left of that emulation.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = knetsim(&["down", "--name", &self.0]);
        for ns in namespaces_of(&self.0) {
            eprintln!("cleanup: deleting leftover namespace {ns}");
            let _ = run(&["ip", "netns", "delete", &ns]);
        }
        let dir = state_dir(&self.0);
        if Path::new(&dir).exists() {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

#[test]
fn down_all_removes_an_emulation_killed_early_in_up() {
    let test = "down_all_removes_an_emulation_killed_early_in_up";
    if !live_ready(test, PROGRAMS) {
        return;
    }
    let seed = seed(test);
    let mut rng = Rng::new(seed);
    let tmp = tempfile::tempdir().unwrap();
    let topo = tmp.path().join("t.toml");
    std::fs::write(&topo, TOPOLOGY).unwrap();
    let mut problems = Vec::new();
    for r in 0..ROUNDS {
        let name = format!("t{}a{r}", std::process::id());
        let _cleanup = Cleanup(name.clone());
        let others = other_emulations(&name);
        if !others.is_empty() {
            if std::env::var_os("CI").is_some() {
                panic!("{test}: other emulations are up ({others:?}), and CI is set");
            }
            println!("SKIP: {test}: other emulations are up ({others:?}); `down --all` would tear them down");
            return;
        }
        let before = all_namespaces();
        let delay = Duration::from_millis(rng.below(21));
        let mut child = Command::new(env!("CARGO_BIN_EXE_knetsim"))
            .args(["up", topo.to_str().unwrap(), "--name", &name, "--no-checks"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let status = child.wait().unwrap();
        // What up had started (an `ip` mid-way) ends by itself; wait for it, so that
        // nothing is created after down.
        let t = Instant::now();
        while !processes_mentioning(&format!("{name}-")).is_empty() && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let made: Vec<String> = namespaces_of(&name);
        let dir = state_dir(&name);
        let files: Vec<String> = std::fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        println!(
            "round {r}: up killed after {delay:?} ({status}): {} namespaces, {dir}: {files:?} (None: no directory)",
            made.len()
        );
        // Just before down --all: still no other emulation (never tear down another's).
        if !other_emulations(&name).is_empty() {
            println!("SKIP: {test}: another emulation came up; stopping before `down --all`");
            return;
        }
        let out = knetsim(&["down", "--all"]);
        if !out.status.success() {
            problems.push(format!("round {r}: down --all: {}", text(&out)));
        }
        let left = namespaces_of(&name);
        if !left.is_empty() {
            problems.push(format!(
                "round {r} (up killed after {delay:?}): down --all left namespaces {left:?}\n{}",
                text(&out)
            ));
        }
        if Path::new(&dir).exists() {
            problems.push(format!(
                "round {r} (up killed after {delay:?}): down --all left {dir} (before down --all: {files:?}, None = no directory)"
            ));
        }
        // Nothing but this emulation's namespaces went away.
        let after = all_namespaces();
        let gone: Vec<&String> = before
            .iter()
            .filter(|n| !after.contains(*n) && !n.starts_with(&format!("{name}-")))
            .collect();
        assert!(
            gone.is_empty(),
            "down --all removed namespaces that were not this test's: {gone:?}"
        );
    }
    assert!(
        problems.is_empty(),
        "seed {seed}: {} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
