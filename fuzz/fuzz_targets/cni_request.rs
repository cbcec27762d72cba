//! The CNI side's parsing of one invocation. The input is `NAME=VALUE` lines (the
//! `CNI_*` environment, and `FLANNEL_*` lines for the subnet file), an empty line, then
//! stdin. Fed to the built-in flannel plugin's `parse_request` and `build_delegate`, and
//! to the runtime's readers of the same kinds of bytes: network configuration files,
//! plugin results and errors, and `CNI_ARGS`.
#![no_main]

use knetsim_executor::cni::flannel_plugin::{build_delegate, parse_request, SubnetEnv};
use knetsim_executor::cni::{parse_cni_args, CniResult, NetworkConf, PluginEnv, PluginError};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let (head, stdin) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &data[data.len()..]),
    };
    let head = String::from_utf8_lossy(head);
    let mut env = PluginEnv::default();
    let mut subnet_file = String::new();
    for line in head.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match k {
            "CNI_COMMAND" => env.command = v.into(),
            "CNI_CONTAINERID" => env.container_id = v.into(),
            "CNI_NETNS" => env.netns = v.into(),
            "CNI_IFNAME" => env.ifname = v.into(),
            "CNI_ARGS" => env.args = v.into(),
            "CNI_PATH" => env.path = v.into(),
            _ => {
                subnet_file.push_str(line);
                subnet_file.push('\n');
            }
        }
    }
    match parse_request(&env, stdin) {
        Ok(Some(_)) => {
            if let (Ok(Value::Object(conf)), Ok(fenv)) =
                (serde_json::from_slice::<Value>(stdin), SubnetEnv::parse(&subnet_file))
            {
                let _ = build_delegate(&conf, &fenv);
            }
        }
        Ok(None) => {}
        Err(e) => {
            let _ = e.to_json("1.0.0");
        }
    }
    let _ = parse_cni_args(&env.args);
    let _ = env.plugin_dirs();
    let _ = NetworkConf::from_list_bytes(stdin, "fuzz.conflist");
    let _ = NetworkConf::from_plugin_bytes(stdin, "fuzz.conf");
    if let Ok(result) = CniResult::parse(stdin, "1.0.0") {
        let _ = result.addresses();
    }
    let _ = serde_json::from_slice::<PluginError>(stdin).map(|e| e.to_string());
});
