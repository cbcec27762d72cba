//! `knetsim test`: runs the topology's `[[checks]]` (the bundle's `checks.json`)
//! against the running emulation and prints a pass/fail table, like netlab's
//! `validate`. `knetsim up` runs the same checks when it is done.

use super::error::Outcome;
use super::running::display_name;
use super::running::recorded_state;
use super::status::print_table;
use super::Target;
use knetsim_compiler::artifacts::{checks, paths::CHECKS};
use knetsim_compiler::model::Check;
use knetsim_executor::checks::{run_all, Settings, Verdict};
use knetsim_executor::layout::StateLayout;
use std::time::Duration;

#[derive(clap::Args)]
pub struct TestArgs {
    #[command(flatten)]
    target: Target,
    /// Run only the check with this name (repeatable).
    #[arg(long = "check", value_name = "CHECK")]
    only: Vec<String>,
    /// Seconds a check that does not give its expected result is retried (a fresh emulation may still converge).
    #[arg(long, default_value_t = 10)]
    settle: u64,
    /// Checks run at the same time.
    #[arg(long, default_value_t = 8)]
    parallelism: usize,
    /// Print the results as JSON (one object per check) instead of the table.
    #[arg(long)]
    json: bool,
    /// Instead of the checks: a TCP connect from every pod to every pod, printed as
    /// the NetworkPolicy e2e suite's truth table (`.` connects, `X` does not).
    #[arg(long)]
    matrix: bool,
    /// Ports the matrix probes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "80", requires = "matrix", value_parser = clap::value_parser!(u16).range(1..))]
    ports: Vec<u16>,
    /// The matrix's protocol: tcp (a connect) or udp (a datagram that gets an answer;
    /// workloads answer UDP with `knetsim serve --udp`).
    #[arg(long, default_value = "tcp", value_parser = ["tcp", "udp"], requires = "matrix")]
    protocol: String,
    /// Namespaces whose pods the matrix probes (repeatable; default: all but kube-system).
    #[arg(long = "namespace", requires = "matrix")]
    namespaces: Vec<String>,
    /// The cluster the matrix probes (default: the first).
    #[arg(long, requires = "matrix")]
    cluster: Option<String>,
    /// Seconds a matrix connection may take.
    #[arg(long, default_value_t = 1, requires = "matrix")]
    timeout: u64,
}

/// How `up` and `test` run the checks.
pub struct RunOptions {
    pub settle: Duration,
    pub parallelism: usize,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            settle: Duration::from_secs(10),
            parallelism: 8,
        }
    }
}

/// Reads `checks.json` text; an error names the file.
pub fn parse_checks(text: &str) -> Result<Vec<Check>, String> {
    checks::parse(text).map_err(|e| format!("{CHECKS}: {e}"))
}

/// Runs `checks` and prints the table and a summary line; true when none failed
/// (skipped checks do not fail).
pub fn run_and_print(checks: &[Check], skipped: &[String], opts: &RunOptions) -> bool {
    run_and_report(checks, skipped, opts, false)
}

fn run_and_report(checks: &[Check], skipped: &[String], opts: &RunOptions, json: bool) -> bool {
    let settings = Settings {
        parallelism: opts.parallelism.max(1),
        settle: opts.settle,
        skipped: skipped.to_vec(),
    };
    eprintln!(
        "running {} check{} ...",
        checks.len(),
        if checks.len() == 1 { "" } else { "s" }
    );
    let outcomes = run_all(checks, &settings);
    let count = |v: Verdict| outcomes.iter().filter(|o| o.verdict == v).count();
    let (passed, failed, skipped) = (count(Verdict::Pass), count(Verdict::Fail), count(Verdict::Skipped));
    if json {
        let results: Vec<serde_json::Value> = checks
            .iter()
            .zip(&outcomes)
            .map(|(c, o)| {
                serde_json::json!({
                    "name": c.name,
                    "from": c.from,
                    "probe": c.probe.describe(),
                    "expect": c.expect.name(),
                    "result": o.verdict.name().to_lowercase(),
                    "detail": o.detail,
                    "attempts": o.attempts,
                })
            })
            .collect();
        let report = serde_json::json!({
            "passed": passed,
            "failed": failed,
            "skipped": skipped,
            "checks": results,
        });
        println!("{}", serde_json::to_string_pretty(&report).expect("JSON serializes"));
        return failed == 0;
    }
    let rows: Vec<Vec<String>> = checks
        .iter()
        .zip(&outcomes)
        .map(|(c, o)| {
            vec![
                c.name.clone(),
                c.from.clone(),
                c.probe.describe(),
                c.expect.name().to_string(),
                o.verdict.name().to_string(),
                o.detail.clone(),
            ]
        })
        .collect();
    print_table(&["CHECK", "FROM", "PROBE", "EXPECT", "RESULT", "DETAIL"], &rows);
    let mut summary = format!("checks: {passed} passed, {failed} failed");
    if skipped > 0 {
        summary.push_str(&format!(", {skipped} skipped (component not running)"));
    }
    println!("{summary}");
    failed == 0
}

/// Exit 0: every selected check passed (or was skipped); 1: one failed.
pub fn test(a: TestArgs) -> Outcome {
    if a.matrix {
        return super::matrix::matrix(super::matrix::MatrixArgs {
            target: &a.target,
            ports: &a.ports,
            protocol: &a.protocol,
            namespaces: &a.namespaces,
            cluster: a.cluster.as_deref(),
            timeout: Duration::from_secs(a.timeout.max(1)),
            json: a.json,
        });
    }
    let (opts, st) = recorded_state(&a.target)?;
    let path = StateLayout::new(&opts.state_dir)
        .running_bundle(st.generation)
        .join(CHECKS);
    let all = match std::fs::read_to_string(&path) {
        Ok(text) => parse_checks(&text)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && a.json => {
            println!(r#"{{ "passed": 0, "failed": 0, "skipped": 0, "checks": [] }}"#);
            return Ok(0);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!(
                "emulation {} has no checks: its topology declares no [[checks]]",
                display_name(&opts.name)
            );
            return Ok(0);
        }
        Err(e) => return Err(format!("{}: {e}", path.display()).into()),
    };
    if let Some(unknown) = a.only.iter().find(|n| !all.iter().any(|c| &&c.name == n)) {
        let names: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
        return Err(format!("no check `{unknown}`; checks: {}", names.join(", ")).into());
    }
    let selected: Vec<Check> = all
        .into_iter()
        .filter(|c| a.only.is_empty() || a.only.contains(&c.name))
        .collect();
    let run = RunOptions {
        settle: Duration::from_secs(a.settle),
        parallelism: a.parallelism,
    };
    Ok(i32::from(!run_and_report(&selected, &st.skip, &run, a.json)))
}
