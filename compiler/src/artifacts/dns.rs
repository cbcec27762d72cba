//! Cluster DNS (`[dns]`): the records of each cluster as the Kubernetes DNS
//! specification (kubernetes/dns, docs/specification.md) defines them, and the files
//! a real server reads them from: dnsmasq's config (SRV and TXT records, options) and
//! hosts file (A and PTR records; SIGHUP makes dnsmasq read it again), or CoreDNS's
//! Corefile and zone files. Also each namespace's resolv.conf, as the kubelet writes it.

use super::paths::runtime;
use super::templates;
use crate::model::{Cluster, Dns, DnsServer, Model, Naming, DEFAULT_NAMESPACE};
use serde::Serialize;
use std::net::Ipv4Addr;

/// The schema version answered at `dns-version.<domain>` (TXT), as the spec asks.
pub const SCHEMA_VERSION: &str = "1.1.0";

/// One cluster's records, in a stable order.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Records {
    /// (name, address): also the PTR of the address, the first name listed for it.
    pub a: Vec<(String, Ipv4Addr)>,
    pub srv: Vec<Srv>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Srv {
    /// `_<port>._<proto>.<service>.<ns>.svc.<domain>`
    pub name: String,
    pub port: u16,
    pub target: String,
}

/// `a-b-c-d`: a pod's DNS label, and the hostname of a headless endpoint (what
/// CoreDNS gives an endpoint without a hostname of its own).
pub fn dashed(ip: Ipv4Addr) -> String {
    ip.to_string().replace('.', "-")
}

/// `<name>.<ns>.svc.<domain>` (names are case-insensitive in DNS: lower-cased).
pub fn service_name(dns: &Dns, namespace: &str, service: &str) -> String {
    format!("{}.{namespace}.svc.{}", service.to_ascii_lowercase(), dns.domain)
}

/// The records of cluster `c`. Endpoints that are not ready are left out, as the
/// spec's headless records are of ready endpoints only.
pub fn records(model: &Model, dns: &Dns, c: &Cluster) -> Records {
    let mut r = Records::default();
    let mut headless_ptrs = Vec::new();
    for s in &c.services {
        let fqdn = service_name(dns, &s.namespace, &s.name);
        let named = || s.ports.iter().filter_map(|p| Some((p.name.as_deref()?, p)));
        if !s.headless {
            r.a.push((fqdn.clone(), s.vip));
            for (name, p) in named() {
                r.srv.push(Srv {
                    name: format!("_{name}._{}.{fqdn}", p.protocol),
                    port: p.port,
                    target: fqdn.clone(),
                });
            }
            continue;
        }
        for e in s.endpoints.iter().filter(|e| e.ready) {
            let pod_alive = c.pod(&s.namespace, &e.pod).is_some_and(|p| !p.deleted);
            if !pod_alive {
                continue;
            }
            let host = format!("{}.{fqdn}", dashed(e.ip));
            // The endpoint's own name first: it is the address's PTR.
            headless_ptrs.push((host.clone(), e.ip));
            r.a.push((fqdn.clone(), e.ip));
            for (name, p) in named() {
                r.srv.push(Srv {
                    name: format!("_{name}._{}.{fqdn}", p.protocol),
                    port: p.port,
                    target: host.clone(),
                });
            }
        }
    }
    for p in c.pods.iter().filter(|p| !p.deleted) {
        r.a.push((format!("{}.{}.pod.{}", dashed(p.ip), p.namespace, dns.domain), p.ip));
    }
    // Skupper makes a Service of each exposed address in every cluster that listens
    // for it: its name resolves there to the router's listener.
    for router in model.routers.iter().filter(|x| x.cluster == c.name) {
        for l in &router.tcp_listeners {
            if c.service(DEFAULT_NAMESPACE, &l.address).is_none()
                && !r
                    .a
                    .iter()
                    .any(|(n, _)| *n == service_name(dns, DEFAULT_NAMESPACE, &l.address))
            {
                r.a.push((service_name(dns, DEFAULT_NAMESPACE, &l.address), router.ip));
            }
        }
    }
    headless_ptrs.append(&mut r.a);
    r.a = headless_ptrs;
    r
}

/// What the server of cluster `c` runs: its argv, reading the files of [`files`].
pub fn server_argv(n: &Naming, c: &Cluster, server: DnsServer) -> Vec<String> {
    match server {
        DnsServer::Dnsmasq => vec![
            "dnsmasq".into(),
            "--keep-in-foreground".into(),
            format!("--conf-file={}", runtime::dns_file(n, c, "dnsmasq.conf")),
            // A separate argument: a change of this file alone is a reload (SIGHUP).
            "--addn-hosts".into(),
            runtime::dns_file(n, c, "hosts"),
        ],
        DnsServer::Coredns => vec!["coredns".into(), "-conf".into(), runtime::dns_file(n, c, "Corefile")],
    }
}

/// The files a server can re-read while it runs (a change to one is a SIGHUP, not
/// a restart): dnsmasq's hosts file; CoreDNS watches its own zone files.
pub fn reloadable(n: &Naming, c: &Cluster, server: DnsServer) -> Vec<String> {
    match server {
        DnsServer::Dnsmasq => vec![runtime::dns_file(n, c, "hosts")],
        DnsServer::Coredns => vec![],
    }
}

#[derive(Serialize)]
struct Ctx<'a> {
    cluster: &'a str,
    domain: &'a str,
    version: &'a str,
    a: Vec<(String, String)>,
    srv: &'a [Srv],
    dir: String,
    serial: u32,
    ptr: Vec<(String, String)>,
}

/// The server's files of cluster `c`: (file name in its runtime directory, text).
pub fn files(model: &Model, dns: &Dns, c: &Cluster) -> Vec<(&'static str, String)> {
    let r = records(model, dns, c);
    let mut ptr: Vec<(String, String)> = Vec::new();
    for (name, ip) in &r.a {
        let o = ip.octets();
        let rev = format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0]);
        if !ptr.iter().any(|(r, _)| *r == rev) {
            ptr.push((rev, name.clone()));
        }
    }
    let a: Vec<(String, String)> = r.a.iter().map(|(n, ip)| (n.clone(), ip.to_string())).collect();
    // A zone's serial must change with its records for CoreDNS to reload it.
    let serial = {
        use sha2::{Digest, Sha256};
        let d = Sha256::digest(format!("{a:?}{:?}", r.srv).as_bytes());
        u32::from_be_bytes([d[0] & 0x7f, d[1], d[2], d[3]])
    };
    let ctx = Ctx {
        cluster: &c.name,
        domain: &dns.domain,
        version: SCHEMA_VERSION,
        a,
        srv: &r.srv,
        dir: runtime::dns_file(&model.naming(), c, ""),
        serial,
        ptr,
    };
    match dns.server {
        DnsServer::Dnsmasq => vec![
            ("dnsmasq.conf", templates::render("dnsmasq.conf.j2", &ctx)),
            ("hosts", templates::render("dns-hosts.j2", &ctx)),
        ],
        DnsServer::Coredns => vec![
            ("Corefile", templates::render("Corefile.j2", &ctx)),
            ("db.cluster", templates::render("dns-zone.j2", &ctx)),
            ("db.reverse", templates::render("dns-reverse-zone.j2", &ctx)),
        ],
    }
}

/// A pod's resolv.conf, as the kubelet writes it for `dnsPolicy: ClusterFirst`.
pub fn resolv_conf(dns: &Dns, c: &Cluster, namespace: &str) -> String {
    let vip = c
        .services
        .iter()
        .find(|s| s.implicit)
        .map_or(Ipv4Addr::UNSPECIFIED, |s| s.vip);
    let d = &dns.domain;
    format!("# pods of namespace {namespace} of cluster {}, written by knetsim as the kubelet does\nnameserver {vip}\nsearch {namespace}.svc.{d} svc.{d} {d}\noptions ndots:5\n", c.name)
}

#[cfg(test)]
#[path = "dns_tests.rs"]
mod tests;
