//! Small reusable helpers that report problems into a diagnostics list (duplicate
//! names, overlapping networks, port tables). The topology's own `[[checks]]` are in
//! `checks.rs`.

use crate::diagnostics::Diagnostic;
use crate::topology::Spanned;
use ipnetwork::{IpNetwork, Ipv4Network};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::ops::Range;

/// Collects diagnostics while the model is built; the build goes on after an error
/// so every problem is reported at once.
#[derive(Default)]
pub struct Report {
    pub items: Vec<Diagnostic>,
    /// Legal but likely unintended (kubectl would warn); shown, never fatal.
    pub warnings: Vec<Diagnostic>,
}

impl Report {
    pub fn push(&mut self, d: Diagnostic) {
        self.items.push(d);
    }

    pub fn error(&mut self, span: Range<usize>, message: impl Into<String>, label: &str, hint: &str) {
        let mut d = Diagnostic::at(span, message).label(label);
        if !hint.is_empty() {
            d = d.hint(hint);
        }
        self.items.push(d);
    }

    pub fn warning(&mut self, span: Range<usize>, message: impl Into<String>, label: &str, hint: &str) {
        let mut d = Diagnostic::at(span, message).label(label);
        if !hint.is_empty() {
            d = d.hint(hint);
        }
        self.warnings.push(d);
    }

    /// Parses an IPv4 CIDR written as a string, reporting a bad one.
    pub fn ipv4_net(&mut self, value: &Spanned<String>, what: &str) -> Option<Ipv4Network> {
        if !value.get_ref().contains('/') && value.get_ref().parse::<Ipv4Addr>().is_ok() {
            // ipnetwork would silently read a bare address as a /32.
            self.error(
                value.span(),
                format!("{what} `{}` has no prefix length", value.get_ref()),
                "expected a.b.c.d/len",
                &format!("add the prefix length, e.g. \"{}/16\"", value.get_ref()),
            );
            return None;
        }
        match value.get_ref().parse::<IpNetwork>() {
            Ok(IpNetwork::V4(net)) if net.network() == net.ip() => Some(net),
            Ok(IpNetwork::V4(net)) => {
                self.error(
                    value.span(),
                    format!("{what} `{}` has host bits set", value.get_ref()),
                    "not a network address",
                    &format!("write the network address: `{}/{}`", net.network(), net.prefix()),
                );
                None
            }
            Ok(IpNetwork::V6(_)) => {
                self.error(
                    value.span(),
                    format!(
                        "{what} `{}` is IPv6; knetsim emulates IPv4 networks only",
                        value.get_ref()
                    ),
                    "IPv6",
                    "use an IPv4 CIDR such as \"10.0.0.0/8\"",
                );
                None
            }
            Err(_) => {
                self.error(
                    value.span(),
                    format!("{what} `{}` is not a CIDR", value.get_ref()),
                    "expected a.b.c.d/len",
                    "write it like \"10.0.0.0/8\"",
                );
                None
            }
        }
    }

    pub fn ipv4_addr(&mut self, value: &Spanned<String>, what: &str) -> Option<Ipv4Addr> {
        match value.get_ref().parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(a)) => Some(a),
            Ok(std::net::IpAddr::V6(_)) => {
                self.error(
                    value.span(),
                    format!(
                        "{what} `{}` is IPv6; knetsim emulates IPv4 networks only",
                        value.get_ref()
                    ),
                    "IPv6",
                    "write an IPv4 address like \"100.64.10.1\"",
                );
                None
            }
            Err(_) => {
                self.error(
                    value.span(),
                    format!("{what} `{}` is not an IPv4 address", value.get_ref()),
                    "expected a.b.c.d",
                    "write it like \"100.64.10.1\"",
                );
                None
            }
        }
    }

    /// Names become namespace, interface and file names: keep them plain.
    pub fn identifier(&mut self, name: &Spanned<String>, what: &str, max_len: usize) -> bool {
        let n = name.get_ref();
        let ok_chars = !n.is_empty()
            && n.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok_chars {
            self.error(
                name.span(),
                format!("{what} `{n}` is not a valid name"),
                "invalid name",
                "names start with a letter and use only letters, digits, '-' and '_'",
            );
            return false;
        }
        if n.len() > max_len {
            self.error(
                name.span(),
                format!("{what} `{n}` is longer than {max_len} characters"),
                "too long",
                "it becomes part of Linux interface names, which are limited to 15 characters",
            );
            return false;
        }
        true
    }
}

/// Detects repeated names; the second occurrence is reported, pointing back to the first.
pub struct Unique<'a> {
    what: &'a str,
    /// e.g. "in cluster `C0`", appended to the message.
    scope: String,
    seen: HashMap<String, Range<usize>>,
}

impl<'a> Unique<'a> {
    pub fn new(what: &'a str) -> Self {
        Unique {
            what,
            scope: String::new(),
            seen: HashMap::new(),
        }
    }

    /// Names that must be unique within `scope` (e.g. "cluster `C0`").
    pub fn within(what: &'a str, scope: impl std::fmt::Display) -> Self {
        Unique {
            scope: format!(" in {scope}"),
            ..Self::new(what)
        }
    }

    /// Returns false (and reports) when `name` was seen before.
    pub fn insert(&mut self, report: &mut Report, name: &str, span: Range<usize>, text: &str) -> bool {
        if let Some(first) = self.seen.get(name) {
            let (line, col) = crate::diagnostics::line_col(text, first.start);
            report.error(
                span,
                format!("duplicate {} `{name}`{}", self.what, self.scope),
                "declared again here",
                &format!("`{name}` is first declared at line {line}, column {col}; rename or remove one of them"),
            );
            false
        } else {
            self.seen.insert(name.to_string(), span);
            true
        }
    }
}

/// Who holds a port on a host, and where the topology asks for it (None for the
/// router's built-in listeners, which no line of the topology declares).
struct PortClaim {
    owner: String,
    span: Option<Range<usize>>,
}

/// Ports bound on one host, to find clashes between ingresses, router listeners and workloads.
#[derive(Default)]
pub struct PortTable {
    used: HashMap<(String, u16), PortClaim>,
}

impl PortTable {
    /// Claims `port` on `host` for `owner`. A clash is reported where the topology
    /// asks for the port: at `span`, or, for an implicit claim (`span` None), at the
    /// earlier claim's span, falling back to `fallback`.
    pub fn claim(
        &mut self,
        report: &mut Report,
        host: &str,
        port: u16,
        owner: String,
        span: Option<Range<usize>>,
        fallback: Range<usize>,
    ) {
        let key = (host.to_string(), port);
        match (self.used.get(&key), span) {
            (Some(prev), Some(span)) => report.error(
                span,
                format!("port {port} on {host} is already used by {}", prev.owner),
                "port clash",
                "pick another port or another worker",
            ),
            (Some(prev), None) => report.error(
                prev.span.clone().unwrap_or(fallback),
                format!(
                    "port {port} on {host}, used by {}, is also needed by {owner}",
                    prev.owner
                ),
                "port clash",
                "pick another port, another worker, or move the router with interconnect.router_worker",
            ),
            (None, span) => {
                self.used.insert(key, PortClaim { owner, span });
            }
        }
    }
}

pub fn overlaps(a: Ipv4Network, b: Ipv4Network) -> bool {
    a.contains(b.network()) || b.contains(a.network())
}
