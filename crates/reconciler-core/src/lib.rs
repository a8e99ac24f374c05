//! The TaskAction reconciler of Flyte 2 as a pure state machine: no I/O, no clock, no async.
//!
//! # Model
//!
//! A *pass* looks at one observed [`TaskAction`] at one instant ([`Timestamp`], passed in by
//! the driver) and decides what to do. It never does anything itself: it hands out
//! [`Effect`] values one at a time (add the finalizer, call the plugin, look in the cache,
//! record an action event, write the status, ...) and waits for each one's result
//! ([`EffectResult`]) before deciding the next. A pass ends with an [`Outcome`]: idle, requeue
//! after a delay, or retry after an error that stopped it. Everything the reconciler must
//! remember between passes lives in the object's status, so a pass can be thrown away at any
//! point (crash, conflict) and the next pass picks up from the stored object.
//!
//! Drivers (the embedded sandbox, the Kubernetes operator, the simulation tests) own the I/O:
//! they observe the object, execute effects against their store, plugins and cache, feed the
//! results back, and schedule the next pass as the outcome says.
//!
//! ```text
//! loop {
//!     observe the object (or None if gone) and read the clock
//!     (pass, step) = reconcile(observed, now, &config)
//!     while step is Run(effect): step = pass.resume(execute(effect))?
//!     schedule the next pass per the Outcome (Idle: on the next change only)
//! }
//! ```
//!
//! # Example: a driver loop with a fake plugin
//!
//! ```
//! use flyte_reconciler_core::{
//!     drive, ActionPhase, CallResult, Config, Effect, PhaseInfo, PluginPhase, PluginResult,
//!     PluginTransition, TaskAction, TaskActionSpec, Timestamp, WriteResult,
//!     COMPLETED_TIME_LABEL, FINALIZER,
//! };
//!
//! let cfg = Config::with_task_types(["python-task"]);
//! let mut stored = TaskAction::new("flyte", "a0", TaskActionSpec {
//!     run_name: "r1".into(),
//!     project: "p".into(),
//!     domain: "d".into(),
//!     action_name: "a0".into(),
//!     task_type: "python-task".into(),
//!     task_template: b"{}".to_vec(),
//!     input_uri: "s3://bucket/in".into(),
//!     run_output_base: "s3://bucket/out".into(),
//!     ..TaskActionSpec::default()
//! });
//! // The fake plugin reports these phases, one per call (popped from the end).
//! let mut plugin = vec![PluginPhase::Success, PluginPhase::Running, PluginPhase::Queued];
//! let mut events = Vec::new();
//! let mut now = Timestamp::from_secs(1_700_000_000); // 2023-11-14T22:13:20Z
//!
//! loop {
//!     let observed = stored.clone();
//!     let outcome = drive(Some(&observed), now, &cfg, |effect| match effect {
//!         Effect::AddFinalizer => {
//!             stored.metadata.finalizers.push(FINALIZER.to_owned());
//!             WriteResult::Ok.into()
//!         }
//!         Effect::PluginHandle(_call) => {
//!             let phase = plugin.pop().unwrap_or(PluginPhase::Success);
//!             let info = PhaseInfo::new(phase, "");
//!             PluginResult::Transition(PluginTransition { info, state: None }).into()
//!         }
//!         Effect::RecordEvent(event) => {
//!             events.push(event.phase);
//!             CallResult::Ok.into()
//!         }
//!         Effect::WriteStatus { status, .. } => {
//!             stored.status = (*status).clone();
//!             WriteResult::Ok.into()
//!         }
//!         Effect::ApplyLabels(labels) => {
//!             stored.metadata.labels.extend(labels);
//!             WriteResult::Ok.into()
//!         }
//!         other => unreachable!("this task is not cacheable and nobody deletes it: {other:?}"),
//!     })?;
//!     match outcome.requeue_after() {
//!         Some(after) => now = now.saturating_add(after),
//!         None => break,
//!     }
//! }
//!
//! assert!(stored.status.is_terminal());
//! assert_eq!(events, [ActionPhase::Queued, ActionPhase::Running, ActionPhase::Succeeded]);
//! assert_eq!(stored.metadata.labels[COMPLETED_TIME_LABEL], "2023-11-14.22-13");
//! # Ok::<(), flyte_reconciler_core::Error>(())
//! ```
//!
//! # Where the reference's steps live
//!
//! Steps 1 to 6 pick the kind of pass ([`reconcile`]); 7 to 9 gather the cache's and the
//! plugin's answers; 10 to 12 turn failures into retries, restarts or permanent failures;
//! 13 maps the plugin phase ([`map_plugin_phase`]) and commits: action event, then status,
//! then terminal labels ([`terminal_labels`]).
//!
//! # Departures from the original, on purpose
//!
//! - A failed status write is retried within the pass ([`Config::status_write_attempts`]) and
//!   then surfaces as [`Outcome::Retry`]; it is never swallowed (flyte #7967).
//! - A user retry counts the attempt in the same status write that forgets the old launch,
//!   and the plugin is only ever called with the stored attempt, so a failing task ends after
//!   its last attempt instead of being recreated forever (flyte #7874, #7926).
//! - The action event is sent before the status write, and a failed event stops the pass, so
//!   the control plane hears of every committed status at least once.
//! - When the reconciler itself gives up on a plugin (too many system failures, a
//!   non-retryable code, out of attempts) it aborts the plugin and releases the cache
//!   reservation before the status turns terminal, so nothing keeps running or stays
//!   reserved behind a terminal action.
//! - Deleting an action that is already terminal (the garbage-collection path) finalizes and
//!   releases but neither aborts nor announces ABORTED, which would contradict its final phase.

mod config;
mod effects;
mod error;
mod model;
mod reconcile;
mod time;

pub use config::{
    COMPLETED_TIME_LABEL, Config, DEFAULT_COMPLETED_TTL, DEFAULT_GC_SWEEP_INTERVAL,
    DEFAULT_MAX_SYSTEM_FAILURES, DEFAULT_NON_RETRYABLE_CODES, DEFAULT_REQUEUE_INTERVAL,
    DEFAULT_RETRY_BACKOFF, DEFAULT_STATUS_WRITE_ATTEMPTS, FINALIZER, MAX_RETRIES_EXCEEDED,
    MAX_SYSTEM_FAILURES_EXCEEDED, TERMINATED, TERMINATION_STATUS_LABEL,
};
pub use effects::{
    ActionEvent, ActionId, CacheLookup, CachePutResult, CallResult, Effect, EffectKind,
    EffectResult, LogLink, ObjectEvent, Outcome, PhaseInfo, PluginCall, PluginError, PluginResult,
    PluginTransition, Reservation, RunId, Severity, Step, WriteResult,
};
pub use error::{Error, Result};
pub use model::{
    ActionPhase, ActionType, CacheStatus, Condition, ConditionSpec, ConditionType, ErrorKind,
    ExecutionError, ObjectMeta, PhaseTransition, PluginPhase, PluginState, Reason, Standing,
    TaskAction, TaskActionSpec, TaskActionStatus, map_plugin_phase,
};
pub use reconcile::{Pass, drive, reconcile, terminal_labels};
pub use time::{CivilTime, Timestamp};
