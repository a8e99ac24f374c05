//! Writing files that users own, without ever exposing or half-writing them.
//!
//! Two operations, both built on a temporary file in the target's own directory (so the final
//! step is a same-filesystem `link` or `rename`, which is atomic):
//!
//! - [`create_new`]: create a file only if none exists, for key pairs that several processes may
//!   race to create. Exactly one writer wins; the others see [`Created::AlreadyExisted`].
//! - [`replace`]: replace a file's contents atomically (write, fsync, rename, fsync the directory),
//!   so a crash leaves the old file or the new one, never a mix.
//!
//! The temporary file is opened with its final mode, so a secret written with mode `0o600` is
//! never readable by anyone else, whatever the umask (the umask can only remove bits).

use std::fs::{File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Mode for private keys, tokens and other secrets.
pub const SECRET_MODE: u32 = 0o600;

/// Create `dir` and any missing parents with mode 0700, whatever the umask (with umask 000,
/// `create_dir_all` would make them 0777 and let anyone replace the files flyte-run trusts).
/// An existing directory is left as it is.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Errors name the path and the operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("{path} has no parent directory to write into")]
    NoParent { path: PathBuf },
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl FsError {
    /// The underlying I/O error kind, for callers that map permission problems to advice.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            FsError::Io { source, .. } => Some(source.kind()),
            FsError::NoParent { .. } => None,
        }
    }
}

/// `Result` with this crate's error.
pub type Result<T, E = FsError> = std::result::Result<T, E>;

/// What [`create_new`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// This call created the file.
    Created,
    /// A file (or something else) was already at the path; it was left untouched.
    AlreadyExisted,
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> FsError + 'a {
    move |source| FsError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

fn parent_of(path: &Path) -> Result<&Path> {
    match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Ok(Path::new(".")),
        Some(p) => Ok(p),
        None => Err(FsError::NoParent {
            path: path.to_owned(),
        }),
    }
}

/// Prefix of our temporary files.
const TEMP_PREFIX: &str = ".flyte-tmp-";
/// A temporary file this old was left by a writer that died (a write takes milliseconds).
const STALE_TEMP_AGE: std::time::Duration = std::time::Duration::from_mins(10);

/// Remove temporary files an interrupted write (a `SIGKILL` between create and rename) left in
/// `dir`: ours by name and owner, regular files, older than [`STALE_TEMP_AGE`]. Best effort: a
/// failure to tidy never fails the write.
fn sweep_stale_temps(dir: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let me = nix::unistd::Uid::current().as_raw();
    for entry in entries.filter_map(std::result::Result::ok) {
        if !entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            continue;
        }
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        let old = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age > STALE_TEMP_AGE);
        if meta.is_file() && meta.uid() == me && old {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// A fully written, fsynced temporary file beside `path`, created with `mode` at open.
fn staged(path: &Path, contents: &[u8], mode: u32) -> Result<tempfile::NamedTempFile> {
    let dir = parent_of(path)?;
    sweep_stale_temps(dir);
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .permissions(Permissions::from_mode(mode))
        .tempfile_in(dir)
        .map_err(io_err("create a temporary file in", dir))?;
    // The umask may have narrowed the mode given at open; set it exactly while the file is still
    // empty, so a replaced file keeps its mode and no data is ever under a wider one.
    tmp.as_file()
        .set_permissions(Permissions::from_mode(mode))
        .map_err(io_err("set the mode of a temporary file in", dir))?;
    tmp.write_all(contents)
        .map_err(io_err("write a temporary file in", dir))?;
    tmp.as_file()
        .sync_all()
        .map_err(io_err("flush a temporary file in", dir))?;
    Ok(tmp)
}

/// fsync a directory so a rename or link in it survives a crash.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("flush directory", dir))
}

/// Create `path` with `contents` and `mode` unless something already exists there.
///
/// The file appears complete or not at all: it is written under a temporary name and linked into
/// place with `link(2)`, which fails rather than replace an existing entry. A dangling symlink at
/// `path` counts as existing (we never write through a link we did not make).
pub fn create_new(path: &Path, contents: &[u8], mode: u32) -> Result<Created> {
    let tmp = staged(path, contents, mode)?;
    match tmp.persist_noclobber(path) {
        Ok(_) => {
            sync_dir(parent_of(path)?)?;
            Ok(Created::Created)
        }
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => Ok(Created::AlreadyExisted),
        Err(e) => Err(FsError::Io {
            action: "create",
            path: path.to_owned(),
            source: e.error,
        }),
    }
}

/// Replace `path` atomically with `contents`, giving the new file `mode`.
///
/// If `path` is a symlink, the link itself is replaced; callers that must write through a link
/// resolve it first (see [`resolve_symlinks`]).
pub fn replace(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let tmp = staged(path, contents, mode)?;
    tmp.persist(path).map_err(|e| FsError::Io {
        action: "replace",
        path: path.to_owned(),
        source: e.error,
    })?;
    sync_dir(parent_of(path)?)
}

/// Follow symlinks at `path` to the file they name (which may not exist yet). Relative link
/// targets are taken relative to the link's directory. Gives up after 40 hops, as the kernel does.
pub fn resolve_symlinks(path: &Path) -> Result<PathBuf> {
    let mut current = path.to_owned();
    for _ in 0..40 {
        match std::fs::read_link(&current) {
            Ok(target) => {
                current = if target.is_absolute() {
                    target
                } else {
                    parent_of(&current)?.join(target)
                };
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::InvalidInput | io::ErrorKind::NotFound
                ) =>
            {
                return Ok(tidy(current));
            }
            Err(e) => return Err(io_err("read the link", &current)(e)),
        }
    }
    Err(FsError::Io {
        action: "resolve",
        path: path.to_owned(),
        source: io::Error::other("too many levels of symbolic links"),
    })
}

/// `a/b/../c/file` as `a/c/file`: the canonical parent (when it exists) plus the file name, so
/// messages name the real location.
fn tidy(path: PathBuf) -> PathBuf {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) if !parent.as_os_str().is_empty() => parent
            .canonicalize()
            .map_or_else(|_| path.clone(), |p| p.join(name)),
        _ => path,
    }
}

#[allow(
    clippy::disallowed_methods,
    reason = "tests write their fixtures directly"
)]
#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn create_new_writes_once_and_never_clobbers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        assert_eq!(
            create_new(&path, b"one", SECRET_MODE).unwrap(),
            Created::Created
        );
        assert_eq!(
            create_new(&path, b"two", SECRET_MODE).unwrap(),
            Created::AlreadyExisted
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        // No temporary files are left behind by the losing call.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn create_new_treats_a_dangling_symlink_as_existing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &path).unwrap();
        assert_eq!(
            create_new(&path, b"x", SECRET_MODE).unwrap(),
            Created::AlreadyExisted
        );
        assert!(!dir.path().join("nowhere").exists());
    }

    #[test]
    fn replace_keeps_the_exact_mode_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared");
        // 0o664 would become 0o644 under the usual umask 022 if only passed to open(2).
        replace(&path, b"x", 0o664).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o664);
    }

    /// Issue 13, defect 15: `.flyte-tmp-*` files left by writers killed mid-write piled up in
    /// `~/.ssh`. The next write removes the stale ones and leaves a live writer's alone.
    #[test]
    fn a_write_removes_temporaries_that_interrupted_writes_left() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join(".flyte-tmp-killed");
        let fresh = dir.path().join(".flyte-tmp-writing");
        std::fs::write(&stale, "half").unwrap();
        std::fs::write(&fresh, "half").unwrap();
        let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_hours(1);
        std::fs::File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(an_hour_ago)
            .unwrap();
        replace(&dir.path().join("config"), b"new", 0o600).unwrap();
        assert!(!stale.exists(), "the stale temporary was left");
        assert!(fresh.exists(), "a live writer's temporary was removed");
    }

    #[test]
    fn replace_swaps_contents_and_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(&path, b"old").unwrap();
        replace(&path, b"new", 0o640).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o640);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn resolve_follows_relative_and_absolute_links() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::write(&real, b"x").unwrap();
        std::os::unix::fs::symlink("real", dir.path().join("rel")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("rel"), dir.path().join("abs")).unwrap();
        assert_eq!(resolve_symlinks(&dir.path().join("abs")).unwrap(), real);
        assert_eq!(resolve_symlinks(&real).unwrap(), real);
        let missing = dir.path().join("missing");
        assert_eq!(resolve_symlinks(&missing).unwrap(), missing);
    }

    #[test]
    fn resolve_gives_up_on_loops() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("b", dir.path().join("a")).unwrap();
        std::os::unix::fs::symlink("a", dir.path().join("b")).unwrap();
        let err = resolve_symlinks(&dir.path().join("a")).unwrap_err();
        assert!(err.to_string().contains("too many levels"), "{err}");
    }

    #[test]
    fn errors_name_the_path() {
        let err = replace(Path::new("/nonexistent-dir-flyte/x"), b"x", 0o600).unwrap_err();
        assert!(err.to_string().contains("/nonexistent-dir-flyte"), "{err}");
        assert_eq!(err.io_kind(), Some(io::ErrorKind::NotFound));
    }
}
