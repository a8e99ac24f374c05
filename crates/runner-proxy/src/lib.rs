//! Reach the cluster network from a laptop that has none: every operation runs inside a runner
//! VM, through `ssh <management host>` then `incus exec <vm> -- bash -lc <command>`.
//!
//! ssh joins every argument after the host with spaces and hands the result to the remote
//! shell, and `bash -lc` parses its command once more, so each argument is shell-quoted for each
//! of those parses (shlex; a NUL byte, which no shell word can carry, is refused); the pure
//! builders in [`remote`] do that, and [`Runner`] runs the
//! result with the system OpenSSH client. Secrets never travel in argv: curl's URL, headers and
//! body go to curl's config on stdin.
//!
//! ```
//! use flyte_runner_proxy::remote::{kubectl_script, in_vm};
//! let script = kubectl_script(&["-n", "my ns", "get", "pods"])?;
//! assert_eq!(script, "kubectl -n 'my ns' get pods");
//! assert_eq!(in_vm("dap-runner", &script)?, r#"incus exec dap-runner -- bash -lc "kubectl -n 'my ns' get pods""#);
//! # Ok::<(), flyte_runner_proxy::RunnerError>(())
//! ```

mod config;
mod exec;
pub mod remote;
mod session;

pub use config::{
    DEFAULT_SSH_HOST, DEFAULT_SSH_KEY, DEFAULT_VM, ENV_SSH_HOST, ENV_SSH_KEY, ENV_VM, RunnerConfig,
};
pub use exec::{Output, PortForward, Runner, SHARED_IDLE};
pub use remote::{CurlRequest, CurlResponse};

/// Everything that can go wrong reaching the runner. Messages never contain header values or
/// request bodies (they may carry tokens).
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error(
        "cannot run the ssh client (is OpenSSH installed? apt-get install openssh-client): {0}"
    )]
    SshMissing(std::io::Error),
    #[error("ssh to the management host {host} failed: {detail}")]
    Connect { host: String, detail: String },
    #[error(
        "the runner VM {vm} is not ready (its incus agent is not running yet); wait for it with `incus wait {vm} agent --timeout=60` on the management host"
    )]
    AgentNotReady { vm: String },
    #[error("no result from the runner within {0} s")]
    Timeout(u64),
    #[error("{what} in the runner failed (exit {code}): {stderr}")]
    Failed {
        what: &'static str,
        code: i32,
        stderr: String,
    },
    #[error("curl's output ({0} bytes) had no status line")]
    CurlOutput(usize),
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// `Result` with this crate's error.
pub type Result<T, E = RunnerError> = std::result::Result<T, E>;
