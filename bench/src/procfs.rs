//! What the benchmarks read of processes from /proc, in one place: the `Key: N kB`
//! fields of /proc/PID/status (and smaps_rollup), and whether this process runs as
//! root.

/// The number of a `Key: N kB` line (VmRSS, VmHWM, RssAnon, Pss, ...) of a /proc status
/// or smaps_rollup text, in KiB.
pub fn status_kb(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Whether this process runs with an effective user id of root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_kb_reads_the_named_field_only() {
        let status = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\nRssAnon:\t 12 kB\n";
        assert_eq!(status_kb(status, "VmRSS"), Some(1024));
        assert_eq!(status_kb(status, "VmHWM"), Some(2048));
        assert_eq!(status_kb(status, "Rss"), None);
        assert_eq!(status_kb(status, "Pss"), None);
    }
}
