//! knetsim's own CNI runtime (what libcni and cnitool do) and its built-in plugins,
//! as the CNI specification 1.0 describes them. From the bottom up:
//!
//! - [`spec`]: what the specification defines and every part shares: versions, error
//!   codes and the error object, names, the `CNI_*` environment, the runtime's error;
//! - [`conf`]: network configurations, found by name in a directory (`*.conflist`
//!   first, then `*.conf` / `*.json`), and the arguments of one invocation;
//! - [`result`]: what plugins answer (ADD's result in every version's shape, VERSION);
//! - [`flannel_plugin`]: the `flannel` meta plugin (as flannel-io/cni-plugin does it):
//!   turns the flannel subnet file into a `bridge` + `host-local` delegate
//!   configuration and hands it to the delegate runner it is given;
//! - [`exec`]: runs one plugin: a binary found in the plugin directories
//!   (`CNI_PATH`), or a built-in plugin, with the environment and stdin;
//! - [`cache`]: libcni's result cache, for DEL and CHECK;
//! - [`runtime`]: [`CniRuntime`], ADD / DEL / CHECK / VERSION over a configuration's
//!   plugins.
//!
//! Built-in plugins are not files in a plugin directory: the runtime runs them by
//! executing the knetsim binary with `argv[0]` set to the plugin's name, and the
//! binary's `main` calls [`run_builtin_plugin`] first.

pub mod cache;
pub mod conf;
pub mod exec;
pub mod flannel_plugin;
pub mod result;
pub mod runtime;
pub mod spec;

pub use conf::{default_container_id, netns_path, parse_cni_args, NetworkConf, PluginConf, RuntimeConf};
pub use exec::{Builtins, BUILTIN_PLUGINS, DEFAULT_PLUGIN_DIRS};
pub use result::{CniResult, VersionInfo};
pub use runtime::CniRuntime;
pub use spec::{split_path, Error, PluginEnv, PluginError};

/// ADD of one pod as a kubelet does it, idempotently: an attachment that is already
/// there (a cached result carrying `expected_ip` that passes CHECK) is returned as
/// it is; a stale one is deleted first. A failed ADD is followed by a DEL so that no
/// half-made interface or allocation stays, and a result without `expected_ip` (when
/// given) is deleted again and reported as [`Error::UnexpectedIp`].
pub fn ensure_added(
    runtime: &CniRuntime,
    net: &NetworkConf,
    rt: &RuntimeConf,
    expected_ip: Option<&str>,
) -> Result<CniResult, Error> {
    let wanted = |r: &CniResult| match expected_ip {
        Some(ip) => r.has_ip(ip),
        None => true,
    };
    if let Ok(Some(cached)) = runtime.cached_result(net, rt) {
        if wanted(&cached) && runtime.check(net, rt).is_ok() {
            return Ok(cached);
        }
        let _ = runtime.del(net, rt);
    }
    let result = match runtime.add(net, rt) {
        Ok(r) => r,
        Err(e) => {
            let _ = runtime.del(net, rt);
            return Err(e);
        }
    };
    match expected_ip {
        Some(ip) if !result.has_ip(ip) => {
            let _ = runtime.del(net, rt);
            Err(Error::UnexpectedIp {
                expected: ip.into(),
                got: result.addresses(),
            })
        }
        _ => Ok(result),
    }
}

/// When this process was started as a built-in plugin (`argv[0]`'s file name is one
/// of [`BUILTIN_PLUGINS`]), runs that plugin with the CNI environment, stdin and
/// stdout, and returns its exit code; otherwise `None`.
pub fn run_builtin_plugin() -> Option<i32> {
    let argv0 = std::env::args_os().next()?;
    let name = std::path::Path::new(&argv0).file_name()?.to_str()?.to_string();
    match name.as_str() {
        flannel_plugin::NAME => Some(flannel_plugin::main(&exec::delegate(&Builtins::detect()))),
        _ => None,
    }
}
