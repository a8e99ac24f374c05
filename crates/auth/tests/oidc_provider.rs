//! Issue 16: flyte-auth's `Pkce` login against a real OpenID Connect provider, zitadel/oidc's
//! example OP (built from its Go module by `cargo xtask ci`): discovery from the provider's own
//! metadata, the browser played by testkit's `oidc_browser` (the provider's login form), the code
//! exchanged with the verifier, the token reused from the cache, and a refused token renewed
//! with the provider's refresh token without a second login.
// Tests start processes and write their fixtures directly.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used)]

use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use flyte_auth::{AuthConfig, Login, LoginFlow, LoginPrompt, Prompt, TokenOrigin};

/// The provider, stopped (by its pid) when the test ends however it ends.
struct Provider(Child);

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Start the provider and wait for its "listening" line (printed just before it binds).
fn start_provider(port: u16, redirect_uri: &str) -> Provider {
    let mut child = Command::new(flyte_testkit::OIDC_PROVIDER.require())
        .env("PORT", port.to_string())
        .env("REDIRECT_URI", redirect_uri)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = Vec::new();
    let mut lines = stderr.lines().map_while(Result::ok);
    let listening = lines.any(|line| {
        let found = line.contains("server listening");
        seen.push(line);
        found
    });
    assert!(listening, "the provider did not start: {seen:?}");
    // Keep draining its log, so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Provider(child)
}

/// The provider's OpenID metadata, asked until it answers: its listening line comes just before
/// it binds. Bounded: 100 attempts.
async fn discover(http: &reqwest::Client, issuer: &str) -> serde_json::Value {
    let url = format!("{issuer}.well-known/openid-configuration");
    for _ in 0..100 {
        if let Ok(response) = http.get(&url).send().await {
            return response.json().await.unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{url} never answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkce_logs_in_to_a_real_oidc_provider_and_refreshes_its_token() {
    let (port, redirect_port) = (free_port(), free_port());
    let redirect_uri = format!("http://localhost:{redirect_port}/callback");
    let _provider = start_provider(port, &redirect_uri);
    let issuer = format!("http://localhost:{port}/");
    let http = reqwest::Client::new();
    let metadata = discover(&http, &issuer).await;
    let text = |key: &str| metadata[key].as_str().map(str::to_owned);
    let config = AuthConfig {
        token_endpoint: text("token_endpoint").unwrap(),
        device_authorization_endpoint: None,
        client_id: Some("native".to_owned()),
        authorization_endpoint: text("authorization_endpoint"),
        redirect_uri: Some(redirect_uri.clone()),
        // `offline_access`: this provider hands out refresh tokens only when asked.
        scopes: vec!["openid".to_owned(), "offline_access".to_owned()],
        audience: None,
        header_name: "authorization".to_owned(),
    };
    let dir = tempfile::tempdir().unwrap();
    let browser = flyte_testkit::oidc_browser(dir.path());
    let logins = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&logins);
    let prompt: Prompt = Arc::new(move |prompt: &LoginPrompt<'_>| {
        counted.fetch_add(1, Ordering::SeqCst);
        let url = prompt.open_url.expect("a browser login names its URL");
        let mut child = Command::new(&browser).arg(url).spawn().unwrap();
        std::thread::spawn(move || child.wait());
    });
    let cache = dir.path().join("tokens.json");
    let new_login = || {
        Login::new(
            LoginFlow::Pkce,
            http.clone(),
            config.clone(),
            "oidc-provider",
            cache.clone(),
            Arc::clone(&prompt),
        )
        .unwrap()
    };

    let (token, origin) = new_login().get_with_origin(false).await.unwrap();
    assert_eq!(origin, TokenOrigin::Fresh);
    assert_eq!(logins.load(Ordering::SeqCst), 1);
    // The provider accepts it: its userinfo endpoint names the test user.
    let userinfo: serde_json::Value = http
        .get(text("userinfo_endpoint").unwrap())
        .bearer_auth(token.value.expose())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(userinfo["sub"], "id1", "{userinfo}");

    // Another process: the cached token, no login.
    let again = new_login();
    assert_eq!(
        again.get_with_origin(false).await.unwrap().1,
        TokenOrigin::Cache
    );

    // Refused by the server (`refresh`): the refresh token renews it, still no login.
    let (renewed, origin) = again.get_with_origin(true).await.unwrap();
    assert_eq!(origin, TokenOrigin::Fresh);
    assert_ne!(renewed.value.expose(), token.value.expose());
    assert_eq!(logins.load(Ordering::SeqCst), 1, "no second login");
}
