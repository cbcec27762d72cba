//! A small, blocking etcd v3 client speaking the JSON gRPC gateway (`/v3/...`) over
//! plain HTTP/1.1 on a [`TcpStream`]: no TLS, no gRPC, no async runtime.
//!
//! Keys and values travel base64-encoded; 64-bit integers come back as JSON strings.
//! Every unary call is one short connection (`Connection: close`); a call that cannot
//! reach an endpoint (or that endpoint says it is unavailable) is retried on the
//! next one, and the endpoint that answered is tried first next time.
//!
//! Watches are long-lived streams: etcd answers `/v3/watch` with a chunked body of
//! JSON objects, one per line, for as long as the connection stays open.
//!
//! The client does blocking socket I/O on the calling thread, so it works inside a
//! network namespace entered by that thread (see `system::linux::in_netns`).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// gRPC status codes after which another endpoint may do better.
const CODE_DEADLINE_EXCEEDED: i64 = 4;
const CODE_UNAVAILABLE: i64 = 14;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid etcd endpoint `{0}` (expected http://HOST:PORT)")]
    Endpoint(String),
    #[error("etcd {endpoint}: {source}")]
    Io {
        endpoint: String,
        #[source]
        source: io::Error,
    },
    #[error("etcd {endpoint}: HTTP {status}: {body}")]
    Http {
        endpoint: String,
        status: u16,
        body: String,
    },
    /// An error etcd reported (a gRPC status).
    #[error("etcd {endpoint}: {message} (gRPC code {code})")]
    Grpc {
        endpoint: String,
        code: i64,
        message: String,
    },
    #[error("etcd {endpoint}: unexpected response: {detail}")]
    Protocol { endpoint: String, detail: String },
}

impl Error {
    /// Whether another endpoint (or a later attempt) might succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Io { .. } | Error::Protocol { .. } => true,
            Error::Http { status, .. } => *status >= 500,
            Error::Grpc { code, .. } => matches!(*code, CODE_DEADLINE_EXCEEDED | CODE_UNAVAILABLE),
            Error::Endpoint(_) => false,
        }
    }

    /// etcd refused the request because the revision asked for was compacted away.
    pub fn is_compacted(&self) -> bool {
        matches!(self, Error::Grpc { message, .. } if message.contains("compacted"))
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// One stored key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    /// The lease the key is attached to; 0 = none (the key never expires).
    pub lease: i64,
}

/// The answer to a range request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Range {
    pub kvs: Vec<KeyValue>,
    /// The store revision the answer is as of (watch from `revision + 1`).
    pub revision: i64,
}

/// A granted lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub id: i64,
    /// Seconds.
    pub ttl: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// For a delete, only `key` and `mod_revision` are set.
    pub kv: KeyValue,
}

/// One message of a watch stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WatchResponse {
    /// Revision of the store when the message was sent (0 on a cancel).
    pub revision: i64,
    pub created: bool,
    pub canceled: bool,
    pub cancel_reason: String,
    /// Non-zero when the watch was canceled because its start revision was compacted.
    pub compact_revision: i64,
    pub events: Vec<Event>,
}

#[derive(Debug, Clone)]
struct Endpoint {
    url: String,
    /// `host:port`, for the Host header and for resolving.
    authority: String,
}

/// The client. Cheap to clone-by-construction; holds no connections between calls.
#[derive(Debug)]
pub struct Client {
    endpoints: Vec<Endpoint>,
    /// Index of the endpoint to try first.
    preferred: AtomicUsize,
}

impl Client {
    /// A client for `http://HOST:PORT` endpoints (a bare `HOST:PORT` is taken as http).
    pub fn new<S: AsRef<str>>(endpoints: &[S]) -> Result<Client> {
        let endpoints = endpoints
            .iter()
            .map(|e| parse_endpoint(e.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        if endpoints.is_empty() {
            return Err(Error::Endpoint(String::new()));
        }
        Ok(Client {
            endpoints,
            preferred: AtomicUsize::new(0),
        })
    }

    /// A client for a comma-separated endpoint list, as flanneld's `-etcd-endpoints`.
    pub fn from_list(list: &str) -> Result<Client> {
        let parts: Vec<&str> = list.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
        Client::new(&parts)
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.endpoints.iter().map(|e| e.url.clone()).collect()
    }

    /// The value of one key, and the store revision.
    pub fn get(&self, key: &str) -> Result<(Option<KeyValue>, i64)> {
        let r = self.range(json!({ "key": b64(key.as_bytes()) }))?;
        Ok((r.kvs.into_iter().next(), r.revision))
    }

    /// Every key starting with `prefix`, sorted by key.
    pub fn get_prefix(&self, prefix: &str) -> Result<Range> {
        self.range(json!({
            "key": b64(prefix.as_bytes()),
            "range_end": b64(&prefix_end(prefix.as_bytes())),
            "sort_order": "ASCEND",
            "sort_target": "KEY",
        }))
    }

    fn range(&self, body: Value) -> Result<Range> {
        let (endpoint, v) = self.call("/v3/kv/range", &body)?;
        let kvs = match v.get("kvs") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|kv| parse_kv(&endpoint, kv))
                .collect::<Result<Vec<_>>>()?,
            Some(other) => return Err(protocol(&endpoint, format!("`kvs` is {other}"))),
        };
        Ok(Range {
            kvs,
            revision: header_revision(&v),
        })
    }

    /// Sets `key`; `lease` 0 = no lease. Returns the new store revision.
    pub fn put(&self, key: &str, value: &[u8], lease: i64) -> Result<i64> {
        let mut body = json!({ "key": b64(key.as_bytes()), "value": b64(value) });
        if lease != 0 {
            body["lease"] = json!(lease.to_string());
        }
        let (_, v) = self.call("/v3/kv/put", &body)?;
        Ok(header_revision(&v))
    }

    /// Sets `key` only if it does not exist (a transaction comparing its version
    /// with 0). Returns whether it was created.
    pub fn create(&self, key: &str, value: &[u8], lease: i64) -> Result<bool> {
        let mut put = json!({ "key": b64(key.as_bytes()), "value": b64(value) });
        if lease != 0 {
            put["lease"] = json!(lease.to_string());
        }
        let body = json!({
            "compare": [{ "result": "EQUAL", "target": "VERSION", "key": b64(key.as_bytes()), "version": "0" }],
            "success": [{ "request_put": put }],
        });
        let (_, v) = self.call("/v3/kv/txn", &body)?;
        Ok(v.get("succeeded").and_then(Value::as_bool).unwrap_or(false))
    }

    /// Deletes `key`; returns how many keys were deleted (0 or 1).
    pub fn delete(&self, key: &str) -> Result<i64> {
        let (_, v) = self.call("/v3/kv/deleterange", &json!({ "key": b64(key.as_bytes()) }))?;
        Ok(int(v.get("deleted")))
    }

    /// A new lease of `ttl` seconds (etcd may raise it to its minimum).
    pub fn grant(&self, ttl: i64) -> Result<Lease> {
        let (endpoint, v) = self.call("/v3/lease/grant", &json!({ "TTL": ttl.to_string() }))?;
        if let Some(e) = v.get("error").and_then(Value::as_str).filter(|e| !e.is_empty()) {
            return Err(Error::Grpc {
                endpoint,
                code: 0,
                message: e.to_string(),
            });
        }
        let id = int(v.get("ID"));
        if id == 0 {
            return Err(protocol(&endpoint, format!("lease grant without an ID: {v}")));
        }
        Ok(Lease {
            id,
            ttl: int(v.get("TTL")),
        })
    }

    /// Revokes a lease, deleting its keys.
    pub fn revoke(&self, id: i64) -> Result<()> {
        self.call("/v3/lease/revoke", &json!({ "ID": id.to_string() }))
            .map(drop)
    }

    /// Remaining seconds of a lease; -1 when there is no such lease (or `id` is 0).
    pub fn time_to_live(&self, id: i64) -> Result<i64> {
        if id == 0 {
            return Ok(-1);
        }
        let (_, v) = self.call("/v3/lease/timetolive", &json!({ "ID": id.to_string() }))?;
        Ok(int(v.get("TTL")))
    }

    /// One keep-alive of a lease; returns its renewed TTL (0 or less: the lease is gone).
    pub fn keep_alive_once(&self, id: i64) -> Result<i64> {
        let body = json!({ "ID": id.to_string() });
        self.with_failover(|ep| {
            let mut stream = Stream::open(ep, "/v3/lease/keepalive", &body, false)?;
            if stream.status != 200 {
                return Err(stream.error_body());
            }
            let deadline = Instant::now() + IO_TIMEOUT;
            loop {
                if let Some(rec) = stream.next_record(deadline)? {
                    let v = unwrap_result(&ep.url, parse_json(&ep.url, &rec)?)?;
                    return Ok(int(v.get("TTL")));
                }
                if stream.finished() {
                    return Err(protocol(&ep.url, "keep-alive stream closed without a response"));
                }
                if Instant::now() >= deadline {
                    return Err(protocol(&ep.url, "no keep-alive response"));
                }
            }
        })
    }

    /// Watches every key starting with `prefix` from `start_revision` (0 = from now).
    /// Returns once etcd confirmed the watch.
    pub fn watch_prefix(&self, prefix: &str, start_revision: i64) -> Result<Watch> {
        let mut create = json!({
            "key": b64(prefix.as_bytes()),
            "range_end": b64(&prefix_end(prefix.as_bytes())),
        });
        if start_revision > 0 {
            create["start_revision"] = json!(start_revision.to_string());
        }
        let body = json!({ "create_request": create });
        self.with_failover(|ep| {
            let mut stream = Stream::open(ep, "/v3/watch", &body, true)?;
            if stream.status != 200 {
                return Err(stream.error_body());
            }
            set_keepalive(&stream.sock);
            let mut watch = Watch {
                endpoint: ep.url.clone(),
                stream,
                pending: Vec::new(),
            };
            let deadline = Instant::now() + IO_TIMEOUT;
            while Instant::now() < deadline {
                if let Some(first) = watch.next(Duration::from_millis(200))? {
                    if first.created {
                        return Ok(watch);
                    }
                    // A cancel (compaction) can come before or instead of "created".
                    watch.pending.push(first);
                    return Ok(watch);
                }
            }
            Err(protocol(&ep.url, "watch was not confirmed"))
        })
    }

    /// POSTs `body` to `path` on the endpoints in turn; returns the endpoint that
    /// answered and its JSON.
    fn call(&self, path: &str, body: &Value) -> Result<(String, Value)> {
        self.with_failover(|ep| {
            let v = unary(ep, path, body)?;
            Ok((ep.url.clone(), v))
        })
    }

    fn with_failover<T>(&self, mut f: impl FnMut(&Endpoint) -> Result<T>) -> Result<T> {
        let n = self.endpoints.len();
        let first = self.preferred.load(Ordering::Relaxed) % n;
        let mut last = None;
        for i in 0..n {
            let idx = (first + i) % n;
            match f(&self.endpoints[idx]) {
                Ok(v) => {
                    self.preferred.store(idx, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(e) if e.is_transient() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("at least one endpoint"))
    }
}

/// An open watch stream.
#[derive(Debug)]
pub struct Watch {
    endpoint: String,
    stream: Stream,
    pending: Vec<WatchResponse>,
}

impl Watch {
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The next message, waiting at most `wait`; `Ok(None)` = nothing yet. An error
    /// (the connection closed or broke) ends the watch.
    pub fn next(&mut self, wait: Duration) -> Result<Option<WatchResponse>> {
        if !self.pending.is_empty() {
            return Ok(Some(self.pending.remove(0)));
        }
        let deadline = Instant::now() + wait;
        match self.stream.next_record(deadline)? {
            Some(rec) => {
                let v = parse_json(&self.endpoint, &rec)?;
                let v = unwrap_result(&self.endpoint, v)?;
                parse_watch_response(&self.endpoint, &v).map(Some)
            }
            None if self.stream.finished() => Err(Error::Io {
                endpoint: self.endpoint.clone(),
                source: io::Error::new(io::ErrorKind::UnexpectedEof, "watch stream closed"),
            }),
            // The deadline passed, or a signal interrupted the wait.
            None => Ok(None),
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// The end of the key range that holds every key starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff: the range runs to the end of the keyspace.
    vec![0]
}

/// An int64 that the gateway renders as a string (or, sometimes, as a number).
fn int(v: Option<&Value>) -> i64 {
    match v {
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

fn header_revision(v: &Value) -> i64 {
    int(v.get("header").and_then(|h| h.get("revision")))
}

fn protocol(endpoint: &str, detail: impl Into<String>) -> Error {
    Error::Protocol {
        endpoint: endpoint.to_string(),
        detail: detail.into(),
    }
}

fn decode_b64(endpoint: &str, v: Option<&Value>) -> Result<Vec<u8>> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => B64
            .decode(s.as_bytes())
            .map_err(|e| protocol(endpoint, format!("bad base64 `{s}`: {e}"))),
        Some(other) => Err(protocol(endpoint, format!("expected base64, got {other}"))),
    }
}

fn parse_kv(endpoint: &str, v: &Value) -> Result<KeyValue> {
    Ok(KeyValue {
        key: String::from_utf8_lossy(&decode_b64(endpoint, v.get("key"))?).into_owned(),
        value: decode_b64(endpoint, v.get("value"))?,
        create_revision: int(v.get("create_revision")),
        mod_revision: int(v.get("mod_revision")),
        version: int(v.get("version")),
        lease: int(v.get("lease")),
    })
}

fn parse_watch_response(endpoint: &str, v: &Value) -> Result<WatchResponse> {
    let mut events = Vec::new();
    if let Some(Value::Array(items)) = v.get("events") {
        for e in items {
            let kind = match e.get("type").and_then(Value::as_str) {
                None | Some("PUT") => EventKind::Put,
                Some("DELETE") => EventKind::Delete,
                Some(other) => return Err(protocol(endpoint, format!("unknown event type {other}"))),
            };
            let kv = parse_kv(endpoint, e.get("kv").unwrap_or(&Value::Null))?;
            events.push(Event { kind, kv });
        }
    }
    Ok(WatchResponse {
        revision: header_revision(v),
        created: v.get("created").and_then(Value::as_bool).unwrap_or(false),
        canceled: v.get("canceled").and_then(Value::as_bool).unwrap_or(false),
        cancel_reason: v
            .get("cancel_reason")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        compact_revision: int(v.get("compact_revision")),
        events,
    })
}

fn parse_json(endpoint: &str, bytes: &[u8]) -> Result<Value> {
    serde_json::from_slice(bytes).map_err(|e| {
        protocol(
            endpoint,
            format!(
                "bad JSON ({e}): {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            ),
        )
    })
}

/// A stream message is `{"result": ...}` or `{"error": {...}}`.
fn unwrap_result(endpoint: &str, mut v: Value) -> Result<Value> {
    if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
        return Err(grpc_error(endpoint, err));
    }
    match v.get_mut("result") {
        Some(r) => Ok(r.take()),
        None => Ok(v),
    }
}

fn grpc_error(endpoint: &str, v: &Value) -> Error {
    let code = int(v.get("code").or_else(|| v.get("grpc_code")));
    let message = v
        .get("message")
        .and_then(Value::as_str)
        .or_else(|| v.get("error").and_then(Value::as_str))
        .unwrap_or("unknown error")
        .to_string();
    Error::Grpc {
        endpoint: endpoint.to_string(),
        code,
        message,
    }
}

fn parse_endpoint(url: &str) -> Result<Endpoint> {
    let rest = match url.split_once("://") {
        Some(("http", rest)) => rest,
        Some(_) => return Err(Error::Endpoint(url.to_string())),
        None => url,
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') {
        return Err(Error::Endpoint(url.to_string()));
    }
    let authority = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_string()
    } else {
        format!("{authority}:2379")
    };
    Ok(Endpoint {
        url: format!("http://{authority}"),
        authority,
    })
}

fn io_err(ep: &Endpoint, source: io::Error) -> Error {
    Error::Io {
        endpoint: ep.url.clone(),
        source,
    }
}

fn connect(ep: &Endpoint) -> Result<TcpStream> {
    let addrs: Vec<SocketAddr> = ep.authority.to_socket_addrs().map_err(|e| io_err(ep, e))?.collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(io_err(ep, last))
}

/// Probes a dead peer on an idle watch connection within about 20 s.
fn set_keepalive(sock: &TcpStream) {
    let fd = sock.as_raw_fd();
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

fn unary(ep: &Endpoint, path: &str, body: &Value) -> Result<Value> {
    let mut stream = Stream::open(ep, path, body, false)?;
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut all = Vec::new();
    while !stream.finished() {
        if Instant::now() >= deadline {
            return Err(io_err(
                ep,
                io::Error::new(io::ErrorKind::TimedOut, "response timed out"),
            ));
        }
        if let Some(rec) = stream.next_record(deadline)? {
            all.extend_from_slice(&rec);
            all.push(b'\n');
        }
    }
    if stream.status != 200 {
        stream.body = all;
        return Err(stream.error_body());
    }
    let v = parse_json(&ep.url, &all)?;
    if let Some(e) = v.get("error").filter(|e| !e.is_null()) {
        if v.get("code").is_some() || e.is_object() {
            return Err(grpc_error(&ep.url, if e.is_object() { e } else { &v }));
        }
    }
    Ok(v)
}

#[derive(Debug)]
enum Framing {
    Length(usize),
    Chunked,
    UntilEof,
}

/// One HTTP/1.1 response being read: the head is parsed, the body is decoded
/// incrementally into newline-separated records.
#[derive(Debug)]
struct Stream {
    endpoint: String,
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

impl Stream {
    fn open(ep: &Endpoint, path: &str, body: &Value, stream: bool) -> Result<Stream> {
        let mut sock = connect(ep)?;
        let payload = body.to_string();
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAccept: application/json\r\nContent-Length: {}\r\n",
            ep.authority,
            payload.len()
        );
        if stream {
            // Have etcd end the watch if this member loses its leader (clientv3's WithRequireLeader).
            head.push_str("Grpc-Metadata-hasleader: true\r\n");
        }
        head.push_str("Connection: close\r\n\r\n");
        let _ = sock.set_write_timeout(Some(IO_TIMEOUT));
        sock.write_all(head.as_bytes())
            .and_then(|_| sock.write_all(payload.as_bytes()))
            .map_err(|e| io_err(ep, e))?;
        let mut s = Stream {
            endpoint: ep.url.clone(),
            sock,
            status: 0,
            framing: Framing::UntilEof,
            raw: Vec::new(),
            body: Vec::new(),
            chunk_left: 0,
            done: false,
            interrupted: false,
        };
        s.read_head(Instant::now() + IO_TIMEOUT)?;
        Ok(s)
    }

    fn finished(&self) -> bool {
        self.done && self.body.is_empty()
    }

    /// The error in a non-200 response.
    fn error_body(&mut self) -> Error {
        let deadline = Instant::now() + Duration::from_secs(1);
        while !self.done && Instant::now() < deadline {
            if self.fill(deadline).is_err() {
                break;
            }
            let _ = self.decode();
        }
        let text = String::from_utf8_lossy(&self.body).trim().to_string();
        match serde_json::from_str::<Value>(&text) {
            Ok(v) if v.get("code").is_some() || v.get("message").is_some() => grpc_error(&self.endpoint, &v),
            _ => Error::Http {
                endpoint: self.endpoint.clone(),
                status: self.status,
                body: text,
            },
        }
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
            Err(e) => Err(Error::Io {
                endpoint: self.endpoint.clone(),
                source: e,
            }),
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
                return Err(protocol(&self.endpoint, "connection closed before the response head"));
            }
            if Instant::now() >= deadline {
                return Err(Error::Io {
                    endpoint: self.endpoint.clone(),
                    source: io::Error::new(io::ErrorKind::TimedOut, "no response"),
                });
            }
            self.fill(deadline)?;
            if self.raw.len() > 64 * 1024 {
                return Err(protocol(&self.endpoint, "response head too large"));
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
            return Err(protocol(&self.endpoint, format!("bad status line `{status_line}`")));
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
                    .map_err(|_| protocol(&self.endpoint, format!("bad Content-Length `{value}`")))?;
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
                let size = usize::from_str_radix(size_text, 16)
                    .map_err(|_| protocol(&self.endpoint, format!("bad chunk size `{line}`")))?;
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
    fn next_record(&mut self, deadline: Instant) -> Result<Option<Vec<u8>>> {
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

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }

    #[test]
    fn parses_endpoints() {
        let c = Client::from_list("http://10.1.0.1:2379, http://10.1.0.2:2379").unwrap();
        assert_eq!(c.endpoints(), ["http://10.1.0.1:2379", "http://10.1.0.2:2379"]);
        assert_eq!(
            Client::new(&["127.0.0.1"]).unwrap().endpoints(),
            ["http://127.0.0.1:2379"]
        );
        assert!(Client::new(&["https://x:1"]).is_err());
        assert!(Client::from_list("").is_err());
    }

    /// Serves one canned response per connection and records each request.
    fn serve(responses: Vec<Vec<u8>>) -> (String, std::thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = std::thread::spawn(move || {
            let mut requests = Vec::new();
            for resp in responses {
                let (mut sock, _) = listener.accept().unwrap();
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                loop {
                    let n = sock.read(&mut tmp).unwrap();
                    buf.extend_from_slice(&tmp[..n]);
                    if let Some(end) = find(&buf, b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("Content-Length: "))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                requests.push(String::from_utf8_lossy(&buf).into_owned());
                // Dribble the response out in small pieces to exercise reassembly.
                for piece in resp.chunks(7) {
                    sock.write_all(piece).unwrap();
                    sock.flush().unwrap();
                }
            }
            requests
        });
        (format!("http://{addr}"), handle)
    }

    fn chunked(records: &[&str]) -> Vec<u8> {
        let mut out =
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for r in records {
            let data = format!("{r}\n");
            out.extend(format!("{:x}\r\n{data}\r\n", data.len()).into_bytes());
        }
        out.extend(b"0\r\n\r\n");
        out
    }

    fn plain(status: &str, body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    #[test]
    fn range_put_txn_and_errors_over_fake_gateway() {
        let key = B64.encode("/coreos.com/network/config");
        let val = B64.encode("{\"Network\":\"11.0.0.0/8\"}");
        let (url, server) = serve(vec![
            plain(
                "200 OK",
                &format!(
                    r#"{{"header":{{"revision":"7"}},"kvs":[{{"key":"{key}","create_revision":"2","mod_revision":"5","version":"3","value":"{val}","lease":"42"}}],"count":"1"}}"#
                ),
            ),
            plain("200 OK", r#"{"header":{"revision":"8"}}"#),
            plain("200 OK", r#"{"header":{"revision":"8"}}"#),
            plain(
                "404 Not Found",
                r#"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}"#,
            ),
            chunked(&[r#"{"header":{"revision":"9"},"ID":"77","TTL":"30"}"#]),
        ]);
        let c = Client::new(&[url]).unwrap();
        let (kv, rev) = c.get("/coreos.com/network/config").unwrap();
        let kv = kv.unwrap();
        assert_eq!(rev, 7);
        assert_eq!(kv.key, "/coreos.com/network/config");
        assert_eq!(kv.value, b"{\"Network\":\"11.0.0.0/8\"}");
        assert_eq!(
            (kv.create_revision, kv.mod_revision, kv.version, kv.lease),
            (2, 5, 3, 42)
        );
        assert_eq!(c.put("/k", b"v", 0).unwrap(), 8);
        assert!(!c.create("/k", b"v", 5).unwrap());
        let err = c.revoke(5).unwrap_err();
        assert!(matches!(err, Error::Grpc { code: 5, .. }), "{err}");
        assert!(!err.is_transient());
        assert_eq!(c.grant(30).unwrap(), Lease { id: 77, ttl: 30 });
        let requests = server.join().unwrap();
        assert!(requests[0].starts_with("POST /v3/kv/range HTTP/1.1\r\n"));
        assert!(requests[1].contains(&format!(r#""key":"{}""#, B64.encode("/k"))));
        assert!(!requests[1].contains("lease"));
        assert!(requests[2].starts_with("POST /v3/kv/txn "));
        assert!(requests[2].contains(r#""lease":"5""#));
        assert!(requests[4].contains(r#""TTL":"30""#));
    }

    #[test]
    fn watch_stream_decodes_events_across_chunks() {
        let key = B64.encode("/p/subnets/11.10.0.0-20");
        let val = B64.encode("{}");
        let (url, server) = serve(vec![chunked(&[
            r#"{"result":{"header":{"revision":"3"},"created":true}}"#,
            &format!(
                r#"{{"result":{{"header":{{"revision":"4"}},"events":[{{"kv":{{"key":"{key}","mod_revision":"4","value":"{val}","lease":"9"}}}},{{"type":"DELETE","kv":{{"key":"{key}","mod_revision":"5"}}}}]}}}}"#
            ),
            r#"{"result":{"header":{"raft_term":"2"},"canceled":true,"compact_revision":"5"}}"#,
        ])]);
        let c = Client::new(&[url]).unwrap();
        let mut w = c.watch_prefix("/p/subnets/", 4).unwrap();
        let r = w.next(Duration::from_secs(2)).unwrap().unwrap();
        assert_eq!(r.revision, 4);
        assert_eq!(r.events.len(), 2);
        assert_eq!(r.events[0].kind, EventKind::Put);
        assert_eq!(r.events[0].kv.lease, 9);
        assert_eq!(r.events[1].kind, EventKind::Delete);
        assert_eq!(r.events[1].kv.key, "/p/subnets/11.10.0.0-20");
        let r = w.next(Duration::from_secs(2)).unwrap().unwrap();
        assert!(r.canceled);
        assert_eq!(r.compact_revision, 5);
        assert!(w.next(Duration::from_secs(2)).is_err(), "closed stream is an error");
        let requests = server.join().unwrap();
        assert!(requests[0].contains("Grpc-Metadata-hasleader: true"));
        let body = requests[0].split("\r\n\r\n").nth(1).unwrap();
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["create_request"]["start_revision"], "4");
        assert_eq!(v["create_request"]["range_end"], B64.encode("/p/subnets0"));
    }

    #[test]
    fn fails_over_to_the_next_endpoint() {
        // A port with nothing listening, then a working fake.
        let dead = TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_url = format!("http://{}", dead.local_addr().unwrap());
        drop(dead);
        let (url, server) = serve(vec![
            plain("200 OK", r#"{"header":{"revision":"1"}}"#),
            plain("200 OK", r#"{"header":{"revision":"2"}}"#),
        ]);
        let c = Client::new(&[dead_url, url]).unwrap();
        assert_eq!(c.put("/a", b"1", 0).unwrap(), 1);
        // The endpoint that answered is now tried first.
        assert_eq!(c.put("/a", b"2", 0).unwrap(), 2);
        server.join().unwrap();
    }
}
