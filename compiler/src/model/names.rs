//! Runtime names and paths: namespaces, state directory layout. The default emulation
//! uses the seed's plain names (`C0w1`, `k0_c1`, `/tmp/knetsim/...`); a named one
//! prefixes every namespace with `<name>-` and lives in `/tmp/knetsim-<name>/`.

#[derive(Debug, Clone)]
pub struct Naming {
    prefix: String,
    state_dir: String,
}

impl Naming {
    pub fn new(name: &str, state_dir: &str) -> Self {
        Naming {
            prefix: if name.is_empty() {
                String::new()
            } else {
                format!("{name}-")
            },
            state_dir: state_dir.trim_end_matches('/').to_string(),
        }
    }

    pub fn host_netns(&self, host: &str) -> String {
        format!("{}{host}", self.prefix)
    }

    /// The seed names pod namespaces `k<cluster>_<pod>`; a pod of another Kubernetes
    /// namespace than `default` is `k<cluster>_<namespace>.<pod>` (names have no '.').
    pub fn pod_netns(&self, cluster_index: usize, namespace: &str, pod: &str) -> String {
        if namespace == super::DEFAULT_NAMESPACE {
            format!("{}k{cluster_index}_{pod}", self.prefix)
        } else {
            format!("{}k{cluster_index}_{namespace}.{pod}", self.prefix)
        }
    }

    pub fn switch_netns(&self) -> String {
        format!("{}knetsim-switches", self.prefix)
    }

    pub fn state(&self, rel: &str) -> String {
        format!("{}/{rel}", self.state_dir)
    }

    pub fn state_dir(&self) -> &str {
        &self.state_dir
    }

    /// Per-host working directory (the seed's `/tmp/knetsim/<host>`).
    pub fn host_dir(&self, host: &str) -> String {
        self.state(host)
    }
}
