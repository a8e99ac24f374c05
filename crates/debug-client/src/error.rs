//! This crate's one error. Messages name the run, file or URL and the fix; none carries a token,
//! a key or a command line (which may hold a secret).

use std::path::PathBuf;

use flyte_tunnel::TunnelError;

/// Everything that can go wrong in a debug session.
#[derive(Debug, thiserror::Error)]
pub enum DebugClientError {
    #[error("cannot derive a debug run name from {run:?}: nothing of it is a letter or digit")]
    BadRunName { run: String },
    #[error(
        "no action {action:?} in run {run:?} ({project}/{domain}); check the run name, project and domain"
    )]
    NoSuchAction {
        run: String,
        action: String,
        project: String,
        domain: String,
    },
    #[error(
        "run {run:?} has already ended ({phase}): its task is gone, so there is nothing to \
         connect to; launch its task again in debug mode (`flyte-run debug RUN` relaunches \
         a run's task, or use debug::launch_env in a playbook)"
    )]
    RunEnded { run: String, phase: String },
    #[error(
        "run {run:?} published no debug route within {waited_secs} s (it is {phase}); was it \
         launched in debug mode (debug::launch_env)?"
    )]
    NoRoute {
        run: String,
        phase: String,
        waited_secs: u64,
    },
    #[error("run {run:?} did not reach {target} within {waited_secs} s (it is {phase})")]
    PhaseTimeout {
        run: String,
        target: String,
        phase: String,
        waited_secs: u64,
    },
    #[error("unknown phase {0:?}; use QUEUED, RUNNING, SUCCEEDED, FAILED, ABORTED ...")]
    UnknownPhase(String),
    #[error(
        "the control plane did not return the task of run {run:?}, so it cannot be relaunched; \
         launch it in debug mode from a playbook (debug::launch_env)"
    )]
    NotRelaunchable { run: String },
    #[error(
        "the debug runs {first} to {last} have all ended, and run names stay taken; launch under \
         another name (flyte-run debug --name NAME, or a playbook's --set run=NAME)"
    )]
    DebugRunsEnded { first: String, last: String },
    #[error("{0}; or pass use_api_key to use the stored API key")]
    RouteAuthRefused(TunnelError),
    #[error("the debug route {url} did not start serving within the timeout: {last}")]
    RouteTimeout { url: String, last: TunnelError },
    #[error("the debug route {url}: {source}")]
    Route {
        url: String,
        #[source]
        source: TunnelError,
    },
    #[error("the route published an unusable host key: {0}")]
    HostKey(flyte_keys::KeyError),
    #[error("no API key at {}: create one with auth::ensure_api_key(\"flyte-ssh-debug\")", path.display())]
    NoApiKey { path: PathBuf },
    #[error(
        "no credentials for {endpoint}: create an API key with auth::ensure_api_key(\"flyte-ssh-debug\") and pass use_api_key"
    )]
    NoCredentials { endpoint: String },
    #[error(
        "{} holds an API key made for {key_endpoint}, not for {endpoint}; flyte-run sends a key \
         only to its own endpoint. Point flyte-run at {key_endpoint} (--endpoint, FLYTE_ENDPOINT), \
         make a key for this endpoint with auth::ensure_api_key after moving that file away, or, \
         if {endpoint} really is the same deployment, set {allow_var}={endpoint}",
        path.display()
    )]
    KeyForAnotherEndpoint {
        path: PathBuf,
        key_endpoint: String,
        endpoint: String,
        allow_var: &'static str,
    },
    #[error(
        "not sending the token for {endpoint_host} to {url}: it goes only to that host over TLS \
         (or between loopback addresses); give the route URL the API published for that control plane"
    )]
    TokenNotForRoute { url: String, endpoint_host: String },
    #[error("cannot get a token for the debug route {route}: {source}")]
    RouteToken {
        route: String,
        #[source]
        source: flyte_auth::AuthError,
    },
    #[error("cannot launch the run {name:?}: {source}")]
    Launch {
        name: String,
        #[source]
        source: flyte_api::ApiError,
    },
    #[error("run {run:?}: {source}")]
    Run {
        run: String,
        #[source]
        source: flyte_api::ApiError,
    },
    #[error(
        "cannot run the ssh client (is OpenSSH installed? apt-get install openssh-client): {0}"
    )]
    NoSshClient(std::io::Error),
    #[error("ssh {alias}: no result within {waited_secs} s (pass a larger `timeout`)")]
    SshTimeout { alias: String, waited_secs: u64 },
    #[error("ssh {alias}: {source}")]
    Ssh {
        alias: String,
        #[source]
        source: std::io::Error,
    },
    #[error("a command word holds a NUL byte, which no shell command can carry")]
    NulInCommand,
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Flyte's configuration says something that cannot be used (the message names the setting,
    /// where it is set, and the fix).
    #[error("{0}")]
    Configuration(String),
    #[error("{0}")]
    Api(#[from] flyte_api::ApiError),
    #[error("{0}")]
    Auth(#[from] flyte_auth::AuthError),
    #[error("{0}")]
    Keys(#[from] flyte_keys::KeyError),
    #[error("{0}")]
    SshConfig(#[from] flyte_ssh_config::SshConfigError),
}

/// `Result` with this crate's error.
pub type Result<T, E = DebugClientError> = std::result::Result<T, E>;

impl DebugClientError {
    /// A problem with the file at `path`.
    pub(crate) fn file(
        path: impl Into<PathBuf>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::File {
            path: path.into(),
            source: Box::new(source),
        }
    }
}
