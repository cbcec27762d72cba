//! flanneld's `-ip-masq`, live, on tests/fixtures/ip-masq.toml: cluster C0 runs its
//! flannel agents with `-ip-masq` (as kube-flannel.yml does), C1 without (the seed's
//! way); both have a pod on each of two workers.
//! - With it, flannel's nftables table `flannel-ipv4` is in each worker's namespace,
//!   the subnet file says FLANNEL_IPMASQ=true and the CNI bridge delegate gets
//!   `ipMasq: false`; a pod pinging the pod on the other worker is seen there with its
//!   own address.
//! - Without it, no such table, FLANNEL_IPMASQ=false, `ipMasq: true`: the ping arrives
//!   from the sending worker's `flannel.<vni>` address (the bridge masquerades).
//! - Either way a ping from a pod to an underlay host (the cluster's etcd host, outside
//!   the flannel network) arrives from the sending worker's underlay address.
//!
//! - Turned off by `knetsim apply`, the restarted agents delete their tables.
//!
//! Captures are tcpdump's in the receiving namespace. Root only; `SKIP: reason` without
//! root or a needed program, unless `CI` is set. Unique `--name`, `Down` guard.

mod common;

use common::{assert_nothing_left, installed_or_built_in, live_ready, ok, text, Down};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const PROGRAMS: &[&str] = &["ip", "nft", "etcd", "sysctl", "ping", "tcpdump", "timeout"];
const TOPOLOGY: &str = "tests/fixtures/ip-masq.toml";

struct Emulation {
    name: String,
    inventory: Value,
    _down: Down,
}

impl Emulation {
    fn up() -> Emulation {
        let name = format!("m{}", std::process::id());
        let down = Down(name.clone());
        ok(&["up", "--name", &name, TOPOLOGY]);
        let path = format!("/tmp/knetsim-{name}/bundle/inventory.json");
        let inventory = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        Emulation {
            inventory: serde_json::from_str(&inventory).unwrap(),
            name,
            _down: down,
        }
    }

    fn run(&self, node: &str, argv: &[&str]) -> String {
        let mut args = vec!["exec", "--name", &self.name, node, "--"];
        args.extend_from_slice(argv);
        ok(&args)
    }

    fn cluster(&self, name: &str) -> &Value {
        self.inventory["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no cluster {name} in the inventory"))
    }

    /// A worker's flannel subnet, as the compiler reserved it.
    fn subnet(&self, cluster: &str, worker: &str) -> String {
        let w = self.cluster(cluster)["workers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["host"]["name"] == worker)
            .unwrap_or_else(|| panic!("no worker {worker}"));
        w["subnet"].as_str().unwrap().to_string()
    }

    /// The underlay address of a worker or etcd host.
    fn host_ip(&self, host: &str) -> String {
        let out = self.run(host, &["ip", "-4", "-j", "addr", "show", "dev", "eth0"]);
        self.first_local(&out, host, "eth0")
    }

    /// The address of a worker's `flannel.<vni>` device.
    fn flannel_ip(&self, cluster: &str, worker: &str) -> String {
        let dev = format!("flannel.{}", self.cluster(cluster)["flannel"]["vni"]);
        let out = self.run(worker, &["ip", "-4", "-j", "addr", "show", "dev", &dev]);
        self.first_local(&out, worker, &dev)
    }

    fn first_local(&self, ip_json: &str, node: &str, dev: &str) -> String {
        let v: Value = serde_json::from_str(ip_json).unwrap();
        v[0]["addr_info"][0]["local"]
            .as_str()
            .unwrap_or_else(|| panic!("no address on {dev} of {node}: {ip_json}"))
            .to_string()
    }

    fn pod_ip(&self, cluster: &str, pod: &str) -> String {
        self.cluster(cluster)["pods"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == pod)
            .unwrap_or_else(|| panic!("no pod {cluster}/{pod}"))["ip"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Pings `dst` from `from` while tcpdump listens on `at`'s eth0; the source address
    /// of the first echo request `at` sees.
    fn echo_source(&self, from: &str, dst: &str, at: &str) -> String {
        let mut tcpdump = Command::new(env!("CARGO_BIN_EXE_knetsim"))
            .args(["exec", "--name", &self.name, at, "--"])
            .args(["timeout", "15", "tcpdump", "-l", "-n", "-c", "1", "-i", "eth0"])
            .arg("icmp[icmptype] == icmp-echo")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run knetsim exec tcpdump");
        let mut said = BufReader::new(tcpdump.stderr.take().unwrap());
        let mut line = String::new();
        while !line.contains("listening on") {
            line.clear();
            if said.read_line(&mut line).unwrap() == 0 {
                let out = tcpdump.wait_with_output().unwrap();
                panic!("tcpdump in {at} ended before listening: {}", text(&out));
            }
        }
        let ping = self.run(from, &["ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", dst]);
        assert!(ping.contains(" 0% packet loss"), "ping {dst} from {from}: {ping}");
        let out = tcpdump.wait_with_output().unwrap();
        let seen = String::from_utf8_lossy(&out.stdout).into_owned();
        // `12:00:00.000000 IP 11.10.0.2 > 11.10.16.2: ICMP echo request, id 1, seq 1, length 64`
        let request = seen
            .lines()
            .find(|l| l.contains(&format!(" > {dst}: ICMP echo request")))
            .unwrap_or_else(|| panic!("no echo request to {dst} seen in {at}: {}", text(&out)));
        let source = request.split(" IP ").nth(1).and_then(|r| r.split(' ').next());
        source.unwrap_or_else(|| panic!("{request}")).to_string()
    }
}

/// The delegate config the flannel CNI plugin stored for the one pod on `worker`.
fn delegate(name: &str, worker: &str) -> Value {
    let dir = format!("/tmp/knetsim-{name}/{worker}/flannel");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    serde_json::from_str(&std::fs::read_to_string(files.remove(0)).unwrap()).unwrap()
}

#[test]
fn ip_masq_keeps_pod_addresses_inside_the_cluster_and_masquerades_the_rest() {
    let test = "ip_masq_keeps_pod_addresses_inside_the_cluster_and_masquerades_the_rest";
    if !live_ready(test, PROGRAMS) || !installed_or_built_in(test, "flanneld", "flanneld") {
        return;
    }
    let e = Emulation::up();
    let name = e.name.clone();
    let network = e.cluster("C0")["flannel"]["network"].as_str().unwrap().to_string();
    assert_eq!(e.cluster("C0")["flannel"]["ip_masq"], true);

    // -ip-masq: flannel's table in each worker, with that worker's lease in it.
    for w in ["C0w1", "C0w2"] {
        let table = e.run(w, &["nft", "list", "table", "ip", "flannel-ipv4"]);
        let subnet = e.subnet("C0", w);
        for rule in [
            "meta mark 0x00004000 return".to_string(),
            format!("ip saddr {subnet} ip daddr {network} return"),
            format!("ip saddr {network} ip daddr {subnet} return"),
            format!("ip saddr {network} ip daddr != 224.0.0.0/4 masquerade"),
            format!("ip saddr {network} accept"),
        ] {
            assert!(table.contains(&rule), "{w}: no `{rule}` in\n{table}");
        }
        let env = std::fs::read_to_string(format!("/tmp/knetsim-{name}/{w}/flannel-subnet.env")).unwrap();
        assert!(env.contains("\nFLANNEL_IPMASQ=true\n"), "{w}: {env}");
        assert_eq!(delegate(&name, w)["ipMasq"], false, "{w}");
    }
    // Without: none of it, and the bridge delegate masquerades.
    for w in ["C1w1", "C1w2"] {
        let tables = e.run(w, &["nft", "list", "tables"]);
        assert!(!tables.contains("flannel"), "{w}: {tables}");
        let env = std::fs::read_to_string(format!("/tmp/knetsim-{name}/{w}/flannel-subnet.env")).unwrap();
        assert!(env.contains("\nFLANNEL_IPMASQ=false\n"), "{w}: {env}");
        assert_eq!(delegate(&name, w)["ipMasq"], true, "{w}");
    }

    // Pod to pod across workers: the pod's own address with -ip-masq ...
    let c0c1 = e.pod_ip("C0", "c1");
    assert_eq!(e.echo_source("C0/c1", &e.pod_ip("C0", "c2"), "C0/c2"), c0c1);
    // ... the sending worker's flannel address without.
    let c1c1 = e.pod_ip("C1", "c1");
    let c1w1_flannel = e.flannel_ip("C1", "C1w1");
    let seen = e.echo_source("C1/c1", &e.pod_ip("C1", "c2"), "C1/c2");
    assert_eq!(seen, c1w1_flannel, "not masqueraded behind C1w1's flannel address");
    assert_ne!(seen, c1c1);

    // Pod to the underlay (outside the flannel network): masqueraded either way.
    for (cluster, etcd) in [("C0", "C0e1"), ("C1", "C1e1")] {
        let from = format!("{cluster}/c1");
        let worker = format!("{cluster}w1");
        assert_eq!(
            e.echo_source(&from, &e.host_ip(etcd), etcd),
            e.host_ip(&worker),
            "{from} -> {etcd} not masqueraded behind {worker}"
        );
    }

    // Turned off by a live change: flanneld restarts without -ip-masq and, out of
    // nftables mode, deletes its tables; `apply` returns once it wrote its subnet file.
    let dir = tempfile::tempdir().unwrap();
    let off = dir.path().join("ip-masq-off.toml");
    let text = std::fs::read_to_string(TOPOLOGY).unwrap();
    assert!(text.contains("flannel = { ip_masq = true }\n"));
    std::fs::write(&off, text.replace("flannel = { ip_masq = true }\n", "")).unwrap();
    ok(&["apply", "--name", &name, off.to_str().unwrap()]);
    for w in ["C0w1", "C0w2"] {
        let env = std::fs::read_to_string(format!("/tmp/knetsim-{name}/{w}/flannel-subnet.env")).unwrap();
        assert!(env.contains("\nFLANNEL_IPMASQ=false\n"), "{w}: {env}");
        // The cleanup follows the subnet file: give it a moment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let tables = e.run(w, &["nft", "list", "tables"]);
            if !tables.contains("flannel") {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{w} still has\n{tables}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    drop(e);
    assert_nothing_left(&name);
}
