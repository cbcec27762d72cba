//! knetsim's built-in router: reads skrouterd's JSON configuration and links routers over
//! AMQP 1.0 connections that multiplex TCP service streams, routing them by link state
//! (lowest cost, any number of hops). `knetsim router -c FILE` runs it.

pub mod amqp;
pub mod config;
mod engine;
pub mod routing;
pub mod tls;

pub use config::{Config, ConfigError};
pub use engine::{AddrStats, Router, Snapshot};

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static SIGNALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    SIGNALLED.store(true, Ordering::SeqCst);
}

/// Loads `path`, runs the router until SIGTERM or SIGINT; the process exit code.
pub fn run_file(path: &std::path::Path) -> i32 {
    let cfg = match Config::from_file(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("E {e}");
            return 2;
        }
    };
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let router = match Router::start(cfg) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("E router: {e}");
            return 1;
        }
    };
    while !SIGNALLED.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
    }
    router.stop();
    0
}
