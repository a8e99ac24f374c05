//! Ask a Flyte deployment how its clients authenticate, using only `flyte-api` (the call needs
//! no credentials):
//!
//!     cargo run -p flyte-examples --example public_client_config -- dns:///flyte.example.com
//!     cargo run -p flyte-examples --example public_client_config -- http://127.0.0.1:8089
#![allow(clippy::print_stdout)]

use flyte_api::idl::flyteidl2::auth::{AuthMetadataServiceClient, GetPublicClientConfigRequest};
use flyte_api::{Answer, Client, Endpoint};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let raw = std::env::args()
        .nth(1)
        .ok_or("usage: public_client_config ENDPOINT")?;
    // Plain http is accepted for loopback endpoints only, as Flyte's `admin.insecure` would.
    let endpoint = Endpoint::parse(&raw, true)?;
    let client = Client::new(&endpoint)?;
    let metadata = client.connect(AuthMetadataServiceClient::new)?;
    let config = metadata
        .get_public_client_config(GetPublicClientConfigRequest::default())
        .await
        .owned()?;
    println!("endpoint:        {}", client.base_url());
    println!("client id:       {}", config.client_id);
    println!("redirect URI:    {}", config.redirect_uri);
    println!("scopes:          {}", config.scopes.join(" "));
    println!("token header:    {}", config.authorization_metadata_key);
    Ok(())
}
