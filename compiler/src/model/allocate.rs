//! Deterministic address arithmetic: Mininet host numbering, flannel subnets, pod IPs, VIPs.

use ipnetwork::Ipv4Network;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::net::Ipv4Addr;

/// The `n`th address of a network (0 = network address), if it is a usable host address.
pub fn nth_host(net: Ipv4Network, n: u64) -> Option<Ipv4Addr> {
    let size = 1u64 << (32 - u32::from(net.prefix()));
    if n == 0 || (size > 2 && n >= size - 1) || n >= size {
        return None;
    }
    Some(Ipv4Addr::from(u32::from(net.network()).wrapping_add(n as u32)))
}

/// Where an address lies in a network: what a diagnostic says when it cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Outside,
    /// The network address (all host bits zero).
    Network,
    /// The broadcast address (all host bits one).
    Broadcast,
    /// A usable host address ([`nth_host`] hands it out).
    Host,
}

impl Slot {
    pub fn of(net: Ipv4Network, ip: Ipv4Addr) -> Slot {
        if !net.contains(ip) {
            return Slot::Outside;
        }
        let n = u64::from(u32::from(ip) - u32::from(net.network()));
        match nth_host(net, n) {
            Some(_) => Slot::Host,
            None if n == 0 => Slot::Network,
            None => Slot::Broadcast,
        }
    }

    /// "is outside", "is the network address of", "is the broadcast address of".
    pub fn relation(self) -> &'static str {
        match self {
            Slot::Outside => "is outside",
            Slot::Network => "is the network address of",
            Slot::Broadcast => "is the broadcast address of",
            Slot::Host => "is a host address of",
        }
    }
}

/// Flannel subnets of `subnet_len` from `min` to `max` (inclusive), lazily.
pub fn flannel_subnets(min: Ipv4Addr, max: Ipv4Addr, subnet_len: u8) -> impl Iterator<Item = Ipv4Network> {
    let step = 1u64 << (32 - u32::from(subnet_len));
    let (min, max) = (u64::from(u32::from(min)), u64::from(u32::from(max)));
    (0..)
        .map(move |i| min + i * step)
        .take_while(move |a| *a <= max)
        .map(move |a| Ipv4Network::new(Ipv4Addr::from(a as u32), subnet_len).expect("prefix <= 32"))
}

/// How many subnets fit from `min` to `max`.
pub fn flannel_subnet_count(min: Ipv4Addr, max: Ipv4Addr, subnet_len: u8) -> u64 {
    let (min, max) = (u64::from(u32::from(min)), u64::from(u32::from(max)));
    if max < min {
        return 0;
    }
    (max - min) / (1u64 << (32 - u32::from(subnet_len))) + 1
}

/// Pod addresses of a worker subnet: `.1` is the bridge gateway, pods start at `.2`.
pub fn pod_ip(subnet: Ipv4Network, index: usize) -> Option<Ipv4Addr> {
    nth_host(subnet, index as u64 + 2)
}

/// Hands out VIPs from a service CIDR in order, skipping the ones already taken.
pub struct VipAllocator {
    net: Ipv4Network,
    next: u64,
    taken: HashSet<Ipv4Addr>,
}

impl VipAllocator {
    pub fn new(net: Ipv4Network, taken: HashSet<Ipv4Addr>) -> Self {
        VipAllocator { net, next: 1, taken }
    }

    pub fn next_free(&mut self) -> Option<Ipv4Addr> {
        loop {
            let ip = nth_host(self.net, self.next)?;
            self.next += 1;
            if self.taken.insert(ip) {
                return Some(ip);
            }
        }
    }
}

/// A stable, locally administered unicast MAC derived from a name.
pub fn stable_mac(seed: &str) -> String {
    let digest = Sha256::digest(seed.as_bytes());
    let mut b = [0u8; 6];
    b.copy_from_slice(&digest[..6]);
    b[0] = (b[0] & 0xfc) | 0x02;
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":")
}

/// Parses tc rate syntax ("10mbit", "1gbit", "500kbit", "100bit") to bits per second.
pub fn parse_rate(text: &str) -> Option<u64> {
    let t = text.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (num, unit) = t.split_at(split);
    let num: f64 = num.parse().ok()?;
    let mult = match unit {
        "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        _ => return None,
    };
    let bits = num * mult;
    (bits >= 1.0).then_some(bits as u64)
}

/// Parses tc time syntax ("10ms", "250us", "1s") to microseconds.
pub fn parse_delay(text: &str) -> Option<u64> {
    let t = text.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (num, unit) = t.split_at(split);
    let num: f64 = num.parse().ok()?;
    let mult = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        _ => return None,
    };
    Some((num * mult) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_tell_network_and_broadcast_from_outside() {
        let net: Ipv4Network = "100.64.0.0/16".parse().unwrap();
        let slot = |ip: &str| Slot::of(net, ip.parse().unwrap());
        assert_eq!(slot("100.64.0.0"), Slot::Network);
        assert_eq!(slot("100.64.255.255"), Slot::Broadcast);
        assert_eq!(slot("100.64.0.1"), Slot::Host);
        assert_eq!(slot("100.65.0.0"), Slot::Outside);
        let p31: Ipv4Network = "10.0.0.0/31".parse().unwrap();
        assert_eq!(Slot::of(p31, "10.0.0.1".parse().unwrap()), Slot::Host);
        let p32: Ipv4Network = "10.0.0.7/32".parse().unwrap();
        assert_eq!(Slot::of(p32, "10.0.0.7".parse().unwrap()), Slot::Network);
    }

    #[test]
    fn mininet_numbering_skips_network_and_broadcast() {
        let net: Ipv4Network = "10.0.0.0/8".parse().unwrap();
        assert_eq!(nth_host(net, 3), Some(Ipv4Addr::new(10, 0, 0, 3)));
        assert_eq!(nth_host(net, 0), None);
        assert_eq!(nth_host(net, (1 << 24) - 1), None);
    }

    #[test]
    fn seed_flannel_range_has_1440_subnets() {
        let (min, max) = (Ipv4Addr::new(11, 10, 0, 0), Ipv4Addr::new(11, 99, 0, 0));
        assert_eq!(flannel_subnet_count(min, max, 20), 1425);
        let first: Vec<_> = flannel_subnets(min, max, 20).take(2).collect();
        assert_eq!(first[1].to_string(), "11.10.16.0/20");
    }

    #[test]
    fn rates_and_delays() {
        assert_eq!(parse_rate("10mbit"), Some(10_000_000));
        assert_eq!(parse_rate("10 parsecs"), None);
        assert_eq!(parse_delay("2.5ms"), Some(2500));
        assert_eq!(parse_delay("fast"), None);
    }

    #[test]
    fn stable_mac_is_local_unicast() {
        let mac = stable_mac("C0w1");
        let first = u8::from_str_radix(&mac[..2], 16).unwrap();
        assert_eq!(first & 0x03, 0x02);
        assert_eq!(mac, stable_mac("C0w1"));
    }
}
