//! The sandbox's Connect server against bad input (issue 14): each malformed request gets a
//! Connect error naming the problem, and the sandbox keeps serving and loses no run.

// Helpers outside #[test] functions may unwrap too: this whole file is test code.
#![allow(clippy::unwrap_used)]

use std::io::Write;

use flyte_sandbox::Sandbox;
use flyte_testkit::TempHome;

struct Running {
    base: String,
    runtime: tokio::runtime::Runtime,
    home: TempHome,
}

fn start() -> Running {
    let home = TempHome::new();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let sandbox = Sandbox::open(&home.path().join("sandbox"), &base).unwrap();
    runtime.spawn(sandbox.serve(listener));
    Running {
        base,
        runtime,
        home,
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// The status and the body of one POST.
fn post(running: &Running, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, String) {
    running.runtime.block_on(async {
        let mut request = reqwest::Client::new()
            .post(format!("{}{path}", running.base))
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    })
}

/// What is wrong, the method path, the headers, the body, the Connect code expected ("" for
/// HTTP 415).
type BadRequest<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, Vec<u8>, &'a str);

const GET_RUN: &str = "/flyteidl2.workflow.RunService/GetRunDetails";
const WATCH_RUN: &str = "/flyteidl2.workflow.RunService/WatchRunDetails";
const METADATA: &str = "/flyteidl2.auth.AuthMetadataService/GetOAuth2Metadata";

#[test]
fn malformed_requests_get_connect_errors_and_the_sandbox_keeps_serving() {
    let running = start();
    let proto = [("content-type", "application/proto")];
    let stream = [("content-type", "application/connect+proto")];
    let bomb = gzip(&vec![0u8; 64 * 1024 * 1024]);
    let cases: Vec<BadRequest<'_>> = vec![
        (
            "corrupt protobuf",
            GET_RUN,
            proto.to_vec(),
            vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
            "invalid_argument",
        ),
        (
            "a gzip bomb (64 MiB of zeros)",
            GET_RUN,
            vec![
                ("content-type", "application/proto"),
                ("content-encoding", "gzip"),
            ],
            bomb,
            "resource_exhausted",
        ),
        (
            "an unknown compression",
            GET_RUN,
            vec![
                ("content-type", "application/proto"),
                ("content-encoding", "lzma"),
            ],
            vec![0x0a, 0x00],
            "unimplemented",
        ),
        (
            "a wrong content type",
            GET_RUN,
            vec![("content-type", "text/plain")],
            b"hello".to_vec(),
            "",
        ),
        (
            "a stream envelope longer than its body",
            WATCH_RUN,
            stream.to_vec(),
            vec![0, 0, 0, 0, 100, 0x0a, 0x00],
            "invalid_argument",
        ),
        (
            "an unknown method",
            "/flyteidl2.workflow.RunService/NoSuchMethod",
            proto.to_vec(),
            Vec::new(),
            "unimplemented",
        ),
    ];
    for (what, path, headers, body, code) in cases {
        let (status, text) = post(&running, path, &headers, body);
        assert!(
            status != 200 || path == WATCH_RUN,
            "{what}: {status} {text}"
        );
        if code.is_empty() {
            // Connect answers an unsupported content type with HTTP 415 and no Connect body.
            assert_eq!(status, 415, "{what}: {text}");
        } else {
            assert!(
                text.contains(&format!("\"code\":\"{code}\"")),
                "{what}: {status} {text}"
            );
        }
        assert_still_serving(&running, what);
    }
    // A body over the limit is refused: with the Connect error, or, when the server answers and
    // closes while the client is still writing the rest, by the connection ending mid-body.
    let oversized = running.runtime.block_on(async {
        let response = reqwest::Client::new()
            .post(format!("{}{GET_RUN}", running.base))
            .header("content-type", "application/proto")
            .body(vec![0u8; 5 * 1024 * 1024])
            .send()
            .await?;
        response.text().await
    });
    match oversized {
        Ok(text) => assert!(text.contains("\"code\":\"invalid_argument\""), "{text}"),
        Err(e) => assert!(e.is_request() || e.is_body(), "{e:?}"),
    }
    assert_still_serving(&running, "a body over the limit");
}

/// The sandbox still answers a good request after `what`.
fn assert_still_serving(running: &Running, what: &str) {
    let (status, text) = post(
        running,
        METADATA,
        &[("content-type", "application/json")],
        b"{}".to_vec(),
    );
    assert_eq!(status, 200, "after {what}: {text}");
    assert!(text.contains("tokenEndpoint"), "after {what}: {text}");
}

/// Issue 14: flyte-api's transport under the generated clients, against the sandbox's own
/// services: binary protobuf with gzip-compressed requests (as Flyte's client sends) and JSON
/// without compression, Connect error bodies as typed errors, and one token refresh on 401.
#[test]
fn generated_clients_on_our_transport_speak_proto_and_json_and_refresh_once() {
    use flyte_api::{ApiError, Client, Code, Endpoint, Secret, TokenFuture, TokenSource};
    use flyte_idl::flyterun::sandbox::v1 as own;
    use std::sync::Arc;

    /// A stale token first; the good one only when asked to refresh.
    struct StaleFirst(Secret);
    impl TokenSource for StaleFirst {
        fn token(&self, refresh: bool) -> TokenFuture<'_> {
            let token = if refresh {
                self.0.clone()
            } else {
                Secret::new("stale")
            };
            Box::pin(async move { Ok(Some(token)) })
        }
    }

    let running = start();
    let state = running.home.path().join("sandbox");
    let key = flyte_auth::ApiKey::decode(
        &std::fs::read_to_string(Sandbox::credential_path(&state)).unwrap(),
    )
    .unwrap();
    let endpoint = Endpoint::parse(&running.base, true).unwrap();
    running.runtime.block_on(async {
        let anonymous = Client::new(&endpoint).unwrap();
        let config = flyte_auth::oauth::discover(&anonymous).await.unwrap();
        let token = flyte_auth::oauth::client_credentials(
            anonymous.http(),
            &config,
            &key.client_id,
            &key.client_secret,
        )
        .await
        .unwrap();
        let client = anonymous
            .clone()
            .with_tokens(Arc::new(StaleFirst(token.value)));
        let proto = client.connect(own::ApiKeyServiceClient::new).unwrap();
        let base: http::Uri = running.base.parse().unwrap();
        let json = own::ApiKeyServiceClient::new(
            client.transport(),
            connectrpc::client::ClientConfig::new(base).json(),
        );

        for (codec, keys) in [("proto+gzip", &proto), ("json", &json)] {
            let created = keys
                .create_api_key(own::CreateApiKeyRequest {
                    name: format!("made over {codec}"),
                    ..Default::default()
                })
                .await
                .map_err(ApiError::from)
                .unwrap()
                .into_owned();
            let got = keys
                .get_api_key(own::GetApiKeyRequest {
                    client_id: created.client_id.clone(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_owned();
            assert_eq!(got.key.name, format!("made over {codec}"), "{codec}");
            let missing = keys
                .get_api_key(own::GetApiKeyRequest {
                    client_id: "sbx-none".into(),
                    ..Default::default()
                })
                .await
                .map(|_| ())
                .map_err(ApiError::from)
                .unwrap_err();
            assert_eq!(missing.code, Code::NotFound, "{codec}: {missing}");
            assert!(missing.message.contains("sbx-none"), "{codec}: {missing}");
        }

        let refused = anonymous
            .connect(own::ApiKeyServiceClient::new)
            .unwrap()
            .list_api_keys(own::ListApiKeysRequest::default())
            .await
            .map(|_| ())
            .map_err(ApiError::from)
            .unwrap_err();
        assert_eq!(refused.code, Code::Unauthenticated, "{refused}");
        assert!(refused.message.contains("bearer token"), "{refused}");
    });
}
