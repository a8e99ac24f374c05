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
    plugin::{self, hang_up},
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
        // The pass reads a copy of the action; each effect takes the entry's lock only to change
        // it in memory. Disk and fork (the store, the cache, starting a process and its debug
        // server) happen without it, so request handlers never wait for them. This driver is
        // the only writer of the action's status, so nothing changes it under the pass.
        let observed = {
            let entry = slot.lock();
            let done = entry.stopping.load(std::sync::atomic::Ordering::SeqCst)
                || entry.gone
                || (entry.object.status.is_terminal()
                    && entry.object.metadata.deletion_timestamp.is_none());
            (!done).then(|| entry.object.clone())
        };
        let Some(observed) = observed else {
            return;
        };
        let outcome = rc::drive(Some(&observed), crate::clock::now(), &config, |effect| {
            apply(&slot, effect, &logs)
        });
        let writes = slot.lock().take_writes();
        writes.flush();
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

/// Carry out one effect against this run's state and the local processes: in memory under the
/// entry's lock, on disk without it.
pub(super) fn apply(slot: &Arc<RunSlot>, effect: Effect, logs: &std::path::Path) -> EffectResult {
    match effect {
        Effect::PluginHandle(call) => {
            let handled = plugin::handle(&slot.lock(), call.attempt);
            match handled {
                plugin::Handled::Report(result) => result.into(),
                plugin::Handled::Start(launch) => {
                    let started = plugin::launch(launch, logs);
                    plugin::commit(&mut slot.lock(), slot, started).into()
                }
            }
        }
        // The cache: entries in SQLite, keyed by LocalTask::cache_key; a hit means the run that
        // stored it succeeded, so this one succeeds without running. Tasks are never
        // cache-serializable here, so reservations are always granted.
        Effect::CacheGet { key } => {
            let store = Arc::clone(&slot.lock().store);
            match store.cache_entry(&key) {
                Ok(Some(run)) => rc::CacheLookup::Hit {
                    outputs_uri: Some(format!("sandbox://{run}/outputs")),
                },
                Ok(None) => rc::CacheLookup::NotFound,
                Err(e) => rc::CacheLookup::Error(e.to_string()),
            }
            .into()
        }
        Effect::CacheReserve { .. } => rc::Reservation::Owned.into(),
        Effect::CachePut { key: cache_key, .. } => {
            let (store, run) = {
                let entry = slot.lock();
                (Arc::clone(&entry.store), key(&entry.id))
            };
            match store.put_cache_entry(&cache_key, &run, crate::clock::now().as_millis()) {
                Ok(true) => rc::CachePutResult::Stored,
                Ok(false) => rc::CachePutResult::AlreadyExists,
                Err(e) => rc::CachePutResult::Error(e.to_string()),
            }
            .into()
        }
        effect => apply_in_memory(&mut slot.lock(), effect),
    }
}

/// The effects that only change the entry (and queue its store writes).
fn apply_in_memory(entry: &mut RunEntry, effect: Effect) -> EffectResult {
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
        // Nothing to do locally.
        Effect::PluginFinalize(_) | Effect::CacheRelease { .. } | Effect::ObjectEvent(_) => {
            call_ok()
        }
        // Carried out by `apply` without the lock; never passed here.
        Effect::PluginHandle(_)
        | Effect::CacheGet { .. }
        | Effect::CacheReserve { .. }
        | Effect::CachePut { .. } => call_ok(),
        Effect::Delete => write_ok(),
    }
}
