//! Helpers shared by the router's loopback tests: free ports, echo servers, waits.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// A free port below the ephemeral range, so no port-0 bind or outgoing connection of a
/// concurrent test takes it while a tcpListener is (deliberately) closed. Each test
/// binary passes its own `base` so binaries running at the same time stay apart.
pub fn free_port_from(base: u32, span: u32) -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    loop {
        let p = (base + NEXT.fetch_add(1, Ordering::Relaxed) % span) as u16;
        if TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

/// An echo server (or, with a `tag`, a server answering every connection with the tag).
pub fn server(tag: Option<&'static str>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            thread::spawn(move || {
                if let Some(t) = tag {
                    let _ = c.write_all(t.as_bytes());
                    return;
                }
                let mut buf = [0u8; 32 * 1024];
                loop {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if c.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// Waits (bounded) until the port accepts a connection.
pub fn wait_accepting(port: u16, within: Duration) -> Duration {
    let t0 = Instant::now();
    while t0.elapsed() < within {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return t0.elapsed();
        }
        thread::sleep(Duration::from_millis(10));
    }
    panic!("port {port} not accepting within {within:?}");
}

pub fn echo_once(port: u16, payload: &[u8]) -> Vec<u8> {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let w = c.try_clone().unwrap();
    let data = payload.to_vec();
    let writer = thread::spawn(move || {
        let mut w = w;
        w.write_all(&data).unwrap();
        w.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    c.read_to_end(&mut back).unwrap();
    writer.join().unwrap();
    back
}

/// Bytes that differ by `seed` and position, so a stream mixed up with another or
/// shifted shows.
pub fn pattern(seed: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 31 + seed * 7) % 251) as u8).collect()
}

/// Echoes every payload through `port` on its own stream, all at once; each must come
/// back intact.
pub fn echo_concurrently(port: u16, payloads: Vec<Vec<u8>>) {
    let handles: Vec<_> = payloads
        .into_iter()
        .enumerate()
        .map(|(i, data)| {
            thread::spawn(move || {
                let back = echo_once(port, &data);
                assert_eq!(back.len(), data.len(), "stream {i}");
                assert!(back == data, "stream {i} corrupted");
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}
