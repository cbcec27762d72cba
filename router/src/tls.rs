//! TLS on inter-router links (rustls, ring): a listener with an sslProfile serves its
//! certificate and, like skrouterd with `authenticatePeer`, requires a client certificate
//! signed by the profile's CA; a connector with an sslProfile verifies the server against
//! the CA (server name: the connector's host, an IP SAN for an address) and presents its
//! own certificate. After the handshake a pump thread moves bytes between the TLS
//! connection and one end of a socket pair, so the link code runs unchanged on the other
//! end (AMQP framing inside TLS).

use crate::config::SslProfile;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig, ServerConnection};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const CLOSE_GRACE_MS: i32 = 1000;

/// The TLS side of a listener or connector, loaded once at start.
#[derive(Clone)]
pub enum Tls {
    Server(Arc<ServerConfig>),
    Client(Arc<ClientConfig>),
}

fn invalid(profile: &SslProfile, attr: &str, msg: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("sslProfile '{}': attribute '{attr}': {msg}", profile.name),
    )
}

fn file<'a>(profile: &SslProfile, attr: &str, v: &'a Option<String>) -> io::Result<&'a str> {
    v.as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid(profile, attr, "required for TLS on an inter-router link"))
}

fn certs(profile: &SslProfile, attr: &str, path: &str) -> io::Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| invalid(profile, attr, format!("cannot load certificates from {path}: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(profile, attr, format!("no certificate in {path}")));
    }
    Ok(certs)
}

struct Loaded {
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn load(profile: &SslProfile) -> io::Result<Loaded> {
    let ca = file(profile, "caCertFile", &profile.ca_cert_file)?;
    let cert = file(profile, "certFile", &profile.cert_file)?;
    let key = file(profile, "privateKeyFile", &profile.private_key_file)?;
    let mut roots = RootCertStore::empty();
    for c in certs(profile, "caCertFile", ca)? {
        roots
            .add(c)
            .map_err(|e| invalid(profile, "caCertFile", format!("{ca}: {e}")))?;
    }
    let chain = certs(profile, "certFile", cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        invalid(
            profile,
            "privateKeyFile",
            format!("cannot load a private key from {key}: {e}"),
        )
    })?;
    Ok(Loaded {
        roots: Arc::new(roots),
        chain,
        key,
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Tls {
    /// The server side of a listener's sslProfile.
    pub fn server(profile: &SslProfile) -> io::Result<Tls> {
        let l = load(profile)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(l.roots, provider())
            .build()
            .map_err(|e| invalid(profile, "caCertFile", e))?;
        let cfg = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(profile, "certFile", e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(l.chain, l.key)
            .map_err(|e| invalid(profile, "privateKeyFile", e))?;
        Ok(Tls::Server(Arc::new(cfg)))
    }

    /// The client side of a connector's sslProfile.
    pub fn client(profile: &SslProfile) -> io::Result<Tls> {
        let l = load(profile)?;
        let cfg = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(profile, "certFile", e))?
            .with_root_certificates(l.roots)
            .with_client_auth_cert(l.chain, l.key)
            .map_err(|e| invalid(profile, "privateKeyFile", e))?;
        Ok(Tls::Client(Arc::new(cfg)))
    }

    /// Handshakes on `tcp` (`host` names the server for a client) and returns the plaintext end.
    pub fn wrap(&self, mut tcp: TcpStream, host: &str) -> io::Result<LinkSock> {
        let tls_err = |e: rustls::Error| io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}"));
        let mut conn: Connection = match self {
            Tls::Server(cfg) => ServerConnection::new(cfg.clone()).map_err(tls_err)?.into(),
            Tls::Client(cfg) => {
                let name = ServerName::try_from(host.to_string())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("TLS server name {host}: {e}")))?;
                ClientConnection::new(cfg.clone(), name).map_err(tls_err)?.into()
            }
        };
        tcp.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
        tcp.set_write_timeout(Some(HANDSHAKE_TIMEOUT))?;
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp)
                .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake: {e}")))?;
        }
        // Anything the handshake left to send (a TLS 1.3 session ticket, say).
        while conn.wants_write() {
            conn.write_tls(&mut tcp)?;
        }
        tcp.set_read_timeout(None)?;
        tcp.set_write_timeout(None)?;
        tcp.set_nonblocking(true)?;
        let (mine, theirs) = UnixStream::pair()?;
        thread::spawn(move || pump(conn, tcp, theirs));
        Ok(LinkSock::Tls(mine))
    }
}

/// The byte stream a link runs on: the TCP connection itself, or the plaintext end of a
/// TLS pump.
pub enum LinkSock {
    Tcp(TcpStream),
    Tls(UnixStream),
}

impl LinkSock {
    pub fn try_clone(&self) -> io::Result<LinkSock> {
        Ok(match self {
            LinkSock::Tcp(s) => LinkSock::Tcp(s.try_clone()?),
            LinkSock::Tls(s) => LinkSock::Tls(s.try_clone()?),
        })
    }

    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            LinkSock::Tcp(s) => s.shutdown(how),
            LinkSock::Tls(s) => s.shutdown(how),
        }
    }

    pub fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        match self {
            LinkSock::Tcp(s) => s.set_read_timeout(d),
            LinkSock::Tls(s) => s.set_read_timeout(d),
        }
    }
}

impl Read for LinkSock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            LinkSock::Tcp(s) => s.read(buf),
            LinkSock::Tls(s) => s.read(buf),
        }
    }
}

impl Write for LinkSock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            LinkSock::Tcp(s) => s.write(buf),
            LinkSock::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            LinkSock::Tcp(s) => s.flush(),
            LinkSock::Tls(s) => s.flush(),
        }
    }
}

/// Moves bytes between the TLS connection on `tcp` (non-blocking) and the plaintext end
/// `local` until either side closes or fails, then closes both.
fn pump(mut conn: Connection, mut tcp: TcpStream, mut local: UnixStream) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut local_open = true;
    'run: loop {
        let mut fds = [
            libc::pollfd {
                fd: tcp.as_raw_fd(),
                events: libc::POLLIN | if conn.wants_write() { libc::POLLOUT } else { 0 },
                revents: 0,
            },
            libc::pollfd {
                fd: local.as_raw_fd(),
                // Back-pressure: take no more plaintext while TLS records wait to be sent.
                events: if local_open && !conn.wants_write() {
                    libc::POLLIN
                } else {
                    0
                },
                revents: 0,
            },
        ];
        // Once the link is gone, the close_notify gets a moment to leave, not forever
        // (a peer cut off by the underlay would otherwise hold this thread for good).
        let timeout = if local_open { -1 } else { CLOSE_GRACE_MS };
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        if n == 0 {
            break;
        }
        if fds[0].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            loop {
                match conn.read_tls(&mut tcp) {
                    Ok(0) => break 'run,
                    Ok(_) => {
                        if conn.process_new_packets().is_err() {
                            let _ = conn.write_tls(&mut tcp);
                            break 'run;
                        }
                        loop {
                            match conn.reader().read(&mut buf) {
                                Ok(0) => break 'run,
                                Ok(n) => {
                                    if local.write_all(&buf[..n]).is_err() {
                                        break 'run;
                                    }
                                }
                                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                                Err(_) => break 'run,
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break 'run,
                }
            }
        }
        if local_open && fds[1].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            match local.read(&mut buf) {
                Ok(0) | Err(_) => {
                    local_open = false;
                    conn.send_close_notify();
                }
                Ok(n) => {
                    if conn.writer().write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        while conn.wants_write() {
            match conn.write_tls(&mut tcp) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break 'run,
            }
        }
        if !local_open && !conn.wants_write() {
            break;
        }
    }
    let _ = tcp.shutdown(Shutdown::Both);
    let _ = local.shutdown(Shutdown::Both);
}
