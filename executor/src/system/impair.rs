//! Link impairments: `tbf` for rate; `netem` for delay and loss where the kernel
//! has it. Without netem (this is detected from tc's "Specified qdisc kind is
//! unknown"), loss is emulated by an nft rule in the link's namespace that drops
//! `numgen random mod 10000 < loss*100` of the packets leaving the interface (all of
//! them, unconditionally, for 100 %), and
//! delay is reported as not emulated (a warning, not a failure).
//!
//! Commands go through a runner so the decisions are tested without root.

use super::{SysError, SysResult};
use knetsim_compiler::plan::Impair;

/// Runs an argv (no shell) with optional stdin, returning stdout.
pub type Runner<'a> = &'a dyn Fn(&[&str], Option<&str>) -> SysResult<String>;

/// The nft table that holds loss rules in a namespace.
pub const TABLE: &str = "knetsim-impair";

const TBF_HANDLE: &str = "5:";
const TBF_CLASS: &str = "5:1";
const NETEM_HANDLE: &str = "10:";

/// A tc quantity such as `10mbit`, `2.5ms`, `100`: digits, a dot, then letters.
fn valid_quantity(s: &str) -> bool {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
        && digits.chars().filter(|&c| c == '.').count() <= 1
        && s.len() - digits.len() <= 8
}

fn invalid(what: &str, detail: impl Into<String>) -> SysError {
    SysError::Invalid {
        what: what.into(),
        detail: detail.into(),
    }
}

/// Bits per second of a tc rate (`10mbit`, `1gbit`, `500kbps`, `100`), if understood.
pub fn rate_bps(rate: &str) -> Option<f64> {
    let unit_at = rate.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(rate.len());
    let value: f64 = rate[..unit_at].parse().ok()?;
    let mult = match rate[unit_at..].to_ascii_lowercase().as_str() {
        "" | "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        "tbit" => 1e12,
        "bps" => 8.0,
        "kbps" => 8e3,
        "mbps" => 8e6,
        "gbps" => 8e9,
        "tbps" => 8e12,
        _ => return None,
    };
    Some(value * mult)
}

/// tbf's bucket: 10 ms worth of the rate, at least 16 KiB (enough for 1 s timer slack at low rates).
pub fn tbf_burst(rate: &str) -> String {
    let bytes = rate_bps(rate).map(|bps| bps / 8.0 / 100.0).unwrap_or(0.0).max(16384.0);
    format!("{}b", bytes.ceil() as u64)
}

/// `numgen random mod 10000 < N`: the drop threshold for a loss in percent.
pub fn loss_threshold(loss: f64) -> u32 {
    (loss * 100.0).round().clamp(0.0, 10000.0) as u32
}

/// What a loss rule matches before `counter drop`: a random share of the packets, or,
/// for 100 % (how users cut a link), every packet. `numgen random mod 10000` is
/// 0..=9999, so nft refuses `< 10000` as out of range; the drop is unconditional instead.
fn loss_match(loss: f64) -> String {
    match loss_threshold(loss) {
        10000 => String::new(),
        n => format!("numgen random mod 10000 < {n} "),
    }
}

/// How the nft rule drops, for the warning: a random share or everything.
fn loss_how(loss: f64) -> &'static str {
    if loss_threshold(loss) == 10000 {
        "an unconditional nft drop"
    } else {
        "an nft `numgen random` drop"
    }
}

fn chain_name(ifname: &str) -> String {
    let safe: String = ifname
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("loss_{safe}")
}

/// The loss rule on the interface's egress hook (sees bridged and routed packets alike).
pub fn loss_ruleset_egress(ifname: &str, loss: f64) -> String {
    let chain = chain_name(ifname);
    let m = loss_match(loss);
    format!(
        "table netdev {TABLE} {{\n\tchain {chain} {{\n\t\ttype filter hook egress device \"{ifname}\" priority 0; policy accept;\n\t}}\n}}\n\
         flush chain netdev {TABLE} {chain}\n\
         add rule netdev {TABLE} {chain} {m}counter drop comment \"loss {loss}% (no netem)\"\n"
    )
}

/// The same in the ip family's postrouting hook, for kernels without the netdev egress hook.
pub fn loss_ruleset_postrouting(ifname: &str, loss: f64) -> String {
    let chain = chain_name(ifname);
    let m = loss_match(loss);
    format!(
        "table ip {TABLE} {{\n\tchain {chain} {{\n\t\ttype filter hook postrouting priority 0; policy accept;\n\t}}\n}}\n\
         flush chain ip {TABLE} {chain}\n\
         add rule ip {TABLE} {chain} oifname \"{ifname}\" {m}counter drop comment \"loss {loss}% (no netem)\"\n"
    )
}

fn no_netem(e: &SysError) -> bool {
    matches!(e, SysError::Command { stderr, .. }
        if stderr.contains("Specified qdisc kind is unknown") || stderr.contains("Unknown qdisc"))
}

/// Applies `imp`; returns warnings about what could not be emulated exactly.
pub fn apply(imp: &Impair, run: Runner) -> SysResult<Vec<String>> {
    let (netns, ifname) = (imp.netns.as_str(), imp.ifname.as_str());
    if ifname.is_empty() || !ifname.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c)) {
        return Err(invalid("interface name", ifname));
    }
    for (what, q) in [("rate", &imp.rate), ("delay", &imp.delay)] {
        if let Some(q) = q {
            if !valid_quantity(q) {
                return Err(invalid(what, q.clone()));
            }
        }
    }
    if let Some(loss) = imp.loss {
        if !(0.0..=100.0).contains(&loss) || loss.is_nan() {
            return Err(invalid("loss (percent)", loss.to_string()));
        }
    }
    let mut warnings = Vec::new();
    let mut netem_at = vec!["root", "handle", NETEM_HANDLE];
    if let Some(rate) = &imp.rate {
        let burst = tbf_burst(rate);
        run(
            &[
                "tc", "-n", netns, "qdisc", "replace", "dev", ifname, "root", "handle", TBF_HANDLE, "tbf", "rate",
                rate, "burst", &burst, "latency", "100ms",
            ],
            None,
        )?;
        netem_at = vec!["parent", TBF_CLASS, "handle", NETEM_HANDLE];
    }
    if imp.delay.is_none() && imp.loss.is_none() {
        return Ok(warnings);
    }
    let loss_text = imp.loss.map(|l| format!("{l}%"));
    let mut argv = vec!["tc", "-n", netns, "qdisc", "replace", "dev", ifname];
    argv.extend(&netem_at);
    argv.push("netem");
    if let Some(d) = &imp.delay {
        argv.extend(["delay", d.as_str()]);
    }
    if let Some(l) = &loss_text {
        argv.extend(["loss", l.as_str()]);
    }
    match run(&argv, None) {
        Ok(_) => return Ok(warnings),
        Err(e) if no_netem(&e) => {}
        Err(e) => return Err(e),
    }
    if let Some(loss) = imp.loss {
        let nft = ["ip", "netns", "exec", netns, "nft", "-f", "-"];
        let how = match run(&nft, Some(&loss_ruleset_egress(ifname, loss))) {
            Ok(_) => "netdev egress",
            Err(_) => {
                run(&nft, Some(&loss_ruleset_postrouting(ifname, loss)))?;
                "ip postrouting"
            }
        };
        warnings.push(format!(
            "the kernel has no netem: loss {loss}% on {netns}/{ifname} is emulated by {} ({how}, table {TABLE})",
            loss_how(loss)
        ));
    }
    if let Some(d) = &imp.delay {
        warnings.push(format!(
            "the kernel has no netem: delay {d} on {netns}/{ifname} is not emulated"
        ));
    }
    Ok(warnings)
}

/// Undoes [`apply`]: the root qdisc (tbf and netem under it) and the loss chain in
/// either family go. What is not there is not an error.
pub fn clear(netns: &str, ifname: &str, run: Runner) -> SysResult<()> {
    if ifname.is_empty() || !ifname.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c)) {
        return Err(invalid("interface name", ifname));
    }
    match run(&["tc", "-n", netns, "qdisc", "del", "dev", ifname, "root"], None) {
        Ok(_) => {}
        // The default qdisc (handle 0) cannot be deleted: nothing was shaped.
        Err(SysError::Command { stderr, .. })
            if stderr.contains("handle of zero") || stderr.contains("No such file") => {}
        Err(e) => return Err(e),
    }
    let chain = chain_name(ifname);
    for family in ["netdev", "ip"] {
        let nft = [
            "ip", "netns", "exec", netns, "nft", "delete", "chain", family, TABLE, &chain,
        ];
        match run(&nft, None) {
            Ok(_) => {}
            Err(SysError::Command { stderr, .. }) if stderr.contains("No such file") => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct FakeRunner {
        netem: bool,
        egress: bool,
        calls: Mutex<Vec<(String, Option<String>)>>,
    }

    impl FakeRunner {
        fn new(netem: bool, egress: bool) -> Self {
            FakeRunner {
                netem,
                egress,
                calls: Mutex::new(Vec::new()),
            }
        }

        fn run(&self, argv: &[&str], stdin: Option<&str>) -> SysResult<String> {
            let line = argv.join(" ");
            self.calls
                .lock()
                .unwrap()
                .push((line.clone(), stdin.map(str::to_string)));
            let fail = |stderr: &str| {
                Err(SysError::Command {
                    argv: line.clone(),
                    status: "exit status: 2".into(),
                    stderr: stderr.into(),
                })
            };
            if line.contains(" netem") && !self.netem {
                return fail("Error: Specified qdisc kind is unknown.");
            }
            if stdin.is_some_and(|s| s.contains("hook egress")) && !self.egress {
                return fail("Error: Could not process rule: Operation not supported");
            }
            Ok(String::new())
        }

        fn lines(&self) -> Vec<String> {
            self.calls.lock().unwrap().iter().map(|(l, _)| l.clone()).collect()
        }
    }

    fn imp(rate: Option<&str>, delay: Option<&str>, loss: Option<f64>) -> Impair {
        Impair {
            netns: "n".into(),
            ifname: "eth0".into(),
            rate: rate.map(str::to_string),
            delay: delay.map(str::to_string),
            loss,
        }
    }

    #[test]
    fn rate_only_is_one_tbf() {
        let r = FakeRunner::new(false, true);
        let w = apply(&imp(Some("10mbit"), None, None), &|a, s| r.run(a, s)).unwrap();
        assert!(w.is_empty());
        assert_eq!(
            r.lines(),
            ["tc -n n qdisc replace dev eth0 root handle 5: tbf rate 10mbit burst 16384b latency 100ms"]
        );
        assert_eq!(tbf_burst("1gbit"), "1250000b");
        assert_eq!(rate_bps("500kbps"), Some(4e6));
        assert_eq!(rate_bps("10furlongs"), None);
    }

    #[test]
    fn netem_is_used_where_the_kernel_has_it() {
        let r = FakeRunner::new(true, true);
        let w = apply(&imp(Some("1mbit"), Some("10ms"), Some(1.5)), &|a, s| r.run(a, s)).unwrap();
        assert!(w.is_empty(), "{w:?}");
        let lines = r.lines();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[1],
            "tc -n n qdisc replace dev eth0 parent 5:1 handle 10: netem delay 10ms loss 1.5%"
        );
        let r = FakeRunner::new(true, true);
        apply(&imp(None, None, Some(2.0)), &|a, s| r.run(a, s)).unwrap();
        assert_eq!(
            r.lines(),
            ["tc -n n qdisc replace dev eth0 root handle 10: netem loss 2%"]
        );
    }

    #[test]
    fn without_netem_loss_becomes_an_nft_drop_and_delay_a_warning() {
        let r = FakeRunner::new(false, true);
        let w = apply(&imp(None, Some("5ms"), Some(1.5)), &|a, s| r.run(a, s)).unwrap();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("loss 1.5%") && w[0].contains("netdev egress"), "{}", w[0]);
        assert!(w[1].contains("delay 5ms") && w[1].contains("not emulated"), "{}", w[1]);
        let calls = r.calls.lock().unwrap().clone();
        assert_eq!(calls[1].0, "ip netns exec n nft -f -");
        let rules = calls[1].1.as_deref().unwrap();
        assert!(rules.contains("hook egress device \"eth0\""), "{rules}");
        assert!(rules.contains("numgen random mod 10000 < 150 counter drop"), "{rules}");
    }

    #[test]
    fn without_egress_hook_loss_goes_to_postrouting() {
        let r = FakeRunner::new(false, false);
        let w = apply(
            &Impair {
                ifname: "C0s0-eth1".into(),
                ..imp(None, None, Some(10.0))
            },
            &|a, s| r.run(a, s),
        )
        .unwrap();
        assert!(w[0].contains("ip postrouting"), "{w:?}");
        let calls = r.calls.lock().unwrap().clone();
        let rules = calls.last().unwrap().1.clone().unwrap();
        assert!(rules.contains("chain loss_C0s0_eth1"), "{rules}");
        assert!(
            rules.contains("oifname \"C0s0-eth1\" numgen random mod 10000 < 1000 counter drop"),
            "{rules}"
        );
    }

    #[test]
    fn loss_100_without_netem_is_an_unconditional_drop() {
        // `numgen random mod 10000 < 10000` is out of range for nft: 100 % must not use numgen.
        let egress = loss_ruleset_egress("eth0", 100.0);
        assert!(!egress.contains("numgen"), "{egress}");
        assert!(
            egress.contains("add rule netdev knetsim-impair loss_eth0 counter drop comment \"loss 100% (no netem)\""),
            "{egress}"
        );
        let post = loss_ruleset_postrouting("C0s0-eth1", 100.0);
        assert!(!post.contains("numgen"), "{post}");
        assert!(
            post.contains("add rule ip knetsim-impair loss_C0s0_eth1 oifname \"C0s0-eth1\" counter drop comment"),
            "{post}"
        );
        // Just below 100 % the random share stays, with a threshold nft accepts.
        assert!(loss_ruleset_egress("eth0", 99.99).contains("numgen random mod 10000 < 9999 counter drop"));
        let r = FakeRunner::new(false, true);
        let w = apply(&imp(None, None, Some(100.0)), &|a, s| r.run(a, s)).unwrap();
        assert!(w[0].contains("loss 100%") && w[0].contains("unconditional"), "{w:?}");
        let calls = r.calls.lock().unwrap().clone();
        assert_eq!(calls[1].1.as_deref(), Some(egress.as_str()));
    }

    #[test]
    fn other_tc_errors_are_failures_and_input_is_checked() {
        let r = |_: &[&str], _: Option<&str>| -> SysResult<String> {
            Err(SysError::Command {
                argv: "tc".into(),
                status: "exit status: 2".into(),
                stderr: "Cannot find device \"eth9\"".into(),
            })
        };
        assert!(apply(
            &Impair {
                ifname: "eth9".into(),
                ..imp(None, None, Some(1.0))
            },
            &r
        )
        .is_err());
        let ok = |_: &[&str], _: Option<&str>| -> SysResult<String> { Ok(String::new()) };
        assert!(apply(&imp(Some("10mbit; rm"), None, None), &ok).is_err());
        assert!(apply(&imp(None, Some("-1ms"), None), &ok).is_err());
        assert!(apply(&imp(None, None, Some(120.0)), &ok).is_err());
        assert!(apply(&imp(None, None, Some(-1.0)), &ok).is_err());
        assert!(apply(&imp(None, None, Some(f64::NAN)), &ok).is_err());
        assert!(apply(
            &Impair {
                ifname: "bad name".into(),
                ..imp(None, None, Some(1.0))
            },
            &ok
        )
        .is_err());
        assert!(apply(&imp(None, None, None), &ok).unwrap().is_empty());
    }
}
