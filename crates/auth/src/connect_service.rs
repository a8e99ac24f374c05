//! The API-key service our embedded sandbox serves (open-source Flyte has none), over Connect:
//!
//! - `flyterun.sandbox.v1.ApiKeyService/CreateApiKey` `{"name"}` -> `{"clientId", "clientSecret"}`
//! - `flyterun.sandbox.v1.ApiKeyService/GetApiKey` `{"clientId"}` -> `{"clientId", "name"}`, or
//!   `not_found`

use flyte_api::{Client, Code, Secret};
use serde::{Deserialize, Serialize};

use crate::service::{ApiKeyService, ServiceFuture};

/// The Connect service name.
pub const API_KEY_SERVICE: &str = "flyterun.sandbox.v1.ApiKeyService";

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
