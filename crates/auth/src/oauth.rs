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
    pub scopes: Vec<String>,
    pub audience: Option<String>,
    /// The header tokens go in (`authorization` unless the deployment says otherwise).
    pub header_name: String,
}

#[derive(Debug, Deserialize)]
struct WellKnown {
    #[serde(default)]
    token_endpoint: String,
}

/// Ask the deployment how to get tokens: `AuthMetadataService` first, then the standard
/// `/.well-known/oauth-authorization-server` document.
pub async fn discover(client: &Client) -> Result<AuthConfig> {
    let metadata = client.connect(auth::AuthMetadataServiceClient::new)?;
    let token_endpoint = match metadata
        .get_o_auth2_metadata(auth::GetOAuth2MetadataRequest::default())
        .await
        .owned()
    {
        Ok(meta) if !meta.token_endpoint.is_empty() => meta.token_endpoint,
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
            doc.token_endpoint
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
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

/// The client-credentials grant: `POST` a form with HTTP Basic auth. Errors name the endpoint
/// and the server's OAuth2 error, never the secret or the token.
pub async fn client_credentials(
    http: &reqwest::Client,
    config: &AuthConfig,
    client_id: &str,
    client_secret: &Secret,
) -> Result<Token> {
    let basic = Base64::encode_string(
        format!("{client_id}:{}", form_encode(client_secret.expose())).as_bytes(),
    );
    let mut form = vec![("grant_type", "client_credentials".to_owned())];
    if !config.scopes.is_empty() {
        form.push(("scope", config.scopes.join(" ")));
    }
    if let Some(audience) = &config.audience {
        form.push(("audience", audience.clone()));
    }
    let endpoint = &config.token_endpoint;
    let fail = |detail: String| AuthError::TokenEndpoint {
        endpoint: endpoint.clone(),
        detail,
    };
    let response = http
        .post(endpoint)
        .header(reqwest::header::AUTHORIZATION, format!("Basic {basic}"))
        .header(reqwest::header::ACCEPT, "application/json")
        .form(&form)
        .send()
        .await
        .map_err(|e| fail(e.without_url().to_string()))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| fail(e.without_url().to_string()))?;
    let parsed: std::result::Result<TokenResponse, _> = serde_json::from_slice(&body);
    match (status.is_success(), parsed) {
        (
            true,
            Ok(TokenResponse {
                access_token: Some(token),
                ..
            }),
        ) if !token.is_empty() => {
            tracing::debug!(endpoint = %endpoint, "minted a token with client credentials");
            Ok(Token::new(Secret::new(token)))
        }
        (true, Ok(_)) => Err(fail("the JSON answer has no access_token".to_owned())),
        (
            _,
            Ok(TokenResponse {
                error: Some(error),
                error_description,
                ..
            }),
        ) => Err(fail(format!(
            "HTTP {}: {error}{}",
            status.as_u16(),
            error_description
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        ))),
        (_, _) => Err(fail(format!(
            "HTTP {} with a body that is not OAuth2 JSON",
            status.as_u16()
        ))),
    }
}
