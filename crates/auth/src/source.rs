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
        let mut current = self.current.lock().await;
        if !refresh {
            let candidate = current
                .clone()
                .or_else(|| token::cached(&self.cache, &self.endpoint));
            if let Some(token) = candidate.filter(|t| t.usable_at(now())) {
                *current = Some(token.clone());
                return Ok(token);
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
        Ok(token)
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
