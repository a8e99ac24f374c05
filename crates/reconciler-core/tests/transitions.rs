//! Transition table: one row per step of the reference, each run through one `check` helper.
//!
//! A row gives the observed object, the answers that differ from "it worked" (by effect kind,
//! in order), the effects the pass must ask for, how it must end, and a one-line summary of
//! the status it writes.
#![allow(clippy::unwrap_used)]
// A table of cases is long by nature; splitting it would only scatter it.
#![allow(clippy::too_many_lines)]

use std::fmt::Write as _;

use EffectKind as K;
use PluginPhase as P;
use flyte_reconciler_core::{
    ActionPhase, ActionType, CacheLookup, CachePutResult, CallResult, Condition, ConditionSpec,
    ConditionType, Config, Effect, EffectKind, EffectResult, ErrorKind, ExecutionError, FINALIZER,
    Outcome, PhaseInfo, PhaseTransition, PluginError, PluginPhase, PluginResult, PluginState,
    PluginTransition, Reason, Reservation, Standing, Step, TaskAction, TaskActionSpec,
    TaskActionStatus, Timestamp, WriteResult, map_plugin_phase, reconcile, terminal_labels,
};

/// 2024-02-29T23:59:00Z: a leap day, one minute before the month ends.
const T0: Timestamp = Timestamp::from_secs(1_709_251_140);

// ----- the helper ---------------------------------------------------------------------------

struct Case {
    name: &'static str,
    object: Option<TaskAction>,
    now: Timestamp,
    /// Answers that differ from success, by effect kind, consumed in order.
    answers: Vec<(EffectKind, EffectResult)>,
    effects: &'static [&'static str],
    outcome: &'static str,
    /// Summary of the last status written, if any.
    status: Option<&'static str>,
}

fn case(name: &'static str, object: impl Into<Option<TaskAction>>) -> Case {
    Case {
        name,
        object: object.into(),
        now: T0,
        answers: Vec::new(),
        effects: &[],
        outcome: "Idle",
        status: None,
    }
}

impl Case {
    fn at(mut self, now: Timestamp) -> Self {
        self.now = now;
        self
    }
    fn answer(mut self, kind: EffectKind, result: impl Into<EffectResult>) -> Self {
        self.answers.push((kind, result.into()));
        self
    }
    fn expect(mut self, effects: &'static [&'static str], outcome: &'static str) -> Self {
        self.effects = effects;
        self.outcome = outcome;
        self
    }
    fn writes(mut self, status: &'static str) -> Self {
        self.status = Some(status);
        self
    }
}

/// Runs one row; returns a description of every mismatch.
fn check(mut case: Case) -> Result<(), String> {
    let cfg = Config::with_task_types(["python-task"]);
    let (mut pass, mut step) = reconcile(case.object.as_ref(), case.now, &cfg);
    let mut effects = Vec::new();
    let mut written = None;
    let outcome = loop {
        let effect = match step {
            Step::Run(effect) => effect,
            Step::Done(outcome) => break outcome,
        };
        if effects.len() > 50 {
            return Err(format!("{}: runaway pass: {effects:?}", case.name));
        }
        effects.push(describe(&effect));
        if let Effect::WriteStatus { status, .. } = &effect {
            written = Some(summary(status));
        }
        let kind = effect.kind();
        let answer = match case.answers.iter().position(|(k, _)| *k == kind) {
            Some(i) => case.answers.remove(i).1,
            None => success(kind).ok_or_else(|| format!("{}: no answer for {kind}", case.name))?,
        };
        step = pass
            .resume(answer)
            .map_err(|e| format!("{}: {e}", case.name))?;
    };
    let mut problems = Vec::new();
    if effects != case.effects {
        problems.push(format!(
            "effects\n    expected {:#?}\n    got      {effects:#?}",
            case.effects
        ));
    }
    if describe_outcome(&outcome) != case.outcome {
        problems.push(format!(
            "outcome: expected {:?}, got {:?}",
            case.outcome,
            describe_outcome(&outcome)
        ));
    }
    if written.as_deref() != case.status {
        problems.push(format!(
            "status\n    expected {:?}\n    got      {written:?}",
            case.status
        ));
    }
    if !case.answers.is_empty() {
        problems.push(format!("answers never asked for: {:?}", case.answers));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "case {:?}:\n  {}",
            case.name,
            problems.join("\n  ")
        ))
    }
}

fn run_table(cases: Vec<Case>) {
    let count = cases.len();
    let failures: Vec<String> = cases.into_iter().filter_map(|c| check(c).err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {count} cases failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// "It worked", for every effect whose success carries no information.
fn success(kind: EffectKind) -> Option<EffectResult> {
    Some(match kind {
        EffectKind::AddFinalizer
        | EffectKind::RemoveFinalizer
        | EffectKind::WriteStatus
        | EffectKind::ApplyLabels
        | EffectKind::Delete => WriteResult::Ok.into(),
        EffectKind::PluginAbort
        | EffectKind::PluginFinalize
        | EffectKind::CacheRelease
        | EffectKind::RecordEvent
        | EffectKind::ObjectEvent => CallResult::Ok.into(),
        EffectKind::CacheGet => CacheLookup::NotFound.into(),
        EffectKind::CacheReserve => Reservation::Owned.into(),
        EffectKind::CachePut => CachePutResult::Stored.into(),
        EffectKind::PluginHandle => return None,
    })
}

fn describe(effect: &Effect) -> String {
    match effect {
        Effect::PluginHandle(call) => format!("PluginHandle(attempt {})", call.attempt),
        Effect::PluginAbort(call) => format!("PluginAbort(attempt {})", call.attempt),
        Effect::PluginFinalize(call) => format!("PluginFinalize(attempt {})", call.attempt),
        Effect::CacheGet { key } => format!("CacheGet({key})"),
        Effect::CacheReserve {
            key,
            owner,
            heartbeat,
        } => format!("CacheReserve({key} for {owner}, heartbeat {heartbeat:?})"),
        Effect::CachePut { key, .. } => format!("CachePut({key})"),
        Effect::CacheRelease { key, owner } => format!("CacheRelease({key} for {owner})"),
        Effect::RecordEvent(event) => {
            let mut text = format!("RecordEvent({} attempt {}", event.phase, event.attempt);
            if let Some(error) = &event.error {
                write!(text, " error {}", error.code).unwrap();
            }
            text + ")"
        }
        Effect::ObjectEvent(event) => format!("ObjectEvent({:?} {})", event.severity, event.reason),
        Effect::ApplyLabels(labels) => {
            let values: Vec<&str> = labels.iter().map(|(_, v)| v.as_str()).collect();
            format!("ApplyLabels({})", values.join(", "))
        }
        other => format!("{}", other.kind()),
    }
}

fn describe_outcome(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Idle => "Idle".to_owned(),
        Outcome::RequeueAfter(after) => format!("RequeueAfter({after:?})"),
        Outcome::Retry { after, error } => format!("Retry({after:?}): {error}"),
    }
}

/// `PHASE attempt N sf N Condition=Reason [cache X] [error KIND/CODE] history A>B: "message"`
fn summary(status: &TaskActionStatus) -> String {
    let standing = [
        ConditionType::Succeeded,
        ConditionType::Failed,
        ConditionType::Progressing,
    ]
    .into_iter()
    .filter_map(|kind| status.condition(kind))
    .find(|c| c.status)
    .map_or("none".to_owned(), |c| {
        format!("{:?}={}", c.kind, c.reason.as_str())
    });
    let mut text = format!(
        "{} attempt {} sf {} {standing}",
        status.phase().map_or("-", ActionPhase::as_str),
        status.attempts,
        status.system_failures,
    );
    if status.cache_status != flyte_reconciler_core::CacheStatus::Disabled {
        write!(text, " cache {}", status.cache_status.as_str()).unwrap();
    }
    if let Some(error) = &status.error {
        write!(text, " error {}/{}", error.kind.as_str(), error.code).unwrap();
    }
    let history: Vec<&str> = status
        .phase_history
        .iter()
        .map(|e| e.phase.as_str())
        .collect();
    let message = status
        .phase_history
        .last()
        .map_or("", |e| e.message.as_str());
    format!("{text} history {}: {message:?}", history.join(">"))
}

// ----- fixtures -----------------------------------------------------------------------------

fn spec() -> TaskActionSpec {
    TaskActionSpec {
        run_name: "r1".into(),
        project: "p".into(),
        domain: "d".into(),
        action_name: "a0".into(),
        task_type: "python-task".into(),
        task_template: b"template".to_vec(),
        input_uri: "s3://bucket/in".into(),
        run_output_base: "s3://bucket/out".into(),
        ..TaskActionSpec::default()
    }
}

/// A valid task the reconciler has already claimed, never run.
fn task() -> TaskAction {
    let mut obj = TaskAction::new("ns", "a0", spec());
    obj.metadata.finalizers.push(FINALIZER.to_owned());
    obj.metadata.resource_version = 7;
    obj
}

fn condition_action(condition: Option<ConditionSpec>) -> TaskAction {
    let mut obj = TaskAction::new("ns", "c0", spec());
    obj.spec.action_type = ActionType::Condition;
    obj.spec.task_type.clear();
    obj.spec.condition = condition;
    obj
}

trait Build: Sized {
    fn edit(self, f: impl FnOnce(&mut TaskAction)) -> Self;

    fn cached(self, serializable: bool) -> Self {
        self.edit(|o| {
            o.spec.cache_key = "k1".into();
            o.spec.cache_serializable = serializable;
        })
    }
    fn retries(self, retries: u32) -> Self {
        self.edit(|o| o.spec.retries = retries)
    }
    fn without_finalizer(self) -> Self {
        self.edit(|o| o.metadata.finalizers.clear())
    }
    fn deleting(self) -> Self {
        self.edit(|o| o.metadata.deletion_timestamp = Some(T0))
    }
    /// As if earlier passes had recorded this plugin phase.
    fn in_phase(self, phase: PluginPhase) -> Self {
        self.edit(|o| {
            let (action_phase, standing) = map_plugin_phase(phase);
            let s = &mut o.status;
            s.attempts = s.attempt();
            s.plugin_phase = Some(phase);
            s.plugin_state = PluginState {
                bytes: b"pod-1".to_vec(),
                version: 1,
            };
            s.phase_history = vec![entry(ActionPhase::Queued, at(-60))];
            if action_phase != ActionPhase::Queued {
                s.phase_history.push(entry(action_phase, at(-30)));
            }
            s.conditions = conditions(standing, at(-30));
        })
    }
    fn attempts(self, attempts: u32) -> Self {
        self.edit(|o| o.status.attempts = attempts)
    }
    fn system_failures(self, failures: u32) -> Self {
        self.edit(|o| o.status.system_failures = failures)
    }
    fn succeeded_at(self, at: Timestamp) -> Self {
        self.in_phase(PluginPhase::Running).edit(|o| {
            o.status.plugin_phase = Some(PluginPhase::Success);
            o.status.phase_history.push(PhaseTransition {
                phase: ActionPhase::Succeeded,
                occurred_at: at,
                message: "done".into(),
            });
            o.status.conditions = conditions(Standing::Succeeded(Reason::Completed), at);
        })
    }
    fn labelled(self, completed_at: Timestamp) -> Self {
        self.edit(|o| o.metadata.labels.extend(terminal_labels(completed_at)))
    }
}

impl Build for TaskAction {
    fn edit(mut self, f: impl FnOnce(&mut TaskAction)) -> Self {
        f(&mut self);
        self
    }
}

/// `secs` seconds after `t` (before, if negative).
fn plus(t: Timestamp, secs: i64) -> Timestamp {
    Timestamp::from_millis(t.as_millis() + secs * 1000)
}

/// `secs` seconds after T0 (before, if negative).
fn at(secs: i64) -> Timestamp {
    plus(T0, secs)
}

fn entry(phase: ActionPhase, occurred_at: Timestamp) -> PhaseTransition {
    PhaseTransition {
        phase,
        occurred_at,
        message: "earlier".into(),
    }
}

fn conditions(standing: Standing, at: Timestamp) -> Vec<Condition> {
    let condition = |kind, status, reason: Reason| Condition {
        kind,
        status,
        reason,
        message: "earlier".into(),
        last_transition_time: at,
    };
    match standing {
        Standing::Progressing(r) => vec![condition(ConditionType::Progressing, true, r)],
        Standing::Succeeded(r) => vec![
            condition(ConditionType::Progressing, false, r),
            condition(ConditionType::Succeeded, true, r),
        ],
        Standing::Failed(r) => vec![
            condition(ConditionType::Progressing, false, r),
            condition(ConditionType::Failed, true, r),
        ],
    }
}

// ----- answers ------------------------------------------------------------------------------

fn handle(phase: PluginPhase) -> PluginResult {
    let info = PhaseInfo {
        version: 0,
        ..PhaseInfo::new(phase, format!("plugin says {phase:?}"))
    };
    PluginResult::Transition(PluginTransition {
        info,
        state: Some(PluginState {
            bytes: b"pod-1".to_vec(),
            version: 1,
        }),
    })
}

fn handle_failure(phase: PluginPhase, kind: ErrorKind, code: &str) -> PluginResult {
    let error = ExecutionError::new(kind, code, format!("{code} happened"));
    PluginResult::Transition(PluginTransition {
        info: PhaseInfo::failure(phase, error),
        state: None,
    })
}

fn plugin_error(code: &str) -> PluginResult {
    PluginResult::Error(PluginError {
        code: code.into(),
        message: "the plugin call failed".into(),
    })
}

fn failed(message: &str) -> WriteResult {
    WriteResult::Failed(message.into())
}

fn call_failed(message: &str) -> CallResult {
    CallResult::Failed(message.into())
}

// ----- the table ----------------------------------------------------------------------------

#[test]
fn steps_1_to_3_gone_deleted_terminal() {
    let done_at = at(-120);
    run_table(vec![
        case("1: object gone", None).expect(&[], "Idle"),
        case(
            "2: deleted without finalizer",
            task().without_finalizer().deleting(),
        )
        .expect(&[], "Idle"),
        case(
            "2: deleted while running: abort, finalize, release, event, finalizer",
            task().cached(true).in_phase(P::Running).deleting(),
        )
        .expect(
            &[
                "PluginAbort(attempt 1)",
                "PluginFinalize(attempt 1)",
                "CacheRelease(k1 for ns/a0)",
                "RecordEvent(ABORTED attempt 1 error Aborted)",
                "RemoveFinalizer",
            ],
            "Idle",
        ),
        case(
            "2: abort fails: stop before finalize",
            task().in_phase(P::Running).deleting(),
        )
        .answer(K::PluginAbort, call_failed("api down"))
        .expect(
            &["PluginAbort(attempt 1)"],
            "Retry(1s): PluginAbort failed: api down",
        ),
        case(
            "2: finalize fails: requeue, finalizer stays",
            task().in_phase(P::Running).deleting(),
        )
        .answer(K::PluginFinalize, call_failed("api down"))
        .expect(
            &["PluginAbort(attempt 1)", "PluginFinalize(attempt 1)"],
            "Retry(1s): PluginFinalize failed: api down",
        ),
        case(
            "2: release fails: finalizer stays",
            task().cached(true).in_phase(P::Running).deleting(),
        )
        .answer(K::CacheRelease, call_failed("cache down"))
        .expect(
            &[
                "PluginAbort(attempt 1)",
                "PluginFinalize(attempt 1)",
                "CacheRelease(k1 for ns/a0)",
            ],
            "Retry(1s): CacheRelease failed: cache down",
        ),
        case(
            "2: event fails: finalizer stays",
            task().in_phase(P::Running).deleting(),
        )
        .answer(K::RecordEvent, call_failed("control plane down"))
        .expect(
            &[
                "PluginAbort(attempt 1)",
                "PluginFinalize(attempt 1)",
                "RecordEvent(ABORTED attempt 1 error Aborted)",
            ],
            "Retry(1s): RecordEvent failed: control plane down",
        ),
        case(
            "2: terminal action deleted (GC): finalize only, no ABORTED",
            task().succeeded_at(done_at).deleting(),
        )
        .expect(&["PluginFinalize(attempt 1)", "RemoveFinalizer"], "Idle"),
        case(
            "2: plugin cannot be built: skip finalization",
            task().edit(|o| o.spec.task_type = "gone".into()).deleting(),
        )
        .expect(
            &["ObjectEvent(Normal FinalizationSkipped)", "RemoveFinalizer"],
            "Idle",
        ),
        case("3: terminal without labels", task().succeeded_at(done_at))
            .expect(&["ApplyLabels(terminated, 2024-02-29.23-57)"], "Idle"),
        case(
            "3: terminal with labels",
            task().succeeded_at(done_at).labelled(done_at),
        )
        .expect(&[], "Idle"),
        case(
            "3: label write fails: retried",
            task().succeeded_at(done_at),
        )
        .answer(K::ApplyLabels, WriteResult::Conflict)
        .expect(
            &["ApplyLabels(terminated, 2024-02-29.23-57)"],
            "Retry(0ns): ApplyLabels conflicted: the object changed since it was observed",
        ),
        case(
            "3: TTL not over yet",
            task().succeeded_at(done_at).labelled(done_at),
        )
        .at(plus(done_at, 3599))
        .expect(&[], "Idle"),
        case(
            "3: TTL over: delete",
            task().succeeded_at(done_at).labelled(done_at),
        )
        .at(plus(done_at, 3600))
        .expect(&["Delete"], "Idle"),
    ]);
}

#[test]
fn step_4_conditions() {
    let deadline = at(90);
    let spec = |signal: Option<&str>| ConditionSpec {
        name: "approve".into(),
        deadline: Some(deadline),
        signal: signal.map(Into::into),
    };
    run_table(vec![
        case("4: signalled", condition_action(Some(spec(Some("yes")))))
            .expect(&["RecordEvent(SUCCEEDED attempt 1)", "WriteStatus",
                "ApplyLabels(terminated, 2024-02-29.23-59)"], "Idle")
            .writes(r#"SUCCEEDED attempt 1 sf 0 Succeeded=Signaled history SUCCEEDED: "signal received: yes""#),
        case("4: signal wins over a passed deadline", condition_action(Some(spec(Some("yes")))))
            .at(deadline)
            .expect(&["RecordEvent(SUCCEEDED attempt 1)", "WriteStatus",
                "ApplyLabels(terminated, 2024-03-01.00-00)"], "Idle")
            .writes(r#"SUCCEEDED attempt 1 sf 0 Succeeded=Signaled history SUCCEEDED: "signal received: yes""#),
        case("4: past the deadline", condition_action(Some(spec(None))))
            .at(deadline)
            .expect(&["RecordEvent(TIMED_OUT attempt 1 error TimedOut)", "WriteStatus",
                "ApplyLabels(terminated, 2024-03-01.00-00)"], "Idle")
            .writes(r#"TIMED_OUT attempt 1 sf 0 Failed=TimedOut error USER/TimedOut history TIMED_OUT: "no signal before the deadline 2024-03-01T00:00:30.000Z""#),
        case("4: no condition spec", condition_action(None))
            .expect(&["RecordEvent(FAILED attempt 1 error InvalidSpec)", "WriteStatus",
                "ApplyLabels(terminated, 2024-02-29.23-59)"], "Idle")
            .writes(r#"FAILED attempt 1 sf 0 Failed=InvalidSpec error USER/InvalidSpec history FAILED: "conditionSpec is missing""#),
        case("4: waiting: paused until the deadline", condition_action(Some(spec(None))))
            .expect(&["RecordEvent(RUNNING attempt 1)", "WriteStatus"], "RequeueAfter(90s)")
            .writes(r#"RUNNING attempt 1 sf 0 Progressing=Paused history RUNNING: "waiting for a signal""#),
        case("4: waiting without a deadline polls",
            condition_action(Some(ConditionSpec { deadline: None, ..spec(None) })))
            .expect(&["RecordEvent(RUNNING attempt 1)", "WriteStatus"], "RequeueAfter(10s)")
            .writes(r#"RUNNING attempt 1 sf 0 Progressing=Paused history RUNNING: "waiting for a signal""#),
    ]);
}

#[test]
fn steps_5_and_6_validation_and_finalizer() {
    run_table(vec![
        case("5: invalid spec fails without a finalizer",
            task().without_finalizer().edit(|o| { o.spec.input_uri.clear(); o.spec.run_name = "r".repeat(31); }))
            .expect(&["RecordEvent(FAILED attempt 1 error InvalidSpec)", "WriteStatus",
                "ApplyLabels(terminated, 2024-02-29.23-59)"], "Idle")
            .writes(r#"FAILED attempt 1 sf 0 Failed=InvalidSpec error USER/InvalidSpec history FAILED: "runName has 31 characters, more than 30; inputUri is empty""#),
        case("5: each required field is checked",
            task().edit(|o| { o.spec.task_template.clear(); o.spec.project.clear(); }))
            .expect(&["RecordEvent(FAILED attempt 1 error InvalidSpec)", "WriteStatus",
                "ApplyLabels(terminated, 2024-02-29.23-59)"], "Idle")
            .writes(r#"FAILED attempt 1 sf 0 Failed=InvalidSpec error USER/InvalidSpec history FAILED: "project is empty; taskTemplate is empty""#),
        // flyte #7967: the original swallowed this failed write and the action never ended.
        case("5: failed status write is retried, then surfaces",
            task().edit(|o| o.spec.input_uri.clear()))
            .answer(K::WriteStatus, failed("etcd timeout"))
            .answer(K::WriteStatus, failed("etcd timeout"))
            .answer(K::WriteStatus, failed("etcd timeout"))
            .expect(&["RecordEvent(FAILED attempt 1 error InvalidSpec)", "WriteStatus",
                "WriteStatus", "WriteStatus"], "Retry(1s): WriteStatus failed: etcd timeout")
            .writes(r#"FAILED attempt 1 sf 0 Failed=InvalidSpec error USER/InvalidSpec history FAILED: "inputUri is empty""#),
        case("5: failed status write succeeds on the second try",
            task().edit(|o| o.spec.input_uri.clear()))
            .answer(K::WriteStatus, failed("etcd timeout"))
            .expect(&["RecordEvent(FAILED attempt 1 error InvalidSpec)", "WriteStatus",
                "WriteStatus", "ApplyLabels(terminated, 2024-02-29.23-59)"], "Idle")
            .writes(r#"FAILED attempt 1 sf 0 Failed=InvalidSpec error USER/InvalidSpec history FAILED: "inputUri is empty""#),
        case("5: no plugin for the task type", task().edit(|o| o.spec.task_type = "spark".into()))
            .expect(&["RecordEvent(FAILED attempt 1 error PluginNotFound)", "WriteStatus",
                "ApplyLabels(terminated, 2024-02-29.23-59)"], "Idle")
            .writes(r#"FAILED attempt 1 sf 0 Failed=PluginNotFound error USER/PluginNotFound history FAILED: "no plugin for task type \"spark\"""#),
        case("6: finalizer first, then return", task().without_finalizer())
            .expect(&["AddFinalizer"], "RequeueAfter(0ns)"),
        case("6: finalizer write conflicts", task().without_finalizer())
            .answer(K::AddFinalizer, WriteResult::Conflict)
            .expect(&["AddFinalizer"],
                "Retry(0ns): AddFinalizer conflicted: the object changed since it was observed"),
    ]);
}

#[test]
fn steps_7_to_9_cache() {
    run_table(vec![
        case("7: hit: success from the cache, plugin not called", task().cached(false))
            .answer(K::CacheGet, CacheLookup::Hit { outputs_uri: Some("s3://cache/o".into()) })
            .expect(&["CacheGet(k1)", "RecordEvent(SUCCEEDED attempt 1)", "WriteStatus",
                "ApplyLabels(terminated, 2024-02-29.23-59)"], "Idle")
            .writes(r#"SUCCEEDED attempt 1 sf 0 Succeeded=Completed cache CACHE_HIT history SUCCEEDED: "outputs found in the cache""#),
        case("7: hit on a serializable task gives back a reservation held from before",
            task().cached(true).in_phase(P::Queued))
            .answer(K::CacheGet, CacheLookup::Hit { outputs_uri: None })
            .expect(&["CacheGet(k1)", "CacheRelease(k1 for ns/a0)",
                "RecordEvent(SUCCEEDED attempt 1)", "WriteStatus",
                "ApplyLabels(terminated, 2024-02-29.23-59)"], "Idle")
            .writes(r#"SUCCEEDED attempt 1 sf 0 Succeeded=Completed cache CACHE_HIT history QUEUED>SUCCEEDED: "outputs found in the cache""#),
        case("7: miss: run", task().cached(false))
            .answer(K::PluginHandle, handle(P::Queued))
            .expect(&["CacheGet(k1)", "PluginHandle(attempt 1)", "RecordEvent(QUEUED attempt 1)",
                "WriteStatus"], "RequeueAfter(10s)")
            .writes(r#"QUEUED attempt 1 sf 0 Progressing=Queued cache CACHE_MISS history QUEUED: "plugin says Queued""#),
        case("7: lookup error: run anyway", task().cached(false))
            .answer(K::CacheGet, CacheLookup::Error("cache down".into()))
            .answer(K::PluginHandle, handle(P::Queued))
            .expect(&["CacheGet(k1)", "PluginHandle(attempt 1)", "RecordEvent(QUEUED attempt 1)",
                "WriteStatus"], "RequeueAfter(10s)")
            .writes(r#"QUEUED attempt 1 sf 0 Progressing=Queued cache CACHE_LOOKUP_FAILURE history QUEUED: "plugin says Queued""#),
        case("7: serializable miss: reservation owned, run", task().cached(true))
            .answer(K::PluginHandle, handle(P::Queued))
            .expect(&["CacheGet(k1)", "CacheReserve(k1 for ns/a0, heartbeat 10s)",
                "PluginHandle(attempt 1)", "RecordEvent(QUEUED attempt 1)", "WriteStatus"],
                "RequeueAfter(10s)")
            .writes(r#"QUEUED attempt 1 sf 0 Progressing=Queued cache CACHE_MISS history QUEUED: "plugin says Queued""#),
        case("7: reservation held by another: wait for the cache", task().cached(true))
            .answer(K::CacheReserve, Reservation::HeldBy("ns/a9".into()))
            .expect(&["CacheGet(k1)", "CacheReserve(k1 for ns/a0, heartbeat 10s)",
                "RecordEvent(WAITING_FOR_RESOURCES attempt 1)", "WriteStatus"], "RequeueAfter(10s)")
            .writes(r#"WAITING_FOR_RESOURCES attempt 1 sf 0 Progressing=Queued cache CACHE_MISS history WAITING_FOR_RESOURCES: "waiting for the cache reservation held by ns/a9""#),
        case("7: reservation error: run anyway", task().cached(true))
            .answer(K::CacheReserve, Reservation::Error("cache down".into()))
            .answer(K::PluginHandle, handle(P::Queued))
            .expect(&["CacheGet(k1)", "CacheReserve(k1 for ns/a0, heartbeat 10s)",
                "PluginHandle(attempt 1)", "RecordEvent(QUEUED attempt 1)", "WriteStatus"],
                "RequeueAfter(10s)")
            .writes(r#"QUEUED attempt 1 sf 0 Progressing=Queued cache CACHE_MISS history QUEUED: "plugin says Queued""#),
        case("7: once running, the cache is not asked", task().cached(true).in_phase(P::Running))
            .answer(K::PluginHandle, handle(P::Running))
            .expect(&["PluginHandle(attempt 1)", "RecordEvent(RUNNING attempt 1)", "WriteStatus"],
                "RequeueAfter(10s)")
            .writes(r#"RUNNING attempt 1 sf 0 Progressing=Executing history QUEUED>RUNNING: "earlier""#),
        case("9: success: put outputs, release, then commit", task().cached(true).in_phase(P::Running))
            .answer(K::PluginHandle, handle(P::Success))
            .expect(&["PluginHandle(attempt 1)", "CachePut(k1)", "CacheRelease(k1 for ns/a0)",
                "RecordEvent(SUCCEEDED attempt 1)", "WriteStatus",
                "ApplyLabels(terminated, 2024-02-29.23-59)"], "Idle")
            .writes(r#"SUCCEEDED attempt 1 sf 0 Succeeded=Completed cache CACHE_POPULATED history QUEUED>RUNNING>SUCCEEDED: "plugin says Success""#),
        case("9: put finds outputs already there: populated", task().cached(false).in_phase(P::Running))
            .answer(K::PluginHandle, handle(P::Success))
            .answer(K::CachePut, CachePutResult::AlreadyExists)
            .expect(&["PluginHandle(attempt 1)", "CachePut(k1)",
                "RecordEvent(SUCCEEDED attempt 1)", "WriteStatus",
                "ApplyLabels(terminated, 2024-02-29.23-59)"], "Idle")
            .writes(r#"SUCCEEDED attempt 1 sf 0 Succeeded=Completed cache CACHE_POPULATED history QUEUED>RUNNING>SUCCEEDED: "plugin says Success""#),
        case("9: put fails: still a success", task().cached(false).in_phase(P::Running))
            .answer(K::PluginHandle, handle(P::Success))
            .answer(K::CachePut, CachePutResult::Error("cache down".into()))
            .expect(&["PluginHandle(attempt 1)", "CachePut(k1)",
                "RecordEvent(SUCCEEDED attempt 1)", "WriteStatus",
                "ApplyLabels(terminated, 2024-02-29.23-59)"], "Idle")
            .writes(r#"SUCCEEDED attempt 1 sf 0 Succeeded=Completed cache CACHE_PUT_FAILURE history QUEUED>RUNNING>SUCCEEDED: "plugin says Success""#),
        case("9: release fails: the terminal status waits", task().cached(true).in_phase(P::Running))
            .answer(K::PluginHandle, handle(P::Success))
            .answer(K::CacheRelease, call_failed("cache down"))
            .expect(&["PluginHandle(attempt 1)", "CachePut(k1)", "CacheRelease(k1 for ns/a0)"],
                "Retry(1s): CacheRelease failed: cache down"),
        case("9: permanent failure releases", task().cached(true).in_phase(P::Running))
            .answer(K::PluginHandle, handle_failure(P::PermanentFailure, ErrorKind::User, "OOMKilled"))
            .expect(&["PluginHandle(attempt 1)", "CacheRelease(k1 for ns/a0)",
                "RecordEvent(FAILED attempt 1 error OOMKilled)", "WriteStatus",
                "ApplyLabels(terminated, 2024-02-29.23-59)"], "Idle")
            .writes(r#"FAILED attempt 1 sf 0 Failed=PermanentFailure error USER/OOMKilled history QUEUED>RUNNING>FAILED: "OOMKilled happened""#),
        case("9: abort releases", task().cached(true).in_phase(P::Running))
            .answer(K::PluginHandle, handle(P::Aborted))
            .expect(&["PluginHandle(attempt 1)", "CacheRelease(k1 for ns/a0)",
                "RecordEvent(ABORTED attempt 1 error Aborted)", "WriteStatus",
                "ApplyLabels(terminated, 2024-02-29.23-59)"], "Idle")
            .writes(r#"ABORTED attempt 1 sf 0 Failed=Aborted error USER/Aborted history QUEUED>RUNNING>ABORTED: "plugin says Aborted""#),
    ]);
}

#[test]
fn steps_10_to_12_failures() {
    run_table(vec![
        case("11: plugin error counts a system failure", task())
            .answer(K::PluginHandle, plugin_error("Unavailable"))
            .expect(&["PluginHandle(attempt 1)", "ObjectEvent(Warning SystemError)",
                "RecordEvent(QUEUED attempt 1)", "WriteStatus"], "RequeueAfter(10s)")
            .writes(r#"QUEUED attempt 1 sf 1 Progressing=RetryableFailure history QUEUED: "system failure 1 of at most 3: Unavailable: the plugin call failed""#),
        case("11: third system failure still retries", task().in_phase(P::Running).system_failures(2))
            .answer(K::PluginHandle, plugin_error("Unavailable"))
            .expect(&["PluginHandle(attempt 1)", "ObjectEvent(Warning SystemError)",
                "RecordEvent(RUNNING attempt 1)", "WriteStatus"], "RequeueAfter(10s)")
            .writes(r#"RUNNING attempt 1 sf 3 Progressing=RetryableFailure history QUEUED>RUNNING: "earlier""#),
        case("11: the fourth fails for good, aborting and releasing first",
            task().cached(true).in_phase(P::Running).system_failures(3))
            .answer(K::PluginHandle, plugin_error("Unavailable"))
            .expect(&["PluginHandle(attempt 1)", "ObjectEvent(Warning SystemError)",
                "CacheRelease(k1 for ns/a0)", "PluginAbort(attempt 1)",
                "RecordEvent(FAILED attempt 1 error MaxSystemFailuresExceeded)", "WriteStatus",
                "ApplyLabels(terminated, 2024-02-29.23-59)"], "Idle")
            .writes(r#"FAILED attempt 1 sf 4 Failed=PermanentFailure error SYSTEM/MaxSystemFailuresExceeded history QUEUED>RUNNING>FAILED: "4 consecutive system failures, the last: Unavailable: the plugin call failed""#),
        case("11: non-retryable code fails at once, as a user error", task().in_phase(P::Queued))
            .answer(K::PluginHandle, plugin_error("BadTaskSpecification"))
            .expect(&["PluginHandle(attempt 1)", "PluginAbort(attempt 1)",
                "RecordEvent(FAILED attempt 1 error BadTaskSpecification)", "WriteStatus",
                "ApplyLabels(terminated, 2024-02-29.23-59)"], "Idle")
            .writes(r#"FAILED attempt 1 sf 0 Failed=PermanentFailure error USER/BadTaskSpecification history QUEUED>FAILED: "the plugin call failed""#),
        case("10: system-kind retryable failure: release, abort, clear state, count",
            task().cached(true).in_phase(P::Running))
            .answer(K::PluginHandle, handle_failure(P::RetryableFailure, ErrorKind::System, "NodeLost"))
            .expect(&["PluginHandle(attempt 1)", "CacheRelease(k1 for ns/a0)",
                "PluginAbort(attempt 1)", "ObjectEvent(Warning SystemError)",
                "RecordEvent(QUEUED attempt 1)", "WriteStatus"], "RequeueAfter(10s)")
            .writes(r#"QUEUED attempt 1 sf 1 Progressing=RetryableFailure history QUEUED>RUNNING>QUEUED: "restarting after a system failure""#),
        case("10: system-kind failure past the maximum", task().in_phase(P::Running).system_failures(3))
            .answer(K::PluginHandle, handle_failure(P::RetryableFailure, ErrorKind::System, "NodeLost"))
            .expect(&["PluginHandle(attempt 1)", "PluginAbort(attempt 1)",
                "ObjectEvent(Warning SystemError)",
                "RecordEvent(FAILED attempt 1 error MaxSystemFailuresExceeded)", "WriteStatus",
                "ApplyLabels(terminated, 2024-02-29.23-59)"], "Idle")
            .writes(r#"FAILED attempt 1 sf 4 Failed=PermanentFailure error SYSTEM/MaxSystemFailuresExceeded history QUEUED>RUNNING>FAILED: "4 consecutive system failures, the last: NodeLost: NodeLost happened""#),
        case("10: any other outcome resets the system failures", task().in_phase(P::Running).system_failures(2))
            .answer(K::PluginHandle, handle(P::Running))
            .expect(&["PluginHandle(attempt 1)", "RecordEvent(RUNNING attempt 1)", "WriteStatus"],
                "RequeueAfter(10s)")
            .writes(r#"RUNNING attempt 1 sf 0 Progressing=Executing history QUEUED>RUNNING: "earlier""#),
        case("12: user failure with attempts left: abort, announce, restart as attempt 2",
            task().retries(2).in_phase(P::Running))
            .answer(K::PluginHandle, handle_failure(P::RetryableFailure, ErrorKind::User, "ExitCode1"))
            .expect(&["PluginHandle(attempt 1)", "PluginAbort(attempt 1)",
                "RecordEvent(FAILED attempt 1 error ExitCode1)", "RecordEvent(QUEUED attempt 2)",
                "WriteStatus"], "RequeueAfter(10s)")
            .writes(r#"QUEUED attempt 2 sf 0 Progressing=RetryableFailure history QUEUED>RUNNING>FAILED>QUEUED: "restarting task""#),
        // flyte #7874: the original recreated the container forever with attempts stuck at 1.
        case("12: out of attempts: permanent failure with the count",
            task().retries(2).in_phase(P::Running).attempts(3))
            .answer(K::PluginHandle, handle_failure(P::RetryableFailure, ErrorKind::User, "ExitCode1"))
            .expect(&["PluginHandle(attempt 3)", "PluginAbort(attempt 3)",
                "RecordEvent(FAILED attempt 3 error MaxRetriesExceeded)", "WriteStatus",
                "ApplyLabels(terminated, 2024-02-29.23-59)"], "Idle")
            .writes(r#"FAILED attempt 3 sf 0 Failed=PermanentFailure error USER/MaxRetriesExceeded history QUEUED>RUNNING>FAILED: "task failed after 3 attempt(s): ExitCode1 happened""#),
        case("12: no retries: the first failure is the last", task().in_phase(P::Running))
            .answer(K::PluginHandle, handle_failure(P::RetryableFailure, ErrorKind::User, "ExitCode1"))
            .expect(&["PluginHandle(attempt 1)", "PluginAbort(attempt 1)",
                "RecordEvent(FAILED attempt 1 error MaxRetriesExceeded)", "WriteStatus",
                "ApplyLabels(terminated, 2024-02-29.23-59)"], "Idle")
            .writes(r#"FAILED attempt 1 sf 0 Failed=PermanentFailure error USER/MaxRetriesExceeded history QUEUED>RUNNING>FAILED: "task failed after 1 attempt(s): ExitCode1 happened""#),
    ]);
}

#[test]
fn step_13_mapping_and_commit() {
    run_table(vec![
        case("13: first call queued", task())
            .answer(K::PluginHandle, handle(P::Queued))
            .expect(&["PluginHandle(attempt 1)", "RecordEvent(QUEUED attempt 1)", "WriteStatus"],
                "RequeueAfter(10s)")
            .writes(r#"QUEUED attempt 1 sf 0 Progressing=Queued history QUEUED: "plugin says Queued""#),
        case("13: not ready maps to queued", task())
            .answer(K::PluginHandle, handle(P::NotReady))
            .expect(&["PluginHandle(attempt 1)", "RecordEvent(QUEUED attempt 1)", "WriteStatus"],
                "RequeueAfter(10s)")
            .writes(r#"QUEUED attempt 1 sf 0 Progressing=Queued history QUEUED: "plugin says NotReady""#),
        case("13: waiting for resources", task().in_phase(P::Queued))
            .answer(K::PluginHandle, handle(P::WaitingForResources))
            .expect(&["PluginHandle(attempt 1)", "RecordEvent(WAITING_FOR_RESOURCES attempt 1)",
                "WriteStatus"], "RequeueAfter(10s)")
            .writes(r#"WAITING_FOR_RESOURCES attempt 1 sf 0 Progressing=Queued history QUEUED>WAITING_FOR_RESOURCES: "plugin says WaitingForResources""#),
        case("13: initializing", task().in_phase(P::Queued))
            .answer(K::PluginHandle, handle(P::Initializing))
            .expect(&["PluginHandle(attempt 1)", "RecordEvent(INITIALIZING attempt 1)",
                "WriteStatus"], "RequeueAfter(10s)")
            .writes(r#"INITIALIZING attempt 1 sf 0 Progressing=Initializing history QUEUED>INITIALIZING: "plugin says Initializing""#),
        case("13: running", task().in_phase(P::Initializing))
            .answer(K::PluginHandle, handle(P::Running))
            .expect(&["PluginHandle(attempt 1)", "RecordEvent(RUNNING attempt 1)", "WriteStatus"],
                "RequeueAfter(10s)")
            .writes(r#"RUNNING attempt 1 sf 0 Progressing=Executing history QUEUED>INITIALIZING>RUNNING: "plugin says Running""#),
        case("13: nothing changed: no event, no write", task().in_phase(P::Running)
                .edit(|o| o.status.conditions[0].message = "plugin says Running".into()))
            .answer(K::PluginHandle, handle(P::Running))
            .expect(&["PluginHandle(attempt 1)"], "RequeueAfter(10s)"),
        case("13: success", task().in_phase(P::Running))
            .answer(K::PluginHandle, handle(P::Success))
            .expect(&["PluginHandle(attempt 1)", "RecordEvent(SUCCEEDED attempt 1)", "WriteStatus",
                "ApplyLabels(terminated, 2024-02-29.23-59)"], "Idle")
            .writes(r#"SUCCEEDED attempt 1 sf 0 Succeeded=Completed history QUEUED>RUNNING>SUCCEEDED: "plugin says Success""#),
        case("13: the event goes first; if it fails, nothing is written", task().in_phase(P::Running))
            .answer(K::PluginHandle, handle(P::Success))
            .answer(K::RecordEvent, call_failed("control plane down"))
            .expect(&["PluginHandle(attempt 1)", "RecordEvent(SUCCEEDED attempt 1)"],
                "Retry(1s): RecordEvent failed: control plane down"),
        case("13: a conflicting status write is not retried blindly", task().in_phase(P::Running))
            .answer(K::PluginHandle, handle(P::Success))
            .answer(K::WriteStatus, WriteResult::Conflict)
            .expect(&["PluginHandle(attempt 1)", "RecordEvent(SUCCEEDED attempt 1)", "WriteStatus"],
                "Retry(0ns): WriteStatus conflicted: the object changed since it was observed")
            .writes(r#"SUCCEEDED attempt 1 sf 0 Succeeded=Completed history QUEUED>RUNNING>SUCCEEDED: "plugin says Success""#),
        case("13: a warning event that fails is only advisory", task())
            .answer(K::PluginHandle, plugin_error("Unavailable"))
            .answer(K::ObjectEvent, call_failed("events api down"))
            .expect(&["PluginHandle(attempt 1)", "ObjectEvent(Warning SystemError)",
                "RecordEvent(QUEUED attempt 1)", "WriteStatus"], "RequeueAfter(10s)")
            .writes(r#"QUEUED attempt 1 sf 1 Progressing=RetryableFailure history QUEUED: "system failure 1 of at most 3: Unavailable: the plugin call failed""#),
    ]);
}

#[test]
fn phase_mapping_table() {
    use ActionPhase as A;
    use Reason as R;
    use Standing as S;
    let table = [
        (P::NotReady, A::Queued, S::Progressing(R::Queued)),
        (P::Queued, A::Queued, S::Progressing(R::Queued)),
        (
            P::WaitingForResources,
            A::WaitingForResources,
            S::Progressing(R::Queued),
        ),
        (
            P::WaitingForCache,
            A::WaitingForResources,
            S::Progressing(R::Queued),
        ),
        (
            P::Initializing,
            A::Initializing,
            S::Progressing(R::Initializing),
        ),
        (P::Running, A::Running, S::Progressing(R::Executing)),
        (P::Success, A::Succeeded, S::Succeeded(R::Completed)),
        (
            P::RetryableFailure,
            A::Failed,
            S::Progressing(R::RetryableFailure),
        ),
        (
            P::PermanentFailure,
            A::Failed,
            S::Failed(R::PermanentFailure),
        ),
        (P::Aborted, A::Aborted, S::Failed(R::Aborted)),
    ];
    for (plugin, action, standing) in table {
        assert_eq!(map_plugin_phase(plugin), (action, standing), "{plugin:?}");
    }
}

#[test]
fn completed_time_label_table() {
    // Expected values computed independently with `date -u -d @SECONDS`.
    let table: [(i64, &str); 14] = [
        (0, "1970-01-01.00-00"),
        (951_827_696_000, "2000-02-29.12-34"), // leap: divisible by 400
        (-2_203_891_201_000, "1900-02-28.23-59"), // 1900 is not a leap year...
        (-2_203_891_200_000, "1900-03-01.00-00"), // ...so March follows February 28
        (1_709_251_199_000, "2024-02-29.23-59"),
        (1_709_251_199_999, "2024-02-29.23-59"), // truncated, not rounded
        (1_709_251_200_000, "2024-03-01.00-00"),
        (1_704_067_199_000, "2023-12-31.23-59"), // year boundary
        (1_704_067_200_000, "2024-01-01.00-00"),
        (4_107_542_340_000, "2100-02-28.23-59"), // 2100 is not a leap year
        (4_107_542_400_000, "2100-03-01.00-00"),
        (13_574_585_220_000, "2400-02-29.06-07"), // 2400 is
        (-1_000, "1969-12-31.23-59"),
        (2_147_483_647_000, "2038-01-19.03-14"),
    ];
    for (millis, label) in table {
        assert_eq!(
            Timestamp::from_millis(millis).completed_time_label(),
            label,
            "{millis} ms"
        );
    }
    assert_eq!(
        Timestamp::from_utc(2024, 2, 29, 23, 59, 59),
        Some(Timestamp::from_millis(1_709_251_199_000))
    );
    assert_eq!(
        Timestamp::from_millis(1_709_251_199_250).to_string(),
        "2024-02-29T23:59:59.250Z"
    );
}

#[test]
fn a_wrong_answer_is_refused_and_the_pass_keeps_waiting() {
    let cfg = Config::with_task_types(["python-task"]);
    let obj = task();
    let (mut pass, step) = reconcile(Some(&obj), T0, &cfg);
    assert!(matches!(step, Step::Run(Effect::PluginHandle(_))));
    let err = pass.resume(WriteResult::Ok).unwrap_err();
    assert_eq!(
        err.to_string(),
        "PluginHandle cannot be answered with a Write result"
    );
    assert_eq!(pass.awaiting(), Some(EffectKind::PluginHandle));
    let step = pass.resume(handle(P::Running)).unwrap();
    assert!(matches!(step, Step::Run(Effect::RecordEvent(_))));
}

#[test]
fn a_finished_pass_cannot_be_resumed() {
    let cfg = Config::default();
    let (mut pass, step) = reconcile(None, T0, &cfg);
    assert_eq!(step, Step::Done(Outcome::Idle));
    assert_eq!(
        pass.resume(CallResult::Ok),
        Err(flyte_reconciler_core::Error::PassFinished)
    );
}
