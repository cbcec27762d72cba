//! The routers under test: a pair of `knetsim router` processes linked as a Skupper site
//! pair (stopped by PID when dropped), their readiness, and what is read of them from
//! /proc (memory, context switches, sampled peaks).

use crate::READY_LIMIT;
use knetsim_bench::procfs::status_kb;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// A port below the ephemeral range, free right now.
fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = 21000 + (std::process::id() % 400) * 20;
    loop {
        let p = (base + NEXT.fetch_add(1, Ordering::Relaxed) % 8000) as u16;
        if TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

/// A router process, stopped by PID when dropped.
pub(super) struct Proc {
    child: Child,
    pub(super) log: PathBuf,
}

impl Proc {
    pub(super) fn spawn(exe: &Path, dir: &Path, name: &str, config: &str) -> Result<Proc, String> {
        let cfg = dir.join(format!("{name}.json"));
        std::fs::write(&cfg, config).map_err(|e| format!("write {}: {e}", cfg.display()))?;
        let log = dir.join(format!("{name}.log"));
        let err = std::fs::File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let child = Command::new(exe)
            .arg("router")
            .arg("-c")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .map_err(|e| format!("spawn {} router: {e}", exe.display()))?;
        Ok(Proc { child, log })
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(super) fn mem(&self) -> Mem {
        Mem::of(self.pid())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on the PID of our own, not yet reaped, child.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(2) {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                thread::sleep(Duration::from_millis(10));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Router a (tcpListeners, connector) and router b (inter-router listener, tcpConnectors).
pub(super) struct Pair {
    pub(super) a: Proc,
    pub(super) b: Proc,
    spawned: Instant,
    pub(super) sink_port: u16,
    pub(super) echo_port: u16,
    a_http: u16,
    b_http: u16,
}

impl Pair {
    pub(super) fn start(exe: &Path, dir: &Path, sink: SocketAddr, echo: SocketAddr) -> Result<Pair, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let (link, a_http, b_http, sink_port, echo_port) =
            (free_port(), free_port(), free_port(), free_port(), free_port());
        let http = |port: u16| {
            format!(
                r#"["listener", {{"name": "@http", "host": "127.0.0.1", "port": {port}, "http": true, "healthz": true, "metrics": true}}]"#
            )
        };
        let b_cfg = format!(
            r#"[
  ["router", {{"id": "b", "mode": "interior"}}],
  ["listener", {{"name": "interior-listener", "role": "inter-router", "host": "127.0.0.1", "port": {link}}}],
  {},
  ["tcpConnector", {{"name": "sink", "host": "127.0.0.1", "port": "{}", "address": "sink"}}],
  ["tcpConnector", {{"name": "echo", "host": "127.0.0.1", "port": "{}", "address": "echo"}}]
]"#,
            http(b_http),
            sink.port(),
            echo.port()
        );
        let a_cfg = format!(
            r#"[
  ["router", {{"id": "a", "mode": "interior"}}],
  {},
  ["connector", {{"name": "to-b", "role": "inter-router", "host": "127.0.0.1", "port": "{link}", "cost": 1}}],
  ["tcpListener", {{"name": "sink", "host": "127.0.0.1", "port": "{sink_port}", "address": "sink"}}],
  ["tcpListener", {{"name": "echo", "host": "127.0.0.1", "port": "{echo_port}", "address": "echo"}}]
]"#,
            http(a_http)
        );
        // Both spawned back to back, as a site pair coming up together.
        let spawned = Instant::now();
        let b = Proc::spawn(exe, dir, "b", &b_cfg)?;
        let a = Proc::spawn(exe, dir, "a", &a_cfg)?;
        Ok(Pair {
            a,
            b,
            spawned,
            sink_port,
            echo_port,
            a_http,
            b_http,
        })
    }

    /// Polls (every 1 ms) until each readiness signal has been seen; times from spawn.
    pub(super) fn wait_ready(&self) -> Result<Readiness, String> {
        let mut r: [Option<Duration>; 4] = [None; 4];
        while r.iter().any(Option::is_none) {
            let t = self.spawned.elapsed();
            if t > READY_LIMIT {
                return Err(format!("routers not ready within {READY_LIMIT:?}: {r:?}"));
            }
            if r[0].is_none() && http_get(self.b_http, "/healthz").is_some_and(|s| s.starts_with("HTTP/1.1 200")) {
                r[0] = Some(self.spawned.elapsed());
            }
            if r[1].is_none() && http_get(self.a_http, "/healthz").is_some_and(|s| s.starts_with("HTTP/1.1 200")) {
                r[1] = Some(self.spawned.elapsed());
            }
            if r[2].is_none()
                && http_get(self.a_http, "/metrics").is_some_and(|s| s.contains("skrouter_links{router=\"a\"} 1"))
            {
                r[2] = Some(self.spawned.elapsed());
            }
            if r[3].is_none() && TcpStream::connect(("127.0.0.1", self.sink_port)).is_ok() {
                r[3] = Some(self.spawned.elapsed());
            }
            thread::sleep(Duration::from_millis(1));
        }
        let [b_health, a_health, link, accepts] = r.map(Option::unwrap);
        Ok(Readiness {
            b_health,
            a_health,
            link,
            accepts,
        })
    }
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_millis(100)).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut s = String::new();
    c.read_to_string(&mut s).ok()?;
    Some(s)
}

#[derive(Clone, Copy)]
pub(super) struct Readiness {
    pub(super) b_health: Duration,
    pub(super) a_health: Duration,
    pub(super) link: Duration,
    pub(super) accepts: Duration,
}

/// VmRSS and VmHWM of a process, KiB.
#[derive(Clone, Copy, Default)]
pub(super) struct Mem {
    pub(super) rss_kb: u64,
    pub(super) hwm_kb: u64,
}

impl Mem {
    pub(super) fn of(pid: u32) -> Mem {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kb = |key: &str| status_kb(&status, key).unwrap_or(0);
        Mem {
            rss_kb: kb("VmRSS"),
            hwm_kb: kb("VmHWM"),
        }
    }
}

/// Context switches (voluntary and not) of every thread of a process so far.
pub(super) fn ctxt_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    let mut n = 0;
    for t in tasks.flatten() {
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        for l in status.lines() {
            if let Some(v) = l
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                n += v.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    n
}

/// Samples the VmRSS of some processes every 20 ms, keeping each one's peak.
pub(super) struct Sampler {
    pub(super) stop: Arc<AtomicBool>,
    handle: thread::JoinHandle<Vec<u64>>,
}

impl Sampler {
    pub(super) fn start(pids: &[u32]) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, pids) = (stop.clone(), pids.to_vec());
        let handle = thread::spawn(move || {
            let mut peak = vec![0u64; pids.len()];
            while !s.load(Ordering::SeqCst) {
                for (p, pid) in peak.iter_mut().zip(&pids) {
                    *p = (*p).max(Mem::of(*pid).rss_kb);
                }
                thread::sleep(Duration::from_millis(20));
            }
            peak
        });
        Sampler { stop, handle }
    }

    pub(super) fn stop(self) -> Vec<u64> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().unwrap_or_default()
    }
}
