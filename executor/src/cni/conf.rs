//! Network configurations and the arguments of one invocation.
//!
//! - [`NetworkConf::load`] finds a network configuration by name in a directory:
//!   `*.conflist` files first, then single-plugin `*.conf` / `*.json` files, which are
//!   wrapped as a one-plugin list.
//! - [`RuntimeConf`]: the container id, its namespace, the interface name, `CNI_ARGS`
//!   and capability arguments of one ADD / DEL / CHECK.

use super::spec::{check_container_id, check_ifname, check_network_name, check_plugin_name, json_kind, parse_version};
use super::spec::{Error, Result};
use serde_json::{Map, Value};
use sha2::{Digest, Sha512};
use std::path::{Path, PathBuf};

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
        knetsim_compiler::host::HostLayout::system().netns(name_or_path)
    }
}

/// cnitool's container id for a namespace path: `cnitool-` and the first 10 bytes of
/// its SHA-512 in hex, so knetsim and cnitool find each other's cached results.
pub fn default_container_id(netns: &Path) -> String {
    let digest = Sha512::digest(netns.as_os_str().as_encoded_bytes());
    let hex: String = digest[..10].iter().map(|b| format!("{b:02x}")).collect();
    format!("cnitool-{hex}")
}

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

    pub(super) fn validate(&self, network: &str) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
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
    fn namespace_paths_and_container_ids() {
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
}
