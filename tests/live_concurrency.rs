//! Live changes under concurrency (issue 9, items 1 and 7), as root: several knetsim
//! processes change one emulation at once while others read it, and the lock's
//! holder is named. Every emulation is named `t<pid>...`; a drop guard runs
//! `knetsim down --name ...`. Without root or a needed program they print
//! `SKIP: reason`, unless `CI` is set, where they fail instead. Every probe of the
//! emulation runs inside its namespaces.

mod common;

use common::{knetsim, live_mismatches, live_ready, ok, seed, state_dir, text, Down, Rng};
use std::collections::BTreeSet;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PROGRAMS: &[&str] = &["ip", "nft", "etcd", "ping"];

/// Three workers, two pods that nobody removes (the readers' `exec` runs in c1), a
/// service over them and checks for `knetsim test`.
const BASE: &str = r#"[[clusters]]
name = "C0"
etcd = 1
workers = 3
pods = [
  { name = "c1", worker = "w1" },
  { name = "c2", worker = "w2" },
]
services = [{ name = "web", vip = "100.64.0.10", pods = ["c1", "c2"] }]

[[checks]]
name = "pods across workers"
from = "C0/c1"
ping = "C0/c2"

[[checks]]
name = "vip answers"
from = "C0/c1"
ping = "C0/web"
"#;

const CHANGERS: usize = 4;
const CHANGES_EACH: usize = 10;
/// How often a change refused as busy is tried (the current lock does not wait).
const BUSY_RETRIES: usize = 30;

/// How a change that succeeded updates what its changer has.
type Update = Box<dyn FnOnce(&mut Own)>;

/// What one changer process believes it added and still has.
#[derive(Default)]
struct Own {
    pods: Vec<String>,
    services: Vec<(String, Vec<String>)>,
}

impl Own {
    /// Pods that no service of ours uses (so removing one changes no service of ours).
    fn free_pods(&self) -> Vec<String> {
        self.pods
            .iter()
            .filter(|p| !self.services.iter().any(|(_, ps)| ps.contains(p)))
            .cloned()
            .collect()
    }
}

/// Whether an error is the lock being held (tolerated by the model: nothing changed),
/// as the current and the waiting lock both word it.
fn is_busy(stderr: &str) -> bool {
    let s = stderr.to_lowercase();
    s.contains("busy") || s.contains("timed out") || s.contains("timeout")
}

/// Lines of stderr about a held lock.
fn lock_lines(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| {
            let l = l.to_lowercase();
            l.contains("busy") || l.contains("waiting") || l.contains("holds") || l.contains("held by")
        })
        .map(str::to_string)
        .collect()
}

/// Whether `line` names one of `pids` (as a whole number), once the emulation's name
/// (which has digits of its own) is taken out.
fn names_a_pid(line: &str, name: &str, pids: &[u32]) -> bool {
    line.replace(name, " ")
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|t| t.parse::<u32>().ok())
        .any(|n| pids.contains(&n))
}

/// Runs knetsim as a child, recording its PID in `pids` (for the holder check).
fn knetsim_child(args: &[&str], pids: &Mutex<Vec<u32>>) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_knetsim"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run knetsim");
    pids.lock().unwrap().push(child.id());
    child.wait_with_output().expect("wait for knetsim")
}

/// Read errors a reader must never see, whatever a writer is doing.
const READ_ERRORS: &[&str] = &[
    "panicked",
    "EOF while parsing",
    "no [[clusters]]",
    "declares no cluster",
    "expected value",
    "trailing characters",
    "invalid type",
    "missing field",
];

#[test]
fn concurrent_changes_keep_the_live_state_equal_to_the_topology() {
    let test = "concurrent_changes_keep_the_live_state_equal_to_the_topology";
    if !live_ready(test, PROGRAMS) {
        return;
    }
    let seed = seed(test);
    let t0 = Instant::now();
    let name = format!("t{}c", std::process::id());
    let tmp = tempfile::tempdir().unwrap();
    let topo = tmp.path().join("base.toml");
    std::fs::write(&topo, BASE).unwrap();
    let _guard = Down(name.clone());
    ok(&["up", topo.to_str().unwrap(), "--name", &name, "--no-checks"]);
    let up_time = t0.elapsed();

    let problems = Arc::new(Mutex::new(Vec::<String>::new()));
    let pids = Arc::new(Mutex::new(Vec::<u32>::new()));
    let lock_messages = Arc::new(Mutex::new(Vec::<String>::new()));
    let busy = Arc::new(Mutex::new(0usize));
    let stop = Arc::new(AtomicBool::new(false));

    // The reader: exec and status in a loop, never a panic or a read error.
    let reader = {
        let (name, problems, stop) = (name.clone(), problems.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut rounds = 0;
            while !stop.load(Ordering::SeqCst) {
                let out = knetsim(&["exec", "--name", &name, "C0/c1", "--", "true"]);
                if !out.status.success() {
                    problems
                        .lock()
                        .unwrap()
                        .push(format!("reader: exec C0/c1 -- true failed: {}", text(&out)));
                }
                let out = knetsim(&["status", "--name", &name, "--json"]);
                let stderr = String::from_utf8_lossy(&out.stderr);
                let json = serde_json::from_slice::<serde_json::Value>(&out.stdout);
                if !matches!(out.status.code(), Some(0 | 1))
                    || json.is_err()
                    || READ_ERRORS.iter().any(|e| stderr.contains(e))
                {
                    problems
                        .lock()
                        .unwrap()
                        .push(format!("reader: status --json: {}", text(&out)));
                }
                rounds += 1;
            }
            rounds
        })
    };

    // The changers: each its own seeded sequence of changes to what it added itself.
    let changers: Vec<_> = (0..CHANGERS)
        .map(|p| {
            let (name, problems, pids, lock_messages, busy) = (
                name.clone(),
                problems.clone(),
                pids.clone(),
                lock_messages.clone(),
                busy.clone(),
            );
            std::thread::spawn(move || {
                let mut rng = Rng::new(seed ^ ((p as u64 + 1) * 0x1000_0001));
                let mut own = Own::default();
                let mut log = Vec::new();
                for i in 0..CHANGES_EACH {
                    let free = own.free_pods();
                    let mut choices = vec!["pod add", "pod add"];
                    if !free.is_empty() {
                        choices.push("pod rm");
                    }
                    if !own.pods.is_empty() {
                        choices.push("svc add");
                    }
                    if !own.services.is_empty() {
                        choices.push("svc rm");
                    }
                    let op = *rng.pick(&choices);
                    let (args, apply): (Vec<String>, Update) = match op {
                        "pod add" => {
                            let pod = format!("p{p}x{i}");
                            let worker = format!("w{}", 1 + rng.below(3));
                            let args = vec![
                                "pod".into(),
                                "add".into(),
                                format!("C0/{pod}"),
                                "--worker".into(),
                                worker,
                            ];
                            (args, Box::new(move |o: &mut Own| o.pods.push(pod)))
                        }
                        "pod rm" => {
                            let pod = rng.pick(&free).clone();
                            let args = vec!["pod".into(), "rm".into(), format!("C0/{pod}")];
                            (args, Box::new(move |o: &mut Own| o.pods.retain(|x| *x != pod)))
                        }
                        "svc add" => {
                            let svc = format!("s{p}x{i}");
                            let mut backends = vec![rng.pick(&own.pods).clone()];
                            let other = rng.pick(&own.pods).clone();
                            if !backends.contains(&other) {
                                backends.push(other);
                            }
                            let args = vec![
                                "svc".into(),
                                "add".into(),
                                format!("C0/{svc}"),
                                "--pods".into(),
                                backends.join(","),
                            ];
                            (args, Box::new(move |o: &mut Own| o.services.push((svc, backends))))
                        }
                        _ => {
                            let svc = rng.pick(&own.services).0.clone();
                            let args = vec!["svc".into(), "rm".into(), format!("C0/{svc}")];
                            (args, Box::new(move |o: &mut Own| o.services.retain(|(s, _)| *s != svc)))
                        }
                    };
                    let mut argv: Vec<&str> = args.iter().map(String::as_str).collect();
                    argv.extend(["--name", &name]);
                    let t = Instant::now();
                    // Refused as busy (the lock taken at once, not waited for): counted
                    // as a problem, and retried as a user's script would, so that the
                    // changes still overlap and each still happens.
                    let mut tries = 0;
                    let (out, stderr) = loop {
                        let out = knetsim_child(&argv, &pids);
                        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
                        lock_messages.lock().unwrap().extend(lock_lines(&stderr));
                        tries += 1;
                        if out.status.success() || !is_busy(&stderr) || tries == BUSY_RETRIES {
                            break (out, stderr);
                        }
                        *busy.lock().unwrap() += 1;
                        std::thread::sleep(Duration::from_millis(10 + rng.below(40)));
                    };
                    let what = format!("changer {p}: knetsim {}", argv.join(" "));
                    log.push(format!(
                        "{what}: exit {:?} in {:?} ({tries} tries)",
                        out.status.code(),
                        t.elapsed()
                    ));
                    if stderr.contains("panicked") {
                        problems
                            .lock()
                            .unwrap()
                            .push(format!("{what} panicked: {}", text(&out)));
                    }
                    if out.status.success() {
                        apply(&mut own);
                    } else if is_busy(&stderr) {
                        problems
                            .lock()
                            .unwrap()
                            .push(format!("{what}: busy {tries} times: {}", text(&out)));
                    } else {
                        problems.lock().unwrap().push(format!("{what} failed: {}", text(&out)));
                    }
                }
                (own, log)
            })
        })
        .collect();

    let mut expected_pods: BTreeSet<String> = ["C0/c1", "C0/c2"].map(String::from).into();
    let mut expected_services: BTreeSet<String> = ["C0/web".to_string()].into();
    for c in changers {
        let (own, log) = c.join().expect("a changer thread panicked");
        for l in log {
            println!("{l}");
        }
        expected_pods.extend(own.pods.iter().map(|p| format!("C0/{p}")));
        expected_services.extend(own.services.iter().map(|(s, _)| format!("C0/{s}")));
    }
    stop.store(true, Ordering::SeqCst);
    let reads = reader.join().expect("the reader thread panicked");
    let changes_time = t0.elapsed() - up_time;
    let mut problems = problems.lock().unwrap().clone();

    // Every lock message names the holder (issue 9 item 7).
    let all_pids = pids.lock().unwrap().clone();
    for line in lock_messages.lock().unwrap().iter() {
        if !names_a_pid(line, &name, &all_pids) {
            problems.push(format!("a lock message does not name the holder's PID: {line}"));
        }
    }
    let busy = *busy.lock().unwrap();
    if busy > 0 {
        problems.push(format!(
            "{busy} times a change was refused as busy instead of waiting for the lock ({} changes)",
            CHANGERS * CHANGES_EACH
        ));
    }

    // What the changers were told succeeded is what the stored topology has.
    let stored = std::fs::read_to_string(format!("{}/topology.toml", state_dir(&name))).unwrap_or_default();
    match common::planned_from_stored_topology(&name) {
        Ok(planned) => {
            let pods: BTreeSet<String> = planned.pods.keys().cloned().collect();
            let services: BTreeSet<String> = planned.services.keys().cloned().collect();
            for lost in expected_pods.difference(&pods) {
                problems.push(format!(
                    "pod {lost} was added (success) but is not in topology.toml (lost)"
                ));
            }
            for extra in pods.difference(&expected_pods) {
                problems.push(format!(
                    "pod {extra} is in topology.toml but its removal succeeded (or it failed)"
                ));
            }
            for lost in expected_services.difference(&services) {
                problems.push(format!(
                    "service {lost} was added (success) but is not in topology.toml (lost)"
                ));
            }
            for extra in services.difference(&expected_services) {
                problems.push(format!("service {extra} is in topology.toml but was not (still) added"));
            }
        }
        Err(e) => problems.push(e),
    }
    // The live state equals the stored topology.
    problems.extend(live_mismatches(&name));
    // Healthy, and its checks pass.
    let out = knetsim(&["status", "--name", &name]);
    if !out.status.success() {
        problems.push(format!("status after the changes: {}", text(&out)));
    }
    let out = knetsim(&["test", "--name", &name]);
    if !out.status.success() {
        problems.push(format!("knetsim test after the changes: {}", text(&out)));
    }
    println!(
        "timing: up {up_time:?}, {} changes by {CHANGERS} processes in {changes_time:?}, {reads} reader rounds, {busy} busy",
        CHANGERS * CHANGES_EACH
    );
    assert!(
        problems.is_empty(),
        "seed {seed}: {} problems:\n{}\n\nstored topology.toml:\n{stored}",
        problems.len(),
        problems.join("\n")
    );
    ok(&["down", "--name", &name]);
}

/// Holds `<state>/state.lock` the way knetsim does: an exclusive `flock` and the
/// holder's PID as the file's content. Dropping it releases the lock.
struct HeldLock(#[allow(dead_code)] std::fs::File);

impl HeldLock {
    fn take(path: &str, pid: u32) -> HeldLock {
        use std::io::{Seek, Write};
        use std::os::fd::AsRawFd;
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .unwrap();
        // SAFETY: flock on a file descriptor we own.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(rc, 0, "flock {path}: {}", std::io::Error::last_os_error());
        f.set_len(0).unwrap();
        f.rewind().unwrap();
        f.write_all(pid.to_string().as_bytes()).unwrap();
        f.flush().unwrap();
        HeldLock(f)
    }
}

#[test]
fn a_change_waits_for_a_held_lock_and_names_its_holder() {
    let test = "a_change_waits_for_a_held_lock_and_names_its_holder";
    if !live_ready(test, PROGRAMS) {
        return;
    }
    let name = format!("t{}l", std::process::id());
    let tmp = tempfile::tempdir().unwrap();
    let topo = tmp.path().join("base.toml");
    std::fs::write(&topo, BASE).unwrap();
    let _guard = Down(name.clone());
    ok(&["up", topo.to_str().unwrap(), "--name", &name, "--no-checks"]);

    // The test holds the lock, as a knetsim process would, for 2 s.
    let me = std::process::id();
    let held = HeldLock::take(&format!("{}/state.lock", state_dir(&name)), me);
    let hold = Duration::from_secs(2);
    let t = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_knetsim"))
        .args(["pod", "add", "C0/lk1", "--worker", "w3", "--name", &name])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let waiter = std::thread::spawn(move || {
        let out = child.wait_with_output().unwrap();
        (out, t.elapsed())
    });
    std::thread::sleep(hold);
    drop(held);
    let (out, took) = waiter.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("pod add with the lock held for {hold:?}: {took:?}, {}", text(&out));
    // Whether it refuses (busy) or waits, what it says names the holder.
    assert!(
        names_a_pid(&stderr, &name, &[me]),
        "the message does not name the holder (pid {me}): {}",
        text(&out)
    );
    // It waits for the lock instead of failing at once, then changes the emulation.
    assert!(
        out.status.success(),
        "pod add did not wait for the held lock (released after {hold:?}; it ended after {took:?}): {}",
        text(&out)
    );
    assert!(took >= hold, "pod add finished after {took:?}, while the lock was held");
    let st: serde_json::Value = serde_json::from_str(&ok(&["status", "--name", &name, "--json"])).unwrap();
    assert!(
        st["pods"].as_array().unwrap().iter().any(|p| p["name"] == "C0/lk1"),
        "{st:#}"
    );

    ok(&["down", "--name", &name]);
}
