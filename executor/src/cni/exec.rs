//! Executing plugins: finding a plugin's binary in the plugin directories
//! (`CNI_PATH`), or running one of the plugins knetsim carries itself, with the
//! `CNI_*` environment and the configuration on stdin; a failure is read back as the
//! specification's error object.
//!
//! Plugins run in the network namespace of the calling thread (the "runtime's"
//! namespace: a worker's, for knetsim); `CNI_NETNS` names the container's.

use super::flannel_plugin;
use super::spec::{check_plugin_name, code, join_path, Error, PluginEnv, PluginError, Result};
use crate::system::process::is_executable;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Where Debian's containernetworking-plugins and upstream installs put the plugins.
pub const DEFAULT_PLUGIN_DIRS: &[&str] = &["/usr/lib/cni", "/opt/cni/bin"];
/// Plugins knetsim carries itself (run when no binary of that name is in `CNI_PATH`).
pub const BUILTIN_PLUGINS: &[&str] = &[flannel_plugin::NAME];

/// binary of that name is in the plugin directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Builtins {
    /// Execute this program (the knetsim binary) with `argv[0]` set to the plugin's
    /// name; its `main` dispatches on `argv[0]`.
    Exec(PathBuf),
    /// Call the plugin's code inside this process, with the same environment and
    /// stdin a separate process would get (for programs other than knetsim, such as
    /// tests).
    InProcess,
    /// Only binaries in the plugin directories.
    Disabled,
}

impl Builtins {
    /// [`Builtins::Exec`] of this program when it is the knetsim binary, else
    /// [`Builtins::InProcess`].
    pub fn detect() -> Self {
        match std::env::current_exe() {
            Ok(exe) if exe.file_name().is_some_and(|n| n == "knetsim") => Builtins::Exec(exe),
            _ => Builtins::InProcess,
        }
    }
}

enum Located {
    Binary(PathBuf),
    Builtin(&'static str),
}

/// The first executable regular file named `plugin` in `dirs`.
pub fn find_in_path(plugin: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    if check_plugin_name(plugin).is_err() {
        return None;
    }
    dirs.iter().map(|d| d.join(plugin)).find(|p| is_executable(p))
}

fn locate(plugin: &str, dirs: &[PathBuf], builtins: &Builtins) -> Result<Located> {
    if let Some(p) = find_in_path(plugin, dirs) {
        return Ok(Located::Binary(p));
    }
    if *builtins != Builtins::Disabled {
        if let Some(name) = BUILTIN_PLUGINS.iter().find(|b| **b == plugin) {
            return Ok(Located::Builtin(name));
        }
    }
    const STANDARD: &[&str] = &[
        "bridge",
        "host-local",
        "loopback",
        "ptp",
        "macvlan",
        "ipvlan",
        "vlan",
        "host-device",
        "static",
        "dhcp",
        "portmap",
        "bandwidth",
        "firewall",
        "tuning",
        "sbr",
        "vrf",
    ];
    Err(Error::PluginNotFound {
        plugin: plugin.into(),
        path: join_path(dirs),
        hint: if STANDARD.contains(&plugin) {
            " (install the Debian package containernetworking-plugins)".into()
        } else {
            String::new()
        },
    })
}

/// Runs plugin `plugin` (found in `dirs`, or built in) once: `env` as its `CNI_*`
/// environment (on top of this process's), `stdin` as its configuration. Returns
/// what it printed on stdout; a failure is [`Error::Plugin`] with the plugin's error
/// object. This is also how a meta plugin delegates.
pub fn exec_plugin(
    plugin: &str,
    dirs: &[PathBuf],
    builtins: &Builtins,
    env: &PluginEnv,
    stdin: &[u8],
) -> Result<Vec<u8>> {
    let failed = |error: PluginError| Error::Plugin {
        plugin: plugin.into(),
        command: env.command.clone(),
        error,
    };
    let mut cmd = match locate(plugin, dirs, builtins)? {
        Located::Binary(path) => Command::new(path),
        Located::Builtin(name) => match builtins {
            Builtins::Exec(exe) => {
                let mut c = Command::new(exe);
                c.arg0(name);
                c
            }
            _ => return run_builtin_in_process(name, env, stdin, builtins).map_err(failed),
        },
    };
    cmd.envs(env.vars())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // A plugin dies with its caller: a change killed half-way must not leave a plugin
    // running on while the next change undoes (and redoes) what it was doing.
    // SAFETY: one raw syscall between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = {
        let mut attempt = 0;
        loop {
            match cmd.spawn() {
                Ok(c) => break c,
                // The binary is being written (e.g. an install in progress): retry a few times.
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < 5 => {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(Error::io(format!("executing plugin {plugin}"), e)),
            }
        }
    };
    let mut input = child.stdin.take().expect("stdin is piped");
    let output = std::thread::scope(|s| {
        s.spawn(move || {
            // A plugin may exit without reading everything; that is its business.
            let _ = input.write_all(stdin);
        });
        child.wait_with_output()
    })
    .map_err(|e| Error::io(format!("waiting for plugin {plugin}"), e))?;
    if output.status.success() {
        return Ok(output.stdout);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let error = if stdout.trim().is_empty() {
        if stderr.trim().is_empty() {
            PluginError::new(
                0,
                format!("plugin exited with {} and no error message", output.status),
                "",
            )
        } else {
            PluginError::new(0, format!("plugin exited with {}", output.status), stderr.trim())
        }
    } else {
        serde_json::from_str::<PluginError>(stdout.trim()).unwrap_or_else(|e| {
            PluginError::new(
                0,
                format!(
                    "plugin exited with {} and its error output is not JSON ({e})",
                    output.status
                ),
                stdout.trim(),
            )
        })
    };
    Err(failed(error))
}

fn run_builtin_in_process(
    name: &str,
    env: &PluginEnv,
    stdin: &[u8],
    builtins: &Builtins,
) -> std::result::Result<Vec<u8>, PluginError> {
    match name {
        flannel_plugin::NAME => flannel_plugin::run(env, stdin, &delegate(builtins)),
        other => Err(PluginError::new(
            code::INTERNAL,
            format!("no built-in plugin {other}"),
            "",
        )),
    }
}

/// How a meta plugin run with `builtins` delegates: [`exec_plugin`] with the plugin
/// directories of the delegate's `CNI_PATH`.
pub fn delegate(builtins: &Builtins) -> impl Fn(&str, &PluginEnv, &[u8]) -> Result<Vec<u8>> + '_ {
    move |kind, env, conf| exec_plugin(kind, &env.plugin_dirs(), builtins, env, conf)
}
