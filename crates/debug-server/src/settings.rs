//! The environment contract of a debug run, read through a lookup function so it is testable
//! without touching the process environment.

use std::time::Duration;

use crate::{DebugServerError, Result};

/// `_F_E_SSH`: set on a debug run; the entry point starts this server before the task body.
pub const ENV_ENABLE: &str = "_F_E_SSH";
/// `_F_SSH_PK`: the one OpenSSH public key line allowed to log in.
pub const ENV_PUBLIC_KEY: &str = "_F_SSH_PK";
/// `_F_E_VS`: tells the backend to add the readiness probe and the IDE link.
pub const ENV_VSCODE: &str = "_F_E_VS";
/// `_F_SSH_USER`: the login user name shown to clients (optional).
pub const ENV_USER: &str = "_F_SSH_USER";
/// `SSH_SERVER_MAX_UPTIME_SECONDS`: the server exits after this long (default 36000).
pub const ENV_MAX_UPTIME: &str = "SSH_SERVER_MAX_UPTIME_SECONDS";
/// `FLYTE_RUN_RESUME_GRACE_SECONDS`: how long a resumable tunnel session waits for its client
/// after the connection breaks (flyte-run's own; default 900, 0 turns resumption off).
pub const ENV_RESUME_GRACE: &str = "FLYTE_RUN_RESUME_GRACE_SECONDS";
/// The port the cluster routes debug traffic to.
pub const DEFAULT_PORT: u16 = 6060;
pub const DEFAULT_MAX_UPTIME: Duration = Duration::from_hours(10);
/// How long a broken tunnel session waits for its client unless `ENV_RESUME_GRACE` says.
pub const DEFAULT_RESUME_GRACE: Duration = Duration::from_mins(15);

/// Variables a login session must not inherit: a debug command started from the shell would
/// otherwise start a second server on the same port.
pub const NOT_INHERITED: &[&str] = &[
    ENV_ENABLE,
    ENV_PUBLIC_KEY,
    ENV_VSCODE,
    ENV_USER,
    ENV_MAX_UPTIME,
    ENV_RESUME_GRACE,
];

/// What the environment asks of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The authorized key, parsed.
    pub authorized_key: ssh_key::PublicKey,
    pub user: Option<String>,
    pub max_uptime: Duration,
    /// How long a broken tunnel session waits for a resume; `None`: no resumption.
    pub resume_grace: Option<Duration>,
}

/// Whether a debug run is asked for (`1`, `true` or `yes`, any case).
pub fn enabled(lookup: impl Fn(&str) -> Option<String>) -> bool {
    lookup(ENV_ENABLE)
        .is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
}

impl Settings {
    /// Read the contract. A missing, empty or malformed key is an error that says how to fix it.
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let key_line = lookup(ENV_PUBLIC_KEY).unwrap_or_default();
        if key_line.trim().is_empty() {
            return Err(DebugServerError::Settings(format!(
                "{ENV_PUBLIC_KEY} is missing or empty: set it to the OpenSSH public key allowed to log in \
                 (one line, e.g. the content of ~/.flyte/ssh-debug/id_ed25519.pub); \
                 `flyte-run -e 'keys::ensure_keypair().public_key'` prints one"
            )));
        }
        let authorized_key = ssh_key::PublicKey::from_openssh(key_line.trim()).map_err(|e| {
            DebugServerError::Settings(format!(
                "{ENV_PUBLIC_KEY} is not an OpenSSH public key line ({e}); expected `ssh-ed25519 AAAA... comment`"
            ))
        })?;
        let max_uptime = match lookup(ENV_MAX_UPTIME) {
            None => DEFAULT_MAX_UPTIME,
            Some(raw) => raw
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|s| *s > 0)
                .map(Duration::from_secs)
                .ok_or_else(|| {
                    DebugServerError::Settings(format!(
                        "{ENV_MAX_UPTIME}={raw:?} is not a positive number of seconds"
                    ))
                })?,
        };
        let resume_grace = match lookup(ENV_RESUME_GRACE) {
            None => Some(DEFAULT_RESUME_GRACE),
            Some(raw) => {
                let seconds = raw.trim().parse::<u64>().map_err(|_| {
                    DebugServerError::Settings(format!(
                        "{ENV_RESUME_GRACE}={raw:?} is not a number of seconds (0 turns resumption off)"
                    ))
                })?;
                (seconds > 0).then(|| Duration::from_secs(seconds))
            }
        };
        let user = lookup(ENV_USER)
            .map(|u| u.trim().to_owned())
            .filter(|u| !u.is_empty());
        Ok(Self {
            authorized_key,
            user,
            max_uptime,
            resume_grace,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHh2c3d5b3VsZGxpa2V0b2tub3d3aGF0dGhpc2lzZm9y me@laptop";

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn enable_flag_values() {
        for (value, want) in [
            ("1", true),
            ("true", true),
            ("YES", true),
            ("True", true),
            ("0", false),
            ("", false),
            ("no", false),
        ] {
            assert_eq!(enabled(env(&[(ENV_ENABLE, value)])), want, "{value:?}");
        }
        assert!(!enabled(env(&[])));
    }

    #[test]
    fn settings_from_env() {
        let s = Settings::from_env(env(&[
            (ENV_PUBLIC_KEY, KEY),
            (ENV_USER, " alice "),
            (ENV_MAX_UPTIME, "60"),
        ]))
        .unwrap();
        assert_eq!(s.user.as_deref(), Some("alice"));
        assert_eq!(s.max_uptime, Duration::from_mins(1));
        let s = Settings::from_env(env(&[(ENV_PUBLIC_KEY, KEY)])).unwrap();
        assert_eq!((s.user, s.max_uptime), (None, DEFAULT_MAX_UPTIME));
        for (grace, want) in [
            (None, Some(Duration::from_mins(15))),
            (Some("120"), Some(Duration::from_mins(2))),
            (Some("0"), None),
        ] {
            let mut pairs = vec![(ENV_PUBLIC_KEY, KEY)];
            pairs.extend(grace.map(|g| (ENV_RESUME_GRACE, g)));
            let s = Settings::from_env(env(&pairs)).unwrap();
            assert_eq!(s.resume_grace, want, "{grace:?}");
        }
    }

    #[test]
    fn bad_settings_say_how_to_fix_them() {
        for (pairs, want) in [
            (vec![], "_F_SSH_PK is missing or empty"),
            (
                vec![(ENV_PUBLIC_KEY, "   ")],
                "_F_SSH_PK is missing or empty",
            ),
            (
                vec![(ENV_PUBLIC_KEY, "ssh-ed25519 not-base64!")],
                "not an OpenSSH public key line",
            ),
            (
                vec![(ENV_PUBLIC_KEY, "hello")],
                "not an OpenSSH public key line",
            ),
            (
                vec![(ENV_PUBLIC_KEY, KEY), (ENV_MAX_UPTIME, "soon")],
                "not a positive number of seconds",
            ),
            (
                vec![(ENV_PUBLIC_KEY, KEY), (ENV_MAX_UPTIME, "0")],
                "not a positive number of seconds",
            ),
            (
                vec![(ENV_PUBLIC_KEY, KEY), (ENV_RESUME_GRACE, "15m")],
                "FLYTE_RUN_RESUME_GRACE_SECONDS=\"15m\" is not a number of seconds",
            ),
        ] {
            let err = Settings::from_env(env(&pairs)).unwrap_err().to_string();
            assert!(err.contains(want), "{pairs:?}: {err}");
        }
    }
}
