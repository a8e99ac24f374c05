//! flyte-api and flyte-auth against a real HTTP server on 127.0.0.1 (flyte-testkit's axum
//! stand-in for a control plane, until the embedded sandbox serves these).

// Helpers outside #[test] functions may unwrap too: this whole file is test code.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use flyte_api::{Client, Code, Endpoint, HttpClient, Secret};
use flyte_auth::{ClientCredentials, ConnectApiKeyService, oauth};
use flyte_testkit::TempHome;
use flyte_testkit::control_plane::{CLIENT_SECRET, ControlPlane};
use serde_json::{Value, json};

mod plane;

use plane::{credentials, endpoint};

#[test]
fn discovery_then_client_credentials_then_authenticated_calls_with_one_refresh() {
    let plane = ControlPlane::start();
    let home = TempHome::new();
    let cache = home.ssh_debug_dir().join("bearer.json");
    plane.block_on(async {
        let client = Client::new(&endpoint(&plane)).unwrap();
        let config = oauth::discover(&client).await.unwrap();
        assert_eq!(
            config.token_endpoint,
            format!("{}/oauth2/token", plane.base_url())
        );
        assert_eq!(
            (config.header_name.as_str(), config.audience.as_deref()),
            ("flyte-authorization", Some("flyte-aud"))
        );
        let tokens = Arc::new(credentials(&plane, config.clone(), cache.clone()));
        let authed = client
            .clone()
            .with_tokens(tokens)
            .with_auth_header(&config.header_name)
            .unwrap();
        let said: Value = authed
            .unary("test.Echo", "Protected", &json!({"hello": 1}))
            .await
            .unwrap();
        assert_eq!(said, json!({"said": {"hello": 1}}));
        assert_eq!(plane.mints(), 1);
        // Cached: a second call mints nothing.
        let _: Value = authed
            .unary("test.Echo", "Protected", &json!({}))
            .await
            .unwrap();
        assert_eq!(plane.mints(), 1);
        // The server forgets the token: one refresh, one retry, success.
        plane.revoke_tokens();
        let _: Value = authed
            .unary("test.Echo", "Protected", &json!({}))
            .await
            .unwrap();
        assert_eq!(plane.mints(), 2);
        // A fresh process reuses the cached token from bearer.json.
        let again = Arc::new(credentials(&plane, config.clone(), cache.clone()));
        let authed = client
            .clone()
            .with_tokens(again)
            .with_auth_header(&config.header_name)
            .unwrap();
        let _: Value = authed
            .unary("test.Echo", "Protected", &json!({}))
            .await
            .unwrap();
        assert_eq!(plane.mints(), 2);
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
    let plane = ControlPlane::start();
    plane.set_metadata_service(false);
    plane.block_on(async {
        let config = oauth::discover(&Client::new(&endpoint(&plane)).unwrap())
            .await
            .unwrap();
        assert_eq!(
            config.token_endpoint,
            format!("{}/oauth2/token", plane.base_url())
        );
        assert_eq!(config.header_name, "authorization");
    });
}

#[test]
fn token_endpoint_failures_are_clear_and_secret_free() {
    let plane = ControlPlane::start();
    let home = TempHome::new();
    plane.block_on(async {
        let config = oauth::discover(&Client::new(&endpoint(&plane)).unwrap())
            .await
            .unwrap();
        for (mode, want) in [
            ("400", "HTTP 400: invalid_request"),
            ("401", "HTTP 401: invalid_client (bad credentials)"),
            ("500-html", "HTTP 500 with a body that is not OAuth2 JSON"),
            ("no-token", "no access_token"),
        ] {
            plane.set_token_mode(mode);
            let source = credentials(&plane, config.clone(), home.path().join("bearer.json"));
            let err = source.get(false).await.unwrap_err().to_string();
            assert!(err.contains(want), "{mode}: {err}");
            assert!(!err.contains(CLIENT_SECRET), "{err}");
        }
    });
}

#[test]
fn connect_errors_and_streams() {
    let plane = ControlPlane::start();
    plane.block_on(async {
        let client = Client::new(&endpoint(&plane)).unwrap();
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
        // Nothing listens here: unavailable.
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

#[test]
fn ensure_api_key_creates_once_reuses_and_replaces_a_deleted_or_corrupt_key() {
    use std::os::unix::fs::MetadataExt;
    let plane = ControlPlane::start();
    let home = TempHome::new();
    let dir = home.ssh_debug_dir();
    plane.block_on(async {
        let service = ConnectApiKeyService::new(Client::new(&endpoint(&plane)).unwrap());
        let ensure =
            || flyte_auth::ensure_api_key(&service, &dir, plane.base_url(), "", "flyte-ssh-debug");
        let first = ensure().await.unwrap();
        assert_eq!(plane.api_keys_created(), 1);
        let file = dir.join(flyte_auth::API_KEY_FILE);
        assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o600);
        assert_eq!(
            flyte_auth::ApiKey::decode(&std::fs::read_to_string(&file).unwrap()).unwrap(),
            first
        );
        // Still known server-side: reused.
        assert_eq!(ensure().await.unwrap(), first);
        assert_eq!(plane.api_keys_created(), 1);
        // Deleted server-side: a new one replaces it.
        plane.delete_api_key(&first.client_id);
        let second = ensure().await.unwrap();
        assert_ne!(second.client_id, first.client_id);
        assert_eq!(plane.api_keys_created(), 2);
        // A corrupt file is replaced, not a crash.
        std::fs::write(&file, "garbage").unwrap();
        let third = ensure().await.unwrap();
        assert_eq!(plane.api_keys_created(), 3);
        // The key works as client credentials at the token endpoint.
        let config = oauth::discover(&Client::new(&endpoint(&plane)).unwrap())
            .await
            .unwrap();
        let source = ClientCredentials::new(
            HttpClient::default(),
            config,
            third.client_id.clone(),
            third.client_secret.clone(),
            &third.endpoint,
            home.path().join("bearer.json"),
        );
        source.get(false).await.unwrap();
    });
}

#[test]
fn the_headers_file_is_0600_and_read_back_by_the_tunnel() {
    use std::os::unix::fs::MetadataExt;
    let home = TempHome::new();
    let path = flyte_auth::default_headers_file(&home.ssh_debug_dir(), "my host/alias");
    // Flyte's `my_host_alias`, plus a digest: `my_host_alias` itself is another alias's file.
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("my_host_alias.") && name.ends_with(".headers"),
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
