//! The network side of readiness probes ([`Probe::TcpConnect`], [`Probe::HttpGet`]),
//! run by [`super::linux::LinuxSystem`] from a thread inside the probe's namespace:
//! a server that is not there yet is `Ok(None)` / `Ok(false)`, not an error.
//!
//! [`Probe::TcpConnect`]: knetsim_compiler::plan::Probe::TcpConnect
//! [`Probe::HttpGet`]: knetsim_compiler::plan::Probe::HttpGet

use super::{SysError, SysResult};
use crate::http;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Minimal `http://host:port/path` parser for probes.
pub(super) fn parse_http_url(url: &str) -> SysResult<(String, String)> {
    let invalid = || SysError::Invalid {
        what: "probe URL".into(),
        detail: url.into(),
    };
    let rest = url.strip_prefix("http://").ok_or_else(invalid)?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(invalid());
    }
    let authority = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, path.to_string()))
}

pub(super) fn resolve(addr: &str) -> SysResult<SocketAddr> {
    addr.to_socket_addrs()
        .map_err(|e| SysError::io(format!("address {addr}"), e))?
        .next()
        .ok_or_else(|| SysError::Invalid {
            what: "address".into(),
            detail: addr.into(),
        })
}

const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

pub(super) fn connect(addr: SocketAddr) -> SysResult<Option<TcpStream>> {
    match TcpStream::connect_timeout(&addr, PROBE_TIMEOUT) {
        Ok(s) => Ok(Some(s)),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::WouldBlock
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::AddrNotAvailable
            ) || e.raw_os_error() == Some(libc::ENETUNREACH)
                || e.raw_os_error() == Some(libc::EHOSTUNREACH) =>
        {
            Ok(None)
        }
        Err(e) => Err(SysError::io(format!("connecting to {addr}"), e)),
    }
}

/// Whether `GET path` answers 2xx within the probe's timeouts; a server that is not
/// listening yet (or answers garbage) is `Ok(false)`.
pub(super) fn http_get_ok(authority: &str, path: &str) -> SysResult<bool> {
    let Some(stream) = connect(resolve(authority)?)? else {
        return Ok(false);
    };
    let answer = http::Response::send(stream, &http::Request::get(authority, path), PROBE_TIMEOUT);
    Ok(answer.is_ok_and(|r| (200..300).contains(&r.status())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_probe_urls() {
        assert_eq!(
            parse_http_url("http://10.1.0.1:2379/health").unwrap(),
            ("10.1.0.1:2379".to_string(), "/health".to_string())
        );
        assert_eq!(
            parse_http_url("http://127.0.0.1").unwrap(),
            ("127.0.0.1:80".to_string(), "/".to_string())
        );
        assert!(parse_http_url("https://x/").is_err());
    }
}
