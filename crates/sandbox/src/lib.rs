//! The embedded control plane: what a Flyte 2 deployment serves for SSH debugging, on one
//! machine, over the same Connect API (flyteidl2, binary protobuf and JSON), so the same client
//! and playbooks, and Flyte's own CLI and SDK, work against both.
//!
//! Served today: Flyte's run, logs, project, cluster and auth-metadata services,
//! `/.well-known/oauth-authorization-server`, an OAuth2 token endpoint (client credentials; HS256
//! JWTs that expire), and two services of our own (`flyterun.sandbox.v1`): `ApiKeyService`
//! (create, get, delete, list; secrets stored as SHA-256) and `RouteTokenService` (tokens that
//! open one debug route only, for the headers file ssh reads).
//! Every call but metadata, token and health needs a valid bearer token. The first start creates
//! a bootstrap credential (an API key, encoded as Flyte encodes them, 0600) so the local user can
//! authenticate with no configuration. State is SQLite in the state directory.
//!
//! Files in the state directory (`~/.flyte/sandbox` by default):
//! `sandbox.db`, `signing.key` (0600), `credential` (0600; the bootstrap API key).

mod clock;
mod connect;
mod device;
mod events;
pub use server::DEVICE_DECISION_PATH;
mod own_services;
mod runs;
mod server;
pub mod store;
mod tls;
pub mod tokens;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::store::Store;
use crate::tokens::Signer;

/// The `iss` of every token; constant, so tokens survive a restart on another port.
pub const ISSUER: &str = "flyte-sandbox";
/// The project every sandbox lists (Flyte's sample project), and the domains it has.
pub const DEFAULT_PROJECT: &str = flyte_api::request::DEFAULT_PROJECT;
pub const DEFAULT_DOMAINS: [&str; 3] = ["development", "staging", "production"];
/// Lifetime of issued tokens.
pub const TOKEN_TTL_SECS: i64 = 3600;
// The state directory's files are named by flyte-home, which clients read them through.
pub use flyte_home::{
    SANDBOX_CA_FILE as CA_FILE, SANDBOX_CLIENT_SECRET_FILE as CLIENT_SECRET_FILE,
    SANDBOX_CREDENTIAL_FILE as CREDENTIAL_FILE, SANDBOX_FLYTE_CONFIG_FILE as FLYTE_CONFIG_FILE,
};
/// The name of the bootstrap API key.
pub const ADMIN_KEY_NAME: &str = "sandbox-admin";

/// Everything that can go wrong starting or running the sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("sandbox database: {0}")]
    Store(String),
    #[error("{0}")]
    Instance(#[from] flyte_home::HomeError),
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Fs(#[from] flyte_fs::FsError),
    #[error("{0}")]
    Auth(#[from] flyte_auth::AuthError),
}

/// `Result` with this crate's error.
pub type Result<T, E = SandboxError> = std::result::Result<T, E>;

/// State shared by the handlers.
pub(crate) struct Shared {
    pub(crate) store: Arc<Store>,
    pub(crate) signer: Signer,
    pub(crate) base_url: String,
    pub(crate) token_ttl_secs: i64,
    pub(crate) runs: Arc<runs::Runs>,
    pub(crate) state_dir: PathBuf,
    /// Device codes waiting for the owner's approval, and refresh tokens (in memory: a restart
    /// sends devices back to a new login).
    pub(crate) grants: std::sync::Mutex<device::Grants>,
    /// The loopback redirect URI `GetPublicClientConfig` names for browser logins (PKCE): a port
    /// that was free when the sandbox started, so two sandboxes' clients do not collide.
    pub(crate) redirect_uri: String,
    /// Action events from executors elsewhere (in memory, bounded).
    pub(crate) journal: std::sync::Mutex<events::Journal>,
}

/// A loopback redirect URI on a port free right now.
fn free_redirect_uri() -> Result<String> {
    let probe = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).map_err(|e| {
        SandboxError::Io(format!("cannot find a free port for the redirect URI: {e}"))
    })?;
    let port = probe
        .local_addr()
        .map_err(|e| {
            SandboxError::Io(format!("cannot find a free port for the redirect URI: {e}"))
        })?
        .port();
    Ok(format!("http://127.0.0.1:{port}/callback"))
}

/// The client id of Flyte's public client (PKCE, the device flow), as `GetPublicClientConfig`
/// names it.
pub(crate) const PUBLIC_CLIENT_ID: &str = "flyte-run";

/// Create an API key: a random client id and secret; only the secret's hash is stored.
pub(crate) fn create_api_key(store: &Store, name: &str) -> Result<(String, String)> {
    let mut id = [0u8; 6];
    let mut secret = [0u8; 32];
    getrandom::fill(&mut id).map_err(|e| SandboxError::Io(format!("randomness: {e}")))?;
    getrandom::fill(&mut secret).map_err(|e| SandboxError::Io(format!("randomness: {e}")))?;
    let client_id = format!("sbx-{}", hex::encode(id));
    let secret = <base64ct::Base64UrlUnpadded as base64ct::Encoding>::encode_string(&secret);
    store.insert_api_key(&client_id, name, &secret, server::now())?;
    Ok((client_id, secret))
}

/// Stops a sandbox's running actions (their process groups) at shutdown.
#[derive(Debug, Clone)]
pub struct ProcessStopper {
    runs: Arc<runs::Runs>,
    /// Keeps the directory ours until the processes are stopped, after `serve` has returned.
    _lock: Arc<flyte_home::instance::InstanceLock>,
}

impl ProcessStopper {
    /// Shut the runs down: stop the drivers, record every unfinished action as failed by the
    /// system (`SandboxStopped`), end the debug sessions, then SIGTERM every process group
    /// (tasks and shells), wait up to `grace`, SIGKILL what is left. Returns how many actions
    /// were running. Blocks the calling thread.
    pub fn stop_all(&self, grace: std::time::Duration) -> usize {
        self.runs.stop_processes(grace)
    }
}

/// A sandbox ready to serve.
pub struct Sandbox {
    shared: Arc<Shared>,
    /// Held while this sandbox (or its process stopper) lives: one sandbox per directory.
    lock: Arc<flyte_home::instance::InstanceLock>,
    state_dir: PathBuf,
    body_read_timeout: std::time::Duration,
    header_timeout: std::time::Duration,
    /// This start's TLS (made at open, before the server is announced).
    tls: tls::LoopbackTls,
}

/// How long a client may take to send a request body once its headers arrived.
pub const DEFAULT_BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// How long a connection may take to send a request head, and may sit idle between requests,
/// before it is closed: a client cannot hold a connection by sending half a head.
pub const DEFAULT_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("state_dir", &self.state_dir)
            .field("base_url", &self.shared.base_url)
            .field("body_read_timeout", &self.body_read_timeout)
            .field("header_timeout", &self.header_timeout)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Open the state in `state_dir` (created 0700) for a server reachable at `base_url`, and
    /// make sure the bootstrap credential exists and is known.
    pub fn open(state_dir: &Path, base_url: &str) -> Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(|e| SandboxError::Io(format!("cannot create {}: {e}", state_dir.display())))?;
        // Before anything reads or migrates the state: a second sandbox stops here.
        let lock = Arc::new(flyte_home::instance::InstanceLock::acquire(state_dir)?);
        let files = flyte_home::SandboxDir::new(state_dir);
        let store = Arc::new(Store::open(&files.database())?);
        let runs = Arc::new(runs::Runs::new(state_dir, Arc::clone(&store)));
        let loaded = runs.load()?;
        tracing::info!(runs = loaded, "loaded the runs of earlier starts");
        let signer = Signer::load_or_create(&files.signing_key(), ISSUER)?;
        let tls = tls::generate()?;
        let sandbox = Self {
            tls,
            lock,
            shared: Arc::new(Shared {
                store,
                signer,
                base_url: base_url.trim_end_matches('/').to_owned(),
                token_ttl_secs: TOKEN_TTL_SECS,
                runs,
                state_dir: state_dir.to_owned(),
                grants: std::sync::Mutex::default(),
                redirect_uri: free_redirect_uri()?,
                journal: std::sync::Mutex::default(),
            }),
            state_dir: state_dir.to_owned(),
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
        };
        sandbox.ensure_credential()?;
        sandbox.write_flyte_config()?;
        Ok(sandbox)
    }

    /// Answer `deadline_exceeded` to a request whose body has not fully arrived within `limit`
    /// (default [`DEFAULT_BODY_READ_TIMEOUT`]).
    #[must_use]
    pub fn with_body_read_timeout(mut self, limit: std::time::Duration) -> Self {
        self.body_read_timeout = limit;
        self
    }

    /// Close API and ingress connections whose request head has not arrived within `limit`
    /// (also the longest idle time between requests; default [`DEFAULT_HEADER_TIMEOUT`]).
    #[must_use]
    pub fn with_header_timeout(mut self, limit: std::time::Duration) -> Self {
        self.header_timeout = limit;
        self
    }

    /// A handle that stops the running actions' processes when the sandbox shuts down; take
    /// it before [`Sandbox::serve`], which consumes the sandbox.
    pub fn process_stopper(&self) -> ProcessStopper {
        ProcessStopper {
            runs: Arc::clone(&self.shared.runs),
            _lock: Arc::clone(&self.lock),
        }
    }

    /// Where the bootstrap credential is kept.
    pub fn credential_path(state_dir: &Path) -> PathBuf {
        flyte_home::SandboxDir::new(state_dir).credential()
    }

    fn ensure_credential(&self) -> Result<()> {
        let path = Self::credential_path(&self.state_dir);
        let known = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| flyte_auth::ApiKey::decode(&text).ok())
            .map(|key| self.shared.store.api_key(&key.client_id))
            .transpose()?
            .flatten()
            .is_some();
        if known {
            return Ok(());
        }
        let (client_id, secret) = create_api_key(&self.shared.store, ADMIN_KEY_NAME)?;
        let key = flyte_auth::ApiKey {
            endpoint: flyte_auth::strip_scheme(&self.shared.base_url).to_owned(),
            client_id,
            client_secret: flyte_api::Secret::new(secret),
            org: String::new(),
        };
        flyte_fs::replace(
            &path,
            format!("{}\n", key.encode()?).as_bytes(),
            flyte_fs::SECRET_MODE,
        )?;
        tracing::info!(path = %path.display(), "created the bootstrap credential");
        Ok(())
    }

    /// Write what Flyte's own CLI and SDK need to use this sandbox, all 0600: the CA of this
    /// start (`ca.pem`), the bootstrap credential's secret (`client-secret`), and a Flyte config
    /// (`flyte-config.yaml`: the endpoint over TLS, the CA, client credentials; the default
    /// project and domain), so `flyte --config ~/.flyte/sandbox/flyte-config.yaml get run` works.
    fn write_flyte_config(&self) -> Result<()> {
        let endpoint = flyte_auth::strip_scheme(&self.shared.base_url);
        // The certificate names the loopback addresses only, and the token endpoint is plain
        // http (see `connect.rs`): for any other address there is no safe config to write.
        let loopback =
            flyte_api::Endpoint::parse(&self.shared.base_url, true).is_ok_and(|e| e.is_loopback());
        if !loopback {
            tracing::warn!(
                endpoint,
                "not writing a Flyte config: the sandbox is not on loopback"
            );
            return Ok(());
        }
        let files = flyte_home::SandboxDir::new(&self.state_dir);
        let ca = files.ca_cert();
        flyte_fs::replace(&ca, self.tls.ca_pem.as_bytes(), flyte_fs::SECRET_MODE)?;
        let text = std::fs::read_to_string(Self::credential_path(&self.state_dir))
            .map_err(|e| SandboxError::Io(format!("the bootstrap credential: {e}")))?;
        let key = flyte_auth::ApiKey::decode(&text)?;
        let secret = files.client_secret();
        flyte_fs::replace(
            &secret,
            key.client_secret.expose().as_bytes(),
            flyte_fs::SECRET_MODE,
        )?;
        let config = flyte_config::FlyteFile {
            endpoint: format!("dns:///{endpoint}"),
            insecure: false,
            ca_cert_file_path: Some(ca.display().to_string()),
            auth_type: Some(flyte_config::AuthType::ClientSecret),
            client_id: Some(key.client_id.clone()),
            client_secret_location: Some(secret.display().to_string()),
            project: DEFAULT_PROJECT.to_owned(),
            domain: DEFAULT_DOMAINS[0].to_owned(),
        }
        .render("Written by flyte-run for the local sandbox; rewritten at each start.");
        flyte_fs::replace(
            &files.flyte_config(),
            config.as_bytes(),
            flyte_fs::SECRET_MODE,
        )?;
        Ok(())
    }

    /// The HTTP router (for embedding in a larger server or a test).
    pub fn router(&self) -> axum::Router {
        server::router(Arc::clone(&self.shared), self.body_read_timeout)
    }

    /// Serve the API on `listener`, and debug routes on an ingress listening on the same
    /// address (another port), until the task is dropped. Each listener holds at most a quarter
    /// of the process's file descriptors, so clients that hold connections can neither take
    /// the other listener's share nor make the server fail; running out pauses accepting.
    pub async fn serve(self, listener: TcpListener) -> std::io::Result<()> {
        let address = listener.local_addr()?;
        let ingress = TcpListener::bind((address.ip(), 0)).await?;
        self.serve_with_ingress(listener, ingress).await
    }

    /// [`Sandbox::serve`] with the ingress on a listener of the caller's (who can then say
    /// where it is before serving starts).
    pub async fn serve_with_ingress(
        self,
        listener: TcpListener,
        ingress: TcpListener,
    ) -> std::io::Result<()> {
        // Flyte's clients expect an http(s) IDE link and derive ws(s) themselves.
        let ingress_url = format!("http://{}", ingress.local_addr()?);
        let routes = Arc::clone(&self.shared.runs.ingress);
        // Set once; a second `serve` of the same sandbox would keep the first URL.
        let _ = routes.base_url.set(ingress_url);
        let shared = Arc::clone(&self.shared);
        let mut config =
            flyte_tunnel::bridge::BridgeConfig::new(flyte_tunnel::bridge::Target::Route({
                let routes = Arc::clone(&routes);
                Arc::new(move |path: &str| routes.route(path))
            }));
        config.host_key = Some(Arc::new(move |path: &str| routes.host_key(path)));
        // The ingress takes the API's tokens, checked the same way, and route tokens for
        // their own path only.
        config.verifier = Some(Arc::new(move |token: &str, path: &str| {
            server::token_opens_route(&shared, token, path)
        }));
        config.head_timeout = self.header_timeout;
        let config = Arc::new(config);
        let api = flyte_listen::GuardedListener::new(listener, flyte_listen::Limits::default());
        tokio::select! {
            () = server::serve_http(api, self.router(), self.header_timeout, Some(self.tls.acceptor.clone())) => Ok(()),
            result = flyte_tunnel::bridge::serve(ingress, config) => result,
        }
    }
}
