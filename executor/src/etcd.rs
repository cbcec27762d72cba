//! A small, blocking etcd v3 client speaking the JSON gRPC gateway (`/v3/...`) over
//! plain HTTP/1.1 ([`crate::http`]): no TLS, no gRPC, no async runtime.
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

use crate::http;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};
use std::io;
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
            if stream.status() != 200 {
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
            if stream.status() != 200 {
                return Err(stream.error_body());
            }
            stream.response.probe_dead_peer();
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
            Some(rec) => decode_watch_message(&self.endpoint, &rec).map(Some),
            None if self.stream.finished() => Err(Error::Io {
                endpoint: self.endpoint.clone(),
                source: io::Error::new(io::ErrorKind::UnexpectedEof, "watch stream closed"),
            }),
            // The deadline passed, or a signal interrupted the wait.
            None => Ok(None),
        }
    }
}

/// The parsing entry point for what a watch stream carries: one message (`rec`, a JSON
/// `{"result": ...}` or `{"error": ...}` from `endpoint`) decoded into a [`WatchResponse`],
/// keys and values base64-decoded.
pub fn decode_watch_message(endpoint: &str, rec: &[u8]) -> Result<WatchResponse> {
    let v = parse_json(endpoint, rec)?;
    let v = unwrap_result(endpoint, v)?;
    parse_watch_response(endpoint, &v)
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
    if stream.status() != 200 {
        return Err(answer_error(&ep.url, stream.status(), &all));
    }
    let v = parse_json(&ep.url, &all)?;
    if let Some(e) = v.get("error").filter(|e| !e.is_null()) {
        if v.get("code").is_some() || e.is_object() {
            return Err(grpc_error(&ep.url, if e.is_object() { e } else { &v }));
        }
    }
    Ok(v)
}

/// The error a non-200 answer carries: etcd's gRPC status when the body is one.
fn answer_error(endpoint: &str, status: u16, body: &[u8]) -> Error {
    let text = String::from_utf8_lossy(body).trim().to_string();
    match serde_json::from_str::<Value>(&text) {
        Ok(v) if v.get("code").is_some() || v.get("message").is_some() => grpc_error(endpoint, &v),
        _ => Error::Http {
            endpoint: endpoint.to_string(),
            status,
            body: text,
        },
    }
}

/// One answer of the gateway being read: an [`http::Response`] whose errors name
/// the endpoint.
#[derive(Debug)]
struct Stream {
    endpoint: String,
    response: http::Response,
}

impl Stream {
    /// POSTs `body` to `path` on a new connection; `watch` asks etcd to end the stream
    /// if this member loses its leader.
    fn open(ep: &Endpoint, path: &str, body: &Value, watch: bool) -> Result<Stream> {
        let sock = http::connect(&ep.authority, CONNECT_TIMEOUT).map_err(|e| io_err(ep, e))?;
        let payload = body.to_string();
        let mut request = http::Request::post_json(&ep.authority, path, payload.as_bytes());
        if watch {
            // clientv3's WithRequireLeader.
            request = request.header("Grpc-Metadata-hasleader", "true");
        }
        let response = http::Response::send(sock, &request, IO_TIMEOUT).map_err(|e| http_error(&ep.url, e))?;
        Ok(Stream {
            endpoint: ep.url.clone(),
            response,
        })
    }

    fn status(&self) -> u16 {
        self.response.status()
    }

    fn finished(&self) -> bool {
        self.response.finished()
    }

    /// The error in a non-200 answer (what of it arrives within a second).
    fn error_body(&mut self) -> Error {
        let body = self.response.rest(Instant::now() + Duration::from_secs(1));
        answer_error(&self.endpoint, self.status(), &body)
    }

    fn next_record(&mut self, deadline: Instant) -> Result<Option<Vec<u8>>> {
        self.response
            .next_record(deadline)
            .map_err(|e| http_error(&self.endpoint, e))
    }
}

fn http_error(endpoint: &str, e: http::Error) -> Error {
    match e {
        http::Error::Io(source) => Error::Io {
            endpoint: endpoint.to_string(),
            source,
        },
        http::Error::Protocol(detail) => protocol(endpoint, detail),
    }
}
