use std::fmt;
use std::path::Path;

use ssh_key::{HashAlg, PrivateKey};

use crate::keypair::{encode_public, load_or_create};
use crate::{KeyError, Result};

/// The SSH server's host key (ed25519). `Debug` shows only the fingerprint.
#[derive(Clone)]
pub struct HostKey {
    private: PrivateKey,
}

impl fmt::Debug for HostKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostKey")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl HostKey {
    /// Load the host key at `path`, generating it (0600 at open) the first time. The same rules as
    /// for client keys apply: an unusable existing file is an error, never replaced.
    pub fn load_or_generate(path: &Path) -> Result<Self> {
        Ok(Self {
            private: load_or_create(path, "flyte-debug-host-key")?,
        })
    }

    /// `SHA256:...`, as `ssh-keygen -lf` and ssh's host-key prompts show it.
    pub fn fingerprint(&self) -> String {
        self.private
            .public_key()
            .fingerprint(HashAlg::Sha256)
            .to_string()
    }

    /// The public key as one OpenSSH line (`ssh-ed25519 AAAA... comment`).
    pub fn public_key_line(&self) -> Result<String> {
        encode_public(self.private.public_key())
    }

    /// The key itself, for an SSH server implementation to sign with.
    pub fn private_key(&self) -> &PrivateKey {
        &self.private
    }
}

/// The `SHA256:...` fingerprint of one OpenSSH public key line, as `ssh-keygen -lf` shows it.
pub fn public_key_fingerprint(public_key_line: &str) -> Result<String> {
    let key = ssh_key::PublicKey::from_openssh(public_key_line.trim())
        .map_err(|e| KeyError::Encode(format!("not an OpenSSH public key line: {e}")))?;
    Ok(key.fingerprint(HashAlg::Sha256).to_string())
}

/// A `known_hosts` line pinning `public_key_line` for `host_alias` (the name ssh looks up: the
/// `HostKeyAlias` when one is set). The key's comment is dropped.
pub fn known_hosts_line(host_alias: &str, public_key_line: &str) -> Result<String> {
    let invalid = |reason| KeyError::InvalidAlias {
        alias: host_alias.to_owned(),
        reason,
    };
    if host_alias.is_empty() {
        return Err(invalid("it is empty"));
    }
    if host_alias.chars().any(|c| {
        c.is_whitespace()
            || c.is_control()
            || matches!(c, ',' | '*' | '?' | '!' | '#' | '|' | '[' | ']')
    }) {
        return Err(invalid(
            "known_hosts names cannot contain whitespace or any of , * ? ! # | [ ]",
        ));
    }
    let key = ssh_key::PublicKey::from_openssh(public_key_line.trim())
        .map_err(|e| KeyError::Encode(format!("not an OpenSSH public key line: {e}")))?;
    let mut bare = key.clone();
    bare.set_comment("");
    Ok(format!("{host_alias} {}", encode_public(&bare)?.trim_end()))
}
