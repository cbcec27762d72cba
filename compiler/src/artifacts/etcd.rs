//! etcd member settings: the seed's flags, with fast elections for a one-machine cluster.

use super::paths::runtime;
use crate::model::{Cluster, Host, Naming};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct EtcdMember {
    pub name: String,
    pub netns: String,
    pub data_dir: String,
    pub log: String,
    pub listen_peer_urls: String,
    pub initial_advertise_peer_urls: String,
    pub listen_client_urls: String,
    pub advertise_client_urls: String,
    pub initial_cluster: String,
    pub initial_cluster_token: String,
    pub initial_cluster_state: String,
    /// Milliseconds; small because the "network" is local.
    pub heartbeat_interval: u32,
    pub election_timeout: u32,
}

pub fn member(n: &Naming, c: &Cluster, m: &Host) -> EtcdMember {
    let peer = format!("http://{}:2380", m.ip);
    let initial_cluster = c
        .etcd
        .iter()
        .map(|e| format!("{}=http://{}:2380", e.name, e.ip))
        .collect::<Vec<_>>()
        .join(",");
    EtcdMember {
        name: m.name.clone(),
        netns: m.netns.clone(),
        data_dir: runtime::etcd_data_dir(n, m),
        log: runtime::etcd_log(n, m),
        listen_peer_urls: peer.clone(),
        initial_advertise_peer_urls: peer,
        listen_client_urls: format!("http://{}:2379,http://127.0.0.1:2379", m.ip),
        advertise_client_urls: format!("http://{}:2379", m.ip),
        initial_cluster,
        initial_cluster_token: format!("knetsim-{}", c.name),
        initial_cluster_state: "new".into(),
        heartbeat_interval: 10,
        election_timeout: 100,
    }
}

impl EtcdMember {
    /// The etcd command line (no shell).
    pub fn argv(&self) -> Vec<String> {
        let flag = |k: &str, v: &str| [format!("--{k}"), v.to_string()];
        let mut argv = vec!["etcd".to_string()];
        for (k, v) in [
            ("name", self.name.as_str()),
            ("data-dir", &self.data_dir),
            ("listen-peer-urls", &self.listen_peer_urls),
            ("initial-advertise-peer-urls", &self.initial_advertise_peer_urls),
            ("listen-client-urls", &self.listen_client_urls),
            ("advertise-client-urls", &self.advertise_client_urls),
            ("initial-cluster", &self.initial_cluster),
            ("initial-cluster-token", &self.initial_cluster_token),
            ("initial-cluster-state", &self.initial_cluster_state),
            ("heartbeat-interval", &self.heartbeat_interval.to_string()),
            ("election-timeout", &self.election_timeout.to_string()),
        ] {
            argv.extend(flag(k, v));
        }
        argv
    }
}
