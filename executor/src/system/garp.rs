//! Gratuitous ARP: a host announces its address when it gets one, as a booting
//! machine's network stack does. A host that a live change re-creates keeps its
//! address but gets a new MAC; its neighbours (an etcd peer, a flannel peer) then
//! update their caches at once instead of sending to the old MAC until their
//! entries go stale (about a second of lost packets, e.g. an etcd member rejoining).

use super::{SysError, SysResult};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const ETH_P_ARP: u16 = libc::ETH_P_ARP as u16;

/// An ARP request for `ip` from `ip` at `mac` (RFC 5227's announcement).
pub fn announcement(mac: [u8; 6], ip: Ipv4Addr) -> [u8; 28] {
    let mut p = [0u8; 28];
    p[0..2].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    p[2..4].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    p[4] = 6;
    p[5] = 4;
    p[6..8].copy_from_slice(&1u16.to_be_bytes()); // request
    p[8..14].copy_from_slice(&mac);
    p[14..18].copy_from_slice(&ip.octets());
    p[24..28].copy_from_slice(&ip.octets());
    p
}

fn last_error(what: String) -> SysError {
    SysError::io(what, std::io::Error::last_os_error())
}

/// `ifname`'s index and MAC, through `fd` (a socket of the calling thread's namespace).
fn interface(fd: &OwnedFd, ifname: &str) -> SysResult<(i32, [u8; 6])> {
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if ifname.is_empty() || ifname.len() >= req.ifr_name.len() {
        return Err(SysError::Invalid {
            what: "interface name".into(),
            detail: ifname.into(),
        });
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(ifname.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: the ioctls read ifr_name and fill the union member they are named after.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFINDEX, &mut req) } < 0 {
        return Err(last_error(format!("index of {ifname}")));
    }
    let index = unsafe { req.ifr_ifru.ifru_ifindex };
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) } < 0 {
        return Err(last_error(format!("MAC of {ifname}")));
    }
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (m, d) in mac.iter_mut().zip(data) {
        *m = d as u8;
    }
    Ok((index, mac))
}

/// Broadcasts one announcement of `ip` on `ifname`, in the calling thread's namespace.
pub fn announce(ifname: &str, ip: Ipv4Addr) -> SysResult<()> {
    // SAFETY: socket(2) with constant arguments; the descriptor is owned at once.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            i32::from(ETH_P_ARP.to_be()),
        )
    };
    if raw < 0 {
        return Err(last_error("opening a packet socket".into()));
    }
    // SAFETY: raw is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let (index, mac) = interface(&fd, ifname)?;
    let packet = announcement(mac, ip);
    // SAFETY: sockaddr_ll is plain old data; zeroed is a valid value.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_protocol = ETH_P_ARP.to_be();
    to.sll_ifindex = index;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    // SAFETY: packet and to outlive the call; the lengths are theirs.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            packet.as_ptr().cast(),
            packet.len(),
            0,
            (&to as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(last_error(format!("announcing {ip} on {ifname}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_announcement_asks_for_its_own_address() {
        let p = announcement([2, 0, 0, 0, 0, 7], Ipv4Addr::new(10, 1, 0, 2));
        assert_eq!(
            p,
            [
                0, 1, 8, 0, 6, 4, 0, 1, // Ethernet/IPv4, request
                2, 0, 0, 0, 0, 7, 10, 1, 0, 2, // sender
                0, 0, 0, 0, 0, 0, 10, 1, 0, 2, // target: unknown MAC, same address
            ]
        );
    }
}
