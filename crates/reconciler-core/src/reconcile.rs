//! One reconcile pass as a state machine: the observed object and the time go in, effects come
//! out one at a time, each effect's result comes back in, and the pass ends with an
//! [`Outcome`].
//!
//! The order of the reference is kept literally: a pass first *gathers* (cache lookup,
//! reservation, plugin call, cache put), because those answers decide the new status; then it
//! runs a *script* fixed at that point: release, abort, warning, action events, status write,
//! labels. Any failure in the script stops the pass before the next effect, so an event is
//! never skipped before its status write, a finalizer is never removed before the cleanup in
//! front of it succeeded, and a failed status write always surfaces as [`Outcome::Retry`].

use std::collections::VecDeque;
use std::mem;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{
    COMPLETED_TIME_LABEL, Config, MAX_RETRIES_EXCEEDED, MAX_SYSTEM_FAILURES_EXCEEDED, TERMINATED,
    TERMINATION_STATUS_LABEL,
};
use crate::effects::{
    ActionEvent, ActionId, CacheLookup, CachePutResult, CallResult, Effect, EffectKind,
    EffectResult, LogLink, ObjectEvent, Outcome, PhaseInfo, PluginCall, PluginResult,
    PluginTransition, Reservation, RunId, Severity, Step, WriteResult,
};
use crate::error::{Error, Result};
use crate::model::{
    ActionPhase, ActionType, CacheStatus, ErrorKind, ExecutionError, PluginPhase, PluginState,
    Reason, Standing, TaskAction, TaskActionSpec, TaskActionStatus, map_plugin_phase,
};
use crate::time::Timestamp;

/// Starts a pass over `observed` (`None`: the object is gone) at time `now`.
///
/// Returns the pass and its first step. Execute each [`Step::Run`] effect and hand its result
/// to [`Pass::resume`] until a [`Step::Done`] arrives.
pub fn reconcile<'a>(
    observed: Option<&'a TaskAction>,
    now: Timestamp,
    cfg: &'a Config,
) -> (Pass<'a>, Step) {
    let mut pass = Pass {
        cfg,
        now,
        observed,
        awaiting: None,
        script: VecDeque::new(),
        then: Outcome::Idle,
        status_write: None,
        status_writes: 0,
        cache_status: observed.map_or(CacheStatus::Disabled, |obj| obj.status.cache_status),
        release_planned: false,
        abort_planned: false,
    };
    let first = pass.begin();
    (pass, first)
}

/// Runs a whole pass with a synchronous executor: the loop every synchronous driver writes.
///
/// Fails only if `execute` answers an effect with the wrong kind of result.
pub fn drive<F>(
    observed: Option<&TaskAction>,
    now: Timestamp,
    cfg: &Config,
    mut execute: F,
) -> Result<Outcome>
where
    F: FnMut(Effect) -> EffectResult,
{
    let (mut pass, mut step) = reconcile(observed, now, cfg);
    loop {
        match step {
            Step::Run(effect) => step = pass.resume(execute(effect))?,
            Step::Done(outcome) => return Ok(outcome),
        }
    }
}

/// The labels a terminal action carries, for an action that completed at `completed_at`.
pub fn terminal_labels(completed_at: Timestamp) -> Vec<(String, String)> {
    vec![
        (TERMINATION_STATUS_LABEL.to_owned(), TERMINATED.to_owned()),
        (
            COMPLETED_TIME_LABEL.to_owned(),
            completed_at.completed_time_label(),
        ),
    ]
}

/// A reconcile pass in progress. See [`reconcile`].
#[derive(Debug)]
pub struct Pass<'a> {
    cfg: &'a Config,
    now: Timestamp,
    observed: Option<&'a TaskAction>,
    /// The effect whose result the pass waits for; `None` once the pass is done.
    awaiting: Option<Awaiting>,
    /// Effects decided but not yet handed out, in order.
    script: VecDeque<Effect>,
    /// How the pass ends once the script ran through.
    then: Outcome,
    /// The status write in flight, kept to send again if it fails.
    status_write: Option<Effect>,
    status_writes: u32,
    cache_status: CacheStatus,
    release_planned: bool,
    abort_planned: bool,
}

#[derive(Debug)]
enum Awaiting {
    CacheLookup,
    Reservation,
    PluginHandle,
    /// The plugin's transition waits here while its outputs go into the cache.
    CachePut(Box<PluginTransition>),
    Script(EffectKind),
}

impl Awaiting {
    fn effect_kind(&self) -> EffectKind {
        match self {
            Self::CacheLookup => EffectKind::CacheGet,
            Self::Reservation => EffectKind::CacheReserve,
            Self::PluginHandle => EffectKind::PluginHandle,
            Self::CachePut(_) => EffectKind::CachePut,
            Self::Script(kind) => *kind,
        }
    }
}

/// What a system failure does to the plugin's current launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Launch {
    /// The plugin call failed; its state stays, and the next pass calls it again.
    Kept,
    /// The launch failed and was aborted (step 10); the next pass starts a fresh one.
    Discarded,
}

/// Details of a plugin report that go into the action event but not into the status.
#[derive(Default)]
struct EventExtras {
    outputs_uri: Option<String>,
    logs: Vec<LogLink>,
}

impl<'a> Pass<'a> {
    /// Feeds the result of the effect last handed out and returns the next step.
    ///
    /// A result of the wrong kind is refused with [`Error::UnexpectedResult`] (the pass keeps
    /// waiting for the right one); resuming a finished pass gives [`Error::PassFinished`].
    pub fn resume(&mut self, result: impl Into<EffectResult>) -> Result<Step> {
        let awaiting = self.awaiting.take().ok_or(Error::PassFinished)?;
        let step = match (awaiting, result.into()) {
            (Awaiting::CacheLookup, EffectResult::CacheLookup(lookup)) => {
                self.on_cache_lookup(lookup)
            }
            (Awaiting::Reservation, EffectResult::Reservation(reservation)) => {
                self.on_reservation(reservation)
            }
            (Awaiting::PluginHandle, EffectResult::Plugin(result)) => self.on_plugin(result),
            (Awaiting::CachePut(ran), EffectResult::CachePut(put)) => self.on_cache_put(*ran, &put),
            (Awaiting::Script(kind), result) if kind.accepts(&result) => {
                self.on_script_result(kind, result)
            }
            (awaiting, result) => {
                let expected = awaiting.effect_kind();
                self.awaiting = Some(awaiting);
                return Err(Error::UnexpectedResult {
                    expected,
                    got: result.name(),
                });
            }
        };
        Ok(step)
    }

    /// The effect the pass waits for, if it is not done.
    pub fn awaiting(&self) -> Option<EffectKind> {
        self.awaiting.as_ref().map(Awaiting::effect_kind)
    }

    fn object(&self) -> &'a TaskAction {
        self.observed
            .expect("effects are only ever planned for an observed object")
    }

    fn emit(&mut self, awaiting: Awaiting, effect: Effect) -> Step {
        self.awaiting = Some(awaiting);
        Step::Run(effect)
    }

    fn finish(&mut self, outcome: Outcome) -> Step {
        self.awaiting = None;
        Step::Done(outcome)
    }

    // ----- steps 1 to 6: what kind of pass this is ------------------------------------------

    fn begin(&mut self) -> Step {
        // Step 1: the object is gone; nothing is left to clean up (the finalizer saw to that).
        let Some(obj) = self.observed else {
            return self.finish(Outcome::Idle);
        };
        // Step 2.
        if obj.is_being_deleted() {
            return self.plan_deletion(obj);
        }
        // Step 3: terminal is absorbing; only labels and garbage collection remain.
        if obj.status.is_terminal() {
            return self.plan_terminal(obj);
        }
        // Step 4.
        if obj.spec.action_type == ActionType::Condition {
            return self.plan_condition(obj);
        }
        // Step 5: a spec that cannot run fails for good. No finalizer: nothing ran to clean up.
        if let Some(problems) = obj.spec.task_spec_problems() {
            let error =
                ExecutionError::new(ErrorKind::User, Reason::InvalidSpec.as_str(), problems);
            return self.fail_without_running(obj, Reason::InvalidSpec, error);
        }
        if !self.cfg.has_plugin(&obj.spec.task_type) {
            let message = format!("no plugin for task type {:?}", obj.spec.task_type);
            let error =
                ExecutionError::new(ErrorKind::User, Reason::PluginNotFound.as_str(), message);
            return self.fail_without_running(obj, Reason::PluginNotFound, error);
        }
        // Step 6: claim the object first, so that nothing runs that deletion could not clean
        // up. The write wakes the next pass; the immediate requeue covers a lost watch event.
        if !obj.has_finalizer() {
            self.script.push_back(Effect::AddFinalizer);
            self.then = Outcome::RequeueAfter(Duration::ZERO);
            return self.advance();
        }
        self.look_up_cache_or_run(obj)
    }

    /// Step 2: abort, finalize, release, announce, and only then let the object go.
    fn plan_deletion(&mut self, obj: &TaskAction) -> Step {
        if !obj.has_finalizer() {
            return self.finish(Outcome::Idle);
        }
        let has_plugin = self.cfg.has_plugin(&obj.spec.task_type);
        // A terminal action has nothing running to abort, and announcing ABORTED would
        // contradict the terminal phase the control plane already has (this is the usual
        // path of garbage collection).
        let running = !obj.status.is_terminal();
        if has_plugin {
            let call = plugin_call(&obj.status, None);
            if running {
                self.script.push_back(Effect::PluginAbort(call.clone()));
            }
            self.script.push_back(Effect::PluginFinalize(call));
        } else {
            self.script.push_back(Effect::ObjectEvent(ObjectEvent {
                severity: Severity::Normal,
                reason: "FinalizationSkipped",
                message: format!(
                    "no plugin for task type {:?}; nothing to finalize",
                    obj.spec.task_type
                ),
            }));
        }
        self.plan_release(obj);
        if has_plugin && running {
            let status = &obj.status;
            let event = ActionEvent {
                id: action_id(&obj.spec),
                attempt: status.attempt(),
                phase: ActionPhase::Aborted,
                version: status.plugin_phase_version,
                updated_at: self.now,
                error: Some(ExecutionError::new(
                    ErrorKind::User,
                    Reason::Aborted.as_str(),
                    "the action was deleted before it finished",
                )),
                outputs_uri: None,
                log_links: Vec::new(),
                cache_status: status.cache_status,
            };
            self.script.push_back(Effect::RecordEvent(Box::new(event)));
        }
        self.script.push_back(Effect::RemoveFinalizer);
        self.then = Outcome::Idle;
        self.advance()
    }

    /// Step 3: make sure the terminal labels are there; delete once the time-to-live is over.
    fn plan_terminal(&mut self, obj: &TaskAction) -> Step {
        let completed_at = obj.status.completed_at().unwrap_or(self.now);
        let labels = terminal_labels(completed_at);
        if labels
            .iter()
            .any(|(key, value)| obj.metadata.labels.get(key) != Some(value))
        {
            self.script.push_back(Effect::ApplyLabels(labels));
        }
        if self.now >= completed_at.saturating_add(self.cfg.completed_ttl) {
            self.script.push_back(Effect::Delete);
        }
        self.then = Outcome::Idle;
        self.advance()
    }

    /// Step 4: a condition succeeds on its signal, times out at its deadline, or waits.
    fn plan_condition(&mut self, obj: &TaskAction) -> Step {
        let condition = obj.spec.condition.as_ref();
        let deadline = condition.and_then(|c| c.deadline);
        let verdict = if let Some(signal) = condition.and_then(|c| c.signal.as_deref()) {
            let message = format!("signal received: {signal}");
            (
                ActionPhase::Succeeded,
                Standing::Succeeded(Reason::Signaled),
                message,
                None,
            )
        } else if let Some(deadline) = deadline.filter(|deadline| *deadline <= self.now) {
            let message = format!("no signal before the deadline {deadline}");
            let error = ExecutionError::new(ErrorKind::User, Reason::TimedOut.as_str(), &message);
            (
                ActionPhase::TimedOut,
                Standing::Failed(Reason::TimedOut),
                message,
                Some(error),
            )
        } else if let Some(problems) = obj.spec.condition_spec_problems() {
            let error =
                ExecutionError::new(ErrorKind::User, Reason::InvalidSpec.as_str(), &problems);
            (
                ActionPhase::Failed,
                Standing::Failed(Reason::InvalidSpec),
                problems,
                Some(error),
            )
        } else {
            let message = "waiting for a signal".to_owned();
            (
                ActionPhase::Running,
                Standing::Progressing(Reason::Paused),
                message,
                None,
            )
        };
        let (phase, standing, message, error) = verdict;
        let then = if standing.is_terminal() {
            Outcome::Idle
        } else {
            // Wake at the deadline to time out; without one, poll, so that a lost watch event
            // cannot hide the signal forever.
            Outcome::RequeueAfter(deadline.map_or(self.cfg.requeue_interval, |deadline| {
                deadline.saturating_duration_since(self.now)
            }))
        };
        let mut next = self.next_status(obj);
        next.enter_phase(phase, self.now, &message);
        next.set_standing(standing, &message, self.now);
        next.error = error;
        self.commit(obj, next, None, EventExtras::default(), then)
    }

    fn fail_without_running(
        &mut self,
        obj: &TaskAction,
        reason: Reason,
        error: ExecutionError,
    ) -> Step {
        let mut next = self.next_status(obj);
        next.enter_phase(ActionPhase::Failed, self.now, &error.message);
        next.set_standing(Standing::Failed(reason), &error.message, self.now);
        next.error = Some(error);
        self.commit(obj, next, None, EventExtras::default(), Outcome::Idle)
    }

    // ----- steps 7 to 9: cache, plugin, cache -----------------------------------------------

    /// Step 7: cacheable tasks that have not started yet may be answered by the cache.
    fn look_up_cache_or_run(&mut self, obj: &TaskAction) -> Step {
        let started = obj
            .status
            .plugin_phase
            .is_some_and(PluginPhase::has_started);
        if obj.spec.is_cacheable() && !started {
            let key = obj.spec.cache_key.clone();
            return self.emit(Awaiting::CacheLookup, Effect::CacheGet { key });
        }
        self.call_plugin(obj)
    }

    fn on_cache_lookup(&mut self, lookup: CacheLookup) -> Step {
        let obj = self.object();
        match lookup {
            CacheLookup::Hit { outputs_uri } => {
                self.cache_status = CacheStatus::Hit;
                let info = PhaseInfo {
                    outputs_uri,
                    ..PhaseInfo::new(PluginPhase::Success, "outputs found in the cache")
                };
                // The plugin is not called; `after_run` still settles the reservation, which an
                // earlier pass of this action may hold.
                self.after_run(obj, PluginTransition { info, state: None }, false)
            }
            CacheLookup::NotFound => {
                self.cache_status = CacheStatus::Miss;
                self.reserve_or_run(obj)
            }
            // A broken cache must not stop the task: run it without the cache's help.
            CacheLookup::Error(_) => {
                self.cache_status = CacheStatus::LookupFailure;
                self.reserve_or_run(obj)
            }
        }
    }

    fn reserve_or_run(&mut self, obj: &TaskAction) -> Step {
        if !obj.spec.takes_reservation() {
            return self.call_plugin(obj);
        }
        let effect = Effect::CacheReserve {
            key: obj.spec.cache_key.clone(),
            owner: obj.reservation_owner(),
            heartbeat: self.cfg.requeue_interval,
        };
        self.emit(Awaiting::Reservation, effect)
    }

    fn on_reservation(&mut self, reservation: Reservation) -> Step {
        let obj = self.object();
        match reservation {
            // On a reservation error the task runs anyway, like on a lookup error; the release
            // on every way out covers a reservation that was granted but not reported.
            Reservation::Owned | Reservation::Error(_) => self.call_plugin(obj),
            Reservation::HeldBy(owner) => {
                let reason = format!("waiting for the cache reservation held by {owner}");
                let info = PhaseInfo::new(PluginPhase::WaitingForCache, reason);
                self.settle(obj, PluginTransition { info, state: None }, false)
            }
        }
    }

    /// Step 8.
    fn call_plugin(&mut self, obj: &TaskAction) -> Step {
        let call = plugin_call(&obj.status, None);
        self.emit(Awaiting::PluginHandle, Effect::PluginHandle(call))
    }

    fn on_plugin(&mut self, result: PluginResult) -> Step {
        let obj = self.object();
        match result {
            PluginResult::Error(error) => {
                self.system_error(obj, error.code, error.message, Launch::Kept)
            }
            PluginResult::Transition(ran) => {
                // Step 9: a success fills the cache before anything else is decided.
                if ran.info.phase == PluginPhase::Success && obj.spec.is_cacheable() {
                    let effect = Effect::CachePut {
                        key: obj.spec.cache_key.clone(),
                        outputs_uri: ran.info.outputs_uri.clone(),
                    };
                    return self.emit(Awaiting::CachePut(Box::new(ran)), effect);
                }
                self.after_run(obj, ran, true)
            }
        }
    }

    fn on_cache_put(&mut self, ran: PluginTransition, put: &CachePutResult) -> Step {
        // A failed put costs a future cache hit, not this action's success.
        self.cache_status = match put {
            CachePutResult::Stored | CachePutResult::AlreadyExists => CacheStatus::Populated,
            CachePutResult::Error(_) => CacheStatus::PutFailure,
        };
        self.after_run(self.object(), ran, true)
    }

    /// Steps 9 to 13 once the plugin (or the cache) reported a phase.
    fn after_run(&mut self, obj: &TaskAction, ran: PluginTransition, from_plugin: bool) -> Step {
        // Step 9: a finished task no longer needs the reservation, whatever the outcome.
        if ran.info.phase.is_finished() {
            self.plan_release(obj);
        }
        if ran.info.phase != PluginPhase::RetryableFailure {
            return self.settle(obj, ran, from_plugin);
        }
        let error = ran.info.error_or_default();
        if error.kind == ErrorKind::System {
            // Step 10: the platform failed, not the task: throw this launch away and count it.
            self.plan_abort(obj, ran.state.as_ref());
            return self.system_error(obj, error.code, error.message, Launch::Discarded);
        }
        self.user_failure(obj, ran, &error)
    }

    // ----- steps 10 to 12: failures ---------------------------------------------------------

    /// Step 11.
    fn system_error(
        &mut self,
        obj: &TaskAction,
        code: String,
        message: String,
        launch: Launch,
    ) -> Step {
        if self.cfg.is_non_retryable(&code) {
            let error = ExecutionError::new(ErrorKind::User, code, message);
            return self.fail_permanently(obj, error, None, obj.status.system_failures);
        }
        self.script.push_back(Effect::ObjectEvent(ObjectEvent {
            severity: Severity::Warning,
            reason: "SystemError",
            message: format!("{code}: {message}"),
        }));
        let failures = obj.status.system_failures.saturating_add(1);
        let max = self.cfg.max_system_failures;
        if failures > max {
            let error = ExecutionError::new(
                ErrorKind::System,
                MAX_SYSTEM_FAILURES_EXCEEDED,
                format!("{failures} consecutive system failures, the last: {code}: {message}"),
            );
            return self.fail_permanently(obj, error, None, failures);
        }
        let note = format!("system failure {failures} of at most {max}: {code}: {message}");
        let mut next = self.next_status(obj);
        next.system_failures = failures;
        if launch == Launch::Discarded {
            clear_plugin(&mut next);
            next.enter_phase(
                ActionPhase::Queued,
                self.now,
                "restarting after a system failure",
            );
        } else if next.phase().is_none() {
            next.enter_phase(ActionPhase::Queued, self.now, &note);
        }
        next.set_standing(
            Standing::Progressing(Reason::RetryableFailure),
            &note,
            self.now,
        );
        let then = Outcome::RequeueAfter(self.cfg.requeue_interval);
        self.commit(obj, next, None, EventExtras::default(), then)
    }

    /// Step 12: the task failed in a way another attempt may fix.
    fn user_failure(
        &mut self,
        obj: &TaskAction,
        ran: PluginTransition,
        error: &ExecutionError,
    ) -> Step {
        let attempt = obj.status.attempt();
        if attempt >= obj.spec.max_attempts() {
            let error = ExecutionError::new(
                ErrorKind::User,
                MAX_RETRIES_EXCEEDED,
                format!("task failed after {attempt} attempt(s): {}", error.message),
            );
            return self.fail_permanently(obj, error, ran.state.as_ref(), 0);
        }
        self.plan_abort(obj, ran.state.as_ref());
        let mut next = self.next_status(obj);
        // The failed attempt is announced on its own, so that the control plane sees every
        // attempt end before the next one starts.
        let failed_attempt = ActionEvent {
            id: action_id(&obj.spec),
            attempt,
            phase: map_plugin_phase(PluginPhase::RetryableFailure).0,
            version: ran.info.version,
            updated_at: self.now,
            error: Some(error.clone()),
            outputs_uri: None,
            log_links: ran.info.logs,
            cache_status: self.cache_status,
        };
        // Counting the attempt in the same write that forgets the old launch is what keeps a
        // failing task from being recreated forever with its attempts stuck (flyte #7874).
        next.attempts = attempt + 1;
        next.system_failures = 0;
        next.error = None;
        clear_plugin(&mut next);
        next.enter_phase(ActionPhase::Failed, self.now, &error.message);
        next.enter_phase(ActionPhase::Queued, self.now, "restarting task");
        let note = format!(
            "restarting task: attempt {attempt} failed: {}",
            error.message
        );
        next.set_standing(
            Standing::Progressing(Reason::RetryableFailure),
            &note,
            self.now,
        );
        let then = Outcome::RequeueAfter(self.cfg.requeue_interval);
        self.commit(
            obj,
            next,
            Some(failed_attempt),
            EventExtras::default(),
            then,
        )
    }

    /// A failure decided by the reconciler rather than reported as final by the plugin. The
    /// plugin is aborted because nothing will call it again before finalization, and the
    /// reservation goes back before the status turns terminal.
    fn fail_permanently(
        &mut self,
        obj: &TaskAction,
        error: ExecutionError,
        state: Option<&PluginState>,
        system_failures: u32,
    ) -> Step {
        self.plan_release(obj);
        self.plan_abort(obj, state);
        let mut next = self.next_status(obj);
        next.system_failures = system_failures;
        next.enter_phase(ActionPhase::Failed, self.now, &error.message);
        next.set_standing(
            Standing::Failed(Reason::PermanentFailure),
            &error.message,
            self.now,
        );
        next.error = Some(error);
        self.commit(obj, next, None, EventExtras::default(), Outcome::Idle)
    }

    // ----- step 13: map the phase, then commit ----------------------------------------------

    fn settle(&mut self, obj: &TaskAction, ran: PluginTransition, from_plugin: bool) -> Step {
        let PluginTransition { info, state } = ran;
        let (phase, standing) = map_plugin_phase(info.phase);
        let mut next = self.next_status(obj);
        if from_plugin {
            // Step 10: any plugin outcome other than a system failure ends the streak.
            next.system_failures = 0;
        }
        next.plugin_phase = Some(info.phase);
        next.plugin_phase_version = info.version;
        if let Some(state) = state {
            next.plugin_state = state;
        }
        let message = if info.reason.is_empty() {
            format!("{:?}", info.phase)
        } else {
            info.reason.clone()
        };
        next.enter_phase(phase, self.now, &message);
        next.set_standing(standing, &message, self.now);
        if standing.is_terminal() && !matches!(standing, Standing::Succeeded(_)) {
            next.error = Some(info.error_or_default());
        }
        let then = if standing.is_terminal() {
            Outcome::Idle
        } else {
            Outcome::RequeueAfter(self.cfg.requeue_interval)
        };
        let extras = EventExtras {
            outputs_uri: info.outputs_uri,
            logs: info.logs,
        };
        self.commit(obj, next, None, extras, then)
    }

    /// The observed status with the bookkeeping every new status starts from.
    fn next_status(&self, obj: &TaskAction) -> TaskActionStatus {
        let mut next = obj.status.clone();
        next.attempts = next.attempt();
        next.cache_status = self.cache_status;
        next
    }

    /// Event first, then status, then labels; nothing at all if nothing changed.
    fn commit(
        &mut self,
        obj: &TaskAction,
        next: TaskActionStatus,
        leading_event: Option<ActionEvent>,
        extras: EventExtras,
        then: Outcome,
    ) -> Step {
        if next != obj.status {
            if let Some(event) = leading_event {
                self.script.push_back(Effect::RecordEvent(Box::new(event)));
            }
            let event = self.action_event(obj, &next, extras);
            self.script.push_back(Effect::RecordEvent(Box::new(event)));
            let completed_at = next.completed_at();
            self.script.push_back(Effect::WriteStatus {
                status: Arc::new(next),
                resource_version: obj.metadata.resource_version,
            });
            if let Some(completed_at) = completed_at {
                self.script
                    .push_back(Effect::ApplyLabels(terminal_labels(completed_at)));
            }
        }
        self.then = then;
        self.advance()
    }

    fn action_event(
        &self,
        obj: &TaskAction,
        status: &TaskActionStatus,
        extras: EventExtras,
    ) -> ActionEvent {
        let last = status.phase_history.last();
        ActionEvent {
            id: action_id(&obj.spec),
            attempt: status.attempt(),
            phase: last.map_or(ActionPhase::Queued, |entry| entry.phase),
            version: status.plugin_phase_version,
            updated_at: last.map_or(self.now, |entry| entry.occurred_at),
            error: status.error.clone(),
            outputs_uri: extras.outputs_uri,
            log_links: extras.logs,
            cache_status: status.cache_status,
        }
    }

    fn plan_release(&mut self, obj: &TaskAction) {
        if obj.spec.takes_reservation() && !self.release_planned {
            self.release_planned = true;
            self.script.push_back(Effect::CacheRelease {
                key: obj.spec.cache_key.clone(),
                owner: obj.reservation_owner(),
            });
        }
    }

    fn plan_abort(&mut self, obj: &TaskAction, state: Option<&PluginState>) {
        if !self.abort_planned {
            self.abort_planned = true;
            let call = plugin_call(&obj.status, state);
            self.script.push_back(Effect::PluginAbort(call));
        }
    }

    // ----- the script ----------------------------------------------------------------------

    fn advance(&mut self) -> Step {
        let Some(effect) = self.script.pop_front() else {
            let outcome = mem::replace(&mut self.then, Outcome::Idle);
            return self.finish(outcome);
        };
        if matches!(effect, Effect::WriteStatus { .. }) {
            self.status_write = Some(effect.clone());
            self.status_writes = 1;
        }
        let kind = effect.kind();
        self.emit(Awaiting::Script(kind), effect)
    }

    fn on_script_result(&mut self, kind: EffectKind, result: EffectResult) -> Step {
        let error = match result {
            EffectResult::Write(WriteResult::Ok) | EffectResult::Call(CallResult::Ok) => {
                return self.advance();
            }
            EffectResult::Write(WriteResult::Conflict) => Error::Conflict { effect: kind },
            EffectResult::Write(WriteResult::Failed(message))
            | EffectResult::Call(CallResult::Failed(message)) => Error::EffectFailed {
                effect: kind,
                message,
            },
            // `resume` only routes write and call results here.
            other => Error::UnexpectedResult {
                expected: kind,
                got: other.name(),
            },
        };
        match kind {
            // Object events are advisory; losing one must not hold the action back.
            EffectKind::ObjectEvent => self.advance(),
            // A failed status write is retried here, and if it keeps failing the pass ends in
            // `Retry`: never swallowed (flyte #7967). A conflict is not retried blindly: the
            // status was computed from a stale object, so the next pass starts from a fresh one.
            EffectKind::WriteStatus
                if matches!(error, Error::EffectFailed { .. })
                    && self.status_writes < self.cfg.status_write_attempts =>
            {
                match self.status_write.clone() {
                    Some(write) => {
                        self.status_writes += 1;
                        self.emit(Awaiting::Script(kind), write)
                    }
                    None => self.stop(error),
                }
            }
            _ => self.stop(error),
        }
    }

    fn stop(&mut self, error: Error) -> Step {
        let after = match error {
            Error::Conflict { .. } => Duration::ZERO,
            _ => self.cfg.retry_backoff,
        };
        self.script.clear();
        self.finish(Outcome::Retry { after, error })
    }
}

fn plugin_call(status: &TaskActionStatus, state: Option<&PluginState>) -> PluginCall {
    PluginCall {
        attempt: status.attempt(),
        state: state.unwrap_or(&status.plugin_state).clone(),
    }
}

/// Forgets the plugin's launch, so that the next call starts a fresh one.
fn clear_plugin(status: &mut TaskActionStatus) {
    status.plugin_state = PluginState::default();
    status.plugin_phase = None;
    status.plugin_phase_version = 0;
}

fn action_id(spec: &TaskActionSpec) -> ActionId {
    ActionId {
        run: RunId {
            project: spec.project.clone(),
            domain: spec.domain.clone(),
            name: spec.run_name.clone(),
        },
        name: spec.action_name.clone(),
    }
}
