//! `iperf`, Mininet's TCP bandwidth test, over the real iperf3: which pair to test by
//! default, when the server listens, what iperf3's JSON report says and how Mininet
//! prints it. Pure; `run` starts the processes.

use serde_json::Value;

/// The two rates of a test, in bits per second: what the server received and what
/// the client sent (Mininet prints them in this order).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    pub server: f64,
    pub client: f64,
}

/// The default pair: the first pod of the first cluster and the next pod of that
/// cluster on another worker (so the test crosses VXLAN), or else its next pod.
/// `pods` are (id `C0/c1`, worker) in inventory order.
pub fn default_pair(pods: &[(String, String)]) -> Option<(String, String)> {
    let (first, worker) = pods.first()?;
    let cluster = |id: &str| id.split('/').next().unwrap_or_default().to_string();
    let peers: Vec<&(String, String)> = pods[1..]
        .iter()
        .filter(|(id, _)| cluster(id) == cluster(first))
        .collect();
    let peer = peers.iter().find(|(_, w)| w != worker).or_else(|| peers.first())?;
    Some((first.clone(), peer.0.clone()))
}

/// Whether a `/proc/PID/net/tcp` or `tcp6` table has a socket listening on `port`.
pub fn listens_on(table: &str, port: u16) -> bool {
    const LISTEN: &str = "0A";
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let local_port = fields
            .get(1)
            .and_then(|local| local.rsplit_once(':'))
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
        local_port == Some(port) && fields.get(3) == Some(&LISTEN)
    })
}

/// The rates of `iperf3 -c ... -J`'s report, or the error it reports.
pub fn parse_report(json: &str) -> Result<Rates, String> {
    let report: Value = serde_json::from_str(json).map_err(|e| format!("iperf3 printed no JSON report ({e})"))?;
    if let Some(error) = report["error"].as_str() {
        return Err(error.to_string());
    }
    let rate = |sum: &str| {
        report["end"][sum]["bits_per_second"]
            .as_f64()
            .ok_or_else(|| format!("iperf3's report has no end.{sum}.bits_per_second"))
    };
    Ok(Rates {
        server: rate("sum_received")?,
        client: rate("sum_sent")?,
    })
}

/// A rate as iperf prints it: three significant digits in a decimal unit
/// (`5.53 Gbits/sec`, `942 Mbits/sec`).
pub fn format_rate(bits_per_second: f64) -> String {
    let units = [(1e9, "Gbits/sec"), (1e6, "Mbits/sec"), (1e3, "Kbits/sec")];
    let (value, unit) = units
        .iter()
        .find(|(scale, _)| bits_per_second >= *scale)
        .map_or((bits_per_second, "bits/sec"), |(scale, unit)| {
            (bits_per_second / scale, *unit)
        });
    let decimals = if value < 9.995 {
        2
    } else if value < 99.95 {
        1
    } else {
        0
    };
    format!("{value:.decimals$} {unit}")
}

/// Mininet's first line.
pub fn testing_line(src: &str, dst: &str) -> String {
    format!("*** Iperf: testing TCP bandwidth between {src} and {dst}")
}

/// Mininet's last line: `*** Results: ['5.53 Gbits/sec', '5.54 Gbits/sec']`.
pub fn results_line(rates: &Rates) -> String {
    format!(
        "*** Results: ['{}', '{}']",
        format_rate(rates.server),
        format_rate(rates.client)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    fn pair(a: &str, b: &str) -> Option<(String, String)> {
        Some((a.into(), b.into()))
    }

    #[test]
    fn the_default_pair_crosses_workers_within_the_first_cluster() {
        let p = pods(&[
            ("C0/c1", "C0w1"),
            ("C0/c5", "C0w1"),
            ("C1/c2", "C1w2"),
            ("C0/c2", "C0w2"),
        ]);
        assert_eq!(default_pair(&p), pair("C0/c1", "C0/c2"));
        // All on one worker: the next pod of the cluster.
        let p = pods(&[("C0/c1", "C0w1"), ("C1/c2", "C1w2"), ("C0/c5", "C0w1")]);
        assert_eq!(default_pair(&p), pair("C0/c1", "C0/c5"));
        assert_eq!(default_pair(&pods(&[("C0/c1", "C0w1"), ("C1/c1", "C1w2")])), None);
        assert_eq!(default_pair(&[]), None);
    }

    #[test]
    fn a_listening_socket_is_found_in_procs_tables() {
        // Captured from /proc/PID/net/tcp6 of `iperf3 -s -p 5201` and /proc/PID/net/tcp.
        let tcp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
                    0: 00000000000000000000000000000000:1451 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 24719 1 0000000000000000 100 0 0 10 0\n";
        assert!(listens_on(tcp6, 5201));
        assert!(!listens_on(tcp6, 5202));
        let tcp =
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
                   0: 0210100B:1451 0200000B:9A4E 01 00000000:00000000 00:00000000 00000000     0        0 637 1\n";
        assert!(!listens_on(tcp, 5201), "an established connection is not a listener");
        assert!(!listens_on("", 5201));
    }

    #[test]
    fn the_report_gives_server_and_client_rates() {
        let rates = parse_report(include_str!("testdata/iperf3-client.json")).unwrap();
        // end.sum_received and end.sum_sent (to a bit: serde_json's float parsing may
        // differ in the last digit).
        assert!((rates.server - 11_494_038_784.0).abs() < 1.0, "{rates:?}");
        assert!((rates.client - 11_498_747_930.5).abs() < 1.0, "{rates:?}");
        assert_eq!(
            results_line(&rates),
            "*** Results: ['11.5 Gbits/sec', '11.5 Gbits/sec']"
        );
        let refused = parse_report(include_str!("testdata/iperf3-refused.json"));
        assert_eq!(refused, Err("unable to connect to server: Connection refused".into()));
        assert!(parse_report("").unwrap_err().contains("no JSON report"));
        assert!(parse_report("{\"end\": {}}").unwrap_err().contains("end.sum_received"));
    }

    #[test]
    fn rates_read_like_iperfs() {
        assert_eq!(format_rate(5.534e9), "5.53 Gbits/sec");
        assert_eq!(format_rate(942.3e6), "942 Mbits/sec");
        assert_eq!(format_rate(94.13e6), "94.1 Mbits/sec");
        assert_eq!(format_rate(9.999e6), "10.0 Mbits/sec");
        assert_eq!(format_rate(1.0e3), "1.00 Kbits/sec");
        assert_eq!(format_rate(0.0), "0.00 bits/sec");
        assert_eq!(
            testing_line("C0/c1", "C0/c2"),
            "*** Iperf: testing TCP bandwidth between C0/c1 and C0/c2"
        );
    }
}
