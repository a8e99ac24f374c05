//! The "local-process" plugin: each attempt's command in its own process group, watched
//! until it exits; Abort hangs the group up.

use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use flyte_reconciler_core::{
    self as rc, ErrorKind, ExecutionError, PhaseInfo, PluginPhase, PluginResult, PluginTransition,
};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::{
    RunSlot,
    entry::{LocalTask, RunEntry},
    ingress::{DebugRoute, debug_server, open_debug_route},
};

#[derive(Debug)]
pub(super) struct Process {
    pub(super) pid: u32,
    pub(super) attempt: u32,
    pub(super) exit: Option<std::process::ExitStatus>,
    /// The attempt's process group in the sandbox's set, while it may still hold processes.
    pub(super) member: Option<flyte_reaper::Member>,
}

/// What the plugin's Handle found under the entry's lock: a report on the attempt's process, or
/// what it needs to start one (started without the lock: see [`launch`]).
pub(super) enum Handled {
    Report(PluginResult),
    Start(Launch),
}

/// Everything starting an attempt needs, copied out of the entry.
pub(super) struct Launch {
    attempt: u32,
    task: LocalTask,
    debug: Option<DebugRoute>,
    groups: flyte_reaper::Groups,
}

/// Whether the sandbox is stopping (its shutdown fails every action and kills every group).
fn stopping(entry: &RunEntry) -> bool {
    entry.stopping.load(std::sync::atomic::Ordering::SeqCst)
}

fn transition(info: PhaseInfo) -> PluginResult {
    PluginResult::Transition(PluginTransition { info, state: None })
}

/// The local-process plugin's Handle, its part under the entry's lock: report on the attempt's
/// process, or say what starting one needs.
pub(super) fn handle(entry: &RunEntry, attempt: u32) -> Handled {
    match &entry.process {
        Some(process) if process.attempt == attempt => Handled::Report(match process.exit {
            None => transition(PhaseInfo::new(PluginPhase::Running, "running")),
            Some(status) if status.success() => {
                transition(PhaseInfo::new(PluginPhase::Success, "exited 0"))
            }
            Some(status) => {
                let message = status.code().map_or_else(
                    || format!("killed by signal {}", status.signal().unwrap_or(0)),
                    |code| format!("the command exited with status {code}"),
                );
                let error = ExecutionError::new(ErrorKind::User, "NonZeroExit", message);
                transition(PhaseInfo::failure(PluginPhase::RetryableFailure, error))
            }
        }),
        _ => match serde_json::from_slice::<LocalTask>(&entry.object.spec.task_template) {
            Ok(task) => Handled::Start(Launch {
                attempt,
                task,
                debug: entry.debug.clone(),
                groups: entry.groups.clone(),
            }),
            Err(e) => Handled::Report(failed_to_start(StartFailure::Task(e.to_string()))),
        },
    }
}

fn failed_to_start(failure: StartFailure) -> PluginResult {
    match failure {
        StartFailure::Task(message) => {
            let error = ExecutionError::new(ErrorKind::User, "CommandFailedToStart", message);
            transition(PhaseInfo::failure(PluginPhase::PermanentFailure, error))
        }
        // The machine failed, not the task: the reconciler counts it and starts afresh.
        StartFailure::Machine(message) => PluginResult::Error(rc::PluginError {
            code: "LocalProcessUnavailable".to_owned(),
            message,
        }),
    }
}

/// Why an attempt's process did not start: the task's fault (a retry would fail the same way)
/// or the machine's (the log cannot be written, no process can be made right now).
pub(super) enum StartFailure {
    Task(String),
    Machine(String),
}

impl From<String> for StartFailure {
    fn from(message: String) -> Self {
        Self::Task(message)
    }
}

/// An attempt's process, started, and its debug server when the run has a debug route.
pub(super) struct Started {
    attempt: u32,
    child: tokio::process::Child,
    pid: u32,
    member: flyte_reaper::Member,
    debug: Option<(DebugRoute, flyte_debug_server::DebugServer, String)>,
}

/// Start an attempt: its debug server (host key on disk), its log, its process. Called without
/// the entry's lock, so request handlers never wait on the disk or on fork.
pub(super) fn launch(launch: Launch, logs: &std::path::Path) -> Result<Started, StartFailure> {
    let Launch {
        attempt,
        task,
        debug,
        groups,
    } = launch;
    let debug = match debug {
        Some(route) => {
            let (server, host_key) = debug_server(&route, &task, &groups)?;
            Some((route, server, host_key))
        }
        None => None,
    };
    let machine = |e: std::io::Error, what: &str| StartFailure::Machine(format!("{what}: {e}"));
    if let Some(dir) = logs.parent() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| machine(e, &format!("cannot create {}", dir.display())))?;
    }
    #[allow(
        clippy::disallowed_methods,
        reason = "a log the task appends to while it runs: opened in place, 0600 at open"
    )]
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(logs)
        .map_err(|e| machine(e, &format!("cannot open the log {}", logs.display())))?;
    let stdout = log
        .try_clone()
        .map_err(|e| machine(e, "cannot share the log"))?;
    // The local-process plugin runs the task's command: what a sandbox run is.
    #[allow(clippy::disallowed_methods)]
    let child = tokio::process::Command::new(&task.argv[0])
        .args(&task.argv[1..])
        .envs(&task.env)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(log)
        // Its own process group, so an abort reaches everything the task started.
        .process_group(0)
        .spawn()
        .map_err(|e| {
            let message = format!("cannot start {:?}: {e}", task.argv[0]);
            match e.kind() {
                // The command is missing or not executable: the task is wrong.
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                    StartFailure::Task(message)
                }
                _ => StartFailure::Machine(message),
            }
        })?;
    let pid = child.id().ok_or_else(|| {
        StartFailure::Task("the process exited before it could be watched".to_owned())
    })?;
    // In the sandbox's set at once, so a shutdown from now on reaches it.
    let member = groups.adopt(pid);
    Ok(Started {
        attempt,
        child,
        pid,
        member,
        debug,
    })
}

/// Record a started attempt in its entry (under the lock again): its process, watched until it
/// exits, and its debug route.
pub(super) fn commit(
    entry: &mut RunEntry,
    slot: &Arc<RunSlot>,
    started: Result<Started, StartFailure>,
) -> PluginResult {
    let Started {
        attempt,
        mut child,
        pid,
        member,
        debug,
    } = match started {
        Ok(started) => started,
        Err(failure) => return failed_to_start(failure),
    };
    // A shutdown that began while the process started may have swept the groups before this
    // one joined: end it here.
    if stopping(entry) {
        flyte_reaper::kill_group(pid);
        return failed_to_start(StartFailure::Machine("the sandbox is stopping".to_owned()));
    }
    if let Some((route, server, host_key)) = debug
        && let Err(message) = open_debug_route(entry, &route, server, host_key)
    {
        // Not recorded, so not watched: stop it now rather than leave it behind.
        hang_up(pid);
        return failed_to_start(StartFailure::Task(message));
    }
    entry.process = Some(Process {
        pid,
        attempt,
        exit: None,
        member: Some(member),
    });
    let slot = Arc::clone(slot);
    tokio::spawn(async move {
        let status = child.wait().await;
        let mut entry = slot.lock();
        if let (Some(process), Ok(status)) = (entry.process.as_mut(), status)
            && process.pid == pid
        {
            process.exit = Some(status);
            // The task's main process ended: what it left running ends too, as the rest of a
            // container does when its main process exits.
            flyte_reaper::kill_group(pid);
            process.member = None;
        }
        drop(entry);
        slot.wake.notify_one();
    });
    transition(PhaseInfo::new(PluginPhase::Running, "started"))
}

/// Stop a task's process group: SIGTERM now, SIGKILL if it is still there a few seconds later.
pub(super) fn hang_up(pid: u32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    let group = Pid::from_raw(pid);
    let _ = killpg(group, Signal::SIGTERM);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let _ = killpg(group, Signal::SIGKILL);
    });
}
