#![allow(clippy::print_stdout)]
//! Decisions per second of the reconciler on one core.
//!
//! A decision is one step the machine takes: choosing the next effect, or how a pass ends.
//! The workload cycles through passes typical of a busy executor (steady polling, phase
//! changes, cache round trips, retries, terminal and deletion passes), answering effects from
//! canned results so that almost all the time is spent in the machine.
//!
//! `cargo run --release --example bench_decisions` prints `decisions_per_second=<N>` on stdout
//! and details on stderr.

use std::hint::black_box;
use std::time::Instant;

use flyte_reconciler_core::{
    ActionPhase, CacheLookup, CachePutResult, CallResult, Condition, ConditionType, Config, Effect,
    EffectResult, ErrorKind, ExecutionError, FINALIZER, PhaseInfo, PhaseTransition, PluginPhase,
    PluginResult, PluginState, PluginTransition, Reason, Reservation, TaskAction, TaskActionSpec,
    Timestamp, WriteResult, drive, terminal_labels,
};

const ROUNDS: usize = 400_000;

struct Scenario {
    name: &'static str,
    observed: TaskAction,
    plugin: PluginResult,
}

fn main() {
    let cfg = Config::with_task_types(["python-task"]);
    let now = Timestamp::from_secs(1_709_251_140);
    let scenarios = scenarios(now);

    let started = Instant::now();
    let mut decisions: u64 = 0;
    let mut passes: u64 = 0;
    for _ in 0..ROUNDS {
        for scenario in &scenarios {
            let outcome = drive(Some(black_box(&scenario.observed)), now, &cfg, |effect| {
                decisions += 1;
                answer(&effect, &scenario.plugin)
            })
            .expect("canned answers match their effects");
            black_box(outcome);
            decisions += 1; // the decision how the pass ends
            passes += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();

    let per_second = |count: u64| {
        #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
        #[allow(clippy::cast_sign_loss)]
        let rate = (count as f64 / elapsed) as u64;
        rate
    };
    eprintln!(
        "{passes} passes, {decisions} decisions in {elapsed:.2} s: {} passes/s; scenarios: {}",
        per_second(passes),
        scenarios
            .iter()
            .map(|s| s.name)
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("decisions_per_second={}", per_second(decisions));
}

fn answer(effect: &Effect, plugin: &PluginResult) -> EffectResult {
    match effect {
        Effect::PluginHandle(_) => plugin.clone().into(),
        Effect::CacheGet { .. } => CacheLookup::NotFound.into(),
        Effect::CacheReserve { .. } => Reservation::Owned.into(),
        Effect::CachePut { .. } => CachePutResult::Stored.into(),
        Effect::AddFinalizer
        | Effect::RemoveFinalizer
        | Effect::WriteStatus { .. }
        | Effect::ApplyLabels(_)
        | Effect::Delete => WriteResult::Ok.into(),
        Effect::PluginAbort(_)
        | Effect::PluginFinalize(_)
        | Effect::CacheRelease { .. }
        | Effect::RecordEvent(_)
        | Effect::ObjectEvent(_) => CallResult::Ok.into(),
    }
}

fn phase(plugin_phase: PluginPhase) -> PluginResult {
    PluginResult::Transition(PluginTransition {
        info: PhaseInfo::new(plugin_phase, ""),
        state: None,
    })
}

fn scenarios(now: Timestamp) -> Vec<Scenario> {
    let spec = TaskActionSpec {
        run_name: "run".into(),
        project: "p".into(),
        domain: "d".into(),
        action_name: "a0".into(),
        task_type: "python-task".into(),
        task_template: b"t".to_vec(),
        input_uri: "s3://in".into(),
        run_output_base: "s3://out".into(),
        retries: 2,
        ..TaskActionSpec::default()
    };
    let fresh = {
        let mut obj = TaskAction::new("ns", "a0", spec.clone());
        obj.metadata.finalizers.push(FINALIZER.into());
        obj
    };
    let running = running(&fresh, now);
    let cached = |mut obj: TaskAction| {
        obj.spec.cache_key = "k1".into();
        obj.spec.cache_serializable = true;
        obj
    };
    let succeeded = succeeded(&running, now);
    let deleting = {
        let mut obj = cached(running.clone());
        obj.metadata.deletion_timestamp = Some(now);
        obj
    };
    let user_failure = PluginResult::Transition(PluginTransition {
        info: PhaseInfo::failure(
            PluginPhase::RetryableFailure,
            ExecutionError::new(ErrorKind::User, "ExitCode1", "exit 1"),
        ),
        state: None,
    });
    let unclaimed = TaskAction::new("ns", "a0", spec);
    let scenario = |name, observed: &TaskAction, plugin| Scenario {
        name,
        observed: observed.clone(),
        plugin,
    };
    vec![
        // Steady state dominates a real executor: most passes poll an unchanged task.
        scenario("poll unchanged", &running, phase(PluginPhase::Running)),
        scenario("poll unchanged", &running, phase(PluginPhase::Running)),
        scenario("poll unchanged", &running, phase(PluginPhase::Running)),
        scenario("queued", &fresh, phase(PluginPhase::Queued)),
        scenario(
            "cache miss + reserve + queued",
            &cached(fresh.clone()),
            phase(PluginPhase::Queued),
        ),
        scenario(
            "success + put + release + labels",
            &cached(running.clone()),
            phase(PluginPhase::Success),
        ),
        scenario("user retry", &running, user_failure),
        scenario("terminal", &succeeded, phase(PluginPhase::Success)),
        scenario("deletion", &deleting, phase(PluginPhase::Running)),
        scenario("add finalizer", &unclaimed, phase(PluginPhase::Queued)),
    ]
}

/// A claimed task the plugin reported running, as earlier passes would have recorded it.
fn running(fresh: &TaskAction, now: Timestamp) -> TaskAction {
    {
        let mut obj = fresh.clone();
        let status = &mut obj.status;
        status.attempts = 1;
        status.plugin_phase = Some(PluginPhase::Running);
        status.plugin_state = PluginState {
            bytes: b"pod".to_vec(),
            version: 1,
        };
        for (phase, at) in [(ActionPhase::Queued, -60), (ActionPhase::Running, -30)] {
            status.phase_history.push(PhaseTransition {
                phase,
                occurred_at: Timestamp::from_millis(now.as_millis() + at * 1000),
                message: String::new(),
            });
        }
        status.conditions.push(Condition {
            kind: ConditionType::Progressing,
            status: true,
            reason: Reason::Executing,
            message: "Running".into(),
            last_transition_time: now,
        });
        obj
    }
}

/// A task that succeeded at `now` and carries its terminal labels.
fn succeeded(running: &TaskAction, now: Timestamp) -> TaskAction {
    {
        let mut obj = running.clone();
        obj.status.phase_history.push(PhaseTransition {
            phase: ActionPhase::Succeeded,
            occurred_at: now,
            message: String::new(),
        });
        obj.status.conditions.push(Condition {
            kind: ConditionType::Succeeded,
            status: true,
            reason: Reason::Completed,
            message: String::new(),
            last_transition_time: now,
        });
        obj.metadata.labels.extend(terminal_labels(now));
        obj
    }
}
