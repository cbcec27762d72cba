//! Live test of the seed's cross-cluster service (issue 5): the default topology comes up
//! with its routers (the built-in `knetsim router` when no skrouterd is on PATH), and C1/c2
//! reaches C0/c4's python http.server at 10.0.0.8:1028 through both routers. Root only;
//! `SKIP: reason` without root or a needed program, unless `CI` is set (then it fails);
//! a drop guard runs `knetsim down`.

mod common;

use common::{installed_or_built_in, knetsim, live_ready, text, Down};

#[test]
fn c1_reaches_c0s_service_through_both_routers() {
    const T: &str = "c1_reaches_c0s_service_through_both_routers";
    if !live_ready(T, &["ip", "tc", "nft", "etcd", "sysctl", "curl", "python3"])
        || !installed_or_built_in(T, "flanneld", "flanneld")
    {
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
