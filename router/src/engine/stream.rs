//! One stream through this router: the end of it on a link (credit, what the peer sends,
//! the socket its data may go to directly), and the pumps that move its two directions
//! between a TCP connection and a link (or two links, on a router in the middle).

use super::link::Link;
use super::{lock, AddrStats};
use crate::amqp::{self, Performative};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

/// Bytes a stream's pump reads from its TCP connection per system call; the read is
/// scattered straight into the slots of as many transfer frames as it needs (the
/// max-frame-size is skrouterd's 16 KiB by default), which go out in one write.
const READ_CHUNK: usize = 64 * 1024;
/// The most data a link's reader writes straight to a stream's socket per batch of
/// frames (more goes through the stream's pump thread, so the reader goes on reading).
const DIRECT_MAX: usize = 256 * 1024;

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

/// What a stream end receives from its peer.
pub(super) enum In {
    /// Bytes, and how many transfer frames (of credit) they came in.
    Data(Vec<u8>, u32),
    End,
    Abort,
}

#[derive(Default)]
pub(super) struct Credit {
    m: Mutex<(u32, bool)>,
    cv: Condvar,
}

impl Credit {
    pub(super) fn add(&self, n: u32) {
        let mut g = lock(&self.m);
        g.0 = g.0.saturating_add(n);
        self.cv.notify_all();
    }

    pub(super) fn close(&self) {
        lock(&self.m).1 = true;
        self.cv.notify_all();
    }

    /// Takes up to `want` frames of credit, waiting for at least one; 0 once closed.
    pub(super) fn take_up_to(&self, want: u32) -> u32 {
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
pub(super) struct StreamEnd {
    pub(super) name: String,
    pub(super) my_handle: u32,
    pub(super) peer_handle: AtomicU32,
    pub(super) in_tx: Mutex<Option<Sender<In>>>,
    pub(super) credit: Credit,
    pub(super) my_detached: AtomicBool,
    pub(super) peer_detached: AtomicBool,
    /// The stream's TCP socket when its data from the link goes to one: the link's reader
    /// writes there itself, never blocking, while no data waits in the channel. This
    /// spares a thread wake-up and a copy per batch of frames (router-bench: ~2 context
    /// switches per round trip).
    pub(super) direct: Mutex<Option<(TcpStream, Arc<AddrStats>)>>,
    /// Data items in the channel not yet written by the stream's pump: while any are, the
    /// reader queues too, so bytes never overtake each other.
    pub(super) pending: AtomicUsize,
    /// Frames consumed since the last credit grant.
    pub(super) consumed: AtomicU32,
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
    pub(super) fn deliver_frames(&self, link: &Link, buf: &[u8], ranges: &[std::ops::Range<usize>]) {
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

    pub(super) fn deliver(&self, m: In) {
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

/// One direction of a stream: where bytes come from.
pub(super) enum Source {
    Tcp(TcpStream, Arc<AddrStats>),
    Link(Arc<Link>, Arc<StreamEnd>, Receiver<In>),
}

/// One direction of a stream: where bytes go.
pub(super) enum Sink {
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
pub(super) fn splice(a: (Source, Sink), b: (Source, Sink), stats: Arc<AddrStats>) {
    stats.streams_total.fetch_add(1, Ordering::Relaxed);
    stats.streams_active.fetch_add(1, Ordering::Relaxed);
    let t = thread::spawn(move || pump(a.0, a.1));
    pump(b.0, b.1);
    let _ = t.join();
    stats.streams_active.fetch_sub(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

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
