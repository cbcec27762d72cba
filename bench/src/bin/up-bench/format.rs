//! Formatting of the report's figures (seconds, milliseconds, MB, UTC times) and the
//! small statistics it prints (min, median, max).

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

pub(super) fn stat<T: Copy + Ord>(v: &[T]) -> Option<(T, T, T)> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    Some((s[0], s[(s.len() - 1) / 2], s[s.len() - 1]))
}

/// The median (the lower one of the middle two for an even count).
pub(super) fn median(v: &[u64]) -> u64 {
    stat(v).map(|s| s.1).unwrap_or(0)
}

pub(super) fn opt(d: Option<Duration>) -> String {
    d.map(secs).unwrap_or_else(|| "-".into())
}

pub(super) fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 10.0 {
        format!("{s:.1} s")
    } else if s >= 1.0 {
        format!("{s:.2} s")
    } else {
        format!("{:.0} ms", s * 1e3)
    }
}

pub(super) fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

pub(super) fn mb(kb: u64) -> String {
    let b = kb as f64 * 1024.0 / 1e6;
    if b >= 10.0 {
        format!("{b:.1} MB")
    } else {
        format!("{b:.2} MB")
    }
}

/// Where `program` is found on PATH.
pub(super) fn on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// `YYYY-MM-DD HH:MM:SS UTC`.
pub(super) fn utc(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
