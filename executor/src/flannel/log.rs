//! klog-style lines on stderr, as flanneld writes them:
//! `I1125 17:08:46.123456   12345 agent.rs:42] Acquired lease ...` (times in UTC).

use std::fmt;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// Civil date (month, day) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn month_day(days: i64) -> (u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (m, d)
}

/// `MMDD HH:MM:SS.micros` of `t`, in UTC.
pub fn timestamp(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (month, day) = month_day(secs.div_euclid(86_400));
    let tod = secs.rem_euclid(86_400);
    format!(
        "{month:02}{day:02} {:02}:{:02}:{:02}.{:06}",
        tod / 3600,
        tod / 60 % 60,
        tod % 60,
        since.subsec_micros()
    )
}

/// The klog prefix for a line of `level` written at `now` from `file:line`.
pub fn prefix(level: char, now: SystemTime, file: &str, line: u32) -> String {
    let base = file.rsplit('/').next().unwrap_or(file);
    format!("{level}{} {:>7} {base}:{line}]", timestamp(now), std::process::id())
}

pub fn write(level: char, file: &str, line: u32, args: fmt::Arguments<'_>) {
    let text = format!("{} {args}\n", prefix(level, SystemTime::now(), file, line));
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

macro_rules! info {
    ($($t:tt)*) => { $crate::flannel::log::write('I', file!(), line!(), format_args!($($t)*)) };
}
macro_rules! warning {
    ($($t:tt)*) => { $crate::flannel::log::write('W', file!(), line!(), format_args!($($t)*)) };
}
macro_rules! error {
    ($($t:tt)*) => { $crate::flannel::log::write('E', file!(), line!(), format_args!($($t)*)) };
}
pub(crate) use {error, info, warning};

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn klog_prefix() {
        // 2026-11-25 17:08:46.123456 UTC
        let t = UNIX_EPOCH + Duration::from_micros(1_795_626_526_123_456);
        let p = prefix('I', t, "executor/src/flannel/agent.rs", 42);
        let pid = std::process::id();
        assert_eq!(p, format!("I1125 17:08:46.123456 {pid:>7} agent.rs:42]"));
        assert_eq!(month_day(0), (1, 1));
        assert_eq!(month_day(59), (3, 1), "1970 is not a leap year");
        assert_eq!(month_day(11_016), (2, 29), "2000-02-29");
    }
}
