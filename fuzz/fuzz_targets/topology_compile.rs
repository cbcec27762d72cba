//! The topology compiler end to end: TOML text -> checked model -> artifact bundle, and
//! on refusal the diagnostics as `knetsim check` prints them (file:line:col, rendered).
#![no_main]

use knetsim_compiler::{compile, CompileOptions, Source};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let source = Source::new("fuzz.toml", text);
    match compile(&source, &CompileOptions::default()) {
        Ok(bundle) => {
            let _ = bundle.manifest_json();
        }
        Err(diagnostics) => {
            for d in &diagnostics.items {
                let _ = diagnostics.location(d);
            }
            let _ = diagnostics.render();
        }
    }
});
