//! flyte-api and flyte-auth against flyte-testkit's stand-in for a Flyte deployment that is not
//! our sandbox (generated Connect servers on 127.0.0.1, another token header, a token endpoint
//! that can be told to fail).
#![allow(clippy::disallowed_methods)]
// Tests write fixtures and start processes directly.

// Helpers outside #[test] functions may unwrap too: this whole file is test code.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use flyte_api::{ApiError, Client, Code, Endpoint, HttpClient, Secret};
use flyte_auth::{ClientCredentials, ConnectApiKeyService, oauth};
use flyte_testkit::TempHome;
use flyte_testkit::control_plane::{CLIENT_SECRET, ControlPlane};

mod plane;

use plane::{credentials, endpoint, list_keys};

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
        // The token goes in the header the plane's client config names (flyte-authorization):
        // the plane refuses it anywhere else.
        assert!(list_keys(&authed).await.unwrap().keys.is_empty());
        assert_eq!(plane.mints(), 1);
        // Cached: a second call mints nothing.
        list_keys(&authed).await.unwrap();
        assert_eq!(plane.mints(), 1);
        // The server forgets the token: one refresh, one retry, success.
        plane.revoke_tokens();
        list_keys(&authed).await.unwrap();
        assert_eq!(plane.mints(), 2);
        // A fresh process reuses the cached token from bearer.json.
        let again = Arc::new(credentials(&plane, config.clone(), cache.clone()));
        let authed = client
            .clone()
            .with_tokens(again)
            .with_auth_header(&config.header_name)
            .unwrap();
        list_keys(&authed).await.unwrap();
        assert_eq!(plane.mints(), 2);
        // Without any token source the call is unauthenticated, and not retried.
        let err = list_keys(&client).await.unwrap_err();
        assert_eq!(err.code, Code::Unauthenticated);
        // In the standard header the plane does not read, the token does not count.
        let misplaced = client
            .clone()
            .with_tokens(Arc::new(credentials(&plane, config.clone(), cache.clone())))
            .with_auth_header("authorization")
            .unwrap();
        let err = list_keys(&misplaced).await.unwrap_err();
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

/// Connect errors from a generated server, and a transport failure, reach callers as codes.
#[test]
fn connect_errors_and_a_dead_endpoint_are_typed() {
    use flyte_api::Answer;
    use flyte_api::idl::flyterun::sandbox::v1 as own;
    let plane = ControlPlane::start();
    plane.block_on(async {
        let keys = Client::new(&endpoint(&plane))
            .unwrap()
            .connect(own::ApiKeyServiceClient::new)
            .unwrap();
        let get = |client_id: &str| own::GetApiKeyRequest {
            client_id: client_id.to_owned(),
            ..Default::default()
        };
        let err = keys.get_api_key(get("nobody")).await.owned().unwrap_err();
        assert_eq!(
            (err.code, err.message.as_str()),
            (Code::NotFound, "no such API key")
        );
        let err = keys
            .create_api_key(own::CreateApiKeyRequest::default())
            .await
            .owned()
            .unwrap_err();
        assert_eq!(err.code, Code::InvalidArgument, "{err}");
        let err = keys
            .delete_api_key(own::DeleteApiKeyRequest::default())
            .await
            .owned()
            .unwrap_err();
        assert_eq!(err.code, Code::Unimplemented, "{err}");
        // Nothing listens here: unavailable, naming the address.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let dead = Client::new(&Endpoint::parse(&format!("http://{closed}"), false).unwrap())
            .unwrap()
            .connect(own::ApiKeyServiceClient::new)
            .unwrap();
        let err: ApiError = dead.get_api_key(get("x")).await.owned().unwrap_err();
        assert_eq!(err.code, Code::Unavailable, "{err}");
        assert!(err.message.contains(&closed.to_string()), "{err}");
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
    let path = flyte_home::DebugDir::new(home.ssh_debug_dir()).headers("my host/alias");
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
