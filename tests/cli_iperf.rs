//! The prompt's `iperf` (Mininet's TCP bandwidth test) over the real iperf3, with
//! lines piped into `knetsim cli` as a script: the default pair, an unknown node, a
//! client that cannot connect (its server must still be ended), no iperf3 left, and
//! the message when iperf3 is not installed. As root, on `topologies/single.toml`
//! (pods C0/c1 on w1, C0/c2 on w2); unprivileged runs skip.

mod common;

use common::*;
use std::io::Write;
use std::process::{Command, Output, Stdio};

const TOPOLOGY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/topologies/single.toml");

/// `knetsim cli --name NAME` with `script` on stdin (and `path` as PATH if given).
fn prompt(name: &str, script: &str, path: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_knetsim"));
    cmd.args(["cli", "--name", name])
        .env_remove("KNETSIM_NAME")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(p) = path {
        cmd.env("PATH", p);
    }
    let mut child = cmd.spawn().expect("run knetsim cli");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("write the script");
    child.wait_with_output().expect("wait for knetsim cli")
}

/// The output between the echo of `line` and the next prompt.
fn output_of<'a>(stdout: &'a str, line: &str) -> &'a str {
    let echo = format!("knetsim> {line}\n");
    let start = stdout
        .find(&echo)
        .unwrap_or_else(|| panic!("no `{line}` in:\n{stdout}"))
        + echo.len();
    let rest = &stdout[start..];
    &rest[..rest.find("knetsim> ").unwrap_or(rest.len())]
}

/// The rates of `*** Results: ['X Gbits/sec', 'Y Gbits/sec']`, in bits per second.
fn rates(results: &str) -> Vec<f64> {
    let list = results
        .trim()
        .strip_prefix("*** Results: [")
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or_else(|| panic!("not a results line: {results}"));
    list.split(", ")
        .map(|quoted| {
            let rate = quoted.trim_matches('\'');
            let (value, unit) = rate.split_once(' ').unwrap_or_else(|| panic!("no unit: {rate}"));
            let scale = match unit {
                "Gbits/sec" => 1e9,
                "Mbits/sec" => 1e6,
                "Kbits/sec" => 1e3,
                "bits/sec" => 1.0,
                other => panic!("unit {other} in {results}"),
            };
            value.parse::<f64>().unwrap_or_else(|_| panic!("{value} in {results}")) * scale
        })
        .collect()
}

/// iperf3 processes in the emulation's namespaces.
fn iperf3_left(name: &str) -> Vec<String> {
    namespaces_of(name)
        .iter()
        .flat_map(|ns| {
            stdout_of(&["ip", "netns", "pids", ns])
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "iperf3"))
        .collect()
}

#[test]
fn iperf_measures_tcp_bandwidth_between_two_pods() {
    let test = "iperf_measures_tcp_bandwidth_between_two_pods";
    if !live_ready(test, &["ip", "nft", "etcd", "iperf3"]) {
        return;
    }
    let name = format!("t{}pf", std::process::id());
    let _down = Down(name.clone());
    ok(&["up", TOPOLOGY, "--name", &name, "--skip", "ingress,interconnect"]);

    // The etcd host has no route to the pod network: its client fails while the
    // server listens in C0/c2, and the prompt must end that server itself.
    let script = "iperf 1\niperf C0/c1 C0w9\niperf C0e1 C0/c2 1\nC0/c2 ss -ltn\nexit\nn\n";
    let out = prompt(&name, script, None);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{}", text(&out));

    // The default pair: two pods on different workers, so the test crosses VXLAN.
    let default = output_of(&stdout, "iperf 1");
    let lines: Vec<&str> = default.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&"*** Iperf: testing TCP bandwidth between C0/c1 and C0/c2"),
        "{}",
        text(&out)
    );
    let measured = rates(lines.get(1).unwrap_or_else(|| panic!("no results: {}", text(&out))));
    assert_eq!(measured.len(), 2, "{measured:?}");
    assert!(measured.iter().all(|r| *r > 0.0), "{measured:?}");

    assert!(
        stderr.contains("*** `iperf`: no node `C0w9` (`nodes` lists them)"),
        "{}",
        text(&out)
    );
    assert!(output_of(&stdout, "iperf C0/c1 C0w9").is_empty(), "{}", text(&out));

    assert!(
        output_of(&stdout, "iperf C0e1 C0/c2 1").starts_with("*** Iperf: testing TCP bandwidth between C0e1 and C0/c2"),
        "{}",
        text(&out)
    );
    assert!(
        stderr.contains("*** iperf: unable to connect to server"),
        "{}",
        text(&out)
    );
    // Its server is gone before the next line runs.
    let listeners = output_of(&stdout, "C0/c2 ss -ltn");
    assert!(listeners.starts_with("State"), "{}", text(&out));
    assert!(
        !listeners.contains(":520"),
        "an iperf3 server still listens:\n{listeners}"
    );
    assert_eq!(iperf3_left(&name), Vec::<String>::new(), "iperf3 processes left");

    // Without iperf3 on PATH: one line naming the package.
    let bare = tempfile::tempdir().unwrap();
    let out = prompt(&name, "iperf\nexit\nn\n", bare.path().to_str());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("*** iperf needs iperf3, which is not installed: install the package `iperf3`"),
        "{}",
        text(&out)
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("*** Iperf:"),
        "{}",
        text(&out)
    );
}
