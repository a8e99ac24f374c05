//! One control plane's client settings: the HTTP client, the token header and the token source
//! that every generated connectrpc client made from it shares.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::{ApiError, Code, Endpoint, Result, Secret};

/// Largest response message accepted (bounded memory against a broken server).
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// How long establishing a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Unary calls end within this time; streams have no overall timeout.
const UNARY_TIMEOUT: Duration = Duration::from_mins(1);

/// A boxed future returned by [`TokenSource::token`].
pub type TokenFuture<'a> = Pin<Box<dyn Future<Output = Result<Option<Secret>>> + Send + 'a>>;

/// Supplies bearer tokens. `refresh` is true when the server refused the last one.
pub trait TokenSource: Send + Sync {
    fn token(&self, refresh: bool) -> TokenFuture<'_>;
}

/// A Connect client for one endpoint.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    auth_header: reqwest::header::HeaderName,
    tokens: Option<Arc<dyn TokenSource>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("auth_header", &self.auth_header)
            .field("authenticated", &self.tokens.is_some())
            .finish_non_exhaustive()
    }
}

pub(crate) fn transport(error: &reqwest::Error) -> ApiError {
    // reqwest's Display names the URL, never headers or bodies, so it is safe to show.
    let code = if error.is_timeout() {
        Code::DeadlineExceeded
    } else {
        Code::Unavailable
    };
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    ApiError::new(code, message)
}

/// How a [`Client`] reaches its endpoint: Flyte's `admin.caCertFilePath` (PEM),
/// `admin.insecureSkipVerify` and `admin.httpProxyURL`.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpOptions<'a> {
    pub ca_pem: Option<&'a [u8]>,
    /// Accept any certificate: no check that the server is who it claims to be.
    pub skip_verify: bool,
    /// Send every request through this proxy.
    pub proxy: Option<&'a str>,
    /// A `proxy-authorization` value sent with every request (Flyte's `admin.proxyCommand`:
    /// for what stands in front of the control plane).
    pub proxy_authorization: Option<&'a crate::Secret>,
}

impl Client {
    /// A client without authentication.
    pub fn new(endpoint: &Endpoint) -> Result<Self> {
        Self::with_ca(endpoint, None)
    }

    /// A client without authentication that also trusts the CA certificates in `ca_pem` (Flyte's
    /// `admin.caCertFilePath`: a PEM bundle) besides the system's.
    pub fn with_ca(endpoint: &Endpoint, ca_pem: Option<&[u8]>) -> Result<Self> {
        Self::with_http(
            endpoint,
            &HttpOptions {
                ca_pem,
                ..HttpOptions::default()
            },
        )
    }

    /// A client without authentication, with Flyte's TLS and proxy settings.
    pub fn with_http(endpoint: &Endpoint, options: &HttpOptions<'_>) -> Result<Self> {
        let ca_pem = options.ca_pem;
        let extra = match ca_pem {
            Some(pem) => reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                ApiError::new(
                    Code::InvalidArgument,
                    format!("the CA file is not a PEM bundle: {e}"),
                )
            })?,
            None => Vec::new(),
        };
        let mut builder = reqwest::Client::builder();
        if options.skip_verify {
            // Flyte's `admin.insecureSkipVerify`: the caller asked for it, and says so.
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        if let Some(url) = options.proxy {
            let proxy = reqwest::Proxy::all(url).map_err(|e| {
                ApiError::new(
                    Code::InvalidArgument,
                    format!("the HTTP proxy URL is not usable: {e}"),
                )
            })?;
            builder = builder.proxy(proxy);
        }
        if let Some(secret) = options.proxy_authorization {
            let mut value =
                reqwest::header::HeaderValue::from_str(secret.expose()).map_err(|_| {
                    ApiError::new(
                        Code::InvalidArgument,
                        "the proxy command printed characters an HTTP header cannot carry",
                    )
                })?;
            value.set_sensitive(true);
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(reqwest::header::PROXY_AUTHORIZATION, value);
            builder = builder.default_headers(headers);
        }
        let http = builder
            .tls_certs_merge(extra)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("flyte-run/", env!("CARGO_PKG_VERSION")))
            // A redirect could carry the token (in a header reqwest does not strip, such as
            // `flyte-authorization`) to another host: Connect servers never redirect.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| transport(&e))?;
        Ok(Self {
            http,
            base: endpoint.base_url(),
            auth_header: reqwest::header::AUTHORIZATION,
            tokens: None,
        })
    }

    /// Authenticate calls with tokens from `tokens`.
    #[must_use]
    pub fn with_tokens(mut self, tokens: Arc<dyn TokenSource>) -> Self {
        self.tokens = Some(tokens);
        self
    }

    /// Send the token in this header (`authorizationMetadataKey` of the public client config;
    /// `authorization` by default, `flyte-authorization` on some deployments).
    pub fn with_auth_header(mut self, name: &str) -> Result<Self> {
        self.auth_header = reqwest::header::HeaderName::from_bytes(
            name.to_ascii_lowercase().as_bytes(),
        )
        .map_err(|_| {
            ApiError::new(
                Code::InvalidArgument,
                format!("{name:?} is not an HTTP header name"),
            )
        })?;
        Ok(self)
    }

    /// The transport for the generated connectrpc clients (flyte-idl): this client's HTTP
    /// settings, token header and tokens.
    pub fn transport(&self) -> crate::Transport {
        crate::Transport {
            http: self.http.clone(),
            auth_header: self.auth_header.clone(),
            tokens: self.tokens.clone(),
        }
    }

    /// How generated clients talk to this endpoint, as Flyte's own client does: Connect with
    /// binary protobuf and gzip-compressed requests; responses up to 16 MiB.
    pub fn connect_config(&self) -> Result<connectrpc::client::ClientConfig> {
        let base: http::Uri = self.base.parse().map_err(|_| {
            ApiError::new(Code::InvalidArgument, format!("{} is not a URI", self.base))
        })?;
        Ok(connectrpc::client::ClientConfig::new(base)
            .proto()
            .compress_requests("gzip")
            .with_default_max_message_size(MAX_MESSAGE_BYTES))
    }

    /// A generated client (`RunServiceClient::new`, say) on this client's transport and config,
    /// for unary calls: each ends within a minute.
    pub fn connect<C>(
        &self,
        make: impl FnOnce(crate::Transport, connectrpc::client::ClientConfig) -> C,
    ) -> Result<C> {
        let config = self.connect_config()?.with_default_timeout(UNARY_TIMEOUT);
        Ok(make(self.transport(), config))
    }

    /// A generated client for server streams (watches, log tails): no overall deadline, since a
    /// watch lasts as long as what it watches.
    pub fn connect_streaming<C>(
        &self,
        make: impl FnOnce(crate::Transport, connectrpc::client::ClientConfig) -> C,
    ) -> Result<C> {
        Ok(make(self.transport(), self.connect_config()?))
    }

    /// The `https://host:port` this client calls.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The underlying HTTP client, for plain requests to the same deployment (`OAuth2`).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }
}
