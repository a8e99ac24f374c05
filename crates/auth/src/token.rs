//! Bearer tokens, their expiry, and the cache at `~/.flyte/ssh-debug/bearer.json`.

use std::path::Path;

use base64ct::{Base64UrlUnpadded, Encoding};
use flyte_api::Secret;
use serde::{Deserialize, Serialize};

use crate::Result;

/// A token is reused only while more than this many seconds remain.
pub const MIN_REMAINING_SECS: i64 = 120;

/// The token cache's file name in the debug directory, as Flyte's debug client names it.
pub const BEARER_FILE: &str = flyte_home::BEARER_FILE;

/// A bearer token and, for JWTs, when it expires (Unix seconds). `Debug` hides the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub value: Secret,
    pub exp: Option<i64>,
}

/// The `exp` claim of a JWT, read without verifying the signature (the server verifies; we only
/// want to know when to stop reusing it). `None` for opaque tokens.
pub fn jwt_exp(token: &str) -> Option<i64> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    let bytes = Base64UrlUnpadded::decode_vec(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    // `exp` is a NumericDate: seconds, usually an integer, sometimes with a fraction.
    let exp = claims.get("exp")?.as_number()?.to_string();
    exp.split('.').next()?.parse().ok()
}

impl Token {
    pub fn new(value: Secret) -> Self {
        let exp = jwt_exp(value.expose());
        Self { value, exp }
    }

    /// Whether the token may still be sent at `now` (Unix seconds). Opaque tokens are used until
    /// the server refuses them.
    pub fn usable_at(&self, now: i64) -> bool {
        self.exp.is_none_or(|exp| exp - now > MIN_REMAINING_SECS)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    endpoint: String,
    token: String,
    #[serde(default)]
    exp: Option<i64>,
    /// A person's login (the device flow) also keeps its refresh token (flyte-run's own file
    /// only; Flyte's `bearer.json` never gets one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    /// The token endpoint that issued the refresh token: the only one it is ever sent to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refresh_token_issuer: Option<String>,
}

/// Flyte's `{endpoint, token, exp}` for the newest entry at the top level, so Flyte's reader keeps
/// working, and the other endpoints' entries under `others`, which Flyte ignores.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CacheFile {
    #[serde(flatten)]
    newest: Entry,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    others: Vec<Entry>,
}

fn read_entries(path: &Path) -> Vec<Entry> {
    // A missing or corrupt cache is an empty one: it is rewritten on the next mint.
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    match serde_json::from_str::<CacheFile>(&text) {
        Ok(file) => std::iter::once(file.newest).chain(file.others).collect(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable token cache");
            Vec::new()
        }
    }
}

/// Seconds since the Unix epoch, the clock token expiries (`exp`) are read against.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Whether two cache keys name one endpoint: Flyte's scheme-qualified form (`https://host`,
/// `http://host:port`) and the scheme-less `host:port` earlier flyte-run releases wrote.
fn same_endpoint(a: &str, b: &str) -> bool {
    // (scheme if the key has one, host:port with https's default port dropped)
    fn parts(key: &str) -> (Option<&str>, &str) {
        let scheme = key.split_once("://").map(|(s, _)| s);
        let rest = crate::strip_scheme(key);
        let https_or_old = matches!(scheme, None | Some("https"));
        let rest = if https_or_old {
            rest.strip_suffix(":443").unwrap_or(rest)
        } else {
            rest
        };
        (scheme, rest)
    }
    let ((scheme_a, a), (scheme_b, b)) = (parts(a), parts(b));
    // Two scheme-qualified keys must agree on the scheme: a token for the TLS endpoint never
    // goes to a plain-http one on the same host and port. An old bare key matches either.
    a == b && (scheme_a.is_none() || scheme_b.is_none() || scheme_a == scheme_b)
}

/// The cached token for `endpoint` (either key form), if any.
pub fn cached(path: &Path, endpoint: &str) -> Option<Token> {
    entry(path, endpoint).map(|e| Token {
        exp: e.exp.or_else(|| jwt_exp(&e.token)),
        value: Secret::new(e.token),
    })
}

/// The refresh token cached for `endpoint`, if its login left one and `token_endpoint` issued
/// it: a deployment whose discovery now names another token endpoint never gets it.
pub fn cached_refresh(path: &Path, endpoint: &str, token_endpoint: &str) -> Option<Secret> {
    entry(path, endpoint)
        .filter(|e| e.refresh_token_issuer.as_deref() == Some(token_endpoint))
        .and_then(|e| e.refresh_token)
        .map(Secret::new)
}

fn entry(path: &Path, endpoint: &str) -> Option<Entry> {
    let entries = read_entries(path);
    // An exact key first: a stale entry under the old key must not hide a fresh one.
    entries
        .iter()
        .find(|e| e.endpoint == endpoint)
        .or_else(|| {
            entries
                .iter()
                .find(|e| same_endpoint(&e.endpoint, endpoint))
        })
        .cloned()
}

/// Store `token` for `endpoint` (give Flyte's key, `Endpoint::token_cache_key`), replacing
/// that endpoint's entry in either form and keeping other endpoints' entries. Written 0600 at
/// open and replaced atomically, so concurrent writers never leave a torn file (the last one
/// wins).
pub fn store(path: &Path, endpoint: &str, token: &Token) -> Result<()> {
    store_login(path, endpoint, token, None)
}

/// [`store`], with the refresh token of a person's login and the token endpoint that issued it.
pub fn store_login(
    path: &Path,
    endpoint: &str,
    token: &Token,
    refresh_token: Option<(&Secret, &str)>,
) -> Result<()> {
    let others = read_entries(path)
        .into_iter()
        .filter(|e| !same_endpoint(&e.endpoint, endpoint))
        .collect();
    let file = CacheFile {
        newest: Entry {
            endpoint: endpoint.to_owned(),
            token: token.value.expose().to_owned(),
            exp: token.exp,
            refresh_token: refresh_token.map(|(r, _)| r.expose().to_owned()),
            refresh_token_issuer: refresh_token.map(|(_, issuer)| issuer.to_owned()),
        },
        others,
    };
    let json =
        serde_json::to_vec_pretty(&file).map_err(|e| crate::AuthError::Cache(e.to_string()))?;
    if let Some(dir) = path.parent() {
        flyte_fs::create_private_dir(dir)
            .map_err(|e| crate::AuthError::Cache(format!("{}: {e}", dir.display())))?;
    }
    flyte_fs::replace(path, &json, flyte_fs::SECRET_MODE)?;
    Ok(())
}

#[allow(
    clippy::disallowed_methods,
    reason = "tests write their fixtures directly"
)]
#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(exp: i64) -> String {
        let part =
            |v: serde_json::Value| Base64UrlUnpadded::encode_string(v.to_string().as_bytes());
        format!(
            "{}.{}.sig",
            part(serde_json::json!({"alg": "none"})),
            part(serde_json::json!({"exp": exp, "sub": "x"}))
        )
    }

    /// A refresh token goes back only to the token endpoint that issued it.
    #[test]
    fn refresh_tokens_are_pinned_to_their_issuer() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("tokens.json");
        let token = Token {
            value: Secret::new("access".to_owned()),
            exp: None,
        };
        let refresh = Secret::new("refresh".to_owned());
        let issuer = "https://idp.example/oauth2/token";
        store_login(
            &cache,
            "https://flyte.example",
            &token,
            Some((&refresh, issuer)),
        )
        .unwrap();
        for (asked, want) in [
            (issuer, Some("refresh")),
            ("https://elsewhere.example/oauth2/token", None),
            ("http://idp.example/oauth2/token", None),
        ] {
            assert_eq!(
                cached_refresh(&cache, "https://flyte.example", asked)
                    .as_ref()
                    .map(Secret::expose),
                want,
                "{asked}"
            );
        }
    }

    #[test]
    fn expiry_of_jwts_and_opaque_tokens() {
        assert_eq!(jwt_exp(&jwt(1_700_000_000)), Some(1_700_000_000));
        for opaque in ["opaque-token", "a.b", "a.!!!.c", ""] {
            assert_eq!(jwt_exp(opaque), None, "{opaque}");
        }
        let t = Token::new(Secret::new(jwt(1000)));
        assert!(t.usable_at(879));
        assert!(!t.usable_at(880), "120 s or less left: mint a new one");
        assert!(Token::new(Secret::new("opaque")).usable_at(i64::MAX));
    }

    #[test]
    fn concurrent_writers_never_leave_a_torn_cache() {
        let dir = std::env::temp_dir().join(format!("flyte-bearer-race-{}", std::process::id()));
        let path = dir.join(BEARER_FILE);
        let _ = std::fs::remove_dir_all(&dir);
        std::thread::scope(|scope| {
            for writer in 0..8 {
                let path = &path;
                scope.spawn(move || {
                    for round in 0..40 {
                        let endpoint = format!("endpoint-{writer}");
                        store(
                            path,
                            &endpoint,
                            &Token::new(Secret::new(format!("t-{writer}-{round}"))),
                        )
                        .unwrap();
                        // Whatever is on disk right now is whole JSON with an entry we can read.
                        let text = std::fs::read_to_string(path).unwrap();
                        assert!(
                            serde_json::from_str::<CacheFile>(&text).is_ok(),
                            "torn cache: {text}"
                        );
                    }
                });
            }
        });
        // The last writer's entry is there; earlier endpoints may have been dropped by a race
        // (last writer wins), which only costs a re-mint, never a broken file.
        assert!(!read_entries(&path).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn flytes_scheme_qualified_keys_and_our_old_bare_keys_name_one_endpoint() {
        let cases = [
            ("https://flyte.example.com", "flyte.example.com:443", true),
            ("https://flyte.example.com", "flyte.example.com", true),
            (
                "https://flyte.example.com:8443",
                "flyte.example.com:8443",
                true,
            ),
            ("http://127.0.0.1:30080", "127.0.0.1:30080", true),
            ("http://127.0.0.1:30080", "http://127.0.0.1:30080", true),
            ("http://127.0.0.1:30080", "127.0.0.1:30081", false),
            ("https://a.example.com", "b.example.com:443", false),
            ("https://flyte.example.com:8443", "flyte.example.com", false),
            ("https://h:8443", "http://h:8443", false),
            ("https://h:80", "http://h:80", false),
        ];
        for (flyte, ours, same) in cases {
            assert_eq!(same_endpoint(flyte, ours), same, "{flyte} vs {ours}");
        }
        // A file written under the old key is read, and a store under Flyte's key replaces it.
        let dir = std::env::temp_dir().join(format!("flyte-bearer-keys-{}", std::process::id()));
        let path = dir.join(BEARER_FILE);
        let _ = std::fs::remove_dir_all(&dir);
        store(&path, "127.0.0.1:30080", &Token::new(Secret::new("old"))).unwrap();
        assert_eq!(
            cached(&path, "http://127.0.0.1:30080")
                .unwrap()
                .value
                .expose(),
            "old"
        );
        store(
            &path,
            "http://127.0.0.1:30080",
            &Token::new(Secret::new("new")),
        )
        .unwrap();
        let file: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(file["endpoint"], "http://127.0.0.1:30080");
        assert!(file.get("others").is_none(), "{file}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cache_keeps_several_endpoints_and_stays_readable_by_flyte() {
        let dir = std::env::temp_dir().join(format!("flyte-bearer-{}", std::process::id()));
        let path = dir.join(BEARER_FILE);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(cached(&path, "a"), None);
        store(&path, "a", &Token::new(Secret::new(jwt(10)))).unwrap();
        store(&path, "b", &Token::new(Secret::new("opaque-b"))).unwrap();
        assert_eq!(cached(&path, "a").unwrap().exp, Some(10));
        assert_eq!(cached(&path, "b").unwrap().value.expose(), "opaque-b");
        // Flyte's reader looks at the top-level fields: they hold the newest entry.
        let top: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(
            (top["endpoint"].as_str(), top["token"].as_str()),
            (Some("b"), Some("opaque-b"))
        );
        // Flyte's own file (one entry, no `others`) reads back.
        std::fs::write(
            &path,
            format!(r#"{{"endpoint": "c", "token": "{}", "exp": 99}}"#, jwt(99)),
        )
        .unwrap();
        assert_eq!(cached(&path, "c").unwrap().exp, Some(99));
        // A corrupt file is ignored, then rewritten.
        std::fs::write(&path, "{ not json").unwrap();
        assert_eq!(cached(&path, "c"), None);
        store(&path, "c", &Token::new(Secret::new("t"))).unwrap();
        assert_eq!(cached(&path, "c").unwrap().value.expose(), "t");
        assert_eq!(
            std::os::unix::fs::MetadataExt::mode(&std::fs::metadata(&path).unwrap()) & 0o777,
            0o600
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
