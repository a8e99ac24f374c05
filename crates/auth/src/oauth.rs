//! OAuth2 for machines: discover the token endpoint, then the client-credentials grant.

use base64ct::{Base64, Encoding};
use flyte_api::idl::flyteidl2::auth;
use flyte_api::{Answer, Client, Code, Secret};
use serde::Deserialize;

use crate::token::Token;
use crate::{AuthError, Result};

/// What a deployment says about authenticating to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    pub token_endpoint: String,
    /// Where a device asks for a code (RFC 8628), when the deployment offers the device flow.
    pub device_authorization_endpoint: Option<String>,
    /// The public client's id (Flyte's `GetPublicClientConfig`), for a person's login.
    pub client_id: Option<String>,
    /// Where a browser asks for an authorization code (PKCE).
    pub authorization_endpoint: Option<String>,
    /// Where the authorization code comes back: a loopback URI this machine listens on.
    pub redirect_uri: Option<String>,
    pub scopes: Vec<String>,
    pub audience: Option<String>,
    /// The header tokens go in (`authorization` unless the deployment says otherwise).
    pub header_name: String,
}

#[derive(Debug, Deserialize)]
#[allow(clippy::struct_field_names, reason = "RFC 8414 names them")]
struct WellKnown {
    #[serde(default)]
    token_endpoint: String,
    #[serde(default)]
    device_authorization_endpoint: String,
    #[serde(default)]
    authorization_endpoint: String,
}

/// Ask the deployment how to get tokens: `AuthMetadataService` first, then the standard
/// `/.well-known/oauth-authorization-server` document.
pub async fn discover(client: &Client) -> Result<AuthConfig> {
    let metadata = client.connect(auth::AuthMetadataServiceClient::new)?;
    let (token_endpoint, device_authorization_endpoint, authorization_endpoint) = match metadata
        .get_o_auth2_metadata(auth::GetOAuth2MetadataRequest::default())
        .await
        .owned()
    {
        Ok(meta) if !meta.token_endpoint.is_empty() => (
            meta.token_endpoint,
            meta.device_authorization_endpoint,
            meta.authorization_endpoint,
        ),
        Ok(_) | Err(_) => {
            let url = format!(
                "{}/.well-known/oauth-authorization-server",
                client.base_url()
            );
            let response = client
                .http()
                .get(&url)
                .send()
                .await
                .map_err(|e| AuthError::Discovery(format!("{url}: {e}")))?;
            let status = response.status();
            let body = response
                .bytes()
                .await
                .map_err(|e| AuthError::Discovery(format!("{url}: {e}")))?;
            let doc: WellKnown = serde_json::from_slice(&body).map_err(|_| {
                AuthError::Discovery(format!(
                    "{url} answered HTTP {status} without OAuth2 metadata JSON"
                ))
            })?;
            if doc.token_endpoint.is_empty() {
                return Err(AuthError::Discovery(format!(
                    "{url} names no token_endpoint"
                )));
            }
            (
                doc.token_endpoint,
                doc.device_authorization_endpoint,
                doc.authorization_endpoint,
            )
        }
    };
    let public = match metadata
        .get_public_client_config(auth::GetPublicClientConfigRequest::default())
        .await
        .owned()
    {
        Ok(config) => config,
        Err(e) if matches!(e.code, Code::Unimplemented | Code::NotFound) => {
            auth::GetPublicClientConfigResponse::default()
        }
        Err(e) => return Err(e.into()),
    };
    Ok(AuthConfig {
        token_endpoint,
        device_authorization_endpoint: Some(device_authorization_endpoint)
            .filter(|e| !e.is_empty()),
        client_id: Some(public.client_id).filter(|c| !c.is_empty()),
        authorization_endpoint: Some(authorization_endpoint).filter(|e| !e.is_empty()),
        redirect_uri: Some(public.redirect_uri).filter(|r| !r.is_empty()),
        scopes: public.scopes,
        audience: Some(public.audience).filter(|a| !a.is_empty()),
        header_name: Some(public.authorization_metadata_key)
            .filter(|k| !k.is_empty())
            .unwrap_or_else(|| "authorization".to_owned()),
    })
}

/// Percent-encode for `application/x-www-form-urlencoded` (RFC 6749 §2.3.1 applies it to the
/// client id and secret inside HTTP Basic auth).
fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'*') {
            out.push(char::from(byte));
        } else if byte == b' ' {
            out.push('+');
        } else {
            use std::fmt::Write as _;
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

#[derive(Debug, Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    #[serde(default)]
    refresh_token: Option<String>,
}

/// How long one token-endpoint request may take, answer included.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// A token endpoint's answer at most; a longer one is not a token response.
const MAX_ANSWER: usize = 1024 * 1024;

/// `text` without control characters (a server's words printed on a terminal must not steer
/// it).
pub(crate) fn printable(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).collect()
}

/// What a token endpoint (or a device authorization endpoint) answered a form.
pub(crate) enum FormAnswer {
    /// A success: the JSON body.
    Ok(serde_json::Value),
    /// An OAuth2 error (RFC 6749 §5.2): its code and description.
    Refused {
        status: u16,
        error: String,
        description: Option<String>,
    },
}

impl std::fmt::Debug for FormAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // A success holds tokens.
            FormAnswer::Ok(_) => f.write_str("Ok(<redacted>)"),
            FormAnswer::Refused { status, error, .. } => f
                .debug_struct("Refused")
                .field("status", status)
                .field("error", error)
                .finish_non_exhaustive(),
        }
    }
}

impl FormAnswer {
    /// The refusal as a sentence: `HTTP 400: invalid_grant (the code expired)`.
    pub(crate) fn describe(status: u16, error: &str, description: Option<&str>) -> String {
        printable(&format!(
            "HTTP {status}: {error}{}",
            description.map(|d| format!(" ({d})")).unwrap_or_default()
        ))
    }
}

/// `POST` `form` to `endpoint` (with HTTP Basic `basic` = `(client_id, secret)` when given):
/// the JSON answer, or its OAuth2 error. Errors name the endpoint, never the form's secrets.
pub(crate) async fn post_form(
    http: &reqwest::Client,
    endpoint: &str,
    form: &[(&str, String)],
    basic: Option<(&str, &Secret)>,
) -> Result<FormAnswer> {
    let fail = |detail: String| AuthError::TokenEndpoint {
        endpoint: endpoint.to_owned(),
        detail,
    };
    let mut request = http
        .post(endpoint)
        .timeout(REQUEST_TIMEOUT)
        .header(reqwest::header::ACCEPT, "application/json")
        .form(form);
    if let Some((client_id, secret)) = basic {
        let basic = Base64::encode_string(
            format!("{client_id}:{}", form_encode(secret.expose())).as_bytes(),
        );
        request = request.header(reqwest::header::AUTHORIZATION, format!("Basic {basic}"));
    }
    let mut response = request
        .send()
        .await
        .map_err(|e| fail(e.without_url().to_string()))?;
    let status = response.status();
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| fail(e.without_url().to_string()))?
    {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(fail(format!(
                "HTTP {} with an answer over {} KiB, not a token response",
                status.as_u16(),
                MAX_ANSWER / 1024
            )));
        }
        body.extend_from_slice(&chunk);
    }
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return Err(fail(format!(
            "HTTP {} with a body that is not OAuth2 JSON",
            status.as_u16()
        )));
    };
    if status.is_success() {
        return Ok(FormAnswer::Ok(json));
    }
    match json.get("error").and_then(serde_json::Value::as_str) {
        Some(error) => Ok(FormAnswer::Refused {
            status: status.as_u16(),
            error: error.to_owned(),
            description: json
                .get("error_description")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned),
        }),
        None => Err(fail(format!(
            "HTTP {} with a body that is not OAuth2 JSON",
            status.as_u16()
        ))),
    }
}

/// The tokens of a token endpoint's success: the access token, and a refresh token when the
/// grant gives one.
pub(crate) fn tokens_of(
    endpoint: &str,
    json: serde_json::Value,
) -> Result<(Token, Option<Secret>)> {
    let parsed: TokenResponse =
        serde_json::from_value(json).map_err(|_| AuthError::TokenEndpoint {
            endpoint: endpoint.to_owned(),
            detail: "the JSON answer is not a token response".to_owned(),
        })?;
    match parsed.access_token {
        Some(token) if !token.is_empty() => Ok((
            Token::new(Secret::new(token)),
            parsed
                .refresh_token
                .filter(|r| !r.is_empty())
                .map(Secret::new),
        )),
        _ => Err(AuthError::TokenEndpoint {
            endpoint: endpoint.to_owned(),
            detail: "the JSON answer has no access_token".to_owned(),
        }),
    }
}

/// The form fields a deployment's scopes and audience add to a grant.
pub(crate) fn scope_and_audience(config: &AuthConfig) -> Vec<(&'static str, String)> {
    let mut form = Vec::new();
    if !config.scopes.is_empty() {
        form.push(("scope", config.scopes.join(" ")));
    }
    if let Some(audience) = &config.audience {
        form.push(("audience", audience.clone()));
    }
    form
}

/// The client-credentials grant: `POST` a form with HTTP Basic auth. Errors name the endpoint
/// and the server's OAuth2 error, never the secret or the token.
pub async fn client_credentials(
    http: &reqwest::Client,
    config: &AuthConfig,
    client_id: &str,
    client_secret: &Secret,
) -> Result<Token> {
    let mut form = vec![("grant_type", "client_credentials".to_owned())];
    form.extend(scope_and_audience(config));
    let endpoint = &config.token_endpoint;
    match post_form(http, endpoint, &form, Some((client_id, client_secret))).await? {
        FormAnswer::Ok(json) => {
            let (token, _) = tokens_of(endpoint, json)?;
            tracing::debug!(endpoint = %endpoint, "minted a token with client credentials");
            Ok(token)
        }
        FormAnswer::Refused {
            status,
            error,
            description,
        } => Err(AuthError::TokenEndpoint {
            endpoint: endpoint.clone(),
            detail: FormAnswer::describe(status, &error, description.as_deref()),
        }),
    }
}
