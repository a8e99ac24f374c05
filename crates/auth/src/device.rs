//! Flyte's `DeviceFlow` login (RFC 8628): ask for a code, show the person where to approve it,
//! poll the token endpoint at the server's pace.

use std::time::Duration;

use flyte_api::Secret;

use crate::login::{LoginPrompt, Prompt, client_id};
use crate::oauth::{AuthConfig, FormAnswer, post_form, scope_and_audience, tokens_of};
use crate::token::Token;
use crate::{AuthError, Result};

const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// RFC 8628 §3.2: without an interval, poll every 5 seconds.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// RFC 8628 §3.5: `slow_down` adds 5 seconds to the interval.
const SLOW_DOWN: Duration = Duration::from_secs(5);
/// A device code that claims to last longer than this is treated as lasting this long.
const MAX_WAIT: Duration = Duration::from_mins(30);
/// Polls at least this often, whatever the server asks.
const MAX_INTERVAL: Duration = Duration::from_mins(1);

/// The device flow itself: a code, the person told where to approve it, then polling.
pub(crate) async fn login(
    http: &reqwest::Client,
    config: &AuthConfig,
    prompt: &Prompt,
) -> Result<(Token, Option<Secret>)> {
    let device_endpoint = config
        .device_authorization_endpoint
        .as_deref()
        .ok_or_else(|| {
            AuthError::Discovery(
                "admin.authType is DeviceFlow but the deployment offers no device authorization \
             endpoint; use another authType (Pkce, ClientSecret)"
                    .to_owned(),
            )
        })?;
    let mut form = vec![("client_id", client_id(config))];
    form.extend(scope_and_audience(config));
    let started = match post_form(http, device_endpoint, &form, None).await? {
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
    prompt(&LoginPrompt {
        message: &format!(
            "To log in, open {} and approve the code {}",
            crate::oauth::printable(
                started
                    .verification_uri_complete
                    .as_ref()
                    .unwrap_or(&started.verification_uri)
            ),
            crate::oauth::printable(&started.user_code)
        ),
        open_url: None,
    });
    poll(http, config, &started).await
}

async fn poll(
    http: &reqwest::Client,
    config: &AuthConfig,
    code: &DeviceAuthorization,
) -> Result<(Token, Option<Secret>)> {
    let endpoint = &config.token_endpoint;
    let deadline = tokio::time::Instant::now() + code.expires_in.min(MAX_WAIT);
    let mut interval = code.interval;
    let mut form = vec![
        ("grant_type", DEVICE_CODE_GRANT.to_owned()),
        ("device_code", code.device_code.expose().to_owned()),
        ("client_id", client_id(config)),
    ];
    form.extend(scope_and_audience(config));
    loop {
        // The protocol's own pace: the server says how often it may be asked (within bounds,
        // and never past the code's lifetime).
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(expired(endpoint));
        }
        tokio::time::sleep(interval.min(deadline - now)).await;
        match post_form(http, endpoint, &form, None).await? {
            FormAnswer::Ok(json) => return tokens_of(endpoint, json),
            FormAnswer::Refused { error, .. } if error == "authorization_pending" => {}
            FormAnswer::Refused { error, .. } if error == "slow_down" => {
                interval = interval.saturating_add(SLOW_DOWN).min(MAX_INTERVAL);
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
                .clamp(Duration::from_secs(1), MAX_INTERVAL),
        })
    }
}
