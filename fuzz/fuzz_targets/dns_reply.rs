//! A DNS reply as a `dns` check reads it from inside a pod (untrusted bytes from
//! whatever answers on the DNS Service's address).
#![no_main]

use knetsim_executor::dns_probe::read_reply;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let id = data.first().map_or(0, |b| u16::from(*b));
    for record in [hickory_proto::rr::RecordType::A, hickory_proto::rr::RecordType::SRV] {
        let _ = read_reply(data, id, record);
    }
});
