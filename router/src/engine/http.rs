//! The normal listener with `http: true`: /healthz, and /metrics in Prometheus text
//! (links, reachable addresses and per-address stream and byte counters).

use super::{lock, AddrStats, Inner};
use crate::config::Listener;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

impl Inner {
    pub(super) fn http_listener(self: Arc<Self>, sock: TcpListener, l: Listener) {
        loop {
            match sock.accept() {
                Ok((c, _)) => {
                    let _ = self.http_request(c, &l);
                }
                Err(_) if self.stopped() => return,
                Err(_) => thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    fn http_request(&self, mut c: TcpStream, l: &Listener) -> io::Result<()> {
        c.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
            let n = c.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            buf.extend(&chunk[..n]);
        }
        let text = String::from_utf8_lossy(&buf);
        let mut parts = text.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let path = path.split('?').next().unwrap_or("");
        let (status, ctype, body) = match (method, path) {
            ("GET" | "HEAD", "/healthz") if l.healthz => ("200 OK", "text/plain", "OK\n".to_string()),
            ("GET" | "HEAD", "/metrics") if l.metrics => ("200 OK", "text/plain; version=0.0.4", self.metrics()),
            ("GET" | "HEAD", _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
            _ => (
                "405 Method Not Allowed",
                "text/plain",
                "method not allowed\n".to_string(),
            ),
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        c.write_all(head.as_bytes())?;
        if method != "HEAD" {
            c.write_all(body.as_bytes())?;
        }
        Ok(())
    }

    pub(super) fn metrics(&self) -> String {
        use std::fmt::Write as _;
        let mut o = String::new();
        let (links, reachable) = {
            let st = lock(&self.state);
            let mut v: Vec<_> = st
                .links
                .values()
                .map(|l| {
                    (
                        l.peer.clone(),
                        l.label.clone(),
                        l.cost,
                        l.active_streams(),
                        l.streams_total.load(Ordering::Relaxed),
                    )
                })
                .collect();
            v.sort();
            (v, st.table.reachable_addresses())
        };
        let id = &self.id;
        let _ = writeln!(
            o,
            "# HELP skrouter_links Inter-router links up.\n# TYPE skrouter_links gauge"
        );
        let _ = writeln!(o, "skrouter_links{{router=\"{id}\"}} {}", links.len());
        let _ = writeln!(
            o,
            "# HELP skrouter_link_cost Cost of each inter-router link.\n# TYPE skrouter_link_cost gauge"
        );
        for (peer, label, cost, _, _) in &links {
            let _ = writeln!(
                o,
                "skrouter_link_cost{{router=\"{id}\",peer=\"{peer}\",link=\"{label}\"}} {cost}"
            );
        }
        let _ = writeln!(
            o,
            "# HELP skrouter_link_streams Streams open on each link.\n# TYPE skrouter_link_streams gauge"
        );
        for (peer, label, _, active, _) in &links {
            let _ = writeln!(
                o,
                "skrouter_link_streams{{router=\"{id}\",peer=\"{peer}\",link=\"{label}\"}} {active}"
            );
        }
        let _ = writeln!(o, "# HELP skrouter_link_streams_total Streams carried by each link.\n# TYPE skrouter_link_streams_total counter");
        for (peer, label, _, _, total) in &links {
            let _ = writeln!(
                o,
                "skrouter_link_streams_total{{router=\"{id}\",peer=\"{peer}\",link=\"{label}\"}} {total}"
            );
        }
        let _ = writeln!(o, "# HELP skrouter_address_reachable Whether some router serves the address.\n# TYPE skrouter_address_reachable gauge");
        let stats = lock(&self.stats).clone();
        let mut addrs: Vec<String> = reachable.iter().cloned().collect();
        for a in stats.keys().chain(self.cfg.tcp_listeners.iter().map(|t| &t.address)) {
            if !addrs.contains(a) {
                addrs.push(a.clone());
            }
        }
        addrs.sort();
        for a in &addrs {
            let _ = writeln!(
                o,
                "skrouter_address_reachable{{router=\"{id}\",address=\"{a}\"}} {}",
                reachable.contains(a) as u8
            );
        }
        type Metric = (&'static str, &'static str, &'static str, fn(&AddrStats) -> i64);
        let per: [Metric; 4] = [
            (
                "skrouter_streams_active",
                "gauge",
                "Streams open for the address.",
                |s| s.streams_active.load(Ordering::Relaxed),
            ),
            (
                "skrouter_streams_total",
                "counter",
                "Streams opened for the address.",
                |s| s.streams_total.load(Ordering::Relaxed) as i64,
            ),
            (
                "skrouter_bytes_in_total",
                "counter",
                "Bytes read from the address's TCP connections.",
                |s| s.bytes_in.load(Ordering::Relaxed) as i64,
            ),
            (
                "skrouter_bytes_out_total",
                "counter",
                "Bytes written to the address's TCP connections.",
                |s| s.bytes_out.load(Ordering::Relaxed) as i64,
            ),
        ];
        for (name, kind, help, get) in per {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (a, s) in &stats {
                let _ = writeln!(o, "{name}{{router=\"{id}\",address=\"{a}\"}} {}", get(s));
            }
        }
        o
    }
}
