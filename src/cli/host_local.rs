//! The address host-local hands out next on a worker, so that `pod add` pins the
//! address the real plugin would choose. host-local goes round its range from the
//! last address it reserved (`last_reserved_ip.0`) instead of reusing a freed one at
//! once: a freshly deleted pod's address would still sit in neighbours' ARP caches
//! with the old MAC, and the new pod's first connections would stall.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// host-local's state file of its first range (`<dataDir>/<network>/last_reserved_ip.0`).
pub fn last_reserved_path(flannel_conf: &str) -> Option<PathBuf> {
    let conf: serde_json::Value = serde_json::from_str(flannel_conf).ok()?;
    let data_dir = conf["ipam"]["dataDir"].as_str()?;
    let network = conf["name"].as_str()?;
    Some(PathBuf::from(data_dir).join(network).join("last_reserved_ip.0"))
}

/// The first free address after `last` in `subnet` (network/prefix), going round;
/// the network address, the gateway (.1) and the broadcast address are never handed out.
pub fn next_after(network: Ipv4Addr, prefix: u8, last: Ipv4Addr, used: &HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    if prefix > 30 {
        return None;
    }
    let base = u32::from(network) & (u32::MAX << (32 - prefix));
    let first = base + 2;
    let end = base | (u32::MAX >> prefix); // broadcast, excluded
    let size = end - first;
    let start = u32::from(last);
    let start = if (first..end).contains(&start) { start } else { end - 1 };
    (1..=size)
        .map(|step| first + (start - first + step) % size)
        .map(Ipv4Addr::from)
        .find(|ip| !used.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn goes_on_after_the_last_reserved_address_and_skips_used_ones() {
        let used: HashSet<_> = [ip("11.10.0.2"), ip("11.10.0.4")].into();
        // .3 was freed by a pod rm; the next pod still gets .5, as host-local does.
        assert_eq!(
            next_after(ip("11.10.0.0"), 20, ip("11.10.0.4"), &used),
            Some(ip("11.10.0.5"))
        );
        assert_eq!(
            next_after(ip("11.10.0.0"), 20, ip("11.10.0.3"), &used),
            Some(ip("11.10.0.5"))
        );
    }

    #[test]
    fn wraps_round_to_the_start_of_the_range() {
        let used: HashSet<_> = [ip("11.10.0.2"), ip("11.10.0.6")].into();
        // A /29: usable .2 to .6 (.1 is the gateway, .7 the broadcast address).
        assert_eq!(
            next_after(ip("11.10.0.0"), 29, ip("11.10.0.6"), &used),
            Some(ip("11.10.0.3"))
        );
        let full: HashSet<_> = (2..=6).map(|i| Ipv4Addr::new(11, 10, 0, i)).collect();
        assert_eq!(next_after(ip("11.10.0.0"), 29, ip("11.10.0.6"), &full), None);
    }

    #[test]
    fn reads_the_state_path_from_the_cni_config() {
        let conf = r#"{"name":"C0w1","ipam":{"type":"host-local","dataDir":"/tmp/knetsim/C0w1/ipam"}}"#;
        assert_eq!(
            last_reserved_path(conf),
            Some(PathBuf::from("/tmp/knetsim/C0w1/ipam/C0w1/last_reserved_ip.0"))
        );
    }
}
