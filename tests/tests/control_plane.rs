//! flyte-api and flyte-auth against a real HTTP server on 127.0.0.1: a small axum stand-in for
//! the parts of a Flyte control plane they talk to (until the embedded sandbox serves them).

// Helpers outside #[test] functions may unwrap too: this whole file is test code.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64ct::{Base64, Base64UrlUnpadded, Encoding};
use flyte_api::{Client, Code, Endpoint, Secret, envelope};
use flyte_auth::{AuthConfig, ClientCredentials, oauth};
use serde_json::{Value, json};

const CLIENT_ID: &str = "debug-client";
/// Contains characters that must be form-encoded inside HTTP Basic auth.
const CLIENT_SECRET: &str = "s3cret/+ &=%";

#[derive(Default)]
struct Plane {
    /// How the token endpoint misbehaves: "", "400", "401", "500-html", "no-token".
    token_mode: Mutex<String>,
    /// Answer `AuthMetadataService` with `unimplemented`, so clients fall back to the well-known doc.
    no_metadata_service: Mutex<bool>,
    valid_tokens: Mutex<HashSet<String>>,
    mints: AtomicUsize,
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

fn connect_error(code: Code, message: &str) -> Response {
    let status = StatusCode::from_u16(code.http_status()).unwrap();
    (
        status,
        axum::Json(json!({"code": code.as_str(), "message": message})),
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
            b'%' => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

async fn token(State(plane): State<Arc<Plane>>, headers: HeaderMap, body: String) -> Response {
    let mode = plane.token_mode.lock().unwrap().clone();
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
    let form: Vec<(String, String)> = body
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (form_decode(k), form_decode(v)))
        .collect();
    let has = |k: &str, v: &str| form.iter().any(|(fk, fv)| fk == k && fv == v);
    if mode == "401"
        || id != CLIENT_ID
        || form_decode(secret) != CLIENT_SECRET
        || !has("grant_type", "client_credentials")
    {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "invalid_client", "error_description": "bad credentials"})),
        )
            .into_response();
    }
    assert!(has("scope", "all offline"), "scopes sent: {form:?}");
    assert!(has("audience", "flyte-aud"), "audience sent: {form:?}");
    let n = plane.mints.fetch_add(1, Ordering::SeqCst);
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let token = jwt(exp, n);
    plane.valid_tokens.lock().unwrap().insert(token.clone());
    axum::Json(json!({"access_token": token, "token_type": "Bearer", "expires_in": 3600}))
        .into_response()
}

async fn oauth2_metadata(State(plane): State<Arc<Plane>>) -> Response {
    if *plane.no_metadata_service.lock().unwrap() {
        return connect_error(Code::Unimplemented, "no AuthMetadataService here");
    }
    let base = plane.base.lock().unwrap().clone();
    axum::Json(json!({"issuer": base, "tokenEndpoint": format!("{base}/oauth2/token"), "grantTypesSupported": ["client_credentials"]})).into_response()
}

async fn public_client_config(State(plane): State<Arc<Plane>>) -> Response {
    if *plane.no_metadata_service.lock().unwrap() {
        return connect_error(Code::Unimplemented, "no AuthMetadataService here");
    }
    axum::Json(json!({"clientId": "flytectl", "scopes": ["all", "offline"], "audience": "flyte-aud", "authorizationMetadataKey": "flyte-authorization"})).into_response()
}

async fn well_known(State(plane): State<Arc<Plane>>) -> Response {
    let base = plane.base.lock().unwrap().clone();
    axum::Json(json!({"issuer": base, "token_endpoint": format!("{base}/oauth2/token")}))
        .into_response()
}

/// A protected unary method: echoes `{"said": <request>}` for a valid token in
/// `flyte-authorization`.
async fn protected(State(plane): State<Arc<Plane>>, headers: HeaderMap, body: Bytes) -> Response {
    let presented = headers
        .get("flyte-authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !plane.valid_tokens.lock().unwrap().contains(presented) {
        return connect_error(Code::Unauthenticated, "token missing, expired or revoked");
    }
    let request: Value = serde_json::from_slice(&body).unwrap();
    axum::Json(json!({"said": request})).into_response()
}

async fn fail(body: Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap();
    match request["how"].as_str().unwrap() {
        "not_found" => connect_error(Code::NotFound, "run r-1 not found"),
        "already_exists" => connect_error(Code::AlreadyExists, "run r-1 already exists"),
        "proxy" => (StatusCode::BAD_GATEWAY, "<html>bad gateway</html>").into_response(),
        _ => (StatusCode::OK, "not json").into_response(),
    }
}

/// A server stream of `{"n": i}` messages; `end` chooses how it ends.
async fn stream(body: Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body[5..]).unwrap();
    let mut out = Vec::new();
    for n in 0..3 {
        out.extend(envelope::encode(0, json!({"n": n}).to_string().as_bytes()));
    }
    match request["end"].as_str().unwrap() {
        "ok" => out.extend(envelope::encode(envelope::END_STREAM, b"{}")),
        "error" => out.extend(envelope::encode(
            envelope::END_STREAM,
            json!({"error": {"code": "aborted", "message": "run aborted"}})
                .to_string()
                .as_bytes(),
        )),
        _ => {} // cut short
    }
    ([("content-type", "application/connect+json")], out).into_response()
}

struct Server {
    plane: Arc<Plane>,
    endpoint: Endpoint,
    runtime: tokio::runtime::Runtime,
}

fn server() -> Server {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
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
        .route("/test.Echo/Protected", post(protected))
        .route("/test.Echo/Fail", post(fail))
        .route("/test.Echo/Stream", post(stream))
        .with_state(Arc::clone(&plane));
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    *plane.base.lock().unwrap() = format!("http://{addr}");
    runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
    let endpoint = Endpoint::parse(&format!("http://{addr}"), false).unwrap();
    Server {
        plane,
        endpoint,
        runtime,
    }
}

fn credentials(
    server: &Server,
    config: AuthConfig,
    cache: std::path::PathBuf,
) -> ClientCredentials {
    ClientCredentials::new(
        reqwest_client(),
        config,
        CLIENT_ID.to_owned(),
        Secret::new(CLIENT_SECRET),
        server.endpoint.authority(),
        cache,
    )
}

fn reqwest_client() -> flyte_api::HttpClient {
    flyte_api::HttpClient::default()
}

#[test]
fn discovery_then_client_credentials_then_authenticated_calls_with_one_refresh() {
    let server = server();
    let home = flyte_testkit::TempHome::new();
    let cache = home.ssh_debug_dir().join("bearer.json");
    server.runtime.block_on(async {
        let client = Client::new(&server.endpoint).unwrap();
        let config = oauth::discover(&client).await.unwrap();
        assert_eq!(
            config.token_endpoint,
            format!("{}/oauth2/token", server.endpoint.base_url())
        );
        assert_eq!(
            (config.header_name.as_str(), config.audience.as_deref()),
            ("flyte-authorization", Some("flyte-aud"))
        );
        let tokens = Arc::new(credentials(&server, config.clone(), cache.clone()));
        let authed = client
            .clone()
            .with_tokens(tokens.clone())
            .with_auth_header(&config.header_name)
            .unwrap();
        let said: Value = authed
            .unary("test.Echo", "Protected", &json!({"hello": 1}))
            .await
            .unwrap();
        assert_eq!(said, json!({"said": {"hello": 1}}));
        assert_eq!(server.plane.mints.load(Ordering::SeqCst), 1);
        // Cached: a second call mints nothing.
        let _: Value = authed
            .unary("test.Echo", "Protected", &json!({}))
            .await
            .unwrap();
        assert_eq!(server.plane.mints.load(Ordering::SeqCst), 1);
        // The server forgets the token: one refresh, one retry, success.
        server.plane.valid_tokens.lock().unwrap().clear();
        let _: Value = authed
            .unary("test.Echo", "Protected", &json!({}))
            .await
            .unwrap();
        assert_eq!(server.plane.mints.load(Ordering::SeqCst), 2);
        // A fresh process reuses the cached token from bearer.json.
        let again = Arc::new(credentials(&server, config.clone(), cache.clone()));
        let authed = client
            .clone()
            .with_tokens(again)
            .with_auth_header(&config.header_name)
            .unwrap();
        let _: Value = authed
            .unary("test.Echo", "Protected", &json!({}))
            .await
            .unwrap();
        assert_eq!(server.plane.mints.load(Ordering::SeqCst), 2);
        // Without any token source the call is unauthenticated, and not retried.
        let err = client
            .unary::<_, Value>("test.Echo", "Protected", &json!({}))
            .await
            .unwrap_err();
        assert_eq!(err.code, Code::Unauthenticated);
    });
}

#[test]
fn discovery_falls_back_to_the_well_known_document() {
    let server = server();
    *server.plane.no_metadata_service.lock().unwrap() = true;
    server.runtime.block_on(async {
        let config = oauth::discover(&Client::new(&server.endpoint).unwrap())
            .await
            .unwrap();
        assert_eq!(
            config.token_endpoint,
            format!("{}/oauth2/token", server.endpoint.base_url())
        );
        assert_eq!(config.header_name, "authorization");
    });
}

#[test]
fn token_endpoint_failures_are_clear_and_secret_free() {
    let server = server();
    let home = flyte_testkit::TempHome::new();
    server.runtime.block_on(async {
        let config = oauth::discover(&Client::new(&server.endpoint).unwrap())
            .await
            .unwrap();
        for (mode, want) in [
            ("400", "HTTP 400: invalid_request"),
            ("401", "HTTP 401: invalid_client (bad credentials)"),
            ("500-html", "HTTP 500 with a body that is not OAuth2 JSON"),
            ("no-token", "no access_token"),
        ] {
            *server.plane.token_mode.lock().unwrap() = mode.to_owned();
            let source = credentials(&server, config.clone(), home.path().join("bearer.json"));
            let err = source.get(false).await.unwrap_err().to_string();
            assert!(err.contains(want), "{mode}: {err}");
            assert!(!err.contains(CLIENT_SECRET), "{err}");
        }
    });
}

#[test]
fn connect_errors_and_streams() {
    let server = server();
    server.runtime.block_on(async {
        let client = Client::new(&server.endpoint).unwrap();
        for (how, code) in [
            ("not_found", Code::NotFound),
            ("already_exists", Code::AlreadyExists),
            ("proxy", Code::Unavailable),
            ("garbage", Code::Internal),
        ] {
            let err = client
                .unary::<_, Value>("test.Echo", "Fail", &json!({"how": how}))
                .await
                .unwrap_err();
            assert_eq!(err.code, code, "{how}: {err}");
        }
        let collect = |end: &'static str| {
            let client = client.clone();
            async move {
                let mut stream = client
                    .server_stream::<_, Value>("test.Echo", "Stream", &json!({"end": end}))
                    .await
                    .unwrap();
                let mut got = Vec::new();
                while let Some(item) = stream.next().await {
                    got.push(item.map(|v| v["n"].as_i64().unwrap()).map_err(|e| e.code));
                }
                got
            }
        };
        assert_eq!(collect("ok").await, [Ok(0), Ok(1), Ok(2)]);
        assert_eq!(
            collect("error").await,
            [Ok(0), Ok(1), Ok(2), Err(Code::Aborted)]
        );
        assert_eq!(
            collect("cut").await,
            [Ok(0), Ok(1), Ok(2), Err(Code::Unavailable)]
        );
        // Nothing listens here: unavailable, with the address in the message.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let dead =
            Client::new(&Endpoint::parse(&format!("http://{closed}"), false).unwrap()).unwrap();
        let err = dead
            .unary::<_, Value>("test.Echo", "Fail", &json!({}))
            .await
            .unwrap_err();
        assert_eq!(err.code, Code::Unavailable, "{err}");
    });
}

/// Collects everything tracing prints, at every level, from every crate.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn no_secret_reaches_a_log_line_an_error_or_debug_output() {
    let server = server();
    let home = flyte_testkit::TempHome::new();
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let (token, debug) = tracing::subscriber::with_default(subscriber, || {
        server.runtime.block_on(async {
            let client = Client::new(&server.endpoint).unwrap();
            let config = oauth::discover(&client).await.unwrap();
            let source = Arc::new(credentials(
                &server,
                config.clone(),
                home.path().join("bearer.json"),
            ));
            let authed = client
                .with_tokens(source.clone())
                .with_auth_header(&config.header_name)
                .unwrap();
            let _: Value = authed
                .unary("test.Echo", "Protected", &json!({}))
                .await
                .unwrap();
            server.plane.valid_tokens.lock().unwrap().clear();
            let _: Value = authed
                .unary("test.Echo", "Protected", &json!({}))
                .await
                .unwrap();
            let token = source.get(false).await.unwrap();
            let debug = format!("{source:?} {token:?} {authed:?}");
            (token.value.expose().to_owned(), debug)
        })
    });
    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("minted a token"),
        "the capture saw nothing:\n{logs}"
    );
    for secret in [CLIENT_SECRET, token.as_str()] {
        assert!(!logs.contains(secret), "a secret reached the logs:\n{logs}");
        assert!(
            !debug.contains(secret),
            "a secret reached Debug output: {debug}"
        );
    }
}

#[test]
fn the_headers_file_is_0600_and_read_back_by_the_tunnel() {
    use std::os::unix::fs::MetadataExt;
    let home = flyte_testkit::TempHome::new();
    let path = flyte_auth::default_headers_file(&home.ssh_debug_dir(), "my host/alias");
    assert!(
        path.ends_with("my_host_alias.headers"),
        "{}",
        path.display()
    );
    flyte_auth::write_headers_file(&path, "Authorization", &Secret::new("tok.en")).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
    let headers = flyte_tunnel::read_headers_file(&path).unwrap();
    assert_eq!(
        (headers[0].name.as_str(), headers[0].value.as_str()),
        ("Authorization", "Bearer tok.en")
    );
    for bad in ["a\nX-Injected: 1", "a\rb"] {
        let err =
            flyte_auth::write_headers_file(&path, "Authorization", &Secret::new(bad)).unwrap_err();
        assert!(err.to_string().contains("line break"), "{err}");
    }
    assert!(flyte_auth::write_headers_file(&path, "Bad Header", &Secret::new("t")).is_err());
    // The file still holds the last good token.
    assert_eq!(
        flyte_tunnel::read_headers_file(&path).unwrap()[0].value,
        "Bearer tok.en"
    );
}
