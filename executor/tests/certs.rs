//! `generate_certs` of the Linux system, in a tempdir (no root, no namespaces): a CA and a
//! certificate per router, keys mode 0600, and two built-in routers on 127.0.0.1 that
//! link over TLS with exactly those files (the rcgen output is what rustls accepts).

use knetsim_compiler::plan::GenerateCerts;
use knetsim_executor::system::linux::LinuxSystem;
use knetsim_executor::system::System;
use knetsim_router::{Config, Router};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
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

#[test]
fn generated_certificates_link_two_routers_over_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let sys = LinuxSystem::new();
    let ca = tmp.path().join("skupper/certs");
    let created = sys
        .generate_certs(&GenerateCerts {
            dir: ca.display().to_string(),
            common_name: "test CA".into(),
            ip_sans: vec![],
            ca_dir: None,
        })
        .unwrap();
    assert!(created.contains(&ca.join("ca.key")), "{created:?}");
    assert_eq!(mode(&ca.join("ca.key")), 0o600);
    for c in ["C0", "C1"] {
        sys.generate_certs(&GenerateCerts {
            dir: ca.join(c).display().to_string(),
            common_name: c.to_lowercase(),
            ip_sans: vec!["127.0.0.1".into()],
            ca_dir: Some(ca.display().to_string()),
        })
        .unwrap();
        assert_eq!(mode(&ca.join(c).join("tls.key")), 0o600);
        assert_eq!(
            std::fs::read_to_string(ca.join(c).join("ca.crt")).unwrap(),
            std::fs::read_to_string(ca.join("ca.crt")).unwrap()
        );
    }
    let start =
        |entities: &[String]| Router::start(Config::parse(&format!("[{}]", entities.join(","))).unwrap()).unwrap();
    let a = start(&[
        r#"["router", {"id": "c0", "mode": "interior"}]"#.into(),
        profile(&ca.join("C0")),
        r#"["listener", {"name": "ir", "role": "inter-router", "host": "127.0.0.1", "port": 0, "sslProfile": "inter-router-tls"}]"#.into(),
    ]);
    let port = a.bound("ir").unwrap().port();
    let b = start(&[
        r#"["router", {"id": "c1", "mode": "interior"}]"#.into(),
        profile(&ca.join("C1")),
        format!(
            r#"["connector", {{"name": "to-c0", "role": "inter-router", "host": "127.0.0.1", "port": "{port}", "sslProfile": "inter-router-tls"}}]"#
        ),
    ]);
    let t0 = Instant::now();
    while b.snapshot().links.is_empty() || a.snapshot().links.is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(5), "no TLS link: {:?}", b.snapshot());
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(b.snapshot().links[0].0, "c0");
}
