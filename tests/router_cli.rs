//! `knetsim router -c FILE` as processes on 127.0.0.1: a bad attribute is a clear error;
//! two linked routers carry an echo and answer /healthz; with root and tshark, the link
//! decodes as AMQP with the service address on attach. Loopback only, bounded waits,
//! child processes killed by PID on drop.

mod common;

use common::{nix_is_root, on_path, skip};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_knetsim");

/// Kills its child by PID (SIGTERM, then SIGKILL) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = self.0.id() as i32;
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(2) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Free loopback ports; calls within this process never hand out the same port twice
/// (the tests run in parallel threads).
fn ports(n: u16) -> Vec<u16> {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let base = 30000 + (std::process::id() % 400) as u16 * 20;
    let mut out = Vec::new();
    while out.len() < n as usize {
        let p = base + NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % 4000;
        if TcpListener::bind(("127.0.0.1", p)).is_ok() {
            out.push(p);
        }
    }
    out
}

fn spawn_router(dir: &Path, name: &str, json: &str) -> Proc {
    let conf = dir.join(format!("{name}.json"));
    std::fs::write(&conf, json).unwrap();
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    Proc(
        Command::new(BIN)
            .args(["router", "-c"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

fn echo_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            thread::spawn(move || {
                let mut buf = [0u8; 16384];
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 || c.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

fn wait_accepting(port: u16) {
    let t0 = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t0.elapsed() < Duration::from_secs(10), "port {port} never accepted");
        thread::sleep(Duration::from_millis(20));
    }
}

fn request(port: u16, req: &[u8]) -> Vec<u8> {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(req).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = Vec::new();
    c.read_to_end(&mut out).unwrap();
    out
}

#[test]
fn a_bad_attribute_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("bad.json");
    std::fs::write(
        &conf,
        r#"[["router", {"id": "r"}], ["listener", {"name": "interior", "role": "inter-router", "port": "many"}]]"#,
    )
    .unwrap();
    let out = Command::new(BIN).args(["router", "-c"]).arg(&conf).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listener 'interior'") && err.contains("'port'"), "{err}");
}

fn pair_configs(p: &[u16], echo: u16) -> (String, String) {
    let a = format!(
        r#"[["router", {{"id": "c0", "mode": "interior", "colour": "blue"}}],
 ["listener", {{"name": "interior-listener", "role": "inter-router", "host": "127.0.0.1", "port": {}}}],
 ["listener", {{"name": "@http", "host": "127.0.0.1", "port": {}, "http": true, "healthz": true, "metrics": true}}],
 ["tcpConnector", {{"name": "svc1", "host": "127.0.0.1", "port": "{echo}", "address": "svc1", "siteId": "c0"}}]]"#,
        p[0], p[1]
    );
    let b = format!(
        r#"[["router", {{"id": "c1", "mode": "interior"}}],
 ["listener", {{"name": "@http", "host": "127.0.0.1", "port": {}, "http": true}}],
 ["connector", {{"name": "link-c0", "role": "inter-router", "host": "127.0.0.1", "port": "{}", "cost": 1}}],
 ["tcpListener", {{"name": "svc1:1028", "host": "127.0.0.1", "port": "{}", "address": "svc1", "siteId": "c1"}}]]"#,
        p[2], p[0], p[3]
    );
    (a, b)
}

#[test]
fn two_router_processes_carry_streams_and_answer_healthz() {
    let dir = tempfile::tempdir().unwrap();
    let p = ports(4);
    let echo = echo_server();
    let (a, b) = pair_configs(&p, echo);
    let _a = spawn_router(dir.path(), "c0", &a);
    let _b = spawn_router(dir.path(), "c1", &b);
    wait_accepting(p[3]);
    let handles: Vec<_> = (0..4u8)
        .map(|i| {
            let port = p[3];
            thread::spawn(move || {
                let data = vec![i; 100_000];
                assert_eq!(request(port, &data), data);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let health = String::from_utf8(request(p[1], b"GET /healthz HTTP/1.0\r\n\r\n")).unwrap();
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let metrics = String::from_utf8(request(p[2], b"GET /metrics HTTP/1.0\r\n\r\n")).unwrap();
    assert!(metrics.contains("skrouter_links{router=\"c1\"} 1"), "{metrics}");
    let log = std::fs::read_to_string(dir.path().join("c0.log")).unwrap();
    assert!(log.contains("unknown attribute 'colour'"), "{log}");
}

#[test]
fn the_link_decodes_as_amqp_with_the_address_on_attach() {
    const T: &str = "the_link_decodes_as_amqp_with_the_address_on_attach";
    if !nix_is_root() {
        skip(T, "needs root to capture on lo");
        return;
    }
    if !on_path("tshark") {
        skip(T, "`tshark` is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = ports(4);
    let echo = echo_server();
    let (a, b) = pair_configs(&p, echo);
    let pcap = dir.path().join("link.pcapng");
    let filter = format!("tcp port {}", p[0]);
    let cap = Proc(
        Command::new("tshark")
            .args(["-i", "lo", "-f", &filter, "-a", "duration:20", "-w"])
            .arg(&pcap)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Wait for the capture to run (tshark creates the file once capturing).
    let t0 = Instant::now();
    while !pcap.exists() && t0.elapsed() < Duration::from_secs(10) {
        thread::sleep(Duration::from_millis(50));
    }
    thread::sleep(Duration::from_millis(300));
    let _a = spawn_router(dir.path(), "c0", &a);
    let _b = spawn_router(dir.path(), "c1", &b);
    wait_accepting(p[3]);
    assert_eq!(request(p[3], b"ping"), b"ping");
    thread::sleep(Duration::from_millis(300));
    drop(cap);
    let out = Command::new("tshark")
        .arg("-r")
        .arg(&pcap)
        .args(["-d", &format!("tcp.port=={},amqp", p[0]), "-V"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Protocol-Header 1-0-0") || text.contains("Advanced Message Queuing Protocol"));
    assert!(text.contains("Performative: attach"), "no attach decoded");
    assert!(text.contains("Address: svc1"), "service address not on attach");
    assert!(text.contains("Performative: transfer"));
    assert!(!text.to_lowercase().contains("malformed"), "malformed frames");
}
