//! The delta of two plans: what each kind of edit turns into.

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
            let reattached_pod = matches!(new.step(d).map(|x| &x.op), Some(Op::CniAdd(_)));
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
            .any(|x| x.starts_with("add link:C1s0: veth d-knetsim-switches:C1s0-eth7 <-> d-knetsim-switches:t0-eth2")),
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
