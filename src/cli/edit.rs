//! Edits of a topology's text that keep the user's formatting (toml_edit), for
//! `knetsim pod` and `knetsim svc`.

use toml_edit::{Array, ArrayOfTables, DocumentMut, InlineTable, Item, Table, Value};

pub fn parse(text: &str) -> Result<DocumentMut, String> {
    text.parse::<DocumentMut>()
        .map_err(|e| format!("the running topology does not parse: {e}"))
}

/// `C0/c10` -> (`C0`, `default`, `c10`); `C0/prod/web` -> (`C0`, `prod`, `web`).
pub fn split_id(id: &str) -> Result<(&str, &str, &str), String> {
    knetsim_compiler::model::split_workload_id(id).ok_or_else(|| {
        format!(
            "`{id}`: name it CLUSTER/NAME (namespace default) or CLUSTER/NAMESPACE/NAME, e.g. C0/c10 or C0/prod/web"
        )
    })
}

pub fn cluster_mut<'a>(doc: &'a mut DocumentMut, name: &str) -> Result<&'a mut Table, String> {
    let clusters = doc
        .get_mut("clusters")
        .and_then(Item::as_array_of_tables_mut)
        .ok_or("the topology has no [[clusters]]")?;
    let names: Vec<String> = clusters
        .iter()
        .filter_map(|t| t.get("name").and_then(Item::as_str).map(str::to_string))
        .collect();
    clusters
        .iter_mut()
        .find(|t| t.get("name").and_then(Item::as_str) == Some(name))
        .ok_or_else(|| format!("no cluster `{name}` (clusters: {})", names.join(", ")))
}

/// A list of tables: `pods = [{ ... }, ...]` or `[[clusters.pods]]`.
pub enum List<'a> {
    Inline(&'a mut Array),
    Tables(&'a mut ArrayOfTables),
}

fn field_of_inline<'v>(v: &'v Value, key: &str) -> Option<&'v Value> {
    v.as_inline_table().and_then(|t| t.get(key))
}

impl List<'_> {
    /// The list `key` of a cluster, created (inline) when missing and `create` is set.
    pub fn of<'a>(cluster: &'a mut Table, key: &str, create: bool) -> Option<List<'a>> {
        if !cluster.contains_key(key) {
            if !create {
                return None;
            }
            cluster.insert(key, Item::Value(Value::Array(Array::new())));
        }
        match cluster.get_mut(key)? {
            Item::Value(Value::Array(a)) => Some(List::Inline(a)),
            Item::ArrayOfTables(t) => Some(List::Tables(t)),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            List::Inline(a) => a.len(),
            List::Tables(t) => t.len(),
        }
    }

    pub fn str_field(&self, i: usize, key: &str) -> Option<String> {
        match self {
            List::Inline(a) => a.get(i).and_then(|v| field_of_inline(v, key)).and_then(Value::as_str),
            List::Tables(t) => t.get(i).and_then(|t| t.get(key)).and_then(Item::as_str),
        }
        .map(str::to_string)
    }

    pub fn bool_field(&self, i: usize, key: &str) -> bool {
        match self {
            List::Inline(a) => a.get(i).and_then(|v| field_of_inline(v, key)).and_then(Value::as_bool),
            List::Tables(t) => t.get(i).and_then(|t| t.get(key)).and_then(Item::as_bool),
        }
        .unwrap_or(false)
    }

    /// The element `name` of Kubernetes namespace `namespace` (no `namespace` field: `default`).
    pub fn position(&self, namespace: &str, name: &str) -> Option<usize> {
        (0..self.len()).find(|&i| self.str_field(i, "name").as_deref() == Some(name) && self.namespace(i) == namespace)
    }

    pub fn namespace(&self, i: usize) -> String {
        self.str_field(i, "namespace")
            .unwrap_or_else(|| knetsim_compiler::model::DEFAULT_NAMESPACE.to_string())
    }

    pub fn set_field(&mut self, i: usize, key: &str, value: Value) {
        match self {
            List::Inline(a) => {
                if let Some(t) = a.get_mut(i).and_then(Value::as_inline_table_mut) {
                    t.insert(key, value);
                    t.fmt();
                }
            }
            List::Tables(t) => {
                if let Some(t) = t.get_mut(i) {
                    t.insert(key, Item::Value(value));
                }
            }
        }
    }

    pub fn remove(&mut self, i: usize) {
        match self {
            List::Inline(a) => {
                // The next element takes the removed one's place, layout included.
                let decor = a.get(i).map(|v| v.decor().clone());
                a.remove(i);
                if let (Some(decor), Some(next)) = (decor, a.get_mut(i)) {
                    *next.decor_mut() = decor;
                }
            }
            List::Tables(t) => {
                t.remove(i);
            }
        }
    }

    /// Appends an element laid out like the last one (one per line in a multi-line list).
    pub fn push(&mut self, mut item: InlineTable) {
        match self {
            List::Inline(a) => {
                item.fmt();
                let mut v = Value::InlineTable(item);
                if let Some(last) = a.iter().last() {
                    *v.decor_mut() = last.decor().clone();
                    let prefix = last.decor().prefix().and_then(|p| p.as_str()).unwrap_or("").to_string();
                    match prefix.rfind('\n') {
                        None => v.decor_mut().set_prefix(" "),
                        Some(at) => {
                            // A comment after the last element stays on its line.
                            let trailing = a.trailing().as_str().unwrap_or("").to_string();
                            if let Some(end) = trailing.rfind('\n') {
                                v.decor_mut()
                                    .set_prefix(format!("{}{}", &trailing[..=end], &prefix[at + 1..]));
                                a.set_trailing(format!("\n{}", &trailing[end + 1..]));
                            }
                        }
                    }
                } else {
                    v.decor_mut().clear();
                }
                a.push_formatted(v);
            }
            List::Tables(t) => t.push(item.into_table()),
        }
    }
}

/// The string array `key` of a table (a service's `pods`).
pub fn strings(t: &Value, key: &str) -> Vec<String> {
    field_of_inline(t, key)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

/// `app=web` -> (`app`, `web`), for `--label` and `--selector`.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}`: write KEY=VALUE, e.g. app=web")),
    }
}

/// `{ app = "web", tier = "front" }`.
pub fn labels_table(labels: &[(String, String)]) -> InlineTable {
    let mut t = InlineTable::new();
    for (k, v) in labels {
        t.insert(k, v.as_str().into());
    }
    t
}

pub fn string_array(items: &[String]) -> Value {
    let mut a = Array::new();
    for s in items {
        a.push(s.as_str());
    }
    Value::Array(a)
}

/// Removes `pod` of `namespace` from the `pods` of every service of that namespace in a
/// cluster; returns the services changed.
pub fn drop_endpoint(cluster: &mut Table, namespace: &str, pod: &str) -> Vec<String> {
    let mut changed = Vec::new();
    let Some(mut services) = List::of(cluster, "services", false) else {
        return changed;
    };
    for i in 0..services.len() {
        if services.namespace(i) != namespace {
            continue;
        }
        let pods: Vec<String> = match &services {
            List::Inline(a) => a.get(i).map(|v| strings(v, "pods")).unwrap_or_default(),
            List::Tables(t) => t
                .get(i)
                .and_then(|t| t.get("pods"))
                .and_then(Item::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
                .unwrap_or_default(),
        };
        if !pods.iter().any(|p| p == pod) {
            continue;
        }
        let kept: Vec<String> = pods.into_iter().filter(|p| p != pod).collect();
        services.set_field(i, "pods", string_array(&kept));
        changed.extend(services.str_field(i, "name"));
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# my topology\n[[clusters]]\nname = \"C0\"  # the first\npods = [\n  { name = \"c1\", worker = \"w1\" },\n  { name = \"c2\", worker = \"w2\" }, # two\n]\nservices = [{ name = \"web\", pods = [\"c1\", \"c2\"] }]\n";

    #[test]
    fn push_and_remove_keep_the_layout() {
        let mut doc = parse(TEXT).unwrap();
        let c = cluster_mut(&mut doc, "C0").unwrap();
        let mut pods = List::of(c, "pods", true).unwrap();
        let mut t = InlineTable::new();
        t.insert("name", "c10".into());
        t.insert("worker", "w1".into());
        pods.push(t);
        let text = doc.to_string();
        assert!(
            text.contains("  { name = \"c2\", worker = \"w2\" }, # two\n  { name = \"c10\", worker = \"w1\" },\n]"),
            "{text}"
        );
        assert!(
            text.starts_with("# my topology\n") && text.contains("# the first"),
            "{text}"
        );
        let mut doc = parse(&text).unwrap();
        let c = cluster_mut(&mut doc, "C0").unwrap();
        let mut pods = List::of(c, "pods", false).unwrap();
        let i = pods.position("default", "c1").unwrap();
        pods.remove(i);
        assert_eq!(drop_endpoint(c, "default", "c1"), vec!["web"]);
        let text = doc.to_string();
        assert!(
            text.contains(
                "pods = [\n  { name = \"c2\", worker = \"w2\" }, # two\n  { name = \"c10\", worker = \"w1\" },\n]"
            ),
            "{text}"
        );
        assert!(
            text.contains("services = [{ name = \"web\", pods = [\"c2\"] }]"),
            "{text}"
        );
        assert!(knetsim_compiler::topology::parse(&knetsim_compiler::Source::new("t", text)).is_ok());
    }

    #[test]
    fn unknown_cluster_and_bad_ids() {
        let mut doc = parse(TEXT).unwrap();
        assert!(cluster_mut(&mut doc, "C9").unwrap_err().contains("clusters: C0"));
        assert!(split_id("c10").is_err());
        assert_eq!(split_id("C0/c10").unwrap(), ("C0", "default", "c10"));
        assert_eq!(split_id("C0/prod/web").unwrap(), ("C0", "prod", "web"));
        assert!(split_id("C0/a/b/c").is_err());
    }
}
