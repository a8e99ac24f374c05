//! Drive one TaskAction through Flyte's reconciler to a terminal phase with a plugin that
//! only pretends, using only `flyte-reconciler-core` (a pure state machine: the example is the
//! driver, doing every effect in memory):
//!
//!     cargo run -p flyte-examples --example reconcile_fake_plugin -- Queued Running Success
#![allow(clippy::print_stdout)]

use flyte_reconciler_core::{
    CallResult, Config, Effect, ErrorKind, ExecutionError, FINALIZER, PhaseInfo, PluginPhase,
    PluginResult, PluginTransition, TaskAction, TaskActionSpec, Timestamp, WriteResult, drive,
};

fn phase(name: &str) -> Result<PluginPhase, Box<dyn std::error::Error>> {
    Ok(match name {
        "Queued" => PluginPhase::Queued,
        "Initializing" => PluginPhase::Initializing,
        "Running" => PluginPhase::Running,
        "Success" => PluginPhase::Success,
        "RetryableFailure" => PluginPhase::RetryableFailure,
        "PermanentFailure" => PluginPhase::PermanentFailure,
        other => {
            return Err(format!(
                "unknown plugin phase {other:?}; use Queued, Initializing, Running, Success, RetryableFailure or PermanentFailure"
            )
            .into());
        }
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut script = std::env::args()
        .skip(1)
        .map(|name| phase(&name))
        .collect::<Result<Vec<_>, _>>()?;
    if script.is_empty() {
        script = vec![
            PluginPhase::Queued,
            PluginPhase::Running,
            PluginPhase::Success,
        ];
    }
    // The plugin reports these phases in order, then the last one for ever.
    script.reverse();
    let config = Config::with_task_types(["python-task"]);
    let mut stored = TaskAction::new(
        "flyte",
        "a0",
        TaskActionSpec {
            run_name: "r1".into(),
            project: "p".into(),
            domain: "d".into(),
            action_name: "a0".into(),
            task_type: "python-task".into(),
            task_template: b"{}".to_vec(),
            input_uri: "s3://bucket/in".into(),
            run_output_base: "s3://bucket/out".into(),
            ..TaskActionSpec::default()
        },
    );
    let mut now = Timestamp::from_secs(1_700_000_000);
    for pass in 1..=100 {
        let observed = stored.clone();
        let outcome = drive(Some(&observed), now, &config, |effect| match effect {
            Effect::AddFinalizer => {
                stored.metadata.finalizers.push(FINALIZER.to_owned());
                WriteResult::Ok.into()
            }
            Effect::PluginHandle(_) => {
                let phase = if script.len() > 1 {
                    script.pop()
                } else {
                    script.last().copied()
                };
                let phase = phase.unwrap_or(PluginPhase::Success);
                let info = match phase {
                    PluginPhase::RetryableFailure | PluginPhase::PermanentFailure => {
                        PhaseInfo::failure(
                            phase,
                            ExecutionError::new(ErrorKind::User, "Exit1", "the task exited with 1"),
                        )
                    }
                    _ => PhaseInfo::new(phase, ""),
                };
                PluginResult::Transition(PluginTransition { info, state: None }).into()
            }
            Effect::RecordEvent(event) => {
                println!("pass {pass}: action event {:?}", event.phase);
                CallResult::Ok.into()
            }
            Effect::WriteStatus { status, .. } => {
                stored.status = (*status).clone();
                WriteResult::Ok.into()
            }
            Effect::ApplyLabels(labels) => {
                stored.metadata.labels.extend(labels);
                WriteResult::Ok.into()
            }
            Effect::PluginAbort(_) | Effect::PluginFinalize(_) | Effect::ObjectEvent(_) => {
                CallResult::Ok.into()
            }
            other => unreachable!("the task is not cacheable and nobody deletes it: {other:?}"),
        })?;
        if stored.status.is_terminal() {
            let status = &stored.status;
            let last = status.phase_history.last().map(|t| t.phase);
            println!(
                "terminal after {pass} passes: {last:?}, {} attempt(s), error: {:?}",
                status.attempts, status.error
            );
            return Ok(());
        }
        match outcome.requeue_after() {
            Some(after) => now = now.saturating_add(after),
            None => return Err("the reconciler went idle before a terminal phase".into()),
        }
    }
    Err("not terminal after 100 passes".into())
}
