//! A connection as Polyaxon declares it: `name`, `kind: ssh`, `schema.url`, and the secret's
//! `name`, `mountPath` and `defaultMode`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{ConnectionError, Result};

/// The key file's name under the mount path unless this variable names another.
pub const ENV_PRIVATE_KEY: &str = "POLYAXON_SSH_PRIVATE_KEY";
pub const DEFAULT_KEY_NAME: &str = "id_rsa";
/// Host keys to trust, beside the private key in the secret.
pub const KNOWN_HOSTS_FILE: &str = "known_hosts";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Connection {
    pub name: String,
    pub kind: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub schema: Option<Schema>,
    pub secret: ConnectionSecret,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schema {
    #[serde(default)]
    pub url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConnectionSecret {
    pub name: String,
    pub mount_path: PathBuf,
    /// The mode the secret's files are mounted with; ssh refuses a key others can read.
    #[serde(default)]
    pub default_mode: Option<u32>,
}

impl Connection {
    /// Check what the initializer relies on: an ssh connection, an absolute mount path, and a
    /// mode that ssh accepts for a private key.
    pub fn validate(&self) -> Result<()> {
        let invalid = |reason: String| ConnectionError::InvalidConnection {
            name: self.name.clone(),
            reason,
        };
        if self.kind != "ssh" {
            return Err(invalid(format!(
                "kind is {:?}; only \"ssh\" connections can clone over ssh",
                self.kind
            )));
        }
        if !self.secret.mount_path.is_absolute() {
            return Err(invalid(format!(
                "secret.mountPath {} must be absolute (a hidden directory such as /etc/.ssh)",
                self.secret.mount_path.display()
            )));
        }
        if let Some(mode) = self.secret.default_mode
            && mode & 0o077 != 0
        {
            return Err(invalid(format!(
                "secret.defaultMode {mode:o} lets others read the key, and ssh refuses such keys; use 0600 (decimal 384)"
            )));
        }
        Ok(())
    }

    /// The default repository, if the connection names one.
    pub fn url(&self) -> Option<&str> {
        self.schema.as_ref().and_then(|s| s.url.as_deref())
    }

    /// `<mountPath>/<key name>`, the key name from `POLYAXON_SSH_PRIVATE_KEY` (given as `lookup`)
    /// or `id_rsa`.
    pub fn key_path(&self, lookup: impl Fn(&str) -> Option<String>) -> PathBuf {
        let name = lookup(ENV_PRIVATE_KEY)
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_KEY_NAME.to_owned());
        self.secret.mount_path.join(name)
    }

    /// `<mountPath>/known_hosts`.
    pub fn known_hosts_path(&self) -> PathBuf {
        self.secret.mount_path.join(KNOWN_HOSTS_FILE)
    }

    pub fn mount_path(&self) -> &Path {
        &self.secret.mount_path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection(json: &str) -> Connection {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn polyaxon_shaped_connections_parse_and_validate() {
        let c = connection(
            r#"{"name": "repo-test", "kind": "ssh", "schema": {"url": "https://gitlab.com/org/test"},
                "secret": {"name": "ssh-git-connection", "mountPath": "/etc/.ssh", "defaultMode": 384}}"#,
        );
        c.validate().unwrap();
        assert_eq!(c.url(), Some("https://gitlab.com/org/test"));
        assert_eq!(c.key_path(|_| None), PathBuf::from("/etc/.ssh/id_rsa"));
        assert_eq!(
            c.key_path(|k| (k == ENV_PRIVATE_KEY).then(|| "id_ed25519".to_owned())),
            PathBuf::from("/etc/.ssh/id_ed25519")
        );
        assert_eq!(c.known_hosts_path(), PathBuf::from("/etc/.ssh/known_hosts"));

        for (json, want) in [
            (
                r#"{"name": "x", "kind": "git", "secret": {"name": "s", "mountPath": "/etc/.ssh"}}"#,
                "only \"ssh\" connections",
            ),
            (
                r#"{"name": "x", "kind": "ssh", "secret": {"name": "s", "mountPath": "etc/.ssh"}}"#,
                "must be absolute",
            ),
            (
                r#"{"name": "x", "kind": "ssh", "secret": {"name": "s", "mountPath": "/etc/.ssh", "defaultMode": 420}}"#,
                "defaultMode 644 lets others read the key",
            ),
        ] {
            let err = connection(json).validate().unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
        // A typo in a field is refused rather than ignored.
        assert!(
            serde_json::from_str::<Connection>(
                r#"{"name": "x", "kind": "ssh", "secret": {"name": "s", "mountpath": "/x"}}"#
            )
            .is_err()
        );
    }
}
