//! Golden snapshot of the default topology's bundle: every artifact and manifest.json,
//! byte for byte, plus the semantic facts of the seed scenario read back from the snapshot.
//!
//! Refresh the snapshot after an intended change with:
//!     UPDATE_GOLDEN=1 cargo test --test golden
//! and review the result with `git diff tests/golden`.

use knetsim_compiler::bundle::{ArtifactKind, Bundle, MANIFEST};
use knetsim_compiler::{compile, diff, CompileOptions, Source};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn golden_dir() -> PathBuf {
    root().join("tests/golden/default")
}

fn compile_default() -> Bundle {
    let path = root().join("topologies/default.toml");
    let source = Source::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    compile(&source, &CompileOptions::default())
        .unwrap_or_else(|d| panic!("topologies/default.toml does not compile:\n{}", d.render()))
}

/// Every file the bundle writes (artifacts and manifest.json), by relative path.
fn expected_files(bundle: &Bundle) -> BTreeMap<String, String> {
    let mut files: BTreeMap<String, String> = bundle
        .files
        .iter()
        .map(|(path, a)| (path.clone(), a.content.to_string()))
        .collect();
    files.insert(MANIFEST.to_string(), bundle.manifest_json());
    files
}

/// Every file under `dir`, by path relative to `dir` with `/` separators.
fn read_tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries {
            let entry = entry.expect("readable directory entry");
            let path = entry.path();
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                let rel = path.strip_prefix(base).expect("under base");
                let rel = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                out.insert(rel, std::fs::read(&path).expect("readable file"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// A short unified diff of one file (golden -> compiled), at most `max_lines` lines.
fn short_diff(path: &str, golden: &str, actual: &str, max_lines: usize) -> String {
    let one = |content: &str| {
        let mut b = Bundle::default();
        b.insert(path, ArtifactKind::Inventory, None, None, content.to_string());
        b
    };
    let text = diff::unified(&one(golden), &one(actual), 2);
    let lines: Vec<&str> = text.lines().collect();
    let mut out = lines.iter().take(max_lines).copied().collect::<Vec<_>>().join("\n");
    if lines.len() > max_lines {
        out.push_str(&format!("\n... ({} more diff lines)", lines.len() - max_lines));
    }
    out
}

/// Rewrites the snapshot in place: each file atomically (other tests read it concurrently),
/// then files that are no longer generated are removed.
fn update_golden(files: &BTreeMap<String, String>) {
    let dir = golden_dir();
    for (path, content) in files {
        let target = dir.join(path);
        std::fs::create_dir_all(target.parent().expect("has parent")).expect("create snapshot dirs");
        let tmp = target.with_extension("golden-tmp");
        std::fs::write(&tmp, content).expect("write snapshot file");
        std::fs::rename(&tmp, &target).expect("move snapshot file in place");
    }
    for stale in read_tree(&dir).keys().filter(|p| !files.contains_key(*p)) {
        std::fs::remove_file(dir.join(stale)).expect("remove stale snapshot file");
        eprintln!("UPDATE_GOLDEN: removed {stale}");
    }
    eprintln!("UPDATE_GOLDEN: wrote {} files to {}", files.len(), dir.display());
}

#[test]
fn default_bundle_matches_golden_snapshot() {
    let files = expected_files(&compile_default());
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| !v.is_empty() && v != "0") {
        update_golden(&files);
    }
    let golden = read_tree(&golden_dir());
    assert!(
        !golden.is_empty(),
        "no golden snapshot in {}; create it with `UPDATE_GOLDEN=1 cargo test --test golden`",
        golden_dir().display()
    );

    let expected: BTreeSet<&String> = files.keys().collect();
    let present: BTreeSet<&String> = golden.keys().collect();
    let missing: Vec<&&String> = expected.difference(&present).collect();
    let extra: Vec<&&String> = present.difference(&expected).collect();
    let mut different = Vec::new();
    for (path, content) in &files {
        if let Some(g) = golden.get(path) {
            if g.as_slice() != content.as_bytes() {
                different.push(short_diff(path, &String::from_utf8_lossy(g), content, 30));
            }
        }
    }
    if missing.is_empty() && extra.is_empty() && different.is_empty() {
        return;
    }
    let mut report = String::from("the default bundle differs from tests/golden/default:\n");
    for p in &missing {
        report.push_str(&format!("  missing from snapshot: {p}\n"));
    }
    for p in &extra {
        report.push_str(&format!("  extra in snapshot (no longer generated): {p}\n"));
    }
    for d in &different {
        report.push_str(&format!("  different:\n{d}\n"));
    }
    report.push_str("if the change is intended: UPDATE_GOLDEN=1 cargo test --test golden, then review git diff\n");
    panic!("{report}");
}

#[test]
fn compiling_twice_is_byte_identical() {
    let (a, b) = (compile_default(), compile_default());
    assert_eq!(expected_files(&a), expected_files(&b));

    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    a.write_to(da.path()).unwrap();
    b.write_to(db.path()).unwrap();
    let (ta, tb) = (read_tree(da.path()), read_tree(db.path()));
    assert_eq!(
        ta.len(),
        a.files.len() + 1,
        "every artifact plus manifest.json is written"
    );
    assert!(ta == tb, "two writes of the same topology differ");

    let back = Bundle::read_from(da.path()).unwrap();
    assert_eq!(back, a, "read_from(write_to(bundle)) gives the bundle back");
}

// ---- semantic facts of the seed scenario, read from the snapshot ----

fn golden_text(rel: &str) -> String {
    let path = golden_dir().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("snapshot file {}: {e}", path.display()))
}

fn golden_json(rel: &str) -> Value {
    serde_json::from_str(&golden_text(rel)).unwrap_or_else(|e| panic!("snapshot file {rel} is not JSON: {e}"))
}

fn cluster<'a>(inv: &'a Value, name: &str) -> &'a Value {
    inv["clusters"]
        .as_array()
        .expect("clusters array")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("inventory has no cluster {name}"))
}

/// Host name -> underlay IP, over etcd members and workers of every cluster.
fn host_ips(inv: &Value) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for c in inv["clusters"].as_array().unwrap() {
        for e in c["etcd"].as_array().unwrap() {
            out.insert(e["name"].as_str().unwrap().into(), e["ip"].as_str().unwrap().into());
        }
        for w in c["workers"].as_array().unwrap() {
            out.insert(
                w["host"]["name"].as_str().unwrap().into(),
                w["host"]["ip"].as_str().unwrap().into(),
            );
        }
    }
    out
}

fn pod_ip(inv: &Value, cluster_name: &str, pod: &str) -> String {
    cluster(inv, cluster_name)["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == pod)
        .unwrap_or_else(|| panic!("no pod {cluster_name}/{pod}"))["ip"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn golden_inventory_has_the_seed_addresses() {
    let inv = golden_json("inventory.json");
    let ips = host_ips(&inv);
    assert_eq!(ips["C0w1"], "10.0.0.3");
    assert_eq!(ips["C1w1"], "10.0.0.8");
    assert_eq!(ips["C0e1"], "10.1.0.1");
    assert_eq!(ips["C1e2"], "10.2.0.2");
    let c0w1 = cluster(&inv, "C0")["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["host"]["name"] == "C0w1")
        .expect("C0w1 in inventory");
    assert_eq!(c0w1["subnet"], "11.10.0.0/20");
    assert_eq!(pod_ip(&inv, "C0", "c1"), "11.10.0.2");
}

#[test]
fn golden_flannel_configs_match_the_seed() {
    let seed_path = root().join("../shared/seed/reference-conf/flannel-network-config.json");
    let seed_cni = serde_json::json!({
        "name": "C0w1",
        "type": "flannel",
        "subnetFile": "/tmp/knetsim/C0w1/flannel-subnet.env",
        "dataDir": "/tmp/knetsim/C0w1/flannel",
        "delegate": { "isDefaultGateway": true }
    });
    let seed: Value = match std::fs::read_to_string(&seed_path) {
        Ok(text) => serde_json::from_str(&text).expect("seed flannel config is JSON"),
        // The seed sits next to the workspace; without it, use its content as published.
        Err(_) => serde_json::json!({
            "Network": "11.0.0.0/8",
            "SubnetLen": 20,
            "SubnetMin": "11.10.0.0",
            "SubnetMax": "11.99.0.0",
            "Backend": { "Type": "vxlan", "VNI": 100, "Port": 8472 }
        }),
    };
    for c in ["C0", "C1"] {
        assert_eq!(
            golden_json(&format!("clusters/{c}/flannel-network-config.json")),
            seed,
            "flannel network config of {c} equals the seed's"
        );
    }
    let cni = golden_json("clusters/C0/workers/C0w1/flannel_conf.json");
    for key in ["name", "type", "subnetFile", "dataDir"] {
        assert_eq!(cni[key], seed_cni[key], "CNI config field {key}");
    }
    assert_eq!(cni["delegate"]["isDefaultGateway"], true);
    let c1w3 = golden_json("clusters/C1/workers/C1w3/flannel_conf.json");
    assert_eq!(c1w3["name"], "C1w3");
    assert_eq!(c1w3["type"], "flannel");
    assert_eq!(c1w3["subnetFile"], "/tmp/knetsim/C1w3/flannel-subnet.env");
    assert_eq!(c1w3["dataDir"], "/tmp/knetsim/C1w3/flannel");
}

#[test]
fn golden_nginx_routes_the_seed_paths() {
    let conf = golden_text("clusters/C0/ingress/grp1/nginx.conf");
    // `location /svcN { proxy_pass http://VIP:PORT; }`, whatever the whitespace.
    let routes: Vec<(String, String)> = conf
        .split("location ")
        .skip(1)
        .map(|block| {
            let path = block.split_whitespace().next().unwrap().to_string();
            let pass = block
                .split("proxy_pass ")
                .nth(1)
                .and_then(|rest| rest.split(';').next())
                .unwrap_or_else(|| panic!("location {path} has no proxy_pass"))
                .trim()
                .to_string();
            (path, pass)
        })
        .collect();
    assert_eq!(
        routes,
        vec![
            ("/svc1".to_string(), "http://100.64.11.1:8000".to_string()),
            ("/svc2".to_string(), "http://100.64.11.2:8000".to_string()),
        ]
    );
    assert!(conf.contains("listen 8001;"), "ingress listens on the seed's port 8001");
}

fn entities<'a>(config: &'a Value, kind: &str) -> Vec<&'a Value> {
    config
        .as_array()
        .expect("router config is a list")
        .iter()
        .filter(|e| e[0] == kind)
        .map(|e| &e[1])
        .collect()
}

#[test]
fn golden_router_configs_link_c1_to_c0() {
    let inv = golden_json("inventory.json");
    let c1 = golden_json("clusters/C1/skupper/C1.json");
    let connectors = entities(&c1, "connector");
    assert!(
        connectors
            .iter()
            .any(|c| c["host"] == "10.0.0.3" && c["port"] == "55671" && c["cost"] == 1 && c["role"] == "inter-router"),
        "C1 dials C0w1's inter-router listener: {connectors:?}"
    );
    let listeners = entities(&c1, "tcpListener");
    assert!(
        listeners.iter().any(|l| l["port"] == "1028" && l["address"] == "svc1"),
        "C1 listens for svc1 on 1028: {listeners:?}"
    );

    let c0 = golden_json("clusters/C0/skupper/C0.json");
    let c4 = pod_ip(&inv, "C0", "c4");
    let tcp_connectors = entities(&c0, "tcpConnector");
    assert!(
        tcp_connectors
            .iter()
            .any(|t| t["host"] == c4.as_str() && t["port"] == "80" && t["address"] == "svc1"),
        "C0 connects svc1 to c4 ({c4}) port 80: {tcp_connectors:?}"
    );
    assert!(entities(&c0, "connector").is_empty(), "C0 only accepts");
    for (config, id) in [(&c0, "c0"), (&c1, "c1")] {
        assert_eq!(entities(config, "router")[0]["id"], id);
    }
}

#[test]
fn golden_plan_is_shell_free_and_topologically_ordered() {
    let plan = golden_json("plan.json");
    let steps = plan["steps"].as_array().expect("steps array");
    assert!(!steps.is_empty());
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, step) in steps.iter().enumerate() {
        let id = step["id"].as_str().expect("step id");
        if let Some(argv) = step.get("argv") {
            let argv: Vec<&str> = argv
                .as_array()
                .expect("argv is a list")
                .iter()
                .map(|a| a.as_str().expect("argv holds strings"))
                .collect();
            assert!(!argv.is_empty(), "step {id} has an empty argv");
            let shell = |a: &str| {
                let base = a.rsplit('/').next().unwrap_or(a);
                matches!(base, "sh" | "bash" | "dash" | "zsh" | "ash")
            };
            assert!(
                !(argv.iter().any(|a| shell(a)) && argv.contains(&"-c")),
                "step {id} runs a shell: {argv:?}"
            );
        }
        for dep in step["after"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let dep = dep.as_str().expect("after holds ids");
            match seen.get(dep) {
                Some(j) => assert!(*j < i),
                None => {
                    let exists = steps.iter().any(|s| s["id"] == dep);
                    panic!(
                        "step {id} depends on `{dep}`, which {}",
                        if exists {
                            "comes later in the plan"
                        } else {
                            "does not exist"
                        }
                    );
                }
            }
        }
        assert!(seen.insert(id, i).is_none(), "duplicate step id {id}");
    }
    assert!(seen.contains_key("cni-add:C0/c1"));
    assert!(seen.contains_key("nginx:C0/grp1"));
}
