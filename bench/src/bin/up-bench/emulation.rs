//! One `knetsim up` or `knetsim down` as a child process: the emulation it acts on (taken
//! down again when dropped), and what each run reported (steps as their progress lines
//! arrived, wall and CPU time, knetsim's own figures).

use crate::observe::children_cpu;
use knetsim_bench::progress_step;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One step of an `up`, from its progress line.
#[derive(Debug, Clone)]
pub(super) struct Step {
    pub(super) id: String,
    /// The step's own run time, as knetsim reports it.
    pub(super) ms: u64,
    /// When its line arrived, since `up` was spawned.
    pub(super) finish: Duration,
}

impl Step {
    pub(super) fn start(&self) -> Duration {
        self.finish.saturating_sub(Duration::from_millis(self.ms))
    }
}

#[derive(Debug, Default)]
pub(super) struct UpRun {
    pub(super) ok: bool,
    pub(super) wall: Duration,
    /// "is up in X s" from knetsim's summary (from its own start, after exec).
    pub(super) own: Option<f64>,
    /// When "bringing up ..." arrived (compile, preflight, state and bundle written).
    pub(super) apply_begin: Option<Duration>,
    pub(super) steps: Vec<Step>,
    /// "(119 steps, 10 hosts, 11 pods, 15 processes)"
    pub(super) summary: String,
    pub(super) other_stderr: Vec<String>,
    /// CPU time (user + sys) of `knetsim up` and of the helpers it waited for (ip, nft,
    /// CNI plugins, iptables, ...), from getrusage(RUSAGE_CHILDREN).
    pub(super) cpu: Duration,
    /// CPU time the daemons it started (still running) had used when it exited, by
    /// the first word of their recorded name (etcd, flanneld, pod, nginx, ...).
    pub(super) daemon_cpu: BTreeMap<String, Duration>,
}

#[derive(Debug, Default)]
pub(super) struct DownRun {
    pub(super) ok: bool,
    pub(super) wall: Duration,
    pub(super) own: Option<f64>,
    pub(super) output: String,
}

/// A named emulation this benchmark may have brought up: dropped, it is taken down.
pub(super) struct Emulation<'a> {
    pub(super) bin: &'a Path,
    pub(super) name: String,
    /// `--state-dir`, when not knetsim's default.
    pub(super) state_dir: Option<PathBuf>,
    pub(super) active: bool,
}

impl Emulation<'_> {
    pub(super) fn state_dir(&self) -> PathBuf {
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

    pub(super) fn up(&self, topology: Option<&Path>, skip: &str) -> std::io::Result<UpRun> {
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

    pub(super) fn down(&mut self) -> DownRun {
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
