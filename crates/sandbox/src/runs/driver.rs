//! The driver of flyte-reconciler-core: one pass after another, each effect carried out
//! against the run's entry (the store, the plugin, the ingress), until the action is done.

use std::sync::Arc;
use std::time::Duration;

use flyte_api::ActionPhaseExt;
use flyte_reconciler_core::{self as rc, CallResult, Config, Effect, EffectResult, WriteResult};

use super::{
    RunSlot, TASK_TYPE,
    entry::{RunEntry, to_api_error, to_api_phase},
    ingress::close_debug_route,
    key,
    plugin::{handle, hang_up},
};

/// Longest wait between passes while an action runs (a process exit wakes the driver sooner).
pub(super) const MAX_WAIT: Duration = Duration::from_secs(1);

/// Ask the run's action to stop: the reconciler's deletion path aborts and finalizes it.
pub(crate) fn abort(slot: &RunSlot, reason: String) {
    let mut entry = slot.lock();
    if entry.object.metadata.deletion_timestamp.is_none() && !entry.phase.is_terminal() {
        entry.object.metadata.deletion_timestamp = Some(crate::clock::now());
        entry.abort_reason = Some(reason);
        entry.persist();
    }
    drop(entry);
    slot.wake.notify_one();
}

pub(super) fn config() -> Config {
    let mut config = Config::with_task_types([TASK_TYPE]);
    // Locally there is no API server to spare: check often, so a finished process shows quickly.
    config.requeue_interval = MAX_WAIT;
    config
}

/// The driver loop: one reconciler pass after another until the action is done.
pub(super) async fn drive(slot: Arc<RunSlot>, logs: std::path::PathBuf) {
    let config = config();
    loop {
        // The pass runs under the entry's lock; what it writes to the store is carried out
        // after the lock is released, so request handlers never wait for the disk.
        let (outcome, writes) = {
            let mut entry = slot.lock();
            let done = entry.stopping.load(std::sync::atomic::Ordering::SeqCst)
                || entry.gone
                || (entry.object.status.is_terminal()
                    && entry.object.metadata.deletion_timestamp.is_none());
            let outcome = (!done).then(|| {
                let observed = entry.object.clone();
                rc::drive(Some(&observed), crate::clock::now(), &config, |effect| {
                    apply(&mut entry, &slot, effect, &logs)
                })
            });
            (outcome, entry.take_writes())
        };
        writes.flush();
        let Some(outcome) = outcome else {
            return;
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

pub(super) fn write_ok() -> EffectResult {
    WriteResult::Ok.into()
}

pub(super) fn call_ok() -> EffectResult {
    CallResult::Ok.into()
}

/// Carry out one effect against this run's state and the local processes.
pub(super) fn apply(
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
        Effect::CachePut { key: cache_key, .. } => match entry.store.put_cache_entry(
            &cache_key,
            &key(&entry.id),
            crate::clock::now().as_millis(),
        ) {
            Ok(true) => rc::CachePutResult::Stored,
            Ok(false) => rc::CachePutResult::AlreadyExists,
            Err(e) => rc::CachePutResult::Error(e.to_string()),
        }
        .into(),
        Effect::PluginFinalize(_) | Effect::CacheRelease { .. } | Effect::ObjectEvent(_) => {
            call_ok()
        }
        Effect::Delete => write_ok(),
    }
}
