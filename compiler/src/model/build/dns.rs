//! `[dns]`: the cluster domain and server, and what each cluster then gets besides
//! its declared pods and services: the DNS pod `kube-system/kube-dns` (on the first
//! worker, numbered after that worker's own pods so that none of theirs moves) and
//! the Service `kube-system/kube-dns` on kubeadm's VIP, the 10th address of the
//! service CIDR (reserved before any other VIP is handed out).

use super::*;

pub(super) const DEFAULT_DOMAIN: &str = "cluster.local";

/// kubeadm's DNS VIP: the 10th address of the service CIDR (100.64.0.10).
pub(super) fn dns_vip(cidr: Ipv4Network) -> Option<Ipv4Addr> {
    allocate::nth_host(cidr, 10)
}

/// A DNS domain as kubelet's `clusterDomain` takes it: lower-case RFC 1123 labels.
fn is_domain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|l| {
            (1..=63).contains(&l.len())
                && l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

impl Builder<'_> {
    pub(super) fn dns_settings(&mut self, spec: &Option<Spanned<spec::DnsSpec>>) -> Option<Dns> {
        let spec = spec.as_ref()?.get_ref();
        let domain = match &spec.domain {
            Some(d) if !is_domain(d.get_ref()) => {
                self.report.error(
                    d.span(),
                    format!("`{}` is not a DNS domain", d.get_ref()),
                    "bad domain",
                    "lower-case labels of letters, digits and '-' separated by dots, without a trailing dot (e.g. \"cluster.local\")",
                );
                DEFAULT_DOMAIN.to_string()
            }
            Some(d) => d.get_ref().clone(),
            None => DEFAULT_DOMAIN.to_string(),
        };
        let server = match spec.server.as_ref().map(|s| (s, s.get_ref().as_str())) {
            None | Some((_, "auto")) if self.coredns_on_path => DnsServer::Coredns,
            None | Some((_, "auto" | "dnsmasq")) => DnsServer::Dnsmasq,
            Some((_, "coredns")) => DnsServer::Coredns,
            Some((s, other)) => {
                self.report.error(
                    s.span(),
                    format!("unknown DNS server `{other}`"),
                    "not a server",
                    "use \"auto\" (CoreDNS when it is on PATH, else dnsmasq), \"dnsmasq\" or \"coredns\"",
                );
                DnsServer::Dnsmasq
            }
        };
        Some(Dns { domain, server })
    }

    /// kubeadm's DNS VIP of the cluster, when `[dns]` is on and the CIDR holds it.
    pub(super) fn reserve_dns_vip(
        &mut self,
        cs: &spec::ClusterSpec,
        cluster: &Cluster,
        cidr_ok: bool,
    ) -> Option<Ipv4Addr> {
        let dns_vip = self
            .dns
            .as_ref()
            .and(cidr_ok.then_some(()))
            .and_then(|_| dns::dns_vip(cluster.service_cidr));
        if self.dns.is_some() && cidr_ok && dns_vip.is_none() {
            self.report.error(
                cs.service_cidr.as_ref().map_or(cs.name.span(), |c| c.span()),
                format!(
                    "service CIDR {} of cluster `{}` has no 10th address for the DNS Service",
                    cluster.service_cidr, cluster.name
                ),
                "too small for [dns]",
                "use a service_cidr of /28 or larger",
            );
        }
        dns_vip
    }

    /// Refuses a declared pod or service that takes the name of the DNS one.
    pub(super) fn dns_reserved(&mut self, namespace: &str, name: &Spanned<String>, what: &str) -> bool {
        let reserved = self.dns.is_some()
            && namespace == SYSTEM_NAMESPACE
            && name.get_ref() == if what == "pod" { DNS_POD } else { DNS_SERVICE };
        if reserved {
            self.report.error(
                name.span(),
                format!("{what} `kube-system/{}` is the cluster DNS's", name.get_ref()),
                "reserved by [dns]",
                "with [dns], knetsim makes the pod and Service kube-system/kube-dns itself; use another name",
            );
        }
        reserved
    }

    /// The DNS pod, on the first worker at the highest free pod address of its subnet:
    /// away from the sequential addresses of the declared pods, so that it never moves
    /// when one of them is removed, and none of them moves for it.
    pub(super) fn dns_pod(&mut self, cluster: &mut Cluster, taken: &HashSet<Ipv4Addr>) {
        let Some(dns) = self.dns.clone() else { return };
        let Some(worker) = cluster.workers.first() else { return };
        let used: HashSet<Ipv4Addr> = cluster.pods.iter().map(|p| p.ip).chain(taken.iter().copied()).collect();
        // Pod addresses run from `.2` to the one below the broadcast address.
        let last = usize::try_from(worker.subnet.size().saturating_sub(4)).unwrap_or(usize::MAX);
        let Some(ip) = (0..=last)
            .rev()
            .filter_map(|i| allocate::pod_ip(worker.subnet, i))
            .find(|ip| !used.contains(ip))
        else {
            return;
        };
        let n = self.naming.clone();
        let pod = Pod {
            name: DNS_POD.into(),
            namespace: SYSTEM_NAMESPACE.into(),
            labels: [(DNS_LABEL.0.to_string(), DNS_LABEL.1.to_string())].into(),
            worker: worker.host.name.clone(),
            netns: n.pod_netns(cluster.index, SYSTEM_NAMESPACE, DNS_POD),
            ip,
            container_id: format!("{}-{SYSTEM_NAMESPACE}.{DNS_POD}", cluster.name),
            command: Some(crate::artifacts::dns::server_argv(&n, cluster, dns.server)),
            ports: vec![53],
            named_ports: vec![
                NamedPort {
                    name: "dns".into(),
                    port: 53,
                    protocol: "udp".into(),
                },
                NamedPort {
                    name: "dns-tcp".into(),
                    port: 53,
                    protocol: "tcp".into(),
                },
            ],
            deleted: false,
            implicit: true,
            restart_policy: RestartPolicy::Always,
            probes: Probes::default(),
        };
        cluster.pods.push(pod);
    }

    /// The `kube-dns` Service on `vip`, selecting the DNS pod.
    pub(super) fn dns_service(&mut self, cluster: &mut Cluster, vip: Ipv4Addr) {
        let Some(pod) = cluster.pod(SYSTEM_NAMESPACE, DNS_POD) else {
            return;
        };
        let port = |name: &str, protocol: &str| ServicePort {
            port: 53,
            target_port: 53,
            protocol: protocol.into(),
            name: Some(name.into()),
        };
        let service = Service {
            name: DNS_SERVICE.into(),
            namespace: SYSTEM_NAMESPACE.into(),
            selector: [(DNS_LABEL.0.to_string(), DNS_LABEL.1.to_string())].into(),
            vip,
            headless: false,
            implicit: true,
            endpoints: vec![Endpoint {
                pod: pod.name.clone(),
                ip: pod.ip,
                ready: true,
            }],
            ports: vec![port("dns", "udp"), port("dns-tcp", "tcp")],
        };
        cluster.services.push(service);
    }
}

#[cfg(test)]
mod tests {
    use super::is_domain;

    #[test]
    fn domains() {
        for ok in ["cluster.local", "example", "k8s-1.lab"] {
            assert!(is_domain(ok), "{ok}");
        }
        for bad in [
            "",
            "Cluster.local",
            "cluster.local.",
            "-a.b",
            "a..b",
            "a_b.c",
            &"a".repeat(64),
        ] {
            assert!(!is_domain(bad), "{bad}");
        }
    }
}
