//! Ports: a pod's container ports (named ones for NetworkPolicy and SRV records) and
//! a service's ports (named ones get SRV records).

use super::workloads::is_port_name;
use super::*;

impl Builder<'_> {
    /// A pod's container ports checked (each once per protocol, names unique and
    /// IANA_SVC_NAMEs as Kubernetes requires); returns the named ones.
    pub(super) fn container_ports(&mut self, p: &spec::PodSpec) -> Vec<NamedPort> {
        let pod = p.name.get_ref();
        let mut numbers = Unique::within("port", format!("pod `{pod}`"));
        let mut names = Unique::within("port name", format!("pod `{pod}`"));
        let mut named = Vec::new();
        for port in &p.ports {
            let cp = port.get_ref();
            if cp.port == 0 {
                self.report.error(
                    port.span(),
                    format!("port 0 of pod `{pod}` is not usable"),
                    "bad port",
                    "ports are 1..=65535 (the pod's readiness is a TCP connect to its first port)",
                );
                continue;
            }
            let protocol = match &cp.protocol {
                None => "tcp".to_string(),
                Some(v) => match v.get_ref().to_ascii_lowercase().as_str() {
                    p @ ("tcp" | "udp") => p.to_string(),
                    _ => {
                        self.report.error(
                            v.span(),
                            format!("protocol `{}` of pod `{pod}` is not supported", v.get_ref()),
                            "bad protocol",
                            "use \"TCP\" or \"UDP\"",
                        );
                        continue;
                    }
                },
            };
            numbers.insert(
                &mut self.report,
                &format!("{}/{protocol}", cp.port),
                port.span(),
                self.text,
            );
            let Some(name) = &cp.name else { continue };
            if self.port_name(name, &mut names) {
                named.push(NamedPort {
                    name: name.get_ref().clone(),
                    port: cp.port,
                    protocol,
                });
            }
        }
        named
    }

    /// A port name checked as Kubernetes checks an IANA_SVC_NAME, and unique among
    /// `names`; false when reported.
    fn port_name(&mut self, name: &Spanned<String>, names: &mut Unique) -> bool {
        if !is_port_name(name.get_ref()) {
            self.report.error(
                name.span(),
                format!("port name `{}` is not valid", name.get_ref()),
                "invalid port name",
                "as in Kubernetes (IANA_SVC_NAME): at most 15 lower-case letters, digits and '-', with a letter, no '--', not starting or ending with '-'",
            );
            return false;
        }
        names.insert(&mut self.report, name.get_ref(), name.span(), self.text)
    }

    pub(super) fn service_ports(&mut self, s: &spec::ServiceSpec) -> Vec<ServicePort> {
        let mut out: Vec<ServicePort> = Vec::new();
        let mut names = Unique::within("port name", format!("service `{}`", s.name.get_ref()));
        for p in &s.ports {
            let name = match p.get_ref() {
                PortSpec::Full { name: Some(n), .. } => {
                    if !self.port_name(n, &mut names) {
                        continue;
                    }
                    Some(n.get_ref().clone())
                }
                _ => None,
            };
            let (port, target_port, protocol, protocol_span) = match p.get_ref() {
                PortSpec::Number(n) => (*n, *n, "tcp".to_string(), p.span()),
                PortSpec::Full {
                    port,
                    target_port,
                    protocol,
                    ..
                } => (
                    *port,
                    target_port.unwrap_or(*port),
                    protocol
                        .as_ref()
                        .map(|p| p.get_ref().to_ascii_lowercase())
                        .unwrap_or_else(|| "tcp".into()),
                    protocol.as_ref().map(|p| p.span()).unwrap_or(p.span()),
                ),
            };
            if port == 0 || target_port == 0 {
                self.report
                    .error(p.span(), "port 0 is not usable", "bad port", "ports are 1..=65535");
                continue;
            }
            if protocol != "tcp" && protocol != "udp" {
                self.report.error(
                    protocol_span,
                    format!(
                        "protocol `{protocol}` of service `{}` port {port} is not supported",
                        s.name.get_ref()
                    ),
                    "bad protocol",
                    "use \"tcp\" or \"udp\"",
                );
                continue;
            }
            if out.iter().any(|o| o.port == port && o.protocol == protocol) {
                self.report.error(
                    p.span(),
                    format!("service `{}` declares {protocol} port {port} twice", s.name.get_ref()),
                    "duplicate port",
                    "each port/protocol once",
                );
                continue;
            }
            out.push(ServicePort {
                port,
                target_port,
                protocol,
                name,
            });
        }
        out
    }
}
