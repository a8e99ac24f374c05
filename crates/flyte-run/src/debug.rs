//! The debug connect flow behind `debug::connect` and `flyte-run debug`: find a debug run's
//! route, get a token into a headers file, wait until the route answers with a WebSocket, and
//! describe the ssh Host block that reaches it with the server's host key pinned.
//!
//! Flyte's `SSHDebug` is the behaviour matched (see `shared/reference/flyte-ssh-debug.md`); the
//! departures are improvements: the host key is pinned, and a cached token the route refuses is
//! replaced once before giving up.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flyte_api::idl::flyteidl2::common::{ActionIdentifier, RunIdentifier};
use flyte_api::idl::flyteidl2::core::TaskLog;
use flyte_api::idl::flyteidl2::workflow::{self, ActionDetails};
use flyte_api::{ActionDetailsExt, ActionPhaseExt, Answer, Client, Code, Endpoint};
use flyte_debug_server::settings;
use flyte_ssh_config::{DebugHost, EditOptions, HostKeyCheck, Outcome};
use flyte_tunnel::TunnelError;
use flyte_tunnel::client::ClientOptions;

use crate::context::AppContext;
use crate::control_plane::{self, WhenNone};
use crate::progress::Progress;

pub(crate) use flyte_api::request::{
    DEFAULT_DOMAIN, DEFAULT_PROJECT, ROOT_ACTION as DEFAULT_ACTION,
};
pub(crate) const DEFAULT_ALIAS: &str = "flyte-debug";
/// The route's tunnel header: what Flyte writes and ingresses check.
const AUTH_HEADER: &str = "Authorization";
/// One probe's handshake may take this long before it counts as "still starting".
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// `debug::connect`'s options, with Flyte's defaults.
#[derive(Debug, Clone)]
pub(crate) struct ConnectOptions {
    pub(crate) project: String,
    pub(crate) domain: String,
    pub(crate) action: String,
    pub(crate) user: String,
    pub(crate) identity_file: Option<PathBuf>,
    pub(crate) host_alias: String,
    pub(crate) use_api_key: bool,
    pub(crate) refresh_token: bool,
    pub(crate) headers_file: Option<PathBuf>,
    pub(crate) timeout: Duration,
    pub(crate) poll_interval: Duration,
    pub(crate) wait_for_route: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            project: DEFAULT_PROJECT.to_owned(),
            domain: DEFAULT_DOMAIN.to_owned(),
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
        }
    }
}

/// What a connection needs on this side (Flyte's `SSHDebug`, plus the host key).
#[derive(Debug, Clone)]
pub(crate) struct Connection {
    pub(crate) run_name: String,
    pub(crate) action_name: String,
    pub(crate) wss_url: String,
    pub(crate) host_key: Option<String>,
    pub(crate) host_key_fingerprint: Option<String>,
    pub(crate) headers_file: PathBuf,
    pub(crate) block: DebugHost,
}

impl Connection {
    /// The Host block as text.
    pub(crate) fn ssh_config(&self) -> Result<String, String> {
        self.block.render().map_err(|e| e.to_string())
    }
}

/// The name `flyte debug RUN` relaunches RUN under, exactly as Flyte derives it: lower-case;
/// runs of characters other than `[a-z0-9-]` become `-`; `-` trimmed at both ends; a leading `u`
/// dropped (names starting with `u` are reserved); cut to 59 characters; `-dbg` appended.
pub(crate) fn debug_run_name(run: &str) -> Result<String, String> {
    let lower = run.to_lowercase();
    let mut dashed = String::with_capacity(lower.len());
    let mut in_run = false;
    for c in lower.chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' {
            dashed.push(c);
            in_run = false;
        } else if !in_run {
            // A whole run of other characters becomes one '-' (a '-' next to it stays).
            dashed.push('-');
            in_run = true;
        }
    }
    let trimmed = dashed.trim_matches('-');
    let base = trimmed.strip_prefix('u').unwrap_or(trimmed);
    let base: String = base.chars().take(59).collect();
    if base.is_empty() {
        return Err(format!(
            "cannot derive a debug run name from {run:?}: nothing of it is a letter or digit"
        ));
    }
    Ok(format!("{base}-dbg"))
}

/// The WebSocket URL of a route `uri`: absolute as it is, relative joined to the endpoint's host
/// over https; then https -> wss, http -> ws.
pub(crate) fn route_url(uri: &str, endpoint: &Endpoint) -> String {
    let absolute = if uri.contains("://") {
        uri.to_owned()
    } else {
        let host = endpoint.host();
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        format!("https://{host}/{}", uri.trim_start_matches('/'))
    };
    if let Some(rest) = absolute.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = absolute.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        absolute
    }
}

pub(crate) fn run_id(run: &str, options: &ConnectOptions) -> RunIdentifier {
    flyte_api::request::run_id(&options.project, &options.domain, run)
}

/// One look at an action. `Ok(None)`: no such run or action.
pub(crate) async fn action_details(
    client: &Client,
    run: &RunIdentifier,
    action: &str,
) -> Result<Option<ActionDetails>, String> {
    let request = workflow::GetActionDetailsRequest {
        action_id: buffa::MessageField::some(ActionIdentifier {
            run: buffa::MessageField::some(run.clone()),
            name: action.to_owned(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let runs = client
        .connect(workflow::RunServiceClient::new)
        .map_err(|e| e.to_string())?;
    match runs.get_action_details(request).await.owned() {
        Ok(response) => Ok(Some(response.details.into_option().unwrap_or_default())),
        Err(e) if e.code == Code::NotFound => Ok(None),
        Err(e) => Err(format!("run {:?}: {e}", run.name)),
    }
}

/// Where a token came from: a cache may hold one the route no longer accepts.
enum TokenOrigin {
    Cache,
    Fresh,
}

/// A token for the route: the debug bearer cache when it holds a usable one for this endpoint
/// (unless `refresh`), else minted from the control plane's credential, or from the stored API
/// key with `use_api_key`.
fn route_token(
    host: &AppContext,
    endpoint: &Endpoint,
    client: &Client,
    options: &ConnectOptions,
    refresh: bool,
) -> Result<(flyte_auth::Token, TokenOrigin), String> {
    let files = if options.use_api_key {
        control_plane::api_key_files(host)
    } else {
        control_plane::credential_files(host, endpoint)
    };
    let key_file = files.key_file.clone();
    // With `use_api_key` the user asked for that credential: a token cached from another one
    // does not stand in for it (the key's own cache still saves a mint).
    if !refresh && !options.use_api_key {
        let debug_cache = flyte_keys::default_dir(&host.home).join(flyte_auth::BEARER_FILE);
        let now = flyte_auth::token::unix_now();
        for cache in [&debug_cache, &files.cache] {
            if let Some(token) = flyte_auth::token::cached(cache, &endpoint.token_cache_key())
                && token.usable_at(now)
            {
                return Ok((token, TokenOrigin::Cache));
            }
        }
    }
    let source = host
        .block_on(control_plane::token_source(client, endpoint, files))?
        .ok_or_else(|| {
            if options.use_api_key {
                format!(
                    "no API key at {}: create one with auth::ensure_api_key(\"flyte-ssh-debug\")",
                    key_file.display()
                )
            } else {
                format!(
                    "no credentials for {}: create an API key with auth::ensure_api_key(\"flyte-ssh-debug\") and pass use_api_key",
                    endpoint.base_url()
                )
            }
        })?;
    let (tokens, _header) = source;
    let token = host
        .block_on(tokens.get(refresh))
        .map_err(|e| format!("cannot get a token for the debug route: {e}"))?;
    // Flyte's debug cache gets the fresh token, replacing one the route may have refused, so the
    // next connect starts from a good one.
    let debug_cache = flyte_keys::default_dir(&host.home).join(flyte_auth::BEARER_FILE);
    if let Err(e) = flyte_auth::token::store(&debug_cache, &endpoint.token_cache_key(), &token) {
        tracing::warn!(error = %e, "cannot cache the debug token");
    }
    Ok((token, TokenOrigin::Fresh))
}

/// The `HostKeyAlias` of a debug action: one name per project, domain, run and action. A new
/// debug pod has a new host key, and the same run name in two projects is two pods. Names hold
/// no '.', so the dotted join is injective.
pub(crate) fn host_key_alias(id: &RunIdentifier, action: &str) -> String {
    format!(
        "{}.{action}.{}.{}.flyte-debug",
        id.name, id.domain, id.project
    )
}

/// Wait for the debug route of `run`/`action` and prepare the connection to it.
pub(crate) fn connect(
    host: &AppContext,
    run: &str,
    options: &ConnectOptions,
) -> Result<Connection, String> {
    // A bad alias is refused before anything is waited for or written.
    flyte_ssh_config::validate_alias(&options.host_alias).map_err(|e| e.to_string())?;
    let endpoint = control_plane::endpoint(host, WhenNone::Fail)?;
    let client = host.block_on(control_plane::client_for(host, &endpoint))?;
    let deadline = Instant::now() + host.bound(options.timeout);
    let id = run_id(run, options);

    let link = wait_for_link(host, &client, &id, options, deadline)?;
    let wss_url = route_url(&link.uri, &endpoint);
    let debug_dir = flyte_keys::default_dir(&host.home);
    let headers_file = options
        .headers_file
        .clone()
        .unwrap_or_else(|| flyte_auth::default_headers_file(&debug_dir, &options.host_alias));

    let write_token = |refresh: bool| -> Result<TokenOrigin, String> {
        let write = |value: &flyte_api::Secret| {
            flyte_auth::write_headers_file(&headers_file, AUTH_HEADER, value)
                .map_err(|e| format!("{}: {e}", headers_file.display()))
        };
        let mut refresh = refresh;
        loop {
            let (token, origin) = route_token(host, &endpoint, &client, options, refresh)?;
            // The headers file outlives this command, so it gets a token for this route only
            // when the control plane mints one (our sandbox), minted with the credential the
            // user chose; Flyte's ingress takes the access token itself.
            let minter = client
                .clone()
                .with_tokens(Arc::new(flyte_auth::FixedToken(token.value.clone())));
            match host.block_on(flyte_auth::create_route_token(&minter, &link.uri)) {
                Ok(Some(scoped)) => {
                    write(&scoped)?;
                    return Ok(TokenOrigin::Fresh);
                }
                Ok(None) => {
                    write(&token.value)?;
                    return Ok(origin);
                }
                // A cached token the control plane refuses is replaced once.
                Err(flyte_auth::AuthError::Api(e))
                    if e.code == flyte_api::Code::Unauthenticated
                        && matches!(origin, TokenOrigin::Cache)
                        && !refresh =>
                {
                    refresh = true;
                }
                Err(e) => {
                    return Err(format!(
                        "cannot get a token for the debug route {}: {e}",
                        link.uri
                    ));
                }
            }
        }
    };
    let origin = write_token(options.refresh_token)?;
    if options.wait_for_route {
        match probe_until_open(host, &wss_url, &headers_file, deadline) {
            // A cached token the route refuses (revoked, or signed by a key since replaced) is
            // replaced once; only a fresh one being refused is the user's problem.
            Err(ProbeError::AuthRefused(_)) if matches!(origin, TokenOrigin::Cache) => {
                write_token(true)?;
                probe_until_open(host, &wss_url, &headers_file, deadline)
                    .map_err(|e| e.to_string())?;
            }
            other => other.map_err(|e| e.to_string())?,
        }
    }

    let host_key = fetch_host_key(host, &wss_url, &headers_file)?;
    let host_key_fingerprint = host_key
        .as_deref()
        .map(flyte_keys::public_key_fingerprint)
        .transpose()
        .map_err(|e| format!("the route published an unusable host key: {e}"))?;
    let proxy_program = std::env::current_exe()
        .map_err(|e| format!("cannot find the flyte-run binary for ProxyCommand: {e}"))?;
    let block = DebugHost {
        alias: options.host_alias.clone(),
        user: options.user.clone(),
        identity_file: options
            .identity_file
            .clone()
            .unwrap_or_else(|| debug_dir.join(flyte_keys::KEY_FILE_NAME)),
        proxy_program,
        wss_url: wss_url.clone(),
        headers_file: headers_file.clone(),
        host_key_alias: host_key_alias(&id, &options.action),
        known_hosts_file: debug_dir.join("known_hosts"),
        host_key_check: if host_key.is_some() {
            HostKeyCheck::Pinned
        } else {
            HostKeyCheck::LearnOnFirstUse
        },
    };
    // Validate the alias and paths now rather than when the block is installed.
    block.lines().map_err(|e| e.to_string())?;
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

/// Poll the action until it publishes a debug route. A terminal action fails at once: its pod is
/// gone and no route will come.
fn wait_for_link(
    host: &AppContext,
    client: &Client,
    id: &RunIdentifier,
    options: &ConnectOptions,
    deadline: Instant,
) -> Result<TaskLog, String> {
    let mut progress = Progress::new(format!(
        "waiting for the debug route of run {}/{}",
        id.name, options.action
    ));
    loop {
        let details = host
            .block_on(action_details(client, id, &options.action))?
            .ok_or_else(|| {
                format!(
                    "no action {:?} in run {:?} ({}/{}); check the run name, project and domain",
                    options.action, id.name, id.project, id.domain
                )
            })?;
        let phase = details.status.phase.short_name();
        if details.status.phase.is_terminal() {
            return Err(format!(
                "run {:?} has already ended ({phase}): its task is gone, so there is nothing to \
                 connect to; launch its task again in debug mode (`flyte-run debug RUN` relaunches \
                 a run's task, or use debug::launch_env in a playbook)",
                id.name
            ));
        }
        if let Some(link) = details.ide_link() {
            return Ok(link.clone());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "run {:?} published no debug route within {} s (it is {phase}); was it launched \
                 in debug mode (debug::launch_env)?",
                id.name,
                options.timeout.as_secs()
            ));
        }
        progress.update(phase);
        progress.sleep(
            options
                .poll_interval
                .min(deadline.saturating_duration_since(Instant::now())),
        );
    }
}

#[derive(Debug)]
enum ProbeError {
    AuthRefused(TunnelError),
    Timeout { url: String, last: TunnelError },
    Fatal { url: String, error: TunnelError },
}

impl std::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeError::AuthRefused(e) => {
                write!(f, "{e}; or pass use_api_key to use the stored API key")
            }
            ProbeError::Timeout { url, last } => write!(
                f,
                "the debug route {url} did not start serving within the timeout: {last}"
            ),
            ProbeError::Fatal { url, error } => write!(f, "the debug route {url}: {error}"),
        }
    }
}

/// The host key the route publishes for pinning, or `None` (then ssh learns it on first use).
/// Only over TLS or on loopback: over plain `ws://` to another host, whoever can answer for the
/// route could answer for the key too, so pinning what it says would pin an attacker's key.
fn fetch_host_key(
    host: &AppContext,
    url: &str,
    headers_file: &std::path::Path,
) -> Result<Option<String>, String> {
    if !route_is_private(url) {
        tracing::debug!(url, "not fetching a host key over plain ws to another host");
        return Ok(None);
    }
    let mut options = ClientOptions::new(url);
    options.headers = flyte_tunnel::read_headers_file(headers_file).map_err(|e| e.to_string())?;
    options.connect_timeout = PROBE_TIMEOUT;
    match host.block_on(flyte_tunnel::client::fetch_host_key(&options)) {
        Ok(key) => Ok(key),
        Err(e @ TunnelError::AuthRefused { .. }) => Err(e.to_string()),
        // The route is reached later by ssh, which reports its own failure; pin nothing now.
        Err(e) => {
            tracing::debug!(error = %e, "the route's host key could not be fetched");
            Ok(None)
        }
    }
}

/// Whether the control plane's token (for `endpoint`) may go to the route at `url` that a
/// script named (a route the API published is trusted as it is): over TLS to the endpoint's own
/// host, or to a loopback host when the endpoint is on loopback too. Otherwise a refusal that
/// names both hosts.
pub(crate) fn token_may_go_to(url: &str, endpoint: &Endpoint) -> Result<(), String> {
    let url = route_url(url, endpoint);
    let route = ["ws://", "wss://"]
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme))
        .and_then(|rest| rest.split('/').next())
        .and_then(|authority| Endpoint::parse(&format!("http://{authority}"), true).ok())
        .ok_or_else(|| format!("{url} is not a ws(s) or http(s) URL with a host"))?;
    let same_host = route.host().eq_ignore_ascii_case(endpoint.host());
    let allowed =
        (url.starts_with("wss://") && same_host) || (route.is_loopback() && endpoint.is_loopback());
    if allowed {
        return Ok(());
    }
    Err(format!(
        "not sending the token for {} to {url}: it goes only to that host over TLS (or between loopback addresses); give the route URL the API published for that control plane",
        endpoint.host()
    ))
}

/// Whether what travels to `url` is private: `wss://`/`https://`, or a loopback host.
fn route_is_private(url: &str) -> bool {
    let Some((scheme, rest)) = url.split_once("://") else {
        return false;
    };
    if matches!(scheme, "wss" | "https") {
        return true;
    }
    let authority = rest.split('/').next().unwrap_or_default();
    Endpoint::parse(&format!("http://{authority}"), true).is_ok_and(|e| e.is_loopback())
}

/// Open the route's WebSocket (and close it again) until it answers 101. 401/403 end at once;
/// 404, 5xx and network errors mean the route is still starting.
fn probe_until_open(
    host: &AppContext,
    url: &str,
    headers_file: &std::path::Path,
    deadline: Instant,
) -> Result<(), ProbeError> {
    let mut progress = Progress::new(format!("waiting for the debug route {url} to answer"));
    loop {
        let attempt = flyte_tunnel::read_headers_file(headers_file).and_then(|headers| {
            let mut options = ClientOptions::new(url);
            options.headers = headers;
            // Never 0 s: the last attempt near the deadline still gets a real answer (a 503,
            // a refusal) to report rather than an instant timeout.
            options.connect_timeout = PROBE_TIMEOUT
                .min(deadline.saturating_duration_since(Instant::now()))
                .max(Duration::from_secs(1));
            host.block_on(async {
                let mut socket = flyte_tunnel::client::connect(&options).await?;
                // The bridge has opened an SSH connection for us; end it politely.
                let _ = socket.close(None).await;
                Ok(())
            })
        });
        match attempt {
            Ok(()) => return Ok(()),
            Err(e @ TunnelError::AuthRefused { .. }) => return Err(ProbeError::AuthRefused(e)),
            Err(e @ TunnelError::RouteNotServing { .. }) => {
                if Instant::now() >= deadline {
                    return Err(ProbeError::Timeout {
                        url: url.to_owned(),
                        last: e,
                    });
                }
                progress.update(e.to_string());
                progress.sleep(
                    Duration::from_millis(500)
                        .min(deadline.saturating_duration_since(Instant::now())),
                );
            }
            Err(error) => {
                return Err(ProbeError::Fatal {
                    url: url.to_owned(),
                    error,
                });
            }
        }
    }
}

/// Install `block` in the ssh config, and pin the published host key in our known_hosts (or
/// forget a stale one so `accept-new` can learn the new pod's).
pub(crate) fn install(
    block: &DebugHost,
    host_key: Option<&str>,
    options: &EditOptions,
) -> Result<Outcome, String> {
    let lines = block.lines().map_err(|e| e.to_string())?;
    let outcome =
        flyte_ssh_config::install(options, &block.alias, &lines).map_err(|e| e.to_string())?;
    if !options.dry_run {
        pin_host_key(block, host_key)?;
    }
    Ok(outcome)
}

/// Pin the published key in our known_hosts under the block's `HostKeyAlias`, or forget a stale
/// one so `accept-new` can learn the new pod's.
pub(crate) fn pin_host_key(block: &DebugHost, host_key: Option<&str>) -> Result<(), String> {
    match host_key {
        Some(key) => {
            flyte_ssh_config::pin_host_key(&block.known_hosts_file, &block.host_key_alias, key)
        }
        None => flyte_ssh_config::forget_host_key(&block.known_hosts_file, &block.host_key_alias),
    }
    .map_err(|e| e.to_string())
}

/// The environment that turns SSH debug on for a run: `_F_E_SSH`, `_F_SSH_PK` (our public key),
/// `_F_E_VS`, then `extra` on top.
pub(crate) fn launch_env(
    public_key: &str,
    extra: impl IntoIterator<Item = (String, String)>,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        (settings::ENV_ENABLE.to_owned(), "1".to_owned()),
        (
            settings::ENV_PUBLIC_KEY.to_owned(),
            public_key.trim().to_owned(),
        ),
        (settings::ENV_VSCODE.to_owned(), "True".to_owned()),
    ];
    for (key, value) in extra {
        match env.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => env.push((key, value)),
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_keys_are_fetched_only_over_tls_or_loopback() {
        for (url, private) in [
            ("wss://flyte.example.com/v1/debug/r", true),
            ("https://flyte.example.com/x", true),
            ("ws://127.0.0.1:9/v1/debug/p/d/r/a0", true),
            ("ws://[::1]:9/x", true),
            ("ws://localhost/x", true),
            ("ws://flyte.example.com/x", false),
            ("ws://10.0.0.7:8080/x", false),
            ("http://[2001:db8::1]:80/x", false),
            ("no scheme", false),
        ] {
            assert_eq!(route_is_private(url), private, "{url}");
        }
    }

    /// Issue 13, defect 12: the same run name in two projects shared one `HostKeyAlias` and so
    /// one pinned key; the second connection failed "Host key verification failed".
    #[test]
    fn host_key_aliases_differ_per_project_and_domain() {
        let id = |project: &str, domain: &str| RunIdentifier {
            project: project.to_owned(),
            domain: domain.to_owned(),
            name: "train".to_owned(),
            ..Default::default()
        };
        let aliases = [
            host_key_alias(&id("p1", "development"), "a0"),
            host_key_alias(&id("p2", "development"), "a0"),
            host_key_alias(&id("p1", "production"), "a0"),
            host_key_alias(&id("p1", "development"), "a1"),
        ];
        assert_eq!(aliases[0], "train.a0.development.p1.flyte-debug");
        let distinct: std::collections::BTreeSet<_> = aliases.iter().collect();
        assert_eq!(distinct.len(), aliases.len());
    }

    #[test]
    fn debug_run_names_are_derived_as_flyte_derives_them() {
        let long = "a".repeat(80);
        let cut = format!("{}-dbg", "a".repeat(59));
        for (run, want) in [
            ("train", "train-dbg"),
            ("Train_Model v2", "train-model-v2-dbg"),
            ("my__run!!x", "my-run-x-dbg"),
            ("--edge--", "edge-dbg"),
            ("upload", "pload-dbg"),
            ("Upload", "pload-dbg"),
            ("u-x", "-x-dbg"),
            ("a-b", "a-b-dbg"),
            ("a-_b", "a--b-dbg"),
            ("abc123", "abc123-dbg"),
            ("été", "t-dbg"),
            (long.as_str(), cut.as_str()),
        ] {
            assert_eq!(debug_run_name(run).as_deref(), Ok(want), "{run:?}");
        }
        for run in ["", "u", "___", "-"] {
            let err = debug_run_name(run).unwrap_err();
            assert!(
                err.contains("cannot derive a debug run name"),
                "{run:?}: {err}"
            );
        }
    }

    #[test]
    fn a_scripts_route_url_gets_the_token_only_on_the_endpoints_host() {
        let cluster = Endpoint::parse("dns:///flyte.example.com", false).unwrap();
        let sandbox = Endpoint::parse("http://127.0.0.1:30080", true).unwrap();
        for (url, endpoint, allowed) in [
            ("https://flyte.example.com/v1/debug/x", &cluster, true),
            ("wss://FLYTE.example.com:8443/v1/debug/x", &cluster, true),
            ("/v1/debug/x", &cluster, true),
            ("http://flyte.example.com/v1/debug/x", &cluster, false),
            ("https://evil.example.net/v1/debug/x", &cluster, false),
            ("https://flyte.example.com.evil.net/x", &cluster, false),
            ("http://127.0.0.1:1234/v1/debug/x", &cluster, false),
            ("http://127.0.0.1:41000/v1/debug/x", &sandbox, true),
            ("ws://localhost:41000/v1/debug/x", &sandbox, true),
            ("http://10.0.0.5:41000/v1/debug/x", &sandbox, false),
            ("ftp://127.0.0.1/x", &sandbox, false),
        ] {
            let result = token_may_go_to(url, endpoint);
            assert_eq!(result.is_ok(), allowed, "{url}: {result:?}");
            if let Err(message) = result {
                assert!(message.contains(endpoint.host()), "{message}");
            }
        }
    }

    #[test]
    fn route_urls_become_websocket_urls() {
        let endpoint = Endpoint::parse("dns:///flyte.example.com:443", false).unwrap();
        for (uri, want) in [
            ("https://h.example/x/y", "wss://h.example/x/y"),
            (
                "http://127.0.0.1:9/v1/debug/p/d/r/a0",
                "ws://127.0.0.1:9/v1/debug/p/d/r/a0",
            ),
            ("wss://h/x", "wss://h/x"),
            ("ws://h/x", "ws://h/x"),
            ("/v1/debug/r", "wss://flyte.example.com/v1/debug/r"),
            ("v1/debug/r", "wss://flyte.example.com/v1/debug/r"),
        ] {
            assert_eq!(route_url(uri, &endpoint), want, "{uri}");
        }
        let v6 = Endpoint::parse("https://[::1]:8443", false).unwrap();
        assert_eq!(route_url("/r", &v6), "wss://[::1]/r");
    }

    /// A loopback HTTP server that answers every request with `status`, counting requests.
    fn answering(status: &'static str) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("ws://{}/v1/debug/r", listener.local_addr().unwrap());
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = std::sync::Arc::clone(&count);
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

    #[test]
    fn the_probe_retries_a_starting_route_and_stops_at_once_on_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let headers = dir.path().join("h.headers");
        std::fs::write(&headers, "Authorization: Bearer t\n").unwrap();
        let host = AppContext::new(dir.path().to_owned(), None);

        // 503 until the deadline: retried, and the error says what the route last answered.
        let (url, count) = answering("503 Service Unavailable");
        let deadline = Instant::now() + Duration::from_millis(2500);
        let err = probe_until_open(&host, &url, &headers, deadline).unwrap_err();
        assert!(matches!(err, ProbeError::Timeout { .. }), "{err}");
        assert!(err.to_string().contains("HTTP 503"), "{err}");
        assert!(count.load(std::sync::atomic::Ordering::SeqCst) >= 2);

        // 401 and 403: no retry, the user must fix the credentials.
        for status in ["401 Unauthorized", "403 Forbidden"] {
            let (url, count) = answering(status);
            let deadline = Instant::now() + Duration::from_secs(30);
            let err = probe_until_open(&host, &url, &headers, deadline).unwrap_err();
            assert!(matches!(err, ProbeError::AuthRefused(_)), "{status}: {err}");
            assert!(err.to_string().contains("refused our credentials"), "{err}");
            assert_eq!(
                count.load(std::sync::atomic::Ordering::SeqCst),
                1,
                "{status}"
            );
        }

        // A missing headers file is a local problem, reported at once.
        let (url, _) = answering("503 Service Unavailable");
        let err = probe_until_open(&host, &url, &dir.path().join("missing"), deadline_in(30))
            .unwrap_err();
        assert!(matches!(err, ProbeError::Fatal { .. }), "{err}");
    }

    fn deadline_in(secs: u64) -> Instant {
        Instant::now() + Duration::from_secs(secs)
    }

    #[test]
    fn launch_env_sets_the_three_variables_then_extra() {
        let env = launch_env(
            "ssh-ed25519 AAAA k\n",
            [
                ("_F_SSH_USER".to_owned(), "dev".to_owned()),
                ("_F_E_VS".to_owned(), "False".to_owned()),
            ],
        );
        let want = [
            ("_F_E_SSH", "1"),
            ("_F_SSH_PK", "ssh-ed25519 AAAA k"),
            ("_F_E_VS", "False"),
            ("_F_SSH_USER", "dev"),
        ];
        assert_eq!(env.len(), want.len());
        for ((k, v), (wk, wv)) in env.iter().zip(want) {
            assert_eq!((k.as_str(), v.as_str()), (wk, wv));
        }
    }
}
