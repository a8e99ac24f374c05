//! The sandbox's auth side with the real clients: flyte-auth mints tokens from the bootstrap
//! credential and manages API keys; forged, expired and missing tokens are refused.

// Helpers outside #[test] functions may unwrap too: this whole file is test code.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use flyte_api::idl::flyterun::sandbox::v1 as own;
use flyte_api::{Answer, Client, Code, Endpoint, HttpClient};
use flyte_auth::{ApiKey, ClientCredentials, ConnectApiKeyService, oauth};
use flyte_sandbox::Sandbox;
use flyte_sandbox::tokens::Signer;
use flyte_testkit::TempHome;

/// A sandbox on 127.0.0.1 on its own runtime; stopped when dropped.
struct Running {
    endpoint: Endpoint,
    runtime: tokio::runtime::Runtime,
}

fn start(state_dir: &Path) -> Running {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let sandbox = Sandbox::open(state_dir, &base).unwrap();
    runtime.spawn(sandbox.serve(listener));
    Running {
        endpoint: Endpoint::parse(&base, false).unwrap(),
        runtime,
    }
}

/// An API client authenticated with the bootstrap credential.
async fn admin_client(running: &Running, state_dir: &Path, cache: &Path) -> Client {
    let key =
        ApiKey::decode(&std::fs::read_to_string(Sandbox::credential_path(state_dir)).unwrap())
            .unwrap();
    let client = Client::new(&running.endpoint).unwrap();
    let config = oauth::discover(&client).await.unwrap();
    let tokens = ClientCredentials::new(
        HttpClient::default(),
        config.clone(),
        key.client_id,
        key.client_secret,
        running.endpoint.authority(),
        cache.to_owned(),
    );
    client
        .with_tokens(Arc::new(tokens))
        .with_auth_header(&config.header_name)
        .unwrap()
}

#[test]
// One story, from the bootstrap key to a revoked one; split, it would repeat the set-up.
#[allow(clippy::too_many_lines)]
fn bootstrap_credential_then_api_keys_through_flyte_auth() {
    use std::os::unix::fs::MetadataExt;
    let home = TempHome::new();
    let state = home.path().join("sandbox");
    let running = start(&state);
    assert_eq!(
        std::fs::metadata(Sandbox::credential_path(&state))
            .unwrap()
            .mode()
            & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(state.join("signing.key")).unwrap().mode() & 0o777,
        0o600
    );
    let debug_dir = home.ssh_debug_dir();
    running.runtime.block_on(async {
        let admin = admin_client(&running, &state, &home.path().join("bearer.json")).await;
        let service = ConnectApiKeyService::new(admin.clone());
        let key = flyte_auth::ensure_api_key(
            &service,
            &debug_dir,
            running.endpoint.base_url().as_str(),
            "",
            "flyte-ssh-debug",
        )
        .await
        .unwrap();
        // Reused while it exists.
        let again = flyte_auth::ensure_api_key(
            &service,
            &debug_dir,
            running.endpoint.base_url().as_str(),
            "",
            "flyte-ssh-debug",
        )
        .await
        .unwrap();
        assert_eq!(again, key);
        let keys = admin.connect(own::ApiKeyServiceClient::new).unwrap();
        let listed = keys
            .list_api_keys(own::ListApiKeysRequest::default())
            .await
            .owned()
            .unwrap();
        let names: Vec<&str> = listed.keys.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["sandbox-admin", "flyte-ssh-debug"]);
        // The new key is itself a working client credential.
        let config = oauth::discover(&Client::new(&running.endpoint).unwrap())
            .await
            .unwrap();
        let own = ClientCredentials::new(
            HttpClient::default(),
            config,
            key.client_id.clone(),
            key.client_secret.clone(),
            running.endpoint.authority(),
            home.path().join("own.json"),
        );
        let own_token = own.get(false).await.unwrap();
        let own_client = Client::new(&running.endpoint)
            .unwrap()
            .with_tokens(std::sync::Arc::new(own))
            .with_auth_header("authorization")
            .unwrap();
        let own_keys = own_client.connect(own::ApiKeyServiceClient::new).unwrap();
        own_keys
            .list_api_keys(own::ListApiKeysRequest::default())
            .await
            .owned()
            .unwrap();
        drop(own_token);
        // Deleted: not found, and ensure_api_key makes a new one.
        keys.delete_api_key(own::DeleteApiKeyRequest {
            client_id: key.client_id.clone(),
            ..Default::default()
        })
        .await
        .owned()
        .unwrap();
        let err = keys
            .get_api_key(own::GetApiKeyRequest {
                client_id: key.client_id.clone(),
                ..Default::default()
            })
            .await
            .owned()
            .unwrap_err();
        assert_eq!(err.code, Code::NotFound);
        // Issue 13, defect 7: the deleted key's unexpired token is refused at once, so its
        // holder cannot mint a key that outlives the deletion.
        let listing = own_keys
            .list_api_keys(own::ListApiKeysRequest::default())
            .await
            .owned()
            .map(|_| ());
        let creating = own_keys
            .create_api_key(own::CreateApiKeyRequest {
                name: "escape".to_owned(),
                ..Default::default()
            })
            .await
            .owned()
            .map(|_| ());
        for (method, result) in [("ListApiKeys", listing), ("CreateApiKey", creating)] {
            let err = result.unwrap_err();
            assert_eq!(err.code, Code::Unauthenticated, "{method}: {err:?}");
        }
        let replaced = flyte_auth::ensure_api_key(
            &service,
            &debug_dir,
            running.endpoint.base_url().as_str(),
            "",
            "flyte-ssh-debug",
        )
        .await
        .unwrap();
        assert_ne!(replaced.client_id, key.client_id);
    });
}

#[test]
fn secrets_are_stored_hashed_and_state_survives_a_restart() {
    let home = TempHome::new();
    let state = home.path().join("sandbox");
    let running = start(&state);
    let debug_dir = home.ssh_debug_dir();
    let key = running.runtime.block_on(async {
        let admin = admin_client(&running, &state, &home.path().join("bearer.json")).await;
        let service = ConnectApiKeyService::new(admin);
        flyte_auth::ensure_api_key(
            &service,
            &debug_dir,
            running.endpoint.base_url().as_str(),
            "",
            "flyte-ssh-debug",
        )
        .await
        .unwrap()
    });
    // Secrets are stored hashed: the database file does not contain them.
    drop(running);
    let db = std::fs::read(state.join("sandbox.db")).unwrap();
    let wal = std::fs::read(state.join("sandbox.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        assert!(
            !bytes
                .windows(key.client_secret.expose().len())
                .any(|w| w == key.client_secret.expose().as_bytes())
        );
    }
    // State survives a restart: the same key is still known, the credential still works.
    let running = start(&state);
    running.runtime.block_on(async {
        let admin = admin_client(&running, &state, &home.path().join("bearer2.json")).await;
        let got = admin
            .connect(own::ApiKeyServiceClient::new)
            .unwrap()
            .get_api_key(own::GetApiKeyRequest {
                client_id: key.client_id.clone(),
                ..Default::default()
            })
            .await
            .owned()
            .unwrap();
        assert_eq!(got.key.name, "flyte-ssh-debug");
    });
}

#[test]
fn missing_forged_and_expired_tokens_are_unauthenticated() {
    let home = TempHome::new();
    let state = home.path().join("sandbox");
    let running = start(&state);
    // The sandbox's own key signs these, so only expiry or tampering can be the reason.
    let signer = Signer::load_or_create(&state.join("signing.key"), flyte_sandbox::ISSUER).unwrap();
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    let admin_id = flyte_auth::ApiKey::decode(
        &std::fs::read_to_string(Sandbox::credential_path(&state)).unwrap(),
    )
    .unwrap()
    .client_id;
    let good = signer.mint(&admin_id, now, 600).unwrap();
    // Issue 13, defect 7: well signed and unexpired, but for no key that exists.
    let keyless = signer.mint("sbx-nosuchkey", now, 600).unwrap();
    let expired = signer.mint("sbx-test", now - 7200, 600).unwrap();
    let forged = format!("{}x", &good[..good.len() - 1]);
    let other_sandbox =
        Signer::load_or_create(&home.path().join("other.key"), flyte_sandbox::ISSUER)
            .unwrap()
            .mint("sbx-test", now, 600)
            .unwrap();
    running.runtime.block_on(async {
        let http = HttpClient::default();
        let url = format!(
            "{}/{}/ListApiKeys",
            running.endpoint.base_url(),
            flyte_auth::API_KEY_SERVICE
        );
        for (token, status, want) in [
            (None, 401, "a bearer token is required"),
            (Some(expired.as_str()), 401, "expired"),
            (Some(forged.as_str()), 401, "not valid"),
            (Some(other_sandbox.as_str()), 401, "not valid"),
            (Some(keyless.as_str()), 401, "no longer exists"),
            (Some(good.as_str()), 200, "keys"),
        ] {
            let mut request = http
                .post(&url)
                .header("content-type", "application/json")
                .body("{}");
            if let Some(token) = token {
                request = request.header("authorization", format!("Bearer {token}"));
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status().as_u16(), status, "{want}");
            let body = response.text().await.unwrap();
            assert!(body.contains(want), "{body}");
            if status == 401 {
                assert!(body.contains("\"code\":\"unauthenticated\""), "{body}");
            }
        }
        // Malformed JSON is invalid_argument, not a crash.
        let response = http
            .post(format!(
                "{}/{}/GetApiKey",
                running.endpoint.base_url(),
                flyte_auth::API_KEY_SERVICE
            ))
            .header("authorization", format!("Bearer {good}"))
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400);
        assert!(response.text().await.unwrap().contains("invalid_argument"));
        // A wrong client secret at the token endpoint is invalid_client.
        let response = http
            .post(format!("{}/oauth2/token", running.endpoint.base_url()))
            .basic_auth("sbx-nobody", Some("nope"))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 401);
        assert!(response.text().await.unwrap().contains("invalid_client"));
        // Health and metadata need no token.
        let health = http
            .get(format!("{}/healthz", running.endpoint.base_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(health.text().await.unwrap(), "ok");
    });
}
