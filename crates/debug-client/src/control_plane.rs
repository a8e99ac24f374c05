//! The control plane a session talks to, and with which credential.

use std::path::PathBuf;
use std::sync::Arc;

use flyte_api::{Client, Endpoint};
use flyte_auth::{ApiKey, ClientCredentials, TokenChain};
use flyte_home::FlyteHome;

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
}

impl ControlPlane {
    /// A client for `endpoint` authenticated with [`CredentialFiles::for_endpoint`]'s credential
    /// when there is one (the OAuth2 settings are discovered from the endpoint), else
    /// unauthenticated. `allow_key_endpoint`: see [`stored_key`].
    pub async fn open(
        home: FlyteHome,
        endpoint: Endpoint,
        allow_key_endpoint: Option<String>,
    ) -> Result<Self> {
        let anonymous = Client::new(&endpoint)?;
        let mut plane = Self {
            endpoint,
            client: anonymous.clone(),
            anonymous,
            home,
            allow_key_endpoint,
        };
        let files = CredentialFiles::for_endpoint(&plane.home, &plane.endpoint);
        if let Some((tokens, header)) = plane.client_credentials(files).await? {
            plane.client = plane
                .client
                .clone()
                .with_tokens(Arc::new(tokens))
                .with_auth_header(&header)?;
        }
        Ok(plane)
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
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
        let files = if use_api_key {
            CredentialFiles::api_key(&self.home)
        } else {
            CredentialFiles::for_endpoint(&self.home, &self.endpoint)
        };
        let key_file = files.key_file.clone();
        let mut chain = TokenChain::new(&self.endpoint.token_cache_key());
        if !use_api_key {
            chain = chain
                .cache(self.home.debug().bearer_cache())
                .cache(files.cache.clone());
        }
        match self.client_credentials(files).await? {
            Some((tokens, _)) => Ok(chain.source(tokens)),
            None if use_api_key => Err(DebugClientError::NoApiKey { path: key_file }),
            None => Err(DebugClientError::NoCredentials {
                endpoint: self.endpoint.base_url(),
            }),
        }
    }
}
