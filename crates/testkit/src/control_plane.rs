//! A stand-in for the parts of a Flyte control plane that flyte-api and flyte-auth talk to, on
//! 127.0.0.1 (real HTTP, real axum): the OAuth2 token endpoint (client credentials, HTTP Basic),
//! `AuthMetadataService`, the well-known OAuth2 document, the API-key service our sandbox serves,
//! and a few `test.Echo` methods for protocol tests (a protected unary call, failures, streams).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64ct::{Base64, Base64UrlUnpadded, Encoding};
use serde_json::{Value, json};

/// The client id the token endpoint always accepts.
pub const CLIENT_ID: &str = "debug-client";
/// Its secret; contains characters that must be form-encoded inside HTTP Basic auth.
pub const CLIENT_SECRET: &str = "s3cret/+ &=%";

#[derive(Default)]
struct Plane {
    /// How the token endpoint misbehaves: "", "400", "401", "500-html", "no-token".
    token_mode: Mutex<String>,
    /// Answer `AuthMetadataService` with `unimplemented`, so clients fall back to the well-known
    /// document.
    no_metadata_service: Mutex<bool>,
    valid_tokens: Mutex<HashSet<String>>,
    /// API keys created through the service: client id -> (name, secret).
    api_keys: Mutex<HashMap<String, (String, String)>>,
    mints: AtomicUsize,
    keys_created: AtomicUsize,
    base: Mutex<String>,
}

fn jwt(exp: u64, nonce: usize) -> String {
    let part = |v: Value| Base64UrlUnpadded::encode_string(v.to_string().as_bytes());
    format!(
        "{}.{}.sig",
        part(json!({"alg": "none"})),
        part(json!({"exp": exp, "n": nonce}))
    )
}

/// The Connect error response for `code` (its wire name and HTTP status).
fn connect_error(code: &str, status: u16, message: &str) -> Response {
    (
        StatusCode::from_u16(status).expect("a valid status"),
        axum::Json(json!({"code": code, "message": message})),
    )
        .into_response()
}

fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?'));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn token(State(plane): State<Arc<Plane>>, headers: HeaderMap, body: String) -> Response {
    let mode = plane.token_mode.lock().expect("lock").clone();
    match mode.as_str() {
        "400" => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": "invalid_request"})),
            )
                .into_response();
        }
        "500-html" => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "<html><body>oops</body></html>",
            )
                .into_response();
        }
        "no-token" => return axum::Json(json!({"token_type": "Bearer"})).into_response(),
        _ => {}
    }
    let basic = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .unwrap_or("");
    let decoded =
        String::from_utf8(Base64::decode_vec(basic).unwrap_or_default()).unwrap_or_default();
    let (id, secret) = decoded.split_once(':').unwrap_or(("", ""));
    let secret = form_decode(secret);
    let form: Vec<(String, String)> = body
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (form_decode(k), form_decode(v)))
        .collect();
    let has = |k: &str, v: &str| form.iter().any(|(fk, fv)| fk == k && fv == v);
    let known = (id == CLIENT_ID && secret == CLIENT_SECRET)
        || plane
            .api_keys
            .lock()
            .expect("lock")
            .get(id)
            .is_some_and(|(_, s)| *s == secret);
    if mode == "401" || !known || !has("grant_type", "client_credentials") {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "invalid_client", "error_description": "bad credentials"})),
        )
            .into_response();
    }
    if !(has("scope", "all offline") && has("audience", "flyte-aud")) {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_scope"})),
        )
            .into_response();
    }
    let n = plane.mints.fetch_add(1, Ordering::SeqCst);
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 3600;
    let token = jwt(exp, n);
    plane
        .valid_tokens
        .lock()
        .expect("lock")
        .insert(token.clone());
    axum::Json(json!({"access_token": token, "token_type": "Bearer", "expires_in": 3600}))
        .into_response()
}

async fn oauth2_metadata(State(plane): State<Arc<Plane>>) -> Response {
    if *plane.no_metadata_service.lock().expect("lock") {
        return connect_error("unimplemented", 404, "no AuthMetadataService here");
    }
    let base = plane.base.lock().expect("lock").clone();
    axum::Json(json!({"issuer": base, "tokenEndpoint": format!("{base}/oauth2/token"), "grantTypesSupported": ["client_credentials"]}))
        .into_response()
}

async fn public_client_config(State(plane): State<Arc<Plane>>) -> Response {
    if *plane.no_metadata_service.lock().expect("lock") {
        return connect_error("unimplemented", 404, "no AuthMetadataService here");
    }
    axum::Json(json!({"clientId": "flytectl", "scopes": ["all", "offline"], "audience": "flyte-aud", "authorizationMetadataKey": "flyte-authorization"}))
        .into_response()
}

async fn well_known(State(plane): State<Arc<Plane>>) -> Response {
    let base = plane.base.lock().expect("lock").clone();
    axum::Json(json!({"issuer": base, "token_endpoint": format!("{base}/oauth2/token")}))
        .into_response()
}

fn json_body(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or(Value::Null)
}

async fn create_api_key(State(plane): State<Arc<Plane>>, body: Bytes) -> Response {
    let name = json_body(&body)["name"].as_str().unwrap_or("").to_owned();
    if name.is_empty() {
        return connect_error("invalid_argument", 400, "name is required");
    }
    let n = plane.keys_created.fetch_add(1, Ordering::SeqCst);
    let (client_id, secret) = (format!("key-{n}"), format!("key-secret-{n}"));
    plane
        .api_keys
        .lock()
        .expect("lock")
        .insert(client_id.clone(), (name, secret.clone()));
    axum::Json(json!({"clientId": client_id, "clientSecret": secret})).into_response()
}

async fn get_api_key(State(plane): State<Arc<Plane>>, body: Bytes) -> Response {
    let id = json_body(&body)["clientId"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    match plane.api_keys.lock().expect("lock").get(&id) {
        Some((name, _)) => axum::Json(json!({"clientId": id, "name": name})).into_response(),
        None => connect_error("not_found", 404, "no such API key"),
    }
}

/// A protected unary method: echoes `{"said": <request>}` for a valid token in
/// `flyte-authorization`.
async fn protected(State(plane): State<Arc<Plane>>, headers: HeaderMap, body: Bytes) -> Response {
    let presented = headers
        .get("flyte-authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !plane.valid_tokens.lock().expect("lock").contains(presented) {
        return connect_error("unauthenticated", 401, "token missing, expired or revoked");
    }
    axum::Json(json!({"said": json_body(&body)})).into_response()
}

async fn fail(body: Bytes) -> Response {
    match json_body(&body)["how"].as_str().unwrap_or("") {
        "not_found" => connect_error("not_found", 404, "run r-1 not found"),
        "already_exists" => connect_error("already_exists", 409, "run r-1 already exists"),
        "proxy" => (StatusCode::BAD_GATEWAY, "<html>bad gateway</html>").into_response(),
        _ => (StatusCode::OK, "not json").into_response(),
    }
}

/// Frame one Connect envelope.
fn envelope(flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![flags];
    out.extend_from_slice(&u32::try_from(payload.len()).expect("small").to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A server stream of `{"n": i}` messages; the request's `end` says how it ends: `ok`, `error`
/// (an `aborted` error in the end-of-stream envelope) or anything else (cut short).
async fn stream(body: Bytes) -> Response {
    let request = json_body(body.get(5..).unwrap_or_default());
    let mut out = Vec::new();
    for n in 0..3 {
        out.extend(envelope(0, json!({"n": n}).to_string().as_bytes()));
    }
    match request["end"].as_str().unwrap_or("") {
        "ok" => out.extend(envelope(2, b"{}")),
        "error" => out.extend(envelope(
            2,
            json!({"error": {"code": "aborted", "message": "run aborted"}})
                .to_string()
                .as_bytes(),
        )),
        _ => {}
    }
    ([("content-type", "application/connect+json")], out).into_response()
}

/// A running control plane. Stopped when dropped (its runtime goes with it).
pub struct ControlPlane {
    plane: Arc<Plane>,
    base_url: String,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl ControlPlane {
    pub fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let plane = Arc::new(Plane::default());
        let app = axum::Router::new()
            .route("/oauth2/token", post(token))
            .route(
                "/flyteidl2.auth.AuthMetadataService/GetOAuth2Metadata",
                post(oauth2_metadata),
            )
            .route(
                "/flyteidl2.auth.AuthMetadataService/GetPublicClientConfig",
                post(public_client_config),
            )
            .route("/.well-known/oauth-authorization-server", get(well_known))
            .route(
                "/flyterun.sandbox.v1.ApiKeyService/CreateApiKey",
                post(create_api_key),
            )
            .route(
                "/flyterun.sandbox.v1.ApiKeyService/GetApiKey",
                post(get_api_key),
            )
            .route("/test.Echo/Protected", post(protected))
            .route("/test.Echo/Fail", post(fail))
            .route("/test.Echo/Stream", post(stream))
            .with_state(Arc::clone(&plane));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind 127.0.0.1");
        let base_url = format!("http://{}", listener.local_addr().expect("a local address"));
        plane.base.lock().expect("lock").clone_from(&base_url);
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            plane,
            base_url,
            runtime,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Run a future on the plane's runtime (tests drive their clients with it).
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// Tokens minted so far.
    pub fn mints(&self) -> usize {
        self.plane.mints.load(Ordering::SeqCst)
    }

    /// API keys created so far.
    pub fn api_keys_created(&self) -> usize {
        self.plane.keys_created.load(Ordering::SeqCst)
    }

    /// Forget an API key, as if an administrator deleted it.
    pub fn delete_api_key(&self, client_id: &str) {
        self.plane.api_keys.lock().expect("lock").remove(client_id);
    }

    /// Make the token endpoint fail: "400", "401", "500-html", "no-token" ("" = work).
    pub fn set_token_mode(&self, mode: &str) {
        mode.clone_into(&mut self.plane.token_mode.lock().expect("lock"));
    }

    /// Serve `AuthMetadataService` (default) or answer it with `unimplemented`.
    pub fn set_metadata_service(&self, enabled: bool) {
        *self.plane.no_metadata_service.lock().expect("lock") = !enabled;
    }

    /// Forget every token minted so far (as if they all expired).
    pub fn revoke_tokens(&self) {
        self.plane.valid_tokens.lock().expect("lock").clear();
    }
}
