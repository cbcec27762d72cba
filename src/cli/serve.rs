//! `knetsim serve`: the seed's `utils/ss.py`, a tiny HTTP server answering every GET
//! with a fixed text, used as a pod workload (e.g. the ingress demo's S1-W2). With
//! `--udp` it also answers every datagram on the same ports with the text, as the
//! upstream e2e image agnhost serves TCP and UDP (reachability matrices over UDP).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::thread;
use std::time::Duration;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// The text every request gets (a newline is added).
    #[arg(long)]
    text: String,
    /// Port to listen on (all addresses of the namespace); repeat it to listen on
    /// several (the NetworkPolicy e2e pods serve 80 and 81).
    #[arg(long, default_values_t = [8000], value_parser = clap::value_parser!(u16).range(1..))]
    port: Vec<u16>,
    /// Also answer UDP datagrams on the same ports (each with the text).
    #[arg(long)]
    udp: bool,
}

pub fn serve(a: ServeArgs) -> i32 {
    let mut listeners = Vec::new();
    for port in &a.port {
        match TcpListener::bind(("0.0.0.0", *port)) {
            Ok(l) => listeners.push(l),
            Err(e) => {
                eprintln!("error: cannot listen on port {port}: {e}");
                return 1;
            }
        }
    }
    let mut udp = Vec::new();
    for port in a.port.iter().filter(|_| a.udp) {
        match UdpSocket::bind(("0.0.0.0", *port)) {
            Ok(sock) => udp.push(sock),
            Err(e) => {
                eprintln!("error: cannot listen on UDP port {port}: {e}");
                return 1;
            }
        }
    }
    let proto = if a.udp { "TCP and UDP " } else { "" };
    eprintln!("serving {:?} on {proto}port {}", a.text, join(&a.port));
    let body = format!("{}\n", a.text);
    thread::scope(|s| {
        for sock in &udp {
            let body = body.as_bytes();
            s.spawn(move || {
                let mut buf = [0u8; 2048];
                while let Ok((_, peer)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(body, peer);
                }
            });
        }
        for listener in &listeners {
            let body = &body;
            s.spawn(move || {
                for stream in listener.incoming().flatten() {
                    let body = body.clone();
                    thread::spawn(move || answer(stream, &body));
                }
            });
        }
    });
    0
}

fn join(ports: &[u16]) -> String {
    ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
}

/// Reads the request head and answers with the body; any method, any path.
fn answer(stream: TcpStream, body: &str) {
    // A client that never finishes its head must not hold a thread forever.
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let reader = match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    };
    respond(BufReader::new(reader), stream, body);
}

/// How long a connection may take to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The most a request head may take; the rest of a longer one is not read.
pub const MAX_HEAD: u64 = 64 * 1024;

/// The HTTP parsing entry point: reads one request head from `reader` (lines up to an
/// empty one, at most [`MAX_HEAD`] bytes, stopping at the end of input or at bytes that
/// are not UTF-8) and writes the response with `body` to `out`. Any method, any path.
pub fn respond(reader: impl BufRead, mut out: impl Write, body: &str) {
    let mut reader = reader.take(MAX_HEAD);
    let mut line = String::new();
    while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
        if line == "\r\n" || line == "\n" {
            break;
        }
        line.clear();
    }
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = out.write_all(response.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn answers_any_request_head() {
        for head in [
            "GET /svc1 HTTP/1.1\r\nHost: x\r\n\r\n",
            "POST / HTTP/1.0\n\nbody",
            "",
            "\u{0}\u{ff}",
        ] {
            let mut out = Vec::new();
            respond(head.as_bytes(), &mut out, "S1-W2\n");
            let out = String::from_utf8(out).unwrap();
            assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
            assert!(out.ends_with("\r\n\r\nS1-W2\n"), "{out}");
        }
    }

    /// A head that never ends (one endless line; found while writing the serve_http fuzz
    /// target) is read up to MAX_HEAD bytes, not into memory without bound.
    #[test]
    fn an_endless_head_is_cut_at_max_head() {
        struct Endless(u64);
        impl Read for Endless {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                buf.fill(b'a');
                self.0 += buf.len() as u64;
                Ok(buf.len())
            }
        }
        let mut endless = Endless(0);
        let mut out = Vec::new();
        respond(BufReader::new(&mut endless), &mut out, "x\n");
        assert!(out.starts_with(b"HTTP/1.1 200 OK\r\n"));
        assert!(endless.0 <= MAX_HEAD + 8192, "read {} bytes", endless.0);
    }
}
