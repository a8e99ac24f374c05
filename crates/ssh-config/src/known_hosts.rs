//! Our own `known_hosts` file (under `~/.flyte/ssh-debug/`), where debug servers' keys are pinned
//! under their `HostKeyAlias`. The user's `~/.ssh/known_hosts` is never touched.

use std::path::Path;

use crate::file::{DirLock, read_limited};
use crate::{Result, SshConfigError};

const KNOWN_HOSTS_MODE: u32 = 0o600;

fn rewrite(path: &Path, host_key_alias: &str, new_line: Option<&str>) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    flyte_fs::create_private_dir(dir).map_err(|source| SshConfigError::Io {
        action: "create the directory",
        path: dir.to_owned(),
        source,
    })?;
    let _lock = DirLock::acquire(dir)?;
    let old = read_limited(path)?
        .map(|(text, _)| text)
        .unwrap_or_default();
    // Drop every earlier entry for this name: a new debug pod has a new host key.
    let mut kept: Vec<String> = old
        .lines()
        .filter(|l| l.split_whitespace().next() != Some(host_key_alias))
        .map(str::to_owned)
        .collect();
    kept.extend(new_line.map(str::to_owned));
    let text = crate::model::join_lines(&kept);
    if text != old {
        flyte_fs::replace(path, text.as_bytes(), KNOWN_HOSTS_MODE)?;
    }
    Ok(())
}

/// Record `public_key_line` as the only key accepted for `host_key_alias`.
pub fn pin_host_key(known_hosts: &Path, host_key_alias: &str, public_key_line: &str) -> Result<()> {
    let line = flyte_keys::known_hosts_line(host_key_alias, public_key_line)?;
    rewrite(known_hosts, host_key_alias, Some(&line))
}

/// Forget any key recorded for `host_key_alias`, so `accept-new` can learn the next one.
pub fn forget_host_key(known_hosts: &Path, host_key_alias: &str) -> Result<()> {
    rewrite(known_hosts, host_key_alias, None)
}
