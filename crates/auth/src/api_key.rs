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

/// Whether a key made for `key_endpoint` (as stored in the key: host, maybe `:port`) may be sent
/// to the control plane at `authority` (host, maybe `:port`; `https` tells its default port).
/// A key goes only to the endpoint it was made for, compared without case and with default
/// ports filled in; a key for a loopback address may go to any loopback address, because this
/// machine's sandbox comes back on another port after a restart and a loopback key grants
/// nothing beyond this machine.
pub fn key_matches_endpoint(key_endpoint: &str, authority: &str, https: bool) -> bool {
    let default_port = if https { "443" } else { "80" };
    let split = |hostport: &str| -> (String, String) {
        let hostport = hostport.trim().to_ascii_lowercase();
        // `[v6]:port`, `host:port`, or a bare host.
        match hostport.rsplit_once(':') {
            Some((host, port))
                if !port.is_empty()
                    && port.bytes().all(|b| b.is_ascii_digit())
                    && (!host.contains(':') || host.ends_with(']')) =>
            {
                (host.to_owned(), port.to_owned())
            }
            _ => (hostport.clone(), default_port.to_owned()),
        }
    };
    let loopback = |host: &str| {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        bare == "localhost"
            || bare
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    };
    let (key_host, key_port) = split(key_endpoint);
    let (host, port) = split(authority);
    (loopback(&key_host) && loopback(&host)) || (key_host == host && key_port == port)
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_go_only_to_their_own_endpoint() {
        use super::key_matches_endpoint as ok;
        for (key, authority, https, expected) in [
            ("prod.example.com", "prod.example.com", true, true),
            ("prod.example.com:443", "prod.example.com", true, true),
            ("PROD.example.com", "prod.example.com:443", true, true),
            // Issue 13, defect 8: a key for prod went to a local server.
            ("prod.example.com:443", "127.0.0.1:47301", false, false),
            ("prod.example.com", "prod.example.com:8443", true, false),
            ("prod.example.com", "staging.example.com", true, false),
            ("127.0.0.1:40033", "127.0.0.1:39697", false, true),
            ("localhost:1", "[::1]:2", false, true),
            ("127.0.0.1:40033", "prod.example.com", true, false),
        ] {
            assert_eq!(ok(key, authority, https), expected, "{key} -> {authority}");
        }
    }

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
