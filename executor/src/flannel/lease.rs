//! Subnet leases as flannel stores them in etcd, and the bookkeeping of the other
//! hosts' leases that the vxlan backend keeps in step with (flannel's
//! `leaseWatcher`, keyed by subnet).

use super::config::Subnet;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// The vxlan backend's part of a lease (`BackendData`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VxlanAttrs {
    #[serde(rename = "VNI")]
    pub vni: u32,
    #[serde(rename = "VtepMAC")]
    pub vtep_mac: String,
}

/// flannel's `LeaseAttrs`, the JSON value of a subnet key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseAttrs {
    pub public_ip: Ipv4Addr,
    pub backend_type: String,
    pub backend_data: Value,
}

#[derive(Serialize)]
struct AttrsJson<'a> {
    #[serde(rename = "PublicIP")]
    public_ip: String,
    #[serde(rename = "BackendType")]
    backend_type: &'a str,
    #[serde(rename = "BackendData", skip_serializing_if = "Value::is_null")]
    backend_data: &'a Value,
}

impl LeaseAttrs {
    pub fn vxlan(public_ip: Ipv4Addr, vni: u32, vtep_mac: &str) -> LeaseAttrs {
        LeaseAttrs {
            public_ip,
            backend_type: "vxlan".into(),
            backend_data: serde_json::to_value(VxlanAttrs {
                vni,
                vtep_mac: vtep_mac.to_string(),
            })
            .expect("plain struct"),
        }
    }

    pub fn parse(bytes: &[u8]) -> Result<LeaseAttrs, String> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("bad lease JSON: {e}"))?;
        let public_ip = v
            .get("PublicIP")
            .and_then(Value::as_str)
            .ok_or("lease has no PublicIP")?;
        let public_ip = public_ip
            .parse()
            .map_err(|_| format!("lease PublicIP `{public_ip}` is not an IPv4 address"))?;
        Ok(LeaseAttrs {
            public_ip,
            backend_type: v
                .get("BackendType")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            backend_data: v.get("BackendData").cloned().unwrap_or(Value::Null),
        })
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(&AttrsJson {
            public_ip: self.public_ip.to_string(),
            backend_type: &self.backend_type,
            backend_data: &self.backend_data,
        })
        .expect("plain struct")
    }

    /// The vxlan attributes, when this is a vxlan lease with a usable VtepMAC.
    pub fn vxlan_attrs(&self) -> Option<VxlanAttrs> {
        if self.backend_type != "vxlan" {
            return None;
        }
        let mac = self.backend_data.get("VtepMAC")?.as_str()?;
        let mac = normalize_mac(mac)?;
        let vni = self.backend_data.get("VNI").and_then(Value::as_u64).unwrap_or(0) as u32;
        Some(VxlanAttrs { vni, vtep_mac: mac })
    }
}

/// `aa:bb:cc:dd:ee:ff` in lower case, or None when `mac` is not a unicast MAC.
pub fn normalize_mac(mac: &str) -> Option<String> {
    let parts: Vec<u8> = mac
        .split([':', '-'])
        .map(|p| {
            if p.len() == 2 {
                u8::from_str_radix(p, 16).ok()
            } else {
                None
            }
        })
        .collect::<Option<Vec<u8>>>()?;
    if parts.len() != 6 || parts[0] & 1 == 1 || parts.iter().all(|b| *b == 0) {
        return None;
    }
    Some(parts.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"))
}

/// A stable, locally administered unicast MAC for a VTEP, derived from what
/// identifies it (public IP and VNI), for hosts whose lease carries none.
pub fn derived_mac(public_ip: Ipv4Addr, vni: u32) -> String {
    // FNV-1a, 64 bit.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!("vtep/{public_ip}/{vni}").bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut b = h.to_be_bytes();
    b[0] = (b[0] & 0xfc) | 0x02;
    b[..6].iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":")
}

/// A lease as read from etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub subnet: Subnet,
    pub attrs: LeaseAttrs,
    /// The etcd lease the key is attached to; 0 = a reservation (never expires).
    pub lease_id: i64,
}

impl Lease {
    pub fn is_reservation(&self) -> bool {
        self.lease_id == 0
    }
}

/// What changed about another host's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A new lease, or a lease whose attributes changed (`previous` = the old ones).
    Added {
        subnet: Subnet,
        attrs: LeaseAttrs,
        previous: Option<LeaseAttrs>,
    },
    /// The lease was deleted or expired; `attrs` = what it was.
    Removed { subnet: Subnet, attrs: LeaseAttrs },
}

/// The other hosts' leases as last seen; own subnet excluded.
#[derive(Debug, Default)]
pub struct LeaseWatcher {
    own: Option<Subnet>,
    leases: BTreeMap<Subnet, LeaseAttrs>,
}

impl LeaseWatcher {
    pub fn new(own: Subnet) -> LeaseWatcher {
        LeaseWatcher {
            own: Some(own),
            leases: BTreeMap::new(),
        }
    }

    pub fn known(&self) -> impl Iterator<Item = (&Subnet, &LeaseAttrs)> {
        self.leases.iter()
    }

    /// Replaces everything with a fresh listing; returns the differences.
    pub fn reset(&mut self, snapshot: &[(Subnet, LeaseAttrs)]) -> Vec<Change> {
        let mut next: BTreeMap<Subnet, LeaseAttrs> = BTreeMap::new();
        for (sn, attrs) in snapshot {
            if Some(*sn) != self.own {
                next.insert(*sn, attrs.clone());
            }
        }
        let mut changes = Vec::new();
        for (sn, attrs) in &self.leases {
            if !next.contains_key(sn) {
                changes.push(Change::Removed {
                    subnet: *sn,
                    attrs: attrs.clone(),
                });
            }
        }
        for (sn, attrs) in &next {
            match self.leases.get(sn) {
                Some(old) if old == attrs => {}
                old => changes.push(Change::Added {
                    subnet: *sn,
                    attrs: attrs.clone(),
                    previous: old.cloned(),
                }),
            }
        }
        self.leases = next;
        changes
    }

    /// A lease was put; None if it is own or nothing changed.
    pub fn put(&mut self, subnet: Subnet, attrs: LeaseAttrs) -> Option<Change> {
        if Some(subnet) == self.own {
            return None;
        }
        let previous = self.leases.insert(subnet, attrs.clone());
        if previous.as_ref() == Some(&attrs) {
            return None;
        }
        Some(Change::Added {
            subnet,
            attrs,
            previous,
        })
    }

    /// A lease was deleted (or expired); None if it is own or was unknown.
    pub fn delete(&mut self, subnet: Subnet) -> Option<Change> {
        if Some(subnet) == self.own {
            return None;
        }
        self.leases
            .remove(&subnet)
            .map(|attrs| Change::Removed { subnet, attrs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sn(s: &str) -> Subnet {
        s.parse().unwrap()
    }

    fn attrs(ip: [u8; 4], mac: &str) -> LeaseAttrs {
        LeaseAttrs::vxlan(Ipv4Addr::from(ip), 100, mac)
    }

    #[test]
    fn lease_json_matches_flannel() {
        let a = attrs([10, 0, 0, 3], "0a:26:bc:47:90:98");
        assert_eq!(
            a.to_json(),
            r#"{"PublicIP":"10.0.0.3","BackendType":"vxlan","BackendData":{"VNI":100,"VtepMAC":"0a:26:bc:47:90:98"}}"#
        );
        let back = LeaseAttrs::parse(a.to_json().as_bytes()).unwrap();
        assert_eq!(back, a);
        assert_eq!(
            back.vxlan_attrs().unwrap(),
            VxlanAttrs {
                vni: 100,
                vtep_mac: "0a:26:bc:47:90:98".into()
            }
        );
        // The compiler's reservation file format (pretty-printed) parses too.
        let pretty = "{\n  \"PublicIP\": \"10.0.0.4\",\n  \"BackendType\": \"vxlan\",\n  \"BackendData\": {\n    \"VNI\": 100,\n    \"VtepMAC\": \"0A:BB:CC:DD:EE:FF\"\n  }\n}";
        let p = LeaseAttrs::parse(pretty.as_bytes()).unwrap();
        assert_eq!(p.vxlan_attrs().unwrap().vtep_mac, "0a:bb:cc:dd:ee:ff");
        assert!(LeaseAttrs::parse(br#"{"BackendType":"vxlan"}"#).is_err());
        let udp = LeaseAttrs::parse(br#"{"PublicIP":"10.0.0.5","BackendType":"udp"}"#).unwrap();
        assert_eq!(udp.vxlan_attrs(), None);
        assert_eq!(udp.to_json(), r#"{"PublicIP":"10.0.0.5","BackendType":"udp"}"#);
    }

    #[test]
    fn macs() {
        assert_eq!(normalize_mac("0A-01-02-03-04-05").unwrap(), "0a:01:02:03:04:05");
        assert_eq!(normalize_mac("01:00:5e:00:00:01"), None, "multicast");
        assert_eq!(normalize_mac("00:00:00:00:00:00"), None);
        assert_eq!(normalize_mac("0a:01:02:03:04"), None);
        let m = derived_mac(Ipv4Addr::new(10, 0, 0, 4), 100);
        assert_eq!(m, derived_mac(Ipv4Addr::new(10, 0, 0, 4), 100), "stable");
        assert_ne!(m, derived_mac(Ipv4Addr::new(10, 0, 0, 5), 100));
        assert_eq!(normalize_mac(&m).as_deref(), Some(m.as_str()), "unicast");
        let first = u8::from_str_radix(&m[..2], 16).unwrap();
        assert_eq!(first & 0x03, 0x02, "locally administered unicast");
    }

    #[test]
    fn watcher_tracks_adds_changes_and_removals() {
        let own = sn("11.10.0.0/20");
        let mut w = LeaseWatcher::new(own);
        let a = attrs([10, 0, 0, 4], "0a:00:00:00:00:04");
        let b = attrs([10, 0, 0, 5], "0a:00:00:00:00:05");
        let changes = w.reset(&[
            (own, attrs([10, 0, 0, 3], "0a:00:00:00:00:03")),
            (sn("11.10.16.0/20"), a.clone()),
        ]);
        assert_eq!(
            changes,
            vec![Change::Added {
                subnet: sn("11.10.16.0/20"),
                attrs: a.clone(),
                previous: None
            }]
        );
        assert_eq!(w.put(own, a.clone()), None, "own lease is not a peer");
        assert_eq!(w.put(sn("11.10.16.0/20"), a.clone()), None, "renewal: no change");
        let a2 = attrs([10, 0, 0, 4], "0a:00:00:00:00:44");
        assert_eq!(
            w.put(sn("11.10.16.0/20"), a2.clone()),
            Some(Change::Added {
                subnet: sn("11.10.16.0/20"),
                attrs: a2.clone(),
                previous: Some(a.clone())
            })
        );
        assert!(matches!(
            w.put(sn("11.10.32.0/20"), b.clone()),
            Some(Change::Added { previous: None, .. })
        ));
        assert_eq!(
            w.delete(sn("11.10.32.0/20")),
            Some(Change::Removed {
                subnet: sn("11.10.32.0/20"),
                attrs: b.clone()
            })
        );
        assert_eq!(w.delete(sn("11.10.32.0/20")), None);
        assert_eq!(w.delete(own), None);
        // A re-list after a broken watch: one lease vanished, one appeared.
        w.put(sn("11.10.32.0/20"), b.clone());
        let changes = w.reset(&[(sn("11.10.32.0/20"), b.clone()), (sn("11.10.48.0/20"), a.clone())]);
        assert_eq!(
            changes,
            vec![
                Change::Removed {
                    subnet: sn("11.10.16.0/20"),
                    attrs: a2
                },
                Change::Added {
                    subnet: sn("11.10.48.0/20"),
                    attrs: a,
                    previous: None
                },
            ]
        );
        assert_eq!(w.known().count(), 2);
    }
}
