//! `knetsim serve`'s HTTP parsing: a request head read from the connection, then the
//! fixed response.
#![no_main]

#[allow(dead_code)]
#[path = "../../src/cli/serve.rs"]
mod serve;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    serve::respond(data, &mut out, "S1-W2\n");
    assert!(out.starts_with(b"HTTP/1.1 200 OK\r\n"));
});
