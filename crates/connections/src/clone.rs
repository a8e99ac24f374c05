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
/// is overwritten, and a failed clone leaves it as it was.
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
    // The initializer runs in the task's pod, where the key's file name comes from the
    // environment as Polyaxon's initializer reads it.
    #[allow(clippy::disallowed_methods)]
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
    if let HostKeyPolicy::LearnFirst { known_hosts } = host_keys {
        // ssh connects anyway when it cannot record a key (a read-only secret mount), which
        // would quietly check nothing on every clone; make sure the key can be kept.
        #[allow(
            clippy::disallowed_methods,
            reason = "opened for append to prove ssh can record a key; nothing is written here"
        )]
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(known_hosts)
            .map_err(|e| ConnectionError::Key {
                path: known_hosts.display().to_string(),
                reason: format!(
                    "cannot record the git host's key there ({e}); give a writable known_hosts file"
                ),
            })?;
    }
    check_destination(dest)?;
    let steps = plan(url, dest, init)?;
    let existed = dest.exists();
    let ssh_command = git_ssh_command(&key, host_keys)?;
    let result = run_steps(&steps, &ssh_command);
    if result.is_err() {
        // Leave the destination as it was (missing or empty), so a retry can start over.
        if existed {
            for entry in std::fs::read_dir(dest).into_iter().flatten().flatten() {
                let path = entry.path();
                let _ = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
            }
        } else {
            let _ = std::fs::remove_dir_all(dest);
        }
    }
    let commit = result?;
    Ok(Cloned {
        commit,
        path: dest.to_owned(),
    })
}

/// Run the steps in order; the last one's output (the commit).
fn run_steps(steps: &[crate::GitStep], ssh: &str) -> Result<String> {
    let mut last = String::new();
    for step in steps {
        tracing::info!(%step, "git");
        // The git initializer runs the system git (ARCHITECTURE.md, connections).
        #[allow(clippy::disallowed_methods)]
        let output = Command::new("git")
            .args(&step.args)
            .env("GIT_SSH_COMMAND", ssh)
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
    Ok(last)
}
