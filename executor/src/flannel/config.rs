//! flannel's network config (`<prefix>/config`) and IPv4 subnet arithmetic, with
//! flannel's defaults and checks (`subnet.ParseConfig`, `CheckNetworkConfig`).

use serde::Deserialize;
use serde_json::Value;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network: address and prefix length (flannel's `ip.IP4Net`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Subnet {
    pub ip: Ipv4Addr,
    pub len: u8,
}

impl Subnet {
    pub fn new(ip: Ipv4Addr, len: u8) -> Subnet {
        Subnet { ip, len }
    }

    fn mask(len: u8) -> u32 {
        if len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(len))
        }
    }

    /// The network address (host bits cleared).
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.ip) & Self::mask(self.len))
    }

    /// Number of addresses in the subnet.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.len))
    }

    /// The subnet of the same length right after this one.
    pub fn next(&self) -> Option<Subnet> {
        let next = u64::from(u32::from(self.ip)) + self.size();
        u32::try_from(next)
            .ok()
            .map(|n| Subnet::new(Ipv4Addr::from(n), self.len))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let m = Self::mask(self.len);
        u32::from(ip) & m == u32::from(self.ip) & m
    }

    pub fn overlaps(&self, other: &Subnet) -> bool {
        let len = self.len.min(other.len);
        let m = Self::mask(len);
        u32::from(self.ip) & m == u32::from(other.ip) & m
    }

    /// The address `n` after the subnet's own address (`.1` is `nth(1)`).
    pub fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.ip).wrapping_add(n))
    }

    /// flannel's etcd key name: `11.10.0.0-20`.
    pub fn key_name(&self) -> String {
        format!("{}-{}", self.ip, self.len)
    }

    /// Parses the subnet at the end of an etcd key (`.../subnets/11.10.0.0-20`, an
    /// IPv6 part `&fd00::-64` after it is ignored), as flannel's `ParseSubnetKey`.
    pub fn from_key(key: &str) -> Option<Subnet> {
        let name = key.rsplit('/').next()?;
        let v4 = name.split('&').next()?;
        let (ip, len) = v4.rsplit_once('-')?;
        let ip: Ipv4Addr = ip.parse().ok()?;
        let len: u8 = len.parse().ok().filter(|l| *l <= 32)?;
        Some(Subnet::new(ip, len))
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip, self.len)
    }
}

impl FromStr for Subnet {
    type Err = String;
    fn from_str(s: &str) -> Result<Subnet, String> {
        let (ip, len) = s.split_once('/').ok_or_else(|| format!("`{s}` is not in CIDR form"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| format!("`{s}`: bad IPv4 address"))?;
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| format!("`{s}`: bad prefix length"))?;
        Ok(Subnet::new(ip, len))
    }
}

/// The vxlan backend's settings (`Backend` in the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanConfig {
    pub vni: u32,
    /// UDP port; 0 = the kernel's default (8472).
    pub port: u16,
    pub gbp: bool,
    pub learning: bool,
    pub direct_routing: bool,
}

impl VxlanConfig {
    /// The port the device uses.
    pub fn dst_port(&self) -> u16 {
        if self.port == 0 {
            8472
        } else {
            self.port
        }
    }

    pub fn device(&self) -> String {
        format!("flannel.{}", self.vni)
    }
}

/// The parsed network config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    pub network: Subnet,
    pub subnet_len: u8,
    pub subnet_min: Ipv4Addr,
    pub subnet_max: Ipv4Addr,
    pub backend_type: String,
    pub vxlan: VxlanConfig,
    /// `EnableNFTables`: flanneld's traffic rules in nftables rather than iptables.
    pub enable_nftables: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawConfig {
    network: Option<String>,
    #[serde(default)]
    subnet_len: u8,
    subnet_min: Option<String>,
    subnet_max: Option<String>,
    #[serde(default)]
    backend: Option<Value>,
    #[serde(rename = "EnableIPv6", default)]
    enable_ipv6: bool,
    #[serde(rename = "EnableNFTables", default)]
    enable_nftables: bool,
}

#[derive(Deserialize)]
struct RawVxlan {
    #[serde(rename = "VNI", default)]
    vni: Option<u32>,
    #[serde(rename = "Port", default)]
    port: u16,
    #[serde(rename = "GBP", default)]
    gbp: bool,
    #[serde(rename = "Learning", default)]
    learning: bool,
    #[serde(rename = "DirectRouting", default)]
    direct_routing: bool,
}

impl NetworkConfig {
    /// Parses and checks the config JSON; the defaults are flannel's.
    pub fn parse(text: &str) -> Result<NetworkConfig, String> {
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| format!("bad network config: {e}"))?;
        if raw.enable_ipv6 {
            return Err("EnableIPv6 is not supported by the built-in flannel agent".into());
        }
        let network: Subnet = raw
            .network
            .as_deref()
            .ok_or("the network config has no Network")?
            .parse()?;
        if network.network() != network.ip {
            return Err(format!("Network {network} has host bits set"));
        }
        let subnet_len = if raw.subnet_len != 0 {
            raw.subnet_len
        } else if network.len < 24 {
            // A /24 per host, or half the network when that is a /24 or smaller.
            24
        } else {
            network.len + 1
        };
        if subnet_len <= network.len || subnet_len > 30 {
            return Err(format!(
                "SubnetLen /{subnet_len} must be longer than the Network's /{} and at most /30",
                network.len
            ));
        }
        let step = 1u32 << (32 - u32::from(subnet_len));
        let first = u32::from(network.ip);
        let last = first | !Subnet::mask(network.len);
        let parse_ip = |name: &str, v: &Option<String>, default: u32| -> Result<Ipv4Addr, String> {
            match v {
                None => Ok(Ipv4Addr::from(default)),
                Some(s) => s.parse().map_err(|_| format!("{name} `{s}` is not an IPv4 address")),
            }
        };
        let subnet_min = parse_ip("SubnetMin", &raw.subnet_min, first + step)?;
        let subnet_max = parse_ip("SubnetMax", &raw.subnet_max, last - (step - 1))?;
        for (name, ip) in [("SubnetMin", subnet_min), ("SubnetMax", subnet_max)] {
            if !network.contains(ip) {
                return Err(format!("{name} {ip} is not in Network {network}"));
            }
            if u32::from(ip) % step != 0 {
                return Err(format!("{name} {ip} is not on a /{subnet_len} boundary"));
            }
        }
        if subnet_min > subnet_max {
            return Err(format!("SubnetMin {subnet_min} is after SubnetMax {subnet_max}"));
        }
        let backend = raw.backend.unwrap_or(Value::Null);
        let backend_type = backend.get("Type").and_then(Value::as_str).unwrap_or("udp").to_string();
        let vx: RawVxlan = if backend.is_null() {
            RawVxlan {
                vni: None,
                port: 0,
                gbp: false,
                learning: false,
                direct_routing: false,
            }
        } else {
            serde_json::from_value(backend).map_err(|e| format!("error decoding VXLAN backend config: {e}"))?
        };
        let vni = vx.vni.unwrap_or(1);
        if vni == 0 || vni >= 1 << 24 {
            return Err(format!("VNI {vni} is out of range (1..16777215)"));
        }
        Ok(NetworkConfig {
            network,
            subnet_len,
            subnet_min,
            subnet_max,
            backend_type,
            vxlan: VxlanConfig {
                vni,
                port: vx.port,
                gbp: vx.gbp,
                learning: vx.learning,
                direct_routing: vx.direct_routing,
            },
            enable_nftables: raw.enable_nftables,
        })
    }

    /// Whether a leased subnet still fits this config (flannel's `isSubnetConfigCompat`).
    pub fn fits(&self, sn: &Subnet) -> bool {
        sn.len == self.subnet_len && sn.ip >= self.subnet_min && sn.ip <= self.subnet_max
    }

    /// The free subnets flannel would choose from: the first up to 100 in
    /// SubnetMin..=SubnetMax that overlap no lease.
    pub fn free_subnets(&self, leased: &[Subnet]) -> Vec<Subnet> {
        let mut free = Vec::new();
        let mut sn = Some(Subnet::new(self.subnet_min, self.subnet_len));
        while let Some(s) = sn {
            if s.ip > self.subnet_max || free.len() >= 100 {
                break;
            }
            sn = match leased.iter().find(|l| l.overlaps(&s)) {
                None => {
                    free.push(s);
                    s.next()
                }
                // A lease wider than a subnet covers every subnet up to its end: skip
                // them at once (one `0.0.0.0-0` lease used to mean 2^29 steps).
                Some(l) if l.len < s.len => {
                    let end = u64::from(u32::from(l.network())) + l.size();
                    u32::try_from(end).ok().map(|n| Subnet::new(Ipv4Addr::from(n), s.len))
                }
                Some(_) => s.next(),
            };
        }
        free
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = r#"{"Network":"11.0.0.0/8","SubnetLen":20,"SubnetMin":"11.10.0.0","SubnetMax":"11.99.0.0","Backend":{"Type":"vxlan","VNI":100,"Port":8472}}"#;

    #[test]
    fn parses_the_seed_config() {
        let c = NetworkConfig::parse(SEED).unwrap();
        assert_eq!(c.network.to_string(), "11.0.0.0/8");
        assert_eq!(c.subnet_len, 20);
        assert_eq!(c.subnet_min, Ipv4Addr::new(11, 10, 0, 0));
        assert_eq!(c.subnet_max, Ipv4Addr::new(11, 99, 0, 0));
        assert_eq!(c.backend_type, "vxlan");
        assert_eq!(c.vxlan.vni, 100);
        assert_eq!(c.vxlan.dst_port(), 8472);
        assert_eq!(c.vxlan.device(), "flannel.100");
        assert!(!c.enable_nftables);
        let nft = NetworkConfig::parse(&SEED.replace(r#""Backend""#, r#""EnableNFTables":true,"Backend""#)).unwrap();
        assert!(nft.enable_nftables);
    }

    #[test]
    fn applies_flannel_defaults() {
        let c = NetworkConfig::parse(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#).unwrap();
        assert_eq!(c.subnet_len, 24);
        assert_eq!(c.subnet_min, Ipv4Addr::new(10, 5, 1, 0));
        assert_eq!(c.subnet_max, Ipv4Addr::new(10, 5, 255, 0));
        assert_eq!(c.vxlan.vni, 1);
        assert_eq!(c.vxlan.port, 0);
        assert_eq!(c.vxlan.dst_port(), 8472);
        let small = NetworkConfig::parse(r#"{"Network":"10.5.0.0/24","Backend":{"Type":"vxlan"}}"#).unwrap();
        assert_eq!(small.subnet_len, 25);
        let udp = NetworkConfig::parse(r#"{"Network":"10.5.0.0/16"}"#).unwrap();
        assert_eq!(udp.backend_type, "udp");
    }

    #[test]
    fn rejects_bad_configs() {
        for bad in [
            r#"{}"#,
            r#"{"Network":"10.5.0.1/16"}"#,
            r#"{"Network":"10.5.0.0/16","SubnetLen":16}"#,
            r#"{"Network":"10.5.0.0/16","SubnetMin":"10.6.0.0"}"#,
            r#"{"Network":"10.5.0.0/16","SubnetMin":"10.5.0.7"}"#,
            r#"{"Network":"10.5.0.0/16","SubnetMin":"10.5.9.0","SubnetMax":"10.5.8.0"}"#,
            r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","VNI":0}}"#,
            r#"{"Network":"10.5.0.0/16","EnableIPv6":true}"#,
            "not json",
        ] {
            assert!(NetworkConfig::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn subnet_keys_round_trip() {
        let s = Subnet::from_key("/coreos.com/network/subnets/11.10.16.0-20").unwrap();
        assert_eq!(s, Subnet::new(Ipv4Addr::new(11, 10, 16, 0), 20));
        assert_eq!(s.key_name(), "11.10.16.0-20");
        assert_eq!(s.to_string(), "11.10.16.0/20");
        assert_eq!(Subnet::from_key("/x/subnets/10.1.2.0-24&fd00::-64").unwrap().len, 24);
        assert_eq!(Subnet::from_key("/coreos.com/network/config"), None);
        assert_eq!(Subnet::from_key("/x/subnets/10.1.2.0-40"), None);
    }

    #[test]
    fn subnet_arithmetic() {
        let s: Subnet = "11.10.16.0/20".parse().unwrap();
        assert_eq!(s.nth(1), Ipv4Addr::new(11, 10, 16, 1));
        assert_eq!(s.next().unwrap().to_string(), "11.10.32.0/20");
        assert!(s.contains(Ipv4Addr::new(11, 10, 31, 255)));
        assert!(!s.contains(Ipv4Addr::new(11, 10, 32, 0)));
        assert!(s.overlaps(&"11.0.0.0/8".parse().unwrap()));
        assert!(!s.overlaps(&"11.10.0.0/20".parse().unwrap()));
        assert_eq!("255.255.255.0/24".parse::<Subnet>().unwrap().next(), None);
    }

    #[test]
    fn free_subnets_skip_leases_and_stop_at_max() {
        let c = NetworkConfig::parse(SEED).unwrap();
        let leased: Vec<Subnet> = vec!["11.10.0.0/20".parse().unwrap(), "11.10.32.0/20".parse().unwrap()];
        let free = c.free_subnets(&leased);
        assert_eq!(free.len(), 100);
        assert_eq!(free[0].to_string(), "11.10.16.0/20");
        assert_eq!(free[1].to_string(), "11.10.48.0/20");
        let tiny = NetworkConfig::parse(
            r#"{"Network":"10.0.0.0/16","SubnetLen":24,"SubnetMin":"10.0.1.0","SubnetMax":"10.0.2.0","Backend":{"Type":"vxlan"}}"#,
        )
        .unwrap();
        let free = tiny.free_subnets(&["10.0.2.0/24".parse().unwrap()]);
        assert_eq!(free, vec!["10.0.1.0/24".parse::<Subnet>().unwrap()]);
        assert!(c.fits(&"11.99.0.0/20".parse().unwrap()));
        assert!(!c.fits(&"11.99.16.0/20".parse().unwrap()));
        assert!(!c.fits(&"11.10.0.0/24".parse().unwrap()));
    }
}
