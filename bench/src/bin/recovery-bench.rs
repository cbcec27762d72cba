//! recovery-bench: how fast a running emulation recovers (root only).
//!
//! `cargo build --release --workspace && sudo ./target/release/recovery-bench [--runs N]`
//!
//! Brings up the default topology as emulation `rb<pid>` with its supervisor (the
//! knetsim binary beside this one, `KNETSIM_BACKOFF_SCALE=0.01` so that every kill
//! of a run is a first restart or past its back-off), then, `--runs` times (default
//! 5) for each component kind (router, flannel agent, etcd member, nginx master, a
//! pod's workload), kill -9 of its recorded PID and the time until (a) a new PID is
//! recorded and (b) `status` is healthy again. Then the same faults all at once,
//! repaired by one `knetsim repair` with the supervisor stopped, timed as a whole
//! command. Then how long readiness changes took to reach the rules (from the
//! supervisor's log), and last the idle supervisor's CPU over 20 s and its memory.
//! It always tears the emulation down. Without root it says `SKIP` and exits 0: it
//! is a report, not a test.

use knetsim_bench::procfs::{is_root, status_kb};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const KINDS: [&str; 5] = [
    "router c0",
    "flanneld C0w1",
    "etcd C0e2",
    "ingress C0/grp1",
    "pod C0/c4",
];

fn knetsim_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KNETSIM") {
        return PathBuf::from(p);
    }
    let me = std::env::current_exe().expect("own path");
    me.parent().expect("a directory").join("knetsim")
}

fn knetsim(args: &[&str]) -> std::process::Output {
    Command::new(knetsim_bin())
        .args(args)
        .env("KNETSIM_BACKOFF_SCALE", "0.01")
        .output()
        .expect("run knetsim")
}

fn must(args: &[&str]) {
    let out = knetsim(args);
    assert!(
        out.status.success(),
        "knetsim {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pid_of(name: &str, process: &str) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/tmp/knetsim-{name}/state.json")).ok()?;
    let st: serde_json::Value = serde_json::from_str(&text).ok()?;
    st["processes"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == process)
        .and_then(|p| p["pid"].as_u64())
        .map(|p| p as u32)
}

fn healthy(name: &str) -> bool {
    knetsim(&["status", "--name", name]).status.success()
}

fn wait(within: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < within {
        if cond() {
            return Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

fn kill(pid: u32) {
    // SAFETY: a PID this emulation recorded, taken from its state.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(v: &mut [f64]) -> String {
    v.sort_by(f64::total_cmp);
    format!("{:>7.0} {:>7.0} {:>7.0}", v[0], v[v.len() / 2], v[v.len() - 1])
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    f.get(11).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

struct Guard(String);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = knetsim(&["down", "--name", &self.0]);
    }
}

fn main() {
    if !is_root() {
        println!("SKIP: recovery-bench needs root (it brings an emulation up)");
        return;
    }
    let runs: usize = std::env::args()
        .skip_while(|a| a != "--runs")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(5);
    let name = format!("rb{}", std::process::id());
    let _guard = Guard(name.clone());
    must(&["up", "--name", &name, "--no-checks"]);
    wait(Duration::from_secs(30), || healthy(&name)).expect("healthy after up");
    println!(
        "recovery-bench: default topology, emulation {name}, {runs} runs per kind, {}",
        knetsim_bench::cpu_model()
    );
    println!("supervisor: one look a second; figures in ms: min median max\n");
    println!(
        "{:<18} {:>23}   {:>23}",
        "kill -9 of", "new PID recorded", "status healthy again"
    );
    for kind in KINDS {
        let (mut restarted, mut healthy_again) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let old = pid_of(&name, kind).expect("recorded");
            let t = Instant::now();
            kill(old);
            wait(Duration::from_secs(20), || {
                pid_of(&name, kind).is_some_and(|p| p != old)
            })
            .expect("restarted");
            restarted.push(ms(t.elapsed()));
            wait(Duration::from_secs(20), || healthy(&name)).expect("healthy");
            healthy_again.push(ms(t.elapsed()));
            // Past the (scaled) back-off before the next kill.
            std::thread::sleep(Duration::from_millis(700));
        }
        println!(
            "{kind:<18} {}   {}",
            summary(&mut restarted),
            summary(&mut healthy_again)
        );
    }

    // Everything at once, repaired by one command (the supervisor stopped first).
    let supervisor = pid_of(&name, "supervisor").expect("supervisor");
    kill(supervisor);
    std::thread::sleep(Duration::from_millis(200));
    let mut whole = Vec::new();
    for _ in 0..runs {
        for kind in KINDS {
            kill(pid_of(&name, kind).expect("recorded"));
        }
        let netns = format!("{name}-k0_c1");
        let _ = Command::new("ip").args(["netns", "del", &netns]).status();
        std::thread::sleep(Duration::from_millis(200));
        let t = Instant::now();
        must(&["repair", "--name", &name]);
        whole.push(ms(t.elapsed()));
        wait(Duration::from_secs(20), || healthy(&name)).expect("healthy after repair");
    }
    println!(
        "\n`knetsim repair` of 5 dead processes and a deleted pod namespace (whole command): {}",
        summary(&mut whole)
    );

    // Readiness: how long each change of a pod's readiness took to reach the rules
    // (the supervisor logs it), from the moment it saw the change.
    let log = std::fs::read_to_string(format!("/tmp/knetsim-{name}/supervisor.log")).unwrap_or_default();
    let mut applied: Vec<f64> = log
        .lines()
        .filter_map(|l| {
            l.split("readiness applied in ")
                .nth(1)?
                .split(" ms")
                .next()?
                .parse()
                .ok()
        })
        .collect();
    if !applied.is_empty() {
        println!(
            "readiness to rules (recompile, delta, nft -f on the workers, commit), {} changes: {}",
            applied.len(),
            summary(&mut applied)
        );
    }

    // The idle supervisor (restarted by the last repair).
    let supervisor = pid_of(&name, "supervisor").expect("supervisor");
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let before = cpu_ticks(supervisor);
    std::thread::sleep(Duration::from_secs(20));
    let used = (cpu_ticks(supervisor) - before) as f64 / hz;
    let status = std::fs::read_to_string(format!("/proc/{supervisor}/status")).unwrap_or_default();
    println!(
        "idle supervisor: {:.2} % of one core over 20 s, resident {} kB (private {} kB)",
        used / 20.0 * 100.0,
        status_kb(&status, "VmRSS").unwrap_or(0),
        status_kb(&status, "RssAnon").unwrap_or(0),
    );
}
