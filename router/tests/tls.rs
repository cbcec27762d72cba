//! TLS on inter-router links, on 127.0.0.1 with certificates made by rcgen in a tempdir:
//! an echo through two routers over a TLS link, a connector trusting another CA never
//! links (and the tcpListener stays closed), the bytes on the wire are TLS records, and a
//! profile whose file is missing is an error naming the sslProfile and the attribute.

mod common;

use common::{echo_concurrently, echo_once, pattern, wait_accepting};
use knetsim_router::{Config, Router};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType};
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

/// Ports apart from loopback.rs's.
fn free_port() -> u16 {
    common::free_port_from(29000 + (std::process::id() % 300) * 8, 3000)
}

fn echo_server() -> SocketAddr {
    common::server(None)
}

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(dir: &Path, cn: &str) -> Ca {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("ca.crt"), cert.pem()).unwrap();
    Ca { cert, key }
}

/// tls.crt and tls.key for `cn` (IP SAN 127.0.0.1) signed by `ca`, and ca.crt of `trust`.
fn issue(dir: &Path, cn: &str, ca: &Ca, trust: &Ca) -> PathBuf {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.subject_alt_names = vec![SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST))];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("ca.crt"), trust.cert.pem()).unwrap();
    dir.to_path_buf()
}

fn profile(dir: &Path) -> String {
    let f = |n: &str| dir.join(n).display().to_string();
    format!(
        r#"["sslProfile", {{"name": "inter-router-tls", "caCertFile": "{}", "certFile": "{}", "privateKeyFile": "{}"}}]"#,
        f("ca.crt"),
        f("tls.crt"),
        f("tls.key")
    )
}

fn start(entities: &[String]) -> std::io::Result<Router> {
    let cfg = Config::parse(&format!("[{}]", entities.join(",\n"))).unwrap();
    assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    Router::start(cfg)
}

/// Router "a": a TLS inter-router listener and a tcpConnector to the echo server.
fn router_a(dir: &Path, echo: SocketAddr) -> Router {
    start(&[
        r#"["router", {"id": "a", "mode": "interior"}]"#.to_string(),
        profile(dir),
        r#"["listener", {"name": "interior-listener", "role": "inter-router", "host": "127.0.0.1", "port": 0, "sslProfile": "inter-router-tls"}]"#.to_string(),
        format!(
            r#"["tcpConnector", {{"name": "echo", "host": "127.0.0.1", "port": "{}", "address": "echo"}}]"#,
            echo.port()
        ),
    ])
    .unwrap()
}

/// Router "b": a TLS connector to `port` and a tcpListener for "echo" on `svc_port`.
fn router_b(dir: &Path, port: u16, svc_port: u16) -> Router {
    start(&[
        r#"["router", {"id": "b", "mode": "interior"}]"#.to_string(),
        profile(dir),
        format!(
            r#"["connector", {{"name": "to-a", "role": "inter-router", "host": "127.0.0.1", "port": "{port}", "sslProfile": "inter-router-tls"}}]"#
        ),
        format!(r#"["tcpListener", {{"name": "echo", "host": "127.0.0.1", "port": "{svc_port}", "address": "echo"}}]"#),
    ])
    .unwrap()
}

#[test]
fn echo_through_two_routers_over_a_tls_link() {
    let tmp = tempfile::tempdir().unwrap();
    let root = ca(&tmp.path().join("ca"), "knetsim test CA");
    let da = issue(&tmp.path().join("a"), "a", &root, &root);
    let db = issue(&tmp.path().join("b"), "b", &root, &root);
    let a = router_a(&da, echo_server());
    let svc_port = free_port();
    let b = router_b(&db, a.bound("interior-listener").unwrap().port(), svc_port);
    wait_accepting(svc_port, Duration::from_secs(5));
    assert_eq!(echo_once(svc_port, b"hello over TLS"), b"hello over TLS");
    // Bulk both ways at once, several streams over the one TLS link.
    echo_concurrently(svc_port, (0..4).map(|i| pattern(i, 400_000)).collect());
    assert_eq!(a.snapshot().links.len(), 1);
    assert_eq!(b.snapshot().links[0].0, "a");
}

#[test]
fn a_connector_trusting_another_ca_never_links() {
    let tmp = tempfile::tempdir().unwrap();
    let root = ca(&tmp.path().join("ca"), "knetsim test CA");
    let other = ca(&tmp.path().join("other"), "another CA");
    let da = issue(&tmp.path().join("a"), "a", &root, &root);
    // b's own certificate is fine, but it trusts the wrong CA: a's certificate fails.
    let db = issue(&tmp.path().join("b"), "b", &root, &other);
    let a = router_a(&da, echo_server());
    let svc_port = free_port();
    let b = router_b(&db, a.bound("interior-listener").unwrap().port(), svc_port);
    // And c presents a certificate of the wrong CA: a refuses it.
    let dc = issue(&tmp.path().join("c"), "c", &other, &root);
    let svc_port_c = free_port();
    let c = start(&[
        r#"["router", {"id": "c", "mode": "interior"}]"#.to_string(),
        profile(&dc),
        format!(
            r#"["connector", {{"name": "to-a", "role": "inter-router", "host": "127.0.0.1", "port": "{}", "sslProfile": "inter-router-tls"}}]"#,
            a.bound("interior-listener").unwrap().port()
        ),
        format!(r#"["tcpListener", {{"name": "echo", "host": "127.0.0.1", "port": "{svc_port_c}", "address": "echo"}}]"#),
    ])
    .unwrap();
    thread::sleep(Duration::from_millis(1500));
    assert!(a.snapshot().links.is_empty(), "{:?}", a.snapshot());
    assert!(b.snapshot().links.is_empty(), "{:?}", b.snapshot());
    assert!(c.snapshot().links.is_empty(), "{:?}", c.snapshot());
    assert!(
        TcpStream::connect(("127.0.0.1", svc_port)).is_err(),
        "b's tcpListener opened"
    );
    assert!(
        TcpStream::connect(("127.0.0.1", svc_port_c)).is_err(),
        "c's tcpListener opened"
    );
}

/// What a connector sends first on the wire: 0x16 (a TLS handshake record) with an
/// sslProfile, the AMQP protocol header without.
fn first_byte_on_the_wire(tls: bool) -> u8 {
    let tmp = tempfile::tempdir().unwrap();
    let root = ca(&tmp.path().join("ca"), "knetsim test CA");
    let db = issue(&tmp.path().join("b"), "b", &root, &root);
    let peer = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = peer.local_addr().unwrap().port();
    let ssl = if tls {
        r#", "sslProfile": "inter-router-tls""#
    } else {
        ""
    };
    let _b = start(&[
        r#"["router", {"id": "b", "mode": "interior"}]"#.to_string(),
        profile(&db),
        format!(
            r#"["connector", {{"name": "to-a", "role": "inter-router", "host": "127.0.0.1", "port": "{port}"{ssl}}}]"#
        ),
    ])
    .unwrap();
    let (mut s, _) = peer.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).unwrap();
    b[0]
}

#[test]
fn the_bytes_on_the_wire_are_tls_when_the_link_has_a_profile() {
    assert_eq!(first_byte_on_the_wire(true), 0x16);
    assert_eq!(first_byte_on_the_wire(false), b'A');
}

#[test]
fn a_missing_certificate_file_names_the_profile_and_the_attribute() {
    let tmp = tempfile::tempdir().unwrap();
    let root = ca(&tmp.path().join("ca"), "knetsim test CA");
    let da = issue(&tmp.path().join("a"), "a", &root, &root);
    std::fs::remove_file(da.join("tls.crt")).unwrap();
    let err = start(&[
        r#"["router", {"id": "a", "mode": "interior"}]"#.to_string(),
        profile(&da),
        r#"["listener", {"name": "l", "role": "inter-router", "host": "127.0.0.1", "port": 0, "sslProfile": "inter-router-tls"}]"#.to_string(),
    ])
    .err()
    .expect("a profile without its certificate must not start");
    let m = err.to_string();
    assert!(
        m.contains("sslProfile 'inter-router-tls'") && m.contains("'certFile'"),
        "{m}"
    );
    std::fs::write(da.join("tls.crt"), "not a certificate").unwrap();
    let err = start(&[
        r#"["router", {"id": "a", "mode": "interior"}]"#.to_string(),
        profile(&da),
        r#"["connector", {"name": "c", "role": "inter-router", "host": "127.0.0.1", "port": 1, "sslProfile": "inter-router-tls"}]"#.to_string(),
    ])
    .err()
    .expect("an invalid certificate must not start");
    let m = err.to_string();
    assert!(
        m.contains("sslProfile 'inter-router-tls'") && m.contains("'certFile'"),
        "{m}"
    );
}
