//! A person's login, as Flyte's `DeviceFlow` and `Pkce` do it: the tokens and refresh token
//! cached 0600 under the endpoint; a cached token first, then the refresh token, and a new login
//! only when neither works.

use std::path::PathBuf;
use std::sync::Arc;

use flyte_api::{ApiError, Code, Secret, TokenFuture, TokenSource};
use tokio::sync::Mutex;

use crate::oauth::{AuthConfig, FormAnswer, post_form, scope_and_audience, tokens_of};
use crate::source::{Mint, MintFuture, TokenOrigin};
use crate::token::{self, Token, unix_now as now};
use crate::{AuthError, Result};

/// What a login asks of the person: `message` to show, and for a browser login the URL to open
/// (the caller opens a browser if it can; a library neither prints nor starts programs).
#[derive(Debug, Clone, Copy)]
pub struct LoginPrompt<'a> {
    pub message: &'a str,
    pub open_url: Option<&'a str>,
}

/// Shows a person what to do during a login.
pub type Prompt = Arc<dyn Fn(&LoginPrompt<'_>) + Send + Sync>;

/// Which of Flyte's person logins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginFlow {
    /// RFC 8628: approve a code shown here, on any device.
    DeviceFlow,
    /// The authorization code grant with PKCE: a browser, and a loopback redirect back here.
    Pkce,
}

impl LoginFlow {
    /// Flyte's `admin.authType` name, also the cache key's suffix.
    pub fn name(self) -> &'static str {
        match self {
            LoginFlow::DeviceFlow => "DeviceFlow",
            LoginFlow::Pkce => "Pkce",
        }
    }
}

/// The public client id discovery found (empty when the deployment names none).
pub(crate) fn client_id(config: &AuthConfig) -> String {
    config.client_id.clone().unwrap_or_default()
}

/// Logs a person in and keeps the tokens (and the refresh token) in a 0600 cache.
pub struct Login {
    flow: LoginFlow,
    http: reqwest::Client,
    config: AuthConfig,
    /// The cache key.
    endpoint: String,
    cache: PathBuf,
    prompt: Prompt,
    current: Mutex<Option<Token>>,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("flow", &self.flow)
            .field("endpoint", &self.endpoint)
            .field("token_endpoint", &self.config.token_endpoint)
            .finish_non_exhaustive()
    }
}

impl Login {
    /// `config` comes from discovery; the flow's endpoints must be in it. `endpoint` is the
    /// cache key.
    pub fn new(
        flow: LoginFlow,
        http: reqwest::Client,
        config: AuthConfig,
        endpoint: &str,
        cache: PathBuf,
        prompt: Prompt,
    ) -> Result<Self> {
        let missing = match flow {
            LoginFlow::DeviceFlow => config.device_authorization_endpoint.is_none(),
            LoginFlow::Pkce => {
                config.authorization_endpoint.is_none() || config.redirect_uri.is_none()
            }
        };
        if missing {
            return Err(AuthError::Discovery(format!(
                "admin.authType is {} but the deployment does not offer it (no {} in its OAuth2 \
                 metadata); use another authType",
                flow.name(),
                match flow {
                    LoginFlow::DeviceFlow => "device_authorization_endpoint",
                    LoginFlow::Pkce => "authorization_endpoint or redirect_uri",
                }
            )));
        }
        Ok(Self {
            flow,
            http,
            config,
            endpoint: endpoint.to_owned(),
            cache,
            prompt,
            current: Mutex::new(None),
        })
    }

    /// A usable token: the one in memory or in the cache, else one from the refresh token,
    /// else a new login. `refresh`: the server refused the last one.
    pub async fn get_with_origin(&self, refresh: bool) -> Result<(Token, TokenOrigin)> {
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
        let (token, refresh_token) = match self.refreshed().await? {
            Some(tokens) => tokens,
            None => match self.flow {
                LoginFlow::DeviceFlow => {
                    crate::device::login(&self.http, &self.config, &self.prompt).await?
                }
                LoginFlow::Pkce => {
                    crate::pkce::login(&self.http, &self.config, &self.prompt).await?
                }
            },
        };
        token::store_login(
            &self.cache,
            &self.endpoint,
            &token,
            refresh_token
                .as_ref()
                .map(|r| (r, self.config.token_endpoint.as_str())),
        )?;
        *current = Some(token.clone());
        Ok((token, TokenOrigin::Fresh))
    }

    /// New tokens from the cached refresh token; `None` when there is none or the server no
    /// longer takes it (expired, used, revoked): then a new login follows.
    async fn refreshed(&self) -> Result<Option<(Token, Option<Secret>)>> {
        let Some(refresh_token) =
            token::cached_refresh(&self.cache, &self.endpoint, &self.config.token_endpoint)
        else {
            return Ok(None);
        };
        let mut form = vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", refresh_token.expose().to_owned()),
            ("client_id", client_id(&self.config)),
        ];
        form.extend(scope_and_audience(&self.config));
        let endpoint = &self.config.token_endpoint;
        match post_form(&self.http, endpoint, &form, None).await? {
            FormAnswer::Ok(json) => {
                tracing::debug!(endpoint = %endpoint, "refreshed a login");
                // A server that does not rotate refresh tokens sends none back: keep ours.
                let (token, rotated) = tokens_of(endpoint, json)?;
                Ok(Some((token, rotated.or(Some(refresh_token)))))
            }
            FormAnswer::Refused { error, .. } => {
                tracing::info!(endpoint = %endpoint, %error, "the refresh token was refused; logging in again");
                Ok(None)
            }
        }
    }
}

impl Mint for Login {
    fn mint(&self, refresh: bool) -> MintFuture<'_> {
        Box::pin(self.get_with_origin(refresh))
    }
}

impl TokenSource for Login {
    fn token(&self, refresh: bool) -> TokenFuture<'_> {
        Box::pin(async move {
            self.get_with_origin(refresh)
                .await
                .map(|(t, _)| Some(t.value))
                .map_err(|e| ApiError::new(Code::Unauthenticated, e.to_string()))
        })
    }
}
