//! The `knetsim>` prompt driven through a pseudo-terminal, as a learner types it:
//! tab completion, host and pod commands, `pingall`, Ctrl-C of an endless ping,
//! errors that keep the prompt, history, and the two endings (`knetsim cli` asks
//! before tearing down; `up --cli` tears down). As root, on `topologies/single.toml`
//! (C0w1, C0w2; pods C0/c1 on w1, C0/c2 on w2); unprivileged runs skip.

mod common;

use common::*;
use expectrl::process::unix::WaitStatus;
use expectrl::{ControlCode, Expect, Regex, Session};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const TOPOLOGY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/topologies/single.toml");
const PROMPT: &str = "knetsim> ";

const PROGRAMS: &[&str] = &["ip", "nft", "etcd", "ping"];

type Pty = expectrl::session::OsSession;

/// knetsim on a fresh pseudo-terminal, HOME in `home` (the history file goes there).
fn spawn(args: &[&str], home: &Path) -> Pty {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_knetsim"));
    cmd.args(args)
        .env("HOME", home)
        .env("TERM", "xterm")
        .env_remove("KNETSIM_NAME");
    let mut p = Session::spawn(cmd).expect("spawn knetsim on a pty");
    p.get_process_mut().set_window_size(160, 40).expect("window size");
    p.set_expect_timeout(Some(Duration::from_secs(60)));
    p
}

/// Waits for `needle`; on timeout the panic shows what the prompt printed.
fn expect(p: &mut Pty, needle: &str) {
    if let Err(e) = p.expect(needle) {
        panic!("waiting for {needle:?}: {e}");
    }
}

fn expect_re(p: &mut Pty, re: &str) -> String {
    match p.expect(Regex(re)) {
        Ok(found) => String::from_utf8_lossy(found.get(0).unwrap_or_default()).into_owned(),
        Err(e) => panic!("waiting for /{re}/: {e}"),
    }
}

fn line(p: &mut Pty, text: &str) {
    p.send_line(text).expect("type a line");
}

/// Waits for the prompt process to end; returns its exit code.
fn exit_code(p: &mut Pty) -> i32 {
    let t = Instant::now();
    loop {
        // Drain the output so the process never blocks on a full terminal.
        let _ = p.try_read(&mut [0u8; 4096]);
        match p.get_process().status() {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::StillAlive) | Err(_) if t.elapsed() < Duration::from_secs(120) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            other => panic!("the prompt did not end: {other:?}"),
        }
    }
}

/// (worker C0w1's address, pod C0/c2's address) from the running emulation's inventory.
fn addresses(name: &str) -> (String, String) {
    let path = format!("/tmp/knetsim-{name}/bundle/inventory.json");
    let inv: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect(&path)).unwrap();
    let c = &inv["clusters"][0];
    let w1 = c["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["host"]["name"] == "C0w1")
        .expect("C0w1");
    let c2 = c["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "c2")
        .expect("c2");
    (
        w1["host"]["ip"].as_str().unwrap().to_string(),
        c2["ip"].as_str().unwrap().to_string(),
    )
}

/// PIDs in a network namespace (`ip netns pids`).
fn pids_in(netns: &str) -> Vec<String> {
    let mut v: Vec<String> = stdout_of(&["ip", "netns", "pids", netns])
        .split_whitespace()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

#[test]
fn the_prompt_runs_the_decks_first_chapter() {
    let test = "the_prompt_runs_the_decks_first_chapter";
    if !live_ready(test, PROGRAMS) {
        return;
    }
    let name = format!("t{}cp", std::process::id());
    let home = tempfile::tempdir().unwrap();
    let _down = Down(name.clone());
    ok(&["up", TOPOLOGY, "--name", &name, "--skip", "ingress,interconnect"]);
    let (w1_ip, c2_ip) = addresses(&name);

    let mut p = spawn(&["cli", "--name", &name], home.path());
    expect(&mut p, PROMPT);

    // TAB completes the command word and the node names; the second TAB lists them.
    p.send("C0w").unwrap();
    p.send("\t").unwrap();
    p.send("\t").unwrap();
    expect_re(&mut p, r"C0w1\s+C0w2");
    p.send(ControlCode::NegativeAcknowledge).unwrap(); // Ctrl-U: drop the line
    p.send("C0/c").unwrap();
    p.send("\t").unwrap();
    p.send("\t").unwrap();
    expect_re(&mut p, r"C0/c1\s+C0/c2");
    p.send(ControlCode::NegativeAcknowledge).unwrap();
    // A unique match is completed in place: `pingal` + TAB runs pingall.
    p.send("pingal\t").unwrap();
    line(&mut p, "");
    expect(&mut p, "*** Results: 0% dropped (2/2 received)");
    expect(&mut p, PROMPT);

    // A host command: the worker's address.
    line(&mut p, "C0w1 ip -br addr");
    expect(&mut p, &format!("{w1_ip}/"));
    expect(&mut p, PROMPT);

    // A pod pings the pod of the other worker (across the VXLAN overlay).
    line(&mut p, &format!("C0/c1 ping -c 2 {c2_ip}"));
    expect(&mut p, ", 0% packet loss");
    expect(&mut p, PROMPT);
    // Mininet's substitution: a node name in a node line is its address.
    line(&mut p, "C0/c1 ping -c 1 C0/c2");
    expect(&mut p, &format!("PING {c2_ip}"));
    expect(&mut p, ", 0% packet loss");
    expect(&mut p, PROMPT);

    // The deck's Mininet form.
    line(&mut p, r#"py C0w2.exec_container("c2", "ip -br addr show dev eth0")"#);
    expect(&mut p, &format!("{c2_ip}/"));
    expect(&mut p, PROMPT);

    // Ctrl-C stops an endless ping (its output streams while it runs), not the prompt.
    let before = pids_in(&format!("{name}-k0_c1"));
    line(&mut p, &format!("C0/c1 ping -i 0.2 {c2_ip}"));
    expect(&mut p, "icmp_seq=2");
    p.send(ControlCode::EndOfText).unwrap();
    expect(&mut p, "packet loss");
    expect(&mut p, PROMPT);
    line(&mut p, "C0w1 echo alive-$((40+2))");
    expect(&mut p, "alive-42");
    expect(&mut p, PROMPT);
    assert_eq!(pids_in(&format!("{name}-k0_c1")), before, "the ping is gone");

    // Ctrl-C at the prompt: a new prompt.
    p.send("half a line").unwrap();
    p.send(ControlCode::EndOfText).unwrap();
    expect(&mut p, PROMPT);

    // Errors are one line and the prompt goes on.
    line(&mut p, "C9w9 ifconfig");
    expect(&mut p, "unknown command or node `C9w9`");
    expect(&mut p, PROMPT);
    line(&mut p, "nodes");
    expect_re(&mut p, r"workers:\s+C0w1 C0w2");
    expect(&mut p, PROMPT);

    // `help CMD`, and `source FILE` runs a file's lines as if typed.
    line(&mut p, "help pingall");
    expect(&mut p, "pingall: ping every pod");
    expect(&mut p, PROMPT);
    let script = home.path().join("demo.knetsim");
    std::fs::write(&script, "# a demo\nC0w2 echo sourced-$((1+2))\n\npods\n").unwrap();
    line(&mut p, &format!("source {}", script.display()));
    expect(&mut p, "sourced-3");
    expect_re(&mut p, r"C0/c2\s+C0w2");
    expect(&mut p, PROMPT);

    // `exit`, then n: the emulation stays up.
    line(&mut p, "exit");
    expect(&mut p, "tear the emulation down? [y/N]");
    line(&mut p, "n");
    expect(&mut p, "stays up");
    assert_eq!(exit_code(&mut p), 0);
    drop(p);
    assert!(!namespaces_of(&name).is_empty(), "still up after answering n");

    // Again: history came back from ~/.knetsim_history (Up arrow = `exit`); then y.
    let mut p = spawn(&["cli", "--name", &name], home.path());
    expect(&mut p, PROMPT);
    p.send("\x1b[A").unwrap();
    expect(&mut p, "exit");
    line(&mut p, "");
    expect(&mut p, "tear the emulation down? [y/N]");
    line(&mut p, "y");
    expect(&mut p, "is down");
    assert_eq!(exit_code(&mut p), 0);
    drop(p);
    let history = std::fs::read_to_string(home.path().join(".knetsim_history")).unwrap();
    assert!(history.contains("C0w1 ip -br addr"), "{history}");
    assert_nothing_left(&name);
}

#[test]
fn up_cli_opens_the_prompt_and_tears_down_on_exit() {
    let test = "up_cli_opens_the_prompt_and_tears_down_on_exit";
    if !live_ready(test, PROGRAMS) {
        return;
    }
    let name = format!("t{}cu", std::process::id());
    let home = tempfile::tempdir().unwrap();
    let _down = Down(name.clone());
    let mut p = spawn(
        &[
            "up",
            TOPOLOGY,
            "--name",
            &name,
            "--skip",
            "ingress,interconnect",
            "--cli",
        ],
        home.path(),
    );
    p.set_expect_timeout(Some(Duration::from_secs(180)));
    expect(&mut p, PROMPT);
    p.set_expect_timeout(Some(Duration::from_secs(60)));
    let (_, c2_ip) = addresses(&name);

    line(&mut p, &format!("C0/c1 ping -c 1 {c2_ip}"));
    expect(&mut p, ", 0% packet loss");
    expect(&mut p, PROMPT);

    // A live change from the prompt, then the new pod is known (and completed).
    line(&mut p, "pod add C0/c3 --worker w1");
    expect(&mut p, "changed in");
    expect(&mut p, PROMPT);
    p.send("C0/c3\t").unwrap();
    p.send("ip -br addr show dev eth0\n").unwrap();
    let addr = expect_re(&mut p, r"UP\s+11\.[0-9.]+/");
    assert!(addr.contains("11."), "{addr}");
    expect(&mut p, PROMPT);
    line(&mut p, "pingall");
    expect(&mut p, "*** Results: 0% dropped (6/6 received)");
    expect(&mut p, PROMPT);
    // A service over the new pod; its name in a pod's command line is its VIP.
    line(&mut p, "svc add C0/web2 --pods c1,c3");
    expect(&mut p, "changed in");
    expect(&mut p, PROMPT);
    line(&mut p, "services");
    let row = expect_re(&mut p, r"C0/web2\s+[0-9.]+");
    let vip = row.split_whitespace().nth(1).unwrap().to_string();
    expect(&mut p, PROMPT);
    line(&mut p, "C0/c2 ping -c 1 C0/web2");
    expect(&mut p, &format!("PING {vip}"));
    expect(&mut p, ", 0% packet loss");
    expect(&mut p, PROMPT);
    line(&mut p, "svc rm C0/web2");
    expect(&mut p, "changed in");
    expect(&mut p, PROMPT);

    // Ctrl-D leaves and tears the emulation down.
    p.send(ControlCode::EndOfTransmission).unwrap();
    expect(&mut p, "is down");
    assert_eq!(exit_code(&mut p), 0);
    drop(p);
    assert_nothing_left(&name);
}

#[test]
fn the_prompt_of_an_emulation_that_is_not_up_is_an_error() {
    let name = format!("t{}cn", std::process::id());
    let out = knetsim(&["cli", "--name", &name]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("emulation {name} is not up")),
        "{}",
        text(&out)
    );
    assert!(!Path::new(&format!("/tmp/knetsim-{name}")).exists());
}
