//! The thin I/O layer: read the user's config, edit it with the pure core, replace it atomically.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::managed::{install_block, remove_block};
use crate::{Result, SshConfigError};

/// No real ssh_config is this large; a bigger file is more likely a mistake (a log, a binary)
/// than a config, and we refuse to rewrite it.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Mode for a config file we create (OpenSSH refuses configs writable by others).
const NEW_CONFIG_MODE: u32 = 0o600;

/// What an install or remove did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The file was rewritten (the path is the real file, after following symlinks).
    Written { path: PathBuf },
    /// The file already said exactly this; nothing was written.
    Unchanged { path: PathBuf },
    /// Dry run: nothing was written; this unified diff is what would change.
    WouldChange { path: PathBuf, diff: String },
    /// Remove found no block for the alias.
    NotPresent { path: PathBuf },
}

/// Where to edit and whether to only show the diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditOptions {
    pub config_path: PathBuf,
    pub dry_run: bool,
}

impl EditOptions {
    /// `~/.ssh/config` under `home`.
    pub fn user_config(home: &Path) -> Self {
        Self {
            config_path: home.join(".ssh").join("config"),
            dry_run: false,
        }
    }
}

/// Insert or replace the managed block for `alias`.
pub fn install(options: &EditOptions, alias: &str, block_lines: &[String]) -> Result<Outcome> {
    let manual = || crate::model::join_lines(block_lines);
    edit(options, &manual, |text| {
        install_block(text, alias, block_lines).map(Some)
    })
}

/// Remove the managed block for `alias`, leaving the rest of the file as it was.
pub fn remove(options: &EditOptions, alias: &str) -> Result<Outcome> {
    edit(options, &String::new, |text| remove_block(text, alias))
}

/// A directory lock held while we read, edit and replace a file in it, so two processes editing
/// different blocks both keep their change. The config itself is replaced by rename, so locking
/// it would lock the old inode; the directory stays.
pub(crate) struct DirLock {
    _dir: File,
}

impl DirLock {
    pub(crate) fn acquire(dir: &Path) -> Result<Self> {
        let handle = File::open(dir).map_err(|source| SshConfigError::Io {
            action: "open the directory",
            path: dir.to_owned(),
            source,
        })?;
        handle.lock().map_err(|source| SshConfigError::Io {
            action: "lock the directory",
            path: dir.to_owned(),
            source,
        })?;
        Ok(Self { _dir: handle })
    }
}

/// Read `path` if it exists: its text and mode. Refuses files too large to be a config.
pub(crate) fn read_limited(path: &Path) -> Result<Option<(String, u32)>> {
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(SshConfigError::Io {
                action: "read",
                path: path.to_owned(),
                source,
            });
        }
    };
    if meta.is_dir() {
        return Err(SshConfigError::Io {
            action: "read",
            path: path.to_owned(),
            source: io::Error::other("it is a directory"),
        });
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(SshConfigError::TooLarge {
            path: path.to_owned(),
            size: meta.len(),
            limit: MAX_CONFIG_BYTES,
        });
    }
    let bytes = fs::read(path).map_err(|source| SshConfigError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|_| SshConfigError::NotUtf8 {
        path: path.to_owned(),
    })?;
    Ok(Some((text, meta.mode() & 0o7777)))
}

fn edit(
    options: &EditOptions,
    manual_block: &dyn Fn() -> String,
    change: impl FnOnce(&str) -> Result<Option<String>>,
) -> Result<Outcome> {
    // Write through symlinks (a dotfiles repo often links ~/.ssh/config), never replace the link.
    let path = flyte_fs::resolve_symlinks(&options.config_path)?;
    let dir = path.parent().unwrap_or(Path::new(".")).to_owned();
    if !dir.exists() {
        if options.dry_run {
            return dry_run_diff(&path, "", change);
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|source| SshConfigError::Io {
                action: "create the directory",
                path: dir.clone(),
                source,
            })?;
    }
    let _lock = DirLock::acquire(&dir)?;
    let (old, mode) = read_limited(&path)?.unwrap_or((String::new(), NEW_CONFIG_MODE));
    if options.dry_run {
        return dry_run_diff(&path, &old, change);
    }
    let Some(new) = change(&old)? else {
        return Ok(Outcome::NotPresent { path });
    };
    if new == old {
        return Ok(Outcome::Unchanged { path });
    }
    let read_only = |reason: String| SshConfigError::ReadOnly {
        path: path.clone(),
        reason,
        block: manual_block(),
    };
    if path.exists() && mode & 0o200 == 0 {
        return Err(read_only(format!("the file's mode is {mode:04o}")));
    }
    flyte_fs::replace(&path, new.as_bytes(), mode).map_err(|e| match e.io_kind() {
        Some(io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem) => {
            read_only(e.to_string())
        }
        _ => SshConfigError::Fs(e),
    })?;
    tracing::info!(path = %path.display(), "updated ssh config");
    Ok(Outcome::Written { path })
}

fn dry_run_diff(
    path: &Path,
    old: &str,
    change: impl FnOnce(&str) -> Result<Option<String>>,
) -> Result<Outcome> {
    let Some(new) = change(old)? else {
        return Ok(Outcome::NotPresent {
            path: path.to_owned(),
        });
    };
    if new == old {
        return Ok(Outcome::Unchanged {
            path: path.to_owned(),
        });
    }
    let shown = path.display().to_string();
    let diff = similar::TextDiff::from_lines(old, &new)
        .unified_diff()
        .context_radius(3)
        .header(&shown, &shown)
        .to_string();
    Ok(Outcome::WouldChange {
        path: path.to_owned(),
        diff,
    })
}
