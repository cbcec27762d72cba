//! The router's TCP edges: tcpListeners (open only while their address is reachable)
//! and the clients they accept, tcpConnectors, and where each new stream goes, to a
//! local tcpConnector or over a link to the next hop.

use super::link::Link;
use super::stream::{splice, In, Sink, Source, StreamEnd};
use super::{lock, resolve, Inner};
use crate::config::TcpEndpoint;
use crate::routing::{Choice, Distribution};
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

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

impl Inner {
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
    pub(super) fn egress(self: Arc<Self>, link: Arc<Link>, end: Arc<StreamEnd>, rx: Receiver<In>, address: String) {
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
    pub(super) fn tcp_listener(self: Arc<Self>, t: TcpEndpoint) {
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
}
