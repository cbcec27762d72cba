//! router-bench: the built-in router against direct TCP, side by side, on 127.0.0.1 only.
//!
//! `cargo build --release --workspace && cargo run --release -p knetsim-bench --bin router-bench`
//! See docs/performance.md ("Router").
//!
//! Two `knetsim router -c FILE` processes (the release `knetsim` binary next to this
//! executable) are linked the way a Skupper site pair is:
//!
//! ```text
//! client -> router a (tcpListener) -> AMQP inter-router link -> router b (tcpConnector) -> server
//! ```
//!
//! and the servers (a sink that answers with the byte count it read, and a 64-byte echo)
//! run in this process. Every case runs on the direct path and through the routers:
//! single-stream and 4-stream throughput (time-bounded), 64-byte request/response latency
//! on a kept connection and with a new connection per request, link time-to-ready from
//! process spawn (fresh router pairs), and the routers' VmRSS / VmHWM idle and under the
//! 4-stream load (read from /proc/PID/status; the routers are separate processes, so
//! their figures are their own). Direct and routed runs alternate (throughput: best of
//! two each; latency: blocks of 500 round trips, or single requests, taking turns), so
//! background load on the machine hits both paths alike. The context switches of every
//! router thread (/proc/PID/task/*/status) are counted per routed round trip and per MiB
//! routed, which is what the latency and throughput of a thread-per-direction router
//! hinge on. Every wait is bounded; every router process is stopped
//! (SIGTERM, then SIGKILL, by PID) when its guard drops. The program exits 0: it is a
//! report, not a test (2 if the knetsim binary is missing or the routers never link).

mod routers;
mod servers;

use routers::{ctxt_switches, Mem, Pair, Readiness, Sampler};
use servers::{echo_server, sink_server};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// How long each throughput case sends.
const SEND_FOR: Duration = Duration::from_millis(1500);
const THROUGHPUT_RUNS: usize = 2;
/// Round trips on a kept connection, and with a new connection per request.
const KEPT_ROUND_TRIPS: usize = 20_000;
const NEW_CONN_ROUND_TRIPS: usize = 2_000;
/// Fresh router pairs started to time link readiness.
const READY_TRIALS: usize = 5;
const READY_LIMIT: Duration = Duration::from_secs(5);
const MSG: usize = 64;

fn main() {
    let exe = match knetsim_binary() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("router-bench: {e}");
            std::process::exit(2);
        }
    };
    let work = tempfile::tempdir().expect("temporary directory");
    let sink = sink_server();
    let echo = echo_server();
    print_header(&exe);

    // Link readiness on fresh pairs first (nothing else running).
    let mut ready: Vec<Readiness> = Vec::new();
    for trial in 0..READY_TRIALS {
        let dir = work.path().join(format!("ready{trial}"));
        match Pair::start(&exe, &dir, sink, echo) {
            Ok(pair) => match pair.wait_ready() {
                Ok(r) => ready.push(r),
                Err(e) => fail(&pair, &e),
            },
            Err(e) => {
                eprintln!("router-bench: {e}");
                std::process::exit(2);
            }
        }
    }

    // One pair for everything else; idle RSS before any traffic.
    let pair = Pair::start(&exe, &work.path().join("main"), sink, echo).unwrap_or_else(|e| {
        eprintln!("router-bench: {e}");
        std::process::exit(2)
    });
    if let Err(e) = pair.wait_ready() {
        fail(&pair, &e);
    }
    thread::sleep(Duration::from_millis(300));
    let idle = [pair.a.mem(), pair.b.mem()];

    // Direct and routed runs alternate (best of THROUGHPUT_RUNS each), so background load
    // on the machine hits both paths alike.
    let (mut direct_1, mut routed_1) = (Err("not run".to_string()), Err("not run".to_string()));
    let (mut direct_4, mut routed_4) = (Err("not run".to_string()), Err("not run".to_string()));
    let mut stream_switches = 0.0f64;
    let sampler = Sampler::start(&[pair.a.pid(), pair.b.pid()]);
    for _ in 0..THROUGHPUT_RUNS {
        direct_1 = best(direct_1, throughput(sink.port(), 1));
        let before = ctxt_switches(pair.a.pid()) + ctxt_switches(pair.b.pid());
        let t0 = Instant::now();
        let r = throughput(pair.sink_port, 1);
        let after = ctxt_switches(pair.a.pid()) + ctxt_switches(pair.b.pid());
        if let Ok(bps) = &r {
            let mib = bps * t0.elapsed().as_secs_f64() / (1 << 20) as f64;
            stream_switches = (after.saturating_sub(before) as f64 / mib).max(stream_switches);
        }
        routed_1 = best(routed_1, r);
        direct_4 = best(direct_4, throughput(sink.port(), 4));
        routed_4 = best(routed_4, throughput(pair.sink_port, 4));
    }
    let load_peak = sampler.stop();
    let after_load = [pair.a.mem(), pair.b.mem()];

    let switches = || ctxt_switches(pair.a.pid()) + ctxt_switches(pair.b.pid());
    let before = switches();
    let (direct_kept, routed_kept) = kept_latency(echo.port(), pair.echo_port);
    let kept_switches = switches().saturating_sub(before) as f64 / (KEPT_ROUND_TRIPS + 500) as f64;
    let (direct_new, routed_new) = new_conn_latency(echo.port(), pair.echo_port);

    let results = Results {
        direct_1,
        routed_1,
        direct_4,
        routed_4,
        direct_kept,
        routed_kept,
        direct_new,
        routed_new,
        ready,
        idle,
        load_peak,
        after_load,
        kept_switches,
        stream_switches,
    };
    results.print();
    drop(pair);
}

fn fail(pair: &Pair, e: &str) -> ! {
    eprintln!("router-bench: {e}");
    for p in [&pair.a, &pair.b] {
        let log = std::fs::read_to_string(&p.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        eprintln!("--- last lines of {}:", p.log.display());
        for l in tail.iter().rev() {
            eprintln!("{l}");
        }
    }
    std::process::exit(2);
}

fn knetsim_binary() -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let dir = me.parent().ok_or("current_exe has no directory")?;
    let exe = dir.join("knetsim");
    if exe.is_file() {
        Ok(exe)
    } else {
        Err(format!(
            "{} is missing; build it first: cargo build --release --workspace",
            exe.display()
        ))
    }
}

fn print_header(exe: &Path) {
    let cpu = knetsim_bench::cpu_model();
    let nproc = thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    println!("router-bench: direct TCP vs client -> router a (tcpListener) -> AMQP link -> router b (tcpConnector) -> server");
    println!(
        "  127.0.0.1 only; routers: {} router -c FILE (separate processes)",
        exe.display()
    );
    println!("  machine: nproc {nproc}, {cpu}");
    println!();
}

// ---------------------------------------------------------------- measurements

/// Bytes per second through `streams` concurrent connections sending for SEND_FOR each;
/// the byte count is what the sink read (it answers after EOF), the time runs to its answer.
fn throughput(port: u16, streams: usize) -> Result<f64, String> {
    let barrier = Arc::new(Barrier::new(streams));
    let handles: Vec<_> = (0..streams)
        .map(|_| {
            let b = barrier.clone();
            thread::spawn(move || -> Result<(u64, Duration), String> {
                let mut c = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
                c.set_read_timeout(Some(Duration::from_secs(30))).ok();
                let buf: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
                b.wait();
                let t0 = Instant::now();
                let mut sent = 0u64;
                while t0.elapsed() < SEND_FOR {
                    c.write_all(&buf).map_err(|e| format!("write: {e}"))?;
                    sent += buf.len() as u64;
                }
                c.shutdown(Shutdown::Write).map_err(|e| format!("shutdown: {e}"))?;
                let mut got = [0u8; 8];
                c.read_exact(&mut got).map_err(|e| format!("read count: {e}"))?;
                let took = t0.elapsed();
                let got = u64::from_le_bytes(got);
                if got != sent {
                    return Err(format!("sink read {got} of {sent} bytes"));
                }
                Ok((got, took))
            })
        })
        .collect();
    let mut bytes = 0;
    let mut longest = Duration::ZERO;
    for h in handles {
        let (n, t) = h.join().map_err(|_| "stream thread panicked".to_string())??;
        bytes += n;
        longest = longest.max(t);
    }
    Ok(bytes as f64 / longest.as_secs_f64())
}

fn best(a: Result<f64, String>, b: Result<f64, String>) -> Result<f64, String> {
    match (a, b) {
        (Ok(a), Ok(b)) => Ok(a.max(b)),
        (Ok(x), Err(_)) | (Err(_), Ok(x)) => Ok(x),
        (Err(_), Err(e)) => Err(e),
    }
}

type Rtts = Result<Vec<u64>, String>;

fn round_trip(c: &mut TcpStream) -> Result<u64, String> {
    let req = [7u8; MSG];
    let mut resp = [0u8; MSG];
    let t0 = Instant::now();
    c.write_all(&req).map_err(|e| format!("write: {e}"))?;
    c.read_exact(&mut resp).map_err(|e| format!("read: {e}"))?;
    Ok(t0.elapsed().as_nanos() as u64)
}

fn open(port: u16) -> Result<TcpStream, String> {
    let c = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    c.set_nodelay(true).ok();
    c.set_read_timeout(Some(Duration::from_secs(5))).ok();
    Ok(c)
}

/// Sorted round-trip times (ns) of 64-byte requests on one kept connection per path,
/// direct and routed alternating in blocks of 500 (after 500 unrecorded warm-up ones).
fn kept_latency(direct: u16, routed: u16) -> (Rtts, Rtts) {
    let mut conns = [open(direct), open(routed)];
    let mut out: [Rtts; 2] = [
        Ok(Vec::with_capacity(KEPT_ROUND_TRIPS)),
        Ok(Vec::with_capacity(KEPT_ROUND_TRIPS)),
    ];
    for (c, o) in conns.iter_mut().zip(out.iter_mut()) {
        match c {
            Ok(c) => {
                for _ in 0..500 {
                    if let Err(e) = round_trip(c) {
                        *o = Err(e);
                        break;
                    }
                }
            }
            Err(e) => *o = Err(e.clone()),
        }
    }
    for _ in 0..KEPT_ROUND_TRIPS / 500 {
        for (c, o) in conns.iter_mut().zip(out.iter_mut()) {
            let (Ok(c), Ok(v)) = (c, o.as_mut()) else { continue };
            for _ in 0..500 {
                match round_trip(c) {
                    Ok(t) => v.push(t),
                    Err(e) => {
                        *o = Err(e);
                        break;
                    }
                }
            }
        }
    }
    let [d, r] = out;
    (d.map(sorted), r.map(sorted))
}

fn sorted(mut v: Vec<u64>) -> Vec<u64> {
    v.sort_unstable();
    v
}

/// Sorted times (ns) of connect + 64-byte request + response, a new connection each,
/// direct and routed alternating (after 50 unrecorded warm-up ones each).
fn new_conn_latency(direct: u16, routed: u16) -> (Rtts, Rtts) {
    let once = |port: u16| -> Result<u64, String> {
        let t0 = Instant::now();
        let mut c = open(port)?;
        round_trip(&mut c)?;
        Ok(t0.elapsed().as_nanos() as u64)
    };
    let mut out: [Rtts; 2] = [Ok(Vec::new()), Ok(Vec::new())];
    for i in 0..NEW_CONN_ROUND_TRIPS + 50 {
        for (port, o) in [direct, routed].into_iter().zip(out.iter_mut()) {
            let Ok(v) = o.as_mut() else { continue };
            match once(port) {
                Ok(t) if i >= 50 => v.push(t),
                Ok(_) => {}
                Err(e) => *o = Err(e),
            }
        }
    }
    let [d, r] = out;
    (d.map(sorted), r.map(sorted))
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

// ---------------------------------------------------------------- report

struct Results {
    direct_1: Result<f64, String>,
    routed_1: Result<f64, String>,
    direct_4: Result<f64, String>,
    routed_4: Result<f64, String>,
    direct_kept: Result<Vec<u64>, String>,
    routed_kept: Result<Vec<u64>, String>,
    direct_new: Result<Vec<u64>, String>,
    routed_new: Result<Vec<u64>, String>,
    ready: Vec<Readiness>,
    idle: [Mem; 2],
    load_peak: Vec<u64>,
    after_load: [Mem; 2],
    kept_switches: f64,
    stream_switches: f64,
}

fn rate(r: &Result<f64, String>) -> String {
    match r {
        Ok(b) if *b >= 1e9 => format!("{:.2} GB/s", b / 1e9),
        Ok(b) => format!("{:.0} MB/s", b / 1e6),
        Err(e) => format!("error: {e}"),
    }
}

fn us(ns: u64) -> String {
    if ns >= 10_000_000 {
        format!("{:.0} ms", ns as f64 / 1e6)
    } else {
        format!("{:.1} us", ns as f64 / 1e3)
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn mb(kb: u64) -> String {
    format!("{:.1} MB", kb as f64 * 1024.0 / 1e6)
}

impl Results {
    fn print(&self) {
        let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
        println!(
            "{:<52} {:>14} {:>14} {:>16}",
            "measure", "direct", "via routers", "routed/direct"
        );
        for (what, d, r) in [
            (
                format!(
                    "throughput, 1 stream ({:.1} s, best of {THROUGHPUT_RUNS})",
                    SEND_FOR.as_secs_f64()
                ),
                &self.direct_1,
                &self.routed_1,
            ),
            (
                format!(
                    "throughput, 4 streams ({:.1} s, sum, best of {THROUGHPUT_RUNS})",
                    SEND_FOR.as_secs_f64()
                ),
                &self.direct_4,
                &self.routed_4,
            ),
        ] {
            let ratio = match (d, r) {
                (Ok(d), Ok(r)) if *d > 0.0 => format!("{:.1}%", r / d * 100.0),
                _ => "-".into(),
            };
            println!("{what:<52} {:>14} {:>14} {ratio:>16}", rate(d), rate(r));
        }
        println!("{:<52} {:>14} {:>14} {:>16}", "64 B request/response", "", "", "added");
        for (what, d, r, n) in [
            (
                "kept connection",
                &self.direct_kept,
                &self.routed_kept,
                KEPT_ROUND_TRIPS,
            ),
            (
                "new connection per request",
                &self.direct_new,
                &self.routed_new,
                NEW_CONN_ROUND_TRIPS,
            ),
        ] {
            for (p, name) in [(0.5, "p50"), (0.99, "p99")] {
                let label = format!("  {what}, {name} ({n} round trips)");
                match (d, r) {
                    (Ok(d), Ok(r)) => {
                        let (d, r) = (pct(d, p), pct(r, p));
                        let added = format!("+{}", us(r.saturating_sub(d)));
                        println!("{label:<52} {:>14} {:>14} {added:>16}", us(d), us(r));
                    }
                    (d, r) => {
                        let e = d.as_ref().err().or(r.as_ref().err()).cloned().unwrap_or_default();
                        println!("{label:<52} error: {e}");
                    }
                }
            }
        }
        println!(
            "  (context switches in the two routers: {:.1} per routed kept-connection round trip, {:.0} per MiB routed in 1 stream)",
            self.kept_switches, self.stream_switches
        );
        println!();

        println!(
            "Link time-to-ready from spawning both router processes ({} fresh pairs)",
            self.ready.len()
        );
        println!("{:<52} {:>14} {:>14} {:>14}", "signal", "min", "median", "worst");
        type Get = fn(&Readiness) -> Duration;
        let signals: [(&str, Get); 4] = [
            ("router b /healthz answers", |r| r.b_health),
            ("router a /healthz answers", |r| r.a_health),
            ("link up in router a's /metrics", |r| r.link),
            ("router a's tcpListener accepts", |r| r.accepts),
        ];
        let mut accepts_worst = Duration::MAX;
        for (name, get) in signals {
            let mut v: Vec<Duration> = self.ready.iter().map(get).collect();
            v.sort();
            if v.is_empty() {
                continue;
            }
            let (lo, med, hi) = (v[0], v[v.len() / 2], v[v.len() - 1]);
            if name.contains("tcpListener") {
                accepts_worst = hi;
            }
            println!("  {name:<50} {:>14} {:>14} {:>14}", ms(lo), ms(med), ms(hi));
        }
        println!();

        println!("Router memory (VmRSS / VmHWM)");
        println!("{:<52} {:>14} {:>14}", "", "router a", "router b");
        let pair = |m: &[Mem; 2], f: fn(&Mem) -> u64| (mb(f(&m[0])), mb(f(&m[1])));
        let (a, b) = pair(&self.idle, |m| m.rss_kb);
        println!("  {:<50} {a:>14} {b:>14}", "idle, link up: VmRSS");
        let (a, b) = pair(&self.idle, |m| m.hwm_kb);
        println!("  {:<50} {a:>14} {b:>14}", "idle, link up: VmHWM");
        let peak = |i: usize| mb(self.load_peak.get(i).copied().unwrap_or(0));
        println!(
            "  {:<50} {:>14} {:>14}",
            "4-stream load: peak VmRSS (20 ms samples)",
            peak(0),
            peak(1)
        );
        let (a, b) = pair(&self.after_load, |m| m.hwm_kb);
        println!("  {:<50} {a:>14} {b:>14}", "after the load: VmHWM");
        let (a, b) = pair(&self.after_load, |m| m.rss_kb);
        println!("  {:<50} {a:>14} {b:>14}", "after the load: VmRSS");
        println!();

        println!("Targets");
        match (&self.direct_1, &self.routed_1) {
            (Ok(d), Ok(r)) => {
                let share = r / d * 100.0;
                println!(
                    "  {:<54} {:>16}   {}",
                    "single-stream throughput >= 30% of direct",
                    format!("{share:.1}%"),
                    verdict(share >= 30.0)
                );
            }
            _ => println!("  single-stream throughput >= 30% of direct: not measured   MISS"),
        }
        match (&self.direct_kept, &self.routed_kept) {
            (Ok(d), Ok(r)) => {
                let added = pct(r, 0.5).saturating_sub(pct(d, 0.5));
                println!(
                    "  {:<54} {:>16}   {}",
                    "added latency, kept connection, p50 < 100 us",
                    us(added),
                    verdict(added < 100_000)
                );
            }
            _ => println!("  added latency, kept connection, p50 < 100 us: not measured   MISS"),
        }
        println!(
            "  {:<54} {:>16}   {}",
            "link ready (tcpListener accepts, worst) < 200 ms",
            ms(accepts_worst),
            verdict(accepts_worst < Duration::from_millis(200))
        );
        let idle = self.idle[0].rss_kb.max(self.idle[1].rss_kb);
        println!(
            "  {:<54} {:>16}   {}",
            "idle RSS (VmRSS, larger router) < 10 MB",
            mb(idle),
            verdict(idle > 0 && idle * 1024 < 10_000_000)
        );
    }
}
