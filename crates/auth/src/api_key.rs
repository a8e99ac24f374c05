//! Flyte's encoded API keys: base64 of `endpoint:client_id:client_secret:org`, the endpoint
//! without its scheme. Decoding splits on `:` at most three times, as Flyte does, so the org may
//! contain `:` but the endpoint may not: a port in the endpoint is written as `%3A` (Flyte's own
//! keys name hosts without ports, so they decode the same either way).

use std::fmt;

use base64ct::{Base64, Encoding};
use flyte_api::Secret;

use crate::{AuthError, Result};

/// A decoded API key. `Debug` hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// `host[:port]`, no scheme.
    pub endpoint: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// Empty for open-source deployments, which have no organizations.
    pub org: String,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("endpoint", &self.endpoint)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("org", &self.org)
            .finish()
    }
}

/// The endpoint as it goes inside a key: scheme stripped (`https://`, `http://`, `dns:///`).
pub fn strip_scheme(endpoint: &str) -> &str {
    ["dns:///", "https://", "http://"]
        .iter()
        .find_map(|p| endpoint.strip_prefix(p))
        .unwrap_or(endpoint)
        .trim_end_matches('/')
}

fn malformed(reason: &str) -> AuthError {
    AuthError::MalformedApiKey(reason.to_owned())
}

impl ApiKey {
    /// The encoded form, as `flyte create api-key` prints it.
    pub fn encode(&self) -> Result<String> {
        for (what, value) in [("client id", &self.client_id), ("endpoint", &self.endpoint)] {
            if value.is_empty() {
                return Err(malformed(&format!("the {what} is empty")));
            }
        }
        if self.client_id.contains(':') || self.client_secret.expose().contains(':') {
            return Err(malformed("the client id and secret cannot contain ':'"));
        }
        let endpoint = strip_scheme(&self.endpoint)
            .replace('%', "%25")
            .replace(':', "%3A");
        let plain = format!(
            "{endpoint}:{}:{}:{}",
            self.client_id,
            self.client_secret.expose(),
            self.org
        );
        Ok(Base64::encode_string(plain.as_bytes()))
    }

    /// Decode a key. Errors say what is wrong without echoing any part of the key.
    pub fn decode(encoded: &str) -> Result<Self> {
        let bytes =
            Base64::decode_vec(encoded.trim()).map_err(|_| malformed("it is not base64"))?;
        let text = String::from_utf8(bytes).map_err(|_| malformed("it does not decode to text"))?;
        let parts: Vec<&str> = text.splitn(4, ':').collect();
        let [endpoint, client_id, secret, org] = parts.as_slice() else {
            return Err(malformed(&format!(
                "it has {} ':'-separated fields; expected endpoint:client_id:client_secret:org",
                parts.len()
            )));
        };
        for (what, value) in [
            ("endpoint", endpoint),
            ("client id", client_id),
            ("client secret", secret),
        ] {
            if value.is_empty() {
                return Err(malformed(&format!("the {what} is empty")));
            }
        }
        Ok(Self {
            endpoint: endpoint.replace("%3A", ":").replace("%25", "%"),
            client_id: (*client_id).to_owned(),
            client_secret: Secret::new(*secret),
            org: (*org).to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(endpoint: &str, org: &str) -> ApiKey {
        ApiKey {
            endpoint: endpoint.into(),
            client_id: "cid".into(),
            client_secret: Secret::new("s3cr3t"),
            org: org.into(),
        }
    }

    #[test]
    fn round_trips_and_matches_flytes_layout() {
        for (endpoint, org) in [
            ("dns:///flyte.example.com", "acme"),
            ("https://h.example.com/", ""),
            ("127.0.0.1:8090", "o:with:colons"),
        ] {
            let k = key(endpoint, org);
            let decoded = ApiKey::decode(&k.encode().unwrap()).unwrap();
            assert_eq!(decoded.endpoint, strip_scheme(endpoint));
            assert_eq!(
                (
                    decoded.client_id.as_str(),
                    decoded.client_secret.expose(),
                    decoded.org.as_str()
                ),
                ("cid", "s3cr3t", org)
            );
        }
        // A key as Flyte writes it: plain base64 of the four fields.
        let flyte = Base64::encode_string(b"flyte.example.com:my-id:my-secret:my-org");
        let k = ApiKey::decode(&flyte).unwrap();
        assert_eq!(
            (k.endpoint.as_str(), k.client_id.as_str(), k.org.as_str()),
            ("flyte.example.com", "my-id", "my-org")
        );
        assert!(!format!("{k:?}").contains("my-secret"));
    }

    #[test]
    fn malformed_keys_are_named_errors_without_key_material() {
        let b64 = |s: &str| Base64::encode_string(s.as_bytes());
        for (input, want) in [
            ("not base64!!".to_owned(), "not base64"),
            (b64("only:SEKRIT:fields"), "has 3 ':'-separated fields"),
            (b64(":cid:SEKRIT:org"), "endpoint is empty"),
            (b64("host::SEKRIT:org"), "client id is empty"),
            (b64("host:cid::SEKRIT"), "client secret is empty"),
            (
                Base64::encode_string(&[0xff, 0xfe, b':']),
                "does not decode to text",
            ),
        ] {
            let err = ApiKey::decode(&input).unwrap_err().to_string();
            assert!(err.contains(want), "{input}: {err}");
            assert!(!err.contains("SEKRIT") && !err.contains(&input), "{err}");
        }
    }
}
