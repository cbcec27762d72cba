//! The state file of one emulation: what has been applied, which namespaces,
//! processes and paths exist because of it. It is rewritten (atomically, by
//! rename) as the plan progresses, so `down` works from another process and after
//! the applying process was killed. An exclusive `flock` on a lock file beside it
//! keeps two `up`/`down` of the same emulation from running at once.

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub const STATE_FILE: &str = "state.json";
pub const LOCK_FILE: &str = "state.lock";
const VERSION: u32 = 1;

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
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("emulation `{}` is already up (state in {}); run `knetsim down{}` first", display_name(.name), .path.display(), name_flag(.name))]
    AlreadyUp { name: String, path: PathBuf },
    #[error("emulation `{}` is busy: another knetsim process{} holds {}", display_name(.name), holder_text(.holder), .path.display())]
    Locked {
        name: String,
        path: PathBuf,
        holder: Option<u32>,
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
    pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
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
        let existed = state_dir.exists();
        std::fs::create_dir_all(state_dir).map_err(io(format!("creating {}", state_dir.display())))?;
        let lock = lock(state_dir, name)?;
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
                created_state_dir: !existed,
                owner_pid: std::process::id(),
                started_at: unix_now(),
                ..State::default()
            },
            _lock: lock,
        };
        file.save()?;
        Ok(file)
    }

    /// Opens the state of a running (or crashed) emulation (for `down`), locked.
    pub fn open(state_dir: &Path, name: &str) -> Result<StateFile, StateError> {
        let path = state_dir.join(STATE_FILE);
        if !path.exists() {
            return Err(StateError::NotUp {
                name: name.to_string(),
                path,
            });
        }
        let lock = lock(state_dir, name)?;
        let state = read(state_dir)?.ok_or_else(|| StateError::NotUp {
            name: name.to_string(),
            path: path.clone(),
        })?;
        Ok(StateFile {
            dir: state_dir.to_path_buf(),
            state,
            _lock: lock,
        })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
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
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        let mut text = serde_json::to_string_pretty(&self.state).map_err(|source| StateError::Json {
            path: path.clone(),
            source,
        })?;
        text.push('\n');
        std::fs::write(&tmp, text).map_err(io(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, &path).map_err(io(format!("renaming {} to {}", tmp.display(), path.display())))
    }

    /// Removes the state file and the lock file, and the whole state directory if
    /// `up` created it (logs, data directories and IPAM state go with it).
    pub fn destroy(self) -> Result<(), StateError> {
        let path = self.path();
        remove_if_exists(&path)?;
        remove_if_exists(&self.dir.join(format!("{STATE_FILE}.tmp")))?;
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

fn remove_if_exists(path: &Path) -> Result<(), StateError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(format!("removing {}", path.display()))(e)),
    }
}

/// Takes the exclusive lock without waiting. A lock file removed by a `down`
/// between our open and our lock is detected (inode check) and retried.
fn lock(state_dir: &Path, name: &str) -> Result<Flock<File>, StateError> {
    let path = state_dir.join(LOCK_FILE);
    loop {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io(format!("opening {}", path.display())))?;
        let mut locked = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(StateError::Locked {
                    name: name.to_string(),
                    path,
                    holder: text.trim().parse().ok(),
                });
            }
            Err((_, errno)) => return Err(io(format!("locking {}", path.display()))(errno.into())),
        };
        let ours = locked.metadata().map_err(io(format!("stat {}", path.display())))?;
        match std::fs::metadata(&path) {
            Ok(now) if now.dev() == ours.dev() && now.ino() == ours.ino() => {}
            _ => continue,
        }
        let pid = std::process::id().to_string();
        locked
            .set_len(0)
            .and_then(|()| locked.rewind())
            .and_then(|()| locked.write_all(pid.as_bytes()))
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
}
