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

use crate::amqp::{self, Frame, Performative, Value};
use crate::config::{Config, Connector, Listener, Role, TcpEndpoint};
use crate::routing::{Choice, Distribution, Lsa, Table};
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

/// Bytes in flight per stream direction: the credit (in frames of the link's
/// max-frame-size) a receiver grants up front; it re-grants a quarter at a time.
const WINDOW_BYTES: usize = 2 << 20;
/// Bytes a stream's pump reads from its TCP connection per system call; the read is
/// scattered straight into the slots of as many transfer frames as it needs (the
/// max-frame-size is skrouterd's 16 KiB by default), which go out in one write.
const READ_CHUNK: usize = 64 * 1024;
/// The most data a link's reader writes straight to a stream's socket per batch of
/// frames (more goes through the stream's pump thread, so the reader goes on reading).
const DIRECT_MAX: usize = 256 * 1024;
/// The largest transfer frame sent, whatever larger size a peer accepts: a stream's
/// pump holds a buffer of frame slots of this size.
const SEND_FRAME_MAX: u32 = 64 * 1024;
const CONTROL_ADDRESS: &str = "_topo";
/// The largest router advertisement accepted (it may span many frames).
const CONTROL_MAX: usize = 16 << 20;
/// Empty frames go out at least this often (and at half the peer's idle time-out): they
/// keep the peer's idle timer from firing and give TCP something to acknowledge, so that
/// `LINK_USER_TIMEOUT` notices a dead path on an idle link too.
const HEARTBEAT_MAX: Duration = Duration::from_millis(250);
/// TCP_USER_TIMEOUT of inter-router connections, at least: data unacknowledged this long
/// means the path is dead, and the kernel fails the socket (the fast path; AMQP's idle
/// time-out, 16 s by default as in skrouterd, covers a peer that is up but silent). On
/// a short path that takes four losses in a row of one segment (sent at 0, 0.2, 0.6 and
/// 1.4 s), so lossy underlay links rarely drop a live link.
const LINK_USER_TIMEOUT_MS: u32 = 1500;
/// ... and at least this many retransmission time-outs of the connection as measured at
/// its handshake, so that a long (delayed) path gets as many retransmissions.
const LINK_USER_TIMEOUT_RTOS: u32 = 6;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_millis(200);
/// A dial started while the path is down must not outlast the kernel's first SYN
/// retransmit (1 s), or a restored path is only noticed after that plus the backoff.
const DIAL_TIMEOUT: Duration = Duration::from_millis(300);
/// How long the handshake may take when the link has no idle time-out.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
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

/// What a link's listener or connector sets for the link.
#[derive(Clone, Copy)]
struct LinkParams {
    cost: u32,
    max_frame_size: u32,
    idle_timeout_seconds: u32,
}

/// The TCP_USER_TIMEOUT of a link whose connection has this retransmission time-out.
fn link_user_timeout_ms(rto_us: u32) -> u32 {
    LINK_USER_TIMEOUT_MS.max(rto_us / 1000 * LINK_USER_TIMEOUT_RTOS)
}

/// Inter-router connections (just connected or accepted): no Nagle delay (small frames
/// carry interactive traffic), and a dead path fails the socket after
/// `LINK_USER_TIMEOUT_MS` (or `LINK_USER_TIMEOUT_RTOS` retransmission time-outs, if
/// longer) of unacknowledged data.
fn tune_link_socket(s: &TcpStream) {
    let _ = s.set_nodelay(true);
    // SAFETY: a valid socket; tcp_info is plain data, and the kernel writes at most `len`.
    let rto_us = unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let r = libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        );
        if r == 0 {
            info.tcpi_rto
        } else {
            0
        }
    };
    let ms: libc::c_uint = link_user_timeout_ms(rto_us);
    // SAFETY: a valid socket and a c_uint option value of the size passed.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_USER_TIMEOUT,
            (&ms as *const libc::c_uint).cast(),
            std::mem::size_of::<libc::c_uint>() as libc::socklen_t,
        );
    }
}

/// Writes the `ranges` of `buf` to a socket in as few system calls as it takes, never
/// blocking; the number of bytes written.
fn send_nonblocking(s: &TcpStream, buf: &[u8], ranges: &[std::ops::Range<usize>]) -> usize {
    let total: usize = ranges.iter().map(|r| r.len()).sum();
    let mut sent = 0;
    let mut iov: Vec<libc::iovec> = Vec::with_capacity(ranges.len());
    while sent < total {
        iov.clear();
        let mut skip = sent;
        for r in ranges {
            let n = skip.min(r.len());
            skip -= n;
            if r.start + n < r.end {
                iov.push(libc::iovec {
                    iov_base: buf[r.start + n..].as_ptr() as *mut libc::c_void,
                    iov_len: r.len() - n,
                });
            }
        }
        // SAFETY: a zeroed msghdr is valid; the iovecs point into `buf`, alive meanwhile.
        let n = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = iov.as_mut_ptr();
            msg.msg_iovlen = iov.len().min(1024) as _;
            libc::sendmsg(s.as_raw_fd(), &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
        };
        if n > 0 {
            sent += n as usize;
        } else if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        } else {
            break;
        }
    }
    sent
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
    /// Bytes, and how many transfer frames (of credit) they came in.
    Data(Vec<u8>, u32),
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

    /// Takes up to `want` frames of credit, waiting for at least one; 0 once closed.
    fn take_up_to(&self, want: u32) -> u32 {
        let mut g = lock(&self.m);
        loop {
            if g.1 {
                return 0;
            }
            if g.0 > 0 {
                let n = g.0.min(want);
                g.0 -= n;
                return n;
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
    /// spares a thread wake-up and a copy per batch of frames (router-bench: ~2 context
    /// switches per round trip).
    direct: Mutex<Option<(TcpStream, Arc<AddrStats>)>>,
    /// Data items in the channel not yet written by the stream's pump: while any are, the
    /// reader queues too, so bytes never overtake each other.
    pending: AtomicUsize,
    /// Frames consumed since the last credit grant.
    consumed: AtomicU32,
}

impl StreamEnd {
    /// Counts `frames` consumed; re-grants the peer that much credit once a quarter of
    /// the link's window is due.
    fn consume(&self, link: &Link, frames: u32) {
        let due = self.consumed.fetch_add(frames, Ordering::SeqCst) + frames;
        if due >= (link.window / 4).max(1) {
            let n = self.consumed.swap(0, Ordering::SeqCst);
            if n > 0 {
                let _ = link.send(Performative::Flow {
                    handle: Some(self.my_handle),
                    delivery_count: 0,
                    link_credit: n,
                });
            }
        }
    }

    /// The data of consecutive transfer frames from the link (`ranges` of `buf`; called
    /// by the link's reader only): written straight to the stream's socket when nothing
    /// is queued and the socket takes it without blocking (no copy, and no wake-up of the
    /// stream's pump); otherwise what is left of it is queued for the pump, in one piece.
    fn deliver_frames(&self, link: &Link, buf: &[u8], ranges: &[std::ops::Range<usize>]) {
        let total: usize = ranges.iter().map(|r| r.len()).sum();
        let frames = ranges.len() as u32;
        let mut sent = 0;
        if total <= DIRECT_MAX && self.pending.load(Ordering::SeqCst) == 0 {
            if let Some((s, stats)) = lock(&self.direct).as_ref() {
                sent = send_nonblocking(s, buf, ranges);
                stats.bytes_out.fetch_add(sent as u64, Ordering::Relaxed);
            }
        }
        if sent == total {
            self.consume(link, frames);
            return;
        }
        let mut rest = Vec::with_capacity(total - sent);
        let mut skip = sent;
        for r in ranges {
            let n = skip.min(r.len());
            skip -= n;
            rest.extend_from_slice(&buf[r.start + n..r.end]);
        }
        self.pending.fetch_add(1, Ordering::SeqCst);
        self.deliver(In::Data(rest, frames));
    }

    fn deliver(&self, m: In) {
        let last = !matches!(m, In::Data(..));
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
    /// Stream data per transfer frame: the peer's max-frame-size less the head.
    max_payload: usize,
    /// Credit, in frames, this router grants a stream direction up front.
    window: u32,
    /// How long the writer lets the link go silent before it sends an empty frame.
    heartbeat: Duration,
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

    /// Whole frames of stream data, written by a pump thread itself when nothing is
    /// queued for the writer thread (which spares it a wake-up per write; router-bench:
    /// ~130 us added per 64-byte round trip through two routers with every frame queued),
    /// queued otherwise, so frames never overtake each other. Only pump threads call
    /// this, never a link's reader, so a reader never blocks on a full socket.
    fn send_data(&self, bytes: &[u8]) -> io::Result<()> {
        if self.dead.load(Ordering::Relaxed) {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "link down"));
        }
        let mut out = lock(&self.out);
        if self.queued.load(Ordering::SeqCst) == 0 {
            return out.write_all(bytes).inspect_err(|_| {
                self.dead.store(true, Ordering::SeqCst);
                let _ = out.shutdown(Shutdown::Both);
            });
        }
        drop(out);
        self.queued.fetch_add(1, Ordering::SeqCst);
        self.tx.send(bytes.to_vec()).map_err(|_| {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            io::Error::new(io::ErrorKind::BrokenPipe, "link down")
        })
    }

    /// Sends `n` bytes of a stream laid out in `buf` as frame slots (`TRANSFER_HEAD`
    /// bytes of room for the head, then up to `max_payload` bytes of data, each) as one
    /// transfer per slot, taking a frame of credit per transfer and writing as many
    /// frames per system call as there is credit for. False if the stream or link ended.
    fn send_slots(&self, end: &StreamEnd, buf: &mut [u8], n: usize) -> bool {
        let (p, per) = (self.max_payload, amqp::TRANSFER_HEAD + self.max_payload);
        let frames = n.div_ceil(p);
        let mut i = 0;
        while i < frames {
            let got = end.credit.take_up_to((frames - i) as u32) as usize;
            if got == 0 {
                return false;
            }
            for j in i..i + got {
                let id = self.next_delivery.fetch_add(1, Ordering::Relaxed);
                amqp::write_transfer_head(&mut buf[j * per..], end.my_handle, id, p.min(n - j * p));
            }
            let last = i + got - 1;
            let stop = last * per + amqp::TRANSFER_HEAD + p.min(n - last * p);
            if self.send_data(&buf[i * per..stop]).is_err() {
                return false;
            }
            i += got;
        }
        true
    }

    /// A router advertisement on the control link (handle 0), through the writer thread:
    /// one message, in as many frames as the peer's max-frame-size takes.
    fn send_message(&self, handle: u32, data: &[u8]) -> io::Result<()> {
        let delivery_id = self.next_delivery.fetch_add(1, Ordering::Relaxed);
        let body = amqp::data_section(data);
        let mut chunks = body.chunks(self.max_payload).peekable();
        while let Some(chunk) = chunks.next() {
            let mut f = Frame::new(
                0,
                Performative::Transfer {
                    handle,
                    delivery_id,
                    settled: true,
                    more: chunks.peek().is_some(),
                },
            );
            f.payload = chunk.to_vec();
            self.send_frame(f)?;
        }
        Ok(())
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
            link_credit: self.window,
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
                link_credit: self.window,
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

/// A stream's destination, counted open in the routing table while this lives.
struct Picked {
    inner: Arc<Inner>,
    address: String,
    choice: Choice,
}

impl Drop for Picked {
    fn drop(&mut self) {
        lock(&self.inner.state).table.closed(&self.address, &self.choice);
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
                thread_local!(static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; READ_CHUNK]));
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
                Ok(In::Data(d, frames)) => {
                    end.consume(link, frames);
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
                // Data from another link (a router in the middle): copied into frame slots.
                let p = link.max_payload;
                let mut buf = Vec::with_capacity(data.len() + data.len().div_ceil(p) * amqp::TRANSFER_HEAD);
                for chunk in data.chunks(p) {
                    buf.extend_from_slice(&[0; amqp::TRANSFER_HEAD]);
                    buf.extend_from_slice(chunk);
                }
                link.send_slots(end, &mut buf, data.len())
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

/// Why a stream direction stopped.
enum Ended {
    Eof,
    ReadFailed,
    /// The link, or the stream's far end, went away.
    SendFailed,
}

/// Reads a stream's TCP connection straight into the data slots of transfer frames
/// (one `readv` per up to `READ_CHUNK` bytes) and sends them on the link: no copy in
/// user space, one write per read.
fn tcp_to_link(s: &mut TcpStream, stats: &AddrStats, link: &Link, end: &StreamEnd) -> Ended {
    let (p, per) = (link.max_payload, amqp::TRANSFER_HEAD + link.max_payload);
    let slots = READ_CHUNK.div_ceil(p).max(1);
    let mut buf = vec![0u8; slots * per];
    loop {
        let n = {
            let mut iov: Vec<io::IoSliceMut> = buf
                .chunks_mut(per)
                .map(|slot| io::IoSliceMut::new(&mut slot[amqp::TRANSFER_HEAD..]))
                .collect();
            match s.read_vectored(&mut iov) {
                Ok(0) => return Ended::Eof,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Ended::ReadFailed,
            }
        };
        stats.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        if !link.send_slots(end, &mut buf, n) {
            return Ended::SendFailed;
        }
    }
}

fn pump(mut src: Source, mut dst: Sink) {
    if let (Source::Tcp(s, stats), Sink::Link(link, end)) = (&mut src, &dst) {
        match tcp_to_link(s, stats, link, end) {
            Ended::Eof => dst.finish(),
            Ended::ReadFailed => dst.abort(),
            Ended::SendFailed => {
                src.abort();
                dst.abort();
            }
        }
        return;
    }
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
                    let (name, tls) = (l.name.clone(), tls.clone());
                    let params = LinkParams {
                        cost: l.cost,
                        max_frame_size: l.max_frame_size,
                        idle_timeout_seconds: l.idle_timeout_seconds,
                    };
                    thread::spawn(move || {
                        tune_link_socket(&s);
                        let s = match &tls {
                            Some(t) => t.wrap(s, ""),
                            None => Ok(LinkSock::Tcp(s)),
                        };
                        let r = s.and_then(|s| i.clone().run_link(s, &format!("{name} from {from}"), params, false));
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

    fn connector(self: Arc<Self>, c: Connector, tls: Option<Tls>) {
        let (name, host, port) = (&c.name, &c.host, c.port);
        let params = LinkParams {
            cost: c.cost,
            max_frame_size: c.max_frame_size,
            idle_timeout_seconds: c.idle_timeout_seconds,
        };
        let mut backoff = BACKOFF_MIN;
        let mut last_err = String::new();
        while !self.stopped() {
            let attempt = resolve(host, port)
                .and_then(|a| TcpStream::connect_timeout(&a, DIAL_TIMEOUT))
                .and_then(|s| {
                    tune_link_socket(&s);
                    match &tls {
                        Some(t) => t.wrap(s, host),
                        None => Ok(LinkSock::Tcp(s)),
                    }
                });
            let result = match attempt {
                Ok(s) => {
                    backoff = BACKOFF_MIN;
                    self.clone().run_link(s, &format!("connector {name}"), params, true)
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
    fn run_link(
        self: Arc<Self>,
        mut sock: LinkSock,
        label: &str,
        params: LinkParams,
        initiator: bool,
    ) -> io::Result<()> {
        let my_cost = params.cost;
        let my_max = params.max_frame_size.clamp(512, amqp::MAX_FRAME);
        // AMQP idle time-out: a peer silent this long is gone (0: never).
        let idle = Duration::from_secs(params.idle_timeout_seconds as u64);
        sock.set_read_timeout(Some(if idle.is_zero() { HANDSHAKE_TIMEOUT } else { idle }))?;
        let mut hello = amqp::PROTOCOL_HEADER.to_vec();
        let props = vec![(Value::Symbol(COST_PROPERTY.into()), Value::Uint(my_cost))];
        hello.extend(
            Frame::new(
                0,
                Performative::Open {
                    container_id: self.id.clone(),
                    max_frame_size: my_max,
                    idle_time_out_ms: idle.as_millis() as u32,
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
        let mut reader = amqp::FrameReader::new(sock.try_clone()?, my_max);
        let header = reader.read_raw(8)?;
        if header != amqp::PROTOCOL_HEADER {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("not AMQP 1.0: header {header:02x?}"),
            ));
        }
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("expected {what}"));
        let mut next_body = || -> io::Result<Option<Performative>> {
            let Some(r) = reader.next_frame()? else { return Ok(None) };
            Frame::decode(&reader.buf()[r])
                .map(|f| f.body)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
        };
        let (peer, peer_cost, peer_max, peer_idle) = match next_body()? {
            Some(Performative::Open {
                container_id,
                properties,
                max_frame_size,
                idle_time_out_ms,
            }) => {
                let cost = properties
                    .iter()
                    .find(|(k, _)| k.as_str() == Some(COST_PROPERTY))
                    .and_then(|(_, v)| v.as_u64())
                    .unwrap_or(1) as u32;
                (container_id, cost, max_frame_size, idle_time_out_ms)
            }
            _ => return Err(bad("open")),
        };
        if peer == self.id {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "peer has this router's own id",
            ));
        }
        match next_body()? {
            Some(Performative::Begin { .. }) => {}
            _ => return Err(bad("begin")),
        }
        sock.set_read_timeout(if idle.is_zero() { None } else { Some(idle) })?;
        // The peer wants a frame at least every half of its idle time-out.
        let heartbeat = match peer_idle {
            0 => HEARTBEAT_MAX,
            ms => HEARTBEAT_MAX.min(Duration::from_millis(ms as u64 / 2)),
        };
        let max_payload = peer_max.clamp(512, SEND_FRAME_MAX) as usize - amqp::TRANSFER_HEAD;
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
            max_payload,
            window: (WINDOW_BYTES / my_max as usize).clamp(16, 4096) as u32,
            heartbeat,
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
        let result = self.read_link(&link, &mut reader).map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::new(
                e.kind(),
                format!("idle time-out: no frame from the peer for {}s", idle.as_secs()),
            ),
            _ => e,
        });
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

    /// Serves the frames the peer sends until the link closes. Each read of the link
    /// socket may bring many frames; consecutive data frames of one stream are handed to
    /// it as one batch (one write to its socket), which any other frame flushes first.
    fn read_link(self: &Arc<Self>, link: &Arc<Link>, reader: &mut amqp::FrameReader<LinkSock>) -> io::Result<()> {
        let mut batch: Option<(Arc<StreamEnd>, Vec<std::ops::Range<usize>>)> = None;
        // An advertisement arriving in several frames, until its last.
        let mut control = Vec::new();
        let flush = |batch: &mut Option<(Arc<StreamEnd>, Vec<std::ops::Range<usize>>)>, buf: &[u8]| {
            if let Some((end, ranges)) = batch.take() {
                end.deliver_frames(link, buf, &ranges);
            }
        };
        loop {
            let range = match reader.buffered_frame()? {
                Some(r) => r,
                None => {
                    flush(&mut batch, reader.buf());
                    if !reader.fill()? {
                        return Ok(());
                    }
                    continue;
                }
            };
            if self.stopped() {
                return Ok(());
            }
            if let Some((handle, data)) = amqp::transfer_data(&reader.buf()[range.clone()]) {
                if handle != 0 {
                    let data = range.start + data.start..range.start + data.end;
                    match &mut batch {
                        Some((end, ranges)) if end.peer_handle.load(Ordering::Relaxed) == handle => ranges.push(data),
                        _ => {
                            flush(&mut batch, reader.buf());
                            if let Some(end) = lock(&link.streams).by_peer.get(&handle).cloned() {
                                batch = Some((end, vec![data]));
                            }
                        }
                    }
                    continue;
                }
            }
            flush(&mut batch, reader.buf());
            let frame = Frame::decode(&reader.buf()[range])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
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
                Performative::Transfer { handle: 0, more, .. } => {
                    control.extend_from_slice(&frame.payload);
                    if control.len() > CONTROL_MAX {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "router advertisement too large",
                        ));
                    }
                    if more {
                        continue;
                    }
                    let data = amqp::message_data(&std::mem::take(&mut control))
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                    match serde_json::from_slice::<Lsa>(&data) {
                        Ok(lsa) => self.on_lsa(link.id, lsa),
                        Err(e) => self.log(&format!("bad router advertisement from '{}': {e}", link.peer)),
                    }
                }
                Performative::Transfer { handle, .. } => {
                    // Data in another layout than transfer_data's (several sections).
                    let data = amqp::message_data(&frame.payload)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                    let end = lock(&link.streams).by_peer.get(&handle).cloned();
                    if let Some(end) = end {
                        let whole = std::iter::once(0..data.len()).collect::<Vec<_>>();
                        end.deliver_frames(link, &data, &whole);
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

    /// The destination of a new stream for `address`, counted open (for balanced
    /// distribution) until the returned guard drops.
    fn choose(self: &Arc<Self>, address: &str) -> Option<Picked> {
        let n = self.local_connectors(address).len();
        let default = Distribution::parse(&self.cfg.router.default_distribution).unwrap_or_default();
        let dist = Distribution::of(&self.cfg.addresses, default, address);
        let choice = lock(&self.state).table.choose(address, n, dist)?;
        Some(Picked {
            inner: self.clone(),
            address: address.to_string(),
            choice,
        })
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
        let picked = self.choose(&address);
        match picked.as_ref().map(|p| &p.choice) {
            Some(Choice::Local(i)) => match self.connect_local(&address, *i) {
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
                let Some(out) = self.link_to(next_hop).filter(|l| l.id != link.id) else {
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
        let picked = self.choose(&address);
        match picked.as_ref().map(|p| &p.choice) {
            Some(Choice::Local(i)) => match self.connect_local(&address, *i) {
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
                    .link_to(next_hop)
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
        match rx.recv_timeout(link.heartbeat) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_longer_path_gets_a_longer_tcp_user_timeout() {
        // Loopback or a LAN: the kernel's 200 ms minimum RTO.
        assert_eq!(link_user_timeout_ms(203_333), 1500);
        assert_eq!(link_user_timeout_ms(0), 1500);
        // A 400 ms round trip (netem delay): RTO ~1.2 s.
        assert_eq!(link_user_timeout_ms(1_200_000), 7200);
    }

    #[test]
    fn nonblocking_send_writes_every_range_in_order() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let tx = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut rx, _) = l.accept().unwrap();
        let buf: Vec<u8> = (0..100u8).collect();
        let sent = send_nonblocking(&tx, &buf, &[10..20, 50..51, 90..100]);
        assert_eq!(sent, 21);
        drop(tx);
        let mut got = Vec::new();
        rx.read_to_end(&mut got).unwrap();
        let want: Vec<u8> = (10..20).chain(50..51).chain(90..100).collect();
        assert_eq!(got, want);
    }
}
