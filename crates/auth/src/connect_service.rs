//! The services of our own that the embedded sandbox serves (open-source Flyte has neither),
//! over Connect (`crates/idl/proto/flyterun/sandbox/v1/sandbox.proto`):
//!
//! - `flyterun.sandbox.v1.ApiKeyService`: create a key, or ask whether one exists;
//! - `flyterun.sandbox.v1.RouteTokenService`: a token that opens one debug route only.

use flyte_api::idl::flyterun::sandbox::v1 as own;
use flyte_api::{Answer, ApiError, Client, Code, Secret};

use crate::service::{ApiKeyService, ServiceFuture};

/// The Connect service name.
pub const API_KEY_SERVICE: &str = own::API_KEY_SERVICE_SERVICE_NAME;
/// The Connect service that mints route-scoped tokens.
pub const ROUTE_TOKEN_SERVICE: &str = own::ROUTE_TOKEN_SERVICE_SERVICE_NAME;

/// A token that opens the debug route at `route_uri` and nothing else, minted by the control
/// plane `client` talks to (with the client's own credential), for files that hold a token
/// longer than a call does (the headers file ssh's `ProxyCommand` reads): a copy of such a file
/// can neither call the API nor open another run's shell.
///
/// `Ok(None)` when the control plane does not mint such tokens (`unimplemented`: a Flyte
/// deployment, whose ingress takes the access token itself).
pub async fn create_route_token(client: &Client, route_uri: &str) -> crate::Result<Option<Secret>> {
    let tokens = client.connect(own::RouteTokenServiceClient::new)?;
    let request = own::CreateRouteTokenRequest {
        route_uri: route_uri.to_owned(),
        ..Default::default()
    };
    match tokens.create_route_token(request).await.owned() {
        Ok(response) if !response.token.is_empty() => Ok(Some(Secret::new(response.token))),
        Ok(_) => {
            Err(ApiError::new(Code::Internal, "CreateRouteToken answered without a token").into())
        }
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

impl ApiKeyService for ConnectApiKeyService {
    fn exists<'a>(&'a self, client_id: &'a str) -> ServiceFuture<'a, bool> {
        Box::pin(async move {
            let keys = self.client.connect(own::ApiKeyServiceClient::new)?;
            let request = own::GetApiKeyRequest {
                client_id: client_id.to_owned(),
                ..Default::default()
            };
            match keys.get_api_key(request).await.owned() {
                Ok(_) => Ok(true),
                Err(e) if e.code == Code::NotFound => Ok(false),
                Err(e) => Err(e.into()),
            }
        })
    }

    fn create<'a>(&'a self, name: &'a str) -> ServiceFuture<'a, (String, Secret)> {
        Box::pin(async move {
            let keys = self.client.connect(own::ApiKeyServiceClient::new)?;
            let request = own::CreateApiKeyRequest {
                name: name.to_owned(),
                ..Default::default()
            };
            let created = keys.create_api_key(request).await.owned()?;
            Ok((created.client_id, Secret::new(created.client_secret)))
        })
    }
}
