//! API keys kept server-side, and `ensure_api_key`: one long-lived key per name, stored locally.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use flyte_api::Secret;

use crate::api_key::ApiKey;
use crate::{AuthError, Result};

/// A boxed future returned by [`ApiKeyService`] methods.
pub type ServiceFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// An API-key service. Open-source Flyte has none; the embedded sandbox provides one.
pub trait ApiKeyService: Send + Sync {
    /// Whether a key with this client id still exists.
    fn exists<'a>(&'a self, client_id: &'a str) -> ServiceFuture<'a, bool>;
    /// Create a key named `name`: its client id and secret.
    fn create<'a>(&'a self, name: &'a str) -> ServiceFuture<'a, (String, Secret)>;
}

/// The file the key is stored in, under the debug directory.
pub const API_KEY_FILE: &str = flyte_home::API_KEY_FILE;

/// Reuse the key stored at `<dir>/api-key` if the service still knows it, else create one and
/// store it (0600 at open, replaced atomically). A corrupt stored key is replaced.
pub async fn ensure_api_key(
    service: &dyn ApiKeyService,
    dir: &Path,
    endpoint: &str,
    org: &str,
    name: &str,
) -> Result<ApiKey> {
    let path = dir.join(API_KEY_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        match ApiKey::decode(&text) {
            Ok(key) if service.exists(&key.client_id).await? => {
                tracing::debug!(client_id = %key.client_id, "reusing the stored API key");
                return Ok(key);
            }
            Ok(key) => {
                tracing::info!(client_id = %key.client_id, "the stored API key no longer exists; creating a new one");
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "replacing an unreadable API key file");
            }
        }
    }
    let (client_id, client_secret) = service.create(name).await?;
    let key = ApiKey {
        endpoint: crate::api_key::strip_scheme(endpoint).to_owned(),
        client_id,
        client_secret,
        org: org.to_owned(),
    };
    flyte_fs::create_private_dir(dir)
        .map_err(|e| AuthError::Cache(format!("{}: {e}", dir.display())))?;
    flyte_fs::replace(
        &path,
        format!("{}\n", key.encode()?).as_bytes(),
        flyte_fs::SECRET_MODE,
    )?;
    Ok(key)
}
