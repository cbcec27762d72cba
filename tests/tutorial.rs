//! Executes docs/tutorial.md: every command of every ```console block, in order,
//! against one emulation of the default topology, checking each output.
//!
//! The format of a ```console block (other blocks are prose and never run):
//! - a line `$ COMMAND` starts a command; a command line ending in `\` continues on
//!   the next line. The lines after it, up to the next `$ ` line or the end of the
//!   block, are its expected output;
//! - `$ export NAME=VALUE ...` sets variables for the commands after it (not run by a
//!   shell). The variables the test owns, [`OWNED`], keep the test's values;
//! - a command runs as `bash -c COMMAND` in the repository root, with stderr merged into
//!   stdout, `knetsim` on PATH being this build, and `KNETSIM_NAME` (the environment form
//!   of `--name`) naming the test's emulation. It must exit 0;
//! - before comparing, occurrences of an owned variable's test value in the output are
//!   replaced by the doc's value (`/tmp/knetsim-tut123` reads `/tmp/knetsim`), runs of
//!   whitespace become one space, and trailing blank lines are dropped;
//! - a line `...` of the expected output matches any number of output lines (also none);
//!   every other expected line matches exactly one output line, the next one, which
//!   must contain it; `...` inside a line matches any text (`time=...`; the leftmost three
//!   dots count, so `10.0.0...` rather than `10.0.0....`). So the expected
//!   lines appear in order, contiguous unless `...` separates them, and an output that
//!   goes on after the last expected line needs a closing `...` (an empty expectation
//!   means no output);
//! - a prompt session is a command such as `$ knetsim cli` whose expected output holds
//!   typed lines: a line starting with `knetsim> ` (the prompt) or with
//!   `tear the emulation down? [y/N] ` (its question on `exit`) is typed. The text after
//!   the prompt or question, of each typed line in order, is the command's stdin (other
//!   commands get an empty stdin). The prompt, reading a pipe, echoes each line it reads
//!   after the prompt or question, so a typed line is also an expected output line and
//!   the lines between two typed lines are the output of the first. Typed lines hold no
//!   `...`. For example:
//!
//!   ```text
//!   $ knetsim cli
//!   *** knetsim prompt for emulation ...
//!   knetsim> C0w1 ping -c 1 C0w2
//!   ...
//!   1 packets transmitted, 1 received, 0% packet loss, time ...
//!   ...
//!   knetsim> exit
//!   tear the emulation down? [y/N] n
//!   emulation ... stays up ...
//!   ```
//!
//! The doc itself runs `knetsim up` first and `knetsim down` last; the test's guards
//! tear the emulation and the mini-demo's namespaces down if it stops half-way.

mod common;

use common::{live_ready, Down, RootSnapshot};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

const DOC: &str = "docs/tutorial.md";

/// Variables the test sets itself so that it clashes with nothing: name and doc value.
/// The doc's commands only see the test's values.
const OWNED: &[(&str, &str)] = &[("STATE", "/tmp/knetsim"), ("DEMO", "demo")];

/// Fewer commands than this means the doc lost its content (or the parser broke).
const MIN_COMMANDS: usize = 80;

/// Fewer lines typed into prompt sessions than this, likewise.
const MIN_TYPED: usize = 15;

/// What starts a typed line of a prompt session: the prompt, and its question on `exit`.
const TYPED: &[&str] = &["knetsim> ", "tear the emulation down? [y/N] "];

/// Programs the tutorial's commands use, besides what `knetsim up` checks itself.
const PROGRAMS: &[&str] = &[
    "ip", "nft", "etcd", "etcdctl", "nginx", "python3", "ping", "curl", "wget", "tcpdump", "tshark", "ss", "timeout",
    "bash", "grep", "iperf3",
];

/// One command of the doc with its expected output.
#[derive(Debug)]
struct Step {
    /// 1-based line of the `$ ` line in the doc.
    line: usize,
    command: String,
    expected: Vec<String>,
}

impl Step {
    /// The lines typed into a prompt session, without prompt (none for other commands).
    fn typed(&self) -> Vec<&str> {
        self.expected
            .iter()
            .filter_map(|l| TYPED.iter().find_map(|p| l.strip_prefix(p)))
            .inspect(|t| assert!(!t.contains("..."), "{DOC}:{}: a typed line holds `...`", self.line))
            .collect()
    }
}

/// The steps of every ```console block of `doc`, in order.
fn parse(doc: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut in_console = false;
    let mut continued = false;
    for (i, line) in doc.lines().enumerate() {
        if let Some(info) = line.trim_start().strip_prefix("```") {
            in_console = !in_console && info.trim() == "console";
            continued = false;
            continue;
        }
        if !in_console {
            continue;
        }
        if continued {
            let step = steps.last_mut().expect("a continued command");
            step.command.push('\n');
            step.command.push_str(line);
            continued = line.ends_with('\\');
        } else if let Some(command) = line.strip_prefix("$ ") {
            steps.push(Step {
                line: i + 1,
                command: command.to_string(),
                expected: Vec::new(),
            });
            continued = command.ends_with('\\');
        } else {
            let step = steps
                .last_mut()
                .unwrap_or_else(|| panic!("{DOC}:{}: output before any `$ ` command", i + 1));
            step.expected.push(line.to_string());
        }
    }
    assert!(!in_console, "{DOC}: a ```console block is not closed");
    steps
}

fn squeeze(line: &str) -> String {
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether `actual` contains `expected`, where `...` in `expected` matches any text.
fn line_matches(expected: &str, actual: &str) -> bool {
    let mut rest = actual;
    for piece in expected.split("...").filter(|p| !p.trim().is_empty()) {
        match rest.find(piece.trim()) {
            Some(at) => rest = &rest[at + piece.trim().len()..],
            None => return false,
        }
    }
    true
}

/// Whether `actual` lines are covered by `expected` lines (rules at the top).
fn output_matches(expected: &[String], actual: &[String]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((e, rest)) if e == "..." => (0..=actual.len()).any(|skip| output_matches(rest, &actual[skip..])),
        Some((e, rest)) => actual
            .split_first()
            .is_some_and(|(a, more)| line_matches(e, a) && output_matches(rest, more)),
    }
}

/// The output as compared: owned values mapped back to the doc's, whitespace squeezed.
fn normalize(output: &str, env: &[(String, String)]) -> Vec<String> {
    let mut text = output.to_string();
    for (name, doc_value) in OWNED {
        if let Some((_, test_value)) = env.iter().find(|(n, _)| n == name) {
            text = text.replace(test_value.as_str(), doc_value);
        }
    }
    let mut lines: Vec<String> = text.lines().map(squeeze).collect();
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
}

/// `export A=x B=y`: sets the non-owned variables in `env`.
fn export(step: &Step, env: &mut Vec<(String, String)>) {
    for word in step.command.split_whitespace().skip(1) {
        let (name, value) = word
            .split_once('=')
            .unwrap_or_else(|| panic!("{DOC}:{}: `export` takes NAME=VALUE words only", step.line));
        if OWNED.iter().any(|(n, _)| *n == name) {
            continue;
        }
        env.retain(|(n, _)| n != name);
        env.push((name.to_string(), value.to_string()));
    }
}

/// Deletes the mini-demo's namespaces (`DEMO-*`) if the doc stopped before it did.
struct DemoNetns(String);

impl Drop for DemoNetns {
    fn drop(&mut self) {
        let prefix = format!("{}-", self.0);
        let Ok(entries) = std::fs::read_dir("/run/netns") else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) {
                let _ = Command::new("ip").args(["netns", "del", &name]).status();
            }
        }
    }
}

#[test]
fn parser_and_matcher_follow_the_rules() {
    let doc = "text\n```console\n$ echo a \\\n  b\na b\n...\n$ true\n```\n```sh\n$ not run\n```\n";
    let steps = parse(doc);
    assert_eq!(steps.len(), 2, "{steps:?}");
    assert_eq!(steps[0].command, "echo a \\\n  b");
    assert_eq!(steps[0].expected, ["a b", "..."]);
    assert_eq!(steps[1].line, 7);
    assert!(steps[1].expected.is_empty());
    assert!(steps[0].typed().is_empty());

    let session = "```console\n$ knetsim cli\n*** banner\nknetsim> nodes\navailable nodes are:\n\
                   knetsim> exit\ntear the emulation down? [y/N] n\nstays up\n```\n";
    let steps = parse(session);
    assert_eq!(steps.len(), 1, "{steps:?}");
    assert_eq!(steps[0].typed(), ["nodes", "exit", "n"]);

    let lines = |s: &str| s.lines().map(String::from).collect::<Vec<_>>();
    assert!(output_matches(&lines("a\n...\nd"), &lines("a\nb\nc\nd")));
    assert!(output_matches(&lines("...\nc ...\n..."), &lines("a\nb\nc x\nd")));
    assert!(output_matches(&lines("time=... ms"), &lines("64 bytes time=0.1 ms")));
    assert!(
        !output_matches(&lines("a\nd"), &lines("a\nb\nd")),
        "lines are contiguous without ..."
    );
    assert!(
        !output_matches(&lines("a"), &lines("a\nb")),
        "output after the last line needs ..."
    );
    assert!(!output_matches(&lines("b\na"), &lines("a\nb")), "order counts");
    assert!(!output_matches(&[], &lines("a")), "no expected lines: no output");
    assert!(!output_matches(&lines("x...z"), &lines("z x")), "pieces in order");
}

#[test]
fn tutorial_runs_as_written() {
    if !live_ready("tutorial_runs_as_written", PROGRAMS) {
        return;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let doc = std::fs::read_to_string(Path::new(root).join(DOC)).unwrap();
    let steps = parse(&doc);

    let name = format!("tut{}", std::process::id());
    assert!(name.len() <= 16, "{name} is too long");
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_knetsim")).parent().unwrap().to_path_buf();
    let path = std::env::join_paths(
        std::iter::once(bin_dir).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .unwrap();
    let mut env: Vec<(String, String)> = vec![
        ("STATE".into(), format!("/tmp/knetsim-{name}")),
        ("DEMO".into(), format!("{name}demo")),
    ];

    let before = RootSnapshot::take();
    // Guards first: whatever step fails, the emulation and the demo namespaces go.
    let _down = Down(name.clone());
    let _demo = DemoNetns(format!("{name}demo"));

    let started = Instant::now();
    let (mut ran, mut typed_lines) = (0, 0);
    for (n, step) in steps.iter().enumerate() {
        if step.command.starts_with("export ") {
            export(step, &mut env);
            continue;
        }
        let typed = step.typed();
        let t = Instant::now();
        let mut child = Command::new("timeout")
            .args(["-k", "5", "120", "bash", "-c"])
            .arg(format!("exec 2>&1\n{}", step.command))
            .current_dir(root)
            .env("PATH", &path)
            .env("KNETSIM_NAME", &name)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run bash");
        // All at once (far below a pipe's capacity), then end of input. A command that
        // ends without reading it fails on its exit status or output below.
        let input: String = typed.iter().map(|l| format!("{l}\n")).collect();
        let _ = child.stdin.take().expect("stdin").write_all(input.as_bytes());
        let out = child.wait_with_output().expect("wait for bash");
        ran += 1;
        typed_lines += typed.len();
        let output = String::from_utf8_lossy(&out.stdout);
        println!(
            "step {} ({DOC}:{}, {:.2} s): $ {}",
            n + 1,
            step.line,
            t.elapsed().as_secs_f64(),
            step.command
        );
        assert!(
            out.status.success(),
            "{DOC}:{}: `{}` exited with {:?}; output:\n{output}",
            step.line,
            step.command,
            out.status.code()
        );
        let expected: Vec<String> = step
            .expected
            .iter()
            .map(|l| if l.trim() == "..." { "...".into() } else { squeeze(l) })
            .collect();
        let actual = normalize(&output, &env);
        assert!(
            output_matches(&expected, &actual),
            "{DOC}:{}: the output of `{}` does not match.\nexpected:\n{}\nactual (normalized):\n{}",
            step.line,
            step.command,
            expected.join("\n"),
            actual.join("\n")
        );
    }
    println!(
        "{DOC}: {ran} commands ({typed_lines} lines typed into prompts) ran as written in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        ran >= MIN_COMMANDS,
        "only {ran} commands in {DOC} (expected at least {MIN_COMMANDS})"
    );
    assert!(
        typed_lines >= MIN_TYPED,
        "only {typed_lines} lines typed into prompts in {DOC} (expected at least {MIN_TYPED})"
    );
    assert!(
        !Path::new(&format!("/tmp/knetsim-{name}")).exists(),
        "the tutorial ends with `knetsim down`, yet /tmp/knetsim-{name} is left"
    );
    common::assert_nothing_left(&name);
    RootSnapshot::take().assert_same_as(&before);
}
