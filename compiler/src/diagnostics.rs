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
        let file = SimpleFile::new(self.file.as_str(), self.text.as_str());
        let config = term::Config::default();
        let mut out = NoColor::new(Vec::new());
        for d in &self.items {
            let mut cs = CsDiagnostic::error().with_message(format!("{}: {}", self.location(d), d.message));
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
        let count = self.items.len();
        let mut text = String::from_utf8_lossy(&out.into_inner()).into_owned();
        text.push_str(&format!(
            "{count} error{} in {}\n",
            if count == 1 { "" } else { "s" },
            self.file
        ));
        text
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
