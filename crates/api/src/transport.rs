//! The HTTP transport under the generated connectrpc clients: reqwest (so TLS roots, an extra
//! CA, proxies and timeouts are configured once, in [`crate::Client::new`]) plus the bearer
//! token, with one refresh and retry when the server answers `401 Unauthorized`.

use std::sync::Arc;

use connectrpc::ConnectError;
use connectrpc::client::{BoxFuture, ClientBody, ClientTransport};
use http_body_util::BodyExt;

use crate::client::TokenSource;

/// Request bodies larger than this are refused before sending (unary and server-stream requests
/// are whole messages; none of ours comes near it).
const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;

/// A [`ClientTransport`] over one reqwest client and an optional [`TokenSource`].
#[derive(Clone)]
pub struct Transport {
    pub(crate) http: reqwest::Client,
    pub(crate) auth_header: reqwest::header::HeaderName,
    pub(crate) tokens: Option<Arc<dyn TokenSource>>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("auth_header", &self.auth_header)
            .field("authenticated", &self.tokens.is_some())
            .finish_non_exhaustive()
    }
}

/// A transport failure as connectrpc surfaces it (the same code and message as
/// [`crate::Client`]'s own calls give).
fn transport_error(error: &reqwest::Error) -> ConnectError {
    let error = crate::client::transport(error);
    if error.code == crate::Code::DeadlineExceeded {
        ConnectError::deadline_exceeded(error.message)
    } else {
        ConnectError::unavailable(error.message)
    }
}

impl Transport {
    async fn send_once(
        &self,
        parts: &http::request::Parts,
        body: bytes::Bytes,
        refresh: bool,
    ) -> Result<reqwest::Response, ConnectError> {
        let mut request = self
            .http
            .request(parts.method.clone(), parts.uri.to_string())
            .headers(parts.headers.clone())
            .body(body);
        if let Some(tokens) = &self.tokens
            && let Some(token) = tokens
                .token(refresh)
                .await
                .map_err(|e| ConnectError::unauthenticated(e.message))?
        {
            let mut value =
                reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                    .map_err(|_| {
                        ConnectError::unauthenticated(
                            "the token holds characters an HTTP header cannot carry",
                        )
                    })?;
            value.set_sensitive(true);
            request = request.header(self.auth_header.clone(), value);
        }
        request.send().await.map_err(|e| transport_error(&e))
    }
}

impl ClientTransport for Transport {
    type ResponseBody = reqwest::Body;
    type Error = ConnectError;

    fn send(
        &self,
        request: http::Request<ClientBody>,
    ) -> BoxFuture<'static, Result<http::Response<reqwest::Body>, ConnectError>> {
        let transport = self.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let body = http_body_util::Limited::new(body, MAX_REQUEST_BYTES)
                .collect()
                .await
                .map_err(|e| ConnectError::resource_exhausted(format!("request body: {e}")))?
                .to_bytes();
            let mut response = transport.send_once(&parts, body.clone(), false).await?;
            // One refresh and retry: the token may simply have expired.
            if response.status() == reqwest::StatusCode::UNAUTHORIZED && transport.tokens.is_some()
            {
                tracing::debug!(uri = %parts.uri, "unauthenticated; refreshing the token and retrying once");
                response = transport.send_once(&parts, body, true).await?;
            }
            Ok(http::Response::from(response))
        })
    }
}
