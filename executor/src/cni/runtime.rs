//! A CNI runtime per the CNI specification 1.0 (what libcni and cnitool do).
//!
//! - [`NetworkConf::load`] finds a network configuration by name in a directory:
//!   `*.conflist` files first, then single-plugin `*.conf` / `*.json` files, which are
//!   wrapped as a one-plugin list.
//! - [`CniRuntime`] runs ADD (plugins in order, each given the previous plugin's result
//!   as `prevResult`), DEL (in reverse order, with the cached result), CHECK (in order,
//!   with the cached result) and VERSION, by executing the plugin binary found in the
//!   plugin directories with the `CNI_*` environment and the plugin's configuration on
//!   stdin. Results of ADD are cached as libcni caches them, in
//!   `<cache_dir>/results/<network>-<container id>-<ifname>`.
//! - Plugin failures are the specification's error objects (`code`, `msg`, `details`),
//!   surfaced as [`Error::Plugin`].
//!
//! Plugins run in the network namespace of the calling thread (the "runtime's"
//! namespace: a worker's, for knetsim); `CNI_NETNS` names the container's.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha512};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The specification version this runtime implements and asks plugins for.
pub const SPEC_VERSION: &str = "1.0.0";
/// Versions the built-in plugins accept.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"];
/// Where Debian's containernetworking-plugins and upstream installs put the plugins.
pub const DEFAULT_PLUGIN_DIRS: &[&str] = &["/usr/lib/cni", "/opt/cni/bin"];
/// Where named network namespaces are (`ip netns`).
pub const NETNS_DIR: &str = "/run/netns";
/// The `kind` of libcni's cache files.
pub const CACHE_KIND: &str = "cniCacheV1";

/// The specification's well-known error codes.
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENVIRONMENT: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODING_FAILURE: u32 = 6;
    pub const INVALID_NETWORK_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// What the reference plugin library reports for errors without a code.
    pub const INTERNAL: u32 = 999;

    /// A short description of a well-known code.
    pub fn describe(code: u32) -> Option<&'static str> {
        Some(match code {
            INCOMPATIBLE_VERSION => "incompatible CNI version",
            UNSUPPORTED_FIELD => "unsupported field in network configuration",
            UNKNOWN_CONTAINER => "container unknown or does not exist",
            INVALID_ENVIRONMENT => "invalid environment variables",
            IO_FAILURE => "I/O failure",
            DECODING_FAILURE => "failed to decode content",
            INVALID_NETWORK_CONFIG => "invalid network config",
            TRY_AGAIN_LATER => "try again later",
            INTERNAL => "internal error",
            _ => return None,
        })
    }
}

/// A plugin's error output, as the specification defines it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PluginError {
    #[serde(default)]
    pub code: u32,
    #[serde(default)]
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl PluginError {
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        PluginError {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// The JSON object a plugin prints on stdout when it fails.
    pub fn to_json(&self, cni_version: &str) -> Value {
        let mut m = Map::new();
        m.insert("cniVersion".into(), cni_version.into());
        m.insert("code".into(), self.code.into());
        m.insert("msg".into(), self.msg.clone().into());
        if !self.details.is_empty() {
            m.insert("details".into(), self.details.clone().into());
        }
        Value::Object(m)
    }
}

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.msg.is_empty() { "(no message)" } else { &self.msg })?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        match code::describe(self.code) {
            Some(d) => write!(f, " (CNI error {}: {d})", self.code),
            None => write!(f, " (CNI error {})", self.code),
        }
    }
}

impl std::error::Error for PluginError {}

/// What can go wrong in the runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid network configuration {origin}: {detail}")]
    Config { origin: String, detail: String },
    #[error("no network configuration named \"{name}\" in {dir}")]
    NetworkNotFound { name: String, dir: String },
    #[error("no network configurations (*.conflist, *.conf, *.json) found in {dir}")]
    NoConfigs { dir: String },
    #[error("failed to find plugin \"{plugin}\" in path [{path}]{hint}")]
    PluginNotFound {
        plugin: String,
        path: String,
        /// An install hint for the standard plugins.
        hint: String,
    },
    #[error("plugin \"{plugin}\" failed ({command}): {error}")]
    Plugin {
        plugin: String,
        command: String,
        error: PluginError,
    },
    #[error("plugin \"{plugin}\" ({command}) printed an unusable result: {detail}")]
    BadResult {
        plugin: String,
        command: String,
        detail: String,
    },
    #[error("invalid {what}: {detail}")]
    Invalid { what: String, detail: String },
    #[error(
        "network \"{network}\" has no cached result for container {container_id} interface {ifname} (was it added?)"
    )]
    NoCachedResult {
        network: String,
        container_id: String,
        ifname: String,
    },
    #[error("the result's addresses {got:?} do not include the requested {expected}")]
    UnexpectedIp { expected: String, got: Vec<String> },
    #[error("configuration version \"{version}\" does not support the CHECK command")]
    CheckNotSupported { version: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    fn config(origin: &str, detail: impl Into<String>) -> Self {
        Error::Config {
            origin: origin.into(),
            detail: detail.into(),
        }
    }

    /// The specification's error object for this error (as a plugin that delegated
    /// and failed reports it).
    pub fn to_plugin_error(&self) -> PluginError {
        match self {
            Error::Plugin { error, .. } => error.clone(),
            Error::Config { .. } => PluginError::new(code::INVALID_NETWORK_CONFIG, self.to_string(), ""),
            Error::BadResult { .. } => PluginError::new(code::DECODING_FAILURE, self.to_string(), ""),
            Error::Io { .. } => PluginError::new(code::IO_FAILURE, self.to_string(), ""),
            _ => PluginError::new(code::INTERNAL, self.to_string(), ""),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `major.minor.patch` of a version string.
pub fn parse_version(v: &str) -> Option<(u32, u32, u32)> {
    let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
    let version = (parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(version)
}

fn version_at_least(v: &str, min: &str) -> Result<bool> {
    let parse = |s: &str| {
        parse_version(s).ok_or_else(|| Error::Invalid {
            what: "cniVersion".into(),
            detail: format!("\"{s}\" is not major.minor.patch"),
        })
    };
    Ok(parse(v)? >= parse(min)?)
}

// ---------------------------------------------------------------------------
// Network configurations

/// One plugin's configuration inside a network configuration list.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConf {
    /// `type`: the plugin binary's name.
    pub kind: String,
    /// The whole object, as written.
    pub conf: Map<String, Value>,
}

impl PluginConf {
    fn from_value(v: Value, origin: &str) -> Result<Self> {
        let Value::Object(conf) = v else {
            return Err(Error::config(origin, "a plugin configuration must be a JSON object"));
        };
        let kind = match conf.get("type") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::String(_)) | None => return Err(Error::config(origin, "missing 'type'")),
            Some(other) => return Err(Error::config(origin, format!("'type' must be a string, not {other}"))),
        };
        check_plugin_name(&kind).map_err(|detail| Error::config(origin, detail))?;
        match conf.get("capabilities") {
            None => {}
            Some(Value::Object(caps)) if caps.values().all(Value::is_boolean) => {}
            Some(other) => {
                return Err(Error::config(
                    origin,
                    format!("'capabilities' must map names to true/false, not {other}"),
                ))
            }
        }
        Ok(PluginConf { kind, conf })
    }

    /// Capabilities the plugin declares as supported.
    pub fn capabilities(&self) -> impl Iterator<Item = &str> {
        self.conf
            .get("capabilities")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter(|(_, on)| on.as_bool() == Some(true))
            .map(|(k, _)| k.as_str())
    }
}

/// A network configuration list (a single-plugin configuration is wrapped as a
/// one-plugin list, as libcni does).
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConf {
    pub name: String,
    pub cni_version: String,
    pub disable_check: bool,
    pub plugins: Vec<PluginConf>,
    /// The list's JSON (for a wrapped single configuration: the wrapping list); it goes
    /// into the result cache.
    pub bytes: Vec<u8>,
    /// Where it was loaded from (a file, or `<bytes>`).
    pub origin: String,
}

fn parse_object(bytes: &[u8], origin: &str) -> Result<Map<String, Value>> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(Error::config(
            origin,
            format!("expected a JSON object, found {}", json_kind(&other)),
        )),
        Err(e) => Err(Error::config(origin, format!("not valid JSON: {e}"))),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn string_field(m: &Map<String, Value>, key: &str, origin: &str) -> Result<Option<String>> {
    match m.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(Error::config(
            origin,
            format!("'{key}' must be a string, not {}", json_kind(other)),
        )),
    }
}

fn version_field(m: &Map<String, Value>, origin: &str) -> Result<String> {
    // Configurations from before cniVersion existed are 0.1.0.
    let v = string_field(m, "cniVersion", origin)?.unwrap_or_else(|| "0.1.0".into());
    if parse_version(&v).is_none() {
        return Err(Error::config(
            origin,
            format!("cniVersion \"{v}\" is not major.minor.patch"),
        ));
    }
    Ok(v)
}

impl NetworkConf {
    /// Parses a configuration list (`*.conflist`).
    pub fn from_list_bytes(bytes: &[u8], origin: &str) -> Result<Self> {
        let m = parse_object(bytes, origin)?;
        let name = string_field(&m, "name", origin)?.ok_or_else(|| Error::config(origin, "no 'name'"))?;
        check_network_name(&name).map_err(|d| Error::config(origin, d))?;
        let cni_version = version_field(&m, origin)?;
        let disable_check = match m.get("disableCheck") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => true,
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => false,
            Some(other) => return Err(Error::config(origin, format!("invalid 'disableCheck': {other}"))),
        };
        let plugins = match m.get("plugins") {
            Some(Value::Array(a)) if !a.is_empty() => a,
            Some(Value::Array(_)) => return Err(Error::config(origin, "no plugins in 'plugins'")),
            Some(other) => {
                return Err(Error::config(
                    origin,
                    format!("'plugins' must be an array, not {}", json_kind(other)),
                ))
            }
            None => {
                return Err(Error::config(
                    origin,
                    "no 'plugins' (a list needs them; a single plugin configuration belongs in a .conf file)",
                ))
            }
        };
        let plugins = plugins
            .iter()
            .enumerate()
            .map(|(i, p)| PluginConf::from_value(p.clone(), &format!("{origin} (plugins[{i}])")))
            .collect::<Result<Vec<_>>>()?;
        Ok(NetworkConf {
            name,
            cni_version,
            disable_check,
            plugins,
            bytes: bytes.to_vec(),
            origin: origin.into(),
        })
    }

    /// Parses a single plugin configuration (`*.conf`, `*.json`) and wraps it as a
    /// one-plugin list.
    pub fn from_plugin_bytes(bytes: &[u8], origin: &str) -> Result<Self> {
        let m = parse_object(bytes, origin)?;
        let name = string_field(&m, "name", origin)?.ok_or_else(|| Error::config(origin, "no 'name'"))?;
        let cni_version = version_field(&m, origin)?;
        // Validates `type` and the rest before wrapping.
        PluginConf::from_value(Value::Object(m.clone()), origin)?;
        let mut list = Map::new();
        list.insert("name".into(), name.into());
        list.insert("cniVersion".into(), cni_version.into());
        list.insert("plugins".into(), Value::Array(vec![Value::Object(m)]));
        let bytes = serde_json::to_vec(&Value::Object(list)).expect("a JSON value serializes");
        Self::from_list_bytes(&bytes, origin)
    }

    /// Finds the network `name` in `dir` as libcni does: `*.conflist` files in name
    /// order, then `*.conf` and `*.json` files in name order. A file that does not
    /// parse is an error (naming the file), as with libcni.
    pub fn load(dir: &Path, name: &str) -> Result<Self> {
        let files = conf_files(dir)?;
        let with_ext = |exts: &[&str]| -> Vec<&PathBuf> {
            files
                .iter()
                .filter(|f| {
                    f.extension()
                        .and_then(|e| e.to_str())
                        .is_some_and(|e| exts.contains(&e))
                })
                .collect()
        };
        let lists = with_ext(&["conflist"]);
        for f in &lists {
            let conf = Self::from_list_bytes(&read(f)?, &f.display().to_string())?;
            if conf.name == name {
                return Ok(conf);
            }
        }
        let singles = with_ext(&["conf", "json"]);
        if singles.is_empty() && lists.is_empty() {
            return Err(Error::NoConfigs {
                dir: dir.display().to_string(),
            });
        }
        for f in &singles {
            let conf = Self::from_plugin_bytes(&read(f)?, &f.display().to_string())?;
            if conf.name == name {
                return Ok(conf);
            }
        }
        Err(Error::NetworkNotFound {
            name: name.into(),
            dir: dir.display().to_string(),
        })
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))
}

/// Regular files of `dir`, sorted by name; a missing directory has none.
fn conf_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("reading {}", dir.display()), e)),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

// ---------------------------------------------------------------------------
// Names

fn check_id(what: &str, s: &str) -> std::result::Result<(), String> {
    let mut chars = s.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} \"{s}\" must start with a letter or digit and contain only letters, digits, '_', '.' and '-'"
        ))
    }
}

fn check_network_name(s: &str) -> std::result::Result<(), String> {
    check_id("network name", s)
}

/// A container id as the specification allows it (it also names cache and data files).
pub fn check_container_id(s: &str) -> std::result::Result<(), String> {
    check_id("container id", s)
}

/// An interface name Linux accepts.
pub fn check_ifname(s: &str) -> std::result::Result<(), String> {
    if s.is_empty()
        || s.len() > 15
        || s == "."
        || s == ".."
        || s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        Err(format!(
            "interface name \"{s}\" must be 1-15 characters without '/', ':' or spaces"
        ))
    } else {
        Ok(())
    }
}

fn check_plugin_name(s: &str) -> std::result::Result<(), String> {
    if s.is_empty() || s == "." || s == ".." || s.contains('/') || s.contains('\0') {
        Err(format!("plugin type \"{s}\" is not a plain file name"))
    } else {
        Ok(())
    }
}

/// `CNI_ARGS` as cnitool parses it: `K=V;K=V`, neither side empty.
pub fn parse_cni_args(s: &str) -> Result<Vec<(String, String)>> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    s.split(';')
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() && !v.is_empty() && !v.contains('=') => Ok((k.to_string(), v.to_string())),
            _ => Err(Error::Invalid {
                what: "CNI_ARGS".into(),
                detail: format!("pair \"{pair}\" is not KEY=VALUE"),
            }),
        })
        .collect()
}

/// The path of a network namespace given by name (`/run/netns/NAME`) or by path.
pub fn netns_path(name_or_path: &str) -> PathBuf {
    if name_or_path.contains('/') {
        let p = PathBuf::from(name_or_path);
        if p.is_absolute() {
            p
        } else {
            std::env::current_dir().map(|d| d.join(&p)).unwrap_or(p)
        }
    } else {
        Path::new(NETNS_DIR).join(name_or_path)
    }
}

/// cnitool's container id for a namespace path: `cnitool-` and the first 10 bytes of
/// its SHA-512 in hex, so knetsim and cnitool find each other's cached results.
pub fn default_container_id(netns: &Path) -> String {
    let digest = Sha512::digest(netns.as_os_str().as_encoded_bytes());
    let hex: String = digest[..10].iter().map(|b| format!("{b:02x}")).collect();
    format!("cnitool-{hex}")
}

// ---------------------------------------------------------------------------
// Runtime configuration and results

/// The arguments of one invocation, other than the network configuration.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RuntimeConf {
    pub container_id: String,
    /// The container's network namespace path (`CNI_NETNS`).
    pub netns: String,
    pub ifname: String,
    /// `CNI_ARGS`, in order.
    pub args: Vec<(String, String)>,
    /// Capability arguments; each plugin gets those it declares in `runtimeConfig`.
    pub capability_args: Map<String, Value>,
}

impl RuntimeConf {
    pub fn new(container_id: impl Into<String>, netns: impl Into<String>, ifname: impl Into<String>) -> Self {
        RuntimeConf {
            container_id: container_id.into(),
            netns: netns.into(),
            ifname: ifname.into(),
            ..Default::default()
        }
    }

    /// Adds a `CNI_ARGS` pair.
    pub fn arg(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.args.push((key.into(), value.into()));
        self
    }

    /// `CNI_ARGS` as passed to plugins.
    pub fn args_string(&self) -> String {
        self.args
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";")
    }

    fn validate(&self, network: &str) -> Result<()> {
        let invalid = |what: &str, detail: String| Error::Invalid {
            what: what.into(),
            detail,
        };
        check_container_id(&self.container_id).map_err(|d| invalid("container id", d))?;
        check_network_name(network).map_err(|d| invalid("network name", d))?;
        check_ifname(&self.ifname).map_err(|d| invalid("interface name", d))?;
        for (k, v) in &self.args {
            if k.is_empty() || k.contains(['=', ';']) || v.contains(';') {
                return Err(invalid("CNI_ARGS", format!("pair \"{k}={v}\"")));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IpConfig {
    /// CIDR form, e.g. `11.10.0.2/20`.
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

impl IpConfig {
    /// The address without its prefix length.
    pub fn ip(&self) -> &str {
        self.address.split('/').next().unwrap_or("")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Route {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// A plugin's success result, read in the 0.3.0+ shape (0.1.0 / 0.2.0 results are
/// converted); [`CniResult::json`] is the result exactly as the plugin printed it, and
/// is what the next plugin gets as `prevResult`.
#[derive(Debug, Clone, PartialEq)]
pub struct CniResult {
    pub cni_version: String,
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
    raw: Value,
}

fn field<T: serde::de::DeserializeOwned + Default>(m: &Map<String, Value>, key: &str) -> Result<T, String> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(T::default()),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| format!("'{key}': {e}")),
    }
}

impl CniResult {
    /// Parses a result; `default_version` applies when it carries no `cniVersion`.
    pub fn parse(bytes: &[u8], default_version: &str) -> Result<Self, String> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| {
            let text = String::from_utf8_lossy(bytes);
            let text = text.trim();
            if text.is_empty() {
                "nothing on stdout".to_string()
            } else {
                format!("not JSON ({e}): {:?}", text.chars().take(200).collect::<String>())
            }
        })?;
        Self::from_value(v, default_version)
    }

    pub fn from_value(v: Value, default_version: &str) -> Result<Self, String> {
        let Value::Object(m) = &v else {
            return Err(format!("expected a JSON object, found {}", json_kind(&v)));
        };
        let cni_version = match m.get("cniVersion") {
            None => default_version.to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => return Err(format!("'cniVersion' is not a string: {other}")),
        };
        let version = parse_version(&cni_version).ok_or_else(|| format!("cniVersion \"{cni_version}\""))?;
        let mut result = CniResult {
            cni_version,
            interfaces: Vec::new(),
            ips: Vec::new(),
            routes: Vec::new(),
            dns: field(m, "dns")?,
            raw: v.clone(),
        };
        if version >= (0, 3, 0) {
            result.interfaces = field(m, "interfaces")?;
            result.ips = field(m, "ips")?;
            result.routes = field(m, "routes")?;
        } else {
            #[derive(Deserialize, Default)]
            struct Legacy {
                ip: String,
                #[serde(default)]
                gateway: Option<String>,
                #[serde(default)]
                routes: Vec<Route>,
            }
            for key in ["ip4", "ip6"] {
                if let Some(l) = field::<Option<Legacy>>(m, key)? {
                    result.ips.push(IpConfig {
                        address: l.ip,
                        gateway: l.gateway,
                        interface: None,
                    });
                    result.routes.extend(l.routes);
                }
            }
        }
        for ip in &result.ips {
            if !ip.address.contains('/') {
                return Err(format!("IP address \"{}\" is not in CIDR form", ip.address));
            }
        }
        Ok(result)
    }

    /// The result as the plugin printed it.
    pub fn json(&self) -> &Value {
        &self.raw
    }

    /// Every address, CIDR form.
    pub fn addresses(&self) -> Vec<String> {
        self.ips.iter().map(|i| i.address.clone()).collect()
    }

    /// Whether one of the addresses is `ip` (no prefix length).
    pub fn has_ip(&self, ip: &str) -> bool {
        self.ips.iter().any(|i| i.ip() == ip)
    }
}

/// A plugin's answer to VERSION.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    pub cni_version: String,
    #[serde(default)]
    pub supported_versions: Vec<String>,
}

// ---------------------------------------------------------------------------
// Executing plugins

/// The `CNI_*` environment of one plugin invocation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PluginEnv {
    pub command: String,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: String,
    /// `CNI_PATH`: plugin directories separated by `:`.
    pub path: String,
}

impl PluginEnv {
    /// The variables of this process (a plugin reads its invocation from them).
    pub fn from_process_env() -> Self {
        let var = |k: &str| std::env::var(k).unwrap_or_default();
        PluginEnv {
            command: var("CNI_COMMAND"),
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            ifname: var("CNI_IFNAME"),
            args: var("CNI_ARGS"),
            path: var("CNI_PATH"),
        }
    }

    pub fn vars(&self) -> [(&'static str, &str); 6] {
        [
            ("CNI_COMMAND", &self.command),
            ("CNI_CONTAINERID", &self.container_id),
            ("CNI_NETNS", &self.netns),
            ("CNI_IFNAME", &self.ifname),
            ("CNI_ARGS", &self.args),
            ("CNI_PATH", &self.path),
        ]
    }

    /// The same invocation with another command (how a meta plugin delegates).
    pub fn with_command(&self, command: &str) -> Self {
        PluginEnv {
            command: command.into(),
            ..self.clone()
        }
    }

    pub fn plugin_dirs(&self) -> Vec<PathBuf> {
        split_path(&self.path)
    }
}

/// A `:`-separated directory list.
pub fn split_path(path: &str) -> Vec<PathBuf> {
    path.split(':').filter(|p| !p.is_empty()).map(PathBuf::from).collect()
}

fn join_path(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

/// How plugins that knetsim carries itself ([`super::BUILTIN_PLUGINS`]) run when no
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
    dirs.iter().map(|d| d.join(plugin)).find(|p| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    })
}

fn locate(plugin: &str, dirs: &[PathBuf], builtins: &Builtins) -> Result<Located> {
    if let Some(p) = find_in_path(plugin, dirs) {
        return Ok(Located::Binary(p));
    }
    if *builtins != Builtins::Disabled {
        if let Some(name) = super::BUILTIN_PLUGINS.iter().find(|b| **b == plugin) {
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
        super::flannel_plugin::NAME => super::flannel_plugin::run(env, stdin, builtins),
        other => Err(PluginError::new(
            code::INTERNAL,
            format!("no built-in plugin {other}"),
            "",
        )),
    }
}

// ---------------------------------------------------------------------------
// The runtime

/// libcni's `CNIConfig`: where plugins are and where results are cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniRuntime {
    pub plugin_dirs: Vec<PathBuf>,
    /// Results go to `<cache_dir>/results/`.
    pub cache_dir: PathBuf,
    pub builtins: Builtins,
}

impl CniRuntime {
    /// A runtime with [`Builtins::detect`].
    pub fn new(plugin_dirs: Vec<PathBuf>, cache_dir: impl Into<PathBuf>) -> Self {
        CniRuntime {
            plugin_dirs,
            cache_dir: cache_dir.into(),
            builtins: Builtins::detect(),
        }
    }

    pub fn with_builtins(mut self, builtins: Builtins) -> Self {
        self.builtins = builtins;
        self
    }

    fn env(&self, command: &str, rt: &RuntimeConf) -> PluginEnv {
        PluginEnv {
            command: command.into(),
            container_id: rt.container_id.clone(),
            netns: rt.netns.clone(),
            ifname: rt.ifname.clone(),
            args: rt.args_string(),
            path: join_path(&self.plugin_dirs),
        }
    }

    /// The plugin's stdin: its configuration with the list's `name` and `cniVersion`,
    /// `prevResult` when there is one, and the capability arguments it declares as
    /// `runtimeConfig`.
    pub fn plugin_stdin(net: &NetworkConf, plugin: &PluginConf, prev: Option<&Value>, rt: &RuntimeConf) -> Vec<u8> {
        let mut conf = plugin.conf.clone();
        conf.insert("name".into(), net.name.clone().into());
        conf.insert("cniVersion".into(), net.cni_version.clone().into());
        if let Some(prev) = prev {
            conf.insert("prevResult".into(), prev.clone());
        }
        let runtime_config: Map<String, Value> = plugin
            .capabilities()
            .filter_map(|c| rt.capability_args.get(c).map(|v| (c.to_string(), v.clone())))
            .collect();
        if !runtime_config.is_empty() {
            conf.insert("runtimeConfig".into(), Value::Object(runtime_config));
        }
        serde_json::to_vec(&Value::Object(conf)).expect("a JSON value serializes")
    }

    fn invoke(&self, plugin: &PluginConf, command: &str, rt: &RuntimeConf, stdin: &[u8]) -> Result<Vec<u8>> {
        exec_plugin(
            &plugin.kind,
            &self.plugin_dirs,
            &self.builtins,
            &self.env(command, rt),
            stdin,
        )
    }

    /// ADD: each plugin in order, each given the previous one's result; the last
    /// result is cached and returned.
    pub fn add(&self, net: &NetworkConf, rt: &RuntimeConf) -> Result<CniResult> {
        rt.validate(&net.name)?;
        let mut prev: Option<CniResult> = None;
        for plugin in &net.plugins {
            let stdin = Self::plugin_stdin(net, plugin, prev.as_ref().map(CniResult::json), rt);
            let out = self.invoke(plugin, "ADD", rt, &stdin)?;
            let result = CniResult::parse(&out, &net.cni_version).map_err(|detail| Error::BadResult {
                plugin: plugin.kind.clone(),
                command: "ADD".into(),
                detail,
            })?;
            prev = Some(result);
        }
        let result = prev.ok_or_else(|| Error::config(&net.origin, "no plugins"))?;
        self.write_cache(net, rt, &result)?;
        Ok(result)
    }

    /// DEL: each plugin in reverse order, with the cached result as `prevResult`
    /// (configurations 0.4.0 and later); then the cache entry is removed. Deleting
    /// what is not there is not an error (the plugins see to that).
    pub fn del(&self, net: &NetworkConf, rt: &RuntimeConf) -> Result<()> {
        rt.validate(&net.name)?;
        let cached = if version_at_least(&net.cni_version, "0.4.0")? {
            // An unreadable cache entry is dropped, as libcni does.
            self.cached_result(net, rt).ok().flatten()
        } else {
            None
        };
        for plugin in net.plugins.iter().rev() {
            let stdin = Self::plugin_stdin(net, plugin, cached.as_ref().map(CniResult::json), rt);
            self.invoke(plugin, "DEL", rt, &stdin)?;
        }
        self.remove_cache(net, rt)
    }

    /// CHECK: each plugin in order with the cached result as `prevResult`; needs a
    /// configuration of 0.4.0 or later and a cached result.
    pub fn check(&self, net: &NetworkConf, rt: &RuntimeConf) -> Result<()> {
        rt.validate(&net.name)?;
        if !version_at_least(&net.cni_version, "0.4.0")? {
            return Err(Error::CheckNotSupported {
                version: net.cni_version.clone(),
            });
        }
        if net.disable_check {
            return Ok(());
        }
        let cached = self.cached_result(net, rt)?.ok_or_else(|| Error::NoCachedResult {
            network: net.name.clone(),
            container_id: rt.container_id.clone(),
            ifname: rt.ifname.clone(),
        })?;
        for plugin in &net.plugins {
            let stdin = Self::plugin_stdin(net, plugin, Some(cached.json()), rt);
            self.invoke(plugin, "CHECK", rt, &stdin)?;
        }
        Ok(())
    }

    /// VERSION of one plugin.
    pub fn version(&self, plugin: &str) -> Result<VersionInfo> {
        let env = PluginEnv {
            command: "VERSION".into(),
            path: join_path(&self.plugin_dirs),
            ..Default::default()
        };
        let stdin = format!("{{\"cniVersion\":\"{SPEC_VERSION}\"}}");
        let out = exec_plugin(plugin, &self.plugin_dirs, &self.builtins, &env, stdin.as_bytes())?;
        let bad = |detail: String| Error::BadResult {
            plugin: plugin.into(),
            command: "VERSION".into(),
            detail,
        };
        let mut info: VersionInfo = serde_json::from_slice(&out).map_err(|e| {
            bad(format!(
                "{e}: {:?}",
                String::from_utf8_lossy(&out).chars().take(200).collect::<String>()
            ))
        })?;
        if info.supported_versions.is_empty() {
            info.supported_versions.push(info.cni_version.clone());
        }
        Ok(info)
    }

    /// `<cache_dir>/results/<network>-<container id>-<ifname>`.
    pub fn cache_file(&self, network: &str, rt: &RuntimeConf) -> PathBuf {
        self.cache_dir
            .join("results")
            .join(format!("{network}-{}-{}", rt.container_id, rt.ifname))
    }

    /// The cached result of an earlier ADD, if there is one.
    pub fn cached_result(&self, net: &NetworkConf, rt: &RuntimeConf) -> Result<Option<CniResult>> {
        rt.validate(&net.name)?;
        let path = self.cache_file(&net.name, rt);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        };
        let bad = |detail: String| Error::Invalid {
            what: format!("cached result {}", path.display()),
            detail,
        };
        let entry: Value = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        if entry.get("kind").and_then(Value::as_str) != Some(CACHE_KIND) {
            return Err(bad(format!("kind is not {CACHE_KIND}")));
        }
        match entry.get("result") {
            None | Some(Value::Null) => Ok(None),
            Some(r) => CniResult::from_value(r.clone(), &net.cni_version)
                .map(Some)
                .map_err(bad),
        }
    }

    /// The cached attachment of namespace `netns` (a path, compared after resolving
    /// symlinks) to `network` as `ifname`, if there is exactly one: its container id
    /// and namespace path as they were given to ADD. This is how `knetsim cni del`
    /// finds a pod that `up` added under its own container id.
    pub fn cached_attachment(&self, network: &str, netns: &Path, ifname: &str) -> Option<(String, String)> {
        let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let wanted = canon(netns);
        let mut found: Vec<(String, String)> = std::fs::read_dir(self.cache_dir.join("results"))
            .ok()?
            .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
            .filter_map(|b| serde_json::from_slice::<Value>(&b).ok())
            .filter(|e| {
                e.get("kind").and_then(Value::as_str) == Some(CACHE_KIND)
                    && e.get("networkName").and_then(Value::as_str) == Some(network)
                    && e.get("ifName").and_then(Value::as_str) == Some(ifname)
            })
            .filter_map(|e| {
                let id = e.get("containerId")?.as_str()?.to_string();
                let ns = e.get("netns")?.as_str()?.to_string();
                (canon(Path::new(&ns)) == wanted).then_some((id, ns))
            })
            .collect();
        found.sort();
        found.dedup();
        (found.len() == 1).then(|| found.remove(0))
    }

    fn write_cache(&self, net: &NetworkConf, rt: &RuntimeConf, result: &CniResult) -> Result<()> {
        let mut entry = Map::new();
        entry.insert("kind".into(), CACHE_KIND.into());
        entry.insert("containerId".into(), rt.container_id.clone().into());
        // libcni stores the configuration as Go's JSON encoding of bytes: base64.
        entry.insert("config".into(), base64(&net.bytes).into());
        entry.insert("ifName".into(), rt.ifname.clone().into());
        entry.insert("networkName".into(), net.name.clone().into());
        if !rt.netns.is_empty() {
            entry.insert("netns".into(), rt.netns.clone().into());
        }
        if !rt.args.is_empty() {
            let args: Vec<Value> = rt.args.iter().map(|(k, v)| serde_json::json!([k, v])).collect();
            entry.insert("cniArgs".into(), Value::Array(args));
        }
        if !rt.capability_args.is_empty() {
            entry.insert("capabilityArgs".into(), Value::Object(rt.capability_args.clone()));
        }
        entry.insert("result".into(), result.json().clone());
        let path = self.cache_file(&net.name, rt);
        let dir = path.parent().expect("cache files are in results/");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let bytes = serde_json::to_vec(&Value::Object(entry)).expect("a JSON value serializes");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(format!("writing {}", path.display()), e)
        })
    }

    fn remove_cache(&self, net: &NetworkConf, rt: &RuntimeConf) -> Result<()> {
        let path = self.cache_file(&net.name, rt);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("removing {}", path.display()), e)),
        }
    }
}

/// Standard base64 with padding (Go's encoding of `[]byte` in JSON).
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("1.0.0"), Some((1, 0, 0)));
        assert_eq!(parse_version("0.3.1"), Some((0, 3, 1)));
        assert_eq!(parse_version("1.0"), None);
        assert_eq!(parse_version("1.0.0.0"), None);
        assert_eq!(parse_version("x"), None);
        assert!(version_at_least("1.0.0", "0.4.0").unwrap());
        assert!(!version_at_least("0.3.1", "0.4.0").unwrap());
    }

    #[test]
    fn base64_matches_go() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"{\"a\":1}"), "eyJhIjoxfQ==");
    }

    #[test]
    fn cni_args() {
        assert_eq!(
            parse_cni_args("IgnoreUnknown=1;IP=11.10.0.2").unwrap(),
            vec![("IgnoreUnknown".into(), "1".into()), ("IP".into(), "11.10.0.2".into())]
        );
        assert!(parse_cni_args("").unwrap().is_empty());
        for bad in ["IP", "IP=", "=1", "A=1;;B=2", "A=1=2"] {
            assert!(parse_cni_args(bad).is_err(), "{bad}");
        }
        let rt = RuntimeConf::new("c", "/run/netns/x", "eth0")
            .arg("IgnoreUnknown", "1")
            .arg("IP", "1.2.3.4");
        assert_eq!(rt.args_string(), "IgnoreUnknown=1;IP=1.2.3.4");
    }

    #[test]
    fn names_and_paths() {
        assert!(check_container_id("C0-c1").is_ok());
        assert!(check_container_id("../x").is_err());
        assert!(check_container_id("").is_err());
        assert!(check_ifname("eth0").is_ok());
        assert!(check_ifname("a-very-long-interface").is_err());
        assert!(check_ifname("a/b").is_err());
        assert_eq!(netns_path("k0_c1"), PathBuf::from("/run/netns/k0_c1"));
        assert_eq!(netns_path("/var/run/netns/x"), PathBuf::from("/var/run/netns/x"));
        let id = default_container_id(Path::new("/var/run/netns/testing"));
        assert!(id.starts_with("cnitool-") && id.len() == 28, "{id}");
    }

    #[test]
    fn loads_a_single_conf_wrapped_as_a_list() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "flannel_conf.json",
            r#"{"cniVersion":"1.0.0","name":"C0w1","type":"flannel","delegate":{"isDefaultGateway":true}}"#,
        );
        write(dir.path(), "flannel-subnet.env", "FLANNEL_NETWORK=11.0.0.0/8\n");
        let net = NetworkConf::load(dir.path(), "C0w1").unwrap();
        assert_eq!(net.name, "C0w1");
        assert_eq!(net.cni_version, "1.0.0");
        assert_eq!(net.plugins.len(), 1);
        assert_eq!(net.plugins[0].kind, "flannel");
        assert_eq!(net.plugins[0].conf["delegate"]["isDefaultGateway"], true);
        let list: Value = serde_json::from_slice(&net.bytes).unwrap();
        assert_eq!(list["plugins"][0]["type"], "flannel");
        assert_eq!(list["name"], "C0w1");

        assert!(matches!(
            NetworkConf::load(dir.path(), "C0w2"),
            Err(Error::NetworkNotFound { .. })
        ));
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            NetworkConf::load(empty.path(), "x"),
            Err(Error::NoConfigs { .. })
        ));
        assert!(matches!(
            NetworkConf::load(&empty.path().join("missing"), "x"),
            Err(Error::NoConfigs { .. })
        ));
    }

    #[test]
    fn conflists_come_first_and_files_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "10-net.conf",
            r#"{"cniVersion":"0.4.0","name":"net","type":"bridge"}"#,
        );
        write(
            dir.path(),
            "20-net.conflist",
            r#"{"cniVersion":"1.0.0","name":"net","disableCheck":"true","plugins":[{"type":"bridge"},{"type":"portmap","capabilities":{"portMappings":true,"x":false}}]}"#,
        );
        write(
            dir.path(),
            "05-other.conflist",
            r#"{"cniVersion":"1.0.0","name":"other","plugins":[{"type":"ptp"}]}"#,
        );
        let net = NetworkConf::load(dir.path(), "net").unwrap();
        assert_eq!(net.cni_version, "1.0.0");
        assert!(net.disable_check);
        assert_eq!(
            net.plugins.iter().map(|p| p.kind.as_str()).collect::<Vec<_>>(),
            ["bridge", "portmap"]
        );
        assert_eq!(net.plugins[1].capabilities().collect::<Vec<_>>(), ["portMappings"]);
        assert!(net.origin.ends_with("20-net.conflist"));
    }

    #[test]
    fn malformed_confs_are_clear_errors() {
        let cases = [
            ("bad.conf", r#"{"name": "x", "type": "#, "not valid JSON"),
            ("bad.conf", r#"{"name": "x"}"#, "missing 'type'"),
            ("bad.conf", r#"{"type": "bridge"}"#, "no 'name'"),
            ("bad.conf", r#"["x"]"#, "expected a JSON object, found an array"),
            (
                "bad.conf",
                r#"{"name":"x","type":"../bin/sh"}"#,
                "not a plain file name",
            ),
            (
                "bad.conf",
                r#"{"name":"x","type":"bridge","cniVersion":"1"}"#,
                "major.minor.patch",
            ),
            ("bad.conflist", r#"{"name":"x","plugins":[]}"#, "no plugins"),
            ("bad.conflist", r#"{"name":"x","plugins":[{"type":7}]}"#, "plugins[0]"),
            ("bad.conflist", r#"{"name":"x","type":"bridge"}"#, "no 'plugins'"),
        ];
        for (file, text, expected) in cases {
            let dir = tempfile::tempdir().unwrap();
            write(dir.path(), file, text);
            let err = NetworkConf::load(dir.path(), "x").unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, Error::Config { .. }), "{text}: {msg}");
            assert!(msg.contains(expected), "{text}: {msg}");
            assert!(msg.contains(file), "names the file: {msg}");
        }
    }

    #[test]
    fn plugin_stdin_injects_name_version_prev_result_and_capabilities() {
        let net = NetworkConf::from_list_bytes(
            br#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"a","name":"ignored"},{"type":"b","capabilities":{"portMappings":true}}]}"#,
            "<bytes>",
        )
        .unwrap();
        let mut rt = RuntimeConf::new("c", "/run/netns/x", "eth0");
        rt.capability_args
            .insert("portMappings".into(), serde_json::json!([{"hostPort": 80}]));
        rt.capability_args.insert("bandwidth".into(), serde_json::json!({}));
        let first: Value = serde_json::from_slice(&CniRuntime::plugin_stdin(&net, &net.plugins[0], None, &rt)).unwrap();
        assert_eq!(first["name"], "n");
        assert_eq!(first["cniVersion"], "1.0.0");
        assert!(first.get("prevResult").is_none());
        assert!(first.get("runtimeConfig").is_none());
        let prev = serde_json::json!({"cniVersion": "1.0.0", "ips": []});
        let second: Value =
            serde_json::from_slice(&CniRuntime::plugin_stdin(&net, &net.plugins[1], Some(&prev), &rt)).unwrap();
        assert_eq!(second["prevResult"], prev);
        assert_eq!(
            second["runtimeConfig"],
            serde_json::json!({"portMappings": [{"hostPort": 80}]})
        );
    }

    #[test]
    fn parses_results_of_every_version() {
        let r = CniResult::parse(
            br#"{"cniVersion":"1.0.0","interfaces":[{"name":"cni0","mac":"aa:bb:cc:dd:ee:ff"},{"name":"eth0","mac":"11:22:33:44:55:66","sandbox":"/run/netns/x"}],
                "ips":[{"address":"11.10.16.10/20","gateway":"11.10.16.1","interface":1}],
                "routes":[{"dst":"11.0.0.0/8"},{"dst":"0.0.0.0/0","gw":"11.10.16.1"}],"dns":{}}"#,
            "1.0.0",
        )
        .unwrap();
        assert_eq!(r.cni_version, "1.0.0");
        assert_eq!(r.addresses(), ["11.10.16.10/20"]);
        assert!(r.has_ip("11.10.16.10"));
        assert!(!r.has_ip("11.10.16.1"));
        assert_eq!(r.ips[0].gateway.as_deref(), Some("11.10.16.1"));
        assert_eq!(r.interfaces[1].sandbox, "/run/netns/x");
        assert_eq!(r.routes[1].gw.as_deref(), Some("11.10.16.1"));

        let old = CniResult::parse(
            br#"{"cniVersion":"0.3.1","ips":[{"version":"4","address":"10.0.0.2/24","gateway":"10.0.0.1"}]}"#,
            "1.0.0",
        )
        .unwrap();
        assert_eq!(old.addresses(), ["10.0.0.2/24"]);

        let legacy = CniResult::parse(
            br#"{"cniVersion":"0.2.0","ip4":{"ip":"10.1.0.5/16","gateway":"10.1.0.1","routes":[{"dst":"0.0.0.0/0"}]},"dns":{"nameservers":["8.8.8.8"]}}"#,
            "1.0.0",
        )
        .unwrap();
        assert_eq!(legacy.addresses(), ["10.1.0.5/16"]);
        assert_eq!(legacy.routes[0].dst, "0.0.0.0/0");
        assert_eq!(legacy.dns.nameservers, ["8.8.8.8"]);

        assert!(CniResult::parse(b"", "1.0.0")
            .unwrap_err()
            .contains("nothing on stdout"));
        assert!(CniResult::parse(b"oops", "1.0.0").unwrap_err().contains("not JSON"));
        assert!(CniResult::parse(br#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2"}]}"#, "1.0.0").is_err());
        assert!(CniResult::parse(br#"{"cniVersion":"1.0.0","ips":{}}"#, "1.0.0").is_err());
    }

    #[test]
    fn plugin_errors_display_code_and_details() {
        let e: PluginError = serde_json::from_str(
            r#"{"cniVersion":"1.0.0","code":7,"msg":"Invalid Configuration","details":"too small"}"#,
        )
        .unwrap();
        assert_eq!(
            e.to_string(),
            "Invalid Configuration: too small (CNI error 7: invalid network config)"
        );
        assert_eq!(e.to_json("1.0.0")["code"], 7);
        assert_eq!(PluginError::new(123, "x", "").to_string(), "x (CNI error 123)");
    }

    /// A fake plugin: a shell script that records its stdin and environment and prints
    /// a result naming itself (or an error when its configuration says `fail`).
    fn fake_plugin(dir: &Path, name: &str, log: &Path) {
        let script = format!(
            r#"#!/bin/sh
input=$(cat)
printf '%s\n' "$CNI_COMMAND $input" >> {log}
env | grep '^CNI_' | sort > {log}.{name}.env
case "$input" in
  *'"fail":true'*) printf '{{"cniVersion":"1.0.0","code":7,"msg":"refusing","details":"%s"}}' "$CNI_COMMAND"; exit 1;;
  *'"crash":true'*) echo "boom" >&2; exit 2;;
esac
if [ "$CNI_COMMAND" = VERSION ]; then echo '{{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}}'; exit 0; fi
if [ "$CNI_COMMAND" = ADD ]; then
  echo '{{"cniVersion":"1.0.0","interfaces":[{{"name":"{name}"}}],"ips":[{{"address":"10.9.0.2/24"}}]}}'
fi
"#,
            log = log.display()
        );
        let path = dir.join(name);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn runs_a_chain_with_prev_results_and_a_cache() {
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let log = tmp.path().join("log");
        fake_plugin(&bin, "one", &log);
        fake_plugin(&bin, "two", &log);
        let rt_ = CniRuntime::new(vec![tmp.path().join("nothing"), bin.clone()], tmp.path().join("cache"))
            .with_builtins(Builtins::Disabled);
        let net = NetworkConf::from_list_bytes(
            br#"{"cniVersion":"1.0.0","name":"chain","plugins":[{"type":"one"},{"type":"two"}]}"#,
            "<bytes>",
        )
        .unwrap();
        let rt = RuntimeConf::new("ctr1", "/run/netns/x", "eth0").arg("IP", "10.9.0.2");

        let result = runtime_add(&rt_, &net, &rt);
        assert_eq!(result.interfaces[0].name, "two", "the last plugin's result");
        let lines = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = lines.lines().collect();
        assert!(
            lines[0].starts_with("ADD ") && !lines[0].contains("prevResult"),
            "{}",
            lines[0]
        );
        assert!(lines[1].contains(r#""prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"one"}]"#));
        let env = std::fs::read_to_string(format!("{}.two.env", log.display())).unwrap();
        for want in [
            "CNI_COMMAND=ADD",
            "CNI_CONTAINERID=ctr1",
            "CNI_NETNS=/run/netns/x",
            "CNI_IFNAME=eth0",
            "CNI_ARGS=IP=10.9.0.2",
        ] {
            assert!(env.lines().any(|l| l == want), "{want} in {env}");
        }
        assert!(env.contains(&format!(
            "CNI_PATH={}:{}",
            tmp.path().join("nothing").display(),
            bin.display()
        )));

        // The cache, as libcni writes it.
        let cache = rt_.cache_file("chain", &rt);
        assert!(cache.ends_with("results/chain-ctr1-eth0"));
        let entry: Value = serde_json::from_slice(&std::fs::read(&cache).unwrap()).unwrap();
        assert_eq!(entry["kind"], CACHE_KIND);
        assert_eq!(entry["containerId"], "ctr1");
        assert_eq!(entry["networkName"], "chain");
        assert_eq!(entry["cniArgs"], serde_json::json!([["IP", "10.9.0.2"]]));
        assert_eq!(entry["result"]["interfaces"][0]["name"], "two");
        assert_eq!(entry["config"], base64(&net.bytes));
        assert_eq!(std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(rt_.cached_result(&net, &rt).unwrap().unwrap(), result);
        assert_eq!(
            rt_.cached_attachment("chain", Path::new("/run/netns/x"), "eth0"),
            Some(("ctr1".into(), "/run/netns/x".into()))
        );
        assert_eq!(rt_.cached_attachment("chain", Path::new("/run/netns/y"), "eth0"), None);
        assert_eq!(rt_.cached_attachment("chain", Path::new("/run/netns/x"), "eth1"), None);

        // CHECK gets the cached result; DEL runs in reverse with it and drops the cache.
        std::fs::write(&log, "").unwrap();
        rt_.check(&net, &rt).unwrap();
        rt_.del(&net, &rt).unwrap();
        let lines = std::fs::read_to_string(&log).unwrap();
        let cmds: Vec<&str> = lines.lines().map(|l| l.split(' ').next().unwrap()).collect();
        assert_eq!(cmds, ["CHECK", "CHECK", "DEL", "DEL"]);
        assert!(lines
            .lines()
            .all(|l| l.contains(r#""prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"two"}]"#)));
        let env = std::fs::read_to_string(format!("{}.one.env", log.display())).unwrap();
        assert!(env.contains("CNI_COMMAND=DEL"), "one ran last: {env}");
        assert!(!cache.exists());
        assert!(rt_.cached_result(&net, &rt).unwrap().is_none());
        assert_eq!(rt_.cached_attachment("chain", Path::new("/run/netns/x"), "eth0"), None);
        // CHECK without a cached result, and DEL without one (no prevResult then).
        assert!(matches!(rt_.check(&net, &rt), Err(Error::NoCachedResult { .. })));
        std::fs::write(&log, "").unwrap();
        rt_.del(&net, &rt).unwrap();
        assert!(!std::fs::read_to_string(&log).unwrap().contains("prevResult"));

        assert_eq!(
            rt_.version("one").unwrap(),
            VersionInfo {
                cni_version: "1.0.0".into(),
                supported_versions: vec!["0.4.0".into(), "1.0.0".into()]
            }
        );
    }

    fn runtime_add(rt_: &CniRuntime, net: &NetworkConf, rt: &RuntimeConf) -> CniResult {
        rt_.add(net, rt).unwrap_or_else(|e| panic!("add: {e}"))
    }

    #[test]
    fn reports_plugin_failures() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("log");
        fake_plugin(tmp.path(), "p", &log);
        let runtime = CniRuntime::new(vec![tmp.path().to_path_buf()], tmp.path().join("cache"));
        let rt = RuntimeConf::new("c", "/run/netns/x", "eth0");
        let net = |plugin: &str| {
            NetworkConf::from_plugin_bytes(
                format!(r#"{{"cniVersion":"1.0.0","name":"n","type":"p",{plugin}}}"#).as_bytes(),
                "<bytes>",
            )
            .unwrap()
        };
        let err = runtime.add(&net(r#""fail":true"#), &rt).unwrap_err();
        match &err {
            Error::Plugin { plugin, command, error } => {
                assert_eq!((plugin.as_str(), command.as_str()), ("p", "ADD"));
                assert_eq!(error, &PluginError::new(7, "refusing", "ADD"));
            }
            other => panic!("{other}"),
        }
        assert_eq!(
            err.to_string(),
            "plugin \"p\" failed (ADD): refusing: ADD (CNI error 7: invalid network config)"
        );
        assert!(
            !runtime.cache_file("n", &rt).exists(),
            "no cache entry for a failed ADD"
        );
        let err = runtime.add(&net(r#""crash":true"#), &rt).unwrap_err().to_string();
        assert!(err.contains("boom") && err.contains("exit status: 2"), "{err}");

        let missing =
            NetworkConf::from_plugin_bytes(br#"{"cniVersion":"1.0.0","name":"n","type":"bridge"}"#, "<bytes>").unwrap();
        let err = runtime.add(&missing, &rt).unwrap_err().to_string();
        assert!(
            err.contains("failed to find plugin \"bridge\"") && err.contains("containernetworking-plugins"),
            "{err}"
        );
        let old =
            NetworkConf::from_plugin_bytes(br#"{"cniVersion":"0.3.1","name":"n","type":"p"}"#, "<bytes>").unwrap();
        assert!(matches!(runtime.check(&old, &rt), Err(Error::CheckNotSupported { .. })));
        let bad_id = RuntimeConf::new("../etc", "/run/netns/x", "eth0");
        assert!(matches!(
            runtime.add(&net("\"x\":1"), &bad_id),
            Err(Error::Invalid { .. })
        ));
    }
}
