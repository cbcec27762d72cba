//! netpol-bench: what NetworkPolicy costs. Compiles a generated cluster of 1000 pods
//! in 20 namespaces with 200 policies (pod, namespace and combined selectors,
//! ipBlocks with except, named and numeric ports, ranges), and reports the compile
//! time and the nft rules and set elements each worker loads. With `--live` (root),
//! it also brings up 100 pods in 4 namespaces, two of them isolated, and times
//! `knetsim test --matrix` (10 000 TCP connects, the blocked ones waiting for the
//! 1 s timeout).
//!
//! `cargo build --release --workspace && ./target/release/netpol-bench [--live] [--runs N]`
//! See docs/performance.md. Always exits 0: it is a report, not a test.

use knetsim_compiler::artifacts::{self, netpol};
use knetsim_compiler::{check, CompileOptions, Source};
use std::process::Command;
use std::time::Instant;

fn policies_topology(workers: usize, namespaces: usize, pods: usize, policies: usize) -> String {
    let mut t = format!("[[clusters]]\nname = \"C0\"\nworkers = {workers}\nflannel = {{ ip_masq = true, subnet_len = 22 }}\nnamespaces = [\n");
    for n in 0..namespaces {
        t.push_str(&format!(
            "  {{ name = \"ns{n}\", labels = {{ team = \"t{}\" }} }},\n",
            n % 4
        ));
    }
    t.push_str("]\npods = [\n");
    for i in 0..pods {
        t.push_str(&format!(
            "  {{ name = \"p{i}\", namespace = \"ns{}\", worker = \"w{}\", labels = {{ app = \"a{}\", tier = \"t{}\" }}, ports = [{{ port = 8080, name = \"http\" }}] }},\n",
            i % namespaces,
            1 + i % workers,
            i % 10,
            i % 3
        ));
    }
    t.push_str("]\n");
    for i in 0..policies {
        let peers = match i % 4 {
            0 => "{ pod_selector = { match_labels = { app = \"a1\" } } }".to_string(),
            1 => "{ namespace_selector = { match_labels = { team = \"t2\" } } }".to_string(),
            2 => "{ namespace_selector = { match_expressions = [{ key = \"team\", operator = \"In\", values = [\"t0\", \"t1\"] }] }, pod_selector = { match_labels = { tier = \"t0\" } } }".to_string(),
            _ => "{ ip_block = { cidr = \"11.0.0.0/8\", except = [\"11.10.0.0/22\"] } }".to_string(),
        };
        t.push_str(&format!(
            "[[clusters.network_policies]]\nname = \"np{i}\"\nnamespace = \"ns{}\"\npod_selector = {{ match_labels = {{ app = \"a{}\" }} }}\npolicy_types = [\"Ingress\", \"Egress\"]\ningress = [{{ from = [{peers}], ports = [{{ port = \"http\" }}, {{ port = 9000, end_port = 9100 }}] }}]\negress = [{{ to = [{peers}] }}]\n",
            i % namespaces,
            i % 10
        ));
    }
    t
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn compile_case(runs: usize) {
    let text = policies_topology(50, 20, 1000, 200);
    let source = Source::new("<generated 1000 pods, 200 policies>", text);
    let opts = CompileOptions::named("bench");
    let mut times = Vec::new();
    let mut bundle = None;
    for _ in 0..runs {
        let t0 = Instant::now();
        let model = check(&source, &opts).expect("the generated topology compiles");
        let b = artifacts::render_bundle(&model);
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
        bundle = Some((model, b));
    }
    let (model, b) = bundle.expect("at least one run");
    let (min, med, max) = stats(times);
    println!("compile 1000 pods + 200 policies (50 workers, 20 namespaces), {runs} runs:");
    println!("  check + render: min {min:.1} ms, median {med:.1} ms, max {max:.1} ms (target < 1000 ms)");
    let c = &model.clusters[0];
    let mut rules = Vec::new();
    let mut elements = Vec::new();
    let mut bytes = Vec::new();
    for w in &c.workers {
        let text = b
            .get(&artifacts::paths::network_policy(c, w))
            .expect("every worker has a policy table");
        rules.push(netpol::rule_count(text) as f64);
        elements.push(set_elements(text) as f64);
        bytes.push(text.len() as f64);
    }
    let (rmin, rmed, rmax) = stats(rules);
    let (bmin, bmed, bmax) = stats(bytes);
    let (emin, emed, emax) = stats(elements);
    println!("  nft rules per worker: min {rmin}, median {rmed}, max {rmax}");
    println!("  set elements per worker: min {emin}, median {emed}, max {emax}");
    println!("  ruleset bytes per worker: min {bmin}, median {bmed}, max {bmax}");
    let pairs = 1000usize * 1000;
    println!("  (a rule per pod pair would be {pairs} rules; per worker here about {rmed} rules)");
}

/// Elements of every set in a rendered ruleset (`elements = { a, b . c . d }` lines).
fn set_elements(ruleset: &str) -> usize {
    ruleset
        .lines()
        .filter_map(|l| l.trim().strip_prefix("elements = {"))
        .map(|l| {
            l.trim_end_matches('}')
                .split(',')
                .filter(|e| !e.trim().is_empty())
                .count()
        })
        .sum()
}

fn knetsim_binary() -> std::path::PathBuf {
    let me = std::env::current_exe().expect("own path");
    me.with_file_name("knetsim")
}

fn live_case(runs: usize) {
    let bin = knetsim_binary();
    if !bin.exists() {
        println!("live matrix: skipped ({} not built)", bin.display());
        return;
    }
    // 100 pods serving port 80 in 4 namespaces on 20 workers; ns0 and ns1 deny ingress
    // except from their own namespace, so 2 x 25 x 75 pairs wait for the timeout. Five
    // pods per worker keep the neighbour entries made at once under the kernel's
    // host-wide 1024 (see docs/performance.md).
    let mut t = String::from("[[clusters]]\nname = \"C0\"\nworkers = 20\nflannel = { ip_masq = true }\nnamespaces = [{ name = \"ns0\" }, { name = \"ns1\" }, { name = \"ns2\" }, { name = \"ns3\" }]\npods = [\n");
    for i in 0..100 {
        t.push_str(&format!(
            "  {{ name = \"p{i}\", namespace = \"ns{}\", worker = \"w{}\", command = [\"knetsim\", \"serve\", \"--text\", \"p{i}\", \"--port\", \"80\"], ports = [80] }},\n",
            i % 4,
            1 + i % 20
        ));
    }
    t.push_str("]\n");
    for n in 0..2 {
        t.push_str(&format!("[[clusters.network_policies]]\nname = \"own-namespace-only\"\nnamespace = \"ns{n}\"\npod_selector = {{}}\ningress = [{{ from = [{{ pod_selector = {{}} }}] }}]\n"));
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("matrix.toml");
    std::fs::write(&path, t).expect("write topology");
    let name = format!("nb{}", std::process::id());
    let run = |args: &[&str]| Command::new(&bin).args(args).output().expect("run knetsim");
    let up = run(&["up", "--name", &name, "--no-checks", path.to_str().unwrap()]);
    if !up.status.success() {
        println!("live matrix: up failed: {}", String::from_utf8_lossy(&up.stderr));
        run(&["down", "--name", &name]);
        return;
    }
    let mut times = Vec::new();
    let mut blocked = 0;
    for _ in 0..runs {
        let t0 = Instant::now();
        let out = run(&["test", "--name", &name, "--matrix", "--json"]);
        times.push(t0.elapsed().as_secs_f64());
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        blocked = v[0]["reachable"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .flat_map(|r| r.as_array().cloned().unwrap_or_default())
                    .filter(|c| c == false)
                    .count()
            })
            .unwrap_or(0);
    }
    run(&["down", "--name", &name]);
    let (min, med, max) = stats(times);
    println!("live matrix of 100 pods x TCP/80 on 20 workers (10000 connects, {blocked} blocked, 3750 expected), {runs} runs:");
    println!("  knetsim test --matrix: min {min:.2} s, median {med:.2} s, max {max:.2} s (target < 10 s)");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(5);
    println!("netpol-bench on {}", knetsim_bench::cpu_model());
    compile_case(runs);
    if args.iter().any(|a| a == "--live") {
        live_case(runs);
    }
}
