//! Live tests of changes to a running emulation (`pod add|rm`, `svc add|rm`,
//! `apply`, `--dry-run`), as root. Every emulation is named `t<pid>...`; a drop
//! guard runs `knetsim down --name ...`. Without root or a needed program they
//! print `SKIP: reason`, unless `CI` is set, where they fail instead. Every probe
//! runs inside the emulation's namespaces through `knetsim exec`.

mod common;

use common::{knetsim, live_ready, ok, pod_ip, text, Down};
use serde_json::Value;
use std::path::Path;

const PROGRAMS: &[&str] = &["ip", "nft", "etcd", "ping"];

const BASE: &str = r#"# a small cluster for live changes
[[clusters]]
name = "C0"
etcd = 1
workers = 2
pods = [
  { name = "c1", worker = "w1" },
  { name = "c2", worker = "w2" },
  { name = "c3", worker = "w2" },
]
services = [
  { name = "web", vip = "100.64.0.10", pods = ["c2", "c3"] },
]
"#;

/// BASE with a pod gone, two added (one serving), a backend swapped and a ported service added.
const VARIANT: &str = r#"[[clusters]]
name = "C0"
etcd = 1
workers = 2
pods = [
  { name = "c1", worker = "w1" },
  { name = "c3", worker = "w2" },
  { name = "c4", worker = "w1", command = ["knetsim", "serve", "--text", "four", "--port", "8000"], ports = [8000] },
  { name = "c5", worker = "w2" },
]
services = [
  { name = "web", vip = "100.64.0.10", pods = ["c3", "c5"] },
  { name = "http", vip = "100.64.0.20", pods = ["c4"], ports = [8000] },
]
"#;

fn status(name: &str) -> Value {
    serde_json::from_str(&ok(&["status", "--name", name, "--json"])).unwrap()
}

/// Pings from a pod, one packet at a time; returns how many of `n` were answered.
fn pings(name: &str, from: &str, to: &str, n: usize) -> usize {
    (0..n)
        .filter(|_| {
            knetsim(&["exec", "--name", name, from, "--", "ping", "-c1", "-W1", to])
                .status
                .success()
        })
        .count()
}

#[test]
fn pods_and_services_change_on_a_running_emulation() {
    let test = "pods_and_services_change_on_a_running_emulation";
    if !live_ready(test, PROGRAMS) {
        return;
    }
    let name = format!("t{}p", std::process::id());
    let tmp = tempfile::tempdir().unwrap();
    let topo = tmp.path().join("base.toml");
    std::fs::write(&topo, BASE).unwrap();
    let _guard = Down(name.clone());
    ok(&["up", topo.to_str().unwrap(), "--name", &name]);
    let st = status(&name);
    assert_eq!(pod_ip(&st, "C0/c1"), "11.10.0.2", "{st:#}");

    // pod add: the next address of w1's subnet; it reaches a pod on the other worker.
    let out = ok(&["pod", "add", "C0/c10", "--worker", "w1", "--name", &name]);
    assert!(out.contains("changed"), "{out}");
    let st = status(&name);
    assert_eq!(st["healthy"], true, "{st:#}");
    assert_eq!(pod_ip(&st, "C0/c10"), "11.10.0.3", "{st:#}");
    let c2 = pod_ip(&st, "C0/c2");
    assert_eq!(pings(&name, "C0/c10", &c2, 1), 1);
    // The user's formatting and comment are kept in the stored topology.
    let stored = std::fs::read_to_string(format!("/tmp/knetsim-{name}/topology.toml")).unwrap();
    assert!(stored.starts_with("# a small cluster for live changes\n"), "{stored}");
    // The address host-local handed out is pinned, so a recompile keeps it.
    assert!(
        stored.contains("  { name = \"c10\", worker = \"w1\", ip = \"11.10.0.3\" },\n]"),
        "{stored}"
    );

    // A new service over new pods answers on its VIP.
    ok(&["pod", "add", "C0/c11", "--worker", "w2", "--name", &name]);
    let c11_ip = pod_ip(&status(&name), "C0/c11");
    ok(&[
        "svc",
        "add",
        "C0/new",
        "--vip",
        "100.64.0.50",
        "--pods",
        "c10,c11",
        "--name",
        &name,
    ]);
    assert_eq!(pings(&name, "C0/c1", "100.64.0.50", 5), 5);

    // pod rm: out of the endpoints first-class, the VIP answers through the other backend.
    let out = ok(&["pod", "rm", "C0/c2", "--name", &name]);
    assert!(out.contains("changed"), "{out}");
    let st = status(&name);
    assert!(
        !st["pods"].as_array().unwrap().iter().any(|p| p["name"] == "C0/c2"),
        "{st:#}"
    );
    assert_eq!(pod_ip(&st, "C0/c3"), "11.10.16.3", "c3 keeps its address: {st:#}");
    assert_eq!(pings(&name, "C0/c1", "100.64.0.10", 20), 20);

    // pod rm --keep-endpoints: the stale endpoint stays, some pings fail (the deck's lesson).
    ok(&["pod", "rm", "C0/c11", "--keep-endpoints", "--name", &name]);
    let st = status(&name);
    assert_eq!(st["healthy"], true, "{st:#}");
    let new = st["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "C0/new")
        .unwrap();
    assert_eq!(new["endpoints"].as_array().unwrap().len(), 2, "{st:#}");
    let answered = pings(&name, "C0/c1", "100.64.0.50", 20);
    assert!(answered > 0 && answered < 20, "{answered} of 20 answered");
    // Re-adding that name is refused until the stale pod is removed; then it works.
    let out = knetsim(&["pod", "add", "C0/c11", "--worker", "w2", "--name", &name]);
    assert!(!out.status.success() && text(&out).contains("stale"), "{}", text(&out));
    ok(&["pod", "rm", "C0/c11", "--name", &name]);
    assert_eq!(pings(&name, "C0/c1", "100.64.0.50", 10), 10);

    // Like host-local, the next pod on w2 does not get a just-freed address (c2's or
    // c11's, still in neighbours' ARP caches with the old MAC): it answers at once.
    ok(&["pod", "add", "C0/c12", "--worker", "w2", "--name", &name]);
    let c12_ip = pod_ip(&status(&name), "C0/c12");
    assert!(c12_ip != c11_ip && c12_ip != "11.10.16.2", "c12 got {c12_ip}");
    assert_eq!(pings(&name, "C0/c1", &c12_ip, 1), 1);

    // svc rm: the VIP stops answering.
    ok(&["svc", "rm", "C0/new", "--name", &name]);
    assert_eq!(pings(&name, "C0/c1", "100.64.0.50", 1), 0);
    let st = status(&name);
    assert_eq!(st["healthy"], true, "{st:#}");
    ok(&["down", "--name", &name]);
    assert!(!Path::new(&format!("/tmp/knetsim-{name}")).exists());
}

/// What `status --json` and the installed rules say, without times, PIDs and counters.
fn snapshot(name: &str) -> (Value, Vec<String>) {
    let mut st = status(name);
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for k in ["uptime_s", "pid", "started_at", "owner_pid", "owner_alive"] {
                    m.remove(k);
                }
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut st);
    for key in ["namespaces", "processes"] {
        if let Some(a) = st[key].as_array_mut() {
            a.sort_by_key(|v| v.to_string());
        }
    }
    let mut rules = Vec::new();
    for w in ["C0w1", "C0w2"] {
        let t = ok(&[
            "exec",
            "--name",
            name,
            w,
            "--",
            "nft",
            "list",
            "table",
            "ip",
            "kube-proxy",
        ]);
        let t: Vec<String> = t
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .split(" counter packets ")
            .enumerate()
            .map(|(i, part)| {
                if i == 0 {
                    part.to_string()
                } else {
                    // Drop "N bytes M".
                    part.splitn(4, ' ').nth(3).unwrap_or("").to_string()
                }
            })
            .collect();
        rules.push(format!("{w}: {}", t.join(" counter ")));
    }
    (st, rules)
}

#[test]
fn apply_and_back_ends_like_a_fresh_up_and_dry_run_lists_exactly_what_apply_does() {
    let test = "apply_and_back_ends_like_a_fresh_up_and_dry_run_lists_exactly_what_apply_does";
    if !live_ready(test, PROGRAMS) {
        return;
    }
    let name = format!("t{}a", std::process::id());
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base.toml");
    let variant = tmp.path().join("variant.toml");
    let broken = tmp.path().join("broken.toml");
    std::fs::write(&base, BASE).unwrap();
    std::fs::write(&variant, VARIANT).unwrap();
    std::fs::write(&broken, VARIANT.replace("workers = 2", "workers = [")).unwrap();
    let (base, variant, broken) = (
        base.to_str().unwrap(),
        variant.to_str().unwrap(),
        broken.to_str().unwrap(),
    );
    let _guard = Down(name.clone());
    let state_file = format!("/tmp/knetsim-{name}/state.json");
    let last_change = || -> Vec<String> {
        let st: Value = serde_json::from_str(&std::fs::read_to_string(&state_file).unwrap()).unwrap();
        st["last_change"]
            .as_array()
            .map(|a| a.iter().map(|l| l.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };

    ok(&["up", base, "--name", &name]);
    let fresh_base = snapshot(&name);

    // A change that does not compile is refused with its diagnostics; nothing changes.
    let stored = std::fs::read_to_string(format!("/tmp/knetsim-{name}/topology.toml")).unwrap();
    let out = knetsim(&["apply", broken, "--name", &name]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("nothing was changed") && text(&out).contains("broken.toml:"),
        "{}",
        text(&out)
    );
    assert_eq!(snapshot(&name), fresh_base);
    assert_eq!(
        std::fs::read_to_string(format!("/tmp/knetsim-{name}/topology.toml")).unwrap(),
        stored
    );

    // --dry-run lists the actions and changes nothing; apply then performs exactly those.
    let planned: Vec<String> = ok(&["apply", variant, "--name", &name, "--dry-run"])
        .lines()
        .map(str::to_string)
        .collect();
    assert!(!planned.is_empty());
    assert!(
        planned.iter().any(|l| l.starts_with("add workload:C0/c4")),
        "{planned:#?}"
    );
    assert!(planned.iter().any(|l| l.starts_with("remove netns:")), "{planned:#?}");
    assert_eq!(snapshot(&name), fresh_base);
    ok(&["apply", variant, "--name", &name]);
    assert_eq!(last_change(), planned);
    let applied_variant = snapshot(&name);
    assert_eq!(applied_variant.0["healthy"], true, "{:#}", applied_variant.0);
    let http = ok(&[
        "exec",
        "--name",
        &name,
        "C0w1",
        "--",
        "curl",
        "-s",
        "-m",
        "3",
        "100.64.0.20:8000",
    ]);
    assert_eq!(http.trim(), "four");

    let planned_back: Vec<String> = ok(&["apply", base, "--name", &name, "--dry-run"])
        .lines()
        .map(str::to_string)
        .collect();
    ok(&["apply", base, "--name", &name]);
    assert_eq!(last_change(), planned_back);
    assert_eq!(
        snapshot(&name),
        fresh_base,
        "base -> variant -> base differs from a fresh up of base"
    );
    ok(&["down", "--name", &name]);

    ok(&["up", variant, "--name", &name]);
    assert_eq!(
        snapshot(&name),
        applied_variant,
        "base -> variant differs from a fresh up of variant"
    );
    ok(&["down", "--name", &name]);
}

/// One cluster with an ingress serving `/a`; INGRESS_MORE adds `/b` on another service.
const INGRESS: &str = r#"[[clusters]]
name = "C0"
etcd = 1
workers = 2
pods = [
  { name = "a1", worker = "w2", command = ["knetsim", "serve", "--text", "A", "--port", "8000"], ports = [8000] },
  { name = "b1", worker = "w2", command = ["knetsim", "serve", "--text", "B", "--port", "8000"], ports = [8000] },
]
services = [
  { name = "a", vip = "100.64.0.30", pods = ["a1"] },
  { name = "b", vip = "100.64.0.31", pods = ["b1"] },
]

[[clusters.ingresses]]
name = "web"
worker = "w1"
port = 8001
rules = [{ path = "/a", service = "a", port = 8000 }]
"#;

#[test]
fn an_ingress_rule_added_by_apply_reloads_nginx_in_place() {
    let test = "an_ingress_rule_added_by_apply_reloads_nginx_in_place";
    if !live_ready(test, &["ip", "nft", "etcd", "nginx", "curl"]) {
        return;
    }
    let name = format!("t{}n", std::process::id());
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("ingress.toml");
    let more = tmp.path().join("ingress-more.toml");
    std::fs::write(&base, INGRESS).unwrap();
    let with_b = INGRESS.replace(
        r#"rules = [{ path = "/a", service = "a", port = 8000 }]"#,
        r#"rules = [{ path = "/a", service = "a", port = 8000 }, { path = "/b", service = "b", port = 8000 }]"#,
    );
    assert_ne!(with_b, INGRESS);
    std::fs::write(&more, with_b).unwrap();
    let (base, more) = (base.to_str().unwrap(), more.to_str().unwrap());
    let _guard = Down(name.clone());
    let curl = |path: &str| {
        let url = format!("localhost:8001{path}");
        let out = knetsim(&["exec", "--name", &name, "C0w1", "--", "curl", "-s", "-m", "3", &url]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let nginx_pid = || -> u64 {
        let st = status(&name);
        let p = st["processes"].as_array().unwrap().iter().find(|p| {
            p["name"]
                .as_str()
                .is_some_and(|n| n.contains("ingress") || n.contains("nginx"))
        });
        p.unwrap_or_else(|| panic!("no nginx process in {st:#}"))["pid"]
            .as_u64()
            .unwrap()
    };

    ok(&["up", base, "--name", &name]);
    assert_eq!(curl("/a"), "A");
    assert!(!curl("/b").contains('B'), "/b answered before it was added");
    let pid = nginx_pid();

    let planned = ok(&["apply", more, "--name", &name, "--dry-run"]);
    assert!(
        planned
            .lines()
            .any(|l| l.starts_with("reload ") && l.contains("(SIGHUP)")),
        "{planned}"
    );
    ok(&["apply", more, "--name", &name]);
    // nginx re-reads its configuration on SIGHUP: the new path answers, the master stays.
    let mut answered = String::new();
    for _ in 0..20 {
        answered = curl("/b");
        if answered == "B" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(answered, "B");
    assert_eq!(curl("/a"), "A");
    assert_eq!(nginx_pid(), pid, "nginx was restarted, not reloaded");
    assert_eq!(status(&name)["healthy"], true);
    ok(&["down", "--name", &name]);
}
