//! What a running emulation lacks against its plan ([`Drift`]), for `knetsim
//! repair` (and `apply` with nothing edited): namespaces that are gone, processes
//! that do not run (unless their `restart` is `Never`), nft tables missing from the
//! namespace their rules were loaded in.

use super::{netns_present, process_alive};
use crate::state::State;
use knetsim_compiler::plan::{Drift, NftLoad, Op, Plan, RestartPolicy, StartProcess};
use knetsim_compiler::Bundle;
use std::collections::BTreeSet;
use std::process::{Command, Stdio};

/// Looks at the emulation recorded in `st`, running `plan` from `bundle`.
pub fn drift(plan: &Plan, bundle: &Bundle, st: &State) -> Drift {
    let mut d = Drift {
        missing_netns: plan.namespaces.iter().filter(|n| !netns_present(n)).cloned().collect(),
        ..Drift::default()
    };
    for s in &plan.steps {
        match &s.op {
            // A workload that must not restart is left as it ended (not ready).
            Op::StartProcess(StartProcess {
                restart: RestartPolicy::Never,
                ..
            }) => {}
            Op::StartProcess(StartProcess { name, netns, .. }) => {
                let recorded: Vec<_> = st
                    .processes
                    .iter()
                    .filter(|p| &p.name == name && &p.netns == netns)
                    .collect();
                if recorded.iter().any(|p| process_alive(p.pid, p.start_ticks)) {
                    continue;
                }
                let why = match recorded.first() {
                    Some(p) => format!("{name} (pid {}) is not running", p.pid),
                    None => format!("{name} has no recorded process"),
                };
                d.dead.insert(s.id.clone(), why);
            }
            Op::NftLoad(NftLoad { netns, artifact, .. }) if netns_present(netns) => {
                let want = knetsim_compiler::artifacts::nft::tables(bundle.get(artifact).unwrap_or_default());
                let have = tables_in(netns);
                let missing: Vec<&String> = want.iter().filter(|t| !have.contains(*t)).collect();
                if !missing.is_empty() {
                    let list: Vec<&str> = missing.iter().map(|t| t.as_str()).collect();
                    d.missing_rules.insert(
                        s.id.clone(),
                        format!("table {} missing in {netns}", list.join(", table ")),
                    );
                }
            }
            _ => {}
        }
    }
    d
}

/// `FAMILY NAME` of every nft table in `netns` (empty if nft cannot be asked).
fn tables_in(netns: &str) -> BTreeSet<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "nft", "list", "tables"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    let Ok(out) = out else { return BTreeSet::new() };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("table "))
        .map(str::to_string)
        .collect()
}
