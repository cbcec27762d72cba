//! NetworkPolicies as the model holds them: selectors kept as written (the
//! inventory shows them), resolved to pods by [`Cluster`] queries when rendered.

use super::{Cluster, Labels, Pod};
use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkPolicy {
    pub name: String,
    pub namespace: String,
    pub pod_selector: LabelSelector,
    /// None: not an Ingress policy; Some(empty): nothing allowed in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Vec<PolicyRule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<PolicyRule>>,
}

/// A rule of either direction: its peers (`from` or `to`) and ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRule {
    /// Empty: every peer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<Peer>,
    /// Empty: every port and protocol.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PolicyPort>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Peer {
    /// Pods: `namespace_selector` None = the policy's namespace; `pod_selector`
    /// None = every pod of the selected namespaces.
    Pods {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        namespace_selector: Option<LabelSelector>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pod_selector: Option<LabelSelector>,
    },
    IpBlock {
        cidr: Ipv4Network,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        except: Vec<Ipv4Network>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyPort {
    /// "tcp", "udp" or "sctp".
    pub protocol: String,
    /// None: every port of the protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortRef {
    Number(u16),
    /// A named container port, resolved on the destination pod.
    Name(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub match_labels: Labels,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl LabelSelector {
    /// Whether `labels` satisfy every matchLabels pair and every expression, as
    /// apimachinery's `LabelSelectorAsSelector` reads them.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let value = labels.get(&r.key);
                match r.operator {
                    Operator::In => value.is_some_and(|v| r.values.contains(v)),
                    // NotIn also matches a missing key, as in Kubernetes.
                    Operator::NotIn => value.is_none_or(|v| !r.values.contains(v)),
                    Operator::Exists => value.is_some(),
                    Operator::DoesNotExist => value.is_none(),
                }
            })
    }
}

impl NetworkPolicy {
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

impl Cluster {
    /// Pods that exist (not deleted with `--keep-endpoints`): the only ones selectors see.
    pub fn live_pods(&self) -> impl Iterator<Item = &Pod> {
        self.pods.iter().filter(|p| !p.deleted)
    }

    /// The pods a policy applies to.
    pub fn selected_by<'a>(&'a self, p: &'a NetworkPolicy) -> impl Iterator<Item = &'a Pod> + 'a {
        self.live_pods()
            .filter(move |pod| pod.namespace == p.namespace && p.pod_selector.matches(&pod.labels))
    }

    /// The pods a `Pods` peer of policy `p` names.
    pub fn peer_pods<'a>(
        &'a self,
        p: &'a NetworkPolicy,
        namespace_selector: &'a Option<LabelSelector>,
        pod_selector: &'a Option<LabelSelector>,
    ) -> impl Iterator<Item = &'a Pod> + 'a {
        self.live_pods().filter(move |pod| {
            let ns_ok = match namespace_selector {
                None => pod.namespace == p.namespace,
                Some(sel) => sel.matches(&self.namespace_labels(&pod.namespace)),
            };
            ns_ok && pod_selector.as_ref().is_none_or(|sel| sel.matches(&pod.labels))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn selectors_match_as_kubernetes() {
        let l = labels(&[("pod", "a"), ("tier", "web")]);
        assert!(LabelSelector::default().matches(&l));
        assert!(LabelSelector::default().matches(&Labels::new()));
        let req = |key: &str, operator, values: &[&str]| LabelSelector {
            match_labels: Labels::new(),
            match_expressions: vec![Requirement {
                key: key.into(),
                operator,
                values: values.iter().map(|v| v.to_string()).collect(),
            }],
        };
        assert!(req("pod", Operator::In, &["a", "b"]).matches(&l));
        assert!(!req("pod", Operator::In, &["b"]).matches(&l));
        assert!(!req("x", Operator::In, &["a"]).matches(&l));
        assert!(req("pod", Operator::NotIn, &["b"]).matches(&l));
        assert!(
            req("x", Operator::NotIn, &["b"]).matches(&l),
            "NotIn matches a missing key"
        );
        assert!(req("tier", Operator::Exists, &[]).matches(&l));
        assert!(req("x", Operator::DoesNotExist, &[]).matches(&l));
        assert!(!req("pod", Operator::DoesNotExist, &[]).matches(&l));
        let both = LabelSelector {
            match_labels: labels(&[("pod", "a")]),
            match_expressions: req("tier", Operator::NotIn, &["web"]).match_expressions,
        };
        assert!(!both.matches(&l), "all requirements must hold");
    }
}
