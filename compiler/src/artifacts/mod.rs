//! Renders every artifact of a model into a bundle. One file per artifact kind;
//! text formats come from `templates/` (minijinja), JSON from typed structs.

pub mod checks;
pub mod cni;
pub mod dns;
pub mod etcd;
pub mod flannel;
pub mod netpol;
pub mod nft;
pub mod nginx;
pub mod paths;
pub mod skupper;
mod templates;

use crate::bundle::{ArtifactKind, Bundle};
use crate::model::Model;

/// Pretty JSON with a trailing newline, the form every JSON artifact is written in.
pub fn to_json<T: serde::Serialize>(value: &T) -> String {
    let mut s = serde_json::to_string_pretty(value).expect("artifact serializes");
    s.push('\n');
    s
}

/// Every artifact of `model`, the plan among them (`plan.json`).
pub fn render_bundle(model: &Model) -> Bundle {
    render(model).1
}

/// The plan and the bundle of `model` (which carries the plan as `plan.json`).
pub fn render(model: &Model) -> (crate::plan::Plan, Bundle) {
    let mut b = Bundle::default();
    b.insert(paths::INVENTORY, ArtifactKind::Inventory, None, None, to_json(model));
    let naming = model.naming();
    for c in &model.clusters {
        let cl = Some(c.name.as_str());
        b.insert(
            paths::flannel_network_config(c),
            ArtifactKind::FlannelNetworkConfig,
            cl,
            None,
            flannel::network_config(c),
        );
        for m in &c.etcd {
            b.insert(
                paths::etcd_member(c, m),
                ArtifactKind::EtcdMember,
                cl,
                Some(&m.name),
                to_json(&etcd::member(&naming, c, m)),
            );
        }
        let ruleset = nft::ruleset(c);
        for w in &c.workers {
            let node = Some(w.host.name.as_str());
            b.insert(
                paths::cni_config(c, w),
                ArtifactKind::CniConfig,
                cl,
                node,
                to_json(&cni::flannel_conf(&naming, w)),
            );
            b.insert(
                paths::subnet_reservation(c, w),
                ArtifactKind::SubnetReservation,
                cl,
                node,
                to_json(&flannel::reservation(c, w)),
            );
            b.insert_shared(
                paths::nft_ruleset(c, w),
                ArtifactKind::NftRuleset,
                cl,
                node,
                ruleset.clone(),
            );
            if let Some(rules) = netpol::ruleset(c, w) {
                b.insert(paths::network_policy(c, w), ArtifactKind::NftRuleset, cl, node, rules);
            }
        }
        for ing in &c.ingresses {
            b.insert(
                paths::nginx_conf(c, ing),
                ArtifactKind::NginxConf,
                cl,
                Some(&ing.worker),
                nginx::conf(&naming, ing),
            );
        }
    }
    if let Some(dns) = &model.dns {
        for c in &model.clusters {
            let cl = Some(c.name.as_str());
            let node = c
                .pod(crate::model::SYSTEM_NAMESPACE, crate::model::DNS_POD)
                .map(|p| p.worker.as_str());
            for (name, text) in dns::files(model, dns, c) {
                b.insert(paths::dns_file(c, name), ArtifactKind::DnsConfig, cl, node, text);
            }
            for ns in c.namespace_names() {
                b.insert(
                    paths::resolv_conf(c, &ns),
                    ArtifactKind::ResolvConf,
                    cl,
                    None,
                    dns::resolv_conf(dns, c, &ns),
                );
            }
        }
    }
    for r in &model.routers {
        b.insert(
            paths::router_config(r),
            ArtifactKind::SkupperRouterConfig,
            Some(&r.cluster),
            Some(&r.worker),
            skupper::config_json(&naming, r),
        );
    }
    // Only topologies with checks carry the file, so other bundles stay as they were.
    if !model.checks.is_empty() {
        b.insert(
            paths::CHECKS,
            ArtifactKind::Checks,
            None,
            None,
            checks::json(&model.checks),
        );
    }
    let plan = crate::plan::build(model, &b);
    b.insert(paths::PLAN, ArtifactKind::Plan, None, None, to_json(&plan));
    (plan, b)
}
