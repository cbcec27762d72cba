//! The per-worker flannel CNI network config, as the seed writes it for cnitool.

use super::paths::runtime;
use crate::model::{Naming, Worker};
use serde::Serialize;

/// The bridge the flannel plugin's `bridge` delegate creates (its default name).
pub const POD_BRIDGE: &str = "cni0";

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FlannelConf {
    pub cni_version: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub subnet_file: String,
    pub data_dir: String,
    pub delegate: Delegate,
    /// Merged by the flannel plugin into its delegate's IPAM section: host-local keeps
    /// its allocations in the emulation's state instead of /var/lib/cni.
    pub ipam: Ipam,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Ipam {
    #[serde(rename = "type")]
    pub kind: String,
    pub data_dir: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Delegate {
    pub is_default_gateway: bool,
}

/// The network is named after the worker, so `cnitool add C0w1 ...` picks it.
pub fn flannel_conf(n: &Naming, w: &Worker) -> FlannelConf {
    FlannelConf {
        cni_version: "1.0.0".into(),
        name: w.host.name.clone(),
        kind: "flannel".into(),
        subnet_file: runtime::subnet_env(n, w),
        data_dir: runtime::flannel_data_dir(n, w),
        delegate: Delegate {
            is_default_gateway: true,
        },
        ipam: Ipam {
            kind: "host-local".into(),
            data_dir: runtime::ipam_data_dir(n, w),
        },
    }
}
