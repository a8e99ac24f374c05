use std::fs::{File, OpenOptions};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Ports are taken from below Linux's ephemeral range (32768-60999), so the kernel never hands one
/// of them out as the source port of an outgoing connection while a server is about to bind it.
const FIRST: u16 = 20_000;
const COUNT: u16 = 12_000;

/// A loopback port held for one test. Other test processes skip it until this is dropped.
#[derive(Debug)]
pub struct PortReservation {
    port: u16,
    // Holding the exclusive lock on `<tmp>/flyte-testkit-ports/<port>.lock` is the reservation.
    _lock: File,
}

impl PortReservation {
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// Reserve a free port on 127.0.0.1 that no other process using this crate will also get.
///
/// The reservation is a `flock` on a per-port file, so it is released by the kernel if the test
/// process dies. The port is checked free by binding it once; the caller's server binds it next.
pub fn reserve_port() -> PortReservation {
    let dir = lock_dir();
    ensure_shared_dir(&dir);
    // Spread processes over the range so they rarely contend for the same candidates.
    let seed = std::process::id().wrapping_mul(2_654_435_761)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    for i in 0..u32::from(COUNT) {
        let offset = u16::try_from((seed.wrapping_add(i.wrapping_mul(7919))) % u32::from(COUNT))
            .expect("remainder of a u16 range fits u16");
        let port = FIRST + offset;
        let lock = open_lock(&dir.join(format!("{port}.lock")));
        if lock.try_lock().is_err() {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return PortReservation { port, _lock: lock };
        }
    }
    panic!(
        "no free loopback port between {FIRST} and {}",
        FIRST + COUNT
    );
}

/// The lock directory is shared by every user running tests on the machine: world-writable with
/// the sticky bit, like /tmp itself.
fn ensure_shared_dir(dir: &Path) {
    if std::fs::create_dir(dir).is_ok() {
        // Mode bits at creation are narrowed by the umask; this directory must be 1777.
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1777));
    }
    assert!(dir.is_dir(), "{} cannot be created", dir.display());
}

/// A lock file another user may have created: `flock` works on a read-only descriptor, so open
/// it read-only when it exists and create it otherwise.
fn open_lock(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .open(path)
        .unwrap_or_else(|_| {
            OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(path)
                .unwrap_or_else(|e| {
                    panic!(
                        "the port lock file {} cannot be opened: {e}",
                        path.display()
                    )
                })
        })
}

fn lock_dir() -> PathBuf {
    std::env::temp_dir().join("flyte-testkit-ports")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_distinct_while_held() {
        let held: Vec<_> = (0..32).map(|_| reserve_port()).collect();
        let mut ports: Vec<_> = held.iter().map(PortReservation::port).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 32);
        for p in &ports {
            assert!((FIRST..FIRST + COUNT).contains(p));
        }
    }
}
