//! A run as the API shows it: its TaskAction, phase, error, attempts and task, and the
//! mapping of all that to flyteidl2's `ActionDetails` (generated types, so nothing Flyte does not
//! define can be built). Persisted to the store on every change.

use std::collections::BTreeMap;
use std::sync::Arc;

use buffa::{EnumValue, MessageField};
use buffa_types::google::protobuf::Timestamp as ProtoTimestamp;
use flyte_api::ActionPhaseExt;
use flyte_idl::flyteidl2::common::{ActionIdentifier, ActionPhase, RunIdentifier};
use flyte_idl::flyteidl2::{core, task, workflow};
use flyte_reconciler_core::{self as rc, ErrorKind, ExecutionError, TaskAction};

use super::{ACTION_NAME, ingress::DebugRoute, plugin::Process};

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
    pub(super) fn cache_key(&self, id: &RunIdentifier) -> Option<String> {
        use sha2::{Digest, Sha256};
        let version = self.cache_version.as_ref()?;
        let identity = serde_json::json!([id.project, id.domain, self.argv, self.env, version]);
        Some(hex::encode(Sha256::digest(identity.to_string().as_bytes())))
    }
}

/// A run and everything the API shows of it.
#[derive(Debug)]
pub(crate) struct RunEntry {
    pub(crate) id: RunIdentifier,
    pub(super) object: TaskAction,
    /// The last phase announced by an action event.
    pub(crate) phase: ActionPhase,
    pub(crate) error: Option<workflow::ErrorInfo>,
    pub(crate) abort_reason: Option<String>,
    pub(super) process: Option<Process>,
    /// The debug route of a debug run, once its server is up.
    pub(super) ide_link: Option<core::TaskLog>,
    pub(super) debug: Option<DebugRoute>,
    /// The debug run's server, while its route is open: ended with the run.
    pub(super) debug_server: Option<flyte_debug_server::DebugServer>,
    /// Every process group of this sandbox (tasks and debug sessions).
    pub(super) groups: flyte_reaper::Groups,
    /// Set when the sandbox shuts down: drivers stop, nothing is blamed on the task.
    pub(super) stopping: Arc<std::sync::atomic::AtomicBool>,
    pub(super) store: Arc<crate::store::Store>,
    pub(super) task_json: String,
    /// Every phase the attempts entered, oldest first (also in the store).
    pub(super) history: Vec<crate::store::EventRecord>,
    /// The object's finalizer was removed after deletion: the reconciler is done with it.
    pub(super) gone: bool,
    /// Store writes made while the entry was locked, carried out once it is released
    /// ([`Self::take_writes`]): a request handler never waits for the disk.
    pub(super) pending: Vec<StoreWrite>,
}

/// A write to the store, queued under the entry's lock.
#[derive(Debug)]
pub(super) enum StoreWrite {
    Run(crate::store::RunRecord),
    Event(crate::store::EventRecord),
}

/// The writes of one run, taken from under its lock.
#[derive(Debug)]
#[must_use = "the writes are lost unless flushed"]
pub(super) struct PendingWrites {
    id: RunIdentifier,
    store: Arc<crate::store::Store>,
    writes: Vec<StoreWrite>,
}

impl PendingWrites {
    /// Carry the writes out in order. A failed write is logged, not fatal: the run goes on, the
    /// next change writes the run again (an event lost leaves a line out of the history).
    pub(super) fn flush(self) {
        let run = (
            self.id.project.as_str(),
            self.id.domain.as_str(),
            self.id.name.as_str(),
        );
        for write in self.writes {
            // Not the record itself: its task holds the task's environment, which may hold
            // secrets.
            let (result, what) = match &write {
                StoreWrite::Run(record) => (self.store.update_run(record), "the run"),
                StoreWrite::Event(event) => {
                    (self.store.append_event(run, event), "an action event")
                }
            };
            if let Err(e) = result {
                tracing::error!(run = %self.id.name, error = %e, "cannot save {what}");
            }
        }
    }
}

impl RunEntry {
    /// Save what the API shows of this run (queued: see [`Self::take_writes`]).
    pub(super) fn persist(&mut self) {
        let record = self.record();
        self.pending.push(StoreWrite::Run(record));
    }

    /// The writes queued under the lock, to carry out once it is released.
    pub(super) fn take_writes(&mut self) -> PendingWrites {
        PendingWrites {
            id: self.id.clone(),
            store: Arc::clone(&self.store),
            writes: std::mem::take(&mut self.pending),
        }
    }

    /// Note a phase an attempt entered, here and (queued) in the store.
    pub(super) fn record_event(&mut self, attempt: u32, at: rc::Timestamp) {
        let event = crate::store::EventRecord {
            attempt,
            phase: buffa::Enumeration::proto_name(&self.phase).to_owned(),
            error_json: self
                .error
                .as_ref()
                .and_then(|e| serde_json::to_string(e).ok()),
            occurred_at_ms: at.as_millis(),
        };
        self.pending.push(StoreWrite::Event(event.clone()));
        self.history.push(event);
    }

    /// The task as a flyteidl2 container spec: its command and (merged) environment, so a client
    /// can launch it again, e.g. in debug mode.
    pub(super) fn task_spec(&self) -> Option<task::TaskSpec> {
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
    pub(super) fn attempts(&self) -> Vec<workflow::ActionAttempt> {
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

    pub(super) fn record(&self) -> crate::store::RunRecord {
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

pub(super) fn to_api_phase(phase: rc::ActionPhase) -> ActionPhase {
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

pub(super) fn to_api_error(error: &ExecutionError) -> workflow::ErrorInfo {
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
pub(super) fn system_error(message: &str, code: &str) -> workflow::ErrorInfo {
    workflow::ErrorInfo {
        message: message.to_owned(),
        kind: workflow::error_info::Kind::System.into(),
        code: code.to_owned(),
        ..Default::default()
    }
}

/// A phase as the store keeps it (its proto name); an unknown name reads as unspecified.
pub(super) fn stored_phase(name: &str) -> ActionPhase {
    <ActionPhase as buffa::Enumeration>::from_proto_name(name).unwrap_or(ActionPhase::Unspecified)
}

/// Milliseconds since the epoch as a protobuf timestamp.
pub(super) fn timestamp(ms: i64) -> ProtoTimestamp {
    let nanos = i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0);
    ProtoTimestamp::from_unix(ms.div_euclid(1000), nanos)
}
