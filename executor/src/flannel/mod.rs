//! The built-in flannel agent: what `flanneld` does with the etcd subnet manager
//! and the vxlan backend, for machines without a real `flanneld` on PATH.
//!
//! It runs as `knetsim flanneld -iface=IP -etcd-endpoints=URLS -etcd-prefix=PREFIX
//! -subnet-file=PATH` inside a worker's network namespace (the executor starts it
//! there) and
//! - reads `<prefix>/config` (waiting until it exists);
//! - acquires a subnet lease as flannel's `LocalManager` does: a lease or reservation
//!   whose PublicIP is ours is taken over (a reservation, a key without a TTL, stays
//!   one), otherwise a free subnet between SubnetMin and SubnetMax is created with a
//!   24 h TTL and renewed before it expires;
//! - creates `flannel.<VNI>` with a stable VtepMAC (the lease's, the existing
//!   device's, or one derived from the public IP), gives it the subnet's network
//!   address as /32 and publishes PublicIP and VtepMAC in the lease;
//! - sets up its nftables rules as flanneld's nftables mode does (`EnableNFTables`
//!   in the config, or `-ip-masq`: there is no iptables mode here): table
//!   `flannel-ipv4` with the `-ip-masq` masquerade chain and the forward accept
//!   chain; otherwise deletes such tables left by an earlier run;
//! - writes the subnet file (FLANNEL_NETWORK, FLANNEL_SUBNET, FLANNEL_MTU,
//!   FLANNEL_IPMASQ) atomically;
//! - watches `<prefix>/subnets/` and keeps a route, a permanent neighbour and an fdb
//!   entry per other lease in step with it, re-listing when the watch breaks;
//! - logs like flanneld (klog lines on stderr) and exits cleanly on SIGTERM/SIGINT,
//!   or when its own lease is deleted ("Lease has been revoked").

mod agent;
pub mod config;
pub mod device;
pub mod lease;
pub(crate) mod log;
mod traffic;

pub use agent::{install_signal_handlers, run, AgentError};

use std::path::PathBuf;

/// The agent's settings: flanneld's flags that matter here, with flanneld's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// `-iface` values (IP addresses or names), tried in order; empty = the default route's.
    pub iface: Vec<String>,
    /// `-public-ip`: the address published to the other hosts (default: the interface's).
    pub public_ip: Option<String>,
    pub etcd_endpoints: String,
    pub etcd_prefix: String,
    pub subnet_file: PathBuf,
    /// `-subnet-lease-renew-margin`, minutes before expiry to renew a lease.
    pub renew_margin_minutes: u64,
    /// `-ip-masq`: masquerade what leaves the flannel network (and tell the CNI
    /// plugin, through FLANNEL_IPMASQ=true, that its delegate need not).
    pub ip_masq: bool,
    /// `-ip-masq-fully-random-disable`: plain `masquerade`, not `fully-random`.
    pub ip_masq_random_fully_disable: bool,
    /// `-iptables-forward-rules` (default true): accept forwarding to and from the network.
    pub forward_rules: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            iface: Vec::new(),
            public_ip: None,
            etcd_endpoints: "http://127.0.0.1:4001,http://127.0.0.1:2379".into(),
            etcd_prefix: "/coreos.com/network".into(),
            subnet_file: PathBuf::from("/run/flannel/subnet.env"),
            renew_margin_minutes: 60,
            ip_masq: false,
            ip_masq_random_fully_disable: false,
            forward_rules: true,
        }
    }
}

/// What a command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    Run(Options),
    Help,
    Version,
}

/// A command-line error (Go's `flag` exits 2 on these).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

pub const USAGE: &str = "\
Usage: knetsim flanneld [OPTION]...
The built-in flannel agent (etcd subnet manager, vxlan backend). Flags as flanneld's:
  -iface string                    interface (IP or name) to use for inter-host communication; may be repeated
  -public-ip string                IP accessible by other nodes for inter-host communication
  -etcd-endpoints string           a comma-delimited list of etcd endpoints (default \"http://127.0.0.1:4001,http://127.0.0.1:2379\")
  -etcd-prefix string              etcd prefix (default \"/coreos.com/network\")
  -subnet-file string              filename where env variables (subnet, MTU, ...) will be written to (default \"/run/flannel/subnet.env\")
  -subnet-lease-renew-margin int   subnet lease renewal margin, in minutes (default 60)
  -ip-masq                         setup IP masquerade rule for traffic destined outside of overlay network
  -ip-masq-fully-random-disable    disable fully-random mode for MASQUERADE
  -iptables-forward-rules          add default accept rules to FORWARD chain (default true)
  -v int                           log verbosity (accepted, ignored)
  -version                         print version and exit
  -help                            print this message
";

const STRING_FLAGS: &[&str] = &[
    "iface",
    "public-ip",
    "etcd-endpoints",
    "etcd-prefix",
    "subnet-file",
    "subnet-lease-renew-margin",
    "v",
];
const BOOL_FLAGS: &[&str] = &[
    "ip-masq",
    "ip-masq-fully-random-disable",
    "iptables-forward-rules",
    "help",
    "h",
    "version",
];

fn parse_bool(name: &str, v: &str) -> Result<bool, UsageError> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(UsageError(format!(
            "invalid boolean value {v:?} for -{name}: parse error"
        ))),
    }
}

impl Options {
    /// Parses flanneld's flags the way Go's `flag` package does: `-name=value`,
    /// `--name=value`, `-name value`, `--name value`; booleans as `-name` or
    /// `-name=false`; parsing stops at `--`.
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<Invocation, UsageError> {
        let mut o = Options::default();
        let mut i = 0;
        let mut help = false;
        let mut version = false;
        while i < args.len() {
            let arg = args[i].as_ref();
            i += 1;
            if arg == "--" {
                if i < args.len() {
                    return Err(UsageError(format!("unexpected argument {:?}", args[i].as_ref())));
                }
                break;
            }
            let Some(body) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
                return Err(UsageError(format!("unexpected argument {arg:?}")));
            };
            if body.is_empty() || body.starts_with('-') || body.starts_with('=') {
                return Err(UsageError(format!("bad flag syntax: {arg}")));
            }
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            if BOOL_FLAGS.contains(&name) {
                let value = match &inline {
                    Some(v) => parse_bool(name, v)?,
                    None => true,
                };
                match name {
                    "help" | "h" => help |= value,
                    "version" => version |= value,
                    "ip-masq" => o.ip_masq = value,
                    "ip-masq-fully-random-disable" => o.ip_masq_random_fully_disable = value,
                    "iptables-forward-rules" => o.forward_rules = value,
                    _ => unreachable!("listed in BOOL_FLAGS"),
                }
                continue;
            }
            if !STRING_FLAGS.contains(&name) {
                return Err(UsageError(format!("flag provided but not defined: -{name}")));
            }
            let value = match inline {
                Some(v) => v,
                None => {
                    let Some(v) = args.get(i) else {
                        return Err(UsageError(format!("flag needs an argument: -{name}")));
                    };
                    i += 1;
                    v.as_ref().to_string()
                }
            };
            match name {
                "iface" => o.iface.push(value),
                "public-ip" => o.public_ip = Some(value).filter(|v| !v.is_empty()),
                "etcd-endpoints" => o.etcd_endpoints = value,
                "etcd-prefix" => o.etcd_prefix = value,
                "subnet-file" => o.subnet_file = PathBuf::from(value),
                "subnet-lease-renew-margin" => {
                    o.renew_margin_minutes = value.parse().map_err(|_| {
                        UsageError(format!(
                            "invalid value {value:?} for flag -subnet-lease-renew-margin: parse error"
                        ))
                    })?
                }
                "v" => {
                    value
                        .parse::<i32>()
                        .map_err(|_| UsageError(format!("invalid value {value:?} for flag -v: parse error")))?;
                }
                _ => unreachable!("listed in STRING_FLAGS"),
            }
        }
        if help {
            return Ok(Invocation::Help);
        }
        if version {
            return Ok(Invocation::Version);
        }
        // flanneld trims a trailing slash (path.Join), so keys never get "//".
        while o.etcd_prefix.len() > 1 && o.etcd_prefix.ends_with('/') {
            o.etcd_prefix.pop();
        }
        Ok(Invocation::Run(o))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Options {
        match Options::parse(args).unwrap() {
            Invocation::Run(o) => o,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_the_plans_argv() {
        let o = run(&[
            "-iface=10.0.0.3",
            "-etcd-endpoints=http://10.1.0.1:2379,http://10.1.0.2:2379",
            "-etcd-prefix=/coreos.com/network",
            "-subnet-file=/tmp/knetsim/C0w1/flannel-subnet.env",
        ]);
        assert_eq!(o.iface, ["10.0.0.3"]);
        assert_eq!(o.etcd_endpoints, "http://10.1.0.1:2379,http://10.1.0.2:2379");
        assert_eq!(o.etcd_prefix, "/coreos.com/network");
        assert_eq!(o.subnet_file, PathBuf::from("/tmp/knetsim/C0w1/flannel-subnet.env"));
        assert_eq!(o.renew_margin_minutes, 60);
    }

    #[test]
    fn accepts_go_flag_forms() {
        let o = run(&[
            "--iface",
            "eth0",
            "-iface",
            "10.0.0.3",
            "--etcd-prefix=/x/",
            "-subnet-lease-renew-margin",
            "5",
            "-ip-masq=false",
            "-v=2",
        ]);
        assert!(!o.ip_masq);
        assert_eq!(o.iface, ["eth0", "10.0.0.3"]);
        assert_eq!(o.etcd_prefix, "/x");
        assert_eq!(o.renew_margin_minutes, 5);
        assert_eq!(run(&[]), Options::default());
        assert_eq!(Options::parse(&["-h"]).unwrap(), Invocation::Help);
        assert_eq!(Options::parse(&["--help=true"]).unwrap(), Invocation::Help);
        assert_eq!(Options::parse(&["-version"]).unwrap(), Invocation::Version);
    }

    #[test]
    fn takes_flanneld_masquerade_flags() {
        let o = run(&["-ip-masq"]);
        assert!(o.ip_masq && !o.ip_masq_random_fully_disable && o.forward_rules);
        let o = run(&[
            "--ip-masq",
            "-ip-masq-fully-random-disable",
            "--iptables-forward-rules=false",
        ]);
        assert!(o.ip_masq && o.ip_masq_random_fully_disable && !o.forward_rules);
        assert!(!run(&["-ip-masq", "-ip-masq=0"]).ip_masq, "the last one wins, as in Go");
    }

    #[test]
    fn rejects_what_go_rejects() {
        for bad in [
            &["-nope=1"][..],
            &["-iface"],
            &["---iface=x"],
            &["-=x"],
            &["stray"],
            &["-ip-masq=maybe"],
            &["-ip-masq", "true"],
            &["-subnet-lease-renew-margin=x"],
            &["--", "x"],
        ] {
            assert!(Options::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            Options::parse(&["-nope"]).unwrap_err().to_string(),
            "flag provided but not defined: -nope"
        );
    }
}
