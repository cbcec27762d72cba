//! The difference between the plan an emulation runs and a new plan, as the
//! actions that turn one into the other (`knetsim pod add`, `svc add`, `apply`).
//!
//! Steps are matched by id. A step only the new plan has is added; one only the
//! running plan has is removed (reversed); one in both whose operation or artifact
//! text differs is changed (re-run) where that can be done in place, and otherwise
//! rebuilt: the old step is reversed and the new one run, and so is every step that
//! depends on it (transitively, through `after` in either plan), since its effect
//! went with it (an address with its veth, flanneld with its etcd, a pod's CNI ADD
//! with its flanneld). A host whose address changes (renumbered) is re-created with
//! its namespace; a changed etcd member (cluster membership) is rebuilt with a fresh
//! data directory. What nothing changed for is left alone. A running process whose
//! configuration file changed is reloaded. Everything here is pure: the executor
//! performs the actions.

use super::{Op, Plan, Step};
use crate::bundle::Bundle;
use std::collections::{HashMap, HashSet};
use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// A step only the new plan has (or a rebuilt one): run it (its dependencies already ran or come earlier).
    Add(Step),
    /// A step only the running plan has (or one being rebuilt): reverse it.
    Remove(Step),
    /// A step being removed whose effect disappears with something removed before
    /// or after it (`with`: its namespace, or the veth it is on): nothing to do.
    GoesWith { step: Step, with: String },
    /// The same step with other content: re-run it, the old one being reversed first where needed.
    Change { old: Box<Step>, new: Box<Step> },
    /// A running process whose configuration file changed: reload it in place.
    Reload(Step),
}

impl Action {
    pub fn verb(&self) -> &'static str {
        match self {
            Action::Add(_) => "add",
            Action::Remove(_) | Action::GoesWith { .. } => "remove",
            Action::Change { .. } => "change",
            Action::Reload(_) => "reload",
        }
    }

    /// The step the action is about (the new one for a change).
    pub fn step(&self) -> &Step {
        match self {
            Action::Add(s) | Action::Remove(s) | Action::Reload(s) | Action::GoesWith { step: s, .. } => s,
            Action::Change { new, .. } => new,
        }
    }

    /// The action that undoes this one (with the bundles' roles swapped).
    pub fn inverse(&self) -> Action {
        match self {
            Action::Add(s) => Action::Remove(s.clone()),
            Action::Remove(s) | Action::GoesWith { step: s, .. } => Action::Add(s.clone()),
            Action::Change { old, new } => Action::Change {
                old: new.clone(),
                new: old.clone(),
            },
            Action::Reload(s) => Action::Reload(s.clone()),
        }
    }
}

/// What a process leaves behind that must go when it is stopped for good, so that
/// a new one starts afresh: etcd's data directory (`--data-dir`, else a restarted
/// member would keep its old cluster membership) and the file its readiness probe
/// waits for (flannel's subnet file, else the probe would pass on the old one).
pub fn process_outputs(op: &Op) -> Vec<&str> {
    let Op::StartProcess { argv, ready, .. } = op else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, a) in argv.iter().enumerate() {
        if let Some(dir) = a.strip_prefix("--data-dir=") {
            out.push(dir);
        } else if a == "--data-dir" {
            out.extend(argv.get(i + 1).map(String::as_str));
        }
    }
    if let super::Probe::FileExists { path } = ready {
        out.push(path);
    }
    out
}

/// What an action does, in a few words.
fn what(action: &Action) -> String {
    let step = action.step();
    if let Action::GoesWith { with, .. } = action {
        return format!("goes with {with}");
    }
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
            Action::Remove(_) => {
                let outputs = process_outputs(&step.op);
                if outputs.is_empty() {
                    format!("stop {name}")
                } else {
                    format!("stop {name}, remove {}", outputs.join(", "))
                }
            }
            Action::Change { .. } => format!("restart {name}"),
            Action::Reload(_) => format!("reload {name} (SIGHUP)"),
            _ => format!("start {name}"),
        },
        (Op::NftLoad { netns, .. }, false) => format!("nft -f kube-proxy rules in {netns}"),
        (Op::NftLoad { path, .. }, true) => format!("remove {path}"),
        (Op::WriteFile { path, .. }, false) => format!("write {path}"),
        (Op::WriteFile { path, .. } | Op::MakeDir { path }, true) => format!("remove {path}"),
        (Op::GenerateCerts { dir, .. }, true) => format!("remove {dir}"),
        (Op::MakeDir { path }, false) => format!("mkdir {path}"),
        (Op::EtcdPut { key, .. }, false) => format!("etcd put {key}"),
        (Op::EtcdPut { key, .. }, true) => format!("etcd delete {key}"),
        (Op::Wait { probe }, false) => format!("wait for {}", super::render::probe_text(probe)),
        (Op::Wait { .. }, true) => "nothing to undo".into(),
        (Op::CreateBridge { netns, name }, true) => format!("delete bridge {name} in {netns}"),
        (Op::CreateVeth { a, b }, true) => format!(
            "delete veth {}:{} (and its peer {}:{})",
            a.netns, a.ifname, b.netns, b.ifname
        ),
        (Op::AddAddress { netns, ifname, cidr }, true) => format!("delete address {cidr} of {ifname} in {netns}"),
        (Op::AddRoute { netns, dst, dev }, true) => format!("delete route {dst} dev {dev} in {netns}"),
        (Op::Impair { netns, ifname, .. }, true) => format!("clear shaping of {ifname} in {netns}"),
        (Op::SetSysctl { .. }, true) => "goes with its namespace".into(),
        (op, false) => super::render::describe(op),
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

/// Whether a changed step can be re-run in place, its dependents untouched.
/// Underlay objects, certificates and etcd members (whose membership lives in
/// their data) are rebuilt instead.
fn changes_in_place(s: &Step) -> bool {
    match &s.op {
        Op::NftLoad { .. }
        | Op::EtcdPut { .. }
        | Op::CniAdd { .. }
        | Op::Wait { .. }
        | Op::WriteFile { .. }
        | Op::SetSysctl { .. } => true,
        Op::StartProcess { .. } => !s.id.starts_with("etcd:"),
        _ => false,
    }
}

/// The namespaces a step's effect lives in (removing one of them removes it).
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

/// The interface an address or route is on. (Shaping is always cleared: its
/// no-netem loss rule lives in the namespace's nft ruleset, not on the device.)
fn interface(op: &Op) -> Option<(&str, &str)> {
    match op {
        Op::AddAddress { netns, ifname, .. } => Some((netns, ifname)),
        Op::AddRoute { netns, dev, .. } => Some((netns, dev)),
        _ => None,
    }
}

/// How a step being removed is undone: explicitly, or not at all because its
/// effect goes with a namespace being deleted (`kept_netns`: those that are not)
/// or a veth being deleted. A veth with an end in a namespace that exists after the
/// change (`new_netns`) is always deleted explicitly: the kernel destroys a deleted
/// namespace's devices asynchronously, and a new veth may take the old names at once.
fn removal(
    s: &Step,
    kept_netns: &HashSet<&str>,
    new_netns: &HashSet<&str>,
    deleted_veths: &HashMap<(&str, &str), &str>,
) -> Action {
    let homes = home_netns(&s.op);
    let gone = homes.iter().find(|n| !kept_netns.contains(*n));
    let goes_with = match (&s.op, gone) {
        (Op::CreateVeth { .. }, _) if homes.iter().any(|n| new_netns.contains(n)) => None,
        (_, Some(netns)) => Some(format!("namespace {netns}")),
        _ => interface(&s.op)
            .and_then(|i| deleted_veths.get(&i))
            .map(|link| (*link).to_string()),
    };
    match goes_with {
        Some(with) => Action::GoesWith { step: s.clone(), with },
        None => Action::Remove(s.clone()),
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
    let old_steps: HashMap<&str, &Step> = old.steps.iter().map(|s| (s.id.as_str(), s)).collect();
    let new_steps: HashMap<&str, &Step> = new.steps.iter().map(|s| (s.id.as_str(), s)).collect();
    let new_netns: HashSet<&str> = new.namespaces.iter().map(String::as_str).collect();
    let mut kept_netns = new_netns.clone();

    // A pod whose attachment changes (address, worker) is detached with the removals,
    // so that addresses moving between pods are free before they are taken again.
    let reattached: HashSet<&str> = new
        .steps
        .iter()
        .filter(|s| matches!(s.op, Op::CniAdd { .. }))
        .filter(|s| old_steps.get(s.id.as_str()).is_some_and(|o| o.op != s.op))
        .map(|s| s.id.as_str())
        .collect();
    let rebuilt = rebuilt(old, new, &old_steps, &new_steps, old_bundle, new_bundle);
    // Namespaces re-created are deleted on the way, like those that go for good.
    for s in &old.steps {
        if let Op::CreateNetns { netns } = &s.op {
            if rebuilt.contains(s.id.as_str()) {
                kept_netns.remove(netns.as_str());
            }
        }
    }

    let leaving: Vec<&Step> = old
        .steps
        .iter()
        .rev()
        .filter(|s| {
            let id = s.id.as_str();
            !new_steps.contains_key(id) || reattached.contains(id) || rebuilt.contains(id)
        })
        .collect();
    let mut unsupported = Vec::new();
    for s in &leaving {
        if let Op::SetSysctl { netns, .. } = &s.op {
            if kept_netns.contains(netns.as_str()) {
                unsupported.push(Unsupported {
                    step: s.id.clone(),
                    reason: "the value a sysctl had before is unknown: removing it from a host that stays needs `knetsim down` and `up`".into(),
                });
            }
        }
    }
    let mut deleted_veths: HashMap<(&str, &str), &str> = HashMap::new();
    for s in &leaving {
        if let Op::CreateVeth { a, b } = &s.op {
            deleted_veths.insert((&a.netns, &a.ifname), &s.id);
            deleted_veths.insert((&b.netns, &b.ifname), &s.id);
        }
    }
    let mut actions: Vec<Action> = leaving
        .iter()
        .map(|s| removal(s, &kept_netns, &new_netns, &deleted_veths))
        .collect();

    let mut changed_files: HashSet<&str> = HashSet::new();
    let mut unchanged_processes = Vec::new();
    for s in &new.steps {
        let id = s.id.as_str();
        let Some(o) = old_steps.get(id) else {
            actions.push(Action::Add(s.clone()));
            continue;
        };
        if reattached.contains(id) || rebuilt.contains(id) {
            actions.push(Action::Add(s.clone()));
            continue;
        }
        if same(o, old_bundle, s, new_bundle) {
            if matches!(s.op, Op::StartProcess { .. }) {
                unchanged_processes.push(s);
            }
            continue;
        }
        if let Op::WriteFile { path, .. } = &s.op {
            changed_files.insert(path);
        }
        actions.push(Action::Change {
            old: Box::new((*o).clone()),
            new: Box::new(s.clone()),
        });
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

/// Ids of the steps both plans have that must be reversed and run again: those
/// changed in a way that cannot be applied in place, and everything that depends
/// on them, in either plan.
fn rebuilt<'a>(
    old: &'a Plan,
    new: &'a Plan,
    old_steps: &HashMap<&str, &'a Step>,
    new_steps: &HashMap<&str, &'a Step>,
    old_bundle: &Bundle,
    new_bundle: &Bundle,
) -> HashSet<&'a str> {
    let mut dependents: HashMap<&str, Vec<&str>> = HashMap::new();
    for plan in [old, new] {
        for s in &plan.steps {
            if !(old_steps.contains_key(s.id.as_str()) && new_steps.contains_key(s.id.as_str())) {
                continue;
            }
            for a in &s.after {
                dependents.entry(a.as_str()).or_default().push(&s.id);
            }
        }
    }
    let mut todo: Vec<&str> = new
        .steps
        .iter()
        .filter(|s| {
            old_steps
                .get(s.id.as_str())
                .is_some_and(|o| !same(o, old_bundle, s, new_bundle) && !changes_in_place(s))
        })
        .map(|s| s.id.as_str())
        .collect();
    // A host whose address changes is renumbered: its namespace is re-created, so
    // that what it gathered (a CNI bridge, NAT chains, learnt neighbours) goes too
    // and it ends as a fresh `up` would make it.
    let renumbered: HashSet<&str> = todo
        .iter()
        .filter_map(|id| match &new_steps[id].op {
            Op::AddAddress { netns, .. } => Some(netns.as_str()),
            _ => None,
        })
        .collect();
    todo.extend(
        old.steps
            .iter()
            .filter(|s| matches!(&s.op, Op::CreateNetns { netns } if renumbered.contains(netns.as_str())))
            .filter(|s| new_steps.contains_key(s.id.as_str()))
            .map(|s| s.id.as_str()),
    );
    // What lives in a re-created namespace goes with it, whatever its `after` says.
    let mut residents: HashMap<&str, Vec<&str>> = HashMap::new();
    for s in old.steps.iter().filter(|s| new_steps.contains_key(s.id.as_str())) {
        for netns in lives_in(&s.op) {
            residents.entry(netns).or_default().push(&s.id);
        }
    }
    let mut rebuilt: HashSet<&str> = todo.iter().copied().collect();
    while let Some(id) = todo.pop() {
        let inside = match &old_steps[id].op {
            Op::CreateNetns { netns } => residents.get(netns.as_str()).map(Vec::as_slice),
            _ => None,
        };
        let deps = dependents.get(id).map(Vec::as_slice).unwrap_or_default();
        for &d in deps.iter().chain(inside.unwrap_or_default()) {
            if rebuilt.insert(d) {
                todo.push(d);
            }
        }
    }
    rebuilt
}

/// Every namespace a step's effect is in (a process, rules, a pod's interfaces too).
fn lives_in(op: &Op) -> Vec<&str> {
    let mut inside = home_netns(op);
    match op {
        Op::StartProcess { netns, .. } | Op::NftLoad { netns, .. } => inside.push(netns),
        Op::CniAdd {
            worker_netns,
            pod_netns,
            ..
        } => inside.extend([worker_netns.as_str(), pod_netns.as_str()]),
        _ => {}
    }
    inside
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

    /// Performs `actions` on the set of applied step ids and checks that every step
    /// runs after what it needs, is removed before what needs it, that nothing kept
    /// stands on something taken away, and that the result is exactly `new`.
    fn assert_consistent(old: &Plan, new: &Plan, actions: &[Action]) {
        let mut present: HashSet<String> = old.steps.iter().map(|s| s.id.clone()).collect();
        let mut taken: HashSet<String> = HashSet::new();
        let rerun: HashSet<&str> = actions
            .iter()
            .filter(|a| matches!(a, Action::Add(_)))
            .map(|a| a.step().id.as_str())
            .collect();
        for a in actions {
            let s = a.step();
            match a {
                Action::Remove(_) | Action::GoesWith { .. } => {
                    assert!(present.remove(&s.id), "{a}: not present");
                    let needed_by: Vec<&str> = old
                        .steps
                        .iter()
                        .filter(|o| present.contains(&o.id) && o.after.contains(&s.id))
                        .map(|o| o.id.as_str())
                        .collect();
                    assert!(needed_by.is_empty(), "{a}: still needed by {needed_by:?}");
                    taken.insert(s.id.clone());
                }
                Action::Add(_) | Action::Change { .. } | Action::Reload(_) => {
                    assert_eq!(present.contains(&s.id), !matches!(a, Action::Add(_)), "{a}");
                    for d in &s.after {
                        assert!(present.contains(d), "{a}: runs before {d}");
                    }
                    present.insert(s.id.clone());
                }
            }
        }
        let expected: HashSet<String> = new.steps.iter().map(|s| s.id.clone()).collect();
        assert_eq!(present, expected);
        for s in new.steps.iter().filter(|s| !rerun.contains(s.id.as_str())) {
            let deps = s
                .after
                .iter()
                .chain(old.step(&s.id).map(|o| &o.after).into_iter().flatten());
            for d in deps.filter(|d| taken.contains(*d)) {
                // A pod re-attached with another address keeps its workload running.
                let reattached_pod = matches!(new.step(d).map(|x| &x.op), Some(Op::CniAdd { .. }));
                assert!(
                    reattached_pod,
                    "{} is kept but {d}, which it needs, was taken away",
                    s.id
                );
            }
        }
    }

    fn topology(name: &str) -> String {
        std::fs::read_to_string(format!("{}/../topologies/{name}.toml", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn every_pair_of_topologies_has_a_consistent_deterministic_delta() {
        let texts: Vec<String> = ["default", "single", "chain3", "large"]
            .iter()
            .map(|n| topology(n))
            .chain([BASE.to_string()])
            .collect();
        let compiled: Vec<(Plan, Bundle)> = texts.iter().map(|t| compiled(t)).collect();
        for (op, ob) in &compiled {
            for (np, nb) in &compiled {
                let actions = delta(op, ob, np, nb).unwrap();
                assert_consistent(op, np, &actions);
                assert_eq!(delta(op, ob, np, nb).unwrap(), actions, "deterministic");
            }
        }
    }

    fn untouched(lines: &[String], needles: &[&str]) {
        for l in lines {
            assert!(
                !needles.iter().any(|n| l.contains(n)),
                "touches {needles:?}: {l}\n{lines:#?}"
            );
        }
    }

    #[test]
    fn a_worker_added_to_the_last_cluster_leaves_the_first_alone() {
        let new = DEFAULT_TOPOLOGY.replace(
            "name = \"C1\"\netcd = 2\nworkers = 3",
            "name = \"C1\"\netcd = 2\nworkers = 4",
        );
        assert_ne!(new, DEFAULT_TOPOLOGY);
        let l = lines(DEFAULT_TOPOLOGY, &new);
        untouched(&l, &["C0", "k0_"]);
        // C1's hosts keep their addresses: its pods and daemons are not touched either.
        untouched(&l, &["cni-add:C1/", "etcd:C1", "flanneld:C1w1", "addr:C1w1"]);
        assert!(
            l.contains(&"add flanneld:C1w4: start flanneld C1w4".to_string()),
            "{l:#?}"
        );
        // The switch's uplink moves to the next port: only that veth is re-created.
        assert!(
            l.contains(
                &"remove link:C1s0: delete veth d-knetsim-switches:C1s0-eth6 (and its peer d-knetsim-switches:t0-eth2)"
                    .to_string()
            ),
            "{l:#?}"
        );
        assert!(
            l.iter()
                .any(|x| x
                    .starts_with("add link:C1s0: veth d-knetsim-switches:C1s0-eth7 <-> d-knetsim-switches:t0-eth2")),
            "{l:#?}"
        );
        assert!(
            l.contains(&"change flannel-ready:C1w1: wait for [d-C1w1] 3 routes via flannel.100".to_string()),
            "{l:#?}"
        );
    }

    #[test]
    fn renumbered_hosts_are_rebuilt_with_what_depends_on_them() {
        // One worker less in C0: C1's hosts move down by one address.
        let new = DEFAULT_TOPOLOGY
            .replace(
                "name = \"C0\"\netcd = 2\nworkers = 3",
                "name = \"C0\"\netcd = 2\nworkers = 2",
            )
            .replace("worker = \"w3\"", "worker = \"w2\"");
        let l = lines(DEFAULT_TOPOLOGY, &new);
        let has = |x: &str| assert!(l.contains(&x.to_string()), "no `{x}` in {l:#?}");
        // C0w3 goes with its namespace, its veth explicitly (its peer is in the switches).
        has("remove addr:C0w3: goes with namespace d-C0w3");
        has("remove link:C0w3: delete veth d-C0w3:eth0 (and its peer d-knetsim-switches:C0s0-eth5)");
        // The switch's uplink moves down a port; its shaping-free veth is re-created.
        has("add link:C0s0: veth d-knetsim-switches:C0s0-eth5 <-> d-knetsim-switches:t0-eth1 (on t0)");
        has("remove netns:d-C0w3: delete namespace d-C0w3");
        // C1w1 was 10.0.0.8: renumbered, its namespace is re-created (its veth deleted
        // explicitly first, the peer being in the switches), and what stands on it follows.
        has("remove addr:C1w1: goes with namespace d-C1w1");
        has("remove link:C1w1: delete veth d-C1w1:eth0 (and its peer d-knetsim-switches:C1s0-eth3)");
        has("remove netns:d-C1w1: delete namespace d-C1w1");
        has("add netns:d-C1w1: create namespace d-C1w1");
        has("add nft:C1w1: nft -f kube-proxy rules in d-C1w1");
        has("add addr:C1w1: [d-C1w1] addr 10.0.0.7/8 dev eth0");
        has("remove flanneld:C1w1: stop flanneld C1w1, remove /tmp/knetsim-d/C1w1/flannel-subnet.env");
        has("remove cni-add:C1/c1: CNI DEL 11.10.0.2 in d-k1_c1");
        has("add cni-add:C1/c1: CNI ADD 11.10.0.2 in d-k1_c1");
        // C0's remaining workers (but for their rules), its etcd and C1's etcd (pinned addresses) stay.
        untouched(
            &l,
            &[
                "addr:C0w1",
                "addr:C0w2",
                "flanneld:C0w1",
                "flanneld:C0w2",
                "etcd:",
                "etcd-put:C1:config",
                "C1e1",
                "k0_c1",
                "C0/c1",
                "C0/c2",
            ],
        );
    }

    #[test]
    fn an_etcd_membership_change_rebuilds_the_cluster_on_a_fresh_data_dir() {
        let new = DEFAULT_TOPOLOGY.replace("name = \"C1\"\netcd = 2", "name = \"C1\"\netcd = 3");
        let l = lines(DEFAULT_TOPOLOGY, &new);
        let has = |x: &str| assert!(l.contains(&x.to_string()), "no `{x}` in {l:#?}");
        has("remove etcd:C1e1: stop etcd C1e1, remove /tmp/knetsim-d/C1e1.etcd");
        has("add etcd:C1e3: start etcd C1e3");
        has("add etcd-put:C1:config: etcd put /coreos.com/network/config");
        has("remove cni-add:C1/c3: CNI DEL 11.10.32.2 in d-k1_c3");
        has("add cni-add:C1/c3: CNI ADD 11.10.32.2 in d-k1_c3");
        untouched(&l, &["C0", "k0_"]);
    }

    #[test]
    fn removing_a_sysctl_from_a_host_that_stays_is_refused() {
        let (op, ob) = compiled(BASE);
        let mut np = op.clone();
        np.steps.retain(|s| s.id != "sysctl:C0w1:ip_forward");
        for s in &mut np.steps {
            s.after.retain(|a| a != "sysctl:C0w1:ip_forward");
        }
        let err = delta(&op, &ob, &np, &ob).unwrap_err();
        assert_eq!(err[0].step, "sysctl:C0w1:ip_forward", "{err:?}");
    }

    #[test]
    fn pinned_addresses_are_checked() {
        let opts = CompileOptions::named("d");
        let outside = BASE.replace(
            "{ name = \"c3\", worker = \"w2\" }",
            "{ name = \"c3\", worker = \"w2\", ip = \"11.10.0.9\" }",
        );
        let err = compile(&Source::new("t.toml", outside), &opts).unwrap_err().render();
        assert!(
            err.contains("pod address 11.10.0.9 is outside worker C0w2's subnet"),
            "{err}"
        );
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
