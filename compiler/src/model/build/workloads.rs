//! Pods, services and ingress rules of a cluster: pod addresses, VIPs, ports
//! and endpoints, resolved by name.

use super::*;

/// The CNI container id of a pod: `C0-c1` in `default` (the seed's), `C0-prod.web` else
/// (names have no '.', so the two forms never meet).
fn container_id(cluster: &str, namespace: &str, pod: &str) -> String {
    if namespace == DEFAULT_NAMESPACE {
        format!("{cluster}-{pod}")
    } else {
        format!("{cluster}-{namespace}.{pod}")
    }
}

/// Names unique per namespace, as Kubernetes keeps pods and services.
fn unique_in_namespace(what: &'static str, namespace: &str, cluster: &str) -> Unique<'static> {
    let scope = if namespace == DEFAULT_NAMESPACE {
        format!("cluster `{cluster}`")
    } else {
        format!("namespace `{namespace}` of cluster `{cluster}`")
    };
    Unique::within(what, scope)
}

/// Kubernetes' IANA_SVC_NAME: 1-15 characters of `[a-z0-9-]`, at least one letter,
/// no leading, trailing or doubled '-'.
pub(super) fn is_port_name(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && s.chars().any(|c| c.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

impl Builder<'_> {
    pub(super) fn pods(&mut self, cs: &spec::ClusterSpec, cluster: &mut Cluster) {
        // Pod names are unique per namespace, as in Kubernetes.
        let mut names: HashMap<String, Unique> = HashMap::new();
        let mut per_worker: HashMap<String, usize> = HashMap::new();
        // Pinned addresses first: the others skip them.
        let mut pinned: HashMap<usize, Ipv4Addr> = HashMap::new();
        let mut taken: HashSet<Ipv4Addr> = HashSet::new();
        for (i, p) in cs.pods.iter().enumerate() {
            let (Some(v), Some(worker)) = (&p.ip, cluster.worker(p.worker.get_ref())) else {
                continue;
            };
            let Some(ip) = self.report.ipv4_addr(v, "pod address") else {
                continue;
            };
            let first = allocate::pod_ip(worker.subnet, 0);
            let slot = allocate::Slot::of(worker.subnet, ip);
            // A host address below the first pod address is `.1`, the bridge's.
            let usable = slot == allocate::Slot::Host && matches!(first, Some(first) if ip >= first);
            if !usable {
                let (label, relation) = match slot {
                    allocate::Slot::Outside => ("outside the worker's subnet", slot.relation()),
                    allocate::Slot::Network => ("network address", slot.relation()),
                    allocate::Slot::Broadcast => ("broadcast address", slot.relation()),
                    allocate::Slot::Host => ("bridge gateway", "is the bridge gateway (cni0) address of"),
                };
                let why = if slot == allocate::Slot::Outside {
                    ""
                } else {
                    " and cannot be a pod address"
                };
                let hint = match first {
                    Some(first) => format!(
                        "pod addresses of {} start at \"{first}\"; or leave ip out to have the next free address allocated",
                        worker.subnet
                    ),
                    None => "leave ip out to have the next free address allocated".to_string(),
                };
                self.report.error(
                    v.span(),
                    format!(
                        "pod address {ip} {relation} worker {}'s subnet {}{why}",
                        worker.host.name, worker.subnet
                    ),
                    label,
                    &hint,
                );
                continue;
            }
            if !taken.insert(ip) {
                self.report.error(
                    v.span(),
                    format!("pod address {ip} is pinned twice"),
                    "duplicate",
                    "give each pod its own address, or leave ip out",
                );
                continue;
            }
            pinned.insert(i, ip);
        }
        for (i, p) in cs.pods.iter().enumerate() {
            // An invalid name is reported but the pod is kept, so references to it
            // do not fail as well.
            self.report.identifier(&p.name, "pod name", 40);
            let ns = p.namespace.as_ref().map_or(DEFAULT_NAMESPACE, |n| n.get_ref().as_str());
            let unique = names
                .entry(ns.to_string())
                .or_insert_with(|| unique_in_namespace("pod", ns, &cluster.name));
            if !unique.insert(&mut self.report, p.name.get_ref(), p.name.span(), self.text)
                || self.dns_reserved(ns, &p.name, "pod")
            {
                continue;
            }
            // Checked before the worker, so a pod on an unknown worker has them checked too.
            let namespace = self.namespace_of(&p.namespace, cluster);
            let labels = self.labels(&p.labels);
            let named_ports = self.container_ports(p);
            let Some(worker) = cluster.worker(p.worker.get_ref()) else {
                self.unknown(
                    &p.worker,
                    "worker",
                    &cluster.name,
                    cluster.workers.iter().map(|w| w.host.local.as_str()),
                );
                continue;
            };
            let slot = per_worker.entry(worker.host.name.clone()).or_default();
            let next = |slot: &mut usize| loop {
                let ip = allocate::pod_ip(worker.subnet, *slot);
                *slot += 1;
                match ip {
                    Some(ip) if taken.contains(&ip) => continue,
                    other => break other,
                }
            };
            let ip = match pinned.get(&i).copied().or_else(|| next(slot)) {
                Some(ip) => ip,
                None => {
                    self.report.error(
                        p.name.span(),
                        format!(
                            "worker {} has no pod address left in {} for pod `{}`",
                            worker.host.name,
                            worker.subnet,
                            p.name.get_ref()
                        ),
                        "subnet full",
                        "use a shorter flannel subnet_len, or place the pod on another worker",
                    );
                    Ipv4Addr::UNSPECIFIED
                }
            };
            if let Some(cmd) = &p.command {
                if !matches!(cmd.get_ref().first(), Some(program) if !program.trim().is_empty()) {
                    self.report.error(
                        cmd.span(),
                        format!("pod `{}` has an empty command", p.name.get_ref()),
                        "no program",
                        "give argv, e.g. [\"knetsim\", \"serve\", \"--text\", \"hello\"]",
                    );
                }
            }
            let restart_policy = self.restart_policy(p);
            let probes = Probes {
                readiness: self.probe(p, &p.readiness_probe, "readiness_probe"),
                liveness: self.probe(p, &p.liveness_probe, "liveness_probe"),
                startup: self.probe(p, &p.startup_probe, "startup_probe"),
            };
            cluster.pods.push(Pod {
                name: p.name.get_ref().clone(),
                worker: worker.host.name.clone(),
                netns: self.naming.pod_netns(cluster.index, &namespace, p.name.get_ref()),
                ip,
                container_id: container_id(&cluster.name, &namespace, p.name.get_ref()),
                command: p.command.as_ref().map(|c| c.get_ref().clone()),
                ports: p.ports.iter().map(|p| p.get_ref().port).collect(),
                named_ports,
                namespace,
                labels,
                deleted: p.deleted,
                implicit: false,
                restart_policy,
                probes,
            });
        }
        self.dns_pod(cluster, &taken);
    }

    /// One of a pod's probes, checked as the Kubernetes API checks a `Probe` and
    /// with its defaults (period 10 s, timeout 1 s, success 1, failure 3).
    fn probe(&mut self, p: &spec::PodSpec, probe: &Option<Spanned<spec::ProbeSpec>>, field: &str) -> Option<PodProbe> {
        let probe = probe.as_ref()?;
        let (span, spec) = (probe.span(), probe.get_ref());
        let pod = p.name.get_ref();
        if p.command.is_none() {
            self.report.error(
                span.clone(),
                format!("pod `{pod}` has a {field} but no command to probe"),
                "nothing runs",
                "give the pod a `command` (its workload), or remove the probe",
            );
            return None;
        }
        let mut handlers = Vec::new();
        if let Some(t) = &spec.tcp_socket {
            handlers.push(self.probe_port(&t.port).map(|port| ProbeHandler::TcpSocket { port }));
        }
        if let Some(h) = &spec.http_get {
            let path = h.path.as_ref().map_or_else(|| "/".to_string(), |s| s.get_ref().clone());
            if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                let at = h.path.as_ref().map_or(span.clone(), |s| s.span());
                self.report.error(
                    at,
                    format!("invalid http_get path `{path}`"),
                    "bad path",
                    "an absolute path such as \"/healthz\"",
                );
            }
            handlers.push(
                self.probe_port(&h.port)
                    .map(|port| ProbeHandler::HttpGet { port, path }),
            );
        }
        if let Some(e) = &spec.exec {
            if e.command.get_ref().first().is_none_or(|c| c.trim().is_empty()) {
                self.report.error(
                    e.command.span(),
                    "an exec probe needs a command",
                    "empty",
                    "e.g. [\"test\", \"-e\", \"/tmp/ready\"]",
                );
            }
            handlers.push(Some(ProbeHandler::Exec {
                command: e.command.get_ref().clone(),
            }));
        }
        if handlers.len() != 1 {
            self.report.error(
                span,
                format!(
                    "pod `{pod}`: a {field} takes exactly one of tcp_socket, http_get, exec ({} given)",
                    handlers.len()
                ),
                "one handler",
                "e.g. { tcp_socket = { port = 8000 } }",
            );
            return None;
        }
        let handler = handlers.pop().flatten()?;
        let mut seconds = |v: &Option<Spanned<u32>>, default: u32, least: u32, what: &str| -> u32 {
            match v {
                Some(n) if *n.get_ref() < least => {
                    self.report
                        .error(n.span(), format!("{what} must be at least {least}"), "too small", "");
                    default
                }
                Some(n) => *n.get_ref(),
                None => default,
            }
        };
        let initial_delay_seconds = seconds(&spec.initial_delay_seconds, 0, 0, "initial_delay_seconds");
        let period_seconds = seconds(&spec.period_seconds, 10, 1, "period_seconds");
        let timeout_seconds = seconds(&spec.timeout_seconds, 1, 1, "timeout_seconds");
        let success_threshold = seconds(&spec.success_threshold, 1, 1, "success_threshold");
        let failure_threshold = seconds(&spec.failure_threshold, 3, 1, "failure_threshold");
        if field != "readiness_probe" && success_threshold != 1 {
            let at = spec.success_threshold.as_ref().map_or(span, |s| s.span());
            self.report.error(
                at,
                format!("a {field}'s success_threshold must be 1"),
                "must be 1",
                "as in Kubernetes: only a readiness probe may need several successes",
            );
        }
        Some(PodProbe {
            handler,
            initial_delay_seconds,
            period_seconds,
            timeout_seconds,
            success_threshold,
            failure_threshold,
        })
    }

    fn probe_port(&mut self, port: &Spanned<u16>) -> Option<u16> {
        if *port.get_ref() == 0 {
            self.report
                .error(port.span(), "port 0 is not usable", "port 0", "a port from 1 to 65535");
            return None;
        }
        Some(*port.get_ref())
    }

    /// A pod's `restart_policy`, as Kubernetes spells it.
    fn restart_policy(&mut self, p: &spec::PodSpec) -> RestartPolicy {
        let Some(v) = &p.restart_policy else {
            return RestartPolicy::Always;
        };
        match v.get_ref().as_str() {
            "Always" => RestartPolicy::Always,
            "Never" => RestartPolicy::Never,
            "OnFailure" => {
                self.report.error(
                    v.span(),
                    format!(
                        "pod `{}`: restart_policy `OnFailure` is not supported yet",
                        p.name.get_ref()
                    ),
                    "needs the workload's exit code",
                    "knetsim does not see a workload's exit code yet; use \"Always\" or \"Never\"",
                );
                RestartPolicy::Always
            }
            other => {
                let hint = match other.to_ascii_lowercase().as_str() {
                    "always" => "did you mean \"Always\"? (Kubernetes spells it with a capital)".to_string(),
                    "never" => "did you mean \"Never\"? (Kubernetes spells it with a capital)".to_string(),
                    _ => "use \"Always\" (the default) or \"Never\"".to_string(),
                };
                self.report.error(
                    v.span(),
                    format!("pod `{}`: unknown restart_policy `{other}`", p.name.get_ref()),
                    "not a restart policy",
                    &hint,
                );
                RestartPolicy::Always
            }
        }
    }

    /// `cidr_ok`: the service CIDR was valid (VIPs are only checked against a valid one).
    pub(super) fn services(&mut self, cs: &spec::ClusterSpec, cluster: &mut Cluster, cidr_ok: bool) {
        let mut names: HashMap<String, Unique> = HashMap::new();
        let mut vips = Unique::within("VIP", format!("cluster `{}`", cluster.name));
        let mut given = HashSet::new();
        let mut resolved: Vec<(usize, Option<Ipv4Addr>)> = Vec::new();
        // The DNS VIP is reserved before any other is handed out.
        let dns_vip = self.reserve_dns_vip(cs, cluster, cidr_ok);
        given.extend(dns_vip);
        for (i, s) in cs.services.iter().enumerate() {
            self.report.identifier(&s.name, "service name", 40);
            let ns = s.namespace.as_ref().map_or(DEFAULT_NAMESPACE, |n| n.get_ref().as_str());
            let unique = names
                .entry(ns.to_string())
                .or_insert_with(|| unique_in_namespace("service", ns, &cluster.name));
            if !unique.insert(&mut self.report, s.name.get_ref(), s.name.span(), self.text)
                || self.dns_reserved(ns, &s.name, "service")
            {
                continue;
            }
            // A bad VIP is reported and the service gets an allocated one instead,
            // so ingress rules and exposes that name it are still checked.
            let vip = match &s.vip {
                Some(v) if v.get_ref() == "None" => Some(Ipv4Addr::UNSPECIFIED),
                Some(v) => 'vip: {
                    let Some(ip) = self.report.ipv4_addr(v, "VIP") else {
                        break 'vip None;
                    };
                    if !cidr_ok {
                        break 'vip None;
                    }
                    let slot = allocate::Slot::of(cluster.service_cidr, ip);
                    if slot != allocate::Slot::Host {
                        let (label, why) = match slot {
                            allocate::Slot::Outside => ("outside service CIDR", ""),
                            allocate::Slot::Network => ("network address", " and cannot be a VIP"),
                            _ => ("broadcast address", " and cannot be a VIP"),
                        };
                        let hint = match allocate::nth_host(cluster.service_cidr, 1) {
                            Some(first) => format!(
                                "pick a host address of service_cidr (e.g. \"{first}\"), or leave vip out to have one allocated"
                            ),
                            None => "service_cidr has no host address: use a larger one".to_string(),
                        };
                        self.report.error(
                            v.span(),
                            format!(
                                "VIP {ip} {} the service CIDR {} of cluster `{}`{why}",
                                slot.relation(),
                                cluster.service_cidr,
                                cluster.name
                            ),
                            label,
                            &hint,
                        );
                        break 'vip None;
                    }
                    if Some(ip) == dns_vip {
                        self.report.error(
                            v.span(),
                            format!("VIP {ip} is the cluster DNS's (Service kube-system/kube-dns)"),
                            "reserved by [dns]",
                            "as kubeadm does, the DNS Service takes the 10th address of the service CIDR; pick another VIP or leave vip out",
                        );
                        break 'vip None;
                    }
                    if !vips.insert(&mut self.report, &ip.to_string(), v.span(), self.text) {
                        break 'vip None;
                    }
                    given.insert(ip);
                    Some(ip)
                }
                None => None,
            };
            resolved.push((i, vip));
        }
        let mut alloc = VipAllocator::new(cluster.service_cidr, given);
        for (i, vip) in resolved {
            let s = &cs.services[i];
            let vip = match vip.or_else(|| alloc.next_free()) {
                Some(v) => v,
                None => {
                    self.report.error(
                        s.name.span(),
                        format!("service CIDR {} has no VIP left", cluster.service_cidr),
                        "no VIP",
                        "use a larger service_cidr",
                    );
                    continue;
                }
            };
            let namespace = self.namespace_of(&s.namespace, cluster);
            let selector = self.labels(&s.selector);
            let endpoints = self.endpoints(cs, s, cluster, &namespace, &selector);
            let ports = self.service_ports(s);
            cluster.services.push(Service {
                name: s.name.get_ref().clone(),
                namespace,
                selector,
                vip,
                headless: vip.is_unspecified(),
                implicit: false,
                endpoints,
                ports,
            });
        }
        if let Some(vip) = dns_vip {
            self.dns_service(cluster, vip);
        }
    }

    /// A service's endpoints: the pods it lists, or the pods of its namespace its
    /// selector matches (in declaration order), as the endpoints controller picks them.
    fn endpoints(
        &mut self,
        cs: &spec::ClusterSpec,
        s: &spec::ServiceSpec,
        cluster: &Cluster,
        namespace: &str,
        selector: &Labels,
    ) -> Vec<Endpoint> {
        let in_ns = |p: &&Pod| p.namespace == namespace;
        let mut endpoints = Vec::new();
        match (&s.pods, &s.selector) {
            (Some(_), Some(sel)) => self.report.error(
                sel.span(),
                format!("service `{}` has both pods and a selector", s.name.get_ref()),
                "pods or selector",
                "name the backends either way, not both",
            ),
            (None, None) => self.report.error(
                s.name.span(),
                format!("service `{}` has no backends", s.name.get_ref()),
                "no pods, no selector",
                "add pods = [\"c1\", ...] or selector = { app = \"web\" }",
            ),
            (None, Some(sel)) => {
                endpoints = (cluster.pods.iter().filter(in_ns))
                    .filter(|p| selector.iter().all(|(k, v)| p.labels.get(k) == Some(v)))
                    .map(|p| Endpoint {
                        pod: p.name.clone(),
                        ip: p.ip,
                        ready: true,
                    })
                    .collect();
                if endpoints.is_empty() && !selector.is_empty() {
                    // As kubectl: a selector matching nothing is legal (pods may come later).
                    self.report.warning(
                        sel.span(),
                        format!(
                            "the selector of service `{}` matches no pod of namespace `{namespace}`",
                            s.name.get_ref()
                        ),
                        "matches nothing",
                        "the service has no endpoints until a pod with these labels exists",
                    );
                }
            }
            (Some(pods), None) => {
                let mut seen = Unique::within("backend", format!("service `{}`", s.name.get_ref()));
                for p in pods.get_ref() {
                    if !seen.insert(&mut self.report, p.get_ref(), p.span(), self.text) {
                        continue;
                    }
                    match cluster.pods.iter().filter(in_ns).find(|x| &x.name == p.get_ref()) {
                        Some(pod) => endpoints.push(Endpoint {
                            pod: pod.name.clone(),
                            ip: pod.ip,
                            ready: true,
                        }),
                        None if cs.services.iter().any(|other| other.name.get_ref() == p.get_ref()) => {
                            let pods: Vec<&str> = cluster.pods.iter().map(|p| p.name.as_str()).collect();
                            self.report.error(
                                p.span(),
                                format!(
                                    "backend `{}` of service `{}` is a service, not a pod",
                                    p.get_ref(),
                                    s.name.get_ref()
                                ),
                                "not a pod",
                                &if pods.is_empty() {
                                    format!(
                                        "services load-balance to pods, and cluster `{}` declares none",
                                        cluster.name
                                    )
                                } else {
                                    format!(
                                        "services load-balance to pods; list pods of `{}`: {}",
                                        cluster.name,
                                        pods.iter().take(8).copied().collect::<Vec<_>>().join(", ")
                                    )
                                },
                            );
                        }
                        // Declared but not placed (its worker is unknown): already reported.
                        None if cs.pods.iter().any(|x| {
                            x.name.get_ref() == p.get_ref()
                                && x.namespace.as_ref().map_or(DEFAULT_NAMESPACE, |n| n.get_ref()) == namespace
                        }) => {}
                        None => {
                            let scope = if namespace == DEFAULT_NAMESPACE {
                                cluster.name.clone()
                            } else {
                                format!("namespace `{namespace}` of {}", cluster.name)
                            };
                            let known: Vec<&str> = cluster.pods.iter().filter(in_ns).map(|p| p.name.as_str()).collect();
                            self.unknown(p, "pod", &scope, known.into_iter())
                        }
                    }
                }
                if pods.get_ref().is_empty() {
                    self.report.error(
                        pods.span(),
                        format!("service `{}` has no backend pods", s.name.get_ref()),
                        "empty",
                        "list at least one pod of this cluster",
                    );
                }
            }
        }
        endpoints
    }

    pub(super) fn ingresses(&mut self, cs: &spec::ClusterSpec, cluster: &mut Cluster) {
        let mut names = Unique::within("ingress", format!("cluster `{}`", cluster.name));
        for ing in &cs.ingresses {
            self.report.identifier(&ing.name, "ingress name", 40);
            if !names.insert(&mut self.report, ing.name.get_ref(), ing.name.span(), self.text) {
                continue;
            }
            // An unknown worker is reported, and the rules are still checked.
            let worker = cluster.worker(ing.worker.get_ref()).map(|w| w.host.name.clone());
            if worker.is_none() {
                self.unknown(
                    &ing.worker,
                    "worker",
                    &cluster.name,
                    cluster.workers.iter().map(|w| w.host.local.as_str()),
                );
            }
            let port = *ing.port.get_ref();
            if port == 0 {
                self.report.error(
                    ing.port.span(),
                    "port 0 is not usable",
                    "bad port",
                    "ports are 1..=65535",
                );
            } else if let Some(worker) = &worker {
                self.ports.claim(
                    &mut self.report,
                    worker,
                    port,
                    format!("ingress `{}`", ing.name.get_ref()),
                    Some(ing.port.span()),
                    ing.port.span(),
                );
            }
            let mut paths = Unique::new("ingress path");
            let mut routes = Vec::new();
            if ing.rules.is_empty() {
                self.report.error(
                    ing.name.span(),
                    format!("ingress `{}` has no rules", ing.name.get_ref()),
                    "no rules",
                    "add rules = [{ path = \"/svc1\", service = \"...\" }]",
                );
            }
            for r in &ing.rules {
                if !r.path.get_ref().starts_with('/')
                    || r.path
                        .get_ref()
                        .chars()
                        .any(|c| c.is_whitespace() || c == ';' || c == '{' || c == '}')
                {
                    self.report.error(
                        r.path.span(),
                        format!("ingress path `{}` is not a URL path", r.path.get_ref()),
                        "bad path",
                        "paths start with '/' and contain no spaces, ';' or braces",
                    );
                    continue;
                }
                paths.insert(&mut self.report, r.path.get_ref(), r.path.span(), self.text);
                // Ingress rules name services of `default`, where the ingress lives.
                let Some(svc) = cluster.service(DEFAULT_NAMESPACE, r.service.get_ref()) else {
                    self.unknown(
                        &r.service,
                        "service",
                        &cluster.name,
                        cluster.services.iter().map(|s| s.name.as_str()),
                    );
                    continue;
                };
                if svc.headless {
                    self.report.error(
                        r.service.span(),
                        format!("service `{}` is headless: it has no VIP to proxy to", svc.name),
                        "headless",
                        "give the service a VIP (leave vip out), or route to another service",
                    );
                    continue;
                }
                let port = match (&r.port, svc.ports.as_slice()) {
                    (Some(p), _) if *p.get_ref() == 0 => {
                        self.report
                            .error(p.span(), "port 0 is not usable", "bad port", "ports are 1..=65535");
                        continue;
                    }
                    (Some(p), ports)
                        if ports.is_empty()
                            || ports.iter().any(|sp| sp.port == *p.get_ref() && sp.protocol == "tcp") =>
                    {
                        *p.get_ref()
                    }
                    (Some(p), _) => {
                        self.report.error(
                            p.span(),
                            format!("service `{}` has no tcp port {}", svc.name, p.get_ref()),
                            "unknown service port",
                            "use one of the service's ports",
                        );
                        continue;
                    }
                    (None, [one]) => one.port,
                    (None, []) => {
                        self.report.error(
                            r.service.span(),
                            format!(
                                "ingress rule `{}` needs a port: service `{}` is IP-wide (it declares no ports)",
                                r.path.get_ref(),
                                svc.name
                            ),
                            "which port?",
                            "add port = ... to the rule, e.g. { path = \"/x\", service = \"s1\", port = 8000 }",
                        );
                        continue;
                    }
                    (None, ports) => {
                        let list: Vec<String> = ports.iter().map(|p| format!("{}/{}", p.port, p.protocol)).collect();
                        self.report.error(
                            r.service.span(),
                            format!(
                                "ingress rule `{}` needs a port: service `{}` has several ({})",
                                r.path.get_ref(),
                                svc.name,
                                list.join(", ")
                            ),
                            "which port?",
                            "add port = ... to the rule",
                        );
                        continue;
                    }
                };
                routes.push(IngressRoute {
                    path: r.path.get_ref().clone(),
                    service: svc.name.clone(),
                    vip: svc.vip,
                    port,
                });
            }
            if let Some(worker) = worker {
                cluster.ingresses.push(Ingress {
                    name: ing.name.get_ref().clone(),
                    worker,
                    port,
                    routes,
                });
            }
        }
    }
}
