//! The router's JSON config reader (skrouterd's `[[entity, {attributes}], ...]`).
#![no_main]

use knetsim_router::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = Config::parse(text) {
        let _ = format!("{config:?}");
    }
});
