//! Defaults shipped in `conf/`: the seed's flannel network config and skupper base listeners.

use serde::Deserialize;
use std::sync::OnceLock;

/// `conf/flannel-network-config.json`, in flannel's own format.
pub const FLANNEL_NETWORK_CONFIG: &str = include_str!("../../../conf/flannel-network-config.json");
/// `conf/skupper_base.json`: the listeners every router gets, in skrouterd's format.
pub const SKUPPER_BASE: &str = include_str!("../../../conf/skupper_base.json");

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FlannelDefaults {
    pub network: String,
    pub subnet_len: u8,
    pub subnet_min: String,
    pub subnet_max: String,
    pub backend: FlannelBackendDefaults,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FlannelBackendDefaults {
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "VNI")]
    pub vni: u32,
    #[serde(rename = "Port")]
    pub port: u16,
}

impl FlannelDefaults {
    pub fn get() -> &'static FlannelDefaults {
        static CELL: OnceLock<FlannelDefaults> = OnceLock::new();
        CELL.get_or_init(|| {
            serde_json::from_str(FLANNEL_NETWORK_CONFIG).expect("conf/flannel-network-config.json is valid")
        })
    }
}

/// One `["listener", {...}]` / `["address", {...}]` entry of the skupper base config.
#[derive(Debug, Clone)]
pub struct RouterBaseListener {
    pub entity: String,
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

impl RouterBaseListener {
    pub fn all() -> &'static [RouterBaseListener] {
        static CELL: OnceLock<Vec<RouterBaseListener>> = OnceLock::new();
        CELL.get_or_init(|| {
            let raw: Vec<(String, serde_json::Map<String, serde_json::Value>)> =
                serde_json::from_str(SKUPPER_BASE).expect("conf/skupper_base.json is valid");
            raw.into_iter()
                .map(|(entity, attributes)| RouterBaseListener { entity, attributes })
                .collect()
        })
    }

    /// Ports the base listeners occupy on the router's host.
    pub fn ports() -> Vec<(String, u16)> {
        Self::all()
            .iter()
            .filter(|l| l.entity == "listener")
            .filter_map(|l| {
                let port = l.attributes.get("port")?;
                let port = port.as_u64().or_else(|| port.as_str()?.parse().ok())?;
                let name = l.attributes.get("name").and_then(|n| n.as_str()).unwrap_or("listener");
                Some((name.to_string(), port as u16))
            })
            .collect()
    }
}
