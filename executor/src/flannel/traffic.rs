//! flanneld's traffic manager (`pkg/trafficmngr`) in its nftables mode: once the
//! lease is held and before the subnet file is written, the agent installs table
//! `flannel-ipv4` (and the empty `flannel-ipv6`) with the `-ip-masq` masquerade chain
//! and the forward accept chain, as one `nft -f` transaction rendered from
//! `templates/flannel.nft.j2`. Out of nftables mode flanneld uses iptables, after
//! deleting those tables; this agent has no iptables mode, so there it only deletes
//! them. As flanneld, it leaves its rules in place when it exits: they go with the
//! worker's namespace.

use super::config::{NetworkConfig, Subnet};
use super::device;
use super::log::{error, info, warning};
use super::Options;
use knetsim_compiler::artifacts::flannel::{nft_setup, NftSetup, NFT_CLEANUP};

/// What the agent does to nftables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rules {
    /// Not in nftables mode: delete the tables an earlier run in it left.
    Cleanup,
    /// nftables mode: set the tables up (`nftables` is false when only `-ip-masq`
    /// brought the agent here: the config asked for iptables).
    Setup { setup: NftSetup, nftables: bool },
}

impl Rules {
    /// Whether pods' traffic relies on these rules (the cleanup only tidies up).
    pub fn needed_when_ready(&self) -> bool {
        matches!(self, Rules::Setup { .. })
    }
}

/// The rules for this config, these flags and our lease (pure).
pub fn rules(config: &NetworkConfig, opts: &Options, lease: &Subnet) -> Rules {
    if !config.enable_nftables && !opts.ip_masq {
        return Rules::Cleanup;
    }
    Rules::Setup {
        setup: NftSetup {
            network: config.network.to_string(),
            pod_subnet: Subnet::new(lease.network(), lease.len).to_string(),
            masq: opts.ip_masq,
            forward: opts.forward_rules,
            fully_random: !opts.ip_masq_random_fully_disable,
        },
        nftables: config.enable_nftables,
    }
}

fn nft(transaction: &str) -> Result<(), String> {
    device::run(&["nft", "-f", "-"], Some(transaction)).map(drop)
}

/// Applies `rules` in this namespace. An error only when the masquerade rules could
/// not be set up (flanneld exits then); other failures are logged.
pub fn apply(rules: &Rules) -> Result<(), String> {
    let (setup, nftables) = match rules {
        Rules::Cleanup => {
            info!("Cleaning-up unused traffic manager rules");
            info!("Cleaning-up nftables rules...");
            // flanneld logs this at verbosity 2 only: usually there was nothing to delete.
            let _ = nft(NFT_CLEANUP);
            return Ok(());
        }
        Rules::Setup { setup, nftables } => (setup, *nftables),
    };
    if !nftables {
        warning!(
            "EnableNFTables is not set in the network config, but the built-in flannel agent has no iptables mode: -ip-masq rules go to nftables"
        );
    }
    info!("Starting flannel in nftables mode...");
    if setup.masq {
        info!("nftables: setting up masking rules (ipv4)");
    }
    if setup.forward {
        info!("Changing default FORWARD chain policy to ACCEPT");
    }
    let mut result = nft(&nft_setup(setup));
    if result.is_err() && setup.masq && setup.fully_random {
        warning!("nftables: random fully unsupported");
        let plain = NftSetup {
            fully_random: false,
            ..setup.clone()
        };
        result = nft(&nft_setup(&plain));
    }
    match result {
        Ok(()) => Ok(()),
        Err(e) if setup.masq => Err(format!(
            "Failed to setup masq rules, nftables: couldn't setup masq rules: {e}"
        )),
        Err(e) => {
            error!("nftables: couldn't setup forward rules: {e}");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = r#"{"Network":"11.0.0.0/8","SubnetLen":20,"SubnetMin":"11.10.0.0","SubnetMax":"11.99.0.0","Backend":{"Type":"vxlan","VNI":100,"Port":8472}}"#;

    fn config(nftables: bool) -> NetworkConfig {
        let text = if nftables {
            SEED.replace(r#""Backend""#, r#""EnableNFTables":true,"Backend""#)
        } else {
            SEED.to_string()
        };
        NetworkConfig::parse(&text).unwrap()
    }

    fn lease() -> Subnet {
        "11.10.16.0/20".parse().unwrap()
    }

    #[test]
    fn the_seed_runs_out_of_nftables_mode() {
        assert_eq!(rules(&config(false), &Options::default(), &lease()), Rules::Cleanup);
    }

    #[test]
    fn ip_masq_in_nftables_mode_masquerades_and_forwards() {
        let opts = Options {
            ip_masq: true,
            ..Options::default()
        };
        let Rules::Setup { setup, nftables } = rules(&config(true), &opts, &lease()) else {
            panic!("not set up");
        };
        assert!(nftables);
        assert_eq!(
            setup,
            NftSetup {
                network: "11.0.0.0/8".into(),
                pod_subnet: "11.10.16.0/20".into(),
                masq: true,
                forward: true,
                fully_random: true,
            }
        );
        let text = nft_setup(&setup);
        assert!(
            text.contains("ip saddr 11.10.16.0/20 ip daddr 11.0.0.0/8 return"),
            "{text}"
        );
    }

    #[test]
    fn flags_and_config_choose_the_parts() {
        // nftables mode without -ip-masq: the tables and the forward rules only.
        let Rules::Setup { setup, .. } = rules(&config(true), &Options::default(), &lease()) else {
            panic!("not set up");
        };
        assert!(!setup.masq && setup.forward);
        // -ip-masq with an iptables-mode config: still nftables here, flagged as such.
        let opts = Options {
            ip_masq: true,
            ip_masq_random_fully_disable: true,
            forward_rules: false,
            ..Options::default()
        };
        let Rules::Setup { setup, nftables } = rules(&config(false), &opts, &lease()) else {
            panic!("not set up");
        };
        assert!(!nftables);
        assert!(setup.masq && !setup.forward && !setup.fully_random);
    }
}
