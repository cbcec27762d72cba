//! The artifact bundle: every generated file with its kind and owner, kept in a
//! sorted map so writing it out is deterministic.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArtifactKind {
    Inventory,
    FlannelNetworkConfig,
    EtcdMember,
    CniConfig,
    SubnetReservation,
    NftRuleset,
    NginxConf,
    SkupperRouterConfig,
    /// A cluster DNS server's config, hosts or zone file.
    DnsConfig,
    /// The resolv.conf of one namespace's pods.
    ResolvConf,
    Checks,
    Plan,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub kind: ArtifactKind,
    pub cluster: Option<String>,
    pub node: Option<String>,
    /// Shared between artifacts with identical text (e.g. one cluster's kube-proxy
    /// ruleset on every worker), so large bundles are not held many times over.
    pub content: Arc<str>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bundle {
    /// Relative path inside the bundle -> artifact.
    pub files: BTreeMap<String, Artifact>,
}

/// One line of `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub path: String,
    pub kind: ArtifactKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub sha256: String,
}

pub const MANIFEST: &str = "manifest.json";

impl Bundle {
    pub fn insert(
        &mut self,
        path: impl Into<String>,
        kind: ArtifactKind,
        cluster: Option<&str>,
        node: Option<&str>,
        content: String,
    ) {
        self.insert_shared(path, kind, cluster, node, Arc::from(content));
    }

    pub fn insert_shared(
        &mut self,
        path: impl Into<String>,
        kind: ArtifactKind,
        cluster: Option<&str>,
        node: Option<&str>,
        content: Arc<str>,
    ) {
        self.files.insert(
            path.into(),
            Artifact {
                kind,
                cluster: cluster.map(str::to_string),
                node: node.map(str::to_string),
                content,
            },
        );
    }

    pub fn get(&self, path: &str) -> Option<&str> {
        self.files.get(path).map(|a| &*a.content)
    }

    pub fn manifest(&self) -> Vec<ManifestEntry> {
        // Shared texts are hashed once.
        let mut digests: HashMap<*const u8, String> = HashMap::new();
        self.files
            .iter()
            .map(|(path, a)| ManifestEntry {
                path: path.clone(),
                kind: a.kind,
                cluster: a.cluster.clone(),
                node: a.node.clone(),
                sha256: digests
                    .entry(a.content.as_ptr())
                    .or_insert_with(|| sha256_hex(a.content.as_bytes()))
                    .clone(),
            })
            .collect()
    }

    /// The manifest as it is written to `manifest.json`.
    pub fn manifest_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(&self.manifest()).expect("manifest serializes");
        s.push('\n');
        s
    }

    /// Writes every artifact and `manifest.json` under `dir`.
    pub fn write_to(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        for (path, a) in &self.files {
            let target = dir.join(path);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(target, a.content.as_bytes())?;
        }
        std::fs::write(dir.join(MANIFEST), self.manifest_json())
    }

    /// Reads a bundle written by `write_to`, trusting its manifest for kinds and owners.
    pub fn read_from(dir: &Path) -> std::io::Result<Bundle> {
        let manifest: Vec<ManifestEntry> = serde_json::from_str(&std::fs::read_to_string(dir.join(MANIFEST))?)
            .map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: {e}", dir.join(MANIFEST).display()),
                )
            })?;
        let mut bundle = Bundle::default();
        for e in manifest {
            let content = std::fs::read_to_string(dir.join(&e.path))?;
            bundle.insert(e.path, e.kind, e.cluster.as_deref(), e.node.as_deref(), content);
        }
        Ok(bundle)
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
