//! The builder's diagnostics, each at the place it names.

use crate::{check, CompileOptions, Source};

/// The rendered diagnostics of `text` as `t.toml` (empty when it compiles).
fn errors_of(text: &str) -> String {
    check(&Source::new("t.toml", text), &CompileOptions::named("v"))
        .map(|_| String::new())
        .unwrap_or_else(|d| d.render())
}

fn impairment(loss: &str) -> String {
    format!("[[clusters]]\nname = \"C0\"\n\n[[underlay.impairments]]\nuplink = \"C0s0\"\nloss = {loss}\n")
}

#[test]
fn loss_100_compiles_and_losses_the_executor_cannot_apply_are_refused_where_written() {
    assert_eq!(errors_of(&impairment("100")), "");
    assert_eq!(errors_of(&impairment("0")), "");
    assert_eq!(errors_of(&impairment("12.25")), "");
    for (loss, message) in [
        ("100.5", "t.toml:6:8: loss 100.5 is not a percentage"),
        ("-1", "t.toml:6:8: loss -1 is not a percentage"),
        ("nan", "t.toml:6:8: loss NaN is not a percentage"),
        ("inf", "t.toml:6:8: loss inf is not a percentage"),
        ("0.005", "t.toml:6:8: loss 0.005 is finer than 0.01 %"),
        ("99.999", "t.toml:6:8: loss 99.999 is finer than 0.01 %"),
    ] {
        let errors = errors_of(&impairment(loss));
        assert!(errors.contains(message), "loss = {loss}:\n{errors}");
    }
    assert!(errors_of(&impairment("0.005")).contains("write 0.01"));
}

#[test]
fn port_0_of_a_pod_or_an_ingress_rule_is_refused_where_written() {
    let pod = "[[clusters]]\nname = \"C0\"\npods = [{ name = \"c1\", worker = \"w1\", ports = [80, 0] }]\n";
    let errors = errors_of(pod);
    assert!(
        errors.contains("t.toml:3:52: port 0 of pod `c1` is not usable"),
        "{errors}"
    );
    assert!(errors.contains("1..=65535"), "{errors}");
    // Also on an unknown worker, with the worker reported as well.
    let errors = errors_of(&pod.replace("w1", "w9"));
    assert!(
        errors.contains("port 0 of pod `c1`") && errors.contains("w9"),
        "{errors}"
    );
    let rule = r#"[[clusters]]
name = "C0"
pods = [{ name = "c1", worker = "w1" }]
services = [{ name = "s1", pods = ["c1"] }]
ingresses = [{ name = "i", worker = "w1", port = 8001, rules = [{ path = "/x", service = "s1", port = 0 }] }]
"#;
    let errors = errors_of(rule);
    assert!(errors.contains("t.toml:5:103: port 0 is not usable"), "{errors}");
}

fn vip(vip: &str) -> String {
    format!(
        "[[clusters]]\nname = \"C0\"\nservice_cidr = \"100.64.0.0/16\"\npods = [{{ name = \"c1\", worker = \"w1\" }}]\n\
         services = [{{ name = \"s1\", vip = \"{vip}\", pods = [\"c1\"] }}]\n"
    )
}

#[test]
fn a_vip_at_the_network_or_broadcast_address_is_not_called_outside() {
    let errors = errors_of(&vip("100.64.0.0"));
    assert!(
        errors.contains(
            "t.toml:5:34: VIP 100.64.0.0 is the network address of the service CIDR 100.64.0.0/16 of cluster `C0` and cannot be a VIP"
        ),
        "{errors}"
    );
    assert!(!errors.contains("outside"), "{errors}");
    assert!(errors.contains("100.64.0.1"), "the hint names a usable VIP: {errors}");
    let errors = errors_of(&vip("100.64.255.255"));
    assert!(
        errors.contains("t.toml:5:34: VIP 100.64.255.255 is the broadcast address of the service CIDR 100.64.0.0/16"),
        "{errors}"
    );
    assert!(!errors.contains("outside"), "{errors}");
    let errors = errors_of(&vip("100.65.0.1"));
    assert!(
        errors.contains("t.toml:5:34: VIP 100.65.0.1 is outside the service CIDR 100.64.0.0/16"),
        "{errors}"
    );
    assert_eq!(errors_of(&vip("100.64.255.254")), "");
}

fn pinned(ip: &str) -> String {
    format!("[[clusters]]\nname = \"C0\"\npods = [{{ name = \"c1\", worker = \"w1\", ip = \"{ip}\" }}]\n")
}

#[test]
fn a_pinned_pod_address_says_why_it_cannot_be_used() {
    // w1's subnet is 11.10.0.0/20: .0 network, .1 the bridge, 11.10.15.255 broadcast.
    for (ip, says) in [
        (
            "11.10.0.0",
            "is the network address of worker C0w1's subnet 11.10.0.0/20",
        ),
        (
            "11.10.0.1",
            "is the bridge gateway (cni0) address of worker C0w1's subnet 11.10.0.0/20",
        ),
        (
            "11.10.15.255",
            "is the broadcast address of worker C0w1's subnet 11.10.0.0/20",
        ),
        ("11.10.16.2", "is outside worker C0w1's subnet 11.10.0.0/20"),
    ] {
        let errors = errors_of(&pinned(ip));
        assert!(
            errors.contains(&format!("t.toml:3:44: pod address {ip} {says}")),
            "{ip}:\n{errors}"
        );
        assert!(errors.contains("start at \"11.10.0.2\""), "{errors}");
    }
    assert_eq!(errors_of(&pinned("11.10.0.2")), "");
    assert_eq!(errors_of(&pinned("11.10.15.254")), "");
}
