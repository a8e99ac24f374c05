//! A person's login to the sandbox, as a pure state machine (codes and the clock come in as
//! arguments, so every answer is table-tested): the device authorization grant (RFC 8628), the
//! authorization code grant with PKCE (RFC 7636, S256 only, redirects to loopback only), and
//! refresh tokens.
//!
//! The sandbox has no accounts: its owner approves each login by its user code
//! (`flyte-run sandbox approve CODE`, proved with the sandbox's own credential), and the login's
//! tokens are minted for that credential's client (deleting the key revokes them, as for every
//! other token).

use std::collections::HashMap;

/// How long a device code may wait for its approval.
pub(crate) const DEVICE_CODE_TTL_SECS: i64 = 600;
/// The polling interval the sandbox asks for; one on loopback costs nothing.
pub(crate) const POLL_INTERVAL_SECS: i64 = 1;
/// Pending device codes at most: a flood of requests is refused, not stored.
pub(crate) const MAX_PENDING: usize = 64;
/// How long an authorization code may wait for its exchange.
pub(crate) const AUTHORIZATION_CODE_TTL_SECS: i64 = 60;
/// How long a refresh token lasts.
pub(crate) const REFRESH_TTL_SECS: i64 = 30 * 24 * 3600;
/// Refresh tokens held at most; the oldest goes first.
pub(crate) const MAX_REFRESH_TOKENS: usize = 1024;

/// The characters of a user code: no vowels (no words), nothing that reads as another character.
pub(crate) const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";

/// A user code from random bytes: eight letters of [`USER_CODE_ALPHABET`], as `XXXX-XXXX`.
pub(crate) fn user_code(random: [u8; 8]) -> String {
    let letters: Vec<char> = random
        .iter()
        .map(|b| char::from(USER_CODE_ALPHABET[usize::from(*b) % USER_CODE_ALPHABET.len()]))
        .collect();
    let (a, b) = letters.split_at(4);
    format!(
        "{}-{}",
        a.iter().collect::<String>(),
        b.iter().collect::<String>()
    )
}

/// A user code as typed: case, spaces and the dash do not matter.
pub(crate) fn normalize_user_code(typed: &str) -> String {
    let letters: String = typed
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect();
    match letters.len() {
        8 => format!("{}-{}", &letters[..4], &letters[4..]),
        _ => letters,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    Pending,
    /// Approved by this client (the tokens are minted for it).
    Approved(String),
    Denied,
}

#[derive(Debug, Clone)]
struct Grant {
    user_code: String,
    expires_at: i64,
    last_poll: Option<i64>,
    decision: Decision,
}

/// What the token endpoint answers a device-code poll (RFC 8628 §3.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Poll {
    /// Approved: mint tokens for this client. The code is used up.
    Approved {
        client_id: String,
    },
    Pending,
    SlowDown,
    Denied,
    Expired,
    /// No such device code (never issued, or already used).
    Unknown,
}

impl Poll {
    /// The OAuth2 error code of a poll that gives no token.
    pub(crate) fn error_code(&self) -> &'static str {
        match self {
            Poll::Approved { .. } => "",
            Poll::Pending => "authorization_pending",
            Poll::SlowDown => "slow_down",
            Poll::Denied => "access_denied",
            Poll::Expired => "expired_token",
            Poll::Unknown => "invalid_grant",
        }
    }
}

/// What an owner's approval (or denial) found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decided {
    Done,
    /// No pending request has that user code (mistyped, expired, or already decided).
    NoSuchCode,
}

/// Why a new device code was not issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    TooManyPending,
}

/// The refresh token's client, if it is valid at `now`; it is used up either way (rotation).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Refresh {
    client_id: String,
    expires_at: i64,
    issued_at: i64,
}

/// A browser's authorization request (PKCE), waiting for the owner.
#[derive(Debug, Clone)]
struct Authorization {
    grant: Grant,
    redirect_uri: String,
    state: Option<String>,
    challenge: String,
}

/// An authorization code sent to the redirect URI, waiting for its exchange.
#[derive(Debug, Clone)]
struct IssuedCode {
    client_id: String,
    challenge: String,
    redirect_uri: String,
    expires_at: i64,
}

/// Where a browser goes after asking whether its request was decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Continue {
    /// Still waiting: show the user code again.
    Pending { user_code: String },
    /// Decided: back to the client's redirect URI with a code (or `error=access_denied`).
    Redirect { location: String },
    /// No such request (never made, expired, or already finished).
    Unknown,
}

/// PKCE's S256: the challenge a verifier answers (RFC 7636 §4.2).
pub(crate) fn s256(verifier: &str) -> String {
    use sha2::Digest as _;
    <base64ct::Base64UrlUnpadded as base64ct::Encoding>::encode_string(&sha2::Sha256::digest(
        verifier.as_bytes(),
    ))
}

/// Whether `uri` is an http redirect to this machine's loopback (RFC 8252 §7.3): the only place
/// the sandbox sends an authorization code.
pub(crate) fn is_loopback_redirect(uri: &str) -> bool {
    let Ok(parsed) = uri.parse::<axum::http::Uri>() else {
        return false;
    };
    parsed.scheme_str() == Some("http")
        && parsed.port_u16().is_some()
        && !uri.contains('@')
        && matches!(
            parsed.host(),
            Some("localhost" | "127.0.0.1" | "[::1]" | "::1")
        )
}

/// `value` percent-encoded for a URL query.
fn query_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            use std::fmt::Write as _;
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// `base` with `params` added to its query.
fn with_query(base: &str, params: &[(&str, &str)]) -> String {
    let joined: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", query_encode(v)))
        .collect();
    let separator = if base.contains('?') { '&' } else { '?' };
    format!("{base}{separator}{}", joined.join("&"))
}

/// Logins waiting for their owner, authorization codes waiting for their exchange, and the
/// refresh tokens handed out. `Debug` shows how many, never the codes (they are secrets).
#[derive(Default)]
pub(crate) struct Grants {
    devices: HashMap<String, Grant>,
    authorizations: HashMap<String, Authorization>,
    codes: HashMap<String, IssuedCode>,
    refresh: HashMap<String, Refresh>,
}

impl std::fmt::Debug for Grants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grants")
            .field("devices", &self.devices.len())
            .field("authorizations", &self.authorizations.len())
            .field("codes", &self.codes.len())
            .field("refresh_tokens", &self.refresh.len())
            .finish()
    }
}

impl Grants {
    fn forget_expired(&mut self, now: i64) {
        self.devices.retain(|_, g| g.expires_at > now);
        self.authorizations.retain(|_, a| a.grant.expires_at > now);
        self.codes.retain(|_, c| c.expires_at > now);
        self.refresh.retain(|_, r| r.expires_at > now);
    }

    fn pending(&self) -> usize {
        self.devices.len() + self.authorizations.len() + self.codes.len()
    }

    /// Record a browser's authorization request (`request_id` and `user_code` random, from the
    /// caller). The redirect URI must be loopback and the challenge S256 (checked by the caller).
    pub(crate) fn start_authorization(
        &mut self,
        request_id: String,
        user_code: String,
        (redirect_uri, state, challenge): (String, Option<String>, String),
        now: i64,
    ) -> Result<(), Refusal> {
        self.forget_expired(now);
        if self.pending() >= MAX_PENDING {
            return Err(Refusal::TooManyPending);
        }
        self.authorizations.insert(
            request_id,
            Authorization {
                grant: Grant {
                    user_code,
                    expires_at: now + DEVICE_CODE_TTL_SECS,
                    last_poll: None,
                    decision: Decision::Pending,
                },
                redirect_uri,
                state,
                challenge,
            },
        );
        Ok(())
    }

    /// The browser asks whether its request was decided; `code` (random, from the caller) is
    /// the authorization code it gets when it was approved.
    pub(crate) fn continue_authorization(
        &mut self,
        request_id: &str,
        code: String,
        now: i64,
    ) -> Continue {
        self.forget_expired(now);
        let Some(request) = self.authorizations.get(request_id) else {
            return Continue::Unknown;
        };
        let state: Vec<(&str, &str)> = request
            .state
            .as_deref()
            .map(|s| ("state", s))
            .into_iter()
            .collect();
        let location = match &request.grant.decision {
            Decision::Pending => {
                return Continue::Pending {
                    user_code: request.grant.user_code.clone(),
                };
            }
            Decision::Denied => {
                let mut params = vec![("error", "access_denied")];
                params.extend(state);
                with_query(&request.redirect_uri, &params)
            }
            Decision::Approved(client_id) => {
                let mut params = vec![("code", code.as_str())];
                params.extend(state);
                let location = with_query(&request.redirect_uri, &params);
                self.codes.insert(
                    code,
                    IssuedCode {
                        client_id: client_id.clone(),
                        challenge: request.challenge.clone(),
                        redirect_uri: request.redirect_uri.clone(),
                        expires_at: now + AUTHORIZATION_CODE_TTL_SECS,
                    },
                );
                location
            }
        };
        self.authorizations.remove(request_id);
        Continue::Redirect { location }
    }

    /// Exchange an authorization code (once): its client, when the verifier answers its
    /// challenge and the redirect URI, if given, is the one the code was sent to.
    pub(crate) fn redeem_code(
        &mut self,
        code: &str,
        verifier: &str,
        redirect_uri: Option<&str>,
        now: i64,
    ) -> Option<String> {
        let issued = self.codes.remove(code)?;
        let valid = issued.expires_at > now
            && s256(verifier) == issued.challenge
            && redirect_uri.is_none_or(|r| r == issued.redirect_uri);
        valid.then_some(issued.client_id)
    }

    /// Record a new device code and its user code (both random, from the caller).
    pub(crate) fn start(
        &mut self,
        device_code: String,
        user_code: String,
        now: i64,
    ) -> Result<(), Refusal> {
        self.forget_expired(now);
        if self.pending() >= MAX_PENDING {
            return Err(Refusal::TooManyPending);
        }
        self.devices.insert(
            device_code,
            Grant {
                user_code,
                expires_at: now + DEVICE_CODE_TTL_SECS,
                last_poll: None,
                decision: Decision::Pending,
            },
        );
        Ok(())
    }

    /// The owner (`client_id`, already authenticated) approves or denies `user_code`.
    pub(crate) fn decide(
        &mut self,
        user_code: &str,
        approve_for: Option<&str>,
        now: i64,
    ) -> Decided {
        self.forget_expired(now);
        let wanted = normalize_user_code(user_code);
        let Some(grant) = self
            .devices
            .values_mut()
            .chain(self.authorizations.values_mut().map(|a| &mut a.grant))
            .find(|g| g.user_code == wanted && g.decision == Decision::Pending)
        else {
            return Decided::NoSuchCode;
        };
        grant.decision = approve_for.map_or(Decision::Denied, |c| Decision::Approved(c.to_owned()));
        Decided::Done
    }

    /// A device's poll of the token endpoint.
    pub(crate) fn poll(&mut self, device_code: &str, now: i64) -> Poll {
        let Some(grant) = self.devices.get_mut(device_code) else {
            return Poll::Unknown;
        };
        if grant.expires_at <= now {
            self.devices.remove(device_code);
            return Poll::Expired;
        }
        let too_soon = grant
            .last_poll
            .is_some_and(|last| now - last < POLL_INTERVAL_SECS);
        grant.last_poll = Some(now);
        match grant.decision.clone() {
            Decision::Approved(client_id) => {
                self.devices.remove(device_code);
                Poll::Approved { client_id }
            }
            Decision::Denied => {
                self.devices.remove(device_code);
                Poll::Denied
            }
            Decision::Pending if too_soon => Poll::SlowDown,
            Decision::Pending => Poll::Pending,
        }
    }

    /// Hand out `token` as a refresh token for `client_id`.
    pub(crate) fn issue_refresh(&mut self, token: String, client_id: &str, now: i64) {
        self.forget_expired(now);
        while self.refresh.len() >= MAX_REFRESH_TOKENS {
            let Some(oldest) = self
                .refresh
                .iter()
                .min_by_key(|(_, r)| r.issued_at)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.refresh.remove(&oldest);
        }
        self.refresh.insert(
            token,
            Refresh {
                client_id: client_id.to_owned(),
                expires_at: now + REFRESH_TTL_SECS,
                issued_at: now,
            },
        );
    }

    /// Use up a refresh token: its client while it is valid.
    pub(crate) fn redeem_refresh(&mut self, token: &str, now: i64) -> Option<String> {
        let refresh = self.refresh.remove(token)?;
        (refresh.expires_at > now).then_some(refresh.client_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_are_eight_unambiguous_letters_and_read_back_however_typed() {
        assert_eq!(user_code([0, 1, 2, 3, 19, 20, 21, 255]), "BCDF-ZBCT");
        for typed in ["bcdf-zbct", " BCDF ZBCT ", "BcDfZbCt"] {
            assert_eq!(normalize_user_code(typed), "BCDF-ZBCT", "{typed:?}");
        }
    }

    #[test]
    fn a_device_code_goes_from_pending_to_its_owners_decision() {
        let mut grants = Grants::default();
        grants.start("dev".into(), "BCDF-GHJK".into(), 100).unwrap();
        // (step, poll at, expected)
        assert_eq!(grants.poll("dev", 100), Poll::Pending);
        assert_eq!(
            grants.poll("dev", 100),
            Poll::SlowDown,
            "polled again at once"
        );
        assert_eq!(grants.poll("dev", 101), Poll::Pending);
        assert_eq!(
            grants.decide("gggg-hhhh", Some("owner"), 101),
            Decided::NoSuchCode
        );
        assert_eq!(
            grants.decide("bcdf ghjk", Some("owner"), 101),
            Decided::Done
        );
        assert_eq!(
            grants.decide("BCDF-GHJK", None, 101),
            Decided::NoSuchCode,
            "decided once"
        );
        assert_eq!(
            grants.poll("dev", 102),
            Poll::Approved {
                client_id: "owner".into()
            }
        );
        assert_eq!(grants.poll("dev", 103), Poll::Unknown, "used up");
    }

    #[test]
    fn denied_and_expired_codes_end_the_flow() {
        let mut grants = Grants::default();
        grants.start("a".into(), "AAAA-AAAA".into(), 0).unwrap();
        grants.start("b".into(), "BBBB-BBBB".into(), 0).unwrap();
        assert_eq!(grants.decide("AAAA-AAAA", None, 1), Decided::Done);
        assert_eq!(grants.poll("a", 2), Poll::Denied);
        assert_eq!(grants.poll("b", DEVICE_CODE_TTL_SECS), Poll::Expired);
        assert_eq!(
            grants.decide("BBBB-BBBB", Some("owner"), DEVICE_CODE_TTL_SECS),
            Decided::NoSuchCode
        );
    }

    #[test]
    fn a_browser_login_gets_a_code_for_its_loopback_redirect_once_approved() {
        let mut grants = Grants::default();
        let verifier = "v".repeat(64);
        let request = (
            "http://localhost:5000/callback".to_owned(),
            Some("s t".to_owned()),
            s256(&verifier),
        );
        grants
            .start_authorization("req".into(), "BCDF-GHJK".into(), request, 0)
            .unwrap();
        assert_eq!(
            grants.continue_authorization("req", "c1".into(), 1),
            Continue::Pending {
                user_code: "BCDF-GHJK".into()
            }
        );
        assert_eq!(grants.decide("BCDF-GHJK", Some("owner"), 1), Decided::Done);
        assert_eq!(
            grants.continue_authorization("req", "c1".into(), 2),
            Continue::Redirect {
                location: "http://localhost:5000/callback?code=c1&state=s%20t".into()
            }
        );
        assert_eq!(
            grants.continue_authorization("req", "c2".into(), 2),
            Continue::Unknown,
            "finished"
        );
        // (code, verifier, redirect_uri, at, expected)
        let exchanges = [
            ("c1", "wrong", None, 3, None),
            ("c1", verifier.as_str(), None, 3, None), // a failed exchange used it up
        ];
        for (code, given, redirect, at, want) in exchanges {
            assert_eq!(grants.redeem_code(code, given, redirect, at), want);
        }
        grants
            .start_authorization(
                "r2".into(),
                "CCCC-DDDD".into(),
                ("http://127.0.0.1:5000/cb?x=1".into(), None, s256(&verifier)),
                10,
            )
            .unwrap();
        grants.decide("CCCC-DDDD", Some("owner"), 10);
        assert_eq!(
            grants.continue_authorization("r2", "c3".into(), 10),
            Continue::Redirect {
                location: "http://127.0.0.1:5000/cb?x=1&code=c3".into()
            }
        );
        assert_eq!(
            grants.redeem_code("c3", &verifier, Some("http://elsewhere:1/"), 11),
            None
        );
        grants
            .start_authorization(
                "r3".into(),
                "DDDD-FFFF".into(),
                ("http://localhost:1/cb".into(), None, s256(&verifier)),
                20,
            )
            .unwrap();
        grants.decide("DDDD-FFFF", Some("owner"), 20);
        grants.continue_authorization("r3", "c4".into(), 20);
        assert_eq!(
            grants.redeem_code("c4", &verifier, Some("http://localhost:1/cb"), 21),
            Some("owner".into())
        );
        assert_eq!(
            grants.redeem_code("c5", &verifier, None, 21),
            None,
            "never issued"
        );
    }

    #[test]
    fn a_denied_browser_login_goes_back_with_access_denied() {
        let mut grants = Grants::default();
        grants
            .start_authorization(
                "req".into(),
                "BCDF-GHJK".into(),
                ("http://[::1]:7/cb".into(), Some("st".into()), s256("v")),
                0,
            )
            .unwrap();
        grants.decide("bcdfghjk", None, 1);
        assert_eq!(
            grants.continue_authorization("req", "c".into(), 1),
            Continue::Redirect {
                location: "http://[::1]:7/cb?error=access_denied&state=st".into()
            }
        );
    }

    #[test]
    fn codes_go_only_to_loopback_http_redirects() {
        for (uri, loopback) in [
            ("http://localhost:53593/callback", true),
            ("http://127.0.0.1:1/", true),
            ("http://[::1]:8080/cb", true),
            ("https://localhost:1/cb", false),
            ("http://localhost/cb", false),
            ("http://example.com:80/cb", false),
            ("http://localhost.example.com:1/cb", false),
            ("http://user@localhost:1/cb", false),
            ("not a uri", false),
        ] {
            assert_eq!(is_loopback_redirect(uri), loopback, "{uri}");
        }
        // RFC 7636's example verifier and challenge.
        assert_eq!(
            s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn pending_codes_and_refresh_tokens_are_bounded() {
        let mut grants = Grants::default();
        for i in 0..MAX_PENDING {
            grants.start(format!("d{i}"), format!("U{i}"), 0).unwrap();
        }
        assert_eq!(
            grants.start("one-more".into(), "X".into(), 0),
            Err(Refusal::TooManyPending)
        );
        // Once they expire there is room again.
        assert_eq!(
            grants.start("later".into(), "Y".into(), DEVICE_CODE_TTL_SECS),
            Ok(())
        );
        for i in 0..=MAX_REFRESH_TOKENS {
            grants.issue_refresh(format!("r{i}"), "owner", i64::try_from(i).unwrap());
        }
        assert_eq!(grants.refresh.len(), MAX_REFRESH_TOKENS);
        assert_eq!(
            grants.redeem_refresh("r0", 2000),
            None,
            "the oldest went first"
        );
    }

    #[test]
    fn refresh_tokens_are_used_once_and_expire() {
        let mut grants = Grants::default();
        grants.issue_refresh("r".into(), "owner", 0);
        assert_eq!(grants.redeem_refresh("r", 1), Some("owner".into()));
        assert_eq!(grants.redeem_refresh("r", 1), None, "rotated");
        grants.issue_refresh("s".into(), "owner", 0);
        assert_eq!(grants.redeem_refresh("s", REFRESH_TTL_SECS), None);
    }
}
