//! Live tests of the CNI runtime and the built-in flannel plugin with Debian's real
//! `bridge` and `host-local`, as root: a worker namespace and pod namespaces (all
//! named `cn<pid>-...`), configuration, subnet file, IPAM store and caches in a
//! temporary directory. Without root or without the plugins they print `SKIP: ...`,
//! unless `CI` is set, where they fail instead. The root namespace is never touched:
//! plugins run on a thread inside the worker namespace.

mod common;

use common::{run, stdout};
use knetsim_compiler::plan::CniAdd;
use knetsim_executor::cni::{Builtins, CniRuntime, Error, NetworkConf, RuntimeConf};
use knetsim_executor::system::linux::{in_netns, LinuxSystem};
use knetsim_executor::system::{SysError, System};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const BRIDGE: &str = "/usr/lib/cni/bridge";

fn live_or_skip(test: &str) -> bool {
    let reason = if !nix::unistd::geteuid().is_root() {
        "needs root"
    } else if !Path::new(BRIDGE).exists() || !Path::new("/usr/lib/cni/host-local").exists() {
        "needs the CNI plugins in /usr/lib/cni (apt install containernetworking-plugins)"
    } else {
        return true;
    };
    if std::env::var_os("CI").is_some() {
        panic!("{test}: {reason}, and CI is set");
    }
    println!("SKIP: {test}: {reason}");
    false
}

/// Deletes the namespaces when dropped, even when the test fails half-way.
struct Namespaces(Vec<String>);

impl Namespaces {
    fn create(names: &[String]) -> Self {
        let sys = LinuxSystem::new();
        let mut guard = Namespaces(Vec::new());
        for n in names {
            sys.create_netns(n).unwrap_or_else(|e| panic!("creating {n}: {e}"));
            guard.0.push(n.clone());
        }
        guard
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        let sys = LinuxSystem::new();
        for n in &self.0 {
            if let Err(e) = sys.delete_netns(n) {
                eprintln!("cleanup: {n}: {e}");
            }
        }
    }
}

fn json(argv: &[&str]) -> Value {
    serde_json::from_str(&stdout(argv)).unwrap_or_else(|e| panic!("{argv:?}: {e}"))
}

/// IPv4 addresses of a device as `addr/len`.
fn addresses(netns: &str, dev: &str) -> Vec<String> {
    let v = json(&["ip", "-n", netns, "-4", "-j", "addr", "show", "dev", dev]);
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

fn link_exists(netns: &str, dev: &str) -> bool {
    run(&["ip", "-n", netns, "link", "show", "dev", dev]).status.success()
}

/// Ports of the bridge `cni0` in the worker.
fn bridge_ports(worker: &str) -> usize {
    json(&["ip", "-n", worker, "-j", "link", "show", "master", "cni0"])
        .as_array()
        .unwrap()
        .len()
}

/// Every path under `/var/lib/cni` (the plugins' defaults, which must stay untouched).
fn var_lib_cni() -> BTreeSet<PathBuf> {
    fn walk(dir: &Path, out: &mut BTreeSet<PathBuf>) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                out.insert(e.path());
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&e.path(), out);
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(Path::new("/var/lib/cni"), &mut out);
    out
}

/// A worker's state as the compiler lays it out: the flannel CNI configuration in
/// `dir`, its subnet file, flannel's dataDir and host-local's store beside it.
struct Worker {
    dir: PathBuf,
    network: String,
}

impl Worker {
    fn write(dir: &Path, network: &str) -> Worker {
        std::fs::write(
            dir.join("flannel-subnet.env"),
            "FLANNEL_NETWORK=11.0.0.0/8\nFLANNEL_SUBNET=11.10.16.1/20\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n",
        )
        .unwrap();
        let conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": network,
            "type": "flannel",
            "subnetFile": dir.join("flannel-subnet.env"),
            "dataDir": dir.join("flannel"),
            "delegate": {"isDefaultGateway": true},
            "ipam": {"type": "host-local", "dataDir": dir.join("ipam")}
        });
        std::fs::write(
            dir.join("flannel_conf.json"),
            serde_json::to_string_pretty(&conf).unwrap(),
        )
        .unwrap();
        Worker {
            dir: dir.to_path_buf(),
            network: network.into(),
        }
    }

    fn runtime(&self) -> CniRuntime {
        CniRuntime::new(
            vec![PathBuf::from("/usr/lib/cni"), PathBuf::from("/opt/cni/bin")],
            self.dir.join("cni-cache"),
        )
        .with_builtins(Builtins::InProcess)
    }

    fn ipam_file(&self, ip: &str) -> PathBuf {
        self.dir.join("ipam").join(&self.network).join(ip)
    }
}

fn in_worker<R: Send>(worker: &str, f: impl FnOnce() -> Result<R, Error> + Send) -> Result<R, Error> {
    in_netns(worker, || Ok(f())).unwrap_or_else(|e| panic!("entering {worker}: {e}"))
}

#[test]
fn flannel_bridge_host_local_add_check_del() {
    if !live_or_skip("flannel_bridge_host_local_add_check_del") {
        return;
    }
    let pid = std::process::id();
    let worker = format!("cn{pid}-w");
    let pods = [format!("cn{pid}-a"), format!("cn{pid}-b")];
    let _guard = Namespaces::create(&[worker.clone(), pods[0].clone(), pods[1].clone()]);
    let tmp = tempfile::tempdir().unwrap();
    let w = Worker::write(tmp.path(), &worker);
    let runtime = w.runtime();
    let before = var_lib_cni();

    let net = NetworkConf::load(tmp.path(), &worker).unwrap();
    assert_eq!(net.plugins[0].kind, "flannel");
    let ips = ["11.10.16.10", "11.10.16.11"];
    let rts: Vec<RuntimeConf> = pods
        .iter()
        .zip(ips)
        .map(|(pod, ip)| {
            RuntimeConf::new(format!("ctr-{pod}"), format!("/run/netns/{pod}"), "eth0")
                .arg("IgnoreUnknown", "1")
                .arg("IP", ip)
        })
        .collect();

    // ADD both pods, with the addresses pinned.
    for (rt, ip) in rts.iter().zip(ips) {
        let result = in_worker(&worker, || runtime.add(&net, rt)).unwrap_or_else(|e| panic!("ADD {ip}: {e}"));
        assert_eq!(result.addresses(), [format!("{ip}/20")], "{result:?}");
        assert_eq!(result.ips[0].gateway.as_deref(), Some("11.10.16.1"));
        assert!(result
            .routes
            .iter()
            .any(|r| r.dst == "0.0.0.0/0" && r.gw.as_deref() == Some("11.10.16.1")));
        assert!(result.routes.iter().any(|r| r.dst == "11.0.0.0/8"));
    }

    // The bridge in the worker, the pods' eth0 with their address and default route.
    assert!(addresses(&worker, "cni0").contains(&"11.10.16.1/20".to_string()));
    assert_eq!(bridge_ports(&worker), 2);
    for (pod, ip) in pods.iter().zip(ips) {
        assert_eq!(addresses(pod, "eth0"), [format!("{ip}/20")]);
        let default = stdout(&["ip", "-n", pod, "route", "show", "default"]);
        assert!(default.contains("via 11.10.16.1 dev eth0"), "{pod}: {default}");
        let mtu = json(&["ip", "-n", pod, "-j", "link", "show", "eth0"])[0]["mtu"].clone();
        assert_eq!(mtu, 1450);
    }
    // Pod to pod over the bridge, and pod to its gateway.
    let ping = run(&["ip", "netns", "exec", &pods[0], "ping", "-c", "1", "-W", "2", ips[1]]);
    assert!(
        ping.status.success(),
        "ping {}: {}",
        ips[1],
        String::from_utf8_lossy(&ping.stdout)
    );
    let ping = run(&[
        "ip",
        "netns",
        "exec",
        &pods[1],
        "ping",
        "-c",
        "1",
        "-W",
        "2",
        "11.10.16.1",
    ]);
    assert!(ping.status.success(), "ping the gateway");

    // Flannel saved the delegate configuration; host-local kept its store in the tempdir.
    let saved: Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("flannel").join(&rts[0].container_id)).unwrap()).unwrap();
    assert_eq!(saved["type"], "bridge");
    assert_eq!(saved["isDefaultGateway"], true);
    assert_eq!(saved["ipMasq"], true);
    assert_eq!(
        saved["ipam"]["ranges"],
        serde_json::json!([[{"subnet": "11.10.16.0/20"}]])
    );
    assert_eq!(saved["ipam"]["dataDir"], tmp.path().join("ipam").display().to_string());
    for (rt, ip) in rts.iter().zip(ips) {
        let owner = std::fs::read_to_string(w.ipam_file(ip)).unwrap();
        assert!(owner.contains(&rt.container_id), "{owner}");
        assert!(runtime.cache_file(&worker, rt).exists());
    }
    assert_eq!(var_lib_cni(), before, "nothing new under /var/lib/cni");

    // CHECK passes for an added pod.
    in_worker(&worker, || runtime.check(&net, &rts[0])).unwrap_or_else(|e| panic!("CHECK: {e}"));

    // DEL removes the veth, the allocation, the saved delegate and the cache entry; a
    // second DEL is fine, and CHECK then fails clearly.
    in_worker(&worker, || runtime.del(&net, &rts[0])).unwrap_or_else(|e| panic!("DEL: {e}"));
    assert!(!link_exists(&pods[0], "eth0"));
    assert_eq!(bridge_ports(&worker), 1);
    assert!(!w.ipam_file(ips[0]).exists());
    assert!(w.ipam_file(ips[1]).exists());
    assert!(!tmp.path().join("flannel").join(&rts[0].container_id).exists());
    assert!(!runtime.cache_file(&worker, &rts[0]).exists());
    in_worker(&worker, || runtime.del(&net, &rts[0])).unwrap_or_else(|e| panic!("second DEL: {e}"));
    let err = in_worker(&worker, || runtime.check(&net, &rts[0])).unwrap_err();
    assert!(matches!(err, Error::NoCachedResult { .. }), "{err}");

    // The address is free again: re-ADD gets it back.
    let again = in_worker(&worker, || runtime.add(&net, &rts[0])).unwrap_or_else(|e| panic!("re-ADD: {e}"));
    assert!(again.has_ip(ips[0]));
    // An address another pod holds is refused by host-local, clearly.
    let taken = RuntimeConf::new("ctr-dup", format!("/run/netns/{}", pods[0]), "eth1")
        .arg("IgnoreUnknown", "1")
        .arg("IP", ips[1]);
    let err = in_worker(&worker, || runtime.add(&net, &taken))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("plugin \"flannel\" failed (ADD)") && err.contains(ips[1]),
        "{err}"
    );

    for rt in &rts {
        in_worker(&worker, || runtime.del(&net, rt)).unwrap_or_else(|e| panic!("DEL: {e}"));
    }
    in_worker(&worker, || runtime.del(&net, &taken)).unwrap_or_else(|e| panic!("DEL: {e}"));
    assert_eq!(bridge_ports(&worker), 0);
    assert!(!w.ipam_file(ips[1]).exists());
    assert_eq!(var_lib_cni(), before, "nothing new under /var/lib/cni");
}

#[test]
fn version_and_errors() {
    if !live_or_skip("version_and_errors") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let w = Worker::write(tmp.path(), "net");
    let runtime = w.runtime();
    for plugin in ["bridge", "host-local", "loopback", "flannel"] {
        let info = runtime
            .version(plugin)
            .unwrap_or_else(|e| panic!("VERSION {plugin}: {e}"));
        assert!(
            info.supported_versions.iter().any(|v| v == "1.0.0"),
            "{plugin}: {info:?}"
        );
    }

    // A malformed configuration in the directory: a clear error naming the file.
    std::fs::write(tmp.path().join("00-broken.conf"), "{\"name\": \"net\", \"type\": ").unwrap();
    let err = NetworkConf::load(tmp.path(), "net").unwrap_err().to_string();
    assert!(
        err.contains("00-broken.conf") && err.contains("not valid JSON"),
        "{err}"
    );
    std::fs::remove_file(tmp.path().join("00-broken.conf")).unwrap();

    // The real bridge refusing a bad configuration: its error object, surfaced.
    std::fs::write(
        tmp.path().join("bad.conflist"),
        r#"{"cniVersion":"1.0.0","name":"bad","plugins":[{"type":"bridge","mtu":"big","ipam":{"type":"host-local"}}]}"#,
    )
    .unwrap();
    let pid = std::process::id();
    let worker = format!("cn{pid}-v");
    let pod = format!("cn{pid}-p");
    let _guard = Namespaces::create(&[worker.clone(), pod.clone()]);
    let bad = NetworkConf::load(tmp.path(), "bad").unwrap();
    let rt = RuntimeConf::new("c1", format!("/run/netns/{pod}"), "eth0");
    let err = in_worker(&worker, || runtime.add(&bad, &rt)).unwrap_err();
    match &err {
        Error::Plugin { plugin, command, error } => {
            assert_eq!((plugin.as_str(), command.as_str()), ("bridge", "ADD"));
            assert!(error.code != 0 && !error.msg.is_empty(), "{error:?}");
        }
        other => panic!("expected a plugin error, got {other}"),
    }
    assert!(err.to_string().contains("CNI error"), "{err}");

    // A subnet file that is not there: the flannel plugin says which.
    std::fs::remove_file(tmp.path().join("flannel-subnet.env")).unwrap();
    let net = NetworkConf::load(tmp.path(), "net").unwrap();
    let err = in_worker(&worker, || runtime.add(&net, &rt)).unwrap_err().to_string();
    assert!(
        err.contains("flannel-subnet.env") && err.contains("plugin \"flannel\" failed (ADD)"),
        "{err}"
    );
    assert!(!link_exists(&pod, "eth0"));
}

#[test]
fn linux_system_cni_add_pins_the_planned_ip() {
    if !live_or_skip("linux_system_cni_add_pins_the_planned_ip") {
        return;
    }
    let pid = std::process::id();
    let worker = format!("cn{pid}-s");
    let pod = format!("cn{pid}-c");
    let pod2 = format!("cn{pid}-d");
    let _guard = Namespaces::create(&[worker.clone(), pod.clone(), pod2.clone()]);
    let tmp = tempfile::tempdir().unwrap();
    let w = Worker::write(tmp.path(), "C9w1");
    let sys = LinuxSystem::new();
    let req = CniAdd {
        worker_netns: worker.clone(),
        conf_dir: tmp.path().display().to_string(),
        network: "C9w1".into(),
        container_id: "C9-c1".into(),
        pod_netns: pod.clone(),
        ifname: "eth0".into(),
        ip: "11.10.16.42".into(),
    };
    let got = sys.cni_add(&req).unwrap_or_else(|e| panic!("cni_add: {e}"));
    assert_eq!(got, ["11.10.16.42/20"]);
    assert_eq!(addresses(&pod, "eth0"), ["11.10.16.42/20"]);
    assert!(w.ipam_file("11.10.16.42").exists());
    // The result cache is the worker's cni-cache beside the configuration.
    assert!(tmp.path().join("cni-cache/results/C9w1-C9-c1-eth0").exists());
    // Applying the same step again is a no-op that returns the same address.
    assert_eq!(sys.cni_add(&req).unwrap(), ["11.10.16.42/20"]);
    assert_eq!(bridge_ports(&worker), 1);
    // An address host-local cannot give (outside the worker's subnet): an error, and the
    // half-made attachment (the bridge plugin's veth, flannel's saved delegate) is deleted.
    let outside = CniAdd {
        container_id: "C9-c2".into(),
        pod_netns: pod2.clone(),
        ip: "11.10.99.5".into(),
        ..req.clone()
    };
    let err = sys.cni_add(&outside).unwrap_err().to_string();
    assert!(err.contains("11.10.99.5") && err.contains("CNI ADD of"), "{err}");
    assert!(!link_exists(&pod2, "eth0"));
    assert_eq!(bridge_ports(&worker), 1);
    assert!(!tmp.path().join("flannel/C9-c2").exists());
    assert!(!tmp.path().join("cni-cache/results/C9w1-C9-c2-eth0").exists());
    // A missing network is a clear error.
    let err = sys
        .cni_add(&CniAdd {
            network: "C9w9".into(),
            ..req.clone()
        })
        .unwrap_err();
    assert!(
        matches!(&err, SysError::Io { .. }) && err.to_string().contains("no network configuration named \"C9w9\""),
        "{err}"
    );
}
