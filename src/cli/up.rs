//! `knetsim up`: compile, preflight (nothing changes if something is missing),
//! apply the plan with the real system, print a summary.

use super::error::{self, failed, CliError, Outcome};
use super::running::{display_name, name_flag};
use super::status::{print_table, service_row, table};
use super::{load_options_and_source, Target};
use clap::CommandFactory;
use knetsim_compiler::model::Check;
use knetsim_compiler::plan::{Component, Op, Plan, StartProcess};
use knetsim_compiler::{self as compiler, Compiled};
use knetsim_executor::engine::{apply_with, ApplyError, Event, Options};
use knetsim_executor::live::store_first_generation;
use knetsim_executor::observe::Inventory;
use knetsim_executor::preflight::{self, RealMachine};
use knetsim_executor::state::{self, StateFile};
use knetsim_executor::supervise;
use knetsim_executor::system::process::is_root;
use knetsim_executor::LinuxSystem;
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct UpArgs {
    /// Topology file (default: the embedded seed topology).
    topology: Option<PathBuf>,
    #[command(flatten)]
    target: Target,
    /// Steps run at the same time.
    #[arg(long, default_value_t = 8)]
    parallelism: usize,
    /// Seconds each readiness check (etcd health, flannel subnet, ...) may take.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Leave components out: ingress, interconnect, workloads (comma-separated).
    #[arg(long, value_delimiter = ',')]
    skip: Vec<Component>,
    /// Then open the `knetsim>` prompt (as Mininet does); leaving it tears the emulation down.
    #[arg(long)]
    cli: bool,
    /// Do not run the topology's [[checks]] once it is up.
    #[arg(long)]
    no_checks: bool,
    /// Do not start the supervisor (which restarts what dies with the kubelet's back-off,
    /// takes pods whose workload is dead out of their services, re-creates deleted pods).
    #[arg(long)]
    no_supervise: bool,
}

/// Subcommands of this knetsim, which can stand in for missing programs (`flanneld`).
fn builtins() -> Vec<String> {
    super::Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect()
}

/// The missing-dependency report, or None when everything is there.
fn preflight_report(plan: &Plan) -> Option<String> {
    let builtins = builtins();
    let builtins: Vec<&str> = builtins.iter().map(String::as_str).collect();
    let missing = preflight::check(plan, &RealMachine, &builtins, preflight::CNI_PLUGIN_DIRS);
    let lacks = preflight::kernel_lacks(plan, std::path::Path::new(preflight::BRIDGE_NF_CALL).exists());
    if let Some(first) = lacks.first() {
        return Some(format!("error: {first} (nothing was changed)\n"));
    }
    if missing.is_empty() {
        return None;
    }
    let mut text = format!(
        "error: {} missing dependenc{} (nothing was changed):\n",
        missing.len(),
        if missing.len() == 1 { "y" } else { "ies" }
    );
    for m in &missing {
        text.push_str(&format!("  - {m}\n"));
    }
    let packages = preflight::packages(&missing);
    if !packages.is_empty() {
        text.push_str(&format!(
            "install with: sudo apt-get install -y {}\n",
            packages.join(" ")
        ));
    }
    Some(text)
}

/// Progress lines from the engine's events, on stderr.
struct Progress<'a> {
    plan: &'a Plan,
    total: usize,
    done: usize,
    tty: bool,
    started: HashMap<String, Instant>,
    /// A transient status line is on screen.
    dirty: bool,
}

impl<'a> Progress<'a> {
    fn new(plan: &'a Plan) -> Self {
        Progress {
            plan,
            total: plan.steps.len(),
            done: 0,
            tty: std::io::stderr().is_terminal(),
            started: HashMap::new(),
            dirty: false,
        }
    }

    fn clear(&mut self) {
        if self.dirty {
            eprint!("\r\x1b[K");
            self.dirty = false;
        }
    }

    fn line(&mut self, text: &str) {
        self.clear();
        eprintln!("{text}");
    }

    /// The longest-running step still in progress.
    fn waiting_on(&self) -> Option<(&str, Duration)> {
        self.started
            .iter()
            .min_by_key(|(_, t)| **t)
            .map(|(id, t)| (id.as_str(), t.elapsed()))
    }

    fn log_of(&self, step: &str) -> Option<&str> {
        match &self.plan.step(step)?.op {
            Op::StartProcess(StartProcess { log, .. }) => Some(log),
            _ => None,
        }
    }

    fn event(&mut self, e: &Event) {
        let width = self.total.to_string().len();
        match e {
            Event::Started { step } => {
                self.started.insert(step.clone(), Instant::now());
            }
            Event::Finished { step, elapsed } => {
                self.started.remove(step);
                self.done += 1;
                if self.tty {
                    let mut text = format!("[{:>width$}/{}] {step}", self.done, self.total);
                    if let Some((id, t)) = self.waiting_on() {
                        text = format!(
                            "[{:>width$}/{}] waiting for {id} ({:.1} s)",
                            self.done,
                            self.total,
                            t.as_secs_f64()
                        );
                    }
                    self.clear();
                    eprint!("{text}");
                    self.dirty = true;
                } else {
                    let text = format!(
                        "[{:>width$}/{}] {step} ({} ms)",
                        self.done,
                        self.total,
                        elapsed.as_millis()
                    );
                    self.line(&text);
                }
            }
            Event::Warning { step, message } => self.line(&format!("warning: {step}: {message}")),
            Event::Failed { step, error } => {
                self.started.remove(step);
                let mut text = format!("failed: {step}: {error}");
                // The log goes away with the rollback: show its end now.
                if let Some(log) = self.log_of(step) {
                    if let Ok(content) = std::fs::read_to_string(log) {
                        let lines: Vec<&str> = content.lines().collect();
                        let tail = &lines[lines.len().saturating_sub(15)..];
                        if !tail.is_empty() {
                            text.push_str(&format!("\n  last lines of {log}:"));
                            for l in tail {
                                text.push_str(&format!("\n    {l}"));
                            }
                        }
                    }
                }
                self.line(&text);
            }
            Event::Undone { .. } => {}
        }
    }
}

fn print_summary(
    inv: &Inventory,
    name: &str,
    state_dir: &Path,
    elapsed: Duration,
    steps: usize,
    processes: usize,
    skipped: &[Component],
) {
    println!(
        "emulation {} is up in {:.2} s ({steps} steps, {} hosts, {} pods, {processes} processes); state in {}",
        display_name(name),
        elapsed.as_secs_f64(),
        inv.hosts.len(),
        inv.pods.len(),
        state_dir.display()
    );
    println!();
    let rows: Vec<Vec<String>> = inv
        .hosts
        .iter()
        .map(|h| {
            vec![
                h.name.clone(),
                h.role.to_string(),
                h.netns.clone(),
                format!("{}/{}", h.ip, h.prefix_len),
                h.subnet.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print_table(&["HOST", "ROLE", "NAMESPACE", "IP", "POD SUBNET"], &rows);
    let rows: Vec<Vec<String>> = inv
        .pods
        .iter()
        .map(|p| vec![p.id.clone(), p.worker.clone(), p.netns.clone(), p.ip.clone()])
        .collect();
    table(&["POD", "WORKER", "NAMESPACE", "IP"], &rows);
    let rows: Vec<Vec<String>> = inv
        .services
        .iter()
        .map(|s| service_row(&s.id, &s.vip, &s.ports, &s.endpoints))
        .collect();
    table(&["SERVICE", "VIP", "PORTS", "ENDPOINTS"], &rows);
    table(
        &super::status::POLICY_HEADER,
        &super::status::policy_rows(&inv.policies),
    );
    if let Some(dns) = &inv.dns {
        println!("\nDNS: {dns}");
    }
    if !skipped.contains(&Component::Ingress) {
        let rows: Vec<Vec<String>> = inv
            .ingresses
            .iter()
            .map(|i| vec![i.id.clone(), i.worker.clone(), i.port.to_string(), i.routes.join(", ")])
            .collect();
        table(&["INGRESS", "WORKER", "PORT", "ROUTES"], &rows);
    }
    if !skipped.is_empty() {
        let names: Vec<&str> = skipped.iter().map(|c| c.name()).collect();
        println!("\nleft out (--skip): {}", names.join(", "));
    }
    let flag = name_flag(name);
    let example = inv
        .pods
        .first()
        .map(|p| p.id.clone())
        .or_else(|| inv.hosts.iter().find(|h| h.role == "worker").map(|h| h.name.clone()));
    println!();
    if let Some(node) = example {
        println!("try: knetsim exec{flag} {node} -- ip addr    |  knetsim shell{flag} {node}");
    }
    println!("     knetsim cli{flag}    (the knetsim> prompt: nodes, pingall, C0w1 ifconfig, help)");
    println!("     knetsim status{flag}    |  knetsim test{flag}    |  knetsim down{flag}");
}

/// Starts the emulation's supervisor in the switches' namespace (unless `--no-supervise`).
fn start_supervisor(sf: &mut StateFile, sys: &LinuxSystem, plan: &Plan, name: &str) -> Result<(), String> {
    let netns = plan
        .namespaces
        .first()
        .ok_or("the plan has no namespace to run the supervisor in")?;
    let argv = supervisor_argv(name, &sf.layout().dir().display().to_string());
    supervise::start(sf, sys, netns, argv)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// The supervisor's command line.
pub(super) fn supervisor_argv(name: &str, state_dir: &str) -> Vec<String> {
    let mut argv: Vec<String> = vec!["knetsim".into(), "supervise".into()];
    if !name.is_empty() {
        argv.extend(["--name".into(), name.to_string()]);
    }
    argv.extend(["--state-dir".into(), state_dir.to_string()]);
    argv
}

/// Runs the topology's checks after `up` and prints their table.
fn run_checks(checks: &[Check], skip: &[Component], name: &str) -> Result<(), CliError> {
    println!();
    let skipped: Vec<String> = skip.iter().map(|c| c.name().to_string()).collect();
    if super::test::run_and_print(checks, &skipped, &super::test::RunOptions::default()) {
        return Ok(());
    }
    Err(format!(
        "some checks failed; {} stays up: look with `knetsim exec{flag} NODE -- ...`, rerun with `knetsim test{flag}`",
        display_name(name),
        flag = name_flag(name)
    )
    .into())
}

pub fn up(a: UpArgs) -> Outcome {
    let t0 = Instant::now();
    let (opts, source) = load_options_and_source(&a.target, a.topology.as_deref())?;
    let Compiled { model, plan, bundle } = compiler::compile_all(&source, &opts)?;
    eprint!("{}", model.warnings);
    let plan: Plan = plan.without(&a.skip);
    let name = opts.name.clone();
    let state_dir = opts.state_dir.clone();

    // Checks, in order, before anything changes.
    if state::read(&state_dir).map_err(failed)?.is_some() {
        return Err(format!(
            "emulation {} is already up (state in {}); run `knetsim down{}` first",
            display_name(&name),
            state_dir.join(state::STATE_FILE).display(),
            name_flag(&name)
        )
        .into());
    }
    if let Some(report) = preflight_report(&plan) {
        eprint!("{report}");
        return Err(CliError::Reported(1));
    }
    if !is_root() {
        return Err("knetsim up needs root (it creates network namespaces and mounts): run it with sudo".into());
    }

    let mut sf = StateFile::create(&state_dir, &name).map_err(failed)?;
    // The desired topology and the skipped components, for live changes (`pod add`, `apply`).
    let layout = sf.layout();
    let remove_desired = || {
        let _ = std::fs::remove_dir_all(layout.desired_root());
        let _ = std::fs::remove_file(layout.topology_link());
        let _ = std::fs::remove_file(layout.bundle_link());
    };
    sf.state_mut().skip = a.skip.iter().map(|c| c.name().to_string()).collect();
    if let Err(e) = store_first_generation(&mut sf, &source.text, &bundle) {
        remove_desired();
        let _ = sf.destroy();
        return Err(format!("storing the desired state in {}: {e}", state_dir.display()).into());
    }
    eprintln!(
        "bringing up {} ({} steps, {} namespaces) ...",
        display_name(&name),
        plan.steps.len(),
        plan.namespaces.len()
    );

    let sys = LinuxSystem::new();
    let mut options = Options::new(a.parallelism.max(1));
    options.probe_timeout = Duration::from_secs(a.timeout.max(1));
    let mut progress = Progress::new(&plan);
    let result = apply_with(&plan, &bundle, &sys, &options, Some(&mut sf), &mut |e| {
        progress.event(e)
    });
    progress.clear();
    match result {
        Ok(applied) => {
            if !a.no_supervise {
                if let Err(e) = start_supervisor(&mut sf, &sys, &plan, &name) {
                    eprintln!(
                        "warning: the supervisor did not start ({e}); `knetsim repair{}` starts it",
                        name_flag(&name)
                    );
                }
            }
            print_summary(
                &Inventory::of(&model),
                &name,
                &state_dir,
                t0.elapsed(),
                applied.completed.len(),
                applied.processes.len(),
                &a.skip,
            );
            // A failing check is reported in the exit code; the emulation stays up to be looked at.
            let checks = if a.no_checks || model.checks.is_empty() {
                Ok(())
            } else {
                run_checks(&model.checks, &a.skip, &name)
            };
            if a.cli {
                drop(sf); // the prompt's `pod` / `svc` lock the state themselves
                          // Said before the prompt opens, not after it closes.
                let checks_code = checks.map_or_else(|e| error::finish(Err(e)), |()| 0);
                return Ok(super::prompt::after_up(&a.target)?.max(checks_code));
            }
            checks.map(|()| 0)
        }
        Err(ApplyError::InvalidPlan(e)) => {
            remove_desired();
            let _ = sf.destroy();
            Err(format!("invalid plan: {e}").into())
        }
        Err(ApplyError::StepFailed(f)) if f.undo_errors.is_empty() => {
            remove_desired();
            let left = match sf.destroy() {
                Ok(()) => format!("nothing of {} is left", display_name(&name)),
                Err(e) => format!("removing the state: {e}"),
            };
            Err(format!("{f}\n{left}").into())
        }
        Err(e) => Err(format!(
            "{e}\nthe state is kept in {}: run `knetsim down{}` to remove what is left",
            state_dir.display(),
            name_flag(&name)
        )
        .into()),
    }
}
