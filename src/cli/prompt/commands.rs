//! The prompt's language, Mininet-style: a line becomes a typed [`Command`].
//! Pure: the only outside knowledge is which words are node names.

use thiserror::Error;

/// The prompt's command words, with what each does (for `help` and completion).
pub const COMMANDS: &[(&str, &str)] = &[
    ("nodes", "list the nodes: etcd hosts, workers, pods, switches"),
    ("net", "list the links: host and switch ports, pod veths"),
    ("dump", "addresses, namespace and daemons of every node"),
    ("pods", "list the pods with their worker and address"),
    ("services", "list the services with their VIP and endpoints"),
    (
        "pingall",
        "ping every pod from every pod of its cluster (in parallel)",
    ),
    (
        "pod",
        "pod add CLUSTER/POD --worker W [--port P] [-- CMD...] | pod rm CLUSTER/POD [--keep-endpoints]",
    ),
    (
        "svc",
        "svc add CLUSTER/SVC --pods a,b [--port P] [--vip IP] | svc rm CLUSTER/SVC",
    ),
    (
        "iperf",
        "iperf [SRC DST] [SECONDS]: TCP bandwidth between two pods or hosts, measured by iperf3 \
         (default: two pods of the first cluster on different workers, 5 s)",
    ),
    ("status", "components of the emulation and their health"),
    (
        "repair",
        "repair [--dry-run]: restart what died, reload missing nft rules, re-create deleted pods",
    ),
    ("sh", "sh CMD: run CMD in knetsim's own namespace (e.g. `sh ip netns list`)"),
    (
        "py",
        "the deck's forms: py C0w1.exec_container(\"c1\", \"ifconfig\"), .create_container(\"c10\"), .delete_container(\"c10\"), py C0.kp_vip_add(\"100.64.20.1\", [\"c2\", \"c3\"])",
    ),
    ("source", "source FILE: run the commands of a file, one a line (# starts a comment)"),
    ("help", "help [COMMAND]: this list, or one command"),
    ("exit", "leave the prompt (also `quit` or Ctrl-D)"),
    ("quit", "leave the prompt"),
];

/// What a line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// An empty line.
    Empty,
    /// `help [COMMAND]`.
    Help(Option<String>),
    Exit,
    Nodes,
    Net,
    Dump,
    Pods,
    Services,
    PingAll,
    /// `iperf [SRC DST] [SECONDS]`: no nodes means the default pair.
    Iperf {
        nodes: Option<(String, String)>,
        seconds: u32,
    },
    Status,
    /// `repair [--dry-run]`: the arguments of `knetsim repair`.
    Repair(Vec<String>),
    /// `pod ...`: the arguments of `knetsim pod`.
    Pod(Vec<String>),
    /// `svc ...`: the arguments of `knetsim svc`.
    Svc(Vec<String>),
    /// `source FILE`: the lines of a file.
    Source(String),
    /// `sh CMD`: a shell line run in knetsim's own namespace.
    Shell(String),
    /// `C0w1 ip -br a`: a shell line run in a node's namespace.
    Exec {
        node: String,
        line: String,
    },
    /// The deck's `py C0w1.<method>(...)` forms.
    Container {
        host: String,
        call: ContainerCall,
    },
    /// The deck's `py C0.kp_vip_add("100.64.10.1", ["c2", "c3"])`: a service over pods.
    VipAdd {
        cluster: String,
        vip: String,
        pods: Vec<String>,
    },
}

/// The container methods of the seed's Mininet hosts that the deck uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerCall {
    Exec { pod: String, line: String },
    Create { pod: String },
    Delete { pod: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    #[error("unknown command or node `{0}` (`help` lists the commands, `nodes` the nodes)")]
    Unknown(String),
    #[error("`{0}` needs a command to run, e.g. `{0} ip -br addr`")]
    MissingCommand(String),
    #[error("`{command}` takes no arguments")]
    NoArguments { command: String },
    #[error("`{0}` needs arguments: {1}")]
    MissingArguments(String, &'static str),
    #[error("unbalanced quote in `{0}`")]
    Quote(String),
    #[error("py: {0}")]
    Py(String),
    #[error("`{command}`: no node `{node}` (`nodes` lists them)")]
    NoNode { command: String, node: String },
    #[error("iperf: {0}")]
    Iperf(String),
}

/// Mininet's `iperf` runs for 5 seconds.
pub const IPERF_SECONDS: u32 = 5;
/// Longer than this is a typo rather than a measurement.
const IPERF_MAX_SECONDS: u32 = 3600;

/// Parses one line; `is_node` tells whether a word names a host, pod or `switches`.
pub fn parse(line: &str, is_node: &dyn Fn(&str) -> bool) -> Result<Command, ParseError> {
    let line = line.trim();
    let Some(first) = line.split_whitespace().next() else {
        return Ok(Command::Empty);
    };
    let rest = line[first.len()..].trim_start();
    let bare = |c: Command| {
        if rest.is_empty() {
            Ok(c)
        } else {
            Err(ParseError::NoArguments {
                command: first.to_string(),
            })
        }
    };
    match first {
        "help" | "?" => match split_words(rest)?.as_slice() {
            [] => Ok(Command::Help(None)),
            [topic] => Ok(Command::Help(Some(topic.clone()))),
            _ => Err(ParseError::MissingArguments(
                "help".into(),
                "at most one command: `help pingall`",
            )),
        },
        "source" => match split_words(rest)?.as_slice() {
            [file] => Ok(Command::Source(file.clone())),
            _ => Err(ParseError::MissingArguments(
                "source".into(),
                "one file: `source demo.knetsim`",
            )),
        },
        "exit" | "quit" => bare(Command::Exit),
        "nodes" => bare(Command::Nodes),
        "net" => bare(Command::Net),
        "dump" => bare(Command::Dump),
        "pods" => bare(Command::Pods),
        "services" | "svcs" => bare(Command::Services),
        "pingall" => bare(Command::PingAll),
        "status" => bare(Command::Status),
        "repair" => Ok(Command::Repair(split_words(rest)?)),
        "iperf" => parse_iperf(&split_words(rest)?, is_node),
        "pod" | "svc" => {
            let args = split_words(rest)?;
            if args.is_empty() {
                let usage = if first == "pod" {
                    "`pod add C0/c10 --worker w1` or `pod rm C0/c10`"
                } else {
                    "`svc add C0/web --pods c1,c2` or `svc rm C0/web`"
                };
                return Err(ParseError::MissingArguments(first.to_string(), usage));
            }
            Ok(if first == "pod" {
                Command::Pod(args)
            } else {
                Command::Svc(args)
            })
        }
        "sh" if rest.is_empty() => Err(ParseError::MissingArguments(
            "sh".into(),
            "a command, e.g. `sh ip netns list`",
        )),
        "sh" => Ok(Command::Shell(rest.to_string())),
        "py" => parse_py(rest),
        node if is_node(node) => {
            if rest.is_empty() {
                Err(ParseError::MissingCommand(node.to_string()))
            } else {
                Ok(Command::Exec {
                    node: node.to_string(),
                    line: rest.to_string(),
                })
            }
        }
        other => Err(ParseError::Unknown(other.to_string())),
    }
}

/// `iperf [SRC DST] [SECONDS]`: a trailing number is the duration.
fn parse_iperf(words: &[String], is_node: &dyn Fn(&str) -> bool) -> Result<Command, ParseError> {
    let usage = || {
        ParseError::Iperf(
            "two nodes and an optional duration in seconds, e.g. `iperf C0/c1 C0/c2 10`, or none: `iperf`".into(),
        )
    };
    let (nodes, seconds) = match words {
        [rest @ .., last] if !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()) => {
            match last.parse::<u32>() {
                Ok(s) if (1..=IPERF_MAX_SECONDS).contains(&s) => (rest, s),
                _ => {
                    return Err(ParseError::Iperf(format!(
                        "the duration `{last}` is not between 1 and {IPERF_MAX_SECONDS} seconds"
                    )))
                }
            }
        }
        _ => (words, IPERF_SECONDS),
    };
    let nodes = match nodes {
        [] => None,
        [src, dst] => {
            for node in [src, dst] {
                if !is_node(node) {
                    return Err(ParseError::NoNode {
                        command: "iperf".into(),
                        node: node.clone(),
                    });
                }
            }
            if src == dst {
                return Err(ParseError::Iperf(format!(
                    "`{src}` twice: the test runs between two different nodes"
                )));
            }
            Some((src.clone(), dst.clone()))
        }
        _ => return Err(usage()),
    };
    Ok(Command::Iperf { nodes, seconds })
}

/// `C0w1.exec_container("c1", "ifconfig")` and its siblings.
fn parse_py(expr: &str) -> Result<Command, ParseError> {
    let err = |what: &str| {
        ParseError::Py(format!(
            "{what}; knetsim understands the deck's `py C0w1.exec_container(\"c1\", \"ifconfig\")`, \
             `py C0w1.create_container(\"c10\")`, `py C0w1.delete_container(\"c10\")` and \
             `py C0.kp_vip_add(\"100.64.20.1\", [\"c2\", \"c3\"])`"
        ))
    };
    let (host, call) = expr.split_once('.').ok_or_else(|| err("no `HOST.method(...)`"))?;
    let (method, args) = call.split_once('(').ok_or_else(|| err("no `(`"))?;
    let args = args.trim_end().strip_suffix(')').ok_or_else(|| err("no closing `)`"))?;
    if method.trim() == "kp_vip_add" {
        // A string and a list of strings: `"100.64.10.1", ["c2", "c3"]`.
        let (vip, list) = args
            .split_once(',')
            .ok_or_else(|| err("kp_vip_add takes a VIP and a list of pods"))?;
        let vip = split_args(vip).ok().and_then(|v| v.into_iter().next());
        let list = list.trim().strip_prefix('[').and_then(|l| l.strip_suffix(']'));
        let pods = list.and_then(|l| split_args(l).ok()).filter(|p| !p.is_empty());
        let (Some(vip), Some(pods)) = (vip, pods) else {
            return Err(err("kp_vip_add takes a quoted VIP and a list of quoted pod names"));
        };
        return Ok(Command::VipAdd {
            cluster: host.trim().to_string(),
            vip,
            pods,
        });
    }
    let args: Vec<String> = split_args(args).map_err(|_| err("unbalanced quotes"))?;
    let host = host.trim().to_string();
    let call = match (method.trim(), args.as_slice()) {
        ("exec_container", [pod, line]) => ContainerCall::Exec {
            pod: pod.clone(),
            line: line.clone(),
        },
        ("create_container", [pod]) => ContainerCall::Create { pod: pod.clone() },
        ("delete_container", [pod]) => ContainerCall::Delete { pod: pod.clone() },
        (m, _) => return Err(err(&format!("`{m}` with {} argument(s) is not known", args.len()))),
    };
    Ok(Command::Container { host, call })
}

/// Comma-separated Python string literals: `"c1", 'ifconfig -a'`.
fn split_args(text: &str) -> Result<Vec<String>, ()> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|a| {
            let a = a.trim();
            let unquoted = a
                .strip_prefix('"')
                .and_then(|x| x.strip_suffix('"'))
                .or_else(|| a.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')));
            unquoted.map(str::to_string).ok_or(())
        })
        .collect()
}

/// Splits arguments the way a shell does for words: whitespace, '...', "...", and `\`.
pub fn split_words(text: &str) -> Result<Vec<String>, ParseError> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some(q) if q == c => break,
                        Some('\\') if c == '"' => word.extend(chars.next()),
                        Some(x) => word.push(x),
                        None => return Err(ParseError::Quote(text.to_string())),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.extend(chars.next());
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// Mininet's substitution: a word of a node line that names a node (`C0/c2`, `C0w2`)
/// or a service becomes its address, so `C0/c1 ping C0/c2` works. Whitespace is kept.
pub fn substitute(line: &str, address_of: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while !rest.is_empty() {
        let ws = rest.len() - rest.trim_start().len();
        out.push_str(&rest[..ws]);
        rest = &rest[ws..];
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let word = &rest[..end];
        match address_of(word) {
            Some(ip) => out.push_str(&ip),
            None => out.push_str(word),
        }
        rest = &rest[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(w: &str) -> bool {
        ["C0w1", "C0w2", "C0e1", "C0/c1", "C0/c2", "switches"].contains(&w)
    }

    fn p(line: &str) -> Result<Command, ParseError> {
        parse(line, &nodes)
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn command_words() {
        assert_eq!(p(""), Ok(Command::Empty));
        assert_eq!(p("   \t"), Ok(Command::Empty));
        assert_eq!(p("nodes"), Ok(Command::Nodes));
        assert_eq!(p("  net  "), Ok(Command::Net));
        assert_eq!(p("dump"), Ok(Command::Dump));
        assert_eq!(p("pods"), Ok(Command::Pods));
        assert_eq!(p("services"), Ok(Command::Services));
        assert_eq!(p("pingall"), Ok(Command::PingAll));
        assert_eq!(p("status"), Ok(Command::Status));
        assert_eq!(p("repair --dry-run"), Ok(Command::Repair(vec!["--dry-run".into()])));
        assert_eq!(p("help"), Ok(Command::Help(None)));
        assert_eq!(p("help pingall"), Ok(Command::Help(Some("pingall".into()))));
        assert!(matches!(p("help a b"), Err(ParseError::MissingArguments(..))));
        assert_eq!(p("source 'my demo.txt'"), Ok(Command::Source("my demo.txt".into())));
        assert!(matches!(p("source"), Err(ParseError::MissingArguments(..))));
        assert_eq!(p("exit"), Ok(Command::Exit));
        assert_eq!(p("quit"), Ok(Command::Exit));
        assert_eq!(
            p("nodes C0w1"),
            Err(ParseError::NoArguments {
                command: "nodes".into()
            })
        );
    }

    #[test]
    fn node_lines_keep_the_rest_verbatim() {
        assert_eq!(
            p("C0w1 ip -br a"),
            Ok(Command::Exec {
                node: "C0w1".into(),
                line: "ip -br a".into()
            })
        );
        assert_eq!(
            p("C0/c1   ping -c 3 100.64.10.1 | tail -1"),
            Ok(Command::Exec {
                node: "C0/c1".into(),
                line: "ping -c 3 100.64.10.1 | tail -1".into()
            })
        );
        assert_eq!(p("C0w1"), Err(ParseError::MissingCommand("C0w1".into())));
    }

    #[test]
    fn unknown_words_are_named() {
        let e = p("C9w1 ifconfig").unwrap_err();
        assert_eq!(e, ParseError::Unknown("C9w1".into()));
        assert!(e.to_string().contains("`C9w1`"), "{e}");
        assert_eq!(p("frobnicate"), Err(ParseError::Unknown("frobnicate".into())));
    }

    #[test]
    fn pod_and_svc_take_the_subcommand_arguments() {
        assert_eq!(
            p("pod add C0/c10 --worker w1 -- sh -c 'sleep 100'"),
            Ok(Command::Pod(s(&[
                "add",
                "C0/c10",
                "--worker",
                "w1",
                "--",
                "sh",
                "-c",
                "sleep 100"
            ])))
        );
        assert_eq!(p("svc rm C0/web"), Ok(Command::Svc(s(&["rm", "C0/web"]))));
        assert!(matches!(p("pod"), Err(ParseError::MissingArguments(..))));
        assert_eq!(p("pod add 'C0/c1"), Err(ParseError::Quote("add 'C0/c1".into())));
    }

    #[test]
    fn iperf_takes_two_nodes_and_a_duration() {
        let pair = |a: &str, b: &str| Some((a.to_string(), b.to_string()));
        assert_eq!(
            p("iperf"),
            Ok(Command::Iperf {
                nodes: None,
                seconds: IPERF_SECONDS
            })
        );
        assert_eq!(
            p("iperf 2"),
            Ok(Command::Iperf {
                nodes: None,
                seconds: 2
            })
        );
        assert_eq!(
            p("iperf C0/c1 C0/c2"),
            Ok(Command::Iperf {
                nodes: pair("C0/c1", "C0/c2"),
                seconds: IPERF_SECONDS
            })
        );
        assert_eq!(
            p("iperf  C0w1 C0/c2 10 "),
            Ok(Command::Iperf {
                nodes: pair("C0w1", "C0/c2"),
                seconds: 10
            })
        );
        let e = p("iperf C0/c1 C0w9").unwrap_err();
        assert_eq!(
            e,
            ParseError::NoNode {
                command: "iperf".into(),
                node: "C0w9".into()
            }
        );
        assert_eq!(e.to_string(), "`iperf`: no node `C0w9` (`nodes` lists them)");
        for bad in [
            "iperf C0/c1",
            "iperf C0/c1 C0/c2 C0w1",
            "iperf C0/c1 C0/c2 3 4",
            "iperf C0/c1 C0/c1",
            "iperf 0",
            "iperf C0/c1 C0/c2 3601",
            "iperf C0/c1 C0/c2 99999999999",
        ] {
            assert!(matches!(p(bad), Err(ParseError::Iperf(_))), "{bad}: {:?}", p(bad));
        }
        // A duration that is not a number is taken for a node, and named.
        assert!(matches!(p("iperf C0/c1 5s"), Err(ParseError::NoNode { node, .. }) if node == "5s"));
        assert!(matches!(p("iperf C0/c2 5s 3"), Err(ParseError::NoNode { node, .. }) if node == "5s"));
    }

    #[test]
    fn shell_words() {
        assert_eq!(
            split_words(r#"a "b c" d\ e 'f"g'"#).unwrap(),
            s(&["a", "b c", "d e", "f\"g"])
        );
        assert_eq!(split_words(r#""a\"b""#).unwrap(), s(&["a\"b"]));
        assert_eq!(split_words("''").unwrap(), s(&[""]));
        assert_eq!(split_words("  ").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn the_decks_py_forms() {
        assert_eq!(
            p(r#"py C0w1.exec_container("c1", "ifconfig")"#),
            Ok(Command::Container {
                host: "C0w1".into(),
                call: ContainerCall::Exec {
                    pod: "c1".into(),
                    line: "ifconfig".into()
                }
            })
        );
        assert_eq!(
            p(r#"py C0.kp_vip_add("100.64.20.1", ["c2", 'c3'])"#),
            Ok(Command::VipAdd {
                cluster: "C0".into(),
                vip: "100.64.20.1".into(),
                pods: vec!["c2".into(), "c3".into()],
            })
        );
        assert_eq!(
            p("py C0w1.create_container('c10')"),
            Ok(Command::Container {
                host: "C0w1".into(),
                call: ContainerCall::Create { pod: "c10".into() }
            })
        );
        assert_eq!(
            p(r#"py C0w2.delete_container("c10")"#),
            Ok(Command::Container {
                host: "C0w2".into(),
                call: ContainerCall::Delete { pod: "c10".into() }
            })
        );
        for bad in [
            "py C0w1.reboot()",
            "py C0.kp_vip_add(\"100.64.20.1\")",
            "py C0.kp_vip_add(\"100.64.20.1\", [])",
            "py C0.kp_vip_add(100.64.20.1, [\"c2\"])",
            "py C0w1",
            "py C0w1.exec_container(\"c1\")",
            "py x.y(\"a)",
        ] {
            assert!(matches!(p(bad), Err(ParseError::Py(_))), "{bad}");
        }
    }

    #[test]
    fn node_names_become_addresses() {
        let addr = |w: &str| match w {
            "C0/c2" => Some("11.10.16.2".to_string()),
            "C0w2" => Some("10.0.0.3".to_string()),
            _ => None,
        };
        assert_eq!(substitute("ping -c 2  C0/c2", &addr), "ping -c 2  11.10.16.2");
        assert_eq!(substitute("curl C0w2:8000 C0/c2x", &addr), "curl C0w2:8000 C0/c2x");
        assert_eq!(substitute("", &addr), "");
    }
}
