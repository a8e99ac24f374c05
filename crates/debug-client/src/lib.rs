//! The client side of a Flyte 2 SSH debug session, as a library: what `flyte debug` does, and
//! what flyte-run's `debug::connect`, `runs::` and `ssh::exec` are thin adapters over.
//!
//! - [`ControlPlane`]: an endpoint, an authenticated API client, and the credential it came
//!   from (the local sandbox's, or a stored API key that is only ever sent to its own endpoint).
//! - [`runs`]: launch a task with the debug environment ([`launch_env`]), relaunch an existing
//!   run's task under its derived debug name ([`debug_run_name`]), wait for a phase.
//! - [`connect`]: wait for the action's debug route, write a token for that route only into the
//!   headers file ssh's `ProxyCommand` reads, probe the route, fetch and pin the server's host
//!   key, and describe the Host block ([`Connection`]).
//! - [`ssh`]: install the block (managed, nothing else in the file touched), run a command with
//!   the system OpenSSH client, or build the `ssh -F` command of an interactive shell.
//!
//! Long waits report to a [`Progress`] the caller supplies (flyte-run draws a spinner); nothing
//! here prints. The program ssh runs as `ProxyCommand` (`<program> tunnel <url>
//! --http-headers-file <file>`) is the caller's: flyte-run passes itself.

mod configured;
mod control_plane;
mod error;
mod names;
mod progress;
pub mod runs;
mod session;
pub mod ssh;

pub use configured::plane_options;
pub use control_plane::{
    CaFile, ControlPlane, Credential, CredentialFiles, ENV_ALLOW_KEY_ENDPOINT, PlaneOptions,
    cached_login, stored_key,
};
pub use error::{DebugClientError, Result};
pub use names::{
    DEFAULT_ACTION, DEFAULT_ALIAS, DEFAULT_DOMAIN, DEFAULT_PROJECT, MAX_NAME_CANDIDATES,
    MAX_RUN_NAME, debug_run_name, host_key_alias, launch_env, route_is_private, route_url,
    run_name_candidates, token_may_go_to,
};
pub use progress::{NoProgress, Progress};
pub use session::{ConnectOptions, Connection, connect, fetch_route_host_key};

/// The longest wait any option may ask for (a week): longer is a typo, and would overflow
/// `Instant` arithmetic long before it mattered.
pub const MAX_WAIT: std::time::Duration = std::time::Duration::from_hours(7 * 24);
/// The shortest poll interval: zero means "as fast as is reasonable", not a busy loop.
pub const MIN_POLL: std::time::Duration = std::time::Duration::from_millis(50);

fn deadline_after(timeout: std::time::Duration) -> tokio::time::Instant {
    tokio::time::Instant::now() + timeout.min(MAX_WAIT)
}

fn poll(interval: std::time::Duration) -> std::time::Duration {
    interval.clamp(MIN_POLL, MAX_WAIT)
}

// What a caller needs to use this crate alone.
pub use flyte_api::idl::flyteidl2::common::RunIdentifier;
pub use flyte_api::request::RunScope;
pub use flyte_api::{Client, Endpoint, Secret};
pub use flyte_home::{DebugDir, FlyteHome};
pub use flyte_ssh_config::{DebugHost, EditOptions, Outcome};
