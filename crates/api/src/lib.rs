//! A client for Flyte 2's control plane: the generated flyteidl2 clients of [`flyte_idl`] on a
//! transport that carries Flyte's settings (Connect, binary protobuf, gzip-compressed requests)
//! and its authentication.
//!
//! - [`Client::connect`] makes any generated client (`RunServiceClient::new`, say) for one
//!   endpoint; [`Answer::owned`] turns its unary answer into the owned message or an [`ApiError`] with
//!   the Connect [`Code`].
//! - Authentication is pluggable: a [`TokenSource`] supplies the bearer token, sent in the header
//!   the server's public client config names; on HTTP 401 the transport asks the source for a
//!   fresh token once and retries.
//! - [`Secret`] holds tokens: `Debug` and `Display` never show them.
//! - [`ActionPhaseExt`] and [`ActionDetailsExt`]: what flyteidl2's actions mean to a client (a
//!   phase terminal or not, its short name; the debug route an action publishes).
//! - [`request`]: the requests built most (a run of a container task).

mod action;
mod client;
mod endpoint;
pub mod request;
mod transport;

use std::fmt;

pub use action::{ActionDetailsExt, ActionPhaseExt};
pub use client::{Client, HttpOptions, TokenFuture, TokenSource};
/// The Connect (and gRPC) status codes, as connectrpc defines them.
pub use connectrpc::ErrorCode as Code;
pub use endpoint::{Endpoint, resolve};
pub use flyte_idl as idl;
pub use transport::Transport;

/// The owned message of a generated client's unary answer, or its error as an [`ApiError`]:
/// `runs.get_run_details(request).await.owned()?`.
pub trait Answer {
    type Message;
    fn owned(self) -> Result<Self::Message>;
}

impl<V> Answer
    for std::result::Result<
        connectrpc::client::UnaryResponse<buffa::view::OwnedView<V>>,
        connectrpc::ConnectError,
    >
where
    V: buffa::MessageView<'static>,
{
    type Message = V::Owned;

    fn owned(self) -> Result<V::Owned> {
        Ok(self?.into_owned())
    }
}

/// The HTTP client this crate uses, for callers that make plain requests to the same deployment
/// (`OAuth2` token endpoints).
pub type HttpClient = reqwest::Client;

/// The environment variable that names the control plane when no endpoint is given.
pub const ENV_ENDPOINT: &str = "FLYTE_ENDPOINT";

/// A failed call: the Connect code and a message for people. Messages never contain tokens or
/// request bodies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct ApiError {
    pub code: Code,
    pub message: String,
}

impl From<connectrpc::ConnectError> for ApiError {
    fn from(error: connectrpc::ConnectError) -> Self {
        let code = error.code;
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
