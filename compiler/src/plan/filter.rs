//! Bringing up part of an emulation: a plan without some components (e.g. the
//! default topology without its ingress and interconnect).

use super::Plan;
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// nginx ingresses (`nginx:` steps).
    Ingress,
    /// skupper routers (`router:` steps).
    Interconnect,
    /// Pod commands (`workload:` steps); the pods themselves stay.
    Workloads,
}

impl Component {
    pub const ALL: [Component; 3] = [Component::Ingress, Component::Interconnect, Component::Workloads];

    fn step_prefix(self) -> &'static str {
        match self {
            Component::Ingress => "nginx:",
            Component::Interconnect => "router:",
            Component::Workloads => "workload:",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Component::Ingress => "ingress",
            Component::Interconnect => "interconnect",
            Component::Workloads => "workloads",
        }
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Component {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Component::ALL.into_iter().find(|c| c.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Component::ALL.iter().map(|c| c.name()).collect();
            format!("unknown component `{s}` (known: {})", names.join(", "))
        })
    }
}

impl Plan {
    /// The plan without the steps of `skip`. Those steps are leaves (nothing else
    /// waits for them), so every remaining dependency still exists. Their config
    /// files are still written, for inspection.
    pub fn without(mut self, skip: &[Component]) -> Plan {
        let dropped = |id: &str| skip.iter().any(|c| id.starts_with(c.step_prefix()));
        self.steps.retain(|s| !dropped(&s.id));
        for s in &mut self.steps {
            s.after.retain(|a| !dropped(a));
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{compile, CompileOptions, Source};

    fn default_plan() -> Plan {
        let bundle = compile(&Source::default_topology(), &CompileOptions::default()).unwrap();
        serde_json::from_str(bundle.get("plan.json").unwrap()).unwrap()
    }

    #[test]
    fn skipping_removes_exactly_the_component_steps_and_keeps_dependencies_valid() {
        let full = default_plan();
        let plan = full.clone().without(&[Component::Ingress, Component::Interconnect]);
        assert!(plan.step("nginx:C0/grp1").is_none());
        assert!(plan.step("router:C0").is_none() && plan.step("router:C1").is_none());
        assert!(plan.step("workload:C0/ic0").is_some());
        assert_eq!(plan.steps.len(), full.steps.len() - 3);
        let ids: std::collections::HashSet<&str> = plan.steps.iter().map(|s| s.id.as_str()).collect();
        assert!(plan
            .steps
            .iter()
            .all(|s| s.after.iter().all(|a| ids.contains(a.as_str()))));
    }

    #[test]
    fn component_names_parse() {
        assert_eq!("ingress".parse::<Component>(), Ok(Component::Ingress));
        assert!("nginx"
            .parse::<Component>()
            .unwrap_err()
            .contains("known: ingress, interconnect, workloads"));
    }
}
