//! The malformed-topology corpus: every file in `tests/malformed/` must fail to
//! compile, and each problem it declares with a header line
//!
//! ```text
//! # expect: LINE:COL substring of the message
//! ```
//!
//! must be reported at exactly that place (where the diagnostic's span starts,
//! 1-based), with a rendered `file:line:col` and its hint. No other diagnostic may
//! appear: a follow-on error is a bug too.

use knetsim_compiler::{compile, CompileOptions, Diagnostic, Diagnostics, Source};
use std::path::{Path, PathBuf};
use std::process::Command;

const CORPUS: &str = "tests/malformed";
const MIN_CASES: usize = 30;

struct Expect {
    line: usize,
    col: usize,
    substring: String,
}

impl Expect {
    fn location(&self, file: &str) -> String {
        format!("{file}:{}:{}", self.line, self.col)
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The corpus files, sorted, as paths relative to the package root.
fn corpus() -> Vec<String> {
    let dir = root().join(CORPUS);
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| {
            entry
                .expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".toml"))
        .map(|name| format!("{CORPUS}/{name}"))
        .collect();
    files.sort();
    files
}

/// The `# expect: LINE:COL substring` lines at the top of a case.
fn expectations(file: &str, text: &str) -> Result<Vec<Expect>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let Some(rest) = line.strip_prefix("# expect:") else {
            continue;
        };
        let rest = rest.trim();
        let (at, substring) = rest
            .split_once(' ')
            .ok_or_else(|| format!("{file}:{}: expected `# expect: LINE:COL substring`", i + 1))?;
        let (l, c) = at
            .split_once(':')
            .ok_or_else(|| format!("{file}:{}: `{at}` is not LINE:COL", i + 1))?;
        let parse = |v: &str| {
            v.parse::<usize>()
                .map_err(|_| format!("{file}:{}: `{at}` is not LINE:COL", i + 1))
        };
        out.push(Expect {
            line: parse(l)?,
            col: parse(c)?,
            substring: substring.trim().to_string(),
        });
    }
    if out.is_empty() {
        return Err(format!("{file}: no `# expect: LINE:COL substring` line"));
    }
    Ok(out)
}

/// Every diagnostic, one per line, for failure messages.
fn listing(d: &Diagnostics) -> String {
    d.items
        .iter()
        .map(|item| {
            let hint = item
                .hint
                .as_deref()
                .map(|h| format!(" [hint: {h}]"))
                .unwrap_or_default();
            format!("    {}: {}{hint}\n", d.location(item), item.message)
        })
        .collect()
}

fn matches(d: &Diagnostics, item: &Diagnostic, expect: &Expect) -> bool {
    d.location(item) == expect.location(&d.file) && item.message.contains(&expect.substring)
}

/// Checks one case; returns the problems found (empty = pass).
fn check_case(file: &str) -> Vec<String> {
    let text = std::fs::read_to_string(root().join(file)).expect("readable case");
    let expects = match expectations(file, &text) {
        Ok(e) => e,
        Err(e) => return vec![e],
    };
    let diagnostics = match compile(&Source::new(file, text), &CompileOptions::default()) {
        Ok(_) => return vec![format!("{file}: compiled without error, but it is malformed")],
        Err(d) => d,
    };
    let mut problems = Vec::new();
    let rendered = diagnostics.render();
    for expect in &expects {
        let Some(item) = diagnostics
            .items
            .iter()
            .find(|item| matches(&diagnostics, item, expect))
        else {
            problems.push(format!(
                "{file}: expected a diagnostic at {} containing {:?}",
                expect.location(file),
                expect.substring
            ));
            continue;
        };
        if !rendered.contains(&expect.location(file)) {
            problems.push(format!("{file}: render() lacks {}", expect.location(file)));
        }
        // Render this diagnostic alone, so its hint is known to be its own.
        let alone = Diagnostics {
            items: vec![item.clone()],
            ..diagnostics.clone()
        }
        .render();
        if !alone.contains(&format!("{}: {}", expect.location(file), item.message)) {
            problems.push(format!(
                "{file}: render() lacks `location: message` for {:?}",
                item.message
            ));
        }
        if let Some(hint) = &item.hint {
            let first = hint.lines().next().unwrap_or_default();
            if !alone.contains(&format!("hint: {first}")) || !rendered.contains(&format!("hint: {first}")) {
                problems.push(format!(
                    "{file}: render() lacks the `hint:` line for {:?}",
                    item.message
                ));
            }
        }
    }
    for item in &diagnostics.items {
        if item.span.is_none() {
            problems.push(format!("{file}: diagnostic without a location: {:?}", item.message));
        }
        if !expects.iter().any(|e| matches(&diagnostics, item, e)) {
            problems.push(format!(
                "{file}: unexpected diagnostic {}: {}",
                diagnostics.location(item),
                item.message
            ));
        }
    }
    if !problems.is_empty() {
        problems.push(format!("  actual diagnostics of {file}:\n{}", listing(&diagnostics)));
    }
    problems
}

#[test]
fn every_malformed_topology_is_reported_precisely() {
    let files = corpus();
    assert!(
        files.len() >= MIN_CASES,
        "{CORPUS} holds {} cases, expected at least {MIN_CASES}",
        files.len()
    );
    let failures: Vec<Vec<String>> = files.iter().map(|f| check_case(f)).filter(|p| !p.is_empty()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} malformed topologies are not reported as expected:\n{}",
        failures.len(),
        files.len(),
        failures.concat().join("\n")
    );
}

#[test]
fn one_case_reports_several_errors_at_once() {
    let several = corpus()
        .into_iter()
        .filter(|f| {
            let text = std::fs::read_to_string(root().join(f)).expect("readable case");
            expectations(f, &text).map(|e| e.len() >= 3).unwrap_or(false)
        })
        .count();
    assert!(several >= 1, "no case of {CORPUS} expects three or more errors");
}

fn knetsim(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_knetsim"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("knetsim runs")
}

#[test]
fn knetsim_check_reports_file_line_col_snippet_and_hint() {
    let file = format!("{CORPUS}/06-pod-on-missing-worker.toml");
    let text = std::fs::read_to_string(root().join(&file)).expect("readable case");
    let expect = &expectations(&file, &text).expect("expectations")[0];
    let snippet = text.lines().nth(expect.line - 1).expect("line in file").trim();

    let out = knetsim(&["check", &file]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "knetsim check {file}:\n{stderr}");
    assert!(
        stderr.contains(&expect.location(&file)),
        "stderr lacks {}:\n{stderr}",
        expect.location(&file)
    );
    assert!(
        stderr.contains(snippet),
        "stderr lacks the snippet {snippet:?}:\n{stderr}"
    );
    assert!(stderr.contains("hint:"), "stderr lacks a hint:\n{stderr}");
}

#[test]
fn knetsim_check_accepts_the_default_topology() {
    let out = knetsim(&["check", "topologies/default.toml"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "knetsim check topologies/default.toml:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(Path::new(&root().join("topologies/default.toml")).exists());
}
