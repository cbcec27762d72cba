//! What the benchmark reads of an emulation besides knetsim's output: the processes
//! recorded in state.json, the step dependencies in the bundle's plan.json, and the
//! memory, CPU time and liveness of processes and namespaces from /proc and /run/netns.

use knetsim_bench::procfs::status_kb;
use knetsim_compiler::plan::Plan;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

/// A process recorded in state.json.
#[derive(Debug, Clone)]
pub(super) struct Recorded {
    /// state.json's name: "etcd C0e1", "flanneld C0w1", "pod C0/c1", ...
    pub(super) kind: String,
    pub(super) pid: u32,
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

pub(super) fn recorded_processes(state_dir: &Path) -> Result<Vec<Recorded>, String> {
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
pub(super) fn plan_deps(state_dir: &Path) -> HashMap<String, Vec<String>> {
    let text = std::fs::read_to_string(state_dir.join("bundle").join("plan.json")).unwrap_or_default();
    let Ok(plan) = serde_json::from_str::<Plan>(&text) else {
        return HashMap::new();
    };
    plan.steps.into_iter().map(|s| (s.id, s.after)).collect()
}

/// Memory of a process in kB: VmRSS, VmHWM, RssAnon, RssFile, Pss.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Mem {
    pub(super) rss: u64,
    pub(super) hwm: u64,
    pub(super) anon: u64,
    pub(super) file: u64,
    pub(super) pss: u64,
}

fn mem(pid: u32) -> Option<Mem> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    Some(Mem {
        rss: status_kb(&status, "VmRSS")?,
        hwm: status_kb(&status, "VmHWM")?,
        anon: status_kb(&status, "RssAnon").unwrap_or(0),
        file: status_kb(&status, "RssFile").unwrap_or(0),
        pss: status_kb(&rollup, "Pss").unwrap_or(0),
    })
}

pub(super) fn mems(procs: &[Recorded], kind: &str) -> Vec<Mem> {
    procs
        .iter()
        .filter(|p| p.kind.split_whitespace().next() == Some(kind))
        .filter_map(|p| mem(p.pid))
        .collect()
}

/// CPU time of the waited-for children of this process (and their waited-for descendants).
pub(super) fn children_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// utime + stime of a process, from /proc/PID/stat.
pub(super) fn proc_cpu(pid: u32) -> Option<Duration> {
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
pub(super) fn still_running(p: &Recorded) -> bool {
    match (proc_stat(p.pid), p.start_ticks) {
        (None, _) | (Some(('Z' | 'X', _)), _) => false,
        (Some((_, now)), Some(then)) => now == then,
        (Some(_), None) => true,
    }
}

pub(super) fn namespaces_of(name: &str) -> Vec<String> {
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

pub(super) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_processes_reads_state_json() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("state.json"),
            r#"{"name": "x", "processes": [
                {"name": "etcd C0e1", "netns": "C0e1", "pid": 42, "start_ticks": 7, "argv": [], "log": "l", "started_at": 1},
                {"name": "pod C0/c1", "netns": "k0_c1", "pid": 43, "argv": ["a"], "log": "l", "started_at": 1}
            ]}"#,
        )
        .unwrap();
        let p = recorded_processes(dir.path()).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p[0].kind.as_str(), p[0].pid, p[0].start_ticks),
            ("etcd C0e1", 42, Some(7))
        );
        assert_eq!(
            (p[1].kind.as_str(), p[1].pid, p[1].start_ticks),
            ("pod C0/c1", 43, None)
        );
        assert!(recorded_processes(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn plan_deps_reads_the_bundles_plan_json() {
        use knetsim_compiler::{compile, CompileOptions, Source};
        let dir = tempfile::tempdir().unwrap();
        let bundle = compile(&Source::default_topology(), &CompileOptions::default()).unwrap();
        bundle.write_to(&dir.path().join("bundle")).unwrap();
        let deps = plan_deps(dir.path());
        let plan: Plan = serde_json::from_str(bundle.get("plan.json").unwrap()).unwrap();
        assert_eq!(deps.len(), plan.steps.len());
        assert!(deps.values().any(|a| !a.is_empty()));
        assert!(plan_deps(&dir.path().join("missing")).is_empty());
    }
}
