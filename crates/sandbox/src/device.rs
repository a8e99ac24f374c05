//! The OAuth2 device authorization grant (RFC 8628) and refresh tokens, as a pure state machine:
//! codes and the clock come in as arguments, so every answer is table-tested.
//!
//! The sandbox's owner approves a device: `flyte-run sandbox approve CODE` proves it with the
//! sandbox's own credential, and the device's tokens are minted for that credential's client
//! (deleting the key revokes them, as for every other token).

use std::collections::HashMap;

/// How long a device code may wait for its approval.
pub(crate) const DEVICE_CODE_TTL_SECS: i64 = 600;
/// The polling interval the sandbox asks for; one on loopback costs nothing.
pub(crate) const POLL_INTERVAL_SECS: i64 = 1;
/// Pending device codes at most: a flood of requests is refused, not stored.
pub(crate) const MAX_PENDING: usize = 64;
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

/// Device codes waiting for their owner, and the refresh tokens handed out.
#[derive(Debug, Default)]
pub(crate) struct Grants {
    devices: HashMap<String, Grant>,
    refresh: HashMap<String, Refresh>,
}

impl Grants {
    fn forget_expired(&mut self, now: i64) {
        self.devices.retain(|_, g| g.expires_at > now);
        self.refresh.retain(|_, r| r.expires_at > now);
    }

    /// Record a new device code and its user code (both random, from the caller).
    pub(crate) fn start(
        &mut self,
        device_code: String,
        user_code: String,
        now: i64,
    ) -> Result<(), Refusal> {
        self.forget_expired(now);
        if self.devices.len() >= MAX_PENDING {
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
