//! A token source for [`flyte_api::Client`]: cached token if still good, else client credentials.

use std::path::PathBuf;

use flyte_api::{ApiError, Code, Secret, TokenFuture, TokenSource};
use tokio::sync::Mutex;

use crate::oauth::{AuthConfig, client_credentials};
use crate::token::unix_now as now;
use crate::token::{self, Token};

/// Mints tokens with client credentials and keeps them in the `bearer.json` cache.
pub struct ClientCredentials {
    http: reqwest::Client,
    config: AuthConfig,
    client_id: String,
    client_secret: Secret,
    /// Cache key: the endpoint as Flyte's debug client keys it (`Endpoint::token_cache_key`).
    endpoint: String,
    cache: PathBuf,
    /// Serializes mints within this process; the file itself is replaced atomically.
    current: Mutex<Option<Token>>,
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("client_id", &self.client_id)
            .field("endpoint", &self.endpoint)
            .field("token_endpoint", &self.config.token_endpoint)
            .finish_non_exhaustive()
    }
}

impl ClientCredentials {
    pub fn new(
        http: reqwest::Client,
        config: AuthConfig,
        client_id: String,
        client_secret: Secret,
        endpoint: &str,
        cache: PathBuf,
    ) -> Self {
        Self {
            http,
            config,
            client_id,
            client_secret,
            endpoint: endpoint.to_owned(),
            cache,
            current: Mutex::new(None),
        }
    }

    /// A usable token: the one in memory or in the cache file, else a freshly minted one (also
    /// when `refresh` says the server refused the last one).
    pub async fn get(&self, refresh: bool) -> crate::Result<Token> {
        self.get_with_origin(refresh).await.map(|(token, _)| token)
    }

    /// [`Self::get`], saying whether the token came from memory or the cache file (which may
    /// hold one the server has since stopped accepting) or was minted now.
    pub async fn get_with_origin(&self, refresh: bool) -> crate::Result<(Token, TokenOrigin)> {
        let mut current = self.current.lock().await;
        if !refresh {
            let candidate = current
                .clone()
                .or_else(|| token::cached(&self.cache, &self.endpoint));
            if let Some(token) = candidate.filter(|t| t.usable_at(now())) {
                *current = Some(token.clone());
                return Ok((token, TokenOrigin::Cache));
            }
        }
        let token = client_credentials(
            &self.http,
            &self.config,
            &self.client_id,
            &self.client_secret,
        )
        .await?;
        token::store(&self.cache, &self.endpoint, &token)?;
        *current = Some(token.clone());
        Ok((token, TokenOrigin::Fresh))
    }
}

impl TokenSource for ClientCredentials {
    fn token(&self, refresh: bool) -> TokenFuture<'_> {
        Box::pin(async move {
            self.get(refresh)
                .await
                .map(|t| Some(t.value))
                .map_err(|e| ApiError::new(Code::Unauthenticated, e.to_string()))
        })
    }
}

/// One token the caller already holds, sent as it is: for a call that must be made with that
/// token and no other (a refused one is the caller's to replace, so `refresh` changes nothing).
pub struct FixedToken(pub Secret);

impl std::fmt::Debug for FixedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FixedToken(<redacted>)")
    }
}

impl TokenSource for FixedToken {
    fn token(&self, _refresh: bool) -> TokenFuture<'_> {
        let token = self.0.clone();
        Box::pin(async move { Ok(Some(token)) })
    }
}

/// A future of a minted token and where it came from.
pub type MintFuture<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = crate::Result<(Token, TokenOrigin)>> + Send + 'a>,
>;

/// Something that gives tokens for one endpoint (client credentials, an external command):
/// from what it holds unless `refresh`, else newly made.
pub trait Mint: TokenSource + std::fmt::Debug {
    fn mint(&self, refresh: bool) -> MintFuture<'_>;
}

impl Mint for ClientCredentials {
    fn mint(&self, refresh: bool) -> MintFuture<'_> {
        Box::pin(self.get_with_origin(refresh))
    }
}

/// Where a token came from: a cached one may be one the server has since stopped accepting
/// (revoked, or signed by a key since replaced); a fresh one was minted for this call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenOrigin {
    Cache,
    Fresh,
}

/// The token-provider chain: the caches in order (Flyte's debug cache first, so a token Flyte's
/// own client cached is reused), then a minting source; a minted token is also written to the
/// first cache so the next caller, ours or Flyte's, starts from it.
pub struct TokenChain {
    cache_key: String,
    caches: Vec<PathBuf>,
    source: Option<std::sync::Arc<dyn Mint>>,
}

impl std::fmt::Debug for TokenChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenChain")
            .field("cache_key", &self.cache_key)
            .field("caches", &self.caches)
            .field("source", &self.source)
            .finish()
    }
}

impl TokenChain {
    /// Tokens for the endpoint whose cache key is `cache_key`
    /// (`flyte_api::Endpoint::token_cache_key`).
    pub fn new(cache_key: &str) -> Self {
        Self {
            cache_key: cache_key.to_owned(),
            caches: Vec::new(),
            source: None,
        }
    }

    /// Read `path` after the caches added before it.
    #[must_use]
    pub fn cache(mut self, path: PathBuf) -> Self {
        self.caches.push(path);
        self
    }

    /// Mint with `source` when no cache holds a usable token.
    #[must_use]
    pub fn source(mut self, source: std::sync::Arc<dyn Mint>) -> Self {
        self.source = Some(source);
        self
    }

    /// Whether the chain can mint (else only caches can answer).
    pub fn can_mint(&self) -> bool {
        self.source.is_some()
    }

    /// A usable token: from the first cache that holds one for this endpoint (unless
    /// `refresh`), else minted. `None` when no cache has one and there is no source.
    pub async fn get(&self, refresh: bool) -> crate::Result<Option<(Token, TokenOrigin)>> {
        if !refresh {
            let now = now();
            let cached = self
                .caches
                .iter()
                .filter_map(|cache| token::cached(cache, &self.cache_key))
                .find(|token| token.usable_at(now));
            if let Some(token) = cached {
                return Ok(Some((token, TokenOrigin::Cache)));
            }
        }
        let Some(source) = &self.source else {
            return Ok(None);
        };
        let (token, origin) = source.mint(refresh).await?;
        if origin == TokenOrigin::Fresh
            && let Some(first) = self.caches.first()
            && let Err(e) = token::store(first, &self.cache_key, &token)
        {
            tracing::warn!(cache = %first.display(), error = %e, "cannot cache the token");
        }
        Ok(Some((token, origin)))
    }
}
