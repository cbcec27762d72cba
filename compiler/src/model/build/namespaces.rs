//! Kubernetes namespaces and labels: names and label syntax checked as the API
//! server checks them, so that selectors later match as they would in a cluster.

use super::*;

/// A DNS-1123 label (namespace names, and the service and pod names DNS uses).
pub(super) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A label value, or the name part of a label key: at most 63 characters,
/// alphanumerics at both ends, `-`, `_`, `.` inside.
fn is_label_name(s: &str, may_be_empty: bool) -> bool {
    if s.is_empty() {
        return may_be_empty;
    }
    let ends = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    s.len() <= 63
        && ends(s.chars().next())
        && ends(s.chars().last())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A label key: `[prefix/]name`, the prefix a DNS subdomain (e.g. `kubernetes.io`).
pub(super) fn is_label_key(key: &str) -> bool {
    match key.rsplit_once('/') {
        Some((prefix, name)) => {
            !prefix.is_empty()
                && prefix.len() <= 253
                && prefix.split('.').all(is_dns_label)
                && is_label_name(name, false)
        }
        None => is_label_name(key, false),
    }
}

impl Builder<'_> {
    pub(super) fn namespaces(&mut self, cs: &spec::ClusterSpec, cluster: &mut Cluster) {
        let mut names = Unique::within("namespace", format!("cluster `{}`", cluster.name));
        for ns in &cs.namespaces {
            let name = ns.name.get_ref();
            if !is_dns_label(name) {
                self.report.error(
                    ns.name.span(),
                    format!("namespace `{name}` is not a valid name"),
                    "invalid namespace",
                    "as in Kubernetes: at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit",
                );
                continue;
            }
            if !names.insert(&mut self.report, name, ns.name.span(), self.text) {
                continue;
            }
            // Declaring `default` or `kube-system` only gives it labels.
            let labels = self.labels(&ns.labels);
            cluster.namespaces.push(Namespace {
                name: name.clone(),
                labels,
            });
        }
    }

    /// The namespace a pod or service names (default `default`), reported when unknown.
    pub(super) fn namespace_of(&mut self, ns: &Option<Spanned<String>>, cluster: &Cluster) -> String {
        let Some(ns) = ns else {
            return DEFAULT_NAMESPACE.to_string();
        };
        if !cluster.has_namespace(ns.get_ref()) {
            let known = cluster.namespace_names();
            self.unknown(
                ns,
                "namespace",
                &format!("cluster `{}`", cluster.name),
                known.iter().map(String::as_str),
            );
        }
        ns.get_ref().clone()
    }

    /// Labels (or a service selector) with their keys and values checked.
    pub(super) fn labels(&mut self, labels: &Option<Spanned<spec::Labels>>) -> Labels {
        let mut out = Labels::new();
        let Some(labels) = labels else {
            return out;
        };
        for (k, v) in labels.get_ref() {
            if !is_label_key(k.get_ref()) {
                self.report.error(
                    k.span(),
                    format!("label key `{}` is not valid", k.get_ref()),
                    "invalid label key",
                    "as in Kubernetes: an optional DNS prefix and '/', then at most 63 letters, digits, '-', '_', '.', starting and ending with a letter or digit (e.g. \"app\", \"app.kubernetes.io/name\")",
                );
                continue;
            }
            if !is_label_name(v.get_ref(), true) {
                self.report.error(
                    v.span(),
                    format!("label value `{}` of `{}` is not valid", v.get_ref(), k.get_ref()),
                    "invalid label value",
                    "at most 63 letters, digits, '-', '_', '.', starting and ending with a letter or digit (or empty)",
                );
                continue;
            }
            out.insert(k.get_ref().clone(), v.get_ref().clone());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_syntax_is_kubernetes() {
        for ok in [
            "app",
            "app.kubernetes.io/name",
            "kubernetes.io/metadata.name",
            "a_b.c-d",
            "A1",
        ] {
            assert!(is_label_key(ok), "{ok}");
        }
        for bad in [
            "",
            "-app",
            "app-",
            "a/b/c",
            "/app",
            "Example.com/app",
            "a b",
            &"x".repeat(64),
        ] {
            assert!(!is_label_key(bad), "{bad}");
        }
        assert!(is_dns_label("kube-system") && !is_dns_label("Prod") && !is_dns_label("a_b"));
    }
}
