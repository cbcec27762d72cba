//! Tab completion of the prompt's words: command words, node names (hosts, pods,
//! `switches`), services, and the subcommands of `pod` / `svc`. Pure over [`Names`].

use super::commands::COMMANDS;

/// The names of a running emulation that a line can mention.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    /// `C0e1`, `C0w1`, ... (and `switches`).
    pub hosts: Vec<String>,
    /// `C0/c1`, ...
    pub pods: Vec<String>,
    /// `C0/web`, ...
    pub services: Vec<String>,
}

/// Programs a learner runs on a node first (the deck's and Mininet's favourites).
const PROGRAMS: &[&str] = &[
    "arp",
    "bridge",
    "cat",
    "curl",
    "hostname",
    "ifconfig",
    "ip",
    "nft",
    "nslookup",
    "ping",
    "route",
    "ss",
    "tcpdump",
    "traceroute",
    "wget",
];

const POD_ADD_FLAGS: &[&str] = &["--worker", "--port", "--dry-run", "--"];
const POD_RM_FLAGS: &[&str] = &["--keep-endpoints", "--dry-run"];
const SVC_ADD_FLAGS: &[&str] = &["--pods", "--port", "--vip", "--dry-run"];

/// Where the word under the cursor starts, and the words it may become (sorted).
pub fn complete(line: &str, pos: usize, names: &Names) -> (usize, Vec<String>) {
    let head = &line[..pos];
    let start = head.rfind(char::is_whitespace).map_or(0, |i| i + 1);
    let word = &head[start..];
    let before: Vec<&str> = head[..start].split_whitespace().collect();
    let is_node = |w: &str| names.hosts.iter().chain(&names.pods).any(|n| n == w);
    let strs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut candidates: Vec<String> = match before.as_slice() {
        [] => COMMANDS
            .iter()
            .map(|(c, _)| c.to_string())
            .chain(names.hosts.iter().cloned())
            .chain(names.pods.iter().cloned())
            .collect(),
        ["help"] => strs(&COMMANDS.iter().map(|(c, _)| *c).collect::<Vec<_>>()),
        ["pod" | "svc"] => strs(&["add", "rm"]),
        ["pod", "rm", ..] if word.starts_with('-') => strs(POD_RM_FLAGS),
        ["pod", "rm"] => names.pods.clone(),
        ["pod", "add", _, ..] if word.starts_with('-') => strs(POD_ADD_FLAGS),
        ["svc", "rm"] => names.services.clone(),
        ["svc", "add", _, ..] if word.starts_with('-') => strs(SVC_ADD_FLAGS),
        // iperf's ends have an address: hosts and pods, not the switches' namespace.
        ["iperf"] | ["iperf", _] => names
            .hosts
            .iter()
            .filter(|h| *h != "switches")
            .chain(&names.pods)
            .cloned()
            .collect(),
        [node] if is_node(node) => strs(PROGRAMS),
        // Further words of a node line: names become addresses.
        [node, ..] if is_node(node) => names
            .hosts
            .iter()
            .chain(&names.pods)
            .chain(&names.services)
            .cloned()
            .collect(),
        _ => Vec::new(),
    };
    candidates.retain(|c| c.starts_with(word));
    candidates.sort();
    candidates.dedup();
    (start, candidates)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect();
        Names {
            hosts: v(&["C0e1", "C0w1", "C0w2", "C0w3", "C1w1", "switches"]),
            pods: v(&["C0/c1", "C0/c10", "C0/c2", "C1/c1"]),
            services: v(&["C0/web"]),
        }
    }

    fn c(line: &str) -> (usize, Vec<String>) {
        complete(line, line.len(), &names())
    }

    #[test]
    fn first_word_completes_hosts_pods_and_commands() {
        assert_eq!(c("C0w"), (0, vec!["C0w1".into(), "C0w2".into(), "C0w3".into()]));
        assert_eq!(c("C0/c1"), (0, vec!["C0/c1".into(), "C0/c10".into()]));
        assert_eq!(c("pi"), (0, vec!["pingall".into()]));
        assert_eq!(c("  no"), (2, vec!["nodes".into()]));
        let all = c("").1;
        assert!(all.contains(&"help".to_string()) && all.contains(&"C1/c1".to_string()));
        assert!(c("zz").1.is_empty());
    }

    #[test]
    fn node_lines_complete_programs_then_names() {
        assert_eq!(c("C0w1 if"), (5, vec!["ifconfig".into()]));
        assert_eq!(
            c("C0/c1 ping -c 2 C0/"),
            (
                16,
                vec!["C0/c1".into(), "C0/c10".into(), "C0/c2".into(), "C0/web".into()]
            )
        );
        // Not a node: nothing to offer.
        assert!(c("C9w1 if").1.is_empty());
    }

    #[test]
    fn pod_and_svc_arguments() {
        assert_eq!(c("pod "), (4, vec!["add".into(), "rm".into()]));
        assert_eq!(c("pod rm C0/c1"), (7, vec!["C0/c1".into(), "C0/c10".into()]));
        assert_eq!(c("pod rm C0/c1 --k"), (13, vec!["--keep-endpoints".into()]));
        assert_eq!(c("pod add C0/c5 --w"), (14, vec!["--worker".into()]));
        assert_eq!(c("svc rm "), (7, vec!["C0/web".into()]));
        assert_eq!(c("svc add C0/x --po"), (13, vec!["--pods".into(), "--port".into()]));
        assert_eq!(c("help st"), (5, vec!["status".into()]));
    }

    #[test]
    fn iperf_completes_two_nodes() {
        assert_eq!(c("ip"), (0, vec!["iperf".into()]));
        assert_eq!(c("iperf C0/c1"), (6, vec!["C0/c1".into(), "C0/c10".into()]));
        assert_eq!(
            c("iperf C0/c1 C0w"),
            (12, vec!["C0w1".into(), "C0w2".into(), "C0w3".into()])
        );
        assert!(c("iperf s").1.is_empty(), "the switches have no address to test");
        // The third word is a duration.
        assert!(c("iperf C0/c1 C0/c2 C").1.is_empty());
    }

    #[test]
    fn the_cursor_position_counts() {
        // Completing in the middle of a line looks only at what is before the cursor.
        assert_eq!(complete("C0w ip a", 3, &names()).1.len(), 3);
    }
}
