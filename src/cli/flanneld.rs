//! `knetsim flanneld`: the built-in flannel agent, taking flanneld's Go-style flags
//! (`-iface=IP`, `--iface IP`, ...). The executor starts it inside a worker's network
//! namespace when no real `flanneld` is on PATH.

use knetsim_executor::flannel::{self, Invocation, Options};

#[derive(clap::Args)]
#[command(disable_help_flag = true)]
pub struct Args {
    /// flanneld's flags: -iface=IP -etcd-endpoints=URLS -etcd-prefix=PREFIX -subnet-file=PATH (-help lists them all).
    #[arg(allow_hyphen_values = true, trailing_var_arg = true, num_args = 0.., value_name = "FLAG")]
    flags: Vec<String>,
}

pub fn flanneld(a: Args) -> i32 {
    let opts: Options = match Options::parse(&a.flags) {
        Ok(Invocation::Run(o)) => o,
        Ok(Invocation::Help) => {
            print!("{}", flannel::USAGE);
            return 0;
        }
        Ok(Invocation::Version) => {
            println!("knetsim flanneld {}", env!("CARGO_PKG_VERSION"));
            return 0;
        }
        Err(e) => {
            eprintln!("{e}");
            eprint!("{}", flannel::USAGE);
            return 2;
        }
    };
    let stop = flannel::install_signal_handlers();
    match flannel::run(&opts, stop) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("E flanneld: {e}");
            1
        }
    }
}
