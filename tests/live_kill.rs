//! `kill -9` of live changes and of an early `up` (issue 9, items 2 and 3), as root:
//! whatever instant a change is killed at, the next change works (an interrupted
//! change is finished or rolled back), the live state equals the stored topology,
//! and `down` leaves nothing (no namespace, process, mount or directory; the root
//! namespace as it was). Every emulation is named `t<pid>...`; drop guards run
//! `knetsim down --name ...` and then remove what `down` left of that emulation
//! (only namespaces and processes of that uniquely named emulation). Without root or
//! a needed program they print `SKIP: reason`, unless `CI` is set, where they fail.
//!
//! Each kill round's delay is random (seeded: the seed is printed; replay with
//! `KNETSIM_SEED`). `KNETSIM_KILL_RUNS=N` sets the number of rounds; the ignored
//! test `kill_changes_many_rounds` runs 24 for the figures.

mod common;

use common::{
    knetsim, live_mismatches, live_ready, mounts_of, namespaces_of, netns_inodes_of, ok, processes_in_netns,
    processes_mentioning, run, seed, state_dir, text, Rng, RootSnapshot,
};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PROGRAMS: &[&str] = &["ip", "nft", "etcd", "sysctl"];

const BASE: &str = r#"[[clusters]]
name = "C0"
etcd = 1
workers = 2
pods = [
  { name = "c1", worker = "w1" },
  { name = "c2", worker = "w2" },
]
services = [{ name = "web", vip = "100.64.0.10", pods = ["c1", "c2"] }]
"#;

/// What `apply` adds to the stored topology: a whole cluster (hosts, etcd, flannel,
/// a pod with a workload), the change with the most side effects.
const EXTRA_CLUSTER: &str = r#"
[[clusters]]
name = "C1"
etcd = 1
workers = 1
pods = [{ name = "d1", worker = "w1", command = ["sleep", "1000"] }]
"#;

/// The changes killed, with their typical duration here (debug build, 2 cores): the
/// kill comes after a random 0..=that many milliseconds (a later kill finds the change
/// done, which the round handles too).
#[derive(Clone, Copy, Debug)]
enum Kind {
    PodAdd,
    PodRm,
    SvcAdd,
    Apply,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::PodAdd, Kind::PodRm, Kind::SvcAdd, Kind::Apply];

    fn typical_ms(self) -> u64 {
        match self {
            Kind::PodAdd => 400,
            Kind::PodRm => 210,
            Kind::SvcAdd => 120,
            Kind::Apply => 650,
        }
    }
}

/// After `Down`, removes what `down` left of emulation `name` (its uniquely named
/// namespaces, processes in namespaces it had, its state directory), so that a
/// failing run leaves nothing on the machine. Reports what it had to remove.
struct Scrub {
    name: String,
    inodes: BTreeSet<u64>,
}

impl Scrub {
    fn leftovers(&self) -> Vec<(u32, String)> {
        let mut procs = processes_in_netns(&self.inodes);
        for p in processes_mentioning(&state_dir(&self.name)) {
            if !procs.iter().any(|(pid, _)| *pid == p.0) {
                procs.push(p);
            }
        }
        procs
    }
}

impl Drop for Scrub {
    fn drop(&mut self) {
        let _ = knetsim(&["down", "--name", &self.name]);
        for (pid, cmd) in self.leftovers() {
            eprintln!("cleanup: killing leftover process {pid}: {cmd}");
            // SAFETY: SIGKILL to a process of this test's emulation, by PID.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        for ns in namespaces_of(&self.name) {
            eprintln!("cleanup: deleting leftover namespace {ns}");
            let _ = run(&["ip", "netns", "delete", &ns]);
        }
        let dir = state_dir(&self.name);
        if Path::new(&dir).exists() {
            eprintln!("cleanup: removing leftover {dir}");
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

fn stored_topology(name: &str) -> String {
    std::fs::read_to_string(format!("{}/topology.toml", state_dir(name))).unwrap_or_default()
}

/// Whether the stored topology has pod (or service) `local` in cluster C0's list.
fn stored_has(name: &str, local: &str) -> bool {
    stored_topology(name).contains(&format!("name = \"{local}\""))
}

/// Runs knetsim as a child and SIGKILLs it (by its PID) after `delay`. Returns how it ended.
fn kill_after(args: &[&str], delay: Duration) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_knetsim"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    let finished = child.try_wait().unwrap();
    let _ = child.kill();
    let status = child.wait().unwrap();
    match finished {
        Some(s) => format!("had finished ({s})"),
        None => format!("killed ({status})"),
    }
}

/// Runs a change that must succeed; records a problem if it does not.
fn must(problems: &mut Vec<String>, what: &str, args: &[&str]) -> bool {
    let out = knetsim(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() && !stderr.contains("panicked") {
        return true;
    }
    problems.push(format!("{what}: knetsim {} failed: {}", args.join(" "), text(&out)));
    false
}

/// One round: the change `kind` killed after `delay`, then the next changes, which
/// must succeed and leave the live state equal to the stored topology.
fn round(
    name: &str,
    r: usize,
    kind: Kind,
    delay: Duration,
    worker: &str,
    tmp: &Path,
    inodes: &mut BTreeSet<u64>,
) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let n = ["--name", name];
    let ended;
    match kind {
        Kind::PodAdd => {
            let pod = format!("C0/k{r}");
            let add = [
                &["pod", "add", &pod, "--worker", worker][..],
                &n,
                &["--", "sleep", "1000"],
            ]
            .concat();
            ended = kill_after(&add, delay);
            inodes.extend(netns_inodes_of(name));
            let rm = [&["pod", "rm", &pod][..], &n].concat();
            if stored_has(name, &format!("k{r}")) {
                // The killed add got as far as recording it: it can be removed, and re-added.
                let _ = must(&mut problems, "after a killed pod add (recorded)", &rm)
                    && must(&mut problems, "re-adding the killed pod", &add);
            } else {
                let _ = must(&mut problems, "pod add of the same name after a killed pod add", &add);
            }
            inodes.extend(netns_inodes_of(name));
            must(&mut problems, "pod rm of the re-added pod", &rm);
        }
        Kind::PodRm => {
            let pod = format!("C0/r{r}");
            let add = [
                &["pod", "add", &pod, "--worker", worker][..],
                &n,
                &["--", "sleep", "1000"],
            ]
            .concat();
            let rm = [&["pod", "rm", &pod][..], &n].concat();
            if !must(&mut problems, "setting up a pod to remove", &add) {
                return problems
                    .into_iter()
                    .map(|p| (format!("round {r} (PodRm)"), p))
                    .collect();
            }
            inodes.extend(netns_inodes_of(name));
            ended = kill_after(&rm, delay);
            if stored_has(name, &format!("r{r}")) {
                must(&mut problems, "pod rm after a killed pod rm", &rm);
            } else {
                let _ = must(&mut problems, "pod add of the same name after a killed pod rm", &add)
                    && must(&mut problems, "pod rm of it", &rm);
            }
            inodes.extend(netns_inodes_of(name));
        }
        Kind::SvcAdd => {
            let svc = format!("C0/v{r}");
            let add = [&["svc", "add", &svc, "--pods", "c1,c2"][..], &n].concat();
            let rm = [&["svc", "rm", &svc][..], &n].concat();
            ended = kill_after(&add, delay);
            if stored_has(name, &format!("v{r}")) {
                must(&mut problems, "svc rm after a killed svc add (recorded)", &rm);
            } else {
                let _ = must(&mut problems, "svc add of the same name after a killed svc add", &add)
                    && must(&mut problems, "svc rm of it", &rm);
            }
        }
        Kind::Apply => {
            let before = stored_topology(name);
            let edited = tmp.join(format!("edited{r}.toml"));
            let previous = tmp.join(format!("previous{r}.toml"));
            std::fs::write(&edited, format!("{before}{EXTRA_CLUSTER}")).unwrap();
            std::fs::write(&previous, &before).unwrap();
            ended = kill_after(&[&["apply", edited.to_str().unwrap()][..], &n].concat(), delay);
            inodes.extend(netns_inodes_of(name));
            must(
                &mut problems,
                "apply of the previous topology after a killed apply",
                &[&["apply", previous.to_str().unwrap()][..], &n].concat(),
            );
            inodes.extend(netns_inodes_of(name));
        }
    }
    println!("round {r}: {kind:?} {ended} after {delay:?}");
    problems.extend(live_mismatches(name));
    let out = knetsim(&["status", "--name", name]);
    if !out.status.success() {
        problems.push(format!("status after the round: {}", text(&out)));
    }
    let label = format!("round {r} ({kind:?} after {delay:?})");
    problems.into_iter().map(|p| (label.clone(), p)).collect()
}

fn kill_changes(test: &str, rounds: usize) {
    if !live_ready(test, PROGRAMS) {
        return;
    }
    let seed = seed(test);
    let mut rng = Rng::new(seed);
    let t0 = Instant::now();
    let name = format!("t{}k{rounds}", std::process::id());
    let tmp = tempfile::tempdir().unwrap();
    let topo = tmp.path().join("base.toml");
    std::fs::write(&topo, BASE).unwrap();
    let before = RootSnapshot::take();
    let mut scrub = Scrub {
        name: name.clone(),
        inodes: BTreeSet::new(),
    };
    ok(&["up", topo.to_str().unwrap(), "--name", &name, "--no-checks"]);
    scrub.inodes.extend(netns_inodes_of(&name));

    let mut problems = Vec::new();
    let mut bad_rounds = 0;
    // A leftover stays until down: each is reported in the first round that shows it.
    let mut seen = BTreeSet::new();
    for r in 0..rounds {
        let kind = Kind::ALL[r % Kind::ALL.len()];
        let delay = Duration::from_millis(rng.below(kind.typical_ms() + 1));
        let worker = format!("w{}", 1 + rng.below(2));
        let p: Vec<String> = round(&name, r, kind, delay, &worker, tmp.path(), &mut scrub.inodes)
            .into_iter()
            .filter(|(_, p)| seen.insert(p.clone()))
            .map(|(label, p)| format!("{label}: {p}"))
            .collect();
        if !p.is_empty() {
            bad_rounds += 1;
            for l in &p {
                println!("{l}");
            }
        }
        problems.extend(p);
    }

    // down leaves nothing of it, and the root namespace as it was.
    let out = knetsim(&["down", "--name", &name]);
    if !out.status.success() {
        problems.push(format!("down: {}", text(&out)));
    }
    let ns = namespaces_of(&name);
    if !ns.is_empty() {
        problems.push(format!("namespaces left after down: {ns:?}"));
    }
    let mounts = mounts_of(&name);
    if !mounts.is_empty() {
        problems.push(format!("netns mounts left after down: {mounts:?}"));
    }
    if Path::new(&state_dir(&name)).exists() {
        problems.push(format!("{} left after down", state_dir(&name)));
    }
    let procs = scrub.leftovers();
    if !procs.is_empty() {
        problems.push(format!("processes left after down: {procs:?}"));
    }
    let diffs = RootSnapshot::take().differences(&before);
    problems.extend(diffs);
    println!(
        "{test}: {rounds} kill rounds in {:?}, {bad_rounds} rounds with problems",
        t0.elapsed()
    );
    assert!(
        problems.is_empty(),
        "seed {seed}: {} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
    drop(scrub);
}

#[test]
fn kill_changes_then_next_change_and_down_leave_nothing() {
    let rounds = std::env::var("KNETSIM_KILL_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    kill_changes("kill_changes_then_next_change_and_down_leave_nothing", rounds);
}

/// The figures: 24 rounds (6 of each change). `cargo test --test live_kill -- --ignored`.
#[test]
#[ignore]
fn kill_changes_many_rounds() {
    kill_changes("kill_changes_many_rounds", 24);
}

/// The etcd member's data directory, from the compiled bundle (`clusters/C0/etcd/C0e1.json`).
fn etcd_data_dir(name: &str, topo: &Path) -> String {
    let out = tempfile::tempdir().unwrap();
    ok(&[
        "compile",
        topo.to_str().unwrap(),
        "-o",
        out.path().to_str().unwrap(),
        "--name",
        name,
    ]);
    let member: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("clusters/C0/etcd/C0e1.json")).unwrap()).unwrap();
    member["data_dir"].as_str().unwrap().to_string()
}

fn etcdctl(name: &str, args: &[&str]) -> std::process::Output {
    let argv = [
        &[
            "exec",
            "--name",
            name,
            "C0e1",
            "--",
            "etcdctl",
            "--endpoints",
            "http://127.0.0.1:2379",
        ][..],
        args,
    ]
    .concat();
    knetsim(&argv)
}

/// Issue 9 item 3: `up` killed in its first milliseconds leaves a state directory
/// with only `state.lock`. The next `up` works, `down` then removes the whole
/// directory, and etcd never starts on stale data.
#[test]
fn up_over_a_state_dir_with_only_the_lock_starts_fresh_and_down_removes_it() {
    let test = "up_over_a_state_dir_with_only_the_lock_starts_fresh_and_down_removes_it";
    if !live_ready(test, PROGRAMS) {
        return;
    }
    let name = format!("t{}s", std::process::id());
    let dir = state_dir(&name);
    let tmp = tempfile::tempdir().unwrap();
    let topo = tmp.path().join("base.toml");
    std::fs::write(&topo, BASE).unwrap();
    let data_dir = etcd_data_dir(&name, &topo);
    assert!(data_dir.starts_with(&dir), "{data_dir} is not in {dir}");
    let _scrub = Scrub {
        name: name.clone(),
        inodes: BTreeSet::new(),
    };
    let mut problems = Vec::new();

    // What the kill left: the directory and its lock file, nothing else. And, as an
    // earlier emulation's leftover, an etcd data directory with a marker in it.
    std::fs::create_dir_all(&data_dir).unwrap();
    std::fs::write(format!("{dir}/state.lock"), "").unwrap();
    let marker = format!("{data_dir}/left-by-an-earlier-run");
    std::fs::write(&marker, "stale").unwrap();
    ok(&["up", topo.to_str().unwrap(), "--name", &name, "--no-checks"]);
    if Path::new(&marker).exists() {
        problems.push(format!(
            "etcd started on the old data directory {data_dir} ({marker} is still there)"
        ));
    }
    let etcdctl_here = common::on_path("etcdctl");
    if etcdctl_here {
        let out = etcdctl(&name, &["put", "/knetsim-test/stale", "yes"]);
        assert!(out.status.success(), "etcdctl put: {}", text(&out));
    }
    let out = knetsim(&["down", "--name", &name]);
    if !out.status.success() {
        problems.push(format!("down: {}", text(&out)));
    }
    if Path::new(&dir).exists() {
        let left: Vec<String> = std::fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        problems.push(format!("down left {dir} with {left:?}"));
    }

    // The same once more, over whatever is there now: no key of the last run survives.
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(format!("{dir}/state.lock"), "").unwrap();
    ok(&["up", topo.to_str().unwrap(), "--name", &name, "--no-checks"]);
    if etcdctl_here {
        let out = etcdctl(&name, &["get", "/knetsim-test/stale"]);
        assert!(out.status.success(), "etcdctl get: {}", text(&out));
        let got = String::from_utf8_lossy(&out.stdout).into_owned();
        if got.contains("/knetsim-test/stale") {
            problems.push(format!("etcd kept a key of the previous run: {got}"));
        }
    } else {
        println!("note: no etcdctl: the old-keys check is skipped");
    }
    let out = knetsim(&["down", "--name", &name]);
    if !out.status.success() {
        problems.push(format!("second down: {}", text(&out)));
    }
    if Path::new(&dir).exists() {
        problems.push(format!("the second down left {dir}"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn status_names_an_interrupted_change_and_the_next_change_rolls_it_back() {
    let test = "status_names_an_interrupted_change_and_the_next_change_rolls_it_back";
    if !live_ready(test, PROGRAMS) {
        return;
    }
    let name = format!("t{}i", std::process::id());
    let dir = state_dir(&name);
    let tmp = tempfile::tempdir().unwrap();
    let topo = tmp.path().join("base.toml");
    std::fs::write(&topo, BASE).unwrap();
    let _scrub = Scrub {
        name: name.clone(),
        inodes: BTreeSet::new(),
    };
    ok(&["up", topo.to_str().unwrap(), "--name", &name, "--no-checks"]);
    // What a change killed before it wrote its new generation leaves: its record,
    // naming a process that is gone.
    let state_file = format!("{dir}/state.json");
    let mut st: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&state_file).unwrap()).unwrap();
    let generation = st["generation"].as_u64().unwrap();
    let gone = {
        let mut child = Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        child.id()
    };
    st["change"] = serde_json::json!({ "from": generation, "to": generation + 1, "pid": gone, "performed": 0 });
    std::fs::write(&state_file, serde_json::to_string_pretty(&st).unwrap()).unwrap();
    let out = knetsim(&["status", "--name", &name]);
    assert!(!out.status.success(), "status must be unhealthy: {}", text(&out));
    assert!(
        text(&out).contains(&format!("a change by pid {gone} was interrupted")),
        "{}",
        text(&out)
    );
    // The repair the problem line names: apply the running topology.
    let out = knetsim(&["apply", "--name", &name, &format!("{dir}/topology.toml")]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("was interrupted"), "{}", text(&out));
    assert!(text(&out).contains("nothing to repair"), "{}", text(&out));
    let out = knetsim(&["status", "--name", &name]);
    assert!(out.status.success(), "{}", text(&out));
    ok(&["down", "--name", &name]);
}
