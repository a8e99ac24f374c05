//! The sandbox's own Connect services (`flyterun.sandbox.v1`, `crates/idl/proto/`), which Flyte
//! does not define: API keys, and tokens that open one debug route only.

// The generated traits return `impl Future`; `async fn` refines that, as connectrpc documents.
#![allow(refining_impl_trait)]

use std::sync::Arc;

use connectrpc::{ConnectError, RequestContext, Response, ServiceRequest, ServiceResult};
use flyte_idl::flyterun::sandbox::v1 as own;

use crate::Shared;
use crate::server::{authenticate, now};

/// Both services over the sandbox's shared state.
#[derive(Clone)]
pub(crate) struct OwnServices {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for OwnServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnServices").finish_non_exhaustive()
    }
}

/// `router` with both services registered.
pub(crate) fn register(shared: Arc<Shared>, router: connectrpc::Router) -> connectrpc::Router {
    let services = Arc::new(OwnServices { shared });
    let router = <OwnServices as own::ApiKeyServiceExt>::register(Arc::clone(&services), router);
    <OwnServices as own::RouteTokenServiceExt>::register(services, router)
}

impl OwnServices {
    fn caller(&self, ctx: &RequestContext) -> Result<String, ConnectError> {
        authenticate(&self.shared, ctx.headers()).map_err(ConnectError::from)
    }
}

fn timestamp(seconds: i64) -> buffa_types::google::protobuf::Timestamp {
    buffa_types::google::protobuf::Timestamp {
        seconds,
        ..Default::default()
    }
}

fn key_message(key: &crate::store::ApiKeyRecord) -> own::ApiKey {
    own::ApiKey {
        client_id: key.client_id.clone(),
        name: key.name.clone(),
        created_at: buffa::MessageField::some(timestamp(key.created_at)),
        ..Default::default()
    }
}

fn no_such_key(client_id: &str) -> ConnectError {
    ConnectError::not_found(format!("no API key with client id {client_id:?}"))
}

impl own::ApiKeyService for OwnServices {
    async fn create_api_key(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, own::CreateApiKeyRequest>,
    ) -> ServiceResult<own::CreateApiKeyResponse> {
        self.caller(&ctx)?;
        let name = request.to_owned_message().name;
        if name.trim().is_empty() || name.len() > 100 {
            return Err(ConnectError::invalid_argument(
                "name must be 1 to 100 characters",
            ));
        }
        let (client_id, client_secret) = crate::create_api_key(&self.shared.store, &name)?;
        Response::ok(own::CreateApiKeyResponse {
            client_id,
            client_secret,
            ..Default::default()
        })
    }

    async fn get_api_key(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, own::GetApiKeyRequest>,
    ) -> ServiceResult<own::GetApiKeyResponse> {
        self.caller(&ctx)?;
        let client_id = request.to_owned_message().client_id;
        let key = self
            .shared
            .store
            .api_key(&client_id)?
            .ok_or_else(|| no_such_key(&client_id))?;
        Response::ok(own::GetApiKeyResponse {
            key: buffa::MessageField::some(key_message(&key)),
            ..Default::default()
        })
    }

    async fn delete_api_key(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, own::DeleteApiKeyRequest>,
    ) -> ServiceResult<own::DeleteApiKeyResponse> {
        self.caller(&ctx)?;
        let client_id = request.to_owned_message().client_id;
        let deleted = self.shared.store.delete_api_key(&client_id)?;
        if !deleted {
            return Err(no_such_key(&client_id));
        }
        Response::ok(own::DeleteApiKeyResponse::default())
    }

    async fn list_api_keys(
        &self,
        ctx: RequestContext,
        _request: ServiceRequest<'_, own::ListApiKeysRequest>,
    ) -> ServiceResult<own::ListApiKeysResponse> {
        self.caller(&ctx)?;
        let keys = self.shared.store.api_keys()?;
        Response::ok(own::ListApiKeysResponse {
            keys: keys.iter().map(key_message).collect(),
            ..Default::default()
        })
    }
}

/// The path of a route URI as the API publishes it (`http(s)://host:port/path`, or the `ws(s)`
/// form a client derives): what the ingress sees in the request line.
pub(crate) fn route_path(uri: &str) -> Option<&str> {
    let rest = ["http://", "https://", "ws://", "wss://"]
        .iter()
        .find_map(|scheme| uri.strip_prefix(scheme))?;
    let path = &rest[rest.find('/')?..];
    let path = path.split(['?', '#']).next().unwrap_or(path);
    (path.len() > 1).then_some(path)
}

impl own::RouteTokenService for OwnServices {
    async fn create_route_token(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, own::CreateRouteTokenRequest>,
    ) -> ServiceResult<own::CreateRouteTokenResponse> {
        // Only an access token may mint: a route token cannot widen itself or hop routes.
        let client_id = self.caller(&ctx)?;
        let uri = request.to_owned_message().route_uri;
        let path = route_path(&uri).ok_or_else(|| {
            ConnectError::invalid_argument(format!(
                "route_uri {uri:?} is not an http(s) or ws(s) URL with a path; give the IDE link the API published"
            ))
        })?;
        if self.shared.runs.ingress.route(path).is_none() {
            return Err(ConnectError::not_found(format!(
                "no live debug route at {path:?} (the action has not published it yet, or it has ended)"
            )));
        }
        let issued = now();
        let ttl = self.shared.token_ttl_secs;
        let token = self
            .shared
            .signer
            .mint_route(&client_id, path, issued, ttl)?;
        Response::ok(own::CreateRouteTokenResponse {
            token,
            expires_at: buffa::MessageField::some(timestamp(issued + ttl)),
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::route_path;

    #[test]
    fn route_paths_come_from_the_published_uri_in_any_scheme() {
        let cases = [
            ("http://127.0.0.1:4/debug/p/d/r", Some("/debug/p/d/r")),
            ("https://h/debug/x?ssh-host-key", Some("/debug/x")),
            ("ws://h:1/debug/x#frag", Some("/debug/x")),
            ("wss://h/debug/x", Some("/debug/x")),
            ("http://h/", None),
            ("http://h", None),
            ("ftp://h/debug/x", None),
            ("/debug/x", None),
            ("", None),
        ];
        for (uri, expected) in cases {
            assert_eq!(route_path(uri), expected, "{uri}");
        }
    }
}
