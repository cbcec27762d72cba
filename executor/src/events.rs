//! What repairs did and why, as `kubectl get events` lists it: one JSON object a
//! line in the state directory's `events.jsonl`, appended under the emulation's
//! lock by whoever repairs (`knetsim repair`, `apply`, the supervisor).

use crate::layout::StateLayout;
use serde::{Deserialize, Serialize};
use std::io::Write;

/// One thing a repair did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unix time in milliseconds.
    pub at_ms: u64,
    /// Who acted: `repair`, `apply`, `supervisor`.
    pub source: String,
    /// What it is about: a plan step (`router:C0`) or a namespace.
    pub object: String,
    /// What was found (`router c0 (pid 4242) is not running`).
    pub reason: String,
    /// What was done (`restarted`, `restarted after a back-off of 20 s`).
    pub action: String,
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Appends `events` (one write: lines of concurrent writers never interleave).
pub fn append(layout: &StateLayout, events: &[Event]) -> std::io::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let mut text = String::new();
    for e in events {
        text.push_str(&serde_json::to_string(e).map_err(std::io::Error::other)?);
        text.push('\n');
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(layout.events_file())?
        .write_all(text.as_bytes())
}

/// Every event recorded, oldest first, from byte `offset` on (a line still being
/// written is left for the next read); returns them and the offset after them.
pub fn read_from(layout: &StateLayout, offset: u64) -> std::io::Result<(Vec<Event>, u64)> {
    let bytes = match std::fs::read(layout.events_file()) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let start = (offset as usize).min(bytes.len());
    let end = bytes[start..]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(start, |i| start + i + 1);
    let events = String::from_utf8_lossy(&bytes[start..end])
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    Ok((events, end as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appended_events_read_back_and_follow_from_an_offset() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = StateLayout::new(tmp.path());
        assert_eq!(read_from(&layout, 0).unwrap(), (vec![], 0));
        let e = |o: &str| Event {
            at_ms: 1,
            source: "repair".into(),
            object: o.into(),
            reason: "dead".into(),
            action: "restarted".into(),
        };
        append(&layout, &[e("a"), e("b")]).unwrap();
        let (got, at) = read_from(&layout, 0).unwrap();
        assert_eq!(got, vec![e("a"), e("b")]);
        append(&layout, &[e("c")]).unwrap();
        // A half-written line waits for its end.
        std::fs::OpenOptions::new()
            .append(true)
            .open(layout.events_file())
            .unwrap()
            .write_all(b"{\"at_ms\":")
            .unwrap();
        let (more, at2) = read_from(&layout, at).unwrap();
        assert_eq!(more, vec![e("c")]);
        assert_eq!(read_from(&layout, at2).unwrap().0, vec![]);
    }
}
