//! The prompt's effects: runs a parsed [`Command`] against a running emulation.
//! Node lines reuse `knetsim exec`; `pod`, `svc`, `status` and `down` run the
//! subcommands themselves, in this process.

use super::commands::{self, Command, ContainerCall, COMMANDS};
use super::complete::Names;
use super::iperf;
use super::iperf_run::{self, Ends};
use super::view::{self, End, PingRow};
use crate::cli::running::recorded_state;
use crate::cli::status::print_table;
use crate::cli::{exec, Target};
use knetsim_compiler::artifacts::paths::INVENTORY;
use knetsim_executor::live::{read_current, CurrentFile};
use knetsim_executor::observe::Inventory;
use knetsim_executor::par::par_map;
use knetsim_executor::state::{self, State};
use knetsim_executor::system::linux::open_netns;
use knetsim_executor::system::process::{command_in_netns, exit_code, which};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Stdio;

/// What the prompt does after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Exit,
}

/// A running emulation, as the prompt sees it.
pub struct Session {
    pub target: Target,
    pub name: String,
    state_dir: PathBuf,
    inventory: Inventory,
    /// Nested `source` files being run (a file that sources itself stops somewhere).
    sourcing: usize,
}

impl Session {
    /// The emulation named by `target`, which must be up.
    pub fn open(target: Target) -> Result<Session, String> {
        let (opts, _) = recorded_state(&target)?;
        let inventory = Inventory::load(&opts.state_dir)?;
        Ok(Session {
            target,
            name: opts.name,
            state_dir: opts.state_dir,
            inventory,
            sourcing: 0,
        })
    }

    pub fn state_dir(&self) -> &std::path::Path {
        &self.state_dir
    }

    /// Rereads the inventory (pods and services change with `pod` / `svc`).
    fn reload(&mut self) {
        if let Ok(inv) = Inventory::load(&self.state_dir) {
            self.inventory = inv;
        }
    }

    pub fn names(&self) -> Names {
        let mut hosts: Vec<String> = self.inventory.hosts.iter().map(|h| h.name.clone()).collect();
        hosts.push("switches".into());
        Names {
            hosts,
            pods: self.inventory.pods.iter().map(|p| p.id.clone()).collect(),
            services: self.inventory.services.iter().map(|s| s.id.clone()).collect(),
        }
    }

    /// The cluster of a node: a host's, or a pod's (`C0/c1`); none for `switches`.
    fn cluster_of(&self, node: &str) -> Option<String> {
        cluster_of(&self.inventory, node)
    }

    /// Parses and runs one line; errors are one line on stderr.
    pub fn run_line(&mut self, line: &str) -> Flow {
        self.reload();
        let parsed = commands::parse(line, &|w| self.inventory.netns_of(w).is_some());
        match parsed {
            Ok(cmd) => self.run(cmd),
            Err(e) => {
                eprintln!("*** {e}");
                Flow::Continue
            }
        }
    }

    fn run(&mut self, cmd: Command) -> Flow {
        match cmd {
            Command::Empty => {}
            Command::Exit => return Flow::Exit,
            Command::Help(None) => help(),
            Command::Help(Some(topic)) => match COMMANDS.iter().find(|(c, _)| *c == topic) {
                Some((c, what)) => println!("{c}: {what}"),
                None => eprintln!("*** no command `{topic}` (`help` lists them)"),
            },
            Command::Source(file) => return self.source(&file),
            Command::Nodes => self.nodes(),
            Command::Net => self.net(),
            Command::Dump => self.dump(),
            Command::Pods => self.pods(),
            Command::Services => self.services(),
            Command::PingAll => self.pingall(),
            Command::Iperf { nodes, seconds } => self.iperf(nodes, seconds),
            Command::Status => {
                self.subcommand(&["status"], &[]);
            }
            Command::Repair(args) => self.change("repair", &args),
            Command::Pod(args) => self.change("pod", &args),
            Command::Svc(args) => self.change("svc", &args),
            Command::Shell(line) => {
                let status = std::process::Command::new("sh").arg("-c").arg(&line).status();
                after_command(status.map_or(0, exit_code));
            }
            Command::Exec { node, line } => self.exec(&node, &line),
            Command::Container { host, call } => self.container(&host, call),
            Command::VipAdd { cluster, vip, pods } => {
                // The seed's services have no name: one is made from the VIP.
                let name = format!("{cluster}/vip-{}", vip.replace('.', "-"));
                let args = [name, "--vip".into(), vip, "--pods".into(), pods.join(",")];
                self.change("svc", &[&["add".to_string()], &args[..]].concat());
            }
        }
        Flow::Continue
    }

    /// Runs the lines of `file` as if typed, each shown after the prompt; `exit` ends
    /// the file only.
    fn source(&mut self, file: &str) -> Flow {
        const MAX_DEPTH: usize = 8;
        if self.sourcing >= MAX_DEPTH {
            eprintln!("*** source {file}: more than {MAX_DEPTH} nested files");
            return Flow::Continue;
        }
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("*** cannot read {file}: {e}");
                return Flow::Continue;
            }
        };
        self.sourcing += 1;
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            println!("{}{line}", super::PROMPT);
            if self.run_line(line) == Flow::Exit {
                break;
            }
        }
        self.sourcing -= 1;
        Flow::Continue
    }

    /// Runs `line` with `sh -c` in the node's namespace, output live, Ctrl-C to it.
    fn exec(&self, node: &str, line: &str) {
        let Some(netns) = self.inventory.netns_of(node) else {
            eprintln!("*** no node `{node}`; nodes: {}", self.inventory.node_names());
            return;
        };
        let from = self.cluster_of(node);
        let elsewhere = std::cell::RefCell::new(Vec::new());
        let line = commands::substitute(line, &|w| match address_of(&self.inventory, w, from.as_deref()) {
            Lookup::Address(ip) => Some(ip),
            Lookup::OtherCluster => {
                elsewhere.borrow_mut().push(w.to_string());
                None
            }
            Lookup::NotAName => None,
        });
        for w in elsewhere.into_inner() {
            match &from {
                Some(c) => eprintln!(
                    "*** note: {w} is not in cluster {c}: its address means something else there, so it is \
                     left as a name (clusters have separate pod networks; the deck's chapter 5 joins them)"
                ),
                None => eprintln!("*** note: {w} has no address reachable from {node}: left as a name"),
            }
        }
        after_command(super::super::error::finish(exec::run_in(
            netns,
            node,
            "sh",
            &["-c".to_string(), line],
            &[],
        )));
    }

    /// `knetsim SUBCOMMAND [first] --name NAME rest...`, run here. The target flags go
    /// right after the first argument: after a `--` they would be the pod's command.
    fn subcommand(&self, words: &[&str], args: &[String]) -> i32 {
        let mut argv: Vec<String> = vec!["knetsim".into()];
        argv.extend(words.iter().map(|w| w.to_string()));
        argv.extend(args.first().cloned());
        argv.push("--name".into());
        argv.push(self.name.clone());
        if let Some(dir) = &self.target.state_dir {
            argv.push("--state-dir".into());
            argv.push(dir.display().to_string());
        }
        argv.extend(args.iter().skip(1).cloned());
        crate::cli::run_argv(argv)
    }

    fn change(&mut self, what: &str, args: &[String]) {
        self.subcommand(&[what], args);
        self.reload();
    }

    /// The deck's `py C0w1.exec_container("c1", "ifconfig")` family.
    fn container(&mut self, host: &str, call: ContainerCall) {
        let Some(h) = self
            .inventory
            .hosts
            .iter()
            .find(|h| h.name == host && h.role == "worker")
        else {
            eprintln!("*** `{host}` is not a worker of this emulation");
            return;
        };
        let cluster = h.cluster.clone();
        let local = h.name.strip_prefix(&cluster).unwrap_or(&h.name).to_string();
        match call {
            ContainerCall::Exec { pod, line } => self.exec(&format!("{cluster}/{pod}"), &line),
            ContainerCall::Create { pod } => {
                let args = [format!("{cluster}/{pod}"), "--worker".into(), local];
                self.change("pod", &[&["add".to_string()], &args[..]].concat());
            }
            ContainerCall::Delete { pod } => {
                self.change("pod", &["rm".to_string(), format!("{cluster}/{pod}")]);
            }
        }
    }

    fn nodes(&self) {
        let inv = &self.inventory;
        let names = |role: &str| -> String {
            let v: Vec<&str> = inv
                .hosts
                .iter()
                .filter(|h| h.role == role)
                .map(|h| h.name.as_str())
                .collect();
            v.join(" ")
        };
        println!("available nodes are:");
        println!("  etcd:     {}", names("etcd"));
        println!("  workers:  {}", names("worker"));
        let pods: Vec<&str> = inv.pods.iter().map(|p| p.id.as_str()).collect();
        println!("  pods:     {}", pods.join(" "));
        println!("  switches  (the namespace {} holds every switch)", inv.switch_netns);
    }

    fn raw_inventory(&self) -> Value {
        read_current(&self.state_dir, CurrentFile::Artifact(INVENTORY))
            .ok()
            .flatten()
            .and_then(|(_, t)| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    fn net(&self) {
        let inv = self.raw_inventory();
        let end = |e: &Value| End {
            node: e["node"].as_str().unwrap_or_default().to_string(),
            ifname: e["ifname"].as_str().unwrap_or_default().to_string(),
        };
        let links: Vec<(End, End)> = inv["underlay"]["links"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| (end(&l["a"]), end(&l["b"])))
            .collect();
        let pods = self.pod_workers();
        for line in view::net_lines(&links, &pods) {
            println!("{line}");
        }
    }

    fn dump(&self) {
        let state: Option<State> = state::read(&self.state_dir).ok().flatten();
        let daemons = |netns: &str| -> String {
            let v: Vec<String> = state
                .iter()
                .flat_map(|s| &s.processes)
                .filter(|p| p.netns == netns)
                .map(|p| format!(" {} pid={}", p.name, p.pid))
                .collect();
            v.concat()
        };
        for h in &self.inventory.hosts {
            let subnet = h.subnet.as_ref().map(|s| format!(" pods={s}")).unwrap_or_default();
            println!(
                "<{} {}: eth0:{}/{}{subnet} netns={}{}>",
                if h.role == "worker" { "Worker" } else { "Etcd" },
                h.name,
                h.ip,
                h.prefix_len,
                h.netns,
                daemons(&h.netns)
            );
        }
        for p in &self.inventory.pods {
            println!(
                "<Pod {}: eth0:{} worker={} netns={}{}>",
                p.id,
                p.ip,
                p.worker,
                p.netns,
                daemons(&p.netns)
            );
        }
        for s in &self.inventory.services {
            println!("<Service {}: vip={} endpoints={}>", s.id, s.vip, s.endpoints.join(", "));
        }
        let sw = &self.inventory.switch_netns;
        println!("<Switches switches: netns={sw}{}>", daemons(sw));
    }

    fn pods(&self) {
        let rows: Vec<Vec<String>> = self
            .inventory
            .pods
            .iter()
            .map(|p| vec![p.id.clone(), p.worker.clone(), p.netns.clone(), p.ip.clone()])
            .collect();
        print_table(&["POD", "WORKER", "NAMESPACE", "IP"], &rows);
    }

    fn services(&self) {
        let rows: Vec<Vec<String>> = self
            .inventory
            .services
            .iter()
            .map(|s| {
                let ports = if s.ports.is_empty() {
                    "(all)".to_string()
                } else {
                    s.ports.join(",")
                };
                vec![s.id.clone(), s.vip.clone(), ports, s.endpoints.join(", ")]
            })
            .collect();
        print_table(&["SERVICE", "VIP", "PORTS", "ENDPOINTS"], &rows);
    }

    /// Every pod pings every other pod of its cluster once, all at the same time.
    fn pingall(&self) {
        let pods = &self.inventory.pods;
        let cluster = |id: &str| id.split('/').next().unwrap_or_default().to_string();
        let pairs: Vec<(usize, usize)> = (0..pods.len())
            .flat_map(|a| (0..pods.len()).map(move |b| (a, b)))
            .filter(|&(a, b)| a != b && cluster(&pods[a].id) == cluster(&pods[b].id))
            .collect();
        let replies = par_map(&pairs, 64, |&(a, b)| ping_once(&pods[a].netns, &pods[b].ip));
        let rows: Vec<PingRow> = pods
            .iter()
            .enumerate()
            .filter(|(a, _)| pairs.iter().any(|(x, _)| x == a))
            .map(|(a, p)| {
                let peers = pairs
                    .iter()
                    .zip(&replies)
                    .filter(|((x, _), _)| *x == a)
                    .map(|((_, b), ok)| (pods[*b].id.clone(), *ok))
                    .collect();
                (p.id.clone(), peers)
            })
            .collect();
        for line in view::ping_report(&rows) {
            println!("{line}");
        }
    }

    /// Mininet's `iperf`: TCP bandwidth from SRC to DST, measured by iperf3.
    /// Every pod with its worker: (`C0/c1`, `C0w1`).
    fn pod_workers(&self) -> Vec<(String, String)> {
        self.inventory
            .pods
            .iter()
            .map(|p| (p.id.clone(), p.worker.clone()))
            .collect()
    }

    fn iperf(&self, nodes: Option<(String, String)>, seconds: u32) {
        if which("iperf3").is_none() {
            eprintln!("*** iperf needs iperf3, which is not installed: install the package `iperf3`");
            return;
        }
        let pods = self.pod_workers();
        let Some((src, dst)) = nodes.or_else(|| iperf::default_pair(&pods)) else {
            eprintln!("*** iperf: no two pods in one cluster to test between; name two nodes: `iperf SRC DST`");
            return;
        };
        let (Some(src_netns), Some(dst_netns)) = (self.inventory.netns_of(&src), self.inventory.netns_of(&dst)) else {
            eprintln!(
                "*** iperf: no node `{src}` or `{dst}`; nodes: {}",
                self.inventory.node_names()
            );
            return;
        };
        let Some(from) = self.cluster_of(&src) else {
            eprintln!("*** iperf: `{src}` has no address to test from: name a pod or a host");
            return;
        };
        let dst_ip = match address_of(&self.inventory, &dst, Some(&from)) {
            Lookup::Address(ip) => ip,
            Lookup::OtherCluster => {
                eprintln!(
                    "*** iperf: {dst} is not in cluster {from}: clusters have separate pod networks, \
                     so {src} cannot reach it (the deck's chapter 5 joins them)"
                );
                return;
            }
            Lookup::NotAName => {
                eprintln!("*** iperf: `{dst}` has no address to test to: name a pod or a host");
                return;
            }
        };
        println!("{}", iperf::testing_line(&src, &dst));
        let ends = Ends {
            src_netns,
            src: &src,
            dst_netns,
            dst: &dst,
            dst_ip: &dst_ip,
        };
        match iperf_run::measure(&ends, seconds) {
            Ok(rates) => println!("{}", iperf::results_line(&rates)),
            Err(e) => {
                // Ctrl-C: iperf3 reports the interrupt after the terminal's `^C`.
                if e.starts_with("interrupt") {
                    println!();
                }
                eprintln!("*** iperf: {e}");
            }
        }
    }
}

/// A command ended by Ctrl-C leaves the cursor after `^C`: the prompt starts a new
/// line, as a shell's does.
fn after_command(code: i32) {
    if code == 128 + libc::SIGINT {
        println!();
    }
}

/// What a word of a node line names, seen from a node of cluster `from`.
#[derive(Debug, PartialEq, Eq)]
enum Lookup {
    Address(String),
    /// A pod or service of another cluster: pod networks and service CIDRs repeat
    /// across clusters, so its address would reach something else.
    OtherCluster,
    NotAName,
}

fn cluster_of(inv: &Inventory, node: &str) -> Option<String> {
    inv.hosts
        .iter()
        .find(|h| h.name == node)
        .map(|h| h.cluster.clone())
        .or_else(|| {
            inv.pods
                .iter()
                .any(|p| p.id == node)
                .then(|| node.split('/').next().unwrap_or_default().to_string())
        })
}

/// Hosts share one underlay and are reachable from everywhere; pods and services
/// only within their cluster.
fn address_of(inv: &Inventory, word: &str, from: Option<&str>) -> Lookup {
    if let Some(h) = inv.hosts.iter().find(|h| h.name == word) {
        return Lookup::Address(h.ip.clone());
    }
    let found = inv
        .pods
        .iter()
        .find(|p| p.id == word)
        .map(|p| p.ip.clone())
        .or_else(|| inv.services.iter().find(|s| s.id == word).map(|s| s.vip.clone()));
    match found {
        None => Lookup::NotAName,
        Some(ip) if from.is_some_and(|c| word.split('/').next() == Some(c)) => Lookup::Address(ip),
        Some(_) => Lookup::OtherCluster,
    }
}

/// One echo request from `netns` to `ip`, one second to answer.
fn ping_once(netns: &str, ip: &str) -> bool {
    let Ok(fd) = open_netns(netns) else { return false };
    let args: Vec<String> = ["-c", "1", "-W", "1", "-q", ip].iter().map(|s| s.to_string()).collect();
    command_in_netns(fd, "ping", &args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn help() {
    println!("Commands (Mininet-style; TAB completes commands and node names):");
    for (c, what) in COMMANDS {
        println!("  {c:<9} {what}");
    }
    println!("  NODE CMD  run a shell line in a node's namespace: `C0w1 ip -br addr`, `C0/c1 ping -c 3 C0/c2`");
    println!("            (a node, pod or service name in CMD becomes its address, as in Mininet)");
    println!("Ctrl-C stops the running command; Ctrl-D or `exit` leaves.");
}

#[cfg(test)]
mod tests {
    use super::*;
    use knetsim_compiler::{CompileOptions, Source};

    fn two_clusters() -> Inventory {
        let topology = "[[clusters]]\nname = \"C0\"\npods = [{ name = \"c1\", worker = \"w1\" }]\n\
                        services = [{ name = \"web\", pods = [\"c1\"] }]\n\
                        [[clusters]]\nname = \"C1\"\npods = [{ name = \"c1\", worker = \"w1\" }]\n";
        let bundle = knetsim_compiler::compile(&Source::new("t.toml", topology), &CompileOptions::named("x")).unwrap();
        Inventory::parse(bundle.get(INVENTORY).unwrap()).unwrap()
    }

    #[test]
    fn names_become_addresses_within_their_cluster_only() {
        let inv = two_clusters();
        let ip = |id: &str| inv.pods.iter().find(|p| p.id == id).unwrap().ip.clone();
        let host = |n: &str| inv.hosts.iter().find(|h| h.name == n).unwrap().ip.clone();
        assert_eq!(cluster_of(&inv, "C0/c1").as_deref(), Some("C0"));
        assert_eq!(cluster_of(&inv, "C1w1").as_deref(), Some("C1"));
        assert_eq!(cluster_of(&inv, "switches"), None);
        assert_eq!(address_of(&inv, "C0/c1", Some("C0")), Lookup::Address(ip("C0/c1")));
        assert_eq!(address_of(&inv, "C1/c1", Some("C0")), Lookup::OtherCluster);
        assert_eq!(address_of(&inv, "C0/web", Some("C1")), Lookup::OtherCluster);
        assert!(matches!(address_of(&inv, "C0/web", Some("C0")), Lookup::Address(_)));
        // Hosts are on the shared underlay.
        assert_eq!(address_of(&inv, "C1w1", Some("C0")), Lookup::Address(host("C1w1")));
        assert_eq!(address_of(&inv, "C1w1", None), Lookup::Address(host("C1w1")));
        assert_eq!(address_of(&inv, "C0/c1", None), Lookup::OtherCluster);
        assert_eq!(address_of(&inv, "ping", Some("C0")), Lookup::NotAName);
    }
}
