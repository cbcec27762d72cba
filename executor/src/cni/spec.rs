//! What the CNI specification 1.0 defines and every part of the runtime and the
//! built-in plugins shares: the versions, the error codes and error object
//! ([`PluginError`]), the runtime's [`Error`], the names the specification allows,
//! and the `CNI_*` environment of an invocation ([`PluginEnv`]).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::PathBuf;

/// The specification version this runtime implements and asks plugins for.
pub const SPEC_VERSION: &str = "1.0.0";
/// Versions the built-in plugins accept.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"];

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
    pub(super) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(super) fn config(origin: &str, detail: impl Into<String>) -> Self {
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

pub(super) fn version_at_least(v: &str, min: &str) -> Result<bool> {
    let parse = |s: &str| {
        parse_version(s).ok_or_else(|| Error::Invalid {
            what: "cniVersion".into(),
            detail: format!("\"{s}\" is not major.minor.patch"),
        })
    };
    Ok(parse(v)? >= parse(min)?)
}

pub(super) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
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

pub(super) fn check_network_name(s: &str) -> std::result::Result<(), String> {
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

pub(super) fn check_plugin_name(s: &str) -> std::result::Result<(), String> {
    if s.is_empty() || s == "." || s == ".." || s.contains('/') || s.contains('\0') {
        Err(format!("plugin type \"{s}\" is not a plain file name"))
    } else {
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The environment of an invocation

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

pub(super) fn join_path(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn names() {
        assert!(check_container_id("C0-c1").is_ok());
        assert!(check_container_id("../x").is_err());
        assert!(check_container_id("").is_err());
        assert!(check_ifname("eth0").is_ok());
        assert!(check_ifname("a-very-long-interface").is_err());
        assert!(check_ifname("a/b").is_err());
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
}
