use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Makes a directory unwritable for the life of the guard.
///
/// Mode bits do not stop root, so as root the directory is made immutable (`chattr +i`, which
/// even root cannot write through); otherwise it is chmod-ed 0555. Either way the guard checks
/// that creating a file really fails before handing control back to the test.
#[derive(Debug)]
pub struct ReadOnlyDir {
    path: PathBuf,
    immutable: bool,
}

impl ReadOnlyDir {
    pub fn new(path: &Path) -> Self {
        let immutable = crate::is_root();
        if immutable {
            let status = Command::new("chattr")
                .arg("+i")
                .arg(path)
                .status()
                .expect("chattr (e2fsprogs) is installed");
            assert!(status.success(), "chattr +i {} failed", path.display());
        } else {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o555))
                .expect("the test owns the directory");
        }
        let guard = Self {
            path: path.to_owned(),
            immutable,
        };
        let probe = path.join(".flyte-readonly-probe");
        assert!(
            std::fs::write(&probe, b"").is_err(),
            "{} is still writable; the filesystem ignores chattr +i",
            path.display()
        );
        guard
    }
}

impl Drop for ReadOnlyDir {
    fn drop(&mut self) {
        // Best effort: a failure here only leaves a directory the temp cleaner cannot remove.
        if self.immutable {
            let _ = Command::new("chattr").arg("-i").arg(&self.path).status();
        } else {
            let _ = std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o755));
        }
    }
}
