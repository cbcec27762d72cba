//! Live test of the seed's cross-cluster service (issue 5): the default topology comes up
//! with its routers (the built-in `knetsim router` when no skrouterd is on PATH), and C1/c2
//! reaches C0/c4's python http.server at 10.0.0.8:1028 through both routers. Root only;
//! `SKIP: reason` without root or a needed program, unless `CI` is set (then it fails);
//! a drop guard runs `knetsim down`.

mod common;

use common::{cni_plugins_installed, knetsim, nix_is_root, on_path, skip, subcommands, text, Down};

#[test]
fn c1_reaches_c0s_service_through_both_routers() {
    const T: &str = "c1_reaches_c0s_service_through_both_routers";
    if !nix_is_root() {
        skip(T, "needs root");
        return;
    }
    for p in ["ip", "tc", "nft", "etcd", "sysctl", "curl", "python3"] {
        if !on_path(p) {
            skip(T, &format!("`{p}` is not installed"));
            return;
        }
    }
    let subs = subcommands();
    if !subs.iter().any(|s| s == "cni") || !cni_plugins_installed() {
        skip(T, "CNI plugins are not installed");
        return;
    }
    if !on_path("flanneld") && !subs.iter().any(|s| s == "flanneld") {
        skip(T, "no flanneld");
        return;
    }
    let name = format!("r{}", std::process::id());
    let _down = Down(name.clone());
    let up = knetsim(&["up", "--name", &name]);
    assert!(up.status.success(), "up: {}", text(&up));
    let mut last = String::new();
    for _ in 0..20 {
        let out = knetsim(&[
            "exec",
            "--name",
            &name,
            "C1/c2",
            "--",
            "curl",
            "-s",
            "-m",
            "5",
            "http://10.0.0.8:1028",
        ]);
        last = text(&out);
        if out.status.success() && last.contains("Directory listing") {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    panic!("no page through the routers: {last}");
}
