//! Flannel's network config (etcd key `/coreos.com/network/config`) and the per-worker
//! subnet reservations (leases without TTL under `/coreos.com/network/subnets/`).

use crate::model::{Cluster, Worker};
use serde::Serialize;

pub const ETCD_PREFIX: &str = "/coreos.com/network";
/// The tables of flanneld's nftables mode.
pub const NFT_TABLE: &str = "flannel-ipv4";
pub const NFT_TABLE_V6: &str = "flannel-ipv6";

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct NetworkConfig {
    network: String,
    subnet_len: u8,
    subnet_min: String,
    subnet_max: String,
    /// Written only for `ip_masq` clusters (see `network_config`).
    #[serde(rename = "EnableNFTables", skip_serializing_if = "Option::is_none")]
    enable_nftables: Option<bool>,
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
        // flanneld puts its masquerade rules in nftables (table `flannel-ipv4`) only
        // with EnableNFTables; without it, it uses iptables (FLANNEL-POSTRTG) and first
        // deletes those tables. knetsim's netfilter is nftables throughout (kube-proxy's
        // nftables mode) and the built-in agent models the nftables mode, so an
        // `ip_masq` cluster asks for it and a real flanneld on PATH does the same.
        // Without `ip_masq` the seed's config stays as it is (iptables mode would only
        // add FORWARD accept rules, which change nothing in a worker's namespace).
        enable_nftables: f.ip_masq.then_some(true),
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

/// What flanneld's nftables mode installs in its node's namespace
/// (`templates/flannel.nft.j2`). Rendered by the built-in agent at run time: its pod
/// subnet is only known once it holds a lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NftSetup {
    /// The flannel network (`Network`), e.g. `11.0.0.0/8`.
    pub network: String,
    /// This node's lease, e.g. `11.10.0.0/20`.
    pub pod_subnet: String,
    /// `-ip-masq`: the `postrtg` masquerade chain.
    pub masq: bool,
    /// `-iptables-forward-rules` (flanneld's default): the `forward` accept chain.
    pub forward: bool,
    /// `masquerade fully-random` (unless `-ip-masq-fully-random-disable`, or the kernel lacks it).
    pub fully_random: bool,
}

#[derive(Serialize)]
struct NftContext<'a> {
    table4: &'a str,
    table6: &'a str,
    #[serde(flatten)]
    setup: &'a NftSetup,
}

/// The `nft -f` transaction that sets flanneld's tables up.
pub fn nft_setup(setup: &NftSetup) -> String {
    super::templates::render(
        "flannel.nft.j2",
        NftContext {
            table4: NFT_TABLE,
            table6: NFT_TABLE_V6,
            setup,
        },
    )
}

/// The `nft -f` transaction that deletes flanneld's tables, present or not (flanneld
/// out of nftables mode cleans up after an earlier run in it). A fixed text: the agent
/// of every cluster without `ip_masq` runs it, and needs no template engine for it.
pub const NFT_CLEANUP: &str = include_str!("../../../templates/flannel-cleanup.nft");

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> NftSetup {
        NftSetup {
            network: "11.0.0.0/8".into(),
            pod_subnet: "11.10.16.0/20".into(),
            masq: true,
            forward: true,
            fully_random: true,
        }
    }

    /// The transaction without its comment lines.
    fn commands(text: &str) -> Vec<&str> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .collect()
    }

    #[test]
    fn ip_masq_renders_flanneld_nftables_rules() {
        assert_eq!(
            commands(&nft_setup(&setup())),
            [
                r#"add table ip flannel-ipv4 { comment "rules for flannel-ipv4" ; }"#,
                r#"add table ip6 flannel-ipv6 { comment "rules for flannel-ipv6" ; }"#,
                r#"add chain ip flannel-ipv4 postrtg { type nat hook postrouting priority srcnat ; comment "chain to manage traffic masquerading by flannel" ; }"#,
                "flush chain ip flannel-ipv4 postrtg",
                "add rule ip flannel-ipv4 postrtg meta mark 0x4000 return",
                "add rule ip flannel-ipv4 postrtg ip saddr 11.10.16.0/20 ip daddr 11.0.0.0/8 return",
                "add rule ip flannel-ipv4 postrtg ip saddr 11.0.0.0/8 ip daddr 11.10.16.0/20 return",
                "add rule ip flannel-ipv4 postrtg ip saddr != 11.10.16.0/20 ip daddr 11.0.0.0/8 return",
                "add rule ip flannel-ipv4 postrtg ip saddr 11.0.0.0/8 ip daddr != 224.0.0.0/4 masquerade fully-random",
                "add rule ip flannel-ipv4 postrtg ip saddr != 11.0.0.0/8 ip daddr 11.0.0.0/8 masquerade fully-random",
                r#"add chain ip flannel-ipv4 forward { type filter hook forward priority filter ; comment "chain to accept flannel traffic" ; }"#,
                "flush chain ip flannel-ipv4 forward",
                "add rule ip flannel-ipv4 forward ip saddr 11.0.0.0/8 accept",
                "add rule ip flannel-ipv4 forward ip daddr 11.0.0.0/8 accept",
            ]
        );
    }

    #[test]
    fn options_leave_out_their_parts() {
        let plain = nft_setup(&NftSetup {
            fully_random: false,
            ..setup()
        });
        assert!(plain.contains("ip daddr != 224.0.0.0/4 masquerade\n"), "{plain}");
        assert!(!plain.contains("fully-random"), "{plain}");

        let forward_only = nft_setup(&NftSetup { masq: false, ..setup() });
        let forward_only = commands(&forward_only);
        assert_eq!(forward_only.len(), 6, "{forward_only:#?}");
        assert!(forward_only.iter().all(|l| !l.contains("postrtg")));

        let tables_only = nft_setup(&NftSetup {
            masq: false,
            forward: false,
            ..setup()
        });
        assert_eq!(commands(&tables_only).len(), 2, "{tables_only}");
    }

    #[test]
    fn cleanup_deletes_both_tables_whether_or_not_they_exist() {
        assert_eq!(
            commands(NFT_CLEANUP),
            [
                "add table ip flannel-ipv4",
                "delete table ip flannel-ipv4",
                "add table ip6 flannel-ipv6",
                "delete table ip6 flannel-ipv6",
            ]
        );
    }
}
