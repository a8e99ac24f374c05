//! The control plane a session talks to, and with which credential.

use std::path::PathBuf;
use std::sync::Arc;

use flyte_api::{Client, Endpoint, Secret};
use flyte_auth::{ApiKey, ClientCredentials, Mint, TokenChain};
use flyte_home::FlyteHome;
use flyte_tunnel::transport::Transport;

use crate::{DebugClientError, Result};

/// The environment variable naming the one endpoint (`host:port`) a stored API key made for
/// another endpoint may be sent to anyway. Read by the caller, passed to [`ControlPlane::open`].
pub const ENV_ALLOW_KEY_ENDPOINT: &str = "FLYTE_RUN_ALLOW_KEY_ENDPOINT";

/// Where a credential comes from, and where its tokens are cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialFiles {
    pub key_file: PathBuf,
    pub cache: PathBuf,
}

impl CredentialFiles {
    /// The best credential at hand for `endpoint`: the sandbox's bootstrap credential when it is
    /// this machine's running sandbox (tokens cached beside it), else the user's stored API key.
    pub fn for_endpoint(home: &FlyteHome, endpoint: &Endpoint) -> Self {
        let sandbox = home.sandbox();
        let is_sandbox = sandbox
            .running()
            .is_some_and(|s| Endpoint::parse(&s.endpoint, false).is_ok_and(|e| &e == endpoint));
        if is_sandbox {
            Self {
                key_file: sandbox.credential(),
                cache: sandbox.bearer_cache(),
            }
        } else {
            Self::api_key(home)
        }
    }

    /// The user's stored API key (`auth::ensure_api_key`) and the bearer cache Flyte shares.
    pub fn api_key(home: &FlyteHome) -> Self {
        let debug = home.debug();
        Self {
            key_file: debug.api_key(),
            cache: debug.bearer_cache(),
        }
    }
}

/// The API key in `files`, when there is one and it may be sent to `endpoint`.
///
/// A key is sent only to the endpoint it was made for (the key file could have been made for
/// another deployment, or the endpoint pointed elsewhere), unless `allow_endpoint` names this
/// endpoint's authority: an explicit, per-endpoint opt-out ([`ENV_ALLOW_KEY_ENDPOINT`]).
pub fn stored_key(
    files: &CredentialFiles,
    endpoint: &Endpoint,
    allow_endpoint: Option<&str>,
) -> Result<Option<ApiKey>> {
    let Ok(text) = std::fs::read_to_string(&files.key_file) else {
        return Ok(None);
    };
    let key = ApiKey::decode(&text).map_err(|e| DebugClientError::file(&files.key_file, e))?;
    let allowed = allow_endpoint.is_some_and(|v| v.trim() == endpoint.authority());
    if allowed
        || flyte_auth::key_matches_endpoint(
            &key.endpoint,
            endpoint.authority(),
            endpoint.is_https(),
        )
    {
        return Ok(Some(key));
    }
    Err(DebugClientError::KeyForAnotherEndpoint {
        path: files.key_file.clone(),
        key_endpoint: key.endpoint,
        endpoint: endpoint.authority().to_owned(),
        allow_var: ENV_ALLOW_KEY_ENDPOINT,
    })
}

impl PlaneOptions {
    /// The tunnel's share of these settings.
    pub fn route_transport(&self) -> Transport {
        Transport {
            extra_ca: self.ca.as_ref().map(|ca| ca.path.clone()),
            skip_verify: self.skip_tls_verify,
            http_proxy: self.http_proxy.clone(),
        }
    }

    /// How the HTTP client reaches the endpoint (without the proxy command's header: see
    /// [`ControlPlane::open`]).
    pub fn http(&self) -> flyte_api::HttpOptions<'_> {
        flyte_api::HttpOptions {
            ca_pem: self.ca.as_ref().map(|ca| ca.pem.as_slice()),
            skip_verify: self.skip_tls_verify,
            proxy: self.http_proxy.as_deref(),
            proxy_authorization: None,
        }
    }
}

/// A control plane: its endpoint, an API client authenticated with the best credential at hand
/// (or none), and the files that credential and its tokens live in.
/// A credential the caller names (from Flyte's configuration), instead of the one at hand.
#[derive(Clone)]
pub enum Credential {
    /// Flyte's `ClientSecret`: client credentials, with the scopes and audience to ask for
    /// (empty: what the deployment's public client config says).
    ClientSecret {
        client_id: String,
        secret: Secret,
        scopes: Vec<String>,
        audience: Option<String>,
    },
    /// An API key (Flyte's `FLYTE_API_KEY`), used as client credentials.
    ApiKey(ApiKey),
    /// Flyte's `ExternalCommand`: this command (program first) prints a token.
    Command(Vec<String>),
    /// A person's login, Flyte's `DeviceFlow` or `Pkce`; `prompt` shows them what to do (the
    /// caller draws it and opens the browser: a library neither prints nor starts programs).
    /// Tokens and the refresh token are cached 0600.
    Login {
        flow: flyte_auth::LoginFlow,
        scopes: Vec<String>,
        audience: Option<String>,
        prompt: Option<flyte_auth::Prompt>,
    },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::ClientSecret { client_id, .. } => f
                .debug_struct("ClientSecret")
                .field("client_id", client_id)
                .finish_non_exhaustive(),
            Credential::ApiKey(key) => f
                .debug_struct("ApiKey")
                .field("client_id", &key.client_id)
                .finish_non_exhaustive(),
            // Arguments may hold secrets: the program only.
            Credential::Command(argv) => f
                .debug_struct("Command")
                .field("program", &argv.first())
                .finish_non_exhaustive(),
            Credential::Login { flow, scopes, .. } => f
                .debug_struct("Login")
                .field("flow", flow)
                .field("scopes", scopes)
                .finish_non_exhaustive(),
        }
    }
}

/// Where a person's login's tokens are cached: flyte-run's token file, under the endpoint and
/// the flow.
fn login_key(endpoint: &Endpoint, flow: flyte_auth::LoginFlow) -> String {
    format!("{}#{}", endpoint.token_cache_key(), flow.name())
}

/// The access token a person's login to `endpoint` left, if it is still usable (what `doctor`
/// reports without starting a login).
pub fn cached_login(
    home: &FlyteHome,
    endpoint: &Endpoint,
    flow: flyte_auth::LoginFlow,
) -> Option<flyte_auth::Token> {
    flyte_auth::token::cached(&home.debug().token_cache(), &login_key(endpoint, flow))
        .filter(|t| t.usable_at(flyte_auth::token::unix_now()))
}

/// A PEM file of CA certificates: its path (what the tunnel, a separate process, is told) and
/// what it held when read (what the API client trusts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaFile {
    pub path: PathBuf,
    pub pem: Vec<u8>,
}

/// How to open a [`ControlPlane`].
#[derive(Debug, Clone, Default)]
pub struct PlaneOptions {
    /// See [`stored_key`].
    pub allow_key_endpoint: Option<String>,
    /// CA certificates to trust besides the system's (Flyte's `admin.caCertFilePath`).
    pub ca: Option<CaFile>,
    /// Accept any TLS certificate (Flyte's `admin.insecureSkipVerify`).
    pub skip_tls_verify: bool,
    /// Reach the control plane through this HTTP proxy (Flyte's `admin.httpProxyURL`).
    pub http_proxy: Option<String>,
    /// Flyte's `admin.proxyCommand` (program first): its output goes, as `Bearer <output>`, in a
    /// `proxy-authorization` header on every request, for what stands in front of the control
    /// plane.
    pub proxy_command: Option<Vec<String>>,
    /// The credential to use; `None`: the best one at hand ([`CredentialFiles::for_endpoint`]).
    pub credential: Option<Credential>,
    /// Send no credential at all (plain http to another machine, as Flyte's `insecure` means).
    pub anonymous: bool,
}

/// A control plane: its endpoint, an API client authenticated with the best credential at hand
/// (or none), and the files that credential and its tokens live in.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    endpoint: Endpoint,
    /// Without credentials: discovery, and the HTTP client token requests share. Building a
    /// client loads the TLS roots, which costs milliseconds, so one is built per control plane.
    anonymous: Client,
    client: Client,
    home: FlyteHome,
    allow_key_endpoint: Option<String>,
    /// How debug routes are reached: the control plane's CA, TLS and proxy settings.
    route_transport: Transport,
    /// The credential the client uses, the cache shared with Flyte's debug client it reads
    /// (`None` for a named credential: its tokens are its own), and what it is (for people).
    tokens: Option<(Arc<dyn Mint>, Option<PathBuf>, String)>,
}

impl ControlPlane {
    /// A client for `endpoint` authenticated with `options.credential`, else with
    /// [`CredentialFiles::for_endpoint`]'s credential when there is one (the OAuth2 settings are
    /// discovered from the endpoint), else unauthenticated.
    pub async fn open(home: FlyteHome, endpoint: Endpoint, options: PlaneOptions) -> Result<Self> {
        // The proxy command runs once per control plane; its header goes on every request,
        // discovery and token requests included (they pass the same proxy).
        let proxy_authorization = match &options.proxy_command {
            Some(argv) => {
                let command = flyte_auth::ExternalCommand::new(argv.clone())?;
                let (token, _) = flyte_auth::Mint::mint(&command, false).await?;
                Some(flyte_api::Secret::new(format!(
                    "Bearer {}",
                    token.value.expose()
                )))
            }
            None => None,
        };
        let anonymous = Client::with_http(
            &endpoint,
            &flyte_api::HttpOptions {
                proxy_authorization: proxy_authorization.as_ref(),
                ..options.http()
            },
        )?;
        let mut plane = Self {
            endpoint,
            client: anonymous.clone(),
            anonymous,
            home,
            route_transport: options.route_transport(),
            allow_key_endpoint: options.allow_key_endpoint,
            tokens: None,
        };
        let found = if options.anonymous {
            None
        } else if let Some(credential) = options.credential {
            let what = match &credential {
                Credential::ClientSecret { client_id, .. } => {
                    format!("the client credentials of {client_id}")
                }
                Credential::ApiKey(key) => format!("the API key of {}", key.client_id),
                Credential::Command(argv) => {
                    format!("the command {}", argv.first().map_or("", String::as_str))
                }
                Credential::Login { flow, .. } => format!("a {} login", flow.name()),
            };
            let (tokens, header) = plane.named_credential(credential).await?;
            Some((tokens, header, None, what))
        } else {
            let files = CredentialFiles::for_endpoint(&plane.home, &plane.endpoint);
            let cache = files.cache.clone();
            let what = files.key_file.display().to_string();
            plane
                .client_credentials(files)
                .await?
                .map(|(tokens, header)| {
                    (Arc::new(tokens) as Arc<dyn Mint>, header, Some(cache), what)
                })
        };
        if let Some((tokens, header, cache, what)) = found {
            plane.client = plane
                .client
                .clone()
                .with_tokens(Arc::clone(&tokens) as Arc<dyn flyte_api::TokenSource>)
                .with_auth_header(&header)?;
            plane.tokens = Some((tokens, cache, what));
        }
        Ok(plane)
    }

    /// Tokens for a credential the caller named. Client credentials cache theirs in flyte-run's
    /// own token file under the endpoint and client id (Flyte's `bearer.json` is keyed by
    /// endpoint alone, and would hand one identity's token to another); a command's tokens stay
    /// in memory.
    async fn named_credential(&self, credential: Credential) -> Result<(Arc<dyn Mint>, String)> {
        let mut config = flyte_auth::oauth::discover(&self.anonymous).await?;
        let (client_id, secret) = match credential {
            Credential::Command(argv) => {
                let command = flyte_auth::ExternalCommand::new(argv)?;
                return Ok((Arc::new(command), config.header_name));
            }
            Credential::Login {
                flow,
                scopes,
                audience,
                prompt,
            } => {
                if !scopes.is_empty() {
                    config.scopes = scopes;
                }
                if audience.is_some() {
                    config.audience = audience;
                }
                let prompt = prompt.ok_or_else(|| {
                    DebugClientError::Configuration(format!(
                        "admin.authType is {}, but nothing here can show a person the login",
                        flow.name()
                    ))
                })?;
                let header = config.header_name.clone();
                let key = login_key(&self.endpoint, flow);
                let tokens = flyte_auth::Login::new(
                    flow,
                    self.anonymous.http().clone(),
                    config,
                    &key,
                    self.home.debug().token_cache(),
                    prompt,
                )?;
                return Ok((Arc::new(tokens), header));
            }
            Credential::ClientSecret {
                client_id,
                secret,
                scopes,
                audience,
            } => {
                if !scopes.is_empty() {
                    config.scopes = scopes;
                }
                if audience.is_some() {
                    config.audience = audience;
                }
                (client_id, secret)
            }
            Credential::ApiKey(key) => (key.client_id, key.client_secret),
        };
        let header = config.header_name.clone();
        let key = format!("{}#{client_id}", self.endpoint.token_cache_key());
        let tokens = ClientCredentials::new(
            self.anonymous.http().clone(),
            config,
            client_id,
            secret,
            &key,
            self.home.debug().token_cache(),
        );
        Ok((Arc::new(tokens), header))
    }

    /// A token from the client's credential (cached or minted) and what that credential is;
    /// `None` when the client has none.
    pub async fn token(&self) -> Result<Option<(flyte_auth::Token, String)>> {
        match &self.tokens {
            Some((tokens, _, what)) => Ok(Some((tokens.mint(false).await?.0, what.clone()))),
            None => Ok(None),
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// How this control plane's debug routes are reached (they are usually behind the same
    /// ingress, so they get its CA, TLS and proxy settings).
    pub fn route_transport(&self) -> &Transport {
        &self.route_transport
    }

    /// The authenticated API client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The layout the credentials and the session's files are found in.
    pub fn home(&self) -> &FlyteHome {
        &self.home
    }

    /// Client credentials from `files` for this endpoint, and the header tokens go in; `None`
    /// when the key file does not exist.
    pub async fn client_credentials(
        &self,
        files: CredentialFiles,
    ) -> Result<Option<(ClientCredentials, String)>> {
        let Some(key) = stored_key(&files, &self.endpoint, self.allow_key_endpoint.as_deref())?
        else {
            return Ok(None);
        };
        let config = flyte_auth::oauth::discover(&self.anonymous).await?;
        let header = config.header_name.clone();
        let tokens = ClientCredentials::new(
            self.anonymous.http().clone(),
            config,
            key.client_id,
            key.client_secret,
            &self.endpoint.token_cache_key(),
            files.cache,
        );
        Ok(Some((tokens, header)))
    }

    /// The token chain for a debug route: Flyte's debug bearer cache, then the credential's own
    /// cache, then minting with that credential (the minted token is cached in both). With
    /// `use_api_key` the stored API key is the credential and only its own cache is read; that
    /// cache is Flyte's one debug cache, which may hold a token minted with another credential
    /// for the same endpoint, so it counts as cached: one the route refuses is replaced once by
    /// a token minted with the key.
    pub async fn route_tokens(&self, use_api_key: bool) -> Result<TokenChain> {
        let mut chain = TokenChain::new(&self.endpoint.token_cache_key());
        if use_api_key {
            let files = CredentialFiles::api_key(&self.home);
            let key_file = files.key_file.clone();
            return match self.client_credentials(files).await? {
                Some((tokens, _)) => Ok(chain.source(Arc::new(tokens))),
                None => Err(DebugClientError::NoApiKey { path: key_file }),
            };
        }
        let Some((tokens, cache, _)) = &self.tokens else {
            return Err(DebugClientError::NoCredentials {
                endpoint: self.endpoint.base_url(),
            });
        };
        // The shared caches only for the credential at hand; a named one answers for itself.
        if let Some(cache) = cache {
            chain = chain.cache(self.home.debug().bearer_cache());
            if *cache != self.home.debug().bearer_cache() {
                chain = chain.cache(cache.clone());
            }
        }
        Ok(chain.source(Arc::clone(tokens)))
    }
}
