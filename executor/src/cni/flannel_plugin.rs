//! The `flannel` CNI meta plugin, behaving like flannel-io/cni-plugin.
//!
//! ADD reads its configuration from stdin and the flannel agent's subnet file
//! (`subnetFile`, default `/run/flannel/subnet.env`: `FLANNEL_NETWORK`,
//! `FLANNEL_SUBNET`, `FLANNEL_MTU`, `FLANNEL_IPMASQ`), builds the delegate
//! configuration:
//!
//! - `delegate` as given, with `name` (the network's), `type` (`bridge` unless set),
//!   `ipMasq` (unless set: `!FLANNEL_IPMASQ`, masquerade here when flannel does not),
//!   `mtu` (unless set: `FLANNEL_MTU`), `isGateway: true` for bridge (unless set),
//!   `cniVersion` (the network's), `runtimeConfig` passed on;
//! - `ipam`: the top-level `ipam` object (e.g. `dataDir`), `type` `host-local` unless
//!   set, `ranges` `[[{"subnet": FLANNEL_SUBNET}]]`, `routes` the given ones plus one
//!   to each of `FLANNEL_NETWORK` (the default route of `isDefaultGateway` is left to
//!   the bridge plugin, which adds it),
//!
//! saves it as `<dataDir>/<container id>` (default dataDir `/var/lib/cni/flannel`) and
//! delegates ADD to the delegate plugin, printing its result. DEL delegates with the
//! saved configuration and then removes it (nothing saved: nothing to do). CHECK
//! delegates with the saved configuration and the `prevResult` it was given (the
//! reference plugin's CHECK does nothing yet); see `with_route_gateways`.
//!
//! Failures are printed as the specification's error object; errors of the plugin's
//! own (no code of the specification fits) are code 999, as the reference plugin
//! library reports them.

use super::spec::{
    check_container_id, check_ifname, code, Error, PluginEnv, PluginError, SPEC_VERSION, SUPPORTED_VERSIONS,
};
use serde_json::{Map, Value};
use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub const NAME: &str = "flannel";
pub const DEFAULT_SUBNET_FILE: &str = "/run/flannel/subnet.env";
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/flannel";

/// How the plugin runs its delegate: the delegate's type, its `CNI_*` environment and
/// its configuration in, what the delegate printed out (the runtime passes
/// `exec::delegate`, which executes the delegate plugin found in `CNI_PATH`).
pub type Delegate<'a> = &'a dyn Fn(&str, &PluginEnv, &[u8]) -> Result<Vec<u8>, Error>;

/// What the flannel agent wrote into its subnet file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubnetEnv {
    /// `FLANNEL_NETWORK` (comma-separated), each as its network, e.g. `11.0.0.0/8`.
    pub networks: Vec<String>,
    /// `FLANNEL_SUBNET` as its network, e.g. `11.10.16.0/20` for `11.10.16.1/20`.
    pub subnet: Option<String>,
    pub ip6_networks: Vec<String>,
    pub ip6_subnet: Option<String>,
    pub mtu: Option<u32>,
    pub ipmasq: Option<bool>,
}

/// `addr/len` as the network it names (`11.10.16.1/20` is `11.10.16.0/20`).
pub fn cidr_network(s: &str) -> Result<String, String> {
    let invalid = || format!("invalid CIDR address: {s}");
    let (addr, len) = s.trim().split_once('/').ok_or_else(invalid)?;
    let addr: IpAddr = addr.parse().map_err(|_| invalid())?;
    let len: u32 = len.parse().map_err(|_| invalid())?;
    let network = match addr {
        IpAddr::V4(a) if len <= 32 => {
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            IpAddr::from((u32::from(a) & mask).to_be_bytes())
        }
        IpAddr::V6(a) if len <= 128 => {
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            IpAddr::from((u128::from(a) & mask).to_be_bytes())
        }
        _ => return Err(invalid()),
    };
    Ok(format!("{network}/{len}"))
}

fn cidr_list(value: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for part in value.split(',') {
        let n = cidr_network(part)?;
        if !out.contains(&n) {
            out.push(n);
        }
    }
    Ok(out)
}

impl SubnetEnv {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut env = SubnetEnv::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            match key {
                "FLANNEL_NETWORK" => env.networks = cidr_list(value)?,
                "FLANNEL_SUBNET" => env.subnet = Some(cidr_network(value)?),
                "FLANNEL_IPV6_NETWORK" => env.ip6_networks = cidr_list(value)?,
                "FLANNEL_IPV6_SUBNET" => env.ip6_subnet = Some(cidr_network(value)?),
                "FLANNEL_MTU" => {
                    env.mtu = Some(
                        value
                            .parse()
                            .map_err(|_| format!("FLANNEL_MTU \"{value}\" is not a number"))?,
                    )
                }
                "FLANNEL_IPMASQ" => env.ipmasq = Some(value == "true"),
                _ => {}
            }
        }
        Ok(env)
    }

    /// Reads and checks a subnet file: every variable must be there.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("reading subnet file {}: {e}", path.display()))?;
        let env = Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let missing = env.missing();
        if !missing.is_empty() {
            return Err(format!("{} is missing {}", path.display(), missing.join(", ")));
        }
        Ok(env)
    }

    fn missing(&self) -> Vec<&'static str> {
        let mut m = Vec::new();
        if self.networks.is_empty() && self.ip6_networks.is_empty() {
            m.extend(["FLANNEL_NETWORK", "FLANNEL_IPV6_NETWORK"]);
        }
        if self.subnet.is_none() && self.ip6_subnet.is_none() {
            m.extend(["FLANNEL_SUBNET", "FLANNEL_IPV6_SUBNET"]);
        }
        if self.mtu.is_none() {
            m.push("FLANNEL_MTU");
        }
        if self.ipmasq.is_none() {
            m.push("FLANNEL_IPMASQ");
        }
        m
    }
}

/// The plugin's own configuration (stdin).
#[derive(Debug, Clone)]
pub struct NetConf {
    name: String,
    cni_version: String,
    subnet_file: PathBuf,
    data_dir: PathBuf,
    delegate: Option<Map<String, Value>>,
    ipam: Option<Map<String, Value>>,
    runtime_config: Option<Map<String, Value>>,
    prev_result: Option<Value>,
}

fn internal(msg: impl Into<String>) -> PluginError {
    PluginError::new(code::INTERNAL, msg, "")
}

fn load_netconf(conf: &Map<String, Value>) -> Result<NetConf, PluginError> {
    let bad = |key: &str, what: &str| internal(format!("failed to load netconf: '{key}' must be {what}"));
    let string = |key: &str| match conf.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad(key, "a string")),
    };
    let object = |key: &str| match conf.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m.clone())),
        Some(_) => Err(bad(key, "an object")),
    };
    let non_empty = |v: Option<String>| v.filter(|s| !s.is_empty());
    Ok(NetConf {
        name: string("name")?.unwrap_or_default(),
        cni_version: string("cniVersion")?.unwrap_or_default(),
        subnet_file: non_empty(string("subnetFile")?)
            .unwrap_or_else(|| DEFAULT_SUBNET_FILE.into())
            .into(),
        data_dir: non_empty(string("dataDir")?)
            .unwrap_or_else(|| DEFAULT_DATA_DIR.into())
            .into(),
        delegate: object("delegate")?,
        ipam: object("ipam")?,
        runtime_config: object("runtimeConfig")?,
        prev_result: conf.get("prevResult").filter(|v| !v.is_null()).cloned(),
    })
}

/// The delegate's IPAM section: the given `ipam` completed with flannel's subnet.
fn delegate_ipam(n: &NetConf, fenv: &SubnetEnv) -> Result<Map<String, Value>, PluginError> {
    let mut ipam = n.ipam.clone().unwrap_or_default();
    ipam.entry("type").or_insert_with(|| "host-local".into());
    let ranges: Vec<Value> = [&fenv.subnet, &fenv.ip6_subnet]
        .into_iter()
        .flatten()
        .map(|s| serde_json::json!([{ "subnet": s }]))
        .collect();
    ipam.insert("ranges".into(), Value::Array(ranges));
    let mut routes = match ipam.get("routes") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(r)) if r.iter().all(|r| r.get("dst").is_some_and(Value::is_string)) => r.clone(),
        Some(_) => {
            return Err(internal(
                "failed to assemble Delegate IPAM: failed to read IPAM routes: ipam.routes must be a list of {\"dst\": CIDR, \"gw\": IP}",
            ))
        }
    };
    for nw in fenv.networks.iter().chain(&fenv.ip6_networks) {
        routes.push(serde_json::json!({ "dst": nw }));
    }
    ipam.insert("routes".into(), Value::Array(routes));
    Ok(ipam)
}

/// The configuration ADD hands to the delegate plugin, from the plugin's own
/// configuration (stdin) and the subnet file.
pub fn build_delegate(conf: &Map<String, Value>, fenv: &SubnetEnv) -> Result<Map<String, Value>, PluginError> {
    let n = load_netconf(conf)?;
    build_delegate_from(&n, fenv)
}

fn build_delegate_from(n: &NetConf, fenv: &SubnetEnv) -> Result<Map<String, Value>, PluginError> {
    let mut d = n.delegate.clone().unwrap_or_default();
    if d.get("type").is_some_and(|t| !t.is_string()) {
        return Err(internal(
            "'delegate' dictionary, if present, must have (string) 'type' field",
        ));
    }
    if d.contains_key("name") {
        return Err(internal(
            "'delegate' dictionary must not have 'name' field, it'll be set by flannel",
        ));
    }
    if d.contains_key("ipam") {
        return Err(internal(
            "'delegate' dictionary must not have 'ipam' field, it'll be set by flannel",
        ));
    }
    if let Some(rc) = &n.runtime_config {
        d.insert("runtimeConfig".into(), Value::Object(rc.clone()));
    }
    d.insert("name".into(), n.name.clone().into());
    d.entry("type").or_insert_with(|| "bridge".into());
    if !d.contains_key("ipMasq") {
        // If flannel does not masquerade, the delegate should.
        d.insert("ipMasq".into(), (!fenv.ipmasq.unwrap_or(false)).into());
    }
    if !d.contains_key("mtu") {
        d.insert("mtu".into(), fenv.mtu.map_or(Value::Null, Value::from));
    }
    if d.get("type").and_then(Value::as_str) == Some("bridge") {
        d.entry("isGateway").or_insert(Value::Bool(true));
    }
    if !n.cni_version.is_empty() {
        d.insert("cniVersion".into(), n.cni_version.clone().into());
    }
    d.insert("ipam".into(), Value::Object(delegate_ipam(n, fenv)?));
    Ok(d)
}

fn io_error(context: String, e: std::io::Error) -> PluginError {
    PluginError::new(code::IO_FAILURE, context, e.to_string())
}

fn save_delegate(data_dir: &Path, container_id: &str, conf: &[u8]) -> Result<(), PluginError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(|e| io_error(format!("creating {}", data_dir.display()), e))?;
    let path = data_dir.join(container_id);
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| f.write_all(conf))
        .map_err(|e| io_error(format!("saving the delegate configuration {}", path.display()), e))
}

fn delegate(
    kind: &str,
    command: &str,
    env: &PluginEnv,
    conf: &[u8],
    run_delegate: Delegate,
) -> Result<Vec<u8>, PluginError> {
    let env = env.with_command(command);
    run_delegate(kind, &env, conf).map_err(|e| match e {
        Error::Plugin { error, .. } => PluginError {
            msg: format!("failed to delegate {} to {kind}: {}", command.to_lowercase(), error.msg),
            ..error
        },
        other => internal(format!(
            "failed to delegate {} to {kind}: {other}",
            command.to_lowercase()
        )),
    })
}

fn delegate_type(conf: &Map<String, Value>) -> Result<String, PluginError> {
    match conf.get("type") {
        Some(Value::String(t)) if !t.is_empty() => Ok(t.clone()),
        _ => Err(internal("the saved delegate configuration has no 'type'")),
    }
}

fn cmd_add(env: &PluginEnv, n: &NetConf, run_delegate: Delegate) -> Result<Vec<u8>, PluginError> {
    let fenv = SubnetEnv::load(&n.subnet_file).map_err(internal)?;
    let conf = build_delegate_from(n, &fenv)?;
    let kind = delegate_type(&conf)?;
    let bytes = serde_json::to_vec(&Value::Object(conf)).expect("a JSON value serializes");
    // Saved first, so that DEL can undo a half-done ADD.
    save_delegate(&n.data_dir, &env.container_id, &bytes)?;
    let out = delegate(&kind, "ADD", env, &bytes, run_delegate)?;
    if serde_json::from_slice::<Value>(&out).is_err() {
        return Err(PluginError::new(
            code::DECODING_FAILURE,
            format!("failed to delegate add to {kind}: its result is not JSON"),
            String::from_utf8_lossy(&out).into_owned(),
        ));
    }
    Ok(out)
}

/// The saved delegate configuration of a container, if any.
fn saved_delegate(n: &NetConf, container_id: &str) -> Result<Option<(PathBuf, Vec<u8>)>, PluginError> {
    let path = n.data_dir.join(container_id);
    match std::fs::read(&path) {
        Ok(b) => Ok(Some((path, b))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(format!("reading {}", path.display()), e)),
    }
}

fn cmd_del(env: &PluginEnv, n: &NetConf, run_delegate: Delegate) -> Result<Vec<u8>, PluginError> {
    // Nothing saved: already deleted (or never added), which is not an error.
    let Some((path, bytes)) = saved_delegate(n, &env.container_id)? else {
        return Ok(Vec::new());
    };
    let conf = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => m,
        _ => {
            // As the reference plugin: the interface stays until the node is rebooted.
            eprintln!("failed to parse the saved delegate configuration {}", path.display());
            return Ok(Vec::new());
        }
    };
    let kind = delegate_type(&conf)?;
    delegate(&kind, "DEL", env, &bytes, run_delegate)?;
    let _ = std::fs::remove_file(&path);
    Ok(Vec::new())
}

fn cmd_check(env: &PluginEnv, n: &NetConf, run_delegate: Delegate) -> Result<Vec<u8>, PluginError> {
    let Some((path, bytes)) = saved_delegate(n, &env.container_id)? else {
        return Err(PluginError::new(
            code::UNKNOWN_CONTAINER,
            format!("no delegate configuration for container {}", env.container_id),
            format!("{} does not exist", n.data_dir.join(&env.container_id).display()),
        ));
    };
    let Ok(Value::Object(mut conf)) = serde_json::from_slice::<Value>(&bytes) else {
        return Err(PluginError::new(
            code::DECODING_FAILURE,
            format!("failed to parse the saved delegate configuration {}", path.display()),
            "",
        ));
    };
    let kind = delegate_type(&conf)?;
    if let Some(prev) = &n.prev_result {
        conf.insert("prevResult".into(), with_route_gateways(prev));
    }
    let bytes = serde_json::to_vec(&Value::Object(conf)).expect("a JSON value serializes");
    delegate(&kind, "CHECK", env, &bytes, run_delegate)?;
    Ok(Vec::new())
}

/// `prevResult` with each route that names no gateway given the one it was installed
/// with: the gateway of the result's address of the same family (as the IPAM code
/// configures such routes). The bridge plugin's CHECK before containernetworking
/// plugins 1.3 (Debian ships 1.1) looks such routes up with "no gateway" and fails on
/// flannel's `FLANNEL_NETWORK` route (containernetworking/plugins issue 886).
fn with_route_gateways(prev: &Value) -> Value {
    let mut prev = prev.clone();
    let gateway = |v6: bool| {
        prev.get("ips")?.as_array()?.iter().find_map(|ip| {
            let gw = ip.get("gateway")?.as_str()?;
            (gw.contains(':') == v6).then(|| gw.to_string())
        })
    };
    let (gw4, gw6) = (gateway(false), gateway(true));
    if let Some(routes) = prev.get_mut("routes").and_then(Value::as_array_mut) {
        for route in routes.iter_mut().filter_map(Value::as_object_mut) {
            if route.get("gw").is_some_and(|g| !g.is_null()) {
                continue;
            }
            let v6 = route
                .get("dst")
                .and_then(Value::as_str)
                .is_some_and(|d| d.contains(':'));
            if let Some(gw) = if v6 { &gw6 } else { &gw4 } {
                route.insert("gw".into(), gw.clone().into());
            }
        }
    }
    prev
}

fn version_info() -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "cniVersion": SPEC_VERSION,
        "supportedVersions": SUPPORTED_VERSIONS,
    }))
    .expect("a JSON value serializes")
}

/// The parsing entry point of the plugin: checks the `CNI_*` environment `env` and
/// decodes the configuration `stdin` as [`run`] does, without touching the system.
/// `None` for `CNI_COMMAND=VERSION` (stdin is not read), else the configuration of the
/// ADD, DEL or CHECK in `env.command`.
pub fn parse_request(env: &PluginEnv, stdin: &[u8]) -> Result<Option<NetConf>, PluginError> {
    let required: &[(&str, &str)] = match env.command.as_str() {
        "VERSION" => return Ok(None),
        "ADD" | "CHECK" => &[
            ("CNI_CONTAINERID", &env.container_id),
            ("CNI_NETNS", &env.netns),
            ("CNI_IFNAME", &env.ifname),
            ("CNI_PATH", &env.path),
        ],
        "DEL" => &[
            ("CNI_CONTAINERID", &env.container_id),
            ("CNI_IFNAME", &env.ifname),
            ("CNI_PATH", &env.path),
        ],
        "" => {
            return Err(PluginError::new(
                code::INVALID_ENVIRONMENT,
                "required env variables [CNI_COMMAND] missing",
                "",
            ))
        }
        other => {
            return Err(PluginError::new(
                code::INVALID_ENVIRONMENT,
                format!("unknown CNI_COMMAND: {other}"),
                "",
            ))
        }
    };
    let missing: Vec<&str> = required.iter().filter(|(_, v)| v.is_empty()).map(|(k, _)| *k).collect();
    if !missing.is_empty() {
        return Err(PluginError::new(
            code::INVALID_ENVIRONMENT,
            format!("required env variables [{}] missing", missing.join(",")),
            "",
        ));
    }
    check_container_id(&env.container_id)
        .map_err(|d| PluginError::new(code::INVALID_ENVIRONMENT, "invalid CNI_CONTAINERID", d))?;
    check_ifname(&env.ifname).map_err(|d| PluginError::new(code::INVALID_ENVIRONMENT, "invalid CNI_IFNAME", d))?;
    let conf = match serde_json::from_slice::<Value>(stdin) {
        Ok(Value::Object(m)) => m,
        Ok(_) => {
            return Err(PluginError::new(
                code::DECODING_FAILURE,
                "decoding version from network config",
                "the configuration is not a JSON object",
            ))
        }
        Err(e) => {
            return Err(PluginError::new(
                code::DECODING_FAILURE,
                "decoding version from network config",
                e.to_string(),
            ))
        }
    };
    let n = load_netconf(&conf)?;
    let version = if n.cni_version.is_empty() {
        "0.1.0"
    } else {
        &n.cni_version
    };
    if !SUPPORTED_VERSIONS.contains(&version) {
        return Err(PluginError::new(
            code::INCOMPATIBLE_VERSION,
            "incompatible CNI versions",
            format!("config is \"{version}\", plugin supports {SUPPORTED_VERSIONS:?}"),
        ));
    }
    Ok(Some(n))
}

/// Runs the plugin for one invocation: `env` is its `CNI_*` environment, `stdin` its
/// configuration; returns what it prints on stdout. Delegates run through
/// `run_delegate`.
pub fn run(env: &PluginEnv, stdin: &[u8], run_delegate: Delegate) -> Result<Vec<u8>, PluginError> {
    let Some(n) = parse_request(env, stdin)? else {
        return Ok(version_info());
    };
    match env.command.as_str() {
        "ADD" => cmd_add(env, &n, run_delegate),
        "DEL" => cmd_del(env, &n, run_delegate),
        _ => cmd_check(env, &n, run_delegate),
    }
}

/// The plugin as a program (knetsim started with `argv[0]` = `flannel`): the
/// invocation from the environment and stdin, the result on stdout, an error as
/// the specification's error object on stdout with exit code 1.
pub fn main(run_delegate: Delegate) -> i32 {
    let env = PluginEnv::from_process_env();
    let mut stdin = Vec::new();
    let read = if env.command == "VERSION" {
        Ok(0)
    } else {
        std::io::stdin().read_to_end(&mut stdin)
    };
    let outcome = match read {
        Ok(_) => run(&env, &stdin, run_delegate),
        Err(e) => Err(io_error("reading the network configuration from stdin".into(), e)),
    };
    let mut stdout = std::io::stdout().lock();
    match outcome {
        Ok(out) => {
            let _ = stdout.write_all(&out);
            let _ = stdout.flush();
            0
        }
        Err(e) => {
            let version = serde_json::from_slice::<Value>(&stdin)
                .ok()
                .and_then(|v| v.get("cniVersion").and_then(Value::as_str).map(str::to_string))
                .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
                .unwrap_or_else(|| SPEC_VERSION.to_string());
            let _ = writeln!(stdout, "{}", e.to_json(&version));
            let _ = stdout.flush();
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::exec::{delegate, Builtins};
    use serde_json::json;

    /// The plugin as the runtime runs it in process, its delegates run with `builtins`.
    fn run(env: &PluginEnv, stdin: &[u8], builtins: &Builtins) -> Result<Vec<u8>, PluginError> {
        super::run(env, stdin, &delegate(builtins))
    }

    const SUBNET_ENV: &str =
        "FLANNEL_NETWORK=11.0.0.0/8\nFLANNEL_SUBNET=11.10.16.1/20\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n";

    #[test]
    fn cidrs() {
        assert_eq!(cidr_network("11.10.16.1/20").unwrap(), "11.10.16.0/20");
        assert_eq!(cidr_network("11.0.0.0/8").unwrap(), "11.0.0.0/8");
        assert_eq!(cidr_network("10.1.2.3/0").unwrap(), "0.0.0.0/0");
        assert_eq!(cidr_network("10.1.2.3/32").unwrap(), "10.1.2.3/32");
        assert_eq!(cidr_network("fd00::1:2/64").unwrap(), "fd00::/64");
        for bad in ["11.10.16.1", "11.10.16.1/33", "x/8", "fd00::/129"] {
            assert!(cidr_network(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_subnet_files() {
        let env = SubnetEnv::parse(SUBNET_ENV).unwrap();
        assert_eq!(env.networks, ["11.0.0.0/8"]);
        assert_eq!(env.subnet.as_deref(), Some("11.10.16.0/20"));
        assert_eq!(env.mtu, Some(1450));
        assert_eq!(env.ipmasq, Some(false));
        assert!(env.missing().is_empty());
        let two = SubnetEnv::parse("FLANNEL_NETWORK=11.0.0.0/8,12.0.0.0/8,11.0.0.0/8\n").unwrap();
        assert_eq!(two.networks, ["11.0.0.0/8", "12.0.0.0/8"]);
        assert_eq!(
            two.missing(),
            ["FLANNEL_SUBNET", "FLANNEL_IPV6_SUBNET", "FLANNEL_MTU", "FLANNEL_IPMASQ"]
        );
        assert!(SubnetEnv::parse("FLANNEL_MTU=big\n").is_err());
        assert!(SubnetEnv::parse("FLANNEL_SUBNET=11.10.16.1\n").is_err());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("subnet.env");
        std::fs::write(&path, "FLANNEL_NETWORK=11.0.0.0/8\n").unwrap();
        let err = SubnetEnv::load(&path).unwrap_err();
        assert!(err.contains("is missing FLANNEL_SUBNET"), "{err}");
        let err = SubnetEnv::load(&dir.path().join("nope")).unwrap_err();
        assert!(err.contains("reading subnet file"), "{err}");
    }

    fn compiled_conf() -> Map<String, Value> {
        json!({
            "cniVersion": "1.0.0",
            "name": "C0w1",
            "type": "flannel",
            "subnetFile": "/tmp/knetsim/C0w1/flannel-subnet.env",
            "dataDir": "/tmp/knetsim/C0w1/flannel",
            "delegate": {"isDefaultGateway": true},
            "ipam": {"type": "host-local", "dataDir": "/tmp/knetsim/C0w1/ipam"}
        })
        .as_object()
        .unwrap()
        .clone()
    }

    #[test]
    fn builds_the_bridge_delegate_of_the_compiled_conf() {
        let fenv = SubnetEnv::parse(SUBNET_ENV).unwrap();
        let d = build_delegate(&compiled_conf(), &fenv).unwrap();
        assert_eq!(
            Value::Object(d),
            json!({
                "isDefaultGateway": true,
                "name": "C0w1",
                "type": "bridge",
                "ipMasq": true,
                "mtu": 1450,
                "isGateway": true,
                "cniVersion": "1.0.0",
                "ipam": {
                    "type": "host-local",
                    "dataDir": "/tmp/knetsim/C0w1/ipam",
                    "ranges": [[{"subnet": "11.10.16.0/20"}]],
                    "routes": [{"dst": "11.0.0.0/8"}]
                }
            })
        );
    }

    #[test]
    fn delegate_settings_win_and_bad_delegates_are_refused() {
        let mut fenv = SubnetEnv::parse(SUBNET_ENV).unwrap();
        fenv.ipmasq = Some(true);
        let mut conf = compiled_conf();
        conf.insert("delegate".into(), json!({"type": "ptp", "mtu": 1400, "ipMasq": true}));
        conf.insert(
            "ipam".into(),
            json!({"routes": [{"dst": "10.0.0.0/8", "gw": "11.10.16.254"}]}),
        );
        conf.insert("runtimeConfig".into(), json!({"portMappings": []}));
        let d = build_delegate(&conf, &fenv).unwrap();
        assert_eq!(d["type"], "ptp");
        assert_eq!(d["mtu"], 1400);
        assert_eq!(d["ipMasq"], true);
        assert!(d.get("isGateway").is_none(), "only bridge gets isGateway");
        assert_eq!(d["runtimeConfig"], json!({"portMappings": []}));
        assert_eq!(d["ipam"]["type"], "host-local");
        assert_eq!(
            d["ipam"]["routes"],
            json!([{"dst": "10.0.0.0/8", "gw": "11.10.16.254"}, {"dst": "11.0.0.0/8"}])
        );
        // Without flannel masquerading, the bridge does.
        let mut plain = compiled_conf();
        plain.remove("delegate");
        fenv.ipmasq = Some(true);
        assert_eq!(build_delegate(&plain, &fenv).unwrap()["ipMasq"], false);

        for (delegate, expected) in [
            (json!({"name": "x"}), "must not have 'name'"),
            (json!({"ipam": {}}), "must not have 'ipam'"),
            (json!({"type": 1}), "(string) 'type'"),
            (json!("bridge"), "'delegate' must be an object"),
        ] {
            let mut conf = compiled_conf();
            conf.insert("delegate".into(), delegate);
            let err = build_delegate(&conf, &fenv).unwrap_err();
            assert!(err.msg.contains(expected), "{err}");
            assert_eq!(err.code, code::INTERNAL);
        }
        let mut conf = compiled_conf();
        conf.insert("ipam".into(), json!({"routes": [{"gw": "1.2.3.4"}]}));
        assert!(build_delegate(&conf, &fenv).unwrap_err().msg.contains("routes"));
    }

    #[test]
    fn check_gives_gatewayless_routes_their_gateway() {
        let prev = json!({
            "cniVersion": "1.0.0",
            "ips": [{"address": "11.10.16.10/20", "gateway": "11.10.16.1", "interface": 2},
                    {"address": "fd00::10/64", "gateway": "fd00::1", "interface": 2}],
            "routes": [{"dst": "11.0.0.0/8"}, {"dst": "0.0.0.0/0", "gw": "11.10.16.254"}, {"dst": "fd00::/16"}]
        });
        let fixed = with_route_gateways(&prev);
        assert_eq!(
            fixed["routes"],
            json!([{"dst": "11.0.0.0/8", "gw": "11.10.16.1"}, {"dst": "0.0.0.0/0", "gw": "11.10.16.254"},
                   {"dst": "fd00::/16", "gw": "fd00::1"}])
        );
        assert_eq!(fixed["ips"], prev["ips"]);
        let no_ips = json!({"routes": [{"dst": "11.0.0.0/8"}]});
        assert_eq!(with_route_gateways(&no_ips), no_ips);
    }

    fn env(command: &str) -> PluginEnv {
        PluginEnv {
            command: command.into(),
            container_id: "C0-c1".into(),
            netns: "/run/netns/k0_c1".into(),
            ifname: "eth0".into(),
            args: String::new(),
            path: "/nonexistent".into(),
        }
    }

    #[test]
    fn follows_the_plugin_protocol() {
        let v: Value = serde_json::from_slice(&run(&env("VERSION"), b"", &Builtins::Disabled).unwrap()).unwrap();
        assert_eq!(v["cniVersion"], "1.0.0");
        assert!(v["supportedVersions"].as_array().unwrap().contains(&json!("1.0.0")));

        let stdin = serde_json::to_vec(&Value::Object(compiled_conf())).unwrap();
        let e = run(&env(""), &stdin, &Builtins::Disabled).unwrap_err();
        assert_eq!(
            (e.code, e.msg.as_str()),
            (4, "required env variables [CNI_COMMAND] missing")
        );
        let e = run(&env("FROB"), &stdin, &Builtins::Disabled).unwrap_err();
        assert_eq!(e.code, 4);
        let mut no_netns = env("ADD");
        no_netns.netns.clear();
        let e = run(&no_netns, &stdin, &Builtins::Disabled).unwrap_err();
        assert_eq!(
            (e.code, e.msg.as_str()),
            (4, "required env variables [CNI_NETNS] missing")
        );
        let mut bad_id = env("ADD");
        bad_id.container_id = "../../etc/passwd".into();
        assert_eq!(run(&bad_id, &stdin, &Builtins::Disabled).unwrap_err().code, 4);
        let e = run(&env("ADD"), b"{nope", &Builtins::Disabled).unwrap_err();
        assert_eq!(e.code, code::DECODING_FAILURE);
        let e = run(
            &env("ADD"),
            br#"{"cniVersion":"9.9.9","name":"x"}"#,
            &Builtins::Disabled,
        )
        .unwrap_err();
        assert_eq!(e.code, code::INCOMPATIBLE_VERSION);
        assert!(e.details.contains("9.9.9"), "{e}");
        assert_eq!(e.to_json("1.0.0")["code"], 1);
    }

    #[test]
    fn add_saves_the_delegate_and_del_check_use_it() {
        let dir = tempfile::tempdir().unwrap();
        let subnet = dir.path().join("subnet.env");
        std::fs::write(&subnet, SUBNET_ENV).unwrap();
        let data_dir = dir.path().join("data");
        let mut conf = compiled_conf();
        conf.insert("subnetFile".into(), subnet.display().to_string().into());
        conf.insert("dataDir".into(), data_dir.display().to_string().into());
        let stdin = serde_json::to_vec(&Value::Object(conf.clone())).unwrap();

        // No bridge in CNI_PATH: the delegation fails, but the delegate conf is saved for DEL.
        let e = run(&env("ADD"), &stdin, &Builtins::Disabled).unwrap_err();
        assert!(
            e.msg.contains("failed to delegate add to bridge") && e.msg.contains("failed to find plugin"),
            "{e}"
        );
        let saved: Value = serde_json::from_slice(&std::fs::read(data_dir.join("C0-c1")).unwrap()).unwrap();
        assert_eq!(saved["type"], "bridge");
        assert_eq!(saved["ipam"]["ranges"][0][0]["subnet"], "11.10.16.0/20");

        let e = run(&env("CHECK"), &stdin, &Builtins::Disabled).unwrap_err();
        assert!(e.msg.contains("failed to delegate check to bridge"), "{e}");
        let e = run(&env("DEL"), &stdin, &Builtins::Disabled).unwrap_err();
        assert!(e.msg.contains("failed to delegate del to bridge"), "{e}");
        assert!(data_dir.join("C0-c1").exists(), "kept while DEL fails");

        // Nothing saved for another container: DEL is a no-op, CHECK says unknown.
        let mut other = env("DEL");
        other.container_id = "C0-c2".into();
        assert_eq!(run(&other, &stdin, &Builtins::Disabled).unwrap(), b"");
        other.command = "CHECK".into();
        assert_eq!(
            run(&other, &stdin, &Builtins::Disabled).unwrap_err().code,
            code::UNKNOWN_CONTAINER
        );

        // A missing subnet file is a clear error.
        conf.insert("subnetFile".into(), "/nonexistent/subnet.env".into());
        let stdin = serde_json::to_vec(&Value::Object(conf)).unwrap();
        let e = run(&env("ADD"), &stdin, &Builtins::Disabled).unwrap_err();
        assert!(e.msg.contains("/nonexistent/subnet.env"), "{e}");
    }
}
