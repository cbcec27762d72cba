//! Inter-router connections from their first byte to their last: the inter-router
//! listener and the connectors that dial (with backoff), the socket options of a link,
//! the AMQP handshake (open, begin, the control link) and the reader that serves every
//! frame a peer sends: stream attaches, credit, data, detaches and router advertisements.

use super::link::{writer, Link, Streams};
use super::stream::{In, StreamEnd};
use super::{lock, resolve, Inner};
use crate::amqp::{self, Frame, Performative, Value};
use crate::config::{Connector, Listener};
use crate::routing::Lsa;
use crate::tls::{LinkSock, Tls};
use std::io::{self, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Bytes in flight per stream direction: the credit (in frames of the link's
/// max-frame-size) a receiver grants up front; it re-grants a quarter at a time.
const WINDOW_BYTES: usize = 2 << 20;
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

/// What a link's listener or connector sets for the link.
#[derive(Clone, Copy)]
pub(super) struct LinkParams {
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

impl Inner {
    pub(super) fn inter_router_listener(self: Arc<Self>, sock: TcpListener, l: Listener, tls: Option<Tls>) {
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

    pub(super) fn connector(self: Arc<Self>, c: Connector, tls: Option<Tls>) {
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
}
