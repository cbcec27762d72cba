//! The minijinja environment with every template of `templates/` compiled in.

use minijinja::Environment;
use std::sync::OnceLock;

pub fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(true);
        env.add_template(
            "kube-proxy.nft.j2",
            include_str!("../../../templates/kube-proxy.nft.j2"),
        )
        .expect("kube-proxy.nft.j2 parses");
        env.add_template("nginx.conf.j2", include_str!("../../../templates/nginx.conf.j2"))
            .expect("nginx.conf.j2 parses");
        env.add_template(
            "network-policy.nft.j2",
            include_str!("../../../templates/network-policy.nft.j2"),
        )
        .expect("network-policy.nft.j2 parses");
        env.add_template("flannel.nft.j2", include_str!("../../../templates/flannel.nft.j2"))
            .expect("flannel.nft.j2 parses");
        for (name, text) in [
            ("dnsmasq.conf.j2", include_str!("../../../templates/dnsmasq.conf.j2")),
            ("dns-hosts.j2", include_str!("../../../templates/dns-hosts.j2")),
            ("Corefile.j2", include_str!("../../../templates/Corefile.j2")),
            ("dns-zone.j2", include_str!("../../../templates/dns-zone.j2")),
            (
                "dns-reverse-zone.j2",
                include_str!("../../../templates/dns-reverse-zone.j2"),
            ),
        ] {
            env.add_template(name, text)
                .unwrap_or_else(|e| panic!("{name} parses: {e}"));
        }
        env
    })
}

pub fn render<S: serde::Serialize>(name: &str, ctx: S) -> String {
    env()
        .get_template(name)
        .and_then(|t| t.render(ctx))
        .unwrap_or_else(|e| panic!("template {name} failed to render: {e:#}"))
}
