//! Live test of the built-in flannel agent (`knetsim flanneld`) against a real etcd,
//! as root. It builds a small lab of its own namespaces, all named `fl<pid>-...`: a
//! switch namespace with a bridge, one etcd host and two workers, wired by veths
//! created directly in their namespaces (the root namespace is never touched).
//! Without root or etcd it prints `SKIP: reason`, unless `CI` is set, where it fails.
//! A drop guard stops every process it started (by PID) and deletes the namespaces,
//! also when an assertion fails half-way.

use knetsim_compiler::artifacts::etcd::EtcdMember;
use knetsim_compiler::artifacts::flannel::{LeaseAttrs, VxlanLeaseAttrs};
use knetsim_executor::etcd::Client;
use knetsim_executor::system::linux::in_netns;
use knetsim_executor::system::process::{is_root, which};
use knetsim_executor::system::SysError;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const CONFIG: &str = r#"{"Network":"11.0.0.0/8","SubnetLen":20,"SubnetMin":"11.10.0.0","SubnetMax":"11.99.0.0","Backend":{"Type":"vxlan","VNI":100,"Port":8472}}"#;
const PREFIX: &str = "/coreos.com/network";
const ETCD_IP: &str = "10.77.0.1";
const W1_IP: &str = "10.77.0.2";
const W2_IP: &str = "10.77.0.3";
const W1_MAC: &str = "0a:26:bc:47:90:98";
const W1_SUBNET_KEY: &str = "/coreos.com/network/subnets/11.10.0.0-20";

fn skip_or_panic(reason: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("flannel_live: {reason}, and CI is set");
    }
    println!("SKIP: flannel_live: {reason}");
}

fn run(argv: &[&str]) -> String {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    assert!(
        out.status.success(),
        "{argv:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(argv: &[&str]) -> Value {
    let out = run(argv);
    if out.trim().is_empty() {
        return Value::Array(Vec::new());
    }
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{argv:?}: {e}: {out}"))
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A started process.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM (by PID), then SIGKILL after `grace`; returns how it ended, None if it needed the SIGKILL.
    fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
        let end = Instant::now() + grace;
        while Instant::now() < end {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The lab: namespaces and processes, all removed on drop.
struct Lab {
    tag: String,
    namespaces: Vec<String>,
    procs: Vec<Proc>,
    dir: tempfile::TempDir,
}

impl Lab {
    fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.tag)
    }

    fn add_ns(&mut self, role: &str) -> String {
        let name = self.ns(role);
        self.namespaces.push(name.clone());
        run(&["ip", "netns", "add", &name]);
        run(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        name
    }

    /// A veth from the switch's bridge to `eth0` in `role`'s namespace, with `ip`/24.
    fn wire(&self, role: &str, ip: &str) {
        let sw = self.ns("sw");
        let ns = self.ns(role);
        run(&[
            "ip", "-n", &sw, "link", "add", role, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        run(&["ip", "-n", &sw, "link", "set", role, "master", "br0", "up"]);
        run(&["ip", "-n", &ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        run(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
    }

    fn spawn(&mut self, name: &str, netns: &str, argv: &[String]) -> usize {
        let log = self.dir.path().join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", netns])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        self.procs.push(Proc {
            name: name.into(),
            child,
            log,
        });
        self.procs.len() - 1
    }

    fn agent(&mut self, role: &str, ip: &str) -> usize {
        let subnet_file = self.subnet_file(role);
        let argv: Vec<String> = vec![
            env!("CARGO_BIN_EXE_knetsim").into(),
            "flanneld".into(),
            format!("-iface={ip}"),
            format!("-etcd-endpoints=http://{ETCD_IP}:2379"),
            format!("-etcd-prefix={PREFIX}"),
            format!("-subnet-file={}", subnet_file.display()),
        ];
        let netns = self.ns(role);
        self.spawn(&format!("flanneld-{role}-{}", self.procs.len()), &netns, &argv)
    }

    fn subnet_file(&self, role: &str) -> PathBuf {
        self.dir.path().join(role).join("subnet.env")
    }

    /// Runs `f` with an etcd client inside the etcd namespace.
    fn etcd<R: Send>(&self, f: impl FnOnce(&Client) -> Result<R, String> + Send) -> Result<R, String> {
        let ns = self.ns("e1");
        in_netns(&ns, || {
            let c = Client::new(&[format!("http://{ETCD_IP}:2379")]).map_err(|e| SysError::Invalid {
                what: "etcd client".into(),
                detail: e.to_string(),
            })?;
            f(&c).map_err(|detail| SysError::Invalid {
                what: "etcd call".into(),
                detail,
            })
        })
        .map_err(|e| e.to_string())
    }

    fn teardown(&mut self) {
        for p in self.procs.iter_mut().rev() {
            p.stop(Duration::from_secs(3));
        }
        for ns in self.namespaces.drain(..).rev() {
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for p in &self.procs {
                eprintln!("---- {} log ----\n{}", p.name, p.log_text());
            }
        }
        self.teardown();
    }
}

/// The gateway routes on flannel.100: (dst, gateway, onlink).
fn routes(ns: &str) -> Vec<(String, String, bool)> {
    json(&["ip", "-n", ns, "-j", "-4", "route", "show", "dev", "flannel.100"])
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| {
            let gw = r.get("gateway")?.as_str()?.to_string();
            let onlink = r
                .get("flags")
                .and_then(Value::as_array)
                .is_some_and(|f| f.iter().any(|x| x == "onlink"));
            Some((r["dst"].as_str()?.to_string(), gw, onlink))
        })
        .collect()
}

/// Permanent neighbours on flannel.100: (ip, mac).
fn neighbours(ns: &str) -> Vec<(String, String)> {
    json(&["ip", "-n", ns, "-j", "neigh", "show", "dev", "flannel.100"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| {
            n.get("state")
                .and_then(Value::as_array)
                .is_some_and(|s| s.iter().any(|x| x == "PERMANENT"))
        })
        .filter_map(|n| Some((n["dst"].as_str()?.to_string(), n.get("lladdr")?.as_str()?.to_string())))
        .collect()
}

/// fdb entries with a remote on flannel.100: (mac, dst).
fn fdb(ns: &str) -> Vec<(String, String)> {
    json(&["bridge", "-n", ns, "-j", "fdb", "show", "dev", "flannel.100"])
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| Some((f["mac"].as_str()?.to_string(), f.get("dst")?.as_str()?.to_string())))
        .collect()
}

fn link(ns: &str) -> Value {
    json(&["ip", "-n", ns, "-j", "-d", "link", "show", "dev", "flannel.100"])[0].clone()
}

fn lease_attrs(ip: &str, mac: &str) -> String {
    serde_json::to_string(&LeaseAttrs {
        public_ip: ip.into(),
        backend_type: "vxlan".into(),
        backend_data: VxlanLeaseAttrs {
            vni: 100,
            vtep_mac: mac.into(),
        },
    })
    .unwrap()
}

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`).
fn status_kb(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.split(':').next() == Some(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Whether `peer_subnet` is reachable from `ns` as flannel sets it up: route via the
/// subnet's .0 onlink, permanent neighbour with the VtepMAC, fdb entry to the public IP.
fn has_peer(ns: &str, subnet: &str, mac: &str, public_ip: &str) -> bool {
    let gw = subnet.split('/').next().unwrap();
    routes(ns).contains(&(subnet.to_string(), gw.to_string(), true))
        && neighbours(ns).contains(&(gw.to_string(), mac.to_string()))
        && fdb(ns).contains(&(mac.to_string(), public_ip.to_string()))
}

#[test]
fn two_agents_share_leases_through_etcd() {
    if !is_root() {
        return skip_or_panic("needs root");
    }
    for program in ["etcd", "ip", "bridge", "ping"] {
        if which(program).is_none() {
            return skip_or_panic(&format!("`{program}` is not installed"));
        }
    }
    let mut lab = Lab {
        tag: format!("fl{}", std::process::id()),
        namespaces: Vec::new(),
        procs: Vec::new(),
        dir: tempfile::tempdir().unwrap(),
    };
    let sw = lab.add_ns("sw");
    run(&[
        "ip",
        "-n",
        &sw,
        "link",
        "add",
        "br0",
        "type",
        "bridge",
        "stp_state",
        "0",
    ]);
    run(&["ip", "-n", &sw, "link", "set", "br0", "up"]);
    let e1 = lab.add_ns("e1");
    let w1 = lab.add_ns("w1");
    let w2 = lab.add_ns("w2");
    lab.wire("e1", ETCD_IP);
    lab.wire("w1", W1_IP);
    lab.wire("w2", W2_IP);

    // etcd with the compiler's command line.
    let member = EtcdMember {
        name: "e1".into(),
        netns: e1.clone(),
        data_dir: lab.dir.path().join("e1.etcd").display().to_string(),
        log: String::new(),
        listen_peer_urls: format!("http://{ETCD_IP}:2380"),
        initial_advertise_peer_urls: format!("http://{ETCD_IP}:2380"),
        listen_client_urls: format!("http://{ETCD_IP}:2379,http://127.0.0.1:2379"),
        advertise_client_urls: format!("http://{ETCD_IP}:2379"),
        initial_cluster: format!("e1=http://{ETCD_IP}:2380"),
        initial_cluster_token: format!("knetsim-{}", lab.tag),
        initial_cluster_state: "new".into(),
        heartbeat_interval: 10,
        election_timeout: 100,
    };
    let etcd = lab.spawn("etcd", &e1, &member.argv());
    wait_for("etcd", Duration::from_secs(30), || {
        lab.etcd(|c| c.get("/health").map_err(|e| e.to_string())).ok()
    });
    assert!(lab.procs[etcd].child.try_wait().unwrap().is_none(), "etcd exited");

    // The client's lease and transaction calls against the real etcd.
    lab.etcd(|c| {
        let e = |e: knetsim_executor::etcd::Error| e.to_string();
        let lease = c.grant(60).map_err(e)?;
        assert_eq!(c.keep_alive_once(lease.id).map_err(e)?, 60);
        assert!(c.create("/t/once", b"1", lease.id).map_err(e)?);
        assert!(!c.create("/t/once", b"2", 0).map_err(e)?, "create of an existing key");
        let (kv, _) = c.get("/t/once").map_err(e)?;
        assert_eq!(kv.map(|kv| (kv.value, kv.lease)), Some((b"1".to_vec(), lease.id)));
        c.revoke(lease.id).map_err(e)?;
        assert_eq!(c.get("/t/once").map_err(e)?.0, None, "revoking deletes the key");
        assert!(c.time_to_live(lease.id).map_err(e)? < 0);
        assert!(c.keep_alive_once(lease.id).map_err(e)? <= 0);
        Ok(())
    })
    .unwrap();

    // The network config and worker 1's reservation, as the executor puts them.
    lab.etcd(|c| {
        c.put(&format!("{PREFIX}/config"), CONFIG.as_bytes(), 0)
            .and_then(|_| c.put(W1_SUBNET_KEY, lease_attrs(W1_IP, W1_MAC).as_bytes(), 0))
            .map_err(|e| e.to_string())
    })
    .unwrap();

    let a1 = lab.agent("w1", W1_IP);
    let a2 = lab.agent("w2", W2_IP);
    for role in ["w1", "w2"] {
        let f = lab.subnet_file(role);
        wait_for(&format!("{}", f.display()), Duration::from_secs(20), || {
            f.exists().then_some(())
        });
    }

    // Worker 1 took its reservation, worker 2 leased another subnet.
    assert_eq!(
        std::fs::read_to_string(lab.subnet_file("w1")).unwrap(),
        "FLANNEL_NETWORK=11.0.0.0/8\nFLANNEL_SUBNET=11.10.0.1/20\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"
    );
    let env2 = std::fs::read_to_string(lab.subnet_file("w2")).unwrap();
    let sub2 = env2
        .lines()
        .find_map(|l| l.strip_prefix("FLANNEL_SUBNET="))
        .expect("FLANNEL_SUBNET")
        .to_string();
    assert!(sub2.ends_with(".1/20") && sub2.starts_with("11."), "{sub2}");
    assert_ne!(sub2, "11.10.0.1/20");
    assert!(env2.starts_with("FLANNEL_NETWORK=11.0.0.0/8\n"), "{env2}");
    assert!(env2.contains("\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"), "{env2}");
    let net2 = format!("{}.0/20", sub2.trim_end_matches(".1/20"));
    let gw2 = net2.trim_end_matches("/20").to_string();
    let key2 = format!("{PREFIX}/subnets/{}-20", gw2);

    // etcd: the reservation stays one (no lease); worker 2's lease has flannel's 24 h TTL.
    let (kv1, kv2, ttl2) = lab
        .etcd(|c| {
            let kv1 = c.get(W1_SUBNET_KEY).map_err(|e| e.to_string())?.0.ok_or("no w1 key")?;
            let kv2 = c.get(&key2).map_err(|e| e.to_string())?.0.ok_or("no w2 key")?;
            let ttl2 = c.time_to_live(kv2.lease).map_err(|e| e.to_string())?;
            Ok((kv1, kv2, ttl2))
        })
        .unwrap();
    assert_eq!(kv1.lease, 0, "reservation without TTL");
    assert_eq!(String::from_utf8_lossy(&kv1.value), lease_attrs(W1_IP, W1_MAC));
    assert_ne!(kv2.lease, 0, "a new lease has a TTL");
    assert!(ttl2 > 86_000 && ttl2 <= 86_400, "TTL {ttl2}");
    let v2: Value = serde_json::from_slice(&kv2.value).unwrap();
    assert_eq!(v2["PublicIP"], W2_IP);
    assert_eq!(v2["BackendType"], "vxlan");
    assert_eq!(v2["BackendData"]["VNI"], 100);
    let mac2 = v2["BackendData"]["VtepMAC"].as_str().unwrap().to_string();

    // The VXLAN devices.
    for (ns, mac, ip, addr) in [
        (&w1, W1_MAC, W1_IP, "11.10.0.0"),
        (&w2, mac2.as_str(), W2_IP, gw2.as_str()),
    ] {
        let l = link(ns);
        assert_eq!(l["address"], mac, "{ns}: {l}");
        assert_eq!(l["mtu"], 1450);
        let info = &l["linkinfo"]["info_data"];
        assert_eq!(l["linkinfo"]["info_kind"], "vxlan");
        assert_eq!(info["id"], 100);
        assert_eq!(info["port"], 8472);
        assert_eq!(info["local"], ip);
        assert_eq!(info["link"], "eth0");
        assert_eq!(info["learning"], false);
        assert!(l["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
        let addrs = json(&["ip", "-n", ns, "-j", "-4", "addr", "show", "dev", "flannel.100"]);
        let a = &addrs[0]["addr_info"];
        assert_eq!(a.as_array().unwrap().len(), 1, "{addrs}");
        assert_eq!(a[0]["local"], addr);
        assert_eq!(a[0]["prefixlen"], 32);
    }

    // Each worker has the route, neighbour and fdb entry for the other.
    wait_for("w1's entries for w2", Duration::from_secs(10), || {
        has_peer(&w1, &net2, &mac2, W2_IP).then_some(())
    });
    wait_for("w2's entries for w1", Duration::from_secs(10), || {
        has_peer(&w2, "11.10.0.0/20", W1_MAC, W1_IP).then_some(())
    });

    // VXLAN works both ways.
    run(&["ip", "netns", "exec", &w1, "ping", "-c", "2", "-W", "2", &gw2]);
    run(&["ip", "netns", "exec", &w2, "ping", "-c", "2", "-W", "2", "11.10.0.0"]);

    // The agent's memory.
    for (role, idx) in [("w1", a1), ("w2", a2)] {
        let pid = lab.procs[idx].pid();
        let rss = status_kb(pid, "VmRSS").expect("agent running");
        let peak = status_kb(pid, "VmHWM").unwrap_or(0);
        println!("flanneld {role}: VmRSS {rss} kB (peak VmHWM {peak} kB)");
        assert!(rss < 64 * 1024, "agent RSS {rss} kB");
    }

    // A third host appears, changes its VTEP, and its lease expires.
    let net3 = "11.10.240.0/20";
    let key3 = format!("{PREFIX}/subnets/11.10.240.0-20");
    lab.etcd(|c| {
        c.put(&key3, lease_attrs("10.77.0.9", "0a:00:00:00:00:09").as_bytes(), 0)
            .map_err(|e| e.to_string())
    })
    .unwrap();
    wait_for("w1 adds the third host", Duration::from_secs(10), || {
        has_peer(&w1, net3, "0a:00:00:00:00:09", "10.77.0.9").then_some(())
    });
    lab.etcd(|c| {
        let lease = c.grant(2).map_err(|e| e.to_string())?;
        c.put(
            &key3,
            lease_attrs("10.77.0.10", "0a:00:00:00:00:0a").as_bytes(),
            lease.id,
        )
        .map_err(|e| e.to_string())
    })
    .unwrap();
    wait_for("w1 follows the change", Duration::from_secs(10), || {
        (has_peer(&w1, net3, "0a:00:00:00:00:0a", "10.77.0.10")
            && !fdb(&w1).contains(&("0a:00:00:00:00:09".into(), "10.77.0.9".into())))
        .then_some(())
    });
    wait_for("w1 drops the expired lease", Duration::from_secs(15), || {
        (!routes(&w1).iter().any(|r| r.0 == net3)
            && !neighbours(&w1).iter().any(|n| n.0 == "11.10.240.0")
            && !fdb(&w1).iter().any(|f| f.0 == "0a:00:00:00:00:0a"))
        .then_some(())
    });
    assert!(has_peer(&w1, &net2, &mac2, W2_IP), "w2's entries untouched");

    // A restart of worker 1's agent: SIGTERM is a clean exit; a lease deleted while it was
    // down leaves a stale route that the new agent removes; the device and its MAC stay.
    let net4 = "11.10.224.0/20";
    let key4 = format!("{PREFIX}/subnets/11.10.224.0-20");
    lab.etcd(|c| {
        c.put(&key4, lease_attrs("10.77.0.11", "0a:00:00:00:00:0b").as_bytes(), 0)
            .map_err(|e| e.to_string())
    })
    .unwrap();
    wait_for("w1 adds the fourth host", Duration::from_secs(10), || {
        has_peer(&w1, net4, "0a:00:00:00:00:0b", "10.77.0.11").then_some(())
    });
    let status = lab.procs[a1].stop(Duration::from_secs(3));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", lab.procs[a1].log_text());
    lab.etcd(|c| c.delete(&key4).map_err(|e| e.to_string())).unwrap();

    // etcd restarts meanwhile: worker 2's watch breaks and it re-lists.
    assert!(
        lab.procs[etcd].stop(Duration::from_secs(5)).is_some(),
        "etcd stops on SIGTERM"
    );
    let etcd = lab.spawn("etcd-restarted", &e1, &member.argv());
    wait_for("etcd again", Duration::from_secs(30), || {
        lab.etcd(|c| c.get("/health").map_err(|e| e.to_string())).ok()
    });
    assert!(lab.procs[etcd].child.try_wait().unwrap().is_none(), "etcd exited");
    let a1 = lab.agent("w1", W1_IP);
    wait_for("w1's agent drops the stale route", Duration::from_secs(20), || {
        (!routes(&w1).iter().any(|r| r.0 == net4)).then_some(())
    });
    assert_eq!(link(&w1)["address"], W1_MAC, "stable VtepMAC");
    // The restarted agent reconciles from a fresh listing; give it time under load.
    wait_for("w1 keeps (or restores) w2's entries", Duration::from_secs(10), || {
        has_peer(&w1, &net2, &mac2, W2_IP).then_some(())
    });
    let net5 = "11.10.208.0/20";
    lab.etcd(|c| {
        c.put(
            &format!("{PREFIX}/subnets/11.10.208.0-20"),
            lease_attrs("10.77.0.12", "0a:00:00:00:00:0c").as_bytes(),
            0,
        )
        .map_err(|e| e.to_string())
    })
    .unwrap();
    for ns in [&w1, &w2] {
        wait_for(&format!("{ns} adds the fifth host"), Duration::from_secs(20), || {
            has_peer(ns, net5, "0a:00:00:00:00:0c", "10.77.0.12").then_some(())
        });
    }
    run(&["ip", "netns", "exec", &w1, "ping", "-c", "1", "-W", "2", &gw2]);

    // Deleting worker 2's lease: worker 1 removes its entries, worker 2's agent shuts down.
    lab.etcd(|c| c.delete(&key2).map_err(|e| e.to_string())).unwrap();
    wait_for(
        "w1 removes w2's route, neighbour and fdb entry",
        Duration::from_secs(10),
        || {
            (!routes(&w1).iter().any(|r| r.0 == net2)
                && !neighbours(&w1).iter().any(|n| n.0 == gw2)
                && !fdb(&w1).iter().any(|f| f.0 == mac2))
            .then_some(())
        },
    );
    let code = wait_for("w2's agent to exit", Duration::from_secs(10), || {
        lab.procs[a2].child.try_wait().unwrap().map(|s| s.code())
    });
    assert_eq!(code, Some(0), "{}", lab.procs[a2].log_text());
    assert!(lab.procs[a2].log_text().contains("Lease has been revoked"));

    // SIGTERM: a clean exit.
    let status = lab.procs[a1].stop(Duration::from_secs(3));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", lab.procs[a1].log_text());
    let first = lab
        .procs
        .iter()
        .find(|p| p.name.starts_with("flanneld-w1-"))
        .unwrap()
        .log_text();
    for line in [
        "Found lease (ip: 11.10.0.0/20",
        "Acquired lease 11.10.0.0/20 (reservation)",
        "Wrote subnet file to",
        &format!("Subnet added: {net2} via {W2_IP}"),
        "Subnet changed: 11.10.240.0/20 via 10.77.0.10",
        "Subnet removed: 11.10.240.0/20",
        "Exiting cleanly...",
    ] {
        assert!(first.contains(line), "w1 log lacks {line:?}:\n{first}");
    }
    let second = lab.procs[a1].log_text();
    for line in [
        "VXLAN device already exists, reusing flannel.100",
        "Acquired lease 11.10.0.0/20 (reservation) VtepMAC 0a:26:bc:47:90:98",
        "Removing stale route to 11.10.224.0/20",
        &format!("Subnet removed: {net2}"),
        "Exiting cleanly...",
    ] {
        assert!(second.contains(line), "restarted w1 log lacks {line:?}:\n{second}");
    }
    let log2 = lab.procs[a2].log_text();
    assert!(log2.contains("Allocated lease (ip: "), "{log2}");
    assert!(log2.contains("re-listing"), "w2 noticed the etcd restart:\n{log2}");

    // Teardown leaves nothing behind.
    let namespaces = lab.namespaces.clone();
    lab.teardown();
    let listed = run(&["ip", "netns", "list"]);
    for ns in &namespaces {
        assert!(
            !listed.lines().any(|l| l.split_whitespace().next() == Some(ns.as_str())),
            "{ns} left behind"
        );
    }
    for p in lab.procs.iter_mut() {
        assert!(p.child.try_wait().unwrap().is_some(), "{} still running", p.name);
    }
}
