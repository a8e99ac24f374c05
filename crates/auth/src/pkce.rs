//! Flyte's `Pkce` login: the authorization code grant with PKCE (RFC 7636, S256) and a loopback
//! redirect (RFC 8252 §7.3): listen on the redirect URI, send the person's browser to the
//! authorization endpoint, take the code that comes back (its `state` checked), exchange it with
//! the verifier.

use std::time::Duration;

use flyte_api::Secret;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::login::{LoginPrompt, Prompt, client_id};
use crate::oauth::{AuthConfig, FormAnswer, post_form, scope_and_audience, tokens_of};
use crate::token::Token;
use crate::{AuthError, Result};

/// How long the browser has to come back.
const MAX_WAIT: Duration = Duration::from_mins(10);
/// A redirect's request head at most; anything longer is not one.
const MAX_HEAD: usize = 16 * 1024;
/// Characters of a code verifier (RFC 7636 §4.1: 43 to 128 unreserved characters).
const VERIFIER_LEN: usize = 64;
const UNRESERVED: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~";

fn random_text(len: usize) -> Result<String> {
    // Bytes at or above the largest multiple of the alphabet's size are skipped, so every
    // character is equally likely.
    let limit = u8::try_from(256 - 256 % UNRESERVED.len()).unwrap_or(u8::MAX);
    let mut text = String::with_capacity(len);
    while text.len() < len {
        let mut bytes = [0u8; 64];
        getrandom::fill(&mut bytes).map_err(|e| AuthError::Login(format!("randomness: {e}")))?;
        for byte in bytes.into_iter().filter(|b| *b < limit) {
            if text.len() < len {
                text.push(char::from(UNRESERVED[usize::from(byte) % UNRESERVED.len()]));
            }
        }
    }
    Ok(text)
}

/// RFC 7636 §4.2: the S256 challenge of `verifier`.
pub(crate) fn s256(verifier: &str) -> String {
    use base64ct::Encoding as _;
    use sha2::Digest as _;
    base64ct::Base64UrlUnpadded::encode_string(&sha2::Sha256::digest(verifier.as_bytes()))
}

/// What came back to the redirect URI.
#[derive(Clone, PartialEq, Eq)]
enum Callback {
    Code(String),
    Refused(String),
}

impl std::fmt::Debug for Callback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // An authorization code is a secret until it is exchanged.
            Callback::Code(_) => f.write_str("Code(<redacted>)"),
            Callback::Refused(reason) => f.debug_tuple("Refused").field(reason).finish(),
        }
    }
}

/// The callback a request line (`GET /callback?code=…&state=… HTTP/1.1`) carries, when its
/// path is the redirect URI's; `Err` for a state that is not ours.
fn parse_callback(
    request_line: &str,
    path: &str,
    state: &str,
) -> Option<std::result::Result<Callback, String>> {
    let target = request_line.split(' ').nth(1)?;
    let url = reqwest::Url::parse(&format!("http://callback.invalid{target}")).ok()?;
    if url.path().trim_end_matches('/') != path.trim_end_matches('/') {
        return None;
    }
    let field = |name: &str| {
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    if field("state").as_deref() != Some(state) {
        return Some(Err(
            "the browser came back with another login's state (a stale tab, or a request \
             that did not come from this login); run the command again"
                .to_owned(),
        ));
    }
    Some(Ok(match (field("code"), field("error")) {
        (Some(code), _) if !code.is_empty() => Callback::Code(code),
        (_, Some(error)) => Callback::Refused(match field("error_description") {
            Some(description) => format!("{error} ({description})"),
            None => error,
        }),
        _ => Callback::Refused("the redirect carried neither a code nor an error".to_owned()),
    }))
}

/// How long one connection to the redirect URI may take to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait in the listener's backlog.
const MAX_CONNECTIONS: usize = 64;
/// After a failed accept (out of file descriptors), wait this long instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Read a request head from `stream` (bounded in size) and return its first line.
async fn request_line(stream: &mut tokio::net::TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
        let read = stream.read(&mut buf).await.ok()?;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&buf[..read]);
    }
    let text = String::from_utf8_lossy(&head);
    text.lines().next().map(str::to_owned)
}

async fn answer(stream: &mut tokio::net::TcpStream, status: &str, text: &str) {
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
        text.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// One connection to the redirect URI: the login's outcome when it carries one. A request
/// elsewhere, or with another login's `state` (a stale tab, a page probing the port), is
/// answered and ignored: it cannot end the login.
async fn serve_connection(
    mut stream: tokio::net::TcpStream,
    path: String,
    state: String,
) -> Option<Result<String>> {
    let line = tokio::time::timeout(READ_TIMEOUT, request_line(&mut stream))
        .await
        .ok()??;
    match parse_callback(&line, &path, &state) {
        None => {
            answer(
                &mut stream,
                "404 Not Found",
                "not the login's redirect URI\n",
            )
            .await;
            None
        }
        Some(Ok(Callback::Code(code))) => {
            answer(
                &mut stream,
                "200 OK",
                "Logged in: you can close this tab and go back to the terminal.\n",
            )
            .await;
            Some(Ok(code))
        }
        Some(Ok(Callback::Refused(reason))) => {
            answer(&mut stream, "200 OK", "The login was refused.\n").await;
            Some(Err(AuthError::Login(format!(
                "the login was refused: {}",
                crate::oauth::printable(&reason)
            ))))
        }
        Some(Err(_)) => {
            answer(
                &mut stream,
                "400 Bad Request",
                "This is not this login's redirect (another login's state).\n",
            )
            .await;
            tracing::debug!("ignored a redirect with another login's state");
            None
        }
    }
}

/// Wait for the browser on `listeners` (each connection served on its own, so a connection that
/// sends nothing holds up no other) and take its callback.
async fn await_callback(
    listeners: &[tokio::net::TcpListener],
    path: &str,
    state: &str,
) -> Result<String> {
    let mut connections = tokio::task::JoinSet::new();
    let accept_any = || async {
        match listeners {
            [first, second, ..] => tokio::select! {
                accepted = first.accept() => accepted,
                accepted = second.accept() => accepted,
            },
            [only] => only.accept().await,
            [] => std::future::pending().await,
        }
    };
    loop {
        tokio::select! {
            accepted = accept_any() => match accepted {
                Ok((stream, _)) if connections.len() < MAX_CONNECTIONS => {
                    connections.spawn(serve_connection(stream, path.to_owned(), state.to_owned()));
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "accepting on the redirect URI failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(served) = connections.join_next(), if !connections.is_empty() => {
                if let Ok(Some(outcome)) = served {
                    // The other connections end with the JoinSet.
                    return outcome;
                }
            }
        }
    }
}

/// Listen on the redirect URI's port: on 127.0.0.1 (and `::1`, when it can, for `localhost`, so
/// no other program answers a browser that tries IPv6 first), on `::1` for `[::1]`.
async fn listen(
    redirect: &reqwest::Url,
    redirect_uri: &str,
) -> Result<Vec<tokio::net::TcpListener>> {
    let port = redirect.port().unwrap_or_default();
    let taken = |e: std::io::Error| {
        AuthError::Login(format!(
            "cannot listen on the redirect URI {redirect_uri} ({e}); another login or \
             program holds port {port}: finish or stop it and run the command again"
        ))
    };
    match redirect.host_str() {
        Some("localhost") => {
            let v4 = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port))
                .await
                .map_err(taken)?;
            let v6 = tokio::net::TcpListener::bind((std::net::Ipv6Addr::LOCALHOST, port))
                .await
                .ok();
            Ok(std::iter::once(v4).chain(v6).collect())
        }
        Some("127.0.0.1") => Ok(vec![
            tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port))
                .await
                .map_err(taken)?,
        ]),
        Some("[::1]") => Ok(vec![
            tokio::net::TcpListener::bind((std::net::Ipv6Addr::LOCALHOST, port))
                .await
                .map_err(taken)?,
        ]),
        // Never listen beyond this machine: the deployment's redirect URI must be loopback.
        _ => Err(not_loopback(redirect_uri)),
    }
}

fn not_loopback(redirect_uri: &str) -> AuthError {
    AuthError::Login(format!(
        "the redirect URI {} is not a loopback http URI with a port \
         (http://localhost:PORT/callback), so nothing here could receive the code safely",
        crate::oauth::printable(redirect_uri)
    ))
}

/// The whole login: listen, send the browser, take the code, exchange it.
pub(crate) async fn login(
    http: &reqwest::Client,
    config: &AuthConfig,
    prompt: &Prompt,
) -> Result<(Token, Option<Secret>)> {
    let (Some(authorization_endpoint), Some(redirect_uri)) = (
        config.authorization_endpoint.as_deref(),
        config.redirect_uri.as_deref(),
    ) else {
        return Err(AuthError::Discovery(
            "the deployment names no authorization endpoint or redirect URI for Pkce".to_owned(),
        ));
    };
    let redirect = reqwest::Url::parse(redirect_uri)
        .ok()
        .filter(|u| u.scheme() == "http" && u.port().is_some())
        .ok_or_else(|| not_loopback(redirect_uri))?;
    let listeners = listen(&redirect, redirect_uri).await?;
    let verifier = random_text(VERIFIER_LEN)?;
    let state = random_text(32)?;
    let mut params = vec![
        ("client_id", client_id(config)),
        ("response_type", "code".to_owned()),
        ("redirect_uri", redirect_uri.to_owned()),
        ("state", state.clone()),
        ("code_challenge", s256(&verifier)),
        ("code_challenge_method", "S256".to_owned()),
    ];
    params.extend(scope_and_audience(config));
    let url = reqwest::Url::parse_with_params(authorization_endpoint, &params).map_err(|e| {
        AuthError::Discovery(format!(
            "the authorization endpoint {authorization_endpoint}: {e}"
        ))
    })?;
    prompt(&LoginPrompt {
        message: &format!("To log in, open {url} in a browser"),
        open_url: Some(url.as_str()),
    });
    let code = tokio::time::timeout(
        MAX_WAIT,
        await_callback(&listeners, redirect.path(), &state),
    )
    .await
    .map_err(|_| {
        AuthError::Login(format!(
            "the browser did not come back within {} minutes; run the command again",
            MAX_WAIT.as_secs() / 60
        ))
    })??;
    let form = vec![
        ("grant_type", "authorization_code".to_owned()),
        ("code", code),
        ("code_verifier", verifier),
        ("redirect_uri", redirect_uri.to_owned()),
        ("client_id", client_id(config)),
    ];
    let endpoint = &config.token_endpoint;
    match post_form(http, endpoint, &form, None).await? {
        FormAnswer::Ok(json) => tokens_of(endpoint, json),
        FormAnswer::Refused {
            status,
            error,
            description,
        } => Err(AuthError::TokenEndpoint {
            endpoint: endpoint.clone(),
            detail: FormAnswer::describe(status, &error, description.as_deref()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifiers_are_unreserved_and_challenges_are_rfc_7636s() {
        let verifier = random_text(VERIFIER_LEN).unwrap();
        assert_eq!(verifier.len(), VERIFIER_LEN);
        assert!(verifier.bytes().all(|b| UNRESERVED.contains(&b)));
        assert_ne!(verifier, random_text(VERIFIER_LEN).unwrap());
        assert_eq!(
            s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn callbacks_are_read_only_at_the_redirect_path_and_with_our_state() {
        let cases: &[(&str, Option<std::result::Result<Callback, &str>>)] = &[
            (
                "GET /callback?code=abc&state=s1 HTTP/1.1",
                Some(Ok(Callback::Code("abc".into()))),
            ),
            (
                "GET /callback/?state=s1&code=a%2Fb HTTP/1.1",
                Some(Ok(Callback::Code("a/b".into()))),
            ),
            (
                "GET /callback?error=access_denied&state=s1 HTTP/1.1",
                Some(Ok(Callback::Refused("access_denied".into()))),
            ),
            ("GET /favicon.ico HTTP/1.1", None),
            ("garbage", None),
            (
                "GET /callback?code=abc&state=other HTTP/1.1",
                Some(Err("another login's state")),
            ),
            (
                "GET /callback?code=abc HTTP/1.1",
                Some(Err("another login's state")),
            ),
        ];
        for (line, want) in cases {
            let got = parse_callback(line, "/callback", "s1");
            match (got, want) {
                (Some(Err(message)), Some(Err(part))) => {
                    assert!(message.contains(part), "{line}: {message}");
                }
                (got, want) => assert_eq!(
                    got.map(|r| r.map_err(|_| ())),
                    want.clone().map(|r| r.map_err(|_| ())),
                    "{line}"
                ),
            }
        }
    }

    async fn get(port: u16, target: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        stream
            .write_all(format!("GET {target} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn a_silent_connection_or_another_logins_state_does_not_end_or_stall_the_login() {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let waiting =
            tokio::spawn(async move { await_callback(&[listener], "/callback", "ours").await });
        // A connection that never sends a request (a browser's spare one).
        let _silent = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        assert!(
            get(port, "/callback?code=x&state=theirs")
                .await
                .starts_with("HTTP/1.1 400")
        );
        assert!(get(port, "/favicon.ico").await.starts_with("HTTP/1.1 404"));
        assert!(
            get(port, "/callback?code=c1&state=ours")
                .await
                .starts_with("HTTP/1.1 200")
        );
        assert_eq!(waiting.await.unwrap().unwrap(), "c1");
    }

    #[tokio::test]
    async fn only_loopback_redirect_uris_are_listened_on() {
        for uri in [
            "http://0.0.0.0:1/cb",
            "http://192.0.2.1:1/cb",
            "http://example.com:1/cb",
        ] {
            let url = reqwest::Url::parse(uri).unwrap();
            let refused = listen(&url, uri).await.unwrap_err().to_string();
            assert!(
                refused.contains("is not a loopback http URI"),
                "{uri}: {refused}"
            );
        }
    }
}
