//! Helpers shared by the test files that talk to flyte-testkit's control plane.

use flyte_api::{Endpoint, HttpClient, Secret};
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
