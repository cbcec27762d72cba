//! Live acceptance tests of the default topology (the seed scenario: clusters C0 and
//! C1, two etcd hosts and three workers each, pods, VIPs, the ingress demo), as root.
//! `up` runs the topology's checks at the end and must pass them; test 8 brings up
//! everything (routers included) and runs `knetsim test`.
//!
//! Each test brings up its own emulation named `d<pid><letter>` (so tests run in
//! parallel and clash with nothing) and holds a drop guard that runs
//! `knetsim down --name ...` if it fails half-way. Every probe runs inside the
//! emulation's namespaces through `knetsim exec`; nothing is sent from the root
//! namespace and nothing is killed by name. Without root or a needed program the
//! tests print `SKIP: reason`, unless `CI` is set, where they fail instead.

mod common;

use common::{
    assert_nothing_left, installed_or_built_in, knetsim, live_ready, namespaces_of, ok, on_path, skip, stdout_of,
    subcommands, text, Down, RootSnapshot,
};
use knetsim_compiler::artifacts::paths::INVENTORY;
use knetsim_compiler::{CompileOptions, Source};
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Output, Stdio};
use std::time::Instant;

/// Programs the default topology's plan and these tests need.
const PROGRAMS: &[&str] = &[
    "ip", "tc", "nft", "etcd", "sysctl", "nginx", "python3", "ping", "curl", "tcpdump", "timeout", "readlink", "sh",
];

/// Whether this machine and this build can run the default topology; prints the
/// reason (or panics under CI) when not.
fn ready(test: &str) -> bool {
    if !live_ready(test, PROGRAMS) {
        return false;
    }
    let subs = subcommands();
    for s in ["cni", "serve"] {
        if !subs.iter().any(|x| x == s) {
            return skip(test, &format!("this knetsim has no `{s}` subcommand yet"));
        }
    }
    installed_or_built_in(test, "flanneld", "flanneld")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A running emulation of the default topology; `knetsim down` when dropped.
struct Emulation {
    name: String,
    /// `<state>/bundle/inventory.json`, as `up` stored it.
    inventory: Value,
    /// What `up` printed: the summary and the table of the topology's checks.
    up_stdout: String,
    _down: Down,
}

impl Emulation {
    /// `knetsim up --skip SKIP --name d<pid><tag>` (no `--skip` when SKIP is empty),
    /// which must succeed, its checks included.
    fn up(tag: char, skip: &str) -> Emulation {
        let name = format!("d{}{tag}", std::process::id());
        assert!(name.len() <= 16, "{name} is too long");
        // The guard exists before `up` runs, so a half-done `up` is cleaned too.
        let down = Down(name.clone());
        let t = Instant::now();
        let mut args = vec!["up", "--name", &name];
        if !skip.is_empty() {
            args.extend(["--skip", skip]);
        }
        let out = knetsim(&args);
        assert!(out.status.success(), "knetsim up --name {name}: {}", text(&out));
        println!("{name}: up in {:.2} s", t.elapsed().as_secs_f64());
        let path = format!("/tmp/knetsim-{name}/bundle/{INVENTORY}");
        let inventory = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        Emulation {
            inventory: serde_json::from_str(&inventory).unwrap(),
            up_stdout: stdout(&out),
            name,
            _down: down,
        }
    }

    fn state_dir(&self) -> String {
        format!("/tmp/knetsim-{}", self.name)
    }

    fn exec(&self, node: &str, argv: &[&str]) -> Output {
        let mut args = vec!["exec", "--name", &self.name, node, "--"];
        args.extend_from_slice(argv);
        knetsim(&args)
    }

    /// The command's stdout; it must succeed.
    fn run(&self, node: &str, argv: &[&str]) -> String {
        let out = self.exec(node, argv);
        assert!(
            out.status.success(),
            "{}: `{}` in {node}: {}",
            self.name,
            argv.join(" "),
            text(&out)
        );
        stdout(&out)
    }

    /// `count` pings from `node` to `ip`, every one answered.
    fn ping_n(&self, node: &str, ip: &str, count: u32) -> String {
        let count = count.to_string();
        let out = self.exec(node, &["ping", "-n", "-c", &count, "-i", "0.2", "-W", "2", ip]);
        let t = stdout(&out);
        assert!(
            out.status.success() && t.contains(" 0% packet loss"),
            "{}: ping {ip} from {node}: {}",
            self.name,
            text(&out)
        );
        t
    }

    fn ping(&self, node: &str, ip: &str) -> String {
        self.ping_n(node, ip, 2)
    }

    fn clusters(&self) -> &[Value] {
        self.inventory["clusters"]
            .as_array()
            .expect("clusters in the inventory")
    }

    fn cluster(&self, name: &str) -> &Value {
        self.clusters()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no cluster {name} in the inventory"))
    }

    fn worker(&self, host: &str) -> &Value {
        self.clusters()
            .iter()
            .flat_map(|c| c["workers"].as_array().unwrap())
            .find(|w| w["host"]["name"] == host)
            .unwrap_or_else(|| panic!("no worker {host} in the inventory"))
    }

    /// The underlay address of a host (etcd member or worker).
    fn host_ip(&self, host: &str) -> String {
        let c = self.clusters();
        let etcd = c.iter().flat_map(|c| c["etcd"].as_array().unwrap());
        let workers = c
            .iter()
            .flat_map(|c| c["workers"].as_array().unwrap())
            .map(|w| &w["host"]);
        etcd.chain(workers)
            .find(|h| h["name"] == host)
            .and_then(|h| h["ip"].as_str())
            .unwrap_or_else(|| panic!("no host {host} in the inventory"))
            .to_string()
    }

    /// `(C0/c1, worker, ip)` of every pod.
    fn pods(&self) -> Vec<(String, String, String)> {
        pods_of(&self.inventory)
    }

    fn pod_ip(&self, id: &str) -> String {
        self.pods()
            .into_iter()
            .find(|(p, _, _)| p == id)
            .map(|(_, _, ip)| ip)
            .unwrap_or_else(|| panic!("no pod {id} in the inventory"))
    }

    /// Packets sent through `ifname` in `node` (`ip -j -s link show`).
    fn tx_packets(&self, node: &str, ifname: &str) -> u64 {
        let v: Value = serde_json::from_str(&self.run(node, &["ip", "-j", "-s", "link", "show", ifname])).unwrap();
        v[0]["stats64"]["tx"]["packets"]
            .as_u64()
            .unwrap_or_else(|| panic!("no tx counter for {ifname} in {node}: {v}"))
    }

    /// `knetsim down`, which must succeed and leave nothing behind: no namespace,
    /// mount, state or daemon, and no process at all still inside one of the
    /// emulation's network namespaces (workloads have no state path in their
    /// command line, so they are found by namespace).
    fn down(self) {
        let inodes: BTreeSet<u64> = namespaces_of(&self.name)
            .iter()
            .map(|n| std::fs::metadata(format!("/run/netns/{n}")).unwrap().ino())
            .collect();
        assert_eq!(inodes.len(), 22, "{}: {inodes:?}", self.name);
        let t = Instant::now();
        let out = ok(&["down", "--name", &self.name]);
        assert!(out.contains(&format!("emulation {} is down", self.name)), "{out}");
        println!("{}: down in {:.2} s", self.name, t.elapsed().as_secs_f64());
        assert_nothing_left(&self.name);
        let inside = processes_in_netns(&inodes);
        assert!(
            inside.is_empty(),
            "{}: processes left in its namespaces: {inside:?}",
            self.name
        );
    }
}

/// `(pid, command line)` of every process whose network namespace is one of `inodes`.
fn processes_in_netns(inodes: &BTreeSet<u64>) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(ns) = std::fs::metadata(e.path().join("ns/net")) else {
            continue;
        };
        if inodes.contains(&ns.ino()) {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            found.push((pid, String::from_utf8_lossy(&cmd).replace('\0', " ")));
        }
    }
    found
}

/// `(C0/c1, worker, ip)` of every pod of an inventory.
fn pods_of(inventory: &Value) -> Vec<(String, String, String)> {
    let mut pods = Vec::new();
    for c in inventory["clusters"].as_array().unwrap() {
        for p in c["pods"].as_array().unwrap() {
            pods.push((
                format!("{}/{}", c["name"].as_str().unwrap(), p["name"].as_str().unwrap()),
                p["worker"].as_str().unwrap().to_string(),
                p["ip"].as_str().unwrap().to_string(),
            ));
        }
    }
    pods
}

/// Whether `ip` lies in `cidr` (`11.10.0.0/20`).
fn in_subnet(ip: &str, cidr: &str) -> bool {
    let (net, len) = cidr.split_once('/').expect("a CIDR");
    let len: u32 = len.parse().unwrap();
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    let ip: Ipv4Addr = ip.parse().unwrap();
    let net: Ipv4Addr = net.parse().unwrap();
    u32::from(ip) & mask == u32::from(net) & mask
}

/// IPv4 addresses (`addr/len`) of the first interface in `ip -j addr show` output.
fn ipv4_of(ip_json: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(ip_json).unwrap();
    v[0]["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["family"] == "inet")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

// ---------------------------------------------------------------------------
// 1. The underlay: workers and etcd hosts reach each other.

#[test]
fn workers_and_etcd_hosts_ping_each_other() {
    if !ready("workers_and_etcd_hosts_ping_each_other") {
        return;
    }
    let e = Emulation::up('a', "interconnect,ingress,workloads");
    // The seed's Mininet numbering.
    assert_eq!(e.host_ip("C0w1"), "10.0.0.3");
    assert_eq!(e.host_ip("C1w1"), "10.0.0.8");
    for (from, to) in [("C0w1", "C0w2"), ("C0w1", "C0w3"), ("C0w3", "C0w1"), ("C1w1", "C1w3")] {
        e.ping(from, &e.host_ip(to));
    }
    // Every etcd host reaches every worker of its cluster.
    for c in ["C0", "C1"] {
        for etcd in ["e1", "e2"] {
            for w in ["w1", "w2", "w3"] {
                e.ping_n(&format!("{c}{etcd}"), &e.host_ip(&format!("{c}{w}")), 1);
            }
        }
    }

    // Across clusters through the top switch t0: both of t0's ports (to C0s0 and to
    // C1s0) forward the pings, so their counters grow.
    let t0_ports = || -> Vec<(String, u64)> {
        let v: Value =
            serde_json::from_str(&e.run("switches", &["ip", "-j", "-s", "link", "show", "master", "t0"])).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["ifname"].as_str().unwrap().to_string(),
                    l["stats64"]["tx"]["packets"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let before = t0_ports();
    assert_eq!(before.len(), 2, "t0 has a port per cluster switch: {before:?}");
    e.ping_n("C0w1", &e.host_ip("C1w1"), 3);
    e.ping("C1w3", &e.host_ip("C0w2"));
    e.ping("C0e1", &e.host_ip("C1w1"));
    let after = t0_ports();
    for ((port, b), (_, a)) in before.iter().zip(&after) {
        assert!(
            a >= &(b + 3),
            "t0 port {port} forwarded {} packets (tx {b} -> {a})",
            a - b
        );
    }
}

// ---------------------------------------------------------------------------
// 2. Pod IPs are the compiler's allocation.

#[test]
fn pod_ips_equal_the_compilers_allocation() {
    if !ready("pod_ips_equal_the_compilers_allocation") {
        return;
    }
    let e = Emulation::up('b', "interconnect,ingress");
    // The stored inventory is what the compiler allocates for this name.
    let fresh = knetsim_compiler::compile(&Source::default_topology(), &CompileOptions::named(&e.name))
        .unwrap_or_else(|d| panic!("the default topology compiles: {d:?}"));
    let fresh: Value = serde_json::from_str(fresh.get(INVENTORY).unwrap()).unwrap();
    let pods = e.pods();
    assert_eq!(pods, pods_of(&fresh), "stored inventory vs a fresh compilation");
    assert_eq!(pods.len(), 11, "{pods:?}");

    for (id, worker, ip) in &pods {
        let cluster = e.cluster(id.split('/').next().unwrap());
        let subnet_len = &cluster["flannel"]["subnet_len"];
        // The allocation itself: inside its worker's flannel subnet.
        let subnet = e.worker(worker)["subnet"].as_str().unwrap();
        assert!(in_subnet(ip, subnet), "{id} {ip} outside {worker}'s {subnet}");
        // What the pod really has: exactly that address on eth0.
        let addrs = ipv4_of(&e.run(id, &["ip", "-j", "addr", "show", "eth0"]));
        assert_eq!(addrs, vec![format!("{ip}/{subnet_len}")], "{id} on {worker}");
    }
}

// ---------------------------------------------------------------------------
// 3. Pod-to-pod on one worker and across workers, in both clusters.

#[test]
fn pods_ping_on_one_worker_and_across_workers() {
    if !ready("pods_ping_on_one_worker_and_across_workers") {
        return;
    }
    let e = Emulation::up('c', "interconnect,ingress,workloads");
    let pairs = [
        // Both on C0w3: through cni0 only.
        ("C0/c3", "C0/c4"),
        ("C0/c4", "C0/c3"),
        // Across workers (flannel VXLAN).
        ("C0/c1", "C0/c2"),
        ("C0/c1", "C0/c3"),
        ("C0/c2", "C0/c1"),
        ("C1/c1", "C1/c2"),
        ("C1/c1", "C1/c3"),
        ("C1/c3", "C1/c1"),
    ];
    for (from, to) in pairs {
        let out = e.ping(from, &e.pod_ip(to));
        assert!(out.contains(&format!("from {}", e.pod_ip(to))), "{from} -> {to}: {out}");
    }
}

// ---------------------------------------------------------------------------
// 4. Cross-worker pod traffic is VXLAN (UDP 8472, VNI 100) on the worker's eth0.

/// One VXLAN-in-UDP-in-IPv4 frame from a capture.
#[derive(Debug)]
struct VxlanFrame {
    outer_src: Ipv4Addr,
    outer_dst: Ipv4Addr,
    dport: u16,
    flags: u8,
    vni: u32,
    inner_src_mac: String,
    inner_dst_mac: String,
    inner_src: Ipv4Addr,
    inner_dst: Ipv4Addr,
    inner_proto: u8,
    /// ICMP type when the inner packet is ICMP.
    icmp_type: Option<u8>,
}

fn mac(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":")
}

fn ipv4(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

/// The UDP-in-IPv4 frames of a pcap file (Ethernet link type) read as VXLAN.
fn vxlan_frames(pcap: &[u8]) -> Vec<VxlanFrame> {
    assert!(pcap.len() >= 24, "not a pcap file ({} bytes)", pcap.len());
    let magic = u32::from_le_bytes(pcap[0..4].try_into().unwrap());
    let le = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        m => panic!("not a pcap file (magic {m:#x})"),
    };
    let u32_at = |b: &[u8], i: usize| {
        let w: [u8; 4] = b[i..i + 4].try_into().unwrap();
        if le {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        }
    };
    assert_eq!(u32_at(pcap, 20) & 0xffff, 1, "link type is not Ethernet");
    let mut frames = Vec::new();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let len = u32_at(pcap, at + 8) as usize;
        let f = &pcap[at + 16..(at + 16 + len).min(pcap.len())];
        at += 16 + len;
        // Ethernet, IPv4, UDP, VXLAN (8 bytes), inner Ethernet, inner IPv4.
        if f.len() < 14 + 20 || f[12..14] != [0x08, 0x00] || f[14 + 9] != 17 {
            continue;
        }
        let ip = &f[14..];
        let udp = &ip[usize::from(ip[0] & 0x0f) * 4..];
        if udp.len() < 8 + 8 + 14 + 20 {
            continue;
        }
        let vx = &udp[8..];
        let inner = &vx[8..];
        let inner_ip = &inner[14..];
        let icmp = &inner_ip[usize::from(inner_ip[0] & 0x0f) * 4..];
        frames.push(VxlanFrame {
            outer_src: ipv4(&ip[12..16]),
            outer_dst: ipv4(&ip[16..20]),
            dport: u16::from_be_bytes([udp[2], udp[3]]),
            flags: vx[0],
            vni: u32::from_be_bytes([0, vx[4], vx[5], vx[6]]),
            inner_dst_mac: mac(&inner[0..6]),
            inner_src_mac: mac(&inner[6..12]),
            inner_src: ipv4(&inner_ip[12..16]),
            inner_dst: ipv4(&inner_ip[16..20]),
            inner_proto: inner_ip[9],
            icmp_type: (inner_ip[9] == 1 && !icmp.is_empty()).then(|| icmp[0]),
        });
    }
    frames
}

#[test]
fn cross_worker_packets_are_vxlan_on_udp_8472() {
    if !ready("cross_worker_packets_are_vxlan_on_udp_8472") {
        return;
    }
    let e = Emulation::up('d', "interconnect,ingress,workloads");
    let flannel = &e.cluster("C0")["flannel"];
    let (vni, port) = (flannel["vni"].as_u64().unwrap(), flannel["port"].as_u64().unwrap());
    assert_eq!((vni, port), (100, 8472), "the seed's flannel backend");
    let device = format!("flannel.{vni}");
    let (w1, w2) = (e.host_ip("C0w1"), e.host_ip("C0w2"));
    assert_eq!(w2, "10.0.0.4");
    let c2 = e.pod_ip("C0/c2");

    let tmp = tempfile::tempdir().unwrap();
    let pcap = tmp.path().join("vxlan.pcap");
    let pcap = pcap.to_str().unwrap();
    // tcpdump in C0w1's namespace (bounded by `timeout`); `-Z root` so it may write
    // into the test's private directory after dropping privileges.
    let filter = format!("udp port {port}");
    let mut tcpdump = Command::new(env!("CARGO_BIN_EXE_knetsim"))
        .args(["exec", "--name", &e.name, "C0w1", "--"])
        .args([
            "timeout", "10", "tcpdump", "-i", "eth0", "-nn", "-U", "-c", "2", "-Z", "root",
        ])
        .args(["-w", pcap, &filter])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(tcpdump.stderr.take().unwrap());
    let mut said = String::new();
    while !said.contains("listening on") {
        if stderr.read_line(&mut said).unwrap() == 0 {
            break;
        }
    }
    assert!(said.contains("listening on"), "tcpdump did not start: {said}");

    let tx_before = e.tx_packets("C0w1", &device);
    e.ping_n("C0/c1", &c2, 3);
    let tx_after = e.tx_packets("C0w1", &device);

    let status = tcpdump.wait().unwrap();
    stderr.read_to_string(&mut said).unwrap();
    assert!(status.success(), "tcpdump ({status}): {said}");
    assert!(
        tx_after >= tx_before + 3,
        "{device} on C0w1 sent {} packets for 3 pings ({tx_before} -> {tx_after})",
        tx_after - tx_before
    );

    // tcpdump's own reading of the capture.
    let dump = stdout_of(&["tcpdump", "-r", pcap, "-nn"]);
    let outer = format!("> {w2}.{port}:");
    let line = dump
        .lines()
        .find(|l| l.contains(&format!("IP {w1}.")) && l.contains(&outer))
        .unwrap_or_else(|| panic!("no UDP {w1} -> {w2}.{port} in the capture:\n{dump}"));
    assert!(
        line.contains(&format!("instance {vni}")) || line.contains(&format!("vni {vni}")),
        "{line}"
    );
    assert!(dump.contains(&format!("> {c2}: ICMP echo request")), "{dump}");

    // The bytes: VXLAN header with the I flag and the VNI, the inner frame between
    // the two workers' VTEP MACs, carrying c1's ping to c2.
    let frames = vxlan_frames(&std::fs::read(pcap).unwrap());
    assert_eq!(frames.len(), 2, "{frames:#?}");
    assert!(
        frames
            .iter()
            .all(|f| f.dport == port as u16 && f.flags == 0x08 && f.vni == vni as u32),
        "{frames:#?}"
    );
    let vtep = |w: &str| e.worker(w)["vtep_mac"].as_str().unwrap().to_string();
    let request = frames
        .iter()
        .find(|f| f.outer_src.to_string() == w1 && f.outer_dst.to_string() == w2)
        .unwrap_or_else(|| panic!("no frame {w1} -> {w2}: {frames:#?}"));
    assert_eq!(request.inner_src_mac, vtep("C0w1"), "{request:#?}");
    assert_eq!(request.inner_dst_mac, vtep("C0w2"), "{request:#?}");
    assert_eq!(request.inner_dst.to_string(), c2, "{request:#?}");
    assert_eq!((request.inner_proto, request.icmp_type), (1, Some(8)), "{request:#?}");
    // The source is in C0w1's pod subnet: c1 itself, or C0w1's flannel address when
    // the bridge plugin masquerades (ipMasq = !FLANNEL_IPMASQ, as flannel's CNI plugin does).
    let w1_subnet = e.worker("C0w1")["subnet"].as_str().unwrap();
    assert!(
        in_subnet(&request.inner_src.to_string(), w1_subnet),
        "{request:#?} not from {w1_subnet}"
    );

    // Wireshark's dissector, when it is installed.
    if on_path("tshark") {
        let v = stdout_of(&["tshark", "-r", pcap, "-d", &format!("udp.port=={port},vxlan"), "-V"]);
        assert!(v.contains("Virtual eXtensible Local Area Network"), "{v}");
        assert!(v.contains(&format!("VXLAN Network Identifier (VNI): {vni}")), "{v}");
    } else {
        println!("note: tshark is not installed; the capture was checked with tcpdump and by its bytes");
    }
}

// ---------------------------------------------------------------------------
// 5. A pod differs from its worker in the network namespace only.

#[test]
fn exec_in_a_pod_differs_from_its_worker_only_in_the_network_namespace() {
    if !ready("exec_in_a_pod_differs_from_its_worker_only_in_the_network_namespace") {
        return;
    }
    let e = Emulation::up('e', "interconnect,ingress,workloads");
    let c1 = e.pod_ip("C0/c1");
    let len = &e.cluster("C0")["flannel"]["subnet_len"];
    let addr = e.run("C0/c1", &["ip", "addr"]);
    // The lines of eth0's block (`2: eth0@if5: <...>` and its indented lines).
    let mut in_eth0 = false;
    let mut eth0 = Vec::new();
    for l in addr.lines() {
        if l.starts_with(char::is_numeric) {
            in_eth0 = l.contains(": eth0@") || l.contains(": eth0:");
        }
        if in_eth0 {
            eth0.push(l);
        }
    }
    let eth0 = eth0.join("\n");
    assert!(
        eth0.contains(&format!("inet {c1}/{len} ")),
        "eth0 with {c1}/{len} in\n{addr}"
    );
    // Not the worker's interfaces.
    assert!(!addr.contains(&e.host_ip("C0w1")), "{addr}");
    assert!(!addr.contains("flannel."), "{addr}");

    for kind in ["net", "mnt", "pid", "uts", "ipc", "user", "cgroup"] {
        let link = format!("/proc/self/ns/{kind}");
        let pod = e.run("C0/c1", &["readlink", &link]);
        let worker = e.run("C0w1", &["readlink", &link]);
        assert!(pod.starts_with(&format!("{kind}:[")), "{pod}");
        if kind == "net" {
            assert_ne!(pod, worker, "the pod has its own network namespace");
        } else {
            assert_eq!(pod, worker, "{kind} namespace of C0/c1 vs C0w1");
        }
    }
}

// ---------------------------------------------------------------------------
// 6. Services: the VIP answers, and connections spread over both backends.

#[test]
fn vip_answers_and_connections_reach_both_backends() {
    if !ready("vip_answers_and_connections_reach_both_backends") {
        return;
    }
    let e = Emulation::up('f', "interconnect,ingress");
    // up's checks: the VIP ones ran and passed; those through the left-out ingress
    // and routers are reported as skipped, not failed.
    let row = |check: &str| {
        e.up_stdout
            .lines()
            .find(|l| l.starts_with(check))
            .unwrap_or_else(|| panic!("no row for `{check}` in:\n{}", e.up_stdout))
            .to_string()
    };
    assert!(row("vip balances backends").contains(" pass "), "{}", e.up_stdout);
    for skipped in [
        "ingress on its worker",
        "ingress from another host",
        "service across clusters",
    ] {
        let r = row(skipped);
        assert!(r.contains(" skipped ") && r.contains("component not running"), "{r}");
    }
    assert!(
        e.up_stdout.contains("checks: 6 passed, 0 failed, 4 skipped"),
        "{}",
        e.up_stdout
    );
    for c in ["C0", "C1"] {
        let out = e.ping(&format!("{c}/c1"), "100.64.10.1");
        assert!(out.contains("from 100.64.10.1"), "{c}/c1: {out}");
    }
    // Each curl is a new connection, balanced by the nft jhash map.
    let expected: BTreeSet<String> = ["S1-W2", "S1-W3"].map(String::from).into();
    for node in ["C0w1", "C0/c1"] {
        let mut seen = BTreeSet::new();
        for i in 0..20 {
            let body = e.run(node, &["curl", "-s", "-S", "-f", "-m", "2", "http://100.64.11.1:8000/"]);
            let body = body.trim().to_string();
            assert!(expected.contains(&body), "connection {i} from {node}: {body:?}");
            seen.insert(body);
        }
        assert_eq!(seen, expected, "20 connections from {node} to 100.64.11.1:8000");
    }
}

// ---------------------------------------------------------------------------
// 7. Ingress (chapter 4 of the deck): nginx on C0w1:8001 routes paths to services.

#[test]
fn ingress_routes_paths_to_services() {
    if !ready("ingress_routes_paths_to_services") {
        return;
    }
    let e = Emulation::up('g', "interconnect");
    let curl = |node: &str, url: &str| -> String {
        e.run(node, &["curl", "-s", "-S", "-f", "-m", "2", url])
            .trim()
            .to_string()
    };
    for (path, prefix) in [("/svc1", "S1-W"), ("/svc2", "S2-W")] {
        for _ in 0..3 {
            let body = curl("C0w1", &format!("http://localhost:8001{path}"));
            assert!(body.starts_with(prefix), "{path} from C0w1: {body:?}");
        }
    }
    let w1 = e.host_ip("C0w1");
    assert_eq!(w1, "10.0.0.3");
    let body = curl("C0e1", &format!("http://{w1}:8001/svc1"));
    assert!(body.starts_with("S1-W"), "/svc1 from C0e1: {body:?}");
    let body = curl("C0w2", &format!("http://{w1}:8001/svc2"));
    assert!(body.starts_with("S2-W"), "/svc2 from C0w2: {body:?}");
}

// ---------------------------------------------------------------------------
// 8. up then down leaves the root namespace as it was.

#[test]
fn up_then_down_leaves_the_root_namespace_as_it_was() {
    if !ready("up_then_down_leaves_the_root_namespace_as_it_was") {
        return;
    }
    let before = RootSnapshot::take();
    // Everything, the interconnect routers included.
    let e = Emulation::up('h', "");
    // `knetsim test`: every check of the default topology passes, each with what it saw.
    let out = knetsim(&["test", "--name", &e.name]);
    let table = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(table.starts_with("CHECK"), "{table}");
    let rows: Vec<&str> = table.lines().skip(1).filter(|l| !l.starts_with("checks:")).collect();
    assert_eq!(rows.len(), 10, "{table}");
    assert!(rows.iter().all(|r| r.contains(" pass ")), "{table}");
    assert!(table.contains("checks: 10 passed, 0 failed\n"), "{table}");
    for (check, detail) in [
        ("vip answers ping", "5/5 replies, 0% loss"),
        ("vip balances backends", "20 requests: S1-W2 x"),
        ("ingress from another host", "1/1 bodies contain \"S1-W\""),
        ("service across clusters", "1/1 bodies contain \"Directory listing\""),
    ] {
        let row = rows.iter().find(|r| r.starts_with(check)).unwrap();
        assert!(row.contains(detail), "{row}");
    }
    // up ran the same checks.
    assert!(e.up_stdout.contains("checks: 10 passed, 0 failed"), "{}", e.up_stdout);
    // Every namespace the emulation made carries its prefix.
    let status: Value = serde_json::from_str(&ok(&["status", "--name", &e.name, "--json"])).unwrap();
    let recorded: BTreeSet<String> = status["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_string())
        .collect();
    let listed: BTreeSet<String> = namespaces_of(&e.name).into_iter().collect();
    assert_eq!(recorded.len(), 22, "{recorded:?}");
    assert_eq!(listed, recorded);
    e.ping("C0/c1", "100.64.10.1");
    let body = e.run("C0w1", &["curl", "-s", "-f", "-m", "2", "http://localhost:8001/svc1"]);
    assert!(body.starts_with("S1-W"), "{body}");

    let name = e.name.clone();
    e.down();
    let netns = stdout_of(&["ip", "netns", "list"]);
    let ours: Vec<&str> = netns.lines().filter(|l| l.starts_with(&format!("{name}-"))).collect();
    assert!(ours.is_empty(), "left in `ip netns list`: {ours:?}");
    RootSnapshot::take().assert_same_as(&before);
}

// ---------------------------------------------------------------------------
// 9. Two emulations of the default topology side by side.

#[test]
fn two_emulations_run_side_by_side_without_interfering() {
    if !ready("two_emulations_run_side_by_side_without_interfering") {
        return;
    }
    // Both come up at the same time.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| Emulation::up('i', "interconnect"));
        let b = s.spawn(|| Emulation::up('j', "interconnect"));
        (a.join(), b.join())
    });
    let (a, b) = match (a, b) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(p), _) | (_, Err(p)) => std::panic::resume_unwind(p),
    };
    for e in [&a, &b] {
        for c in ["C0", "C1"] {
            e.ping(&format!("{c}/c1"), "100.64.10.1");
        }
        e.ping("C0/c1", &e.pod_ip("C0/c2"));
        let body = e.run("C0w1", &["curl", "-s", "-f", "-m", "2", "http://localhost:8001/svc1"]);
        assert!(body.starts_with("S1-W"), "{}: {body}", e.name);
    }

    let a_name = a.name.clone();
    a.down();
    // b is untouched: every namespace and process there, and everything answers.
    let status = knetsim(&["status", "--name", &b.name, "--json"]);
    let v: Value = serde_json::from_str(&stdout(&status)).unwrap();
    assert!(
        status.status.success() && v["healthy"] == true,
        "{} after down of {a_name}: {v:#}",
        b.name
    );
    assert_eq!(namespaces_of(&b.name).len(), 22);
    for c in ["C0", "C1"] {
        b.ping(&format!("{c}/c1"), "100.64.10.1");
    }
    b.ping("C1/c1", &b.pod_ip("C1/c3"));
    let body = b.run("C0e1", &["curl", "-s", "-f", "-m", "2", "http://10.0.0.3:8001/svc2"]);
    assert!(body.starts_with("S2-W"), "{body}");
    b.down();
}

// ---------------------------------------------------------------------------
// 10. status --json reports every component.

#[test]
fn status_reports_every_etcd_subnet_and_pod() {
    if !ready("status_reports_every_etcd_subnet_and_pod") {
        return;
    }
    let e = Emulation::up('k', "interconnect");
    let out = knetsim(&["status", "--name", &e.name, "--json"]);
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap_or_else(|err| panic!("{err}: {}", text(&out)));
    assert_eq!(out.status.code(), Some(0), "{v:#}");
    assert_eq!(v["phase"], "Running", "{v:#}");
    assert_eq!(v["healthy"], true, "{v:#}");

    let etcd = v["etcd"].as_array().unwrap();
    let hosts: BTreeSet<&str> = etcd.iter().map(|x| x["host"].as_str().unwrap()).collect();
    assert_eq!(hosts, BTreeSet::from(["C0e1", "C0e2", "C1e1", "C1e2"]), "{v:#}");
    for x in etcd {
        assert_eq!(x["healthy"], true, "{x:#}");
    }

    let flannel = v["flannel"].as_array().unwrap();
    let workers: BTreeSet<&str> = flannel.iter().map(|x| x["worker"].as_str().unwrap()).collect();
    assert_eq!(
        workers,
        BTreeSet::from(["C0w1", "C0w2", "C0w3", "C1w1", "C1w2", "C1w3"]),
        "{v:#}"
    );
    for f in flannel {
        let w = f["worker"].as_str().unwrap();
        assert_eq!(f["present"], true, "{f:#}");
        let reserved = e.worker(w)["subnet"].as_str().unwrap();
        assert_eq!(f["reserved"], reserved, "{f:#}");
        // FLANNEL_SUBNET is the gateway address inside the reservation, as flannel writes it.
        let subnet = f["subnet"].as_str().unwrap();
        let (gw, len) = subnet.split_once('/').unwrap();
        assert!(
            in_subnet(gw, reserved) && reserved.ends_with(&format!("/{len}")),
            "{f:#}"
        );
        let env = std::fs::read_to_string(f["subnet_env"].as_str().unwrap()).unwrap();
        assert!(env.lines().any(|l| l == format!("FLANNEL_SUBNET={subnet}")), "{env}");
        assert!(f["subnet_env"].as_str().unwrap().starts_with(&e.state_dir()), "{f:#}");
    }

    let pods = v["pods"].as_array().unwrap();
    let expected = e.pods();
    assert_eq!(pods.len(), expected.len(), "{v:#}");
    for (id, worker, ip) in &expected {
        let p = pods
            .iter()
            .find(|p| p["name"] == id.as_str())
            .unwrap_or_else(|| panic!("{id} not in status: {v:#}"));
        assert_eq!(p["worker"], worker.as_str(), "{p:#}");
        assert_eq!(p["present"], true, "{p:#}");
        assert_eq!(p["ready"], true, "{p:#}");
        assert_eq!(p["ip"], ip.as_str(), "{p:#}");
        assert_eq!(p["addresses"], serde_json::json!([ip]), "{p:#}");
    }

    // 4 etcd members, 6 flannel agents, 4 `knetsim serve` and one http.server pod, nginx,
    // and the supervisor.
    let processes = v["processes"].as_array().unwrap();
    assert_eq!(processes.len(), 17, "{v:#}");
    assert!(processes.iter().any(|p| p["name"] == "supervisor"), "{v:#}");
    assert!(processes.iter().all(|p| p["alive"] == true), "{v:#}");
}
