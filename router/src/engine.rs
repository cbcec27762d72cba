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

use crate::amqp::{self, Frame, Performative, Value};
use crate::config::{Config, Listener, Role, TcpEndpoint};
use crate::routing::{Choice, Lsa, Table};
use crate::tls::{LinkSock, Tls};
use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Credit (in transfer frames) a stream direction starts with, and the batch it is re-granted in:
/// 2 MiB in flight per direction with full frames.
const WINDOW: u32 = 32;
const GRANT: u32 = 8;
/// The max-frame-size this router offers on a link (the peer's may be smaller), and the
/// size of one read from a stream's TCP connection: bigger frames mean fewer syscalls,
/// allocations and thread wake-ups per byte (router-bench: 16 KiB frames gave ~20% of
/// direct single-stream throughput).
const FRAME_SIZE: u32 = 64 * 1024;
/// The largest data frame a link's reader writes straight to a stream's socket.
const DIRECT_MAX: usize = 16 * 1024;
const CONTROL_ADDRESS: &str = "_topo";
const HEARTBEAT: Duration = Duration::from_millis(1000);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_millis(200);
/// A dial started while the path is down must not outlast the kernel's first SYN
/// retransmit (1 s), or a restored path is only noticed after that plus the backoff.
const DIAL_TIMEOUT: Duration = Duration::from_millis(300);
const COST_PROPERTY: &str = "knetsim.inter-router-cost";

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

/// What a stream end receives from its peer.
enum In {
    Data(Vec<u8>),
    End,
    Abort,
}

#[derive(Default)]
struct Credit {
    m: Mutex<(u32, bool)>,
    cv: Condvar,
}

impl Credit {
    fn add(&self, n: u32) {
        let mut g = lock(&self.m);
        g.0 = g.0.saturating_add(n);
        self.cv.notify_all();
    }

    fn close(&self) {
        lock(&self.m).1 = true;
        self.cv.notify_all();
    }

    /// Takes one frame of credit, waiting for it; false once closed.
    fn take(&self) -> bool {
        let mut g = lock(&self.m);
        loop {
            if g.1 {
                return false;
            }
            if g.0 > 0 {
                g.0 -= 1;
                return true;
            }
            g = self
                .cv
                .wait_timeout(g, Duration::from_millis(500))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// This router's end of one stream on one link.
struct StreamEnd {
    name: String,
    my_handle: u32,
    peer_handle: AtomicU32,
    in_tx: Mutex<Option<Sender<In>>>,
    credit: Credit,
    my_detached: AtomicBool,
    peer_detached: AtomicBool,
    /// The stream's TCP socket when its data from the link goes to one: the link's reader
    /// writes there itself, never blocking, while no data waits in the channel. This
    /// spares a thread wake-up per frame (router-bench: ~2 context switches per round trip).
    direct: Mutex<Option<(TcpStream, Arc<AddrStats>)>>,
    /// Data items in the channel not yet written by the stream's pump: while any are, the
    /// reader queues too, so bytes never overtake each other.
    pending: AtomicUsize,
    /// Frames consumed since the last credit grant.
    consumed: AtomicU32,
}

impl StreamEnd {
    /// Counts one frame consumed; true when the peer is due more credit.
    fn consume(&self) -> bool {
        let prev = self
            .consumed
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
                Some(if c + 1 >= GRANT { 0 } else { c + 1 })
            })
            .unwrap_or(0);
        prev + 1 >= GRANT
    }

    fn grant(&self, link: &Link) {
        let _ = link.send(Performative::Flow {
            handle: Some(self.my_handle),
            delivery_count: 0,
            link_credit: GRANT,
        });
    }

    /// Data from the link (called by the link's reader only): written straight to the
    /// stream's socket when nothing is queued and the socket takes it without blocking;
    /// otherwise (what is left of it) queued for the stream's pump.
    fn deliver_data(&self, link: &Link, data: Vec<u8>) {
        let mut off = 0;
        // Bulk frames are left to the pump, so that the reader goes on reading meanwhile.
        if data.len() <= DIRECT_MAX && self.pending.load(Ordering::SeqCst) == 0 {
            if let Some((s, stats)) = lock(&self.direct).as_ref() {
                while off < data.len() {
                    let rest = &data[off..];
                    // SAFETY: a valid open socket and a live buffer of rest.len() bytes.
                    let n = unsafe {
                        libc::send(
                            s.as_raw_fd(),
                            rest.as_ptr().cast(),
                            rest.len(),
                            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                        )
                    };
                    if n > 0 {
                        stats.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
                        off += n as usize;
                    } else if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                        continue;
                    } else {
                        break;
                    }
                }
                if off == data.len() {
                    if self.consume() {
                        self.grant(link);
                    }
                    return;
                }
            }
        }
        let data = if off == 0 { data } else { data[off..].to_vec() };
        self.pending.fetch_add(1, Ordering::SeqCst);
        self.deliver(In::Data(data));
    }

    fn deliver(&self, m: In) {
        let last = !matches!(m, In::Data(_));
        let mut g = lock(&self.in_tx);
        if let Some(tx) = g.as_ref() {
            let _ = tx.send(m);
        }
        if last {
            *g = None;
        }
    }
}

#[derive(Default)]
struct Streams {
    by_peer: HashMap<u32, Arc<StreamEnd>>,
    pending: HashMap<String, Arc<StreamEnd>>,
}

pub(crate) struct Link {
    id: u64,
    pub(crate) peer: String,
    pub(crate) cost: u32,
    label: String,
    tx: Sender<Vec<u8>>,
    /// The link's writing side, shared by the writer thread and stream pumps writing directly.
    out: Mutex<LinkSock>,
    /// Frames handed to the writer thread and not yet written: while any are, every
    /// frame goes through the queue, so frames never overtake each other.
    queued: AtomicUsize,
    sock: LinkSock,
    dead: AtomicBool,
    next_handle: AtomicU32,
    next_delivery: AtomicU32,
    streams: Mutex<Streams>,
    max_payload: usize,
    streams_total: AtomicU64,
}

impl Link {
    fn send(&self, p: Performative) -> io::Result<()> {
        self.send_frame(Frame::new(0, p))
    }

    fn send_frame(&self, f: Frame) -> io::Result<()> {
        if self.dead.load(Ordering::Relaxed) {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "link down"));
        }
        self.queued.fetch_add(1, Ordering::SeqCst);
        self.tx.send(f.encode()).map_err(|_| {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            io::Error::new(io::ErrorKind::BrokenPipe, "link down")
        })
    }

    /// A stream's data frame, sent by its pump thread: written at once when the link is
    /// idle (no queued frame, no other writer), which spares a wake-up of the writer
    /// thread per frame (router-bench: ~130 us added per 64-byte round trip through two
    /// routers with every frame queued); queued otherwise. Only pump threads call this,
    /// never a link's reader, so a reader never blocks on a full socket.
    fn send_data_frame(&self, f: Frame) -> io::Result<()> {
        if self.dead.load(Ordering::Relaxed) {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "link down"));
        }
        if let Ok(mut out) = self.out.try_lock() {
            if self.queued.load(Ordering::SeqCst) == 0 {
                return out.write_all(&f.encode()).inspect_err(|_| {
                    self.dead.store(true, Ordering::SeqCst);
                    let _ = out.shutdown(Shutdown::Both);
                });
            }
        }
        self.send_frame(f)
    }

    fn send_message(&self, handle: u32, data: &[u8]) -> io::Result<()> {
        let delivery_id = self.next_delivery.fetch_add(1, Ordering::Relaxed);
        let mut f = Frame::new(
            0,
            Performative::Transfer {
                handle,
                delivery_id,
                settled: true,
            },
        );
        f.payload = amqp::data_section(data);
        if handle == 0 {
            self.send_frame(f)
        } else {
            self.send_data_frame(f)
        }
    }

    fn new_end(&self, name: String, my_handle: u32, peer_handle: u32) -> (Arc<StreamEnd>, Receiver<In>) {
        let (tx, rx) = mpsc::channel();
        let end = Arc::new(StreamEnd {
            name,
            my_handle,
            peer_handle: AtomicU32::new(peer_handle),
            in_tx: Mutex::new(Some(tx)),
            credit: Credit::default(),
            my_detached: AtomicBool::new(false),
            peer_detached: AtomicBool::new(false),
            direct: Mutex::new(None),
            pending: AtomicUsize::new(0),
            consumed: AtomicU32::new(0),
        });
        (end, rx)
    }

    /// Opens a stream to `address` on this link.
    fn open_stream(&self, me: &str, address: &str) -> io::Result<(Arc<StreamEnd>, Receiver<In>)> {
        let handle = self.next_handle.fetch_add(1, Ordering::Relaxed);
        let name = format!("{me}/{}/{handle}", self.id);
        let (end, rx) = self.new_end(name.clone(), handle, u32::MAX);
        lock(&self.streams).pending.insert(name.clone(), end.clone());
        self.streams_total.fetch_add(1, Ordering::Relaxed);
        let addr = Some(address.to_string());
        self.send(Performative::Attach {
            name,
            handle,
            role_receiver: false,
            source: addr.clone(),
            target: addr,
        })?;
        self.send(Performative::Flow {
            handle: Some(handle),
            delivery_count: 0,
            link_credit: WINDOW,
        })?;
        Ok((end, rx))
    }

    /// Answers a stream the peer opened; with an error, refuses it at once.
    fn answer_stream(&self, end: &StreamEnd, address: &str, error: Option<String>) -> io::Result<()> {
        let addr = Some(address.to_string());
        self.send(Performative::Attach {
            name: end.name.clone(),
            handle: end.my_handle,
            role_receiver: true,
            source: addr.clone(),
            target: addr,
        })?;
        match error {
            None => self.send(Performative::Flow {
                handle: Some(end.my_handle),
                delivery_count: 0,
                link_credit: WINDOW,
            }),
            Some(e) => {
                self.detach(end, Some(e));
                Ok(())
            }
        }
    }

    fn detach(&self, end: &StreamEnd, error: Option<String>) {
        let first = !end.my_detached.swap(true, Ordering::SeqCst);
        if first || error.is_some() {
            let _ = self.send(Performative::Detach {
                handle: end.my_handle,
                closed: true,
                error,
            });
        }
        self.maybe_remove(end);
    }

    fn maybe_remove(&self, end: &StreamEnd) {
        if end.my_detached.load(Ordering::SeqCst) && end.peer_detached.load(Ordering::SeqCst) {
            let ph = end.peer_handle.load(Ordering::SeqCst);
            let mut s = lock(&self.streams);
            if s.by_peer.get(&ph).is_some_and(|e| e.my_handle == end.my_handle) {
                s.by_peer.remove(&ph);
            }
        }
    }

    fn active_streams(&self) -> usize {
        let s = lock(&self.streams);
        s.by_peer.len() + s.pending.len()
    }
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
            thread::spawn(move || i.connector(c.name, c.host, c.port, c.cost, tls));
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

/// One direction of a stream: where bytes come from.
enum Source {
    Tcp(TcpStream, Arc<AddrStats>),
    Link(Arc<Link>, Arc<StreamEnd>, Receiver<In>),
}

/// One direction of a stream: where bytes go.
enum Sink {
    Tcp(TcpStream, Arc<AddrStats>),
    Link(Arc<Link>, Arc<StreamEnd>),
}

enum Got {
    Data(Vec<u8>),
    End,
    Failed,
}

impl Source {
    fn next(&mut self) -> Got {
        match self {
            Source::Tcp(s, stats) => {
                thread_local!(static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; FRAME_SIZE as usize]));
                // One reused buffer per thread: a small read allocates only what it got.
                let got = BUF.with(|b| {
                    let mut b = b.borrow_mut();
                    s.read(&mut b).map(|n| b[..n].to_vec())
                });
                match got {
                    Ok(buf) if buf.is_empty() => Got::End,
                    Ok(buf) => {
                        stats.bytes_in.fetch_add(buf.len() as u64, Ordering::Relaxed);
                        Got::Data(buf)
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => self.next(),
                    Err(_) => Got::Failed,
                }
            }
            Source::Link(link, end, rx) => match rx.recv() {
                Ok(In::Data(d)) => {
                    if end.consume() {
                        end.grant(link);
                    }
                    Got::Data(d)
                }
                Ok(In::End) => {
                    lock(&end.direct).take();
                    Got::End
                }
                Ok(In::Abort) | Err(_) => {
                    lock(&end.direct).take();
                    Got::Failed
                }
            },
        }
    }

    /// The data last returned by `next` is written out.
    fn written(&self) {
        if let Source::Link(_, end, _) = self {
            end.pending.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn abort(&self) {
        match self {
            Source::Tcp(s, _) => {
                let _ = s.shutdown(Shutdown::Both);
            }
            Source::Link(link, end, _) => {
                lock(&end.direct).take();
                link.detach(end, Some("stream aborted".into()))
            }
        }
    }
}

impl Sink {
    fn send(&mut self, data: &[u8]) -> bool {
        match self {
            Sink::Tcp(s, stats) => {
                stats.bytes_out.fetch_add(data.len() as u64, Ordering::Relaxed);
                s.write_all(data).is_ok()
            }
            Sink::Link(link, end) => {
                for chunk in data.chunks(link.max_payload) {
                    if !end.credit.take() || link.send_message(end.my_handle, chunk).is_err() {
                        return false;
                    }
                }
                true
            }
        }
    }

    fn finish(&self) {
        match self {
            Sink::Tcp(s, _) => {
                let _ = s.shutdown(Shutdown::Write);
            }
            Sink::Link(link, end) => link.detach(end, None),
        }
    }

    fn abort(&self) {
        match self {
            Sink::Tcp(s, _) => {
                let _ = s.shutdown(Shutdown::Both);
            }
            Sink::Link(link, end) => link.detach(end, Some("stream aborted".into())),
        }
    }
}

fn pump(mut src: Source, mut dst: Sink) {
    loop {
        match src.next() {
            Got::Data(d) => {
                if !dst.send(&d) {
                    src.abort();
                    dst.abort();
                    return;
                }
                src.written();
            }
            Got::End => {
                dst.finish();
                return;
            }
            Got::Failed => {
                dst.abort();
                return;
            }
        }
    }
}

/// Runs both directions of a stream, one on a new thread; returns when both are done.
fn splice(a: (Source, Sink), b: (Source, Sink), stats: Arc<AddrStats>) {
    stats.streams_total.fetch_add(1, Ordering::Relaxed);
    stats.streams_active.fetch_add(1, Ordering::Relaxed);
    let t = thread::spawn(move || pump(a.0, a.1));
    pump(b.0, b.1);
    let _ = t.join();
    stats.streams_active.fetch_sub(1, Ordering::Relaxed);
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

    fn inter_router_listener(self: Arc<Self>, sock: TcpListener, l: Listener, tls: Option<Tls>) {
        self.log(&format!(
            "listener '{}' (inter-router{}) on {}",
            l.name,
            if tls.is_some() { ", TLS" } else { "" },
            sock.local_addr().map(|a| a.to_string()).unwrap_or_default()
        ));
        loop {
            match sock.accept() {
                Ok((s, from)) => {
                    let i = self.clone();
                    let (name, cost, tls) = (l.name.clone(), l.cost, tls.clone());
                    thread::spawn(move || {
                        let s = match &tls {
                            Some(t) => t.wrap(s, ""),
                            None => Ok(LinkSock::Tcp(s)),
                        };
                        let r = s.and_then(|s| i.clone().run_link(s, &format!("{name} from {from}"), cost, false));
                        if let Err(e) = r {
                            i.log(&format!("link from {from}: {e}"));
                        }
                    });
                }
                Err(_) if self.stopped() => return,
                Err(_) => thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    fn connector(self: Arc<Self>, name: String, host: String, port: u16, cost: u32, tls: Option<Tls>) {
        let mut backoff = BACKOFF_MIN;
        let mut last_err = String::new();
        while !self.stopped() {
            let attempt = resolve(&host, port)
                .and_then(|a| TcpStream::connect_timeout(&a, DIAL_TIMEOUT))
                .and_then(|s| {
                    s.set_nodelay(true)?;
                    match &tls {
                        Some(t) => t.wrap(s, &host),
                        None => Ok(LinkSock::Tcp(s)),
                    }
                });
            let result = match attempt {
                Ok(s) => {
                    backoff = BACKOFF_MIN;
                    self.clone().run_link(s, &format!("connector {name}"), cost, true)
                }
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                let m = e.to_string();
                if m != last_err {
                    self.log(&format!("connector '{name}' to {host}:{port}: {m}; retrying"));
                    last_err = m;
                }
            } else {
                last_err.clear();
            }
            let until = Instant::now() + backoff;
            while Instant::now() < until && !self.stopped() {
                thread::sleep(Duration::from_millis(20));
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Handshakes a new inter-router connection and serves it until it drops.
    fn run_link(self: Arc<Self>, mut sock: LinkSock, label: &str, my_cost: u32, initiator: bool) -> io::Result<()> {
        let dead_after = Duration::from_secs(3);
        if let LinkSock::Tcp(s) = &sock {
            s.set_nodelay(true)?;
        }
        sock.set_read_timeout(Some(dead_after))?;
        let mut hello = amqp::PROTOCOL_HEADER.to_vec();
        let props = vec![(Value::Symbol(COST_PROPERTY.into()), Value::Uint(my_cost))];
        hello.extend(
            Frame::new(
                0,
                Performative::Open {
                    container_id: self.id.clone(),
                    max_frame_size: FRAME_SIZE,
                    idle_time_out_ms: dead_after.as_millis() as u32,
                    properties: props,
                },
            )
            .encode(),
        );
        let begin = Performative::Begin {
            remote_channel: if initiator { None } else { Some(0) },
            next_outgoing_id: 0,
            incoming_window: u32::MAX,
            outgoing_window: u32::MAX,
        };
        hello.extend(Frame::new(0, begin).encode());
        sock.write_all(&hello)?;
        let mut reader = io::BufReader::with_capacity(64 * 1024, sock.try_clone()?);
        let mut header = [0u8; 8];
        reader.read_exact(&mut header)?;
        if header != amqp::PROTOCOL_HEADER {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("not AMQP 1.0: header {header:02x?}"),
            ));
        }
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("expected {what}"));
        let (peer, peer_cost, peer_max) = match amqp::read_frame(&mut reader)?.and_then(|f| f.body) {
            Some(Performative::Open {
                container_id,
                properties,
                max_frame_size,
                ..
            }) => {
                let cost = properties
                    .iter()
                    .find(|(k, _)| k.as_str() == Some(COST_PROPERTY))
                    .and_then(|(_, v)| v.as_u64())
                    .unwrap_or(1) as u32;
                (container_id, cost, max_frame_size)
            }
            _ => return Err(bad("open")),
        };
        if peer == self.id {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "peer has this router's own id",
            ));
        }
        match amqp::read_frame(&mut reader)?.and_then(|f| f.body) {
            Some(Performative::Begin { .. }) => {}
            _ => return Err(bad("begin")),
        }
        let (tx, rx) = mpsc::channel();
        let link = Arc::new(Link {
            id: self.next_link.fetch_add(1, Ordering::Relaxed),
            peer: peer.clone(),
            cost: my_cost.max(peer_cost).max(1),
            label: label.to_string(),
            tx,
            out: Mutex::new(sock.try_clone()?),
            queued: AtomicUsize::new(0),
            sock: sock.try_clone()?,
            dead: AtomicBool::new(false),
            next_handle: AtomicU32::new(1),
            next_delivery: AtomicU32::new(0),
            streams: Mutex::new(Streams::default()),
            max_payload: (peer_max.clamp(512, 1 << 20) as usize).min(FRAME_SIZE as usize) - 64,
            streams_total: AtomicU64::new(0),
        });
        let wlink = link.clone();
        thread::spawn(move || writer(rx, wlink));
        let ctl = Some(CONTROL_ADDRESS.to_string());
        link.send(Performative::Attach {
            name: format!("{}/{}/control", self.id, link.id),
            handle: 0,
            role_receiver: false,
            source: ctl.clone(),
            target: ctl,
        })?;
        {
            let mut st = lock(&self.state);
            if self.stopped() {
                return Ok(());
            }
            for lsa in st.table.all() {
                let _ = link.send_message(0, &serde_json::to_vec(lsa).unwrap_or_default());
            }
            st.links.insert(link.id, link.clone());
        }
        self.log(&format!("link up to router '{peer}' (cost {}) via {label}", link.cost));
        self.readvertise();
        let result = self.read_link(&link, &mut reader);
        link.dead.store(true, Ordering::SeqCst);
        let _ = sock.shutdown(Shutdown::Both);
        lock(&self.state).links.remove(&link.id);
        let ends: Vec<_> = {
            let mut guard = lock(&link.streams);
            let s = &mut *guard;
            s.pending
                .drain()
                .map(|(_, e)| e)
                .chain(s.by_peer.drain().map(|(_, e)| e))
                .collect()
        };
        for e in ends {
            e.deliver(In::Abort);
            e.credit.close();
        }
        self.log(&format!(
            "link down to router '{peer}' via {label}: {}",
            match &result {
                Ok(()) => "closed".to_string(),
                Err(e) => e.to_string(),
            }
        ));
        if !self.stopped() {
            self.readvertise();
        }
        Ok(())
    }

    fn read_link(self: &Arc<Self>, link: &Arc<Link>, reader: &mut impl Read) -> io::Result<()> {
        loop {
            let Some(frame) = amqp::read_frame(reader)? else {
                return Ok(());
            };
            if self.stopped() {
                return Ok(());
            }
            let Some(body) = frame.body else { continue };
            match body {
                Performative::Attach {
                    name,
                    handle,
                    role_receiver: false,
                    target,
                    source,
                } => {
                    if handle == 0 {
                        continue;
                    }
                    let address = target.or(source).unwrap_or_default();
                    let my_handle = link.next_handle.fetch_add(1, Ordering::Relaxed);
                    let (end, rx) = link.new_end(name, my_handle, handle);
                    lock(&link.streams).by_peer.insert(handle, end.clone());
                    link.streams_total.fetch_add(1, Ordering::Relaxed);
                    let (i, l) = (self.clone(), link.clone());
                    thread::spawn(move || i.egress(l, end, rx, address));
                }
                Performative::Attach {
                    name,
                    handle,
                    role_receiver: true,
                    ..
                } => {
                    let mut s = lock(&link.streams);
                    if let Some(end) = s.pending.remove(&name) {
                        end.peer_handle.store(handle, Ordering::SeqCst);
                        s.by_peer.insert(handle, end);
                    }
                }
                Performative::Flow {
                    handle: Some(h),
                    link_credit,
                    ..
                } => {
                    if let Some(end) = lock(&link.streams).by_peer.get(&h) {
                        end.credit.add(link_credit);
                    }
                }
                Performative::Transfer { handle: 0, .. } => {
                    let data = amqp::message_data(&frame.payload)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                    match serde_json::from_slice::<Lsa>(&data) {
                        Ok(lsa) => self.on_lsa(link.id, lsa),
                        Err(e) => self.log(&format!("bad router advertisement from '{}': {e}", link.peer)),
                    }
                }
                Performative::Transfer { handle, .. } => {
                    let data = amqp::message_data(&frame.payload)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                    let end = lock(&link.streams).by_peer.get(&handle).cloned();
                    if let Some(end) = end {
                        end.deliver_data(link, data);
                    }
                }
                Performative::Detach { handle, error, .. } => {
                    let end = lock(&link.streams).by_peer.get(&handle).cloned();
                    if let Some(end) = end {
                        end.peer_detached.store(true, Ordering::SeqCst);
                        if error.is_some() {
                            end.deliver(In::Abort);
                            end.credit.close();
                            // Nothing more goes to the peer on an aborted stream.
                            end.my_detached.store(true, Ordering::SeqCst);
                        } else {
                            end.deliver(In::End);
                        }
                        link.maybe_remove(&end);
                    }
                }
                Performative::Close { .. } => return Ok(()),
                _ => {}
            }
        }
    }

    fn link_to(&self, router: &str) -> Option<Arc<Link>> {
        let st = lock(&self.state);
        st.links
            .values()
            .filter(|l| l.peer == router && !l.dead.load(Ordering::SeqCst))
            .min_by_key(|l| l.cost)
            .cloned()
    }

    fn local_connectors(&self, address: &str) -> Vec<TcpEndpoint> {
        self.cfg
            .tcp_connectors
            .iter()
            .filter(|c| c.address == address)
            .cloned()
            .collect()
    }

    fn choose(&self, address: &str) -> Option<Choice> {
        let n = self.local_connectors(address).len();
        lock(&self.state).table.choose(address, n)
    }

    fn connect_local(&self, address: &str, i: usize) -> io::Result<TcpStream> {
        let c = &self.local_connectors(address)[i];
        let s = TcpStream::connect_timeout(&resolve(&c.host, c.port)?, Duration::from_secs(2))?;
        s.set_nodelay(true)?;
        Ok(s)
    }

    /// A stream arriving on a link: deliver it to a local tcpConnector or forward it.
    fn egress(self: Arc<Self>, link: Arc<Link>, end: Arc<StreamEnd>, rx: Receiver<In>, address: String) {
        let stats = self.stats(&address);
        let refuse = |why: String| {
            let _ = link.answer_stream(&end, &address, Some(why));
        };
        match self.choose(&address) {
            Some(Choice::Local(i)) => match self.connect_local(&address, i) {
                Ok(s) => {
                    let Ok(s2) = s.try_clone() else {
                        return refuse("socket error".into());
                    };
                    *lock(&end.direct) = s.try_clone().ok().map(|c| (c, stats.clone()));
                    if link.answer_stream(&end, &address, None).is_err() {
                        return;
                    }
                    splice(
                        (Source::Link(link.clone(), end.clone(), rx), Sink::Tcp(s, stats.clone())),
                        (Source::Tcp(s2, stats.clone()), Sink::Link(link, end)),
                        stats,
                    );
                }
                Err(e) => {
                    self.log(&format!("tcpConnector for '{address}': {e}"));
                    refuse(format!("connection to '{address}' failed: {e}"));
                }
            },
            Some(Choice::Remote { next_hop, .. }) => {
                let Some(out) = self.link_to(&next_hop).filter(|l| l.id != link.id) else {
                    return refuse(format!("no route to '{address}'"));
                };
                let Ok((end2, rx2)) = out.open_stream(&self.id, &address) else {
                    return refuse(format!("link to '{next_hop}' down"));
                };
                if link.answer_stream(&end, &address, None).is_err() {
                    out.detach(&end2, Some("upstream gone".into()));
                    return;
                }
                splice(
                    (
                        Source::Link(link.clone(), end.clone(), rx),
                        Sink::Link(out.clone(), end2.clone()),
                    ),
                    (Source::Link(out, end2, rx2), Sink::Link(link, end)),
                    stats,
                );
            }
            None => refuse(format!("no route to '{address}'")),
        }
    }

    /// A client connection accepted by a tcpListener.
    fn ingress(self: Arc<Self>, client: TcpStream, address: String) {
        let _ = client.set_nodelay(true);
        let stats = self.stats(&address);
        let Ok(c2) = client.try_clone() else { return };
        match self.choose(&address) {
            Some(Choice::Local(i)) => match self.connect_local(&address, i) {
                Ok(s) => {
                    let Ok(s2) = s.try_clone() else { return };
                    splice(
                        (Source::Tcp(client, stats.clone()), Sink::Tcp(s, stats.clone())),
                        (Source::Tcp(s2, stats.clone()), Sink::Tcp(c2, stats.clone())),
                        stats,
                    );
                }
                Err(e) => self.log(&format!("tcpConnector for '{address}': {e}")),
            },
            Some(Choice::Remote { next_hop, .. }) => {
                let opened = self
                    .link_to(&next_hop)
                    .map(|l| (l.clone(), l.open_stream(&self.id, &address)));
                let Some((link, Ok((end, rx)))) = opened else {
                    self.log(&format!("no link to '{next_hop}' for '{address}'"));
                    return;
                };
                *lock(&end.direct) = c2.try_clone().ok().map(|c| (c, stats.clone()));
                splice(
                    (
                        Source::Tcp(client, stats.clone()),
                        Sink::Link(link.clone(), end.clone()),
                    ),
                    (Source::Link(link, end, rx), Sink::Tcp(c2, stats.clone())),
                    stats,
                );
            }
            None => {}
        }
    }

    /// Listens on a tcpListener's port only while its address is reachable.
    fn tcp_listener(self: Arc<Self>, t: TcpEndpoint) {
        let mut active: Option<(TcpListener, Arc<AtomicBool>)> = None;
        let mut last_err = String::new();
        loop {
            let (reachable, generation) = {
                let st = lock(&self.state);
                (st.table.reachable(&t.address), st.generation)
            };
            let stopping = self.stopped();
            if (!reachable || stopping) && active.is_some() {
                let (sock, closed) = active.take().unwrap();
                closed.store(true, Ordering::SeqCst);
                unsafe { libc::shutdown(sock.as_raw_fd(), libc::SHUT_RDWR) };
                self.log(&format!(
                    "tcpListener '{}': '{}' unreachable, not accepting",
                    t.name, t.address
                ));
            }
            if stopping {
                return;
            }
            if reachable && active.is_none() {
                match resolve(&t.host, t.port).and_then(TcpListener::bind) {
                    Ok(sock) => {
                        self.log(&format!(
                            "tcpListener '{}' accepting on {} for '{}'",
                            t.name, t.port, t.address
                        ));
                        last_err.clear();
                        let closed = Arc::new(AtomicBool::new(false));
                        let (i, s, c, a) = (self.clone(), sock.try_clone(), closed.clone(), t.address.clone());
                        if let Ok(s) = s {
                            thread::spawn(move || i.accept_clients(s, c, a));
                            active = Some((sock, closed));
                        }
                    }
                    Err(e) => {
                        let m = e.to_string();
                        if m != last_err {
                            self.log(&format!("tcpListener '{}': cannot bind port {}: {m}", t.name, t.port));
                            last_err = m;
                        }
                    }
                }
            }
            let st = lock(&self.state);
            let _ = self.changed.wait_timeout_while(st, Duration::from_millis(200), |s| {
                s.generation == generation && !self.stopped()
            });
        }
    }

    fn accept_clients(self: Arc<Self>, sock: TcpListener, closed: Arc<AtomicBool>, address: String) {
        loop {
            match sock.accept() {
                Ok((c, _)) => {
                    if closed.load(Ordering::SeqCst) {
                        return;
                    }
                    let (i, a) = (self.clone(), address.clone());
                    thread::spawn(move || i.ingress(c, a));
                }
                Err(_) if closed.load(Ordering::SeqCst) || self.stopped() => return,
                Err(_) => thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    fn http_listener(self: Arc<Self>, sock: TcpListener, l: Listener) {
        loop {
            match sock.accept() {
                Ok((c, _)) => {
                    let _ = self.http_request(c, &l);
                }
                Err(_) if self.stopped() => return,
                Err(_) => thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    fn http_request(&self, mut c: TcpStream, l: &Listener) -> io::Result<()> {
        c.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
            let n = c.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            buf.extend(&chunk[..n]);
        }
        let text = String::from_utf8_lossy(&buf);
        let mut parts = text.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let path = path.split('?').next().unwrap_or("");
        let (status, ctype, body) = match (method, path) {
            ("GET" | "HEAD", "/healthz") if l.healthz => ("200 OK", "text/plain", "OK\n".to_string()),
            ("GET" | "HEAD", "/metrics") if l.metrics => ("200 OK", "text/plain; version=0.0.4", self.metrics()),
            ("GET" | "HEAD", _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
            _ => (
                "405 Method Not Allowed",
                "text/plain",
                "method not allowed\n".to_string(),
            ),
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        c.write_all(head.as_bytes())?;
        if method != "HEAD" {
            c.write_all(body.as_bytes())?;
        }
        Ok(())
    }

    fn metrics(&self) -> String {
        use std::fmt::Write as _;
        let mut o = String::new();
        let (links, reachable) = {
            let st = lock(&self.state);
            let mut v: Vec<_> = st
                .links
                .values()
                .map(|l| {
                    (
                        l.peer.clone(),
                        l.label.clone(),
                        l.cost,
                        l.active_streams(),
                        l.streams_total.load(Ordering::Relaxed),
                    )
                })
                .collect();
            v.sort();
            (v, st.table.reachable_addresses())
        };
        let id = &self.id;
        let _ = writeln!(
            o,
            "# HELP skrouter_links Inter-router links up.\n# TYPE skrouter_links gauge"
        );
        let _ = writeln!(o, "skrouter_links{{router=\"{id}\"}} {}", links.len());
        let _ = writeln!(
            o,
            "# HELP skrouter_link_cost Cost of each inter-router link.\n# TYPE skrouter_link_cost gauge"
        );
        for (peer, label, cost, _, _) in &links {
            let _ = writeln!(
                o,
                "skrouter_link_cost{{router=\"{id}\",peer=\"{peer}\",link=\"{label}\"}} {cost}"
            );
        }
        let _ = writeln!(
            o,
            "# HELP skrouter_link_streams Streams open on each link.\n# TYPE skrouter_link_streams gauge"
        );
        for (peer, label, _, active, _) in &links {
            let _ = writeln!(
                o,
                "skrouter_link_streams{{router=\"{id}\",peer=\"{peer}\",link=\"{label}\"}} {active}"
            );
        }
        let _ = writeln!(o, "# HELP skrouter_link_streams_total Streams carried by each link.\n# TYPE skrouter_link_streams_total counter");
        for (peer, label, _, _, total) in &links {
            let _ = writeln!(
                o,
                "skrouter_link_streams_total{{router=\"{id}\",peer=\"{peer}\",link=\"{label}\"}} {total}"
            );
        }
        let _ = writeln!(o, "# HELP skrouter_address_reachable Whether some router serves the address.\n# TYPE skrouter_address_reachable gauge");
        let stats = lock(&self.stats).clone();
        let mut addrs: Vec<String> = reachable.iter().cloned().collect();
        for a in stats.keys().chain(self.cfg.tcp_listeners.iter().map(|t| &t.address)) {
            if !addrs.contains(a) {
                addrs.push(a.clone());
            }
        }
        addrs.sort();
        for a in &addrs {
            let _ = writeln!(
                o,
                "skrouter_address_reachable{{router=\"{id}\",address=\"{a}\"}} {}",
                reachable.contains(a) as u8
            );
        }
        type Metric = (&'static str, &'static str, &'static str, fn(&AddrStats) -> i64);
        let per: [Metric; 4] = [
            (
                "skrouter_streams_active",
                "gauge",
                "Streams open for the address.",
                |s| s.streams_active.load(Ordering::Relaxed),
            ),
            (
                "skrouter_streams_total",
                "counter",
                "Streams opened for the address.",
                |s| s.streams_total.load(Ordering::Relaxed) as i64,
            ),
            (
                "skrouter_bytes_in_total",
                "counter",
                "Bytes read from the address's TCP connections.",
                |s| s.bytes_in.load(Ordering::Relaxed) as i64,
            ),
            (
                "skrouter_bytes_out_total",
                "counter",
                "Bytes written to the address's TCP connections.",
                |s| s.bytes_out.load(Ordering::Relaxed) as i64,
            ),
        ];
        for (name, kind, help, get) in per {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (a, s) in &stats {
                let _ = writeln!(o, "{name}{{router=\"{id}\",address=\"{a}\"}} {}", get(s));
            }
        }
        o
    }
}

/// Writes a link's frames, batching what is queued; sends an empty frame when idle.
/// (Stream pumps write their data frames themselves while nothing is queued.)
fn writer(rx: Receiver<Vec<u8>>, link: Arc<Link>) {
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        buf.clear();
        let mut frames = 0;
        match rx.recv_timeout(HEARTBEAT) {
            Ok(b) => {
                buf.extend(b);
                frames += 1;
            }
            Err(RecvTimeoutError::Timeout) => buf.extend(Frame::heartbeat().encode()),
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if link.dead.load(Ordering::SeqCst) {
            return;
        }
        while buf.len() < 256 * 1024 {
            match rx.try_recv() {
                Ok(b) => {
                    buf.extend(b);
                    frames += 1;
                }
                Err(_) => break,
            }
        }
        let mut out = lock(&link.out);
        let ok = out.write_all(&buf).is_ok();
        // Under the lock: a pump that sees nothing queued knows all of it is written.
        link.queued.fetch_sub(frames, Ordering::SeqCst);
        if !ok {
            link.dead.store(true, Ordering::SeqCst);
            let _ = out.shutdown(Shutdown::Both);
            return;
        }
    }
}
