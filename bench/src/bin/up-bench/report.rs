//! The printed report: the header, a table per case, where the time of `up` goes
//! (slowest steps, time per kind of step, the critical path) and the targets.

use crate::emulation::{Step, UpRun};
use crate::format::{mb, median, ms, on_path, opt, secs, stat, utc};
use crate::observe::Mem;
use crate::run::Outcome;
use crate::{Case, AGENT_RSS_TARGET_KB, DOWN_TARGET, UP_TARGET};
use knetsim_bench::cpu_model;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, SystemTime};

pub(super) fn report(bin: &Path, built: &str, started_at: SystemTime, results: &[(Case, Outcome)], soak: u64) {
    println!();
    println!("knetsim up/down benchmark, {}", utc(started_at));
    println!(
        "machine: {} x {} | knetsim: {} (built {built}, run from a private copy){}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        cpu_model(),
        bin.display(),
        if bin.parent().and_then(Path::file_name).is_some_and(|d| d == "release") {
            ""
        } else {
            " NOT A RELEASE BUILD"
        }
    );
    println!(
        "each up/down is the knetsim CLI in a child process; wall = spawn to exit; own = the time knetsim prints; MB = 10^6 bytes"
    );
    println!(
        "cpu = user + sys of `knetsim up` and the helpers it waited for (ip, nft, CNI plugins, iptables; not the daemons)"
    );
    if let Some(py) = on_path("python3") {
        let script = std::fs::read(&py).map(|b| b.starts_with(b"#!")).unwrap_or(false);
        println!(
            "python3 on PATH (pod C0/c4 of the default topology runs `python3 -m http.server`): {}{}",
            py.display(),
            if script { " (a script, e.g. a pyenv shim)" } else { "" }
        );
    }
    println!();

    println!("Up and down (wall clock)");
    println!(
        "{:<16} {:<22} {:<32} {:>4} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  load before -> after",
        "case",
        "skip",
        "size",
        "reps",
        "up min",
        "up med",
        "up max",
        "own med",
        "cpu med",
        "down min",
        "down med",
        "down max",
        "own med"
    );
    for (case, o) in results {
        let up: Vec<Duration> = o.ups.iter().map(|u| u.wall).collect();
        let down: Vec<Duration> = o.downs.iter().map(|d| d.wall).collect();
        let own: Vec<Duration> = o
            .ups
            .iter()
            .filter_map(|u| u.own)
            .map(Duration::from_secs_f64)
            .collect();
        let down_own: Vec<Duration> = o
            .downs
            .iter()
            .filter_map(|d| d.own)
            .map(Duration::from_secs_f64)
            .collect();
        let size = o.ups.first().map(|u| u.summary.as_str()).unwrap_or("-");
        println!(
            "{:<16} {:<22} {:<32} {:>4} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  {} -> {}",
            case.id,
            case.skip,
            size.replace(" processes", " procs"),
            up.len(),
            opt(stat(&up).map(|s| s.0)),
            opt(stat(&up).map(|s| s.1)),
            opt(stat(&up).map(|s| s.2)),
            opt(stat(&own).map(|s| s.1)),
            opt(stat(&o.ups.iter().map(|u| u.cpu).collect::<Vec<_>>()).map(|s| s.1)),
            opt(stat(&down).map(|s| s.0)),
            opt(stat(&down).map(|s| s.1)),
            opt(stat(&down).map(|s| s.2)),
            opt(stat(&down_own).map(|s| s.1)),
            o.load_before,
            o.load_after,
        );
    }
    for (case, _) in results {
        if let Some(base) = case.state_base {
            println!(
                "  {}: state directory on {base} (`--state-dir {base}/knetsim-NAME`)",
                case.id
            );
        }
    }
    for (case, o) in results {
        let list = |v: Vec<Duration>| v.into_iter().map(secs).collect::<Vec<_>>().join(", ");
        if !o.ups.is_empty() {
            println!(
                "  {}: up {} | down {}",
                case.id,
                list(o.ups.iter().map(|u| u.wall).collect()),
                list(o.downs.iter().map(|d| d.wall).collect())
            );
        }
    }
    for (case, o) in results {
        for e in &o.errors {
            println!("  {}: ERROR {e}", case.id);
        }
    }
    println!();

    println!("Memory (min / median / max over the processes; kB = 1024 bytes as /proc reports it, shown in MB)");
    println!(
        "{:<48} {:>4}  {:<27} {:<27} {:>8} {:>8} {:>8}",
        "processes", "n", "VmRSS", "VmHWM", "RssAnon", "RssFile", "Pss"
    );
    for (case, o) in results {
        let rows = [
            ("flanneld (built-in agent)", "after up", &o.agents_after_up),
            ("flanneld (built-in agent)", "after soak", &o.agents_after_soak),
            ("etcd", "after up", &o.etcd_after_up),
            ("etcd", "after soak", &o.etcd_after_soak),
        ];
        for (what, when, m) in rows {
            if m.is_empty() {
                continue;
            }
            let when = if when == "after soak" {
                format!("{soak} s after up")
            } else {
                when.to_string()
            };
            let f = |get: fn(&Mem) -> u64| m.iter().map(get).collect::<Vec<u64>>();
            let triple = |v: Vec<u64>| {
                let (a, b, c) = stat(&v).unwrap_or_default();
                format!("{} / {} / {}", mb(a), mb(b), mb(c))
            };
            println!(
                "{:<48} {:>4}  {:<27} {:<27} {:>8} {:>8} {:>8}",
                format!("{what}, {}, {when}", case.id),
                m.len(),
                triple(f(|m| m.rss)),
                triple(f(|m| m.hwm)),
                mb(median(&f(|m| m.anon))),
                mb(median(&f(|m| m.file))),
                mb(median(&f(|m| m.pss))),
            );
        }
    }
    println!("(RssAnon / RssFile / Pss: medians; RssFile = file pages mapped (the knetsim or etcd binary), shared between the processes; Pss shares them out)");
    for (case, o) in results {
        if o.idle_cpu.is_empty() {
            continue;
        }
        let secs_idle = o.idle_for.as_secs_f64().max(1e-3);
        let parts: Vec<String> = o
            .idle_cpu
            .iter()
            .map(|(k, (n, c))| {
                format!(
                    "{k} ({n}) {} ms = {:.1} % of a core",
                    c.as_millis(),
                    c.as_secs_f64() / secs_idle * 100.0
                )
            })
            .collect();
        println!(
            "CPU of the daemons of {} while idle for {:.1} s after up: {}",
            case.id,
            secs_idle,
            parts.join("; ")
        );
    }
    println!();

    for (case, o) in results {
        breakdown(case, o);
    }

    targets(results, soak);
}

/// Where the time of `up` goes, for the repetition with the median wall time.
fn breakdown(case: &Case, o: &Outcome) {
    if o.ups.is_empty() {
        return;
    }
    let mut order: Vec<usize> = (0..o.ups.len()).collect();
    order.sort_by_key(|&i| o.ups[i].wall);
    let run = &o.ups[order[(order.len() - 1) / 2]];
    let Some(last) = run.steps.iter().max_by_key(|s| s.finish) else {
        return;
    };
    let begin = run.apply_begin.unwrap_or_default();
    println!(
        "Where `up` goes, {} (the median repetition: {}; {} steps)",
        case.id,
        secs(run.wall),
        run.steps.len()
    );
    println!(
        "  before the first step (exec, compile, preflight, state + bundle written): {}",
        ms(begin)
    );
    println!(
        "  steps (\"bringing up\" -> last step done):                               {}",
        ms(last.finish.saturating_sub(begin))
    );
    println!(
        "  after the last step (summary, exit):                                     {}",
        ms(run.wall.saturating_sub(last.finish))
    );
    println!(
        "  CPU (user + sys): knetsim up and the helpers it ran {} ms; the daemons it started, until it exited: {}",
        run.cpu.as_millis(),
        run.daemon_cpu
            .iter()
            .map(|(k, v)| format!("{k} {} ms", v.as_millis()))
            .collect::<Vec<_>>()
            .join(", ")
    );

    if o.deps.is_empty() {
        println!("  (no plan.json read: no critical path)");
    } else {
        let chain = critical_path(run, &o.deps);
        let own: u64 = chain.iter().map(|s| s.ms).sum();
        println!(
            "  critical path ({} steps, {} ms in the steps themselves, the rest waiting for a worker thread / the coordinator):",
            chain.len(),
            own
        );
        println!("    {:>8} {:>8} {:>8}  step", "start", "took", "waited");
        let mut prev_finish = begin;
        for s in &chain {
            println!(
                "    {:>8} {:>8} {:>8}  {}",
                ms(s.start()),
                format!("{} ms", s.ms),
                ms(s.start().saturating_sub(prev_finish)),
                s.id
            );
            prev_finish = s.finish;
        }
        println!("  critical path of every repetition, by kind of step (ms; \"wait\" = between steps, \"pre\"/\"post\" = before/after the steps):");
        for u in &o.ups {
            println!("    {:>7}: {}", secs(u.wall), path_by_kind(u, &o.deps));
        }
    }

    // Slowest steps: median over the repetitions.
    let mut per_step: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for u in &o.ups {
        for s in &u.steps {
            per_step.entry(&s.id).or_default().push(s.ms);
        }
    }
    let mut slow: Vec<(&str, u64, u64)> = per_step
        .iter()
        .map(|(id, v)| (*id, median(v), v.iter().copied().max().unwrap_or(0)))
        .collect();
    slow.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    println!("  slowest steps (median / max over {} repetitions):", o.ups.len());
    for (id, med, max) in slow.iter().take(10) {
        println!("    {:>6} ms {:>6} ms  {id}", med, max);
    }

    // Per kind of step (the id up to ':'), in the median repetition.
    let mut kinds: BTreeMap<&str, (usize, u64, u64, Duration, Duration)> = BTreeMap::new();
    for s in &run.steps {
        let kind = s.id.split(':').next().unwrap_or(&s.id);
        let e = kinds.entry(kind).or_insert((0, 0, 0, Duration::MAX, Duration::ZERO));
        e.0 += 1;
        e.1 += s.ms;
        e.2 = e.2.max(s.ms);
        e.3 = e.3.min(s.start());
        e.4 = e.4.max(s.finish);
    }
    let mut kinds: Vec<_> = kinds.into_iter().collect();
    kinds.sort_by_key(|k| std::cmp::Reverse(k.1 .1));
    println!("  by kind of step (median repetition; sum of the steps' own times, they overlap):");
    println!(
        "    {:<16} {:>6} {:>10} {:>8} {:>19}",
        "kind", "steps", "sum", "max", "first start..last end"
    );
    for (kind, (n, sum, max, first, end)) in kinds {
        println!(
            "    {kind:<16} {n:>6} {:>10} {:>8} {:>19}",
            format!("{sum} ms"),
            format!("{max} ms"),
            format!("{}..{}", ms(first), ms(end))
        );
    }
    println!();
}

/// The chain of steps that decided when `up` was done: from the step that finished
/// last, back through the dependency of each step that finished last.
fn critical_path<'a>(run: &'a UpRun, deps: &HashMap<String, Vec<String>>) -> Vec<&'a Step> {
    let by_id: HashMap<&str, &Step> = run.steps.iter().map(|s| (s.id.as_str(), s)).collect();
    let Some(mut cur) = run.steps.iter().max_by_key(|s| s.finish) else {
        return Vec::new();
    };
    let mut chain = vec![cur];
    while let Some(pred) = deps
        .get(&cur.id)
        .into_iter()
        .flatten()
        .filter_map(|d| by_id.get(d.as_str()).copied())
        .max_by_key(|s| s.finish)
    {
        chain.push(pred);
        cur = pred;
    }
    chain.reverse();
    chain
}

/// `pre 35 | bridge 5 | link 22 | etcd 22+33 | ... | wait 40 | post 4`
fn path_by_kind(run: &UpRun, deps: &HashMap<String, Vec<String>>) -> String {
    let chain = critical_path(run, deps);
    let Some(last) = chain.last() else {
        return "-".into();
    };
    let begin = run.apply_begin.unwrap_or_default();
    let mut parts: Vec<(String, Vec<u64>)> = Vec::new();
    let mut wait = Duration::ZERO;
    let mut prev_finish = begin;
    for s in &chain {
        wait += s.start().saturating_sub(prev_finish);
        prev_finish = s.finish;
        let kind = s.id.split(':').next().unwrap_or(&s.id).to_string();
        match parts.last_mut() {
            Some((k, v)) if *k == kind => v.push(s.ms),
            _ => parts.push((kind, vec![s.ms])),
        }
    }
    let mut text = format!("pre {}", begin.as_millis());
    for (k, v) in parts {
        let v: Vec<String> = v.iter().map(u64::to_string).collect();
        text.push_str(&format!(" | {k} {}", v.join("+")));
    }
    text.push_str(&format!(
        " | wait {} | post {}",
        wait.as_millis(),
        run.wall.saturating_sub(last.finish).as_millis()
    ));
    text
}

fn targets(results: &[(Case, Outcome)], soak: u64) {
    let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
    println!("Targets (issue 3, this machine)");
    if let Some((_, o)) = results.iter().find(|(c, _)| c.id == "default") {
        let up: Vec<Duration> = o.ups.iter().map(|u| u.wall).collect();
        let down: Vec<Duration> = o.downs.iter().map(|d| d.wall).collect();
        if let Some((lo, med, hi)) = stat(&up) {
            println!(
                "  default up (skip ingress,interconnect) < 1 s    median {:>9}  min {:>9}  max {:>9}   {}",
                secs(med),
                secs(lo),
                secs(hi),
                verdict(med < UP_TARGET)
            );
        }
        if let Some((lo, med, hi)) = stat(&down) {
            println!(
                "  default down < 0.3 s                            median {:>9}  min {:>9}  max {:>9}   {}",
                secs(med),
                secs(lo),
                secs(hi),
                verdict(med < DOWN_TARGET)
            );
        }
        let all: Vec<&Mem> = o.agents_after_up.iter().chain(&o.agents_after_soak).collect();
        if !all.is_empty() {
            let rss = all.iter().map(|m| m.rss).max().unwrap_or(0);
            let hwm = all.iter().map(|m| m.hwm).max().unwrap_or(0);
            println!(
                "  flannel agent RSS < 5 MB (VmRSS, after up and {soak} s later)   max {:>9}                        {}",
                mb(rss),
                verdict(rss < AGENT_RSS_TARGET_KB)
            );
            println!(
                "  (info) flannel agent peak (VmHWM, same processes)          max {:>9}                        {} 5 MB",
                mb(hwm),
                if hwm < AGENT_RSS_TARGET_KB { "below" } else { "above" }
            );
        }
        let load1: f64 = o
            .load_before
            .split_whitespace()
            .next()
            .and_then(|l| l.parse().ok())
            .unwrap_or(0.0);
        if load1 > 1.0 {
            println!(
                "  note: the load average was {} when the default case started: other work shares the cores, \
                 so up is slower than on a quiet machine",
                o.load_before
            );
        }
    } else {
        println!("  (the `default` case did not run)");
    }
}
