//! The kernel side of the vxlan backend, done with iproute2 argv (`ip`, `bridge`;
//! never a shell) in the agent's own network namespace: the external interface,
//! the `flannel.<VNI>` device, and per peer a route, a permanent neighbour and an
//! fdb entry (flannel's `device.go` and `vxlan_network.go`).

use super::config::Subnet;
use super::lease::{normalize_mac, Change};
use super::log::{info, warning};
use crate::system::process;
use serde_json::Value;
use std::net::Ipv4Addr;

/// flannel's VXLAN encapsulation overhead.
pub const ENCAP_OVERHEAD: u32 = 50;

/// [`process::run`] with its error as text: an argv, returning stdout; a failure
/// carries stderr.
pub(super) fn run(argv: &[&str], stdin: Option<&str>) -> Result<String, String> {
    process::run(argv, stdin).map_err(|e| e.to_string())
}

fn ip_json(args: &[&str]) -> Result<Value, String> {
    let mut argv = vec!["ip", "-j"];
    argv.extend_from_slice(args);
    let out = run(&argv, None)?;
    if out.trim().is_empty() {
        return Ok(Value::Array(Vec::new()));
    }
    serde_json::from_str(&out).map_err(|e| format!("`{}`: bad JSON: {e}", argv.join(" ")))
}

/// The interface flannel sends VXLAN packets from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalIface {
    pub name: String,
    pub ip: Ipv4Addr,
    pub mtu: u32,
}

/// Interfaces with their IPv4 addresses, from `ip -j -4 addr show`.
fn interfaces(v: &Value) -> Vec<(String, u32, Vec<Ipv4Addr>)> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|link| {
            let name = link.get("ifname")?.as_str()?.to_string();
            let mtu = link.get("mtu").and_then(Value::as_u64).unwrap_or(0) as u32;
            let addrs = link
                .get("addr_info")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|a| a.get("family").and_then(Value::as_str) == Some("inet"))
                .filter_map(|a| a.get("local")?.as_str()?.parse().ok())
                .collect();
            Some((name, mtu, addrs))
        })
        .collect()
}

/// Picks the interface for `-iface` (an IP address or a name; None = the one with
/// the default route) from an `ip -j -4 addr show` listing.
pub fn pick_iface(listing: &Value, spec: Option<&str>, default_dev: Option<&str>) -> Result<ExternalIface, String> {
    let links = interfaces(listing);
    let found = match spec {
        Some(s) => match s.parse::<Ipv4Addr>() {
            Ok(ip) => links
                .iter()
                .find(|(_, _, addrs)| addrs.contains(&ip))
                .map(|(name, mtu, _)| (name.clone(), *mtu, ip))
                .ok_or_else(|| format!("no interface with address {ip}"))?,
            Err(_) => {
                let (name, mtu, addrs) = links
                    .iter()
                    .find(|(name, _, _)| name == s)
                    .ok_or_else(|| format!("no interface named {s}"))?;
                let ip = *addrs
                    .first()
                    .ok_or_else(|| format!("failed to find IPv4 address for interface {s}"))?;
                (name.clone(), *mtu, ip)
            }
        },
        None => {
            let dev = default_dev.ok_or("no default route: pass -iface")?;
            let (name, mtu, addrs) = links
                .iter()
                .find(|(name, _, _)| name == dev)
                .ok_or_else(|| format!("default interface {dev} not found"))?;
            let ip = *addrs
                .first()
                .ok_or_else(|| format!("failed to find IPv4 address for interface {dev}"))?;
            (name.clone(), *mtu, ip)
        }
    };
    let (name, mtu, ip) = found;
    if mtu == 0 {
        return Err(format!("failed to determine MTU for {name} interface"));
    }
    Ok(ExternalIface { name, ip, mtu })
}

/// Looks the external interface up in this namespace.
pub fn find_iface(spec: Option<&str>) -> Result<ExternalIface, String> {
    let listing = ip_json(&["-4", "addr", "show"])?;
    let default_dev = if spec.is_none() {
        let routes = ip_json(&["-4", "route", "show", "default"])?;
        routes
            .as_array()
            .and_then(|r| r.first())
            .and_then(|r| r.get("dev"))
            .and_then(Value::as_str)
            .map(str::to_string)
    } else {
        None
    };
    pick_iface(&listing, spec, default_dev.as_deref())
}

/// The VXLAN device to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vtep {
    pub name: String,
    pub vni: u32,
    pub local: Ipv4Addr,
    pub port: u16,
    /// The external interface's name.
    pub dev: String,
    pub mtu: u32,
    pub mac: String,
    pub learning: bool,
    pub gbp: bool,
}

impl Vtep {
    /// `ip link add` argv for the device.
    pub fn add_argv(&self) -> Vec<String> {
        let mut argv: Vec<String> = [
            "ip",
            "link",
            "add",
            &self.name,
            "address",
            &self.mac,
            "mtu",
            &self.mtu.to_string(),
            "type",
            "vxlan",
            "id",
            &self.vni.to_string(),
            "local",
            &self.local.to_string(),
            "dev",
            &self.dev,
            "dstport",
            &self.port.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        argv.push(if self.learning { "learning" } else { "nolearning" }.into());
        if self.gbp {
            argv.push("gbp".into());
        }
        argv
    }

    /// Why an existing device (its `ip -j -d link show` entry) cannot be reused, if it can't
    /// (flannel's `vxlanLinksIncompat`).
    pub fn incompatibility(&self, link: &Value) -> Option<String> {
        let info = link.get("linkinfo");
        let kind = info.and_then(|i| i.get("info_kind")).and_then(Value::as_str);
        if kind != Some("vxlan") {
            return Some(format!("link type: vxlan vs {}", kind.unwrap_or("unknown")));
        }
        let data = info.and_then(|i| i.get("info_data")).cloned().unwrap_or(Value::Null);
        let id = data.get("id").and_then(Value::as_u64).unwrap_or(0);
        if id != u64::from(self.vni) {
            return Some(format!("vni: {} vs {id}", self.vni));
        }
        if let Some(local) = data.get("local").and_then(Value::as_str) {
            if local != self.local.to_string() {
                return Some(format!("vtep (external) IP: {} vs {local}", self.local));
            }
        }
        if let Some(port) = data.get("port").and_then(Value::as_u64) {
            if port != 0 && port != u64::from(self.port) {
                return Some(format!("port: {} vs {port}", self.port));
            }
        }
        if let Some(dev) = data.get("link").and_then(Value::as_str) {
            if dev != self.dev {
                return Some(format!("vtep (external) interface: {} vs {dev}", self.dev));
            }
        }
        let gbp = data.get("gbp").is_some_and(|g| g.as_bool().unwrap_or(true));
        if gbp != self.gbp {
            return Some(format!("gbp: {} vs {gbp}", self.gbp));
        }
        None
    }
}

/// The `ip -j -d link show NAME` entry of a device, if it exists.
fn link(name: &str) -> Result<Option<Value>, String> {
    match ip_json(&["-d", "link", "show", "dev", name]) {
        Ok(v) => Ok(v.as_array().and_then(|a| a.first()).cloned()),
        Err(e) if e.contains("does not exist") || e.contains("Cannot find device") => Ok(None),
        Err(e) => Err(e),
    }
}

/// The MAC of an existing device, if there is one.
pub fn existing_mac(name: &str) -> Option<String> {
    link(name)
        .ok()
        .flatten()
        .and_then(|l| l.get("address").and_then(Value::as_str).and_then(normalize_mac))
}

/// Creates the VXLAN device, or reuses a compatible existing one (setting its MAC
/// and MTU), or replaces an incompatible one.
pub fn ensure_vtep(v: &Vtep) -> Result<(), String> {
    let argv = v.add_argv();
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    match link(&v.name)? {
        None => {
            run(&argv, None)?;
        }
        Some(existing) => match v.incompatibility(&existing) {
            None => {
                info!("VXLAN device already exists, reusing {}", v.name);
                let mac = existing.get("address").and_then(Value::as_str).unwrap_or_default();
                if normalize_mac(mac).as_deref() != Some(v.mac.as_str()) {
                    run(&["ip", "link", "set", "dev", &v.name, "address", &v.mac], None)?;
                }
                run(&["ip", "link", "set", "dev", &v.name, "mtu", &v.mtu.to_string()], None)?;
            }
            Some(why) => {
                warning!(
                    "{:?} already exists with incompatible configuration: {why}; recreating device",
                    v.name
                );
                run(&["ip", "link", "del", "dev", &v.name], None)?;
                run(&argv, None)?;
            }
        },
    }
    // As flannel: no router advertisements on the VTEP (best effort: IPv6 may be off).
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{}/accept_ra", v.name), "0");
    Ok(())
}

/// IPv4 addresses with their prefix lengths in an `ip -j -4 addr show` listing.
fn inet_addrs(listing: &Value) -> Vec<(Ipv4Addr, u64)> {
    listing
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|link| link.get("addr_info").and_then(Value::as_array))
        .flatten()
        .filter(|a| a.get("family").and_then(Value::as_str) == Some("inet"))
        .filter_map(|a| {
            let ip = a.get("local")?.as_str()?.parse().ok()?;
            Some((ip, a.get("prefixlen").and_then(Value::as_u64).unwrap_or(32)))
        })
        .collect()
}

/// Gives the device exactly `addr`/32 as IPv4 address and brings it up
/// (flannel's `EnsureV4AddressOnLink` + `LinkSetUp`).
pub fn configure(name: &str, addr: Ipv4Addr) -> Result<(), String> {
    let listing = ip_json(&["-4", "addr", "show", "dev", name])?;
    let mut have = false;
    for (a, prefix) in inet_addrs(&listing) {
        if a == addr && prefix == 32 {
            have = true;
        } else {
            run(&["ip", "addr", "del", &format!("{a}/{prefix}"), "dev", name], None)?;
        }
    }
    if !have {
        run(&["ip", "addr", "add", &format!("{addr}/32"), "dev", name], None)?;
    }
    run(&["ip", "link", "set", "dev", name, "up"], None).map(drop)
}

/// iproute2 batch lines that bring the peers' entries in step with `changes`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Batch {
    /// `bridge -batch` lines removing stale fdb entries.
    pub fdb_del: Vec<String>,
    /// `ip -batch` lines removing routes and neighbours.
    pub ip_del: Vec<String>,
    /// `bridge -batch` lines adding fdb entries.
    pub fdb_add: Vec<String>,
    /// `ip -batch` lines adding neighbours, then routes (the route last, as flannel:
    /// the kernel would ARP for the gateway otherwise).
    pub ip_add: Vec<String>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.fdb_del.is_empty() && self.ip_del.is_empty() && self.fdb_add.is_empty() && self.ip_add.is_empty()
    }
}

/// The iproute2 lines for `changes` on device `dev`; changes of non-vxlan leases or
/// leases without a VtepMAC are skipped with a warning.
pub fn batch(dev: &str, changes: &[Change]) -> Batch {
    let mut b = Batch::default();
    let mut routes = Vec::new();
    for change in changes {
        match change {
            Change::Added {
                subnet,
                attrs,
                previous,
            } => {
                let Some(vx) = attrs.vxlan_attrs() else {
                    warning!(
                        "ignoring non-vxlan subnet({subnet}): type={} data={}",
                        attrs.backend_type,
                        attrs.backend_data
                    );
                    // A lease that was usable and no longer is: take its entries away.
                    if let Some(old) = previous {
                        remove_lines(&mut b, dev, subnet, old);
                    }
                    continue;
                };
                if let Some(old) = previous
                    .as_ref()
                    .and_then(|p| p.vxlan_attrs().map(|o| (p.public_ip, o)))
                {
                    if old.0 != attrs.public_ip || old.1.vtep_mac != vx.vtep_mac {
                        b.fdb_del
                            .push(format!("fdb del {} dev {dev} dst {} self", old.1.vtep_mac, old.0));
                    }
                }
                b.fdb_add.push(format!(
                    "fdb replace {} dev {dev} dst {} self permanent",
                    vx.vtep_mac, attrs.public_ip
                ));
                b.ip_add.push(format!(
                    "neigh replace {} lladdr {} dev {dev} nud permanent",
                    subnet.ip, vx.vtep_mac
                ));
                routes.push(format!("route replace {subnet} via {} dev {dev} onlink", subnet.ip));
            }
            Change::Removed { subnet, attrs } => remove_lines(&mut b, dev, subnet, attrs),
        }
    }
    b.ip_add.extend(routes);
    b
}

fn remove_lines(b: &mut Batch, dev: &str, subnet: &Subnet, attrs: &super::lease::LeaseAttrs) {
    b.ip_del.push(format!("route del {subnet} dev {dev}"));
    b.ip_del.push(format!("neigh del {} dev {dev}", subnet.ip));
    if let Some(vx) = attrs.vxlan_attrs() {
        b.fdb_del.push(format!(
            "fdb del {} dev {dev} dst {} self",
            vx.vtep_mac, attrs.public_ip
        ));
    }
}

/// Runs a batch: removals first (their failures, e.g. an entry already gone, are
/// only reported), then additions. Returns the errors of the additions.
pub fn apply(b: &Batch) -> Result<(), String> {
    let exec = |tool: &str, lines: &[String]| -> Result<(), String> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut input = lines.join("\n");
        input.push('\n');
        run(&[tool, "-force", "-batch", "-"], Some(&input)).map(drop)
    };
    if let Err(e) = exec("ip", &b.ip_del) {
        warning!("removing routes/neighbours: {e}");
    }
    if let Err(e) = exec("bridge", &b.fdb_del) {
        warning!("removing fdb entries: {e}");
    }
    // FDB before neighbour and route, as flannel orders them.
    let fdb = exec("bridge", &b.fdb_add);
    let ip = exec("ip", &b.ip_add);
    match (fdb, ip) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(a), Ok(())) | (Ok(()), Err(a)) => Err(a),
        (Err(a), Err(c)) => Err(format!("{a}; {c}")),
    }
}

/// Routes on `dev` with a gateway whose destination is not in `keep`: the leftovers
/// of leases that vanished while no agent was watching.
pub fn stale_routes(dev: &str, keep: &[Subnet]) -> Result<Vec<String>, String> {
    let routes = match ip_json(&["-4", "route", "show", "dev", dev]) {
        Ok(v) => v,
        Err(e) if e.contains("does not exist") || e.contains("Cannot find device") => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(routes
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r.get("gateway").is_some())
        .filter_map(|r| r.get("dst").and_then(Value::as_str))
        .filter(|dst| dst.parse::<Subnet>().map(|s| !keep.contains(&s)).unwrap_or(false))
        .map(str::to_string)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::super::lease::LeaseAttrs;
    use super::*;
    use serde_json::json;

    fn sn(s: &str) -> Subnet {
        s.parse().unwrap()
    }

    #[test]
    fn picks_the_external_interface() {
        let listing = json!([
            {"ifname": "lo", "mtu": 65536, "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8}]},
            {"ifname": "C0w1-eth0", "mtu": 1500, "addr_info": [{"family": "inet", "local": "10.0.0.3", "prefixlen": 8}]},
            {"ifname": "flannel.100", "mtu": 1450, "addr_info": [{"family": "inet", "local": "11.10.0.0", "prefixlen": 32}]}
        ]);
        let by_ip = pick_iface(&listing, Some("10.0.0.3"), None).unwrap();
        assert_eq!(
            by_ip,
            ExternalIface {
                name: "C0w1-eth0".into(),
                ip: "10.0.0.3".parse().unwrap(),
                mtu: 1500
            }
        );
        assert_eq!(pick_iface(&listing, Some("C0w1-eth0"), None).unwrap(), by_ip);
        assert_eq!(pick_iface(&listing, None, Some("C0w1-eth0")).unwrap(), by_ip);
        assert!(pick_iface(&listing, Some("10.0.0.9"), None).is_err());
        assert!(pick_iface(&listing, Some("eth9"), None).is_err());
        assert!(pick_iface(&listing, None, None).is_err());
    }

    fn vtep() -> Vtep {
        Vtep {
            name: "flannel.100".into(),
            vni: 100,
            local: "10.0.0.3".parse().unwrap(),
            port: 8472,
            dev: "eth0".into(),
            mtu: 1450,
            mac: "0a:26:bc:47:90:98".into(),
            learning: false,
            gbp: false,
        }
    }

    #[test]
    fn vtep_argv_and_compatibility() {
        assert_eq!(
            vtep().add_argv().join(" "),
            "ip link add flannel.100 address 0a:26:bc:47:90:98 mtu 1450 type vxlan id 100 local 10.0.0.3 dev eth0 dstport 8472 nolearning"
        );
        let same = json!({"linkinfo": {"info_kind": "vxlan", "info_data": {"id": 100, "local": "10.0.0.3", "link": "eth0", "port": 8472, "learning": false}}});
        assert_eq!(vtep().incompatibility(&same), None);
        let other_vni = json!({"linkinfo": {"info_kind": "vxlan", "info_data": {"id": 1, "local": "10.0.0.3"}}});
        assert!(vtep().incompatibility(&other_vni).unwrap().contains("vni"));
        let bridge = json!({"linkinfo": {"info_kind": "bridge"}});
        assert!(vtep().incompatibility(&bridge).unwrap().contains("link type"));
        let other_port = json!({"linkinfo": {"info_kind": "vxlan", "info_data": {"id": 100, "port": 4789}}});
        assert!(vtep().incompatibility(&other_port).unwrap().contains("port"));
    }

    #[test]
    fn batches_follow_the_changes() {
        let a = LeaseAttrs::vxlan("10.0.0.4".parse().unwrap(), 100, "0a:00:00:00:00:04");
        let a2 = LeaseAttrs::vxlan("10.0.0.9".parse().unwrap(), 100, "0a:00:00:00:00:09");
        let b = batch(
            "flannel.100",
            &[
                Change::Added {
                    subnet: sn("11.10.16.0/20"),
                    attrs: a.clone(),
                    previous: None,
                },
                Change::Removed {
                    subnet: sn("11.10.32.0/20"),
                    attrs: a2.clone(),
                },
            ],
        );
        assert_eq!(
            b.fdb_add,
            ["fdb replace 0a:00:00:00:00:04 dev flannel.100 dst 10.0.0.4 self permanent"]
        );
        assert_eq!(
            b.ip_add,
            [
                "neigh replace 11.10.16.0 lladdr 0a:00:00:00:00:04 dev flannel.100 nud permanent",
                "route replace 11.10.16.0/20 via 11.10.16.0 dev flannel.100 onlink",
            ]
        );
        assert_eq!(
            b.ip_del,
            [
                "route del 11.10.32.0/20 dev flannel.100",
                "neigh del 11.10.32.0 dev flannel.100"
            ]
        );
        assert_eq!(
            b.fdb_del,
            ["fdb del 0a:00:00:00:00:09 dev flannel.100 dst 10.0.0.9 self"]
        );

        // A changed lease: the old fdb entry goes, the new one comes.
        let b = batch(
            "flannel.100",
            &[Change::Added {
                subnet: sn("11.10.16.0/20"),
                attrs: a2.clone(),
                previous: Some(a.clone()),
            }],
        );
        assert_eq!(
            b.fdb_del,
            ["fdb del 0a:00:00:00:00:04 dev flannel.100 dst 10.0.0.4 self"]
        );
        assert_eq!(b.fdb_add.len(), 1);
        assert!(b.ip_del.is_empty());

        // Non-vxlan leases are ignored.
        let udp = LeaseAttrs::parse(br#"{"PublicIP":"10.0.0.5","BackendType":"udp"}"#).unwrap();
        let b = batch(
            "flannel.100",
            &[Change::Added {
                subnet: sn("11.10.48.0/20"),
                attrs: udp,
                previous: None,
            }],
        );
        assert!(b.is_empty());
    }
}
