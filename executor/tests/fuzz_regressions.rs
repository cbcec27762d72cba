//! Inputs found by the fuzz targets (fuzz/, figures in docs/reliability.md): each must
//! be handled quickly, with a clean result or error and no panic.

use knetsim_executor::flannel::config::{NetworkConfig, Subnet};
use knetsim_executor::flannel::lease::LeaseAttrs;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// flannel_etcd_json: a network config `0.0.0.0/1` with /30 subnets and, in etcd's lease
/// listing, 50 leases and one `0.0.0.0-0` key. Choosing a free subnet stepped through
/// all 2^29 subnets, each against every lease: minutes of a busy agent.
#[test]
fn one_wide_lease_does_not_make_the_subnet_choice_walk_every_subnet() {
    let config = NetworkConfig::parse(r#"{"Network":"0.0.0.0/1","SubnetLen":30}"#).unwrap();
    let mut keys: Vec<String> = (1..=50)
        .map(|i| format!("/coreos.com/network/subnets/1.{i}.0.0-16"))
        .collect();
    keys.push("/coreos.com/network/subnets/0.0.0.0-0".into());
    let leased: Vec<Subnet> = keys
        .iter()
        .filter_map(|k| Subnet::from_key(k))
        .filter(|_| LeaseAttrs::parse(br#"{"PublicIP":"1.2.3.4"}"#).is_ok())
        .collect();
    assert_eq!(leased.len(), 51);
    let start = Instant::now();
    assert_eq!(config.free_subnets(&leased), Vec::new());
    assert!(start.elapsed() < Duration::from_secs(1), "{:?}", start.elapsed());
}

/// The skip keeps the choice itself: what a wide lease does not cover is still free,
/// in order, up to 100 subnets.
#[test]
fn subnets_after_a_wide_lease_are_still_free() {
    let config = NetworkConfig::parse(r#"{"Network":"10.0.0.0/8","SubnetLen":24}"#).unwrap();
    let leased = [
        Subnet::from_key("/x/10.0.0.0-12").unwrap(),
        Subnet::from_key("/x/10.16.1.0-24").unwrap(),
        Subnet::from_key("/x/10.16.2.7-30").unwrap(),
    ];
    let free = config.free_subnets(&leased);
    assert_eq!(free.len(), 100);
    assert_eq!(free[0], Subnet::new(Ipv4Addr::new(10, 16, 0, 0), 24));
    assert_eq!(free[1], Subnet::new(Ipv4Addr::new(10, 16, 3, 0), 24));
    // The last subnet of the range, behind a lease that reaches the end of the space.
    let config = NetworkConfig::parse(r#"{"Network":"255.255.255.0/24","SubnetLen":26}"#).unwrap();
    let free = config.free_subnets(&[Subnet::from_key("/x/255.255.255.128-25").unwrap()]);
    assert_eq!(free, vec![Subnet::new(Ipv4Addr::new(255, 255, 255, 64), 26)]);
}
