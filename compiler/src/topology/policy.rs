//! Serde types of a cluster's `[[clusters.network_policies]]`: Kubernetes'
//! networking.k8s.io/v1 NetworkPolicy with its field names in snake_case.

use super::{Labels, Spanned};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkPolicySpec {
    pub name: Spanned<String>,
    /// Default `default`.
    pub namespace: Option<Spanned<String>>,
    /// The pods the policy applies to; `{}` selects every pod of its namespace.
    pub pod_selector: Spanned<LabelSelectorSpec>,
    /// `["Ingress"]`, `["Egress"]` or both; default as Kubernetes: Ingress, plus
    /// Egress when there are egress rules.
    pub policy_types: Option<Spanned<Vec<Spanned<String>>>>,
    /// Absent or `[]`: nothing is allowed in; `[{}]`: everything is.
    pub ingress: Option<Spanned<Vec<PolicyIngressRuleSpec>>>,
    pub egress: Option<Spanned<Vec<PolicyEgressRuleSpec>>>,
}

/// A Kubernetes `LabelSelector`; `{}` matches everything.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelSelectorSpec {
    pub match_labels: Option<Spanned<Labels>>,
    #[serde(default)]
    pub match_expressions: Vec<Spanned<RequirementSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequirementSpec {
    pub key: Spanned<String>,
    /// In, NotIn, Exists, DoesNotExist.
    pub operator: Spanned<String>,
    #[serde(default)]
    pub values: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyIngressRuleSpec {
    /// Absent or empty: from everywhere.
    pub from: Option<Vec<Spanned<PeerSpec>>>,
    /// Absent or empty: every port.
    pub ports: Option<Vec<Spanned<PolicyPortSpec>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyEgressRuleSpec {
    /// Absent or empty: to everywhere.
    pub to: Option<Vec<Spanned<PeerSpec>>>,
    pub ports: Option<Vec<Spanned<PolicyPortSpec>>>,
}

/// One of: pod_selector, namespace_selector, both (AND), or ip_block.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSpec {
    pub pod_selector: Option<Spanned<LabelSelectorSpec>>,
    pub namespace_selector: Option<Spanned<LabelSelectorSpec>>,
    pub ip_block: Option<Spanned<IpBlockSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpBlockSpec {
    pub cidr: Spanned<String>,
    #[serde(default)]
    pub except: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyPortSpec {
    /// TCP (default), UDP or SCTP.
    pub protocol: Option<Spanned<String>>,
    /// A number or a named container port; absent: every port of the protocol.
    pub port: Option<Spanned<PortNumberOrName>>,
    /// With a numeric `port`: the range port..=end_port.
    pub end_port: Option<Spanned<u16>>,
}

/// Kubernetes' IntOrString port: `80` or `"http"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortNumberOrName {
    Number(u16),
    Name(String),
}

impl<'de> Deserialize<'de> for PortNumberOrName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PortVisitor;
        impl Visitor<'_> for PortVisitor {
            type Value = PortNumberOrName;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a port number (e.g. 80) or a named container port (e.g. \"http\")")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortNumberOrName, E> {
                u16::try_from(v)
                    .map(PortNumberOrName::Number)
                    .map_err(|_| E::custom(format!("port {v} is out of range 0..=65535")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortNumberOrName, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(-1))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PortNumberOrName, E> {
                Ok(PortNumberOrName::Name(v.to_string()))
            }
        }
        deserializer.deserialize_any(PortVisitor)
    }
}
