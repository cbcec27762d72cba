//! Live tests of the topology's `[[checks]]` with deliberately wrong expectations:
//! `knetsim up` runs them, reports the failures in its exit code and leaves the
//! emulation up; `knetsim test` prints them failing and exits 1, and a right check
//! alone passes; deleting the pod they name turns them around, removing it drops
//! them. (The default topology's checks all passing is tested in
//! tests/live_default.rs, on an emulation that test brings up anyway.)
//!
//! Root only; `SKIP: reason` without root or a needed program, unless `CI` is set.
//! The emulation has a unique `--name` and a drop guard running `knetsim down`.

mod common;

use common::{assert_nothing_left, knetsim, live_ready, ok, text, Down};
use std::process::Output;

const PROGRAMS: &[&str] = &["ip", "tc", "nft", "etcd", "sysctl", "ping", "curl"];

/// One cluster, a web pod on w2; one right check and two wrong ones.
const TOPOLOGY: &str = r#"
[[clusters]]
name = "C0"
etcd = 1
workers = 2
pods = [
  { name = "c1", worker = "w1" },
  { name = "web", worker = "w2", command = ["knetsim", "serve", "--text", "hello-web", "--port", "8080"], ports = [8080] },
]

[[checks]]
name = "web answers"
from = "C0/c1"
http = "http://web.C0:8080/"
body = "hello-web"

[[checks]]
name = "wrong body"
from = "C0w1"
http = "http://web.C0:8080/"
body = "goodbye"
tries = 2

[[checks]]
name = "ping expected to fail"
from = "C0/c1"
ping = "C0/web"
expect = "failure"
"#;

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The table row of a check (its line of the output).
fn row<'a>(table: &'a str, check: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.starts_with(check))
        .unwrap_or_else(|| panic!("no row for `{check}` in:\n{table}"))
}

#[test]
fn wrong_checks_fail_and_the_emulation_stays_up() {
    if !live_ready("wrong_checks_fail_and_the_emulation_stays_up", PROGRAMS) {
        return;
    }
    let name = format!("k{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let topo = dir.path().join("checks.toml");
    std::fs::write(&topo, TOPOLOGY).unwrap();
    let topo = topo.to_str().unwrap();
    let _down = Down(name.clone());

    // `up` runs the checks: two fail, so it exits 1, but nothing is torn down.
    let up = knetsim(&["up", "--name", &name, topo]);
    let table = stdout(&up);
    assert_eq!(up.status.code(), Some(1), "{}", text(&up));
    assert!(table.contains("checks: 1 passed, 2 failed"), "{}", text(&up));
    assert!(
        String::from_utf8_lossy(&up.stderr).contains("some checks failed"),
        "{}",
        text(&up)
    );
    let status = knetsim(&["status", "--name", &name]);
    assert!(
        status.status.success(),
        "still up after failing checks: {}",
        text(&status)
    );

    // `test` gives the same verdicts, with what it saw.
    let out = knetsim(&["test", "--name", &name, "--settle", "1"]);
    let table = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        table.starts_with("CHECK") && table.contains("RESULT"),
        "a table with a header:\n{table}"
    );
    let web = row(&table, "web answers");
    assert!(
        web.contains(" pass ") && web.contains("1/1 bodies contain \"hello-web\""),
        "{web}"
    );
    let body = row(&table, "wrong body");
    assert!(
        body.contains(" FAIL ") && body.contains("lacks \"goodbye\": \"hello-web\""),
        "{body}"
    );
    let ping = row(&table, "ping expected to fail");
    assert!(
        ping.contains(" failure ") && ping.contains(" FAIL ") && ping.contains("replies, 0% loss"),
        "{ping}"
    );
    assert!(table.contains("checks: 1 passed, 2 failed"), "{table}");

    // The same as JSON, for tools.
    let out = knetsim(&["test", "--name", &name, "--settle", "0", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    assert_eq!(
        (v["passed"].as_u64(), v["failed"].as_u64()),
        (Some(1), Some(2)),
        "{v:#}"
    );
    let results: Vec<(&str, &str)> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["result"].as_str().unwrap()))
        .collect();
    assert_eq!(
        results,
        [
            ("web answers", "pass"),
            ("wrong body", "fail"),
            ("ping expected to fail", "fail")
        ],
        "{v:#}"
    );

    // The right check alone passes; an unknown one is an error.
    let one = ok(&["test", "--name", &name, "--check", "web answers"]);
    assert!(one.contains("checks: 1 passed, 0 failed"), "{one}");
    let unknown = knetsim(&["test", "--name", &name, "--check", "nope"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(text(&unknown).contains("no check `nope`"), "{}", text(&unknown));

    // The deck's exercise: delete the pod but keep its endpoint. The checks still
    // compile (the address is kept) and now tell the truth about it.
    ok(&["pod", "rm", "C0/web", "--keep-endpoints", "--name", &name]);
    let out = knetsim(&["test", "--name", &name, "--settle", "1"]);
    let table = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let web = row(&table, "web answers");
    assert!(web.contains(" FAIL ") && web.contains("1/1 failed: curl:"), "{web}");
    let ping = row(&table, "ping expected to fail");
    assert!(
        ping.contains(" pass ") && ping.contains("0/2 replies, 100% loss"),
        "{ping}"
    );
    // Removing it for good drops the checks that name it.
    let rm = knetsim(&["pod", "rm", "C0/web", "--name", &name]);
    assert!(rm.status.success(), "{}", text(&rm));
    for check in ["web answers", "wrong body", "ping expected to fail"] {
        assert!(
            text(&rm).contains(&format!("note: check `{check}` names C0/web")),
            "{}",
            text(&rm)
        );
    }
    let none = ok(&["test", "--name", &name]);
    assert!(none.contains("has no checks"), "{none}");

    ok(&["down", "--name", &name]);
    assert_nothing_left(&name);
    // Not up any more: `test` says so.
    let gone = knetsim(&["test", "--name", &name]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(text(&gone).contains("is not up"), "{}", text(&gone));
}
