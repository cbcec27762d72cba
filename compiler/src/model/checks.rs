//! `[[checks]]`: validation probes carried in the topology (netlab's `validate`,
//! Mininet's `pingall`). Resolved here against the built model: every node and
//! target becomes a namespace and an address, so `knetsim test` needs no topology
//! knowledge. Serialized as the bundle's `checks.json`.

use super::report::{Report, Unique};
use super::{Cluster, Model};
use crate::diagnostics::closest;
use crate::topology::{self as spec, BodySpec, Spanned};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::ops::Range;

const DEFAULT_PING_COUNT: u32 = 2;
const DEFAULT_TIMEOUT_SECS: u32 = 2;
/// Requests when each of several bodies must be seen: with two balanced backends
/// the chance that one is never picked in 20 new connections is 2 in a million.
const DEFAULT_TRIES_EACH: u32 = 20;
const MAX_COUNT: u32 = 1000;
const MAX_TIMEOUT_SECS: u32 = 300;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    /// The node as written (`C0w1`, `C0/c1`).
    pub from: String,
    /// Its network namespace.
    pub netns: String,
    pub probe: CheckProbe,
    pub expect: Expectation,
    /// Seconds one reply or response may take.
    pub timeout: u32,
    /// Components (`ingress`, `interconnect`, `workloads`) the probe goes through:
    /// when `up --skip` left one out, the check is reported as skipped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckProbe {
    Ping {
        /// As written (`C0/c2`, `10.0.0.4`).
        target: String,
        address: Ipv4Addr,
        count: u32,
    },
    Http {
        /// As written.
        url: String,
        /// With node names replaced by their addresses.
        request: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<BodyMatch>,
        /// Requests made, each on a new connection.
        tries: u32,
    },
    /// Every pod to every pod (`from` is the cluster, `netns` empty).
    Matrix(super::matrix::Matrix),
    /// A DNS lookup as the pod's resolver makes it (see `dns_check.rs`).
    Dns(super::dns_check::DnsProbe),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyMatch {
    /// Every response contains this text.
    Contains(String),
    /// Every response contains one of these texts, and each is seen at least once.
    EachOf(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expectation {
    Success,
    Failure,
}

impl Expectation {
    pub fn name(self) -> &'static str {
        match self {
            Expectation::Success => "success",
            Expectation::Failure => "failure",
        }
    }
}

impl CheckProbe {
    /// `ping C0/c2` or `http http://...`, for tables.
    pub fn describe(&self) -> String {
        match self {
            CheckProbe::Ping { target, .. } => format!("ping {target}"),
            CheckProbe::Http { url, .. } => format!("http {url}"),
            CheckProbe::Matrix(m) => format!("matrix {}/{} of {} pods", m.protocol, m.port, m.pods.len()),
            CheckProbe::Dns(d) => format!("dns {} {}", d.record, d.name),
        }
    }
}

/// A destination named in a check: its address and the components behind it.
struct Target {
    address: Ipv4Addr,
    /// A pod or a service VIP (its workloads answer http).
    workload: bool,
}

/// A parsed `http://host[:port][/path]`.
struct Url<'u> {
    host: &'u str,
    /// As written, if it was.
    port: Option<u16>,
    /// Everything after the authority (`/path?query`), possibly empty.
    rest: &'u str,
}

fn parse_url(url: &str) -> Result<Url<'_>, (String, String)> {
    let Some(after) = url.strip_prefix("http://") else {
        let hint = if url.starts_with("https://") {
            "only plain http is probed; use http://".to_string()
        } else {
            format!("write a full URL, e.g. \"http://{url}\"")
        };
        return Err((format!("`{url}` is not an http:// URL"), hint));
    };
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (authority, rest) = after.split_at(end);
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => match p.parse::<u16>() {
            Ok(port) if port > 0 => (h, Some(port)),
            _ => {
                return Err((
                    format!("`{p}` in `{url}` is not a port"),
                    "ports are 1..=65535".to_string(),
                ))
            }
        },
        None => (authority, None),
    };
    if host.is_empty() || host.contains('@') || host.contains('[') {
        return Err((
            format!("`{url}` has no usable host"),
            "write http://ADDRESS[:PORT]/PATH, with an IPv4 address, `localhost`, a host (C0w1) or NAME.CLUSTER"
                .to_string(),
        ));
    }
    if rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err((
            format!("`{url}` contains a space or control character"),
            "percent-encode it (%20)".to_string(),
        ));
    }
    Ok(Url { host, port, rest })
}

pub(super) struct Resolver<'m> {
    pub(super) model: &'m Model,
    /// Clusters already reported as invalid: no follow-on errors for them.
    unusable: &'m HashSet<String>,
}

impl Resolver<'_> {
    fn hosts(&self) -> impl Iterator<Item = &super::Host> {
        self.model.hosts().map(|(_, h)| h)
    }

    /// Known node names, for hints.
    fn node_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.hosts().map(|h| h.name.clone()).collect();
        for c in &self.model.clusters {
            names.extend(c.pods.iter().map(|p| c.pod_id(p)));
        }
        names
    }

    pub(super) fn unknown(
        &self,
        report: &mut Report,
        value: &Spanned<String>,
        name: &str,
        what: &str,
        known: &[String],
    ) {
        let known: Vec<&str> = known.iter().map(String::as_str).collect();
        let mut listed = known.iter().take(8).copied().collect::<Vec<_>>().join(", ");
        if known.len() > 8 {
            listed.push_str(", ...");
        }
        let hint = match closest(name, &known) {
            Some(c) => format!("did you mean `{c}`? (known: {listed})"),
            None => format!("known: {listed}"),
        };
        report.error(
            value.span(),
            format!("unknown {what} `{name}`"),
            &format!("no such {what}"),
            &hint,
        );
    }

    pub(super) fn cluster(&self, report: &mut Report, value: &Spanned<String>, name: &str) -> Option<&Cluster> {
        if self.unusable.contains(name) {
            return None;
        }
        let c = self.model.cluster(name);
        if c.is_none() {
            let known: Vec<String> = self.model.clusters.iter().map(|c| c.name.clone()).collect();
            self.unknown(report, value, name, "cluster", &known);
        }
        c
    }

    /// `from`: a host's or a pod's namespace, and its own address (for `localhost`).
    fn node(&self, report: &mut Report, from: &Spanned<String>) -> Option<(String, Ipv4Addr)> {
        let name = from.get_ref();
        if name.contains('/') {
            let Some((cluster, ns, pod)) = super::split_workload_id(name) else {
                self.unknown(report, from, name, "node", &self.node_names());
                return None;
            };
            let c = self.cluster(report, from, cluster)?;
            // A deleted pod (`pod rm --keep-endpoints`) still resolves: its check fails
            // when run, which is what the deck's exercise wants to show.
            return match c.pod(ns, pod) {
                Some(p) => Some((p.netns.clone(), p.ip)),
                None => {
                    self.unknown(report, from, name, "node", &self.node_names());
                    None
                }
            };
        }
        if let Some(h) = self.hosts().find(|h| &h.name == name) {
            return Some((h.netns.clone(), h.ip));
        }
        if !self.unusable.iter().any(|u| name.starts_with(u.as_str())) {
            self.unknown(report, from, name, "node", &self.node_names());
        }
        None
    }

    /// An address, a host, `CLUSTER/NAME` or `NAME.CLUSTER` (a pod, else a service).
    fn target(&self, report: &mut Report, value: &Spanned<String>, name: &str) -> Option<Target> {
        if let Ok(address) = name.parse::<Ipv4Addr>() {
            let workload = self.model.clusters.iter().any(|c| {
                c.pods.iter().any(|p| p.ip == address) || c.services.iter().any(|s| s.vip == address && !s.headless)
            });
            return Some(Target { address, workload });
        }
        if name.chars().all(|c| c.is_ascii_digit() || c == '.') {
            report.error(
                value.span(),
                format!("`{name}` is not an IPv4 address"),
                "bad address",
                "write four numbers 0..=255, e.g. 10.0.0.3",
            );
            return None;
        }
        // `C0/c1`, `C0/prod/web`, `c1.C0`, `web.prod.C0`.
        let scoped = if name.contains('/') {
            super::split_workload_id(name)
        } else {
            name.rsplit_once('.').map(|(rest, c)| match rest.split_once('.') {
                Some((n, ns)) => (c, ns, n),
                None => (c, super::DEFAULT_NAMESPACE, rest),
            })
        };
        if let Some((cluster, ns, local)) = scoped {
            let c = self.cluster(report, value, cluster)?;
            // A deleted pod keeps its address (its endpoints are stale): pinging it fails.
            if let Some(p) = c.pod(ns, local) {
                return Some(Target {
                    address: p.ip,
                    workload: true,
                });
            }
            if let Some(s) = c.service(ns, local) {
                if s.headless {
                    report.error(
                        value.span(),
                        format!("service `{name}` is headless: it has no VIP"),
                        "headless",
                        "name one of its pods, or look its name up with a dns check",
                    );
                    return None;
                }
                return Some(Target {
                    address: s.vip,
                    workload: true,
                });
            }
            // Known names in the form this one is written in, so that a typo finds its match.
            let qualified = |ns: &str, n: &str| match (name.contains('/'), ns == super::DEFAULT_NAMESPACE) {
                (true, _) => super::workload_id(cluster, ns, n),
                (false, true) => format!("{n}.{cluster}"),
                (false, false) => format!("{n}.{ns}.{cluster}"),
            };
            let known: Vec<String> = (c.pods.iter().map(|p| qualified(&p.namespace, &p.name)))
                .chain(c.services.iter().map(|s| qualified(&s.namespace, &s.name)))
                .collect();
            self.unknown(report, value, name, "pod or service", &known);
            return None;
        }
        if let Some(h) = self.hosts().find(|h| h.name == name) {
            return Some(Target {
                address: h.ip,
                workload: false,
            });
        }
        let known: Vec<String> = self.hosts().map(|h| h.name.clone()).collect();
        self.unknown(report, value, name, "target", &known);
        None
    }

    /// Components an http request to `address:port` passes through.
    fn needs_http(&self, address: Ipv4Addr, port: u16, target_is_workload: bool) -> Vec<String> {
        let mut needs = Vec::new();
        let ingress = self.model.clusters.iter().any(|c| {
            c.ingresses.iter().any(|i| {
                i.port == port
                    && c.workers
                        .iter()
                        .any(|w| w.host.name == i.worker && w.host.ip == address)
            })
        });
        let router = self
            .model
            .routers
            .iter()
            .any(|r| r.ip == address && r.tcp_listeners.iter().any(|l| l.port == port));
        if ingress {
            needs.push("ingress".to_string());
        }
        if router {
            needs.push("interconnect".to_string());
        }
        if ingress || router || target_is_workload {
            needs.push("workloads".to_string());
        }
        needs
    }
}

fn positive(report: &mut Report, value: &Option<Spanned<u32>>, what: &str, max: u32) -> Option<u32> {
    let v = value.as_ref()?;
    let n = *v.get_ref();
    if n == 0 || n > max {
        report.error(
            v.span(),
            format!("{what} must be between 1 and {max}, got {n}"),
            "out of range",
            "",
        );
        return None;
    }
    Some(n)
}

/// Reports an option that the check's probe kind does not use.
fn not_for(report: &mut Report, span: Option<Range<usize>>, option: &str, kind: &str, other: &str) {
    if let Some(span) = span {
        report.error(
            span,
            format!("`{option}` does not apply to {kind} checks"),
            "not used",
            &format!("`{option}` belongs to {other} checks; remove it"),
        );
    }
}

/// Resolves every check; problems go to `report`.
pub fn resolve(
    specs: &[spec::CheckSpec],
    model: &Model,
    unusable: &HashSet<String>,
    report: &mut Report,
    text: &str,
) -> Vec<Check> {
    let r = Resolver { model, unusable };
    let mut names = Unique::new("check");
    let mut out = Vec::new();
    for s in specs {
        let name = s.name.get_ref();
        let mut ok = names.insert(report, name, s.name.span(), text);
        if name.trim().is_empty() || name.chars().any(char::is_control) {
            report.error(
                s.name.span(),
                "a check needs a name",
                "empty name",
                "name it after what it shows, e.g. \"pod-to-pod across workers\"",
            );
            ok = false;
        }
        if let Some(m) = &s.matrix {
            if let (Some(matrix), true) = (super::matrix::resolve(&r, report, s, m), ok) {
                out.push(Check {
                    name: name.clone(),
                    from: matrix.cluster.clone(),
                    netns: String::new(),
                    probe: CheckProbe::Matrix(matrix),
                    expect: Expectation::Success,
                    timeout: positive(report, &s.timeout, "timeout (seconds)", MAX_TIMEOUT_SECS).unwrap_or(1),
                    needs: vec!["workloads".into()],
                });
            }
            continue;
        }
        let Some(from_spec) = &s.from else {
            report.error(
                s.name.span(),
                format!("check `{name}` has no `from`"),
                "from where?",
                "add from = \"C0/c1\" (a pod) or from = \"C0w1\" (a host)",
            );
            continue;
        };
        let from = r.node(report, from_spec);
        let expect = match &s.expect {
            None => Some(Expectation::Success),
            Some(e) => match e.get_ref().as_str() {
                "success" => Some(Expectation::Success),
                "failure" => Some(Expectation::Failure),
                other => {
                    report.error(
                        e.span(),
                        format!("unknown expectation `{other}`"),
                        "expected success or failure",
                        "write expect = \"success\" (the default) or expect = \"failure\"",
                    );
                    None
                }
            },
        };
        let timeout = positive(report, &s.timeout, "timeout (seconds)", MAX_TIMEOUT_SECS);
        let dns_only = [
            s.record_type.as_ref().map(|v| v.span()),
            s.addresses.as_ref().map(|v| v.span()),
            s.nxdomain.as_ref().map(|v| v.span()),
        ];
        let probe = match (&s.ping, &s.http) {
            _ if s.dns.is_some() => {
                if let Some(other) = s.ping.as_ref().or(s.http.as_ref()) {
                    report.error(
                        other.span(),
                        format!("check `{name}` has a dns probe and another one"),
                        "second probe",
                        "one probe per check: split it into two [[checks]]",
                    );
                }
                super::dns_check::resolve(model, report, s, from.as_ref().map(|f| f.0.as_str()))
            }
            (Some(_), Some(http)) => {
                report.error(
                    http.span(),
                    format!("check `{name}` has both a ping and an http probe"),
                    "second probe",
                    "one probe per check: split it into two [[checks]]",
                );
                None
            }
            (None, None) => {
                report.error(
                    s.name.span(),
                    format!("check `{name}` has no probe"),
                    "nothing to run",
                    "add `ping = \"C0/c2\"`, `http = \"http://10.0.0.3:8001/svc1\"` or `dns = \"web.default.svc.cluster.local\"`",
                );
                None
            }
            (Some(ping), None) => {
                for span in dns_only.iter().flatten() {
                    not_for(report, Some(span.clone()), "type/addresses/nxdomain", "ping", "dns");
                }
                not_for(report, s.body.as_ref().map(|b| b.span()), "body", "ping", "http");
                not_for(report, s.tries.as_ref().map(|b| b.span()), "tries", "ping", "http");
                let count = positive(report, &s.count, "count", MAX_COUNT);
                r.target(report, ping, ping.get_ref()).map(|t| {
                    let probe = CheckProbe::Ping {
                        target: ping.get_ref().clone(),
                        address: t.address,
                        count: count.unwrap_or(DEFAULT_PING_COUNT),
                    };
                    (probe, Vec::new())
                })
            }
            (None, Some(http)) => {
                for span in dns_only.iter().flatten() {
                    not_for(report, Some(span.clone()), "type/addresses/nxdomain", "http", "dns");
                }
                not_for(report, s.count.as_ref().map(|b| b.span()), "count", "http", "ping");
                http_probe(&r, report, s, http, expect, from.as_ref().map(|f| f.1))
            }
        };
        if let (Some((probe, needs)), Some(expect), Some((netns, _)), true) = (probe, expect, from, ok) {
            out.push(Check {
                name: name.clone(),
                from: from_spec.get_ref().clone(),
                netns,
                probe,
                expect,
                timeout: timeout.unwrap_or(DEFAULT_TIMEOUT_SECS),
                needs,
            });
        }
    }
    out
}

/// The http probe of a check and the components it needs.
fn http_probe(
    r: &Resolver,
    report: &mut Report,
    s: &spec::CheckSpec,
    http: &Spanned<String>,
    expect: Option<Expectation>,
    own_address: Option<Ipv4Addr>,
) -> Option<(CheckProbe, Vec<String>)> {
    let tries = positive(report, &s.tries, "tries", MAX_COUNT);
    let body = match &s.body {
        None => None,
        Some(b) if expect == Some(Expectation::Failure) => {
            report.error(
                b.span(),
                "a check that expects failure cannot expect a body",
                "no response is expected",
                "remove `body`, or expect success",
            );
            None
        }
        Some(b) => match b.get_ref() {
            BodySpec::Every(t) if !t.is_empty() => Some(BodyMatch::Contains(t.clone())),
            BodySpec::Each(list) if !list.is_empty() && list.iter().all(|t| !t.is_empty()) => {
                let n = list.len() as u32;
                if let Some(t) = tries.filter(|t| *t < n) {
                    report.error(
                        s.tries.as_ref().map(|t| t.span()).unwrap_or(b.span()),
                        format!("{t} tries cannot show {n} different bodies"),
                        "too few",
                        &format!("make tries at least {n} (default {DEFAULT_TRIES_EACH})"),
                    );
                }
                Some(BodyMatch::EachOf(list.clone()))
            }
            _ => {
                report.error(
                    b.span(),
                    "an empty body text matches anything",
                    "empty",
                    "give the text the response must contain, or remove `body`",
                );
                None
            }
        },
    };
    let url = match parse_url(http.get_ref()) {
        Ok(u) => u,
        Err((message, hint)) => {
            report.error(http.span(), message, "bad URL", &hint);
            return None;
        }
    };
    let (address, workload, host) = if url.host == "localhost" {
        // Answered by the probing node itself.
        let own = own_address?;
        (own, false, url.host.to_string())
    } else {
        let t = r.target(report, http, url.host)?;
        (t.address, t.workload, t.address.to_string())
    };
    let port = url.port.map(|p| format!(":{p}")).unwrap_or_default();
    let request = format!("http://{host}{port}{}", url.rest);
    let default_tries = match &body {
        Some(BodyMatch::EachOf(_)) => DEFAULT_TRIES_EACH,
        _ => 1,
    };
    let probe = CheckProbe::Http {
        url: http.get_ref().clone(),
        request,
        body,
        tries: tries.unwrap_or(default_tries),
    };
    Some((probe, r.needs_http(address, url.port.unwrap_or(80), workload)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_host_port_and_rest() {
        let u = parse_url("http://10.0.0.3:8001/svc1").ok().unwrap();
        assert_eq!((u.host, u.port, u.rest), ("10.0.0.3", Some(8001), "/svc1"));
        let u = parse_url("http://s1.C0").ok().unwrap();
        assert_eq!((u.host, u.port, u.rest), ("s1.C0", None, ""));
        let u = parse_url("http://localhost:8001?x=1").ok().unwrap();
        assert_eq!((u.host, u.port, u.rest), ("localhost", Some(8001), "?x=1"));
        for bad in [
            "10.0.0.3:8001",
            "https://x",
            "http://:80/",
            "http://x:0/",
            "http://x:99999",
            "http://x/a b",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod resolution {
    use super::*;
    use crate::{check, CompileOptions, Source};

    fn checks_of(text: &str) -> Vec<Check> {
        let model = check(&Source::new("t.toml", text), &CompileOptions::named("v"))
            .unwrap_or_else(|d| panic!("{}", d.render()));
        model.checks
    }

    fn errors_of(text: &str) -> String {
        check(&Source::new("t.toml", text), &CompileOptions::named("v"))
            .map(|_| String::new())
            .unwrap_or_else(|d| d.render())
    }

    #[test]
    fn the_default_topologys_checks_resolve_to_addresses_and_components() {
        let checks = check(&Source::default_topology(), &CompileOptions::named("v"))
            .unwrap()
            .checks;
        let by_name = |n: &str| checks.iter().find(|c| c.name == n).unwrap_or_else(|| panic!("{n}"));
        let vip = by_name("vip answers ping");
        assert_eq!(vip.netns, "v-k0_c1");
        assert_eq!(
            vip.probe,
            CheckProbe::Ping {
                target: "C0/vip".into(),
                address: "100.64.10.1".parse().unwrap(),
                count: 5
            }
        );
        assert!(vip.needs.is_empty());
        let underlay = by_name("underlay across clusters");
        assert_eq!(underlay.netns, "v-C0w1");
        assert!(matches!(underlay.probe, CheckProbe::Ping { address, .. } if address.to_string() == "10.0.0.8"));
        let balanced = by_name("vip balances backends");
        assert_eq!(balanced.needs, ["workloads"]);
        assert!(
            matches!(&balanced.probe, CheckProbe::Http { tries: 20, body: Some(BodyMatch::EachOf(b)), .. } if b.len() == 2)
        );
        assert_eq!(by_name("ingress on its worker").needs, ["ingress", "workloads"]);
        assert_eq!(by_name("ingress from another host").needs, ["ingress", "workloads"]);
        assert_eq!(by_name("ingress from another host").netns, "v-C0e1");
        let across = by_name("service across clusters");
        assert_eq!(across.needs, ["interconnect", "workloads"]);
        assert_eq!((across.timeout, across.expect), (5, Expectation::Success));
    }

    #[test]
    fn names_in_urls_become_addresses() {
        let text = r#"
[[clusters]]
name = "C0"
pods = [{ name = "c1", worker = "w1" }, { name = "web", worker = "w2", command = ["knetsim", "serve"], ports = [80] }]
services = [{ name = "s", vip = "100.64.0.9", pods = ["web"], ports = [80] }]

[[checks]]
name = "by pod"
from = "C0w1"
http = "http://web.C0/index.html"

[[checks]]
name = "by service"
from = "C0/c1"
http = "http://s.C0:80/"
expect = "failure"

[[checks]]
name = "host"
from = "C0e1"
ping = "C0w2"
"#;
        let checks = checks_of(text);
        let CheckProbe::Http { request, tries, .. } = &checks[0].probe else {
            panic!()
        };
        assert!(
            request.starts_with("http://11.") && request.ends_with("/index.html"),
            "{request}"
        );
        assert_eq!(*tries, 1);
        assert_eq!(checks[0].needs, ["workloads"]);
        let CheckProbe::Http { request, .. } = &checks[1].probe else {
            panic!()
        };
        assert_eq!(request, "http://100.64.0.9:80/");
        assert_eq!(checks[1].expect, Expectation::Failure);
        assert!(matches!(checks[2].probe, CheckProbe::Ping { .. }));
    }

    #[test]
    fn bad_checks_are_reported_where_they_are_written() {
        let base = "[[clusters]]\nname = \"C0\"\npods = [{ name = \"c1\", worker = \"w1\" }]\n";
        let cases = [
            ("[[checks]]\nname = \"x\"\nfrom = \"C0w9\"\nping = \"C0/c1\"\n", "t.toml:7:8: unknown node `C0w9`"),
            ("[[checks]]\nname = \"x\"\nfrom = \"C0w1\"\nping = \"C0/c7\"\n", "t.toml:8:8: unknown pod or service"),
            ("[[checks]]\nname = \"x\"\nfrom = \"C0w1\"\n", "t.toml:6:8: check `x` has no probe"),
            (
                "[[checks]]\nname = \"x\"\nfrom = \"C0w1\"\nping = \"C0w2\"\nhttp = \"http://C0w2/\"\n",
                "t.toml:9:8: check `x` has both",
            ),
            ("[[checks]]\nname = \"x\"\nfrom = \"C0w1\"\nhttp = \"C0w2:80\"\n", "t.toml:8:8: `C0w2:80` is not an http:// URL"),
            ("[[checks]]\nname = \"x\"\nfrom = \"C0w1\"\nping = \"10.0.0\"\n", "is not an IPv4 address"),
            (
                "[[checks]]\nname = \"x\"\nfrom = \"C0w1\"\nping = \"C0w2\"\nexpect = \"ok\"\n",
                "t.toml:9:10: unknown expectation `ok`",
            ),
            (
                "[[checks]]\nname = \"x\"\nfrom = \"C0w1\"\nping = \"C0w2\"\nbody = \"hi\"\n",
                "`body` does not apply to ping checks",
            ),
            (
                "[[checks]]\nname = \"x\"\nfrom = \"C0w1\"\nhttp = \"http://C0w2/\"\nbody = [\"a\", \"b\"]\ntries = 1\n",
                "1 tries cannot show 2 different bodies",
            ),
            (
                "[[checks]]\nname = \"x\"\nfrom = \"C0w1\"\nhttp = \"http://C0w2/\"\nexpect = \"failure\"\nbody = \"a\"\n",
                "cannot expect a body",
            ),
            ("[[checks]]\nname = \"x\"\nfrom = \"C0w1\"\nping = \"C0w2\"\ncount = 0\n", "count must be between 1"),
            (
                "[[checks]]\nname = \"x\"\nfrom = \"C0w1\"\nping = \"C0w2\"\n[[checks]]\nname = \"x\"\nfrom = \"C0w1\"\nping = \"C0w2\"\n",
                "t.toml:10:8: duplicate check `x`",
            ),
        ];
        for (checks, expected) in cases {
            let text = format!("{base}\n{checks}");
            let errors = errors_of(&text);
            assert!(
                errors.contains(expected),
                "{checks}\nexpected {expected:?} in:\n{errors}"
            );
            assert!(errors.ends_with("1 error in t.toml\n"), "{checks}\n{errors}");
        }
    }
}
