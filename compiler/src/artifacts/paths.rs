//! Where each artifact sits inside the bundle, and where the executor installs it.

use crate::model::{Cluster, Host, Ingress, Naming, Router, Worker};

pub const INVENTORY: &str = "inventory.json";
pub const PLAN: &str = "plan.json";
pub const CHECKS: &str = "checks.json";

pub fn flannel_network_config(c: &Cluster) -> String {
    format!("clusters/{}/flannel-network-config.json", c.name)
}

pub fn etcd_member(c: &Cluster, m: &Host) -> String {
    format!("clusters/{}/etcd/{}.json", c.name, m.name)
}

pub fn cni_config(c: &Cluster, w: &Worker) -> String {
    cni_config_of(&c.name, &w.host.name)
}

/// A worker's CNI configuration, by cluster and worker name (for readers of a stored bundle).
pub fn cni_config_of(cluster: &str, worker: &str) -> String {
    format!("clusters/{cluster}/workers/{worker}/flannel_conf.json")
}

pub fn subnet_reservation(c: &Cluster, w: &Worker) -> String {
    format!("clusters/{}/workers/{}/subnet-reservation.json", c.name, w.host.name)
}

pub fn nft_ruleset(c: &Cluster, w: &Worker) -> String {
    format!("clusters/{}/workers/{}/kube-proxy.nft", c.name, w.host.name)
}

pub fn network_policy(c: &Cluster, w: &Worker) -> String {
    format!("clusters/{}/workers/{}/network-policy.nft", c.name, w.host.name)
}

pub fn nginx_conf(c: &Cluster, i: &Ingress) -> String {
    format!("clusters/{}/ingress/{}/nginx.conf", c.name, i.name)
}

pub fn router_config(r: &Router) -> String {
    format!("clusters/{}/skupper/{}.json", r.cluster, r.cluster)
}

/// A file of cluster `c`'s DNS server (`dnsmasq.conf`, `hosts`, `Corefile`, ...).
pub fn dns_file(c: &Cluster, name: &str) -> String {
    format!("clusters/{}/dns/{name}", c.name)
}

/// The resolv.conf of the pods of `namespace`.
pub fn resolv_conf(c: &Cluster, namespace: &str) -> String {
    format!("clusters/{}/dns/resolv.conf/{namespace}", c.name)
}

/// Runtime locations, following the seed's `/tmp/knetsim` layout.
pub mod runtime {
    use super::*;

    /// The directory cnitool's NETCONFPATH points at for a worker.
    pub fn cni_conf_dir(n: &Naming, w: &Worker) -> String {
        n.host_dir(&w.host.name)
    }
    pub fn cni_conf(n: &Naming, w: &Worker) -> String {
        format!("{}/flannel_conf.json", n.host_dir(&w.host.name))
    }
    pub fn subnet_env(n: &Naming, w: &Worker) -> String {
        format!("{}/flannel-subnet.env", n.host_dir(&w.host.name))
    }
    pub fn flannel_data_dir(n: &Naming, w: &Worker) -> String {
        format!("{}/flannel", n.host_dir(&w.host.name))
    }
    /// host-local's allocation store (instead of /var/lib/cni/networks).
    pub fn ipam_data_dir(n: &Naming, w: &Worker) -> String {
        format!("{}/ipam", n.host_dir(&w.host.name))
    }
    /// The CNI runtime's result cache (libcni's /var/lib/cni/results).
    pub fn cni_cache_dir(n: &Naming, w: &Worker) -> String {
        format!("{}/cni-cache", n.host_dir(&w.host.name))
    }
    pub fn flannel_log(n: &Naming, w: &Worker) -> String {
        format!("{}/flannel.log", n.host_dir(&w.host.name))
    }
    pub fn nft_ruleset(n: &Naming, w: &Worker) -> String {
        format!("{}/kube-proxy.nft", n.host_dir(&w.host.name))
    }
    pub fn network_policy(n: &Naming, w: &Worker) -> String {
        format!("{}/network-policy.nft", n.host_dir(&w.host.name))
    }
    pub fn etcd_data_dir(n: &Naming, m: &Host) -> String {
        n.state(&format!("{}.etcd", m.name))
    }
    pub fn etcd_log(n: &Naming, m: &Host) -> String {
        n.state(&format!("{}.log", m.name))
    }
    /// Ingress names are unique within a cluster only; the worker (a global name) keeps
    /// same-named ingresses of different clusters apart.
    pub fn ingress_dir(n: &Naming, i: &Ingress) -> String {
        n.state(&format!("ingress/{}/{}", i.worker, i.name))
    }
    pub fn router_config(n: &Naming, r: &Router) -> String {
        n.state(&format!("skupper/{}.json", r.cluster))
    }
    pub fn router_log(n: &Naming, r: &Router) -> String {
        n.state(&format!("skupper/{}.log", r.cluster))
    }
    pub fn router_certs(n: &Naming, r: &Router) -> String {
        n.state(&format!("skupper/certs/{}", r.cluster))
    }
    /// The emulation's one CA for inter-router TLS (`ca.crt`, `ca.key`).
    pub fn router_ca(n: &Naming) -> String {
        n.state("skupper/certs")
    }
    /// Where a cluster's DNS server reads its files: `dns/C0/hosts`.
    pub fn dns_file(n: &Naming, c: &Cluster, name: &str) -> String {
        n.state(&format!("dns/{}/{name}", c.name))
    }
    /// A pod's resolv.conf where `ip netns exec` (and knetsim's own entry into a pod)
    /// bind-mounts it over /etc/resolv.conf: `/etc/netns/<pod netns>/resolv.conf`.
    pub fn resolv_conf(p: &crate::model::Pod) -> String {
        crate::host::HostLayout::system()
            .netns_etc(&p.netns)
            .join("resolv.conf")
            .display()
            .to_string()
    }
    /// `pods/C0/c1.log`; `pods/C0/prod/web.log` for a pod of another namespace.
    pub fn pod_log(n: &Naming, cluster: &Cluster, pod: &crate::model::Pod) -> String {
        n.state(&format!("pods/{}.log", cluster.pod_id(pod)))
    }
}
