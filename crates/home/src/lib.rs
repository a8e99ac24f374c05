//! The `~/.flyte` layout, owned in one place.
//!
//! Flyte's own client and flyte-run share some of these files (the debug key pair, the bearer
//! cache, the API key, the headers files), so their names are Flyte's. [`FlyteHome`] names every
//! file under a home directory; nothing else in the workspace joins a file name onto `~/.flyte`.
//! [`SandboxDir::running`] is how a client finds the local sandbox (the lock it holds and the
//! endpoint it announced) without depending on the sandbox's server code.
//!
//! No file is read or written here except the sandbox's lock file ([`instance`]) and the
//! endpoint it announces: paths are values, and the crates that own a file's format do its I/O.

use std::path::{Path, PathBuf};

pub mod instance;

pub use instance::Holder;

/// `~/.flyte`, where Flyte's client keeps its files.
pub const FLYTE_DIR: &str = ".flyte";
/// flyte-run's own settings, in [`FLYTE_DIR`].
pub const SETTINGS_FILE: &str = "flyte-run.json";
/// Host keys of git servers learned on first use, in [`FLYTE_DIR`].
pub const GIT_KNOWN_HOSTS_FILE: &str = "git_known_hosts";

/// The debug directory's name in [`FLYTE_DIR`], as Flyte names it.
pub const DEBUG_DIR: &str = "ssh-debug";
/// The client key of the debug flow (its `.pub` sits beside it), as Flyte names it.
pub const KEY_FILE: &str = "id_ed25519";
/// A bearer-token cache, as Flyte's debug client names it.
pub const BEARER_FILE: &str = "bearer.json";
/// flyte-run's own token cache (same format as `bearer.json`).
pub const TOKEN_CACHE_FILE: &str = "flyte-run-tokens.json";
/// The stored API key, as Flyte names it.
pub const API_KEY_FILE: &str = "api-key";
/// Our own known_hosts, one pinned key per debug `HostKeyAlias`.
pub const KNOWN_HOSTS_FILE: &str = "known_hosts";

/// The sandbox's directory's name in [`FLYTE_DIR`].
pub const SANDBOX_DIR: &str = "sandbox";
/// The sandbox's bootstrap API key (its owner's credential).
pub const SANDBOX_CREDENTIAL_FILE: &str = "credential";
/// The sandbox's CA certificate, for Flyte's `caCertFilePath`.
pub const SANDBOX_CA_FILE: &str = "ca.pem";
/// The client secret of the sandbox credential, for Flyte's `clientSecretLocation`.
pub const SANDBOX_CLIENT_SECRET_FILE: &str = "client-secret";
/// A Flyte SDK configuration for the sandbox.
pub const SANDBOX_FLYTE_CONFIG_FILE: &str = "flyte-config.yaml";
/// The endpoint a serving sandbox announced.
pub const SANDBOX_ENDPOINT_FILE: &str = "endpoint";

/// A home directory, and every file flyte-run (and Flyte) keeps under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlyteHome {
    home: PathBuf,
}

impl FlyteHome {
    /// The layout under `home` (the user's home directory, not `~/.flyte`).
    pub fn new(home: impl Into<PathBuf>) -> Self {
        Self { home: home.into() }
    }

    /// The home directory itself.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// `~/.flyte`.
    pub fn flyte_dir(&self) -> PathBuf {
        self.home.join(FLYTE_DIR)
    }

    /// `~/.flyte/flyte-run.json`.
    pub fn settings_file(&self) -> PathBuf {
        self.flyte_dir().join(SETTINGS_FILE)
    }

    /// `~/.flyte/git_known_hosts`.
    pub fn git_known_hosts(&self) -> PathBuf {
        self.flyte_dir().join(GIT_KNOWN_HOSTS_FILE)
    }

    /// The user's own `~/.ssh/config`, where managed Host blocks go by default.
    pub fn ssh_config(&self) -> PathBuf {
        self.home.join(".ssh").join("config")
    }

    /// `~/.flyte/ssh-debug`.
    pub fn debug(&self) -> DebugDir {
        DebugDir::new(self.flyte_dir().join(DEBUG_DIR))
    }

    /// `~/.flyte/sandbox`.
    pub fn sandbox(&self) -> SandboxDir {
        SandboxDir::new(self.flyte_dir().join(SANDBOX_DIR))
    }
}

/// The debug directory (`~/.flyte/ssh-debug`): what Flyte's `flyte debug` keeps there, and our
/// own known_hosts and per-alias files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebugDir {
    dir: PathBuf,
}

impl DebugDir {
    /// A debug directory somewhere else than under a home (tests, other tools).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The client's private key, `id_ed25519` (the public key is `id_ed25519.pub`).
    pub fn private_key(&self) -> PathBuf {
        self.dir.join(KEY_FILE)
    }

    /// Our known_hosts: the pinned host keys of debug servers.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join(KNOWN_HOSTS_FILE)
    }

    /// Flyte's debug bearer cache.
    pub fn bearer_cache(&self) -> PathBuf {
        self.dir.join(BEARER_FILE)
    }

    /// flyte-run's own token cache, for credentials named in Flyte's configuration (keyed by
    /// endpoint and client id; Flyte's `bearer.json` is keyed by endpoint alone).
    pub fn token_cache(&self) -> PathBuf {
        self.dir.join(TOKEN_CACHE_FILE)
    }

    /// The stored API key.
    pub fn api_key(&self) -> PathBuf {
        self.dir.join(API_KEY_FILE)
    }

    /// The headers file `ssh`'s ProxyCommand reads for `alias`: `<alias>.headers`, as Flyte
    /// names it, so reconnecting with either tool refreshes the same file.
    pub fn headers(&self, alias: &str) -> PathBuf {
        self.dir.join(format!("{}.headers", alias_stem(alias)))
    }

    /// The Host block of `alias` on its own, for `ssh -F` (`flyte-run debug --shell`).
    pub fn ssh_config(&self, alias: &str) -> PathBuf {
        self.dir.join(format!("{}.ssh_config", alias_stem(alias)))
    }
}

/// The file-name stem for `alias`: Flyte's (characters other than `[A-Za-z0-9_-]` become `_`)
/// when that leaves the alias as it is. Flyte's mapping is not injective (`team.prod` and
/// `team_prod` both become `team_prod`), and one alias's token would go to the other's route, so
/// an alias that needed replacing gets a digest of its real spelling; the `.` before it never
/// occurs in an unreplaced name.
fn alias_stem(alias: &str) -> String {
    use sha2::{Digest as _, Sha256};
    let safe: String = alias
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe == alias {
        return safe;
    }
    let digest = hex::encode(&Sha256::digest(alias.as_bytes())[..8]);
    format!("{safe}.{digest}")
}

/// The local sandbox's directory (`~/.flyte/sandbox`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxDir {
    dir: PathBuf,
}

/// A sandbox that serves its directory now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningSandbox {
    /// The serving process (read from the lock it holds, so never a reused number).
    pub pid: u32,
    /// The endpoint it announced, e.g. `http://127.0.0.1:41233`.
    pub endpoint: String,
}

impl SandboxDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The lock the serving process holds (see [`instance`]).
    pub fn lock(&self) -> PathBuf {
        self.dir.join(instance::LOCK_FILE)
    }

    /// The lock concurrent `sandbox start`s queue on.
    pub fn start_lock(&self) -> PathBuf {
        self.dir.join("start.lock")
    }

    /// The serving process's pid, for `sandbox stop` and tests.
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("sandbox.pid")
    }

    /// The endpoint the serving process announced once it listens.
    pub fn endpoint_file(&self) -> PathBuf {
        self.dir.join(SANDBOX_ENDPOINT_FILE)
    }

    /// The background sandbox's output.
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("sandbox.log")
    }

    /// The sandbox's state.
    pub fn database(&self) -> PathBuf {
        self.dir.join("sandbox.db")
    }

    /// The key the sandbox signs its tokens with.
    pub fn signing_key(&self) -> PathBuf {
        self.dir.join("signing.key")
    }

    /// The bootstrap API key of the sandbox's owner.
    pub fn credential(&self) -> PathBuf {
        self.dir.join(SANDBOX_CREDENTIAL_FILE)
    }

    /// Where tokens minted from [`Self::credential`] are cached.
    pub fn bearer_cache(&self) -> PathBuf {
        self.dir.join(BEARER_FILE)
    }

    /// The CA certificate of the sandbox's TLS port.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join(SANDBOX_CA_FILE)
    }

    /// The credential's client secret alone (Flyte's `clientSecretLocation`).
    pub fn client_secret(&self) -> PathBuf {
        self.dir.join(SANDBOX_CLIENT_SECRET_FILE)
    }

    /// A Flyte SDK configuration that points Flyte's CLI at the sandbox.
    pub fn flyte_config(&self) -> PathBuf {
        self.dir.join(SANDBOX_FLYTE_CONFIG_FILE)
    }

    /// The debug directories of the sandbox's local tasks.
    pub fn task_debug_dir(&self) -> PathBuf {
        self.dir.join("debug")
    }

    /// The output of the sandbox's local tasks.
    pub fn task_logs_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }

    /// Who holds the directory now.
    pub fn holder(&self) -> Holder {
        instance::holder(&self.dir)
    }

    /// The sandbox serving this directory, if one does and has announced its endpoint.
    pub fn running(&self) -> Option<RunningSandbox> {
        let Holder::Serving(pid) = self.holder() else {
            return None;
        };
        let endpoint = std::fs::read_to_string(self.endpoint_file()).ok()?;
        let endpoint = endpoint.trim();
        (!endpoint.is_empty()).then(|| RunningSandbox {
            pid,
            endpoint: endpoint.to_owned(),
        })
    }
}

/// What can go wrong with the sandbox's lock.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    #[error("another sandbox already serves {}{}; use it, or stop it with `flyte-run sandbox stop`", dir.display(), pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Busy { dir: PathBuf, pid: Option<u32> },
    #[error("cannot lock {}: {source}", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `Result` with this crate's error.
pub type Result<T, E = HomeError> = std::result::Result<T, E>;

#[allow(
    clippy::disallowed_methods,
    reason = "tests write their fixtures directly"
)]
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_has_flytes_name_under_the_home() {
        let home = FlyteHome::new("/home/u");
        let debug = home.debug();
        let sandbox = home.sandbox();
        for (path, want) in [
            (home.flyte_dir(), "/home/u/.flyte"),
            (home.settings_file(), "/home/u/.flyte/flyte-run.json"),
            (home.ssh_config(), "/home/u/.ssh/config"),
            (debug.private_key(), "/home/u/.flyte/ssh-debug/id_ed25519"),
            (debug.bearer_cache(), "/home/u/.flyte/ssh-debug/bearer.json"),
            (debug.api_key(), "/home/u/.flyte/ssh-debug/api-key"),
            (debug.known_hosts(), "/home/u/.flyte/ssh-debug/known_hosts"),
            (debug.headers("dbg"), "/home/u/.flyte/ssh-debug/dbg.headers"),
            (
                debug.ssh_config("dbg"),
                "/home/u/.flyte/ssh-debug/dbg.ssh_config",
            ),
            (sandbox.credential(), "/home/u/.flyte/sandbox/credential"),
            (sandbox.endpoint_file(), "/home/u/.flyte/sandbox/endpoint"),
            (sandbox.lock(), "/home/u/.flyte/sandbox/sandbox.lock"),
            (
                sandbox.flyte_config(),
                "/home/u/.flyte/sandbox/flyte-config.yaml",
            ),
        ] {
            assert_eq!(path, Path::new(want));
        }
    }

    #[test]
    fn clean_aliases_keep_flytes_name_and_others_cannot_collide() {
        let dir = DebugDir::new("/d");
        let name = |alias: &str| {
            dir.headers(alias)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        };
        // Flyte's name, for aliases Flyte leaves as they are.
        assert_eq!(name("flyte-debug"), "flyte-debug.headers");
        assert_eq!(name("team_prod"), "team_prod.headers");
        // Issue 13, defect 12: these two used to share `team_prod.headers`.
        let dotted = name("team.prod");
        assert!(dotted.starts_with("team_prod.") && dotted.ends_with(".headers"));
        assert_ne!(dotted, name("team_prod"));
        assert_ne!(name("team.prod"), name("team:prod"));
        // The block file of an alias follows its headers file's stem.
        assert_eq!(
            dir.ssh_config("team.prod").with_extension("headers"),
            dir.headers("team.prod")
        );
    }

    #[test]
    fn a_sandbox_runs_only_while_it_holds_the_lock_and_has_announced_an_endpoint() {
        let dir = tempfile::tempdir().unwrap();
        let sandbox = SandboxDir::new(dir.path());
        std::fs::write(sandbox.endpoint_file(), "http://127.0.0.1:9\n").unwrap();
        assert_eq!(sandbox.running(), None, "no lock held");
        let lock = instance::InstanceLock::acquire(dir.path()).unwrap();
        assert_eq!(
            sandbox.running(),
            Some(RunningSandbox {
                pid: std::process::id(),
                endpoint: "http://127.0.0.1:9".to_owned()
            })
        );
        std::fs::write(sandbox.endpoint_file(), "\n").unwrap();
        assert_eq!(sandbox.running(), None, "no endpoint announced");
        drop(lock);
    }
}
