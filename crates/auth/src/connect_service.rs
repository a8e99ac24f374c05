//! The services of our own that the embedded sandbox serves (open-source Flyte has neither),
//! over Connect (`crates/idl/proto/flyterun/sandbox/v1/sandbox.proto`):
//!
//! - `flyterun.sandbox.v1.ApiKeyService`: create a key, or ask whether one exists;
//! - `flyterun.sandbox.v1.RouteTokenService`: a token that opens one debug route only.

use flyte_api::{Client, Code, Secret};
use serde::{Deserialize, Serialize};

use crate::service::{ApiKeyService, ServiceFuture};

/// The Connect service name.
pub const API_KEY_SERVICE: &str = "flyterun.sandbox.v1.ApiKeyService";
/// The Connect service that mints route-scoped tokens.
pub const ROUTE_TOKEN_SERVICE: &str = "flyterun.sandbox.v1.RouteTokenService";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RouteTokenRequest<'a> {
    route_uri: &'a str,
}

#[derive(Deserialize)]
struct RouteTokenResponse {
    token: String,
}

/// A token that opens the debug route at `route_uri` and nothing else, minted by the control
/// plane `client` talks to (with the client's own credential), for files that hold a token
/// longer than a call does (the headers file ssh's `ProxyCommand` reads): a copy of such a file
/// can neither call the API nor open another run's shell.
///
/// `Ok(None)` when the control plane does not mint such tokens (`unimplemented`: a Flyte
/// deployment, whose ingress takes the access token itself).
pub async fn create_route_token(client: &Client, route_uri: &str) -> crate::Result<Option<Secret>> {
    match client
        .unary::<_, RouteTokenResponse>(
            ROUTE_TOKEN_SERVICE,
            "CreateRouteToken",
            &RouteTokenRequest { route_uri },
        )
        .await
    {
        Ok(response) if !response.token.is_empty() => Ok(Some(Secret::new(response.token))),
        Ok(_) => Err(flyte_api::ApiError::new(
            Code::Internal,
            "CreateRouteToken answered without a token",
        )
        .into()),
        Err(e) if e.code == Code::Unimplemented => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// [`ApiKeyService`] over a [`Client`] (which must be authenticated as a user who may create
/// keys).
#[derive(Debug, Clone)]
pub struct ConnectApiKeyService {
    client: Client,
}

impl ConnectApiKeyService {
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreateRequest<'a> {
    name: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateResponse {
    client_id: String,
    client_secret: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GetRequest<'a> {
    client_id: &'a str,
}

impl ApiKeyService for ConnectApiKeyService {
    fn exists<'a>(&'a self, client_id: &'a str) -> ServiceFuture<'a, bool> {
        Box::pin(async move {
            match self
                .client
                .unary::<_, serde_json::Value>(
                    API_KEY_SERVICE,
                    "GetApiKey",
                    &GetRequest { client_id },
                )
                .await
            {
                Ok(_) => Ok(true),
                Err(e) if e.code == Code::NotFound => Ok(false),
                Err(e) => Err(e.into()),
            }
        })
    }

    fn create<'a>(&'a self, name: &'a str) -> ServiceFuture<'a, (String, Secret)> {
        Box::pin(async move {
            let created: CreateResponse = self
                .client
                .unary(API_KEY_SERVICE, "CreateApiKey", &CreateRequest { name })
                .await?;
            Ok((created.client_id, Secret::new(created.client_secret)))
        })
    }
}
