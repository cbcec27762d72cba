//! The difference between the plan an emulation runs and a new plan, as the
//! actions that turn one into the other (`knetsim pod add`, `svc add`, `apply`).
//!
//! Steps are matched by id. A step only the new plan has is added; one only the
//! running plan has is removed (reversed); one in both whose operation or artifact
//! text differs is changed (re-run); a running process whose configuration file
//! changed is reloaded. Everything here is pure: the executor performs the actions.

use super::{Op, Plan, Step};
use crate::bundle::Bundle;
use std::collections::HashSet;
use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// A step only the new plan has: run it (its dependencies already ran or come earlier).
    Add(Step),
    /// A step only the running plan has: reverse it.
    Remove(Step),
    /// The same step with other content: re-run it, the old one being reversed first where needed.
    Change { old: Box<Step>, new: Box<Step> },
    /// A running process whose configuration file changed: reload it in place.
    Reload(Step),
}

impl Action {
    pub fn verb(&self) -> &'static str {
        match self {
            Action::Add(_) => "add",
            Action::Remove(_) => "remove",
            Action::Change { .. } => "change",
            Action::Reload(_) => "reload",
        }
    }

    /// The step the action is about (the new one for a change).
    pub fn step(&self) -> &Step {
        match self {
            Action::Add(s) | Action::Remove(s) | Action::Reload(s) => s,
            Action::Change { new, .. } => new,
        }
    }

    /// The action that undoes this one (with the bundles' roles swapped).
    pub fn inverse(&self) -> Action {
        match self {
            Action::Add(s) => Action::Remove(s.clone()),
            Action::Remove(s) => Action::Add(s.clone()),
            Action::Change { old, new } => Action::Change {
                old: new.clone(),
                new: old.clone(),
            },
            Action::Reload(s) => Action::Reload(s.clone()),
        }
    }
}

/// What an action does, in a few words.
fn what(action: &Action) -> String {
    let step = action.step();
    let removing = matches!(action, Action::Remove(_));
    match (&step.op, removing) {
        (Op::CreateNetns { netns }, false) => format!("create namespace {netns}"),
        (Op::CreateNetns { netns }, true) => format!("delete namespace {netns}"),
        (Op::CniAdd { pod_netns, ip, .. }, false) => match action {
            Action::Change { old, .. } => match &old.op {
                Op::CniAdd { ip: old_ip, .. } => format!("CNI DEL {old_ip}, CNI ADD {ip} in {pod_netns}"),
                _ => format!("CNI ADD {ip} in {pod_netns}"),
            },
            _ => format!("CNI ADD {ip} in {pod_netns}"),
        },
        (Op::CniAdd { pod_netns, ip, .. }, true) => format!("CNI DEL {ip} in {pod_netns}"),
        (Op::StartProcess { name, .. }, _) => match action {
            Action::Add(_) => format!("start {name}"),
            Action::Remove(_) => format!("stop {name}"),
            Action::Change { .. } => format!("restart {name}"),
            Action::Reload(_) => format!("reload {name} (SIGHUP)"),
        },
        (Op::NftLoad { netns, .. }, false) => format!("nft -f kube-proxy rules in {netns}"),
        (Op::NftLoad { path, .. }, true) => format!("remove {path}"),
        (Op::WriteFile { path, .. }, false) => format!("write {path}"),
        (Op::WriteFile { path, .. } | Op::MakeDir { path }, true) => format!("remove {path}"),
        (Op::MakeDir { path }, false) => format!("mkdir {path}"),
        (Op::EtcdPut { key, .. }, false) => format!("etcd put {key}"),
        (Op::EtcdPut { key, .. }, true) => format!("etcd delete {key}"),
        (Op::Wait { probe }, false) => format!("wait for {}", super::render::probe_text(probe)),
        (Op::Wait { .. }, true) => "nothing to undo".into(),
        (_, false) => "set up".into(),
        (_, true) => "goes with its namespace".into(),
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.verb(), self.step().id, what(self))
    }
}

/// A change the running emulation cannot take without `down` and `up`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    pub step: String,
    pub reason: String,
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.step, self.reason)
    }
}

/// The artifact a step installs, if any.
fn artifact(op: &Op) -> Option<&str> {
    match op {
        Op::WriteFile { artifact, .. } | Op::NftLoad { artifact, .. } | Op::EtcdPut { artifact, .. } => Some(artifact),
        _ => None,
    }
}

/// Same operation and same artifact text.
fn same(old: &Step, old_bundle: &Bundle, new: &Step, new_bundle: &Bundle) -> bool {
    old.op == new.op
        && match artifact(&old.op) {
            Some(a) => old_bundle.get(a) == new_bundle.get(a),
            None => true,
        }
}

/// The namespace a step's effect lives in (removing that namespace removes it).
fn home_netns(op: &Op) -> Vec<&str> {
    match op {
        Op::CreateBridge { netns, .. }
        | Op::AddAddress { netns, .. }
        | Op::AddRoute { netns, .. }
        | Op::SetSysctl { netns, .. }
        | Op::Impair { netns, .. } => vec![netns],
        Op::CreateVeth { a, b } => vec![&a.netns, &b.netns],
        _ => Vec::new(),
    }
}

/// The actions that turn the running `old` plan (with its bundle) into `new`, in the
/// order they must run: removals first (newest step first), then additions and
/// changes in the new plan's order, then reloads.
pub fn delta(
    old: &Plan,
    old_bundle: &Bundle,
    new: &Plan,
    new_bundle: &Bundle,
) -> Result<Vec<Action>, Vec<Unsupported>> {
    let old_ids: HashSet<&str> = old.steps.iter().map(|s| s.id.as_str()).collect();
    let new_ids: HashSet<&str> = new.steps.iter().map(|s| s.id.as_str()).collect();
    let kept_netns: HashSet<&str> = new.namespaces.iter().map(String::as_str).collect();
    let mut unsupported = Vec::new();
    let mut actions = Vec::new();

    // A pod whose attachment changes (address, worker) is detached with the removals,
    // so that addresses moving between pods are free before they are taken again.
    let reattached: HashSet<&str> = new
        .steps
        .iter()
        .filter(|s| matches!(s.op, Op::CniAdd { .. }))
        .filter(|s| old.step(&s.id).is_some_and(|o| o.op != s.op))
        .map(|s| s.id.as_str())
        .collect();
    for s in old
        .steps
        .iter()
        .rev()
        .filter(|s| !new_ids.contains(s.id.as_str()) || reattached.contains(s.id.as_str()))
    {
        let homes = home_netns(&s.op);
        if !homes.is_empty() && homes.iter().all(|n| kept_netns.contains(n)) {
            unsupported.push(Unsupported {
                step: s.id.clone(),
                reason: "removing part of the underlay of a host that stays needs `knetsim down` and `up`".into(),
            });
        }
        actions.push(Action::Remove(s.clone()));
    }

    let mut changed_files: HashSet<&str> = HashSet::new();
    let mut unchanged_processes = Vec::new();
    for s in &new.steps {
        let Some(o) = old.step(&s.id).filter(|_| old_ids.contains(s.id.as_str())) else {
            actions.push(Action::Add(s.clone()));
            continue;
        };
        if reattached.contains(s.id.as_str()) {
            actions.push(Action::Add(s.clone()));
            continue;
        }
        if same(o, old_bundle, s, new_bundle) {
            if matches!(s.op, Op::StartProcess { .. }) {
                unchanged_processes.push(s);
            }
            continue;
        }
        let reason = match &s.op {
            Op::NftLoad { .. } | Op::EtcdPut { .. } | Op::CniAdd { .. } | Op::Wait { .. } => None,
            Op::WriteFile { path, .. } => {
                changed_files.insert(path);
                None
            }
            Op::StartProcess { .. } if s.id.starts_with("etcd:") => {
                Some("changing an etcd member (cluster membership) needs `knetsim down` and `up`")
            }
            Op::StartProcess { .. } => None,
            _ => Some("changing the underlay (links, addresses, routes, shaping) needs `knetsim down` and `up`"),
        };
        match reason {
            Some(reason) => unsupported.push(Unsupported {
                step: s.id.clone(),
                reason: reason.into(),
            }),
            None => actions.push(Action::Change {
                old: Box::new(o.clone()),
                new: Box::new(s.clone()),
            }),
        }
    }
    // A process whose configuration file was rewritten: nginx reloads, others restart.
    for s in unchanged_processes {
        let Op::StartProcess { argv, .. } = &s.op else { continue };
        if !argv.iter().any(|a| changed_files.contains(a.as_str())) {
            continue;
        }
        if argv.first().map(String::as_str) == Some("nginx") {
            actions.push(Action::Reload(s.clone()));
        } else {
            actions.push(Action::Change {
                old: Box::new(s.clone()),
                new: Box::new(s.clone()),
            });
        }
    }
    if unsupported.is_empty() {
        Ok(actions)
    } else {
        Err(unsupported)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifacts::paths::PLAN;
    use crate::plan::Component;
    use crate::{compile, CompileOptions, Source, DEFAULT_TOPOLOGY};

    fn compiled(text: &str) -> (Plan, Bundle) {
        let bundle = compile(&Source::new("t.toml", text), &CompileOptions::named("d")).unwrap();
        let plan: Plan = serde_json::from_str(bundle.get(PLAN).unwrap()).unwrap();
        (plan.without(&[Component::Interconnect]), bundle)
    }

    fn lines(old: &str, new: &str) -> Vec<String> {
        let (op, ob) = compiled(old);
        let (np, nb) = compiled(new);
        delta(&op, &ob, &np, &nb)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    const BASE: &str = "[[clusters]]\nname = \"C0\"\npods = [\n  { name = \"c1\", worker = \"w1\" },\n  { name = \"c2\", worker = \"w2\" },\n  { name = \"c3\", worker = \"w2\" },\n]\nservices = [{ name = \"web\", vip = \"100.64.0.10\", pods = [\"c1\", \"c2\"] }]\n";

    #[test]
    fn same_topology_no_actions() {
        assert!(lines(BASE, BASE).is_empty());
        assert!(lines(DEFAULT_TOPOLOGY, DEFAULT_TOPOLOGY).is_empty());
    }

    #[test]
    fn pod_add_is_a_namespace_and_a_cni_add_with_the_next_address() {
        let new = BASE.replace(
            "  { name = \"c3\", worker = \"w2\" },\n",
            "  { name = \"c3\", worker = \"w2\" },\n  { name = \"c10\", worker = \"w1\", command = [\"sleep\", \"100\"] },\n",
        );
        let l = lines(BASE, &new);
        assert_eq!(
            l,
            vec![
                "add netns:d-k0_c10: create namespace d-k0_c10",
                "add cni-add:C0/c10: CNI ADD 11.10.0.3 in d-k0_c10",
                "add workload:C0/c10: start pod C0/c10",
            ]
        );
    }

    #[test]
    fn service_add_reloads_the_rules_of_every_worker_of_the_cluster_only() {
        let new = BASE.replace(
            "services = [",
            "services = [{ name = \"new\", vip = \"100.64.0.20\", pods = [\"c3\"] }, ",
        );
        assert_eq!(
            lines(BASE, &new),
            vec![
                "change nft:C0w1: nft -f kube-proxy rules in d-C0w1",
                "change nft:C0w2: nft -f kube-proxy rules in d-C0w2"
            ]
        );
        // In the default topology, a service of C1 touches only C1's workers.
        let new = DEFAULT_TOPOLOGY.replace(
            "  { name = \"vip\", vip = \"100.64.10.1\", pods = [\"c2\", \"c3\"] },\n]\n\n# Chapter 5",
            "  { name = \"vip\", vip = \"100.64.10.1\", pods = [\"c2\", \"c3\"] },\n  { name = \"x\", pods = [\"c1\"] },\n]\n\n# Chapter 5",
        );
        let l = lines(DEFAULT_TOPOLOGY, &new);
        assert_eq!(l.len(), 3, "{l:#?}");
        assert!(l.iter().all(|x| x.starts_with("change nft:C1w")), "{l:#?}");
    }

    #[test]
    fn pod_rm_removes_newest_first_and_updates_the_rules() {
        let new = BASE
            .replace("  { name = \"c2\", worker = \"w2\" },\n", "")
            .replace(
                "{ name = \"c3\", worker = \"w2\" }",
                "{ name = \"c3\", worker = \"w2\", ip = \"11.10.16.3\" }",
            )
            .replace("[\"c1\", \"c2\"]", "[\"c1\"]");
        let (_, nb) = compiled(&new);
        assert!(nb.get("inventory.json").unwrap().contains("11.10.16.3"));
        assert_eq!(
            lines(BASE, &new),
            vec![
                "remove cni-add:C0/c2: CNI DEL 11.10.16.2 in d-k0_c2",
                "remove netns:d-k0_c2: delete namespace d-k0_c2",
                "change nft:C0w1: nft -f kube-proxy rules in d-C0w1",
                "change nft:C0w2: nft -f kube-proxy rules in d-C0w2",
            ]
        );
    }

    #[test]
    fn deleted_pod_keeps_its_endpoint_and_address_but_is_not_created() {
        let new = BASE.replace(
            "{ name = \"c2\", worker = \"w2\" }",
            "{ name = \"c2\", worker = \"w2\", deleted = true }",
        );
        assert_eq!(
            lines(BASE, &new),
            vec![
                "remove cni-add:C0/c2: CNI DEL 11.10.16.2 in d-k0_c2",
                "remove netns:d-k0_c2: delete namespace d-k0_c2",
            ]
        );
        // A later pod on that worker still gets a fresh address.
        let later = new.replace(
            "  { name = \"c3\", worker = \"w2\" },\n",
            "  { name = \"c3\", worker = \"w2\" },\n  { name = \"c4\", worker = \"w2\" },\n",
        );
        let l = lines(&new, &later);
        assert_eq!(l[1], "add cni-add:C0/c4: CNI ADD 11.10.16.4 in d-k0_c4");
    }

    #[test]
    fn addresses_moving_between_pods_are_freed_before_they_are_taken() {
        let without_c2 = BASE
            .replace("  { name = \"c2\", worker = \"w2\" },\n", "")
            .replace("[\"c1\", \"c2\"]", "[\"c1\"]");
        let l = lines(&without_c2, BASE);
        let del = l
            .iter()
            .position(|x| x.starts_with("remove cni-add:C0/c3: CNI DEL 11.10.16.2"))
            .unwrap();
        let add = l
            .iter()
            .position(|x| x.starts_with("add cni-add:C0/c2: CNI ADD 11.10.16.2"))
            .unwrap();
        assert!(del < add, "{l:#?}");
        assert!(
            l.contains(&"add cni-add:C0/c3: CNI ADD 11.10.16.3 in d-k0_c3".to_string()),
            "{l:#?}"
        );
    }

    #[test]
    fn ingress_config_change_reloads_nginx() {
        let new = DEFAULT_TOPOLOGY.replace(
            "  { path = \"/svc2\", service = \"s2\", port = 8000 },\n",
            "  { path = \"/svc2\", service = \"s2\", port = 8000 },\n  { path = \"/svc3\", service = \"s1\", port = 8000 },\n",
        );
        assert_eq!(
            lines(DEFAULT_TOPOLOGY, &new),
            vec![
                "change file:/tmp/knetsim-d/ingress/C0w1/grp1/nginx.conf: write /tmp/knetsim-d/ingress/C0w1/grp1/nginx.conf",
                "reload nginx:C0/grp1: reload ingress C0/grp1 (SIGHUP)",
            ]
        );
    }

    #[test]
    fn underlay_changes_are_refused() {
        let base = "[[clusters]]\nname = \"C0\"\n[[clusters]]\nname = \"C1\"\n";
        let more = "[[clusters]]\nname = \"C0\"\nworkers = 3\n[[clusters]]\nname = \"C1\"\n";
        let (op, ob) = compiled(base);
        let (np, nb) = compiled(more);
        let err = delta(&op, &ob, &np, &nb).unwrap_err();
        assert!(err.iter().any(|u| u.step.starts_with("addr:C1")), "{err:?}");
    }

    #[test]
    fn pinned_addresses_are_checked() {
        let opts = CompileOptions::named("d");
        let outside = BASE.replace(
            "{ name = \"c3\", worker = \"w2\" }",
            "{ name = \"c3\", worker = \"w2\", ip = \"11.10.0.9\" }",
        );
        let err = compile(&Source::new("t.toml", outside), &opts).unwrap_err().render();
        assert!(err.contains("not a pod address of worker C0w2"), "{err}");
        let twice = BASE
            .replace(
                "{ name = \"c2\", worker = \"w2\" }",
                "{ name = \"c2\", worker = \"w2\", ip = \"11.10.16.5\" }",
            )
            .replace(
                "{ name = \"c3\", worker = \"w2\" }",
                "{ name = \"c3\", worker = \"w2\", ip = \"11.10.16.5\" }",
            );
        let err = compile(&Source::new("t.toml", twice), &opts).unwrap_err().render();
        assert!(err.contains("pinned twice"), "{err}");
    }

    #[test]
    fn inverse_swaps() {
        let (p, _) = compiled(BASE);
        let s = p.steps[0].clone();
        assert_eq!(Action::Add(s.clone()).inverse(), Action::Remove(s.clone()));
        let c = Action::Change {
            old: Box::new(s.clone()),
            new: Box::new(p.steps[1].clone()),
        };
        assert_eq!(c.inverse().inverse(), c);
    }
}
