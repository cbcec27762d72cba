//! What `net` and `pingall` print, Mininet's way. Pure.

/// One end of an underlay link: a node and its interface there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct End {
    pub node: String,
    pub ifname: String,
}

impl End {
    /// The interface as a peer names it: switch ports already carry their switch's
    /// name (`C0s0-eth2`), host interfaces get it in front (`C0w1-eth0`).
    fn global(&self) -> String {
        if self.ifname.starts_with(&self.node) {
            self.ifname.clone()
        } else {
            format!("{}-{}", self.node, self.ifname)
        }
    }
}

/// `net`: one line per node, `NODE IF:PEER-IF ...`, in order of first appearance;
/// pods are joined to their worker's `cni0` bridge by a veth.
pub fn net_lines(links: &[(End, End)], pods: &[(String, String)]) -> Vec<String> {
    let mut lines: Vec<(String, Vec<String>)> = Vec::new();
    let mut add = |from: &End, to: &End| {
        let entry = format!("{}:{}", from.ifname, to.global());
        match lines.iter_mut().find(|(n, _)| *n == from.node) {
            Some((_, v)) => v.push(entry),
            None => lines.push((from.node.clone(), vec![entry])),
        }
    };
    for (a, b) in links {
        add(a, b);
        add(b, a);
    }
    let mut out: Vec<String> = lines.into_iter().map(|(n, v)| format!("{n} {}", v.join(" "))).collect();
    out.extend(pods.iter().map(|(pod, worker)| format!("{pod} eth0:{worker}-cni0")));
    out
}

/// One pod's pings: its name and, per peer, the peer's name and whether a reply came.
pub type PingRow = (String, Vec<(String, bool)>);

/// `pingall`'s lines: `C0/c1 -> C0/c2 X` (X: no reply), then Mininet's summary.
pub fn ping_report(rows: &[PingRow]) -> Vec<String> {
    let mut out = vec!["*** Ping: testing ping reachability".to_string()];
    let (mut sent, mut received) = (0usize, 0usize);
    for (src, peers) in rows {
        let shown: Vec<&str> = peers
            .iter()
            .map(|(dst, ok)| if *ok { dst.as_str() } else { "X" })
            .collect();
        sent += peers.len();
        received += peers.iter().filter(|(_, ok)| *ok).count();
        out.push(format!("{src} -> {}", shown.join(" ")));
    }
    let dropped = (100 * (sent - received)).checked_div(sent).unwrap_or(0);
    out.push(format!("*** Results: {dropped}% dropped ({received}/{sent} received)"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(node: &str, ifname: &str) -> End {
        End {
            node: node.into(),
            ifname: ifname.into(),
        }
    }

    #[test]
    fn net_lists_both_ends_of_every_link() {
        let links = vec![
            (end("C0w1", "eth0"), end("C0s0", "C0s0-eth1")),
            (end("C0w2", "eth0"), end("C0s0", "C0s0-eth2")),
            (end("C0s0", "C0s0-eth3"), end("t0", "t0-eth1")),
        ];
        let pods = vec![("C0/c1".to_string(), "C0w1".to_string())];
        assert_eq!(
            net_lines(&links, &pods),
            vec![
                "C0w1 eth0:C0s0-eth1",
                "C0s0 C0s0-eth1:C0w1-eth0 C0s0-eth2:C0w2-eth0 C0s0-eth3:t0-eth1",
                "C0w2 eth0:C0s0-eth2",
                "t0 t0-eth1:C0s0-eth3",
                "C0/c1 eth0:C0w1-cni0",
            ]
        );
    }

    #[test]
    fn pingall_counts_like_mininet() {
        let rows = vec![
            (
                "C0/c1".to_string(),
                vec![("C0/c2".to_string(), true), ("C0/c3".to_string(), false)],
            ),
            (
                "C0/c2".to_string(),
                vec![("C0/c1".to_string(), true), ("C0/c3".to_string(), true)],
            ),
            (
                "C0/c3".to_string(),
                vec![("C0/c1".to_string(), true), ("C0/c2".to_string(), true)],
            ),
        ];
        let r = ping_report(&rows);
        assert_eq!(r[1], "C0/c1 -> C0/c2 X");
        assert_eq!(r[2], "C0/c2 -> C0/c1 C0/c3");
        assert_eq!(r.last().unwrap(), "*** Results: 16% dropped (5/6 received)");
        assert_eq!(
            ping_report(&[]).last().unwrap(),
            "*** Results: 0% dropped (0/0 received)"
        );
    }
}
