//! The TOML topology: its schema, the defaults from `conf/`, and parsing with spans.

mod defaults;
mod schema;

pub use defaults::{FlannelDefaults, RouterBaseListener, FLANNEL_NETWORK_CONFIG, SKUPPER_BASE};
pub use schema::*;

use crate::diagnostics::{Diagnostic, Diagnostics};

/// A topology text and the name it is reported under (a path, or `<default>`).
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub text: String,
}

impl Source {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        Source {
            name: name.into(),
            text: text.into(),
        }
    }

    /// The embedded default topology.
    pub fn default_topology() -> Self {
        Source::new("topologies/default.toml", crate::DEFAULT_TOPOLOGY)
    }

    /// Reads a topology file.
    pub fn read(path: &std::path::Path) -> std::io::Result<Self> {
        Ok(Source::new(path.display().to_string(), std::fs::read_to_string(path)?))
    }

    pub fn diagnostics(&self, items: Vec<Diagnostic>) -> Diagnostics {
        Diagnostics {
            file: self.name.clone(),
            text: self.text.clone(),
            items,
        }
    }
}

/// Parses the TOML text into the schema; syntax and type errors carry their span.
pub fn parse(source: &Source) -> Result<TopologySpec, Diagnostics> {
    toml::from_str::<TopologySpec>(&source.text).map_err(|e| {
        let message = e.message().trim().to_string();
        let hint = parse_hint(&message);
        let mut d = Diagnostic::new(e.span(), message).label("here");
        if let Some(h) = hint {
            d = d.hint(h);
        }
        source.diagnostics(vec![d])
    })
}

fn parse_hint(message: &str) -> Option<String> {
    if message.starts_with("unknown field") {
        Some("see docs/topology.md for the fields each table accepts".into())
    } else if message.starts_with("missing field") {
        Some("this table needs the field named above".into())
    } else if message.starts_with("invalid type") {
        Some("check the value's type: strings are quoted, numbers are not, lists use [ ]".into())
    } else {
        None
    }
}
