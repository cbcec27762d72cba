//! Flannel per cluster: the network, subnet length and range, backend, and the
//! subnet each worker leases.

use super::*;

impl Builder<'_> {
    /// The cluster's flannel config: `conf/flannel-network-config.json` overridden by
    /// the topology. Defaults that do not fit an overridden Network are derived the
    /// way flannel does (SubnetMin = second subnet, SubnetMax = last subnet). Invalid
    /// values are reported and replaced by those defaults.
    pub(super) fn flannel(&mut self, cs: &spec::ClusterSpec, cname: &str) -> (Flannel, FlannelOk) {
        let d = FlannelDefaults::get();
        let f = &cs.flannel;
        let cspan = cs.name.span();
        let default_network: Ipv4Network = d.network.parse().expect("conf default is valid");
        let (network, network_ok) = match &f.network {
            Some(n) => match self.report.ipv4_net(n, "flannel network") {
                Some(net) => (net, true),
                None => (default_network, false),
            },
            None => (default_network, true),
        };
        let mut range_ok = network_ok;
        let fits = |len: u8| len > network.prefix() && len <= 30;
        // A usable length when the written or default one is not.
        let fallback_len = if fits(d.subnet_len) {
            d.subnet_len
        } else {
            (network.prefix() + 2).min(32)
        };
        let suggestion = if fits(d.subnet_len) {
            d.subnet_len
        } else {
            (network.prefix() + 2).min(30)
        };
        let subnet_len = match &f.subnet_len {
            Some(l) if fits(*l.get_ref()) => *l.get_ref(),
            Some(l) => {
                if network_ok {
                    self.report.error(
                        l.span(),
                        format!(
                            "flannel subnet_len {} must be longer than the network's /{} and at most 30",
                            l.get_ref(),
                            network.prefix()
                        ),
                        "bad subnet length",
                        &format!(
                            "flannel gives each worker a /subnet_len slice of Network {network}, e.g. subnet_len = {suggestion}"
                        ),
                    );
                }
                range_ok = false;
                fallback_len
            }
            None if fits(d.subnet_len) => d.subnet_len,
            None => {
                self.report.error(
                    span_of(&f.network).unwrap_or(cspan.clone()),
                    format!(
                        "flannel network {network} is too small for the default subnet_len {}",
                        d.subnet_len
                    ),
                    "network too small",
                    &format!(
                        "set subnet_len (longer than /{}, at most 30) or use a larger network",
                        network.prefix()
                    ),
                );
                range_ok = false;
                fallback_len
            }
        };
        let size = 1u64 << (32 - u32::from(subnet_len.min(32)));
        let aligned = |a: Ipv4Addr| u64::from(u32::from(a)) % size == 0;
        let base = u64::from(u32::from(network.network()));
        let end = base + (1u64 << (32 - u32::from(network.prefix())));
        let derived_min = Ipv4Addr::from((base + size).min(u64::from(u32::MAX)) as u32);
        let derived_max = Ipv4Addr::from(end.saturating_sub(size).max(base) as u32);
        let mut addr = |b: &mut Self, v: &Option<Spanned<String>>, conf: &str, derived: Ipv4Addr, what: &str| match v {
            Some(s) => match b.report.ipv4_addr(s, what) {
                Some(a) => (a, Some(s.span())),
                None => {
                    range_ok = false;
                    (derived, None)
                }
            },
            None => {
                let c: Ipv4Addr = conf.parse().expect("conf default is valid");
                if network.contains(c) && aligned(c) {
                    (c, None)
                } else {
                    (derived, None)
                }
            }
        };
        let (mut subnet_min, min_span) = addr(self, &f.subnet_min, &d.subnet_min, derived_min, "flannel subnet_min");
        let (mut subnet_max, max_span) = addr(self, &f.subnet_max, &d.subnet_max, derived_max, "flannel subnet_max");
        if range_ok {
            for (what, a, span) in [
                ("subnet_min", subnet_min, &min_span),
                ("subnet_max", subnet_max, &max_span),
            ] {
                let Some(span) = span else { continue };
                if !network.contains(a) {
                    self.report.error(
                        span.clone(),
                        format!("flannel {what} {a} is outside Network {network} of cluster `{cname}`"),
                        "outside the pod network",
                        &format!("SubnetMin and SubnetMax must lie inside Network {network}"),
                    );
                    range_ok = false;
                } else if !aligned(a) {
                    let down = Ipv4Addr::from((u64::from(u32::from(a)) / size * size) as u32);
                    self.report.error(
                        span.clone(),
                        format!("flannel {what} {a} is not aligned to /{subnet_len}"),
                        "not a subnet start",
                        &format!("use the first address of its /{subnet_len} subnet: \"{down}\""),
                    );
                    range_ok = false;
                }
            }
        }
        if range_ok && subnet_max < subnet_min {
            let (span, message) = match (&max_span, &min_span) {
                (Some(s), _) => (
                    s.clone(),
                    format!("flannel subnet_max {subnet_max} is below subnet_min {subnet_min}"),
                ),
                (None, Some(s)) => (
                    s.clone(),
                    format!("flannel subnet_min {subnet_min} is above the default subnet_max {subnet_max}"),
                ),
                (None, None) => (
                    cspan.clone(),
                    format!("flannel subnet_max {subnet_max} is below subnet_min {subnet_min}"),
                ),
            };
            self.report.error(
                span,
                message,
                "empty range",
                "subnet_min must not be above subnet_max: swap them or set both",
            );
            range_ok = false;
        }
        if !range_ok {
            (subnet_min, subnet_max) = (derived_min, derived_max);
        }
        let backend = f
            .backend
            .as_ref()
            .map(|b| b.get_ref().clone())
            .unwrap_or(d.backend.kind.clone());
        if backend != "vxlan" {
            let span = span_of(&f.backend).unwrap_or(cspan.clone());
            self.report.error(
                span,
                format!("flannel backend `{backend}` is not emulated in cluster `{cname}`"),
                "unsupported backend",
                "use \"vxlan\"",
            );
        }
        let vni = f.vni.as_ref().map(|v| *v.get_ref()).unwrap_or(d.backend.vni);
        if vni == 0 || vni > 0xff_ffff {
            let span = span_of(&f.vni).unwrap_or(cspan.clone());
            self.report.error(
                span,
                format!("VXLAN VNI {vni} of cluster `{cname}` is out of range"),
                "bad VNI",
                "a VNI is 1..=16777215",
            );
        }
        let port = f.port.as_ref().map(|v| *v.get_ref()).unwrap_or(d.backend.port);
        if port == 0 {
            let span = span_of(&f.port).unwrap_or(cspan.clone());
            self.report.error(
                span,
                "VXLAN port 0 is not usable",
                "bad port",
                "flannel's default is 8472",
            );
        }
        let flannel = Flannel {
            network,
            subnet_len,
            subnet_min,
            subnet_max,
            backend,
            vni,
            port,
            ip_masq: f.ip_masq.as_ref().is_some_and(|m| *m.get_ref()),
        };
        (
            flannel,
            FlannelOk {
                network: network_ok,
                range: range_ok,
            },
        )
    }
}
