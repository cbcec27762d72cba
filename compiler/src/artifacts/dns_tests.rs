use crate::artifacts::paths::PLAN;
use crate::plan::{delta, Op, Plan, StartProcess};
use crate::{compile_all, CompileOptions, Compiled, Source};

const TOPO: &str = include_str!("../../../topologies/dns.toml");

fn compiled(text: &str) -> Compiled {
    compile_all(&Source::new("t.toml", text), &CompileOptions::named("d")).unwrap_or_else(|d| panic!("{}", d.render()))
}

fn file<'b>(c: &'b Compiled, path: &str) -> &'b str {
    c.bundle
        .get(path)
        .unwrap_or_else(|| panic!("no {path}: {:?}", c.bundle.files.keys().collect::<Vec<_>>()))
}

#[test]
fn the_dns_pod_takes_the_top_of_the_first_subnet_and_the_service_the_10th_address() {
    let c = compiled(TOPO);
    let c0 = c.model.cluster("C0").unwrap();
    let pod = c0.pod("kube-system", "kube-dns").unwrap();
    // w1 holds client, web1, db2 (.2 .3 .4); the DNS pod is at the top of the subnet,
    // where removing one of them cannot move it.
    assert_eq!(
        (pod.worker.as_str(), pod.ip.to_string()),
        ("C0w1", "11.10.15.254".into())
    );
    assert_eq!(c0.pod("default", "db2").unwrap().ip.to_string(), "11.10.0.4");
    // Removing a pod before it on the worker (its followers pinned, as `pod rm` does)
    // leaves the DNS pod where it is.
    let web1 = TOPO.lines().find(|l| l.contains("name = \"web1\"")).unwrap();
    let fewer = TOPO.replace(&format!("{web1}\n"), "").replace(
        "{ name = \"db2\", worker = \"w1\"",
        "{ name = \"db2\", worker = \"w1\", ip = \"11.10.0.4\"",
    );
    let fewer = compiled(&fewer);
    assert!(fewer.model.cluster("C0").unwrap().pod("default", "web1").is_none());
    let moved = fewer
        .model
        .cluster("C0")
        .unwrap()
        .pod("kube-system", "kube-dns")
        .unwrap()
        .ip;
    assert_eq!(moved, pod.ip);
    assert_eq!(pod.labels.get("k8s-app").map(String::as_str), Some("kube-dns"));
    let svc = c0.service("kube-system", "kube-dns").unwrap();
    assert_eq!(svc.vip.to_string(), "100.64.0.10");
    let ports: Vec<_> = svc
        .ports
        .iter()
        .map(|p| (p.name.clone().unwrap(), p.protocol.clone()))
        .collect();
    assert_eq!(ports, [("dns".into(), "udp".into()), ("dns-tcp".into(), "tcp".into())]);
    // The user's services are numbered from the first address as before.
    assert_eq!(c0.service("default", "web").unwrap().vip.to_string(), "100.64.0.1");
    // kube-proxy programs kube-dns like any service, and nothing for the headless one.
    let nft = file(&c, "clusters/C0/workers/C0w2/kube-proxy.nft");
    assert!(nft.contains("100.64.0.10 . udp . 53"), "{nft}");
    assert!(!nft.contains("db"), "{nft}");
}

#[test]
fn records_follow_the_specification() {
    let c = compiled(TOPO);
    let hosts = file(&c, "clusters/C0/dns/hosts");
    let conf = file(&c, "clusters/C0/dns/dnsmasq.conf");
    let line = |l: &str| {
        hosts
            .lines()
            .position(|x| x == l)
            .unwrap_or_else(|| panic!("no `{l}` in\n{hosts}"))
    };
    line("100.64.0.1 web.default.svc.cluster.local");
    line("100.64.0.10 kube-dns.kube-system.svc.cluster.local");
    line("11.10.16.3 db.default.svc.cluster.local");
    line("11.10.0.3 11-10-0-3.default.pod.cluster.local");
    line("11.10.15.254 11-10-15-254.kube-system.pod.cluster.local");
    // A headless endpoint's own name is its address's first, so its PTR.
    assert!(
        line("11.10.16.3 11-10-16-3.db.default.svc.cluster.local") < line("11.10.16.3 db.default.svc.cluster.local")
    );
    assert!(
        line("11.10.0.4 11-10-0-4.db.default.svc.cluster.local")
            < line("11.10.0.4 11-10-0-4.default.pod.cluster.local")
    );
    for srv in [
        "srv-host=_http._tcp.web.default.svc.cluster.local,web.default.svc.cluster.local,80,0,100",
        "srv-host=_pg._tcp.db.default.svc.cluster.local,11-10-16-3.db.default.svc.cluster.local,5432,0,100",
        "srv-host=_dns._udp.kube-dns.kube-system.svc.cluster.local,kube-dns.kube-system.svc.cluster.local,53,0,100",
    ] {
        assert!(conf.lines().any(|l| l == srv), "no `{srv}` in\n{conf}");
    }
    for l in [
        "no-resolv",
        "local=/cluster.local/",
        "txt-record=dns-version.cluster.local,1.1.0",
    ] {
        assert!(conf.lines().any(|x| x == l), "no `{l}` in\n{conf}");
    }
    // The exposed service resolves in the listening cluster to its router's worker.
    let c1 = file(&c, "clusters/C1/dns/hosts");
    assert!(
        c1.lines().any(|l| l == "10.0.0.5 web.default.svc.cluster.local"),
        "{c1}"
    );
    assert_eq!(
        file(&c, "clusters/C0/dns/resolv.conf/default")
            .lines()
            .skip(1)
            .collect::<Vec<_>>(),
        [
            "nameserver 100.64.0.10",
            "search default.svc.cluster.local svc.cluster.local cluster.local",
            "options ndots:5"
        ]
    );
}

#[test]
fn not_ready_endpoints_leave_the_headless_records() {
    let mut opts = CompileOptions::named("d");
    opts.not_ready.insert("C0/db1".into());
    let c = compile_all(&Source::new("t.toml", TOPO), &opts).unwrap();
    let hosts = file(&c, "clusters/C0/dns/hosts");
    assert!(!hosts.contains("11.10.16.3 db.default"), "{hosts}");
    assert!(hosts.contains("11.10.0.4 db.default"), "{hosts}");
}

#[test]
fn pods_get_their_resolv_conf_before_their_workload() {
    let c = compiled(TOPO);
    let plan: Plan = serde_json::from_str(file(&c, PLAN)).unwrap();
    let id = "file:/etc/netns/d-k0_web1/resolv.conf";
    assert!(plan.step(id).is_some(), "no {id}");
    assert!(plan.step("workload:C0/web1").unwrap().after.contains(&id.to_string()));
    let Op::StartProcess(StartProcess { argv, reloads, .. }) =
        &plan.step("workload:C0/kube-system/kube-dns").unwrap().op
    else {
        panic!()
    };
    assert_eq!(argv[0], "dnsmasq");
    assert_eq!(reloads, &[argv[4].clone()]);
}

#[test]
fn a_new_service_reloads_dnsmasq_and_a_new_named_port_restarts_it() {
    let old = compiled(TOPO);
    let actions = |text: &str| -> Vec<String> {
        let new = compiled(text);
        delta(&old.plan, &old.bundle, &new.plan, &new.bundle)
            .unwrap()
            .iter()
            .filter(|a| a.step().id.contains("kube-dns"))
            .map(|a| format!("{} {}", a.verb(), a.step().id))
            .collect()
    };
    let add = |svc: &str| TOPO.replacen("services = [\n", &format!("services = [\n  {svc},\n"), 1);
    assert_eq!(
        actions(&add("{ name = \"api\", pods = [\"web1\"] }")),
        ["reload workload:C0/kube-system/kube-dns"]
    );
    let named = actions(&add(
        "{ name = \"api\", pods = [\"web1\"], ports = [{ port = 81, name = \"x\" }] }",
    ));
    assert_eq!(named, ["change workload:C0/kube-system/kube-dns"]);
}

#[test]
fn without_dns_nothing_is_added() {
    let without = TOPO.replace("[dns]\ndomain = \"cluster.local\"\n", "");
    let c = compiled(&without[..without.find("[[checks]]").unwrap()]);
    assert!(c.model.dns.is_none());
    assert!(c.model.clusters.iter().all(|c| c.pods.iter().all(|p| !p.implicit)));
    assert!(!c.bundle.files.keys().any(|k| k.contains("/dns/")));
}

#[test]
fn coredns_gets_a_corefile_and_zones_and_auto_picks_it_when_installed() {
    let coredns = compiled(&TOPO.replace("domain = \"cluster.local\"", "server = \"coredns\""));
    let corefile = file(&coredns, "clusters/C0/dns/Corefile");
    assert!(corefile.contains("file /tmp/knetsim-d/dns/C0/db.cluster"), "{corefile}");
    let zone = file(&coredns, "clusters/C0/dns/db.cluster");
    assert!(
        zone.contains("web.default.svc.cluster.local. IN A 100.64.0.1"),
        "{zone}"
    );
    assert!(
        zone.contains("_http._tcp.web.default.svc.cluster.local. IN SRV 0 100 80 web.default.svc.cluster.local."),
        "{zone}"
    );
    let reverse = file(&coredns, "clusters/C0/dns/db.reverse");
    assert!(
        reverse.contains("1.0.64.100.in-addr.arpa. IN PTR web.default.svc.cluster.local."),
        "{reverse}"
    );
    let pod = coredns
        .model
        .cluster("C0")
        .unwrap()
        .pod("kube-system", "kube-dns")
        .unwrap();
    assert_eq!(pod.command.as_ref().unwrap()[0], "coredns");
    let mut opts = CompileOptions::named("d");
    opts.coredns_on_path = true;
    let auto = compile_all(&Source::new("t.toml", TOPO), &opts).unwrap();
    assert_eq!(auto.model.dns.unwrap().server, crate::model::DnsServer::Coredns);
    assert_eq!(
        compiled(TOPO).model.dns.unwrap().server,
        crate::model::DnsServer::Dnsmasq
    );
}
