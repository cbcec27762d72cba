//! Repair: the actions that bring a running emulation back to its plan, from what
//! was observed to be missing ([`Drift`], gathered by the executor). Observation
//! is an input, as readiness and leases will be: this stays pure.
//!
//! - A process that is not running is restarted with the same step (what it
//!   stored, such as etcd's data directory, is kept: a crashed member rejoins its
//!   cluster as itself).
//! - Rules missing from a namespace (an `nft delete table` by hand) are loaded again.
//! - A pod whose namespace is gone is re-created as `up` made it: its workload is
//!   stopped, its CNI attachment deleted (so IPAM frees the address), then the
//!   namespace, the CNI ADD with the same address and the workload again.
//!
//! A host's or a switch's namespace that is gone takes links, peers' addresses and
//! CNI attachments of other namespaces with it: that is not repaired in place.

use super::{Action, Unsupported};
use crate::plan::{CniAdd, CreateNetns, Op, Plan, StartProcess};
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// What the running emulation lacks against its plan, as observed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drift {
    /// Namespaces of the plan that do not exist.
    pub missing_netns: BTreeSet<String>,
    /// `StartProcess` step id -> why it counts as not running.
    pub dead: BTreeMap<String, String>,
    /// `NftLoad` step id -> what is missing from its namespace.
    pub missing_rules: BTreeMap<String, String>,
}

impl Drift {
    pub fn is_empty(&self) -> bool {
        self.missing_netns.is_empty() && self.dead.is_empty() && self.missing_rules.is_empty()
    }

    /// One line per finding, for people.
    pub fn findings(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .missing_netns
            .iter()
            .map(|n| format!("namespace {n} is gone"))
            .collect();
        out.extend(self.dead.iter().map(|(id, why)| format!("{id}: {why}")));
        out.extend(self.missing_rules.iter().map(|(id, why)| format!("{id}: {why}")));
        out
    }
}

/// The actions that repair `drift` in the emulation running `plan`, in the order
/// they must run: what a gone pod namespace held is cleared first (newest step
/// first), then everything is made again in the plan's order.
pub fn repair(plan: &Plan, drift: &Drift) -> Result<Vec<Action>, Vec<Unsupported>> {
    let pod_netns: HashSet<&str> = plan
        .steps
        .iter()
        .filter_map(|s| match &s.op {
            Op::CniAdd(CniAdd { pod_netns, .. }) => Some(pod_netns.as_str()),
            _ => None,
        })
        .collect();
    let unsupported: Vec<Unsupported> = plan
        .steps
        .iter()
        .filter_map(|s| match &s.op {
            Op::CreateNetns(CreateNetns { netns })
                if drift.missing_netns.contains(netns) && !pod_netns.contains(netns.as_str()) =>
            {
                Some(Unsupported {
                    step: s.id.clone(),
                    reason: format!(
                        "namespace {netns} is gone, and with it links and addresses of other namespaces: run `knetsim down` and `up`"
                    ),
                })
            }
            _ => None,
        })
        .collect();
    if !unsupported.is_empty() {
        return Err(unsupported);
    }

    // Every step whose effect was in a gone pod namespace.
    let gone = |netns: &str| drift.missing_netns.contains(netns);
    let remade: HashSet<&str> = plan
        .steps
        .iter()
        .filter(|s| match &s.op {
            Op::CreateNetns(CreateNetns { netns }) => gone(netns),
            Op::CniAdd(CniAdd { pod_netns, .. }) => gone(pod_netns),
            Op::StartProcess(StartProcess { netns, .. }) => gone(netns),
            _ => false,
        })
        .map(|s| s.id.as_str())
        .collect();

    let mut actions: Vec<Action> = plan
        .steps
        .iter()
        .rev()
        .filter(|s| remade.contains(s.id.as_str()))
        .map(|s| Action::Remove(s.clone()))
        .collect();
    for s in &plan.steps {
        let id = s.id.as_str();
        if remade.contains(id) {
            actions.push(Action::Add(s.clone()));
        } else if drift.dead.contains_key(id) || drift.missing_rules.contains_key(id) {
            actions.push(Action::Change {
                old: Box::new(s.clone()),
                new: Box::new(s.clone()),
            });
        }
    }
    Ok(actions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifacts::paths::PLAN;
    use crate::{compile, CompileOptions, Source, DEFAULT_TOPOLOGY};

    fn plan() -> Plan {
        let bundle = compile(&Source::new("t.toml", DEFAULT_TOPOLOGY), &CompileOptions::named("d")).unwrap();
        serde_json::from_str::<Plan>(bundle.get(PLAN).unwrap())
            .unwrap()
            .without(&[])
    }

    fn lines(d: &Drift) -> Vec<String> {
        repair(&plan(), d).unwrap().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn nothing_missing_nothing_to_do() {
        assert!(lines(&Drift::default()).is_empty());
    }

    #[test]
    fn a_dead_process_is_restarted_and_missing_rules_reloaded() {
        let d = Drift {
            dead: [("router:C0".to_string(), "pid 7 is not running".to_string())].into(),
            missing_rules: [("nft:C0w2".to_string(), "no table ip kube-proxy".to_string())].into(),
            ..Drift::default()
        };
        let got = lines(&d);
        assert_eq!(got.len(), 2, "{got:#?}");
        assert!(got.iter().any(|l| l.starts_with("change nft:C0w2: nft -f")), "{got:#?}");
        assert!(
            got.iter().any(|l| l.starts_with("change router:C0: restart router")),
            "{got:#?}"
        );
    }

    #[test]
    fn a_gone_pod_namespace_is_cleared_then_made_again() {
        let p = plan();
        let netns = p
            .steps
            .iter()
            .find_map(|s| match &s.op {
                Op::CniAdd(CniAdd { pod_netns, .. }) if s.id == "cni-add:C0/c4" => Some(pod_netns.clone()),
                _ => None,
            })
            .unwrap();
        let d = Drift {
            missing_netns: [netns.clone()].into(),
            // A process in it also reads as dead: it is made again with its namespace, once.
            dead: [("workload:C0/c4".to_string(), "gone".to_string())].into(),
            ..Drift::default()
        };
        let got = lines(&d);
        let ids: Vec<String> = repair(&p, &d)
            .unwrap()
            .iter()
            .map(|a| format!("{} {}", a.verb(), a.step().id))
            .collect();
        assert_eq!(
            ids,
            [
                "remove workload:C0/c4",
                "remove cni-add:C0/c4",
                &format!("remove netns:{netns}"),
                &format!("add netns:{netns}"),
                "add cni-add:C0/c4",
                "add workload:C0/c4",
            ],
            "{got:#?}"
        );
    }

    #[test]
    fn a_gone_host_namespace_is_not_repaired_in_place() {
        let d = Drift {
            missing_netns: ["d-C0w1".to_string()].into(),
            ..Drift::default()
        };
        let err = repair(&plan(), &d).unwrap_err();
        assert_eq!(err.len(), 1);
        assert!(err[0].reason.contains("down"), "{}", err[0]);
    }
}
