//! `knetsim events`: what repairs did and why (`knetsim repair`, `apply`, the
//! supervisor), oldest first, like `kubectl get events`.

use super::error::Outcome;
use super::running::display_name;
use super::Target;
use knetsim_executor::events::{self, Event};
use knetsim_executor::layout::StateLayout;
use std::time::Duration;

#[derive(clap::Args)]
pub struct EventsArgs {
    #[command(flatten)]
    target: Target,
    /// Keep listing events as they come (Ctrl-C stops).
    #[arg(long, short = 'f')]
    follow: bool,
    /// One JSON object a line.
    #[arg(long)]
    json: bool,
}

pub fn events(a: EventsArgs) -> Outcome {
    let opts = a.target.options()?;
    let layout = StateLayout::new(&opts.state_dir);
    if !layout.state_file().exists() {
        return Err(format!("emulation {} is not up", display_name(&opts.name)).into());
    }
    let (first, mut offset) = events::read_from(&layout, 0).map_err(|e| e.to_string())?;
    if !a.json {
        println!("{:<9} {:<11} {:<22} {:<44} ACTION", "AGE", "SOURCE", "OBJECT", "REASON");
    }
    print(&first, a.json);
    if !a.follow {
        return Ok(0);
    }
    // Until the emulation is gone (or Ctrl-C).
    while layout.state_file().exists() {
        std::thread::sleep(Duration::from_millis(200));
        let (more, next) = events::read_from(&layout, offset).map_err(|e| e.to_string())?;
        offset = next;
        print(&more, a.json);
    }
    Ok(0)
}

fn print(list: &[Event], json: bool) {
    let now = events::now_ms();
    for e in list {
        if json {
            println!("{}", serde_json::to_string(e).unwrap_or_default());
        } else {
            let age = format!("{}s", now.saturating_sub(e.at_ms) / 1000);
            println!(
                "{age:<9} {:<11} {:<22} {:<44} {}",
                e.source, e.object, e.reason, e.action
            );
        }
    }
}
