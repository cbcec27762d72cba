//! `knetsim cli` and `knetsim up --cli`: a Mininet-style `knetsim>` prompt over a
//! running emulation, with line editing, history (`~/.knetsim_history`) and tab
//! completion of commands and node names; lines piped in run as a script, each
//! echoed after the prompt. `commands` parses (pure), `complete` completes (pure),
//! `view` formats (pure), `run` acts.

mod commands;
mod complete;
mod iperf;
mod iperf_run;
mod run;
mod view;

use super::error::{finish, Outcome};
use super::Target;
use run::{Flow, Session};
use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{CompletionType, Config, Context, Editor, Helper};
use std::io::IsTerminal;
use std::path::PathBuf;

const PROMPT: &str = "knetsim> ";

#[derive(clap::Args)]
pub struct CliArgs {
    #[command(flatten)]
    target: Target,
}

/// Completion over the emulation's current names.
struct PromptHelper {
    names: complete::Names,
    files: FilenameCompleter,
}

impl Completer for PromptHelper {
    type Candidate = Pair;

    fn complete(&self, line: &str, pos: usize, ctx: &Context<'_>) -> rustyline::Result<(usize, Vec<Pair>)> {
        if line[..pos].trim_start().starts_with("source ") {
            return self.files.complete(line, pos, ctx);
        }
        let (start, words) = complete::complete(line, pos, &self.names);
        // A trailing space: a unique match is finished, as in bash.
        let pairs = words
            .into_iter()
            .map(|w| Pair {
                replacement: format!("{w} "),
                display: w,
            })
            .collect();
        Ok((start, pairs))
    }
}

impl Hinter for PromptHelper {
    type Hint = String;
}
impl Highlighter for PromptHelper {}
impl Validator for PromptHelper {}
impl Helper for PromptHelper {}

/// How the prompt ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// `knetsim cli`: ask whether to tear the emulation down.
    Ask,
    /// `up --cli`: always tear it down.
    TearDown,
}

/// `~/.knetsim_history`, or the state directory's when there is no home.
fn history_file(session: &Session) -> PathBuf {
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join(".knetsim_history"),
        None => session.state_dir().join("history"),
    }
}

extern "C" fn on_sigint(_: libc::c_int) {}

/// Ctrl-C must stop the running command, never the prompt: the terminal sends SIGINT
/// to the whole foreground process group, so the prompt catches it and does nothing
/// (a handler, not SIG_IGN, which children would inherit through exec).
fn survive_sigint() {
    // SAFETY: installing a handler that does nothing, before any command runs.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigint as *const () as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
    }
}

pub fn cli(a: CliArgs) -> Outcome {
    prompt(a.target, Ending::Ask)
}

/// `up --cli`: the prompt over the emulation `up` just started, then teardown.
pub fn after_up(target: &Target) -> Outcome {
    prompt(target.clone(), Ending::TearDown)
}

fn prompt(target: Target, ending: Ending) -> Outcome {
    let mut session = Session::open(target)?;
    if !knetsim_executor::system::process::is_root() {
        return Err("the knetsim prompt needs root (its commands enter network namespaces): run it with sudo".into());
    }
    survive_sigint();
    let tear_down = match repl(&mut session, ending) {
        Ok(t) => t,
        Err(e) => {
            // Said now: the teardown below still runs.
            finish(Err(format!("the prompt: {e}").into()));
            ending == Ending::TearDown
        }
    };
    if !tear_down {
        return Ok(0);
    }
    // `down` of this very emulation, as `knetsim down --name NAME` would do it.
    let mut argv = vec![
        "knetsim".to_string(),
        "down".into(),
        "--name".into(),
        session.name.clone(),
    ];
    if let Some(dir) = &session.target.state_dir {
        argv.extend(["--state-dir".to_string(), dir.display().to_string()]);
    }
    Ok(super::run_argv(argv))
}

/// Reads and runs lines until `exit` or Ctrl-D; returns whether to tear down.
fn repl(session: &mut Session, ending: Ending) -> rustyline::Result<bool> {
    let config = Config::builder()
        .completion_type(CompletionType::List)
        .history_ignore_space(true)
        .history_ignore_dups(true)?
        .max_history_size(1000)?
        .build();
    let mut rl: Editor<PromptHelper, DefaultHistory> = Editor::with_config(config)?;
    rl.set_helper(Some(PromptHelper {
        names: session.names(),
        files: FilenameCompleter::new(),
    }));
    // Lines from a pipe or a file are a script: each is shown after the prompt (as
    // `source` does), so the output reads as the session typed, and none goes to the
    // learner's history.
    let typed = std::io::stdin().is_terminal();
    let history = history_file(session);
    if typed {
        let _ = rl.load_history(&history);
    }
    println!(
        "*** knetsim prompt for emulation {}: `help` lists the commands, TAB completes, Ctrl-D leaves",
        super::running::display_name(&session.name)
    );
    loop {
        match rl.readline(PROMPT) {
            Ok(line) => {
                if !typed {
                    println!("{PROMPT}{line}");
                }
                // Appended at once (under a lock): kept if the terminal goes away, and
                // merged with other prompts' lines.
                if typed && !line.trim().is_empty() && rl.add_history_entry(line.as_str()).unwrap_or(false) {
                    let _ = rl.append_history(&history);
                }
                let flow = session.run_line(&line);
                if let Some(h) = rl.helper_mut() {
                    h.names = session.names();
                }
                if flow == Flow::Exit {
                    break;
                }
            }
            // Ctrl-C at the prompt: drop the line, a new prompt.
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => {
                if typed {
                    println!();
                }
                break;
            }
            Err(e) => return Err(e),
        }
    }
    if ending == Ending::TearDown {
        return Ok(true);
    }
    // Mininet stops its network on exit; a named emulation may be shared, so ask.
    rl.set_helper(None);
    const QUESTION: &str = "tear the emulation down? [y/N] ";
    loop {
        let answer = match rl.readline(QUESTION) {
            Ok(answer) => answer,
            // A script that ends here keeps the emulation, as `n` does.
            Err(ReadlineError::Eof) if !typed => String::new(),
            Err(ReadlineError::Interrupted | ReadlineError::Eof) => return Ok(false),
            Err(e) => return Err(e),
        };
        if !typed {
            println!("{QUESTION}{answer}");
        }
        match answer.trim() {
            "y" | "Y" | "yes" => return Ok(true),
            "" | "n" | "N" | "no" => {
                println!(
                    "emulation {} stays up (knetsim down{} removes it)",
                    super::running::display_name(&session.name),
                    super::running::name_flag(&session.name)
                );
                return Ok(false);
            }
            _ => println!("answer y or n"),
        }
    }
}
