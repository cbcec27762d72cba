//! Cluster DNS, live, as root: `topologies/dns.toml` brought up, then names looked up
//! from inside pods with the real tools (dig, getent, nslookup) through the pod's
//! resolv.conf and the kube-dns Service: A for a ClusterIP service, one A per ready
//! endpoint of a headless service, SRV for a named port, PTR for a VIP, a pod's A
//! record, NXDOMAIN, short names through the search list, and the exposed service by
//! name in the listening cluster. Then `svc add` (dnsmasq reloaded, not restarted)
//! and `pod rm` (the headless endpoint gone) change the answers. `down` leaves
//! nothing, /etc/netns included.
//!
//! The emulation is named `dns<pid>`; a drop guard runs `knetsim down --name ...`.
//! Without root or a needed program the test prints `SKIP: reason` (fails under `CI`).

mod common;

use common::{assert_nothing_left, knetsim, live_ready, recorded_pid, text, wait_for, Down};
use std::time::Duration;

const PROGRAMS: &[&str] = &["ip", "nft", "etcd", "dnsmasq", "dig", "nslookup", "getent", "curl"];
const DNS_PROCESS: &str = "pod C0/kube-system/kube-dns";

/// stdout of `cmd` run in pod `pod` of emulation `name`.
fn in_pod(name: &str, pod: &str, cmd: &[&str]) -> String {
    let mut args = vec!["exec", "--name", name, pod, "--"];
    args.extend_from_slice(cmd);
    String::from_utf8_lossy(&knetsim(&args).stdout).into_owned()
}

/// `dig +short` answers from `C0/client`, sorted.
fn dig(name: &str, args: &[&str]) -> Vec<String> {
    let mut cmd = vec!["dig", "+short", "+time=2", "+tries=2"];
    cmd.extend_from_slice(args);
    let mut lines: Vec<String> = in_pod(name, "C0/client", &cmd).lines().map(str::to_string).collect();
    lines.sort();
    lines
}

#[test]
fn pods_resolve_cluster_names_and_records_follow_changes() {
    let test = "pods_resolve_cluster_names_and_records_follow_changes";
    if !live_ready(test, PROGRAMS) {
        return;
    }
    let name = format!("dns{}", std::process::id());
    let topology = concat!(env!("CARGO_MANIFEST_DIR"), "/topologies/dns.toml");
    let guard = Down(name.clone());
    let out = knetsim(&["up", "--name", &name, "--no-checks", topology]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("DNS: dnsmasq (serving the kube-dns Service)"),
        "{}",
        text(&out)
    );
    // The topology's own dns checks, through hickory-proto from inside the pods.
    let out = knetsim(&["test", "--name", &name]);
    assert!(out.status.success(), "{}", text(&out));

    let resolv = in_pod(&name, "C0/client", &["cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("nameserver 100.64.0.10\n"), "{resolv}");
    assert!(resolv.contains("search default.svc.cluster.local svc.cluster.local cluster.local\n"));
    assert!(resolv.contains("options ndots:5\n"));

    assert_eq!(dig(&name, &["web.default.svc.cluster.local"]), ["100.64.0.1"]);
    let headless = dig(&name, &["db.default.svc.cluster.local"]);
    eprintln!("headless service db: {headless:?}");
    assert_eq!(headless, ["11.10.0.4", "11.10.16.3"]);
    assert_eq!(
        dig(&name, &["SRV", "_http._tcp.web.default.svc.cluster.local"]),
        ["0 100 80 web.default.svc.cluster.local."]
    );
    assert_eq!(dig(&name, &["-x", "100.64.0.1"]), ["web.default.svc.cluster.local."]);
    assert_eq!(
        dig(&name, &["-x", "11.10.16.3"]),
        ["11-10-16-3.db.default.svc.cluster.local."]
    );
    assert_eq!(dig(&name, &["11-10-0-3.default.pod.cluster.local"]), ["11.10.0.3"]);
    let nx = in_pod(&name, "C0/client", &["dig", "nope.default.svc.cluster.local"]);
    assert!(nx.contains("status: NXDOMAIN"), "{nx}");

    // Short names through the search list, with glibc and with nslookup.
    let getent = in_pod(&name, "C0/client", &["getent", "hosts", "web"]);
    assert!(getent.starts_with("100.64.0.1 "), "{getent}");
    let nslookup = in_pod(&name, "C0/client", &["nslookup", "web"]);
    assert!(nslookup.contains("Address: 100.64.0.1"), "{nslookup}");
    let body = in_pod(&name, "C0/client", &["curl", "-s", "-m", "3", "http://web/"]);
    assert!(body.starts_with("web"), "{body}");

    // The exposed service by name in the listening cluster, through the routers.
    let getent = in_pod(&name, "C1/client", &["getent", "hosts", "web"]);
    assert!(getent.starts_with("10.0.0.5 "), "{getent}");
    let body = wait_for(Duration::from_secs(10), || {
        in_pod(&name, "C1/client", &["curl", "-s", "-m", "2", "http://web:1028/"]).starts_with("web")
    });
    assert!(body.is_some(), "http://web:1028/ from C1/client");

    // A new service: its name resolves, dnsmasq re-read its hosts file (same pid).
    let dns_pid = recorded_pid(&name, DNS_PROCESS).expect("the DNS pod's server is recorded");
    let out = knetsim(&["svc", "add", "--name", &name, "C0/api", "--pods", "web2"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("(SIGHUP)"), "{}", text(&out));
    let getent = in_pod(&name, "C0/client", &["getent", "hosts", "api"]);
    assert!(getent.starts_with("100.64.0.2 "), "{getent}");
    assert_eq!(recorded_pid(&name, DNS_PROCESS), Some(dns_pid), "dnsmasq was restarted");

    // A removed pod leaves the headless service's answers.
    let out = knetsim(&["pod", "rm", "--name", &name, "C0/db1"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(dig(&name, &["db.default.svc.cluster.local"]), ["11.10.0.4"]);
    assert!(dig(&name, &["-x", "11.10.16.3"]).is_empty());

    drop(guard);
    assert_nothing_left(&name);
    let etc: Vec<String> = std::fs::read_dir("/etc/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(!etc.iter().any(|n| n.starts_with(&format!("{name}-"))), "{etc:?}");
}
