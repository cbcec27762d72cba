//! Live test of a TLS inter-router link (issue 5): two clusters whose link has
//! `tls = true`; `up` generates one CA and a certificate per router in the state dir,
//! the routers link over TLS, and a pod of C1 reaches C0's pod through both routers;
//! `status --json` shows the link up. Root only; `SKIP: reason` without root or a needed
//! program, unless `CI` is set (then it fails); the emulation is named `t<pid>tls` and a
//! drop guard runs `knetsim down`. Every probe runs inside the emulation's namespaces.

mod common;

use common::{installed_or_built_in, knetsim, live_ready, ok, on_path, skip, text, Down};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

const TOPOLOGY: &str = r#"
[[clusters]]
name = "C0"
etcd = 1
workers = 2
pods = [{ name = "web1", worker = "w2", command = ["knetsim", "serve", "--text", "hello over tls", "--port", "8080"], ports = [8080] }]

[[clusters]]
name = "C1"
etcd = 1
workers = 2
pods = [{ name = "client", worker = "w2" }]

[interconnect]
links = [{ from = "C1", to = "C0", cost = 1, tls = true }]

[[interconnect.expose]]
name = "web"
cluster = "C0"
pod = "web1"
port = 8080
listen = [{ cluster = "C1", port = 1028 }]
"#;

#[test]
fn a_tls_link_carries_the_cross_cluster_service() {
    const T: &str = "a_tls_link_carries_the_cross_cluster_service";
    if !live_ready(T, &["ip", "tc", "nft", "etcd", "sysctl", "curl"])
        || !installed_or_built_in(T, "flanneld", "flanneld")
    {
        return;
    }
    if on_path("skrouterd") {
        skip(T, "a real skrouterd is on PATH: this tests the built-in router");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let topo = tmp.path().join("tls.toml");
    std::fs::write(&topo, TOPOLOGY).unwrap();
    let name = format!("t{}tls", std::process::id());
    let _down = Down(name.clone());
    let up = knetsim(&["up", "--name", &name, topo.to_str().unwrap()]);
    assert!(up.status.success(), "up: {}", text(&up));

    let state = format!("/tmp/knetsim-{name}");
    let certs = Path::new(&state).join("skupper/certs");
    for f in [
        "ca.crt",
        "ca.key",
        "C0/tls.crt",
        "C0/tls.key",
        "C0/ca.crt",
        "C1/tls.key",
    ] {
        assert!(certs.join(f).is_file(), "{f} not generated in {}", certs.display());
    }
    for k in ["ca.key", "C0/tls.key", "C1/tls.key"] {
        let mode = std::fs::metadata(certs.join(k)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{k}");
    }
    let inv: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(Path::new(&state).join("bundle/inventory.json")).unwrap())
            .unwrap();
    let c1w1 = inv["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["workers"].as_array().unwrap())
        .find(|w| w["host"]["name"] == "C1w1")
        .and_then(|w| w["host"]["ip"].as_str())
        .expect("C1w1 in the inventory")
        .to_string();

    let url = format!("http://{c1w1}:1028/");
    let mut last = String::new();
    let mut reached = false;
    for _ in 0..40 {
        let out = knetsim(&[
            "exec",
            "--name",
            &name,
            "C1/client",
            "--",
            "curl",
            "-s",
            "-m",
            "5",
            &url,
        ]);
        last = text(&out);
        if out.status.success() && last.contains("hello over tls") {
            reached = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(reached, "no page through the TLS link at {url}: {last}");

    let log = std::fs::read_to_string(Path::new(&state).join("skupper/C0.log")).unwrap_or_default();
    assert!(
        log.contains("TLS"),
        "C0's router log does not mention its TLS listener:\n{log}"
    );

    let status: serde_json::Value = serde_json::from_str(&ok(&["status", "--name", &name, "--json"])).unwrap();
    let routers = status["routers"].as_array().expect("routers in status --json");
    assert_eq!(routers.len(), 2, "{routers:?}");
    let c1 = routers.iter().find(|r| r["id"] == "c1").expect("router c1");
    let links = c1["links"].as_array().unwrap();
    assert!(
        links.iter().any(|l| l["peer"] == "c0" && l["up"] == true),
        "c1's link to c0 not up: {c1}"
    );
    assert!(
        c1["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["address"] == "web" && a["reachable"] == true),
        "{c1}"
    );
    let text_status = ok(&["status", "--name", &name]);
    assert!(text_status.contains("ROUTER"), "{text_status}");
}
