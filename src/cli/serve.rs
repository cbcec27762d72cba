//! `knetsim serve`: the seed's `utils/ss.py`, a tiny HTTP server answering every GET
//! with a fixed text, used as a pod workload (e.g. the ingress demo's S1-W2).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// The text every request gets (a newline is added).
    #[arg(long)]
    text: String,
    /// Port to listen on (all addresses of the namespace).
    #[arg(long, default_value_t = 8000, value_parser = clap::value_parser!(u16).range(1..))]
    port: u16,
}

pub fn serve(a: ServeArgs) -> i32 {
    let listener = match TcpListener::bind(("0.0.0.0", a.port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on port {}: {e}", a.port);
            return 1;
        }
    };
    eprintln!("serving {:?} on port {}", a.text, a.port);
    let body = format!("{}\n", a.text);
    for stream in listener.incoming().flatten() {
        let body = body.clone();
        thread::spawn(move || answer(stream, &body));
    }
    0
}

/// Reads the request head and answers with the body; any method, any path.
fn answer(mut stream: TcpStream, body: &str) {
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
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
    let _ = stream.write_all(response.as_bytes());
}
