//! The running router: inter-router links (one TCP connection each, AMQP 1.0 framed,
//! service streams multiplexed as link pairs), link-state flooding over a control link,
//! tcpListeners that accept only while their address is reachable, tcpConnectors, and
//! the HTTP listener with /healthz and /metrics. Threads and std::net only.
//!
//! On a link, a stream is opened by an `attach` (role sender, source and target = the
//! service address) followed by a `flow` granting credit for the reverse direction; the
//! peer answers with its own `attach` (role receiver, same name) and `flow`. Each side then
//! sends its direction as settled `transfer`s (one data section each) on its own handle,
//! consuming credit (counted in frames, granted additively by `flow`), and ends its
//! direction with `detach` (closed; with an error to abort the whole stream).
//! Handle 0 on each side is the control link "_topo" that carries router advertisements.
//! Frames honour the peer's max-frame-size (the listener's or connector's `maxFrameSize`,
//! skrouterd's 16 KiB by default); each side sends an empty frame at least every half of
//! the peer's idle time-out (`idleTimeoutSeconds`, 16 s by default) and drops a link
//! silent for its own.
//!
//! The pieces, one concern a file: `link` is one inter-router connection's sending
//! side and its stream registry; `inter_router` accepts and dials those connections,
//! handshakes them and serves the frames they bring; `stream` moves one stream's bytes
//! between a TCP socket and a link; `endpoints` is the TCP edge (tcpListeners,
//! tcpConnectors, where a stream goes); `http` serves /healthz and /metrics. This file
//! holds the router itself: its shared state, start and stop, and link-state flooding.

mod endpoints;
mod http;
mod inter_router;
mod link;
mod stream;

use crate::amqp::Performative;
use crate::config::{Config, Role};
use crate::routing::{Lsa, Table};
use crate::tls::Tls;
use link::Link;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{SystemTime, UNIX_EPOCH};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn resolve(host: &str, port: u16) -> io::Result<SocketAddr> {
    let h = if host.is_empty() { "0.0.0.0" } else { host };
    (h, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("cannot resolve {h}")))
}

/// Counters of one service address at this router's TCP edges.
#[derive(Default)]
pub struct AddrStats {
    pub streams_total: AtomicU64,
    pub streams_active: AtomicI64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

struct State {
    table: Table,
    links: HashMap<u64, Arc<Link>>,
    seq: u64,
    generation: u64,
}

struct Inner {
    cfg: Config,
    id: String,
    stop: AtomicBool,
    state: Mutex<State>,
    changed: Condvar,
    next_link: AtomicU64,
    listen_fds: Mutex<Vec<i32>>,
    bound: Mutex<BTreeMap<String, SocketAddr>>,
    stats: Mutex<BTreeMap<String, Arc<AddrStats>>>,
    local_addresses: Vec<String>,
}

/// A running router. Dropping it stops it.
pub struct Router {
    inner: Arc<Inner>,
}

/// A snapshot of a router's links and reachable addresses.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// (peer router id, cost, active streams) per link.
    pub links: Vec<(String, u32, usize)>,
    pub addresses: Vec<String>,
}

impl Router {
    /// Binds the listeners and starts every thread; errors if a listener cannot bind.
    pub fn start(cfg: Config) -> io::Result<Router> {
        let id = cfg.router.id.clone();
        let mut local_addresses: Vec<String> = cfg.tcp_connectors.iter().map(|c| c.address.clone()).collect();
        local_addresses.sort();
        local_addresses.dedup();
        let inner = Arc::new(Inner {
            id: id.clone(),
            stop: AtomicBool::new(false),
            state: Mutex::new(State {
                table: Table::new(&id),
                links: HashMap::new(),
                seq: 0,
                generation: 0,
            }),
            changed: Condvar::new(),
            next_link: AtomicU64::new(1),
            listen_fds: Mutex::new(Vec::new()),
            bound: Mutex::new(BTreeMap::new()),
            stats: Mutex::new(BTreeMap::new()),
            local_addresses,
            cfg,
        });
        // A link meant to be encrypted never runs in the clear: a profile that does not
        // load is an error naming the sslProfile and the attribute.
        let profile = |what: &str, name: &str, p: &str| {
            (inner.cfg.ssl_profiles.iter().find(|s| s.name == p)).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{what} '{name}': no sslProfile named '{p}'"),
                )
            })
        };
        let mut listener_tls = HashMap::new();
        for l in inner.cfg.listeners.iter().filter(|l| l.role == Role::InterRouter) {
            if let Some(p) = &l.ssl_profile {
                listener_tls.insert(l.name.clone(), Tls::server(profile("listener", &l.name, p)?)?);
            }
        }
        let mut connector_tls = HashMap::new();
        for c in inner.cfg.connectors.iter().filter(|c| c.role == Role::InterRouter) {
            if let Some(p) = &c.ssl_profile {
                connector_tls.insert(c.name.clone(), Tls::client(profile("connector", &c.name, p)?)?);
            }
        }
        let router = Router { inner: inner.clone() };
        for w in &inner.cfg.warnings {
            inner.log(&format!("warning: {w}"));
        }
        for l in inner.cfg.listeners.clone() {
            match (l.role, l.http) {
                (Role::InterRouter, _) => {
                    let sock = inner.bind(&l.name, &l.host, l.port)?;
                    let i = inner.clone();
                    let tls = listener_tls.remove(&l.name);
                    thread::spawn(move || i.inter_router_listener(sock, l, tls));
                }
                (Role::Normal, true) => {
                    let sock = inner.bind(&l.name, &l.host, l.port)?;
                    let i = inner.clone();
                    thread::spawn(move || i.http_listener(sock, l));
                }
                _ => inner.log(&format!(
                    "listener '{}' ({:?}) not served by the built-in router",
                    l.name, l.role
                )),
            }
        }
        inner.readvertise();
        for c in inner.cfg.connectors.clone() {
            if c.role != Role::InterRouter {
                inner.log(&format!(
                    "connector '{}' ({:?}) not served by the built-in router",
                    c.name, c.role
                ));
                continue;
            }
            let i = inner.clone();
            let tls = connector_tls.remove(&c.name);
            thread::spawn(move || i.connector(c, tls));
        }
        for t in inner.cfg.tcp_listeners.clone() {
            let i = inner.clone();
            thread::spawn(move || i.tcp_listener(t));
        }
        inner.log(&format!(
            "started: {} listener(s), {} connector(s), {} tcpListener(s), {} tcpConnector(s)",
            inner.cfg.listeners.len(),
            inner.cfg.connectors.len(),
            inner.cfg.tcp_listeners.len(),
            inner.cfg.tcp_connectors.len()
        ));
        Ok(router)
    }

    /// The address a listener (by name) is bound to: lets tests use port 0.
    pub fn bound(&self, name: &str) -> Option<SocketAddr> {
        lock(&self.inner.bound).get(name).copied()
    }

    pub fn snapshot(&self) -> Snapshot {
        let st = lock(&self.inner.state);
        let mut links: Vec<_> = st
            .links
            .values()
            .map(|l| (l.peer.clone(), l.cost, l.active_streams()))
            .collect();
        links.sort();
        Snapshot {
            links,
            addresses: st.table.reachable_addresses().into_iter().collect(),
        }
    }

    pub fn metrics(&self) -> String {
        self.inner.metrics()
    }

    /// Stops listening, drops every link; returns without waiting for stream threads.
    pub fn stop(&self) {
        if self.inner.stop.swap(true, Ordering::SeqCst) {
            return;
        }
        for fd in lock(&self.inner.listen_fds).drain(..) {
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
        let links: Vec<_> = lock(&self.inner.state).links.values().cloned().collect();
        for l in links {
            let _ = l.send(Performative::Close { error: None });
            l.dead.store(true, Ordering::SeqCst);
            let _ = l.sock.shutdown(Shutdown::Both);
        }
        self.inner.changed.notify_all();
        self.inner.log("stopped");
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.stop();
    }
}
impl Inner {
    fn log(&self, msg: &str) {
        let t = now_micros();
        eprintln!("{}.{:03} router {}: {msg}", t / 1_000_000, (t / 1000) % 1000, self.id);
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn bind(&self, name: &str, host: &str, port: u16) -> io::Result<TcpListener> {
        let addr = resolve(host, port)?;
        let sock = TcpListener::bind(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("listener '{name}': cannot bind {addr}: {e}")))?;
        lock(&self.listen_fds).push(sock.as_raw_fd());
        lock(&self.bound).insert(name.to_string(), sock.local_addr()?);
        Ok(sock)
    }

    fn stats(&self, address: &str) -> Arc<AddrStats> {
        lock(&self.stats).entry(address.to_string()).or_default().clone()
    }

    /// Advertises this router's links and addresses to every router.
    fn readvertise(&self) {
        let mut st = lock(&self.state);
        let mut links = BTreeMap::new();
        for l in st.links.values() {
            let c = links.entry(l.peer.clone()).or_insert(l.cost);
            *c = (*c).min(l.cost);
        }
        st.seq = now_micros().max(st.seq + 1);
        let lsa = Lsa {
            id: self.id.clone(),
            seq: st.seq,
            links,
            addresses: self.local_addresses.iter().cloned().collect(),
        };
        st.table.update(lsa.clone());
        st.generation += 1;
        let body = serde_json::to_vec(&lsa).unwrap_or_default();
        for l in st.links.values() {
            let _ = l.send_message(0, &body);
        }
        drop(st);
        self.changed.notify_all();
    }

    fn on_lsa(&self, from: u64, lsa: Lsa) {
        let mut st = lock(&self.state);
        if lsa.id == self.id {
            if lsa.seq >= st.seq {
                // An advertisement of a former life of this router: supersede it.
                st.seq = lsa.seq;
                drop(st);
                self.readvertise();
            }
            return;
        }
        if st.table.update(lsa.clone()) {
            st.generation += 1;
            let body = serde_json::to_vec(&lsa).unwrap_or_default();
            for l in st.links.values().filter(|l| l.id != from) {
                let _ = l.send_message(0, &body);
            }
            drop(st);
            self.changed.notify_all();
        }
    }
}
