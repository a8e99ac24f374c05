//! Process groups a server owns, ended with it however it ends.
//!
//! The sandbox starts each task attempt, and the debug server each SSH session, in a process
//! group of its own. [`Groups`] is the registry of those groups: a [`Member`] is registered while
//! it lives, [`Groups::terminate_all`] ends every group (at shutdown, or when the run they
//! belong to ends), and [`Groups::child`] makes a nested set (one run's debug sessions) whose
//! members also count as the parent's, so ending the parent ends them too.
//!
//! A process that is `SIGKILL`ed runs no code, so the root set can have a **watchdog**: a small
//! `sh` process, in its own process group and deaf to terminal signals, that reads the current
//! list of group ids on a pipe (one line, rewritten on every change). When the pipe ends, which
//! the kernel guarantees when the owner dies, it sends SIGTERM to every group still listed and
//! SIGKILL three seconds later. On a clean shutdown the owner ends the groups itself and the
//! watchdog's last line is empty.
//!
//! A group id may be reused by the system after its group ended; members unregister when their
//! group's leader is reaped and the watchdog rereads the list at once, so the window in which a
//! stale id is listed is the time between a leader's exit and its reaping.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// The watchdog: remember the last list, and end those groups when the pipe closes.
const WATCHDOG_SCRIPT: &str = r#"trap '' HUP INT TERM QUIT
live=
while IFS= read -r line; do live=$line; done
[ -n "$live" ] || exit 0
for g in $live; do kill -TERM "-$g" 2>/dev/null; done
sleep 3
for g in $live; do kill -KILL "-$g" 2>/dev/null; done
"#;

/// Why the watchdog could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReaperError {
    #[error("cannot start the process watchdog (/bin/sh): {0}")]
    Watchdog(#[source] std::io::Error),
}

struct Watchdog {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Watchdog {
    fn tell(&mut self, groups: &BTreeSet<i32>) {
        let Some(stdin) = self.stdin.as_mut() else {
            return;
        };
        let line = groups
            .iter()
            .map(i32::to_string)
            .collect::<Vec<_>>()
            .join(" ");
        if let Err(error) = writeln!(stdin, "{line}") {
            tracing::warn!(%error, "the process watchdog is gone; groups will not be ended if this process is killed");
            self.stdin = None;
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Closing its stdin is what tells it we are gone; it then exits (its list is whatever
        // we last told it) and is reaped here when it has no list to end.
        self.stdin = None;
        let _ = self.child.try_wait();
    }
}

#[derive(Default)]
struct Inner {
    members: Mutex<BTreeSet<i32>>,
    parent: Option<Groups>,
    watchdog: Option<Mutex<Watchdog>>,
}

/// A set of process groups that end together. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Groups {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Groups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Groups")
            .field("members", &*self.members())
            .field("watchdog", &self.inner.watchdog.is_some())
            .finish_non_exhaustive()
    }
}

/// A registered group; it leaves the set (and the watchdog's list) when dropped.
#[derive(Debug)]
pub struct Member {
    pgid: i32,
    groups: Groups,
}

impl Member {
    /// The process group id.
    pub fn pgid(&self) -> u32 {
        self.pgid.unsigned_abs()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.groups.remove(self.pgid);
    }
}

impl Groups {
    /// An empty set without a watchdog (ended only by this process).
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty root set whose groups are ended by a watchdog process if this one dies.
    pub fn with_watchdog() -> Result<Self, ReaperError> {
        // The watchdog: a shell that outlives this process (see the module docs).
        #[allow(clippy::disallowed_methods)]
        let mut child = Command::new("/bin/sh")
            .args(["-c", WATCHDOG_SCRIPT])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own group: a Ctrl-C or a signal to our group does not reach it.
            .process_group(0)
            .spawn()
            .map_err(ReaperError::Watchdog)?;
        let stdin = child.stdin.take();
        Ok(Self {
            inner: Arc::new(Inner {
                watchdog: Some(Mutex::new(Watchdog { child, stdin })),
                ..Inner::default()
            }),
        })
    }

    /// A nested set: its members are also members of this one (and of its ancestors).
    #[must_use]
    pub fn child(&self) -> Self {
        Self {
            inner: Arc::new(Inner {
                parent: Some(self.clone()),
                ..Inner::default()
            }),
        }
    }

    fn members(&self) -> MutexGuard<'_, BTreeSet<i32>> {
        self.inner
            .members
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn changed(&self) {
        if let Some(watchdog) = &self.inner.watchdog {
            let members = self.members().clone();
            watchdog
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .tell(&members);
        }
    }

    fn insert(&self, pgid: i32) {
        self.members().insert(pgid);
        self.changed();
        if let Some(parent) = &self.inner.parent {
            parent.insert(pgid);
        }
    }

    fn remove(&self, pgid: i32) {
        self.members().remove(&pgid);
        self.changed();
        if let Some(parent) = &self.inner.parent {
            parent.remove(pgid);
        }
    }

    /// Register the process group `pgid` (a process started with `process_group(0)` or
    /// `setsid` leads the group whose id is its pid).
    pub fn adopt(&self, pgid: u32) -> Member {
        let pgid = i32::try_from(pgid).unwrap_or(i32::MAX);
        self.insert(pgid);
        Member {
            pgid,
            groups: self.clone(),
        }
    }

    /// The registered group ids.
    pub fn pgids(&self) -> Vec<u32> {
        self.members().iter().map(|g| g.unsigned_abs()).collect()
    }

    /// Send `signal` to every registered group; how many were signalled.
    pub fn signal_all(&self, signal: Signal) -> usize {
        let groups = self.members().clone();
        for group in &groups {
            let _ = killpg(Pid::from_raw(*group), signal);
        }
        groups.len()
    }

    /// Ask every group to end (SIGHUP, as a closed terminal does, and SIGTERM), give them up to
    /// `grace`, then SIGKILL what is left. Blocks the calling thread; returns how many groups
    /// were asked. Groups stay registered until their members drop.
    pub fn terminate_all(&self, grace: Duration) -> usize {
        let groups = self.members().clone();
        for group in &groups {
            let _ = killpg(Pid::from_raw(*group), Signal::SIGHUP);
            let _ = killpg(Pid::from_raw(*group), Signal::SIGTERM);
        }
        // Shutdown, not a test: a bounded poll for the groups to empty is the simplest wait.
        let started = Instant::now();
        let alive = |group: &i32| group_is_alive(group.unsigned_abs());
        while groups.iter().any(alive) && started.elapsed() < grace {
            std::thread::sleep(Duration::from_millis(20));
        }
        for group in groups.iter().filter(|g| alive(g)) {
            let _ = killpg(Pid::from_raw(*group), Signal::SIGKILL);
        }
        groups.len()
    }

    /// [`Groups::terminate_all`] without blocking: the signals now, the SIGKILL from a thread
    /// of its own after `grace`.
    pub fn terminate_all_in_background(&self, grace: Duration) -> usize {
        let groups = self.clone();
        let count = self.members().len();
        if count > 0 {
            std::thread::spawn(move || groups.terminate_all(grace));
        }
        count
    }
}

/// End what is left of the group `pgid` at once (its leader has exited: the rest goes with it,
/// as the rest of a container goes when its main process ends).
pub fn kill_group(pgid: u32) {
    if let Ok(pgid) = i32::try_from(pgid) {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
}

/// Whether any process of group `pgid` still runs. Zombies do not count: a leader whose
/// parent died waits to be reaped by whoever adopted it, and signals to it "succeed" although
/// nothing runs. Reads `/proc`; where that is missing, falls back to signal 0.
pub fn group_is_alive(pgid: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return i32::try_from(pgid).is_ok_and(|g| killpg(Pid::from_raw(g), None).is_ok());
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .any(|stat| {
            // Fields after the command name (which is in parentheses and may hold spaces):
            // state, ppid, pgrp, ...
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let mut fields = rest.split_whitespace();
            let state = fields.next();
            let pgrp = fields.nth(1).and_then(|g| g.parse::<u32>().ok());
            pgrp == Some(pgid) && state != Some("Z") && state != Some("X")
        })
}
