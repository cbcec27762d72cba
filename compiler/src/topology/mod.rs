//! The TOML topology: its schema, the defaults from `conf/`, and parsing with spans.

mod defaults;
mod policy;
mod schema;

pub use defaults::{FlannelDefaults, RouterBaseListener, FLANNEL_NETWORK_CONFIG, SKUPPER_BASE};
pub use policy::*;
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
    if let Some(rest) = message.strip_prefix("unknown field ") {
        // serde: "unknown field `worker`, expected one of `name`, `workers`, ..."
        let mut quoted = rest.split('`').skip(1).step_by(2);
        let field = quoted.next().unwrap_or_default();
        let accepted: Vec<&str> = quoted.collect();
        return Some(match crate::diagnostics::closest(field, &accepted) {
            Some(c) => format!("did you mean `{c}`?"),
            None if accepted.is_empty() => "this table accepts no such field".into(),
            None => format!("this table accepts: {}", accepted.join(", ")),
        });
    }
    if let Some(rest) = message.strip_prefix("missing field ") {
        let field = rest.split('`').nth(1).unwrap_or_default();
        return Some(format!("add `{field} = ...` to this table"));
    }
    if message.starts_with("invalid type") || message.starts_with("invalid value") {
        return Some("check the value's type: strings are quoted, numbers are not, lists use [ ]".into());
    }
    if message.contains("out of range") {
        return Some("ports are 1..=65535 and counts are non-negative".into());
    }
    if message.starts_with("duplicate key") {
        return Some("each key may appear once per table".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_field_hint_suggests_the_close_field() {
        let m = "unknown field `worker`, expected one of `name`, `workers`, `etcd`";
        assert_eq!(parse_hint(m).as_deref(), Some("did you mean `workers`?"));
        let m = "unknown field `zzzzzz`, expected one of `name`, `workers`";
        assert_eq!(parse_hint(m).as_deref(), Some("this table accepts: name, workers"));
        let m = "missing field `worker`";
        assert_eq!(parse_hint(m).as_deref(), Some("add `worker = ...` to this table"));
    }
}
