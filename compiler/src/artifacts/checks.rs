//! `checks.json`: the topology's resolved `[[checks]]`, read back by `knetsim test`
//! (and `knetsim up`) from the running emulation's bundle.

use crate::model::Check;

/// The text of `checks.json`.
pub fn json(checks: &[Check]) -> String {
    super::to_json(&checks)
}

/// Reads `checks.json` back.
pub fn parse(text: &str) -> Result<Vec<Check>, serde_json::Error> {
    serde_json::from_str(text)
}
