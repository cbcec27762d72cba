//! The generated artifacts against the real tools: every worker's kube-proxy.nft is
//! checked (`nft -c`) and loaded (`nft -f`, twice) in a throwaway network namespace,
//! and every ingress nginx.conf passes `nginx -t`. The root network namespace is never
//! touched: every command runs under `ip netns exec`.
//!
//! Needs root, `ip`, `nft` and `nginx`; without them the tests print `SKIP: <reason>`
//! and pass, unless the `CI` environment variable is set, where they fail instead.

use knetsim_compiler::{check, compile, Bundle, CompileOptions, Model, Source};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn topologies() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(root().join("topologies"))
        .expect("topologies/ exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no topology in topologies/");
    out
}

/// Absolute path of `bin` on PATH (plus the sbin directories, which a non-login root may lack).
fn find_bin(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

struct Tools {
    ip: PathBuf,
    nft: PathBuf,
    nginx: PathBuf,
}

/// The tools, or None after printing why the test is skipped (panics instead under CI).
fn tools(test: &str) -> Option<Tools> {
    let reason = match effective_uid() {
        Some(0) => None,
        Some(uid) => Some(format!("not root (uid {uid}); network namespaces need root")),
        None => Some("cannot tell the user id from /proc/self/status".to_string()),
    };
    let found = (find_bin("ip"), find_bin("nft"), find_bin("nginx"));
    let reason = reason.or_else(|| {
        let missing: Vec<&str> = [("ip", &found.0), ("nft", &found.1), ("nginx", &found.2)]
            .into_iter()
            .filter(|(_, p)| p.is_none())
            .map(|(n, _)| n)
            .collect();
        (!missing.is_empty()).then(|| format!("missing {} on PATH", missing.join(", ")))
    });
    if let Some(reason) = reason {
        if std::env::var_os("CI").is_some() {
            panic!("{test}: cannot run under CI: {reason}");
        }
        println!("SKIP: {test}: {reason}");
        return None;
    }
    let (Some(ip), Some(nft), Some(nginx)) = found else {
        unreachable!("missing tools were reported above")
    };
    Some(Tools { ip, nft, nginx })
}

static NETNS_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A network namespace that exists for the guard's lifetime, even if the test panics.
struct Netns<'t> {
    name: String,
    tools: &'t Tools,
}

impl<'t> Netns<'t> {
    fn new(tools: &'t Tools) -> Self {
        let n = NETNS_COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("knetsim-t-{}-{n}", std::process::id());
        let out = Command::new(&tools.ip)
            .args(["netns", "add", &name])
            .output()
            .expect("run ip netns add");
        assert!(out.status.success(), "ip netns add {name}: {}", text(&out));
        Netns { name, tools }
    }

    /// Runs `program args...` inside the namespace.
    fn exec(&self, program: &Path, args: &[&str]) -> Output {
        Command::new(&self.tools.ip)
            .args(["netns", "exec", &self.name])
            .arg(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {} in {}: {e}", program.display(), self.name))
    }
}

impl Drop for Netns<'_> {
    fn drop(&mut self) {
        let out = Command::new(&self.tools.ip).args(["netns", "del", &self.name]).output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!("warning: ip netns del {}: {}", self.name, text(&o)),
            Err(e) => eprintln!("warning: ip netns del {}: {e}", self.name),
        }
    }
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Compiles a topology for an emulation whose state lives in `state_dir`.
fn compile_in(path: &Path, state_dir: &Path) -> (Model, Bundle) {
    let source = Source::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let opts = CompileOptions {
        name: String::new(),
        state_dir: state_dir.to_path_buf(),
        not_ready: Default::default(),
        coredns_on_path: false,
    };
    let fail =
        |d: knetsim_compiler::Diagnostics| -> ! { panic!("{} does not compile:\n{}", path.display(), d.render()) };
    let model = check(&source, &opts).unwrap_or_else(|d| fail(d));
    let bundle = compile(&source, &opts).unwrap_or_else(|d| fail(d));
    (model, bundle)
}

#[test]
fn every_worker_ruleset_loads_in_nft() {
    let Some(tools) = tools("every_worker_ruleset_loads_in_nft") else {
        return;
    };
    let mut loaded = 0;
    for topo in topologies() {
        let files = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let (model, bundle) = compile_in(&topo, state.path());
        bundle.write_to(files.path()).unwrap();
        for c in &model.clusters {
            let vips: Vec<String> = c
                .services
                .iter()
                // A headless service has no VIP and no rules.
                .filter(|s| !s.endpoints.is_empty() && !s.headless)
                .map(|s| s.vip.to_string())
                .collect();
            for w in &c.workers {
                let rel = knetsim_compiler::artifacts::paths::nft_ruleset(c, w);
                let file = files.path().join(&rel);
                let file_arg = file.to_str().expect("utf-8 temp path");
                let what = format!("{} {rel}", topo.display());
                let ns = Netns::new(&tools);

                let out = ns.exec(&tools.nft, &["-c", "-f", file_arg]);
                assert!(out.status.success(), "nft -c -f {what}: {}", text(&out));
                // Loading twice: the file replaces the table, it does not add to it.
                for round in 1..=2 {
                    let out = ns.exec(&tools.nft, &["-f", file_arg]);
                    assert!(out.status.success(), "nft -f {what} (load {round}): {}", text(&out));
                }
                let out = ns.exec(&tools.nft, &["list", "table", "ip", "kube-proxy"]);
                assert!(out.status.success(), "nft list table in {}: {}", ns.name, text(&out));
                let listing = String::from_utf8_lossy(&out.stdout);
                for vip in &vips {
                    assert!(
                        listing.contains(vip.as_str()),
                        "{what}: VIP {vip} missing from the loaded table:\n{listing}"
                    );
                }
                let chains = listing.matches("\tchain nat-").count();
                assert_eq!(chains, 3, "{what}: one table with its three NAT hooks:\n{listing}");
                // The NetworkPolicy table beside it, where the cluster has policies.
                let rel = knetsim_compiler::artifacts::paths::network_policy(c, w);
                if bundle.get(&rel).is_some() {
                    let file = files.path().join(&rel);
                    let file_arg = file.to_str().expect("utf-8 temp path");
                    for round in 1..=2 {
                        let out = ns.exec(&tools.nft, &["-f", file_arg]);
                        assert!(out.status.success(), "nft -f {rel} (load {round}): {}", text(&out));
                    }
                    let out = ns.exec(&tools.nft, &["list", "table", "ip", "network-policy"]);
                    let listing = String::from_utf8_lossy(&out.stdout);
                    assert!(
                        listing.contains("chain ingress") && listing.contains("chain egress"),
                        "{rel}:\n{listing}"
                    );
                    loaded += 1;
                }
                loaded += 1;
            }
        }
    }
    assert!(loaded > 0, "no ruleset was loaded");
}

#[test]
fn every_ingress_conf_passes_nginx_t() {
    let Some(tools) = tools("every_ingress_conf_passes_nginx_t") else {
        return;
    };
    let mut tested = 0;
    for topo in topologies() {
        let state = tempfile::tempdir().unwrap();
        let (model, bundle) = compile_in(&topo, state.path());
        for c in &model.clusters {
            for ing in &c.ingresses {
                let rel = knetsim_compiler::artifacts::paths::nginx_conf(c, ing);
                let conf = bundle.get(&rel).unwrap_or_else(|| panic!("bundle lacks {rel}"));
                // `<state>/ingress/<worker>/<name>`: where the plan installs it.
                let dir = PathBuf::from(knetsim_compiler::artifacts::paths::runtime::ingress_dir(
                    &model.naming(),
                    ing,
                ));
                assert!(dir.starts_with(state.path().join("ingress")), "{}", dir.display());
                std::fs::create_dir_all(dir.join("tmp")).unwrap();
                std::fs::write(dir.join("nginx.conf"), conf).unwrap();
                let d = dir.to_str().expect("utf-8 temp path");
                assert!(
                    conf.contains(&format!("pid {d}/nginx.pid;")),
                    "nginx.conf of {rel} keeps its files in the state dir {d}:\n{conf}"
                );
                let ns = Netns::new(&tools);
                let (prefix, error_log, conf_path) =
                    (format!("{d}/"), format!("{d}/error.log"), format!("{d}/nginx.conf"));
                let out = ns.exec(&tools.nginx, &["-t", "-p", &prefix, "-e", &error_log, "-c", &conf_path]);
                assert!(
                    out.status.success(),
                    "nginx -t of {} {rel}: {}\n{conf}",
                    topo.display(),
                    text(&out)
                );
                tested += 1;
            }
        }
    }
    assert!(tested > 0, "no topology has an ingress");
}
