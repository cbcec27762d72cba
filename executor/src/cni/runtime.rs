//! A CNI runtime per the CNI specification 1.0 (what libcni's `CNIConfig` and cnitool
//! do): [`CniRuntime`] runs ADD (plugins in order, each given the previous plugin's
//! result as `prevResult`), DEL (in reverse order, with the cached result), CHECK (in
//! order, with the cached result) and VERSION, by executing each plugin
//! ([`super::exec`]) with the `CNI_*` environment and the plugin's configuration on
//! stdin. Results of ADD are cached as libcni caches them ([`super::cache`]).
//! Plugin failures are the specification's error objects (`code`, `msg`, `details`),
//! surfaced as [`Error::Plugin`].

use super::cache;
use super::conf::{NetworkConf, PluginConf, RuntimeConf};
use super::exec::{exec_plugin, Builtins};
use super::result::{CniResult, VersionInfo};
use super::spec::{join_path, version_at_least, Error, PluginEnv, Result, SPEC_VERSION};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

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
        cache::write(&self.cache_dir, net, rt, &result)?;
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
        cache::remove(&self.cache_dir, net, rt)
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
        cache::file(&self.cache_dir, network, rt)
    }

    /// The cached result of an earlier ADD, if there is one.
    pub fn cached_result(&self, net: &NetworkConf, rt: &RuntimeConf) -> Result<Option<CniResult>> {
        rt.validate(&net.name)?;
        cache::read(&self.cache_dir, net, rt)
    }

    /// The cached attachment of namespace `netns` (a path, compared after resolving
    /// symlinks) to `network` as `ifname`, if there is exactly one: its container id
    /// and namespace path as they were given to ADD. This is how `knetsim cni del`
    /// finds a pod that `up` added under its own container id.
    pub fn cached_attachment(&self, network: &str, netns: &Path, ifname: &str) -> Option<(String, String)> {
        cache::attachment(&self.cache_dir, network, netns, ifname)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::cache::CACHE_KIND;
    use crate::cni::spec::PluginError;
    use base64::Engine;
    use std::os::unix::fs::PermissionsExt;

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
        assert_eq!(
            entry["config"],
            base64::engine::general_purpose::STANDARD.encode(&net.bytes)
        );
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
