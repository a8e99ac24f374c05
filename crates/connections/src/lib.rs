//! SSH git connections: a named connection (a default repository URL and a mounted secret holding
//! the private key) and the git initializer that clones with it.
//!
//! The plan of git commands is a pure function ([`plan`]); [`clone`] runs it with the system
//! `git` and `ssh`. Unlike the initializer this follows, host keys are checked: the secret's
//! `known_hosts` pins them (or, when asked explicitly, the first key seen is learned).
//!
//! ```
//! use flyte_connections::ssh_url;
//! assert_eq!(ssh_url("https://github.com/org/repo"), "git@github.com:org/repo.git");
//! ```

mod clone;
mod connection;
mod plan;

pub use clone::{Cloned, clone};
pub use connection::{
    Connection, ConnectionSecret, DEFAULT_KEY_NAME, ENV_PRIVATE_KEY, KNOWN_HOSTS_FILE,
};
pub use plan::{
    GitInit, GitStep, HostKeyPolicy, git_ssh_command, plan, ssh_url, without_credentials,
};

/// Everything that can go wrong with a connection or a clone.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("connection {name:?}: {reason}")]
    InvalidConnection { name: String, reason: String },
    #[error("invalid git initializer: {0}")]
    InvalidInit(String),
    #[error("the key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("{path} already exists and is not empty; clone into a new or empty directory")]
    DestinationNotEmpty { path: String },
    #[error("cannot run git (is it installed? apt-get install git): {0}")]
    GitMissing(std::io::Error),
    #[error("`{step}` failed: {stderr}")]
    GitFailed { step: String, stderr: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// `Result` with this crate's error.
pub type Result<T, E = ConnectionError> = std::result::Result<T, E>;
