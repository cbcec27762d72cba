//! Where knetsim puts things on the host, in one place: the named network
//! namespaces (`ip netns`'s directories) and the emulations' state directories.
//! Only paths here; whoever reads or writes them does so at the executor's edge.
//! A rootless mode (an unprivileged user + network + mount namespace) changes
//! these, and nothing else has to know.

use std::path::{Path, PathBuf};

/// The host directories knetsim uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLayout {
    /// Named network namespaces, one bind-mounted file each (`ip netns add`).
    pub netns_dir: PathBuf,
    /// Per-namespace files `ip netns exec` bind-mounts over `/etc` (e.g. `resolv.conf`).
    pub netns_etc_dir: PathBuf,
    /// Where state directories are made: `knetsim` for the default emulation,
    /// `knetsim-NAME` for the others.
    pub state_root: PathBuf,
}

const STATE_PREFIX: &str = "knetsim";

impl HostLayout {
    /// The layout of a privileged run, as `ip netns` and the seed use it.
    pub fn system() -> Self {
        HostLayout {
            netns_dir: PathBuf::from("/run/netns"),
            netns_etc_dir: PathBuf::from("/etc/netns"),
            state_root: PathBuf::from("/tmp"),
        }
    }

    /// The bind-mounted file of the named namespace `name`.
    pub fn netns(&self, name: &str) -> PathBuf {
        self.netns_dir.join(name)
    }

    /// The `/etc` overrides of the named namespace `name`.
    pub fn netns_etc(&self, name: &str) -> PathBuf {
        self.netns_etc_dir.join(name)
    }

    /// The state directory of the emulation called `name` ("" = the default one).
    pub fn state_dir(&self, name: &str) -> PathBuf {
        if name.is_empty() {
            self.state_root.join(STATE_PREFIX)
        } else {
            self.state_root.join(format!("{STATE_PREFIX}-{name}"))
        }
    }

    /// Whether `dir` is one of knetsim's own state directories (`state_dir` of
    /// some name), which knetsim may remove whole.
    pub fn is_state_dir(&self, dir: &Path) -> bool {
        dir.parent() == Some(self.state_root.as_path())
            && dir
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n == STATE_PREFIX || n.starts_with(&format!("{STATE_PREFIX}-")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_dirs_and_namespaces() {
        let h = HostLayout::system();
        assert_eq!(h.state_dir(""), Path::new("/tmp/knetsim"));
        assert_eq!(h.state_dir("lab"), Path::new("/tmp/knetsim-lab"));
        assert!(h.is_state_dir(&h.state_dir("")));
        assert!(h.is_state_dir(&h.state_dir("lab")));
        assert!(!h.is_state_dir(Path::new("/tmp/knetsimx")));
        assert!(!h.is_state_dir(Path::new("/var/tmp/knetsim")));
        assert!(!h.is_state_dir(Path::new("/tmp/a/knetsim")));
        assert_eq!(h.netns("C0w1"), Path::new("/run/netns/C0w1"));
        assert_eq!(h.netns_etc("C0w1"), Path::new("/etc/netns/C0w1"));
    }
}
