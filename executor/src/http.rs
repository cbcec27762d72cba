//! A small, blocking HTTP/1.1 client over plain TCP: one request per connection
//! (`Connection: close`), no TLS, no async runtime. It is what the etcd client, the
//! HTTP readiness probes and `knetsim status` (router metrics) speak.
//!
//! A [`Response`] is read incrementally: the head when it is sent, the body
//! (`Content-Length`, `chunked`, or until the peer closes) as it arrives, either whole
//! ([`Response::body`]) or as newline-separated records ([`Response::next_record`]),
//! which is how etcd streams a watch. Every read has a deadline, and a read
//! interrupted by a signal returns early so the caller sees the signal.
//!
//! All socket I/O happens on the calling thread, so it works inside a network
//! namespace that thread has entered (see `system::linux::in_netns`).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// What can go wrong on the wire.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The peer's answer is not HTTP/1.x as this client reads it.
    #[error("{0}")]
    Protocol(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Connects to the first address of `authority` (`host:port`) that answers within
/// `timeout`, with Nagle's algorithm off.
pub fn connect(authority: &str, timeout: Duration) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in authority.to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// One request; `Host` and `Connection: close` are always sent, `Content-Length`
/// whenever there is a body.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: &'a str,
    pub host: &'a str,
    pub headers: Vec<(&'a str, &'a str)>,
    pub body: &'a [u8],
}

impl<'a> Request<'a> {
    /// `GET path HTTP/1.0`, as a probe or `curl -0` sends it.
    pub fn get(host: &'a str, path: &'a str) -> Self {
        Request {
            method: "GET",
            path,
            version: "HTTP/1.0",
            host,
            headers: Vec::new(),
            body: b"",
        }
    }

    /// `POST path HTTP/1.1` with a JSON body.
    pub fn post_json(host: &'a str, path: &'a str, body: &'a [u8]) -> Self {
        Request {
            method: "POST",
            path,
            version: "HTTP/1.1",
            host,
            headers: vec![("Content-Type", "application/json"), ("Accept", "application/json")],
            body,
        }
    }

    pub fn header(mut self, name: &'a str, value: &'a str) -> Self {
        self.headers.push((name, value));
        self
    }

    fn head(&self) -> String {
        let mut head = format!(
            "{} {} {}\r\nHost: {}\r\n",
            self.method, self.path, self.version, self.host
        );
        let length = (!self.body.is_empty()).then(|| self.body.len().to_string());
        for (name, value) in self
            .headers
            .iter()
            .copied()
            .chain(length.as_deref().map(|l| ("Content-Length", l)))
        {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("Connection: close\r\n\r\n");
        head
    }
}

/// `GET path` from `addr` on a new connection: the status and the whole body, each
/// step (connecting, then the answer) within its timeout.
pub fn get(addr: SocketAddr, path: &str, connect_timeout: Duration, timeout: Duration) -> Result<(u16, Vec<u8>)> {
    let sock = TcpStream::connect_timeout(&addr, connect_timeout)?;
    let host = addr.to_string();
    let mut response = Response::send(sock, &Request::get(&host, path), timeout)?;
    let body = response.body(Instant::now() + timeout)?;
    Ok((response.status(), body))
}

#[derive(Debug)]
enum Framing {
    Length(usize),
    Chunked,
    UntilEof,
}

/// One HTTP/1.x response being read: the head is parsed, the body is decoded
/// incrementally.
#[derive(Debug)]
pub struct Response {
    sock: TcpStream,
    status: u16,
    framing: Framing,
    /// Bytes read but not yet decoded.
    raw: Vec<u8>,
    /// Decoded body bytes not yet returned.
    body: Vec<u8>,
    /// In a chunked body: bytes left in the current chunk.
    chunk_left: usize,
    /// The body is complete (or the connection closed).
    done: bool,
    /// The last read was interrupted by a signal: the caller may want to stop.
    interrupted: bool,
}

impl Response {
    /// Sends `request` on `sock` (writes within `timeout`) and reads the response head
    /// within `timeout` after that.
    pub fn send(mut sock: TcpStream, request: &Request, timeout: Duration) -> Result<Response> {
        let _ = sock.set_write_timeout(Some(timeout));
        sock.write_all(request.head().as_bytes())?;
        sock.write_all(request.body)?;
        let mut r = Response {
            sock,
            status: 0,
            framing: Framing::UntilEof,
            raw: Vec::new(),
            body: Vec::new(),
            chunk_left: 0,
            done: false,
            interrupted: false,
        };
        r.read_head(Instant::now() + timeout)?;
        Ok(r)
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    /// The whole body has been returned (or the connection closed).
    pub fn finished(&self) -> bool {
        self.done && self.body.is_empty()
    }

    /// Has the kernel probe a dead peer on an idle connection (a long watch) within
    /// about 20 s.
    pub fn probe_dead_peer(&self) {
        let fd = self.sock.as_raw_fd();
        let set = |level: libc::c_int, name: libc::c_int, value: libc::c_int| {
            // SAFETY: setsockopt on an open socket with a pointer to a live c_int and its size.
            unsafe {
                libc::setsockopt(
                    fd,
                    level,
                    name,
                    &value as *const libc::c_int as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        };
        set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
        set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 10);
        set(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 3);
        set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3);
    }

    /// The whole body, read by `deadline` (a body not complete by then is an error).
    pub fn body(&mut self, deadline: Instant) -> Result<Vec<u8>> {
        loop {
            self.decode()?;
            if self.done {
                return Ok(std::mem::take(&mut self.body));
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "response body timed out").into());
            }
            self.fill(deadline)?;
        }
    }

    /// What of the body arrives by `deadline`, as far as it can be read: the text of
    /// an error answer.
    pub fn rest(&mut self, deadline: Instant) -> Vec<u8> {
        while !self.done && Instant::now() < deadline {
            if self.fill(deadline).is_err() {
                break;
            }
            let _ = self.decode();
        }
        std::mem::take(&mut self.body)
    }

    /// Reads more bytes into `raw`; `Ok(false)` = timed out, nothing read. Sets
    /// `done` at end of stream.
    fn fill(&mut self, deadline: Instant) -> Result<bool> {
        let now = Instant::now();
        let wait = deadline.saturating_duration_since(now).max(Duration::from_millis(1));
        let _ = self.sock.set_read_timeout(Some(wait));
        let mut buf = [0u8; 8192];
        match self.sock.read(&mut buf) {
            Ok(0) => {
                self.done = true;
                Ok(false)
            }
            Ok(n) => {
                self.raw.extend_from_slice(&buf[..n]);
                Ok(true)
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                self.interrupted = true;
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn read_head(&mut self, deadline: Instant) -> Result<()> {
        loop {
            if let Some(end) = find(&self.raw, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.raw[..end]).into_owned();
                self.raw.drain(..end + 4);
                return self.parse_head(&head);
            }
            if self.done {
                return Err(protocol("connection closed before the response head"));
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no response").into());
            }
            self.fill(deadline)?;
            if self.raw.len() > 64 * 1024 {
                return Err(protocol("response head too large"));
            }
        }
    }

    fn parse_head(&mut self, head: &str) -> Result<()> {
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.split_whitespace();
        let version = parts.next().unwrap_or_default();
        self.status = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        if !version.starts_with("HTTP/1.") || self.status == 0 {
            return Err(protocol(format!("bad status line `{status_line}`")));
        }
        self.framing = Framing::UntilEof;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            if name == "transfer-encoding" && value.to_ascii_lowercase().contains("chunked") {
                self.framing = Framing::Chunked;
            } else if name == "content-length" && !matches!(self.framing, Framing::Chunked) {
                let n = value
                    .parse()
                    .map_err(|_| protocol(format!("bad Content-Length `{value}`")))?;
                self.framing = Framing::Length(n);
            }
        }
        if matches!(self.framing, Framing::Length(0)) {
            self.done = true;
        }
        Ok(())
    }

    /// Moves what can be decoded from `raw` to `body`.
    fn decode(&mut self) -> Result<()> {
        match self.framing {
            Framing::UntilEof => self.body.append(&mut self.raw),
            Framing::Length(ref mut left) => {
                let n = (*left).min(self.raw.len());
                self.body.extend(self.raw.drain(..n));
                *left -= n;
                if *left == 0 {
                    self.done = true;
                }
            }
            Framing::Chunked => loop {
                if self.chunk_left > 0 {
                    let n = self.chunk_left.min(self.raw.len());
                    if n == 0 {
                        break;
                    }
                    self.body.extend(self.raw.drain(..n));
                    // The CRLF after the chunk's data is stripped with the next size line.
                    self.chunk_left -= n;
                    continue;
                }
                // A size line, possibly preceded by the previous chunk's CRLF.
                while self.raw.starts_with(b"\r\n") {
                    self.raw.drain(..2);
                }
                let Some(eol) = find(&self.raw, b"\r\n") else { break };
                let line = String::from_utf8_lossy(&self.raw[..eol]).into_owned();
                let size_text = line.split(';').next().unwrap_or_default().trim();
                let size =
                    usize::from_str_radix(size_text, 16).map_err(|_| protocol(format!("bad chunk size `{line}`")))?;
                self.raw.drain(..eol + 2);
                if size == 0 {
                    self.done = true;
                    self.raw.clear();
                    break;
                }
                self.chunk_left = size;
            },
        }
        Ok(())
    }

    /// The next newline-terminated record of the body (or the unterminated rest at
    /// its end), reading until `deadline`; `Ok(None)` = none yet (or the body ended).
    pub fn next_record(&mut self, deadline: Instant) -> Result<Option<Vec<u8>>> {
        loop {
            self.decode()?;
            if let Some(pos) = self.body.iter().position(|&b| b == b'\n') {
                let mut rec: Vec<u8> = self.body.drain(..=pos).collect();
                rec.pop();
                if rec.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Ok(Some(rec));
            }
            if self.done {
                if self.body.iter().all(u8::is_ascii_whitespace) {
                    self.body.clear();
                    return Ok(None);
                }
                return Ok(Some(std::mem::take(&mut self.body)));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            if !self.fill(deadline)? && !self.done && Instant::now() >= deadline {
                return Ok(None);
            }
            // A signal (flanneld's SIGTERM) ends the wait early, so the caller sees it.
            if std::mem::take(&mut self.interrupted) {
                return Ok(None);
            }
        }
    }
}

fn protocol(detail: impl Into<String>) -> Error {
    Error::Protocol(detail.into())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Answers one connection with `response`, dribbled out in small pieces; returns
    /// the request it got.
    fn serve_once(response: &'static [u8]) -> (SocketAddr, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = std::thread::spawn(move || {
            let (mut sock, _) = listener.accept().unwrap();
            let mut buf = Vec::new();
            let mut tmp = [0u8; 4096];
            // The head, and the body its Content-Length announces.
            loop {
                if let Some(end) = find(&buf, b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .map_or(0, |v| v.parse().unwrap());
                    if buf.len() >= end + 4 + len {
                        break;
                    }
                }
                let n = sock.read(&mut tmp).unwrap();
                buf.extend_from_slice(&tmp[..n]);
            }
            for piece in response.chunks(5) {
                sock.write_all(piece).unwrap();
                sock.flush().unwrap();
            }
            String::from_utf8_lossy(&buf).into_owned()
        });
        (addr, handle)
    }

    #[test]
    fn gets_a_body_by_length_by_chunks_and_until_close() {
        let t = Duration::from_secs(2);
        let (addr, server) = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello, and more");
        assert_eq!(get(addr, "/metrics", t, t).unwrap(), (200, b"hello".to_vec()));
        assert_eq!(
            server.join().unwrap(),
            format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
        );
        let (addr, _) =
            serve_once(b"HTTP/1.1 503 No\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n");
        assert_eq!(get(addr, "/", t, t).unwrap(), (503, b"abcde".to_vec()));
        let (addr, _) = serve_once(b"HTTP/1.0 200 OK\r\n\r\nuntil close");
        assert_eq!(get(addr, "/", t, t).unwrap(), (200, b"until close".to_vec()));
        let (addr, _) = serve_once(b"SSH-2.0-OpenSSH\r\n\r\n");
        assert!(matches!(get(addr, "/", t, t), Err(Error::Protocol(_))));
    }

    #[test]
    fn posts_json_and_reads_records() {
        let (addr, server) = serve_once(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{}\n\n\r\n6\r\n{\"a\":1\r\n2\r\n}\n\r\n0\r\n\r\n");
        let host = addr.to_string();
        let sock = connect(&host, Duration::from_secs(1)).unwrap();
        let request = Request::post_json(&host, "/v3/watch", b"{}").header("X-Test", "1");
        let mut r = Response::send(sock, &request, Duration::from_secs(2)).unwrap();
        assert_eq!(r.status(), 200);
        let deadline = Instant::now() + Duration::from_secs(2);
        assert_eq!(r.next_record(deadline).unwrap().unwrap(), b"{}");
        assert_eq!(r.next_record(deadline).unwrap().unwrap(), b"{\"a\":1}");
        assert_eq!(r.next_record(deadline).unwrap(), None);
        assert!(r.finished());
        assert_eq!(
            server.join().unwrap(),
            format!(
                "POST /v3/watch HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
                 Accept: application/json\r\nX-Test: 1\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
            )
        );
    }
}
