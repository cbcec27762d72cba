//! Model -> plan. Step ids are stable and human-readable; dependencies are exactly
//! what each step needs, so the executor can run the rest in parallel.

use super::{
    AddAddress, AddRoute, CniAdd, CreateBridge, CreateNetns, CreateVeth, EtcdPut, GenerateCerts, Impair, MakeDir,
    NftLoad, Op, Plan, Probe, RestartPolicy, SetSysctl, StartProcess, Step, VethEnd, Wait, WriteFile,
};
use crate::artifacts::{dns, etcd, flannel, paths, paths::runtime};
use crate::bundle::Bundle;
use crate::model::{Cluster, Model, Naming};

struct Steps {
    steps: Vec<Step>,
}

impl Steps {
    /// Appends a step; repeated dependencies are listed once, in first-seen order.
    fn add(&mut self, id: String, mut after: Vec<String>, op: Op) -> String {
        let mut seen = std::collections::HashSet::new();
        after.retain(|a| seen.insert(a.clone()));
        self.steps.push(Step {
            id: id.clone(),
            after,
            op,
        });
        id
    }
}

fn netns_id(ns: &str) -> String {
    format!("netns:{ns}")
}

pub fn build(model: &Model, _bundle: &Bundle) -> Plan {
    let n = model.naming();
    let mut s = Steps { steps: Vec::new() };
    let mut namespaces = vec![model.switch_netns.clone()];
    namespaces.extend(model.hosts().map(|(_, h)| h.netns.clone()));
    namespaces.extend(
        model
            .clusters
            .iter()
            .flat_map(|c| c.pods.iter().filter(|p| !p.deleted).map(|p| p.netns.clone())),
    );
    for ns in &namespaces {
        s.add(netns_id(ns), vec![], Op::CreateNetns(CreateNetns { netns: ns.clone() }));
    }
    underlay(model, &mut s);
    for c in &model.clusters {
        cluster(model, &n, c, &mut s);
    }
    routers(model, &n, &mut s);
    Plan {
        name: model.name.clone(),
        state_dir: model.state_dir.clone(),
        namespaces,
        steps: s.steps,
    }
}

fn underlay(model: &Model, s: &mut Steps) {
    let sw_ns = &model.switch_netns;
    for sw in &model.underlay.switches {
        s.add(
            format!("bridge:{}", sw.name),
            vec![netns_id(sw_ns)],
            Op::CreateBridge(CreateBridge {
                netns: sw_ns.clone(),
                name: sw.name.clone(),
            }),
        );
    }
    for l in &model.underlay.links {
        let mut after = vec![netns_id(&l.a.netns)];
        if l.b.netns != l.a.netns {
            after.push(netns_id(&l.b.netns));
        }
        after.extend(l.a.bridge.iter().chain(&l.b.bridge).map(|b| format!("bridge:{b}")));
        let end = |e: &crate::model::LinkEnd| VethEnd {
            netns: e.netns.clone(),
            ifname: e.ifname.clone(),
            bridge: e.bridge.clone(),
        };
        let link = s.add(
            format!("link:{}", l.a.node),
            after,
            Op::CreateVeth(CreateVeth {
                a: end(&l.a),
                b: end(&l.b),
            }),
        );
        if let Some(imp) = &l.impairment {
            s.add(
                format!("impair:{}", l.a.node),
                vec![link],
                Op::Impair(Impair {
                    netns: l.a.netns.clone(),
                    ifname: l.a.ifname.clone(),
                    rate: imp.rate.clone(),
                    delay: imp.delay.clone(),
                    loss: imp.loss,
                }),
            );
        }
    }
    for (c, h) in model.hosts() {
        s.add(
            format!("addr:{}", h.name),
            vec![format!("link:{}", h.name)],
            Op::AddAddress(AddAddress {
                netns: h.netns.clone(),
                ifname: h.ifname.clone(),
                cidr: format!("{}/{}", h.ip, h.prefix_len),
            }),
        );
        if c.worker(&h.local).is_some() {
            s.add(
                format!("sysctl:{}:ip_forward", h.name),
                vec![netns_id(&h.netns)],
                Op::SetSysctl(SetSysctl {
                    netns: h.netns.clone(),
                    key: "net.ipv4.ip_forward".into(),
                    value: "1".into(),
                }),
            );
            // kube-proxy's output-chain DNAT needs a route to the VIPs to exist first.
            s.add(
                format!("route:{}:services", h.name),
                vec![format!("addr:{}", h.name)],
                Op::AddRoute(AddRoute {
                    netns: h.netns.clone(),
                    dst: c.service_cidr.to_string(),
                    dev: h.ifname.clone(),
                }),
            );
        }
    }
}

fn cluster(model: &Model, n: &Naming, c: &Cluster, s: &mut Steps) {
    let endpoints = c.etcd_endpoints();
    // Members start one after another, each once the previous one serves its peer
    // port: a member that finds a peer's port open but not yet serving waits out a
    // 1 s timeout while bootstrapping. Health (quorum) is awaited once all are up.
    let mut previous: Option<String> = None;
    for m in &c.etcd {
        let member = etcd::member(n, c, m);
        let mut after: Vec<String> = c.etcd.iter().map(|e| format!("addr:{}", e.name)).collect();
        after.extend(previous.take());
        previous = Some(s.add(
            format!("etcd:{}", m.name),
            after,
            Op::StartProcess(StartProcess {
                name: format!("etcd {}", m.name),
                netns: m.netns.clone(),
                argv: member.argv(),
                builtin: None,
                log: member.log.clone(),
                outputs: vec![member.data_dir.clone()],
                reloads: vec![],
                restart: RestartPolicy::Always,
                ready: Probe::TcpConnect {
                    netns: m.netns.clone(),
                    addr: format!("{}:2380", m.ip),
                },
            }),
        ));
    }
    let mut etcd_started = Vec::new();
    for m in &c.etcd {
        etcd_started.push(s.add(
            format!("etcd-healthy:{}", m.name),
            previous.iter().cloned().collect(),
            Op::Wait(Wait {
                probe: Probe::HttpGet {
                    netns: m.netns.clone(),
                    url: format!("http://{}:2379/health", m.ip),
                },
            }),
        ));
    }
    let first_etcd = &c.etcd[0];
    let config = s.add(
        format!("etcd-put:{}:config", c.name),
        etcd_started,
        Op::EtcdPut(EtcdPut {
            netns: first_etcd.netns.clone(),
            endpoints: endpoints.clone(),
            key: format!("{}/config", flannel::ETCD_PREFIX),
            artifact: paths::flannel_network_config(c),
            pointer: String::new(),
        }),
    );
    let mut flanneld_started = Vec::new();
    for w in &c.workers {
        let reservation = s.add(
            format!("etcd-put:{}:{}", c.name, w.host.name),
            vec![config.clone()],
            Op::EtcdPut(EtcdPut {
                netns: first_etcd.netns.clone(),
                endpoints: endpoints.clone(),
                key: flannel::subnet_key(w),
                artifact: paths::subnet_reservation(c, w),
                pointer: "/value".into(),
            }),
        );
        let cni_conf = s.add(
            format!("file:{}", runtime::cni_conf(n, w)),
            vec![],
            Op::WriteFile(WriteFile {
                path: runtime::cni_conf(n, w),
                artifact: paths::cni_config(c, w),
            }),
        );
        let subnet_env = runtime::subnet_env(n, w);
        let flanneld = s.add(
            format!("flanneld:{}", w.host.name),
            vec![
                reservation,
                format!("addr:{}", w.host.name),
                format!("sysctl:{}:ip_forward", w.host.name),
            ],
            Op::StartProcess(StartProcess {
                name: format!("flanneld {}", w.host.name),
                netns: w.host.netns.clone(),
                argv: flanneld_argv(c, w, &endpoints, &subnet_env),
                builtin: Some("flanneld".into()),
                log: runtime::flannel_log(n, w),
                outputs: vec![subnet_env.clone()],
                reloads: vec![],
                restart: RestartPolicy::Always,
                ready: Probe::FileExists { path: subnet_env },
            }),
        );
        flanneld_started.push(flanneld.clone());
        s.add(
            format!("nft:{}", w.host.name),
            vec![netns_id(&w.host.netns)],
            Op::NftLoad(NftLoad {
                netns: w.host.netns.clone(),
                artifact: paths::nft_ruleset(c, w),
                path: runtime::nft_ruleset(n, w),
            }),
        );
        // Policies are in force before any pod of the worker gets its address.
        let policies_loaded = (!c.network_policies.is_empty()).then(|| {
            let id = format!("netpol:{}", w.host.name);
            s.add(
                id.clone(),
                vec![netns_id(&w.host.netns)],
                Op::NftLoad(NftLoad {
                    netns: w.host.netns.clone(),
                    artifact: paths::network_policy(c, w),
                    path: runtime::network_policy(n, w),
                }),
            );
            id
        });
        let mut previous_add: Option<String> = None;
        for p in c.pods_on(w).filter(|p| !p.deleted) {
            let mut after = vec![flanneld.clone(), cni_conf.clone(), netns_id(&p.netns)];
            // One CNI ADD at a time per worker (as a kubelet would); workers run in parallel.
            after.extend(previous_add.take());
            after.extend(policies_loaded.clone());
            let add = s.add(
                format!("cni-add:{}", c.pod_id(p)),
                after,
                Op::CniAdd(CniAdd {
                    worker_netns: w.host.netns.clone(),
                    conf_dir: runtime::cni_conf_dir(n, w),
                    network: w.host.name.clone(),
                    container_id: p.container_id.clone(),
                    pod_netns: p.netns.clone(),
                    ifname: "eth0".into(),
                    ip: p.ip.to_string(),
                }),
            );
            previous_add = Some(add.clone());
            let mut workload_after = vec![add];
            workload_after.extend(dns_files(model, n, c, p, s));
            if let Some(argv) = &p.command {
                let ready = match p.ports.first() {
                    Some(port) => Probe::TcpConnect {
                        netns: p.netns.clone(),
                        addr: format!("{}:{port}", p.ip),
                    },
                    None => Probe::Alive,
                };
                let reloads = match (&model.dns, p.implicit) {
                    (Some(dns), true) => dns::reloadable(n, c, dns.server),
                    _ => vec![],
                };
                s.add(
                    format!("workload:{}", c.pod_id(p)),
                    workload_after,
                    Op::StartProcess(StartProcess {
                        name: workload_name(&c.pod_id(p)),
                        netns: p.netns.clone(),
                        argv: argv.clone(),
                        builtin: None,
                        log: runtime::pod_log(n, c, p),
                        outputs: vec![],
                        reloads,
                        restart: p.restart_policy,
                        ready,
                    }),
                );
            }
        }
    }
    for w in &c.workers {
        s.add(
            format!("flannel-ready:{}", w.host.name),
            flanneld_started.clone(),
            Op::Wait(Wait {
                probe: Probe::RoutesVia {
                    netns: w.host.netns.clone(),
                    dev: c.flannel.device(),
                    count: c.workers.len() - 1,
                },
            }),
        );
    }
    for ing in &c.ingresses {
        let w = model
            .hosts()
            .find(|(_, h)| h.name == ing.worker)
            .map(|(_, h)| h)
            .expect("ingress worker exists");
        let dir = runtime::ingress_dir(n, ing);
        let conf = format!("{dir}/nginx.conf");
        let mkdir = s.add(
            format!("dir:{dir}/tmp"),
            vec![],
            Op::MakeDir(MakeDir {
                path: format!("{dir}/tmp"),
            }),
        );
        let file = s.add(
            format!("file:{conf}"),
            vec![],
            Op::WriteFile(WriteFile {
                path: conf.clone(),
                artifact: paths::nginx_conf(c, ing),
            }),
        );
        // nginx proxies to VIPs from the worker itself: the output-hook DNAT needs the
        // rules and the route to the service CIDR.
        let mut after = vec![
            mkdir,
            file,
            format!("addr:{}", w.name),
            format!("route:{}:services", w.name),
            format!("nft:{}", w.name),
        ];
        after.extend(
            c.services
                .iter()
                .filter(|svc| ing.routes.iter().any(|r| r.service == svc.name))
                .flat_map(|svc| live_endpoints(c, svc)),
        );
        s.add(
            format!("nginx:{}/{}", c.name, ing.name),
            after,
            Op::StartProcess(StartProcess {
                name: format!("ingress {}/{}", c.name, ing.name),
                netns: w.netns.clone(),
                argv: vec![
                    "nginx".into(),
                    "-p".into(),
                    format!("{dir}/"),
                    "-e".into(),
                    format!("{dir}/error.log"),
                    "-c".into(),
                    conf,
                ],
                builtin: None,
                log: format!("{dir}/nginx.log"),
                outputs: vec![],
                reloads: vec![],
                restart: RestartPolicy::Always,
                ready: Probe::TcpConnect {
                    netns: w.netns.clone(),
                    addr: format!("127.0.0.1:{}", ing.port),
                },
            }),
        );
    }
}

/// With `[dns]`, the files a pod's workload needs first: its resolv.conf (read
/// through the bind mount over /etc/resolv.conf that entering the pod makes), and
/// for the DNS pod its server's files. Returns their step ids.
fn dns_files(model: &Model, n: &Naming, c: &Cluster, p: &crate::model::Pod, s: &mut Steps) -> Vec<String> {
    let Some(dns) = &model.dns else {
        return Vec::new();
    };
    if p.implicit {
        return dns::files(model, dns, c)
            .into_iter()
            .map(|(name, _)| {
                let path = runtime::dns_file(n, c, name);
                s.add(
                    format!("file:{path}"),
                    vec![],
                    Op::WriteFile(WriteFile {
                        path,
                        artifact: paths::dns_file(c, name),
                    }),
                )
            })
            .collect();
    }
    let path = runtime::resolv_conf(p);
    vec![s.add(
        format!("file:{path}"),
        vec![netns_id(&p.netns)],
        Op::WriteFile(WriteFile {
            path,
            artifact: paths::resolv_conf(c, &p.namespace),
        }),
    )]
}

/// The process name of pod `id`'s (`C0/c4`) workload.
pub fn workload_name(id: &str) -> String {
    format!("{WORKLOAD_PREFIX}{id}")
}

/// The pod (`C0/c4`) whose workload a process name names, if it is one.
pub fn workload_pod(process: &str) -> Option<&str> {
    process.strip_prefix(WORKLOAD_PREFIX)
}

const WORKLOAD_PREFIX: &str = "pod ";

/// flanneld's command line, as a real flanneld on PATH takes it (the built-in agent
/// takes the same flags).
fn flanneld_argv(c: &Cluster, w: &crate::model::Worker, endpoints: &[String], subnet_env: &str) -> Vec<String> {
    let mut argv = vec![
        "flanneld".into(),
        format!("-iface={}", w.host.ip),
        format!("-etcd-endpoints={}", endpoints.join(",")),
        format!("-etcd-prefix={}", flannel::ETCD_PREFIX),
        format!("-subnet-file={subnet_env}"),
    ];
    if c.flannel.ip_masq {
        argv.push("-ip-masq".into());
    }
    argv
}

/// The CNI ADD steps of a service's endpoints whose pods exist (not deleted).
fn live_endpoints<'a>(c: &'a Cluster, svc: &'a crate::model::Service) -> impl Iterator<Item = String> + 'a {
    svc.endpoints
        .iter()
        .filter(|e| c.pod(&svc.namespace, &e.pod).is_some_and(|p| !p.deleted))
        .map(|e| format!("cni-add:{}", crate::model::workload_id(&c.name, &svc.namespace, &e.pod)))
}

fn routers(model: &Model, n: &Naming, s: &mut Steps) {
    let uses_tls = |r: &crate::model::Router| r.listener_tls || r.connectors.iter().any(|c| c.tls);
    let ca = model.routers.iter().any(uses_tls).then(|| {
        let dir = runtime::router_ca(n);
        s.add(
            "certs:ca".into(),
            vec![],
            Op::GenerateCerts(GenerateCerts {
                dir,
                common_name: format!("knetsim inter-router CA ({})", n.state_dir()),
                ip_sans: vec![],
                ca_dir: None,
            }),
        )
    });
    for r in &model.routers {
        let conf = runtime::router_config(n, r);
        let file = s.add(
            format!("file:{conf}"),
            vec![],
            Op::WriteFile(WriteFile {
                path: conf.clone(),
                artifact: paths::router_config(r),
            }),
        );
        let netns = model
            .hosts()
            .find(|(_, h)| h.name == r.worker)
            .map(|(_, h)| h.netns.clone())
            .expect("router worker exists");
        let mut after = vec![file, format!("addr:{}", r.worker)];
        if let Some(ca) = ca.as_ref().filter(|_| uses_tls(r)) {
            after.push(s.add(
                format!("certs:{}", r.cluster),
                vec![ca.clone()],
                Op::GenerateCerts(GenerateCerts {
                    dir: runtime::router_certs(n, r),
                    common_name: r.id.clone(),
                    ip_sans: vec![r.ip.to_string()],
                    ca_dir: Some(runtime::router_ca(n)),
                }),
            ));
        }
        if let Some(c) = model.cluster(&r.cluster) {
            for t in &r.tcp_connectors {
                if let Some(p) = c.pods.iter().find(|p| p.ip == t.host && !p.deleted) {
                    after.push(format!("cni-add:{}", c.pod_id(p)));
                } else if let Some(svc) = c.services.iter().find(|s| s.vip == t.host) {
                    // A service target is reached through the worker's kube-proxy rules.
                    after.push(format!("route:{}:services", r.worker));
                    after.push(format!("nft:{}", r.worker));
                    after.extend(live_endpoints(c, svc));
                }
            }
        }
        s.add(
            format!("router:{}", r.cluster),
            after,
            Op::StartProcess(StartProcess {
                name: format!("router {}", r.id),
                netns: netns.clone(),
                argv: vec!["skrouterd".into(), "-c".into(), conf],
                builtin: Some("router".into()),
                log: runtime::router_log(n, r),
                outputs: vec![],
                reloads: vec![],
                restart: RestartPolicy::Always,
                ready: Probe::HttpGet {
                    netns: netns.clone(),
                    url: "http://127.0.0.1:9090/healthz".into(),
                },
            }),
        );
    }
}

#[cfg(test)]
mod tls_tests {
    use crate::artifacts::paths::PLAN;
    use crate::plan::{GenerateCerts, Op, Plan};
    use crate::{compile, CompileOptions, Source};

    fn plan(text: &str) -> Plan {
        let bundle = compile(&Source::new("t.toml", text), &CompileOptions::named("d")).unwrap();
        serde_json::from_str(bundle.get(PLAN).unwrap()).unwrap()
    }

    const TWO: &str = r#"
[[clusters]]
name = "C0"
workers = 1
pods = [{ name = "c1", worker = "w1" }]

[[clusters]]
name = "C1"
workers = 1

[interconnect]
links = [{ from = "C1", to = "C0", cost = 1, tls = TLS }]

[[interconnect.expose]]
name = "web"
cluster = "C0"
pod = "c1"
port = 80
listen = [{ cluster = "C1", port = 1028 }]
"#;

    #[test]
    fn a_tls_link_generates_one_ca_and_a_cert_per_router_before_the_routers() {
        let p = plan(&TWO.replace("TLS", "true"));
        let pos = |id: &str| {
            p.steps
                .iter()
                .position(|s| s.id == id)
                .unwrap_or_else(|| panic!("no step {id}"))
        };
        let Some(Op::GenerateCerts(GenerateCerts { dir, ca_dir: None, .. })) = p.step("certs:ca").map(|s| &s.op) else {
            panic!("no CA step");
        };
        assert!(
            dir.starts_with(&p.state_dir) && dir.ends_with("/skupper/certs"),
            "{dir}"
        );
        for c in ["C0", "C1"] {
            let s = p.step(&format!("certs:{c}")).unwrap();
            let Op::GenerateCerts(GenerateCerts {
                dir: d,
                ip_sans,
                ca_dir,
                ..
            }) = &s.op
            else {
                panic!("certs:{c} is {:?}", s.op)
            };
            assert_eq!(ca_dir.as_deref(), Some(dir.as_str()));
            assert!(d.ends_with(&format!("/skupper/certs/{c}")), "{d}");
            assert_eq!(ip_sans.len(), 1);
            assert!(s.after.contains(&"certs:ca".to_string()));
            assert!(p
                .step(&format!("router:{c}"))
                .unwrap()
                .after
                .contains(&format!("certs:{c}")));
            assert!(pos("certs:ca") < pos(&format!("certs:{c}")));
            assert!(pos(&format!("certs:{c}")) < pos(&format!("router:{c}")));
        }
        let plain = plan(&TWO.replace("TLS", "false"));
        assert!(!plain.steps.iter().any(|s| matches!(s.op, Op::GenerateCerts(_))));
    }
}

#[cfg(test)]
mod ip_masq_tests {
    use crate::artifacts::paths::{self, PLAN};
    use crate::bundle::Bundle;
    use crate::plan::{Op, Plan, StartProcess};
    use crate::{compile, CompileOptions, Source};

    fn bundle(flannel: &str) -> Bundle {
        let text = format!("[[clusters]]\nname = \"C0\"\nworkers = 2\n{flannel}\n");
        compile(&Source::new("t.toml", text), &CompileOptions::named("d")).unwrap()
    }

    fn flanneld_argv(b: &Bundle, worker: &str) -> Vec<String> {
        let plan: Plan = serde_json::from_str(b.get(PLAN).unwrap()).unwrap();
        match &plan.step(&format!("flanneld:{worker}")).unwrap().op {
            Op::StartProcess(StartProcess { argv, .. }) => argv.clone(),
            other => panic!("{other:?}"),
        }
    }

    fn network_config(b: &Bundle) -> serde_json::Value {
        serde_json::from_str(b.get("clusters/C0/flannel-network-config.json").unwrap()).unwrap()
    }

    #[test]
    fn ip_masq_passes_the_flag_and_asks_for_nftables_mode() {
        let b = bundle("flannel = { ip_masq = true }");
        for w in ["C0w1", "C0w2"] {
            let argv = flanneld_argv(&b, w);
            assert_eq!(argv.last().map(String::as_str), Some("-ip-masq"), "{argv:?}");
            assert_eq!(argv.iter().filter(|a| a.contains("ip-masq")).count(), 1);
        }
        let config = network_config(&b);
        assert_eq!(config["EnableNFTables"], true, "{config:#}");
        assert_eq!(config["Network"], "11.0.0.0/8");
        let inventory: serde_json::Value = serde_json::from_str(b.get(paths::INVENTORY).unwrap()).unwrap();
        assert_eq!(inventory["clusters"][0]["flannel"]["ip_masq"], true);
    }

    #[test]
    fn without_ip_masq_nothing_changes() {
        for flannel in ["", "flannel = { ip_masq = false }"] {
            let b = bundle(flannel);
            let argv = flanneld_argv(&b, "C0w1");
            assert!(!argv.iter().any(|a| a.contains("ip-masq")), "{argv:?}");
            let config = network_config(&b);
            assert!(config.get("EnableNFTables").is_none(), "{config:#}");
            let inventory: serde_json::Value = serde_json::from_str(b.get(paths::INVENTORY).unwrap()).unwrap();
            assert!(inventory["clusters"][0]["flannel"].get("ip_masq").is_none());
        }
    }
}

#[cfg(test)]
mod restart_policy_tests {
    use crate::artifacts::paths::PLAN;
    use crate::plan::{Op, Plan, RestartPolicy, StartProcess};
    use crate::{compile, CompileOptions, Source};

    #[test]
    fn a_pods_restart_policy_reaches_its_workload_step() {
        let text = "[[clusters]]\nname = \"C0\"\npods = [\n  { name = \"a\", worker = \"w1\", command = [\"sleep\", \"9\"] },\n  { name = \"b\", worker = \"w1\", command = [\"sleep\", \"9\"], restart_policy = \"Never\" },\n]\n";
        let bundle = compile(&Source::new("t.toml", text), &CompileOptions::named("d")).unwrap();
        let plan: Plan = serde_json::from_str(bundle.get(PLAN).unwrap()).unwrap();
        let restart = |id: &str| match &plan.step(id).unwrap().op {
            Op::StartProcess(StartProcess { restart, .. }) => *restart,
            other => panic!("{other:?}"),
        };
        assert_eq!(restart("workload:C0/a"), RestartPolicy::Always);
        assert_eq!(restart("workload:C0/b"), RestartPolicy::Never);
        assert_eq!(restart("etcd:C0e1"), RestartPolicy::Always);
        // Only a Never is written out: plans without one are as they were.
        assert_eq!(bundle.get(PLAN).unwrap().matches("\"restart\"").count(), 1);
    }
}
