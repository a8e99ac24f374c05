//! Where flyte-run's files live.

use std::path::PathBuf;

use anyhow::{Context, bail};

use crate::env_vars;

/// The user's home: `$HOME` when set and absolute, else the passwd entry's directory.
pub(crate) fn home_dir() -> anyhow::Result<PathBuf> {
    if let Some(home) = env_vars::get_os(env_vars::HOME).filter(|h| !h.is_empty()) {
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

/// Create `dir` (and missing parents) with mode 0700 whatever the umask, and refuse to use it
/// when another user could write to it or to its parent (as OpenSSH refuses such files): they
/// could replace what flyte-run reads there, an endpoint or a key.
pub(crate) fn private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    for path in std::iter::once(dir).chain(dir.parent()) {
        if let Some(problem) = unsafe_for_secrets(path) {
            bail!("{problem}");
        }
    }
    Ok(())
}

/// Why `path` (a file or directory flyte-run trusts) is unsafe, if it is: writable by group or
/// others, or owned by another user (root excepted). The message names the fix.
pub(crate) fn unsafe_for_secrets(path: &std::path::Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    let mode = meta.mode() & 0o7777;
    let me = nix::unistd::Uid::current().as_raw();
    if meta.uid() != me && meta.uid() != 0 {
        return Some(format!(
            "{} belongs to uid {}, not to you (uid {me}); flyte-run will not trust it: remove it or `chown` it",
            path.display(),
            meta.uid()
        ));
    }
    // A sticky directory (/tmp) lets others add entries but not replace ours. A directory's
    // group write bit is left alone: with user-private groups (umask 002, common on Ubuntu)
    // the group is the user alone; files must not be group-writable, as OpenSSH insists.
    let sticky_dir = meta.is_dir() && mode & 0o1000 != 0;
    let others_can_write = if meta.is_dir() {
        mode & 0o002 != 0
    } else {
        mode & 0o022 != 0
    };
    (others_can_write && !sticky_dir).then(|| {
        format!(
            "{} is writable by other users (mode {mode:03o}), who could replace what flyte-run reads there; fix it with `chmod go-w {}`",
            path.display(),
            path.display()
        )
    })
}

/// This binary, which ssh runs as the debug Host block's `ProxyCommand` (`flyte-run tunnel`).
pub(crate) fn proxy_program() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("cannot find the flyte-run binary for ProxyCommand")
}
