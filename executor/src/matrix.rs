//! Probes a reachability matrix: a TCP connect (or a UDP datagram answered) from
//! every pod to every pod, all at once. One thread steps through the source pods' namespaces creating
//! non-blocking sockets (a socket stays in the namespace it was made in), then
//! waits on all of them together, so a matrix takes about one timeout however
//! many pairs are blocked, not one timeout per blocked pair.

use crate::system::linux::open_netns;
use knetsim_compiler::model::matrix::Matrix;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{setns, CloneFlags};
use nix::sys::socket::{
    connect, getsockopt, recv, send, socket, sockopt, AddressFamily, MsgFlags, SockFlag, SockType, SockaddrIn,
};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

/// Files kept free for everything else the process has open.
const SPARE_FILES: u64 = 256;

/// Sockets that may be open at once: the open-files limit, raised to its hard
/// maximum first (each batch costs up to one timeout, so fewer batches are faster).
fn batch_size() -> usize {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 512;
    };
    let want = hard.min(1 << 16);
    let limit = if want > soft && setrlimit(Resource::RLIMIT_NOFILE, want, hard).is_ok() {
        want
    } else {
        soft
    };
    (limit.saturating_sub(SPARE_FILES)).max(64) as usize
}

/// `result[from][to]`: whether a TCP connection from pod `from` to pod `to`'s
/// address and the matrix's port was established within `timeout`.
pub fn probe(m: &Matrix, timeout: Duration) -> Result<Vec<Vec<bool>>, String> {
    Ok(probe_all(std::slice::from_ref(m), timeout)?.remove(0))
}

/// Several matrices (one per port, say) probed in one pass: `result[i][from][to]`.
pub fn probe_all(ms: &[Matrix], timeout: Duration) -> Result<Vec<Vec<Vec<bool>>>, String> {
    let namespaces = ms
        .iter()
        .map(|m| {
            m.pods
                .iter()
                .map(|p| open_netns(&p.netns).map_err(|e| format!("pod {}: {e}", p.label)))
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Grouped by source pod, so that the thread enters each namespace once per batch.
    let mut cells: Vec<Cell> = Vec::new();
    for (i, m) in ms.iter().enumerate() {
        let n = m.pods.len();
        cells.extend((0..n).flat_map(|a| (0..n).map(move |b| (i, a, b))));
    }
    cells.sort_by_key(|&(i, a, _)| (ms[i].pods[a].netns.clone(), i, a));
    let udp: Vec<bool> = ms.iter().map(|m| m.protocol == "udp").collect();
    let mut result: Vec<Vec<Vec<bool>>> = ms
        .iter()
        .map(|m| vec![vec![false; m.pods.len()]; m.pods.len()])
        .collect();
    std::thread::scope(|s| {
        s.spawn(|| -> Result<(), String> {
            for batch in cells.chunks(batch_size()) {
                let mut pending: Vec<(Cell, OwnedFd)> = Vec::new();
                let mut current = None;
                for &(i, a, b) in batch {
                    let m = &ms[i];
                    if current != Some(&m.pods[a].netns) {
                        setns(&namespaces[i][a], CloneFlags::CLONE_NEWNET)
                            .map_err(|e| format!("entering {}: {e}", m.pods[a].netns))?;
                        current = Some(&m.pods[a].netns);
                    }
                    let udp = m.protocol == "udp";
                    let fd = socket(
                        AddressFamily::Inet,
                        if udp { SockType::Datagram } else { SockType::Stream },
                        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
                        None,
                    )
                    .map_err(|e| format!("socket: {e}"))?;
                    let addr = SockaddrIn::from(std::net::SocketAddrV4::new(m.pods[b].ip, m.port));
                    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
                    match connect(raw, &addr) {
                        // A UDP "connection" is a datagram that gets an answer.
                        Ok(()) if udp => {
                            if send(raw, PROBE, MsgFlags::empty()).is_ok() {
                                pending.push(((i, a, b), fd));
                            }
                        }
                        Ok(()) => result[i][a][b] = true,
                        Err(Errno::EINPROGRESS) => pending.push(((i, a, b), fd)),
                        Err(_) => {}
                    }
                }
                wait_all(&mut pending, &mut result, &udp, timeout);
            }
            Ok(())
        })
        .join()
        .unwrap_or_else(|_| Err("the matrix thread panicked".into()))
    })?;
    Ok(result)
}

/// A cell of one of the matrices: (matrix, from, to).
type Cell = (usize, usize, usize);

/// What a UDP probe sends; any answer counts.
const PROBE: &[u8] = b"knetsim matrix probe\n";

/// Polls the connecting sockets until each is decided or `timeout` passes.
/// `udp[m]`: matrix `m` probes UDP.
fn wait_all(pending: &mut Vec<(Cell, OwnedFd)>, result: &mut [Vec<Vec<bool>>], udp: &[bool], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !pending.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let ms = PollTimeout::try_from(left.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::MAX);
        let mut fds: Vec<PollFd> = pending
            .iter()
            .map(|((m, _, _), fd)| {
                let want = if udp[*m] { PollFlags::POLLIN } else { PollFlags::POLLOUT };
                PollFd::new(fd.as_fd(), want)
            })
            .collect();
        if poll(&mut fds, ms).is_err() {
            continue;
        }
        let done: Vec<bool> = fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect();
        drop(fds);
        let mut i = 0;
        pending.retain(|((m, a, b), fd)| {
            let decided = done[i];
            i += 1;
            if decided {
                result[*m][*a][*b] = if udp[*m] {
                    // An answer; an ICMP error (port unreachable) makes recv fail.
                    let mut buf = [0u8; 64];
                    recv(std::os::fd::AsRawFd::as_raw_fd(fd), &mut buf, MsgFlags::empty()).is_ok_and(|n| n > 0)
                } else {
                    // SO_ERROR 0: the handshake completed; anything else: refused, unreachable.
                    getsockopt(fd, sockopt::SocketError).is_ok_and(|e| e == 0)
                };
            }
            !decided
        });
    }
}
