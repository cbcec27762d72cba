//! The command line: help for every subcommand, `plan` and `graph` output.

use std::path::PathBuf;
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

fn ok(args: &[&str]) -> String {
    let out = knetsim(args);
    assert!(
        out.status.success(),
        "knetsim {}: exit {:?}\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Subcommand names listed under `Commands:` in `knetsim --help`.
fn subcommands() -> Vec<String> {
    let help = ok(&["--help"]);
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(String::from)
        .collect()
}

#[test]
fn help_works_for_every_subcommand() {
    let top = ok(&["--help"]);
    assert!(top.contains("Usage: knetsim"), "{top}");
    let commands = subcommands();
    for known in ["compile", "check", "plan", "diff", "graph"] {
        assert!(
            commands.iter().any(|c| c == known),
            "`{known}` missing from --help: {commands:?}"
        );
    }
    for c in &commands {
        let help = ok(&[c, "--help"]);
        assert!(
            help.contains(&format!("Usage: knetsim {c}")),
            "knetsim {c} --help:\n{help}"
        );
        let via_help = ok(&["help", c]);
        if c == "flanneld" {
            // flanneld parses its Go-style flags itself: `--help` lists them, as flanneld's does.
            assert!(via_help.contains("Usage: knetsim flanneld"), "{via_help}");
            assert!(help.contains("-etcd-endpoints"), "{help}");
            continue;
        }
        assert_eq!(via_help, help, "`knetsim help {c}` and `knetsim {c} --help` agree");
    }
    assert!(ok(&["--version"]).starts_with("knetsim "));
}

#[test]
fn plan_prints_numbered_steps() {
    let text = ok(&["plan", "topologies/default.toml"]);
    let mut lines = text.lines();
    let header = lines.next().expect("a header line");
    let count: usize = header
        .split_once('(')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("header names the step count: {header}"));
    let numbers: Vec<usize> = lines
        .filter_map(|l| l.trim_start().split_once(". "))
        .filter_map(|(n, _)| n.parse().ok())
        .collect();
    assert_eq!(
        numbers,
        (1..=count).collect::<Vec<_>>(),
        "steps are numbered 1..={count}:\n{text}"
    );
    assert!(text.contains("netns:C0w1"), "{text}");
    assert!(text.contains("cni-add:C0/c1"), "{text}");

    // The default topology is embedded: no argument gives the same plan.
    assert_eq!(ok(&["plan"]), text);
    // --json prints plan.json, with the same number of steps.
    let json: serde_json::Value = serde_json::from_str(&ok(&["plan", "--json"])).expect("plan --json is JSON");
    assert_eq!(json["steps"].as_array().map(Vec::len), Some(count));
}

#[test]
fn graph_dot_and_mermaid() {
    let dot = ok(&["graph", "--format", "dot", "topologies/default.toml"]);
    assert!(dot.starts_with("graph knetsim {"), "{dot}");
    assert!(dot.contains("C0w1"), "{dot}");
    assert!(dot.trim_end().ends_with('}'), "{dot}");
    assert_eq!(
        dot.matches('{').count(),
        dot.matches('}').count(),
        "balanced braces:\n{dot}"
    );

    let mermaid = ok(&["graph", "--format", "mermaid", "topologies/default.toml"]);
    assert!(mermaid.starts_with("flowchart"), "{mermaid}");
    assert!(mermaid.contains("C0w1"), "{mermaid}");
    assert_eq!(ok(&["graph"]), mermaid, "mermaid is the default format");
}

#[test]
fn bad_invocations_fail() {
    let out = knetsim(&["graph", "--format", "png"]);
    assert!(!out.status.success());
    let out = knetsim(&["frobnicate"]);
    assert!(!out.status.success());
    let out = knetsim(&["check", "tests/fixtures/does-not-exist.toml"]);
    assert!(!out.status.success());
}

#[test]
fn port_flags_outside_1_to_65535_are_refused_before_anything_is_read() {
    // The emulation does not exist: a refused flag is reported before that is found out.
    let none = "--name=knetsim-no-such-emulation";
    for args in [
        &["pod", "add", "C0/x", "--worker", "w1", "--port", "0", none][..],
        &[
            "pod", "add", "C0/x", "--worker", "w1", "--port", "80", "--port", "0", none,
        ],
        &["svc", "add", "C0/x", "--pods", "c1", "--port", "0", none],
        &["serve", "--text", "x", "--port", "0"],
    ] {
        let out = knetsim(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("invalid value '0' for '--port <PORT>'"), "{args:?}: {err}");
        assert!(err.contains("1..=65535"), "{args:?}: {err}");
        assert!(!err.contains("not up"), "{args:?}: {err}");
    }
    let out = knetsim(&["pod", "add", "C0/x", "--worker", "w1", "--port", "65536", none]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn completions_and_man_page_are_generated_from_the_cli() {
    let bash = ok(&["completions", "bash"]);
    assert!(bash.contains("_knetsim()"), "{bash}");
    for sub in ["up", "down", "exec", "pod", "router"] {
        assert!(bash.contains(sub), "bash completion lacks `{sub}`");
    }
    assert!(ok(&["completions", "zsh"]).contains("#compdef knetsim"));
    assert!(ok(&["completions", "fish"]).contains("complete -c knetsim"));
    let man = ok(&["man"]);
    assert!(man.contains(".TH knetsim 1"), "{man}");
    assert!(man.contains("SUBCOMMANDS") || man.contains("knetsim\\-up"), "{man}");
}
