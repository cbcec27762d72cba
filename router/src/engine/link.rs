//! One inter-router link as the rest of the router sees it: the connection's sending
//! side (frames queued for the writer thread, or stream data written straight by a
//! stream's pump), the streams open on it by handle, and the writer thread that batches
//! frames and sends heartbeats. Establishing links and reading them is `inter_router`'s.

use super::lock;
use super::stream::{Credit, In, StreamEnd};
use crate::amqp::{self, Frame, Performative};
use crate::tls::LinkSock;
use std::collections::HashMap;
use std::io::{self, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
pub(super) struct Streams {
    pub(super) by_peer: HashMap<u32, Arc<StreamEnd>>,
    pub(super) pending: HashMap<String, Arc<StreamEnd>>,
}

pub(crate) struct Link {
    pub(super) id: u64,
    pub(crate) peer: String,
    pub(crate) cost: u32,
    pub(super) label: String,
    pub(super) tx: Sender<Vec<u8>>,
    /// The link's writing side, shared by the writer thread and stream pumps writing directly.
    pub(super) out: Mutex<LinkSock>,
    /// Frames handed to the writer thread and not yet written: while any are, every
    /// frame goes through the queue, so frames never overtake each other.
    pub(super) queued: AtomicUsize,
    pub(super) sock: LinkSock,
    pub(super) dead: AtomicBool,
    pub(super) next_handle: AtomicU32,
    pub(super) next_delivery: AtomicU32,
    pub(super) streams: Mutex<Streams>,
    /// Stream data per transfer frame: the peer's max-frame-size less the head.
    pub(super) max_payload: usize,
    /// Credit, in frames, this router grants a stream direction up front.
    pub(super) window: u32,
    /// How long the writer lets the link go silent before it sends an empty frame.
    pub(super) heartbeat: Duration,
    pub(super) streams_total: AtomicU64,
}

impl Link {
    pub(super) fn send(&self, p: Performative) -> io::Result<()> {
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
    pub(super) fn send_slots(&self, end: &StreamEnd, buf: &mut [u8], n: usize) -> bool {
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
    pub(super) fn send_message(&self, handle: u32, data: &[u8]) -> io::Result<()> {
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

    pub(super) fn new_end(&self, name: String, my_handle: u32, peer_handle: u32) -> (Arc<StreamEnd>, Receiver<In>) {
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
    pub(super) fn open_stream(&self, me: &str, address: &str) -> io::Result<(Arc<StreamEnd>, Receiver<In>)> {
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
    pub(super) fn answer_stream(&self, end: &StreamEnd, address: &str, error: Option<String>) -> io::Result<()> {
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

    pub(super) fn detach(&self, end: &StreamEnd, error: Option<String>) {
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

    pub(super) fn maybe_remove(&self, end: &StreamEnd) {
        if end.my_detached.load(Ordering::SeqCst) && end.peer_detached.load(Ordering::SeqCst) {
            let ph = end.peer_handle.load(Ordering::SeqCst);
            let mut s = lock(&self.streams);
            if s.by_peer.get(&ph).is_some_and(|e| e.my_handle == end.my_handle) {
                s.by_peer.remove(&ph);
            }
        }
    }

    pub(super) fn active_streams(&self) -> usize {
        let s = lock(&self.streams);
        s.by_peer.len() + s.pending.len()
    }
}

/// Writes a link's frames, batching what is queued; sends an empty frame when idle.
/// (Stream pumps write their data frames themselves while nothing is queued.)
pub(super) fn writer(rx: Receiver<Vec<u8>>, link: Arc<Link>) {
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
