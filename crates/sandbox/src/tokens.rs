//! Bearer tokens the sandbox issues: HS256 JWTs with `sub` (the client id), `iss` (the sandbox's
//! URL), `iat` and `exp`, and for a token that opens one debug route only, `route` (the route's
//! path). The signing key is 32 random bytes created 0600 at open.

use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::{Result, SandboxError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub iss: String,
    pub iat: i64,
    pub exp: i64,
    /// Set: the token opens the debug route at this path and nothing else (no API call, no
    /// other route). Absent: an access token, good for the API and every route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
}

/// Signs and checks tokens. `Debug` shows nothing of the key.
pub struct Signer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    issuer: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// Why a presented token is refused (said to the client as `unauthenticated`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    Expired,
    Invalid(String),
}

impl Signer {
    /// The key at `path`, created (0600, complete or not at all) the first time.
    pub fn load_or_create(path: &Path, issuer: &str) -> Result<Self> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key)
            .map_err(|e| SandboxError::Io(format!("random signing key: {e}")))?;
        // A racing sandbox may create it first; either way the key on disk is the one used.
        flyte_fs::create_new(path, &key, flyte_fs::SECRET_MODE)?;
        let stored = std::fs::read(path)
            .map_err(|e| SandboxError::Io(format!("{}: {e}", path.display())))?;
        if stored.len() != 32 {
            return Err(SandboxError::Io(format!(
                "{} is not a signing key ({} bytes); delete it to let the sandbox make a new one (tokens it issued stop working)",
                path.display(),
                stored.len()
            )));
        }
        Ok(Self {
            encoding: EncodingKey::from_secret(&stored),
            decoding: DecodingKey::from_secret(&stored),
            issuer: issuer.to_owned(),
        })
    }

    /// An access token for `client_id`.
    pub fn mint(&self, client_id: &str, now: i64, ttl_secs: i64) -> Result<String> {
        self.sign(&Claims {
            sub: client_id.to_owned(),
            iss: self.issuer.clone(),
            iat: now,
            exp: now + ttl_secs,
            route: None,
        })
    }

    /// A token for `client_id` that opens the debug route at `route` only.
    pub fn mint_route(
        &self,
        client_id: &str,
        route: &str,
        now: i64,
        ttl_secs: i64,
    ) -> Result<String> {
        self.sign(&Claims {
            sub: client_id.to_owned(),
            iss: self.issuer.clone(),
            iat: now,
            exp: now + ttl_secs,
            route: Some(route.to_owned()),
        })
    }

    fn sign(&self, claims: &Claims) -> Result<String> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|e| SandboxError::Io(format!("signing a token: {e}")))
    }

    /// The claims of a token this sandbox signed and that has not expired at `now`.
    pub fn verify(&self, token: &str, now: i64) -> std::result::Result<Claims, Refused> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&self.issuer]);
        // Expiry is checked against `now` below, so tests can move the clock.
        validation.validate_exp = false;
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|e| Refused::Invalid(e.to_string()))?;
        if data.claims.exp <= now {
            return Err(Refused::Expired);
        }
        Ok(data.claims)
    }
}
