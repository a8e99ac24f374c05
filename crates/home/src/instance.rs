//! One sandbox per state directory, proved by a lock rather than by a pid file.
//!
//! The serving process holds an exclusive `flock` on `sandbox.lock` for its whole life and
//! writes its pid into it. The kernel drops the lock when the process dies, however it dies, so
//! "the lock is held" means "a sandbox serves this directory" and the pid inside is that
//! process's: a pid file left by a dead sandbox, whose number the system has since given to an
//! unrelated process, can never be mistaken for a live sandbox.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::{HomeError, Result};

/// The lock file's name in the state directory.
pub const LOCK_FILE: &str = "sandbox.lock";

/// Who holds a state directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// Nobody: no sandbox serves this directory.
    Free,
    /// A sandbox has the lock but has not written its pid yet (it is starting).
    Starting,
    /// A sandbox serves it; its pid.
    Serving(u32),
}

/// The lock of a serving sandbox, released when dropped (or when the process ends).
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
}

#[allow(
    clippy::disallowed_methods,
    reason = "a lock file: opened in place (never replaced, or the lock would split), 0600 at open"
)]
fn open(dir: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(dir.join(LOCK_FILE))
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

impl InstanceLock {
    /// Take the directory for this process, or say who has it.
    pub fn acquire(dir: &Path) -> Result<Self> {
        let io = |source: std::io::Error| HomeError::Lock {
            path: dir.join(LOCK_FILE),
            source,
        };
        let mut file = open(dir).map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(HomeError::Busy {
                    dir: dir.to_owned(),
                    pid: read_pid(&mut file),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(Self { _file: file })
    }
}

/// Who serves `dir` now. Reading does not disturb a serving sandbox.
pub fn holder(dir: &Path) -> Holder {
    let Ok(mut file) = File::open(dir.join(LOCK_FILE)) else {
        return Holder::Free;
    };
    // Getting the lock means nobody holds it exclusively (ours goes with `file`). Not being
    // able to tell (an unusual filesystem) also says free: callers then start a sandbox, which
    // fails clearly if the directory is in fact taken.
    if let Err(TryLockError::WouldBlock) = file.try_lock_shared() {
        read_pid(&mut file).map_or(Holder::Starting, Holder::Serving)
    } else {
        Holder::Free
    }
}

#[allow(
    clippy::disallowed_methods,
    reason = "tests write their fixtures directly"
)]
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_is_exclusive_and_names_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(holder(dir.path()), Holder::Free);
        let lock = InstanceLock::acquire(dir.path()).unwrap();
        assert_eq!(holder(dir.path()), Holder::Serving(std::process::id()));
        let second = InstanceLock::acquire(dir.path()).unwrap_err();
        assert!(
            matches!(second, HomeError::Busy { pid: Some(pid), .. } if pid == std::process::id()),
            "{second:?}"
        );
        drop(lock);
        assert_eq!(holder(dir.path()), Holder::Free);
        InstanceLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn a_stale_pid_in_an_unlocked_file_is_nobody() {
        let dir = tempfile::tempdir().unwrap();
        // The pid of this very process, which is alive: a pid alone proves nothing.
        std::fs::write(
            dir.path().join(LOCK_FILE),
            format!("{}\n", std::process::id()),
        )
        .unwrap();
        assert_eq!(holder(dir.path()), Holder::Free);
    }
}
