//! What plugins answer: the result of ADD ([`CniResult`], read in the 0.3.0+ shape,
//! with 0.1.0 / 0.2.0 results converted) and of VERSION ([`VersionInfo`]).

use super::spec::{json_kind, parse_version};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IpConfig {
    /// CIDR form, e.g. `11.10.0.2/20`.
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

impl IpConfig {
    /// The address without its prefix length.
    pub fn ip(&self) -> &str {
        self.address.split('/').next().unwrap_or("")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Route {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// A plugin's success result, read in the 0.3.0+ shape (0.1.0 / 0.2.0 results are
/// converted); [`CniResult::json`] is the result exactly as the plugin printed it, and
/// is what the next plugin gets as `prevResult`.
#[derive(Debug, Clone, PartialEq)]
pub struct CniResult {
    pub cni_version: String,
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
    raw: Value,
}

fn field<T: serde::de::DeserializeOwned + Default>(m: &Map<String, Value>, key: &str) -> Result<T, String> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(T::default()),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| format!("'{key}': {e}")),
    }
}

impl CniResult {
    /// Parses a result; `default_version` applies when it carries no `cniVersion`.
    pub fn parse(bytes: &[u8], default_version: &str) -> Result<Self, String> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| {
            let text = String::from_utf8_lossy(bytes);
            let text = text.trim();
            if text.is_empty() {
                "nothing on stdout".to_string()
            } else {
                format!("not JSON ({e}): {:?}", text.chars().take(200).collect::<String>())
            }
        })?;
        Self::from_value(v, default_version)
    }

    pub fn from_value(v: Value, default_version: &str) -> Result<Self, String> {
        let Value::Object(m) = &v else {
            return Err(format!("expected a JSON object, found {}", json_kind(&v)));
        };
        let cni_version = match m.get("cniVersion") {
            None => default_version.to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => return Err(format!("'cniVersion' is not a string: {other}")),
        };
        let version = parse_version(&cni_version).ok_or_else(|| format!("cniVersion \"{cni_version}\""))?;
        let mut result = CniResult {
            cni_version,
            interfaces: Vec::new(),
            ips: Vec::new(),
            routes: Vec::new(),
            dns: field(m, "dns")?,
            raw: v.clone(),
        };
        if version >= (0, 3, 0) {
            result.interfaces = field(m, "interfaces")?;
            result.ips = field(m, "ips")?;
            result.routes = field(m, "routes")?;
        } else {
            #[derive(Deserialize, Default)]
            struct Legacy {
                ip: String,
                #[serde(default)]
                gateway: Option<String>,
                #[serde(default)]
                routes: Vec<Route>,
            }
            for key in ["ip4", "ip6"] {
                if let Some(l) = field::<Option<Legacy>>(m, key)? {
                    result.ips.push(IpConfig {
                        address: l.ip,
                        gateway: l.gateway,
                        interface: None,
                    });
                    result.routes.extend(l.routes);
                }
            }
        }
        for ip in &result.ips {
            if !ip.address.contains('/') {
                return Err(format!("IP address \"{}\" is not in CIDR form", ip.address));
            }
        }
        Ok(result)
    }

    /// The result as the plugin printed it.
    pub fn json(&self) -> &Value {
        &self.raw
    }

    /// Every address, CIDR form.
    pub fn addresses(&self) -> Vec<String> {
        self.ips.iter().map(|i| i.address.clone()).collect()
    }

    /// Whether one of the addresses is `ip` (no prefix length).
    pub fn has_ip(&self, ip: &str) -> bool {
        self.ips.iter().any(|i| i.ip() == ip)
    }
}

/// A plugin's answer to VERSION.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    pub cni_version: String,
    #[serde(default)]
    pub supported_versions: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_results_of_every_version() {
        let r = CniResult::parse(
            br#"{"cniVersion":"1.0.0","interfaces":[{"name":"cni0","mac":"aa:bb:cc:dd:ee:ff"},{"name":"eth0","mac":"11:22:33:44:55:66","sandbox":"/run/netns/x"}],
                "ips":[{"address":"11.10.16.10/20","gateway":"11.10.16.1","interface":1}],
                "routes":[{"dst":"11.0.0.0/8"},{"dst":"0.0.0.0/0","gw":"11.10.16.1"}],"dns":{}}"#,
            "1.0.0",
        )
        .unwrap();
        assert_eq!(r.cni_version, "1.0.0");
        assert_eq!(r.addresses(), ["11.10.16.10/20"]);
        assert!(r.has_ip("11.10.16.10"));
        assert!(!r.has_ip("11.10.16.1"));
        assert_eq!(r.ips[0].gateway.as_deref(), Some("11.10.16.1"));
        assert_eq!(r.interfaces[1].sandbox, "/run/netns/x");
        assert_eq!(r.routes[1].gw.as_deref(), Some("11.10.16.1"));

        let old = CniResult::parse(
            br#"{"cniVersion":"0.3.1","ips":[{"version":"4","address":"10.0.0.2/24","gateway":"10.0.0.1"}]}"#,
            "1.0.0",
        )
        .unwrap();
        assert_eq!(old.addresses(), ["10.0.0.2/24"]);

        let legacy = CniResult::parse(
            br#"{"cniVersion":"0.2.0","ip4":{"ip":"10.1.0.5/16","gateway":"10.1.0.1","routes":[{"dst":"0.0.0.0/0"}]},"dns":{"nameservers":["8.8.8.8"]}}"#,
            "1.0.0",
        )
        .unwrap();
        assert_eq!(legacy.addresses(), ["10.1.0.5/16"]);
        assert_eq!(legacy.routes[0].dst, "0.0.0.0/0");
        assert_eq!(legacy.dns.nameservers, ["8.8.8.8"]);

        assert!(CniResult::parse(b"", "1.0.0")
            .unwrap_err()
            .contains("nothing on stdout"));
        assert!(CniResult::parse(b"oops", "1.0.0").unwrap_err().contains("not JSON"));
        assert!(CniResult::parse(br#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2"}]}"#, "1.0.0").is_err());
        assert!(CniResult::parse(br#"{"cniVersion":"1.0.0","ips":{}}"#, "1.0.0").is_err());
    }
}
