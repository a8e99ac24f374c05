//! SSH over WebSocket, wire-compatible with Flyte 2's SSH debug.
//!
//! The bytes of an SSH connection travel in binary WebSocket frames (RFC 6455), nothing else:
//!
//! ```text
//! ssh --stdio--> client (ProxyCommand) --ws/wss--> [ingress] --ws--> bridge --> SSH server
//! ```
//!
//! - [`client`]: `flyte-run tunnel URL`, the ProxyCommand. Reads the headers file on every start,
//!   so a refreshed token needs no config change; exits with a distinct code per failure class
//!   ([`exit_code`]).
//! - [`bridge`]: the in-task side. A plain HTTP GET is the readiness probe (`200 ok`); an upgrade on
//!   any path is bridged to an SSH server over TCP or, with no second port, in-process.
//!
//! WebSocket has no half-close. When ssh closes the tunnel's stdin, the client starts the closing
//! handshake and drains what the server still sends; when the server side ends first, the client
//! writes out everything received and exits without waiting for stdin. Neither order deadlocks.

pub mod bridge;
pub mod client;
mod headers;
pub mod link;
mod resumable;
pub mod resume;
pub mod sessions;
mod tls;
pub mod transport;

use std::path::PathBuf;

pub use headers::{Header, read_headers_file};

/// Largest frame or message either side accepts, as Flyte's bridge does.
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

/// Process exit codes of `flyte-run tunnel` (sysexits where one fits).
pub mod exit_code {
    /// The connection ended normally.
    pub const OK: i32 = 0;
    /// Anything not listed below.
    pub const OTHER: i32 = 1;
    /// The route answered, but not with a tunnel: 404, 5xx, connection refused, DNS failure,
    /// connect timeout (`EX_UNAVAILABLE`). Often "still starting": retry.
    pub const ROUTE_NOT_SERVING: i32 = 69;
    /// The WebSocket or TLS conversation broke its protocol (`EX_PROTOCOL`).
    pub const PROTOCOL: i32 = 76;
    /// The route refused our credentials: 401 or 403 (`EX_NOPERM`). Refresh the token.
    pub const AUTH_REFUSED: i32 = 77;
    /// A local file we were told to use is missing or unreadable (`EX_CONFIG`).
    pub const CONFIG: i32 = 78;
    /// A resumable session could not be resumed: its grace period passed, or the server
    /// no longer knows it (`EX_TEMPFAIL`).
    pub const SESSION_LOST: i32 = 75;
    /// Interrupted by SIGINT or SIGTERM (128 + SIGINT).
    pub const INTERRUPTED: i32 = 130;
}

/// Everything that can go wrong in the tunnel. Messages fit on one line and never contain header
/// values (they carry tokens).
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error(
        "the route refused our credentials (HTTP {status}); refresh the token (or use an API key) and reconnect"
    )]
    AuthRefused { status: u16 },
    #[error("the route is not serving a tunnel yet: {detail}")]
    RouteNotServing { detail: String },
    #[error("WebSocket protocol error: {detail}")]
    Protocol { detail: String },
    #[error("cannot use {what} {path}: {reason}")]
    LocalFile {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("invalid tunnel URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    /// The HTTP proxy refused to open the tunnel (or cannot be reached): a setting to fix, not
    /// a route that is still starting.
    #[error("the proxy {proxy}: {detail}; check admin.httpProxyURL (or --proxy)")]
    Proxy { proxy: String, detail: String },
    #[error("the SSH session was lost: {detail}")]
    SessionLost { detail: String },
    #[error("interrupted")]
    Interrupted,
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl TunnelError {
    /// The process exit code for this error (see [`exit_code`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            TunnelError::AuthRefused { .. } => exit_code::AUTH_REFUSED,
            TunnelError::RouteNotServing { .. } => exit_code::ROUTE_NOT_SERVING,
            TunnelError::Protocol { .. } => exit_code::PROTOCOL,
            TunnelError::LocalFile { .. }
            | TunnelError::BadUrl { .. }
            | TunnelError::Proxy { .. } => exit_code::CONFIG,
            TunnelError::SessionLost { .. } => exit_code::SESSION_LOST,
            TunnelError::Interrupted => exit_code::INTERRUPTED,
            TunnelError::Io { .. } => exit_code::OTHER,
        }
    }
}

/// `Result` with this crate's error.
pub type Result<T, E = TunnelError> = std::result::Result<T, E>;
