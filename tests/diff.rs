//! `knetsim diff`: each fixture in tests/fixtures/ is topologies/default.toml with one
//! change, and changes exactly the artifacts listed here.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn knetsim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_knetsim"))
        .current_dir(root())
        .args(args)
        .output()
        .expect("run knetsim")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn describe(args: &[&str], out: &Output) -> String {
    format!(
        "knetsim {}: exit {:?}\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        out.status.code(),
        stdout(out),
        String::from_utf8_lossy(&out.stderr)
    )
}

const DEFAULT: &str = "topologies/default.toml";

/// `--stat` lines are `<kind>  <path>`; returns the (kind, path) pairs.
fn stat(a: &str, b: &str) -> BTreeSet<(String, String)> {
    let args = ["diff", a, b, "--stat"];
    let out = knetsim(&args);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&args, &out));
    stdout(&out)
        .lines()
        .map(|l| {
            let mut parts = l.split_whitespace();
            let kind = parts.next().expect("change kind").to_string();
            let path = parts.next().expect("changed path").to_string();
            assert!(parts.next().is_none(), "unexpected --stat line `{l}`");
            (kind, path)
        })
        .collect()
}

fn modified(paths: &[&str]) -> BTreeSet<(String, String)> {
    paths.iter().map(|p| ("modified".to_string(), p.to_string())).collect()
}

/// The changed paths of the unified diff, from its `--- a/` and `+++ b/` headers.
fn unified_headers(a: &str, b: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let args = ["diff", a, b];
    let out = knetsim(&args);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&args, &out));
    let text = stdout(&out);
    let old = text
        .lines()
        .filter_map(|l| l.strip_prefix("--- a/"))
        .map(String::from)
        .collect();
    let new = text
        .lines()
        .filter_map(|l| l.strip_prefix("+++ b/"))
        .map(String::from)
        .collect();
    (old, new)
}

fn check_fixture(fixture: &str, expected: &[&str]) {
    let b = format!("tests/fixtures/{fixture}.toml");
    assert_eq!(stat(DEFAULT, &b), modified(expected), "--stat of {b}");
    let expected: BTreeSet<String> = expected.iter().map(|p| p.to_string()).collect();
    let (old, new) = unified_headers(DEFAULT, &b);
    assert_eq!(old, expected, "`--- a/` headers of the diff against {b}");
    assert_eq!(new, expected, "`+++ b/` headers of the diff against {b}");
}

#[test]
fn extra_pod_changes_only_inventory_and_plan() {
    check_fixture("extra-pod", &["inventory.json", "plan.json"]);
}

#[test]
fn extra_service_changes_the_cluster_rulesets() {
    check_fixture(
        "extra-service",
        &[
            "clusters/C1/workers/C1w1/kube-proxy.nft",
            "clusters/C1/workers/C1w2/kube-proxy.nft",
            "clusters/C1/workers/C1w3/kube-proxy.nft",
            "inventory.json",
        ],
    );
}

#[test]
fn ingress_port_changes_nginx_conf_and_the_readiness_probe() {
    check_fixture(
        "ingress-port",
        // The ingress checks still name port 8001, which is no longer the ingress.
        &[
            "checks.json",
            "clusters/C0/ingress/grp1/nginx.conf",
            "inventory.json",
            "plan.json",
        ],
    );
}

#[test]
fn subnet_len_renumbers_the_cluster_pods() {
    check_fixture(
        "subnet-len",
        &[
            // The pod-to-pod pings' addresses move.
            "checks.json",
            "clusters/C0/flannel-network-config.json",
            // tcpConnector to C0/c4, whose address moves.
            "clusters/C0/skupper/C0.json",
            "clusters/C0/workers/C0w1/kube-proxy.nft",
            "clusters/C0/workers/C0w1/subnet-reservation.json",
            "clusters/C0/workers/C0w2/kube-proxy.nft",
            "clusters/C0/workers/C0w2/subnet-reservation.json",
            "clusters/C0/workers/C0w3/kube-proxy.nft",
            "clusters/C0/workers/C0w3/subnet-reservation.json",
            "inventory.json",
            "plan.json",
        ],
    );
}

#[test]
fn unified_diff_shows_the_change() {
    let args = ["diff", DEFAULT, "tests/fixtures/ingress-port.toml"];
    let out = knetsim(&args);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&args, &out));
    let text = stdout(&out);
    assert!(text.contains("\n-    listen 8001;\n"), "{text}");
    assert!(text.contains("\n+    listen 8002;\n"), "{text}");
    assert!(text.contains("\n@@ "), "hunk headers: {text}");
}

#[test]
fn identical_inputs_exit_0_silently() {
    for extra in [&[][..], &["--stat"][..]] {
        let mut args = vec!["diff", DEFAULT, DEFAULT];
        args.extend_from_slice(extra);
        let out = knetsim(&args);
        assert_eq!(out.status.code(), Some(0), "{}", describe(&args, &out));
        assert!(out.stdout.is_empty(), "{}", describe(&args, &out));
    }
}

#[test]
fn missing_input_exits_2() {
    for args in [
        ["diff", DEFAULT, "tests/fixtures/does-not-exist.toml"],
        ["diff", "tests/fixtures/does-not-exist.toml", DEFAULT],
    ] {
        let out = knetsim(&args);
        assert_eq!(out.status.code(), Some(2), "{}", describe(&args, &out));
        assert!(out.stdout.is_empty(), "{}", describe(&args, &out));
        assert!(
            !out.stderr.is_empty(),
            "an error is reported: {}",
            describe(&args, &out)
        );
    }
}

fn compile_to(topology: &str, dir: &Path) {
    let d = dir.to_str().expect("utf-8 temp path");
    let args = ["compile", topology, "-o", d];
    let out = knetsim(&args);
    assert!(out.status.success(), "{}", describe(&args, &out));
}

#[test]
fn bundle_dir_and_topology_file_compare() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("default-bundle");
    compile_to(DEFAULT, &bundle);
    let b = bundle.to_str().unwrap();

    for args in [["diff", b, DEFAULT], ["diff", DEFAULT, b]] {
        let out = knetsim(&args);
        assert_eq!(out.status.code(), Some(0), "{}", describe(&args, &out));
        assert!(out.stdout.is_empty(), "{}", describe(&args, &out));
    }
    assert_eq!(
        stat(b, "tests/fixtures/extra-pod.toml"),
        modified(&["inventory.json", "plan.json"])
    );

    // Two bundle directories.
    let other = tmp.path().join("port-bundle");
    compile_to("tests/fixtures/ingress-port.toml", &other);
    assert_eq!(
        stat(b, other.to_str().unwrap()),
        modified(&[
            "checks.json",
            "clusters/C0/ingress/grp1/nginx.conf",
            "inventory.json",
            "plan.json"
        ])
    );

    // A directory that is not a bundle is an error, not "everything removed".
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let args = ["diff", b, empty.to_str().unwrap()];
    let out = knetsim(&args);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&args, &out));
}

#[test]
fn added_and_removed_artifacts_are_reported() {
    // single.toml has no ingress and no routers: going from it to default adds files.
    let args = ["diff", "topologies/single.toml", DEFAULT, "--stat"];
    let out = knetsim(&args);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&args, &out));
    let text = stdout(&out);
    assert!(
        text.lines().any(|l| l
            .split_whitespace()
            .eq(["added", "clusters/C0/ingress/grp1/nginx.conf"])),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().eq(["modified", "inventory.json"])),
        "{text}"
    );

    let args = ["diff", DEFAULT, "topologies/single.toml"];
    let out = knetsim(&args);
    let text = stdout(&out);
    assert!(
        text.contains("--- a/clusters/C1/skupper/C1.json\n+++ /dev/null\n"),
        "removed file diffs to /dev/null: {}",
        describe(&args, &out)
    );
}
