//! A [`System`] that changes nothing: it records every call, in order, and can be
//! told to fail some of them, to sleep in each (to observe concurrency), to report
//! processes in namespaces, and what probes answer.

use super::{Pid, Spawned, SysError, SysResult, System};
use knetsim_compiler::plan::{
    AddAddress, AddRoute, CniAdd, CreateBridge, CreateVeth, GenerateCerts, Impair, Probe, SetSysctl, StartProcess,
    VethEnd,
};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// One recorded call. `Display` gives a stable one-line form such as
/// `create-netns C0w1` that tests match against.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    CreateNetns(String),
    DeleteNetns(String),
    CreateBridge(CreateBridge),
    CreateVeth(CreateVeth),
    AddAddress(AddAddress),
    AddRoute(AddRoute),
    SetSysctl(SetSysctl),
    Impair(Impair),
    MakeDir(PathBuf),
    WriteFile { path: PathBuf, contents: String },
    RemovePath(PathBuf),
    GenerateCerts(GenerateCerts),
    NftLoad { netns: String, path: PathBuf },
    StartProcess(StartProcess),
    Kill(u32),
    NetnsPids(Vec<String>),
    Check { probe: Probe, pid: Option<u32> },
    EtcdPut { netns: String, key: String, value: String },
    CniAdd(CniAdd),
    CniDel(CniAdd),
    EtcdDelete { netns: String, key: String },
    Reload(u32),
    DeleteLink { netns: String, ifname: String },
    DeleteAddress(AddAddress),
    DeleteRoute(AddRoute),
    ClearImpairment { netns: String, ifname: String },
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = |e: &VethEnd| format!("{}:{}", e.netns, e.ifname);
        match self {
            Call::CreateNetns(n) => write!(f, "create-netns {n}"),
            Call::DeleteNetns(n) => write!(f, "delete-netns {n}"),
            Call::CreateBridge(b) => write!(f, "create-bridge {} {}", b.netns, b.name),
            Call::CreateVeth(v) => write!(f, "create-veth {} {}", end(&v.a), end(&v.b)),
            Call::AddAddress(a) => write!(f, "add-address {} {} {}", a.netns, a.ifname, a.cidr),
            Call::AddRoute(r) => write!(f, "add-route {} {} {}", r.netns, r.dst, r.dev),
            Call::SetSysctl(s) => write!(f, "set-sysctl {} {}={}", s.netns, s.key, s.value),
            Call::Impair(i) => write!(f, "impair {} {}", i.netns, i.ifname),
            Call::MakeDir(p) => write!(f, "make-dir {}", p.display()),
            Call::WriteFile { path, .. } => write!(f, "write-file {}", path.display()),
            Call::RemovePath(p) => write!(f, "remove-path {}", p.display()),
            Call::GenerateCerts(r) => write!(f, "generate-certs {} {}", r.dir, r.common_name),
            Call::NftLoad { netns, path } => write!(f, "nft-load {netns} {}", path.display()),
            Call::StartProcess(s) => write!(f, "start-process {} {}", s.netns, s.name),
            Call::Kill(pid) => write!(f, "kill {pid}"),
            Call::NetnsPids(ns) => write!(f, "netns-pids {}", ns.join(",")),
            Call::Check { probe, pid } => {
                write!(f, "check {}", serde_json::to_string(probe).unwrap_or_default())?;
                match pid {
                    Some(pid) => write!(f, " pid {pid}"),
                    None => Ok(()),
                }
            }
            Call::EtcdPut { netns, key, .. } => write!(f, "etcd-put {netns} {key}"),
            Call::CniAdd(r) => write!(f, "cni-add {} {}", r.pod_netns, r.ip),
            Call::CniDel(r) => write!(f, "cni-del {} {}", r.pod_netns, r.ip),
            Call::EtcdDelete { netns, key } => write!(f, "etcd-delete {netns} {key}"),
            Call::Reload(pid) => write!(f, "reload {pid}"),
            Call::DeleteLink { netns, ifname } => write!(f, "delete-link {netns} {ifname}"),
            Call::DeleteAddress(a) => write!(f, "delete-address {} {} {}", a.netns, a.ifname, a.cidr),
            Call::DeleteRoute(r) => write!(f, "delete-route {} {} {}", r.netns, r.dst, r.dev),
            Call::ClearImpairment { netns, ifname } => write!(f, "clear-impairment {netns} {ifname}"),
        }
    }
}

type Rule = Box<dyn Fn(&Call) -> bool + Send + Sync>;

/// The recording fake. PIDs handed out start at 1000.
pub struct RecordingSystem {
    calls: Mutex<Vec<Call>>,
    fail: Mutex<Vec<Rule>>,
    not_ready: Mutex<Vec<Rule>>,
    netns_pids: Mutex<HashMap<String, Vec<u32>>>,
    logging: Mutex<HashMap<(String, PathBuf), Vec<u32>>>,
    delay: Duration,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    next_pid: AtomicU32,
}

impl Default for RecordingSystem {
    fn default() -> Self {
        Self::new()
    }
}

impl RecordingSystem {
    pub fn new() -> Self {
        RecordingSystem {
            calls: Mutex::new(Vec::new()),
            fail: Mutex::new(Vec::new()),
            not_ready: Mutex::new(Vec::new()),
            netns_pids: Mutex::new(HashMap::new()),
            logging: Mutex::new(HashMap::new()),
            delay: Duration::ZERO,
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            next_pid: AtomicU32::new(1000),
        }
    }

    /// Every call sleeps this long (while counted as in flight).
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Calls whose one-line form equals `call` fail with [`SysError::Injected`].
    pub fn fail_on(&self, call: &str) {
        let call = call.to_string();
        self.fail_when(move |c| c.to_string() == call);
    }

    /// Calls matching `rule` fail with [`SysError::Injected`].
    pub fn fail_when(&self, rule: impl Fn(&Call) -> bool + Send + Sync + 'static) {
        self.fail.lock().unwrap().push(Box::new(rule));
    }

    /// Probe checks matching `rule` answer "not ready" (all others answer "ready").
    pub fn never_ready_when(&self, rule: impl Fn(&Call) -> bool + Send + Sync + 'static) {
        self.not_ready.lock().unwrap().push(Box::new(rule));
    }

    /// What [`System::pids_logging_to`] reports for `netns` and `log` (processes
    /// no record names, e.g. nginx workers whose master died).
    pub fn set_logging_pids(&self, netns: &str, log: &Path, pids: Vec<u32>) {
        self.logging
            .lock()
            .unwrap()
            .insert((netns.to_string(), log.to_path_buf()), pids);
    }

    /// What [`System::netns_pids`] reports for `netns`.
    pub fn set_netns_pids(&self, netns: &str, pids: Vec<u32>) {
        self.netns_pids.lock().unwrap().insert(netns.to_string(), pids);
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// The calls in their one-line form.
    pub fn lines(&self) -> Vec<String> {
        self.calls().iter().map(ToString::to_string).collect()
    }

    /// The most calls that were in progress at the same time.
    pub fn max_concurrency(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    fn record(&self, call: Call) -> SysResult<()> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        let failed = self.fail.lock().unwrap().iter().any(|r| r(&call));
        let line = call.to_string();
        self.calls.lock().unwrap().push(call);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        if failed {
            Err(SysError::Injected { call: line })
        } else {
            Ok(())
        }
    }
}

impl System for RecordingSystem {
    fn create_netns(&self, name: &str) -> SysResult<()> {
        self.record(Call::CreateNetns(name.into()))
    }

    fn delete_netns(&self, name: &str) -> SysResult<()> {
        self.record(Call::DeleteNetns(name.into()))
    }

    fn create_bridge(&self, br: &CreateBridge) -> SysResult<()> {
        self.record(Call::CreateBridge(br.clone()))
    }

    fn create_veth(&self, veth: &CreateVeth) -> SysResult<()> {
        self.record(Call::CreateVeth(veth.clone()))
    }

    fn add_address(&self, addr: &AddAddress) -> SysResult<()> {
        self.record(Call::AddAddress(addr.clone()))
    }

    fn add_route(&self, route: &AddRoute) -> SysResult<()> {
        self.record(Call::AddRoute(route.clone()))
    }

    fn set_sysctl(&self, sysctl: &SetSysctl) -> SysResult<()> {
        self.record(Call::SetSysctl(sysctl.clone()))
    }

    fn impair(&self, imp: &Impair) -> SysResult<Vec<String>> {
        self.record(Call::Impair(imp.clone()))?;
        Ok(Vec::new())
    }

    fn make_dir(&self, path: &Path) -> SysResult<Vec<PathBuf>> {
        self.record(Call::MakeDir(path.into()))?;
        Ok(vec![path.into()])
    }

    fn write_file(&self, path: &Path, contents: &[u8]) -> SysResult<Vec<PathBuf>> {
        self.record(Call::WriteFile {
            path: path.into(),
            contents: String::from_utf8_lossy(contents).into_owned(),
        })?;
        Ok(Vec::new())
    }

    fn generate_certs(&self, req: &GenerateCerts) -> SysResult<Vec<PathBuf>> {
        self.record(Call::GenerateCerts(req.clone()))?;
        let names: &[&str] = if req.ca_dir.is_some() {
            &["ca.crt", "tls.crt", "tls.key"]
        } else {
            &["ca.crt", "ca.key"]
        };
        Ok(names.iter().map(|n| Path::new(&req.dir).join(n)).collect())
    }

    fn remove_path(&self, path: &Path) -> SysResult<()> {
        self.record(Call::RemovePath(path.into()))
    }

    fn nft_load(&self, netns: &str, path: &Path) -> SysResult<()> {
        self.record(Call::NftLoad {
            netns: netns.into(),
            path: path.into(),
        })
    }

    fn start_process(&self, spec: &StartProcess) -> SysResult<Spawned> {
        self.record(Call::StartProcess(spec.clone()))?;
        let pid = self.next_pid.fetch_add(1, Ordering::SeqCst);
        Ok(Spawned {
            pid,
            start_ticks: Some(u64::from(pid) * 10),
            created: vec![PathBuf::from(&spec.log)],
        })
    }

    fn kill(&self, pid: Pid) -> SysResult<()> {
        self.record(Call::Kill(pid.pid))
    }

    fn netns_pids(&self, netns: &[String]) -> SysResult<Vec<u32>> {
        self.record(Call::NetnsPids(netns.to_vec()))?;
        let map = self.netns_pids.lock().unwrap();
        Ok(netns
            .iter()
            .flat_map(|n| map.get(n).cloned().unwrap_or_default())
            .collect())
    }

    fn pids_logging_to(&self, netns: &str, log: &Path) -> SysResult<Vec<u32>> {
        // Only what a test set: the fake starts nothing that could outlive its record.
        let key = (netns.to_string(), log.to_path_buf());
        Ok(self.logging.lock().unwrap().get(&key).cloned().unwrap_or_default())
    }

    fn check(&self, probe: &Probe, pid: Option<u32>) -> SysResult<bool> {
        let call = Call::Check {
            probe: probe.clone(),
            pid,
        };
        let not_ready = self.not_ready.lock().unwrap().iter().any(|r| r(&call));
        self.record(call)?;
        Ok(!not_ready)
    }

    fn etcd_put(&self, netns: &str, _endpoints: &[String], key: &str, value: &str) -> SysResult<()> {
        self.record(Call::EtcdPut {
            netns: netns.into(),
            key: key.into(),
            value: value.into(),
        })
    }

    fn cni_add(&self, req: &CniAdd) -> SysResult<Vec<String>> {
        self.record(Call::CniAdd(req.clone()))?;
        Ok(vec![format!("{}/20", req.ip)])
    }

    fn cni_del(&self, req: &CniAdd) -> SysResult<()> {
        self.record(Call::CniDel(req.clone()))
    }

    fn etcd_delete(&self, netns: &str, _endpoints: &[String], key: &str) -> SysResult<()> {
        self.record(Call::EtcdDelete {
            netns: netns.into(),
            key: key.into(),
        })
    }

    fn reload(&self, pid: Pid) -> SysResult<()> {
        self.record(Call::Reload(pid.pid))
    }

    fn delete_link(&self, netns: &str, ifname: &str) -> SysResult<()> {
        self.record(Call::DeleteLink {
            netns: netns.into(),
            ifname: ifname.into(),
        })
    }

    fn delete_address(&self, addr: &AddAddress) -> SysResult<()> {
        self.record(Call::DeleteAddress(addr.clone()))
    }

    fn delete_route(&self, route: &AddRoute) -> SysResult<()> {
        self.record(Call::DeleteRoute(route.clone()))
    }

    fn clear_impairment(&self, netns: &str, ifname: &str) -> SysResult<()> {
        self.record(Call::ClearImpairment {
            netns: netns.into(),
            ifname: ifname.into(),
        })
    }
}
