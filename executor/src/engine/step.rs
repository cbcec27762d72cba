//! Running one step of a plan: what each `Op` does through `System`, the readiness
//! wait of a started process, and which paths may ever be removed.

use super::{Effect, Options, StepError};
use crate::state::{unix_now, ProcessRecord};
use crate::system::System;
use knetsim_compiler::plan::{CreateNetns, EtcdPut, MakeDir, NftLoad, Op, Probe, StartProcess, Wait, WriteFile};
use knetsim_compiler::Bundle;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Runs one operation on the calling thread (for live changes), returning what it
/// created in `effects`.
pub(crate) fn run_op(
    op: &Op,
    bundle: &Bundle,
    state_dir: &Path,
    sys: &dyn System,
    opts: &Options,
    effects: &mut Vec<Effect>,
    warnings: &mut Vec<String>,
) -> Result<(), StepError> {
    standalone(bundle, state_dir, sys, opts, |ctx| ctx.execute(op, effects, warnings))
}

/// A context for one step run on the calling thread (live changes): nothing cancels it.
fn standalone<R>(bundle: &Bundle, state_dir: &Path, sys: &dyn System, opts: &Options, f: impl FnOnce(&Ctx) -> R) -> R {
    let cancel = AtomicBool::new(false);
    f(&Ctx {
        bundle,
        state_dir,
        sys,
        opts,
        cancel: &cancel,
    })
}

/// How a process starts with respect to what a predecessor wrote (its `outputs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Begin {
    /// Every output goes first (a new or reconfigured process).
    Afresh,
    /// Directories stay (what it stored, e.g. etcd's data: a crashed member rejoins
    /// as itself); files go (the marker its probe waits for).
    Resume,
}

/// Starts the process of a `StartProcess` op, after removing what a predecessor
/// wrote as `begin` says. Records what it created, the process last, in `effects`.
pub(crate) fn start_process(
    op: &Op,
    sys: &dyn System,
    state_dir: &Path,
    begin: Begin,
    effects: &mut Vec<Effect>,
) -> Result<ProcessRecord, StepError> {
    let Op::StartProcess(spec) = op else {
        unreachable!("start_process takes a StartProcess op");
    };
    for out in &spec.outputs {
        let out = Path::new(out);
        if begin == Begin::Resume && out.is_dir() {
            continue;
        }
        if removable(out, state_dir) {
            sys.remove_path(out)?;
            effects.push(Effect::Path(out.to_path_buf()));
        }
    }
    let spawned = sys.start_process(spec)?;
    let StartProcess {
        name, netns, argv, log, ..
    } = spec;
    effects.extend(spawned.created.into_iter().map(Effect::Path));
    let record = ProcessRecord {
        name: name.clone(),
        netns: netns.clone(),
        pid: spawned.pid,
        start_ticks: spawned.start_ticks,
        argv: argv.clone(),
        log: log.clone(),
        started_at: unix_now(),
        restarts: 0,
        restart: spec.restart,
    };
    effects.push(Effect::Process(record.clone()));
    Ok(record)
}

/// Waits until a started process passes its readiness probe.
pub(crate) fn wait_process_ready(
    op: &Op,
    pid: u32,
    bundle: &Bundle,
    state_dir: &Path,
    sys: &dyn System,
    opts: &Options,
) -> Result<(), StepError> {
    let Op::StartProcess(StartProcess { ready, log, .. }) = op else {
        return Ok(());
    };
    standalone(bundle, state_dir, sys, opts, |ctx| {
        ctx.wait_ready(ready, Some((pid, log)))
    })
}

/// What a worker needs to run one step.
pub(super) struct Ctx<'a> {
    pub(super) bundle: &'a Bundle,
    /// Only paths inside it are ever removed.
    pub(super) state_dir: &'a Path,
    pub(super) sys: &'a dyn System,
    pub(super) opts: &'a Options,
    pub(super) cancel: &'a AtomicBool,
}

/// What a worker reports of one step it ran.
pub(super) struct Report {
    pub(super) effects: Vec<Effect>,
    pub(super) warnings: Vec<String>,
    pub(super) result: Result<(), StepError>,
    pub(super) elapsed: Duration,
}

impl Ctx<'_> {
    /// Runs `op` on a worker thread; a panic is the step's failure, not the run's.
    pub(super) fn report(&self, op: &Op) -> Report {
        let t = Instant::now();
        let mut effects = Vec::new();
        let mut warnings = Vec::new();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.execute(op, &mut effects, &mut warnings)
        }))
        .unwrap_or_else(|p| Err(StepError::Panicked(panic_message(&p))));
        Report {
            effects,
            warnings,
            result,
            elapsed: t.elapsed(),
        }
    }

    fn artifact(&self, name: &str) -> Result<&str, StepError> {
        self.bundle
            .get(name)
            .ok_or_else(|| StepError::MissingArtifact(name.to_string()))
    }

    fn write(&self, path: &str, contents: &str, effects: &mut Vec<Effect>) -> Result<(), StepError> {
        let dirs = self.sys.write_file(Path::new(path), contents.as_bytes())?;
        effects.extend(dirs.into_iter().map(Effect::Path));
        effects.push(Effect::Path(PathBuf::from(path)));
        Ok(())
    }

    pub(super) fn execute(
        &self,
        op: &Op,
        effects: &mut Vec<Effect>,
        warnings: &mut Vec<String>,
    ) -> Result<(), StepError> {
        let sys = self.sys;
        match op {
            Op::CreateNetns(CreateNetns { netns }) => {
                sys.create_netns(netns)?;
                effects.push(Effect::Netns(netns.clone()));
            }
            Op::CreateBridge(br) => sys.create_bridge(br)?,
            Op::CreateVeth(veth) => sys.create_veth(veth)?,
            Op::AddAddress(addr) => sys.add_address(addr)?,
            Op::AddRoute(route) => sys.add_route(route)?,
            Op::SetSysctl(sysctl) => sys.set_sysctl(sysctl)?,
            Op::Impair(imp) => warnings.extend(sys.impair(imp)?),
            Op::MakeDir(MakeDir { path }) => {
                let dirs = sys.make_dir(Path::new(path))?;
                effects.extend(dirs.into_iter().map(Effect::Path));
            }
            Op::WriteFile(WriteFile { path, artifact }) => self.write(path, self.artifact(artifact)?, effects)?,
            Op::GenerateCerts(certs) => {
                let created = sys.generate_certs(certs)?;
                effects.extend(created.into_iter().map(Effect::Path));
            }
            Op::NftLoad(NftLoad { netns, artifact, path }) => {
                self.write(path, self.artifact(artifact)?, effects)?;
                sys.nft_load(netns, Path::new(path))?;
            }
            Op::StartProcess(StartProcess { log, ready, .. }) => {
                let started = start_process(op, sys, self.state_dir, Begin::Afresh, effects)?;
                self.wait_ready(ready, Some((started.pid, log)))?;
            }
            Op::EtcdPut(EtcdPut {
                netns,
                endpoints,
                key,
                artifact,
                pointer,
            }) => {
                let text = self.artifact(artifact)?;
                let value = if pointer.is_empty() {
                    text.to_string()
                } else {
                    let doc: serde_json::Value = serde_json::from_str(text).map_err(|e| StepError::BadArtifact {
                        artifact: artifact.clone(),
                        detail: e.to_string(),
                    })?;
                    match doc.pointer(pointer) {
                        Some(serde_json::Value::String(s)) => s.clone(),
                        Some(v) => v.to_string(),
                        None => {
                            return Err(StepError::BadArtifact {
                                artifact: artifact.clone(),
                                detail: format!("no member at {pointer}"),
                            })
                        }
                    }
                };
                sys.etcd_put(netns, endpoints, key, &value)?;
            }
            Op::CniAdd(add) => {
                let got = sys.cni_add(add)?;
                if !got.iter().any(|a| a.split('/').next() == Some(add.ip.as_str())) {
                    return Err(StepError::IpMismatch {
                        expected: add.ip.clone(),
                        got,
                    });
                }
            }
            Op::Wait(Wait { probe }) => self.wait_ready(probe, None)?,
        }
        Ok(())
    }

    /// Sleeps unless cancelled; returns false when cancelled.
    fn pause(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        loop {
            if self.cancel.load(Ordering::SeqCst) {
                return false;
            }
            let now = Instant::now();
            if now >= end {
                return true;
            }
            std::thread::sleep((end - now).min(Duration::from_millis(10)));
        }
    }

    fn wait_ready(&self, probe: &Probe, process: Option<(u32, &String)>) -> Result<(), StepError> {
        let pid = process.map(|(p, _)| p);
        let exited = || {
            let (pid, log) = process.expect("alive probes belong to a process");
            StepError::Exited { pid, log: log.clone() }
        };
        if matches!(probe, Probe::Alive) {
            if !self.pause(self.opts.alive_grace) {
                return Err(StepError::Cancelled);
            }
            return match self.sys.check(probe, pid)? {
                true => Ok(()),
                false => Err(exited()),
            };
        }
        let start = Instant::now();
        loop {
            if self.sys.check(probe, pid)? {
                return Ok(());
            }
            if pid.is_some() && !self.sys.check(&Probe::Alive, pid)? {
                return Err(exited());
            }
            if start.elapsed() >= self.opts.probe_timeout {
                return Err(StepError::NotReady {
                    probe: describe_probe(probe),
                    waited: start.elapsed(),
                });
            }
            if !self.pause(self.opts.probe_interval) {
                return Err(StepError::Cancelled);
            }
        }
    }
}

pub fn describe_probe(p: &Probe) -> String {
    match p {
        Probe::Alive => "process alive".into(),
        Probe::HttpGet { netns, url } => format!("GET {url} in {netns}"),
        Probe::TcpConnect { netns, addr } => format!("TCP connect to {addr} in {netns}"),
        Probe::FileExists { path } => format!("file {path} exists"),
        Probe::RoutesVia { netns, dev, count } => format!("{count} routes via {dev} in {netns}"),
    }
}

/// Only paths strictly inside an absolute state directory are ever removed.
pub(crate) fn removable(path: &Path, state_dir: &Path) -> bool {
    use std::path::Component;
    let plain = |p: &Path| p.is_absolute() && !p.components().any(|c| matches!(c, Component::ParentDir));
    let in_state = plain(state_dir) && state_dir.parent().is_some() && path.starts_with(state_dir) && path != state_dir;
    plain(path) && (in_state || netns_etc_entry(path))
}

/// A pod's `/etc/netns/<netns>` directory or its `resolv.conf` (never `/etc/netns`
/// itself, which other namespaces' files share).
fn netns_etc_entry(path: &Path) -> bool {
    let etc = knetsim_compiler::host::HostLayout::system().netns_etc_dir;
    let under = |p: &Path| p.parent() == Some(etc.as_path());
    under(path) || (path.file_name().is_some_and(|n| n == "resolv.conf") && path.parent().is_some_and(under))
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

#[cfg(test)]
mod tests {
    use super::removable;
    use std::path::Path;

    #[test]
    fn removes_only_inside_the_state_dir() {
        assert!(removable(
            Path::new("/etc/netns/k0_c1/resolv.conf"),
            Path::new("/tmp/knetsim")
        ));
        assert!(removable(Path::new("/etc/netns/k0_c1"), Path::new("/tmp/knetsim")));
        assert!(!removable(Path::new("/etc/netns"), Path::new("/tmp/knetsim")));
        assert!(!removable(
            Path::new("/etc/netns/k0_c1/hosts"),
            Path::new("/tmp/knetsim")
        ));
        assert!(!removable(Path::new("/etc/netns/../passwd"), Path::new("/tmp/knetsim")));
        let dir = Path::new("/tmp/knetsim");
        assert!(removable(Path::new("/tmp/knetsim/C0w1/x.conf"), dir));
        assert!(!removable(dir, dir));
        assert!(!removable(Path::new("/tmp/knetsim/../etc"), dir));
        assert!(!removable(Path::new("/etc/passwd"), dir));
        assert!(!removable(Path::new("/etc/passwd"), Path::new("")));
        assert!(!removable(Path::new("/etc/passwd"), Path::new("/")));
        assert!(!removable(Path::new("rel/x"), Path::new("rel")));
    }
}
