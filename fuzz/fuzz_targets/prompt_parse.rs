//! The prompt's command parser (`knetsim cli`, `source FILE`): one line -> a typed
//! command, its shell-like word splitting and the node-name -> address substitution.
#![no_main]

#[allow(dead_code)]
#[path = "../../src/cli/prompt/commands.rs"]
mod commands;

use libfuzzer_sys::fuzz_target;

const NODES: &[&str] = &["C0w1", "C0w2", "C0e1", "C0/c1", "C0/c2", "C1/c2", "C0", "switches"];

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    let is_node = |w: &str| NODES.contains(&w);
    let _ = commands::parse(line, &is_node);
    let _ = commands::split_words(line);
    let _ = commands::substitute(line, &|w| NODES.contains(&w).then(|| "10.1.2.3".to_string()));
});
