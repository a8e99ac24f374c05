//! A stand-in for the auth parts of a Flyte deployment that is not our sandbox, on 127.0.0.1:
//! an OAuth2 token endpoint (client credentials, HTTP Basic; it insists on the scopes and
//! audience the public client config names), `AuthMetadataService` that names another token
//! header (`flyte-authorization`), the well-known OAuth2 document, and the API-key service our
//! sandbox serves (`ListApiKeys` is the call that needs that token). The Connect services are the generated flyteidl2 (and flyterun) servers on
//! connectrpc; the token endpoint and the well-known document are plain axum routes.

// The generated traits return `impl Future`; `async fn` refines that, as connectrpc documents.
#![allow(refining_impl_trait)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64ct::{Base64, Base64UrlUnpadded, Encoding};
use connectrpc::{ConnectError, RequestContext, ServiceRequest, ServiceResult};
use flyte_idl::flyteidl2::auth;
use flyte_idl::flyterun::sandbox::v1 as own;
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
    /// Tokens the plane minted and has not forgotten.
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

/// The generated Connect services over the plane's state.
#[derive(Clone)]
struct Services(Arc<Plane>);

impl Services {
    fn metadata_served(&self) -> Result<(), ConnectError> {
        if *self.0.no_metadata_service.lock().expect("lock") {
            return Err(ConnectError::unimplemented("no AuthMetadataService here"));
        }
        Ok(())
    }

    /// A valid token in `flyte-authorization`, the header this plane's client config names.
    fn caller(&self, ctx: &RequestContext) -> Result<(), ConnectError> {
        let presented = ctx
            .headers()
            .get("flyte-authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if self
            .0
            .valid_tokens
            .lock()
            .expect("lock")
            .contains(presented)
        {
            Ok(())
        } else {
            Err(ConnectError::unauthenticated(
                "token missing, expired or revoked",
            ))
        }
    }
}

impl auth::AuthMetadataService for Services {
    async fn get_o_auth2_metadata(
        &self,
        _ctx: RequestContext,
        _request: ServiceRequest<'_, auth::GetOAuth2MetadataRequest>,
    ) -> ServiceResult<auth::GetOAuth2MetadataResponse> {
        self.metadata_served()?;
        let base = self.0.base.lock().expect("lock").clone();
        connectrpc::Response::ok(auth::GetOAuth2MetadataResponse {
            issuer: base.clone(),
            token_endpoint: format!("{base}/oauth2/token"),
            grant_types_supported: vec!["client_credentials".to_owned()],
            ..Default::default()
        })
    }

    async fn get_public_client_config(
        &self,
        _ctx: RequestContext,
        _request: ServiceRequest<'_, auth::GetPublicClientConfigRequest>,
    ) -> ServiceResult<auth::GetPublicClientConfigResponse> {
        self.metadata_served()?;
        connectrpc::Response::ok(auth::GetPublicClientConfigResponse {
            client_id: "flytectl".to_owned(),
            scopes: vec!["all".to_owned(), "offline".to_owned()],
            audience: "flyte-aud".to_owned(),
            authorization_metadata_key: "flyte-authorization".to_owned(),
            ..Default::default()
        })
    }
}

impl own::ApiKeyService for Services {
    async fn create_api_key(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, own::CreateApiKeyRequest>,
    ) -> ServiceResult<own::CreateApiKeyResponse> {
        let name = request.to_owned_message().name;
        if name.is_empty() {
            return Err(ConnectError::invalid_argument("name is required"));
        }
        let n = self.0.keys_created.fetch_add(1, Ordering::SeqCst);
        let (client_id, client_secret) = (format!("key-{n}"), format!("key-secret-{n}"));
        self.0
            .api_keys
            .lock()
            .expect("lock")
            .insert(client_id.clone(), (name, client_secret.clone()));
        connectrpc::Response::ok(own::CreateApiKeyResponse {
            client_id,
            client_secret,
            ..Default::default()
        })
    }

    async fn get_api_key(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, own::GetApiKeyRequest>,
    ) -> ServiceResult<own::GetApiKeyResponse> {
        let client_id = request.to_owned_message().client_id;
        let name = self
            .0
            .api_keys
            .lock()
            .expect("lock")
            .get(&client_id)
            .map(|(name, _)| name.clone());
        match name {
            Some(name) => connectrpc::Response::ok(own::GetApiKeyResponse {
                key: buffa::MessageField::some(own::ApiKey {
                    client_id,
                    name,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            None => Err(ConnectError::not_found("no such API key")),
        }
    }

    async fn delete_api_key(
        &self,
        _ctx: RequestContext,
        _request: ServiceRequest<'_, own::DeleteApiKeyRequest>,
    ) -> ServiceResult<own::DeleteApiKeyResponse> {
        Err(ConnectError::unimplemented(
            "this stand-in does not delete keys",
        ))
    }

    /// The one call that needs a token: the keys, by client id.
    async fn list_api_keys(
        &self,
        ctx: RequestContext,
        _request: ServiceRequest<'_, own::ListApiKeysRequest>,
    ) -> ServiceResult<own::ListApiKeysResponse> {
        self.caller(&ctx)?;
        let mut keys: Vec<own::ApiKey> = self
            .0
            .api_keys
            .lock()
            .expect("lock")
            .iter()
            .map(|(client_id, (name, _))| own::ApiKey {
                client_id: client_id.clone(),
                name: name.clone(),
                ..Default::default()
            })
            .collect();
        keys.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        connectrpc::Response::ok(own::ListApiKeysResponse {
            keys,
            ..Default::default()
        })
    }
}

async fn well_known(State(plane): State<Arc<Plane>>) -> Response {
    let base = plane.base.lock().expect("lock").clone();
    axum::Json(json!({"issuer": base, "token_endpoint": format!("{base}/oauth2/token")}))
        .into_response()
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
        let services = Arc::new(Services(Arc::clone(&plane)));
        let connect = connectrpc::Router::new();
        let connect =
            <Services as auth::AuthMetadataServiceExt>::register(Arc::clone(&services), connect);
        let connect = <Services as own::ApiKeyServiceExt>::register(services, connect);
        let app = axum::Router::new()
            .route("/oauth2/token", post(token))
            .route("/.well-known/oauth-authorization-server", get(well_known))
            .with_state(Arc::clone(&plane))
            .fallback_service(connect.into_axum_service());
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
