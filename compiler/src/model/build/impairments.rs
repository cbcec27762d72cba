//! Link impairments (rate, delay, loss) on the underlay, as the executor can apply them.

use super::*;

impl Builder<'_> {
    pub(super) fn impairments(&mut self, specs: &[spec::ImpairmentSpec], underlay: &mut Underlay) {
        let mut seen = Unique::new("impairment of uplink");
        for imp in specs {
            if !seen.insert(&mut self.report, imp.uplink.get_ref(), imp.uplink.span(), self.text) {
                continue;
            }
            let mut ok = true;
            if let Some(r) = &imp.rate {
                if allocate::parse_rate(r.get_ref()).is_none() {
                    self.report.error(
                        r.span(),
                        format!("rate `{}` is not a tc rate", r.get_ref()),
                        "bad rate",
                        "write it like \"10mbit\", \"500kbit\" or \"1gbit\"",
                    );
                    ok = false;
                }
            }
            if let Some(d) = &imp.delay {
                if allocate::parse_delay(d.get_ref()).is_none() {
                    self.report.error(
                        d.span(),
                        format!("delay `{}` is not a tc time", d.get_ref()),
                        "bad delay",
                        "write it like \"10ms\" or \"250us\"",
                    );
                    ok = false;
                }
            }
            if let Some(l) = &imp.loss {
                let loss = *l.get_ref();
                // NaN is in no range, so it is refused here too.
                if !(0.0..=100.0).contains(&loss) {
                    self.report.error(
                        l.span(),
                        format!("loss {loss} is not a percentage"),
                        "bad loss",
                        "loss is 0..=100 (percent); 100 cuts the link",
                    );
                    ok = false;
                } else if ((loss * 100.0).round() - loss * 100.0).abs() > 1e-6 {
                    // Without netem the executor drops `numgen random mod 10000 < loss*100`.
                    self.report.error(
                        l.span(),
                        format!("loss {loss} is finer than 0.01 %"),
                        "too precise",
                        &format!(
                            "loss is applied in steps of 0.01 % (an nft rule where the kernel has no netem): write {}",
                            (loss * 100.0).round() / 100.0
                        ),
                    );
                    ok = false;
                }
            }
            if imp.rate.is_none() && imp.delay.is_none() && imp.loss.is_none() {
                self.report.error(
                    imp.uplink.span(),
                    "impairment sets none of rate, delay, loss",
                    "nothing to do",
                    "add rate, delay or loss",
                );
                ok = false;
            }
            let Some(link) = underlay.links.iter_mut().find(|l| &l.a.node == imp.uplink.get_ref()) else {
                let nodes: Vec<String> = underlay.links.iter().map(|l| l.a.node.clone()).collect();
                self.unknown(
                    &imp.uplink,
                    "host or cluster switch",
                    "the underlay",
                    nodes.iter().map(String::as_str),
                );
                continue;
            };
            if ok {
                link.impairment = Some(Impairment {
                    // Trimmed as parse_rate and parse_delay read them: tc takes no blanks.
                    rate: imp.rate.as_ref().map(|r| r.get_ref().trim().to_string()),
                    delay: imp.delay.as_ref().map(|r| r.get_ref().trim().to_string()),
                    loss: imp.loss.as_ref().map(|r| *r.get_ref()),
                });
            }
        }
    }
}
