//! Artifact-by-artifact comparison of two bundles, as unified diffs.

use crate::bundle::Bundle;
use similar::TextDiff;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Added(String),
    Removed(String),
    Modified(String),
}

impl Change {
    pub fn path(&self) -> &str {
        match self {
            Change::Added(p) | Change::Removed(p) | Change::Modified(p) => p,
        }
    }
}

/// Paths that differ between `a` and `b`, sorted.
pub fn changes(a: &Bundle, b: &Bundle) -> Vec<Change> {
    let mut out = Vec::new();
    for (path, art) in &a.files {
        match b.files.get(path) {
            None => out.push(Change::Removed(path.clone())),
            Some(other) if other.content != art.content => out.push(Change::Modified(path.clone())),
            Some(_) => {}
        }
    }
    for path in b.files.keys() {
        if !a.files.contains_key(path) {
            out.push(Change::Added(path.clone()));
        }
    }
    out.sort_by(|x, y| x.path().cmp(y.path()));
    out
}

/// A unified diff per changed artifact, `a/` and `b/` prefixed like git.
pub fn unified(a: &Bundle, b: &Bundle, context: usize) -> String {
    let mut out = String::new();
    for change in changes(a, b) {
        let path = change.path();
        let old = a.get(path).unwrap_or("");
        let new = b.get(path).unwrap_or("");
        let (old_name, new_name) = match change {
            Change::Added(_) => ("/dev/null".to_string(), format!("b/{path}")),
            Change::Removed(_) => (format!("a/{path}"), "/dev/null".to_string()),
            Change::Modified(_) => (format!("a/{path}"), format!("b/{path}")),
        };
        out.push_str(&format!("diff --knetsim a/{path} b/{path}\n"));
        let diff = TextDiff::from_lines(old, new);
        out.push_str(
            &diff
                .unified_diff()
                .context_radius(context)
                .header(&old_name, &new_name)
                .to_string(),
        );
    }
    out
}
