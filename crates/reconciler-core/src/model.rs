//! The TaskAction resource (`flyte.org/v1`, namespaced, with a status subresource): spec,
//! status, phases, conditions, errors, and the plugin-phase mapping table.

use std::collections::BTreeMap;
use std::fmt;

use crate::config::FINALIZER;
use crate::time::Timestamp;

/// A TaskAction as the driver observed it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskAction {
    /// The Kubernetes-style object metadata the reconciler reads.
    pub metadata: ObjectMeta,
    /// What to run.
    pub spec: TaskActionSpec,
    /// What the reconciler recorded so far.
    pub status: TaskActionStatus,
}

/// The parts of object metadata the reconciler reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Namespace of the object.
    pub namespace: String,
    /// Name of the object.
    pub name: String,
    /// Optimistic-concurrency token; status writes carry it back as a precondition.
    pub resource_version: u64,
    /// Labels, including the terminal labels the reconciler sets.
    pub labels: BTreeMap<String, String>,
    /// Finalizers, including [`FINALIZER`] once the reconciler has claimed the object.
    pub finalizers: Vec<String>,
    /// Set once deletion was requested; the object stays until its finalizers are gone.
    pub deletion_timestamp: Option<Timestamp>,
}

/// Whether the action runs a task through a plugin or waits on a condition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ActionType {
    /// Run a task through the plugin for its task type (the default; an empty type means task).
    #[default]
    Task,
    /// Wait for a signal or a deadline; no plugin, no finalizer.
    Condition,
}

/// What a condition action waits for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConditionSpec {
    /// Name of the condition; required.
    pub name: String,
    /// When waiting stops and the action times out; `None` waits forever.
    pub deadline: Option<Timestamp>,
    /// The value delivered by the signal, once it arrived.
    pub signal: Option<String>,
}

/// What to run. Field limits follow the CRD: `run_name` and `action_name` at most 30
/// characters, `project`, `domain` and `task_type` at most 63, `cache_key` at most 256.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskActionSpec {
    /// Name of the run; required.
    pub run_name: String,
    /// Project; required.
    pub project: String,
    /// Domain; required.
    pub domain: String,
    /// Name of this action within the run; required.
    pub action_name: String,
    /// The parent action, if this action was started by another one.
    pub parent_action_name: Option<String>,
    /// Task or condition.
    pub action_type: ActionType,
    /// What a condition action waits for (condition actions only).
    pub condition: Option<ConditionSpec>,
    /// Where the inputs are; required for tasks.
    pub input_uri: String,
    /// Prefix under which the run's outputs are written; required for tasks.
    pub run_output_base: String,
    /// Cache key; empty means the task is not cacheable.
    pub cache_key: String,
    /// Whether concurrent runs of the same cache key take turns through a cache reservation
    /// (decoded from the task template's metadata by the driver).
    pub cache_serializable: bool,
    /// Task type, which selects the plugin; required for tasks.
    pub task_type: String,
    /// Display name.
    pub short_name: String,
    /// The serialized task template, opaque here; required for tasks.
    pub task_template: Vec<u8>,
    /// Environment variables for the task.
    pub env_vars: BTreeMap<String, String>,
    /// Whether the task may run on interruptible capacity.
    pub interruptible: bool,
    /// Group the action belongs to, for display.
    pub group: String,
    /// User retries after the first attempt (decoded from the task template's retry strategy);
    /// the task gets `retries + 1` attempts.
    pub retries: u32,
}

/// The opaque state a plugin keeps between calls, with its version.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PluginState {
    /// Plugin-defined bytes.
    pub bytes: Vec<u8>,
    /// Plugin-defined version of the encoding.
    pub version: u32,
}

/// What the reconciler recorded about a TaskAction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskActionStatus {
    /// The plugin's state after its last call.
    pub plugin_state: PluginState,
    /// The plugin's last reported phase; `None` before the first call or after a restart.
    pub plugin_phase: Option<PluginPhase>,
    /// Version of the plugin phase, bumped by the plugin for updates within one phase.
    pub plugin_phase_version: u32,
    /// The current attempt, starting at 1 (0 in a status never written means 1).
    pub attempts: u32,
    /// Consecutive system failures; reset by any other plugin outcome.
    pub system_failures: u32,
    /// What the cache did for this action.
    pub cache_status: CacheStatus,
    /// `Progressing`, `Succeeded` and `Failed`.
    pub conditions: Vec<Condition>,
    /// Action phases in order, never the same phase twice in a row.
    pub phase_history: Vec<PhaseTransition>,
    /// Why the action failed, once it failed permanently.
    pub error: Option<ExecutionError>,
}

/// One entry of the phase history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhaseTransition {
    /// The phase entered.
    pub phase: ActionPhase,
    /// When it was entered.
    pub occurred_at: Timestamp,
    /// Why, in words.
    pub message: String,
}

/// The action phase reported to the control plane (flyteidl2 `ActionPhase`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ActionPhase {
    /// Accepted, not started.
    Queued,
    /// Waiting for resources or for another action's cache reservation.
    WaitingForResources,
    /// Starting.
    Initializing,
    /// Running (or, for a condition, waiting for its signal).
    Running,
    /// Done, successfully.
    Succeeded,
    /// Failed (terminal only when the `Failed` condition is true).
    Failed,
    /// Stopped from outside.
    Aborted,
    /// A condition's deadline passed.
    TimedOut,
}

impl ActionPhase {
    /// The flyteidl2 name, e.g. `WAITING_FOR_RESOURCES`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "QUEUED",
            Self::WaitingForResources => "WAITING_FOR_RESOURCES",
            Self::Initializing => "INITIALIZING",
            Self::Running => "RUNNING",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
            Self::Aborted => "ABORTED",
            Self::TimedOut => "TIMED_OUT",
        }
    }
}

impl fmt::Display for ActionPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A phase reported by a plugin (Flyte's `pluginsCore.Phase`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PluginPhase {
    /// The plugin cannot start the task yet.
    NotReady,
    /// Submitted, not started.
    Queued,
    /// Waiting for quota or capacity.
    WaitingForResources,
    /// Waiting for another action holding the cache reservation.
    WaitingForCache,
    /// Starting.
    Initializing,
    /// Running.
    Running,
    /// Finished successfully; outputs are written.
    Success,
    /// Failed; another try may succeed.
    RetryableFailure,
    /// Failed; no retry will help.
    PermanentFailure,
    /// Stopped from outside.
    Aborted,
}

impl PluginPhase {
    /// Whether the plugin got as far as starting the task. Before that the cache may still
    /// short-circuit the run.
    pub const fn has_started(self) -> bool {
        !matches!(
            self,
            Self::NotReady | Self::Queued | Self::WaitingForResources | Self::WaitingForCache
        )
    }

    /// Whether the task finished, one way or another (the moment to settle the cache).
    pub const fn is_finished(self) -> bool {
        matches!(
            self,
            Self::Success | Self::RetryableFailure | Self::PermanentFailure | Self::Aborted
        )
    }
}

/// What the cache did for an action (flyteidl `CatalogCacheStatus`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CacheStatus {
    /// The task is not cacheable.
    #[default]
    Disabled,
    /// Looked up, not found.
    Miss,
    /// Outputs came from the cache; the plugin was not called.
    Hit,
    /// Outputs were stored in the cache (or were already there).
    Populated,
    /// The lookup failed; the task ran anyway.
    LookupFailure,
    /// Storing the outputs failed; the action still succeeded.
    PutFailure,
}

impl CacheStatus {
    /// The flyteidl name, e.g. `CACHE_HIT`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Disabled => "CACHE_DISABLED",
            Self::Miss => "CACHE_MISS",
            Self::Hit => "CACHE_HIT",
            Self::Populated => "CACHE_POPULATED",
            Self::LookupFailure => "CACHE_LOOKUP_FAILURE",
            Self::PutFailure => "CACHE_PUT_FAILURE",
        }
    }
}

/// Which condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConditionType {
    /// True while the action moves towards an end.
    Progressing,
    /// True once the action succeeded (terminal).
    Succeeded,
    /// True once the action failed (terminal).
    Failed,
}

/// Why a condition has its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Waiting to start.
    Queued,
    /// Starting.
    Initializing,
    /// Running.
    Executing,
    /// Finished successfully.
    Completed,
    /// An attempt failed; another one follows.
    RetryableFailure,
    /// Failed for good.
    PermanentFailure,
    /// Stopped from outside.
    Aborted,
    /// No plugin for the task type.
    PluginNotFound,
    /// The spec is missing required fields or breaks a limit.
    InvalidSpec,
    /// A condition waits for its signal.
    Paused,
    /// A condition received its signal.
    Signaled,
    /// A condition's deadline passed.
    TimedOut,
}

impl Reason {
    /// The name used in the condition's `reason` field.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "Queued",
            Self::Initializing => "Initializing",
            Self::Executing => "Executing",
            Self::Completed => "Completed",
            Self::RetryableFailure => "RetryableFailure",
            Self::PermanentFailure => "PermanentFailure",
            Self::Aborted => "Aborted",
            Self::PluginNotFound => "PluginNotFound",
            Self::InvalidSpec => "InvalidSpec",
            Self::Paused => "Paused",
            Self::Signaled => "Signaled",
            Self::TimedOut => "TimedOut",
        }
    }
}

/// One status condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    /// Which condition.
    pub kind: ConditionType,
    /// Its value.
    pub status: bool,
    /// Why.
    pub reason: Reason,
    /// Details, in words.
    pub message: String,
    /// When `status` last changed.
    pub last_transition_time: Timestamp,
}

/// Whose fault a failure is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The task's code or spec.
    #[default]
    User,
    /// The platform.
    System,
}

impl ErrorKind {
    /// The flyteidl name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::User => "USER",
            Self::System => "SYSTEM",
        }
    }
}

/// A failure, as recorded in the status and sent in action events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecutionError {
    /// Machine-readable code, e.g. [`crate::MAX_RETRIES_EXCEEDED`].
    pub code: String,
    /// Whose fault.
    pub kind: ErrorKind,
    /// Details, in words.
    pub message: String,
}

impl ExecutionError {
    /// An error of the given kind.
    pub fn new(kind: ErrorKind, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            kind,
            message: message.into(),
        }
    }
}

/// Where an action stands, as the conditions express it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Standing {
    /// `Progressing=True` with this reason.
    Progressing(Reason),
    /// `Succeeded=True` (and `Progressing=False`) with this reason.
    Succeeded(Reason),
    /// `Failed=True` (and `Progressing=False`) with this reason.
    Failed(Reason),
}

impl Standing {
    /// Whether this standing ends the action.
    pub const fn is_terminal(self) -> bool {
        !matches!(self, Self::Progressing(_))
    }
}

/// The mapping table from a plugin phase to the action phase and the conditions.
///
/// | plugin phase | standing | action phase |
/// |---|---|---|
/// | `NotReady`, `Queued` | Progressing(Queued) | QUEUED |
/// | `WaitingForResources`, `WaitingForCache` | Progressing(Queued) | `WAITING_FOR_RESOURCES` |
/// | `Initializing` | Progressing(Initializing) | INITIALIZING |
/// | `Running` | Progressing(Executing) | RUNNING |
/// | `Success` | Succeeded(Completed) | SUCCEEDED |
/// | `RetryableFailure` | Progressing(RetryableFailure) | FAILED |
/// | `PermanentFailure` | Failed(PermanentFailure) | FAILED |
/// | `Aborted` | Failed(Aborted) | ABORTED |
pub const fn map_plugin_phase(phase: PluginPhase) -> (ActionPhase, Standing) {
    match phase {
        PluginPhase::NotReady | PluginPhase::Queued => {
            (ActionPhase::Queued, Standing::Progressing(Reason::Queued))
        }
        PluginPhase::WaitingForResources | PluginPhase::WaitingForCache => (
            ActionPhase::WaitingForResources,
            Standing::Progressing(Reason::Queued),
        ),
        PluginPhase::Initializing => (
            ActionPhase::Initializing,
            Standing::Progressing(Reason::Initializing),
        ),
        PluginPhase::Running => (
            ActionPhase::Running,
            Standing::Progressing(Reason::Executing),
        ),
        PluginPhase::Success => (
            ActionPhase::Succeeded,
            Standing::Succeeded(Reason::Completed),
        ),
        PluginPhase::RetryableFailure => (
            ActionPhase::Failed,
            Standing::Progressing(Reason::RetryableFailure),
        ),
        PluginPhase::PermanentFailure => (
            ActionPhase::Failed,
            Standing::Failed(Reason::PermanentFailure),
        ),
        PluginPhase::Aborted => (ActionPhase::Aborted, Standing::Failed(Reason::Aborted)),
    }
}

impl TaskAction {
    /// A fresh object with an empty status.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        spec: TaskActionSpec,
    ) -> Self {
        Self {
            metadata: ObjectMeta {
                namespace: namespace.into(),
                name: name.into(),
                ..ObjectMeta::default()
            },
            spec,
            status: TaskActionStatus::default(),
        }
    }

    /// Whether the reconciler's finalizer is on the object.
    pub fn has_finalizer(&self) -> bool {
        self.metadata.finalizers.iter().any(|f| f == FINALIZER)
    }

    /// Whether deletion was requested.
    pub fn is_being_deleted(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }

    /// Who holds this action's cache reservation: `namespace/name`.
    pub fn reservation_owner(&self) -> String {
        format!("{}/{}", self.metadata.namespace, self.metadata.name)
    }
}

const MAX_NAME_LEN: usize = 30;
const MAX_SCOPE_LEN: usize = 63;
const MAX_CACHE_KEY_LEN: usize = 256;

impl TaskActionSpec {
    /// Attempts the task gets: the first one plus its retries.
    pub fn max_attempts(&self) -> u32 {
        self.retries.saturating_add(1)
    }

    /// Whether the task's outputs are cached.
    pub fn is_cacheable(&self) -> bool {
        !self.cache_key.is_empty()
    }

    /// Whether running the task requires holding the cache reservation for its key.
    pub fn takes_reservation(&self) -> bool {
        self.is_cacheable() && self.cache_serializable
    }

    /// Why the spec cannot run as a task, or `None` if it can.
    pub fn task_spec_problems(&self) -> Option<String> {
        let mut problems = self.identity_problems();
        for (field, value) in [
            ("taskType", self.task_type.as_str()),
            ("inputUri", self.input_uri.as_str()),
            ("runOutputBase", self.run_output_base.as_str()),
        ] {
            if value.is_empty() {
                problems.push(format!("{field} is empty"));
            }
        }
        if self.task_template.is_empty() {
            problems.push("taskTemplate is empty".to_owned());
        }
        check_len(&mut problems, "taskType", &self.task_type, MAX_SCOPE_LEN);
        check_len(
            &mut problems,
            "cacheKey",
            &self.cache_key,
            MAX_CACHE_KEY_LEN,
        );
        join(&problems)
    }

    /// Why the spec cannot run as a condition, or `None` if it can.
    pub fn condition_spec_problems(&self) -> Option<String> {
        let mut problems = self.identity_problems();
        match &self.condition {
            None => problems.push("conditionSpec is missing".to_owned()),
            Some(condition) if condition.name.is_empty() => {
                problems.push("conditionSpec.name is empty".to_owned());
            }
            Some(_) => {}
        }
        join(&problems)
    }

    /// Problems with the fields every action needs.
    fn identity_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (field, value, limit) in [
            ("runName", &self.run_name, MAX_NAME_LEN),
            ("project", &self.project, MAX_SCOPE_LEN),
            ("domain", &self.domain, MAX_SCOPE_LEN),
            ("actionName", &self.action_name, MAX_NAME_LEN),
        ] {
            if value.is_empty() {
                problems.push(format!("{field} is empty"));
            }
            check_len(&mut problems, field, value, limit);
        }
        problems
    }
}

fn check_len(problems: &mut Vec<String>, field: &str, value: &str, limit: usize) {
    let len = value.chars().count();
    if len > limit {
        problems.push(format!("{field} has {len} characters, more than {limit}"));
    }
}

fn join(problems: &[String]) -> Option<String> {
    (!problems.is_empty()).then(|| problems.join("; "))
}

impl TaskActionStatus {
    /// The current action phase: the last entry of the phase history.
    pub fn phase(&self) -> Option<ActionPhase> {
        self.phase_history.last().map(|entry| entry.phase)
    }

    /// The current attempt, at least 1.
    pub fn attempt(&self) -> u32 {
        self.attempts.max(1)
    }

    /// The condition of this kind, if set.
    pub fn condition(&self, kind: ConditionType) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.kind == kind)
    }

    /// Whether the action ended: `Succeeded` or `Failed` is true.
    pub fn is_terminal(&self) -> bool {
        self.conditions
            .iter()
            .any(|c| c.status && matches!(c.kind, ConditionType::Succeeded | ConditionType::Failed))
    }

    /// When the action ended: the time of its last phase change, if it is terminal.
    pub fn completed_at(&self) -> Option<Timestamp> {
        if self.is_terminal() {
            self.phase_history.last().map(|entry| entry.occurred_at)
        } else {
            None
        }
    }

    /// Enters `phase`; does nothing if it is already the current phase, so the history never
    /// holds the same phase twice in a row.
    pub(crate) fn enter_phase(&mut self, phase: ActionPhase, at: Timestamp, message: &str) {
        if self.phase() != Some(phase) {
            self.phase_history.push(PhaseTransition {
                phase,
                occurred_at: at,
                message: message.to_owned(),
            });
        }
    }

    /// Sets the conditions for `standing`.
    pub(crate) fn set_standing(&mut self, standing: Standing, message: &str, at: Timestamp) {
        match standing {
            Standing::Progressing(reason) => {
                self.set_condition(ConditionType::Progressing, true, reason, message, at);
            }
            Standing::Succeeded(reason) => {
                self.set_condition(ConditionType::Progressing, false, reason, message, at);
                self.set_condition(ConditionType::Succeeded, true, reason, message, at);
            }
            Standing::Failed(reason) => {
                self.set_condition(ConditionType::Progressing, false, reason, message, at);
                self.set_condition(ConditionType::Failed, true, reason, message, at);
            }
        }
    }

    fn set_condition(
        &mut self,
        kind: ConditionType,
        status: bool,
        reason: Reason,
        message: &str,
        at: Timestamp,
    ) {
        if let Some(condition) = self.conditions.iter_mut().find(|c| c.kind == kind) {
            // Kubernetes convention: the transition time moves only when the value flips.
            if condition.status != status {
                condition.status = status;
                condition.last_transition_time = at;
            }
            condition.reason = reason;
            if condition.message != message {
                message.clone_into(&mut condition.message);
            }
        } else {
            self.conditions.push(Condition {
                kind,
                status,
                reason,
                message: message.to_owned(),
                last_transition_time: at,
            });
        }
    }
}
