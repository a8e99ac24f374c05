//! Where the runner is: the management host, the key for it, the VM. Immutable once built.

use std::path::{Path, PathBuf};

/// The ssh target of the management host (`user@host`, or an alias from the ssh config).
pub const ENV_SSH_HOST: &str = "DAP_RUNNER_SSH_HOST";
/// The private key for the management host.
pub const ENV_SSH_KEY: &str = "DAP_RUNNER_SSH_KEY";
/// The incus VM on the cluster network.
pub const ENV_VM: &str = "DAP_RUNNER_VM";

pub const DEFAULT_SSH_HOST: &str = "user@mgmt.example.com";
/// Relative to the home directory.
pub const DEFAULT_SSH_KEY: &str = ".ssh/id_ed25519";
pub const DEFAULT_VM: &str = "dap-runner";

/// How to reach the runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerConfig {
    pub ssh_host: String,
    /// A leading `~/` is expanded; a relative path is relative to the working directory.
    pub ssh_key: PathBuf,
    pub vm: String,
    /// Extra ssh options placed before the host, e.g. `["-F", "/path/config"]`.
    pub ssh_options: Vec<String>,
}

/// `~/x` -> `<home>/x`; other paths as they are.
fn expand(path: &str, home: &Path) -> PathBuf {
    match path.strip_prefix("~/") {
        Some(rest) => home.join(rest),
        None if path == "~" => home.to_owned(),
        None => PathBuf::from(path),
    }
}

impl RunnerConfig {
    /// The settings: each from `lookup` (the environment, `DAP_RUNNER_*`), else from `file`
    /// (a config file's values, given in the same keys), else the defaults. Empty values count
    /// as unset.
    pub fn resolve(
        lookup: impl Fn(&str) -> Option<String>,
        file: impl Fn(&str) -> Option<String>,
        home: &Path,
    ) -> Self {
        let get = |key: &str, default: &str| {
            lookup(key)
                .filter(|v| !v.trim().is_empty())
                .or_else(|| file(key).filter(|v| !v.trim().is_empty()))
                .unwrap_or_else(|| default.to_owned())
        };
        let key = get(ENV_SSH_KEY, "");
        Self {
            ssh_host: get(ENV_SSH_HOST, DEFAULT_SSH_HOST),
            ssh_key: if key.is_empty() {
                home.join(DEFAULT_SSH_KEY)
            } else {
                expand(&key, home)
            },
            vm: get(ENV_VM, DEFAULT_VM),
            ssh_options: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_beats_file_beats_defaults() {
        let home = Path::new("/home/op");
        let none = |_: &str| None;
        let defaults = RunnerConfig::resolve(none, none, home);
        assert_eq!(defaults.ssh_host, "user@mgmt.example.com");
        assert_eq!(defaults.ssh_key, PathBuf::from("/home/op/.ssh/id_ed25519"));
        assert_eq!(defaults.vm, "dap-runner");

        let file = |k: &str| match k {
            ENV_SSH_HOST => Some("ops@file-host".to_owned()),
            ENV_VM => Some("file-vm".to_owned()),
            ENV_SSH_KEY => Some("~/keys/runner".to_owned()),
            _ => None,
        };
        let env = |k: &str| match k {
            ENV_VM => Some("env-vm".to_owned()),
            ENV_SSH_HOST => Some("  ".to_owned()),
            _ => None,
        };
        let got = RunnerConfig::resolve(env, file, home);
        assert_eq!(got.ssh_host, "ops@file-host", "blank env counts as unset");
        assert_eq!(got.vm, "env-vm");
        assert_eq!(got.ssh_key, PathBuf::from("/home/op/keys/runner"));
        let relative = RunnerConfig::resolve(
            |k: &str| (k == ENV_SSH_KEY).then(|| "k".to_owned()),
            none,
            home,
        );
        assert_eq!(relative.ssh_key, PathBuf::from("k"));
    }
}
