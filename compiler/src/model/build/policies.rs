//! `[[clusters.network_policies]]` -> model: checked as the API server validates a
//! NetworkPolicy (selectors, CIDRs, ports), and warned about where kubectl would
//! accept something that does nothing (a selector matching no pod, a named port no
//! pod defines).

use super::*;
use crate::model::policy::{
    LabelSelector, NetworkPolicy, Operator, Peer, PolicyPort, PolicyRule, PortRef, Requirement,
};

impl Builder<'_> {
    pub(super) fn network_policies(&mut self, cs: &spec::ClusterSpec, cluster: &mut Cluster) {
        let mut names: HashMap<String, Unique> = HashMap::new();
        if let (Some(first), false) = (cs.network_policies.first(), cluster.flannel.ip_masq) {
            // Without flanneld's -ip-masq the bridge plugin masquerades pod traffic that
            // leaves its worker, and a policy would see the worker, not the pod.
            self.report.error(
                first.name.span(),
                format!(
                    "network policies in cluster `{}` need pod addresses kept across workers",
                    cluster.name
                ),
                "sources would be masqueraded",
                "set flannel = { ip_masq = true } in the cluster (as Canal, flannel with Calico's policies, runs flanneld with --ip-masq)",
            );
        }
        for np in &cs.network_policies {
            self.report.identifier(&np.name, "network policy name", 63);
            let namespace = self.namespace_of(&np.namespace, cluster);
            let unique = names
                .entry(namespace.clone())
                .or_insert_with(|| Unique::within("network policy", format!("namespace `{namespace}`")));
            if !unique.insert(&mut self.report, np.name.get_ref(), np.name.span(), self.text) {
                continue;
            }
            let pod_selector = self.selector(&np.pod_selector);
            let (mut ingress_type, mut egress_type) =
                (true, np.egress.as_ref().is_some_and(|e| !e.get_ref().is_empty()));
            // An empty list is defaulted as a missing one, as the API server does.
            if let Some(types) = np.policy_types.as_ref().filter(|t| !t.get_ref().is_empty()) {
                (ingress_type, egress_type) = (false, false);
                for t in types.get_ref() {
                    match t.get_ref().as_str() {
                        "Ingress" => ingress_type = true,
                        "Egress" => egress_type = true,
                        other => self.report.error(
                            t.span(),
                            format!("unknown policy type `{other}`"),
                            "not a policy type",
                            "use \"Ingress\" and/or \"Egress\"",
                        ),
                    }
                }
            }
            let ingress = np.ingress.as_ref().map(|r| {
                r.get_ref()
                    .iter()
                    .map(|rule| self.rule(cluster, &namespace, rule.from.as_deref(), rule.ports.as_deref(), true))
                    .collect::<Vec<_>>()
            });
            let egress = np.egress.as_ref().map(|r| {
                r.get_ref()
                    .iter()
                    .map(|rule| self.rule(cluster, &namespace, rule.to.as_deref(), rule.ports.as_deref(), false))
                    .collect::<Vec<_>>()
            });
            let policy = NetworkPolicy {
                name: np.name.get_ref().clone(),
                namespace: namespace.clone(),
                pod_selector,
                // Rules of a direction the policy's types leave out are ignored, as in Kubernetes.
                ingress: ingress_type.then(|| ingress.unwrap_or_default()),
                egress: egress_type.then(|| egress.unwrap_or_default()),
            };
            if cluster.has_namespace(&namespace) && cluster.selected_by(&policy).next().is_none() {
                self.report.warning(
                    np.pod_selector.span(),
                    format!(
                        "network policy `{}` selects no pod of namespace `{namespace}`",
                        np.name.get_ref()
                    ),
                    "matches nothing",
                    "the policy applies to no pod until one with these labels exists",
                );
            }
            self.unused_named_ports(cluster, &policy, np);
            cluster.network_policies.push(policy);
        }
    }

    fn rule(
        &mut self,
        cluster: &Cluster,
        namespace: &str,
        peers: Option<&[Spanned<spec::PeerSpec>]>,
        ports: Option<&[Spanned<spec::PolicyPortSpec>]>,
        ingress: bool,
    ) -> PolicyRule {
        let peers = peers
            .unwrap_or_default()
            .iter()
            .filter_map(|p| self.peer(cluster, namespace, p, ingress))
            .collect();
        let ports = ports
            .unwrap_or_default()
            .iter()
            .filter_map(|p| self.policy_port(p))
            .collect();
        PolicyRule { peers, ports }
    }

    fn peer(
        &mut self,
        cluster: &Cluster,
        namespace: &str,
        peer: &Spanned<spec::PeerSpec>,
        ingress: bool,
    ) -> Option<Peer> {
        let p = peer.get_ref();
        let field = if ingress { "from" } else { "to" };
        match (&p.pod_selector, &p.namespace_selector, &p.ip_block) {
            (None, None, None) => {
                self.report.error(
                    peer.span(),
                    format!("an empty `{field}` peer selects nothing"),
                    "empty peer",
                    "give pod_selector, namespace_selector (or both), or ip_block; to allow everything leave the rule's peers out",
                );
                None
            }
            (Some(_), _, Some(b)) | (_, Some(_), Some(b)) => {
                self.report.error(
                    b.span(),
                    "ip_block cannot be combined with a selector in one peer",
                    "ip_block with a selector",
                    "write them as two peers of the list",
                );
                None
            }
            (None, None, Some(b)) => self.ip_block(b),
            (pods, namespaces, None) => {
                let namespace_selector = namespaces.as_ref().map(|s| self.selector(s));
                let pod_selector = pods.as_ref().map(|s| self.selector(s));
                let probe = NetworkPolicy {
                    name: String::new(),
                    namespace: namespace.to_string(),
                    pod_selector: LabelSelector::default(),
                    ingress: None,
                    egress: None,
                };
                if cluster
                    .peer_pods(&probe, &namespace_selector, &pod_selector)
                    .next()
                    .is_none()
                {
                    self.report.warning(
                        peer.span(),
                        format!("this `{field}` peer matches no pod"),
                        "matches nothing",
                        "no pod (or namespace) has these labels yet",
                    );
                }
                Some(Peer::Pods {
                    namespace_selector,
                    pod_selector,
                })
            }
        }
    }

    fn ip_block(&mut self, b: &Spanned<spec::IpBlockSpec>) -> Option<Peer> {
        let cidr = self.report.ipv4_net(&b.get_ref().cidr, "ip_block cidr")?;
        let mut except = Vec::new();
        for e in &b.get_ref().except {
            let Some(net) = self.report.ipv4_net(e, "ip_block except") else {
                continue;
            };
            // As the API server: every except must be strictly inside the cidr.
            if !(cidr.contains(net.network()) && net.prefix() > cidr.prefix()) {
                self.report.error(
                    e.span(),
                    format!("except {net} is not inside the ip_block's cidr {cidr}"),
                    "outside the cidr",
                    "each except must be a smaller block inside cidr",
                );
                continue;
            }
            except.push(net);
        }
        Some(Peer::IpBlock { cidr, except })
    }

    fn policy_port(&mut self, p: &Spanned<spec::PolicyPortSpec>) -> Option<PolicyPort> {
        let spec = p.get_ref();
        let protocol = match &spec.protocol {
            None => "tcp".to_string(),
            Some(v) => match v.get_ref().to_ascii_lowercase().as_str() {
                proto @ ("tcp" | "udp" | "sctp") => proto.to_string(),
                _ => {
                    self.report.error(
                        v.span(),
                        format!("protocol `{}` is not supported", v.get_ref()),
                        "bad protocol",
                        "use \"TCP\", \"UDP\" or \"SCTP\"",
                    );
                    return None;
                }
            },
        };
        let port = match &spec.port {
            None => None,
            Some(v) => match v.get_ref() {
                spec::PortNumberOrName::Number(0) => {
                    self.report
                        .error(v.span(), "port 0 is not usable", "bad port", "ports are 1..=65535");
                    return None;
                }
                spec::PortNumberOrName::Number(n) => Some(PortRef::Number(*n)),
                spec::PortNumberOrName::Name(n) if workloads::is_port_name(n) => Some(PortRef::Name(n.clone())),
                spec::PortNumberOrName::Name(n) => {
                    self.report.error(
                        v.span(),
                        format!("`{n}` is neither a port number nor a valid port name"),
                        "bad port",
                        "a number 1..=65535, or a container port's name (at most 15 of a-z, 0-9, '-')",
                    );
                    return None;
                }
            },
        };
        let end_port = match (&spec.end_port, &port) {
            (None, _) => None,
            (Some(e), Some(PortRef::Number(start))) if *e.get_ref() >= *start => Some(*e.get_ref()),
            (Some(e), Some(PortRef::Number(start))) => {
                self.report.error(
                    e.span(),
                    format!("end_port {} is below port {start}", e.get_ref()),
                    "bad range",
                    "end_port must be at least port",
                );
                return None;
            }
            (Some(e), _) => {
                self.report.error(
                    e.span(),
                    "end_port needs a numeric port",
                    "no start",
                    "as in Kubernetes, end_port is only allowed with a numeric port",
                );
                return None;
            }
        };
        Some(PolicyPort {
            protocol,
            port,
            end_port,
        })
    }

    fn selector(&mut self, s: &Spanned<spec::LabelSelectorSpec>) -> LabelSelector {
        let spec = s.get_ref();
        let mut match_expressions = Vec::new();
        for r in &spec.match_expressions {
            let req = r.get_ref();
            if !namespaces::is_label_key(req.key.get_ref()) {
                self.report.error(
                    req.key.span(),
                    format!("label key `{}` is not valid", req.key.get_ref()),
                    "invalid label key",
                    "as in Kubernetes: an optional DNS prefix and '/', then at most 63 letters, digits, '-', '_', '.'",
                );
                continue;
            }
            let operator = match req.operator.get_ref().as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    let known = ["In", "NotIn", "Exists", "DoesNotExist"];
                    let hint = match closest(other, &known) {
                        Some(c) => format!("did you mean `{c}`? (In, NotIn, Exists, DoesNotExist)"),
                        None => "In, NotIn, Exists or DoesNotExist".to_string(),
                    };
                    self.report.error(
                        req.operator.span(),
                        format!("unknown operator `{other}`"),
                        "not an operator",
                        &hint,
                    );
                    continue;
                }
            };
            let has_values = !req.values.is_empty();
            match operator {
                Operator::In | Operator::NotIn if !has_values => {
                    self.report.error(
                        r.span(),
                        format!("operator {} needs values", req.operator.get_ref()),
                        "no values",
                        "e.g. values = [\"a\", \"b\"]",
                    );
                    continue;
                }
                Operator::Exists | Operator::DoesNotExist if has_values => {
                    self.report.error(
                        r.span(),
                        format!("operator {} takes no values", req.operator.get_ref()),
                        "values given",
                        "remove values",
                    );
                    continue;
                }
                _ => {}
            }
            match_expressions.push(Requirement {
                key: req.key.get_ref().clone(),
                operator,
                values: req.values.iter().map(|v| v.get_ref().clone()).collect(),
            });
        }
        LabelSelector {
            match_labels: self.labels(&spec.match_labels),
            match_expressions,
        }
    }

    /// Named ports no pod they could apply to defines: legal, but the rule's port
    /// part then matches nothing.
    fn unused_named_ports(&mut self, cluster: &Cluster, policy: &NetworkPolicy, np: &spec::NetworkPolicySpec) {
        let rules = (np
            .ingress
            .iter()
            .flat_map(|r| r.get_ref().iter().map(|r| r.ports.as_deref())))
        .chain(
            np.egress
                .iter()
                .flat_map(|r| r.get_ref().iter().map(|r| r.ports.as_deref())),
        );
        for ports in rules.flatten() {
            for p in ports {
                let Some(port) = &p.get_ref().port else { continue };
                let spec::PortNumberOrName::Name(name) = port.get_ref() else {
                    continue;
                };
                let defined = cluster
                    .live_pods()
                    .any(|pod| pod.named_ports.iter().any(|n| &n.name == name));
                if !defined {
                    self.report.warning(
                        port.span(),
                        format!("no pod defines a port named `{name}` (policy `{}`)", policy.id()),
                        "unknown port name",
                        "name a container port: ports = [{ port = 80, name = \"http\" }]",
                    );
                }
            }
        }
    }
}
