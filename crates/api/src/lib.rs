//! A client for Flyte 2's control plane: the Connect protocol with the JSON codec, and serde
//! types with flyteidl2's service, method and field names for the parts SSH debugging uses.
//!
//! - [`Client::unary`] and [`Client::server_stream`] speak Connect over HTTP/1.1 or h2; errors
//!   come back as [`ApiError`] with the Connect [`Code`].
//! - Authentication is pluggable: a [`TokenSource`] supplies the bearer token, sent in the header
//!   the server's public client config names; on `unauthenticated` the client asks the source for
//!   a fresh token once and retries.
//! - [`Secret`] holds tokens: `Debug` and `Display` never show them.

mod client;
mod code;
mod endpoint;
pub mod envelope;
mod transport;
pub mod types;

use std::fmt;

pub use client::{Client, ServerStream, TokenFuture, TokenSource};
pub use code::Code;
pub use endpoint::{Endpoint, resolve};
pub use transport::Transport;

/// The HTTP client this crate uses, for callers that make plain requests to the same deployment
/// (`OAuth2` token endpoints).
pub type HttpClient = reqwest::Client;

/// The environment variable that names the control plane when no endpoint is given.
pub const ENV_ENDPOINT: &str = "FLYTE_ENDPOINT";

/// A failed call: the Connect code and a message for people. Messages never contain tokens or
/// request bodies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub code: Code,
    pub message: String,
}

impl From<connectrpc::ConnectError> for ApiError {
    fn from(error: connectrpc::ConnectError) -> Self {
        let code = Code::ALL
            .into_iter()
            .find(|c| c.as_str() == error.code.as_str())
            .unwrap_or(Code::Unknown);
        let message = error
            .message
            .clone()
            .unwrap_or_else(|| code.as_str().replace('_', " "));
        Self { code, message }
    }
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// `Result` with this crate's error.
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// A secret string (token, client secret). `Debug` and `Display` print `<redacted>`; read it
/// with [`Secret::expose`] where it must go on the wire.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}
