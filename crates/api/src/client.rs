//! Connect calls over reqwest.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::envelope::{self, Decoder};
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

/// The error a non-200 response carries: Connect error JSON, or a code inferred from the status.
fn error_from(status: u16, body: &[u8]) -> ApiError {
    match serde_json::from_slice::<WireError>(body) {
        Ok(wire) => ApiError::new(wire.code, wire.message),
        Err(_) => ApiError::new(
            Code::from_http_status(status),
            format!("HTTP {status} without a Connect error body"),
        ),
    }
}

fn encode_request<Req: Serialize>(method: &str, request: &Req) -> Result<Vec<u8>> {
    serde_json::to_vec(request).map_err(|e| {
        ApiError::new(
            Code::Internal,
            format!("cannot encode the {method} request: {e}"),
        )
    })
}

fn decode<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            Code::Internal,
            format!("cannot read the {what} response: {e}"),
        )
    })
}

impl Client {
    /// A client without authentication.
    pub fn new(endpoint: &Endpoint) -> Result<Self> {
        let http = reqwest::Client::builder()
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

    /// A generated client (`RunServiceClient::new`, say) on this client's transport and config.
    pub fn connect<C>(
        &self,
        make: impl FnOnce(crate::Transport, connectrpc::client::ClientConfig) -> C,
    ) -> Result<C> {
        Ok(make(self.transport(), self.connect_config()?))
    }

    /// Per-call options of a unary call: it ends within a minute.
    pub fn unary_options() -> connectrpc::client::CallOptions {
        connectrpc::client::CallOptions::default().with_timeout(UNARY_TIMEOUT)
    }

    /// The `https://host:port` this client calls.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The underlying HTTP client, for plain requests to the same deployment (`OAuth2`).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    async fn send(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response> {
        let mut refreshed = false;
        loop {
            let mut request = self
                .http
                .post(format!("{}/{path}", self.base))
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .header("connect-protocol-version", "1")
                .body(body.clone());
            if let Some(timeout) = timeout {
                request = request.timeout(timeout);
            }
            if let Some(tokens) = &self.tokens
                && let Some(token) = tokens.token(refreshed).await?
            {
                let value =
                    reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                        .map_err(|_| {
                        ApiError::new(
                            Code::Unauthenticated,
                            "the token is not a valid header value",
                        )
                    })?;
                request = request.header(self.auth_header.clone(), value);
            }
            let response = request.send().await.map_err(|e| transport(&e))?;
            let status = response.status().as_u16();
            if status == 200 {
                return Ok(response);
            }
            let body = response.bytes().await.map_err(|e| transport(&e))?;
            let error = error_from(status, &body);
            // One refresh and retry: the token may simply have expired.
            if error.code == Code::Unauthenticated && self.tokens.is_some() && !refreshed {
                tracing::debug!(%path, "unauthenticated; refreshing the token and retrying once");
                refreshed = true;
                continue;
            }
            return Err(error);
        }
    }

    /// A unary call: `POST /<service>/<method>` with the JSON message.
    pub async fn unary<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        service: &str,
        method: &str,
        request: &Req,
    ) -> Result<Resp> {
        let body = encode_request(method, request)?;
        let response = self
            .send(
                &format!("{service}/{method}"),
                "application/json",
                body,
                Some(UNARY_TIMEOUT),
            )
            .await?;
        let bytes = response.bytes().await.map_err(|e| transport(&e))?;
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(ApiError::new(
                Code::ResourceExhausted,
                format!("{method} answered with more than {MAX_MESSAGE_BYTES} bytes"),
            ));
        }
        decode(&bytes, method)
    }

    /// A server-streaming call: one enveloped request, then messages until the end-of-stream
    /// envelope (which may carry an error).
    pub async fn server_stream<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        service: &str,
        method: &str,
        request: &Req,
    ) -> Result<ServerStream<Resp>> {
        let json = encode_request(method, request)?;
        let response = self
            .send(
                &format!("{service}/{method}"),
                "application/connect+json",
                envelope::encode(0, &json),
                None,
            )
            .await?;
        Ok(ServerStream {
            method: method.to_owned(),
            body: Box::pin(response.bytes_stream()),
            decoder: Decoder::new(MAX_MESSAGE_BYTES),
            ended: false,
            _message: PhantomData,
        })
    }
}

type ByteStream = Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// The end-of-stream envelope's JSON: an error, if the stream failed.
#[derive(serde::Deserialize)]
struct EndStream {
    error: Option<WireError>,
}

/// Connect error JSON.
#[derive(serde::Deserialize)]
struct WireError {
    code: Code,
    #[serde(default)]
    message: String,
}

/// The messages of a server stream, read with [`ServerStream::next`].
pub struct ServerStream<T> {
    method: String,
    body: ByteStream,
    decoder: Decoder,
    ended: bool,
    _message: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for ServerStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerStream")
            .field("method", &self.method)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl<T: DeserializeOwned> ServerStream<T> {
    /// The next message; `None` once the stream ended cleanly. An error in the end-of-stream
    /// envelope, or a stream cut short, is an `Err`.
    pub async fn next(&mut self) -> Option<Result<T>> {
        loop {
            if self.ended {
                return None;
            }
            match self.decoder.next_envelope() {
                Ok(Some(frame)) if frame.flags & envelope::END_STREAM != 0 => {
                    self.ended = true;
                    return match serde_json::from_slice::<EndStream>(&frame.payload) {
                        Ok(EndStream { error: Some(e) }) => {
                            Some(Err(ApiError::new(e.code, e.message)))
                        }
                        Ok(EndStream { error: None }) => None,
                        Err(e) => Some(Err(ApiError::new(
                            Code::Internal,
                            format!("bad end of {} stream: {e}", self.method),
                        ))),
                    };
                }
                Ok(Some(frame)) => return Some(decode(&frame.payload, &self.method)),
                Ok(None) => {}
                Err(e) => {
                    self.ended = true;
                    return Some(Err(ApiError::new(
                        Code::Internal,
                        format!("{} stream: {e:?}", self.method),
                    )));
                }
            }
            match self.body.next().await {
                Some(Ok(bytes)) => self.decoder.push(&bytes),
                Some(Err(e)) => {
                    self.ended = true;
                    return Some(Err(transport(&e)));
                }
                None => {
                    self.ended = true;
                    return Some(Err(ApiError::new(
                        Code::Unavailable,
                        format!(
                            "the {} stream ended without its end-of-stream message",
                            self.method
                        ),
                    )));
                }
            }
        }
    }
}
