//! ssh_config for the debug flow: a lossless model, the debug Host block, and a managed-block
//! install that never clobbers a user's `~/.ssh/config`.
//!
//! The pure core ([`Config`], [`DebugHost`], [`install_block`], [`remove_block`]) does no I/O and
//! round-trips any file byte for byte. The thin I/O layer ([`install`], [`remove`],
//! [`pin_host_key`]) reads, locks, edits and atomically replaces files.
//!
//! ```
//! use flyte_ssh_config::{install_block, remove_block};
//! let user = "Host *\n  ForwardAgent no\n";
//! let block = vec!["Host dbg".to_owned(), "  User root".to_owned()];
//! let installed = install_block(user, "dbg", &block).unwrap();
//! assert!(installed.starts_with("# >>> flyte-run managed: dbg >>>\nHost dbg\n"));
//! assert_eq!(remove_block(&installed, "dbg").unwrap().as_deref(), Some(user));
//! ```

mod audit;
mod block;
mod file;
mod known_hosts;
mod managed;
mod model;
mod quote;

use std::fmt;
use std::path::PathBuf;

pub use audit::{ShadowKind, Shadowing, shadowing};
pub use block::{
    DebugHost, HostKeyCheck, SERVER_ALIVE_COUNT_MAX, SERVER_ALIVE_INTERVAL, validate_alias,
};
pub use file::{EditOptions, MAX_CONFIG_BYTES, Outcome, install, remove};
pub use known_hosts::{forget_host_key, pin_host_key};
pub use managed::{
    ManagedBlock, begin_marker, end_marker, install_block, managed_blocks, remove_block,
};
pub use model::{Config, Line, LineEnding, LineKind, split_args};

/// What is wrong with the managed-block markers in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkerProblem {
    Duplicated {
        alias: String,
        first_line: usize,
    },
    Nested {
        inner: String,
        outer: String,
        outer_line: usize,
    },
    Mismatched {
        begin: String,
        begin_line: usize,
        end: String,
    },
    BeginWithoutEnd {
        alias: String,
    },
    EndWithoutBegin {
        alias: String,
    },
}

impl fmt::Display for MarkerProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MarkerProblem::Duplicated { alias, first_line } => {
                write!(
                    f,
                    "a second block for {alias:?} (the first starts at line {first_line})"
                )
            }
            MarkerProblem::Nested {
                inner,
                outer,
                outer_line,
            } => write!(
                f,
                "the block for {inner:?} starts inside the block for {outer:?} (opened at line {outer_line})"
            ),
            MarkerProblem::Mismatched {
                begin,
                begin_line,
                end,
            } => write!(
                f,
                "the block opened for {begin:?} at line {begin_line} is closed with the marker for {end:?}"
            ),
            MarkerProblem::BeginWithoutEnd { alias } => {
                write!(f, "the block for {alias:?} is never closed")
            }
            MarkerProblem::EndWithoutBegin { alias } => {
                write!(f, "an end marker for {alias:?} without a start marker")
            }
        }
    }
}

/// Everything that can go wrong. The user's file is never changed when one of these is returned.
#[derive(Debug, thiserror::Error)]
pub enum SshConfigError {
    #[error("invalid Host alias {alias:?}: {reason}")]
    InvalidAlias { alias: String, reason: &'static str },
    #[error("invalid {option} value: {reason}")]
    InvalidValue {
        option: &'static str,
        reason: String,
    },
    #[error(
        "the flyte-run markers in the ssh config are broken at line {line}: {problem}. \
         Nothing was changed; fix or delete those marker lines by hand"
    )]
    Markers { line: usize, problem: MarkerProblem },
    #[error(
        "{path} is {size} bytes, more than the {limit}-byte limit for an ssh config; \
         nothing was changed. Is it really your ssh config?"
    )]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error(
        "line {line} of the ssh config already has a `Host` block for {alias:?} that flyte-run \
         does not manage; ssh would merge its options (ForwardAgent, RemoteCommand, ...) into the \
         debug connection. Nothing was changed: remove or rename that block, or choose another \
         alias (host_alias / --host-alias)"
    )]
    AliasTaken { alias: String, line: usize },
    #[error("{path} is not UTF-8 text; nothing was changed")]
    NotUtf8 { path: PathBuf },
    #[error(
        "cannot write {path}: it is read-only ({reason}). Add this block to it by hand:\n{block}"
    )]
    ReadOnly {
        path: PathBuf,
        reason: String,
        block: String,
    },
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Fs(#[from] flyte_fs::FsError),
    #[error("{0}")]
    Keys(#[from] flyte_keys::KeyError),
}

/// `Result` with this crate's error.
pub type Result<T, E = SshConfigError> = std::result::Result<T, E>;
