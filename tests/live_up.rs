//! Live tests of `knetsim up`, `status`, `exec` and `down`, as root. Every emulation
//! is named `t<pid>...`, so it clashes with nothing; a drop guard runs
//! `knetsim down --name ...` if a test fails half-way. Without root or a needed
//! program they print `SKIP: reason`, unless `CI` is set, where they fail instead.
//! Nothing here probes from the root namespace: every check runs in the
//! emulation's namespaces through `knetsim exec`.

mod common;

use common::{
    assert_nothing_left, cni_plugins_installed, knetsim, namespaces_of, nix_is_root, ok, on_path, skip, subcommands,
    text, Down, RootSnapshot,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What this build of knetsim can bring up.
struct Abilities {
    /// CNI pods (the runtime and the flannel plugin are in).
    pods: bool,
}

fn ready_or_skip(test: &str) -> Option<Abilities> {
    if !nix_is_root() {
        skip(test, "needs root");
        return None;
    }
    for p in ["ip", "tc", "nft", "etcd", "sysctl"] {
        if !on_path(p) {
            skip(test, &format!("`{p}` is not installed"));
            return None;
        }
    }
    let subs = subcommands();
    if !on_path("flanneld") && !subs.iter().any(|s| s == "flanneld") {
        skip(test, "no flanneld and no built-in `knetsim flanneld` yet");
        return None;
    }
    let pods = subs.iter().any(|s| s == "cni") && cni_plugins_installed();
    Some(Abilities { pods })
}

fn topology(pods: bool) -> String {
    let mut t = String::from(
        r#"
[underlay]
impairments = [{ uplink = "C0w2", rate = "100mbit", delay = "5ms", loss = 1.0 }]

[[clusters]]
name = "C0"
etcd = 1
workers = 2
"#,
    );
    if pods {
        t.push_str(
            r#"pods = [{ name = "c1", worker = "w1" }, { name = "c2", worker = "w2" }]
services = [{ name = "web", pods = ["c1", "c2"] }]
"#,
        );
    }
    t
}

fn write_topology(dir: &Path, pods: bool) -> PathBuf {
    let path = dir.join("tiny.toml");
    std::fs::write(&path, topology(pods)).unwrap();
    path
}

#[test]
fn up_status_exec_down_leaves_the_root_namespace_as_it_was() {
    let test = "up_status_exec_down_leaves_the_root_namespace_as_it_was";
    let Some(abilities) = ready_or_skip(test) else { return };
    let name = format!("t{}u", std::process::id());
    let tmp = tempfile::tempdir().unwrap();
    let topo = write_topology(tmp.path(), abilities.pods);
    let topo = topo.to_str().unwrap();
    let before = RootSnapshot::take();
    let guard = Down(name.clone());

    let t = Instant::now();
    let out = knetsim(&["up", topo, "--name", &name]);
    let up_time = t.elapsed();
    assert!(out.status.success(), "up: {}", text(&out));
    let summary = String::from_utf8_lossy(&out.stdout);
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(summary.contains(&format!("emulation {name} is up")), "{summary}");
    assert!(summary.contains("C0w1") && summary.contains("C0e1"), "{summary}");
    // Progress lines (stderr is not a terminal here) and the netem fallback warning.
    assert!(progress.contains("] netns:"), "{progress}");
    if !Path::new("/sys/module/sch_netem").exists() {
        assert!(progress.contains("no netem"), "{progress}");
    }

    // status --json shows every component up.
    let status: serde_json::Value = serde_json::from_str(&ok(&["status", "--name", &name, "--json"])).unwrap();
    assert_eq!(status["phase"], "Running", "{status:#}");
    assert_eq!(status["healthy"], true, "{status:#}");
    let processes = status["processes"].as_array().unwrap();
    assert!(processes.iter().any(|p| p["name"] == "etcd C0e1"), "{status:#}");
    assert!(processes.iter().all(|p| p["alive"] == true), "{status:#}");
    assert_eq!(status["etcd"][0]["healthy"], true, "{status:#}");
    assert_eq!(status["flannel"].as_array().unwrap().len(), 2, "{status:#}");
    let text_status = ok(&["status", "--name", &name]);
    assert!(text_status.contains("Running (healthy)"), "{text_status}");

    // exec runs inside the worker: its eth0 has the underlay address; status is passed on.
    let w1_ip = summary
        .lines()
        .find(|l| l.starts_with("C0w1 "))
        .and_then(|l| l.split_whitespace().nth(3))
        .expect("C0w1 with its address in the summary");
    let addr = ok(&["exec", "--name", &name, "C0w1", "--", "ip", "addr"]);
    assert!(addr.contains(w1_ip), "{w1_ip} not in\n{addr}");
    assert!(addr.contains("eth0"), "{addr}");
    let out = knetsim(&["exec", "--name", &name, "C0w1", "--", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    let out = knetsim(&["exec", "--name", &name, "C0w9", "--", "true"]);
    assert!(
        !out.status.success() && text(&out).contains("no node `C0w9`"),
        "{}",
        text(&out)
    );

    // The impairment: tbf in the worker's namespace; without netem, loss is an nft drop.
    let qdisc = ok(&[
        "exec", "--name", &name, "C0w2", "--", "tc", "qdisc", "show", "dev", "eth0",
    ]);
    assert!(qdisc.contains("tbf"), "{qdisc}");
    if !qdisc.contains("netem") {
        let rules = ok(&["exec", "--name", &name, "C0w2", "--", "nft", "list", "ruleset"]);
        assert!(rules.contains("numgen random mod 10000 < 100"), "{rules}");
    }

    if abilities.pods {
        let pods = status["pods"].as_array().unwrap();
        assert!(pods.iter().all(|p| p["ready"] == true), "{status:#}");
        let c2_ip = pods[1]["ip"].as_str().unwrap().to_string();
        let ping = ok(&["exec", "--name", &name, "C0/c1", "--", "ping", "-c1", "-W2", &c2_ip]);
        assert!(ping.contains("1 received"), "{ping}");
    }

    // A second up of the same name fails clearly and changes nothing.
    let out = knetsim(&["up", topo, "--name", &name]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already up") && err.contains(&format!("knetsim down --name {name}")),
        "{err}"
    );
    assert!(ok(&["status", "--name", &name, "--json"]).contains("\"Running\""));

    let t = Instant::now();
    let down = ok(&["down", "--name", &name]);
    let down_time = t.elapsed();
    assert!(down.contains(&format!("emulation {name} is down")), "{down}");
    println!("timing: up {up_time:?}, down {down_time:?} (pods: {})", abilities.pods);
    assert_nothing_left(&name);
    RootSnapshot::take().assert_same_as(&before);
    // Not up any more: status says so (exit 1), exec refuses.
    let out = knetsim(&["status", "--name", &name]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("is not up"), "{}", text(&out));
    let out = knetsim(&["exec", "--name", &name, "C0w1", "--", "true"]);
    assert!(!out.status.success());
    drop(guard);
}

/// When to kill `up`: after a progress line containing this text, or after a time.
enum KillAt {
    Line(&'static str),
    After(Duration),
}

#[test]
fn kill_during_up_then_down_leaves_nothing() {
    use std::io::BufRead;
    let test = "kill_during_up_then_down_leaves_nothing";
    let Some(abilities) = ready_or_skip(test) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let topo = write_topology(tmp.path(), abilities.pods);
    let topo = topo.to_str().unwrap();
    let points = [
        KillAt::After(Duration::from_millis(300)),
        KillAt::Line("] netns:"),
        KillAt::Line("] etcd:C0e1"),
        KillAt::Line("] flanneld:"),
    ];
    for (i, point) in points.iter().enumerate() {
        let name = format!("t{}k{i}", std::process::id());
        let guard = Down(name.clone());
        let mut child = Command::new(env!("CARGO_BIN_EXE_knetsim"))
            .args(["up", topo, "--name", &name])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut last = String::new();
        match point {
            KillAt::After(d) => std::thread::sleep(*d),
            KillAt::Line(text) => {
                for line in std::io::BufReader::new(stderr).lines() {
                    let line = line.unwrap_or_default();
                    let hit = line.contains(text);
                    last = line;
                    if hit {
                        break;
                    }
                }
            }
        }
        // SIGKILL to our own child, by its PID.
        let _ = child.kill();
        let status = child.wait().unwrap();
        println!(
            "killed up ({status}) at {:?}, last progress: {last:?}",
            point_text(point)
        );
        let out = knetsim(&["down", "--name", &name]);
        assert!(out.status.success(), "down after kill at {i}: {}", text(&out));
        assert_nothing_left(&name);
        drop(guard);
    }
}

fn point_text(p: &KillAt) -> String {
    match p {
        KillAt::Line(t) => format!("after `{t}`"),
        KillAt::After(d) => format!("after {d:?}"),
    }
}

#[test]
fn missing_dependencies_are_reported_before_any_change() {
    let test = "missing_dependencies_are_reported_before_any_change";
    // A PATH with iproute2 and nft but no etcd.
    let tmp = tempfile::tempdir().unwrap();
    for p in ["ip", "tc", "nft"] {
        let Some(found) = std::env::var_os("PATH")
            .and_then(|path| std::env::split_paths(&path).map(|d| d.join(p)).find(|f| f.is_file()))
        else {
            skip(test, &format!("`{p}` is not installed"));
            return;
        };
        std::os::unix::fs::symlink(found, tmp.path().join(p)).unwrap();
    }
    let name = format!("t{}m", std::process::id());
    let _guard = nix_is_root().then(|| Down(name.clone()));
    let topo = write_topology(tmp.path(), true);
    let out = Command::new(env!("CARGO_BIN_EXE_knetsim"))
        .args(["up", topo.to_str().unwrap(), "--name", &name])
        .env("PATH", tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nothing was changed"), "{err}");
    assert!(err.contains("etcd") && err.contains("etcd-server"), "{err}");
    assert!(err.contains("apt-get install"), "{err}");
    assert!(namespaces_of(&name).is_empty());
    assert!(!Path::new(&format!("/tmp/knetsim-{name}")).exists());
}
