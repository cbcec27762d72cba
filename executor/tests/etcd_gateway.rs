//! The etcd client against a fake JSON gateway on loopback: unary calls, errors,
//! a watch stream in chunks, failover. The flannel live tests run it against a real etcd.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use knetsim_executor::etcd::{prefix_end, Client, Error, EventKind, Lease};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

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
    let mut out = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
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
