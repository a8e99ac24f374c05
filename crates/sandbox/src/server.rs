//! The HTTP side: Connect-JSON handlers, the OAuth2 token endpoint and the metadata documents.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64ct::{Base64, Encoding};
use flyte_api::Code;
use serde_json::json;

use crate::Shared;
use crate::tokens::Refused;

/// Whether `token` opens the debug route at `path`: one this sandbox signed, unexpired, for an
/// API key that still exists (the API's check), and either an access token or a route token for
/// this very path.
pub(crate) fn token_opens_route(shared: &Shared, token: &str, path: &str) -> bool {
    shared.signer.verify(token, now()).is_ok_and(|claims| {
        claims.route.as_deref().is_none_or(|route| route == path)
            && matches!(shared.store.api_key(&claims.sub), Ok(Some(_)))
    })
}

pub(crate) use crate::clock::unix_secs as now;

/// A Connect error response.
fn connect_error(code: Code, message: impl Into<String>) -> Response {
    (
        code.http_status(),
        axum::Json(json!({"code": code.as_str(), "message": message.into()})),
    )
        .into_response()
}

/// A refused request: answered with Connect error JSON. Handlers return `Result<_, Rejection>`.
pub(crate) struct Rejection {
    pub(crate) code: Code,
    pub(crate) message: String,
}

impl Rejection {
    pub(crate) fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        connect_error(self.code, self.message)
    }
}

impl From<crate::SandboxError> for Rejection {
    fn from(error: crate::SandboxError) -> Self {
        // The details go to the sandbox's log, not to the client.
        tracing::error!(%error, "sandbox request failed");
        Rejection::new(Code::Internal, "the sandbox failed; see its log")
    }
}

/// The caller's identity from a valid bearer token, or `unauthenticated`.
pub(crate) fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<String, Rejection> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| Rejection::new(Code::Unauthenticated, "a bearer token is required"))?;
    match shared.signer.verify(token.trim(), now()) {
        Ok(claims) if claims.route.is_some() => Err(Rejection::new(
            Code::Unauthenticated,
            "this token opens one debug route and cannot call the API; use an access token",
        )),
        // A token is only as good as the key it was minted for: deleting the key revokes its
        // tokens at once (one indexed lookup per call).
        Ok(claims) => match shared.store.api_key(&claims.sub)? {
            Some(_) => Ok(claims.sub),
            None => Err(Rejection::new(
                Code::Unauthenticated,
                "the API key this token was minted for no longer exists; mint a token with a live key",
            )),
        },
        Err(Refused::Expired) => Err(Rejection::new(
            Code::Unauthenticated,
            "the token has expired; mint a new one",
        )),
        Err(Refused::Invalid(_)) => Err(Rejection::new(
            Code::Unauthenticated,
            "the token is not valid for this sandbox",
        )),
    }
}

async fn health() -> &'static str {
    "ok"
}

async fn well_known(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(json!({
        "issuer": crate::ISSUER,
        "token_endpoint": format!("{}/oauth2/token", shared.base_url),
        "grant_types_supported": ["client_credentials"],
    }))
    .into_response()
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

fn form_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = value.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// `POST /oauth2/token`: the client-credentials grant with HTTP Basic client authentication.
async fn token(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let form: Vec<(String, String)> = String::from_utf8_lossy(&body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((form_decode(k)?, form_decode(v)?)))
        .collect();
    if !form
        .iter()
        .any(|(k, v)| k == "grant_type" && v == "client_credentials")
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only client_credentials is supported",
        );
    }
    let basic = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| Base64::decode_vec(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let Some((client_id, secret)) = basic.as_deref().and_then(|b| b.split_once(':')) else {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "HTTP Basic client authentication is required",
        );
    };
    let secret = form_decode(secret).unwrap_or_default();
    match shared.store.check_secret(client_id, &secret) {
        Ok(true) => {}
        Ok(false) => {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "unknown client or wrong secret",
            );
        }
        Err(e) => return Rejection::from(e).into_response(),
    }
    match shared.signer.mint(client_id, now(), shared.token_ttl_secs) {
        Ok(token) => axum::Json(json!({"access_token": token, "token_type": "Bearer", "expires_in": shared.token_ttl_secs}))
            .into_response(),
        Err(e) => Rejection::from(e).into_response(),
    }
}

/// axum refuses a body over the limit (without reading it into memory) with a plain-text 413;
/// Connect clients expect error JSON.
async fn connect_body_limit(response: Response) -> Response {
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return connect_error(
            Code::InvalidArgument,
            format!(
                "the request body is larger than {} MiB",
                MAX_BODY_BYTES / (1024 * 1024)
            ),
        );
    }
    response
}

/// More retries than this is a mistake in a local sandbox, not a plan.
const MAX_RETRIES: u32 = 10;

/// The run `id` names, or `not_found` naming it.
pub(crate) fn run_slot(
    shared: &Shared,
    id: &flyte_idl::flyteidl2::common::RunIdentifier,
) -> Result<Arc<crate::runs::RunSlot>, Rejection> {
    shared.runs.get(id).ok_or_else(|| {
        Rejection::new(
            Code::NotFound,
            format!("no run {:?} in {}/{}", id.name, id.project, id.domain),
        )
    })
}

/// What a `CreateRunRequest` asks the sandbox to run: the run's identity, its command and
/// environment (the container's, then the run spec's), and its user retries
/// (`taskTemplate.metadata.retries.retries`, flyteidl2 `core.RetryStrategy`).
pub(crate) fn decode_run(
    request: &flyte_idl::flyteidl2::workflow::CreateRunRequest,
) -> Result<
    (
        flyte_idl::flyteidl2::common::RunIdentifier,
        crate::runs::LocalTask,
        u32,
    ),
    Rejection,
> {
    use flyte_idl::flyteidl2::{core, workflow};
    let invalid = |message: &str| Rejection::new(Code::InvalidArgument, message);
    let Some(workflow::create_run_request::Id::RunId(id)) = &request.id else {
        return Err(invalid(
            "give runId: the sandbox does not generate run names",
        ));
    };
    let id = (**id).clone();
    let template = match &request.task {
        Some(workflow::create_run_request::Task::TaskSpec(spec)) => spec.task_template.as_option(),
        _ => None,
    };
    let Some(core::task_template::Target::Container(container)) =
        template.and_then(|t| t.target.as_ref())
    else {
        return Err(invalid(
            "give taskSpec.taskTemplate.container with the command to run",
        ));
    };
    let run_envs = request
        .run_spec
        .as_option()
        .and_then(|spec| spec.envs.as_option());
    let env = container
        .env
        .iter()
        .chain(run_envs.iter().flat_map(|e| &e.values))
        .map(|kv| (kv.key.clone(), kv.value.clone()))
        .collect();
    let argv = container
        .command
        .iter()
        .chain(&container.args)
        .cloned()
        .collect();
    let metadata = template.and_then(|t| t.metadata.as_option());
    let retries = metadata
        .and_then(|m| m.retries.as_option())
        .map_or(0, |r| r.retries);
    if retries > MAX_RETRIES {
        return Err(Rejection::new(
            Code::InvalidArgument,
            format!("retries must be 0 to {MAX_RETRIES}"),
        ));
    }
    // flyteidl2 core.TaskMetadata: `discoverable` makes the task cacheable under its
    // `discoveryVersion` (required then, as Flyte requires it).
    let cache_version = match metadata {
        Some(m) if m.discoverable && m.discovery_version.is_empty() => {
            return Err(invalid(
                "a discoverable task needs taskTemplate.metadata.discoveryVersion",
            ));
        }
        Some(m) if m.discoverable => Some(m.discovery_version.clone()),
        _ => None,
    };
    Ok((
        id,
        crate::runs::LocalTask {
            argv,
            env,
            cache_version,
        },
        retries,
    ))
}

/// Where a run's task output goes: `logs/<project>/<domain>/<run>.log` under the state
/// directory. Names are validated before anything is written, and the nested layout keeps the
/// path injective (names hold no '/').
pub(crate) fn log_path(
    shared: &Shared,
    id: &flyte_idl::flyteidl2::common::RunIdentifier,
) -> std::path::PathBuf {
    flyte_home::SandboxDir::new(&shared.state_dir)
        .task_logs_dir()
        .join(&id.project)
        .join(&id.domain)
        .join(format!("{}.log", id.name))
}

/// Register and start a run, or say why not.
pub(crate) fn create_run(
    shared: &Shared,
    id: &flyte_idl::flyteidl2::common::RunIdentifier,
    task: &crate::runs::LocalTask,
    retries: u32,
) -> Result<Arc<crate::runs::RunSlot>, Rejection> {
    shared
        .runs
        .create(id, task, retries, log_path(shared, id))
        .map_err(|e| match e {
            crate::runs::CreateError::AlreadyExists => Rejection::new(
                Code::AlreadyExists,
                format!(
                    "run {:?} already exists in {}/{}",
                    id.name, id.project, id.domain
                ),
            ),
            crate::runs::CreateError::Invalid(message) => {
                Rejection::new(Code::InvalidArgument, message)
            }
            crate::runs::CreateError::Store(message) => {
                Rejection::from(crate::SandboxError::Store(message))
            }
        })
}

/// How often a watch looks for changes (the driver has no subscriber list yet).
pub(crate) const WATCH_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// `WatchActionDetails`: one envelope with the details each time they change, ending after the
/// first terminal phase with the end-of-stream envelope.
/// Largest request body accepted; bigger ones are refused before they are read into memory.
pub(crate) const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Read the whole request body before the handler runs, within `limit`. Without this a client
/// that announces a body and never sends it holds a connection and a task for ever; with it the
/// client gets `deadline_exceeded` and the connection is freed. Bodies are small (4 MiB at most)
/// so buffering them up front costs nothing the handlers would not spend anyway.
async fn read_body_within(
    State(limit): State<std::time::Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (parts, body) = request.into_parts();
    match tokio::time::timeout(limit, axum::body::to_bytes(body, MAX_BODY_BYTES)).await {
        Ok(Ok(bytes)) => {
            next.run(axum::extract::Request::from_parts(parts, bytes.into()))
                .await
        }
        // Over the limit or cut short: the limit layer's answer names the size.
        Ok(Err(_)) => StatusCode::PAYLOAD_TOO_LARGE.into_response(),
        Err(_) => connect_error(
            Code::DeadlineExceeded,
            format!(
                "the request body did not arrive within {} s; send the whole body with the request",
                limit.as_secs_f64()
            ),
        ),
    }
}

/// Serve HTTP/1.1 on `listener` for ever, plain or (when `tls` is given and the client's first
/// byte opens a TLS handshake) over TLS, on the same port: each connection on its own task,
/// closed when a request head (or the handshake) takes longer than `header_timeout` to arrive,
/// which also bounds idle keep-alive time. The listener's permit is held as long as the
/// connection, so its slot frees however it ends.
pub(crate) async fn serve_http(
    listener: flyte_listen::GuardedListener,
    router: axum::Router,
    header_timeout: std::time::Duration,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    /// The first byte of a TLS record carrying a handshake.
    const TLS_HANDSHAKE: u8 = 0x16;
    loop {
        let (stream, peer, permit) = listener.accept().await;
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let tls = tls.clone();
        tokio::spawn(async move {
            let mut first = [0u8; 1];
            let peeked = tokio::time::timeout(header_timeout, stream.peek(&mut first)).await;
            let served = match (peeked, tls) {
                (Ok(Ok(1)), Some(acceptor)) if first[0] == TLS_HANDSHAKE => {
                    match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => serve_connection(stream, service, header_timeout).await,
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "TLS handshake failed");
                            Ok(())
                        }
                        Err(_) => Ok(()),
                    }
                }
                (Ok(Ok(1)), _) => serve_connection(stream, service, header_timeout).await,
                // Closed, failed or silent before its first byte.
                _ => Ok(()),
            };
            if let Err(error) = served {
                tracing::debug!(%peer, %error, "API connection ended with an error");
            }
            drop(permit);
        });
    }
}

async fn serve_connection<I>(
    io: I,
    service: hyper_util::service::TowerToHyperService<axum::Router>,
    header_timeout: std::time::Duration,
) -> Result<(), hyper::Error>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
        .await
}

pub(crate) fn router(shared: Arc<Shared>, body_read_timeout: std::time::Duration) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(health))
        .route("/.well-known/oauth-authorization-server", get(well_known))
        .route("/oauth2/token", post(token))
        // Flyte's services, our own (API keys, route tokens), and `unimplemented` for any other
        // path, on the connectrpc runtime.
        .fallback_service(crate::connect::router(Arc::clone(&shared)).into_axum_service())
        .layer(axum::middleware::from_fn_with_state(
            body_read_timeout,
            read_body_within,
        ))
        .layer(axum::middleware::map_response(connect_body_limit))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(shared)
}
