//! Flyte's `DeviceFlow` login (RFC 8628): ask for a code, show the person where to approve it,
//! poll the token endpoint at the server's pace; later, refresh tokens before a new login.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use flyte_api::{ApiError, Code, Secret, TokenFuture, TokenSource};
use tokio::sync::Mutex;

use crate::oauth::{AuthConfig, FormAnswer, post_form, scope_and_audience, tokens_of};
use crate::source::{Mint, MintFuture, TokenOrigin};
use crate::token::{self, Token, unix_now as now};
use crate::{AuthError, Result};

/// Shows a person what to do: the device flow's verification URL and code.
pub type Prompt = Arc<dyn Fn(&str) + Send + Sync>;

const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// RFC 8628 §3.2: without an interval, poll every 5 seconds.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// RFC 8628 §3.5: `slow_down` adds 5 seconds to the interval.
const SLOW_DOWN: Duration = Duration::from_secs(5);
/// A device code that claims to last longer than this is treated as lasting this long.
const MAX_WAIT: Duration = Duration::from_mins(30);

/// Logs a person in with the device flow and keeps the tokens (and the refresh token) in a
/// 0600 cache, keyed by endpoint.
pub struct DeviceFlow {
    http: reqwest::Client,
    config: AuthConfig,
    /// The cache key (the endpoint, qualified with the flow).
    endpoint: String,
    cache: PathBuf,
    prompt: Prompt,
    current: Mutex<Option<Token>>,
}

impl std::fmt::Debug for DeviceFlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceFlow")
            .field("endpoint", &self.endpoint)
            .field("token_endpoint", &self.config.token_endpoint)
            .finish_non_exhaustive()
    }
}

impl DeviceFlow {
    /// `config` must name the device authorization endpoint and the public client id
    /// (Flyte's discovery gives both).
    pub fn new(
        http: reqwest::Client,
        config: AuthConfig,
        endpoint: &str,
        cache: PathBuf,
        prompt: Prompt,
    ) -> Result<Self> {
        if config.device_authorization_endpoint.is_none() {
            return Err(AuthError::Discovery(
                "admin.authType is DeviceFlow but the deployment offers no device authorization \
                 endpoint; use another authType (Pkce, ClientSecret)"
                    .to_owned(),
            ));
        }
        Ok(Self {
            http,
            config,
            endpoint: endpoint.to_owned(),
            cache,
            prompt,
            current: Mutex::new(None),
        })
    }

    fn client_id(&self) -> String {
        self.config.client_id.clone().unwrap_or_default()
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
            None => self.login().await?,
        };
        token::store_login(&self.cache, &self.endpoint, &token, refresh_token.as_ref())?;
        *current = Some(token.clone());
        Ok((token, TokenOrigin::Fresh))
    }

    /// New tokens from the cached refresh token; `None` when there is none or the server no
    /// longer takes it (expired, used, revoked): then a new login follows.
    async fn refreshed(&self) -> Result<Option<(Token, Option<Secret>)>> {
        let Some(refresh_token) = token::cached_refresh(&self.cache, &self.endpoint) else {
            return Ok(None);
        };
        let mut form = vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", refresh_token.expose().to_owned()),
            ("client_id", self.client_id()),
        ];
        form.extend(scope_and_audience(&self.config));
        let endpoint = &self.config.token_endpoint;
        match post_form(&self.http, endpoint, &form, None).await? {
            FormAnswer::Ok(json) => {
                tracing::debug!(endpoint = %endpoint, "refreshed a device login");
                tokens_of(endpoint, json).map(Some)
            }
            FormAnswer::Refused { error, .. } => {
                tracing::info!(endpoint = %endpoint, %error, "the refresh token was refused; logging in again");
                Ok(None)
            }
        }
    }

    /// The device flow itself: a code, the person told where to approve it, then polling.
    async fn login(&self) -> Result<(Token, Option<Secret>)> {
        let device_endpoint = self
            .config
            .device_authorization_endpoint
            .as_deref()
            .unwrap_or_default();
        let mut form = vec![("client_id", self.client_id())];
        form.extend(scope_and_audience(&self.config));
        let started = match post_form(&self.http, device_endpoint, &form, None).await? {
            FormAnswer::Ok(json) => DeviceAuthorization::from_json(device_endpoint, &json)?,
            FormAnswer::Refused {
                status,
                error,
                description,
            } => {
                return Err(AuthError::TokenEndpoint {
                    endpoint: device_endpoint.to_owned(),
                    detail: FormAnswer::describe(status, &error, description.as_deref()),
                });
            }
        };
        (self.prompt)(&format!(
            "To log in, open {} and approve the code {}",
            started
                .verification_uri_complete
                .as_ref()
                .unwrap_or(&started.verification_uri),
            started.user_code
        ));
        self.poll(&started).await
    }

    async fn poll(&self, code: &DeviceAuthorization) -> Result<(Token, Option<Secret>)> {
        let endpoint = &self.config.token_endpoint;
        let deadline = tokio::time::Instant::now() + code.expires_in.min(MAX_WAIT);
        let mut interval = code.interval;
        let mut form = vec![
            ("grant_type", DEVICE_CODE_GRANT.to_owned()),
            ("device_code", code.device_code.expose().to_owned()),
            ("client_id", self.client_id()),
        ];
        form.extend(scope_and_audience(&self.config));
        loop {
            // The protocol's own pace: the server says how often it may be asked.
            tokio::time::sleep(interval).await;
            if tokio::time::Instant::now() >= deadline {
                return Err(expired(endpoint));
            }
            match post_form(&self.http, endpoint, &form, None).await? {
                FormAnswer::Ok(json) => return tokens_of(endpoint, json),
                FormAnswer::Refused { error, .. } if error == "authorization_pending" => {}
                FormAnswer::Refused { error, .. } if error == "slow_down" => {
                    interval += SLOW_DOWN;
                }
                FormAnswer::Refused { error, .. } if error == "access_denied" => {
                    return Err(AuthError::TokenEndpoint {
                        endpoint: endpoint.clone(),
                        detail: "the login was denied".to_owned(),
                    });
                }
                FormAnswer::Refused { error, .. } if error == "expired_token" => {
                    return Err(expired(endpoint));
                }
                FormAnswer::Refused {
                    status,
                    error,
                    description,
                } => {
                    return Err(AuthError::TokenEndpoint {
                        endpoint: endpoint.clone(),
                        detail: FormAnswer::describe(status, &error, description.as_deref()),
                    });
                }
            }
        }
    }
}

fn expired(endpoint: &str) -> AuthError {
    AuthError::TokenEndpoint {
        endpoint: endpoint.to_owned(),
        detail: "the device code expired before the login was approved; run the command again"
            .to_owned(),
    }
}

/// A device authorization answer (RFC 8628 §3.2).
struct DeviceAuthorization {
    device_code: Secret,
    user_code: String,
    verification_uri: String,
    verification_uri_complete: Option<String>,
    expires_in: Duration,
    interval: Duration,
}

impl DeviceAuthorization {
    fn from_json(endpoint: &str, json: &serde_json::Value) -> Result<Self> {
        let text = |key: &str| json.get(key).and_then(serde_json::Value::as_str);
        let secs = |key: &str| json.get(key).and_then(serde_json::Value::as_u64);
        let (Some(device_code), Some(user_code), Some(verification_uri)) = (
            text("device_code"),
            text("user_code"),
            text("verification_uri").or_else(|| text("verification_url")),
        ) else {
            return Err(AuthError::TokenEndpoint {
                endpoint: endpoint.to_owned(),
                detail: "the answer lacks device_code, user_code or verification_uri".to_owned(),
            });
        };
        Ok(Self {
            device_code: Secret::new(device_code.to_owned()),
            user_code: user_code.to_owned(),
            verification_uri: verification_uri.to_owned(),
            verification_uri_complete: text("verification_uri_complete").map(str::to_owned),
            expires_in: Duration::from_secs(secs("expires_in").unwrap_or(600)),
            interval: secs("interval")
                .map_or(DEFAULT_INTERVAL, Duration::from_secs)
                .max(Duration::from_secs(1)),
        })
    }
}

impl Mint for DeviceFlow {
    fn mint(&self, refresh: bool) -> MintFuture<'_> {
        Box::pin(self.get_with_origin(refresh))
    }
}

impl TokenSource for DeviceFlow {
    fn token(&self, refresh: bool) -> TokenFuture<'_> {
        Box::pin(async move {
            self.get_with_origin(refresh)
                .await
                .map(|(t, _)| Some(t.value))
                .map_err(|e| ApiError::new(Code::Unauthenticated, e.to_string()))
        })
    }
}
