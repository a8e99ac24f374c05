//! The connect flow: find a debug run's route, get a token for it into a headers file, wait
//! until the route answers with a WebSocket, and describe the ssh Host block that reaches it
//! with the server's host key pinned.
//!
//! Flyte's `SSHDebug` is the behaviour matched (see `shared/reference/flyte-ssh-debug.md`); the
//! departures are improvements: the host key is pinned, the headers file holds a token for this
//! route only where the control plane mints one, and a cached token the route refuses is
//! replaced once before giving up.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use flyte_api::idl::flyteidl2::common::RunIdentifier;
use flyte_api::idl::flyteidl2::core::TaskLog;
use flyte_api::{ActionDetailsExt, ActionPhaseExt, Code, Secret};
use flyte_auth::{AuthError, TokenChain, TokenOrigin};
use flyte_ssh_config::{DebugHost, HostKeyCheck};
use flyte_tunnel::TunnelError;
use flyte_tunnel::client::ClientOptions;
use flyte_tunnel::transport::Transport;
use tokio::time::Instant;

use crate::names::{self, DEFAULT_ACTION, DEFAULT_ALIAS};
use crate::progress::{Progress, Waiting};
use crate::{ControlPlane, DebugClientError, Result, runs};
use flyte_api::request::RunScope;

/// The route's tunnel header: what Flyte writes and ingresses check.
const AUTH_HEADER: &str = "Authorization";
/// One probe's handshake may take this long before it counts as "still starting".
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Between probes of a route that is still starting.
const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// [`connect`]'s options, with Flyte's defaults.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// The run's org, project and domain.
    pub scope: RunScope,
    pub action: String,
    /// The login user inside the task.
    pub user: String,
    /// The private key ssh offers (default: the debug key pair's).
    pub identity_file: Option<PathBuf>,
    pub host_alias: String,
    /// Mint the route's token from the stored API key rather than the best credential at hand.
    pub use_api_key: bool,
    /// Mint a new token even if a cached one is still valid.
    pub refresh_token: bool,
    /// Where the token goes (default: the alias's headers file in the debug directory).
    pub headers_file: Option<PathBuf>,
    /// For the whole flow: the run's route to appear and to answer.
    pub timeout: Duration,
    /// Between looks at the action.
    pub poll_interval: Duration,
    /// Probe the route until it answers a WebSocket upgrade.
    pub wait_for_route: bool,
    /// The program ssh runs as `ProxyCommand`, `<program> tunnel <url> --http-headers-file
    /// <file>` (flyte-run passes itself).
    pub proxy_program: PathBuf,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            scope: RunScope::default(),
            action: DEFAULT_ACTION.to_owned(),
            user: "root".to_owned(),
            identity_file: None,
            host_alias: DEFAULT_ALIAS.to_owned(),
            use_api_key: false,
            refresh_token: false,
            headers_file: None,
            timeout: Duration::from_mins(5),
            poll_interval: Duration::from_secs(3),
            wait_for_route: true,
            proxy_program: PathBuf::from("flyte-run"),
        }
    }
}

/// What a connection needs on this side (Flyte's `SSHDebug`, plus the host key).
#[derive(Debug, Clone)]
pub struct Connection {
    pub run_name: String,
    pub action_name: String,
    pub wss_url: String,
    /// The key the route published (one OpenSSH line), pinned by [`crate::ssh::install`].
    pub host_key: Option<String>,
    pub host_key_fingerprint: Option<String>,
    pub headers_file: PathBuf,
    pub block: DebugHost,
}

impl Connection {
    /// The Host block as text.
    pub fn ssh_config(&self) -> Result<String> {
        Ok(self.block.render()?)
    }
}

/// Wait for the debug route of `run`/`options.action` and prepare the connection to it.
pub async fn connect(
    plane: &ControlPlane,
    run: &str,
    options: &ConnectOptions,
    progress: &dyn Progress,
) -> Result<Connection> {
    // A bad alias is refused before anything is waited for or written.
    flyte_ssh_config::validate_alias(&options.host_alias)?;
    let deadline = crate::deadline_after(options.timeout);
    let id = options.scope.run_id(run);
    let transport = plane.route_transport();
    // A proxy the tunnel cannot use is refused before anything is waited for.
    transport
        .check()
        .map_err(|source| DebugClientError::Route {
            url: plane.endpoint().base_url(),
            source,
        })?;

    let link = wait_for_link(plane, &id, options, deadline, progress).await?;
    let wss_url = names::route_url(&link.uri, plane.endpoint());
    let debug_dir = plane.home().debug();
    let headers_file = options
        .headers_file
        .clone()
        .unwrap_or_else(|| debug_dir.headers(&options.host_alias));

    let tokens = plane.route_tokens(options.use_api_key).await?;
    let origin = write_route_token(
        plane,
        &tokens,
        &link.uri,
        &headers_file,
        options.refresh_token,
    )
    .await?;
    if options.wait_for_route {
        match probe_until_open(&wss_url, &headers_file, transport, deadline, progress).await {
            // A cached token the route refuses (revoked, or signed by a key since replaced) is
            // replaced once; only a fresh one being refused is the user's problem.
            Err(DebugClientError::RouteAuthRefused(_)) if origin == TokenOrigin::Cache => {
                write_route_token(plane, &tokens, &link.uri, &headers_file, true).await?;
                probe_until_open(&wss_url, &headers_file, transport, deadline, progress).await?;
            }
            other => other?,
        }
    }

    let host_key = fetch_host_key(&wss_url, &headers_file, transport).await?;
    let host_key_fingerprint = host_key
        .as_deref()
        .map(flyte_keys::public_key_fingerprint)
        .transpose()
        .map_err(DebugClientError::HostKey)?;
    let block = DebugHost {
        alias: options.host_alias.clone(),
        user: options.user.clone(),
        identity_file: options
            .identity_file
            .clone()
            .unwrap_or_else(|| debug_dir.private_key()),
        proxy_program: options.proxy_program.clone(),
        wss_url: wss_url.clone(),
        tunnel_args: transport.tunnel_args(),
        headers_file: headers_file.clone(),
        host_key_alias: names::host_key_alias(&id, &options.action),
        known_hosts_file: debug_dir.known_hosts(),
        host_key_check: if host_key.is_some() {
            HostKeyCheck::Pinned
        } else {
            HostKeyCheck::LearnOnFirstUse
        },
    };
    // Validate the alias and paths now rather than when the block is installed.
    block.lines()?;
    Ok(Connection {
        run_name: run.to_owned(),
        action_name: options.action.clone(),
        wss_url,
        host_key,
        host_key_fingerprint,
        headers_file,
        block,
    })
}

/// A token for the route `uri` from `tokens`, written to the headers file. The headers file
/// outlives this call, so it gets a token for this route only when the control plane mints one
/// (our sandbox), minted with the credential the chain holds; Flyte's ingress takes the access
/// token itself. A cached token the control plane refuses is replaced once.
async fn write_route_token(
    plane: &ControlPlane,
    tokens: &TokenChain,
    uri: &str,
    headers_file: &Path,
    refresh: bool,
) -> Result<TokenOrigin> {
    let write = |value: &Secret| {
        flyte_auth::write_headers_file(headers_file, AUTH_HEADER, value)
            .map_err(|e| DebugClientError::file(headers_file, e))
    };
    let mut refresh = refresh;
    loop {
        let got = tokens
            .get(refresh)
            .await
            .map_err(|source| DebugClientError::RouteToken {
                route: uri.to_owned(),
                source,
            })?;
        let Some((token, origin)) = got else {
            return Err(DebugClientError::NoCredentials {
                endpoint: plane.endpoint().base_url(),
            });
        };
        match route_token(plane, &token.value, uri).await {
            Ok(Some(scoped)) => {
                write(&scoped)?;
                return Ok(TokenOrigin::Fresh);
            }
            Ok(None) => {
                write(&token.value)?;
                return Ok(origin);
            }
            Err(AuthError::Api(e))
                if e.code == Code::Unauthenticated && origin == TokenOrigin::Cache && !refresh =>
            {
                refresh = true;
            }
            Err(source) => {
                return Err(DebugClientError::RouteToken {
                    route: uri.to_owned(),
                    source,
                });
            }
        }
    }
}

/// A token for the route `uri` only, minted with `token`; `None` where the control plane mints
/// none (Flyte's answers `unimplemented`).
async fn route_token(
    plane: &ControlPlane,
    token: &Secret,
    uri: &str,
) -> flyte_auth::Result<Option<Secret>> {
    let minter = plane
        .client()
        .clone()
        .with_tokens(Arc::new(flyte_auth::FixedToken(token.clone())));
    flyte_auth::create_route_token(&minter, uri).await
}

/// Poll the action until it publishes a debug route. A terminal action fails at once: its pod is
/// gone and no route will come.
async fn wait_for_link(
    plane: &ControlPlane,
    id: &RunIdentifier,
    options: &ConnectOptions,
    deadline: Instant,
    progress: &dyn Progress,
) -> Result<TaskLog> {
    let waiting = Waiting::begin(
        progress,
        &format!(
            "waiting for the debug route of run {}/{}",
            id.name, options.action
        ),
    );
    loop {
        let details = runs::action_details(plane, id, &options.action)
            .await?
            .ok_or_else(|| DebugClientError::NoSuchAction {
                run: id.name.clone(),
                action: options.action.clone(),
                project: id.project.clone(),
                domain: id.domain.clone(),
            })?;
        let phase = details.status.phase.short_name();
        if details.status.phase.is_terminal() {
            return Err(DebugClientError::RunEnded {
                run: id.name.clone(),
                phase,
            });
        }
        if let Some(link) = details.ide_link() {
            return Ok(link.clone());
        }
        if Instant::now() >= deadline {
            return Err(DebugClientError::NoRoute {
                run: id.name.clone(),
                phase,
                waited_secs: options.timeout.as_secs(),
            });
        }
        waiting.update(&phase);
        tokio::time::sleep_until(deadline.min(Instant::now() + crate::poll(options.poll_interval)))
            .await;
    }
}

/// The host key the route publishes for pinning, or `None` (then ssh learns it on first use).
/// Only over TLS or on loopback (see [`names::route_is_private`]).
async fn fetch_host_key(
    url: &str,
    headers_file: &Path,
    transport: &Transport,
) -> Result<Option<String>> {
    if !names::route_is_private(url) {
        tracing::debug!(url, "not fetching a host key over plain ws to another host");
        return Ok(None);
    }
    let mut options = ClientOptions::new(url);
    options.headers = flyte_tunnel::read_headers_file(headers_file)
        .map_err(|e| DebugClientError::file(headers_file, e))?;
    options.connect_timeout = PROBE_TIMEOUT;
    options.transport = transport.clone();
    match flyte_tunnel::client::fetch_host_key(&options).await {
        Ok(key) => Ok(key),
        Err(e @ TunnelError::AuthRefused { .. }) => Err(DebugClientError::RouteAuthRefused(e)),
        // The route is reached later by ssh, which reports its own failure; pin nothing now.
        Err(e) => {
            tracing::debug!(error = %e, "the route's host key could not be fetched");
            Ok(None)
        }
    }
}

/// The host key the debug route at `uri` (named by a caller, not published by the API) serves,
/// asked with a token for that route only where the control plane mints one, else with the
/// stored API key's token; either goes only to the control plane's own host
/// ([`names::token_may_go_to`]). `None` when the route publishes none (Flyte's pod side).
pub async fn fetch_route_host_key(plane: &ControlPlane, uri: &str) -> Result<Option<String>> {
    names::token_may_go_to(uri, plane.endpoint())?;
    // The URL checked is the URL used (a relative link resolved against the endpoint).
    let url = names::route_url(uri, plane.endpoint());
    let (token, _) = plane
        .route_tokens(true)
        .await?
        .get(false)
        .await?
        .ok_or_else(|| DebugClientError::NoCredentials {
            endpoint: plane.endpoint().base_url(),
        })?;
    let scoped = route_token(plane, &token.value, &url)
        .await
        .map_err(|source| DebugClientError::RouteToken {
            route: uri.to_owned(),
            source,
        })?;
    let mut options = ClientOptions::new(url.as_str());
    options.headers = vec![bearer_header(scoped.as_ref().unwrap_or(&token.value))];
    options.transport = plane.route_transport().clone();
    flyte_tunnel::client::fetch_host_key(&options)
        .await
        .map_err(|source| DebugClientError::Route { url, source })
}

/// The `Authorization` header carrying `token`.
pub(crate) fn bearer_header(token: &Secret) -> flyte_tunnel::Header {
    flyte_tunnel::Header {
        name: AUTH_HEADER.to_owned(),
        value: format!("Bearer {}", token.expose()),
    }
}

/// Open the route's WebSocket (and close it again) until it answers 101. 401/403 end at once;
/// 404, 5xx and network errors mean the route is still starting.
async fn probe_until_open(
    url: &str,
    headers_file: &Path,
    transport: &Transport,
    deadline: Instant,
    progress: &dyn Progress,
) -> Result<()> {
    let waiting = Waiting::begin(
        progress,
        &format!("waiting for the debug route {url} to answer"),
    );
    loop {
        let headers = flyte_tunnel::read_headers_file(headers_file).map_err(|error| {
            DebugClientError::Route {
                url: url.to_owned(),
                source: error,
            }
        })?;
        let mut options = ClientOptions::new(url);
        options.headers = headers;
        options.transport = transport.clone();
        // Never 0 s: the last attempt near the deadline still gets a real answer (a 503, a
        // refusal) to report rather than an instant timeout.
        options.connect_timeout = PROBE_TIMEOUT
            .min(deadline.saturating_duration_since(Instant::now()))
            .max(Duration::from_secs(1));
        let attempt = async {
            let mut socket = flyte_tunnel::client::connect(&options).await?;
            // The bridge has opened an SSH connection for us; end it politely.
            let _ = socket.close(None).await;
            Ok::<(), TunnelError>(())
        };
        match attempt.await {
            Ok(()) => return Ok(()),
            Err(e @ TunnelError::AuthRefused { .. }) => {
                return Err(DebugClientError::RouteAuthRefused(e));
            }
            Err(e @ TunnelError::RouteNotServing { .. }) => {
                if Instant::now() >= deadline {
                    return Err(DebugClientError::RouteTimeout {
                        url: url.to_owned(),
                        last: e,
                    });
                }
                waiting.update(&e.to_string());
                tokio::time::sleep_until(deadline.min(Instant::now() + PROBE_INTERVAL)).await;
            }
            Err(source) => {
                return Err(DebugClientError::Route {
                    url: url.to_owned(),
                    source,
                });
            }
        }
    }
}

#[allow(
    clippy::disallowed_methods,
    reason = "tests write their fixtures directly"
)]
#[cfg(test)]
mod tests {
    use super::*;
    use crate::NoProgress;

    /// A loopback HTTP server that answers every request with `status`, counting requests.
    fn answering(status: &'static str) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("ws://{}/v1/debug/r", listener.local_addr().unwrap());
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = Arc::clone(&count);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut buf = [0_u8; 4096];
                let _ = stream.read(&mut buf);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
            }
        });
        (url, count)
    }

    fn deadline_in(duration: Duration) -> Instant {
        Instant::now() + duration
    }

    #[tokio::test]
    async fn the_probe_retries_a_starting_route_and_stops_at_once_on_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let headers = dir.path().join("h.headers");
        std::fs::write(&headers, "Authorization: Bearer t\n").unwrap();

        // 503 until the deadline: retried, and the error says what the route last answered.
        let (url, count) = answering("503 Service Unavailable");
        let deadline = deadline_in(Duration::from_millis(2500));
        let err = probe_until_open(&url, &headers, &Transport::default(), deadline, &NoProgress)
            .await
            .unwrap_err();
        assert!(
            matches!(err, DebugClientError::RouteTimeout { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("HTTP 503"), "{err}");
        assert!(count.load(std::sync::atomic::Ordering::SeqCst) >= 2);

        // 401 and 403: no retry, the user must fix the credentials.
        for status in ["401 Unauthorized", "403 Forbidden"] {
            let (url, count) = answering(status);
            let err = probe_until_open(
                &url,
                &headers,
                &Transport::default(),
                deadline_in(Duration::from_secs(30)),
                &NoProgress,
            )
            .await
            .unwrap_err();
            assert!(
                matches!(err, DebugClientError::RouteAuthRefused(_)),
                "{status}: {err}"
            );
            assert!(err.to_string().contains("refused our credentials"), "{err}");
            assert_eq!(
                count.load(std::sync::atomic::Ordering::SeqCst),
                1,
                "{status}"
            );
        }

        // A missing headers file is a local problem, reported at once.
        let (url, _) = answering("503 Service Unavailable");
        let err = probe_until_open(
            &url,
            &dir.path().join("missing"),
            &Transport::default(),
            deadline_in(Duration::from_secs(30)),
            &NoProgress,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, DebugClientError::Route { .. }), "{err}");
    }
}
