//! The pods' Kubernetes probes, run by the supervisor as the kubelet's prober runs
//! them: one worker per probe of a running workload (started over when the
//! workload restarts), first after `initial_delay_seconds`, then every
//! `period_seconds`, each try bounded by `timeout_seconds`. A readiness probe sets
//! the pod's readiness after `success_threshold` successes or `failure_threshold`
//! failures in a row (not ready until its first success); a liveness probe kills
//! the workload after `failure_threshold` failures (the supervisor then restarts
//! it, with its back-off); a startup probe holds the other two back until it
//! succeeds and kills the workload after `failure_threshold` failures.

use crate::state::State;
use knetsim_compiler::model::{PodProbe, ProbeHandler};
use knetsim_compiler::plan::workload_name;
use knetsim_compiler::Model;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Startup,
    Liveness,
    Readiness,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Startup => "startup",
            Kind::Liveness => "liveness",
            Kind::Readiness => "readiness",
        }
    }
}

/// Where and how to probe: the pod's namespace and address.
pub struct Target<'a> {
    pub netns: &'a str,
    pub ip: &'a str,
}

/// Runs one try of a probe; true = success.
pub type Run<'a> = &'a dyn Fn(&ProbeHandler, &Target, Duration) -> bool;

struct Worker {
    probe: PodProbe,
    netns: String,
    ip: String,
    /// The workload process it probes (a new one starts the worker over).
    pid: u32,
    next: Instant,
    successes: u32,
    failures: u32,
    /// The result so far: None until the thresholds say.
    passing: Option<bool>,
}

/// What the probes say.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verdicts {
    /// Pods not ready by their probes (startup not yet passed, or readiness failing), and why.
    pub not_ready: BTreeMap<String, String>,
    /// Workloads to kill (pod, recorded PID, why): liveness or startup failed.
    pub kill: Vec<(String, u32, String)>,
}

#[derive(Default)]
pub struct Prober {
    workers: HashMap<(String, Kind), Worker>,
}

impl Prober {
    /// One worker per probe of each pod whose workload is recorded and running as
    /// `alive` says; a workload with a new PID starts its workers over.
    pub fn sync(&mut self, model: &Model, st: &State, now: Instant, alive: &dyn Fn(u32, Option<u64>) -> bool) {
        let mut keep = Vec::new();
        for c in &model.clusters {
            for p in c.pods.iter().filter(|p| !p.deleted) {
                let id = c.pod_id(p);
                let Some(w) = st.processes.iter().find(|w| w.name == workload_name(&id)) else {
                    continue;
                };
                if !alive(w.pid, w.start_ticks) {
                    continue;
                }
                for (kind, probe) in [
                    (Kind::Startup, &p.probes.startup),
                    (Kind::Liveness, &p.probes.liveness),
                    (Kind::Readiness, &p.probes.readiness),
                ] {
                    let Some(probe) = probe else { continue };
                    let key = (id.clone(), kind);
                    keep.push(key.clone());
                    let fresh = self
                        .workers
                        .get(&key)
                        .is_none_or(|x| x.pid != w.pid || &x.probe != probe);
                    if fresh {
                        self.workers.insert(
                            key,
                            Worker {
                                probe: probe.clone(),
                                netns: p.netns.clone(),
                                ip: p.ip.to_string(),
                                pid: w.pid,
                                next: now + Duration::from_secs(probe.initial_delay_seconds.into()),
                                successes: 0,
                                failures: 0,
                                passing: None,
                            },
                        );
                    }
                }
            }
        }
        self.workers.retain(|k, _| keep.contains(k));
    }

    /// Runs the probes that are due at `now` and says what they mean.
    pub fn tick(&mut self, now: Instant, run: Run) -> Verdicts {
        let started: Vec<String> = self
            .workers
            .iter()
            .filter(|((_, k), w)| *k == Kind::Startup && w.passing != Some(true))
            .map(|((pod, _), _)| pod.clone())
            .collect();
        let mut keys: Vec<(String, Kind)> = self.workers.keys().cloned().collect();
        keys.sort();
        let mut v = Verdicts::default();
        for key in keys {
            let (pod, kind) = &key;
            // Liveness and readiness wait for the startup probe to pass.
            if *kind != Kind::Startup && started.contains(pod) {
                if *kind == Kind::Readiness {
                    v.not_ready
                        .insert(pod.clone(), "its startup probe has not passed yet".into());
                }
                continue;
            }
            let w = self.workers.get_mut(&key).expect("listed");
            if now >= w.next {
                w.next = now + Duration::from_secs(w.probe.period_seconds.into());
                let target = Target {
                    netns: &w.netns,
                    ip: &w.ip,
                };
                let ok = run(
                    &w.probe.handler,
                    &target,
                    Duration::from_secs(w.probe.timeout_seconds.into()),
                );
                if ok {
                    w.successes += 1;
                    w.failures = 0;
                    if w.successes >= w.probe.success_threshold {
                        w.passing = Some(true);
                    }
                } else {
                    w.failures += 1;
                    w.successes = 0;
                    if w.failures >= w.probe.failure_threshold {
                        w.passing = Some(false);
                    }
                }
            }
            let why = |w: &Worker| {
                format!(
                    "{} probe ({}) failed {} time(s)",
                    kind.name(),
                    describe(&w.probe.handler),
                    w.failures
                )
            };
            match (kind, w.passing) {
                (Kind::Readiness, Some(true)) => {}
                (Kind::Readiness, None) => {
                    v.not_ready
                        .insert(pod.clone(), "its readiness probe has not passed yet".into());
                }
                (Kind::Readiness, Some(false)) => {
                    v.not_ready.insert(pod.clone(), why(w));
                }
                (Kind::Liveness | Kind::Startup, Some(false)) => {
                    v.kill.push((pod.clone(), w.pid, why(w)));
                }
                _ => {}
            }
        }
        v
    }
}

/// Runs one try of a probe for real: a TCP connect or an HTTP GET (200-399 is a
/// success, as in Kubernetes) from inside the pod's namespace, or the command with
/// `ip netns exec` (exit status 0), each within `timeout`.
pub fn run_in_netns(h: &ProbeHandler, t: &Target, timeout: Duration) -> bool {
    match h {
        ProbeHandler::TcpSocket { port } => {
            let Ok(addr) = format!("{}:{port}", t.ip).parse() else {
                return false;
            };
            crate::system::linux::in_netns(t.netns, || {
                Ok(std::net::TcpStream::connect_timeout(&addr, timeout).is_ok())
            })
            .unwrap_or(false)
        }
        ProbeHandler::HttpGet { port, path } => {
            let Ok(addr) = format!("{}:{port}", t.ip).parse() else {
                return false;
            };
            crate::system::linux::in_netns(t.netns, || {
                Ok(crate::http::get(addr, path, timeout, timeout).is_ok_and(|(code, _)| (200..400).contains(&code)))
            })
            .unwrap_or(false)
        }
        ProbeHandler::Exec { command } => {
            let child = std::process::Command::new("ip")
                .args(["netns", "exec", t.netns])
                .args(command)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn();
            let Ok(mut child) = child else { return false };
            let end = Instant::now() + timeout;
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => return status.success(),
                    Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(10)),
                    // Too slow: a failure, and our own child is stopped.
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        return false;
                    }
                }
            }
        }
    }
}

/// A probe's handler in a few words.
pub fn describe(h: &ProbeHandler) -> String {
    match h {
        ProbeHandler::TcpSocket { port } => format!("tcp_socket {port}"),
        ProbeHandler::HttpGet { port, path } => format!("http_get {port}{path}"),
        ProbeHandler::Exec { command } => format!("exec {}", command.join(" ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::ProcessRecord;
    use knetsim_compiler::{check, CompileOptions, Source};
    use std::cell::Cell;

    const TOPO: &str = "[[clusters]]\nname = \"C0\"\npods = [{ name = \"a\", worker = \"w1\", command = [\"sleep\", \"9\"], readiness_probe = { tcp_socket = { port = 80 }, period_seconds = 1, failure_threshold = 2 }, liveness_probe = { exec = { command = [\"true\"] }, period_seconds = 1, failure_threshold = 2 } }]\n";

    fn state(pid: u32) -> State {
        let mut st = State::default();
        st.processes.push(ProcessRecord {
            name: "pod C0/a".into(),
            netns: "t-k0_a".into(),
            pid,
            start_ticks: None,
            argv: vec![],
            log: String::new(),
            started_at: 0,
            restarts: 0,
            restart: Default::default(),
        });
        st
    }

    #[test]
    fn thresholds_readiness_and_liveness() {
        let model = check(&Source::new("t.toml", TOPO), &CompileOptions::named("t")).unwrap();
        let mut p = Prober::default();
        let t0 = Instant::now();
        p.sync(&model, &state(7), t0, &|_, _| true);
        let tcp_ok = Cell::new(true);
        let exec_ok = Cell::new(true);
        let run = |h: &ProbeHandler, _: &Target, _: Duration| match h {
            ProbeHandler::TcpSocket { .. } => tcp_ok.get(),
            _ => exec_ok.get(),
        };
        assert_eq!(p.tick(t0, &run), Verdicts::default(), "ready after one success");
        tcp_ok.set(false);
        let s = Duration::from_secs(1);
        assert!(
            p.tick(t0 + s, &run).not_ready.is_empty(),
            "one failure of two: still ready"
        );
        let v = p.tick(t0 + 2 * s, &run);
        assert!(
            v.not_ready["C0/a"].contains("readiness probe (tcp_socket 80) failed 2"),
            "{v:?}"
        );
        // Not due yet: nothing runs, the verdict stays.
        assert!(p.tick(t0 + 2 * s, &run).not_ready.contains_key("C0/a"));
        tcp_ok.set(true);
        assert!(p.tick(t0 + 3 * s, &run).not_ready.is_empty());
        exec_ok.set(false);
        assert!(p.tick(t0 + 4 * s, &run).kill.is_empty());
        let v = p.tick(t0 + 5 * s, &run);
        assert_eq!(v.kill.len(), 1);
        assert_eq!((v.kill[0].0.as_str(), v.kill[0].1), ("C0/a", 7));
        // A restarted workload starts its probes over.
        p.sync(&model, &state(8), t0 + 6 * s, &|_, _| true);
        exec_ok.set(true);
        assert_eq!(p.tick(t0 + 6 * s, &run), Verdicts::default());
        // A dead one has none.
        p.sync(&model, &state(8), t0 + 7 * s, &|_, _| false);
        assert_eq!(p.tick(t0 + 7 * s, &run), Verdicts::default());
    }
}
