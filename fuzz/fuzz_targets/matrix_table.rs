//! A `[[checks]] matrix` expected truth table (topology text): a header of pods, then
//! a row per pod of `.` and `X`, in any order.
#![no_main]

use knetsim_compiler::model::matrix::{parse, render};
use libfuzzer_sys::fuzz_target;

const PODS: &[&str] = &["x/a", "x/b", "y/a", "default/c1"];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cells) = parse(text, PODS) {
        // What reads back is a full table, and renders to a table that reads the same.
        assert_eq!(cells.len(), PODS.len());
        assert_eq!(parse(&render(PODS, &cells), PODS).as_ref(), Ok(&cells));
    }
});
