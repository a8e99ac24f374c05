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

/// Where devices ask for a code (RFC 8628 §3.1).
pub(crate) const DEVICE_AUTHORIZATION_PATH: &str = "/oauth2/device/authorize";
/// The page a device's user is sent to.
const VERIFICATION_PATH: &str = "/oauth2/device";
/// Where the sandbox's owner approves or denies a user code (`flyte-run sandbox approve`).
pub const DEVICE_DECISION_PATH: &str = "/oauth2/device/decide";
const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// The grants the token endpoint takes.
pub(crate) const GRANT_TYPES: &[&str] = &[
    "client_credentials",
    DEVICE_CODE_GRANT,
    "authorization_code",
    "refresh_token",
];
/// Where a browser asks for an authorization code (PKCE).
pub(crate) const AUTHORIZATION_PATH: &str = "/oauth2/authorize";
/// Where the browser asks again until the owner has decided.
const CONTINUE_PATH: &str = "/oauth2/authorize/continue";

async fn well_known(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(json!({
        "issuer": crate::ISSUER,
        "token_endpoint": format!("{}/oauth2/token", shared.base_url),
        "device_authorization_endpoint": format!("{}{DEVICE_AUTHORIZATION_PATH}", shared.base_url),
        "authorization_endpoint": format!("{}{AUTHORIZATION_PATH}", shared.base_url),
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "grant_types_supported": GRANT_TYPES,
    }))
    .into_response()
}

fn random_token(bytes: usize) -> Result<String, Rejection> {
    let mut random = vec![0u8; bytes];
    getrandom::fill(&mut random)
        .map_err(|e| Rejection::from(crate::SandboxError::Io(format!("randomness: {e}"))))?;
    Ok(<base64ct::Base64UrlUnpadded as base64ct::Encoding>::encode_string(&random))
}

fn grants(shared: &Shared) -> std::sync::MutexGuard<'_, crate::device::Grants> {
    shared
        .grants
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A form body's fields.
fn form_fields(body: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((form_decode(k)?, form_decode(v)?)))
        .collect()
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Why an OAuth2 request was refused: an OAuth2 error, or the sandbox failing.
enum OAuthRefusal {
    OAuth(StatusCode, &'static str, &'static str),
    Sandbox(Rejection),
}

impl IntoResponse for OAuthRefusal {
    fn into_response(self) -> Response {
        match self {
            OAuthRefusal::OAuth(status, error, description) => {
                oauth_error(status, error, description)
            }
            OAuthRefusal::Sandbox(rejection) => rejection.into_response(),
        }
    }
}

/// A public client's request must name Flyte's public client id, when it names one.
fn public_client(form: &[(String, String)]) -> Result<(), OAuthRefusal> {
    match field(form, "client_id") {
        None => Ok(()),
        Some(id) if id == crate::PUBLIC_CLIENT_ID => Ok(()),
        Some(_) => Err(OAuthRefusal::OAuth(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "unknown public client; use the client id GetPublicClientConfig names",
        )),
    }
}

/// `POST /oauth2/device/authorize`: a device code and the user code its owner approves.
async fn device_authorize(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let form = form_fields(&body);
    if let Err(refused) = public_client(&form) {
        return refused.into_response();
    }
    let (device_code, mut random) = match random_token(32) {
        Ok(code) => (code, [0u8; 8]),
        Err(e) => return e.into_response(),
    };
    if let Err(e) = getrandom::fill(&mut random) {
        return Rejection::from(crate::SandboxError::Io(format!("randomness: {e}")))
            .into_response();
    }
    let user_code = crate::device::user_code(random);
    if grants(&shared)
        .start(device_code.clone(), user_code.clone(), now())
        .is_err()
    {
        return oauth_error(
            StatusCode::TOO_MANY_REQUESTS,
            "slow_down",
            "too many device logins are waiting for approval; approve or let them expire",
        );
    }
    let verification_uri = format!("{}{VERIFICATION_PATH}", shared.base_url);
    axum::Json(json!({
        "device_code": device_code,
        "user_code": user_code,
        "verification_uri": verification_uri,
        "verification_uri_complete": format!("{verification_uri}?user_code={user_code}"),
        "expires_in": crate::device::DEVICE_CODE_TTL_SECS,
        "interval": crate::device::POLL_INTERVAL_SECS,
    }))
    .into_response()
}

/// `GET /oauth2/device`: what the device's user reads. The sandbox has no accounts to log in
/// to; its owner approves the code on the machine that runs it.
async fn verification_page(uri: axum::http::Uri) -> Response {
    let query = form_fields(uri.query().unwrap_or_default().as_bytes());
    let code = field(&query, "user_code")
        .map(crate::device::normalize_user_code)
        .filter(|c| c.chars().all(|ch| ch.is_ascii_uppercase() || ch == '-'))
        .unwrap_or_else(|| "CODE".to_owned());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        format!(
            "flyte-run sandbox: a device asks to log in.\n\nOn the machine that runs the sandbox, \
             approve it with\n\n    flyte-run sandbox approve {code}\n\nor refuse it with \
             `flyte-run sandbox approve --deny {code}`.\n"
        ),
    )
        .into_response()
}

/// `POST /oauth2/device/decide`: the owner, authenticated with an API key of this sandbox
/// (HTTP Basic), approves (`decision=approve`) or denies (`decision=deny`) `user_code`.
async fn device_decide(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let client_id = match basic_client(&shared, &headers) {
        Ok(client_id) => client_id,
        Err(refused) => return refused.into_response(),
    };
    let form = form_fields(&body);
    let approve = match field(&form, "decision") {
        Some("approve") => true,
        Some("deny") => false,
        _ => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "give decision=approve or decision=deny",
            );
        }
    };
    let Some(user_code) = field(&form, "user_code") else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "give user_code");
    };
    let approver = approve.then_some(client_id.as_str());
    match grants(&shared).decide(user_code, approver, now()) {
        crate::device::Decided::Done => {
            axum::Json(json!({"decided": if approve { "approved" } else { "denied" }}))
                .into_response()
        }
        crate::device::Decided::NoSuchCode => oauth_error(
            StatusCode::NOT_FOUND,
            "invalid_grant",
            "no device login waits with that code (mistyped, expired after 10 minutes, or already decided)",
        ),
    }
}

fn page(status: StatusCode, text: &str, refresh: Option<&str>) -> Response {
    let refresh = refresh
        .map(|url| format!("<meta http-equiv=\"refresh\" content=\"2;url={url}\">"))
        .unwrap_or_default();
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\">{refresh}<title>flyte-run sandbox login</title></head><body><pre>{}</pre></body></html>",
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    );
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

fn approval_text(user_code: &str, continue_url: &str) -> String {
    format!(
        "flyte-run sandbox: a browser asks to log in.\n\nOn the machine that runs the sandbox, approve it with\n\n    flyte-run sandbox approve {user_code}\n\n(or refuse it with `flyte-run sandbox approve --deny {user_code}`); this page goes on by itself.\nContinue: {continue_url}\n"
    )
}

/// `GET /oauth2/authorize`: a browser's authorization request (response type `code`, PKCE S256,
/// a loopback redirect URI). The page names the user code the owner approves.
async fn authorize(State(shared): State<Arc<Shared>>, uri: axum::http::Uri) -> Response {
    let query = form_fields(uri.query().unwrap_or_default().as_bytes());
    let bad = |text: &str| page(StatusCode::BAD_REQUEST, text, None);
    if public_client(&query).is_err() {
        return bad("unknown client_id: use the one GetPublicClientConfig names");
    }
    if field(&query, "response_type") != Some("code") {
        return bad("response_type must be code");
    }
    // Nothing goes back to a redirect URI before it is known to be this machine's.
    let Some(redirect_uri) =
        field(&query, "redirect_uri").filter(|r| crate::device::is_loopback_redirect(r))
    else {
        return bad(
            "redirect_uri must be http://localhost:PORT/..., http://127.0.0.1:PORT/... or http://[::1]:PORT/...",
        );
    };
    let (Some(challenge), Some("S256")) = (
        field(&query, "code_challenge"),
        field(&query, "code_challenge_method"),
    ) else {
        return bad("PKCE is required: give code_challenge with code_challenge_method=S256");
    };
    let mut random = [0u8; 8];
    let request_id = match random_token(24) {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = getrandom::fill(&mut random) {
        return Rejection::from(crate::SandboxError::Io(format!("randomness: {e}")))
            .into_response();
    }
    let user_code = crate::device::user_code(random);
    let request = (
        redirect_uri.to_owned(),
        field(&query, "state").map(str::to_owned),
        challenge.to_owned(),
    );
    if grants(&shared)
        .start_authorization(request_id.clone(), user_code.clone(), request, now())
        .is_err()
    {
        return page(
            StatusCode::TOO_MANY_REQUESTS,
            "too many logins are waiting for approval; approve them or let them expire",
            None,
        );
    }
    let continue_url = format!("{}{CONTINUE_PATH}?request={request_id}", shared.base_url);
    page(
        StatusCode::OK,
        &approval_text(&user_code, &continue_url),
        Some(&continue_url),
    )
}

/// `GET /oauth2/authorize/continue?request=ID`: back to the client's redirect URI once the owner
/// decided, else the same page again.
async fn authorize_continue(State(shared): State<Arc<Shared>>, uri: axum::http::Uri) -> Response {
    let query = form_fields(uri.query().unwrap_or_default().as_bytes());
    let request_id = field(&query, "request").unwrap_or_default();
    let code = match random_token(32) {
        Ok(code) => code,
        Err(e) => return e.into_response(),
    };
    let next = grants(&shared).continue_authorization(request_id, code, now());
    match next {
        crate::device::Continue::Redirect { location } => (
            StatusCode::FOUND,
            [(axum::http::header::LOCATION, location)],
        )
            .into_response(),
        crate::device::Continue::Pending { user_code } => {
            let continue_url = format!("{}{CONTINUE_PATH}?request={request_id}", shared.base_url);
            page(
                StatusCode::OK,
                &approval_text(&user_code, &continue_url),
                Some(&continue_url),
            )
        }
        crate::device::Continue::Unknown => page(
            StatusCode::BAD_REQUEST,
            "no login waits here (it expired after 10 minutes, or it is finished); start again",
            None,
        ),
    }
}

/// The client an HTTP Basic header authenticates (a live API key of this sandbox).
fn basic_client(shared: &Shared, headers: &HeaderMap) -> Result<String, OAuthRefusal> {
    let basic = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| Base64::decode_vec(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let Some((client_id, secret)) = basic.as_deref().and_then(|b| b.split_once(':')) else {
        return Err(OAuthRefusal::OAuth(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "HTTP Basic client authentication is required",
        ));
    };
    let secret = form_decode(secret).unwrap_or_default();
    match shared.store.check_secret(client_id, &secret) {
        Ok(true) => Ok(client_id.to_owned()),
        Ok(false) => Err(OAuthRefusal::OAuth(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "unknown client or wrong secret",
        )),
        Err(e) => Err(OAuthRefusal::Sandbox(Rejection::from(e))),
    }
}

/// Tokens for `client_id`: an access token, and for a person's login (device flow, refresh) a
/// refresh token too.
fn tokens_for(shared: &Shared, client_id: &str, with_refresh: bool) -> Response {
    let access = match shared.signer.mint(client_id, now(), shared.token_ttl_secs) {
        Ok(token) => token,
        Err(e) => return Rejection::from(e).into_response(),
    };
    let mut answer = json!({"access_token": access, "token_type": "Bearer", "expires_in": shared.token_ttl_secs});
    if with_refresh {
        let refresh = match random_token(32) {
            Ok(token) => token,
            Err(e) => return e.into_response(),
        };
        grants(shared).issue_refresh(refresh.clone(), client_id, now());
        answer["refresh_token"] = json!(refresh);
    }
    axum::Json(answer).into_response()
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

/// `POST /oauth2/token`: the client-credentials grant with HTTP Basic client authentication,
/// the device-code grant of a device the owner approved, and refresh tokens (used once each).
async fn token(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let form = form_fields(&body);
    match field(&form, "grant_type") {
        Some("client_credentials") => match basic_client(&shared, &headers) {
            Ok(client_id) => tokens_for(&shared, &client_id, false),
            Err(refused) => refused.into_response(),
        },
        Some(DEVICE_CODE_GRANT) => {
            if let Err(refused) = public_client(&form) {
                return refused.into_response();
            }
            let Some(device_code) = field(&form, "device_code") else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "give device_code",
                );
            };
            let poll = grants(&shared).poll(device_code, now());
            match poll {
                crate::device::Poll::Approved { client_id } => {
                    tokens_for(&shared, &client_id, true)
                }
                other => oauth_error(
                    StatusCode::BAD_REQUEST,
                    other.error_code(),
                    match other {
                        crate::device::Poll::Pending => "waiting for the owner's approval",
                        crate::device::Poll::SlowDown => "polling faster than the interval",
                        crate::device::Poll::Denied => "the owner denied this login",
                        crate::device::Poll::Expired => "the code expired; start a new login",
                        _ => "unknown or used device code; start a new login",
                    },
                ),
            }
        }
        Some("authorization_code") => {
            if let Err(refused) = public_client(&form) {
                return refused.into_response();
            }
            let (Some(code), Some(verifier)) =
                (field(&form, "code"), field(&form, "code_verifier"))
            else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "give code and code_verifier (PKCE)",
                );
            };
            let redeemed =
                grants(&shared).redeem_code(code, verifier, field(&form, "redirect_uri"), now());
            match redeemed {
                Some(client_id) => tokens_for(&shared, &client_id, true),
                None => oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "the code is unknown, used or expired, or the code_verifier does not match its challenge",
                ),
            }
        }
        Some("refresh_token") => {
            if let Err(refused) = public_client(&form) {
                return refused.into_response();
            }
            let Some(refresh) = field(&form, "refresh_token") else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "give refresh_token",
                );
            };
            let redeemed = grants(&shared).redeem_refresh(refresh, now());
            // The key the login was approved with must still exist: deleting it revokes.
            match redeemed.map(|client_id| (shared.store.api_key(&client_id), client_id)) {
                Some((Ok(Some(_)), client_id)) => tokens_for(&shared, &client_id, true),
                Some((Err(e), _)) => Rejection::from(e).into_response(),
                _ => oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "the refresh token is unknown, used or expired; log in again",
                ),
            }
        }
        _ => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "give grant_type client_credentials, authorization_code, refresh_token or the device_code grant",
        ),
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
        .route(DEVICE_AUTHORIZATION_PATH, post(device_authorize))
        .route(VERIFICATION_PATH, get(verification_page))
        .route(DEVICE_DECISION_PATH, post(device_decide))
        .route(AUTHORIZATION_PATH, get(authorize))
        .route(CONTINUE_PATH, get(authorize_continue))
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
