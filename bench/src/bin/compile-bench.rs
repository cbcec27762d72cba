//! compile-bench: how fast and how big the knetsim compiler is.
//!
//! `cargo run --release -p knetsim-bench --bin compile-bench [-- [--only default,10x100x10] [--runs N]]`
//! (`--runs` overrides the number of timed runs of the generated cases). See docs/performance.md.
//!
//! Every case runs in a fresh child process (this binary re-executed with a hidden
//! `--child` argument) so its peak RSS is its own: the child reads `VmHWM` from
//! `/proc/self/status` and `getrusage(RUSAGE_SELF).ru_maxrss` when it is done.
//! (Linux carries the parent's peak over an exec into `ru_maxrss`; the parent stays
//! at a few MB, so only `VmHWM` is exact for tiny cases.)
//! A second child per case times the compiler's phases one by one.
//! The program always exits 0: it is a report, not a test.

use knetsim_bench::procfs::status_kb;
use knetsim_bench::{cpu_model, generate, selected};
use knetsim_compiler::artifacts::{self, cni, etcd, flannel, nginx, skupper};
use knetsim_compiler::{self as compiler, plan, topology, CompileOptions, Source};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD: &str = "--child";

/// One benchmark case: the embedded default topology or a generated one.
#[derive(Debug, Clone, Copy)]
struct Case {
    id: &'static str,
    /// clusters, workers per cluster, pods per worker; None = the embedded default.
    size: Option<(usize, usize, usize)>,
    /// Timed compile runs.
    runs: usize,
    /// Timed bundle writes (each to a fresh directory).
    writes: usize,
    /// Repetitions of each phase in the phase breakdown.
    phase_reps: usize,
}

const CASES: [Case; 4] = [
    Case {
        id: "default",
        size: None,
        runs: 200,
        writes: 20,
        phase_reps: 200,
    },
    Case {
        id: "10x100x10",
        size: Some((10, 100, 10)),
        runs: 7,
        writes: 1,
        phase_reps: 3,
    },
    Case {
        id: "25x100x10",
        size: Some((25, 100, 10)),
        runs: 5,
        writes: 1,
        phase_reps: 1,
    },
    Case {
        id: "50x100x10",
        size: Some((50, 100, 10)),
        runs: 5,
        writes: 1,
        phase_reps: 1,
    },
];

impl Case {
    fn by_id(id: &str) -> Option<Case> {
        CASES.iter().copied().find(|c| c.id == id)
    }

    fn source(&self) -> Source {
        match self.size {
            None => Source::default_topology(),
            Some((c, w, p)) => Source::new(format!("<generated {}>", self.id), generate(c, w, p)),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(CHILD) {
        child(&args[1..]);
        return;
    }
    parent(&args);
}

// ---------------------------------------------------------------- child side

/// `--child measure|phases <case> <runs>`: prints `key=value` lines on stdout.
fn child(args: &[String]) {
    let (Some(mode), Some(id)) = (args.first(), args.get(1)) else {
        eprintln!("usage: compile-bench --child measure|phases <case> [runs]");
        std::process::exit(2);
    };
    let Some(mut case) = Case::by_id(id) else {
        eprintln!("unknown case {id}");
        std::process::exit(2);
    };
    if let Some(runs) = args.get(2).and_then(|r| r.parse().ok()) {
        case.runs = runs;
        case.phase_reps = case.phase_reps.min(runs);
    }
    match mode.as_str() {
        "measure" => measure(&case),
        "phases" => phases(&case),
        other => {
            eprintln!("unknown child mode {other}");
            std::process::exit(2);
        }
    }
}

fn compile_or_exit(source: &Source, opts: &CompileOptions) -> compiler::Bundle {
    compiler::compile(source, opts).unwrap_or_else(|d| {
        eprint!("{d}");
        std::process::exit(3)
    })
}

fn measure(case: &Case) {
    let source = case.source();
    let opts = CompileOptions::default();
    let rss_base = proc_status_kb("VmRSS");
    let mut compile_ns = Vec::with_capacity(case.runs);
    let mut last: Option<compiler::Bundle> = None;
    for _ in 0..case.runs.max(1) {
        drop(last.take());
        let start = Instant::now();
        let bundle = compile_or_exit(black_box(&source), &opts);
        compile_ns.push(start.elapsed().as_nanos());
        last = Some(black_box(bundle));
    }
    let bundle = last.expect("at least one run");
    let hwm_after_compile = proc_status_kb("VmHWM");
    let artifacts = bundle.files.len();
    let content_bytes: usize = bundle.files.values().map(|a| a.content.len()).sum();
    // Artifacts may share one text (the same ruleset on every worker): count each once.
    let mut distinct = std::collections::HashSet::new();
    let held_bytes: usize = bundle
        .files
        .values()
        .filter(|a| distinct.insert(a.content.as_ptr()))
        .map(|a| a.content.len())
        .sum();

    let dir = tempfile::tempdir().expect("temp dir");
    let mut write_ns = Vec::new();
    let mut manifest_bytes = 0;
    for i in 0..case.writes.max(1) {
        let target = dir.path().join(format!("bundle{i}"));
        let start = Instant::now();
        if let Err(e) = bundle.write_to(&target) {
            eprintln!("cannot write the bundle to {}: {e}", target.display());
            std::process::exit(4);
        }
        write_ns.push(start.elapsed().as_nanos());
        manifest_bytes = std::fs::metadata(target.join("manifest.json"))
            .map(|m| m.len() as usize)
            .unwrap_or(0);
    }
    drop(dir);
    drop(bundle);
    let hwm = proc_status_kb("VmHWM");
    let maxrss = maxrss_kb();

    // Counts, after the peak was read (building the model again cannot raise it past a compile).
    let model = compiler::check(&source, &opts).expect("compiled once already");
    let per_cluster = |count: fn(&compiler::model::Cluster) -> usize| -> String {
        model.clusters.iter().map(count).sum::<usize>().to_string()
    };
    let out = [
        ("source_bytes", source.text.len().to_string()),
        ("clusters", model.clusters.len().to_string()),
        ("workers", per_cluster(|c| c.workers.len())),
        ("hosts", model.hosts().count().to_string()),
        ("pods", per_cluster(|c| c.pods.len())),
        ("services", per_cluster(|c| c.services.len())),
        ("routers", model.routers.len().to_string()),
        ("rss_base_kb", rss_base.to_string()),
        ("hwm_after_compile_kb", hwm_after_compile.to_string()),
        ("hwm_kb", hwm.to_string()),
        ("maxrss_kb", maxrss.to_string()),
        ("compile_ns", join(&compile_ns)),
        ("artifacts", artifacts.to_string()),
        ("content_bytes", content_bytes.to_string()),
        ("manifest_bytes", manifest_bytes.to_string()),
        ("held_bytes", held_bytes.to_string()),
        ("write_ns", join(&write_ns)),
    ];
    for (k, v) in out {
        println!("{k}={v}");
    }
}

/// Times each phase of `compile` on its own: parse, model build (which includes the
/// graph check), the graph check alone, render_bundle, and the parts of render_bundle.
fn phases(case: &Case) {
    let source = case.source();
    let opts = CompileOptions::default();
    let reps = case.phase_reps.max(1);
    let mut times: BTreeMap<&'static str, Vec<u128>> = BTreeMap::new();
    let mut time = |name: &'static str, ns: u128| times.entry(name).or_default().push(ns);
    let mut plan_steps = 0;
    let mut kinds: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let (mut hwm_after_build, mut hwm_after_render) = (0, 0);
    for rep in 0..reps {
        let t = Instant::now();
        let spec = topology::parse(&source).expect("parses");
        time("parse", t.elapsed().as_nanos());

        let t = Instant::now();
        let model = compiler::model::build(&source, &spec, &opts).expect("builds");
        time("build", t.elapsed().as_nanos());
        drop(spec);

        if rep == 0 {
            hwm_after_build = proc_status_kb("VmHWM");
        }

        let t = Instant::now();
        let problems = black_box(compiler::model::topology_graph::check(&model));
        time("graph", t.elapsed().as_nanos());
        assert!(problems.is_empty());

        let t = Instant::now();
        let bundle = artifacts::render_bundle(&model);
        time("render", t.elapsed().as_nanos());
        if rep == 0 {
            hwm_after_render = proc_status_kb("VmHWM");
        }

        let t = Instant::now();
        let inventory = black_box(artifacts::to_json(&model));
        time("inventory", t.elapsed().as_nanos());
        drop(inventory);

        let t = Instant::now();
        let mut nft_bytes = 0;
        for c in &model.clusters {
            nft_bytes += black_box(artifacts::nft::ruleset(c)).len();
        }
        time("nft", t.elapsed().as_nanos());
        black_box(nft_bytes);

        let t = Instant::now();
        let naming = model.naming();
        let mut other = 0;
        for c in &model.clusters {
            other += flannel::network_config(c).len();
            for m in &c.etcd {
                other += artifacts::to_json(&etcd::member(&naming, c, m)).len();
            }
            for w in &c.workers {
                other += artifacts::to_json(&cni::flannel_conf(&naming, w)).len();
                other += artifacts::to_json(&flannel::reservation(c, w)).len();
            }
            for i in &c.ingresses {
                other += nginx::conf(&naming, i).len();
            }
        }
        for r in &model.routers {
            other += skupper::config_json(&naming, r).len();
        }
        time("other", t.elapsed().as_nanos());
        black_box(other);

        let t = Instant::now();
        let plan = plan::build(&model, &bundle);
        time("plan", t.elapsed().as_nanos());
        plan_steps = plan.steps.len();

        let t = Instant::now();
        let plan_json = black_box(artifacts::to_json(&plan));
        time("plan_json", t.elapsed().as_nanos());
        drop(plan_json);

        let t = Instant::now();
        let manifest = black_box(bundle.manifest_json());
        time("manifest", t.elapsed().as_nanos());
        drop(manifest);

        if rep == 0 {
            for a in bundle.files.values() {
                let e = kinds.entry(format!("{:?}", a.kind)).or_default();
                e.0 += 1;
                e.1 += a.content.len();
            }
        }
        let t = Instant::now();
        drop(bundle);
        drop(model);
        time("drop", t.elapsed().as_nanos());
    }
    for (k, v) in &times {
        println!("phase.{k}={}", median(v));
    }
    println!("plan_steps={plan_steps}");
    println!("hwm_after_build_kb={hwm_after_build}");
    println!("hwm_after_render_kb={hwm_after_render}");
    for (k, (n, bytes)) in &kinds {
        println!("kind.{k}={n},{bytes}");
    }
    println!("phase_reps={reps}");
}

fn join(v: &[u128]) -> String {
    v.iter().map(u128::to_string).collect::<Vec<_>>().join(",")
}

/// A `Vm*:` line of /proc/self/status, in KiB (0 if unavailable).
fn proc_status_kb(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status_kb(&status, key).unwrap_or(0)
}

/// `getrusage(RUSAGE_SELF).ru_maxrss`, in KiB on Linux.
fn maxrss_kb() -> u64 {
    // SAFETY: getrusage only writes into the zero-initialised struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage struct, RUSAGE_SELF is a valid `who`.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc == 0 {
        u64::try_from(usage.ru_maxrss).unwrap_or(0)
    } else {
        0
    }
}

// ---------------------------------------------------------------- parent side

/// What the two children of one case reported.
struct Outcome {
    case: Case,
    measure: Result<Measured, String>,
    phases: Result<Measured, String>,
}

#[derive(Default)]
struct Measured {
    kv: BTreeMap<String, String>,
}

impl Measured {
    fn get(&self, k: &str) -> Option<&str> {
        self.kv.get(k).map(String::as_str)
    }

    fn num(&self, k: &str) -> Option<u128> {
        self.get(k)?.parse().ok()
    }

    fn list(&self, k: &str) -> Vec<u128> {
        self.get(k)
            .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect())
            .unwrap_or_default()
    }
}

/// Runs one child; returns its key=value output, or why it failed.
fn run_child(mode: &str, case: &Case, runs: Option<usize>) -> Result<Measured, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.args([CHILD, mode, case.id]);
    if let Some(r) = runs {
        cmd.arg(r.to_string());
    }
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot start child: {e}"))?;
    if !out.status.success() {
        return Err(format!("child {mode} {} failed: {}", case.id, out.status));
    }
    let mut m = Measured::default();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some((k, v)) = line.split_once('=') {
            m.kv.insert(k.to_string(), v.to_string());
        }
    }
    Ok(m)
}

fn parent(args: &[String]) {
    let mut only: Option<Vec<String>> = None;
    let mut runs: Option<usize> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--only" => only = it.next().map(|v| v.split(',').map(str::to_string).collect()),
            "--runs" => runs = it.next().and_then(|v| v.parse().ok()),
            "-h" | "--help" => {
                println!(
                    "compile-bench [--only CASE,...] [--runs N]\ncases: {}",
                    CASES.iter().map(|c| c.id).collect::<Vec<_>>().join(", ")
                );
                return;
            }
            other => eprintln!("ignoring unknown argument {other}"),
        }
    }
    let cases: Vec<Case> = selected(&CASES, only.as_deref(), |c| c.id);

    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let started = Instant::now();
    let mut results: Vec<Outcome> = Vec::new();
    for case in &cases {
        let runs = case.size.and(runs);
        eprintln!(
            "[compile-bench] {}: timing {} runs ...",
            case.id,
            runs.unwrap_or(case.runs)
        );
        let m = run_child("measure", case, runs);
        eprintln!("[compile-bench] {}: phase breakdown ...", case.id);
        let p = run_child("phases", case, runs);
        results.push(Outcome {
            case: *case,
            measure: m,
            phases: p,
        });
    }
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    println!("knetsim compile benchmark");
    println!(
        "machine: {} x {} | build: {} | load average before: {} | after: {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        cpu_model(),
        if cfg!(debug_assertions) {
            "DEBUG (use --release!)"
        } else {
            "release"
        },
        load_before.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        load_after.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    );
    println!("every case runs in its own child process; times are wall clock; MB = 10^6 bytes");
    println!();

    println!("Compile (parse + check + render_bundle, in memory)");
    println!(
        "{:<10} {:>8} {:>7} {:>6} {:>8} {:>6} {:>9} {:>5} {:>10} {:>10} {:>10}",
        "case", "clusters", "workers", "hosts", "pods", "svcs", "TOML", "runs", "min", "median", "per pod"
    );
    for Outcome { case, measure, .. } in &results {
        let m = match measure {
            Ok(m) => m,
            Err(e) => {
                println!("{:<10} error: {e}", case.id);
                continue;
            }
        };
        let t = m.list("compile_ns");
        let pods = m.num("pods").unwrap_or(0);
        println!(
            "{:<10} {:>8} {:>7} {:>6} {:>8} {:>6} {:>9} {:>5} {:>10} {:>10} {:>10}",
            case.id,
            m.get("clusters").unwrap_or("?"),
            m.get("workers").unwrap_or("?"),
            m.get("hosts").unwrap_or("?"),
            m.get("pods").unwrap_or("?"),
            m.get("services").unwrap_or("?"),
            bytes(m.num("source_bytes").unwrap_or(0)),
            t.len(),
            dur(min(&t)),
            dur(median(&t)),
            median(&t).checked_div(pods).map_or_else(|| "-".into(), dur),
        );
    }
    println!();

    println!("Bundle and memory (RSS base = child before compiling, TOML text generated; peak = whole child)");
    println!(
        "{:<10} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12} {:>12} {:>12}",
        "case",
        "artifacts",
        "on disk",
        "in memory",
        "write min",
        "write med",
        "RSS base",
        "peak compile",
        "peak VmHWM",
        "ru_maxrss"
    );
    for Outcome { case, measure, .. } in &results {
        let Ok(m) = measure else { continue };
        let w = m.list("write_ns");
        let kb = |k: &str| bytes(m.num(k).unwrap_or(0) * 1024);
        println!(
            "{:<10} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12} {:>12} {:>12}",
            case.id,
            format!("{}+1", m.get("artifacts").unwrap_or("?")),
            bytes(m.num("content_bytes").unwrap_or(0) + m.num("manifest_bytes").unwrap_or(0)),
            m.num("held_bytes").map_or_else(|| "?".into(), bytes),
            dur(min(&w)),
            dur(median(&w)),
            kb("rss_base_kb"),
            kb("hwm_after_compile_kb"),
            kb("hwm_kb"),
            kb("maxrss_kb"),
        );
    }
    println!("(artifacts: bundle files + manifest.json; on disk: their total size; in memory: the bundle's distinct texts, shared ones once)");
    println!("(write: Bundle::write_to into a fresh temp dir, incl. the manifest's sha256; it depends a lot on the file system's state)");
    println!(
        "(peak compile: VmHWM after the timed runs, before writing; peak VmHWM / ru_maxrss: at the end of the child)"
    );
    println!();

    phase_table(&results);
    kind_table(&results);
    targets(&results);
    println!();
    println!("total benchmark wall time: {}", dur(started.elapsed().as_nanos()));
}

/// The cases whose phase measurement succeeded, with what it measured.
fn measured_phases(results: &[Outcome]) -> Vec<(&Case, &Measured)> {
    results
        .iter()
        .filter_map(|o| o.phases.as_ref().ok().map(|p| (&o.case, p)))
        .collect()
}

fn phase_table(results: &[Outcome]) {
    let ok = measured_phases(results);
    if ok.is_empty() {
        return;
    }
    println!("Phase breakdown (each phase timed on its own; median of the repetitions)");
    print!("{:<42}", "phase");
    for (c, _) in &ok {
        print!(" {:>12}", c.id);
    }
    println!();
    let rows: [(&str, &str); 12] = [
        ("parse", "topology::parse (TOML -> spec)"),
        ("build", "model::build (incl. graph check)"),
        ("graph", "  of which model::topology_graph::check"),
        ("render", "artifacts::render_bundle"),
        ("inventory", "  inventory.json (to_json(model))"),
        ("nft", "  kube-proxy.nft (nft::ruleset)"),
        ("other", "  etcd/cni/subnet/nginx/skupper"),
        ("plan", "  plan::build"),
        ("plan_json", "  plan.json (to_json(plan))"),
        ("sum", "= parse + build + render"),
        ("manifest", "manifest_json (sha256, on write)"),
        ("drop", "dropping model + bundle"),
    ];
    for (key, label) in rows {
        print!("{label:<42}");
        for (_, p) in &ok {
            let v = |k: &str| p.num(&format!("phase.{k}")).unwrap_or(0);
            let value = match key {
                "sum" => v("parse") + v("build") + v("render"),
                k => v(k),
            };
            print!(" {:>12}", dur(value));
        }
        println!();
    }
    print!("{:<42}", "plan steps");
    for (_, p) in &ok {
        print!(" {:>12}", p.get("plan_steps").unwrap_or("?"));
    }
    println!();
    for (key, label) in [
        ("hwm_after_build_kb", "VmHWM after parse + model::build"),
        ("hwm_after_render_kb", "VmHWM after render_bundle"),
    ] {
        print!("{label:<42}");
        for (_, p) in &ok {
            print!(" {:>12}", bytes(p.num(key).unwrap_or(0) * 1024));
        }
        println!();
    }
    print!("{:<42}", "repetitions");
    for (_, p) in &ok {
        print!(" {:>12}", p.get("phase_reps").unwrap_or("?"));
    }
    println!();
    println!(
        "(the indented parts of render_bundle are re-run on their own after it, so they need not add up to it exactly)"
    );
    println!();
}

fn kind_table(results: &[Outcome]) {
    let ok = measured_phases(results);
    if ok.is_empty() {
        return;
    }
    let mut kinds: Vec<String> = ok
        .iter()
        .flat_map(|(_, p)| p.kv.keys().filter_map(|k| k.strip_prefix("kind.").map(str::to_string)))
        .collect();
    kinds.sort();
    kinds.dedup();
    println!("Bundle content by artifact kind (files / bytes on disk; a text shared by several files counts for each)");
    print!("{:<22}", "kind");
    for (c, _) in &ok {
        print!(" {:>20}", c.id);
    }
    println!();
    for k in &kinds {
        print!("{k:<22}");
        for (_, p) in &ok {
            let cell = p
                .get(&format!("kind.{k}"))
                .and_then(|v| v.split_once(','))
                .map(|(n, b)| format!("{n} / {}", bytes(b.parse().unwrap_or(0))))
                .unwrap_or_else(|| "-".into());
            print!(" {cell:>20}");
        }
        println!();
    }
    println!();
}

fn targets(results: &[Outcome]) {
    let find = |id: &str| {
        results
            .iter()
            .find(|o| o.case.id == id)
            .and_then(|o| o.measure.as_ref().ok())
    };
    let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
    println!("Targets");
    if let Some(m) = find("default") {
        let med = median(&m.list("compile_ns"));
        println!(
            "  default topology compile < 5 ms       median {:>10}  min {:>10}   {}",
            dur(med),
            dur(min(&m.list("compile_ns"))),
            verdict(med < 5_000_000)
        );
    }
    if let Some(m) = find("50x100x10") {
        let med = median(&m.list("compile_ns"));
        let pods = m.get("pods").unwrap_or("?");
        println!(
            "  {pods} pods compile < 2 s            median {:>10}  min {:>10}   {}",
            dur(med),
            dur(min(&m.list("compile_ns"))),
            verdict(med < 2_000_000_000)
        );
        let peak = m.num("hwm_kb").unwrap_or(0).max(m.num("maxrss_kb").unwrap_or(0)) * 1024;
        println!(
            "  {pods} pods peak RSS < 500 MB        peak   {:>10}                  {}",
            bytes(peak),
            verdict(peak < 500_000_000)
        );
    }
    let generated: Vec<(&str, f64)> = results
        .iter()
        .filter(|o| o.case.size.is_some())
        .filter_map(|o| {
            let m = o.measure.as_ref().ok()?;
            let pods = m.num("pods")? as f64;
            (pods > 0.0).then(|| (o.case.id, median(&m.list("compile_ns")) as f64 / pods))
        })
        .collect();
    if !generated.is_empty() {
        let cells: Vec<String> = generated
            .iter()
            .map(|(id, ns)| format!("{id}: {}", dur(*ns as u128)))
            .collect();
        println!("  linearity, median time per pod: {}", cells.join(", "));
        if generated.len() >= 2 {
            let (first, last) = (generated[0].1, generated[generated.len() - 1].1);
            println!(
                "  per-pod ratio largest/smallest: {:.2} (1.00 = linear in pods)",
                last / first
            );
        }
    }
}

// ---------------------------------------------------------------- formatting

fn median(v: &[u128]) -> u128 {
    if v.is_empty() {
        return 0;
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2
    }
}

fn min(v: &[u128]) -> u128 {
    v.iter().copied().min().unwrap_or(0)
}

fn dur(ns: u128) -> String {
    let d = Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX));
    let s = d.as_secs_f64();
    if s >= 1.0 {
        format!("{s:.3} s")
    } else if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.1} us", s * 1e6)
    }
}

fn bytes(b: u128) -> String {
    let b = b as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{b} B")
    }
}
