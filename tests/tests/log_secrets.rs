//! No secret in trace-level logs, errors or Debug output of flyte-api and flyte-auth, against
//! flyte-testkit's control plane. Alone in its test binary: tracing caches whether a log site
//! is enabled across threads, so a test that captures logs with a scoped subscriber can miss
//! lines while other tests run the same code on threads without one.

// Helpers outside #[test] functions may unwrap too: this whole file is test code.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use flyte_api::Client;
use flyte_auth::oauth;
use flyte_testkit::TempHome;
use flyte_testkit::control_plane::{CLIENT_SECRET, ControlPlane};
mod plane;

use plane::{credentials, endpoint, list_keys};

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
    let plane = ControlPlane::start();
    let home = TempHome::new();
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let (token, debug) = tracing::subscriber::with_default(subscriber, || {
        plane.block_on(async {
            let client = Client::new(&endpoint(&plane)).unwrap();
            let config = oauth::discover(&client).await.unwrap();
            let source = Arc::new(credentials(
                &plane,
                config.clone(),
                home.path().join("bearer.json"),
            ));
            let authed = client
                .with_tokens(source.clone())
                .with_auth_header(&config.header_name)
                .unwrap();
            list_keys(&authed).await.unwrap();
            plane.revoke_tokens();
            list_keys(&authed).await.unwrap();
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
