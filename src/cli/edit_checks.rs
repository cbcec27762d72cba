//! `pod rm` and `svc rm` drop the `[[checks]]` that name what they remove (as
//! `pod rm` drops the pod from its services' endpoints), so the edited topology
//! still compiles; the caller says which checks went.

use toml_edit::{DocumentMut, Table};

/// The host of an `http://HOST[:PORT]/...` URL.
fn url_host(url: &str) -> &str {
    let after = url.strip_prefix("http://").unwrap_or("");
    let authority = &after[..after.find(['/', '?', '#']).unwrap_or(after.len())];
    authority.rsplit_once(':').map(|(h, _)| h).unwrap_or(authority)
}

/// Removes the checks probing from or to `cluster`'s pod or service `name` of
/// `namespace` (written `C0/c2` or `C0/prod/web`, or `c2.C0` / `web.prod.C0` in a
/// URL); returns their names.
pub fn drop_checks_naming(doc: &mut DocumentMut, cluster: &str, namespace: &str, name: &str) -> Vec<String> {
    let Some(checks) = doc.get_mut("checks").and_then(|c| c.as_array_of_tables_mut()) else {
        return Vec::new();
    };
    let slash = knetsim_compiler::model::workload_id(cluster, namespace, name);
    let dotted = if namespace == knetsim_compiler::model::DEFAULT_NAMESPACE {
        format!("{name}.{cluster}")
    } else {
        format!("{name}.{namespace}.{cluster}")
    };
    let names_it = |t: &Table| {
        let field = |k: &str| t.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
        let ping = field("ping");
        field("from") == slash || ping == slash || ping == dotted || url_host(&field("http")) == dotted
    };
    let mut dropped = Vec::new();
    checks.retain(|t| {
        if names_it(t) {
            dropped.push(t.get("name").and_then(|v| v.as_str()).unwrap_or("?").to_string());
            false
        } else {
            true
        }
    });
    if checks.is_empty() {
        doc.remove("checks");
    }
    dropped
}

/// Tells which checks an edit dropped.
pub fn report_dropped(dropped: &[String], id: &str) {
    for name in dropped {
        eprintln!("note: check `{name}` names {id}: it is dropped from the topology");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"[[clusters]]
name = "C0"

[[checks]]
name = "from c2"
from = "C0/c2"
ping = "C0w1"

[[checks]]
name = "to c2"
from = "C0w1"
ping = "C0/c2"

[[checks]]
name = "url of c2"
from = "C0w1"
http = "http://c2.C0:8080/x"

[[checks]]
name = "other"   # kept
from = "C0/c22"
ping = "C0/c1"
"#;

    #[test]
    fn only_the_checks_naming_the_pod_go() {
        let mut doc: DocumentMut = TEXT.parse().unwrap();
        let dropped = drop_checks_naming(&mut doc, "C0", "default", "c2");
        assert_eq!(dropped, ["from c2", "to c2", "url of c2"]);
        let text = doc.to_string();
        assert!(text.contains("name = \"other\"   # kept\nfrom = \"C0/c22\""), "{text}");
        assert!(!text.contains("c2.C0") && !text.contains("\"C0/c2\""), "{text}");
        assert_eq!(drop_checks_naming(&mut doc, "C0", "default", "c1"), ["other"]);
        assert!(!doc.to_string().contains("[[checks]]"), "{doc}");
        assert!(drop_checks_naming(&mut doc, "C0", "default", "c1").is_empty());
    }

    #[test]
    fn url_hosts() {
        assert_eq!(url_host("http://c2.C0:8080/x"), "c2.C0");
        assert_eq!(url_host("http://10.0.0.3/svc1"), "10.0.0.3");
        assert_eq!(url_host("http://s1.C0"), "s1.C0");
        assert_eq!(url_host("ftp://x"), "");
    }
}
