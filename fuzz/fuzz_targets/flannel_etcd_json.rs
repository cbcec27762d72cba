//! What the flannel agent reads from etcd. The input is records separated by lines
//! `---`: the first is the network config (`<prefix>/config`), each later one either a
//! watch-stream message (JSON with base64 keys and values) or `KEY` newline `LEASE-JSON`.
//! Leases are parsed as the agent does (`Subnet::from_key`, `LeaseAttrs::parse`), then
//! fed to the subnet choice (`free_subnets`) and the lease watcher.
#![no_main]

use knetsim_executor::etcd::{decode_watch_message, EventKind};
use knetsim_executor::flannel::config::{NetworkConfig, Subnet};
use knetsim_executor::flannel::lease::{LeaseAttrs, LeaseWatcher};
use libfuzzer_sys::fuzz_target;

fn lease(key: &str, value: &[u8], leases: &mut Vec<(Subnet, LeaseAttrs)>) {
    if let (Some(subnet), Ok(attrs)) = (Subnet::from_key(key), LeaseAttrs::parse(value)) {
        let _ = attrs.vxlan_attrs();
        let _ = attrs.to_json();
        leases.push((subnet, attrs));
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut records = text.split("\n---\n");
    let config = NetworkConfig::parse(records.next().unwrap_or_default());
    let mut leases = Vec::new();
    let mut deleted = Vec::new();
    for rec in records {
        if let Ok(w) = decode_watch_message("fuzz", rec.as_bytes()) {
            for ev in w.events {
                match ev.kind {
                    EventKind::Put => lease(&ev.kv.key, &ev.kv.value, &mut leases),
                    EventKind::Delete => deleted.extend(Subnet::from_key(&ev.kv.key)),
                }
            }
        } else {
            let (key, value) = rec.split_once('\n').unwrap_or((rec, ""));
            lease(key, value.as_bytes(), &mut leases);
        }
    }
    let Ok(config) = config else {
        return;
    };
    let taken: Vec<Subnet> = leases.iter().map(|(s, _)| *s).collect();
    let free = config.free_subnets(&taken);
    let own = free
        .first()
        .copied()
        .unwrap_or(Subnet::new(config.subnet_min, config.subnet_len));
    let mut watcher = LeaseWatcher::new(own);
    let _ = watcher.reset(&leases);
    for (subnet, attrs) in leases {
        let _ = config.fits(&subnet);
        let _ = watcher.put(subnet, attrs);
    }
    for subnet in deleted {
        let _ = watcher.delete(subnet);
    }
});
