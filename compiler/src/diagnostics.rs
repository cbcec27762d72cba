//! Errors that point into the topology file: `file:line:col`, the offending snippet and a hint.

use codespan_reporting::diagnostic::{Diagnostic as CsDiagnostic, Label};
use codespan_reporting::files::SimpleFile;
use codespan_reporting::term::{self, termcolor::NoColor};
use std::fmt;
use std::ops::Range;

/// One problem found in a topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub message: String,
    /// Byte range in the source; `None` for problems with no single place (e.g. an empty file).
    pub span: Option<Range<usize>>,
    /// Short text shown under the snippet.
    pub label: String,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(span: Option<Range<usize>>, message: impl Into<String>) -> Self {
        Diagnostic {
            message: message.into(),
            span,
            label: String::new(),
            hint: None,
        }
    }

    pub fn at(span: Range<usize>, message: impl Into<String>) -> Self {
        Self::new(Some(span), message)
    }

    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// Every problem found in one topology, with the text they point into.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    pub file: String,
    pub text: String,
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// 1-based line and column of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        line_col(&self.text, offset)
    }

    /// `file:line:col` of a diagnostic, or just the file name when it has no span.
    pub fn location(&self, d: &Diagnostic) -> String {
        match &d.span {
            Some(span) => {
                let (line, col) = self.line_col(span.start);
                format!("{}:{}:{}", self.file, line, col)
            }
            None => self.file.clone(),
        }
    }

    /// Renders all diagnostics as rustc-style text (no colour).
    pub fn render(&self) -> String {
        let mut text = self.render_as(CsDiagnostic::error);
        let count = self.items.len();
        text.push_str(&format!(
            "{count} error{} in {}\n",
            if count == 1 { "" } else { "s" },
            self.file
        ));
        text
    }

    /// Renders the items as warnings: things Kubernetes accepts but that are likely
    /// not what was meant (a selector that matches nothing).
    pub fn render_warnings(&self) -> String {
        self.render_as(CsDiagnostic::warning)
    }

    fn render_as(&self, severity: fn() -> CsDiagnostic<()>) -> String {
        let file = SimpleFile::new(self.file.as_str(), self.text.as_str());
        let config = term::Config::default();
        let mut out = NoColor::new(Vec::new());
        for d in &self.items {
            let mut cs = severity().with_message(format!("{}: {}", self.location(d), d.message));
            if let Some(span) = &d.span {
                let span = clamp(span.clone(), self.text.len());
                cs = cs.with_labels(vec![Label::primary((), span).with_message(d.label.clone())]);
            }
            if let Some(hint) = &d.hint {
                cs = cs.with_notes(vec![format!("hint: {hint}")]);
            }
            // Writing into a Vec cannot fail.
            let _ = term::emit(&mut out, &config, &file, &cs);
        }
        String::from_utf8_lossy(&out.into_inner()).into_owned()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

impl std::error::Error for Diagnostics {}

fn clamp(span: Range<usize>, len: usize) -> Range<usize> {
    let start = span.start.min(len);
    let end = span.end.clamp(start, len);
    start..end
}

pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

/// The known name closest to a misspelt one (edit distance <= 2, and less than the
/// name's length so that `w3` is not "corrected" to an unrelated `c1`).
pub fn closest<'n>(name: &str, known: &[&'n str]) -> Option<&'n str> {
    known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, _)| *d <= 2 && *d < name.chars().count().max(2))
        .min()
        .map(|(_, k)| k)
}

/// Levenshtein distance between two names.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for j in 0..b.len() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != b[j])).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_and_render_point_into_the_text() {
        let d = Diagnostics {
            file: "t.toml".into(),
            text: "a = 1\nb = \"x\"\n".into(),
            items: vec![Diagnostic::at(10..13, "bad b").label("here").hint("fix b")],
        };
        assert_eq!(d.location(&d.items[0]), "t.toml:2:5");
        let text = d.render();
        assert!(text.contains("t.toml:2:5: bad b"), "{text}");
        assert!(text.contains("b = \"x\""), "{text}");
        assert!(text.contains("hint: fix b"), "{text}");
        assert!(text.ends_with("1 error in t.toml\n"), "{text}");
    }

    #[test]
    fn closest_suggests_near_names_only() {
        assert_eq!(closest("workr", &["name", "workers", "etcd"]), Some("workers"));
        assert_eq!(closest("bakc", &["front", "back"]), Some("back"));
        assert_eq!(closest("zzzz", &["front", "back"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
