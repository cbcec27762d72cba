//! `[[checks]]` with `dns = NAME`: a lookup made as the `from` pod's resolver makes it
//! (its resolv.conf: the DNS VIP, the search list, `ndots:5`), resolved here into the
//! exact queries so that the executor only sends them.

use super::report::Report;
use super::{Model, DNS_SERVICE, SYSTEM_NAMESPACE};
use crate::topology as spec;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// The resolver option the kubelet writes: names with fewer dots try the search list first.
pub const NDOTS: usize = 5;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsProbe {
    /// As written (`web`, `web.default.svc.cluster.local`).
    pub name: String,
    /// `A` or `SRV`.
    pub record: String,
    /// The nameserver of the pod's resolv.conf (the cluster's DNS VIP).
    pub server: Ipv4Addr,
    /// Fully qualified names in the order the resolver tries them; the first that
    /// exists answers.
    pub queries: Vec<String>,
    /// Expected answers, sorted: addresses (A), `PORT TARGET` (SRV). Empty with
    /// `nxdomain = false`: any answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<String>,
    /// The name must not exist.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nxdomain: bool,
}

/// glibc's order for `name` with `search` and `ndots`: as given first when it has at
/// least `ndots` dots (or ends with '.'), else after the search list.
pub fn queries(name: &str, search: &[String]) -> Vec<String> {
    if let Some(absolute) = name.strip_suffix('.') {
        return vec![format!("{absolute}.")];
    }
    let listed = search.iter().map(|d| format!("{name}.{d}."));
    let as_is = format!("{name}.");
    if name.matches('.').count() >= NDOTS {
        std::iter::once(as_is).chain(listed).collect()
    } else {
        listed.chain(std::iter::once(as_is)).collect()
    }
}

/// The probe of check `s` run from the pod whose namespace is `from_netns`.
pub fn resolve(
    model: &Model,
    report: &mut Report,
    s: &spec::CheckSpec,
    from_netns: Option<&str>,
) -> Option<(super::CheckProbe, Vec<String>)> {
    let name = s.dns.as_ref()?;
    let Some(dns) = &model.dns else {
        report.error(
            name.span(),
            "a dns check needs the cluster DNS",
            "no [dns]",
            "add a `[dns]` table to the topology",
        );
        return None;
    };
    let pod = model.clusters.iter().find_map(|c| {
        let p = c.pods.iter().find(|p| Some(p.netns.as_str()) == from_netns)?;
        Some((c, p))
    });
    let Some((cluster, pod)) = pod else {
        if let (Some(_), Some(from)) = (from_netns, &s.from) {
            report.error(
                from.span(),
                "a dns check runs from a pod",
                "not a pod",
                "hosts have no cluster resolv.conf; use `from = \"C0/c1\"`",
            );
        }
        return None;
    };
    let record = match s.record_type.as_ref().map(|t| (t, t.get_ref().to_ascii_uppercase())) {
        None => "A".to_string(),
        Some((_, t)) if t == "A" || t == "SRV" => t,
        Some((t, _)) => {
            report.error(
                t.span(),
                format!("record type `{}` is not probed", t.get_ref()),
                "A or SRV",
                "use type = \"A\" (the default) or type = \"SRV\"",
            );
            return None;
        }
    };
    let nxdomain = s.nxdomain.as_ref().is_some_and(|n| *n.get_ref());
    let mut answers: Vec<String> = s.addresses.as_ref().map(|a| a.get_ref().clone()).unwrap_or_default();
    if let (Some(a), true) = (&s.addresses, nxdomain) {
        report.error(
            a.span(),
            "a name that does not exist has no addresses",
            "nxdomain and addresses",
            "keep one of them",
        );
        return None;
    }
    for a in &answers {
        let ok = match record.as_str() {
            "A" => a.parse::<Ipv4Addr>().is_ok(),
            _ => a
                .split_once(' ')
                .is_some_and(|(port, target)| port.parse::<u16>().is_ok() && !target.trim().is_empty()),
        };
        if !ok {
            let span = s.addresses.as_ref().map_or(name.span(), |v| v.span());
            let hint = if record == "A" {
                "IPv4 addresses, e.g. [\"100.64.0.1\"]"
            } else {
                "\"PORT TARGET\", e.g. [\"80 web.default.svc.cluster.local\"]"
            };
            report.error(
                span,
                format!("`{a}` is not an expected {record} answer"),
                "bad answer",
                hint,
            );
            return None;
        }
    }
    // Targets are compared as the server writes them, without the final dot.
    for a in &mut answers {
        *a = a.trim_end_matches('.').to_ascii_lowercase();
    }
    answers.sort();
    let server = cluster.service(SYSTEM_NAMESPACE, DNS_SERVICE).map(|s| s.vip)?;
    let d = &dns.domain;
    let search = [format!("{}.svc.{d}", pod.namespace), format!("svc.{d}"), d.clone()];
    let probe = DnsProbe {
        name: name.get_ref().clone(),
        record,
        server,
        queries: queries(name.get_ref(), &search),
        answers,
        nxdomain,
    };
    Some((super::CheckProbe::Dns(probe), vec!["workloads".into()]))
}

#[cfg(test)]
mod tests {
    use super::queries;

    #[test]
    fn the_search_list_comes_first_below_ndots() {
        let search = ["default.svc.cluster.local".to_string(), "svc.cluster.local".into()];
        assert_eq!(
            queries("web", &search),
            ["web.default.svc.cluster.local.", "web.svc.cluster.local.", "web."]
        );
        assert_eq!(queries("a.b.c.d.e.f", &search)[0], "a.b.c.d.e.f.");
        assert_eq!(
            queries("web.default.svc.cluster.local.", &search),
            ["web.default.svc.cluster.local."]
        );
    }
}
