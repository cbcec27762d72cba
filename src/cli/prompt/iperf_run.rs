//! The processes of `iperf`: a one-shot `iperf3 -s -1` in the destination's
//! namespace, ended by its PID whatever happens, and `iperf3 -c ... -J` in the
//! source's, whose JSON report gives the rates.

use super::iperf::{listens_on, parse_report, Rates};
use knetsim_executor::system::linux::open_netns;
use knetsim_executor::system::process::command_in_netns;
use std::io::Read;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Ports tried in turn: iperf3's own, then the next ones if a node already uses it.
const PORTS: std::ops::RangeInclusive<u16> = 5201..=5210;
/// How long a server may take to listen.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the client may take to connect (an unreachable server fails fast).
const CONNECT_TIMEOUT_MS: &str = "3000";

/// An `iperf3 -s -1`; dropped, it is ended by its PID (if it has not ended itself
/// after its one test) and reaped.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// What became of a started server.
enum Start {
    Listening,
    PortInUse,
}

impl Server {
    /// A server listening in `netns` (of node `node`), on the first free port of [`PORTS`].
    fn start(netns: &str, node: &str) -> Result<Server, String> {
        for port in PORTS {
            let fd = open_netns(netns).map_err(|e| format!("{node}: {e}"))?;
            let args = ["-s", "-1", "-p", &port.to_string()].map(String::from);
            let child = command_in_netns(fd, "iperf3", &args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot start iperf3 -s in {node}: {e}"))?;
            let mut server = Server { child, port };
            match server.wait_listening(node)? {
                Start::Listening => return Ok(server),
                Start::PortInUse => continue,
            }
        }
        Err(format!(
            "ports {}-{} are all in use in {node}",
            PORTS.start(),
            PORTS.end()
        ))
    }

    /// Polls the server's namespace's TCP tables (`/proc/PID/net/tcp*` show the
    /// namespace of PID) until it listens, or it ends.
    fn wait_listening(&mut self, node: &str) -> Result<Start, String> {
        let pid = self.child.id();
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = e.read_to_string(&mut stderr);
                }
                if stderr.contains("Address already in use") {
                    return Ok(Start::PortInUse);
                }
                return Err(format!("iperf3 -s in {node} ended: {}", one_line(&stderr)));
            }
            let listening = ["tcp6", "tcp"].iter().any(|t| {
                std::fs::read_to_string(format!("/proc/{pid}/net/{t}")).is_ok_and(|table| listens_on(&table, self.port))
            });
            if listening {
                return Ok(Start::Listening);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(format!(
            "iperf3 -s in {node} did not listen on port {} within {} s",
            self.port,
            LISTEN_TIMEOUT.as_secs()
        ))
    }
}

/// iperf3's stderr as one line.
fn one_line(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if lines.is_empty() {
        "(no message)".into()
    } else {
        lines.join("; ")
    }
}

/// The nodes of a test: namespace and name of each end, and the address the
/// client connects to.
pub struct Ends<'a> {
    pub src_netns: &'a str,
    pub src: &'a str,
    pub dst_netns: &'a str,
    pub dst: &'a str,
    pub dst_ip: &'a str,
}

/// Runs one test of `seconds` from `src` to `dst`; the server is gone on return.
pub fn measure(ends: &Ends, seconds: u32) -> Result<Rates, String> {
    let server = Server::start(ends.dst_netns, ends.dst)?;
    let fd = open_netns(ends.src_netns).map_err(|e| format!("{}: {e}", ends.src))?;
    let args = [
        "-c",
        ends.dst_ip,
        "-p",
        &server.port.to_string(),
        "-t",
        &seconds.to_string(),
        "-J",
        "--connect-timeout",
        CONNECT_TIMEOUT_MS,
    ]
    .map(String::from);
    let out = command_in_netns(fd, "iperf3", &args)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run iperf3 -c in {}: {e}", ends.src))?;
    drop(server);
    parse_report(&String::from_utf8_lossy(&out.stdout)).map_err(|e| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.trim().is_empty() {
            e
        } else {
            format!("{e} ({})", one_line(&stderr))
        }
    })
}
