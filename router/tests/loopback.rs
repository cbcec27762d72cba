//! Routers linked in-process on 127.0.0.1: echo through two and three routers, several
//! concurrent streams over the one link, /healthz and /metrics, round-robin over
//! tcpConnectors, closest and balanced distribution, withdrawal when a router stops and re-learning when it comes back.
//! Loopback only; every wait is bounded; routers stop when dropped.

mod common;

use common::{echo_concurrently, echo_once, pattern, server, wait_accepting};
use knetsim_router::{Config, Router};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    common::free_port_from(20000 + (std::process::id() % 500) * 16, 8000)
}

fn start(json: &str) -> Router {
    let cfg = Config::parse(json).unwrap();
    assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    Router::start(cfg).unwrap()
}

/// A router with an inter-router listener (port 0 unless given), an http listener, and extra entities.
fn router(id: &str, listen_port: u16, extra: &[String]) -> Router {
    let mut entities = vec![
        format!(r#"["router", {{"id": "{id}", "mode": "interior"}}]"#),
        format!(
            r#"["listener", {{"name": "interior-listener", "role": "inter-router", "host": "127.0.0.1", "port": {listen_port}}}]"#
        ),
        r#"["listener", {"name": "@http", "host": "127.0.0.1", "port": 0, "http": true, "healthz": true, "metrics": true}]"#
            .to_string(),
    ];
    entities.extend(extra.iter().cloned());
    start(&format!("[{}]", entities.join(",\n")))
}

fn connector(name: &str, port: u16, cost: u32) -> String {
    format!(
        r#"["connector", {{"name": "{name}", "role": "inter-router", "host": "127.0.0.1", "port": "{port}", "cost": {cost}}}]"#
    )
}

fn tcp_connector(name: &str, address: &str, target: SocketAddr) -> String {
    format!(
        r#"["tcpConnector", {{"name": "{name}", "host": "127.0.0.1", "port": "{}", "address": "{address}"}}]"#,
        target.port()
    )
}

fn tcp_listener(address: &str, port: u16) -> String {
    format!(
        r#"["tcpListener", {{"name": "{address}:{port}", "host": "127.0.0.1", "port": "{port}", "address": "{address}"}}]"#
    )
}

fn listen_port(r: &Router) -> u16 {
    r.bound("interior-listener").unwrap().port()
}

fn wait_refusing(port: u16, within: Duration) {
    let t0 = Instant::now();
    while t0.elapsed() < within {
        if TcpStream::connect(("127.0.0.1", port)).is_err() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    panic!("port {port} still accepting after {within:?}");
}

/// Like `echo_once`, but tolerates the first stream after the address (re)appears
/// being dropped while the path settles (seen under load; tracked as a known race).
fn echo_settled(port: u16, payload: &'static [u8]) -> Vec<u8> {
    for _ in 0..10 {
        match thread::spawn(move || echo_once(port, payload)).join() {
            Ok(back) if back == payload => return back,
            _ => thread::sleep(Duration::from_millis(50)),
        }
    }
    echo_once(port, payload)
}

fn read_all(port: u16) -> String {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).unwrap();
    s
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).unwrap();
    s
}

#[test]
fn echo_through_two_routers_with_concurrent_streams_over_one_link() {
    let echo = server(None);
    let a = router("a", 0, &[tcp_connector("echo", "echo", echo)]);
    let svc_port = free_port();
    let b = router(
        "b",
        0,
        &[connector("to-a", listen_port(&a), 1), tcp_listener("echo", svc_port)],
    );
    let ready = wait_accepting(svc_port, Duration::from_secs(5));
    eprintln!("tcpListener accepting {ready:?} after start");

    assert_eq!(
        echo_once(svc_port, b"hello through two routers"),
        b"hello through two routers"
    );

    echo_concurrently(svc_port, (0..8).map(|i| pattern(i, 300_000 + i * 1000)).collect());

    let snap = b.snapshot();
    assert_eq!(snap.links.len(), 1, "one link carries every stream: {snap:?}");
    assert_eq!(snap.links[0].0, "a");
    assert!(snap.addresses.contains(&"echo".to_string()));

    let http = b.bound("@http").unwrap();
    let h = http_get(http, "/healthz");
    assert!(h.starts_with("HTTP/1.1 200"), "{h}");
    let m = http_get(http, "/metrics");
    assert!(m.contains("skrouter_links{router=\"b\"} 1"), "{m}");
    assert!(
        // The readiness probe, one echo and eight concurrent streams.
        m.contains("skrouter_streams_total{router=\"b\",address=\"echo\"} 10"),
        "{m}"
    );
    let bytes_in: u64 = m
        .lines()
        .find(|l| l.starts_with("skrouter_bytes_in_total{router=\"b\",address=\"echo\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(bytes_in > 8 * 300_000, "{bytes_in}");
    assert!(http_get(http, "/nope").starts_with("HTTP/1.1 404"));
    let am = a.metrics();
    assert!(
        am.contains("skrouter_link_streams_total{router=\"a\",peer=\"b\""),
        "{am}"
    );
}

#[test]
fn bulk_streams_cross_three_routers_intact_with_small_and_mixed_frame_sizes() {
    // c serves echo; a -> b -> c, where b forwards between two links (data re-framed to
    // the next link's frame size): b's listener takes 512-byte frames, c's 64 KiB ones.
    let echo = server(None);
    let c_port = free_port();
    let c = start(&format!(
        r#"[["router", {{"id": "c"}}],
            ["listener", {{"name": "interior-listener", "role": "inter-router", "host": "127.0.0.1", "port": {c_port}, "maxFrameSize": 65536}}],
            {}]"#,
        tcp_connector("echo", "echo", echo)
    ));
    let b_port = free_port();
    let _b = start(&format!(
        r#"[["router", {{"id": "b"}}],
            ["listener", {{"name": "interior-listener", "role": "inter-router", "host": "127.0.0.1", "port": {b_port}, "maxFrameSize": 512}}],
            ["connector", {{"name": "to-c", "role": "inter-router", "host": "127.0.0.1", "port": "{c_port}", "maxFrameSize": 4096}}]]"#
    ));
    let svc_port = free_port();
    // Enough addresses that a's advertisement spans several of b's 512-byte frames.
    let mut a_entities = vec![connector("to-b", b_port, 1), tcp_listener("echo", svc_port)];
    a_entities.extend((0..30).map(|i| tcp_connector(&format!("pad{i}"), &format!("padding-address-{i}"), echo)));
    let _a = router("a", 0, &a_entities);
    wait_accepting(svc_port, Duration::from_secs(5));
    let t0 = Instant::now();
    while !c.snapshot().addresses.contains(&"padding-address-29".to_string()) {
        assert!(t0.elapsed() < Duration::from_secs(5), "c never learned a's addresses");
        thread::sleep(Duration::from_millis(10));
    }
    echo_concurrently(svc_port, (0..3).map(|i| pattern(i + 20, 200_000 + i * 777)).collect());
    assert!(c
        .metrics()
        .contains("skrouter_streams_total{router=\"c\",address=\"echo\"}"));
}

#[test]
fn tcp_listener_accepts_only_while_the_address_is_reachable_and_relearns_a_restart() {
    let echo = server(None);
    let a_port = free_port();
    let svc_port = free_port();
    let a = router("a", a_port, &[tcp_connector("echo", "echo", echo)]);
    // Three hops: c -> b -> a.
    let b = router("b", 0, &[connector("to-a", a_port, 1)]);
    let c = router(
        "c",
        0,
        &[connector("to-b", listen_port(&b), 1), tcp_listener("echo", svc_port)],
    );
    wait_accepting(svc_port, Duration::from_secs(5));
    assert_eq!(echo_settled(svc_port, b"two hops"), b"two hops");
    assert_eq!(c.snapshot().links.len(), 1);

    // The service's router goes away: the address is withdrawn, the tcpListener closes.
    drop(a);
    wait_refusing(svc_port, Duration::from_secs(5));
    assert!(!c.snapshot().addresses.contains(&"echo".to_string()));

    // It comes back on the same port: re-learned at once (reconnect backoff <= 200 ms).
    let t0 = Instant::now();
    let _a = router("a", a_port, &[tcp_connector("echo", "echo", echo)]);
    let took = wait_accepting(svc_port, Duration::from_secs(3));
    eprintln!("service reachable again {:?} after restart", t0.elapsed());
    assert!(took < Duration::from_secs(1), "re-learned after {took:?}");
    assert_eq!(echo_settled(svc_port, b"again"), b"again");
}

#[test]
fn several_tcp_connectors_share_new_streams_round_robin() {
    let one = server(Some("one"));
    let two = server(Some("two"));
    let a = router(
        "a",
        0,
        &[tcp_connector("s1", "svc", one), tcp_connector("s2", "svc", two)],
    );
    let svc_port = free_port();
    let _b = router(
        "b",
        0,
        &[connector("to-a", listen_port(&a), 1), tcp_listener("svc", svc_port)],
    );
    wait_accepting(svc_port, Duration::from_secs(5));
    // The probe connection above took one turn; count the next ones.
    thread::sleep(Duration::from_millis(100));
    let got: Vec<String> = (0..6).map(|_| read_all(svc_port)).collect();
    let ones = got.iter().filter(|s| *s == "one").count();
    let twos = got.iter().filter(|s| *s == "two").count();
    assert_eq!((ones, twos), (3, 3), "{got:?}");
    for w in got.windows(2) {
        assert_ne!(w[0], w[1], "alternates: {got:?}");
    }
}

#[test]
fn heartbeats_keep_a_quiet_link_up_and_a_silent_peer_is_dropped_after_the_idle_time_out() {
    use knetsim_router::amqp::{self, Frame, Performative};
    let r = start(
        r#"[["router", {"id": "r", "mode": "interior"}],
            ["listener", {"name": "interior-listener", "role": "inter-router", "host": "127.0.0.1", "port": 0, "idleTimeoutSeconds": 1}]]"#,
    );
    // A hand-made peer: it asks for a frame at least every 200 ms (idle time-out 400 ms).
    let mut peer = TcpStream::connect(r.bound("interior-listener").unwrap()).unwrap();
    let mut hello = amqp::PROTOCOL_HEADER.to_vec();
    let open = Performative::Open {
        container_id: "fake".into(),
        max_frame_size: 16384,
        idle_time_out_ms: 400,
        properties: vec![],
    };
    let begin = Performative::Begin {
        remote_channel: None,
        next_outgoing_id: 0,
        incoming_window: 100,
        outgoing_window: 100,
    };
    hello.extend(Frame::new(0, open).encode());
    hello.extend(Frame::new(0, begin).encode());
    peer.write_all(&hello).unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut header = [0u8; 8];
    let mut reader = peer.try_clone().unwrap();
    reader.read_exact(&mut header).unwrap();
    assert_eq!(header, amqp::PROTOCOL_HEADER);
    match amqp::read_frame(&mut reader).unwrap().and_then(|f| f.body) {
        Some(Performative::Open { idle_time_out_ms, .. }) => assert_eq!(idle_time_out_ms, 1000),
        other => panic!("expected open, got {other:?}"),
    }
    // Count the router's empty frames while the peer sends its own every 300 ms (under
    // the router's 1 s): the link stays up throughout.
    let heartbeats = thread::spawn(move || {
        let (mut empty, t0) = (0, Instant::now());
        let mut closed_after = None;
        loop {
            match amqp::read_frame(&mut reader) {
                Ok(Some(f)) if f.body.is_none() && t0.elapsed() < Duration::from_millis(2000) => empty += 1,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    closed_after = closed_after.or(Some(t0.elapsed()));
                    break;
                }
            }
        }
        (empty, closed_after)
    });
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(2000) {
        peer.write_all(&Frame::heartbeat().encode()).unwrap();
        thread::sleep(Duration::from_millis(300));
        assert_eq!(
            r.snapshot().links.len(),
            1,
            "link dropped although the peer sent heartbeats"
        );
    }
    // Now the peer falls silent (its socket stays open): dropped after ~1 s.
    let silent = Instant::now();
    while !r.snapshot().links.is_empty() {
        assert!(silent.elapsed() < Duration::from_secs(4), "silent peer still linked");
        thread::sleep(Duration::from_millis(20));
    }
    let took = silent.elapsed();
    assert!(
        took >= Duration::from_millis(600),
        "dropped after {took:?}, before its idle time-out"
    );
    let (empty, closed) = heartbeats.join().unwrap();
    assert!(
        empty >= 6,
        "{empty} empty frames in 2 s; the peer asked for one every 200 ms"
    );
    assert!(closed.is_some(), "the router never closed the connection");
}

/// Opens `n` streams to `port` one after another, keeping each open, and returns the
/// tag each was answered with.
fn tags_of_open_streams(port: u16, n: usize) -> (Vec<String>, Vec<TcpStream>) {
    let mut held = Vec::new();
    let tags = (0..n)
        .map(|_| {
            let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut tag = [0u8; 4];
            c.read_exact(&mut tag).unwrap();
            held.push(c);
            String::from_utf8_lossy(&tag).into_owned()
        })
        .collect();
    (tags, held)
}

/// Router a serves "svc" itself and through b (cost 1), with the given distribution.
fn near_and_far(distribution: &str) -> (Router, Router, u16) {
    let b = router("b", 0, &[tcp_connector("far", "svc", server(Some("far_")))]);
    let svc_port = free_port();
    let a = router(
        "a",
        0,
        &[
            connector("to-b", listen_port(&b), 1),
            tcp_connector("near", "svc", server(Some("near"))),
            tcp_listener("svc", svc_port),
            format!(r#"["address", {{"prefix": "svc", "distribution": "{distribution}"}}]"#),
        ],
    );
    let t0 = Instant::now();
    while a.snapshot().links.is_empty() || b.snapshot().links.is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(5), "a and b never linked");
        thread::sleep(Duration::from_millis(10));
    }
    // Both advertisements exchanged (they go out with the link).
    thread::sleep(Duration::from_millis(100));
    (a, b, svc_port)
}

#[test]
fn closest_distribution_keeps_open_streams_on_the_local_connector() {
    let (_a, _b, port) = near_and_far("closest");
    let (tags, _held) = tags_of_open_streams(port, 4);
    assert_eq!(tags, ["near"; 4]);
}

#[test]
fn balanced_distribution_spills_open_streams_over_to_the_farther_router() {
    let (_a, _b, port) = near_and_far("balanced");
    let (tags, held) = tags_of_open_streams(port, 4);
    // Weights are open streams + cost: near 0, near 1 (cheaper on a tie), far 1, near 2.
    assert_eq!(tags, ["near", "near", "far_", "near"]);
    drop(held);
    // Once they have closed, new streams go to the nearest again.
    thread::sleep(Duration::from_millis(200));
    let (tags, _held) = tags_of_open_streams(port, 1);
    assert_eq!(tags, ["near"]);
}

#[test]
fn the_cheaper_path_carries_traffic_and_traffic_moves_when_it_goes_down() {
    // d serves "who"; a reaches d through b (cost 1+1) and through c (cost 5+1).
    let d = router("d", 0, &[tcp_connector("who", "who", server(Some("d")))]);
    let d_port = listen_port(&d);
    let b = router("b", 0, &[connector("to-d", d_port, 1)]);
    let c = router("c", 0, &[connector("to-d", d_port, 1)]);
    let svc_port = free_port();
    let a = router(
        "a",
        0,
        &[
            connector("via-b", listen_port(&b), 1),
            connector("via-c", listen_port(&c), 5),
            tcp_listener("who", svc_port),
        ],
    );
    wait_accepting(svc_port, Duration::from_secs(5));
    let t0 = Instant::now();
    while a.snapshot().links.len() < 2 && t0.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(20));
    }
    // Let the advertisements settle, then send a few streams.
    thread::sleep(Duration::from_millis(200));
    for _ in 0..4 {
        assert_eq!(read_all(svc_port), "d");
    }
    let streams = |r: &Router| {
        r.metrics()
            .lines()
            .filter(|l| l.starts_with("skrouter_link_streams_total"))
            .count()
    };
    let total = |r: &Router, peer: &str| -> u64 {
        r.metrics()
            .lines()
            .find(|l| l.starts_with("skrouter_link_streams_total") && l.contains(&format!("peer=\"{peer}\"")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert!(streams(&a) >= 2);
    let via_b = total(&a, "b");
    assert!(via_b >= 4, "b carried {via_b}");
    assert_eq!(total(&a, "c"), 0, "c carried streams");

    drop(b);
    let t0 = Instant::now();
    loop {
        if a.snapshot().links.iter().all(|l| l.0 != "b") {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "link to b still up");
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_millis(100));
    assert_eq!(read_all(svc_port), "d");
    assert!(total(&a, "c") >= 1, "traffic moved to c");
}

#[test]
fn a_link_whose_tls_profile_does_not_load_is_refused_not_run_in_the_clear() {
    let port = free_port();
    let text = format!(
        r#"[
  ["router", {{"id": "t", "mode": "interior"}}],
  ["sslProfile", {{"name": "p", "caCertFile": "/x/ca.crt", "certFile": "/x/tls.crt", "privateKeyFile": "/x/tls.key"}}],
  ["listener", {{"name": "interior", "role": "inter-router", "host": "127.0.0.1", "port": {port}, "sslProfile": "p"}}]
]"#
    );
    let cfg = Config::parse(&text).expect("config parses");
    let err = Router::start(cfg)
        .err()
        .expect("a profile without its files must be refused");
    assert!(
        err.to_string().contains("sslProfile 'p': attribute 'caCertFile'"),
        "{err}"
    );
    // Nothing was bound.
    assert!(TcpListener::bind(("127.0.0.1", port)).is_ok());
}

/// Small writes echoed back to a client that does not read for a while: the routers'
/// link readers write small transfers straight to the stream's socket until it is full,
/// then queue the rest; every byte must still arrive, in order.
#[test]
fn small_writes_to_a_client_that_reads_late_arrive_whole_and_in_order() {
    let echo = server(None);
    let a = router("a", 0, &[tcp_connector("echo", "echo", echo)]);
    let svc_port = free_port();
    let _b = router(
        "b",
        0,
        &[connector("to-a", listen_port(&a), 1), tcp_listener("echo", svc_port)],
    );
    wait_accepting(svc_port, Duration::from_secs(5));
    assert_eq!(echo_settled(svc_port, b"ready"), b"ready");

    let data = pattern(7, 4_000_000);
    let mut c = TcpStream::connect(("127.0.0.1", svc_port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let w = c.try_clone().unwrap();
    let sent = data.clone();
    let writer = thread::spawn(move || {
        let mut w = w;
        for chunk in sent.chunks(1000) {
            w.write_all(chunk).unwrap();
        }
        w.shutdown(std::net::Shutdown::Write).unwrap();
    });
    thread::sleep(Duration::from_millis(300));
    let mut back = Vec::new();
    let mut buf = [0u8; 700];
    loop {
        match c.read(&mut buf).unwrap() {
            0 => break,
            n => back.extend_from_slice(&buf[..n]),
        }
    }
    writer.join().unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data, "echoed bytes reordered or corrupted");
}
