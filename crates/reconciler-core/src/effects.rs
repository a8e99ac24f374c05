//! Effects the machine asks for, the results the driver feeds back, and how a pass ends.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::model::{
    ActionPhase, CacheStatus, ErrorKind, ExecutionError, PluginPhase, PluginState, TaskActionStatus,
};
use crate::time::Timestamp;

/// One thing the driver must do, then answer with an [`EffectResult`] of the kind named on
/// each variant. Effects apply to the object the pass was started with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Add [`crate::FINALIZER`] to the object. Answer: [`WriteResult`].
    AddFinalizer,
    /// Remove [`crate::FINALIZER`] from the object. Answer: [`WriteResult`].
    RemoveFinalizer,
    /// Call the plugin's `Handle`. Answer: [`PluginResult`].
    PluginHandle(PluginCall),
    /// Call the plugin's `Abort`: stop whatever runs for this attempt. Answer: [`CallResult`].
    PluginAbort(PluginCall),
    /// Call the plugin's `Finalize`: release everything the plugin holds for the action.
    /// Answer: [`CallResult`].
    PluginFinalize(PluginCall),
    /// Look the outputs up in the cache; on a hit the driver copies them to the action's
    /// output location before answering. Answer: [`CacheLookup`].
    CacheGet {
        /// The cache key.
        key: String,
    },
    /// Take (or extend) the reservation that serializes runs of one cache key.
    /// Answer: [`Reservation`].
    CacheReserve {
        /// The cache key.
        key: String,
        /// Who asks: `namespace/name`.
        owner: String,
        /// How often the owner will renew it; the cache may expire it after missing a few.
        heartbeat: Duration,
    },
    /// Store the task's outputs in the cache. Answer: [`CachePutResult`].
    CachePut {
        /// The cache key.
        key: String,
        /// Where the plugin says it wrote the outputs, if it said.
        outputs_uri: Option<String>,
    },
    /// Release the reservation if `owner` holds it (a no-op otherwise). Answer: [`CallResult`].
    CacheRelease {
        /// The cache key.
        key: String,
        /// The releasing owner: `namespace/name`.
        owner: String,
    },
    /// Send an action event to the control plane (at least once; it deduplicates).
    /// Answer: [`CallResult`]; a failure stops the pass before the status is written.
    RecordEvent(Box<ActionEvent>),
    /// Record a Kubernetes-style event on the object. Best effort. Answer: [`CallResult`].
    ObjectEvent(ObjectEvent),
    /// Replace the status, if the object is still at `resource_version`. Answer: [`WriteResult`].
    WriteStatus {
        /// The new status (shared, so that re-sending a failed write costs no copy).
        status: Arc<TaskActionStatus>,
        /// The version the status was computed from (optimistic concurrency).
        resource_version: u64,
    },
    /// Set these labels (merge; other labels stay). Answer: [`WriteResult`].
    ApplyLabels(Vec<(String, String)>),
    /// Delete the object (its time-to-live ran out). Answer: [`WriteResult`].
    Delete,
}

/// The variant of an [`Effect`], without its data; each name is the [`Effect`] variant of the
/// same name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EffectKind {
    AddFinalizer,
    RemoveFinalizer,
    PluginHandle,
    PluginAbort,
    PluginFinalize,
    CacheGet,
    CacheReserve,
    CachePut,
    CacheRelease,
    RecordEvent,
    ObjectEvent,
    WriteStatus,
    ApplyLabels,
    Delete,
}

impl Effect {
    /// Which effect this is.
    pub const fn kind(&self) -> EffectKind {
        match self {
            Self::AddFinalizer => EffectKind::AddFinalizer,
            Self::RemoveFinalizer => EffectKind::RemoveFinalizer,
            Self::PluginHandle(_) => EffectKind::PluginHandle,
            Self::PluginAbort(_) => EffectKind::PluginAbort,
            Self::PluginFinalize(_) => EffectKind::PluginFinalize,
            Self::CacheGet { .. } => EffectKind::CacheGet,
            Self::CacheReserve { .. } => EffectKind::CacheReserve,
            Self::CachePut { .. } => EffectKind::CachePut,
            Self::CacheRelease { .. } => EffectKind::CacheRelease,
            Self::RecordEvent(_) => EffectKind::RecordEvent,
            Self::ObjectEvent(_) => EffectKind::ObjectEvent,
            Self::WriteStatus { .. } => EffectKind::WriteStatus,
            Self::ApplyLabels(_) => EffectKind::ApplyLabels,
            Self::Delete => EffectKind::Delete,
        }
    }
}

impl EffectKind {
    /// Whether `result` is the kind of answer this effect expects.
    pub const fn accepts(self, result: &EffectResult) -> bool {
        match self {
            Self::AddFinalizer
            | Self::RemoveFinalizer
            | Self::WriteStatus
            | Self::ApplyLabels
            | Self::Delete => matches!(result, EffectResult::Write(_)),
            Self::PluginAbort
            | Self::PluginFinalize
            | Self::CacheRelease
            | Self::RecordEvent
            | Self::ObjectEvent => matches!(result, EffectResult::Call(_)),
            Self::PluginHandle => matches!(result, EffectResult::Plugin(_)),
            Self::CacheGet => matches!(result, EffectResult::CacheLookup(_)),
            Self::CacheReserve => matches!(result, EffectResult::Reservation(_)),
            Self::CachePut => matches!(result, EffectResult::CachePut(_)),
        }
    }
}

impl fmt::Display for EffectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What a plugin call needs besides the object itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PluginCall {
    /// The attempt the call is about.
    pub attempt: u32,
    /// The plugin's state from its last call for this attempt.
    pub state: PluginState,
}

/// A Kubernetes-style event about the object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectEvent {
    /// Normal or warning.
    pub severity: Severity,
    /// Short machine-readable reason, e.g. `SystemError`.
    pub reason: &'static str,
    /// Details, in words.
    pub message: String,
}

/// How serious an [`ObjectEvent`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Severity {
    /// For information.
    Normal,
    /// Something went wrong.
    Warning,
}

/// Identifies a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct RunId {
    /// Project.
    pub project: String,
    /// Domain.
    pub domain: String,
    /// Run name.
    pub name: String,
}

/// Identifies an action within a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ActionId {
    /// The run.
    pub run: RunId,
    /// The action's name.
    pub name: String,
}

/// A log link a plugin reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLink {
    /// Display name.
    pub name: String,
    /// Where the logs are.
    pub uri: String,
}

/// What the control plane learns about an action. Delivered at least once; the receiver
/// deduplicates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionEvent {
    /// Which action.
    pub id: ActionId,
    /// Which attempt.
    pub attempt: u32,
    /// The phase entered.
    pub phase: ActionPhase,
    /// The plugin's phase version, for updates within one phase.
    pub version: u32,
    /// When the phase was entered (the last phase-history entry).
    pub updated_at: Timestamp,
    /// Why the attempt or the action failed.
    pub error: Option<ExecutionError>,
    /// Where the outputs are, once known.
    pub outputs_uri: Option<String>,
    /// Log links from the plugin.
    pub log_links: Vec<LogLink>,
    /// What the cache did.
    pub cache_status: CacheStatus,
}

/// What a plugin reports about the task (Flyte's `PhaseInfo`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhaseInfo {
    /// The plugin phase.
    pub phase: PluginPhase,
    /// Version within the phase.
    pub version: u32,
    /// Why, in words.
    pub reason: String,
    /// The failure, for failure phases.
    pub error: Option<ExecutionError>,
    /// Where the outputs were written, on success.
    pub outputs_uri: Option<String>,
    /// Log links.
    pub logs: Vec<LogLink>,
}

impl PhaseInfo {
    /// A phase with no details.
    pub fn new(phase: PluginPhase, reason: impl Into<String>) -> Self {
        Self {
            phase,
            version: 0,
            reason: reason.into(),
            error: None,
            outputs_uri: None,
            logs: Vec::new(),
        }
    }

    /// A failure phase carrying its error.
    pub fn failure(phase: PluginPhase, error: ExecutionError) -> Self {
        Self {
            reason: error.message.clone(),
            error: Some(error),
            ..Self::new(phase, String::new())
        }
    }

    /// The error of a failure phase, or a generic one naming the phase if the plugin gave none.
    pub(crate) fn error_or_default(&self) -> ExecutionError {
        self.error.clone().unwrap_or_else(|| {
            ExecutionError::new(ErrorKind::User, format!("{:?}", self.phase), &self.reason)
        })
    }
}

/// The answer to [`Effect::PluginHandle`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PluginResult {
    /// The plugin reported a phase, and possibly new state.
    Transition(PluginTransition),
    /// The call itself failed: a system error.
    Error(PluginError),
}

/// A phase reported by the plugin, with its new state (`None` keeps the old state).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginTransition {
    /// The reported phase.
    pub info: PhaseInfo,
    /// The plugin's new state, if it changed.
    pub state: Option<PluginState>,
}

/// A failed plugin call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginError {
    /// Machine-readable code; see [`crate::Config::non_retryable_codes`].
    pub code: String,
    /// Details, in words.
    pub message: String,
}

/// The answer to [`Effect::CacheGet`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheLookup {
    /// Found; the outputs were copied to the action's output location.
    Hit {
        /// Where the outputs now are.
        outputs_uri: Option<String>,
    },
    /// Not in the cache.
    NotFound,
    /// The lookup failed; the task runs anyway.
    Error(String),
}

/// The answer to [`Effect::CacheReserve`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reservation {
    /// The asking owner holds the reservation.
    Owned,
    /// Another owner holds it.
    HeldBy(String),
    /// The reservation service failed; the task runs anyway.
    Error(String),
}

/// The answer to [`Effect::CachePut`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CachePutResult {
    /// Stored.
    Stored,
    /// Someone stored outputs for this key first; as good as stored.
    AlreadyExists,
    /// Storing failed.
    Error(String),
}

/// The answer to an effect that writes the object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteResult {
    /// Written.
    Ok,
    /// The object changed since it was observed; nothing was written.
    Conflict,
    /// The write failed (or its outcome is unknown).
    Failed(String),
}

/// The answer to an effect that calls a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallResult {
    /// Done.
    Ok,
    /// The call failed.
    Failed(String),
}

impl<E: fmt::Display> From<Result<(), E>> for CallResult {
    fn from(result: Result<(), E>) -> Self {
        match result {
            Ok(()) => Self::Ok,
            Err(error) => Self::Failed(error.to_string()),
        }
    }
}

/// Any effect's answer; each effect names the variant it expects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EffectResult {
    /// For writes to the object.
    Write(WriteResult),
    /// For calls without a payload.
    Call(CallResult),
    /// For [`Effect::PluginHandle`].
    Plugin(PluginResult),
    /// For [`Effect::CacheGet`].
    CacheLookup(CacheLookup),
    /// For [`Effect::CacheReserve`].
    Reservation(Reservation),
    /// For [`Effect::CachePut`].
    CachePut(CachePutResult),
}

impl EffectResult {
    /// The variant's name, for error messages.
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Write(_) => "Write",
            Self::Call(_) => "Call",
            Self::Plugin(_) => "Plugin",
            Self::CacheLookup(_) => "CacheLookup",
            Self::Reservation(_) => "Reservation",
            Self::CachePut(_) => "CachePut",
        }
    }
}

macro_rules! effect_result_from {
    ($($variant:ident($ty:ty)),* $(,)?) => {$(
        impl From<$ty> for EffectResult {
            fn from(result: $ty) -> Self {
                Self::$variant(result)
            }
        }
    )*};
}

effect_result_from!(
    Write(WriteResult),
    Call(CallResult),
    Plugin(PluginResult),
    CacheLookup(CacheLookup),
    Reservation(Reservation),
    CachePut(CachePutResult),
);

/// How a pass ended: when the driver should run the next one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to do until the object changes (or, for terminated actions, the next GC sweep).
    Idle,
    /// Run the next pass after this long, even if nothing changes.
    RequeueAfter(Duration),
    /// An effect failed, so the pass stopped before committing; run a pass again after
    /// `after`. The error is here to be logged or returned, never to be dropped.
    Retry {
        /// When to retry (zero after a conflict: re-read and go again).
        after: Duration,
        /// What failed.
        error: Error,
    },
}

impl Outcome {
    /// When the driver should run the next pass, if at all.
    pub fn requeue_after(&self) -> Option<Duration> {
        match self {
            Self::Idle => None,
            Self::RequeueAfter(after) | Self::Retry { after, .. } => Some(*after),
        }
    }
}

/// What the machine wants next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Execute this effect and pass its result to [`crate::Pass::resume`].
    Run(Effect),
    /// The pass is over.
    Done(Outcome),
}
