//! Runs, each with one action (`a0`), executed as local processes. The TaskAction state machine
//! of flyte-reconciler-core decides; this module is its driver: it keeps the object, runs the
//! effects (the "local-process" plugin starts, watches and kills process groups) and feeds the
//! results back.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use buffa::{EnumValue, MessageField};
use buffa_types::google::protobuf::Timestamp as ProtoTimestamp;
use flyte_api::ActionPhaseExt;
use flyte_idl::flyteidl2::common::{ActionIdentifier, ActionPhase, RunIdentifier};
use flyte_idl::flyteidl2::{core, task, workflow};
use flyte_reconciler_core::{
    self as rc, CallResult, Config, Effect, EffectResult, ErrorKind, ExecutionError, PhaseInfo,
    PluginPhase, PluginResult, PluginTransition, TaskAction, TaskActionSpec, Timestamp,
    WriteResult,
};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::Notify;

/// The only plugin the sandbox has: run the task's command as a local process.
pub(crate) const TASK_TYPE: &str = "local-process";
/// The name of a run's (only) action.
pub(crate) const ACTION_NAME: &str = flyte_api::request::ROOT_ACTION;
/// Longest wait between passes while an action runs (a process exit wakes the driver sooner).
const MAX_WAIT: Duration = Duration::from_secs(1);

/// What the task runs: the command and its environment (the serialized "task template").
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct LocalTask {
    pub(crate) argv: Vec<String>,
    pub(crate) env: BTreeMap<String, String>,
    /// Set when the task is cacheable (`discoverable`): its `discoveryVersion`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cache_version: Option<String>,
}

impl LocalTask {
    /// The cache key: what the task runs and where, and its version. Runs with equal keys would
    /// do the same work, so the second is served from the first.
    fn cache_key(&self, id: &RunIdentifier) -> Option<String> {
        use sha2::{Digest, Sha256};
        let version = self.cache_version.as_ref()?;
        let identity = serde_json::json!([id.project, id.domain, self.argv, self.env, version]);
        Some(hex::encode(Sha256::digest(identity.to_string().as_bytes())))
    }
}

/// A debug run's route on the ingress, and where its debug server keeps its key.
#[derive(Debug, Clone)]
struct DebugRoute {
    ingress: Arc<Ingress>,
    path: String,
    state_dir: std::path::PathBuf,
}

#[derive(Debug)]
struct Process {
    pid: u32,
    attempt: u32,
    exit: Option<std::process::ExitStatus>,
    /// The attempt's process group in the sandbox's set, while it may still hold processes.
    member: Option<flyte_reaper::Member>,
}

/// A run and everything the API shows of it.
#[derive(Debug)]
pub(crate) struct RunEntry {
    pub(crate) id: RunIdentifier,
    object: TaskAction,
    /// The last phase announced by an action event.
    pub(crate) phase: ActionPhase,
    pub(crate) error: Option<workflow::ErrorInfo>,
    pub(crate) abort_reason: Option<String>,
    process: Option<Process>,
    /// The debug route of a debug run, once its server is up.
    ide_link: Option<core::TaskLog>,
    debug: Option<DebugRoute>,
    /// The debug run's server, while its route is open: ended with the run.
    debug_server: Option<flyte_debug_server::DebugServer>,
    /// Every process group of this sandbox (tasks and debug sessions).
    groups: flyte_reaper::Groups,
    /// Set when the sandbox shuts down: drivers stop, nothing is blamed on the task.
    stopping: Arc<std::sync::atomic::AtomicBool>,
    store: Arc<crate::store::Store>,
    task_json: String,
    /// Every phase the attempts entered, oldest first (also in the store).
    history: Vec<crate::store::EventRecord>,
    /// The object's finalizer was removed after deletion: the reconciler is done with it.
    gone: bool,
}

impl RunEntry {
    /// Save what the API shows of this run. A failed write is logged, not fatal: the run goes on
    /// and the next change writes again.
    fn persist(&self) {
        let record = self.record();
        if let Err(e) = self.store.update_run(&record) {
            tracing::error!(run = %self.id.name, error = %e, "cannot save the run");
        }
    }

    /// Note a phase an attempt entered, here and in the store (a failed write is logged: the
    /// history then lacks one line, the run itself is unaffected).
    fn record_event(&mut self, attempt: u32, at: rc::Timestamp) {
        let event = crate::store::EventRecord {
            attempt,
            phase: buffa::Enumeration::proto_name(&self.phase).to_owned(),
            error_json: self
                .error
                .as_ref()
                .and_then(|e| serde_json::to_string(e).ok()),
            occurred_at_ms: at.as_millis(),
        };
        let run = (
            self.id.project.as_str(),
            self.id.domain.as_str(),
            self.id.name.as_str(),
        );
        if let Err(e) = self.store.append_event(run, &event) {
            tracing::error!(run = %self.id.name, error = %e, "cannot save the action event");
        }
        self.history.push(event);
    }

    /// The task as a flyteidl2 container spec: its command and (merged) environment, so a client
    /// can launch it again, e.g. in debug mode.
    fn task_spec(&self) -> Option<task::TaskSpec> {
        let local: LocalTask = serde_json::from_str(&self.task_json).ok()?;
        let mut spec = flyte_api::request::container_task(local.argv, local.env);
        if let (Some(version), Some(template)) =
            (local.cache_version, spec.task_template.as_option_mut())
        {
            template.metadata = MessageField::some(core::TaskMetadata {
                discoverable: true,
                discovery_version: version,
                ..Default::default()
            });
        }
        Some(spec)
    }

    /// One entry per attempt, from the history: its last phase and error, when it started and
    /// (once it moved on or ended) when it ended. The debug link belongs to the latest attempt.
    fn attempts(&self) -> Vec<workflow::ActionAttempt> {
        let time = |ms: i64| MessageField::some(timestamp(ms));
        let mut attempts: Vec<workflow::ActionAttempt> = Vec::new();
        for event in &self.history {
            let phase = EnumValue::from(stored_phase(&event.phase));
            let error: Option<workflow::ErrorInfo> = event
                .error_json
                .as_deref()
                .and_then(|e| serde_json::from_str(e).ok());
            match attempts.last_mut() {
                Some(last) if last.attempt == event.attempt => {
                    last.phase = phase;
                    if let Some(error) = error {
                        last.error_info = MessageField::some(error);
                    }
                }
                _ => {
                    if let Some(last) = attempts.last_mut()
                        && last.end_time.is_unset()
                    {
                        last.end_time = time(event.occurred_at_ms);
                    }
                    attempts.push(workflow::ActionAttempt {
                        phase,
                        attempt: event.attempt,
                        start_time: time(event.occurred_at_ms),
                        error_info: error.into(),
                        ..Default::default()
                    });
                }
            }
            if let Some(last) = attempts.last_mut()
                && last.phase.is_terminal()
            {
                last.end_time = time(event.occurred_at_ms);
            }
        }
        if attempts.is_empty() {
            attempts.push(workflow::ActionAttempt {
                phase: self.phase.into(),
                attempt: self.object.status.attempts.max(1),
                error_info: self.error.clone().into(),
                ..Default::default()
            });
        }
        if let Some(last) = attempts.last_mut() {
            last.log_info = self.ide_link.iter().cloned().collect();
        }
        attempts
    }

    fn record(&self) -> crate::store::RunRecord {
        crate::store::RunRecord {
            project: self.id.project.clone(),
            domain: self.id.domain.clone(),
            name: self.id.name.clone(),
            task_json: self.task_json.clone(),
            phase: buffa::Enumeration::proto_name(&self.phase).to_owned(),
            attempts: self.object.status.attempts.max(1),
            error_json: self
                .error
                .as_ref()
                .and_then(|e| serde_json::to_string(e).ok()),
            abort_reason: self.abort_reason.clone(),
        }
    }

    pub(crate) fn details(&self) -> workflow::ActionDetails {
        let attempts = self.object.status.attempts.max(1);
        let history = self.attempts();
        // The action started with its first attempt and, once terminal, ended with its last.
        let start_time = history
            .first()
            .map(|a| a.start_time.clone())
            .unwrap_or_default();
        let end_time = history
            .last()
            .filter(|_| self.phase.is_terminal())
            .map(|a| a.end_time.clone())
            .unwrap_or_default();
        // `result` is a oneof: an aborted action shows why it was aborted.
        let result = match (&self.abort_reason, &self.error) {
            (Some(reason), _) => Some(
                workflow::AbortInfo {
                    reason: reason.clone(),
                    ..Default::default()
                }
                .into(),
            ),
            (None, Some(error)) => Some(error.clone().into()),
            (None, None) => None,
        };
        workflow::ActionDetails {
            id: MessageField::some(ActionIdentifier {
                run: MessageField::some(self.id.clone()),
                name: ACTION_NAME.to_owned(),
                ..Default::default()
            }),
            status: MessageField::some(workflow::ActionStatus {
                phase: self.phase.into(),
                attempts,
                start_time,
                end_time,
                ..Default::default()
            }),
            result,
            spec: self.task_spec().map(Into::into),
            attempts: history,
            ..Default::default()
        }
    }
}

/// One run's shared state: the entry, and a bell that wakes its driver.
#[derive(Debug)]
pub(crate) struct RunSlot {
    entry: Mutex<RunEntry>,
    wake: Notify,
}

impl RunSlot {
    pub(crate) fn lock(&self) -> MutexGuard<'_, RunEntry> {
        self.entry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One debug run's route: its in-process server, and that server's host key.
#[derive(Clone)]
pub(crate) struct IngressRoute {
    pub(crate) target: flyte_tunnel::bridge::Target,
    pub(crate) host_key: String,
}

/// Where debug runs are reached: the ingress's routes (request path -> the run's in-process
/// debug server) and its base URL, known once it listens.
#[derive(Default)]
pub(crate) struct Ingress {
    pub(crate) routes: Mutex<HashMap<String, IngressRoute>>,
    pub(crate) base_url: std::sync::OnceLock<String>,
}

impl std::fmt::Debug for Ingress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingress")
            .field("base_url", &self.base_url.get())
            .finish_non_exhaustive()
    }
}

impl Ingress {
    fn routes(&self) -> MutexGuard<'_, HashMap<String, IngressRoute>> {
        self.routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The target serving `path`, for the ingress bridge.
    pub(crate) fn route(&self, path: &str) -> Option<flyte_tunnel::bridge::Target> {
        let path = path.split('?').next().unwrap_or(path);
        self.routes().get(path).map(|r| r.target.clone())
    }

    /// The host key of the server at `path`, for `?ssh-host-key`.
    pub(crate) fn host_key(&self, path: &str) -> Option<String> {
        let path = path.split('?').next().unwrap_or(path);
        self.routes().get(path).map(|r| r.host_key.clone())
    }
}

/// All runs of this sandbox.
#[derive(Debug)]
pub(crate) struct Runs {
    slots: Mutex<HashMap<String, Arc<RunSlot>>>,
    groups: flyte_reaper::Groups,
    stopping: Arc<std::sync::atomic::AtomicBool>,
    store: Arc<crate::store::Store>,
    pub(crate) ingress: Arc<Ingress>,
    /// Where debug servers keep their host keys: `<state>/debug/<project>-<domain>-<run>`.
    debug_dir: std::path::PathBuf,
}

/// Why a run could not be created.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CreateError {
    AlreadyExists,
    Invalid(String),
    Store(String),
}

fn key(id: &RunIdentifier) -> String {
    format!("{}/{}/{}", id.project, id.domain, id.name)
}

/// Projects and domains as Flyte accepts them (DNS-1123 labels): lower-case letters, digits
/// and '-', 1 to 63 characters, starting and ending with a letter or digit. They name files
/// and directories here (`logs/<project>/<domain>/<run>.log`), so nothing else may pass:
/// no `/`, no `..`, no NUL, and the nested layout keeps distinct runs in distinct files.
pub(crate) fn check_label(what: &str, value: &str) -> Result<(), String> {
    let valid = (1..=63).contains(&value.len())
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid {what} {value:?}: use 1 to 63 lower-case letters, digits and '-', starting and ending with a letter or digit"
        ))
    }
}

/// The command and environment a process can actually be given: no NUL anywhere (the kernel
/// cannot pass one), environment names non-empty and without `=`.
pub(crate) fn check_task(task: &LocalTask) -> Result<(), String> {
    if let Some(arg) = task.argv.iter().find(|a| a.contains('\0')) {
        return Err(format!("the command argument {arg:?} contains a NUL byte"));
    }
    for (name, value) in &task.env {
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(format!(
                "invalid environment variable name {name:?}: it must be non-empty, without '=' or NUL"
            ));
        }
        if value.contains('\0') {
            return Err(format!(
                "the value of environment variable {name} contains a NUL byte"
            ));
        }
    }
    Ok(())
}

/// Run names as Kubernetes and Flyte accept them: lower-case letters, digits and '-', 1 to 30
/// characters, starting with a letter.
pub(crate) fn check_run_name(name: &str) -> Result<(), String> {
    let valid = (1..=30).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid run name {name:?}: use 1 to 30 lower-case letters, digits and '-', starting with a letter"
        ))
    }
}

fn now() -> Timestamp {
    Timestamp::from_millis(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
    )
}

fn to_api_phase(phase: rc::ActionPhase) -> ActionPhase {
    match phase {
        rc::ActionPhase::Queued => ActionPhase::Queued,
        rc::ActionPhase::WaitingForResources => ActionPhase::WaitingForResources,
        rc::ActionPhase::Initializing => ActionPhase::Initializing,
        rc::ActionPhase::Running => ActionPhase::Running,
        rc::ActionPhase::Succeeded => ActionPhase::Succeeded,
        rc::ActionPhase::Failed => ActionPhase::Failed,
        rc::ActionPhase::Aborted => ActionPhase::Aborted,
        rc::ActionPhase::TimedOut => ActionPhase::TimedOut,
    }
}

fn to_api_error(error: &ExecutionError) -> workflow::ErrorInfo {
    let kind = match error.kind {
        ErrorKind::User => workflow::error_info::Kind::User,
        ErrorKind::System => workflow::error_info::Kind::System,
    };
    workflow::ErrorInfo {
        message: error.message.clone(),
        kind: kind.into(),
        code: error.code.clone(),
        ..Default::default()
    }
}

/// A system error the sandbox itself records (it stopped while the action ran).
fn system_error(message: &str, code: &str) -> workflow::ErrorInfo {
    workflow::ErrorInfo {
        message: message.to_owned(),
        kind: workflow::error_info::Kind::System.into(),
        code: code.to_owned(),
        ..Default::default()
    }
}

/// A phase as the store keeps it (its proto name); an unknown name reads as unspecified.
fn stored_phase(name: &str) -> ActionPhase {
    <ActionPhase as buffa::Enumeration>::from_proto_name(name).unwrap_or(ActionPhase::Unspecified)
}

/// Milliseconds since the epoch as a protobuf timestamp.
fn timestamp(ms: i64) -> ProtoTimestamp {
    let nanos = i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0);
    ProtoTimestamp::from_unix(ms.div_euclid(1000), nanos)
}

impl Runs {
    pub(crate) fn new(state_dir: &std::path::Path, store: Arc<crate::store::Store>) -> Self {
        // A watchdog ends the tasks and shells even if the sandbox is SIGKILLed.
        let groups = flyte_reaper::Groups::with_watchdog().unwrap_or_else(|error| {
            tracing::warn!(%error, "running without a process watchdog");
            flyte_reaper::Groups::new()
        });
        Self {
            slots: Mutex::default(),
            groups,
            stopping: Arc::default(),
            store,
            ingress: Arc::default(),
            debug_dir: flyte_home::SandboxDir::new(state_dir).task_debug_dir(),
        }
    }

    /// Bring back the runs of an earlier life of this sandbox. Their processes died with it (it
    /// does not adopt orphans), so an action that was not over is failed as a system error.
    pub(crate) fn load(&self) -> crate::Result<usize> {
        let records = self.store.runs()?;
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for record in &records {
            let id = RunIdentifier {
                project: record.project.clone(),
                domain: record.domain.clone(),
                name: record.name.clone(),
                ..Default::default()
            };
            let mut phase = stored_phase(&record.phase);
            let mut error = record
                .error_json
                .as_deref()
                .and_then(|e| serde_json::from_str(e).ok());
            let interrupted = !phase.is_terminal();
            if interrupted {
                phase = ActionPhase::Failed;
                error = Some(system_error(
                    "the sandbox stopped while this action ran; its processes were stopped with it",
                    "SandboxRestarted",
                ));
            }
            let mut object = TaskAction::new(
                id.project.clone(),
                format!("{}-{ACTION_NAME}", id.name),
                TaskActionSpec::default(),
            );
            object.status.attempts = record.attempts;
            let history = self
                .store
                .events((&record.project, &record.domain, &record.name))?;
            let mut entry = RunEntry {
                id: id.clone(),
                object,
                phase,
                error,
                abort_reason: record.abort_reason.clone(),
                process: None,
                ide_link: None,
                debug: None,
                debug_server: None,
                groups: self.groups.clone(),
                stopping: Arc::clone(&self.stopping),
                // Nothing drives a loaded run: it is over.
                gone: true,
                store: Arc::clone(&self.store),
                task_json: record.task_json.clone(),
                history,
            };
            if interrupted {
                let attempt = entry.history.last().map_or(record.attempts, |e| e.attempt);
                entry.record_event(attempt, now());
            }
            entry.persist();
            slots.insert(
                key(&id),
                Arc::new(RunSlot {
                    entry: Mutex::new(entry),
                    wake: Notify::new(),
                }),
            );
        }
        Ok(records.len())
    }

    /// The sandbox is shutting down: stop driving, record every unfinished action as failed
    /// by the system (`SandboxStopped`: not the task's fault, no retry spent), end the debug
    /// sessions, then SIGTERM every process group (tasks and shells), wait up to `grace`, and
    /// SIGKILL what is left. Blocks the calling thread; returns how many actions were running.
    pub(crate) fn stop_processes(&self, grace: Duration) -> usize {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let slots: Vec<Arc<RunSlot>> = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        let mut running = 0;
        for slot in slots {
            let mut entry = slot.lock();
            if entry.gone || entry.phase.is_terminal() {
                continue;
            }
            running += usize::from(entry.process.as_ref().is_some_and(|p| p.exit.is_none()));
            entry.phase = ActionPhase::Failed;
            entry.error = Some(system_error(
                "the sandbox was stopped while this action ran",
                "SandboxStopped",
            ));
            let attempt = entry.object.status.attempts.max(1);
            entry.record_event(attempt, now());
            close_debug_route(&mut entry);
            entry.persist();
        }
        self.groups.terminate_all(grace);
        running
    }

    pub(crate) fn get(&self, id: &RunIdentifier) -> Option<Arc<RunSlot>> {
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key(id))
            .cloned()
    }

    /// Every (project, domain) a run was made in.
    pub(crate) fn projects(&self) -> std::collections::BTreeSet<(String, String)> {
        let slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slots
            .values()
            .map(|s| {
                let e = s.lock();
                (e.id.project.clone(), e.id.domain.clone())
            })
            .collect()
    }

    pub(crate) fn list(&self, project: &str, domain: &str) -> Vec<Arc<RunSlot>> {
        let slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut found: Vec<_> = slots
            .values()
            .filter(|s| {
                let e = s.lock();
                e.id.project == project && e.id.domain == domain
            })
            .cloned()
            .collect();
        found.sort_by_key(|s| s.lock().id.name.clone());
        found
    }

    /// Register a run and start driving it.
    pub(crate) fn create(
        &self,
        id: &RunIdentifier,
        task: &LocalTask,
        retries: u32,
        logs: std::path::PathBuf,
    ) -> Result<Arc<RunSlot>, CreateError> {
        check_label("project", &id.project).map_err(CreateError::Invalid)?;
        check_label("domain", &id.domain).map_err(CreateError::Invalid)?;
        check_run_name(&id.name).map_err(CreateError::Invalid)?;
        check_task(task).map_err(CreateError::Invalid)?;
        if task.argv.is_empty() {
            return Err(CreateError::Invalid("the task has no command".to_owned()));
        }
        let template =
            serde_json::to_vec(&task).map_err(|e| CreateError::Invalid(e.to_string()))?;
        let task_json = String::from_utf8_lossy(&template).into_owned();
        let spec = TaskActionSpec {
            run_name: id.name.clone(),
            project: id.project.clone(),
            domain: id.domain.clone(),
            action_name: ACTION_NAME.to_owned(),
            task_type: TASK_TYPE.to_owned(),
            short_name: task.argv[0].clone(),
            task_template: template,
            env_vars: task.env.clone(),
            input_uri: format!("sandbox://{}/inputs", key(id)),
            run_output_base: format!("sandbox://{}/outputs", key(id)),
            retries,
            cache_key: task.cache_key(id).unwrap_or_default(),
            ..TaskActionSpec::default()
        };
        let object = TaskAction::new(
            id.project.clone(),
            format!("{}-{ACTION_NAME}", id.name),
            spec,
        );
        let slot = Arc::new(RunSlot {
            entry: Mutex::new(RunEntry {
                id: id.clone(),
                object,
                phase: ActionPhase::Queued,
                error: None,
                abort_reason: None,
                process: None,
                ide_link: None,
                debug_server: None,
                groups: self.groups.clone(),
                stopping: Arc::clone(&self.stopping),
                debug: flyte_debug_server::settings::enabled(|k| task.env.get(k).cloned()).then(
                    || DebugRoute {
                        ingress: Arc::clone(&self.ingress),
                        path: format!(
                            "/v1/debug/{}/{}/{}/{ACTION_NAME}",
                            id.project, id.domain, id.name
                        ),
                        // Validated names without '/', nested: one directory per run.
                        state_dir: self
                            .debug_dir
                            .join(&id.project)
                            .join(&id.domain)
                            .join(&id.name),
                    },
                ),
                gone: false,
                store: Arc::clone(&self.store),
                task_json,
                history: Vec::new(),
            }),
            wake: Notify::new(),
        });
        {
            let mut slots = self
                .slots
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if slots.contains_key(&key(id)) {
                return Err(CreateError::AlreadyExists);
            }
            // Saved before anyone can see it, under the lock: the table and the map agree.
            let record = slot.lock().record();
            self.store
                .insert_run(&record, crate::server::now())
                .map_err(|e| CreateError::Store(e.to_string()))?;
            slots.insert(key(id), Arc::clone(&slot));
        }
        tokio::spawn(drive(Arc::clone(&slot), logs));
        Ok(slot)
    }
}

/// Ask the run's action to stop: the reconciler's deletion path aborts and finalizes it.
pub(crate) fn abort(slot: &RunSlot, reason: String) {
    let mut entry = slot.lock();
    if entry.object.metadata.deletion_timestamp.is_none() && !entry.phase.is_terminal() {
        entry.object.metadata.deletion_timestamp = Some(now());
        entry.abort_reason = Some(reason);
        entry.persist();
    }
    drop(entry);
    slot.wake.notify_one();
}

fn config() -> Config {
    let mut config = Config::with_task_types([TASK_TYPE]);
    // Locally there is no API server to spare: check often, so a finished process shows quickly.
    config.requeue_interval = MAX_WAIT;
    config
}

/// The driver loop: one reconciler pass after another until the action is done.
async fn drive(slot: Arc<RunSlot>, logs: std::path::PathBuf) {
    let config = config();
    loop {
        let outcome = {
            let mut entry = slot.lock();
            if entry.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            if entry.gone
                || (entry.object.status.is_terminal()
                    && entry.object.metadata.deletion_timestamp.is_none())
            {
                return;
            }
            let observed = entry.object.clone();
            rc::drive(Some(&observed), now(), &config, |effect| {
                apply(&mut entry, &slot, effect, &logs)
            })
        };
        let wait = match outcome {
            Ok(outcome) => outcome.requeue_after().unwrap_or(MAX_WAIT),
            Err(e) => {
                tracing::warn!(error = %e, "reconciler pass failed");
                MAX_WAIT
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait.min(MAX_WAIT)) => {}
            () = slot.wake.notified() => {}
        }
    }
}

fn write_ok() -> EffectResult {
    WriteResult::Ok.into()
}

fn call_ok() -> EffectResult {
    CallResult::Ok.into()
}

/// Carry out one effect against this run's state and the local processes.
fn apply(
    entry: &mut RunEntry,
    slot: &Arc<RunSlot>,
    effect: Effect,
    logs: &std::path::Path,
) -> EffectResult {
    match effect {
        Effect::AddFinalizer => {
            entry
                .object
                .metadata
                .finalizers
                .push(rc::FINALIZER.to_owned());
            write_ok()
        }
        Effect::RemoveFinalizer => {
            entry
                .object
                .metadata
                .finalizers
                .retain(|f| f != rc::FINALIZER);
            entry.gone = entry.object.metadata.deletion_timestamp.is_some();
            write_ok()
        }
        Effect::PluginHandle(call) => handle(entry, slot, call.attempt, logs).into(),
        Effect::PluginAbort(_) => {
            if let Some(process) = &entry.process
                && process.exit.is_none()
            {
                hang_up(process.pid);
            }
            call_ok()
        }
        Effect::RecordEvent(event) => {
            entry.phase = to_api_phase(event.phase);
            entry.error = event.error.as_ref().map(to_api_error);
            entry.record_event(event.attempt, event.updated_at);
            if entry.phase.is_terminal() {
                close_debug_route(entry);
            }
            entry.persist();
            call_ok()
        }
        Effect::WriteStatus { status, .. } => {
            entry.object.status = (*status).clone();
            entry.object.metadata.resource_version += 1;
            write_ok()
        }
        Effect::ApplyLabels(labels) => {
            entry.object.metadata.labels.extend(labels);
            write_ok()
        }
        // The cache: entries in SQLite, keyed by LocalTask::cache_key; a hit means the run that
        // stored it succeeded, so this one succeeds without running. Tasks are never
        // cache-serializable here, so reservations are always granted.
        Effect::CacheGet { key } => match entry.store.cache_entry(&key) {
            Ok(Some(run)) => rc::CacheLookup::Hit {
                outputs_uri: Some(format!("sandbox://{run}/outputs")),
            },
            Ok(None) => rc::CacheLookup::NotFound,
            Err(e) => rc::CacheLookup::Error(e.to_string()),
        }
        .into(),
        Effect::CacheReserve { .. } => rc::Reservation::Owned.into(),
        Effect::CachePut { key: cache_key, .. } => {
            match entry
                .store
                .put_cache_entry(&cache_key, &key(&entry.id), now().as_millis())
            {
                Ok(true) => rc::CachePutResult::Stored,
                Ok(false) => rc::CachePutResult::AlreadyExists,
                Err(e) => rc::CachePutResult::Error(e.to_string()),
            }
            .into()
        }
        Effect::PluginFinalize(_) | Effect::CacheRelease { .. } | Effect::ObjectEvent(_) => {
            call_ok()
        }
        Effect::Delete => write_ok(),
    }
}

/// The local-process plugin's Handle: start the attempt's process, or report on it.
fn handle(
    entry: &mut RunEntry,
    slot: &Arc<RunSlot>,
    attempt: u32,
    logs: &std::path::Path,
) -> PluginResult {
    let transition =
        |info: PhaseInfo| PluginResult::Transition(PluginTransition { info, state: None });
    match &entry.process {
        Some(process) if process.attempt == attempt => match process.exit {
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
        },
        _ => match start(entry, slot, attempt, logs) {
            Ok(()) => transition(PhaseInfo::new(PluginPhase::Running, "started")),
            Err(StartFailure::Task(message)) => {
                let error = ExecutionError::new(ErrorKind::User, "CommandFailedToStart", message);
                transition(PhaseInfo::failure(PluginPhase::PermanentFailure, error))
            }
            // The machine failed, not the task: the reconciler counts it and starts afresh.
            Err(StartFailure::Machine(message)) => PluginResult::Error(rc::PluginError {
                code: "LocalProcessUnavailable".to_owned(),
                message,
            }),
        },
    }
}

/// Start the debug server of a debug run and publish its route, before the task body runs (as
/// Flyte's entry point does).
fn open_debug_route(entry: &mut RunEntry, task: &LocalTask) -> Result<(), String> {
    let Some(route) = entry.debug.clone() else {
        return Ok(());
    };
    let settings = flyte_debug_server::Settings::from_env(|k| task.env.get(k).cloned())
        .map_err(|e| e.to_string())?;
    let workdir = std::env::current_dir().map_err(|e| e.to_string())?;
    // The server runs in the sandbox's process, not the task's: give sessions the task's
    // environment, as a shell in the task's pod would have.
    let server = flyte_debug_server::DebugServer::new(settings, &route.state_dir, workdir)
        .map_err(|e| e.to_string())?
        .with_task_environment(task.env.clone())
        .with_process_groups(entry.groups.child());
    let base = route
        .ingress
        .base_url
        .get()
        .cloned()
        .ok_or("the sandbox's ingress is not listening")?;
    // The host key is not in the link (flyteidl2's TaskLog has no field for it): the route
    // serves it to token holders (`?ssh-host-key`), as our debug server does in a cluster.
    route.ingress.routes().insert(
        route.path.clone(),
        IngressRoute {
            target: server.target(),
            host_key: server.host_public_key().map_err(|e| e.to_string())?,
        },
    );
    entry.ide_link = Some(core::TaskLog {
        uri: format!("{base}{}", route.path),
        name: "SSH debug (flyte-run)".to_owned(),
        link_type: core::task_log::LinkType::Ide.into(),
        // The server is in this process: it answers as soon as the route exists.
        ready: true,
        ..Default::default()
    });
    entry.debug_server = Some(server);
    Ok(())
}

/// Withdraw a finished debug run's route: nothing answers there any more.
fn close_debug_route(entry: &mut RunEntry) {
    if let Some(route) = &entry.debug {
        route.ingress.routes().remove(&route.path);
    }
    // The run is over: its shells go with it, open connections included.
    if let Some(server) = entry.debug_server.take() {
        server.shutdown();
    }
    if let Some(link) = entry.ide_link.as_mut() {
        link.ready = false;
    }
}

/// Why an attempt's process did not start: the task's fault (a retry would fail the same way)
/// or the machine's (the log cannot be written, no process can be made right now).
enum StartFailure {
    Task(String),
    Machine(String),
}

impl From<String> for StartFailure {
    fn from(message: String) -> Self {
        Self::Task(message)
    }
}

fn start(
    entry: &mut RunEntry,
    slot: &Arc<RunSlot>,
    attempt: u32,
    logs: &std::path::Path,
) -> Result<(), StartFailure> {
    let task: LocalTask =
        serde_json::from_slice(&entry.object.spec.task_template).map_err(|e| e.to_string())?;
    open_debug_route(entry, &task)?;
    let machine = |e: std::io::Error, what: &str| StartFailure::Machine(format!("{what}: {e}"));
    if let Some(dir) = logs.parent() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| machine(e, &format!("cannot create {}", dir.display())))?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(logs)
        .map_err(|e| machine(e, &format!("cannot open the log {}", logs.display())))?;
    let stdout = log
        .try_clone()
        .map_err(|e| machine(e, "cannot share the log"))?;
    let mut child = tokio::process::Command::new(&task.argv[0])
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
    entry.process = Some(Process {
        pid,
        attempt,
        exit: None,
        member: Some(entry.groups.adopt(pid)),
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
    Ok(())
}

/// Stop a task's process group: SIGTERM now, SIGKILL if it is still there a few seconds later.
fn hang_up(pid: u32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    let group = Pid::from_raw(pid);
    let _ = killpg(group, Signal::SIGTERM);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let _ = killpg(group, Signal::SIGKILL);
    });
}
