//! Where flyte-run's files live.

use std::path::PathBuf;

use anyhow::{Context, bail};

use crate::env_vars;

/// The user's home: `$HOME` when set and absolute, else the passwd entry's directory.
pub(crate) fn home_dir() -> anyhow::Result<PathBuf> {
    if let Some(home) = std::env::var_os(env_vars::HOME).filter(|h| !h.is_empty()) {
        let home = PathBuf::from(home);
        if !home.is_absolute() {
            bail!(
                "HOME is set to the relative path {}; set it to an absolute path",
                home.display()
            );
        }
        return Ok(home);
    }
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::current())
        .context("cannot read the passwd entry of the current user")?
        .context("HOME is unset and the current user has no passwd entry; set HOME")?;
    Ok(user.dir)
}
