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

use super::{
    AddAddress, AddRoute, CniAdd, CreateBridge, CreateNetns, CreateVeth, EtcdPut, GenerateCerts, Impair, MakeDir,
    NftLoad, Op, Plan, SetSysctl, StartProcess, Step, Wait, WriteFile,
};
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

/// What an action does, in a few words.
fn what(action: &Action) -> String {
    let step = action.step();
    if let Action::GoesWith { with, .. } = action {
        return format!("goes with {with}");
    }
    let removing = matches!(action, Action::Remove(_));
    match (&step.op, removing) {
        (Op::CreateNetns(CreateNetns { netns }), false) => format!("create namespace {netns}"),
        (Op::CreateNetns(CreateNetns { netns }), true) => format!("delete namespace {netns}"),
        (Op::CniAdd(CniAdd { pod_netns, ip, .. }), false) => match action {
            Action::Change { old, .. } => match &old.op {
                Op::CniAdd(CniAdd { ip: old_ip, .. }) => format!("CNI DEL {old_ip}, CNI ADD {ip} in {pod_netns}"),
                _ => format!("CNI ADD {ip} in {pod_netns}"),
            },
            _ => format!("CNI ADD {ip} in {pod_netns}"),
        },
        (Op::CniAdd(CniAdd { pod_netns, ip, .. }), true) => format!("CNI DEL {ip} in {pod_netns}"),
        (Op::StartProcess(StartProcess { name, outputs, .. }), _) => match action {
            Action::Remove(_) => {
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
        (Op::NftLoad(NftLoad { netns, artifact, .. }), false) => {
            let what = if artifact.ends_with("network-policy.nft") {
                "network policy"
            } else {
                "kube-proxy"
            };
            format!("nft -f {what} rules in {netns}")
        }
        (Op::NftLoad(NftLoad { netns, path, .. }), true) => format!("delete its tables in {netns}, remove {path}"),
        (Op::WriteFile(WriteFile { path, .. }), false) => format!("write {path}"),
        (Op::WriteFile(WriteFile { path, .. }) | Op::MakeDir(MakeDir { path }), true) => format!("remove {path}"),
        (Op::GenerateCerts(GenerateCerts { dir, .. }), true) => format!("remove {dir}"),
        (Op::MakeDir(MakeDir { path }), false) => format!("mkdir {path}"),
        (Op::EtcdPut(EtcdPut { key, .. }), false) => format!("etcd put {key}"),
        (Op::EtcdPut(EtcdPut { key, .. }), true) => format!("etcd delete {key}"),
        (Op::Wait(Wait { probe }), false) => format!("wait for {}", super::render::probe_text(probe)),
        (Op::Wait(_), true) => "nothing to undo".into(),
        (Op::CreateBridge(CreateBridge { netns, name }), true) => format!("delete bridge {name} in {netns}"),
        (Op::CreateVeth(CreateVeth { a, b }), true) => format!(
            "delete veth {}:{} (and its peer {}:{})",
            a.netns, a.ifname, b.netns, b.ifname
        ),
        (Op::AddAddress(AddAddress { netns, ifname, cidr }), true) => {
            format!("delete address {cidr} of {ifname} in {netns}")
        }
        (Op::AddRoute(AddRoute { netns, dst, dev }), true) => format!("delete route {dst} dev {dev} in {netns}"),
        (Op::Impair(Impair { netns, ifname, .. }), true) => format!("clear shaping of {ifname} in {netns}"),
        (Op::SetSysctl(_), true) => "goes with its namespace".into(),
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
        Op::WriteFile(WriteFile { artifact, .. })
        | Op::NftLoad(NftLoad { artifact, .. })
        | Op::EtcdPut(EtcdPut { artifact, .. }) => Some(artifact),
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
        Op::NftLoad(_) | Op::EtcdPut(_) | Op::CniAdd(_) | Op::Wait(_) | Op::WriteFile(_) | Op::SetSysctl(_) => true,
        Op::StartProcess(_) => !s.id.starts_with("etcd:"),
        _ => false,
    }
}

/// The namespaces a step's effect lives in (removing one of them removes it).
fn home_netns(op: &Op) -> Vec<&str> {
    match op {
        Op::CreateBridge(CreateBridge { netns, .. })
        | Op::AddAddress(AddAddress { netns, .. })
        | Op::AddRoute(AddRoute { netns, .. })
        | Op::SetSysctl(SetSysctl { netns, .. })
        | Op::Impair(Impair { netns, .. }) => vec![netns],
        Op::CreateVeth(CreateVeth { a, b }) => vec![&a.netns, &b.netns],
        _ => Vec::new(),
    }
}

/// The interface an address or route is on. (Shaping is always cleared: its
/// no-netem loss rule lives in the namespace's nft ruleset, not on the device.)
fn interface(op: &Op) -> Option<(&str, &str)> {
    match op {
        Op::AddAddress(AddAddress { netns, ifname, .. }) => Some((netns, ifname)),
        Op::AddRoute(AddRoute { netns, dev, .. }) => Some((netns, dev)),
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
        (Op::CreateVeth(_), _) if homes.iter().any(|n| new_netns.contains(n)) => None,
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
        .filter(|s| matches!(s.op, Op::CniAdd(_)))
        .filter(|s| old_steps.get(s.id.as_str()).is_some_and(|o| o.op != s.op))
        .map(|s| s.id.as_str())
        .collect();
    let rebuilt = rebuilt(old, new, &old_steps, &new_steps, old_bundle, new_bundle);
    // Namespaces re-created are deleted on the way, like those that go for good.
    for s in &old.steps {
        if let Op::CreateNetns(CreateNetns { netns }) = &s.op {
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
        if let Op::SetSysctl(SetSysctl { netns, .. }) = &s.op {
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
        if let Op::CreateVeth(CreateVeth { a, b }) = &s.op {
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
            if matches!(s.op, Op::StartProcess(_)) {
                unchanged_processes.push(s);
            }
            continue;
        }
        if let Op::WriteFile(WriteFile { path, .. }) = &s.op {
            changed_files.insert(path);
        }
        actions.push(Action::Change {
            old: Box::new((*o).clone()),
            new: Box::new(s.clone()),
        });
    }
    // A process whose configuration file was rewritten: nginx reloads, and so does a
    // process all of whose changed files it re-reads on SIGHUP (`reloads`); others restart.
    for s in unchanged_processes {
        let Op::StartProcess(StartProcess { argv, reloads, .. }) = &s.op else {
            continue;
        };
        // `--conf-file=PATH` names its file too.
        let file = |a: &str| a.rsplit_once('=').map_or(a, |(_, f)| f).to_string();
        let changed: Vec<String> = argv
            .iter()
            .map(|a| file(a))
            .filter(|f| changed_files.contains(f.as_str()))
            .collect();
        if changed.is_empty() {
            continue;
        }
        let reloadable = changed.iter().all(|f| reloads.contains(f));
        if reloadable || argv.first().map(String::as_str) == Some("nginx") {
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
            Op::AddAddress(AddAddress { netns, .. }) => Some(netns.as_str()),
            _ => None,
        })
        .collect();
    todo.extend(
        old.steps
            .iter()
            .filter(|s| matches!(&s.op, Op::CreateNetns(CreateNetns { netns }) if renumbered.contains(netns.as_str())))
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
            Op::CreateNetns(CreateNetns { netns }) => residents.get(netns.as_str()).map(Vec::as_slice),
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
        Op::StartProcess(StartProcess { netns, .. }) | Op::NftLoad(NftLoad { netns, .. }) => inside.push(netns),
        Op::CniAdd(CniAdd {
            worker_netns,
            pod_netns,
            ..
        }) => inside.extend([worker_netns.as_str(), pod_netns.as_str()]),
        _ => {}
    }
    inside
}

mod repair;
pub use repair::{repair, Drift};

#[cfg(test)]
mod tests;
