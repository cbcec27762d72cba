//! Preflight: before `up` changes anything, every program and plugin the plan
//! needs is looked for, and all missing ones are reported at once with the Debian
//! package that provides them.

use crate::system::process::{provider, Provider, SELF_NAME};
use knetsim_compiler::plan::{Impair, Op, Plan, StartProcess};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Where CNI plugins are looked for: where the CNI runtime looks (Debian's
/// containernetworking-plugins first).
pub const CNI_PLUGIN_DIRS: &[&str] = crate::cni::DEFAULT_PLUGIN_DIRS;

/// The CNI plugins a pod ADD runs (the flannel meta plugin itself is built in).
pub const CNI_PLUGINS: &[&str] = &["bridge", "host-local", "loopback"];

/// The Debian package that provides a program or plugin, if known.
pub fn package_for(program: &str) -> Option<&'static str> {
    Some(match program {
        "ip" | "tc" => "iproute2",
        "nft" => "nftables",
        "etcd" => "etcd-server",
        "etcdctl" => "etcd-client",
        "nginx" => "nginx-light",
        "dnsmasq" => "dnsmasq-base",
        "dig" | "nslookup" => "bind9-dnsutils",
        "flanneld" => "flannel",
        "skrouterd" => "skupper-router",
        "bridge" | "host-local" | "loopback" => "containernetworking-plugins",
        "python3" => "python3",
        "nc" => "netcat-openbsd",
        "socat" => "socat",
        "busybox" => "busybox",
        "curl" => "curl",
        "ping" => "iputils-ping",
        "tcpdump" => "tcpdump",
        _ => return None,
    })
}

/// What the machine offers, so preflight is testable without touching it.
pub trait Machine {
    /// A bare program name on PATH (or a path checked as it is).
    fn which(&self, program: &str) -> Option<PathBuf>;
    /// An executable file at `path`.
    fn executable(&self, path: &Path) -> bool;
}

/// The real machine: this process's PATH and file system.
pub struct RealMachine;

impl Machine for RealMachine {
    fn which(&self, program: &str) -> Option<PathBuf> {
        crate::system::process::which(program)
    }

    fn executable(&self, path: &Path) -> bool {
        crate::system::process::is_executable(path)
    }
}

/// One missing dependency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// Program or plugin name (`etcd`, `bridge`).
    pub name: String,
    /// Where it was looked for.
    pub looked_in: String,
    /// The Debian package to install, if known.
    pub package: Option<&'static str>,
    /// Why it is needed: step ids (a few) or a description.
    pub needed_by: Vec<String>,
    /// An extra remark (e.g. no built-in replacement).
    pub note: Option<String>,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (looked in {})", self.name, self.looked_in)?;
        match self.package {
            Some(p) => write!(f, ": install package {p}")?,
            None if self.name.starts_with(SELF_NAME) => write!(f, ": not in this version")?,
            None => write!(f, ": install it (no known Debian package)")?,
        }
        if !self.needed_by.is_empty() {
            const SHOWN: usize = 3;
            let mut list = self
                .needed_by
                .iter()
                .take(SHOWN)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            if self.needed_by.len() > SHOWN {
                list.push_str(&format!(" and {} more", self.needed_by.len() - SHOWN));
            }
            write!(f, "; needed by {list}")?;
        }
        if let Some(n) = &self.note {
            write!(f, "; {n}")?;
        }
        Ok(())
    }
}

/// The distinct packages to install for `missing`, sorted.
pub fn packages(missing: &[Missing]) -> Vec<&'static str> {
    let mut p: Vec<&'static str> = missing.iter().filter_map(|m| m.package).collect();
    p.sort_unstable();
    p.dedup();
    p
}

#[derive(Default)]
struct Needs {
    /// program -> (builtin fallback, step ids)
    programs: BTreeMap<String, (Option<String>, Vec<String>)>,
    plugins: BTreeMap<String, Vec<String>>,
    /// `knetsim SUBCOMMAND` processes: subcommand -> step ids.
    subcommands: BTreeMap<String, Vec<String>>,
}

impl Needs {
    fn program(&mut self, name: &str, builtin: Option<&str>, step: &str) {
        let e = self.programs.entry(name.to_string()).or_default();
        if e.0.is_none() {
            e.0 = builtin.map(str::to_string);
        }
        if !e.1.iter().any(|s| s == step) {
            e.1.push(step.to_string());
        }
    }
}

/// The kernel setting NetworkPolicy relies on: with br_netfilter, frames between pods
/// of one worker's bridge pass the worker's IPv4 forward hook, where the policy table
/// is (kubeadm's preflight asks for the same). Each new network namespace has it on.
pub const BRIDGE_NF_CALL: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";

/// Kernel features the plan needs that this machine lacks, one sentence each.
pub fn kernel_lacks(plan: &Plan, bridge_nf_present: bool) -> Vec<String> {
    let polices = plan.steps.iter().any(|s| s.id.starts_with("netpol:"));
    if polices && !bridge_nf_present {
        return vec![format!(
            "NetworkPolicy needs br_netfilter ({BRIDGE_NF_CALL} is missing): without it, pods of one worker \
             would reach each other past the policies; load it with `modprobe br_netfilter`"
        )];
    }
    Vec::new()
}

/// Checks that everything `plan` runs is present. `builtins` are the subcommands
/// this knetsim provides as stand-ins (e.g. `flanneld`); `cni_dirs` where CNI
/// plugins are looked for. Empty = ready to go.
pub fn check(plan: &Plan, machine: &dyn Machine, builtins: &[&str], cni_dirs: &[&str]) -> Vec<Missing> {
    let mut needs = Needs::default();
    for s in &plan.steps {
        let id = s.id.as_str();
        match &s.op {
            Op::CreateBridge(_) | Op::CreateVeth(_) | Op::AddAddress(_) | Op::AddRoute(_) | Op::Wait(_) => {
                needs.program("ip", None, id)
            }
            Op::NftLoad(_) => {
                needs.program("ip", None, id);
                needs.program("nft", None, id);
            }
            Op::Impair(Impair { rate, delay, loss, .. }) => {
                needs.program("ip", None, id);
                if rate.is_some() || delay.is_some() || loss.is_some() {
                    needs.program("tc", None, id);
                }
                if loss.is_some() {
                    // The fallback where the kernel has no netem.
                    needs.program("nft", None, id);
                }
            }
            Op::StartProcess(StartProcess { argv, builtin, .. }) => match argv.first().map(String::as_str) {
                // This executable: its subcommand must exist.
                Some(SELF_NAME) => {
                    let sub = argv.get(1).cloned().unwrap_or_default();
                    let e = needs.subcommands.entry(sub).or_default();
                    e.push(id.to_string());
                }
                Some(p) => needs.program(p, builtin.as_deref(), id),
                None => {}
            },
            Op::CniAdd(_) => {
                for p in CNI_PLUGINS {
                    let e = needs.plugins.entry(p.to_string()).or_default();
                    e.push(id.to_string());
                }
            }
            Op::CreateNetns(_)
            | Op::SetSysctl(_)
            | Op::MakeDir(_)
            | Op::WriteFile(_)
            | Op::GenerateCerts(_)
            | Op::EtcdPut(_) => {}
        }
    }
    let mut missing = Vec::new();
    for (name, (builtin, steps)) in needs.programs {
        let lookup = |n: &str| machine.which(n);
        let note = match provider(&name, builtin.as_deref(), &lookup) {
            Provider::Found(_) => continue,
            Provider::Builtin(b) if b.is_empty() || builtins.contains(&b.as_str()) => continue,
            Provider::Builtin(b) => Some(format!("this knetsim has no built-in `{b}` to stand in for it")),
            Provider::Missing => None,
        };
        missing.push(Missing {
            looked_in: if name.contains('/') {
                name.clone()
            } else {
                "PATH".to_string()
            },
            package: package_for(name.rsplit('/').next().unwrap_or(&name)),
            name,
            needed_by: steps,
            note,
        });
    }
    for (sub, steps) in needs.subcommands {
        if !builtins.contains(&sub.as_str()) {
            missing.push(Missing {
                name: format!("{SELF_NAME} {sub}"),
                looked_in: "this knetsim's subcommands".into(),
                package: None,
                needed_by: steps,
                note: Some(format!("this knetsim has no `{sub}` subcommand")),
            });
        }
    }
    for (name, steps) in needs.plugins {
        let found = cni_dirs.iter().any(|d| machine.executable(&Path::new(d).join(&name)));
        if !found {
            missing.push(Missing {
                looked_in: cni_dirs.join(", "),
                package: package_for(&name),
                name: format!("CNI plugin {name}"),
                needed_by: steps,
                note: None,
            });
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;
    use knetsim_compiler::{CompileOptions, Source};
    use std::collections::HashSet;

    struct Fake {
        on_path: HashSet<&'static str>,
        files: HashSet<&'static str>,
    }

    impl Machine for Fake {
        fn which(&self, program: &str) -> Option<PathBuf> {
            self.on_path
                .contains(program)
                .then(|| PathBuf::from(format!("/usr/bin/{program}")))
        }
        fn executable(&self, path: &Path) -> bool {
            path.to_str().is_some_and(|p| self.files.contains(p))
        }
    }

    fn plan(topology: &str) -> Plan {
        let bundle = knetsim_compiler::compile(&Source::new("t.toml", topology), &CompileOptions::named("pf")).unwrap();
        serde_json::from_str(bundle.get("plan.json").unwrap()).unwrap()
    }

    const SINGLE: &str = r#"
[[clusters]]
name = "C0"
pods = [{ name = "c1", worker = "w1" }, { name = "c2", worker = "w2" }]
services = [{ name = "web", pods = ["c1", "c2"] }]
"#;

    fn complete() -> Fake {
        Fake {
            on_path: ["ip", "tc", "nft", "etcd", "nginx"].into_iter().collect(),
            files: [
                "/usr/lib/cni/bridge",
                "/usr/lib/cni/host-local",
                "/usr/lib/cni/loopback",
            ]
            .into_iter()
            .collect(),
        }
    }

    #[test]
    fn policies_need_br_netfilter() {
        let with_policy = format!(
            "{}[[clusters.network_policies]]\nname = \"deny\"\npod_selector = {{}}\n",
            SINGLE.replace("name = \"C0\"", "name = \"C0\"\nflannel = { ip_masq = true }")
        );
        let lacks = kernel_lacks(&plan(&with_policy), false);
        assert!(lacks.len() == 1 && lacks[0].contains("br_netfilter"), "{lacks:?}");
        assert!(kernel_lacks(&plan(&with_policy), true).is_empty());
        assert!(kernel_lacks(&plan(SINGLE), false).is_empty(), "no policy, no need");
    }

    #[test]
    fn nothing_missing_on_a_complete_machine() {
        let m = check(&plan(SINGLE), &complete(), &["flanneld"], CNI_PLUGIN_DIRS);
        assert_eq!(m, Vec::new());
    }

    #[test]
    fn everything_missing_is_reported_at_once_with_packages() {
        let machine = Fake {
            on_path: ["ip", "tc"].into_iter().collect(),
            files: ["/opt/cni/bin/loopback"].into_iter().collect(),
        };
        let m = check(&plan(SINGLE), &machine, &["flanneld"], CNI_PLUGIN_DIRS);
        let names: Vec<&str> = m.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["etcd", "nft", "CNI plugin bridge", "CNI plugin host-local"]);
        assert_eq!(packages(&m), ["containernetworking-plugins", "etcd-server", "nftables"]);
        let etcd = m[0].to_string();
        assert!(
            etcd.contains("install package etcd-server") && etcd.contains("etcd:C0e1"),
            "{etcd}"
        );
        let bridge = m[2].to_string();
        assert!(bridge.contains("/usr/lib/cni, /opt/cni/bin"), "{bridge}");
        assert!(bridge.contains("cni-add:C0/c1"), "{bridge}");
    }

    #[test]
    fn flanneld_needs_a_real_one_or_the_builtin() {
        let p = plan(SINGLE);
        // No built-in agent in this knetsim and no flanneld: reported, with the reason.
        let m = check(&p, &complete(), &[], CNI_PLUGIN_DIRS);
        assert_eq!(m.len(), 1, "{m:?}");
        assert_eq!(m[0].name, "flanneld");
        assert_eq!(m[0].package, Some("flannel"));
        assert!(m[0].to_string().contains("no built-in `flanneld`"), "{}", m[0]);
        // A real flanneld on PATH is enough.
        let mut machine = complete();
        machine.on_path.insert("flanneld");
        assert!(check(&p, &machine, &[], CNI_PLUGIN_DIRS).is_empty());
    }

    #[test]
    fn knetsim_workloads_need_the_subcommand() {
        let topology = r#"
[[clusters]]
name = "C0"
pods = [{ name = "s", worker = "w1", command = ["knetsim", "serve", "--port", "80"], ports = [80] }]
"#;
        let p = plan(topology);
        assert!(check(&p, &complete(), &["flanneld", "serve"], CNI_PLUGIN_DIRS).is_empty());
        let m = check(&p, &complete(), &["flanneld"], CNI_PLUGIN_DIRS);
        assert_eq!(m.len(), 1, "{m:?}");
        assert_eq!(m[0].name, "knetsim serve");
        assert!(m[0].to_string().contains("workload:C0/s"), "{}", m[0]);
    }

    #[test]
    fn nginx_only_with_ingresses() {
        let mut machine = complete();
        machine.on_path.remove("nginx");
        assert!(check(&plan(SINGLE), &machine, &["flanneld"], CNI_PLUGIN_DIRS).is_empty());
        let with_ingress = format!(
            "{SINGLE}\n[[clusters.ingresses]]\nname = \"web\"\nworker = \"w1\"\nport = 8001\nrules = [{{ path = \"/\", service = \"web\", port = 80 }}]\n"
        );
        let m = check(&plan(&with_ingress), &machine, &["flanneld"], CNI_PLUGIN_DIRS);
        assert_eq!(m.len(), 1, "{m:?}");
        assert_eq!(m[0].name, "nginx");
        assert_eq!(m[0].package, Some("nginx-light"));
    }
}
