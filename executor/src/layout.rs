//! Where an emulation keeps its files inside its state directory, in one place.
//!
//! The desired topology and its compiled bundle live in numbered generations,
//! `desired/<n>/topology.toml` and `desired/<n>/bundle/`. A generation is written
//! whole under a temporary name and renamed into place, and it becomes the running
//! one only when `state.json` (replaced atomically) records its number: a reader
//! that reads `state.json` first never sees a half-written topology or bundle.
//! `topology.toml` and `bundle` at the top are symlinks to the current generation,
//! for people and the tutorial.

pub use knetsim_compiler::host::HostLayout;
use knetsim_compiler::Bundle;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const STATE_FILE: &str = "state.json";
pub const LOCK_FILE: &str = "state.lock";
const DESIRED_DIR: &str = "desired";
const TOPOLOGY_FILE: &str = "topology.toml";
const BUNDLE_DIR: &str = "bundle";
const EVENTS_FILE: &str = "events.jsonl";
const SUPERVISOR_LOG: &str = "supervisor.log";

/// The paths of one emulation's state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateLayout {
    dir: PathBuf,
}

impl StateLayout {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StateLayout { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn state_file(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    pub fn lock_file(&self) -> PathBuf {
        self.dir.join(LOCK_FILE)
    }

    /// What repairs did (`knetsim events`).
    pub fn events_file(&self) -> PathBuf {
        self.dir.join(EVENTS_FILE)
    }

    /// The supervisor's output.
    pub fn supervisor_log(&self) -> PathBuf {
        self.dir.join(SUPERVISOR_LOG)
    }

    /// Every generation of the desired state.
    pub fn desired_root(&self) -> PathBuf {
        self.dir.join(DESIRED_DIR)
    }

    /// One generation of the desired state (topology and bundle).
    pub fn generation(&self, n: u64) -> PathBuf {
        self.desired_root().join(n.to_string())
    }

    pub fn topology(&self, n: u64) -> PathBuf {
        self.generation(n).join(TOPOLOGY_FILE)
    }

    pub fn bundle(&self, n: u64) -> PathBuf {
        self.generation(n).join(BUNDLE_DIR)
    }

    /// The bundle of the running generation `n` (the `bundle` link for an emulation
    /// brought up before generations, `n` = 0).
    pub fn running_bundle(&self, n: u64) -> PathBuf {
        if n == 0 {
            self.bundle_link()
        } else {
            self.bundle(n)
        }
    }

    /// `topology.toml`: a symlink to the running generation's topology.
    pub fn topology_link(&self) -> PathBuf {
        self.dir.join(TOPOLOGY_FILE)
    }

    /// `bundle`: a symlink to the running generation's bundle.
    pub fn bundle_link(&self) -> PathBuf {
        self.dir.join(BUNDLE_DIR)
    }

    /// Writes generation `n` whole: under a temporary name first, then renamed into
    /// place, so `desired/<n>` is either complete or absent.
    pub fn write_generation(&self, n: u64, topology: &str, bundle: &Bundle) -> std::io::Result<()> {
        let dir = self.generation(n);
        let tmp = self.desired_root().join(format!(".{n}.tmp"));
        remove_dir_if_exists(&tmp)?;
        remove_dir_if_exists(&dir)?;
        std::fs::create_dir_all(&tmp)?;
        std::fs::write(tmp.join(TOPOLOGY_FILE), topology)?;
        bundle.write_to(&tmp.join(BUNDLE_DIR))?;
        std::fs::rename(&tmp, &dir)
    }

    /// Reads generation `n`: its topology text and bundle.
    pub fn read_generation(&self, n: u64) -> std::io::Result<(String, Bundle)> {
        let text = std::fs::read_to_string(self.topology(n))?;
        let bundle = Bundle::read_from(&self.bundle(n))?;
        Ok((text, bundle))
    }

    /// Removes generation `n` (a rolled-back change's, or one two changes old).
    pub fn remove_generation(&self, n: u64) -> std::io::Result<()> {
        remove_dir_if_exists(&self.generation(n))
    }

    /// Points `topology.toml` and `bundle` at generation `n` (each link replaced by rename).
    pub fn point_links(&self, n: u64) -> std::io::Result<()> {
        let rel = Path::new(DESIRED_DIR).join(n.to_string());
        replace_symlink(&rel.join(TOPOLOGY_FILE), &self.topology_link())?;
        replace_symlink(&rel.join(BUNDLE_DIR), &self.bundle_link())
    }
}

/// Every state directory on the host (`/tmp/knetsim`, `/tmp/knetsim-*`), sorted,
/// whether it holds a state or not (an `up` killed in its first instants leaves one
/// without).
pub fn state_dirs_on_host(host: &HostLayout) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(&host.state_root) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .filter(|p| host.is_state_dir(p))
        .collect();
    dirs.sort();
    dirs
}

fn remove_dir_if_exists(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn replace_symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    let tmp = temporary_beside(link);
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    std::fs::rename(&tmp, link)
}

/// A temporary name in the same directory as `path` (so a rename replaces it atomically).
fn temporary_beside(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Replaces `path` with `contents` atomically: a reader sees the old file or the
/// new one, never a part (write to a temporary file beside it, rename). Not synced
/// to disk: what it guards against is a killed process, not a power cut.
pub fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = temporary_beside(path);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(contents)?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_are_written_whole_and_linked() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = StateLayout::new(tmp.path());
        let mut bundle = Bundle::default();
        bundle.insert(
            "a.txt",
            knetsim_compiler::bundle::ArtifactKind::Checks,
            None,
            None,
            "one".into(),
        );
        layout.write_generation(1, "# one", &bundle).unwrap();
        layout.point_links(1).unwrap();
        assert_eq!(std::fs::read_to_string(layout.topology_link()).unwrap(), "# one");
        assert_eq!(
            std::fs::read_to_string(layout.bundle_link().join("a.txt")).unwrap(),
            "one"
        );
        layout.write_generation(2, "# two", &bundle).unwrap();
        layout.point_links(2).unwrap();
        assert_eq!(std::fs::read_to_string(layout.topology_link()).unwrap(), "# two");
        let (text, back) = layout.read_generation(1).unwrap();
        assert_eq!((text.as_str(), back), ("# one", bundle));
        layout.remove_generation(1).unwrap();
        assert!(!layout.generation(1).exists());
        // Nothing temporary is left beside the links or the generations.
        let names = |d: &Path| -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(tmp.path()), vec!["bundle", "desired", "topology.toml"]);
        assert_eq!(names(&layout.desired_root()), vec!["2"]);
    }

    #[test]
    fn state_dirs_on_host_are_knetsims_own() {
        let root = tempfile::tempdir().unwrap();
        let host = HostLayout {
            state_root: root.path().to_path_buf(),
            ..HostLayout::system()
        };
        for d in ["knetsim", "knetsim-a", "knetsimx", "other"] {
            std::fs::create_dir(root.path().join(d)).unwrap();
        }
        std::fs::write(root.path().join("knetsim-file"), "").unwrap();
        assert_eq!(state_dirs_on_host(&host), vec![host.state_dir(""), host.state_dir("a")]);
    }

    #[test]
    fn write_atomic_replaces() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("f");
        write_atomic(&p, b"a").unwrap();
        write_atomic(&p, b"bb").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"bb");
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
    }
}
