//! The result cache, as libcni keeps it: the result of each ADD in
//! `<cache_dir>/results/<network>-<container id>-<ifname>`, for DEL and CHECK (and for
//! cnitool and knetsim to find each other's attachments).

use super::conf::{NetworkConf, RuntimeConf};
use super::result::CniResult;
use super::spec::{Error, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{Map, Value};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The `kind` of libcni's cache files.
pub const CACHE_KIND: &str = "cniCacheV1";

/// `<cache_dir>/results/<network>-<container id>-<ifname>`.
pub fn file(cache_dir: &Path, network: &str, rt: &RuntimeConf) -> PathBuf {
    cache_dir
        .join("results")
        .join(format!("{network}-{}-{}", rt.container_id, rt.ifname))
}

/// The cached result of an earlier ADD, if there is one (`rt` is validated).
pub fn read(cache_dir: &Path, net: &NetworkConf, rt: &RuntimeConf) -> Result<Option<CniResult>> {
    let path = file(cache_dir, &net.name, rt);
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
/// symlinks) to `network` as `ifname`, if there is exactly one: its container id and
/// namespace path as they were given to ADD.
pub fn attachment(cache_dir: &Path, network: &str, netns: &Path, ifname: &str) -> Option<(String, String)> {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let wanted = canon(netns);
    let mut found: Vec<(String, String)> = std::fs::read_dir(cache_dir.join("results"))
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

/// Caches the result of an ADD (mode 0600, in a directory of mode 0700), atomically.
pub fn write(cache_dir: &Path, net: &NetworkConf, rt: &RuntimeConf, result: &CniResult) -> Result<()> {
    let mut entry = Map::new();
    entry.insert("kind".into(), CACHE_KIND.into());
    entry.insert("containerId".into(), rt.container_id.clone().into());
    // libcni stores the configuration as Go's JSON encoding of bytes: standard base64
    // with padding.
    entry.insert("config".into(), B64.encode(&net.bytes).into());
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
    let path = file(cache_dir, &net.name, rt);
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

/// Drops the cached result of an ADD; none is not an error.
pub fn remove(cache_dir: &Path, net: &NetworkConf, rt: &RuntimeConf) -> Result<()> {
    let path = file(cache_dir, &net.name, rt);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("removing {}", path.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_are_base64_as_go_encodes_bytes() {
        assert_eq!(B64.encode(b""), "");
        assert_eq!(B64.encode(b"f"), "Zg==");
        assert_eq!(B64.encode(b"fo"), "Zm8=");
        assert_eq!(B64.encode(b"foo"), "Zm9v");
        assert_eq!(B64.encode(b"{\"a\":1}"), "eyJhIjoxfQ==");
    }
}
