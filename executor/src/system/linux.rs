//! The real [`System`] for Linux.
//!
//! - Named namespaces are made as `ip netns add` makes them: `/run/netns` is a
//!   shared mount point and each namespace is a bind mount of a new namespace's
//!   nsfs file there. The new namespace is made by a dedicated thread that
//!   unshares, mounts, brings `lo` up and exits; no thread ever goes back to the
//!   pool from a foreign namespace, and the root namespace is never touched.
//! - Links, addresses and routes are `ip -n NETNS ...` argv (no shell).
//! - Sysctls are written to `/proc/sys` by a thread that has entered the namespace.
//! - Processes are started detached (own session) by a child that enters the
//!   namespace between fork and exec ([`super::process`]); impairments are tc
//!   and, without netem, nft ([`super::impair`]); etcd puts and deletes use
//!   [`crate::etcd`]; CNI ADD and DEL run [`crate::cni`]'s runtime from a thread
//!   inside the worker's namespace; HTTP probes use [`crate::http`].
//!
//! Every method of [`System`] is implemented, the undoing ones too (CNI DEL, etcd
//! deletes, deleting links, addresses and routes, clearing impairments) and reloads.

use super::probe::{connect, http_get_ok, parse_http_url, resolve};
use super::process::run;
use super::{certs, Pid, Spawned, SysError, SysResult, System};
use crate::cni::{CniRuntime, NetworkConf, RuntimeConf, DEFAULT_PLUGIN_DIRS};
use knetsim_compiler::host::HostLayout;
use knetsim_compiler::plan::{
    AddAddress, AddRoute, CniAdd, CreateBridge, CreateVeth, GenerateCerts, Impair, Probe, SetSysctl, StartProcess,
    VethEnd,
};
use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The real system. Cheap to create; holds no resources.
#[derive(Debug, Default)]
pub struct LinuxSystem {
    run_dir_ready: Mutex<bool>,
}

impl LinuxSystem {
    pub fn new() -> Self {
        Self::default()
    }

    /// One CNI operation for a pod, as cnitool with NETCONFPATH=conf_dir would run it, from
    /// the worker's namespace; the result cache is the worker's `cni-cache` beside its
    /// configuration, and the pinned IP goes in CNI_ARGS.
    fn cni_call<T: Send>(
        req: &CniAdd,
        verb: &str,
        preposition: &str,
        op: impl FnOnce(&CniRuntime, &NetworkConf, &RuntimeConf) -> Result<T, crate::cni::Error> + Send,
    ) -> SysResult<T> {
        check_name("namespace name", &req.pod_netns)?;
        let fail = |e: crate::cni::Error| {
            let context = format!(
                "CNI {verb} {} (IP={}) {preposition} network {} in {}",
                req.pod_netns, req.ip, req.network, req.worker_netns
            );
            SysError::io(context, std::io::Error::other(e))
        };
        let conf_dir = Path::new(&req.conf_dir);
        let net = NetworkConf::load(conf_dir, &req.network).map_err(fail)?;
        let runtime = CniRuntime::new(
            DEFAULT_PLUGIN_DIRS.iter().map(PathBuf::from).collect(),
            conf_dir.join("cni-cache"),
        );
        let pod_netns = Self::netns_path(&req.pod_netns).display().to_string();
        let rt = RuntimeConf::new(&req.container_id, pod_netns, &req.ifname)
            .arg("IgnoreUnknown", "1")
            .arg("IP", &req.ip);
        in_netns(&req.worker_netns, || Ok(op(&runtime, &net, &rt)))?.map_err(fail)
    }

    pub fn netns_path(name: &str) -> PathBuf {
        HostLayout::system().netns(name)
    }

    /// `/etc/netns`, where the pods' resolv.conf files go.
    pub fn netns_etc_dir() -> PathBuf {
        HostLayout::system().netns_etc_dir
    }

    /// Makes `/run/netns` a shared mount point (bind-mounted onto itself if it is
    /// not a mount point yet), as iproute2 does, so that deleting a namespace
    /// propagates into mount namespaces made later (e.g. by `ip netns exec`).
    fn prepare_run_dir(&self) -> SysResult<()> {
        let mut ready = self.run_dir_ready.lock().unwrap_or_else(|e| e.into_inner());
        if *ready {
            return Ok(());
        }
        let dir = &HostLayout::system().netns_dir;
        std::fs::create_dir_all(dir).map_err(|e| SysError::io(format!("creating {}", dir.display()), e))?;
        let shared = || {
            mount(
                None::<&str>,
                dir,
                None::<&str>,
                MsFlags::MS_SHARED | MsFlags::MS_REC,
                None::<&str>,
            )
        };
        match shared() {
            Ok(()) => {}
            Err(Errno::EINVAL) => {
                mount(
                    Some(dir),
                    dir,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(|e| errno(format!("bind-mounting {} onto itself", dir.display()), e))?;
                shared().map_err(|e| errno(format!("making {} shared", dir.display()), e))?;
            }
            Err(e) => return Err(errno(format!("making {} shared", dir.display()), e)),
        }
        *ready = true;
        Ok(())
    }
}

fn errno(context: impl Into<String>, e: Errno) -> SysError {
    SysError::io(context, std::io::Error::from(e))
}

fn check_name(what: &str, name: &str) -> SysResult<()> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | ':'));
    if ok {
        Ok(())
    } else {
        Err(SysError::Invalid {
            what: what.into(),
            detail: format!("`{name}`"),
        })
    }
}

/// A command's result with the failures that mean "already gone" turned into success.
fn tolerate(result: SysResult<String>, gone: impl Fn(&str) -> bool) -> SysResult<()> {
    match result {
        Ok(_) => Ok(()),
        Err(SysError::Command { stderr, .. }) if gone(&stderr) => Ok(()),
        Err(e) => Err(e),
    }
}

/// `ip -n NETNS -batch -` with the given commands, one per line: one exec for several changes.
fn ip_batch(netns: &str, commands: &[String]) -> SysResult<()> {
    let mut input = commands.join("\n");
    input.push('\n');
    run(&["ip", "-n", netns, "-batch", "-"], Some(&input)).map_err(|e| match e {
        SysError::Command { status, stderr, .. } => SysError::Command {
            argv: format!("ip -n {netns} -batch - <<< {:?}", commands.join("; ")),
            status,
            stderr,
        },
        other => other,
    })?;
    Ok(())
}

/// Opens `/run/netns/NAME` (e.g. to enter it from a child before exec).
pub fn open_netns(netns: &str) -> SysResult<File> {
    check_name("namespace name", netns)?;
    let path = LinuxSystem::netns_path(netns);
    File::open(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            SysError::NotFound {
                what: format!("namespace {netns}"),
            }
        } else {
            SysError::io(format!("opening {}", path.display()), e)
        }
    })
}

/// Opens `/run/netns/NAME` with the files `ip netns exec` would bind over `/etc`
/// (`/etc/netns/NAME/`: a pod's resolv.conf), for a child to enter it as a pod's
/// processes see it.
pub fn open_netns_entry(netns: &str) -> SysResult<super::process::NetnsEntry> {
    let fd = open_netns(netns)?;
    let etc = knetsim_compiler::host::HostLayout::system().netns_etc(netns);
    Ok(super::process::NetnsEntry::with_etc(fd, &etc))
}

/// Runs `f` on a fresh thread that has entered `netns`; the thread ends with `f`.
pub fn in_netns<R: Send>(netns: &str, f: impl FnOnce() -> SysResult<R> + Send) -> SysResult<R> {
    let fd = open_netns(netns)?;
    std::thread::scope(|s| {
        s.spawn(move || {
            setns(&fd, CloneFlags::CLONE_NEWNET).map_err(|e| errno(format!("entering namespace {netns}"), e))?;
            f()
        })
        .join()
        .unwrap_or_else(|_| {
            Err(SysError::Invalid {
                what: "namespace thread".into(),
                detail: "panicked".into(),
            })
        })
    })
}

/// Sets IFF_UP on `lo` of the calling thread's network namespace.
fn loopback_up() -> SysResult<()> {
    // SAFETY: plain socket/ioctl calls on a zeroed, properly sized ifreq; the fd is closed below.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(SysError::io("socket for lo", std::io::Error::last_os_error()));
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        let mut result = Ok(());
        if libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut ifr) < 0 {
            result = Err(SysError::io("SIOCGIFFLAGS lo", std::io::Error::last_os_error()));
        } else {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &ifr) < 0 {
                result = Err(SysError::io("SIOCSIFFLAGS lo", std::io::Error::last_os_error()));
            }
        }
        libc::close(fd);
        result
    }
}

/// State and start time (clock ticks since boot) of a process, from `/proc/PID/stat`.
fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

/// Start time of `pid`, for [`Spawned::start_ticks`].
pub fn start_ticks(pid: u32) -> Option<u64> {
    proc_stat(pid).map(|(_, t)| t)
}

/// Whether the process recorded as `p` still runs (not a zombie, not a recycled PID).
fn running(p: Pid) -> bool {
    match proc_stat(p.pid) {
        None => false,
        Some((state, ticks)) => {
            if state == 'Z' || state == 'X' {
                // Reap it if it is our child; harmless otherwise.
                let _ = waitpid(nix::unistd::Pid::from_raw(p.pid as i32), Some(WaitPidFlag::WNOHANG));
                return false;
            }
            !matches!(p.start_ticks, Some(t) if t != ticks)
        }
    }
}

/// Sends each signal in turn until the process is gone, waiting up to its grace.
fn stop(p: Pid, signals: &[(Signal, Duration)]) -> SysResult<()> {
    if p.pid <= 1 || p.pid == std::process::id() {
        return Err(SysError::Invalid {
            what: "pid to stop".into(),
            detail: p.pid.to_string(),
        });
    }
    let target = nix::unistd::Pid::from_raw(p.pid as i32);
    for &(signal, grace) in signals {
        if !running(p) {
            return Ok(());
        }
        match kill(target, signal) {
            Ok(()) => {}
            Err(Errno::ESRCH) => return Ok(()),
            Err(e) => return Err(errno(format!("kill -{} {}", signal.as_str(), p.pid), e)),
        }
        if wait_gone(p, grace) {
            return Ok(());
        }
    }
    Err(SysError::Invalid {
        what: "process".into(),
        detail: format!("{} is still running after SIGKILL", p.pid),
    })
}

fn wait_gone(p: Pid, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if !running(p) {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Directories `mkdir -p path` would create, outermost first.
fn missing_dirs(path: &Path) -> Vec<PathBuf> {
    let mut missing: Vec<PathBuf> = path
        .ancestors()
        .take_while(|p| !p.as_os_str().is_empty() && !p.exists())
        .map(Path::to_path_buf)
        .collect();
    missing.reverse();
    missing
}

impl System for LinuxSystem {
    fn create_netns(&self, name: &str) -> SysResult<()> {
        check_name("namespace name", name)?;
        self.prepare_run_dir()?;
        let path = Self::netns_path(name);
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(&path)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    SysError::AlreadyExists {
                        what: format!("namespace {name}"),
                    }
                } else {
                    SysError::io(format!("creating {}", path.display()), e)
                }
            })?;
        let result = std::thread::scope(|s| {
            s.spawn(|| {
                unshare(CloneFlags::CLONE_NEWNET).map_err(|e| errno("unshare(CLONE_NEWNET)", e))?;
                let own = format!("/proc/self/task/{}/ns/net", nix::unistd::gettid());
                mount(Some(own.as_str()), &path, None::<&str>, MsFlags::MS_BIND, None::<&str>)
                    .map_err(|e| errno(format!("bind-mounting {own} on {}", path.display()), e))?;
                loopback_up()
            })
            .join()
            .unwrap_or_else(|_| {
                Err(SysError::Invalid {
                    what: "namespace thread".into(),
                    detail: "panicked".into(),
                })
            })
        });
        if result.is_err() {
            let _ = umount2(&path, MntFlags::MNT_DETACH);
            let _ = std::fs::remove_file(&path);
        }
        result
    }

    fn delete_netns(&self, name: &str) -> SysResult<()> {
        check_name("namespace name", name)?;
        let path = Self::netns_path(name);
        match umount2(&path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(errno(format!("unmounting {}", path.display()), e)),
        }
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(SysError::io(format!("removing {}", path.display()), e)),
        }
    }

    fn create_bridge(&self, br: &CreateBridge) -> SysResult<()> {
        let (netns, name) = (&br.netns, &br.name);
        check_name("namespace name", netns)?;
        check_name("bridge name", name)?;
        ip_batch(
            netns,
            &[
                format!("link add {name} type bridge stp_state 0"),
                format!("link set {name} up"),
            ],
        )
    }

    fn create_veth(&self, veth: &CreateVeth) -> SysResult<()> {
        let (a, b) = (&veth.a, &veth.b);
        for e in [a, b] {
            check_name("namespace name", &e.netns)?;
            check_name("interface name", &e.ifname)?;
            if let Some(br) = &e.bridge {
                check_name("bridge name", br)?;
            }
        }
        let up = |e: &VethEnd| match &e.bridge {
            Some(br) => format!("link set {} master {br} up", e.ifname),
            None => format!("link set {} up", e.ifname),
        };
        // The `a` end is created by a request sent from inside its namespace, the
        // peer directly in its own: neither ever exists in the root namespace.
        ip_batch(
            &a.netns,
            &[
                format!(
                    "link add {} type veth peer name {} netns {}",
                    a.ifname, b.ifname, b.netns
                ),
                up(a),
            ],
        )?;
        ip_batch(&b.netns, &[up(b)])
    }

    fn add_address(&self, addr: &AddAddress) -> SysResult<()> {
        let (netns, ifname, cidr) = (&addr.netns, &addr.ifname, &addr.cidr);
        check_name("namespace name", netns)?;
        run(&["ip", "-n", netns, "addr", "replace", cidr, "dev", ifname], None)?;
        // Announced as a booting host would; only speeds up the neighbours' learning of
        // a re-created host's new MAC, so a failure is not the step's.
        if let Some(ip) = cidr.split('/').next().and_then(|a| a.parse().ok()) {
            let _ = in_netns(netns, || super::garp::announce(ifname, ip));
        }
        Ok(())
    }

    fn add_route(&self, route: &AddRoute) -> SysResult<()> {
        let (netns, dst, dev) = (&route.netns, &route.dst, &route.dev);
        check_name("namespace name", netns)?;
        run(&["ip", "-n", netns, "route", "replace", dst, "dev", dev], None).map(drop)
    }

    fn set_sysctl(&self, sysctl: &SetSysctl) -> SysResult<()> {
        let (netns, key, value) = (&sysctl.netns, &sysctl.key, &sysctl.value);
        let valid = key.starts_with("net.")
            && key
                .split('.')
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-')));
        if !valid {
            return Err(SysError::Invalid {
                what: "sysctl key (only net.*)".into(),
                detail: key.into(),
            });
        }
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        in_netns(netns, || {
            std::fs::write(&path, format!("{value}\n"))
                .map_err(|e| SysError::io(format!("writing {} in {netns}", path.display()), e))
        })
    }

    fn impair(&self, imp: &Impair) -> SysResult<Vec<String>> {
        check_name("namespace name", &imp.netns)?;
        super::impair::apply(imp, &|argv, stdin| run(argv, stdin))
    }

    fn make_dir(&self, path: &Path) -> SysResult<Vec<PathBuf>> {
        let missing = missing_dirs(path);
        std::fs::create_dir_all(path).map_err(|e| SysError::io(format!("creating {}", path.display()), e))?;
        Ok(missing)
    }

    fn write_file(&self, path: &Path, contents: &[u8]) -> SysResult<Vec<PathBuf>> {
        let created = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => self.make_dir(parent)?,
            _ => Vec::new(),
        };
        // Replaced whole: a running process (nginx on reload) never reads half a file.
        crate::layout::write_atomic(path, contents)
            .map_err(|e| SysError::io(format!("writing {}", path.display()), e))?;
        Ok(created)
    }

    fn generate_certs(&self, req: &GenerateCerts) -> SysResult<Vec<PathBuf>> {
        let read =
            |p: PathBuf| std::fs::read_to_string(&p).map_err(|e| SysError::io(format!("reading {}", p.display()), e));
        let ca = match &req.ca_dir {
            Some(d) => Some((read(Path::new(d).join("ca.crt"))?, read(Path::new(d).join("ca.key"))?)),
            None => None,
        };
        let files = certs::generate(req, ca.as_ref().map(|(c, k)| (c.as_str(), k.as_str())))?;
        let dir = Path::new(&req.dir);
        let mut created = self.make_dir(dir)?;
        for f in files {
            let path = dir.join(f.name);
            let mode = if f.secret { 0o600 } else { 0o644 };
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(mode)
                .open(&path)
                .map_err(|e| SysError::io(format!("writing {}", path.display()), e))?;
            // A key file that existed with wider permissions is narrowed too.
            file.set_permissions(std::fs::Permissions::from_mode(mode))
                .and_then(|()| file.write_all(f.contents.as_bytes()))
                .map_err(|e| SysError::io(format!("writing {}", path.display()), e))?;
            created.push(path);
        }
        Ok(created)
    }

    fn remove_path(&self, path: &Path) -> SysResult<()> {
        let result = match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
            Ok(_) => std::fs::remove_file(path),
            Err(e) => Err(e),
        };
        // A pod's resolv.conf leaves its /etc/netns/<netns> directory empty: it goes
        // too (recorded or not, e.g. after a crash between the two).
        if let Some(dir) = path
            .parent()
            .filter(|d| d.parent() == Some(LinuxSystem::netns_etc_dir().as_path()))
        {
            let _ = std::fs::remove_dir(dir);
        }
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(SysError::io(format!("removing {}", path.display()), e)),
        }
    }

    fn nft_load(&self, netns: &str, path: &Path) -> SysResult<()> {
        check_name("namespace name", netns)?;
        let path = path.to_str().ok_or_else(|| SysError::Invalid {
            what: "ruleset path".into(),
            detail: path.display().to_string(),
        })?;
        run(&["ip", "netns", "exec", netns, "nft", "-f", path], None).map(drop)
    }

    fn start_process(&self, spec: &StartProcess) -> SysResult<Spawned> {
        use super::process;
        let (program, args) =
            process::resolve_argv(&spec.argv, spec.builtin.as_deref(), &process::which, &process::self_exe)?;
        let netns = open_netns_entry(&spec.netns)?;
        let log = Path::new(&spec.log);
        let dir = log
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .ok_or_else(|| SysError::Invalid {
                what: "log path".into(),
                detail: spec.log.clone(),
            })?;
        let mut created = self.make_dir(dir)?;
        let log_existed = log.exists();
        let pid = process::spawn_detached(netns, &program, &args, log, dir)?;
        if !log_existed {
            created.push(log.to_path_buf());
        }
        Ok(Spawned {
            pid,
            start_ticks: start_ticks(pid),
            created,
        })
    }

    fn kill(&self, p: Pid) -> SysResult<()> {
        stop(
            p,
            &[
                (Signal::SIGTERM, Duration::from_secs(3)),
                (Signal::SIGKILL, Duration::from_secs(2)),
            ],
        )
    }

    fn kill_now(&self, p: Pid) -> SysResult<()> {
        stop(p, &[(Signal::SIGKILL, Duration::from_secs(2))])
    }

    fn netns_pids(&self, netns: &[String]) -> SysResult<Vec<u32>> {
        let mut inodes = Vec::new();
        for n in netns {
            check_name("namespace name", n)?;
            match std::fs::metadata(Self::netns_path(n)) {
                Ok(m) => inodes.push(m.ino()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(SysError::io(format!("stat {}", Self::netns_path(n).display()), e)),
            }
        }
        // An unmounted placeholder file has an ordinary inode that no process can share.
        let mut pids = Vec::new();
        if inodes.is_empty() {
            return Ok(pids);
        }
        let me = std::process::id();
        let entries = std::fs::read_dir("/proc").map_err(|e| SysError::io("reading /proc", e))?;
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if pid == me {
                continue;
            }
            let Ok(link) = std::fs::read_link(entry.path().join("ns/net")) else {
                continue;
            };
            let ino = link
                .to_str()
                .and_then(|s| s.strip_prefix("net:["))
                .and_then(|s| s.strip_suffix(']'))
                .and_then(|s| s.parse::<u64>().ok());
            if ino.is_some_and(|i| inodes.contains(&i)) {
                pids.push(pid);
            }
        }
        Ok(pids)
    }

    fn pids_logging_to(&self, netns: &str, log: &Path) -> SysResult<Vec<u32>> {
        let pids = self.netns_pids(&[netns.to_string()])?;
        Ok(pids
            .into_iter()
            .filter(|pid| std::fs::read_link(format!("/proc/{pid}/fd/1")).is_ok_and(|out| out == log))
            .collect())
    }

    fn check(&self, probe: &Probe, pid: Option<u32>) -> SysResult<bool> {
        match probe {
            Probe::Alive => {
                let pid = pid.ok_or_else(|| SysError::Invalid {
                    what: "alive probe".into(),
                    detail: "no process".into(),
                })?;
                Ok(running(Pid { pid, start_ticks: None }))
            }
            Probe::FileExists { path } => Ok(Path::new(path).exists()),
            Probe::TcpConnect { netns, addr } => {
                let addr = resolve(addr)?;
                in_netns(netns, || Ok(connect(addr)?.is_some()))
            }
            Probe::HttpGet { netns, url } => {
                let (authority, path) = parse_http_url(url)?;
                in_netns(netns, || http_get_ok(&authority, &path))
            }
            Probe::RoutesVia { netns, dev, count } => {
                check_name("namespace name", netns)?;
                let out = match run(&["ip", "-n", netns, "-j", "route", "show", "dev", dev], None) {
                    Ok(out) => out,
                    // The device does not exist yet.
                    Err(SysError::Command { stderr, .. })
                        if stderr.contains("does not exist") || stderr.contains("Cannot find device") =>
                    {
                        return Ok(false)
                    }
                    Err(e) => return Err(e),
                };
                let routes: Vec<serde_json::Value> = serde_json::from_str(out.trim()).unwrap_or_default();
                let via = routes.iter().filter(|r| r.get("gateway").is_some()).count();
                Ok(via >= *count)
            }
        }
    }

    fn etcd_put(&self, netns: &str, endpoints: &[String], key: &str, value: &str) -> SysResult<()> {
        // The flannel agent's etcd client (v3 JSON gateway), from a thread inside `netns`;
        // it tries every endpoint. A member that just became healthy may still be
        // electing: transient errors are retried for a short while.
        let client = crate::etcd::Client::new(endpoints).map_err(|e| SysError::Invalid {
            what: "etcd endpoints".into(),
            detail: e.to_string(),
        })?;
        in_netns(netns, || {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match client.put(key, value.as_bytes(), 0) {
                    Ok(_) => return Ok(()),
                    Err(e) if e.is_transient() && Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    Err(e) => {
                        return Err(SysError::io(
                            format!("etcd put {key} from {netns}"),
                            std::io::Error::other(e.to_string()),
                        ))
                    }
                }
            }
        })
    }

    fn cni_add(&self, req: &CniAdd) -> SysResult<Vec<String>> {
        let result = Self::cni_call(req, "ADD of", "to", |runtime, net, rt| {
            crate::cni::ensure_added(runtime, net, rt, Some(&req.ip))
        })?;
        Ok(result.addresses())
    }

    fn cni_del(&self, req: &CniAdd) -> SysResult<()> {
        Self::cni_call(req, "DEL of", "from", |runtime, net, rt| runtime.del(net, rt))
    }

    fn etcd_delete(&self, netns: &str, endpoints: &[String], key: &str) -> SysResult<()> {
        let client = crate::etcd::Client::new(endpoints).map_err(|e| SysError::Invalid {
            what: "etcd endpoints".into(),
            detail: e.to_string(),
        })?;
        in_netns(netns, || {
            client.delete(key).map(|_| ()).map_err(|e| {
                SysError::io(
                    format!("etcd delete {key} from {netns}"),
                    std::io::Error::other(e.to_string()),
                )
            })
        })
    }

    fn delete_link(&self, netns: &str, ifname: &str) -> SysResult<()> {
        check_name("namespace name", netns)?;
        check_name("interface name", ifname)?;
        let gone = |stderr: &str| stderr.contains("Cannot find device") || stderr.contains("does not exist");
        tolerate(run(&["ip", "-n", netns, "link", "del", ifname], None), gone)
    }

    fn delete_address(&self, addr: &AddAddress) -> SysResult<()> {
        let (netns, ifname, cidr) = (&addr.netns, &addr.ifname, &addr.cidr);
        check_name("namespace name", netns)?;
        check_name("interface name", ifname)?;
        let gone =
            |stderr: &str| stderr.contains("Cannot assign requested address") || stderr.contains("Cannot find device");
        tolerate(
            run(&["ip", "-n", netns, "addr", "del", cidr, "dev", ifname], None),
            gone,
        )
    }

    fn delete_route(&self, route: &AddRoute) -> SysResult<()> {
        let (netns, dst, dev) = (&route.netns, &route.dst, &route.dev);
        check_name("namespace name", netns)?;
        check_name("interface name", dev)?;
        let gone = |stderr: &str| stderr.contains("No such process") || stderr.contains("Cannot find device");
        tolerate(run(&["ip", "-n", netns, "route", "del", dst, "dev", dev], None), gone)
    }

    fn clear_impairment(&self, netns: &str, ifname: &str) -> SysResult<()> {
        check_name("namespace name", netns)?;
        super::impair::clear(netns, ifname, &|argv, stdin| run(argv, stdin))
    }

    fn reload(&self, p: Pid) -> SysResult<()> {
        if p.pid <= 1 || p.pid == std::process::id() || !running(p) {
            return Err(SysError::NotFound {
                what: format!("process {}", p.pid),
            });
        }
        kill(nix::unistd::Pid::from_raw(p.pid as i32), Signal::SIGHUP)
            .map_err(|e| errno(format!("kill -HUP {}", p.pid), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_start_time() {
        let me = std::process::id();
        let t = start_ticks(me).expect("own /proc stat");
        assert!(running(Pid {
            pid: me,
            start_ticks: Some(t)
        }));
        assert!(!running(Pid {
            pid: me,
            start_ticks: Some(t + 1)
        }));
    }

    #[test]
    fn rejects_bad_names_and_keys() {
        let sys = LinuxSystem::new();
        assert!(matches!(sys.create_netns("../x"), Err(SysError::Invalid { .. })));
        assert!(matches!(sys.delete_netns(""), Err(SysError::Invalid { .. })));
        assert!(matches!(
            sys.set_sysctl(&SetSysctl {
                netns: "x".into(),
                key: "kernel.panic".into(),
                value: "1".into()
            }),
            Err(SysError::Invalid { .. })
        ));
        assert!(matches!(
            sys.set_sysctl(&SetSysctl {
                netns: "x".into(),
                key: "net.ipv4/../../kernel".into(),
                value: "1".into()
            }),
            Err(SysError::Invalid { .. })
        ));
    }
}
