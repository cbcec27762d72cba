//! The plan as text for `knetsim plan`: one line per step, with its dependencies.

use super::{
    AddAddress, AddRoute, CniAdd, CreateBridge, CreateNetns, CreateVeth, EtcdPut, GenerateCerts, Impair, MakeDir,
    NftLoad, Op, Plan, Probe, SetSysctl, StartProcess, Wait, WriteFile,
};

pub fn to_text(plan: &Plan) -> String {
    let mut out = String::new();
    let label = if plan.name.is_empty() {
        "default"
    } else {
        plan.name.as_str()
    };
    out.push_str(&format!(
        "plan for emulation `{label}` ({} steps, state in {})\n",
        plan.steps.len(),
        plan.state_dir
    ));
    for (i, s) in plan.steps.iter().enumerate() {
        out.push_str(&format!("{:>4}. {:<34} {}\n", i + 1, s.id, describe(&s.op)));
        if !s.after.is_empty() {
            out.push_str(&format!("        after {}\n", s.after.join(", ")));
        }
    }
    out
}

pub(super) fn describe(op: &Op) -> String {
    match op {
        Op::CreateNetns(CreateNetns { netns }) => format!("ip netns add {netns}"),
        Op::CreateBridge(CreateBridge { netns, name }) => format!("[{netns}] bridge {name}"),
        Op::CreateVeth(CreateVeth { a, b }) => format!(
            "veth {}:{} <-> {}:{}{}",
            a.netns,
            a.ifname,
            b.netns,
            b.ifname,
            b.bridge.as_ref().map(|br| format!(" (on {br})")).unwrap_or_default()
        ),
        Op::AddAddress(AddAddress { netns, ifname, cidr }) => format!("[{netns}] addr {cidr} dev {ifname}"),
        Op::AddRoute(AddRoute { netns, dst, dev }) => format!("[{netns}] route {dst} dev {dev}"),
        Op::SetSysctl(SetSysctl { netns, key, value }) => format!("[{netns}] sysctl {key}={value}"),
        Op::Impair(Impair {
            netns,
            ifname,
            rate,
            delay,
            loss,
        }) => format!(
            "[{netns}] shape {ifname}: rate={} delay={} loss={}",
            rate.as_deref().unwrap_or("-"),
            delay.as_deref().unwrap_or("-"),
            loss.map(|l| format!("{l}%")).unwrap_or_else(|| "-".into())
        ),
        Op::MakeDir(MakeDir { path }) => format!("mkdir {path}"),
        Op::WriteFile(WriteFile { path, artifact }) => format!("write {path} from {artifact}"),
        Op::StartProcess(StartProcess { netns, argv, ready, .. }) => {
            format!("[{netns}] start {} (ready: {})", argv.join(" "), probe_text(ready))
        }
        Op::EtcdPut(EtcdPut { key, artifact, .. }) => format!("etcd put {key} < {artifact}"),
        Op::CniAdd(CniAdd {
            worker_netns,
            network,
            pod_netns,
            ip,
            ..
        }) => format!("[{worker_netns}] cni add {network} {pod_netns} (IP={ip})"),
        Op::NftLoad(NftLoad { netns, artifact, .. }) => format!("[{netns}] nft -f {artifact}"),
        Op::Wait(Wait { probe: p }) => format!("wait for {}", probe_text(p)),
        Op::GenerateCerts(GenerateCerts {
            dir,
            common_name,
            ip_sans,
            ca_dir,
        }) => match ca_dir {
            None => format!("generate CA '{common_name}' in {dir}"),
            Some(ca) => format!(
                "generate cert '{common_name}' (IP {}) in {dir}, signed by {ca}",
                ip_sans.join(",")
            ),
        },
    }
}

pub(super) fn probe_text(p: &Probe) -> String {
    match p {
        Probe::Alive => "alive".into(),
        Probe::HttpGet { url, .. } => format!("GET {url}"),
        Probe::TcpConnect { addr, .. } => format!("tcp {addr}"),
        Probe::FileExists { path } => format!("file {path}"),
        Probe::RoutesVia { netns, dev, count } => format!("[{netns}] {count} routes via {dev}"),
    }
}
