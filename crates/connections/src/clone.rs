//! The thin driver: runs the plan with the system `git`, ssh configured by `GIT_SSH_COMMAND`.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::plan::{GitInit, HostKeyPolicy, git_ssh_command, plan};
use crate::{Connection, ConnectionError, Result};

/// What a clone left: the checked-out commit and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cloned {
    pub commit: String,
    pub path: PathBuf,
}

/// `https://user:token@host/...` -> `https://host/...`: credentials never go into git's config
/// (the clone itself uses ssh and needs none).
fn without_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    // Only http(s) carries secrets there; an ssh URL's user is who to log in as.
    if !matches!(scheme, "http" | "https") {
        return url.to_owned();
    }
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, None), |(a, p)| (a, Some(p)));
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    match path {
        Some(path) => format!("{scheme}://{host}/{path}"),
        None => format!("{scheme}://{host}"),
    }
}

fn check_key(key: &Path) -> Result<()> {
    let error = |reason: String| ConnectionError::Key {
        path: key.display().to_string(),
        reason,
    };
    let meta = std::fs::metadata(key).map_err(|e| {
        error(format!(
            "cannot be read ({e}); mount the secret's private key there, or name it with {}",
            crate::ENV_PRIVATE_KEY
        ))
    })?;
    if !meta.is_file() {
        return Err(error("is not a file".to_owned()));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(error(format!(
            "has mode {mode:o}, and ssh refuses keys others can read; mount the secret with defaultMode 0600"
        )));
    }
    Ok(())
}

fn check_destination(dest: &Path) -> Result<()> {
    match std::fs::read_dir(dest) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(ConnectionError::DestinationNotEmpty {
                    path: dest.display().to_string(),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            Err(ConnectionError::DestinationNotEmpty {
                path: dest.display().to_string(),
            })
        }
        Err(source) => Err(ConnectionError::Io {
            context: format!("cannot read {}", dest.display()),
            source,
        }),
    }
}

/// Clone `init.url` (else the connection's URL) into `dest` with the connection's key, host
/// keys checked as `host_keys` says. `dest` must not exist or be empty: nothing of the user's
/// is overwritten.
pub fn clone(
    connection: &Connection,
    dest: &Path,
    init: &GitInit,
    host_keys: &HostKeyPolicy,
) -> Result<Cloned> {
    connection.validate()?;
    let url = init
        .url
        .as_deref()
        .or_else(|| connection.url())
        .ok_or_else(|| {
            ConnectionError::InvalidInit(format!(
                "connection {:?} has no schema.url and the initializer gives no url",
                connection.name
            ))
        })?;
    let key = connection.key_path(|k| std::env::var(k).ok());
    check_key(&key)?;
    if let HostKeyPolicy::Pinned { known_hosts } = host_keys
        && !known_hosts.is_file()
    {
        return Err(ConnectionError::Key {
            path: known_hosts.display().to_string(),
            reason: "does not exist, so no git host key is trusted; add the host's key to the secret as known_hosts (ssh-keyscan HOST, then check its fingerprint), or allow learning it on first use".to_owned(),
        });
    }
    check_destination(dest)?;
    let steps = plan(&without_credentials(url), dest, init)?;
    let ssh = git_ssh_command(&key, host_keys);
    let mut last = String::new();
    for step in &steps {
        tracing::info!(%step, "git");
        let output = Command::new("git")
            .args(&step.args)
            .env("GIT_SSH_COMMAND", &ssh)
            // Never wait for a password or passphrase prompt.
            .env("GIT_TERMINAL_PROMPT", "0")
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .output()
            .map_err(ConnectionError::GitMissing)?;
        if !output.status.success() {
            return Err(ConnectionError::GitFailed {
                step: step.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .clone_into(&mut last);
    }
    Ok(Cloned {
        commit: last,
        path: dest.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_dropped_from_urls() {
        for (url, want) in [
            ("https://user:tok@host/org/r", "https://host/org/r"),
            ("https://host/org/r", "https://host/org/r"),
            ("ssh://git@host:22/r.git", "ssh://git@host:22/r.git"),
            ("git@host:org/r.git", "git@host:org/r.git"),
            ("https://tok@host", "https://host"),
        ] {
            assert_eq!(without_credentials(url), want, "{url}");
        }
    }
}
