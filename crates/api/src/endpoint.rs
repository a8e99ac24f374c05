//! Where the control plane is: `dns:///host:port`, `https://host`, `http://host:port` or a bare
//! `host[:port]`. Plain HTTP is allowed for loopback (the local sandbox) and otherwise only when
//! the caller opts in, so a token is never sent in clear text by accident.

use std::net::IpAddr;

use crate::{ApiError, Code};

/// A parsed control-plane endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    scheme: &'static str,
    /// `host` or `host:port` (IPv6 in brackets), lower-cased.
    authority: String,
}

/// The endpoint to use: the explicit argument, else `FLYTE_ENDPOINT`'s value (passed in so this
/// stays free of the process environment).
pub fn resolve<'a>(explicit: Option<&'a str>, env: Option<&'a str>) -> Option<&'a str> {
    explicit
        .filter(|e| !e.trim().is_empty())
        .or(env.filter(|e| !e.trim().is_empty()))
}

fn invalid(raw: &str, reason: impl Into<String>) -> ApiError {
    ApiError::new(
        Code::InvalidArgument,
        format!("invalid endpoint {raw:?}: {}", reason.into()),
    )
}

impl Endpoint {
    /// Parse an endpoint. `allow_insecure` is Flyte's `insecure`: an endpoint that names no scheme
    /// (`dns:///host`, `host:port`) is plain http, and `http://` may name a host other than
    /// loopback.
    pub fn parse(raw: &str, allow_insecure: bool) -> Result<Self, ApiError> {
        let trimmed = raw.trim();
        // Flyte's `insecure` means plain http for an endpoint that names no scheme.
        let default_scheme = if allow_insecure { "http" } else { "https" };
        let (scheme, rest) = if let Some(rest) = trimmed.strip_prefix("dns:///") {
            (default_scheme, rest)
        } else if let Some((scheme, rest)) = trimmed.split_once("://") {
            match scheme.to_ascii_lowercase().as_str() {
                "https" => ("https", rest),
                "http" => ("http", rest),
                _ => {
                    return Err(invalid(
                        raw,
                        "use https://host, http://host:port, dns:///host:port or host:port",
                    ));
                }
            }
        } else {
            (default_scheme, trimmed)
        };
        let authority = rest.trim_end_matches('/').to_ascii_lowercase();
        if authority.is_empty() {
            return Err(invalid(raw, "it names no host"));
        }
        if authority.contains(['/', '?', '#', '@', ' ']) {
            return Err(invalid(
                raw,
                "give only a host and an optional port, no path or credentials",
            ));
        }
        let endpoint = Self { scheme, authority };
        if let Some(port) = endpoint.port_text()
            && port.parse::<u16>().map_or(true, |p| p == 0)
        {
            return Err(invalid(raw, format!("{port:?} is not a port")));
        }
        if scheme == "http" && !allow_insecure && !endpoint.is_loopback() {
            return Err(invalid(
                raw,
                "plain http sends tokens unencrypted; use https, or opt in to insecure endpoints explicitly",
            ));
        }
        Ok(endpoint)
    }

    fn port_text(&self) -> Option<&str> {
        match self.authority.rfind(':') {
            // An IPv6 literal's colons are inside brackets; its port follows the `]`.
            Some(i) if !self.authority.starts_with('[') || self.authority[..i].ends_with(']') => {
                Some(&self.authority[i + 1..])
            }
            _ => None,
        }
    }

    /// The host without port or brackets.
    pub fn host(&self) -> &str {
        let host = match self.port_text() {
            Some(port) => &self.authority[..self.authority.len() - port.len() - 1],
            None => &self.authority,
        };
        host.trim_start_matches('[').trim_end_matches(']')
    }

    /// Whether the host is this machine (127.0.0.0/8, `::1`, `localhost`).
    pub fn is_loopback(&self) -> bool {
        let host = self.host();
        host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// `https://host:port`, the base every call path is appended to.
    pub fn base_url(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }

    /// `host:port` without a scheme: how Flyte writes endpoints inside API keys and caches.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    pub fn is_https(&self) -> bool {
        self.scheme == "https"
    }

    /// The key Flyte's SSH-debug client files this endpoint's token under in `bearer.json`:
    /// `https://host` for a secure endpoint (its port too, unless 443), `http://host:port` for an
    /// insecure one.
    pub fn token_cache_key(&self) -> String {
        let authority = if self.is_https() {
            self.authority
                .strip_suffix(":443")
                .unwrap_or(&self.authority)
        } else {
            &self.authority
        };
        format!("{}://{authority}", self.scheme)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (input, allow insecure, Ok((base URL, host)) or Err(part of the message))
    type Case = (
        &'static str,
        bool,
        Result<(&'static str, &'static str), &'static str>,
    );

    #[test]
    fn endpoints() {
        let cases: &[Case] = &[
            (
                "dns:///flyte.example.com:443",
                false,
                Ok(("https://flyte.example.com:443", "flyte.example.com")),
            ),
            (
                "https://Flyte.Example.com/",
                false,
                Ok(("https://flyte.example.com", "flyte.example.com")),
            ),
            (
                "flyte.example.com",
                false,
                Ok(("https://flyte.example.com", "flyte.example.com")),
            ),
            (
                "http://127.0.0.1:8090",
                false,
                Ok(("http://127.0.0.1:8090", "127.0.0.1")),
            ),
            (
                "http://localhost:8090",
                false,
                Ok(("http://localhost:8090", "localhost")),
            ),
            ("http://[::1]:8090", false, Ok(("http://[::1]:8090", "::1"))),
            (
                "http://flyte.internal:8090",
                true,
                Ok(("http://flyte.internal:8090", "flyte.internal")),
            ),
            (
                "http://flyte.internal:8090",
                false,
                Err("plain http sends tokens unencrypted"),
            ),
            ("ftp://x", false, Err("use https://host")),
            ("https://", false, Err("names no host")),
            ("https://h/path", false, Err("no path")),
            ("https://user@h", false, Err("no path or credentials")),
            ("h:0", false, Err("is not a port")),
            ("h:http", false, Err("is not a port")),
        ];
        for (raw, insecure, want) in cases {
            let got = Endpoint::parse(raw, *insecure);
            match want {
                Ok((base, host)) => {
                    let e = got.unwrap_or_else(|e| panic!("{raw}: {e}"));
                    assert_eq!((e.base_url().as_str(), e.host()), (*base, *host), "{raw}");
                }
                Err(msg) => {
                    let e = got.unwrap_err();
                    assert!(e.to_string().contains(msg), "{raw}: {e}");
                }
            }
        }
    }

    #[test]
    fn explicit_beats_environment() {
        assert_eq!(resolve(Some("a"), Some("b")), Some("a"));
        assert_eq!(resolve(None, Some("b")), Some("b"));
        assert_eq!(resolve(Some(" "), Some("b")), Some("b"));
        assert_eq!(resolve(None, None), None);
    }
}
