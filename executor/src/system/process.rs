//! Programs and processes: PATH lookup ([`which`]), which program a
//! [`ProcessSpec`](super::ProcessSpec) runs (the built-in fallback, kept free of side
//! effects so it is unit-tested without root), running an argv to completion
//! ([`run`]), starting detached or foreground processes in a namespace, and whether
//! this process is root ([`is_root`]).
//!
//! - `argv[0] == "knetsim"` is this very executable;
//! - a path (`/usr/sbin/nginx`, `./x`) is used as it is;
//! - a bare name is looked up on PATH; if it is not there and the step names a
//!   `builtin`, the process is `<knetsim> <builtin> argv[1..]` (e.g. the built-in
//!   flannel agent instead of a real `flanneld`).

use super::{SysError, SysResult};
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The name under which plans refer to this executable.
pub const SELF_NAME: &str = "knetsim";

/// Whether `path` is a regular file with an execute bit.
pub fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Looks `name` up in a PATH-style list of directories (`execvp` semantics, without
/// the implicit current directory). A name with a `/` is checked as it is.
pub fn which_in(name: &str, path: Option<&OsStr>, executable: &dyn Fn(&Path) -> bool) -> Option<PathBuf> {
    if name.is_empty() {
        return None;
    }
    if name.contains('/') {
        let p = PathBuf::from(name);
        return executable(&p).then_some(p);
    }
    let path = path?;
    std::env::split_paths(path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|candidate| executable(candidate))
}

/// [`which_in`] with this process's PATH and the real file system.
pub fn which(name: &str) -> Option<PathBuf> {
    which_in(name, std::env::var_os("PATH").as_deref(), &is_executable)
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Runs an argv (never a shell) to completion, with `stdin` as its input, and returns
/// its stdout; a non-zero exit is [`SysError::Command`] carrying its stderr.
pub fn run(argv: &[&str], stdin: Option<&str>) -> SysResult<String> {
    let line = argv.join(" ");
    let mut expr = duct::cmd(argv[0], &argv[1..])
        .stdout_capture()
        .stderr_capture()
        .unchecked();
    if let Some(input) = stdin {
        expr = expr.stdin_bytes(input.as_bytes().to_vec());
    }
    let out = expr.run().map_err(|e| SysError::io(format!("running `{line}`"), e))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(SysError::Command {
            argv: line,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// This executable, as plans call it (`knetsim`). `KNETSIM_EXE` overrides it, for
/// embedders and tests whose own executable is not the knetsim command line.
pub fn self_exe() -> SysResult<PathBuf> {
    if let Some(p) = std::env::var_os("KNETSIM_EXE").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| SysError::io("finding the knetsim executable", e))?;
    Ok(runnable_exe(exe, Path::exists))
}

/// `current_exe` reads `/proc/self/exe`, which names a binary replaced on disk while
/// we run (a rebuild or an upgrade during `up`) `PATH (deleted)`: a path nothing can
/// start. `/proc/self/exe` itself still starts this very binary in a child (fork keeps
/// the executable), so the daemons run the same knetsim as the `up` that starts them.
fn runnable_exe(exe: PathBuf, exists: impl Fn(&Path) -> bool) -> PathBuf {
    if exe.to_string_lossy().ends_with(" (deleted)") && !exists(&exe) {
        PathBuf::from("/proc/self/exe")
    } else {
        exe
    }
}

/// Resolves a process's argv to an absolute program and its arguments.
///
/// `lookup` finds a bare name on PATH; `self_exe` gives this executable.
pub fn resolve_argv(
    argv: &[String],
    builtin: Option<&str>,
    lookup: &dyn Fn(&str) -> Option<PathBuf>,
    self_exe: &dyn Fn() -> SysResult<PathBuf>,
) -> SysResult<(PathBuf, Vec<String>)> {
    let Some(program) = argv.first().filter(|p| !p.is_empty()) else {
        return Err(SysError::Invalid {
            what: "process argv".into(),
            detail: "empty".into(),
        });
    };
    if program == SELF_NAME {
        return Ok((self_exe()?, argv[1..].to_vec()));
    }
    if let Some(found) = lookup(program) {
        return Ok((found, argv[1..].to_vec()));
    }
    match builtin {
        Some(b) if !program.contains('/') => {
            let mut args = vec![b.to_string()];
            args.extend(argv[1..].iter().cloned());
            Ok((self_exe()?, args))
        }
        _ => Err(SysError::NotFound {
            what: format!("program `{program}` (not on PATH)"),
        }),
    }
}

/// How a program of a plan will be provided, for preflight checks and messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provider {
    /// Found at this path.
    Found(PathBuf),
    /// This executable's built-in subcommand.
    Builtin(String),
    Missing,
}

/// [`resolve_argv`]'s decision without building the argv.
pub fn provider(program: &str, builtin: Option<&str>, lookup: &dyn Fn(&str) -> Option<PathBuf>) -> Provider {
    if program == SELF_NAME {
        return Provider::Builtin(String::new());
    }
    if let Some(p) = lookup(program) {
        return Provider::Found(p);
    }
    match builtin {
        Some(b) if !program.contains('/') => Provider::Builtin(b.to_string()),
        _ => Provider::Missing,
    }
}

/// A network namespace to enter from a forked child, as `ip netns exec` enters it:
/// the namespace itself and the files of `/etc/netns/NAME/` (a pod's `resolv.conf`)
/// bind-mounted over `/etc` in a mount namespace of the child's own, so that its
/// resolver reads the pod's files while nothing else sees them.
pub struct NetnsEntry {
    fd: File,
    /// (source, target) pairs, made before the fork: nothing is allocated after it.
    binds: Vec<(std::ffi::CString, std::ffi::CString)>,
}

impl From<File> for NetnsEntry {
    fn from(fd: File) -> Self {
        NetnsEntry { fd, binds: Vec::new() }
    }
}

impl NetnsEntry {
    /// `fd` (an open `/run/netns/NAME`) with the files of `etc_dir` (`/etc/netns/NAME`)
    /// to bind over `/etc`; none when the directory does not exist.
    pub fn with_etc(fd: File, etc_dir: &Path) -> Self {
        use std::os::unix::ffi::OsStrExt;
        let mut binds = Vec::new();
        if let Ok(entries) = std::fs::read_dir(etc_dir) {
            let mut names: Vec<_> = entries.flatten().map(|e| e.file_name()).collect();
            names.sort();
            for name in names {
                let src = etc_dir.join(&name);
                let dst = Path::new("/etc").join(&name);
                if let (Ok(src), Ok(dst)) = (
                    std::ffi::CString::new(src.as_os_str().as_bytes()),
                    std::ffi::CString::new(dst.as_os_str().as_bytes()),
                ) {
                    binds.push((src, dst));
                }
            }
        }
        NetnsEntry { fd, binds }
    }

    /// Enters it from a forked child, before exec. Only raw syscalls: safe between
    /// fork and exec. A bind that fails is skipped, as `ip netns exec` does.
    fn enter(&self) -> std::io::Result<()> {
        // SAFETY: setns(2) on an fd we own; no allocation, async-signal-safe.
        if unsafe { libc::setns(self.fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if self.binds.is_empty() {
            return Ok(());
        }
        // SAFETY: unshare(2) and mount(2) with C strings made before the fork.
        unsafe {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Slave, not private: mounts and unmounts of the host (a namespace deleted
            // by `ip netns del`) still reach the child.
            let root = c"/";
            if libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_SLAVE | libc::MS_REC,
                std::ptr::null(),
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            for (src, dst) in &self.binds {
                libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                );
            }
        }
        Ok(())
    }
}

/// A command whose child enters the network namespace `netns` (an open
/// `/run/netns/NAME`, with its `/etc` files when given as a [`NetnsEntry`]) between
/// fork and exec: no thread of the calling process ever leaves its own namespace.
/// The file stays open as long as the command.
pub fn command_in_netns(netns: impl Into<NetnsEntry>, program: impl AsRef<OsStr>, args: &[String]) -> Command {
    let netns = netns.into();
    let mut cmd = Command::new(program);
    cmd.args(args);
    // SAFETY: the closure only makes raw syscalls.
    unsafe {
        cmd.pre_exec(move || netns.enter());
    }
    cmd
}

/// Starts `program args` detached inside the namespace open as `netns`: its own
/// session (no controlling terminal, untouched by the caller's signals and exit),
/// stdin `/dev/null`, stdout and stderr appended to `log` (which must be in an
/// existing directory), working directory `cwd`. Returns its PID; it is not
/// waited for (the caller's `running` check reaps it if it dies early).
pub fn spawn_detached(
    netns: impl Into<NetnsEntry>,
    program: &Path,
    args: &[String],
    log: &Path,
    cwd: &Path,
) -> SysResult<u32> {
    let mut out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| SysError::io(format!("opening log {}", log.display()), e))?;
    let line = std::iter::once(program.display().to_string())
        .chain(args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    let _ = writeln!(
        out,
        "# knetsim: starting `{line}` at unix time {}",
        crate::state::unix_now()
    );
    let err = out
        .try_clone()
        .map_err(|e| SysError::io(format!("opening log {}", log.display()), e))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .current_dir(cwd);
    let netns = std::sync::Arc::new(netns.into());
    let entry = netns.clone();
    // SAFETY: only raw syscalls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            entry.enter()
        });
    }
    let child = cmd.spawn().map_err(|e| SysError::io(format!("starting `{line}`"), e))?;
    // `netns` must outlive the fork: it is dropped only now.
    drop(netns);
    Ok(child.id())
}

/// Runs `cmd` in the foreground (inherited stdio) and waits for it. While it runs
/// this process ignores SIGINT and SIGQUIT, as system(3) does, so ^C reaches the
/// command (an interactive shell stays up) and not us.
pub fn run_foreground(cmd: &mut Command) -> std::io::Result<std::process::ExitStatus> {
    // The child has exec'd when spawn returns, with the default dispositions.
    let mut child = cmd.spawn()?;
    // SAFETY: installing SIG_IGN and restoring the previous handlers.
    let (int, quit) = unsafe {
        (
            libc::signal(libc::SIGINT, libc::SIG_IGN),
            libc::signal(libc::SIGQUIT, libc::SIG_IGN),
        )
    };
    let status = child.wait();
    // SAFETY: as above.
    unsafe {
        libc::signal(libc::SIGINT, int);
        libc::signal(libc::SIGQUIT, quit);
    }
    status
}

/// A shell's exit code for a status: the code, or 128 + the signal that ended it.
pub fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn a_replaced_binary_is_started_through_proc_self_exe() {
        let replaced = PathBuf::from("/work/target/debug/knetsim (deleted)");
        assert_eq!(
            runnable_exe(replaced.clone(), |_| false),
            PathBuf::from("/proc/self/exe")
        );
        // A file really named so, and an ordinary path, stay as they are.
        assert_eq!(runnable_exe(replaced.clone(), |_| true), replaced);
        let exe = PathBuf::from("/usr/bin/knetsim");
        assert_eq!(runnable_exe(exe.clone(), |_| false), exe);
    }

    fn me() -> SysResult<PathBuf> {
        Ok(PathBuf::from("/opt/knetsim/bin/knetsim"))
    }

    fn path_has(names: &'static [&'static str]) -> impl Fn(&str) -> Option<PathBuf> {
        move |n: &str| names.contains(&n).then(|| PathBuf::from(format!("/usr/bin/{n}")))
    }

    #[test]
    fn programs_on_path_are_used_as_found() {
        let lookup = path_has(&["etcd", "flanneld"]);
        let (p, args) = resolve_argv(&s(&["etcd", "--name", "C0e1"]), None, &lookup, &me).unwrap();
        assert_eq!(p, PathBuf::from("/usr/bin/etcd"));
        assert_eq!(args, s(&["--name", "C0e1"]));
        // A real flanneld wins over the built-in agent.
        let (p, args) = resolve_argv(&s(&["flanneld", "-iface=10.0.0.3"]), Some("flanneld"), &lookup, &me).unwrap();
        assert_eq!(p, PathBuf::from("/usr/bin/flanneld"));
        assert_eq!(args, s(&["-iface=10.0.0.3"]));
    }

    #[test]
    fn missing_programs_fall_back_to_the_builtin() {
        let lookup = path_has(&[]);
        let (p, args) = resolve_argv(
            &s(&["flanneld", "-iface=10.0.0.3", "-subnet-file=/tmp/x"]),
            Some("flanneld"),
            &lookup,
            &me,
        )
        .unwrap();
        assert_eq!(p, PathBuf::from("/opt/knetsim/bin/knetsim"));
        assert_eq!(args, s(&["flanneld", "-iface=10.0.0.3", "-subnet-file=/tmp/x"]));
        let (p, args) = resolve_argv(&s(&["skrouterd", "-c", "r.json"]), Some("router"), &lookup, &me).unwrap();
        assert_eq!(p, PathBuf::from("/opt/knetsim/bin/knetsim"));
        assert_eq!(args, s(&["router", "-c", "r.json"]));
        // Without a builtin, a missing program is an error naming it.
        let err = resolve_argv(&s(&["nginx", "-c", "x"]), None, &lookup, &me).unwrap_err();
        assert!(err.to_string().contains("`nginx`"), "{err}");
        // An explicit path that does not exist never falls back.
        assert!(resolve_argv(&s(&["/nope/flanneld"]), Some("flanneld"), &lookup, &me).is_err());
        assert!(resolve_argv(&[], None, &lookup, &me).is_err());
        assert!(resolve_argv(&s(&[""]), None, &lookup, &me).is_err());
    }

    #[test]
    fn run_returns_stdout_or_the_failure_with_stderr() {
        assert_eq!(run(&["cat"], Some("in\n")).unwrap(), "in\n");
        let err = run(&["sh", "-c", "echo oops >&2; exit 3"], None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`sh -c echo oops >&2; exit 3` failed (exit status: 3): oops"
        );
        let err = run(&["/nonexistent/prog"], None).unwrap_err().to_string();
        assert!(err.starts_with("running `/nonexistent/prog`: "), "{err}");
    }

    #[test]
    fn knetsim_is_this_executable() {
        // Even if something called knetsim is on PATH.
        let lookup = path_has(&["knetsim"]);
        let (p, args) = resolve_argv(&s(&["knetsim", "flanneld", "-v"]), None, &lookup, &me).unwrap();
        assert_eq!(p, PathBuf::from("/opt/knetsim/bin/knetsim"));
        assert_eq!(args, s(&["flanneld", "-v"]));
        assert_eq!(provider("knetsim", None, &lookup), Provider::Builtin(String::new()));
    }

    #[test]
    fn which_follows_path_order() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        for d in [&a, &b] {
            let f = d.join("tool");
            std::fs::write(&f, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        // Not executable: skipped.
        std::fs::write(a.join("data"), "x").unwrap();
        std::fs::write(b.join("data"), "x").unwrap();
        let path = std::env::join_paths([&a, &b]).unwrap();
        assert_eq!(which_in("tool", Some(&path), &is_executable), Some(a.join("tool")));
        assert_eq!(which_in("data", Some(&path), &is_executable), None);
        assert_eq!(which_in("tool", None, &is_executable), None);
        let abs = b.join("tool");
        assert_eq!(which_in(abs.to_str().unwrap(), None, &is_executable), Some(abs.clone()));
        assert_eq!(which_in("", Some(&path), &is_executable), None);
    }
}
