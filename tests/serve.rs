//! `knetsim serve` answers every request with its text, on loopback.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get(port: u16, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

#[test]
fn serve_answers_every_path_with_its_text() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(env!("CARGO_BIN_EXE_knetsim"))
        .args(["serve", "--text", "S1-W2", "--port", &port.to_string()])
        .spawn()
        .unwrap();
    let _server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(5);
    let reply = loop {
        match get(port, "/svc1") {
            Ok(r) => break r,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("server did not answer: {e}"),
        }
    };
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(reply.ends_with("\r\n\r\nS1-W2\n"), "{reply}");
    assert!(get(port, "/").unwrap().ends_with("S1-W2\n"));
}

#[test]
fn serve_listens_on_several_ports_and_answers_udp() {
    let free = || TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (a, b) = (free(), free());
    let child = Command::new(env!("CARGO_BIN_EXE_knetsim"))
        .args([
            "serve",
            "--text",
            "x/a",
            "--port",
            &a.to_string(),
            "--port",
            &b.to_string(),
            "--udp",
        ])
        .spawn()
        .unwrap();
    let _server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(5);
    while get(b, "/").is_err() {
        assert!(Instant::now() < deadline, "no answer on port {b}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(get(a, "/").unwrap().ends_with("x/a\n"));
    // Every datagram gets the text back, on both ports.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    for port in [a, b] {
        sock.send_to(b"probe", ("127.0.0.1", port)).unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = sock.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"x/a\n");
    }
}
