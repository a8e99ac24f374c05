//! Credentials for Flyte 2's control plane, compatible with Flyte's own files:
//!
//! - [`ApiKey`]: Flyte's encoded API keys (base64 of `endpoint:client_id:client_secret:org`);
//!   [`ensure_api_key`] keeps one long-lived key per name in `~/.flyte/ssh-debug/api-key`.
//! - [`oauth::discover`] and [`oauth::client_credentials`]: the token endpoint from the
//!   deployment, then the client-credentials grant (no oauth2 crate: one form POST).
//! - [`token`]: the `bearer.json` cache (`{endpoint, token, exp}`), JWT expiry without
//!   verification, reuse while more than 120 s remain.
//! - [`ClientCredentials`]: a [`flyte_api::TokenSource`] that ties those together.
//! - [`Login`]: a person's login, Flyte's `DeviceFlow` (RFC 8628) or `Pkce` (RFC 7636 with a
//!   loopback redirect), its refresh token used before a new login.
//! - [`write_headers_file`]: what `flyte-run tunnel --http-headers-file` reads.
//!
//! Secrets travel as [`flyte_api::Secret`]; no error, log line or `Debug` output contains one.

mod api_key;
mod command;
mod connect_service;
mod device;
mod headers;
mod login;
pub mod oauth;
mod pkce;
mod service;
mod source;
pub mod token;

pub use api_key::{ApiKey, key_matches_endpoint, strip_scheme};
pub use command::{COMMAND_TIMEOUT, ExternalCommand};
pub use connect_service::{
    API_KEY_SERVICE, ConnectApiKeyService, ROUTE_TOKEN_SERVICE, create_route_token,
};
pub use headers::write_headers_file;
pub use login::{Login, LoginFlow, LoginPrompt, Prompt};
pub use oauth::AuthConfig;
pub use service::{API_KEY_FILE, ApiKeyService, ServiceFuture, ensure_api_key};
pub use source::{ClientCredentials, FixedToken, Mint, MintFuture, TokenChain, TokenOrigin};
pub use token::{BEARER_FILE, Token};

/// Everything that can go wrong. Messages never contain a secret or a token.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("malformed API key: {0}")]
    MalformedApiKey(String),
    #[error("the token endpoint {endpoint} refused to mint a token: {detail}")]
    TokenEndpoint { endpoint: String, detail: String },
    #[error("cannot find how to authenticate: {0}")]
    Discovery(String),
    #[error("headers file: {0}")]
    InvalidHeader(String),
    #[error("{0}")]
    Command(String),
    #[error("login: {0}")]
    Login(String),
    #[error("token cache: {0}")]
    Cache(String),
    #[error("{0}")]
    Api(#[from] flyte_api::ApiError),
    #[error("{0}")]
    Fs(#[from] flyte_fs::FsError),
}

/// `Result` with this crate's error.
pub type Result<T, E = AuthError> = std::result::Result<T, E>;
