//! Flannel's network config (etcd key `/coreos.com/network/config`) and the per-worker
//! subnet reservations (leases without TTL under `/coreos.com/network/subnets/`).

use crate::model::{Cluster, Worker};
use serde::Serialize;

pub const ETCD_PREFIX: &str = "/coreos.com/network";

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct NetworkConfig {
    network: String,
    subnet_len: u8,
    subnet_min: String,
    subnet_max: String,
    backend: Backend,
}

#[derive(Serialize)]
struct Backend {
    #[serde(rename = "Type")]
    kind: String,
    #[serde(rename = "VNI")]
    vni: u32,
    #[serde(rename = "Port")]
    port: u16,
}

pub fn network_config(c: &Cluster) -> String {
    let f = &c.flannel;
    super::to_json(&NetworkConfig {
        network: f.network.to_string(),
        subnet_len: f.subnet_len,
        subnet_min: f.subnet_min.to_string(),
        subnet_max: f.subnet_max.to_string(),
        backend: Backend {
            kind: f.backend.clone(),
            vni: f.vni,
            port: f.port,
        },
    })
}

/// A subnet reservation: the etcd key and the lease attributes flannel stores there.
#[derive(Debug, Serialize)]
pub struct Reservation {
    pub key: String,
    pub value: LeaseAttrs,
}

/// flannel's `LeaseAttrs` as JSON.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct LeaseAttrs {
    #[serde(rename = "PublicIP")]
    pub public_ip: String,
    pub backend_type: String,
    pub backend_data: VxlanLeaseAttrs,
}

#[derive(Debug, Serialize)]
pub struct VxlanLeaseAttrs {
    #[serde(rename = "VNI")]
    pub vni: u32,
    #[serde(rename = "VtepMAC")]
    pub vtep_mac: String,
}

/// flannel names subnet keys `<ip>-<len>`.
pub fn subnet_key(w: &Worker) -> String {
    format!("{ETCD_PREFIX}/subnets/{}-{}", w.subnet.network(), w.subnet.prefix())
}

pub fn reservation(c: &Cluster, w: &Worker) -> Reservation {
    Reservation {
        key: subnet_key(w),
        value: LeaseAttrs {
            public_ip: w.host.ip.to_string(),
            backend_type: c.flannel.backend.clone(),
            backend_data: VxlanLeaseAttrs {
                vni: c.flannel.vni,
                vtep_mac: w.vtep_mac.clone(),
            },
        },
    }
}
