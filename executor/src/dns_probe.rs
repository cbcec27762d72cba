//! The `dns` check: the queries a pod's resolver would send (resolved by the
//! compiler: server, search list, ndots), sent over UDP from inside the pod's
//! network namespace, messages made and read with hickory-proto.

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinEncodable};
use knetsim_compiler::model::dns_check::DnsProbe;
use std::net::{SocketAddr, UdpSocket};
use std::str::FromStr;
use std::time::Duration;

/// What a lookup found: the name that answered and its sorted answers, or that
/// none of the names exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Found { name: String, answers: Vec<String> },
    NxDomain,
}

/// Tries the probe's names in order, as the resolver does; the first one that is
/// not NXDOMAIN answers. Runs in `netns` (on a thread of its own).
pub fn lookup(netns: &str, probe: &DnsProbe, timeout: Duration) -> Result<Lookup, String> {
    crate::system::linux::in_netns(netns, || Ok(lookup_here(probe, timeout))).map_err(|e| e.to_string())?
}

fn lookup_here(probe: &DnsProbe, timeout: Duration) -> Result<Lookup, String> {
    let record = if probe.record == "SRV" {
        RecordType::SRV
    } else {
        RecordType::A
    };
    let socket = UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("udp socket: {e}"))?;
    socket.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let server = SocketAddr::from((probe.server, 53));
    for (i, q) in probe.queries.iter().enumerate() {
        let name = Name::from_str(q).map_err(|e| format!("bad name {q}: {e}"))?;
        let mut msg = Message::new();
        msg.set_id(0x4b00 | i as u16)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true)
            .add_query(Query::query(name, record));
        let bytes = msg.to_bytes().map_err(|e| e.to_string())?;
        socket
            .send_to(&bytes, server)
            .map_err(|e| format!("sending to {server}: {e}"))?;
        let id = msg.id();
        let mut buf = [0u8; 4096];
        // A late answer to an earlier query of this socket is not this one's.
        let reply = loop {
            let n = socket
                .recv(&mut buf)
                .map_err(|e| format!("no answer from {server} within {timeout:?}: {e}"))?;
            if let Some(reply) = read_reply(&buf[..n], id, record).transpose() {
                break reply;
            }
        };
        match reply {
            Err(e) if e == NXDOMAIN => continue,
            Err(e) => return Err(format!("{server}: {e} for {q}")),
            Ok(answers) => {
                return Ok(Lookup::Found {
                    name: q.trim_end_matches('.').to_string(),
                    answers,
                })
            }
        }
    }
    Ok(Lookup::NxDomain)
}

const NXDOMAIN: &str = "NXDOMAIN";

/// Reads a DNS reply (untrusted bytes): None when it answers another query than `id`;
/// else its sorted answers of type `record` (A: addresses; SRV: `PORT TARGET`), or the
/// error (`NXDOMAIN`, another response code, a malformed message).
pub fn read_reply(bytes: &[u8], id: u16, record: RecordType) -> Result<Option<Vec<String>>, String> {
    let reply = Message::from_bytes(bytes).map_err(|e| format!("bad reply: {e}"))?;
    if reply.id() != id || reply.message_type() != MessageType::Response {
        return Ok(None);
    }
    match reply.response_code() {
        ResponseCode::NXDomain => return Err(NXDOMAIN.into()),
        ResponseCode::NoError => {}
        other => return Err(format!("answered {other}")),
    }
    let mut answers: Vec<String> = reply
        .answers()
        .iter()
        .filter_map(|r| match r.data()? {
            RData::A(a) if record == RecordType::A => Some(a.0.to_string()),
            RData::SRV(s) if record == RecordType::SRV => Some(format!(
                "{} {}",
                s.port(),
                s.target().to_ascii().trim_end_matches('.').to_ascii_lowercase()
            )),
            _ => None,
        })
        .collect();
    answers.sort();
    Ok(Some(answers))
}

/// Whether `seen` is what the probe expects, and the detail to show.
pub fn judge(probe: &DnsProbe, seen: &Lookup) -> (bool, String) {
    match seen {
        Lookup::NxDomain => (probe.nxdomain, "NXDOMAIN".into()),
        Lookup::Found { name, answers } => {
            let shown = if answers.is_empty() {
                "no records".to_string()
            } else {
                answers.join(", ")
            };
            let detail = format!("{name}: {shown}");
            let ok = !probe.nxdomain && (probe.answers.is_empty() && !answers.is_empty() || *answers == probe.answers);
            (ok, detail)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(answers: &[&str], nxdomain: bool) -> DnsProbe {
        DnsProbe {
            name: "web".into(),
            record: "A".into(),
            server: "100.64.0.10".parse().unwrap(),
            queries: vec!["web.default.svc.cluster.local.".into()],
            answers: answers.iter().map(|a| a.to_string()).collect(),
            nxdomain,
        }
    }

    #[test]
    fn answers_are_compared_as_sets_and_nxdomain_as_asked() {
        let found = Lookup::Found {
            name: "web.default.svc.cluster.local".into(),
            answers: vec!["11.10.0.2".into(), "11.10.0.3".into()],
        };
        assert!(judge(&probe(&["11.10.0.2", "11.10.0.3"], false), &found).0);
        assert!(!judge(&probe(&["11.10.0.2"], false), &found).0);
        assert!(judge(&probe(&[], false), &found).0);
        assert!(!judge(&probe(&[], true), &found).0);
        assert!(judge(&probe(&[], true), &Lookup::NxDomain).0);
        assert!(!judge(&probe(&["11.10.0.2"], false), &Lookup::NxDomain).0);
    }

    #[test]
    fn replies_are_read_by_id_and_code() {
        use hickory_proto::rr::rdata::A;
        use hickory_proto::rr::Record;
        let name = Name::from_str("web.default.svc.cluster.local.").unwrap();
        let reply = |id: u16, code: ResponseCode| {
            let mut m = Message::new();
            m.set_id(id)
                .set_message_type(MessageType::Response)
                .set_response_code(code);
            m.add_query(Query::query(name.clone(), RecordType::A));
            for ip in ["11.10.0.4", "11.10.0.3"] {
                m.add_answer(Record::from_rdata(name.clone(), 5, RData::A(A(ip.parse().unwrap()))));
            }
            m.to_bytes().unwrap()
        };
        let ok = reply(7, ResponseCode::NoError);
        assert_eq!(
            read_reply(&ok, 7, RecordType::A).unwrap(),
            Some(vec!["11.10.0.3".to_string(), "11.10.0.4".to_string()])
        );
        assert_eq!(
            read_reply(&ok, 8, RecordType::A).unwrap(),
            None,
            "another query's answer"
        );
        assert_eq!(read_reply(&ok, 7, RecordType::SRV).unwrap(), Some(vec![]));
        assert_eq!(
            read_reply(&reply(7, ResponseCode::NXDomain), 7, RecordType::A).unwrap_err(),
            NXDOMAIN
        );
        assert!(read_reply(&reply(7, ResponseCode::Refused), 7, RecordType::A)
            .unwrap_err()
            .contains("Refused"));
        assert!(read_reply(&ok[..5], 7, RecordType::A)
            .unwrap_err()
            .contains("bad reply"));
    }
}
