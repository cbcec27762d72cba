//! The state file of one emulation: what has been applied, which namespaces,
//! processes and paths exist because of it. It is rewritten (atomically, by
//! rename) as the plan progresses, so `down` works from another process and after
//! the applying process was killed. An exclusive `flock` on a lock file beside it
//! keeps two changes (`up`, `down`, `pod add`, `apply`, ...) of the same emulation
//! from running at once: a change takes it before it reads anything, and waits
//! for it (naming the holder) rather than failing at once.

use crate::layout::{write_atomic, StateLayout};
pub use crate::layout::{LOCK_FILE, STATE_FILE};
use knetsim_compiler::host::HostLayout;
use knetsim_compiler::plan::RestartPolicy;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const VERSION: u32 = 1;

/// How long a change waits for another one holding the emulation's lock.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// Emulation name ("" = default).
    pub name: String,
    pub state_dir: String,
    /// The state directory did not exist before `up`: `down` removes all of it.
    pub created_state_dir: bool,
    /// PID of the process that brought the emulation up.
    pub owner_pid: u32,
    /// Unix time (seconds) `up` started.
    pub started_at: u64,
    /// Every step of the plan was applied.
    pub complete: bool,
    /// Namespaces that exist (or may exist: recorded before creation) because of this emulation.
    pub namespaces: Vec<String>,
    pub processes: Vec<ProcessRecord>,
    /// Files and directories created, in creation order.
    pub paths: Vec<String>,
    /// Ids of the applied steps, in completion order.
    pub applied: Vec<String>,
    /// Components left out with `up --skip` (live changes leave them out too).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skip: Vec<String>,
    /// The actions the last live change performed, in order (`knetsim apply`, `pod add`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_change: Vec<String>,
    /// The generation of the desired topology and bundle that runs (see [`crate::layout`]).
    #[serde(default)]
    pub generation: u64,
    /// A live change under way: recorded before its first action, cleared when it is
    /// committed or rolled back. Found by the next change after a kill, which rolls it back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<ChangeRecord>,
    /// Processes being started: recorded before the spawn, replaced by their
    /// [`ProcessRecord`] as soon as the PID is known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub starting: Vec<StartingProcess>,
    /// Pods (`C0/c4`) the running generation was compiled with as not ready (their
    /// workload is not running): a live fact every compile of this emulation takes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ready: Vec<String>,
}

/// A live change moving the emulation from generation `from` to `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRecord {
    pub from: u64,
    pub to: u64,
    /// PID of the process making the change.
    pub pid: u32,
    /// How many of the change's actions (the delta from `from` to `to`, recomputed
    /// from the two stored generations) completed.
    pub performed: usize,
}

/// A process about to be started: its log file tells it apart (its stdout).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartingProcess {
    pub name: String,
    pub netns: String,
    pub log: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    pub name: String,
    pub netns: String,
    pub pid: u32,
    /// Start time in clock ticks since boot, to tell a recycled PID apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ticks: Option<u64>,
    pub argv: Vec<String>,
    pub log: String,
    /// Unix time (seconds) it was started.
    pub started_at: u64,
    /// How many times it was restarted after it died (`kubectl get pods`' RESTARTS).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restarts: u32,
    /// Whether it is started again once it ended (its step's `restart`).
    #[serde(default, skip_serializing_if = "RestartPolicy::is_always")]
    pub restart: RestartPolicy,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("emulation `{}` is already up (state in {}); run `knetsim down{}` first", display_name(.name), .path.display(), name_flag(.name))]
    AlreadyUp { name: String, path: PathBuf },
    #[error("emulation `{}` is busy: another knetsim process{} holds {}{}", display_name(.name), holder_text(.holder), .path.display(), waited_text(.waited))]
    Locked {
        name: String,
        path: PathBuf,
        holder: Option<u32>,
        /// How long we waited for it (None: we did not wait).
        waited: Option<Duration>,
    },
    #[error("emulation `{}` is not up (no {})", display_name(.name), .path.display())]
    NotUp { name: String, path: PathBuf },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", .path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

fn display_name(name: &str) -> &str {
    if name.is_empty() {
        "default"
    } else {
        name
    }
}

fn name_flag(name: &str) -> String {
    if name.is_empty() {
        String::new()
    } else {
        format!(" --name {name}")
    }
}

fn holder_text(pid: &Option<u32>) -> String {
    pid.map(|p| format!(" (pid {p}{})", command_of(p))).unwrap_or_default()
}

fn waited_text(waited: &Option<Duration>) -> String {
    waited
        .map(|w| format!(" (still busy after waiting {} s)", w.as_secs()))
        .unwrap_or_default()
}

/// `: knetsim pod add ...`, the holder's command line, when it can be read.
fn command_of(pid: u32) -> String {
    let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return String::new();
    };
    let mut words: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    if let Some(first) = words.first_mut() {
        if let Some(base) = Path::new(first.as_str()).file_name() {
            *first = base.to_string_lossy().into_owned();
        }
    }
    if words.is_empty() {
        return String::new();
    }
    let line = words.join(" ");
    let line = if line.chars().count() > 80 {
        format!("{}...", line.chars().take(77).collect::<String>())
    } else {
        line
    };
    format!(": {line}")
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StateError {
    let context = context.into();
    move |source| StateError::Io { context, source }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Reads the state of an emulation without locking (for `status`). `None` = not up.
pub fn read(state_dir: &Path) -> Result<Option<State>, StateError> {
    let path = state_dir.join(STATE_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| StateError::Json { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(format!("reading {}", path.display()))(e)),
    }
}

/// How a change waits for the emulation's lock.
pub struct LockWait<'a> {
    /// Give up after this long (zero: do not wait).
    pub timeout: Duration,
    /// Told once, when the lock is found held, who holds it (to print "waiting ...").
    pub on_busy: Option<&'a mut dyn FnMut(&StateError)>,
}

impl LockWait<'_> {
    /// Do not wait: a held lock is an error at once.
    pub fn no_wait() -> LockWait<'static> {
        LockWait {
            timeout: Duration::ZERO,
            on_busy: None,
        }
    }
}

/// An open, locked state file. Dropping it releases the lock and keeps the file.
#[derive(Debug)]
pub struct StateFile {
    dir: PathBuf,
    state: State,
    _lock: Flock<File>,
}

impl StateFile {
    /// Starts the state of a new emulation (for `up`): takes the lock and fails if
    /// the emulation is already up or another process is bringing it up or down.
    pub fn create(state_dir: &Path, name: &str) -> Result<StateFile, StateError> {
        Self::create_waiting(state_dir, name, &mut LockWait::no_wait())
    }

    /// [`StateFile::create`], waiting for a held lock as `wait` says.
    pub fn create_waiting(state_dir: &Path, name: &str, wait: &mut LockWait) -> Result<StateFile, StateError> {
        // A directory holding nothing but our own lock (left by an `up` killed in its
        // first instants) counts as ours: `down` removes it whole. So does knetsim's
        // own default directory for this name once our lock is in it (what a crashed
        // emulation left); a directory of the user's (`--state-dir`) with files of
        // theirs never does.
        let ours = !state_dir.exists()
            || only_lock_files(state_dir)
            || (is_default_dir(state_dir) && (state_dir.join(LOCK_FILE).exists() || is_empty(state_dir)));
        std::fs::create_dir_all(state_dir).map_err(io(format!("creating {}", state_dir.display())))?;
        let lock = lock(state_dir, name, wait)?;
        let path = state_dir.join(STATE_FILE);
        if path.exists() {
            return Err(StateError::AlreadyUp {
                name: name.to_string(),
                path,
            });
        }
        let mut file = StateFile {
            dir: state_dir.to_path_buf(),
            state: State {
                version: VERSION,
                name: name.to_string(),
                state_dir: state_dir.display().to_string(),
                created_state_dir: ours,
                owner_pid: std::process::id(),
                started_at: unix_now(),
                ..State::default()
            },
            _lock: lock,
        };
        file.save()?;
        Ok(file)
    }

    /// Opens the state of a running (or crashed) emulation, locked, failing at once
    /// if another process holds the lock.
    pub fn open(state_dir: &Path, name: &str) -> Result<StateFile, StateError> {
        Self::open_waiting(state_dir, name, &mut LockWait::no_wait())
    }

    /// Opens the state of a running (or crashed) emulation for a change: takes the
    /// lock first (waiting as `wait` says), then reads the state.
    pub fn open_waiting(state_dir: &Path, name: &str, wait: &mut LockWait) -> Result<StateFile, StateError> {
        let not_up = || StateError::NotUp {
            name: name.to_string(),
            path: state_dir.join(STATE_FILE),
        };
        if !state_dir.join(STATE_FILE).exists() {
            return Err(not_up());
        }
        let lock = lock(state_dir, name, wait)?;
        // Read under the lock: the holder we waited for may have changed or removed it.
        let state = read(state_dir)?.ok_or_else(not_up)?;
        Ok(StateFile {
            dir: state_dir.to_path_buf(),
            state,
            _lock: lock,
        })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    pub fn layout(&self) -> StateLayout {
        StateLayout::new(&self.dir)
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn state_mut(&mut self) -> &mut State {
        &mut self.state
    }

    /// Writes the state atomically (temporary file + rename).
    pub fn save(&mut self) -> Result<(), StateError> {
        let path = self.path();
        let mut text = serde_json::to_string_pretty(&self.state).map_err(|source| StateError::Json {
            path: path.clone(),
            source,
        })?;
        text.push('\n');
        write_atomic(&path, text.as_bytes()).map_err(io(format!("writing {}", path.display())))
    }

    /// Removes the state file and the lock file, and the whole state directory if
    /// `up` created it (logs, data directories and IPAM state go with it).
    pub fn destroy(self) -> Result<(), StateError> {
        let path = self.path();
        remove_if_exists(&path)?;
        if self.state.created_state_dir {
            match std::fs::remove_dir_all(&self.dir) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io(format!("removing {}", self.dir.display()))(e)),
            }
        } else {
            remove_if_exists(&self.dir.join(LOCK_FILE))
        }
    }
}

/// The directory holds knetsim's lock file and nothing else (but temporary state files).
pub fn only_lock_files(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    dir.join(LOCK_FILE).exists()
        && entries.flatten().all(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name == LOCK_FILE || (name.starts_with(".state.json.") && name.ends_with(".tmp"))
        })
}

/// knetsim's own state directories (`/tmp/knetsim` and `/tmp/knetsim-NAME`).
pub fn is_default_dir(dir: &Path) -> bool {
    HostLayout::system().is_state_dir(dir)
}

fn is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none())
}

/// Removes a state directory that an `up` killed before its first state save left
/// (nothing but the lock in it, or, for knetsim's own directories, nothing at all),
/// if no one holds its lock. True if it was removed.
pub fn remove_abandoned(state_dir: &Path) -> bool {
    if state_dir.join(STATE_FILE).exists() {
        return false;
    }
    if is_default_dir(state_dir) && is_empty(state_dir) {
        // Only if still empty: an `up` that made its lock meanwhile keeps it.
        return std::fs::remove_dir(state_dir).is_ok();
    }
    if !only_lock_files(state_dir) {
        return false;
    }
    let Ok(file) = File::open(state_dir.join(LOCK_FILE)) else {
        return false;
    };
    let Ok(_held) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
        return false;
    };
    std::fs::remove_dir_all(state_dir).is_ok()
}

fn remove_if_exists(path: &Path) -> Result<(), StateError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(format!("removing {}", path.display()))(e)),
    }
}

/// The PID written in a lock file by its holder.
fn holder_of(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// The PID of the process holding an exclusive `flock` on the file `m` describes, as
/// the kernel lists it in /proc/locks (`1: FLOCK ADVISORY WRITE PID MAJ:MIN:INODE ...`).
fn kernel_holder(m: &std::fs::Metadata) -> Option<u32> {
    let dev = m.dev();
    let id = format!("{:02x}:{:02x}:{}", libc::major(dev), libc::minor(dev), m.ino());
    std::fs::read_to_string("/proc/locks").ok()?.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 5 && f[1] == "FLOCK" && f[3] == "WRITE" && f[5] == id)
            .then(|| f[4].parse().ok())
            .flatten()
    })
}

/// A PID whose process still exists (the holder may have just been replaced).
fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Takes the exclusive lock, waiting up to `wait.timeout` for a holder. A lock file
/// removed by a `down` between our open and our lock is detected (inode check) and
/// retried. The holder's PID is written over the old one in place (never emptied
/// first), so a waiter always reads a PID.
fn lock(state_dir: &Path, name: &str, wait: &mut LockWait) -> Result<Flock<File>, StateError> {
    let path = state_dir.join(LOCK_FILE);
    let started = Instant::now();
    let mut told = false;
    loop {
        let open = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
        };
        // A `down --all` may remove an empty state directory between our mkdir and here.
        let file = match open() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(state_dir).and_then(|()| open())
            }
            other => other,
        }
        .map_err(io(format!("opening {}", path.display())))?;
        let locked = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                // The kernel knows who holds it; the file says who wrote last.
                let holder = file
                    .metadata()
                    .ok()
                    .and_then(|m| kernel_holder(&m))
                    .or_else(|| holder_of(&mut file));
                let waited = started.elapsed();
                // A PID of no live process is the previous holder's: the new one has
                // the lock but has not written its PID yet. Look again shortly rather
                // than name the wrong process (for up to a second).
                let stale = !holder.is_some_and(alive);
                if stale && waited < wait.timeout.min(Duration::from_secs(1)) && !wait.timeout.is_zero() {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                let busy = StateError::Locked {
                    name: name.to_string(),
                    path: path.clone(),
                    holder,
                    waited: None,
                };
                if waited >= wait.timeout {
                    return Err(StateError::Locked {
                        name: name.to_string(),
                        path,
                        holder,
                        waited: (!wait.timeout.is_zero()).then_some(waited),
                    });
                }
                if !told {
                    if let Some(tell) = wait.on_busy.as_mut() {
                        tell(&busy);
                    }
                    told = true;
                }
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            Err((_, errno)) => return Err(io(format!("locking {}", path.display()))(errno.into())),
        };
        let ours = locked.metadata().map_err(io(format!("stat {}", path.display())))?;
        match std::fs::metadata(&path) {
            Ok(now) if now.dev() == ours.dev() && now.ino() == ours.ino() => {}
            _ => continue,
        }
        // Fixed width, written in place: never an empty or half-written PID.
        let pid = format!("{:<10}\n", std::process::id());
        locked
            .write_all_at(pid.as_bytes(), 0)
            .and_then(|()| locked.set_len(pid.len() as u64))
            .map_err(io(format!("writing {}", path.display())))?;
        return Ok(locked);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_save_open_destroy() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("emu");
        let mut f = StateFile::create(&dir, "t1").unwrap();
        assert!(f.state().created_state_dir);
        f.state_mut().namespaces.push("t1-C0w1".into());
        f.save().unwrap();
        let on_disk = read(&dir).unwrap().unwrap();
        assert_eq!(on_disk.namespaces, vec!["t1-C0w1"]);
        assert_eq!(on_disk.owner_pid, std::process::id());
        drop(f);
        let f = StateFile::open(&dir, "t1").unwrap();
        assert_eq!(f.state().namespaces, vec!["t1-C0w1"]);
        f.destroy().unwrap();
        assert!(!dir.exists());
        assert!(read(&dir).unwrap().is_none());
    }

    #[test]
    fn second_up_fails_clearly() {
        let tmp = tempfile::tempdir().unwrap();
        let f = StateFile::create(tmp.path(), "t2").unwrap();
        // While the first holds the lock: busy.
        let err = StateFile::create(tmp.path(), "t2").unwrap_err();
        assert!(matches!(err, StateError::Locked { holder: Some(pid), .. } if pid == std::process::id()));
        assert!(err.to_string().contains("busy"), "{err}");
        let err = StateFile::open(tmp.path(), "t2").unwrap_err();
        assert!(matches!(err, StateError::Locked { .. }), "{err}");
        // After the first process is gone (lock released) the state remains: already up.
        drop(f);
        let err = StateFile::create(tmp.path(), "t2").unwrap_err();
        assert!(matches!(err, StateError::AlreadyUp { .. }), "{err}");
        assert!(err.to_string().contains("knetsim down --name t2"), "{err}");
        // The pre-existing directory is kept by destroy; our files are gone.
        StateFile::open(tmp.path(), "t2").unwrap().destroy().unwrap();
        assert!(tmp.path().exists());
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
        StateFile::create(tmp.path(), "t2").unwrap().destroy().unwrap();
    }

    #[test]
    fn open_without_state_is_not_up() {
        let tmp = tempfile::tempdir().unwrap();
        let err = StateFile::open(tmp.path(), "").unwrap_err();
        assert!(matches!(err, StateError::NotUp { .. }));
        assert!(err.to_string().contains("`default` is not up"), "{err}");
    }

    #[test]
    fn a_change_waits_for_the_lock_and_is_told_who_holds_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("emu");
        let first = StateFile::create(&dir, "w").unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(first);
        });
        let mut told = Vec::new();
        let mut tell = |e: &StateError| told.push(e.to_string());
        let mut wait = LockWait {
            timeout: Duration::from_secs(10),
            on_busy: Some(&mut tell),
        };
        let t = Instant::now();
        let second = StateFile::open_waiting(&dir, "w", &mut wait).unwrap();
        assert!(t.elapsed() >= Duration::from_millis(150));
        release.join().unwrap();
        assert_eq!(told.len(), 1, "{told:?}");
        assert!(told[0].contains(&format!("pid {}", std::process::id())), "{told:?}");
        // Held, with a short timeout: the error names the holder and how long we waited.
        let mut wait = LockWait {
            timeout: Duration::from_millis(100),
            on_busy: None,
        };
        let err = StateFile::open_waiting(&dir, "w", &mut wait).unwrap_err();
        assert!(
            matches!(err, StateError::Locked { holder: Some(p), waited: Some(_), .. } if p == std::process::id()),
            "{err}"
        );
        assert!(err.to_string().contains("still busy after waiting"), "{err}");
        second.destroy().unwrap();
    }

    #[test]
    fn the_lock_file_always_names_a_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        StateFile::create(&dir, "p").unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flip = {
            let (dir, stop) = (dir.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(f) = StateFile::open(&dir, "p") {
                        drop(f);
                    }
                }
            })
        };
        for _ in 0..2000 {
            let text = std::fs::read_to_string(dir.join(LOCK_FILE)).unwrap();
            assert!(text.trim().parse::<u32>().is_ok(), "lock file read as {text:?}");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        flip.join().unwrap();
    }

    #[test]
    fn a_directory_with_only_our_lock_is_ours_and_removable() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("emu");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(LOCK_FILE), "").unwrap();
        assert!(only_lock_files(&dir));
        // `down` of such a directory removes it...
        assert!(remove_abandoned(&dir));
        assert!(!dir.exists());
        // ... and `up` over it records it as its own, so `down` removes it whole.
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(LOCK_FILE), "").unwrap();
        let f = StateFile::create(&dir, "a").unwrap();
        assert!(f.state().created_state_dir);
        assert!(!remove_abandoned(&dir), "a directory with a state is never abandoned");
        f.destroy().unwrap();
        assert!(!dir.exists());
        // A directory of the user's with other files is not ours.
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("notes.txt"), "mine").unwrap();
        let f = StateFile::create(&dir, "a").unwrap();
        assert!(!f.state().created_state_dir);
        f.destroy().unwrap();
        assert!(dir.join("notes.txt").exists());
    }

    #[test]
    fn the_kernel_names_the_holder_even_before_it_writes_its_pid() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(LOCK_FILE);
        // A lock file naming a long-gone process, held now by us.
        std::fs::write(&path, "999999999\n").unwrap();
        let held = Flock::lock(File::open(&path).unwrap(), FlockArg::LockExclusiveNonblock).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(kernel_holder(&meta), Some(std::process::id()));
        drop(held);
        assert_eq!(kernel_holder(&meta), None);
    }

    #[test]
    fn an_empty_knetsim_directory_is_abandoned_and_a_users_is_not() {
        // What an `up` killed between its mkdir and its lock leaves.
        let ours = PathBuf::from(format!("/tmp/knetsim-u{}", std::process::id()));
        std::fs::create_dir_all(&ours).unwrap();
        assert!(is_default_dir(&ours));
        assert!(remove_abandoned(&ours));
        assert!(!ours.exists());
        let theirs = tempfile::tempdir().unwrap();
        assert!(!is_default_dir(theirs.path()));
        assert!(!remove_abandoned(theirs.path()));
        assert!(theirs.path().exists());
    }
}
