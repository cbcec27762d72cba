//! The routing table: a link-state database of router advertisements (who each router is
//! linked to at what cost, and which service addresses it can reach locally), shortest
//! paths by Dijkstra, and the choice of a destination for a new stream.

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

    /// Picks the destination of a new stream: the cheapest routers serving the address,
    /// round-robin among equal-cost ones; on this router, round-robin over its
    /// `local_connectors` tcpConnectors for the address.
    pub fn choose(&mut self, address: &str, local_connectors: usize) -> Option<Choice> {
        let dests = self.destinations(address);
        let best = dests.first()?.0;
        let tied: Vec<&String> = dests.iter().filter(|(c, _)| *c == best).map(|(_, id)| id).collect();
        let n = self.rr.entry(address.to_string()).or_insert(0);
        let pick = tied[*n % tied.len()].clone();
        let slot = *n / tied.len();
        *n = n.wrapping_add(1);
        if pick == self.me {
            if local_connectors == 0 {
                return None;
            }
            return Some(Choice::Local(slot % local_connectors));
        }
        let r = self.routes.get(&pick)?;
        Some(Choice::Remote {
            dest: pick.clone(),
            next_hop: r.next_hop.clone(),
            cost: r.cost,
        })
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
            t.choose("svc", 0),
            Some(Choice::Remote {
                dest: "c0".into(),
                next_hop: "c1".into(),
                cost: 2
            })
        );
        assert_eq!(t.choose("other", 0), None);
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
        let picks: Vec<_> = (0..6).map(|_| t.choose("svc", 3)).collect();
        let expect: Vec<_> = [0, 1, 2, 0, 1, 2].iter().map(|i| Some(Choice::Local(*i))).collect();
        assert_eq!(picks, expect);
    }

    #[test]
    fn local_connector_beats_remote_and_equal_cost_remotes_alternate() {
        let mut t = Table::new("a");
        t.update(lsa("a", 1, &[("b", 1), ("c", 1)], &["svc"]));
        t.update(lsa("b", 1, &[("a", 1)], &["svc", "x"]));
        t.update(lsa("c", 1, &[("a", 1)], &["x"]));
        assert_eq!(t.choose("svc", 1), Some(Choice::Local(0)));
        let dests: Vec<String> = (0..4)
            .map(|_| match t.choose("x", 0) {
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
}
