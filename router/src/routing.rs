//! The routing table: a link-state database of router advertisements (who each router is
//! linked to at what cost, and which service addresses it can reach locally), shortest
//! paths by Dijkstra, and the choice of a destination for a new stream by the address's
//! distribution.

use crate::config::AddressEntity;
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};

/// One router's advertisement, flooded to every router.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lsa {
    pub id: String,
    /// Grows with every new advertisement of the router, across restarts (it starts from
    /// the wall clock), so a restarted peer replaces its old advertisement at once.
    pub seq: u64,
    /// Neighbour router id -> link cost.
    pub links: BTreeMap<String, u32>,
    /// Addresses with a tcpConnector on this router.
    pub addresses: BTreeSet<String>,
}

/// Where a new stream for an address goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// A tcpConnector of this router (the index among its connectors for the address).
    Local(usize),
    /// Router `dest`, reached through the neighbour `next_hop`.
    Remote { dest: String, next_hop: String, cost: u64 },
}

/// How new streams for an address spread over the routers and tcpConnectors serving it
/// (the `address` entity's `distribution`; skrouterd's default is balanced).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Distribution {
    /// To the destination with the fewest streams open from this router plus path cost
    /// (as skrouterd's balanced forwarder weighs outstanding deliveries against cost):
    /// the nearest while idle, spilling over to farther ones under load.
    #[default]
    Balanced,
    /// Only to the nearest destinations, round-robin among equally near ones.
    Closest,
    /// A TCP stream has a single destination: treated as closest.
    Multicast,
}

impl Distribution {
    pub fn parse(s: &str) -> Option<Distribution> {
        match s {
            "balanced" => Some(Distribution::Balanced),
            "closest" => Some(Distribution::Closest),
            "multicast" => Some(Distribution::Multicast),
            _ => None,
        }
    }

    /// The distribution of `address` under the `address` entities: the most specific
    /// (longest) prefix or pattern matching it, `default` if none does.
    pub fn of(entities: &[AddressEntity], default: Distribution, address: &str) -> Distribution {
        entities
            .iter()
            .filter_map(|e| {
                let (spec, hit) = match (&e.prefix, &e.pattern) {
                    (Some(p), _) => (p, prefix_matches(p, address)),
                    (None, Some(p)) => (p, pattern_matches(p, address)),
                    (None, None) => return None,
                };
                hit.then(|| (spec.len(), Distribution::parse(&e.distribution).unwrap_or_default()))
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, d)| d)
            .unwrap_or(default)
    }
}

fn tokens(s: &str) -> Vec<&str> {
    s.split(['.', '/']).collect()
}

/// skrouterd's prefix: whole leading tokens (separated by '.' or '/'), so "mc" matches
/// "mc", "mc.a" and "mc/a" but not "mcast".
fn prefix_matches(prefix: &str, address: &str) -> bool {
    let (p, a) = (tokens(prefix), tokens(address));
    p.len() <= a.len() && p.iter().zip(&a).all(|(x, y)| x == y)
}

/// skrouterd's pattern: tokens, where '*' is exactly one token and '#' zero or more.
fn pattern_matches(pattern: &str, address: &str) -> bool {
    fn m(p: &[&str], a: &[&str]) -> bool {
        match p.split_first() {
            None => a.is_empty(),
            Some((&"#", rest)) => (0..=a.len()).any(|i| m(rest, &a[i..])),
            Some((t, rest)) => a
                .split_first()
                .is_some_and(|(x, ar)| (*t == "*" || t == x) && m(rest, ar)),
        }
    }
    m(&tokens(pattern), &tokens(address))
}

/// The destination a stream is counted against: a local tcpConnector or a router,
/// whichever path leads there.
fn open_key(address: &str, c: &Choice) -> (String, String) {
    let dest = match c {
        Choice::Local(i) => format!("local connector {i}"),
        Choice::Remote { dest, .. } => format!("router {dest}"),
    };
    (address.to_string(), dest)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub cost: u64,
    pub next_hop: String,
}

#[derive(Debug, Default)]
pub struct Table {
    me: String,
    lsdb: HashMap<String, Lsa>,
    routes: HashMap<String, Route>,
    rr: HashMap<String, usize>,
    /// Streams open from this router per (address, destination), for balanced.
    open: HashMap<(String, String), usize>,
}

impl Table {
    pub fn new(me: &str) -> Table {
        Table {
            me: me.to_string(),
            ..Default::default()
        }
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    /// Stores an advertisement if it is newer than the one held; true if it was stored.
    pub fn update(&mut self, lsa: Lsa) -> bool {
        if let Some(old) = self.lsdb.get(&lsa.id) {
            if old.seq >= lsa.seq {
                return false;
            }
        }
        self.lsdb.insert(lsa.id.clone(), lsa);
        self.recompute();
        true
    }

    pub fn get(&self, id: &str) -> Option<&Lsa> {
        self.lsdb.get(id)
    }

    pub fn all(&self) -> impl Iterator<Item = &Lsa> {
        self.lsdb.values()
    }

    /// Cost of an edge a -> b: used only when both ends advertise it (the larger cost wins).
    fn edge(&self, a: &Lsa, b: &str) -> Option<u64> {
        let ab = *a.links.get(b)?;
        let ba = *self.lsdb.get(b)?.links.get(&a.id)?;
        Some(ab.max(ba).max(1) as u64)
    }

    fn recompute(&mut self) {
        let mut routes: HashMap<String, Route> = HashMap::new();
        let mut heap = BinaryHeap::new();
        let mut done = BTreeSet::new();
        heap.push(Reverse((0u64, self.me.clone(), String::new())));
        while let Some(Reverse((cost, id, hop))) = heap.pop() {
            if !done.insert(id.clone()) {
                continue;
            }
            if id != self.me {
                routes.insert(
                    id.clone(),
                    Route {
                        cost,
                        next_hop: hop.clone(),
                    },
                );
            }
            let Some(lsa) = self.lsdb.get(&id) else { continue };
            for n in lsa.links.keys() {
                if done.contains(n) {
                    continue;
                }
                if let Some(c) = self.edge(lsa, n) {
                    let first = if id == self.me { n.clone() } else { hop.clone() };
                    heap.push(Reverse((cost + c, n.clone(), first)));
                }
            }
        }
        self.routes = routes;
    }

    pub fn route(&self, router: &str) -> Option<&Route> {
        self.routes.get(router)
    }

    pub fn routes(&self) -> &HashMap<String, Route> {
        &self.routes
    }

    /// Reachable routers (this one included, cost 0) that serve `address`, cheapest first.
    pub fn destinations(&self, address: &str) -> Vec<(u64, String)> {
        let mut out: Vec<(u64, String)> = self
            .lsdb
            .values()
            .filter(|l| l.addresses.contains(address))
            .filter_map(|l| {
                if l.id == self.me {
                    Some((0, l.id.clone()))
                } else {
                    self.routes.get(&l.id).map(|r| (r.cost, l.id.clone()))
                }
            })
            .collect();
        out.sort();
        out
    }

    pub fn reachable(&self, address: &str) -> bool {
        !self.destinations(address).is_empty()
    }

    /// Every address some reachable router serves.
    pub fn reachable_addresses(&self) -> BTreeSet<String> {
        self.lsdb
            .values()
            .filter(|l| l.id == self.me || self.routes.contains_key(&l.id))
            .flat_map(|l| l.addresses.iter().cloned())
            .collect()
    }

    /// Picks the destination of a new stream for `address` by its distribution, among
    /// the reachable routers serving it and this router's `local_connectors`
    /// tcpConnectors for it (several connectors or equal choices take turns). Counts the
    /// stream open until [`Table::closed`].
    pub fn choose(&mut self, address: &str, local_connectors: usize, dist: Distribution) -> Option<Choice> {
        // (cost, destination) for every tcpConnector reachable.
        let mut cands: Vec<(u64, Choice)> = Vec::new();
        for (cost, id) in self.destinations(address) {
            if id == self.me {
                cands.extend((0..local_connectors).map(|i| (0, Choice::Local(i))));
            } else if let Some(r) = self.routes.get(&id) {
                let c = Choice::Remote {
                    dest: id.clone(),
                    next_hop: r.next_hop.clone(),
                    cost,
                };
                cands.push((cost, c));
            }
        }
        // The weight to minimise, and among equal weights the cheaper first.
        let weight = |cost: u64, c: &Choice| -> (u64, u64) {
            match dist {
                Distribution::Balanced => {
                    let open = self.open.get(&open_key(address, c)).copied().unwrap_or(0);
                    (open as u64 + cost, cost)
                }
                Distribution::Closest | Distribution::Multicast => (cost, cost),
            }
        };
        let best = cands.iter().map(|(cost, c)| weight(*cost, c)).min()?;
        let tied: Vec<&Choice> = cands
            .iter()
            .filter(|(cost, c)| weight(*cost, c) == best)
            .map(|(_, c)| c)
            .collect();
        let n = self.rr.entry(address.to_string()).or_insert(0);
        let pick = tied[*n % tied.len()].clone();
        *n = n.wrapping_add(1);
        *self.open.entry(open_key(address, &pick)).or_insert(0) += 1;
        Some(pick)
    }

    /// A stream `choose` sent to `choice` has ended.
    pub fn closed(&mut self, address: &str, choice: &Choice) {
        let key = open_key(address, choice);
        if let Some(n) = self.open.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.open.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lsa(id: &str, seq: u64, links: &[(&str, u32)], addrs: &[&str]) -> Lsa {
        Lsa {
            id: id.into(),
            seq,
            links: links.iter().map(|(n, c)| (n.to_string(), *c)).collect(),
            addresses: addrs.iter().map(|a| a.to_string()).collect(),
        }
    }

    /// A line c2 - c1 - c0 with svc on c0.
    fn chain() -> Table {
        let mut t = Table::new("c2");
        t.update(lsa("c2", 1, &[("c1", 1)], &[]));
        t.update(lsa("c1", 1, &[("c2", 1), ("c0", 1)], &[]));
        t.update(lsa("c0", 1, &[("c1", 1)], &["svc"]));
        t
    }

    #[test]
    fn multi_hop_route_goes_through_the_middle_router() {
        let mut t = chain();
        assert_eq!(
            t.route("c0"),
            Some(&Route {
                cost: 2,
                next_hop: "c1".into()
            })
        );
        assert!(t.reachable("svc"));
        assert_eq!(
            t.choose("svc", 0, Distribution::Closest),
            Some(Choice::Remote {
                dest: "c0".into(),
                next_hop: "c1".into(),
                cost: 2
            })
        );
        assert_eq!(t.choose("other", 0, Distribution::Balanced), None);
    }

    #[test]
    fn one_sided_links_are_not_used() {
        let mut t = Table::new("a");
        t.update(lsa("a", 1, &[("b", 1)], &[]));
        t.update(lsa("b", 1, &[], &["svc"]));
        assert!(!t.reachable("svc"));
        t.update(lsa("b", 2, &[("a", 1)], &["svc"]));
        assert!(t.reachable("svc"));
    }

    #[test]
    fn cheaper_path_wins_and_traffic_moves_when_it_goes_down() {
        // a -1- b -1- d and a -5- c -1- d, svc on d.
        let mut t = Table::new("a");
        t.update(lsa("a", 1, &[("b", 1), ("c", 5)], &[]));
        t.update(lsa("b", 1, &[("a", 1), ("d", 1)], &[]));
        t.update(lsa("c", 1, &[("a", 5), ("d", 1)], &[]));
        t.update(lsa("d", 1, &[("b", 1), ("c", 1)], &["svc"]));
        assert_eq!(
            t.route("d").unwrap(),
            &Route {
                cost: 2,
                next_hop: "b".into()
            }
        );
        // The a-b link drops: a re-advertises without b.
        t.update(lsa("a", 2, &[("c", 5)], &[]));
        assert_eq!(
            t.route("d").unwrap(),
            &Route {
                cost: 6,
                next_hop: "c".into()
            }
        );
        // And the other path too: withdrawn.
        t.update(lsa("a", 3, &[], &[]));
        assert!(!t.reachable("svc"));
        assert!(t.routes().is_empty());
    }

    #[test]
    fn link_cost_is_the_larger_of_both_ends() {
        let mut t = Table::new("a");
        t.update(lsa("a", 1, &[("b", 1)], &[]));
        t.update(lsa("b", 1, &[("a", 4)], &["svc"]));
        assert_eq!(t.route("b").unwrap().cost, 4);
    }

    #[test]
    fn older_advertisements_are_ignored_and_a_restart_is_relearned() {
        let mut t = chain();
        assert!(!t.update(lsa("c0", 1, &[("c1", 1)], &[])));
        assert!(t.reachable("svc"));
        // c0 restarts without svc: its clock-based seq is larger, so it replaces at once.
        assert!(t.update(lsa("c0", 1_000_000, &[("c1", 1)], &[])));
        assert!(!t.reachable("svc"));
        assert!(t.update(lsa("c0", 1_000_001, &[("c1", 1)], &["svc"])));
        assert!(t.reachable("svc"));
    }

    #[test]
    fn local_connectors_share_streams_round_robin() {
        let mut t = Table::new("a");
        t.update(lsa("a", 1, &[], &["svc"]));
        let picks: Vec<_> = (0..6).map(|_| t.choose("svc", 3, Distribution::Closest)).collect();
        let expect: Vec<_> = [0, 1, 2, 0, 1, 2].iter().map(|i| Some(Choice::Local(*i))).collect();
        assert_eq!(picks, expect);
    }

    #[test]
    fn local_connector_beats_remote_and_equal_cost_remotes_alternate() {
        let mut t = Table::new("a");
        t.update(lsa("a", 1, &[("b", 1), ("c", 1)], &["svc"]));
        t.update(lsa("b", 1, &[("a", 1)], &["svc", "x"]));
        t.update(lsa("c", 1, &[("a", 1)], &["x"]));
        assert_eq!(t.choose("svc", 1, Distribution::Closest), Some(Choice::Local(0)));
        let dests: Vec<String> = (0..4)
            .map(|_| match t.choose("x", 0, Distribution::Closest) {
                Some(Choice::Remote { dest, .. }) => dest,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(dests, ["b", "c", "b", "c"]);
        assert_eq!(t.reachable_addresses().into_iter().collect::<Vec<_>>(), ["svc", "x"]);
    }

    #[test]
    fn long_chains_and_unreachable_islands() {
        let mut t = Table::new("r0");
        for i in 0..10 {
            let mut links = vec![];
            let prev = format!("r{}", i.max(1) - 1);
            let next = format!("r{}", i + 1);
            if i > 0 {
                links.push((prev.as_str(), 1));
            }
            if i < 9 {
                links.push((next.as_str(), 2));
            }
            let id = format!("r{i}");
            let addrs: &[&str] = if i == 9 { &["far"] } else { &[] };
            t.update(lsa(&id, 1, &links, addrs));
        }
        // An island that claims a link to r0, which r0 does not confirm.
        t.update(lsa("z", 1, &[("r0", 1)], &["island"]));
        assert_eq!(
            t.route("r9").unwrap(),
            &Route {
                cost: 18,
                next_hop: "r1".into()
            }
        );
        assert!(t.reachable("far"));
        assert!(!t.reachable("island"));
    }

    fn dest(c: Option<Choice>) -> String {
        match c {
            Some(Choice::Local(i)) => format!("local{i}"),
            Some(Choice::Remote { dest, .. }) => dest,
            None => "none".into(),
        }
    }

    /// a serves svc itself (one tcpConnector); b (cost 1) and c (cost 3) serve it too.
    fn three_servers() -> Table {
        let mut t = Table::new("a");
        t.update(lsa("a", 1, &[("b", 1), ("c", 3)], &["svc"]));
        t.update(lsa("b", 1, &[("a", 1)], &["svc"]));
        t.update(lsa("c", 1, &[("a", 3)], &["svc"]));
        t
    }

    #[test]
    fn closest_keeps_every_stream_on_the_nearest_destination() {
        let mut t = three_servers();
        let picks: Vec<String> = (0..5)
            .map(|_| dest(t.choose("svc", 1, Distribution::Closest)))
            .collect();
        assert_eq!(picks, ["local0"; 5]);
        // Multicast has no meaning for a TCP stream: closest.
        assert_eq!(dest(t.choose("svc", 1, Distribution::Multicast)), "local0");
    }

    #[test]
    fn balanced_spills_open_streams_over_by_load_plus_cost_and_returns_when_they_close() {
        let mut t = three_servers();
        let mut open = Vec::new();
        let picks: Vec<String> = (0..7)
            .map(|_| {
                let c = t.choose("svc", 1, Distribution::Balanced);
                open.push(c.clone().unwrap());
                dest(c)
            })
            .collect();
        // Weights (open streams + cost): local 0, b 1, c 3; ties go to the cheaper.
        assert_eq!(picks, ["local0", "local0", "b", "local0", "b", "local0", "b"]);
        // With the streams closed, the nearest takes new streams again.
        for c in &open {
            t.closed("svc", c);
        }
        assert_eq!(dest(t.choose("svc", 1, Distribution::Balanced)), "local0");
        // An idle destination of equal weight and cost takes turns.
        let mut t = Table::new("a");
        t.update(lsa("a", 1, &[], &["svc"]));
        let picks: Vec<String> = (0..4)
            .map(|_| {
                let c = t.choose("svc", 2, Distribution::Balanced);
                t.closed("svc", c.as_ref().unwrap());
                dest(c)
            })
            .collect();
        assert_eq!(picks, ["local0", "local1", "local0", "local1"]);
    }

    #[test]
    fn address_entities_set_the_distribution_by_prefix_or_pattern() {
        let e = |prefix: Option<&str>, pattern: Option<&str>, d: &str| AddressEntity {
            prefix: prefix.map(String::from),
            pattern: pattern.map(String::from),
            distribution: d.into(),
        };
        let entities = vec![
            e(Some("mc"), None, "multicast"),
            e(Some("web"), None, "closest"),
            e(Some("web/eu"), None, "balanced"),
            e(None, Some("db.*.primary"), "closest"),
            e(None, Some("logs.#"), "multicast"),
        ];
        let of = |a: &str| Distribution::of(&entities, Distribution::Balanced, a);
        assert_eq!(of("mc"), Distribution::Multicast);
        assert_eq!(of("mc.news"), Distribution::Multicast);
        assert_eq!(of("mcast"), Distribution::Balanced, "prefixes match whole tokens");
        assert_eq!(of("web:8080"), Distribution::Balanced, "'web:8080' is one token");
        assert_eq!(of("web/us"), Distribution::Closest);
        assert_eq!(of("web/eu/1"), Distribution::Balanced, "the longest prefix wins");
        assert_eq!(of("db.x.primary"), Distribution::Closest);
        assert_eq!(of("db.x.y.primary"), Distribution::Balanced);
        assert_eq!(of("logs"), Distribution::Multicast);
        assert_eq!(of("logs.a.b"), Distribution::Multicast);
        assert_eq!(
            Distribution::of(&[], Distribution::Balanced, "svc"),
            Distribution::Balanced
        );
        assert_eq!(
            Distribution::of(&entities, Distribution::Closest, "svc"),
            Distribution::Closest
        );
    }
}
