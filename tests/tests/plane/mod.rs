//! Helpers shared by the test files that talk to flyte-testkit's control plane.

use flyte_api::idl::flyterun::sandbox::v1 as own;
use flyte_api::{Answer, ApiError, Client, Endpoint, HttpClient, Secret};
use flyte_auth::{AuthConfig, ClientCredentials};
use flyte_testkit::control_plane::{CLIENT_ID, CLIENT_SECRET, ControlPlane};

pub(crate) fn endpoint(plane: &ControlPlane) -> Endpoint {
    Endpoint::parse(plane.base_url(), false).unwrap()
}

/// Client credentials for the plane's test client, tokens cached in `cache`.
pub(crate) fn credentials(
    plane: &ControlPlane,
    config: AuthConfig,
    cache: std::path::PathBuf,
) -> ClientCredentials {
    ClientCredentials::new(
        HttpClient::default(),
        config,
        CLIENT_ID.to_owned(),
        Secret::new(CLIENT_SECRET),
        endpoint(plane).authority(),
        cache,
    )
}

/// The plane's one call that needs a token.
pub(crate) async fn list_keys(client: &Client) -> Result<own::ListApiKeysResponse, ApiError> {
    client
        .connect(own::ApiKeyServiceClient::new)?
        .list_api_keys(own::ListApiKeysRequest::default())
        .await
        .owned()
}
