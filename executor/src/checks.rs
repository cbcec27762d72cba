//! Runs the topology's validation checks (`checks.json`) inside the emulation:
//! each probe is the real tool (iputils `ping`, `curl` or else `wget`) started in
//! the `from` node's network namespace. Checks run in parallel; one that does not
//! yet give its expected result is retried until a settle deadline, since a
//! freshly started emulation may still be converging (router links, workloads).
//! Reading the tools' output is pure and unit-tested.

use crate::system::linux::open_netns_entry;
use crate::system::process::{command_in_netns, which};
use knetsim_compiler::model::{BodyMatch, Check, CheckProbe, Expectation};
use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    /// Needs a component that `up --skip` left out.
    Skipped,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "FAIL",
            Verdict::Skipped => "skipped",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    /// What was seen: loss, bodies, the error.
    pub detail: String,
    pub attempts: u32,
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// Checks run at the same time.
    pub parallelism: usize,
    /// How long a check that does not give its expected result is retried.
    pub settle: Duration,
    /// Components left out of the emulation (`ingress`, `interconnect`, `workloads`).
    pub skipped: Vec<String>,
}

/// What one attempt of a probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    Ping(PingSummary),
    /// One entry per request: the body, or the client's error.
    Http(Vec<Result<String, String>>),
    /// `seen[from][to]` of a reachability matrix.
    Matrix(Vec<Vec<bool>>),
    /// What the lookup found, or why it got no answer (a server still starting: retried).
    Dns(Result<crate::dns_probe::Lookup, String>),
    /// The probe could not be run at all (no such namespace, no tool).
    Broken(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingSummary {
    pub transmitted: u32,
    pub received: u32,
    /// Average round-trip time as ping prints it (`0.061`), when any reply came.
    pub rtt_avg_ms: Option<String>,
    /// ping's error output when it printed no statistics.
    pub error: Option<String>,
}

/// Runs every check, at most `settings.parallelism` at once; outcomes are in the
/// order of `checks`.
pub fn run_all(checks: &[Check], settings: &Settings) -> Vec<Outcome> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Outcome>>> = Mutex::new(vec![None; checks.len()]);
    let workers = settings.parallelism.clamp(1, checks.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(check) = checks.get(i) else { break };
                let outcome = run_one(check, settings);
                results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(outcome);
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|o| o.expect("every check ran"))
        .collect()
}

/// One check, retried until it gives its expected result or the settle time is over.
pub fn run_one(check: &Check, settings: &Settings) -> Outcome {
    let missing: Vec<&str> = check
        .needs
        .iter()
        .filter(|n| settings.skipped.contains(n))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Outcome {
            verdict: Verdict::Skipped,
            detail: format!("component not running: {} (up --skip)", missing.join(", ")),
            attempts: 0,
        };
    }
    let deadline = Instant::now() + settings.settle;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let seen = observe(check);
        let (passed, detail) = judge(check, &seen);
        let broken = matches!(seen, Observation::Broken(_));
        if passed || broken || Instant::now() >= deadline {
            return Outcome {
                verdict: if passed { Verdict::Pass } else { Verdict::Fail },
                detail,
                attempts,
            };
        }
        std::thread::sleep(Duration::from_millis(500).min(deadline.saturating_duration_since(Instant::now())));
    }
}

/// Runs the probe once in the check's namespace.
fn observe(check: &Check) -> Observation {
    match &check.probe {
        CheckProbe::Ping { address, count, .. } => {
            let argv = ping_argv(&address.to_string(), *count, check.timeout);
            match run_in(&check.netns, &argv) {
                Ok((_, stdout, stderr)) => Observation::Ping(parse_ping(&stdout, &stderr)),
                Err(e) => Observation::Broken(e),
            }
        }
        CheckProbe::Http { request, tries, .. } => {
            let Some(client) = HttpClient::find() else {
                return Observation::Broken("neither curl nor wget is installed".into());
            };
            let mut responses = Vec::new();
            for _ in 0..*tries {
                match run_in(&check.netns, &client.argv(request, check.timeout)) {
                    Ok((true, body, _)) => responses.push(Ok(body)),
                    Ok((false, _, stderr)) => responses.push(Err(first_line(&stderr, client.name()))),
                    Err(e) => return Observation::Broken(e),
                }
            }
            Observation::Http(responses)
        }
        CheckProbe::Matrix(m) => match crate::matrix::probe(m, Duration::from_secs(check.timeout.into())) {
            Ok(seen) => Observation::Matrix(seen),
            Err(e) => Observation::Broken(e),
        },
        CheckProbe::Dns(probe) => Observation::Dns(crate::dns_probe::lookup(
            &check.netns,
            probe,
            Duration::from_secs(check.timeout.into()),
        )),
    }
}

/// Whether what was seen is what the check expects, and the detail to show.
pub fn judge(check: &Check, seen: &Observation) -> (bool, String) {
    let expect_success = check.expect == Expectation::Success;
    match seen {
        Observation::Broken(e) => (false, e.clone()),
        Observation::Matrix(cells) => {
            let CheckProbe::Matrix(m) = &check.probe else {
                return (false, "not a matrix check".into());
            };
            judge_matrix(m, cells)
        }
        Observation::Dns(Err(e)) => (false, e.clone()),
        Observation::Dns(Ok(found)) => match &check.probe {
            CheckProbe::Dns(probe) => {
                let (ok, detail) = crate::dns_probe::judge(probe, found);
                (ok == expect_success, detail)
            }
            _ => (false, "not a dns check".into()),
        },
        Observation::Ping(p) => {
            let answered = p.received > 0;
            let detail = match (&p.error, p.transmitted) {
                (Some(e), 0) => e.clone(),
                _ => {
                    let lost = p.transmitted - p.received.min(p.transmitted);
                    let loss = (100 * lost).checked_div(p.transmitted).unwrap_or(100);
                    let mut d = format!("{}/{} replies, {loss}% loss", p.received, p.transmitted);
                    if let Some(avg) = &p.rtt_avg_ms {
                        d.push_str(&format!(", avg {avg} ms"));
                    }
                    d
                }
            };
            (answered == expect_success, detail)
        }
        Observation::Http(responses) => {
            let errors: Vec<&String> = responses.iter().filter_map(|r| r.as_ref().err()).collect();
            let bodies: Vec<&str> = responses
                .iter()
                .filter_map(|r| r.as_ref().ok())
                .map(|b| b.trim())
                .collect();
            let n = responses.len();
            if !expect_success {
                return match errors.first() {
                    _ if !bodies.is_empty() => {
                        (false, format!("{}/{n} answered: {}", bodies.len(), snippet(bodies[0])))
                    }
                    Some(e) => (true, format!("{n}/{n} failed: {e}")),
                    None => (true, "no request made".into()),
                };
            }
            if let Some(e) = errors.first() {
                return (false, format!("{}/{n} failed: {e}", errors.len()));
            }
            let CheckProbe::Http { body: Some(want), .. } = &check.probe else {
                let first = bodies.first().copied().unwrap_or_default();
                return (true, format!("{n}/{n} answered: {}", snippet(first)));
            };
            judge_bodies(want, &bodies)
        }
    }
}

/// A matrix passes when every cell is as expected; the detail lists the wrong
/// cells and shows the table seen.
fn judge_matrix(m: &knetsim_compiler::model::matrix::Matrix, seen: &[Vec<bool>]) -> (bool, String) {
    let mut wrong = Vec::new();
    for (a, row) in seen.iter().enumerate() {
        for (b, &ok) in row.iter().enumerate() {
            if m.expect.get(a).and_then(|r| r.get(b)) != Some(&ok) {
                let (from, to) = (&m.pods[a].label, &m.pods[b].label);
                wrong.push(format!("{from} -> {to} {}", if ok { "connects" } else { "blocked" }));
            }
        }
    }
    let n = m.pods.len();
    if wrong.is_empty() {
        return (true, format!("{n}x{n} as expected"));
    }
    let labels: Vec<&str> = m.pods.iter().map(|p| p.label.as_str()).collect();
    let table = knetsim_compiler::model::matrix::render(&labels, seen);
    (
        false,
        format!(
            "{} of {} cells differ: {}\n{table}",
            wrong.len(),
            n * n,
            wrong.join(", ")
        ),
    )
}

fn judge_bodies(want: &BodyMatch, bodies: &[&str]) -> (bool, String) {
    let n = bodies.len();
    match want {
        BodyMatch::Contains(text) => match bodies.iter().find(|b| !b.contains(text.as_str())) {
            Some(b) => (false, format!("a body lacks {text:?}: {}", snippet(b))),
            None => (true, format!("{n}/{n} bodies contain {text:?}")),
        },
        BodyMatch::EachOf(texts) => {
            let mut seen: BTreeMap<&str, u32> = texts.iter().map(|t| (t.as_str(), 0)).collect();
            for b in bodies {
                match texts.iter().find(|t| b.contains(t.as_str())) {
                    Some(t) => *seen.entry(t.as_str()).or_default() += 1,
                    None => return (false, format!("unexpected body: {}", snippet(b))),
                }
            }
            let counts = texts
                .iter()
                .map(|t| format!("{t} x{}", seen[t.as_str()]))
                .collect::<Vec<_>>()
                .join(", ");
            let all = seen.values().all(|c| *c > 0);
            let detail = if all {
                format!("{n} requests: {counts}")
            } else {
                format!("{n} requests: {counts} (not all seen)")
            };
            (all, detail)
        }
    }
}

/// The first 60 characters of the first line of a body, for tables.
fn snippet(body: &str) -> String {
    let line = body.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    let mut s: String = line.chars().take(60).collect();
    if line.chars().count() > 60 {
        s.push_str("...");
    }
    format!("{s:?}")
}

fn first_line(stderr: &str, tool: &str) -> String {
    stderr
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| format!("{tool} failed"))
}

pub fn ping_argv(address: &str, count: u32, timeout: u32) -> Vec<String> {
    // No -w deadline: with one, ping goes on sending until `count` replies came.
    // Without, it sends `count` requests 0.2 s apart and waits `timeout` for the last.
    [
        "ping",
        "-n",
        "-q",
        "-c",
        &count.to_string(),
        "-i",
        "0.2",
        "-W",
        &timeout.to_string(),
        address,
    ]
    .map(String::from)
    .to_vec()
}

/// Reads iputils ping's summary (`2 packets transmitted, 2 received, 0% packet loss`
/// and `rtt min/avg/max/mdev = 0.041/0.061/0.081/0.020 ms`).
pub fn parse_ping(stdout: &str, stderr: &str) -> PingSummary {
    let mut summary = PingSummary {
        transmitted: 0,
        received: 0,
        rtt_avg_ms: None,
        error: None,
    };
    let mut found = false;
    for line in stdout.lines() {
        if line.contains("packets transmitted") {
            found = true;
            for part in line.split(',') {
                let mut words = part.split_whitespace();
                let (Some(n), Some(what)) = (words.next(), words.next()) else {
                    continue;
                };
                match what {
                    "packets" => summary.transmitted = n.parse().unwrap_or(0),
                    "received" => summary.received = n.parse().unwrap_or(0),
                    _ => {}
                }
            }
        } else if let Some(values) = line.split_once(" = ").filter(|(k, _)| k.starts_with("rtt")) {
            summary.rtt_avg_ms = values.1.split('/').nth(1).map(str::to_string);
        }
    }
    if !found {
        summary.error = Some(first_line(stderr, "ping"));
    }
    summary
}

enum HttpClient {
    Curl,
    Wget,
}

impl HttpClient {
    fn find() -> Option<HttpClient> {
        if which("curl").is_some() {
            Some(HttpClient::Curl)
        } else if which("wget").is_some() {
            Some(HttpClient::Wget)
        } else {
            None
        }
    }

    fn name(&self) -> &'static str {
        match self {
            HttpClient::Curl => "curl",
            HttpClient::Wget => "wget",
        }
    }

    /// One GET of `url`, body on stdout; an HTTP error status is a failure.
    fn argv(&self, url: &str, timeout: u32) -> Vec<String> {
        let t = timeout.to_string();
        let v: Vec<&str> = match self {
            HttpClient::Curl => vec!["curl", "-s", "-S", "-f", "-m", &t, url],
            HttpClient::Wget => vec!["wget", "-q", "-O", "-", "-T", &t, "-t", "1", url],
        };
        v.into_iter().map(String::from).collect()
    }
}

/// Runs argv inside `netns`: (exited 0, stdout, stderr), or why it could not run.
fn run_in(netns: &str, argv: &[String]) -> Result<(bool, String, String), String> {
    let fd = open_netns_entry(netns).map_err(|e| e.to_string())?;
    let out = command_in_netns(fd, &argv[0], &argv[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", argv[0]))?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(probe: CheckProbe, expect: Expectation) -> Check {
        Check {
            name: "t".into(),
            from: "C0w1".into(),
            netns: "C0w1".into(),
            probe,
            expect,
            timeout: 2,
            needs: vec!["ingress".into()],
        }
    }

    fn http(body: Option<BodyMatch>) -> CheckProbe {
        CheckProbe::Http {
            url: "http://x/".into(),
            request: "http://x/".into(),
            body,
            tries: 3,
        }
    }

    fn ping() -> CheckProbe {
        CheckProbe::Ping {
            target: "C0/c2".into(),
            address: "11.10.16.2".parse().unwrap(),
            count: 2,
        }
    }

    #[test]
    fn ping_summaries_are_read() {
        let out = "PING 11.10.16.2 (11.10.16.2) 56(84) bytes of data.\n\n--- 11.10.16.2 ping statistics ---\n\
                   2 packets transmitted, 2 received, 0% packet loss, time 201ms\n\
                   rtt min/avg/max/mdev = 0.041/0.061/0.081/0.020 ms\n";
        let p = parse_ping(out, "");
        assert_eq!(
            (p.transmitted, p.received, p.rtt_avg_ms.as_deref()),
            (2, 2, Some("0.061"))
        );
        let out = "--- 10.9.9.9 ping statistics ---\n3 packets transmitted, 0 received, +3 errors, 100% packet loss, time 2040ms\n";
        let p = parse_ping(out, "");
        assert_eq!((p.transmitted, p.received, p.rtt_avg_ms), (3, 0, None));
        let p = parse_ping("", "ping: connect: Network is unreachable\n");
        assert_eq!(p.error.as_deref(), Some("ping: connect: Network is unreachable"));
    }

    #[test]
    fn ping_verdicts_follow_the_expectation() {
        let answered = Observation::Ping(PingSummary {
            transmitted: 2,
            received: 1,
            rtt_avg_ms: Some("0.1".into()),
            error: None,
        });
        let silent = Observation::Ping(PingSummary {
            transmitted: 2,
            received: 0,
            rtt_avg_ms: None,
            error: None,
        });
        let ok = check(ping(), Expectation::Success);
        assert_eq!(
            judge(&ok, &answered),
            (true, "1/2 replies, 50% loss, avg 0.1 ms".into())
        );
        assert_eq!(judge(&ok, &silent), (false, "0/2 replies, 100% loss".into()));
        let blocked = check(ping(), Expectation::Failure);
        assert!(judge(&blocked, &silent).0);
        assert!(!judge(&blocked, &answered).0);
    }

    #[test]
    fn bodies_are_matched_as_declared() {
        let seen = |bodies: &[&str]| Observation::Http(bodies.iter().map(|b| Ok(b.to_string())).collect());
        let each = check(
            http(Some(BodyMatch::EachOf(vec!["S1-W2".into(), "S1-W3".into()]))),
            Expectation::Success,
        );
        assert_eq!(
            judge(&each, &seen(&["S1-W2\n", "S1-W3\n", "S1-W2\n"])),
            (true, "3 requests: S1-W2 x2, S1-W3 x1".into())
        );
        let (ok, detail) = judge(&each, &seen(&["S1-W2", "S1-W2", "S1-W2"]));
        assert!(!ok && detail.contains("not all seen"), "{detail}");
        let (ok, detail) = judge(&each, &seen(&["S1-W2", "S2-W3", "S1-W3"]));
        assert!(!ok && detail.contains("unexpected body: \"S2-W3\""), "{detail}");

        let contains = check(http(Some(BodyMatch::Contains("S1-W".into()))), Expectation::Success);
        assert!(judge(&contains, &seen(&["S1-W2", "S1-W3", "S1-W3"])).0);
        assert!(!judge(&contains, &seen(&["S1-W2", "nope", "S1-W3"])).0);

        let failed = Observation::Http(vec![Err("curl: (7) Failed to connect".into()); 3]);
        assert_eq!(
            judge(&contains, &failed),
            (false, "3/3 failed: curl: (7) Failed to connect".into())
        );
        let refused = check(http(None), Expectation::Failure);
        assert!(judge(&refused, &failed).0);
        assert!(!judge(&refused, &seen(&["hello"])).0);
    }

    #[test]
    fn a_check_needing_a_skipped_component_is_skipped_without_running() {
        let c = check(http(None), Expectation::Success);
        let settings = Settings {
            parallelism: 2,
            settle: Duration::ZERO,
            skipped: vec!["ingress".into()],
        };
        let o = run_one(&c, &settings);
        assert_eq!(o.verdict, Verdict::Skipped);
        assert_eq!(o.attempts, 0);
        assert!(o.detail.contains("ingress"), "{}", o.detail);
    }

    #[test]
    fn argv_of_the_real_tools() {
        assert_eq!(
            ping_argv("10.0.0.4", 2, 2).join(" "),
            "ping -n -q -c 2 -i 0.2 -W 2 10.0.0.4"
        );
        assert_eq!(
            HttpClient::Curl.argv("http://10.0.0.3:8001/svc1", 2).join(" "),
            "curl -s -S -f -m 2 http://10.0.0.3:8001/svc1"
        );
    }
}
