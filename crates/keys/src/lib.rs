//! The SSH keys of the debug flow.
//!
//! - [`ensure_keypair`]: the client's key pair, Flyte-compatible at
//!   `~/.flyte/ssh-debug/id_ed25519` (+ `.pub`, comment `flyte-ssh-debug`). Created once and
//!   reused; the public key line is what a debug run receives in `_F_SSH_PK`.
//! - [`HostKey`]: the debug server's own key, and [`known_hosts_line`] so a client can pin it.
//!
//! Private keys are created with mode 0600 at open (never chmod-ed afterwards) and appear at their
//! final path complete or not at all, so any number of processes may call [`ensure_keypair`] at
//! once and all get the same key. Existing keys are never overwritten: a key we cannot use is an
//! error that says what to do.

mod host;
mod keypair;

use std::path::PathBuf;

pub use host::{HostKey, known_hosts_line, public_key_fingerprint};
pub use keypair::{KEY_COMMENT, KEY_FILE_NAME, KeyPair, ensure_keypair};

/// Everything that can go wrong with a key. Messages name the file and the fix; none contains key
/// material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "private key {path} is readable by others (mode {mode:04o}); OpenSSH refuses such keys. \
         Fix it with: chmod 600 {path}"
    )]
    PermissionsTooOpen { path: PathBuf, mode: u32 },
    #[error(
        "{path} is not an OpenSSH private key ({reason}); it was left untouched. Move it away to \
         let flyte-run create a new key there"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "{path} is a {algorithm} key; the debug flow needs ed25519. It was left untouched; move it \
         away to let flyte-run create a new key there"
    )]
    WrongAlgorithm { path: PathBuf, algorithm: String },
    #[error(
        "{path} is protected by a passphrase, which flyte-run cannot ask for. Remove the passphrase \
         with `ssh-keygen -p -f {path}` or move the key away"
    )]
    NeedsPassphrase { path: PathBuf },
    #[error("{path} is a directory, not a key file; move it away or choose another key directory")]
    IsDirectory { path: PathBuf },
    #[error(
        "{path} is a symbolic link to {target}, which does not exist; remove the link or create its target"
    )]
    DanglingSymlink { path: PathBuf, target: PathBuf },
    #[error("cannot write a key in {dir}: the directory is not writable ({reason})")]
    NotWritable { dir: PathBuf, reason: String },
    #[error("{0}")]
    Fs(#[from] flyte_fs::FsError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the system random number generator failed: {0}")]
    Random(String),
    #[error("invalid host alias {alias:?} for known_hosts: {reason}")]
    InvalidAlias { alias: String, reason: &'static str },
    #[error("cannot encode the key: {0}")]
    Encode(String),
}

/// `Result` with this crate's error.
pub type Result<T, E = KeyError> = std::result::Result<T, E>;
